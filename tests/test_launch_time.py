"""Kernel-launch time of engine steps (docs/step-model.md, "Launch-bound steps"; mistfast.launch_time)
against hand-counted kernels and hand-computed step times."""
import pytest

import mistfast as mf
from mistfast import launch_time, step_latency
from mistfast.specs import make_client as _make_client
from tests.reference.step_reference import reference_step_time
from .builders import model_client as make_client


def test_kernels_per_step_by_hand():
    # Llama-3.1-8B: 32 dense GQA layers of 2 norms + 5 attention + 3 FFN kernels; TP adds 2 AllReduces
    assert launch_time.kernels_per_step(make_client("llama-3.1-8b", "H100").model, 1) == 32 * 10 == 320
    assert launch_time.kernels_per_step(make_client("llama-3.1-8b", "H100").model, 2) == 32 * 12 == 384
    # DeepSeek-V3 TP8: 3 dense MLA layers (2 + 11 + 3 + 2) and 58 MoE layers (2 + 11 + 7 + 3 shared + 2)
    ds = make_client("deepseek-ai/DeepSeek-R1", "H200", tp=8).model
    assert launch_time.kernels_per_step(ds, 8) == 3 * 18 + 58 * 25 == 1504
    # gpt-oss-120b on one device: 36 GQA MoE layers without shared experts (2 + 5 + 7)
    assert launch_time.kernels_per_step(make_client("gpt-oss-120b", "H200").model, 1) == 36 * 14 == 504


def test_eager_prefill_step_is_launch_bound_below_the_floor():
    eager = make_client("deepseek-ai/DeepSeek-R1", "H200", tp=8, efficiency={"prefill_launch_us": 40.0})
    plain = make_client("deepseek-ai/DeepSeek-R1", "H200", tp=8)
    # a 64-token prompt: the roofline is weight streaming, about 20 ms, below 1504 kernels x 40 us = 60.16 ms
    dev = step_latency(plain, prefill=[(0, 64)]).total_s
    assert dev < 0.03
    got = step_latency(eager, prefill=[(0, 64)])
    assert got.total_s == pytest.approx(1504 * 40e-6, rel=1e-12)
    # the waiting time is reported with the host time ("other")
    assert got.breakdown["other_s"] - step_latency(plain, prefill=[(0, 64)]).breakdown["other_s"] == \
        pytest.approx(1504 * 40e-6 - dev, rel=1e-9)
    # a 16k-token prompt keeps the device busy longer than the launches take: unchanged
    big = step_latency(plain, prefill=[(0, 16384)]).total_s
    assert big > 0.0602
    assert step_latency(eager, prefill=[(0, 16384)]).total_s == big
    # decode-only steps replay CUDA graphs: unchanged
    assert step_latency(eager, decode=[(1, 900)] * 8).total_s == step_latency(plain, decode=[(1, 900)] * 8).total_s


def test_floor_is_before_the_step_overhead_and_after_the_correction():
    corr = {"tokens": [1, 4096], "prefill": [2.0, 2.0], "decode": [3.0, 3.0]}
    # 8 tokens of Llama-3.1-8B: the roofline streams 16 GB of weights at 2.51 TB/s, about 6.4 ms
    # (12.8 ms corrected); 320 kernels x 60 us = 19.2 ms is above both, and the 5 ms step overhead
    # comes on top
    eff60 = {"prefill_launch_us": 60.0, "step_overhead_ms": 5.0}
    c = make_client("llama-3.1-8b", "H100", efficiency=eff60)
    k = make_client("llama-3.1-8b", "H100", efficiency=eff60, step_correction=corr)
    assert step_latency(c, prefill=[(0, 8)]).total_s == pytest.approx(320 * 60e-6 + 5e-3, rel=1e-12)
    assert step_latency(k, prefill=[(0, 8)]).total_s == pytest.approx(320 * 60e-6 + 5e-3, rel=1e-12)
    # with 20 us the corrected device time (2 x ~6.4 ms) is above 320 x 20 us = 6.4 ms: no wait
    eff20 = {"prefill_launch_us": 20.0}
    k20 = make_client("llama-3.1-8b", "H100", efficiency=eff20, step_correction=corr)
    k0 = make_client("llama-3.1-8b", "H100", step_correction=corr)
    assert step_latency(k20, prefill=[(0, 8)]).total_s == step_latency(k0, prefill=[(0, 8)]).total_s


