"""Calibration of the analytical step model (mistfast.calibration).

Ground truth here is always either synthetic data generated from a client with *known*
efficiencies (through the analytical step model, which is not the code under test), or values
worked out by hand from small CSV files in tests/data."""
from pathlib import Path
import math
import warnings

import numpy as np
import pytest

from mistfast import calibration as C
from mistfast import step_latency
from mistfast.specs import make_client

DATA = Path(__file__).parent / "data"
MODEL, DEVICE = "llama-3.1-8b", "H100"


def _obs(client, prefill=(), decode=(), time_s=None, **kw):
    t = step_latency(client, prefill=prefill, decode=decode).total_s if time_s is None else time_s
    return C.StepObservation(model=client.model.name, device=client.device.name, tp=client.tp,
                             precision=kw.pop("precision", "bf16"), time_s=t, prefill=prefill, decode=decode, **kw)


def _sweep(client, precision="bf16", engine="", kvs=(512, 8192)):
    """Prefill sweep + decode sweep at two contexts (memory bytes vary at a fixed op count, which
    separates eta_m from the per-op overhead)."""
    obs = [_obs(client, prefill=[(0, P)], precision=precision, engine=engine, id=f"p{P}")
           for P in (256, 1024, 4096)]
    obs += [_obs(client, decode=[(1, kv)] * B, precision=precision, engine=engine, id=f"d{B}-{kv}")
            for B in (1, 16, 128) for kv in kvs]
    return obs


# ---- (a) recover known efficiencies -------------------------------------------------------------
def test_fit_recovers_known_efficiencies():
    truth = make_client(MODEL, DEVICE, efficiency={"compute": 0.5, "memory": 0.6})
    base = make_client(MODEL, DEVICE, efficiency={})   # MODEL.md's efficiencies 0.75 / 0.75
    assert base.efficiency.compute == 0.75 and base.efficiency.memory == 0.75
    fit = C.fit_efficiency(_sweep(truth), lambda o: base, group_by=None)
    assert fit.compute == pytest.approx(0.5, rel=0.02)
    assert fit.memory == pytest.approx(0.6, rel=0.02)
    assert fit.op_overhead_us < 1.0             # truth: no per-op overhead
    assert fit.median_abs_rel_err < 0.01


def test_fit_groups_by_device_and_engine():
    h = make_client(MODEL, "H100", efficiency={"compute": 0.5, "memory": 0.6})
    a = make_client(MODEL, "A100", efficiency={"compute": 0.7, "memory": 0.85, "op_overhead_us": 5.0})
    obs = _sweep(h, engine="vllm") + _sweep(a, engine="vllm")
    fits = C.fit_efficiency(obs)                # default factory: catalog client with default efficiency
    assert set(fits) == {("H100", "vllm"), ("A100", "vllm")}
    assert fits[("H100", "vllm")].compute == pytest.approx(0.5, rel=0.02)
    assert fits[("H100", "vllm")].memory == pytest.approx(0.6, rel=0.02)
    assert fits[("A100", "vllm")].compute == pytest.approx(0.7, rel=0.02)
    assert fits[("A100", "vllm")].memory == pytest.approx(0.85, rel=0.02)
    assert fits[("A100", "vllm")].op_overhead_us == pytest.approx(5.0, rel=0.05)


def test_fit_bounds():
    # a device "faster than its datasheet": eta is capped at 1
    fast = make_client(MODEL, DEVICE)
    obs = [_obs(fast, prefill=[(0, 4096)], time_s=step_latency(fast, prefill=[(0, 4096)]).total_s * 0.3),
           _obs(fast, decode=[(1, 1024)], time_s=step_latency(fast, decode=[(1, 1024)]).total_s * 0.3)]
    fit = C.fit_efficiency(obs, lambda o: fast, group_by=None)
    assert 0.05 <= fit.compute <= 1.0 and 0.05 <= fit.memory <= 1.0 and fit.op_overhead_us >= 0.0
    assert fit.compute == pytest.approx(1.0, abs=1e-6) and fit.memory == pytest.approx(1.0, abs=1e-6)


