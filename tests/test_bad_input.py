"""Bad input gets one clear line naming the field path, the value and what is allowed — before any
work, never a traceback, a hang or an out-of-memory kill (issue 16, "Bad input" and items 2, 5)."""
import shutil
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import mistfast as mf
from mistfast import limits
from mistfast.cli import main
from mistfast.specs import SpecError
from mistfast.sweep import load_sweep, parse_sweep, run_sweep
from mistfast.sweepspec import safe_eval

LLM = {"name": "llm", "model": "llama-3.1-8b", "device": "H100"}
ENC = {"name": "enc", "model": "e5-small", "device": "H100"}
CPU = {"name": "cpu", "kind": "cpu"}
RET = {"name": "ret", "kind": "retrieval", "device": "SPR"}
SAMPLES = Path(__file__).resolve().parents[1] / "data" / "samples"


def refused(doc, *needles):
    """The scenario is refused quickly with one SpecError holding every needle."""
    t0 = time.perf_counter()
    with pytest.raises(SpecError) as ei:
        mf.simulate(doc)
    assert time.perf_counter() - t0 < 20
    msg = str(ei.value)
    for n in needles:
        assert n in msg, (n, msg)
    return msg


def sweep_refused(sweep, *needles, base=None):
    t0 = time.perf_counter()
    with pytest.raises(SpecError) as ei:
        parse_sweep({"sweep": sweep, "scenario": base or {"clients": [LLM], "workload": {"num_requests": 10}}})
    assert time.perf_counter() - t0 < 20
    msg = str(ei.value)
    for n in needles:
        assert n in msg, (n, msg)
    return msg


# ---- resource limits (item 2) -----------------------------------------------------------------------
def test_a_trillion_requests_is_refused_with_the_field_and_the_estimate():
    msg = refused({"clients": [LLM], "workload": {"num_requests": 10**12}},
                  "workload.num_requests = 1000000000000", "GB of memory", "MISTFAST_MAX_MEMORY_GB")
    # the estimate: at least the 1,024 bytes per request of limits.py
    est = float(msg.split("needs about ")[1].split(" GB")[0])
    assert est >= 10**12 * 1024 / 1e9 * 0.99


def test_a_hundred_million_replicas_are_refused():
    refused({"clients": [{**LLM, "dp": 100_000_000}]}, "clients[0].dp = 100000000", "GB of memory")


def test_replicas_of_a_pipeline_are_refused_by_their_routes():
    # 100,000 instances: 1e10 routes between them
    refused({"clients": [{**LLM, "dp": 100_000}], "servers": [CPU]}, "clients[0].dp = 100000", "GB of memory")


def test_a_billion_token_prefix_is_refused():
    refused({"clients": [LLM], "workload": {"prefix_tokens": 10**9}}, "workload.prefix_tokens = 1000000000",
            "GB of memory")


def test_the_memory_limit_is_configurable(monkeypatch):
    doc = {"clients": [LLM], "workload": {"num_requests": 20_000}}
    monkeypatch.setenv("MISTFAST_MAX_MEMORY_GB", "0.001")   # 1 MB: 20,000 requests need ~20 MB
    refused(doc, "workload.num_requests = 20000", "limit of 0.001 GB")
    monkeypatch.setenv("MISTFAST_MAX_MEMORY_GB", "lots")
    refused(doc, "MISTFAST_MAX_MEMORY_GB = 'lots'", "number of GB")
    monkeypatch.delenv("MISTFAST_MAX_MEMORY_GB")
    limits.set_max_memory_GB(0.001)
    try:
        refused(doc, "workload.num_requests = 20000")
    finally:
        limits.set_max_memory_GB(None)
    assert limits.scenario_bytes(mf.specs.parse_scenario(doc)) < limits.max_memory_bytes()


def test_a_sweep_with_too_many_points_is_refused_before_any_work():
    axes = {"workload.arrival.rate_rps": list(range(1, 1001)), "clients[0].scheduler.max_batch_size": list(range(1, 1001)),
            "simulation.seed": list(range(1000))}
    sweep_refused({"axes": axes}, "1000000000 points", "GB for their results")


def test_a_sweep_axis_value_too_big_for_memory_is_refused():
    sweep_refused({"axes": {"workload.num_requests": [10, 10**12]}}, "workload.num_requests = 1000000000000",
                  "GB of memory")


