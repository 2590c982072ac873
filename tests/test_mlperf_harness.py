"""MLPerf LoadGen rows run as the submitter's harness config says (mistfast.mlperf)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd
import pytest

from mistfast import calibration as C
from mistfast import mlperf as MP
from mistfast import validate as V
from mistfast.scenario import scenario_point
from mistfast.specs import parse_scenario
from mistfast.stepmodel import step_latency

ROOT = Path(__file__).parents[1]
PUBLIC = ROOT / "data" / "measurements" / "public.csv"

_NV_NOTES = ("submitter Dell; replicas = 8 / (tp x pp) = 8; weights fp4; benchmark llama2-70b-99; parallelism from "
             "closed/Dell/configs/XE9680L_B200_SXM_180GBx8/Interactive/llama2-70b.py; harness settings from that "
             "config: use_graphs False, enable_chunked_context True; engine limits from that config: max batch 768, "
             "max num tokens 768; summary_results.json Performance_Result 60137.6 Tokens/s")
_B200_INTERACTIVE = dict(
    id="i", source="github:mlcommons/inference_results_v5.1@9:closed/Dell/results/B200/llama2-70b-99/Interactive",
    engine="TensorRT-LLM (NVIDIA MLPerf harness)", engine_version="1.0-mlpinf", model="meta-llama/Llama-2-70b-chat-hf",
    precision="NVFP4", hardware="B200", num_accel=8, tp=1, pp=1,
    workload="MLPerf Inference v5.1 Interactive: MLPerf llama2-70b OpenOrca subset (24,576 samples), Poisson "
             "arrivals at target_qps, 270336 queries (generated_query_count), p99 TTFT <= 450 ms, p99 TPOT <= 40 ms",
    isl="", osl="", batch_or_concurrency="open loop (Poisson)", request_rate="220", metric="ttft_ms", value=57.559,
    notes=_NV_NOTES, dataset="openorca", engine_family="trtllm-1")
_AMD_NOTES = ("submitter AMD; replicas = 8 / (tp x pp) = 8; weights fp8; parallelism from closed/AMD/code/llama2-70b-99/"
              "harness_llm/models/llama2-70b/interactive_mi300x.yaml; harness settings from that config: "
              "enforce_eager True, enable_chunked_prefill False, num_scheduler_steps 8; engine limits from that "
              "config: max batch 600, max num tokens 40960")
_MI300X_INTERACTIVE = dict(
    _B200_INTERACTIVE, engine="vLLM ROCm (AMD MLPerf harness_llm)", precision="FP8", hardware="MI300X",
    engine_family="vllm", request_rate="29.5", notes=_AMD_NOTES,
    workload="MLPerf Inference v5.1 Interactive: MLPerf llama2-70b OpenOrca subset (24,576 samples), Poisson "
             "arrivals at target_qps, 24576 queries (generated_query_count), p99 TTFT <= 450 ms, p99 TPOT <= 40 ms")


def test_harness_settings_are_read_from_the_notes():
    assert MP.harness_settings(_NV_NOTES) == {"use_graphs": False, "enable_chunked_context": True}
    assert MP.harness_settings(_AMD_NOTES) == {"enforce_eager": True, "enable_chunked_prefill": False,
                                               "num_scheduler_steps": 8}
    assert MP.harness_settings("replicas = 8; engine limits from that config: max batch 8") == {}
    assert MP.harness_batching({"enable_chunked_prefill": False}) == "continuous"
    assert MP.harness_batching({"enable_chunked_context": False}) == "mixed"
    assert MP.harness_batching({"enable_chunked_context": True, "use_graphs": False}) is None
    assert MP.is_loadgen_row(_B200_INTERACTIVE["workload"])
    assert not MP.is_loadgen_row("online serving, Poisson at 4 req/s")


def test_harness_time_is_per_layer_per_step():
    # 150 us x 80 layers (Llama-2-70B) = 12 ms; 32 layers (Llama-3.1-8B) = 4.8 ms
    assert MP.HARNESS_STEP_US_PER_LAYER == 150.0
    assert MP.harness_step_ms(80) == pytest.approx(12.0)
    assert MP.harness_step_ms(32) == pytest.approx(4.8)


def test_an_mlperf_row_gets_its_harness_settings():
    p = V.plan_row(_B200_INTERACTIVE)
    assert p.status == "ok", p.reason
    client = p.scenario["clients"][0]
    assert p.loadgen and "harness_step_ms" not in client   # measured, not applied (mistfast.mlperf)
    assert client["scheduler"]["batching"] == "chunked"          # enable_chunked_context True: as before
    assert client["scheduler"]["max_batch_size"] == 768 and client["scheduler"]["max_batched_tokens"] == 768
    amd = V.plan_row(_MI300X_INTERACTIVE)
    assert amd.status == "ok", amd.reason
    sched = amd.scenario["clients"][0]["scheduler"]
    assert sched["batching"] == "continuous" and sched["max_batched_tokens"] == 40960 and sched["max_batch_size"] == 600
    assert amd.scheduler_steps == 8
    # a row without harness settings (other MLPerf submitters' harnesses, other sources) is unchanged
    bare = V.plan_row(dict(_B200_INTERACTIVE, notes="replicas = 8 / (tp x pp) = 8"))
    assert "harness_step_ms" not in bare.scenario["clients"][0] and bare.loadgen
    assert bare.scenario["clients"][0]["scheduler"]["batching"] == "chunked"


def test_loadgen_latencies_have_no_client_overhead():
    """LoadGen stamps tokens in the harness process: a calibration's ttft_overhead_ms (fitted on
    HTTP benchmark clients) is not added; a benchmark-client row keeps it."""
    p = V.plan_row(_B200_INTERACTIVE)
    pt = scenario_point(parse_scenario(p.scenario))
    client = C.with_efficiency(pt.client, {"ttft_overhead_ms": 26.0})
    assert V.client_side_ms(p, client) == 0.0
    other = V.plan_row(dict(_B200_INTERACTIVE, workload="online serving, Poisson arrivals", request_rate="2"))
    assert not other.loadgen and V.client_side_ms(other, client) == 26.0


def test_harness_time_adds_to_every_step_and_survives_calibration():
    p = V.plan_row(_B200_INTERACTIVE)
    with_h = scenario_point(parse_scenario(p.scenario)).client.model_copy(update={"harness_step_ms": 12.0})
    without = with_h.model_copy(update={"harness_step_ms": 0.0})
    for prefill, decode in (((), ((1, 400),)), (((0, 300),), ((1, 400),) * 200), (((0, 768),), ())):
        d = step_latency(with_h, prefill=prefill, decode=decode).total_ms - \
            step_latency(without, prefill=prefill, decode=decode).total_ms
        assert d == pytest.approx(12.0, abs=1e-9)
    # a calibration replaces the efficiencies (step_overhead_ms included), not the harness time
    cal = C.with_efficiency(with_h, {"compute": 0.4, "memory": 0.9, "step_overhead_ms": 1.5})
    assert cal.harness_step_ms == pytest.approx(12.0)
    d = step_latency(cal, decode=((1, 400),)).total_ms - step_latency(
        cal.model_copy(update={"harness_step_ms": 0.0}), decode=((1, 400),)).total_ms
    assert d == pytest.approx(12.0, abs=1e-9)


def test_the_efficiency_fit_recosts_steps_with_the_harness_time():
    """The fit's re-costing (StepSet) must add the harness time at every trial step overhead, or a
    fit on MLPerf throughput rows would absorb it into the efficiencies."""
    p = V.plan_row(_B200_INTERACTIVE)
    client = scenario_point(parse_scenario(p.scenario)).client.model_copy(update={"harness_step_ms": 12.0})
    ss = C.StepSet()
    ss.add(client, (), ((1, 400),) * 64)
    ss.add(client, ((0, 500),), ((1, 300),) * 10)
    for step_ms in (0.0, 2.0):
        t = ss.times(0.5, 0.8, 3.0, 1.0, step_ms) * 1e3
        direct = [step_latency(C.with_efficiency(client, {"compute": 0.5, "memory": 0.8, "op_overhead_us": 3.0,
                                                          "step_overhead_ms": step_ms}), prefill=pf, decode=dec).total_ms
                  for pf, dec in (((), ((1, 400),) * 64), (((0, 500),), ((1, 300),) * 10))]
        assert t == pytest.approx(direct, rel=1e-9)
        assert min(t) > 12.0 + step_ms


def test_harness_tool_reads_nvidia_and_amd_configs(tmp_path):
    spec = importlib.util.spec_from_file_location("mhs", ROOT / "tools" / "mlperf_harness_settings.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    repo = tmp_path / "results"
    nv = repo / "closed/X/configs/SYS/Server/llama2-70b.py"
    nv.parent.mkdir(parents=True)
    block = ("    C.WorkloadSetting(C.HarnessType.Custom, C.AccuracyTarget({acc})): {{\n"
             "        llm_fields.trtllm_runtime_flags: {{\n            'max_num_tokens': 3584,\n"
             "            'enable_chunked_context': True,\n        }},\n        harness_fields.use_graphs: {g},\n    }},\n")
    nv.write_text("EXPORTS = {\n" + block.format(acc=0.99, g=False) + block.format(acc=0.999, g=True) + "}\n")
    amd = repo / "closed/Y/code/llama2-70b-99/harness_llm/models/llama2-70b/server_mi300x.yaml"
    amd.parent.mkdir(parents=True)
    amd.write_text("vllm_engine_config:\n  enforce_eager: True\n  num_scheduler_steps: 9\n"
                   "  enable_chunked_prefill: False\n  max_num_seqs: 768\n")
    # the two accuracy blocks disagree on use_graphs: left out; chunked context agrees: kept
    assert tool.harness_settings(str(nv), nv.read_text()) == ["enable_chunked_context True"]
    assert tool.harness_settings(str(amd), amd.read_text()) == [
        "enforce_eager True", "enable_chunked_prefill False", "num_scheduler_steps 9"]
    rows = pd.DataFrame([
        {"id": "a", "notes": f"replicas = 8; parallelism from {nv.relative_to(repo)}; engine limits from that config: "
                             "max num tokens 3584; x"},
        {"id": "b", "notes": f"parallelism from {amd.relative_to(repo)}; y"},
        {"id": "c", "notes": "no config named, 1,5 \"quoted\""}])
    csv = tmp_path / "m.csv"
    rows.to_csv(csv, index=False)
    before = csv.read_text().splitlines()
    assert tool.annotate(csv, repo) == 2
    after = csv.read_text().splitlines()
    assert after[3] == before[3]       # untouched row: byte-identical
    got = pd.read_csv(csv, dtype=str).set_index("id").notes
    assert got["a"] == (f"replicas = 8; parallelism from {nv.relative_to(repo)}; harness settings from that config: "
                        "enable_chunked_context True; engine limits from that config: max num tokens 3584; x")
    assert "harness settings from that config: enforce_eager True, enable_chunked_prefill False, " \
           "num_scheduler_steps 9; y" in got["b"]
    assert tool.annotate(csv, repo) == 0   # idempotent
    assert V.engine_limits_from_notes(got["a"], 1) == {"max_batched_tokens": 3584, "chunk_size": 3584}


def test_public_mlperf_rows_carry_their_harness_settings():
    if not PUBLIC.exists():
        pytest.skip("no public.csv")
    d = pd.read_csv(PUBLIC, dtype=str, keep_default_na=False)
    mlperf = d[d.source.str.contains("inference_results_v5.1")]
    named = mlperf[mlperf.notes.str.contains(r"parallelism from \S+\.(?:py|yaml);")]
    assert len(named) > 900
    settings = named.notes.map(MP.harness_settings)
    assert (settings.map(len) > 0).all()
    nvidia = named[named.notes.str.contains(r"/configs/\S+\.py;")]
    assert nvidia.notes.map(MP.harness_settings).map(lambda s: "use_graphs" in s).all()
    # the Dell B200 llama2-70b Interactive config: use_graphs False, enable_chunked_context True
    row = named[named.notes.str.contains("XE9680L_B200_SXM_180GBx8/Interactive/llama2-70b.py")].iloc[0]
    assert MP.harness_settings(row.notes) == {"use_graphs": False, "enable_chunked_context": True}


def test_round_robin_dispatch_gives_erlang_gaps():
    """Every dp-th arrival of a Poisson stream: gaps are sums of dp exponentials (Erlang-dp), whose
    coefficient of variation is 1/sqrt(dp); checked against a direct simulation of the dealing."""
    assert MP.replica_arrival_cv(1) == 1.0
    assert MP.replica_arrival_cv(8) == pytest.approx(0.353553, abs=1e-6)   # 1/sqrt(8) by hand
    assert MP.replica_arrival_cv(4) == 0.5
    with pytest.raises(ValueError, match="dp = 0"):
        MP.replica_arrival_cv(0)
    import numpy as np
    t = np.cumsum(np.random.default_rng(1).exponential(1 / 220.0, 400_000))   # 220 queries/s to 8 cores
    gaps = np.diff(t[3::8])                                                    # what core 3 receives
    assert gaps.mean() == pytest.approx(8 / 220.0, rel=0.01)
    assert gaps.std() / gaps.mean() == pytest.approx(MP.replica_arrival_cv(8), rel=0.02)


def test_dispatch_in_validate_is_off_by_default_and_gamma_when_on(monkeypatch):
    p = V.plan_row(_B200_INTERACTIVE)   # 270,336 queries over 8 replicas: steady state of one replica
    assert p.workload_kind == "poisson, steady state"
    assert p.scenario["workload"]["arrival"] == {"process": "poisson", "rate_rps": 220.0 / 8}
    monkeypatch.setattr(V, "MLPERF_DISPATCH_IN_VALIDATE", True)
    on = V.plan_row(_B200_INTERACTIVE)
    assert on.scenario["workload"]["arrival"] == {"process": "gamma", "rate_rps": 220.0 / 8,
                                                  "cv": pytest.approx(0.353553, abs=1e-6)}
    one = V.plan_row(dict(_B200_INTERACTIVE, num_accel=1, notes=_NV_NOTES.replace("= 8;", "= 1;")))
    assert one.scenario["workload"]["arrival"]["process"] == "poisson"     # one replica: nothing to deal out
    other = V.plan_row(dict(_B200_INTERACTIVE, workload="online serving, Poisson arrivals", request_rate="2"))
    assert other.scenario["workload"]["arrival"]["process"] == "poisson"   # not a LoadGen row


def _tool(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_engine_limits_take_the_runtime_max_num_tokens():
    """NVIDIA's harness runs the executor with the runtime max_num_tokens (llmlib/config.py: the
    runtime flag, else the build flag): the B200 llama3.1-405b Interactive config builds 2048 and
    runs 1536, which the notes used to leave out as ambiguous."""
    bp = _tool("build_public", ROOT / "data" / "measurements" / "build_public.py")
    both = ("model_fields.gpu_batch_size: {'llama3.1-405b': 256},\n llm_fields.trtllm_build_flags: {\n"
            " 'max_num_tokens': 2048,\n 'max_input_len': 20000,\n },\n llm_fields.trtllm_runtime_flags: {\n"
            " 'use_inflight_batching': True,\n 'max_num_tokens': 1536,\n },\n")
    assert bp.mlperf_engine_limits(both, "trtllm-1") == "engine limits from that config: max batch 256, max num tokens 1536"
    build_only = both.replace(" 'max_num_tokens': 1536,\n", "")
    assert bp.mlperf_engine_limits(build_only, "trtllm-1").endswith("max num tokens 2048")
    # two accuracy-target blocks running different budgets: ambiguous, left out
    two = both + both.replace("1536", "1024")
    assert bp.mlperf_engine_limits(two, "trtllm-1") == "engine limits from that config: max batch 256"
    notes = "submitter X; parallelism from closed/X/configs/S/Interactive/llama3_1-405b.py; engine limits from " \
            "that config: max batch 256; summary_results.json Performance_Result 1 Tokens/s"
    monkey = bp._git_show
    try:
        bp._git_show = lambda repo, commit, path: both
        new = bp.mlperf_notes_with_limits(notes, "trtllm-1", "repo")
    finally:
        bp._git_show = monkey
    assert new == notes.replace("max batch 256;", "max batch 256, max num tokens 1536;")


def test_public_405b_interactive_rows_carry_the_runtime_token_budget():
    pub = pd.read_csv(PUBLIC)
    rows = pub[pub.notes.str.contains("B200-SXM-180GBx8/Interactive/llama3_1-405b.py", regex=False)]
    assert len(rows) >= 7
    assert rows.notes.str.contains("engine limits from that config: max batch 256, max num tokens 1536;").all()


def test_ttft_split_tool_by_hand():
    """TTFT_pred/TTFT_meas = (TPOT_pred/TPOT_meas) x (k_pred/k_meas), k = TTFT/TPOT."""
    tool = _tool("mlperf_ttft_split", ROOT / "tools" / "mlperf_ttft_split.py")
    wl = "MLPerf Inference v5.1 Interactive: MLPerf llama2-70b OpenOrca subset"
    pub = pd.DataFrame([dict(id=i, source=s, workload=wl, notes="") for i, s in
                        (("a1", "run-a"), ("a2", "run-a"), ("b1", "run-b"), ("b2", "run-b"))])
    rep = pd.DataFrame([
        # run a: measured 60 / 30 ms (k 2), predicted 20 / 10 ms (k 2): all of it is the step
        dict(id="a1", metric="ttft_ms", measured=60.0, predicted_calibrated=20.0),
        dict(id="a2", metric="tpot_ms", measured=30.0, predicted_calibrated=10.0),
        # run b: measured 60 / 30 ms (k 2), predicted 30 / 10 ms (k 3): step -2/3, k +1/2, TTFT -1/2
        dict(id="b1", metric="ttft_ms", measured=60.0, predicted_calibrated=30.0),
        dict(id="b2", metric="tpot_ms", measured=30.0, predicted_calibrated=10.0)])
    rep = rep.assign(status="ok", device="B200", engine_family="trtllm-1", tp=1)
    runs = tool.run_table(rep, pub).set_index("source")
    assert runs.loc["run-a", ["err_ttft", "err_step", "err_k"]].tolist() == pytest.approx([-2 / 3, -2 / 3, 0.0])
    assert runs.loc["run-b", ["err_ttft", "err_step", "err_k"]].tolist() == pytest.approx([-0.5, -2 / 3, 0.5])
    assert runs.loc["run-b", "k_meas"] == 2.0 and runs.loc["run-b", "k_pred"] == 3.0
    assert runs.loc["run-a", "benchmark"] == "llama2-70b" and runs.loc["run-a", "scenario"] == "Interactive"
    g = tool.group_table(runs.reset_index())
    assert g.runs.tolist() == [2] and g.err_k.tolist() == pytest.approx([0.25])


def test_harness_time_switch_in_validate(monkeypatch):
    """Off: no harness time on the client. On: 150 us x 80 layers = 12 ms on rows with harness
    settings (Llama-2-70B), none on an MLPerf row without them or on another source's row."""
    assert "harness_step_ms" not in V.plan_row(_B200_INTERACTIVE).scenario["clients"][0]
    monkeypatch.setattr(V, "MLPERF_HARNESS_TIME_IN_VALIDATE", True)
    assert V.plan_row(_B200_INTERACTIVE).scenario["clients"][0]["harness_step_ms"] == pytest.approx(12.0)
    bare = V.plan_row(dict(_B200_INTERACTIVE, notes="replicas = 8 / (tp x pp) = 8"))
    assert "harness_step_ms" not in bare.scenario["clients"][0]
    other = V.plan_row(dict(_B200_INTERACTIVE, workload="online serving, Poisson arrivals", request_rate="2"))
    assert "harness_step_ms" not in other.scenario["clients"][0]


