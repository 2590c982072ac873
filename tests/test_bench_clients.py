"""Benchmark clients and their metric definitions (mistfast.bench_clients, docs/measurements.md
"Benchmark clients"): which tool measured a row, and ITL as pooled per-chunk gaps (vllm bench
serve, sglang.bench_serving) against the per-request mean gap (AIPerf / genai-perf, = TPOT).

Expected values are worked out by hand on a hand-made request timeline, or are identities of the
definitions (np.percentile of the expanded list)."""
from __future__ import annotations

import numpy as np
import pytest

from mistfast import bench_clients as B
from mistfast import validate as V

# ---- a hand-made timeline of two requests -----------------------------------------------------
# step  dt(ms)  what it does                    ends at  tokens
#  1     50     prefill A                        50      A1
#  2     10     decode A                         60      A2
#  3     40     prefill B + decode A            100      A3, B1
#  4     10     decode A, B                     110      A4, B2
#  5     10     decode A, B                     120      A5, B3
#  6     10     decode B                        130      B4
DT_MS = [50.0, 10.0, 40.0, 10.0, 10.0, 10.0]
N_DEC = [0, 1, 1, 2, 2, 1]
# vllm bench serve: A's gaps 10, 40, 10, 10; B's gaps 10, 10, 10 -> pooled [10, 40, 10, 10, 10, 10, 10]
# per request (E2E - TTFT) / (n - 1): A (120 - 50) / 4 = 17.5, B (130 - 100) / 3 = 10


def test_pooled_chunk_itl_of_a_hand_made_timeline():
    s = B.chunk_itl_stats(DT_MS, N_DEC)
    assert s["itl_chunk_p50_ms"] == pytest.approx(10.0, abs=1e-12)
    assert s["itl_chunk_mean_ms"] == pytest.approx(100.0 / 7.0, rel=1e-12)
    # 7 gaps, six of 10 ms and one of 40 ms: index 0.99 x 6 = 5.94 of the sorted list lies between
    # the sixth 10 and the 40 -> 10 + 0.94 x 30
    assert s["itl_chunk_p99_ms"] == pytest.approx(10.0 + 0.94 * 30.0, rel=1e-12)
    # the per-request definition (AIPerf ITL, everyone's TPOT) of the same timeline is larger:
    # a stall of one step moves every gap of its request's mean, but one gap of the pooled list
    tpot = [(120.0 - 50.0) / 4, (130.0 - 100.0) / 3]
    assert np.median(tpot) == pytest.approx(13.75) and s["itl_chunk_p50_ms"] < np.median(tpot)


@pytest.mark.parametrize("values, counts", [
    ([10.0, 30.0], [3, 1]),
    ([5.0, 1.0, 3.0, 2.0], [2, 0, 7, 1]),
    (np.linspace(1, 9, 9), [1, 4, 1, 1, 9, 2, 1, 3, 5]),
])
@pytest.mark.parametrize("q", [0.0, 10.0, 50.0, 90.0, 99.0, 100.0])
def test_pooled_percentile_is_the_percentile_of_the_expanded_list(values, counts, q):
    expect = np.percentile(np.repeat(values, counts), q)
    assert B.pooled_percentile(values, counts, q) == pytest.approx(expect, rel=1e-12)


def test_pooled_percentile_by_hand():
    # [10, 10, 10, 30]: median at index 1.5 = 10; p90 at index 2.7 = 10 + 0.7 x 20
    assert B.pooled_percentile([30.0, 10.0], [1, 3], 50.0) == 10.0
    assert B.pooled_percentile([30.0, 10.0], [1, 3], 90.0) == pytest.approx(24.0, rel=1e-12)
    assert np.isnan(B.pooled_percentile([1.0], [0], 50.0))


# ---- which client measured a row ----------------------------------------------------------------
_GPUSTACK = dict(
    id="g", source="github:gpustack/gpustack@47277d79f4a5bae12a2d25e9ecbed2a2177a5f2d:docs/performance-lab/qwen3-8b/h100.md",
    engine="vLLM (vllm serve; flags: -tp 1)", engine_version="v0.11.0", model="Qwen/Qwen3-8B",
    precision="BF16", hardware="H100-SXM-80GB", num_accel=1, tp=1, pp=1,
    workload="offline: all 1000 prompts sent at t=0 (request rate inf); ShareGPT prompts with their ShareGPT "
             "output lengths (vllm bench serve --backend openai-chat --endpoint /v1/chat/completions --num-prompts 1000)",
    isl="", osl="", batch_or_concurrency="unbounded (all at once)", request_rate="inf (offline, all at t=0)",
    metric="itl_p50_ms", value=15.0, notes="serving command: vllm serve Qwen/Qwen3-8B", dataset="sharegpt",
    engine_family="vllm")
_NIM = dict(
    id="n", source="https://docs.nvidia.com/nim/benchmarking/llm/1.0.0/performance.md",
    engine="NVIDIA NIM for LLMs (TensorRT-LLM engine backend, fp8 TP2 profile)", engine_version="1.8.0",
    model="meta-llama/Llama-3.3-70B-Instruct", precision="FP8", hardware="H100-SXM-80GB", num_accel=2, tp=2, pp=1,
    workload="closed loop at concurrency 1 (AIPerf --concurrency 1), synthetic prompts of 5000 input tokens, "
             "500 output tokens per request, streaming chat completions",
    isl=5000, osl=500, batch_or_concurrency=1, request_rate="inf (closed loop)", metric="itl_ms", value=18.58,
    notes="", dataset="", engine_family="trtllm-0")


