"""The TTFT tail of closed-loop serving benchmarks (docs/calibration.md, "The TTFT tail of closed
loops"): the benchmark protocol as `validate` simulates it (prompt count, length spread) and the
first-wave delay ``efficiency.first_wave_ms``.

Ground truth: counts and weights worked out by hand from the benchmark's own rules (numpy's
linear-interpolation percentile over N prompts of which C are sent at t = 0), and an independent
twin of the stall model: the per-request TTFTs of the same simulation with D added to the requests
that arrive at t = 0, summarised with numpy."""
import numpy as np
import pytest

from mistfast import calibration as C
from mistfast import validate as V
from mistfast.scenario import simulate
from mistfast.specs import make_client, parse_scenario

MODEL, DEVICE = "llama-3.1-8b", "H100"
IMAX = "github:gminneci/mantile@72ff84e:reconcile/sources/inferencemax/raw/run_1/agg_bmk.json"
IMAX_WL = ("closed loop at max concurrency, request rate inf; random tokens, per-request lengths uniform in "
           "[0.8*isl, isl] and [0.8*osl, osl] (--random-range-ratio 0.8), --ignore-eos, ~10x concurrency prompts")


def _row(i, metric, conc, isl=1024, osl=256, model=MODEL, hardware=DEVICE, source="synthetic", tp=1, **kw):
    r = {"id": f"r{i}", "source": source, "engine": "vLLM", "engine_version": "0.11", "model": model,
         "precision": "FP8", "hardware": hardware, "num_accel": tp, "tp": tp, "pp": 1, "workload": IMAX_WL,
         "isl": isl, "osl": osl, "batch_or_concurrency": conc, "request_rate": "inf", "metric": metric,
         "value": 1.0, "notes": "", "dataset": "random"}
    r.update(kw)
    return r


# ---- the protocol ---------------------------------------------------------------------------------
@pytest.mark.parametrize("conc, n", [(4, 40), (8, 80), (64, 640)])
def test_closed_loop_simulates_exactly_the_stated_prompt_count(conc, n):
    """'~10x concurrency prompts' is 10 C prompts (before: at least 100, which put 4 % instead of
    10 % of a 4-user run's requests in its first wave)."""
    p = V.plan_row(_row(0, "ttft_ms", conc))
    assert p.status == "ok", p.reason
    assert p.n_requests_sim == n and p.scenario["workload"]["num_requests"] == n


def test_random_dataset_rows_keep_the_benchmark_length_spread():
    """The dataset column says 'random' and the text benchmark_serving's --random-range-ratio 0.8:
    lengths uniform in [int(0.8 L), L] on both sides (not one fixed length)."""
    p = V.plan_row(_row(0, "ttft_ms", 16, isl=8192, osl=1024))
    wl = p.scenario["workload"]
    assert "dataset" not in wl
    assert wl["input"] == {"dist": "uniform", "low": 6553, "high": 8192}
    assert wl["output"] == {"dist": "uniform", "low": 819, "high": 1024}


@pytest.mark.parametrize("model, hardware, osl, source, per_user", [
    ("deepseek-ai/DeepSeek-R1-0528", "MI355X", 1024, IMAX, 50),    # launch_mi355x-amd.sh: 50 x C
    ("amd/DeepSeek-R1-0528-MXFP4-Preview", "MI355X", 8192, IMAX, 20),   # ... 20 x C at 8k output
    ("deepseek-ai/DeepSeek-R1-0528", "B200", 1024, IMAX, 10),      # runner not known: the rows' 10 x C
    ("openai/gpt-oss-120b", "MI355X", 1024, IMAX, 10),            # other models: 10 x C
    ("deepseek-ai/DeepSeek-R1-0528", "MI355X", 1024, "synthetic", 10),   # not an InferenceMAX row
])
def test_inferencemax_launcher_prompt_count(model, hardware, osl, source, per_user):
    p = V.plan_row(_row(0, "ttft_ms", 8, model=model, hardware=hardware, osl=osl, source=source, tp=8,
                        precision="FP8" if "gpt" not in model else "MXFP4"))
    assert p.status == "ok", p.reason
    assert p.n_requests_sim == per_user * 8


