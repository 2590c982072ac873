"""The serving front-end in front of an engine: one process that takes each HTTP request, renders
its chat template, tokenises it and hands it to the engine, one request at a time.

A benchmark client such as ``vllm bench serve`` times a request from the moment it sends it, so
its TTFT holds the time the request spent in the front-end. While requests arrive slower than
the front-end serves them, that is one service time (which ``efficiency.ttft_overhead_ms``
already stands for: it is fitted from low-load TTFT rows). When many arrive at once (an
offline burst of 1,000 prompts at t = 0, or a Poisson rate near the front-end's capacity) they
queue: the front-end is a single-server FIFO queue, and the k-th of N simultaneous requests
reaches the engine after k service times.

:func:`frontend_for` gives the front-end of an engine family and version (None where no
published figure exists); :func:`fifo_departures` the times requests leave a single-server FIFO
queue; :func:`queue_waits` the time each one waited there (the part not in the fitted per-request
overhead). ``mistfast validate`` moves the engine arrivals of open-loop rows (offline, Poisson)
served over HTTP to the front-end's departures and adds the wait to TTFT and E2E rows
(docs/ttft-under-load.md, "The serving front-end").
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .engine_defaults import version_tuple


@dataclass(frozen=True)
class FrontEnd:
    """Per-request service time of a serving front-end: ``fixed_ms`` + ``per_prompt_token_us`` x
    the prompt's tokens, one request at a time (a single server)."""
    engine: str
    fixed_ms: float
    per_prompt_token_us: float
    source: str

    def service_s(self, prompt_tokens) -> np.ndarray:
        """Service time of each request, seconds."""
        p = np.asarray(prompt_tokens, dtype=np.float64)
        return self.fixed_ms * 1e-3 + self.per_prompt_token_us * 1e-6 * p


# vLLM's OpenAI server (V1 engine, vLLM >= 0.8: the API server process renders the chat template,
# tokenises and detokenises/streams for every request on one asyncio event loop; tokenisation runs
# on a one-thread executor, `serving_engine.py` `ThreadPoolExecutor(max_workers=1)`):
# * fixed: 12-15 ms of pre-processing per request, measured in the front-end of a vLLM V1 server
#   at batch 96 (github:vllm-project/vllm#21139, 2025-07-17: 12-15 ms, nearly always above 12);
#   13.5 ms, the middle of that range;
# * per prompt token: tokenising a 256K-token prompt takes a few hundred milliseconds
#   (github:vllm-project/vllm#10635, 2024-11-25): ~300 ms / 256k = 1.2 us per token. Tokenisation
#   cost is linear in the prompt length and requests queue for the one tokeniser thread
#   (github:vllm-project/vllm#25301, 2025-09-20, vLLM 0.10).
# `--api-server-count N` (github:vllm-project/vllm#17546, vLLM 0.9) runs N such processes; no row
# here states it, so one is assumed.
VLLM_V1 = FrontEnd(
    engine="vllm", fixed_ms=13.5, per_prompt_token_us=1.2,
    source="github:vllm-project/vllm#21139 (front-end pre-processing 12-15 ms per request, V1); "
           "github:vllm-project/vllm#10635 (tokenisation of 256K tokens: a few hundred ms -> 1.2 us/token); "
           "github:vllm-project/vllm#25301 (one serialized tokenizer queue per API server)")

# benchmark clients that send each request over HTTP to the engine's OpenAI-compatible server
# (mistfast.bench_clients ids); other rows (MLPerf LoadGen harnesses, trtllm-bench, offline LLM
# class runs) have no serving front-end
HTTP_CLIENTS = ("vllm-bench-serve", "sglang-bench-serving", "aiperf")


def frontend_for(engine: str, version: str = "") -> FrontEnd | None:
    """The front-end of an engine family (``vllm``, ``sglang``, ``trtllm-1``) at ``version``; None
    where no published per-request figure exists (SGLang's tokenizer manager, ``trtllm-serve``:
    known to be single-process, github:sgl-project/sglang#6553, github:NVIDIA/TensorRT-LLM#16413,
    but without a per-request time) or for vLLM before the V1 engine (0.8)."""
    if engine != "vllm":
        return None
    v = version_tuple(version)
    if v and v < (0, 8):
        return None
    return VLLM_V1


