"""Benchmark clients: which tool measured a row, and what its latency metrics mean.

Two clients that print a metric under the same name can mean different things by it. The one
that matters here is the inter-token latency (ITL):

* **per chunk, pooled** — ``vllm bench serve`` / ``benchmark_serving.py`` (vLLM) and
  ``sglang.bench_serving`` (SGLang; InferenceMAX's ``kimbochen/bench_serving`` is a fork of the
  vLLM script). Each streamed chunk after the first appends ``chunk time - previous chunk time``
  to the request's ``itl`` list; the report pools the lists of all requests and takes
  ``np.mean`` / ``np.median`` / ``np.percentile`` over the pooled gaps
  (``github:vllm-project/vllm@def9ce85ba1079af970a58ed3d42dd861ae35d58:vllm/benchmarks/serve.py``,
  ``calculate_metrics``: ``itls += outputs[i].itl``;
  ``github:sgl-project/sglang@50a613687fe1ffc6f1bb630c684a24c428a54a74:python/sglang/bench_serving.py``,
  the same). A long request contributes more gaps than a short one, and the median gap is the
  typical engine step, not the typical request: a request that shares its decode with prefill
  chunks has a few long gaps and many short ones, which moves its TPOT (their mean) but hardly the
  pooled median. Their TPOT is per request, ``(E2E - TTFT) / (output tokens - 1)``, as mistfast's.
* **per request** — AIPerf / genai-perf (NVIDIA NIM's benchmarking guide):
  ``ITL = (request latency - TTFT) / (OSL - 1)`` for each request, then the mean or percentile over
  requests (``github:ai-dynamo/aiperf@6f11e9a8e76a8c10f574e6a1ca33d06e5a26bdf1:
  aiperf/metrics/types/inter_token_latency_metric.py``) — mistfast's TPOT.

The pooled per-chunk statistics are computed from the simulated step log: in a step that
decodes ``n`` requests, each of them receives one token ``dt`` (the step's duration) after its
previous one, so the pooled gaps are the step durations, each repeated ``n`` times
(:func:`chunk_gaps`). Not represented: a request left out of some steps while it is running
(preemption, or a scheduler that runs prefills alone), whose gap then spans several steps.
"""
from __future__ import annotations

import re
from typing import Mapping

import numpy as np

# client id -> how it defines ITL ("chunk": pooled per-chunk gaps, "request": per-request mean gap)
ITL_DEFINITION = {
    "vllm-bench-serve": "chunk",
    "sglang-bench-serving": "chunk",
    "aiperf": "request",
    "trtllm-bench": "request",
    "mlperf-loadgen": "request",
}
# summary keys of the pooled per-chunk ITL statistics, by the mistfast TPOT key they replace
CHUNK_ITL_KEYS = {"tpot_mean_ms": "itl_chunk_mean_ms", "tpot_p50_ms": "itl_chunk_p50_ms",
                  "tpot_p90_ms": "itl_chunk_p90_ms", "tpot_p99_ms": "itl_chunk_p99_ms"}
# (pattern in the row's text, client id): the first match names the client. Each pattern is how
# the publisher's row states its client (workload / engine / notes / source columns).
_CLIENT_PATTERNS = (
    (r"\baiperf\b|genai[-_ ]perf", "aiperf"),
    (r"sglang\.bench_serving|sglang bench_serving|sgl-project/sglang.*bench_serving", "sglang-bench-serving"),
    (r"vllm bench serve|benchmark_serving\.py|benchmarks/benchmark_serving|vllm\.benchmarks", "vllm-bench-serve"),
    (r"kimbochen/bench_serving|bench_serving", "vllm-bench-serve"),
    (r"trtllm-bench", "trtllm-bench"),
    (r"\bloadgen\b|mlperf", "mlperf-loadgen"),
)
TEXT_COLUMNS = ("workload", "engine", "notes", "request_rate", "source")


def benchmark_client(r: Mapping) -> str:
    """The benchmark client that measured row ``r``: its ``benchmark_client`` column when the row
    has one, else the first of :data:`_CLIENT_PATTERNS` found in its text columns; "" if none."""
    stated = r.get("benchmark_client")
    if isinstance(stated, str) and stated.strip():
        return stated.strip().lower()
    text = " ".join(str(r.get(k) or "") for k in TEXT_COLUMNS).lower()
    for pattern, client in _CLIENT_PATTERNS:
        if re.search(pattern, text):
            return client
    return ""


def itl_per_chunk(metric: str, client: str) -> bool:
    """True for an ITL row of a client that pools per-chunk gaps (see the module docstring)."""
    return metric.startswith("itl") and ITL_DEFINITION.get(client) == "chunk"


