"""The serving front-end: a single-server FIFO queue in front of the engine (mistfast.frontend) and
how `validate` builds it for open-loop rows served over HTTP (docs/ttft-under-load.md)."""
import numpy as np
import pytest

from mistfast import frontend as F
from mistfast import validate as V

from .builders import gpustack_burst_row


def test_simultaneous_requests_enter_the_engine_one_service_time_apart():
    # N requests at t = 0 through a front-end of s seconds each: the k-th (1-based) leaves at k s
    n, s = 5, 0.013
    dep = F.fifo_departures(np.zeros(n), np.full(n, s))
    assert dep == pytest.approx([s, 2 * s, 3 * s, 4 * s, 5 * s])
    # and waited (k - 1) s before its own service: mean (N - 1) s / 2
    w = F.queue_waits(np.zeros(n), np.full(n, s))
    assert w == pytest.approx([0, s, 2 * s, 3 * s, 4 * s])
    assert F.wait_statistics_ms(w)["mean"] == pytest.approx(1e3 * s * (n - 1) / 2)


def test_fifo_by_hand_with_idle_gaps_and_unsorted_arrivals():
    # arrivals 0, 0, 5, 5.5 (given out of order), service 1, 2, 1, 1:
    #   d1 = 0 + 1 = 1; d2 = max(0, 1) + 2 = 3; d3 = max(5, 3) + 1 = 6; d4 = max(5.5, 6) + 1 = 7
    a = np.array([5.5, 0.0, 5.0, 0.0])
    s = np.array([1.0, 1.0, 1.0, 2.0])      # the second t = 0 request (index 3) takes 2 s
    dep = F.fifo_departures(a, s)
    assert dep == pytest.approx([7.0, 1.0, 6.0, 3.0])
    assert F.queue_waits(a, s) == pytest.approx([0.5, 0.0, 0.0, 1.0])


def test_service_time_is_fixed_plus_per_prompt_token():
    fe = F.FrontEnd("x", fixed_ms=10.0, per_prompt_token_us=2.0, source="")
    assert fe.service_s([0, 1000]) == pytest.approx([0.010, 0.012])


def test_front_end_defaults_by_engine_and_version():
    assert F.frontend_for("vllm", "v0.11.0") is F.VLLM_V1
    assert F.frontend_for("vllm", "") is F.VLLM_V1
    assert F.frontend_for("vllm", "0.6.3.post1") is None      # before the V1 engine: no published figure
    assert F.frontend_for("sglang", "v0.5.5") is None
    assert F.frontend_for("trtllm-1", "1.2.0rc1") is None
    assert F.VLLM_V1.fixed_ms == pytest.approx(13.5) and "21139" in F.VLLM_V1.source


def _burst_row(**kw):
    workload = ("offline: all 50 prompts sent at t=0 (request rate inf); random tokens (vllm bench serve "
                "--backend openai-chat --endpoint /v1/chat/completions --num-prompts 50)")
    return gpustack_burst_row(1000, 8, **{"workload": workload, "metric": "ttft_ms", "value": 100.0, **kw})


@pytest.fixture
def frontend_on(monkeypatch):
    monkeypatch.setattr(V, "FRONTEND_QUEUE_IN_VALIDATE", True)


def test_validate_leaves_the_front_end_queue_out_by_default():
    p = V.plan_row(_burst_row())
    assert p.status == "ok" and p.frontend is None
    # (the burst's intake is on at prediction: every request reaches the engine at the same, later time)
    arr = V.at_prediction(p, V._points([p])[0])[1].requests.arrival_s
    assert np.all(arr == arr[0]) and arr[0] > 0.0


def test_validate_builds_the_front_end_for_an_http_offline_burst(frontend_on):
    p = V.plan_row(_burst_row())
    assert p.status == "ok" and p.workload_kind == "offline" and p.frontend is F.VLLM_V1
    pt = V._points([p])[0]
    s = 13.5e-3 + 1.2e-6 * 1000          # service time of a 1,000-token prompt
    n = len(pt.requests)
    assert n == 50
    assert np.sort(pt.requests.arrival_s) == pytest.approx(s * np.arange(1, n + 1))
    # a TTFT mean row gets the mean queue wait, (N - 1) s / 2; a p99 row numpy's p99 of k s
    assert V.frontend_wait_term_ms(p) == pytest.approx(1e3 * s * (n - 1) / 2)
    p99 = V.plan_row(_burst_row(metric="ttft_p99_ms"))
    V._points([p99])
    assert V.frontend_wait_term_ms(p99) == pytest.approx(1e3 * s * 0.99 * (n - 1))
    # throughput rows take no wait term (their change comes from the later engine arrivals)
    tput = V.plan_row(_burst_row(metric="output_tok_s"))
    V._points([tput])
    assert V.frontend_wait_term_ms(tput) == 0.0