# ---- (b) the calibrated predictor reproduces its training points --------------------------------------
PREFILL_T = (128, 256, 512, 1024, 2048, 4096, 8192)
DECODE_B = (1, 4, 16, 64, 256)
KV = 1024


def _measured_steps():
    """Synthetic 'engine': eta 0.6/0.8 plus effects the roofline does not have (a 3 ms step floor on
    prefill, a batch-dependent decode slowdown), all monotone in T."""
    eng = make_client(MODEL, DEVICE, efficiency={"compute": 0.6, "memory": 0.8})
    obs = []
    for P in PREFILL_T:
        t = step_latency(eng, prefill=[(0, P)]).total_s + 3e-3
        obs.append(_obs(eng, prefill=[(0, P)], time_s=t, id=f"p{P}"))
    for B in DECODE_B:
        t = step_latency(eng, decode=[(1, KV)] * B).total_s * (1 + 0.05 * math.log2(B)) + 2e-3
        obs.append(_obs(eng, decode=[(1, KV)] * B, time_s=t, id=f"d{B}"))
    return obs


@pytest.fixture(scope="module")
def calibrated():
    obs = _measured_steps()
    base = make_client(MODEL, DEVICE)
    fit = C.fit_efficiency(obs, lambda o: base, group_by=None)
    eff_client = C.with_efficiency(base, fit.as_efficiency())
    with warnings.catch_warnings():
        warnings.simplefilter("error")        # no knot-budget / tolerance warnings on this data
        corr = C.fit_step_correction(obs, eff_client)
    return obs, eff_client, C.with_efficiency(eff_client, None, corr), corr


def test_calibrated_predictor_reproduces_training_points(calibrated):
    obs, eff_client, client, corr = calibrated
    assert client.step_correction is not None and len(corr["tokens"]) <= 16
    worst = 0.0
    for o in obs:
        t = step_latency(client, prefill=o.prefill, decode=o.decode)
        worst = max(worst, abs(t.total_s / o.time_s - 1))
        assert t.breakdown["outside_calibrated_range"] == 0.0
    assert worst <= C.CORRECTION_TOLERANCE
    # efficiency alone does not (the synthetic engine has non-roofline effects)
    eff_err = max(abs(step_latency(eff_client, prefill=o.prefill, decode=o.decode).total_s / o.time_s - 1)
                  for o in obs)
    assert eff_err > 0.05


def test_correction_through_simulate_matches_step_latency(calibrated):
    # the engine kernel applies the same table: a one-request run = one prefill + decode steps
    _, _, client, _ = calibrated
    from mistfast import simulate
    sc = {"clients": [dict(client.model_dump(), scheduler={"batching": "continuous"})],
          "workload": {"num_requests": 1, "arrival": {"process": "offline"},
                       "input": {"dist": "fixed", "value": 1024}, "output": {"dist": "fixed", "value": 3}},
          "simulation": {"horizon_s": 100.0}}
    ds = simulate(sc)
    # engine semantics: after the prefill step the request holds prompt + g - 1 tokens of KV
    expect = step_latency(client, prefill=[(0, 1024)]).total_s + sum(
        step_latency(client, decode=[(1, 1024 + g - 1)]).total_s for g in (1, 2))
    assert float(ds.e2e_mean_ms) / 1e3 == pytest.approx(expect, rel=1e-9)


# ---- (c) monotone where the data is monotone ----------------------------------------------------------
def _turn_back(times) -> float:
    t = np.asarray(times)
    return float(np.max(np.maximum.accumulate(t) - t) / t.max())