def pooled_percentile(values, counts, q: float) -> float:
    """``np.percentile(np.repeat(values, counts), q)`` (linear interpolation) without building
    the repeated array: the q-th percentile of a list in which ``values[i]`` occurs ``counts[i]``
    times."""
    v = np.asarray(values, dtype=float)
    n = np.asarray(counts, dtype=np.int64)
    keep = n > 0
    v, n = v[keep], n[keep]
    if not len(v):
        return float("nan")
    order = np.argsort(v, kind="stable")
    v, n = v[order], n[order]
    ends = np.cumsum(n)                      # index after the last copy of each value
    pos = q / 100.0 * (ends[-1] - 1)
    lo = int(np.floor(pos))
    hi = min(lo + 1, int(ends[-1]) - 1)
    v_lo = v[np.searchsorted(ends, lo, side="right")]
    v_hi = v[np.searchsorted(ends, hi, side="right")]
    return float(v_lo + (pos - lo) * (v_hi - v_lo))


def chunk_gaps(dt_ms, n_decodes) -> tuple[np.ndarray, np.ndarray]:
    """The pooled per-chunk gaps of one engine's step log as (gap in ms, how many tokens had it):
    ``dt_ms[i]`` is the duration of step i, ``n_decodes[i]`` the requests it gave a token, each
    ``dt_ms[i]`` after its previous token. Exact for the engines ``validate`` simulates (chunked
    batching: every running request decodes in every step, so a step without decodes means none
    was running -- e.g. a closed-loop user's next prompt after the last one finished); a request
    left out of steps while running (preemption, or a scheduler that runs prefills alone) would
    also wait for those steps, which this does not add."""
    dt = np.asarray(dt_ms, dtype=float)
    n = np.asarray(n_decodes, dtype=np.int64)
    keep = n > 0
    return dt[keep], n[keep]


def chunk_itl_stats(dt_ms, n_decodes) -> dict:
    """Pooled per-chunk ITL statistics (summary keys of :data:`CHUNK_ITL_KEYS`) of one step log
    (:func:`chunk_gaps`). (Chunks of several tokens, vLLM multi-step scheduling, are scaled by
    ``validate.plan_value``.)"""
    return pooled_chunk_itl_stats([(dt_ms, n_decodes)])


def pooled_chunk_itl_stats(logs) -> dict:
    """:func:`chunk_itl_stats` of several engines' step logs ``[(dt_ms, n_decodes), ...]`` (the
    data-parallel replicas of one run), their gaps pooled."""
    parts = [chunk_gaps(*log) for log in logs]
    v = np.concatenate([p[0] for p in parts])
    c = np.concatenate([p[1] for p in parts])
    total = c.sum()
    if total == 0:
        return {k: float("nan") for k in CHUNK_ITL_KEYS.values()}
    return {"itl_chunk_mean_ms": float((v * c).sum() / total),
            "itl_chunk_p50_ms": pooled_percentile(v, c, 50.0),
            "itl_chunk_p90_ms": pooled_percentile(v, c, 90.0),
            "itl_chunk_p99_ms": pooled_percentile(v, c, 99.0)}


# steps logged per point in one batched call (8 columns x 8 bytes: 4 MiB a point)
LOG_CAP = 65536
LOG_BATCH_POINTS = 16


def simulate_with_chunk_itl(points) -> list[dict]:
    """Simulate ``points`` with the step log on; per point its summary (a dict of scalars) with the
    pooled per-chunk ITL statistics (in ms, :func:`chunk_itl_stats`) added. A point whose run has
    more steps than the log holds is simulated again alone with a log of exactly its length; the
    logs of a point's data-parallel replicas are pooled."""
    from .kernels import engine as E
    from .runner import run_points
    out: list[dict] = [None] * len(points)   # type: ignore[list-item]
    for a in range(0, len(points), LOG_BATCH_POINTS):
        chunk = list(points[a:a + LOG_BATCH_POINTS])
        res = run_points(chunk, log_steps=LOG_CAP, parallel=len(chunk) > 1)
        for q in range(len(chunk)):
            n_steps = int(np.asarray(res["summary"]["n_steps"])[q])
            r, qq = res, q
            if n_steps > LOG_CAP:
                r, qq = run_points([chunk[q]], log_steps=n_steps, parallel=False), 0
            out[a + q] = _summary_with_itl(r, qq, E)
    return out


def _summary_with_itl(res: dict, q: int, E) -> dict:
    s = {k: float(np.asarray(v)[q]) if np.asarray(v).ndim == 1 else np.asarray(v)[q]
         for k, v in res["summary"].items()}
    subs = np.flatnonzero(np.asarray(res["steplog_points"]) == q)
    logs = [res["steplog"][i, :int(res["steps_per_sub"][i])] for i in subs] or [np.zeros((0, E.N_LOG))]
    s.update(pooled_chunk_itl_stats([(g[:, E.L_DT] * 1e3, g[:, E.L_NDEC]) for g in logs]))
    return s