def test_mlperf_launch_floor_from_the_harness_settings(monkeypatch):
    # validate.mlperf_launch_floor: TensorRT-LLM harness rows get the eager launch time per kernel
    # (launch_time.EAGER_KERNEL_US); the floor covers decode-only steps when use_graphs is False
    from mistfast import launch_time
    from mistfast import validate as V

    def floor(engine, notes):
        plan = V.RowPlan.__new__(V.RowPlan)
        plan.loadgen, plan.engine = True, engine
        return V.mlperf_launch_floor(plan, {"notes": notes})

    monkeypatch.setattr(V, "MLPERF_LAUNCH_FLOOR_IN_VALIDATE", True)
    us = launch_time.EAGER_KERNEL_US
    assert us == 40.0
    assert floor("trtllm-1", "x; harness settings from that config: use_graphs False, enable_chunked_context True;") == \
        ({"prefill_launch_us": 40.0}, True)
    assert floor("trtllm-1", "harness settings from that config: use_graphs True, enable_chunked_context True;") == \
        ({"prefill_launch_us": 40.0}, False)
    assert floor("vllm", "harness settings from that config: enforce_eager True, enable_chunked_prefill False;") == ({}, False)
    assert floor("trtllm-1", "no settings") == ({}, False)
    monkeypatch.setattr(V, "MLPERF_LAUNCH_FLOOR_IN_VALIDATE", False)   # the shipped default: off
    assert floor("trtllm-1", "harness settings from that config: use_graphs False;") == ({}, False)


