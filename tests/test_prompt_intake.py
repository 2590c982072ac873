"""The serving front-end's time per prompt token (validate.PROMPT_INTAKE_US_PER_TOKEN, session 14,
docs/ttft-under-load.md "InferenceMAX TTFT versus TP, session 14").

Ground truth: the rate times the prompt's tokens, worked out by hand (1.2 us x 512 tokens =
0.6144 ms), and synthetic measurements made by full simulations of a client with known efficiencies
plus a known per-request latency and the per-token intake (the fit only re-costs logged steps)."""
import numpy as np
import pytest

from mistfast import calibration as C
from mistfast import calibration_runs as CR
from mistfast import validate as V

MODEL, DEVICE = "llama-3.1-8b", "H100"


def _row(i, metric, conc, isl, osl=256, workload="closed loop at fixed concurrency, num-prompts 10x concurrency",
         rate="inf (closed loop)"):
    return {"id": f"r{i}", "source": "synthetic", "engine": "vLLM", "engine_version": "0.11", "model": MODEL,
            "precision": "FP16", "hardware": DEVICE, "num_accel": 1, "tp": 1, "pp": 1, "workload": workload,
            "isl": isl, "osl": osl, "batch_or_concurrency": conc, "request_rate": rate, "metric": metric,
            "value": 1.0, "notes": ""}


def test_default_is_the_published_rate_and_none_is_off(monkeypatch):
    assert V.PROMPT_INTAKE_US_PER_TOKEN == 1.2     # github:vllm-project/vllm#10635, frontend.VLLM_V1
    monkeypatch.setattr(V, "PROMPT_INTAKE_US_PER_TOKEN", None)
    p = V.plan_row(_row(0, "ttft_p50_ms", 4, 512))
    V.row_point(p)
    assert p.prompt_intake_ms == {} and V.prompt_intake_term_ms(p) == 0.0


def test_intake_adds_rate_times_prompt_tokens_to_ttft_and_e2e_only(monkeypatch):
    """1.2 us per token: a 512-token prompt 0.6144 ms, a 3,072-token one 3.6864 ms more TTFT and E2E
    (fixed-length prompts: every statistic the same); TPOT and throughput the same to the bit."""
    monkeypatch.setattr(V, "CLOSED_LOOP_LANDING_IN_KERNEL", False)
    monkeypatch.setattr(V, "PROMPT_INTAKE_US_PER_TOKEN", None)
    rows = [_row(i, m, 4, isl) for i, (m, isl) in enumerate(
        (m, isl) for isl in (512, 3072) for m in ("ttft_ms", "ttft_p50_ms", "ttft_p99_ms", "e2e_mean_ms",
                                                    "tpot_ms", "output_tok_s"))]
    plans0, points0 = V._live_points([V.plan_row(r) for r in rows])
    v0, _ = V._predict_runs(plans0, points0, [pt.client for pt in points0])
    monkeypatch.setattr(V, "PROMPT_INTAKE_US_PER_TOKEN", 1.2)
    plans1, points1 = V._live_points([V.plan_row(r) for r in rows])
    v1, _ = V._predict_runs(plans1, points1, [pt.client for pt in points1])
    for p, a, b in zip(plans1, v0, v1):
        assert np.all(np.asarray(points1[0].requests.input_tokens) > 0)
        if p.metric.startswith(("ttft", "e2e")):
            assert b - a == pytest.approx({512: 0.6144, 3072: 3.6864}[p.isl], abs=1e-9), p.metric
        else:
            assert b == a, p.metric


def test_intake_statistics_follow_the_prompt_lengths(monkeypatch):
    """Prompts of 800-1,000 tokens (--random-range-ratio 0.8): each statistic is the rate times the
    same statistic of the simulated prompts."""
    monkeypatch.setattr(V, "PROMPT_INTAKE_US_PER_TOKEN", 2.0)
    p = V.plan_row(_row(1, "ttft_p99_ms", 4, 1000, workload="closed loop at max concurrency, request rate inf; "
                        "random tokens, per-request lengths uniform in [0.8*isl, isl] and [0.8*osl, osl] "
                        "(--random-range-ratio 0.8), --ignore-eos, ~10x concurrency prompts"))
    pt = V.row_point(p)
    tok = np.asarray(pt.requests.input_tokens, dtype=float)
    assert tok.min() >= 800 and tok.max() <= 1000 and tok.min() < tok.max()
    assert p.prompt_intake_ms["mean"] == pytest.approx(2.0e-3 * tok.mean())
    assert p.prompt_intake_ms["p50"] == pytest.approx(2.0e-3 * np.median(tok))
    assert V.prompt_intake_term_ms(p) == pytest.approx(2.0e-3 * np.percentile(tok, 99))