@pytest.mark.parametrize("change", [
    dict(workload="closed loop at max concurrency 4; random tokens; 100 prompts (vllm bench serve --backend "
                  "openai-chat --num-prompts 100 --max-concurrency 4)", batch_or_concurrency=4,
         request_rate="inf (closed loop)"),                    # closed loop: at most C in the front-end
    dict(engine="SGLang (sglang.launch_server)", engine_version="v0.5.5"),   # no published figure
    dict(engine_version="v0.6.3"),                             # vLLM before V1
    dict(workload="offline: 50 prompts, vllm bench throughput (LLM class)"),   # no HTTP client
])
def test_rows_without_a_front_end_queue(change, frontend_on):
    p = V.plan_row(_burst_row(**change))
    assert p.status == "ok"
    assert p.frontend is None
    pt = V._points([p])[0]
    assert p.frontend_wait_ms == {}
    if p.workload_kind == "offline":
        assert np.all(pt.requests.arrival_s == 0.0)


def test_a_one_slot_pre_stage_is_the_same_fifo_front_end():
    # 10 prompts at t = 0 through a one-slot CPU server of 100 ms each: the k-th reaches the engine at
    # k x 100 ms + the hand-off over the default inter-client link (MODEL.md §7: 5 ms latency; 400 B of
    # token ids at 10 GB/s), alone (its prefill takes t1 < 100 ms): TTFT_k = k x 100 ms + 5 ms + t1
    from mistfast.scenario import simulate
    base = {"workload": {"num_requests": 10, "arrival": {"process": "offline"},
                         "input": {"dist": "fixed", "value": 100}, "output": {"dist": "fixed", "value": 2}},
            "clients": [{"name": "llm", "model": "llama-3.1-8b", "device": "H100"}],
            "simulation": {"horizon_s": 100, "seed": 1}}
    one = simulate({**base, "workload": {**base["workload"], "num_requests": 1}})
    t1 = float(one.ttft_mean_ms)
    assert t1 < 100.0
    fe = simulate({**base, "servers": [{"name": "fe", "kind": "cpu", "slots": 1, "base_ms": 100.0, "per_token_us": 0.0}],
                   "pipelines": [{"name": "p", "stages": [{"kind": "pre", "pool": "fe"}, {"kind": "llm", "pool": "llm"}]}]})
    hop_ms = 5.0 + 400 / 10e9 * 1e3
    assert float(fe.ttft_mean_ms) == pytest.approx(550.0 + hop_ms + t1, rel=1e-4)


# ------------------------------------------------------------------ the intake of a whole burst
def test_burst_intake_is_the_sum_of_the_service_times():
    # 50 prompts of 1,000 tokens: 50 x (13.5 ms + 1.2 us x 1,000) = 50 x 14.7 ms = 735 ms
    assert F.burst_intake_s(F.VLLM_V1, np.full(50, 1000)) == pytest.approx(0.735)
    # mixed lengths: 3 x 13.5 ms + 1.2 us x (100 + 200 + 4,000) = 40.5 + 5.16 ms
    assert F.burst_intake_s(F.VLLM_V1, [100, 200, 4000]) == pytest.approx(0.04566)


def test_burst_intake_by_engine_endpoint_and_model():
    chat = "vllm bench serve --backend openai-chat --endpoint /v1/chat/completions --num-prompts 1000"
    assert F.burst_intake_for("vllm", "v0.11.0", "Qwen/Qwen3-14B", chat) is F.VLLM_V1
    assert F.burst_intake_for("vllm", "v0.10.2", "deepseek-ai/DeepSeek-R1-0528", chat) is F.VLLM_V1
    # gpt-oss chats go through openai_harmony, not the Jinja chat template: no published figure
    assert F.burst_intake_for("vllm", "v0.11.0", "openai/gpt-oss-120b", chat) is None
    # the completions endpoint renders no chat template
    assert F.burst_intake_for("vllm", "v0.11.0", "Qwen/Qwen3-14B", "vllm bench serve --backend vllm --endpoint /v1/completions") is None
    # engines and versions without a published per-request time
    assert F.burst_intake_for("sglang", "v0.5.5", "Qwen/Qwen3-14B", chat) is None
    assert F.burst_intake_for("trtllm-1", "1.2.0rc1", "Qwen/Qwen3-14B", chat) is None
    assert F.burst_intake_for("vllm", "0.6.3", "Qwen/Qwen3-14B", chat) is None