# ---- where a first-wave delay enters a statistic ----------------------------------------------------
@pytest.mark.parametrize("metric, conc, weight", [
    ("ttft_ms", 4, 0.1),          # mean: C / N = 4 / 40
    ("e2e_mean_ms", 8, 0.1),
    ("ttft_p99_ms", 4, 1.0),      # index 0.99 * 39 = 38.61 >= N - C = 36: both neighbours delayed
    ("ttft_p90_ms", 4, 0.1),      # index 0.9 * 39 = 35.1: 0.1 of the way from value 35 (not) to 36 (delayed)
    ("ttft_p50_ms", 4, 0.0),
    ("tpot_ms", 4, 0.0),
    ("output_tok_s", 4, 0.0),
])
def test_first_wave_weight_by_hand(metric, conc, weight):
    p = V.plan_row(_row(0, metric, conc))
    assert V.first_wave_weight(p) == pytest.approx(weight, abs=1e-12)


def test_first_wave_weight_is_zero_outside_closed_loops():
    p = V.plan_row(_row(0, "ttft_p99_ms", 4, workload="poisson arrivals", request_rate="2.0"))
    assert p.workload_kind == "poisson" and V.first_wave_weight(p) == 0.0


def test_first_wave_delay_matches_a_per_request_twin(monkeypatch):
    """Independent twin: simulate per request, add D to the TTFT of every request that arrives at
    t = 0 (the C users' first prompts), summarise with numpy; `validate` must give the same mean and
    p99 from the summary and the weights, and leave the median, TPOT and throughput alone. (The
    closed-loop step wait, validate.closed_loop_step_wait_ms, is held off: this twin has no step grid;
    that wait has its own hand-computed tests in tests/test_engine_defaults.py; so is the front-end's
    per-prompt-token intake, validate.PROMPT_INTAKE_US_PER_TOKEN: tests/test_prompt_intake.py.)"""
    monkeypatch.setattr(V, "CLOSED_LOOP_STEP_WAIT_ON", False)
    monkeypatch.setattr(V, "PROMPT_INTAKE_US_PER_TOKEN", None)
    d_ms = 4000.0
    metrics = ("ttft_ms", "ttft_p99_ms", "ttft_p50_ms", "e2e_mean_ms", "tpot_ms", "output_tok_s")
    plans, points = V._live_points([V.plan_row(_row(i, m, 4, isl=512, osl=64)) for i, m in enumerate(metrics)])
    base = [pt.client for pt in points]
    cold = [C.with_efficiency(c, {"first_wave_ms": d_ms}) for c in base]
    v0, _ = V._predict_runs(plans, points, base)
    v1, _ = V._predict_runs(plans, points, cold)

    sc = dict(plans[0].scenario, simulation={**plans[0].scenario["simulation"], "per_request": True})
    ds = simulate(parse_scenario(sc))
    ttft = ds["req_ttft_ms"].values.ravel().copy()
    e2e = ds["req_e2e_ms"].values.ravel().copy()
    first = ds["req_arrival_s"].values.ravel() == 0.0
    assert first.sum() == 4 and len(ttft) == 40
    twin = {"ttft_ms": np.mean(ttft + d_ms * first), "ttft_p99_ms": np.percentile(ttft + d_ms * first, 99),
            "ttft_p50_ms": np.percentile(ttft + d_ms * first, 50), "e2e_mean_ms": np.mean(e2e + d_ms * first)}
    for p, a, b in zip(plans, v0, v1):
        if p.metric in twin:
            assert b == pytest.approx(twin[p.metric], rel=1e-9), p.metric
            assert a == pytest.approx({"ttft_ms": np.mean(ttft), "ttft_p99_ms": np.percentile(ttft, 99),
                                       "ttft_p50_ms": np.percentile(ttft, 50), "e2e_mean_ms": np.mean(e2e)}[p.metric],
                                      rel=1e-9), p.metric
        else:
            assert b == a, p.metric