def test_interpolation_is_monotone_where_data_is(calibrated):
    obs, _, client, _ = calibrated
    assert all(np.diff([o.time_s for o in obs if o.kind == "prefill"]) > 0)
    assert all(np.diff([o.time_s for o in obs if o.kind == "decode"]) > 0)
    grid = np.unique(np.round(np.geomspace(PREFILL_T[0], PREFILL_T[-1], 160)).astype(int))
    pre = [step_latency(client, prefill=[(0, int(T))]).total_s for T in grid]
    dec = [step_latency(client, decode=[(1, KV)] * B).total_s for B in range(DECODE_B[0], DECODE_B[-1] + 1)]
    assert _turn_back(pre) == 0.0
    assert _turn_back(dec) == 0.0


def test_monotone_when_the_factor_must_fall_steeply():
    # splitwise-like prefill sweep: flat at small prompts (framework floor), then compute-bound.
    # The ratio measured/roofline falls steeply between 128 and 512 tokens while the roofline rises;
    # linear interpolation of the factor alone would make the product turn back there.
    base = make_client("llama-2-70b", "A100", tp=8, precision="fp16")
    times_ms = {128: 65.1, 256: 67.05, 512: 95.72, 1024: 154.62, 2048: 274.16, 4096: 651.33, 8192: 1544.36}
    obs = [C.StepObservation(model="llama-2-70b", device="A100", tp=8, precision="fp16", time_s=v / 1e3,
                             prefill=[(0, P)], id=f"p{P}") for P, v in times_ms.items()]
    corr = C.fit_step_correction(obs, base)
    client = C.with_efficiency(base, None, corr)
    for P, v in times_ms.items():   # exact at the measured points
        assert step_latency(client, prefill=[(0, P)]).total_ms == pytest.approx(v, rel=1e-6)
    grid = np.unique(np.round(np.geomspace(128, 8192, 400)).astype(int))
    ts = [step_latency(client, prefill=[(0, int(T))]).total_s for T in grid]
    assert _turn_back(ts) <= 1e-3     # documented tolerance (monotone_rtol)


# ---- (d) outside the range: nearest-boundary factor, flagged and warned ------------------------------
def test_outside_range_uses_boundary_factor_and_flags(calibrated):
    obs, eff_client, client, _ = calibrated
    last = next(o for o in obs if o.prefill == ((0, PREFILL_T[-1]),))
    # expected factor: measured / efficiency-only prediction at the last measured point, both less
    # the fitted per-step overhead, which the kernel adds after the correction
    ovh = eff_client.efficiency.step_overhead_ms * 1e-3
    f_last = (last.time_s - ovh) / (step_latency(eff_client, prefill=last.prefill).total_s - ovh)
    out = step_latency(client, prefill=[(0, 16384)])
    ref = step_latency(eff_client, prefill=[(0, 16384)])
    assert out.breakdown["outside_calibrated_range"] == 1.0
    assert out.total_s == pytest.approx((ref.total_s - ovh) * f_last + ovh, rel=1e-9)
    inside = step_latency(client, prefill=[(0, 3000)])
    assert inside.breakdown["outside_calibrated_range"] == 0.0


def test_outside_range_decode_only_table():
    eng = make_client(MODEL, DEVICE, efficiency={"compute": 0.6, "memory": 0.7})
    obs = [_obs(eng, decode=[(1, KV)] * B, time_s=step_latency(eng, decode=[(1, KV)] * B).total_s * (1.1 + 0.01 * B),
                id=f"d{B}") for B in (2, 8, 32)]
    # the correction scales the step before the fixed host time: a base without one (the pooled
    # default may carry a fitted step_overhead_ms) keeps the expected factor exact
    base = make_client(MODEL, DEVICE, efficiency={"compute": 0.75, "memory": 0.75})
    corr = C.fit_step_correction(obs, base)
    client = C.with_efficiency(base, None, corr)
    f_first = obs[0].time_s / step_latency(base, decode=obs[0].decode).total_s
    below = step_latency(client, decode=[(1, KV)])
    assert below.breakdown["outside_calibrated_range"] == 1.0
    assert below.total_s == pytest.approx(step_latency(base, decode=[(1, KV)]).total_s * f_first, rel=1e-9)
    # a kind without data keeps factor 1
    assert corr["prefill"] == [1.0] * len(corr["tokens"])