def test_predict_only_floor_leaves_the_row_client_alone(monkeypatch):
    """MLPERF_LAUNCH_FLOOR_AT_PREDICT (session 12): the row's scenario (what the fit simulates) is the
    one of the switch off; the floor rides on the plan and is put on the client only when predicting.
    Llama-2-70B at TP1: 80 dense GQA layers x 10 kernels = 800 launches x 40 us = 32.0 ms per step,
    every step (the Dell config sets use_graphs False)."""
    from mistfast import launch_time
    assert V.MLPERF_LAUNCH_FLOOR_AT_PREDICT is True and V.MLPERF_LAUNCH_FLOOR_IN_VALIDATE is False   # the defaults
    monkeypatch.setattr(V, "MLPERF_LAUNCH_FLOOR_AT_PREDICT", False)
    off = V.plan_row(_B200_INTERACTIVE)
    assert off.predict_floor == ({}, False)
    monkeypatch.setattr(V, "MLPERF_LAUNCH_FLOOR_AT_PREDICT", True)
    on = V.plan_row(_B200_INTERACTIVE)
    assert on.scenario == off.scenario                     # the fit's training run is unchanged
    assert "prefill_launch_us" not in on.scenario["clients"][0]["efficiency"]
    assert on.predict_floor == ({"prefill_launch_us": 40.0}, True)
    base = scenario_point(parse_scenario(on.scenario)).client
    cal = C.with_efficiency(base, {"compute": 0.6, "memory": 0.8, "step_overhead_ms": 1.0})
    floored = V.with_predict_floor(cal, on)
    assert floored.efficiency.prefill_launch_us == 40.0 and floored.harness_no_graphs
    assert floored.efficiency.compute == 0.6 and floored.efficiency.step_overhead_ms == 1.0   # the fit's values kept
    assert V.with_predict_floor(cal, off) is cal
    assert launch_time.kernels_per_step(base.model, 1) == 800
    small = [(1, 1000)] * 32
    assert step_latency(cal, decode=small).total_s < 0.032          # the calibrated device step alone is shorter
    # the floor bounds the device part; the fitted host time per step (step_overhead_ms) adds after it
    assert step_latency(floored, decode=small).total_s == pytest.approx(800 * 40e-6 + 1.0e-3, rel=1e-12)
    big = [(1, 1000)] * 2000                                          # the device is busy longer: unchanged (a max)
    assert step_latency(cal, decode=big).total_s > 0.032
    assert step_latency(floored, decode=big).total_s == step_latency(cal, decode=big).total_s
    # the in-fit switch (session 11) puts the floor into the scenario itself; the predict-only one then adds nothing
    monkeypatch.setattr(V, "MLPERF_LAUNCH_FLOOR_IN_VALIDATE", True)
    both = V.plan_row(_B200_INTERACTIVE)
    assert both.scenario["clients"][0]["efficiency"]["prefill_launch_us"] == 40.0 and both.predict_floor == ({}, False)
    # other rows: no floor (an AMD harness row with its own switch off, an MLPerf row without harness settings);
    # the AMD harness's enforce_eager rows get the every-step floor from their own switch (session 14)
    monkeypatch.setattr(V, "MLPERF_LAUNCH_FLOOR_IN_VALIDATE", False)
    monkeypatch.setattr(V, "MLPERF_EAGER_FLOOR_VLLM_AT_PREDICT", False)
    assert V.plan_row(_MI300X_INTERACTIVE).predict_floor == ({}, False)
    monkeypatch.setattr(V, "MLPERF_EAGER_FLOOR_VLLM_AT_PREDICT", True)
    assert V.plan_row(_MI300X_INTERACTIVE).predict_floor == ({"prefill_launch_us": 40.0}, True)
    assert V.plan_row(dict(_B200_INTERACTIVE, notes="replicas = 8 / (tp x pp) = 8")).predict_floor == ({}, False)