# ---- the fit ------------------------------------------------------------------------------------------
def _tail_plans(groups):
    """p99 TTFT rows of 4-user closed loops: ``groups`` = [(device, engine, [measured - predicted, ...])];
    returns (plans, predictions)."""
    plans, pred = [], {}
    i = 0
    for dev, eng, deltas in groups:
        for d in deltas:
            p = V.plan_row(_row(i, "ttft_p99_ms", 4))
            p.device, p.engine = dev, eng
            p.measured = 100.0 + d
            pred[p.id] = 100.0
            plans.append(p)
            i += 1
    return plans, pred


def test_fit_first_wave_takes_the_median_per_entry_and_the_parent_where_rows_are_few():
    plans, pred = _tail_plans([
        ("MI355X", "sglang", [20000.0, 21000.0, 22000.0, 90000.0]),   # median 21,500 ms (one outlier)
        ("B200", "sglang", [1500.0, 2500.0]),                            # 2 rows: too few of its own
        ("B200", "vllm", [30.0, 40.0, 50.0]),                            # median 40 ms
        ("H100", "vllm", [-20.0, -10.0, -5.0]),                          # faster than predicted: clipped at 0
    ])
    assert {p.id for p in V.first_wave_rows(plans)} == {p.id for p in plans}
    cal = C.Calibration()
    for key in [("MI355X", "sglang"), ("B200", "sglang"), ("B200", "vllm"), ("H100", "vllm"), ("H200", "vllm"),
                ("*", "sglang"), ("*", "current"), ("MI300X", "current"), ("*", "*")]:
        cal.efficiencies[key] = C.EfficiencyFit(compute=0.5, memory=0.8, op_overhead_us=0.0)
    got = V.fit_first_wave(cal, plans, pred)
    sglang_all = float(np.median([20000.0, 21000.0, 22000.0, 90000.0, 1500.0, 2500.0]))   # 20,500 ms
    every = [20000.0, 21000.0, 22000.0, 90000.0, 1500.0, 2500.0, 30.0, 40.0, 50.0, -20.0, -10.0, -5.0]
    assert got[("MI355X", "sglang")] == pytest.approx(21500.0)
    assert got[("B200", "sglang")] == pytest.approx(sglang_all)          # parent: SGLang over devices
    assert got[("*", "sglang")] == pytest.approx(sglang_all)
    assert got[("B200", "vllm")] == pytest.approx(40.0)
    assert got[("H100", "vllm")] == 0.0
    vllm_all = float(np.median([30.0, 40.0, 50.0, -20.0, -10.0, -5.0]))   # 12.5 ms
    assert got[("H200", "vllm")] == pytest.approx(vllm_all)             # no rows: vLLM over devices
    assert got[("*", "current")] == pytest.approx(max(float(np.median(every)), 0.0))
    assert got[("MI300X", "current")] == got[("*", "current")]
    assert cal.efficiencies[("MI355X", "sglang")].first_wave_ms == pytest.approx(21500.0)


def test_fit_first_wave_without_rows_is_zero():
    cal = C.Calibration()
    cal.efficiencies[("B200", "vllm")] = {"compute": 0.5, "memory": 0.8, "first_wave_ms": 123.0}
    assert V.fit_first_wave(cal, [], {}) == {("B200", "vllm"): 0.0}
    assert cal.efficiencies[("B200", "vllm")]["first_wave_ms"] == 0.0


def test_first_wave_delay_round_trips_through_calibration_toml(tmp_path):
    cal = C.Calibration()
    cal.efficiencies[("MI355X", "sglang")] = C.EfficiencyFit(compute=0.6, memory=0.8, op_overhead_us=2.0,
                                                            first_wave_ms=21500.0)
    back = C.load_calibration(C.write_calibration_toml(cal, tmp_path / "cal.toml"))
    client, _ = back.client(make_client(MODEL, "MI355X"), "MI355X", "sglang")
    assert client.efficiency.first_wave_ms == pytest.approx(21500.0)


def test_negative_first_wave_delay_is_one_clear_error():
    with pytest.raises(Exception) as ei:
        make_client(MODEL, DEVICE, efficiency={"first_wave_ms": -1})
    assert "first_wave_ms" in str(ei.value)