def test_simulate_warns_outside_range(calibrated):
    _, _, client, _ = calibrated
    from mistfast import simulate
    sc = {"clients": [dict(client.model_dump(), scheduler={"batching": "continuous", "max_batched_tokens": 32768})],
          "workload": {"num_requests": 2, "arrival": {"process": "offline"},
                       "input": {"dist": "fixed", "value": 12000}, "output": {"dist": "fixed", "value": 2}},
          "simulation": {"horizon_s": 100.0}}
    with pytest.warns(UserWarning, match="outside the measured range"):
        ds = simulate(sc)
    assert int(ds.steps_outside_calibration) >= 1


# ---- schemas and importers ------------------------------------------------------------------------------
def test_parse_and_format_batch():
    assert C.parse_batch("0:512;1024:256") == ((0, 512), (1024, 256))
    assert C.parse_batch("3*1:576") == ((1, 576),) * 3
    assert C.parse_batch("") == () and C.parse_batch(None) == ()
    assert C.format_batch(((1, 576),) * 3 + ((0, 8),)) == "3*1:576;0:8"


def test_load_step_csv():
    obs = C.load_step_csv(DATA / "steps_small.csv")
    assert [o.id for o in obs] == ["s1", "s2", "s3"]
    s1, s2, s3 = obs
    assert (s1.model, s1.device, s1.engine, s1.precision) == ("llama-3.1-8b", "H100", "vllm", "fp8/fp8/fp8/bf16")
    assert s1.prefill == ((0, 512),) and s1.decode == () and s1.time_s == pytest.approx(0.0312)
    assert s1.kind == "prefill" and s1.tokens == 512 and s1.group == "sweepA"
    assert s2.decode == ((1, 576),) * 64 and s2.pp == 1 and s2.kind == "decode" and s2.tokens == 64
    assert s3.tp == 2 and s3.prefill == ((0, 256), (1024, 256))
    assert s3.decode == ((1, 2048),) * 8 + ((4, 100),) * 2 and s3.tokens == 256 + 256 + 8 + 8
    assert s3.kind == "prefill"  # any prefill chunk: the kernel's prefill correction row


def test_write_step_csv_round_trip(tmp_path):
    obs = C.load_step_csv(DATA / "steps_small.csv")
    C.write_step_csv(obs, tmp_path / "s.csv")
    again = C.load_step_csv(tmp_path / "s.csv")
    assert [(o.prefill, o.decode, o.time_s, o.tp, o.precision) for o in again] == \
        [(o.prefill, o.decode, o.time_s, o.tp, o.precision) for o in obs]


def test_import_splitwise_profile():
    obs = C.import_splitwise_profile(DATA / "splitwise_profile_small.csv")
    by = {o.id: o for o in obs}
    p = by["llama-2-70b-A100-tp2-prefill-P512-B1"]
    assert p.time_s == pytest.approx(0.197)        # mean of 196 and 198 ms
    assert p.prefill == ((0, 512),) and p.tp == 2 and p.precision == "fp16/fp16/fp16/fp16"
    d = by["llama-2-70b-A100-tp2-decode-P512-B1-S128"]
    assert d.time_s == pytest.approx(0.055) and d.decode == ((1, 512 + 64),)
    p2 = by["llama-2-70b-A100-tp2-prefill-P1024-B2"]
    assert p2.prefill == ((0, 1024),) * 2 and p2.time_s == pytest.approx(0.75)
    assert by["llama-2-70b-A100-tp2-decode-P1024-B2-S128"].decode == ((1, 1088),) * 2
    assert "llama-2-70b-H100-tp2-prefill-P512-B1" in by
    assert len(obs) == 6 and {o.engine for o in obs} == {"splitwise"}