def test_graph_replayed_decode_adds_a_time_per_kernel():
    g = make_client("llama-3.1-8b", "H100", tp=2, efficiency={"decode_launch_us": 3.0})
    e = make_client("llama-3.1-8b", "H100", tp=2)
    for dec in ([(1, 500)], [(1, 700)] * 64):
        assert step_latency(g, decode=dec).total_s - step_latency(e, decode=dec).total_s == \
            pytest.approx(384 * 3e-6, abs=1e-15)
    # steps with prefill rows do not replay the decode graphs
    assert step_latency(g, prefill=[(0, 2000)]).total_s == step_latency(e, prefill=[(0, 2000)]).total_s


@pytest.mark.parametrize("spec", [
    dict(model="deepseek-ai/DeepSeek-R1", device="B200", tp=8, efficiency={"prefill_launch_us": 40.0}),
    dict(model="openai/gpt-oss-120b", device="H200", efficiency={"prefill_launch_us": 40.0, "decode_launch_us": 2.5}),
    dict(model="llama-3.1-70b", device="H100", tp=4, pp=2, efficiency={"prefill_launch_us": 25.0,
                                                                       "decode_launch_us": 4.0,
                                                                       "step_overhead_ms": 1.0}),
])
@pytest.mark.parametrize("shape", [([(0, 100)], []), ([(0, 20000)], []), ([], [(1, 3000)] * 32),
                                   ([(500, 256)], [(1, 800)] * 10)])
def test_kernel_matches_python_twin(spec, shape):
    c = make_client(**spec)
    pf, dec = shape
    want, _ = reference_step_time(c, pf, dec)
    assert step_latency(c, prefill=pf, decode=dec).total_s == pytest.approx(want, rel=1e-9, abs=1e-15)


def test_engine_defaults(monkeypatch):
    # an engine family in the table gets its host time per kernel; others nothing
    monkeypatch.setitem(launch_time.EAGER_PREFILL_ENGINES, "sglang", 40.0)
    assert launch_time.engine_launch_efficiency("sglang") == {"prefill_launch_us": 40.0}
    assert launch_time.engine_launch_efficiency("no-such-engine") == {}
    assert launch_time.engine_launch_efficiency("") == {}


def test_engine_runs_identically_with_and_without_decode_runs():
    doc = {"clients": [{"model": "llama-3.1-8b", "device": "H100",
                        "efficiency": {"prefill_launch_us": 40.0, "decode_launch_us": 3.0}}],
           "workload": {"num_requests": 100, "arrival": {"process": "poisson", "rate_rps": 8.0},
                        "input": {"dist": "lognormal", "mean": 600, "std": 400, "max_tokens": 3000},
                        "output": {"dist": "lognormal", "mean": 120, "std": 80, "max_tokens": 600}},
           "simulation": {"seed": 3}}
    a = mf.simulate(doc)
    assert a.identical(mf.simulate(doc, decode_runs=False))
    assert int(a.n_finished) == 100
    base = mf.simulate({**doc, "clients": [{"model": "llama-3.1-8b", "device": "H100", "efficiency": {}}]})
    # every decode step is 320 x 3 us = 0.96 ms longer and prefill steps no shorter
    assert float(a.tpot_p50_ms) >= float(base.tpot_p50_ms) + 0.96 - 1e-6


def test_bad_launch_time_is_one_clear_line():
    with pytest.raises(mf.SpecError, match=r"prefill_launch_us.*-1"):
        mf.parse_scenario({"clients": [{"model": "llama-3.1-8b", "device": "H100",
                                        "efficiency": {"prefill_launch_us": -1.0}}]})


def test_validate_rows_take_their_engines_default(monkeypatch):
    from mistfast import validate as V
    monkeypatch.setitem(launch_time.EAGER_PREFILL_ENGINES, "sglang", 40.0)
    monkeypatch.delitem(launch_time.EAGER_PREFILL_ENGINES, "vllm", raising=False)
    row = dict(id="s", source="https://example.org/bench", engine="SGLang (python -m sglang.launch_server)",
               engine_version="0.5.2", model="meta-llama/Llama-3.1-8B-Instruct", precision="BF16",
               hardware="H100-SXM-80GB", num_accel=1, tp=1, pp=1,
               workload="closed loop at concurrency 4, random prompts", isl=1024, osl=128,
               batch_or_concurrency=4, request_rate="inf", metric="ttft_p50_ms", value=50.0, notes="",
               dataset="", engine_family="sglang")
    p = V.plan_row(row)
    assert p.status == "ok", p.reason
    assert p.scenario["clients"][0]["efficiency"] == {"prefill_launch_us": 40.0}
    q = V.plan_row(dict(row, engine="vLLM (vllm serve)", engine_family="vllm"))
    assert q.status == "ok", q.reason
    assert q.scenario["clients"][0]["efficiency"] == {}