def _predicted(p):
    return V.at_prediction(p, V._points([p])[0])


def test_validate_moves_a_burst_to_the_end_of_its_intake():
    p = V.plan_row(_burst_row())
    assert p.status == "ok" and p.workload_kind == "offline" and p.burst_intake is F.VLLM_V1
    fit_pt = V._points([p])[0]
    q, pt = _predicted(p)
    intake_s = 50 * (13.5e-3 + 1.2e-6 * 1000)         # 0.735 s (50 prompts of 1,000 tokens)
    assert pt.requests.arrival_s == pytest.approx(np.full(50, intake_s))
    # every TTFT statistic (mean, p50, p99) gains the whole intake: the client timed from t = 0
    assert V.frontend_wait_term_ms(q) == pytest.approx(735.0)
    p99 = V.plan_row(_burst_row(metric="ttft_p99_ms"))
    assert V.frontend_wait_term_ms(_predicted(p99)[0]) == pytest.approx(735.0)
    # throughput rows take no term: they see the intake through the run's duration
    tput = V.plan_row(_burst_row(metric="output_tok_s"))
    assert V.frontend_wait_term_ms(_predicted(tput)[0]) == 0.0
    # prediction only: the fit's plan and point stay without it
    assert q is not p and p.frontend_wait_ms == {} and V.frontend_wait_term_ms(p) == 0.0
    assert np.all(fit_pt.requests.arrival_s == 0.0)


@pytest.mark.parametrize("change", [
    dict(model="openai/gpt-oss-20b"),                                           # harmony path
    dict(engine="SGLang (sglang.launch_server)", engine_version="v0.5.5"),     # no published figure
    dict(workload="closed loop at max concurrency 4; random tokens; 100 prompts (vllm bench serve --backend "
                  "openai-chat --num-prompts 100 --max-concurrency 4)", batch_or_concurrency=4,
         request_rate="inf (closed loop)"),                                     # requests trickle in
    dict(workload="offline: all 50 prompts sent at t=0; random tokens (vllm bench serve --backend vllm "
                  "--endpoint /v1/completions --num-prompts 50)"),                # no chat template
])
def test_rows_without_a_burst_intake(change):
    p = V.plan_row(_burst_row(**change))
    assert p.status == "ok" and p.burst_intake is None
    q, pt = _predicted(p)
    assert q is p
    assert p.frontend_wait_ms == {}
    if p.workload_kind == "offline":
        assert np.all(pt.requests.arrival_s == 0.0)


def test_the_fifo_queue_takes_precedence_over_the_intake(frontend_on):
    p = V.plan_row(_burst_row())
    assert p.frontend is F.VLLM_V1 and p.burst_intake is None


def test_the_intake_shifts_the_run_and_lengthens_it_by_the_intake(monkeypatch):
    # Invariant: the engine sees the same burst, only later. The simulated TTFT (from the engine
    # arrival) and TPOT are those of the burst at t = 0; the output rate is the output tokens over
    # the run's duration, which gains exactly the intake time.
    from mistfast.runner import run_points
    p = V.plan_row(_burst_row())
    on = _predicted(p)[1]
    monkeypatch.setattr(V, "BURST_INTAKE_IN_VALIDATE", False)
    q = V.plan_row(_burst_row())
    off = _predicted(q)[1]
    assert np.all(off.requests.arrival_s == 0.0)
    s_on, s_off = (run_points([pt])["summary"] for pt in (on, off))
    val = lambda s, k: float(np.asarray(s[k])[0])
    assert val(s_on, "ttft_mean_ms") == pytest.approx(val(s_off, "ttft_mean_ms"), rel=1e-9)
    assert val(s_on, "tpot_mean_ms") == pytest.approx(val(s_off, "tpot_mean_ms"), rel=1e-9)
    tokens = float(on.requests.output_tokens.sum())
    d_on, d_off = tokens / val(s_on, "output_tok_s"), tokens / val(s_off, "output_tok_s")
    assert d_on - d_off == pytest.approx(0.735, rel=1e-6)