def test_import_request_benchmark():
    obs, skipped = C.import_request_benchmark(DATA / "request_benchmark_small.csv")
    by = {o.id: o for o in obs}
    assert by["r1:ttft"].prefill == ((0, 1000),) and by["r1:ttft"].time_s == pytest.approx(0.020)
    assert by["r1:tpot"].decode == ((1, 1100),) and by["r1:tpot"].time_s == pytest.approx(0.008)
    # tpot from e2e: (822 - 30) / (100 - 1) = 8 ms
    assert by["r2:tpot"].time_s == pytest.approx(0.008) and by["r2:tpot"].decode == ((1, 2050),)
    assert by["r4:ttft"].prefill == ((0, 512),) * 8 and by["r4:tpot"].decode == ((1, 544),) * 8
    assert [s[0] for s in skipped] == ["r3"] and "queueing" in skipped[0][1]
    assert all(o.model == "llama-3.1-8b" and o.device == "H100" and o.engine == "vllm" for o in obs)


def test_observations_from_measurements():
    import pandas as pd
    df = pd.DataFrame([
        dict(id="a", engine="Splitwise characterization runs", engine_version="n/a", model="Llama-2-70B",
             precision="FP16", hardware="A100-SXM-80GB", tp=8, pp=1, workload="single batch prefill",
             isl=2048, osl=128, batch_or_concurrency="1", metric="prefill_ms", value=274.16),
        dict(id="b", engine="Splitwise characterization runs", engine_version="n/a", model="Llama-2-70B",
             precision="FP16", hardware="A100-SXM-80GB", tp=8, pp=1, workload="static batch decode step",
             isl=512, osl=128, batch_or_concurrency="16", metric="decode_step_ms", value=50.44),
        dict(id="c", engine="TensorRT-LLM (gptSessionBenchmark)", engine_version="0.5.0", model="Llama-2 LLaMA-7B",
             precision="FP8", hardware="H100-SXM-80GB", tp=1, pp=1, workload="single request, batch 1",
             isl=128, osl=1, batch_or_concurrency="1", metric="ttft_ms", value=7),
        dict(id="d", engine="TensorRT-LLM", engine_version="v1.0", model="Llama-3.1-8B", precision="FP8",
             hardware="H100-SXM-80GB", tp=1, pp=1, workload="offline", isl=128, osl=128,
             batch_or_concurrency="engine-chosen", metric="output_tok_s", value=28312),
        dict(id="e", engine="x", engine_version="", model="Falcon-180B", precision="FP16", hardware="A100",
             tp=1, pp=1, workload="single request", isl=128, osl=1, batch_or_concurrency="1",
             metric="ttft_ms", value=12),
    ])
    obs, skipped = C.observations_from_measurements(df)
    by = {o.id: o for o in obs}
    assert by["a"].prefill == ((0, 2048),) and by["a"].tp == 8 and by["a"].engine == "splitwise"
    assert by["b"].decode == ((1, 576),) * 16 and by["b"].time_s == pytest.approx(0.05044)
    assert by["c"].prefill == ((0, 128),) and by["c"].precision == "fp8/fp8/fp8/bf16" and by["c"].engine == "trtllm-0"
    assert set(skipped) == {"d", "e"}