def test_a_sweep_task_too_big_for_memory_is_refused(monkeypatch):
    monkeypatch.setenv("MISTFAST_MAX_MEMORY_GB", "0.05")  # a 10,000-request point is ~10 MB
    sweep_refused({"chunk_points": 64, "axes": {"workload.arrival.rate_rps": list(range(1, 65))}},
                  "sweep.chunk_points = 64", "lower chunk_points", base={"clients": [LLM], "workload": {"num_requests": 10_000}})


# ---- derived expressions ----------------------------------------------------------------------------
@pytest.mark.parametrize("expr", ["9**9**9", "10**100", "2**64 * 2", "'x' * 10**6", "(10**9)**3"])
def test_derived_expressions_are_bounded(expr):
    t0 = time.perf_counter()
    sweep_refused({"axes": {"clients[0].tp": [1, 2]}, "derived": {"clients[0].dp": expr}},
                  'sweep.derived."clients[0].dp"', "over the expression limits")
    assert time.perf_counter() - t0 < 2


def test_the_expression_time_limit_counts_only_the_evaluating_thread(monkeypatch):
    """The limit is the evaluating thread's CPU time: another thread of the process burning CPU
    without the GIL (a dask worker's numba kernel; here numpy matrix products) while the expression
    waits does not trip it. With the whole process's CPU time (time.process_time) the 0.3 s wait below
    lets the busy thread spend more than the 0.05 s limit and the expression was refused."""
    import threading

    import numpy as np

    from mistfast import sweepspec
    monkeypatch.setattr(sweepspec, "EXPR_TIME_LIMIT_S", 0.05)

    class Slow:   # an operand whose addition waits 0.3 s of wall time without using CPU
        def __add__(self, other):
            time.sleep(0.3)
            return 1

    stop = threading.Event()
    m = np.random.default_rng(0).random((300, 300))

    def busy():
        while not stop.is_set():
            m @ m   # BLAS releases the GIL: CPU time of this process, not of the evaluating thread

    worker = threading.Thread(target=busy)
    worker.start()
    try:
        time.sleep(0.05)   # the busy thread is running
        c0 = time.process_time()
        assert safe_eval("x + 1 + 1", {"x": Slow()}) == 2
        process_cpu_s = time.process_time() - c0
    finally:
        stop.set()
        worker.join()
    # the test can fail: the busy thread did spend more than the limit during the evaluation
    assert process_cpu_s > sweepspec.EXPR_TIME_LIMIT_S


def test_safe_eval_computes_ordinary_expressions_and_refuses_the_rest():
    env = {"tp": 4, "case": "b"}
    assert safe_eval("8 // tp", env) == 2
    assert safe_eval("2 ** 10 + max(tp, 3) * 1.5", env) == 1030.0
    assert safe_eval("'H100' if case == 'b' else 'A100'", env) == "H100"
    assert safe_eval("ceil(log2(tp)) - -1", env) == 3
    for bad, what in (("1 / (tp - 4)", "divided by zero"), ("tp.real", "unsupported expression"),
                      ("__import__('os')", "__import__"), ("x" * 3000, "longer than")):
        with pytest.raises(SpecError, match=what):
            safe_eval(bad, env)


def test_a_derived_division_by_zero_makes_only_that_point_invalid():
    spec = parse_sweep({"sweep": {"axes": {"workload.arrival.rate_rps": [2.0, 4.0]},
                                  "derived": {"workload.num_requests": "int(40 / (rate_rps - 2))"}},
                        "scenario": {"clients": [LLM]}})
    ds = run_sweep(spec)
    assert list(ds.status.values) == [1, 0]
    assert "divided by zero" in str(ds.reason.values[0])
    assert int(ds.n_finished[1]) + int(ds.n_unfinished[1]) + int(ds.n_rejected[1]) == 20