def fifo_departures(arrival_s, service_s) -> np.ndarray:
    """Departure times from a single-server FIFO queue of requests arriving at ``arrival_s``
    (served in arrival order; ties in the given order) with service times ``service_s``:
    ``d_k = max(a_k, d_(k-1)) + s_k``. Vectorised: with ``S_k = s_1 + ... + s_k``,
    ``d_k = S_k + max_(j <= k) (a_j - S_(j-1))``."""
    a = np.asarray(arrival_s, dtype=np.float64)
    s = np.asarray(service_s, dtype=np.float64)
    if a.shape != s.shape:
        raise ValueError(f"fifo_departures: {a.shape[0]} arrivals but {s.shape[0]} service times")
    order = np.argsort(a, kind="stable")
    a_o, s_o = a[order], s[order]
    cum = np.cumsum(s_o)
    start_bound = np.maximum.accumulate(a_o - (cum - s_o))
    out = np.empty_like(a)
    out[order] = cum + start_bound
    return out


def queue_waits(arrival_s, service_s) -> np.ndarray:
    """Time each request waits in the front-end's queue before its own service starts, seconds."""
    d = fifo_departures(arrival_s, service_s)
    return d - np.asarray(service_s, dtype=np.float64) - np.asarray(arrival_s, dtype=np.float64)


def wait_statistics_ms(waits_s) -> dict:
    """Mean and percentiles (p50, p90, p99; numpy's linear interpolation) of the queue waits, ms,
    keyed like the run summary's TTFT statistics."""
    w = np.asarray(waits_s, dtype=np.float64) * 1e3
    if w.size == 0:
        return {"mean": 0.0, "p50": 0.0, "p90": 0.0, "p99": 0.0}
    return {"mean": float(w.mean()), "p50": float(np.percentile(w, 50)),
            "p90": float(np.percentile(w, 90)), "p99": float(np.percentile(w, 99))}


# ---------------------------------------------------------------------------------------------
# The intake of a burst (session 13, docs/ttft-under-load.md "GPUStack bursts: the event loop
# takes in the whole burst first"). When N requests reach vLLM's API server at once, its one
# asyncio event loop runs every handler's synchronous part (HTTP parsing, the Jinja chat-template
# rendering, the hand-off to the one tokeniser thread) in turn before the continuations that send
# the tokenised requests to the engine core and stream their outputs get the loop: the engine
# receives the burst, and the client sees a first token, only after the intake of all N. The
# requests then meet the engine together, as in the simulated burst at t = 0, so the batch sequence
# (and with it TPOT) is that of the burst; TTFT gains the whole intake time and the run's duration
# gains it too. Per request the intake is the published pre-processing time of VLLM_V1 above.

# vLLM renders gpt-oss chats through openai_harmony instead of the model's Jinja chat template
# (serving_chat.py: ``use_harmony = hf_config.model_type == "gpt_oss"`` selects
# ``_make_request_with_harmony`` in place of ``_preprocess_chat``); no per-request time is published
# for that path, so those models have no intake figure (left out, not guessed).
HARMONY_MODEL_MARKERS = ("gpt-oss", "gpt_oss")


def chat_endpoint(text: str) -> bool:
    """True when a row's text says the requests went to the chat endpoint (``/v1/chat/completions``
    or ``--backend openai-chat``), where the server renders a chat template for every request."""
    t = (text or "").lower()
    return "chat/completions" in t or "openai-chat" in t


def burst_intake_for(engine: str, version: str, model: str, endpoint_text: str) -> FrontEnd | None:
    """The front-end whose per-request pre-processing a burst sent to the chat endpoint passes
    before the engine sees any of it: vLLM >= 0.8 (:func:`frontend_for`) for models rendered
    through a Jinja chat template; None otherwise (other endpoints, the harmony path of gpt-oss,
    engines without a published per-request time)."""
    if not chat_endpoint(endpoint_text):
        return None
    name = (model or "").lower()
    if any(m in name for m in HARMONY_MODEL_MARKERS):
        return None
    return frontend_for(engine, version)


def burst_intake_s(frontend: FrontEnd, prompt_tokens) -> float:
    """Seconds the front-end takes to take in a whole burst: the sum of the requests' service
    times (``fixed_ms`` + ``per_prompt_token_us`` x prompt tokens each)."""
    return float(np.sum(frontend.service_s(prompt_tokens)))