@pytest.mark.parametrize("row, client", [
    (_GPUSTACK, "vllm-bench-serve"),
    (_NIM, "aiperf"),
    (dict(_NIM, workload="closed loop at concurrency 1 (genai-perf profile)"), "aiperf"),
    (dict(_GPUSTACK, workload="Poisson at 4 req/s (sglang.bench_serving --dataset-name sharegpt)"),
     "sglang-bench-serving"),
    (dict(_GPUSTACK, workload="offline", engine="TensorRT-LLM (trtllm-bench, PyTorch backend)", notes=""),
     "trtllm-bench"),
    (dict(_GPUSTACK, workload="offline", engine="vLLM", notes="", source="somewhere"), ""),
    (dict(_GPUSTACK, benchmark_client="AIPerf"), "aiperf"),      # a stated column wins
])
def test_benchmark_client_of_a_row(row, client):
    assert B.benchmark_client(row) == client


def test_itl_rows_take_their_clients_definition():
    pooled = V.plan_row(_GPUSTACK)
    assert pooled.status == "ok", pooled.reason
    assert (pooled.benchmark_client, pooled.itl_per_chunk) == ("vllm-bench-serve", True)
    per_request = V.plan_row(_NIM)
    assert per_request.status == "ok", per_request.reason
    assert (per_request.benchmark_client, per_request.itl_per_chunk) == ("aiperf", False)
    # TPOT rows of a pooled-ITL client stay per request
    assert not V.plan_row(dict(_GPUSTACK, metric="tpot_p50_ms")).itl_per_chunk
    summary = {"tpot_p50_ms": 14.0, "tpot_mean_ms": 15.0, "itl_chunk_p50_ms": 9.0, "itl_chunk_mean_ms": 11.0}
    assert V.plan_value(pooled, summary) == 9.0
    assert V.plan_value(per_request, summary) == 15.0
    # a run simulated without its step log (the fit's reference pass) has only the per-request statistic
    assert V.plan_value(pooled, {"tpot_p50_ms": 14.0}) == 14.0


def test_simulated_pooled_itl_of_a_static_batch_equals_its_tpot():
    """A static batch of equal requests decodes every request in every decode step: each request's
    gaps are the same step durations, so the pooled mean gap equals the per-request mean gap."""
    row = dict(_NIM, workload="static batch of 4 requests, streaming (vllm bench serve)", batch_or_concurrency=4,
               isl=256, osl=64, metric="itl_mean_ms", model="meta-llama/Llama-3.1-8B-Instruct", precision="BF16",
               num_accel=1, tp=1, engine_family="vllm", engine="vLLM")
    p = V.plan_row(row)
    assert p.status == "ok" and p.itl_per_chunk and p.workload_kind == "static batch", p.reason
    (pt,) = V._points([p])
    (s,) = B.simulate_with_chunk_itl([pt])
    assert s["n_finished"] == 4
    assert s["itl_chunk_mean_ms"] == pytest.approx(s["tpot_mean_ms"], rel=1e-9)
    assert s["itl_chunk_p50_ms"] > 0


def test_a_stated_prompt_count_of_a_closed_loop_is_simulated_as_stated():
    """``vllm bench serve --num-prompts 100 --max-concurrency 4`` sends exactly 100 prompts, 4 of
    them at t = 0: simulated as 100 (not the 200 floor of rows that state no count)."""
    row = dict(_GPUSTACK, metric="ttft_p99_ms", batch_or_concurrency=4, request_rate="inf",
               workload="closed loop at max concurrency 4; ShareGPT prompts with their ShareGPT output lengths; "
                        "100 prompts (vllm bench serve --backend openai-chat --endpoint /v1/chat/completions "
                        "--num-prompts 100 --max-concurrency 4)")
    p = V.plan_row(row)
    assert (p.status, p.workload_kind, p.concurrency, p.n_requests_sim) == ("ok", "closed loop", 4, 100), p.reason
    # the p99 of 100 TTFTs interpolates at index 0.99 x 99 = 98.01, inside the top 4 (the first wave)
    assert V.first_wave_weight(p) == 1.0
    # its mean carries the first wave as 4 of 100 requests
    assert V.first_wave_weight(dict_replace(p, "ttft_mean_ms")) == pytest.approx(4 / 100)
    unstated = V.plan_row(dict(row, workload="closed loop at max concurrency 4; ShareGPT prompts"))
    assert unstated.n_requests_sim == 200


def dict_replace(p, value_key):
    import dataclasses
    return dataclasses.replace(p, value_key=value_key)


def test_a_step_without_decodes_adds_nothing_to_the_next_gap():
    """A closed loop of one user: A's last token, then B's prompt (a step without decodes), then
    B decodes; under chunked batching nobody was decoding across B's prefill:
    step  dt  what          tokens
     1    50  prefill A     A1 at 50
     2    10  decode A      A2 at 60 (A done)
     3    40  prefill B     B1 at 100
     4    10  decode B      B2 at 110
    gaps: A 10, B 10."""
    s = B.chunk_itl_stats([50.0, 10.0, 40.0, 10.0], [0, 1, 0, 1])
    assert (s["itl_chunk_mean_ms"], s["itl_chunk_p50_ms"], s["itl_chunk_p99_ms"]) == (10.0, 10.0, 10.0)
    assert np.isnan(B.chunk_itl_stats([50.0], [0])["itl_chunk_mean_ms"])


def test_replicas_logs_are_pooled():
    one = (DT_MS, N_DEC)
    two = B.pooled_chunk_itl_stats([one, ([20.0, 20.0], [3, 3])])
    # pooled: the 7 gaps of the hand-made timeline + six of 20 ms
    expect = np.array([10, 40, 10, 10, 10, 10, 10] + [20] * 6, dtype=float)
    assert two["itl_chunk_mean_ms"] == pytest.approx(expect.mean(), rel=1e-12)
    assert two["itl_chunk_p50_ms"] == pytest.approx(np.median(expect), rel=1e-12)