# ---- sweep specs in the scenarios' error style (item 5) ---------------------------------------------
@pytest.mark.parametrize("sweep, needles", [
    ({"axes": [["clients[0].tp", [1, 2]]]}, ["sweep.axes = ", "valid dictionary"]),
    ({"seed": "abc", "axes": {"clients[0].tp": [1]}}, ["sweep.seed = 'abc'", "valid integer"]),
    ({"seed": 1.5, "axes": {"clients[0].tp": [1]}}, ["sweep.seed = 1.5", "fractional part"]),
    ({"seed": -1, "axes": {"clients[0].tp": [1]}}, ["sweep.seed = -1", ">= 0"]),
    ({"chunk_points": "many", "axes": {"clients[0].tp": [1]}}, ["sweep.chunk_points = 'many'", "valid integer"]),
    ({"method": "sobol", "axes": {"clients[0].tp": [1]}}, ["sweep.method = 'sobol'", "'lhs' or 'random'"]),
    ({"axis": [{"path": "clients[0].tp", "vals": [1]}]}, ["sweep.axis[0].vals", "unknown field", "values"]),
    ({"axes": {"clients[3].tp": [1, 2]}}, ['sweep.axes."clients[3].tp"', "index 3 out of range", "1 items"]),
    ({"axes": {"clients[0].tp": [1, 2.5]}}, ['sweep.axes."clients[0].tp" = 2.5', "valid integer"]),
    ({"axes": {"clients[0].tp": [1, 0]}}, ['sweep.axes."clients[0].tp" = 0', "greater than or equal to 1"]),
    ({"axes": {"simulation.seed": [1, 1.5]}}, ['sweep.axes."simulation.seed" = 1.5', "valid integer"]),
    ({"axes": {"clients[0].scheduler.batching": ["static", "turbo"]}}, ["= 'turbo'", "'static', 'continuous'"]),
    ({"axis": [{"path": "clients[0].tp", "values": [1, "two"]}]}, ["sweep.axis[0].values = 'two'", "valid integer"]),
    ({"mode": "sample", "samples": 4, "axis": [{"path": "clients[0].tp", "low": 1, "high": 4}]},
     ["sweep.axis[0].integer = false", "takes integers"]),
])
def test_sweep_spec_errors_name_the_field_and_value(sweep, needles):
    msg = sweep_refused(sweep, *needles)
    assert "Traceback" not in msg


def test_sweep_errors_are_one_clear_line_on_the_command_line(tmp_path):
    f = tmp_path / "s.toml"
    f.write_text('[sweep]\nseed = 1.5\naxes = { "clients[3].tp" = [1, 2] }\n[scenario.workload]\nnum_requests = 5\n')
    r = CliRunner().invoke(main, ["sweep", str(f), "-o", str(tmp_path / "o.nc"), "--scheduler", "serial"])
    assert r.exit_code == 2, r.output
    assert "sweep.seed = 1.5" in r.output and "clients[3].tp" in r.output
    assert "Traceback" not in r.output and not (tmp_path / "o.nc").exists()