@pytest.mark.parametrize("metric, workload, rate, conc, why", [
    ("ttft_ms", "offline burst, all requests at once", "inf", 1000, "offline burst (its own intake)"),
    ("ttft_ms", "static batch (vllm bench latency)", "", 8, "static batch (no HTTP front-end)"),
])
def test_intake_scope(monkeypatch, metric, workload, rate, conc, why):
    monkeypatch.setattr(V, "PROMPT_INTAKE_US_PER_TOKEN", 1.2)
    p = V.plan_row(_row(2, metric, conc, 512, workload=workload, rate=rate))
    if p.status != "ok":
        pytest.skip(p.reason)
    assert p.workload_kind not in ("closed loop", "poisson"), (why, p.workload_kind)
    assert not V.prompt_intake_applies(p), why


def test_loadgen_rows_get_no_intake(monkeypatch):
    monkeypatch.setattr(V, "PROMPT_INTAKE_US_PER_TOKEN", 1.2)
    p = V.plan_row(_row(3, "ttft_p50_ms", 4, 512))
    p.loadgen = True     # MLPerf LoadGen sends token ids: no tokeniser in front of the engine
    assert not V.prompt_intake_applies(p)


def test_fixed_part_is_not_scaled_by_the_recosted_steps():
    """recosted(m0, ratio, w0): a 25 ms row of which 5 ms are intake, steps twice as slow -> 45 ms."""
    r = CR.RunObservation(id="x", device=DEVICE, engine="vllm", point=None, measured=1.0, value_of=lambda s: 25.0,
                          prefill_steps=True, fixed_ms=5.0)
    r.ref_value = 25.0
    assert CR._ref_wait(r, {}) == 5.0
    assert CR.recosted(np.array([25.0]), np.array([2.0]), np.array([5.0]))[0] == 45.0
    r0 = CR.RunObservation(id="y", device=DEVICE, engine="vllm", point=None, measured=1.0, value_of=lambda s: 25.0)
    r0.ref_value = 25.0
    assert CR._ref_wait(r0, {}) == 0.0      # no fixed part, switch off: as before


def test_fit_keeps_the_intake_out_of_the_fitted_fixed_latency(monkeypatch):
    """Truth: η_prefill = 0.5, 25 ms per request outside the engine and 5 us per prompt token
    (a 3,072-token prompt 15.4 ms). With the intake known to the fit, the fitted TTFT overhead is the
    25 ms; without it, it takes part of the intake (the mean over the rows)."""
    monkeypatch.setattr(CR, "WAIT_OUT_OF_PREFILL_RATIO", True)
    monkeypatch.setattr(V, "PROMPT_INTAKE_US_PER_TOKEN", 5.0)
    rows = [_row(i, m, conc, isl) for i, (m, conc, isl) in enumerate(
        (m, c, isl) for m in ("ttft_p50_ms", "tpot_ms") for c in (2, 4) for isl in (512, 3072))]
    plans, points = V._live_points([V.plan_row(r) for r in rows])
    runs = [V._run_observation(p, pt) for p, pt in zip(plans, points)]
    assert sorted({r.fixed_ms for r in runs if r.prefill_steps}) == pytest.approx([2.56, 15.36])
    truth = C.run_values(runs, {"prefill": 0.5}, parallel=False)   # includes the intake (plan_value)
    for r, v in zip(runs, truth):
        r.measured = float(v) + (25.0 if r.prefill_steps else 0.0)
    fit = C.fit_efficiency([], runs=runs, group_by=None, params=("prefill", "ttft_overhead_ms"))
    assert fit.ttft_overhead_ms == pytest.approx(25.0, abs=1.0)
    assert fit.prefill == pytest.approx(0.5, rel=0.06)