def test_name_resolution():
    assert C.resolve_model("Llama-2 LLaMA-70B (Llama-2-70B)") == "llama-2-70b"
    assert C.resolve_model("Llama-3.1-8B-Instruct (nvidia/Llama-3.1-8B-Instruct-FP8)") == "llama-3.1-8b"
    assert C.resolve_model("Llama-3.3-70B-Instruct") == "llama-3.3-70b"
    assert C.resolve_model("BLOOM-176B") == "bloom-176b"
    # Hugging Face ids and catalog spellings resolve as in a scenario (mistfast.modelnames)
    assert C.resolve_model("GPT-J 6B") == "gpt-j-6b"
    assert C.resolve_model("openai/gpt-oss-120b") == "gpt-oss-120b"
    assert C.resolve_model("deepseek-ai/DeepSeek-R1-0528") == "deepseek-v3"
    assert C.resolve_model("amd/Llama-3.1-70B-Instruct-FP8-KV") == "llama-3.1-70b"
    assert C.resolve_model("Falcon-180B") is None
    assert C.resolve_device("H100-SXM-80GB") == "H100" and C.resolve_device("GB200") == "GB200"
    assert C.resolve_device("B200") == "B200" and C.resolve_device("H200-SXM-141GB") == "H200"
    assert C.resolve_device("TPU-v9z") is None
    assert C.parse_precision("FP4 (nvidia/Llama-3.3-70B-Instruct-FP4)") == \
        {"weights": "fp4", "compute": "fp4", "kv": "fp8", "activations": "bf16"}
    assert C.parse_precision("FP16")["kv"] == "fp16"
    assert C.precision_key("fp8") == "fp8/fp8/fp8/bf16"
    assert C.engine_family("TensorRT-LLM (trtllm-bench, PyTorch backend)", "v1.0 (doc)") == "trtllm-1"
    assert C.engine_family("TensorRT-LLM (gptSessionBenchmark)", "0.5.0") == "trtllm-0"
    assert C.engine_family("Splitwise characterization runs", "n/a") == "splitwise"
    assert C.engine_family("vLLM", "0.6.3") == "vllm"


# ---- stored calibration ---------------------------------------------------------------------------------
def test_toml_round_trip_and_calibrated_efficiency(tmp_path):
    cal = C.Calibration()
    cal.efficiencies[("H100", "vllm")] = C.EfficiencyFit(compute=0.61, memory=0.83, op_overhead_us=4.5,
                                                        n_steps=3, rows=("a", "b", "c"), median_abs_rel_err=0.02)
    cal.efficiencies[("H100", "*")] = C.EfficiencyFit(compute=0.6, memory=0.8, op_overhead_us=5.0)
    cal.corrections["llama-3.1-8b|H100|tp1|pp1|fp8/fp8/fp8/bf16|vllm"] = {
        "tokens": [1.0, 64.0], "prefill": [1.0, 1.0], "decode": [1.2, 1.1], "source": "test"}
    cal.provenance["split"] = "test split"
    path = C.write_calibration_toml(cal, tmp_path / "cal.toml", header="test file",
                                    errors={("H100", "vllm"): {"test_rows_calibrated_median_abs_rel_err": 0.05}})
    back = C.load_calibration(path)
    assert back.efficiencies[("H100", "vllm")]["compute"] == pytest.approx(0.61)
    assert back.efficiencies[("H100", "vllm")]["train_rows"] == ["a", "b", "c"]
    assert back.efficiencies[("H100", "vllm")]["test_rows_calibrated_median_abs_rel_err"] == pytest.approx(0.05)
    e = C.calibrated_efficiency("H100-SXM-80GB", "vLLM", path=path)
    assert (e["compute"], e["memory"], e["op_overhead_us"]) == pytest.approx((0.61, 0.83, 4.5))
    c = make_client(MODEL, DEVICE, efficiency=e)        # usable as a client field as is
    assert c.efficiency.compute == pytest.approx(0.61)
    assert C.calibrated_efficiency("H100", "sglang", path=path)["compute"] == pytest.approx(0.6)  # device fallback
    assert C.calibrated_efficiency("H100", path=path)["memory"] == pytest.approx(0.8)
    assert C.calibrated_efficiency("A100", path=path) is None
    corr = C.calibrated_step_correction("llama-3.1-8b", "H100", 1, 1, "fp8", "vllm", path=path)
    assert corr["decode"] == [1.2, 1.1]
    make_client(MODEL, DEVICE, step_correction=corr)    # valid spec