# ---- scenario semantics (item 5) --------------------------------------------------------------------
@pytest.mark.parametrize("doc, needles", [
    ({"clients": [LLM], "servers": [CPU], "pipelines": [{"stages": [{"kind": "llm", "pool": "cpu"}]}]},
     ["pipelines[0].stages[0].pool = 'cpu'", "an llm stage runs on an LLM client with a decoder model"]),
    ({"clients": [LLM], "pipelines": [{"stages": [{"kind": "retrieve", "pool": "llm"}, {"kind": "llm", "pool": "llm"}]}]},
     ["pipelines[0].stages[0].pool = 'llm'", "retrieval server"]),
    ({"clients": [LLM], "servers": [RET], "pipelines": [{"stages": [{"kind": "pre", "pool": "ret"}, {"kind": "llm", "pool": "llm"}]}]},
     ["pipelines[0].stages[0].pool = 'ret'", "CPU server"]),
    ({"clients": [LLM], "servers": [CPU], "pipelines": [{"stages": [{"kind": "llm", "pool": ["llm", "cpu"]}]}]},
     ["pipelines[0].stages[0].pool = 'cpu'"]),
    ({"clients": [LLM, {**LLM, "name": "b", "model": "llama-3.1-70b", "tp": 4}, ENC],
      "pipelines": [{"stages": [{"kind": "embed", "pool": ["enc", "llm"]}, {"kind": "llm", "pool": "b"}]}]},
     ["pipelines[0].stages[0].pool = ['enc', 'llm']", "same kind"]),
    ({"clients": [LLM, ENC], "pipelines": [{"stages": [{"kind": "prefill", "pool": "enc"}, {"kind": "decode", "pool": "llm"}]}]},
     ["pipelines[0].stages[0].pool = 'enc'", "e5-small, encoder"]),
    ({"clients": [LLM, ENC], "pipelines": [{"stages": [{"kind": "prefill", "pool": "llm"}, {"kind": "decode", "pool": "enc"}]}]},
     ["pipelines[0].stages[1].pool = 'enc'", "a decode stage"]),
    ({"clients": [LLM, {**LLM, "name": "x"}], "pipelines": [{"name": "chat", "stages": [{"kind": "llm", "pool": "x"}]},
                                                          {"stages": [{"kind": "llm", "pool": "nope"}]}]},
     ["pipelines[1].stages[0].pool = 'nope'", "unknown client; known: llm, x"]),
    ({"clients": [LLM, LLM]}, ["clients[1].name = 'llm'", "unique", "clients[0] has it too"]),
    ({"clients": [LLM], "servers": [{**CPU, "name": "llm"}]}, ["servers[0].name = 'llm'", "clients[0] has it too"]),
    ({"clients": [LLM, {**LLM, "name": "b"}], "links": [{"between": ["llm", "c"], "link": "RDMA-400G"}]},
     ["links[0].between[1] = 'c'", "unknown client"]),
    ({"clients": [LLM], "pipelines": [{"stages": [{"kind": "kv_fetch", "past_tokens": 10, "tiers": [{"tier": "dram", "hit": 1}]},
                                                  {"kind": "llm", "pool": "llm"}]}]},
     ["pipelines[0].stages[0].tiers[0].tier = 'dram'", "unknown tier"]),
    ({"clients": [LLM], "pipelines": [{"stages": [{"kind": "reason", "pool": "llm", "steps": 2, "verifier": "cpu"}]}],
      "servers": [CPU]},
     ["pipelines[0].stages[0].verifier = 'cpu'", "verify stage"]),
    ({"clients": [LLM], "workload": {"arrival": {"process": "poisson", "rate_rps": float("inf")}}},
     ["workload.arrival.rate_rps = inf", "finite number"]),
    ({"clients": [{**LLM, "device": {"preset": "H100", "memory_GiB": float("inf")}}]},
     ["clients[0].device.memory_GiB = inf", "finite number"]),
    ({"clients": [LLM], "simulation": {"seed": 1.5}}, ["simulation.seed = 1.5", "valid integer"]),
    ({"clients": [LLM], "workload": {"num_requests": 10.5}}, ["workload.num_requests = 10.5", "valid integer"]),
])
def test_semantic_mismatches_are_refused_with_the_field_path(doc, needles):
    refused(doc, *needles)


def test_pre_and_post_may_run_on_an_llm_client_and_embed_on_a_decoder_embedder():
    # a model pass as a pre/post filter and a decoder-based embedder are allowed combinations
    ds = mf.simulate({"clients": [LLM], "workload": {"num_requests": 3},
                      "pipelines": [{"stages": [{"kind": "pre", "pool": "llm"}, {"kind": "embed", "pool": "llm"},
                                                {"kind": "llm", "pool": "llm"}]}]})
    assert int(ds.n_finished) == 3


# ---- traces and paths -------------------------------------------------------------------------------
def test_a_relative_trace_path_is_relative_to_the_spec_file(tmp_path, monkeypatch):
    spec_dir = tmp_path / "specs"
    spec_dir.mkdir()
    shutil.copy(SAMPLES / "azure_sample.csv", spec_dir / "t.csv")
    (spec_dir / "s.toml").write_text('[workload]\nnum_requests = 5\ntrace = { path = "t.csv", format = "azure" }\n')
    monkeypatch.chdir(tmp_path)   # not the spec's folder: t.csv is not here
    spec = mf.load_scenario(spec_dir / "s.toml")
    assert Path(spec.workload.trace.path) == (spec_dir / "t.csv").resolve()
    assert int(mf.simulate(spec).n_arrived) == 5
    (spec_dir / "w.toml").write_text('[sweep]\naxes = { "clients[0].tp" = [1] }\n'
                                     '[scenario.workload]\nnum_requests = 5\ntrace = { path = "t.csv" }\n')
    assert int(run_sweep(load_sweep(spec_dir / "w.toml")).n_arrived.sum()) == 5