@pytest.mark.parametrize("eff, shape", [
    ({"prefill_launch_us": 40.0, "step_overhead_ms": 2.0}, ([(0, 32)], [])),
    ({"prefill_launch_us": 40.0}, ([(0, 16000)], [])),
    ({"decode_launch_us": 3.0, "step_overhead_ms": 1.0}, ([], [(1, 900)] * 16)),
])
def test_op_breakdown_has_a_launch_row_and_sums_to_the_step(eff, shape):
    from mistfast.opbreakdown import op_breakdown
    c = make_client("llama-3.1-8b", "H100", efficiency=eff)
    ops, total = op_breakdown(c, prefill=shape[0], decode=shape[1])
    assert sum(o.time_s for o in ops) == pytest.approx(total, rel=1e-12)
    rows = {o.name: o.time_s for o in ops}
    if shape[1]:
        assert rows["kernel launches"] == pytest.approx(320 * 3e-6, rel=1e-12)
    elif shape[0][0][1] == 32:
        # 32 tokens: the launches (12.8 ms) outlast the device: the row is the wait beyond it
        assert total - 2e-3 == pytest.approx(320 * 40e-6, rel=1e-12)
        assert rows["kernel launches"] > 0
    else:
        assert "kernel launches" not in rows


def test_a_client_naming_its_engine_gets_the_engines_launch_default(monkeypatch):
    monkeypatch.setitem(launch_time.EAGER_PREFILL_ENGINES, "sglang", 40.0)
    monkeypatch.delitem(launch_time.EAGER_PREFILL_ENGINES, "vllm", raising=False)
    c = _make_client("llama-3.1-8b", "H100", engine="sglang")
    assert c.efficiency.prefill_launch_us == 40.0
    assert _make_client("llama-3.1-8b", "H100", engine="vllm").efficiency.prefill_launch_us == 0.0
    # a client's own efficiency is never replaced
    assert _make_client("llama-3.1-8b", "H100", engine="sglang", efficiency={}).efficiency.prefill_launch_us == 0.0


def test_no_graphs_floor_holds_for_decode_only_steps():
    # MLPerf harness configs with use_graphs False (docs/ttft-under-load.md, "MLPerf TTFT, session 11"):
    # Llama-2-70B at TP1 is 80 dense GQA layers x 10 kernels = 800; x 40 us = 32.0 ms
    eff = {"prefill_launch_us": 40.0}
    ng = make_client("llama-2-70b", "B200", tp=1, efficiency=eff, harness_no_graphs=True)
    gr = make_client("llama-2-70b", "B200", tp=1, efficiency=eff)
    plain = make_client("llama-2-70b", "B200", tp=1)
    assert launch_time.kernels_per_step(plain.model, 1) == 800
    dec = [(1, 1000)] * 32
    dev = step_latency(plain, decode=dec).total_s
    assert dev < 0.032                                    # the device alone is faster than the launches
    assert step_latency(ng, decode=dec).total_s == pytest.approx(800 * 40e-6, rel=1e-12)
    assert step_latency(gr, decode=dec).total_s == dev    # graph replays: no floor on decode-only steps
    # prefill steps have the floor either way; a step the device keeps busy longer is unchanged
    assert step_latency(ng, prefill=[(0, 64)]).total_s == step_latency(gr, prefill=[(0, 64)]).total_s
    big = [(1, 1000)] * 1500
    assert step_latency(plain, decode=big).total_s > 0.032
    assert step_latency(ng, decode=big).total_s == step_latency(plain, decode=big).total_s
    # the plain-Python twin agrees
    for d in (dec, big):
        assert step_latency(ng, decode=d).total_s == pytest.approx(reference_step_time(ng, [], d)[0], rel=1e-9)
