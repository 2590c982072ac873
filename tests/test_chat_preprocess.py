"""The chat endpoint's fixed pre-processing per request (validate.CHAT_PREPROCESS_FIXED_IN_VALIDATE,
session 15, docs/ttft-under-load.md "The chat endpoint's fixed pre-processing, session 15").

Ground truth: the published figure, 13.5 ms per request (github:vllm-project/vllm#21139: 12-15 ms of
front-end pre-processing per request, frontend.VLLM_V1), added once to every TTFT and E2E statistic
of a chat-endpoint closed loop of vLLM >= 0.8 with a Jinja chat template, nothing to other metrics
or other rows; and the fit's fixed part (calibration_runs.RunObservation.fixed_ms) = that figure +
the per-token intake (1.2 us x the prompt's tokens), worked out by hand."""
import numpy as np
import pytest

from mistfast import validate as V

CHAT = ("closed loop at max concurrency 4; random tokens; 40 prompts (vllm bench serve --backend openai-chat "
        "--endpoint /v1/chat/completions --dataset-name random --num-prompts 40 --max-concurrency 4)")
COMPLETIONS = ("closed loop at max concurrency 4; random tokens; 40 prompts (vllm bench serve --backend vllm "
               "--endpoint /v1/completions --dataset-name random --num-prompts 40 --max-concurrency 4)")


def _row(i, metric, model="Qwen/Qwen3-8B", workload=CHAT, engine="vLLM (vllm serve)", version="0.11.0",
         isl=512, osl=128, conc=4, rate="inf (closed loop)", precision="BF16"):
    return {"id": f"c{i}", "source": "synthetic", "engine": engine, "engine_version": version, "model": model,
            "precision": precision, "hardware": "H100", "num_accel": 1, "tp": 1, "pp": 1, "workload": workload,
            "isl": isl, "osl": osl, "batch_or_concurrency": conc, "request_rate": rate, "metric": metric,
            "value": 1.0, "notes": ""}


def _plan(monkeypatch, on=True, **kw):
    monkeypatch.setattr(V, "CHAT_PREPROCESS_FIXED_IN_VALIDATE", on)
    p = V.plan_row(_row(0, kw.pop("metric", "ttft_p50_ms"), **kw))
    assert p.status == "ok", p.reason
    return p


def test_on_by_default_and_off_is_zero(monkeypatch):
    assert V.CHAT_PREPROCESS_FIXED_IN_VALIDATE is True
    p = _plan(monkeypatch, on=False)
    assert p.chat_preprocess_ms == 0.0 and V.chat_preprocess_term_ms(p) == 0.0


def test_the_published_fixed_part_on_a_jinja_chat_closed_loop(monkeypatch):
    p = _plan(monkeypatch)
    assert p.workload_kind == "closed loop" and p.benchmark_client == "vllm-bench-serve"
    assert p.chat_preprocess_ms == 13.5 and V.chat_preprocess_term_ms(p) == 13.5
    for metric in ("ttft_ms", "ttft_p99_ms", "e2e_mean_ms"):
        assert V.chat_preprocess_term_ms(_plan(monkeypatch, metric=metric)) == 13.5, metric
    for metric in ("tpot_ms", "output_tok_s", "requests_s"):
        assert V.chat_preprocess_term_ms(_plan(monkeypatch, metric=metric)) == 0.0, metric


@pytest.mark.parametrize("kw, why", [
    ({"model": "openai/gpt-oss-20b", "precision": "MXFP4 (native gpt-oss MoE weights)"}, "gpt-oss renders through harmony, no Jinja template"),
    ({"workload": COMPLETIONS}, "completions endpoint: no chat template"),
    ({"engine": "SGLang", "version": "0.5.2"}, "no published per-request time for SGLang"),
    ({"version": "0.6.3"}, "vLLM before the V1 engine (0.8)"),
])
def test_scope(monkeypatch, kw, why):
    p = _plan(monkeypatch, **kw)
    assert p.chat_preprocess_ms == 0.0, why


def test_offline_bursts_keep_their_intake_and_get_no_second_fixed_part(monkeypatch):
    burst = ("offline: all 100 prompts sent at t=0 (request rate inf); random tokens (vllm bench serve --backend "
             "openai-chat --endpoint /v1/chat/completions --dataset-name random --num-prompts 100)")
    p = _plan(monkeypatch, workload=burst, conc=100, rate="inf")
    assert p.workload_kind == "offline" and p.burst_intake is not None
    assert p.chat_preprocess_ms == 0.0


def test_loadgen_rows_get_none(monkeypatch):
    monkeypatch.setattr(V, "CHAT_PREPROCESS_FIXED_IN_VALIDATE", True)
    r = _row(0, "ttft_p50_ms")
    p = V.plan_row(r)
    p.loadgen = True
    assert V.chat_preprocess_fixed_ms(p, "0.11.0", r["model"], r["workload"]) == 0.0


def test_prediction_gains_exactly_the_fixed_part_on_ttft_and_e2e_only(monkeypatch):
    """Same simulation with the switch off and on: TTFT and E2E statistics +13.5 ms, TPOT and
    throughput the same to the bit."""
    monkeypatch.setattr(V, "CLOSED_LOOP_LANDING_IN_KERNEL", False)
    metrics = ("ttft_ms", "ttft_p50_ms", "ttft_p99_ms", "e2e_mean_ms", "tpot_ms", "output_tok_s")
    out = {}
    for on in (False, True):
        monkeypatch.setattr(V, "CHAT_PREPROCESS_FIXED_IN_VALIDATE", on)
        plans, points = V._live_points([V.plan_row(_row(i, m)) for i, m in enumerate(metrics)])
        out[on], _ = V._predict_runs(plans, points, [pt.client for pt in points])
    for m, a, b in zip(metrics, out[False], out[True]):
        if m.startswith(("ttft", "e2e")):
            assert b - a == pytest.approx(13.5, abs=1e-9), m
        else:
            assert b == a, m


def test_fit_sees_it_as_a_fixed_part(monkeypatch):
    """RunObservation.fixed_ms = 13.5 ms + 1.2 us x 512 tokens = 14.1144 ms (fixed-length prompts of
    the synthetic random dataset: every statistic the same); without the switch the intake only."""
    monkeypatch.setattr(V, "PROMPT_INTAKE_US_PER_TOKEN", 1.2)
    fixed = {}
    for on in (False, True):
        monkeypatch.setattr(V, "CHAT_PREPROCESS_FIXED_IN_VALIDATE", on)
        plans, points = V._live_points([V.plan_row(_row(0, "ttft_p50_ms"))])
        tok = np.asarray(points[0].requests.input_tokens, dtype=float)
        fixed[on] = V._run_observation(plans[0], points[0]).fixed_ms
    assert fixed[True] - fixed[False] == pytest.approx(13.5, abs=1e-12)
    assert fixed[False] == pytest.approx(1.2e-3 * np.median(tok), abs=1e-12)