def test_shipped_calibration_loads():
    p = C.calibration_path()
    if not p.exists():
        pytest.skip("data/calibration.toml not generated")
    cal = C.load_calibration(p)
    assert cal.efficiencies, "no efficiencies in data/calibration.toml"
    for (dev, eng), e in cal.efficiencies.items():
        assert 0.05 <= e["compute"] <= 1 and 0.05 <= e["memory"] <= 1 and e["op_overhead_us"] >= 0
        for k in ("train_rows", "date", "split"):
            assert k in e, f"[efficiency.{dev}.{eng}] lacks provenance field {k}"
    for key, corr in cal.corrections.items():
        model, dev, tp, pp, prec, eng = key.split("|")
        make_client(model, dev, tp=int(tp[2:]), pp=int(pp[2:]), step_correction=corr)


def test_client_naming_its_engine_gets_calibrated_efficiency_by_default():
    from mistfast.calibration import calibrated_efficiency
    from mistfast.specs import make_client
    want = calibrated_efficiency("H100", "trtllm-1")
    if want is None:
        pytest.skip("no H100 / trtllm-1 calibration in data/calibration.toml")
    c = make_client("llama-3.1-70b", "H100", tp=8, engine="trtllm-1")
    assert c.efficiency.compute == pytest.approx(want["compute"]) and c.efficiency.memory == pytest.approx(want["memory"])
    assert "calibration.toml" in c.efficiency.source
    # an explicit efficiency wins; no engine: the pooled fit of current engines over all devices
    assert make_client("llama-3.1-70b", "H100", tp=8, engine="trtllm-1", efficiency={"compute": 0.5}).efficiency.compute == 0.5
    pooled = calibrated_efficiency("*", "current")
    assert make_client("llama-3.1-70b", "H100", tp=8).efficiency.compute == pytest.approx(pooled["compute"])
    assert make_client("llama-3.1-70b", "H100", tp=8, efficiency={}).efficiency.compute == 0.75


def test_hierarchical_prior_fills_what_a_group_cannot_identify():
    """(MI300X, vllm) has one decode step only, which says nothing about compute efficiency: with
    the prior towards the vLLM family fit (made from H100 steps of a 'true' engine with η_c = 0.4)
    its η_c lands near 0.4 instead of the roofline default 0.75. The pooled current-engine entry
    exists and is what a row without an engine uses."""
    eff = {"compute": 0.4, "memory": 0.55, "op_overhead_us": 20.0}
    h = make_client("llama-3.1-8b", "H100", precision="fp8", efficiency=eff)
    m = make_client("llama-3.1-8b", "MI300X", precision="fp8", efficiency=eff)
    obs = []
    for isl in (256, 1024, 4096, 8192):
        obs.append(C.StepObservation(model="llama-3.1-8b", device="H100", precision="fp8", engine="vllm",
                                     prefill=((0, isl),), time_s=step_latency(h, prefill=[(0, isl)]).total_s))
    for b in (1, 16, 64, 256):
        for k in (512, 8192):
            obs.append(C.StepObservation(model="llama-3.1-8b", device="H100", precision="fp8", engine="vllm",
                                         decode=((1, k),) * b, time_s=step_latency(h, decode=[(1, k)] * b).total_s))
    obs.append(C.StepObservation(model="llama-3.1-8b", device="MI300X", precision="fp8", engine="vllm",
                                 decode=((1, 1024),) * 8, time_s=step_latency(m, decode=[(1, 1024)] * 8).total_s))
    cal = C.calibrate(obs, corrections=False)
    assert ("*", "current") in cal.efficiencies and ("*", "vllm") in cal.efficiencies
    assert cal.efficiencies[("H100", "vllm")].compute == pytest.approx(0.4, rel=0.02)
    assert cal.efficiencies[("MI300X", "vllm")].compute == pytest.approx(0.4, abs=0.05)
    assert cal.efficiency_for("MI300X", "")[1] == "MI300X/current"
    flat = C.calibrate(obs, corrections=False, hierarchical=False)
    assert abs(flat.efficiencies[("MI300X", "vllm")].compute - 0.75) < 0.05   # the old behaviour


# ---- fitted per-step overhead and the expert GEMM peak (2025-26 physics) ------------------------
def _moe_sweep(client, engine="vllm"):
    return _sweep(client, engine=engine, kvs=(512, 8192))