def test_trace_errors_name_the_field_and_value(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("when,what\n1,2\n")
    refused({"workload": {"trace": {"path": str(tmp_path / "none.csv")}}}, "workload.trace.path = ", "none.csv",
            "not found")
    refused({"workload": {"trace": {"path": str(bad), "format": "azure"}}}, f"workload.trace.path = '{bad}'",
            "missing column")


@pytest.mark.parametrize("out, what", [("/nonexistent-dir/x.nc", "does not exist"), ("/proc/x.nc", "cannot write")])
def test_unwritable_output_paths_are_one_line_before_any_work(tmp_path, out, what):
    spec = tmp_path / "s.toml"
    spec.write_text("[workload]\nnum_requests = 3\n")
    for cmd in (["run", str(spec), "-o", out], ["run", str(spec), "--trace", out],
                ["sweep", str(SAMPLES.parents[1] / "sweeps" / "small_test.toml"), "-o", out]):
        r = CliRunner().invoke(main, cmd)
        assert r.exit_code == 2, (cmd, r.output)
        assert what in r.output and "Traceback" not in r.output
        assert "requests" not in r.output   # refused before simulating


def test_a_sweep_axis_value_of_the_wrong_client_kind_is_refused_but_a_bad_combination_is_an_invalid_point():
    base = {"clients": [LLM], "servers": [CPU], "workload": {"num_requests": 4},
            "pipelines": [{"stages": [{"kind": "pre", "pool": "cpu"}, {"kind": "llm", "pool": "llm"}]}]}
    sweep_refused({"axes": {"pipelines[0].stages[1].pool": ["llm", "cpu"]}},
                  "sweep axis pipelines[0].stages[1].pool = 'cpu'", "an llm stage runs on", base=base)
    sweep_refused({"axes": {"pipelines[0].stages[0].pool": ["cpu", "gpu0"]}}, "= 'gpu0'", "unknown client", base=base)
    # tp = 3 does not divide Llama-3.1-8B's 32 heads: one invalid point of a design space, not a refusal
    spec = parse_sweep({"sweep": {"axes": {"clients[0].tp": [1, 3]}}, "scenario": {"clients": [LLM], "workload": {"num_requests": 4}}})
    assert list(run_sweep(spec).status.values) == [0, 1]


def test_scheduler_sizes_that_allocate_per_slot_are_refused():
    # token budgets as large, so the budget check (budget >= max_batch_size) does not answer first
    refused({"clients": [{**LLM, "scheduler": {"max_batch_size": 10**9, "chunk_size": 10**9,
                                                "max_batched_tokens": 10**9}}]},
            "clients[0].scheduler.max_batch_size = 1000000000", "GB of memory")


def test_a_block_larger_than_the_kv_cache_is_named_as_such():
    # not "model does not fit": the weights fit, the block does not
    msg = refused({"clients": [{**LLM, "scheduler": {"block_size": 10**10}}]},
                  "clients[0].scheduler.block_size = 10000000000", "larger than the KV cache")
    assert "does not fit" not in msg


def test_a_sweep_too_big_for_memory_is_refused_only_without_an_output_file(monkeypatch, tmp_path):
    # 64 points: 64 x 4096 B held in memory > a 100 kB limit; written to a file they need 64 x 128 B
    from mistfast import limits as L
    from mistfast.sweep import run_sweep
    doc = {"sweep": {"axes": {"simulation.seed": list(range(64))}, "chunk_points": 1},
           "scenario": {"clients": [LLM], "workload": {"num_requests": 2}}}
    monkeypatch.setenv("MISTFAST_MAX_MEMORY_GB", str(1e5 / 1e9))
    assert 64 * L.BYTES_PER_SWEEP_POINT > L.max_memory_bytes() > 64 * L.BYTES_PER_STREAMED_POINT
    spec = parse_sweep(doc)          # the smallest need (streamed) fits: the spec is accepted
    with pytest.raises(SpecError) as ei:
        run_sweep(spec)              # held in memory: refused before any work, pointing to -o
    assert "held in memory" in str(ei.value) and "-o" in str(ei.value)