def test_fit_recovers_step_overhead_and_eta_of_moe_model():
    """gpt-oss-20b (MXFP4 experts at the B200 FP4 peak) with a 3 ms per-step floor: the fit must
    recover η_c, η_m and the floor. Before the expert peak followed η_c, the expert GEMMs stayed
    at the base client's η and the fitted η_c drifted."""
    eff = {"compute": 0.5, "memory": 0.6, "step_overhead_ms": 3.0}
    truth = make_client("gpt-oss-20b", "B200", efficiency=eff)
    base = make_client("gpt-oss-20b", "B200")
    assert truth.precision.expert_compute != truth.precision.compute   # the experts have their own peak
    obs = [C.StepObservation(model="gpt-oss-20b", device="B200", tp=1, precision="bf16", engine="vllm", id=o.id,
                             time_s=o.time_s, prefill=o.prefill, decode=o.decode) for o in _moe_sweep(truth)]
    fit = C.fit_efficiency(obs, lambda o: base, group_by=None,
                           params=("compute", "memory", "step_overhead_ms"))
    assert fit.compute == pytest.approx(0.5, rel=0.02)
    assert fit.memory == pytest.approx(0.6, rel=0.02)
    assert fit.step_overhead_ms == pytest.approx(3.0, rel=0.02)
    assert fit.median_abs_rel_err < 0.01
    assert fit.as_efficiency()["step_overhead_ms"] == pytest.approx(fit.step_overhead_ms)


def test_fit_splits_step_overhead_from_per_op_overhead_across_models():
    """A per-step floor is the same for a 24-layer and a 32-layer MoE model while the per-op
    overhead τ scales with the layer count: two models in one (device, engine) group separate them
    (default fitted parameters)."""
    eff = {"compute": 0.55, "memory": 0.7, "step_overhead_ms": 4.0}
    obs, bases = [], {}
    for name in ("gpt-oss-20b", "mixtral-8x7b"):
        truth = make_client(name, "B200", efficiency=eff)
        # the fit keeps each base client's own η_e (not fitted here): Mixtral's BF16 experts run at
        # 16 bits, where η_e acts (stepmodel.EXPERT_ETA_SCOPE "gemm16"), so the base carries the
        # truth's η_e = 1 rather than the shipped calibration's
        bases[name] = make_client(name, "B200", efficiency={"expert_compute": 1.0})
        obs += [C.StepObservation(model=name, device="B200", tp=1, precision="bf16", engine="vllm",
                                  id=f"{name}-{o.id}", time_s=o.time_s, prefill=o.prefill, decode=o.decode)
                for o in _moe_sweep(truth)]
    assert bases["gpt-oss-20b"].model.num_layers != bases["mixtral-8x7b"].model.num_layers
    fit = C.fit_efficiency(obs, lambda o: bases[o.model], group_by=None)
    assert "step_overhead_ms" in fit.params
    assert fit.step_overhead_ms == pytest.approx(4.0, rel=0.03)
    assert fit.op_overhead_us < 0.5            # truth: no per-op overhead
    assert fit.compute == pytest.approx(0.55, rel=0.02) and fit.memory == pytest.approx(0.7, rel=0.02)


def test_step_overhead_round_trips_through_calibration_toml(tmp_path):
    cal = C.Calibration()
    cal.efficiencies[("H100", "vllm")] = C.EfficiencyFit(compute=0.6, memory=0.8, op_overhead_us=2.0,
                                                         step_overhead_ms=12.5)
    path = C.write_calibration_toml(cal, tmp_path / "cal.toml")
    back = C.load_calibration(path)
    eff, _ = back.efficiency_for("H100", "vllm")
    assert eff["step_overhead_ms"] == pytest.approx(12.5)
    client, _ = back.client(make_client(MODEL, "H100"), "H100", "vllm")
    assert client.efficiency.step_overhead_ms == pytest.approx(12.5)
