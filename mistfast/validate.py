"""``mistfast validate``: simulate every measured data point and report the prediction error.

Input: a CSV with the columns of ``../shared/calibration/measurements.csv``::

    id, source, engine, engine_version, model, precision, hardware, num_accel, tp, pp, workload,
    isl, osl, batch_or_concurrency, request_rate, metric, value, notes   (+ optional ``group``)

Each row becomes one prediction (see :func:`plan_row`):

* ``prefill_ms`` / batch-1 ``ttft_ms``: one prefill step of ``batch`` prompts of ``isl`` tokens
  (:func:`mistfast.step_latency`); ``decode_step_ms``: one decode step of ``batch`` decodes at
  context ``isl + osl/2``.
* offline max-throughput rows (``request_rate`` ``inf``/workload "offline"): all requests at t = 0
  with the engine's in-flight batching (``chunked``; TensorRT-LLM 1.x uses the ``trtllm-bench``
  max batch size / max num tokens heuristic, :func:`trtllm_bench_settings`), the measured request
  count capped at :data:`MAX_SIM_REQUESTS`.
* static-batch rows: ``static`` batching, one batch of ``batch_or_concurrency`` requests.
* fixed-concurrency rows (workload mentions concurrency / closed loop): closed loop.
* Poisson rows (numeric ``request_rate``): Poisson arrivals at that rate; a stated request count
  above :data:`MAX_STATED_REQUESTS` (MLPerf Server / Interactive) is simulated in steady state
  (:func:`loadgen_steady_state`).
* ``*_per_gpu`` metrics are divided by the device count (``num_accel``, else tp·pp).

Rows that cannot be represented (unknown model/hardware/precision, unknown metric or workload)
are reported with status ``unsupported`` and the reason, never dropped.

With ``calibrate=True`` the rows are split by measurement group (same source, engine, model,
hardware, parallelism, precision, metric and workload: a whole sweep is either train or test;
stratified by metric, deterministic for a seed), efficiencies are fitted per (device, engine
family) on the training rows (:func:`mistfast.calibration.calibrate`), and the report gives the
calibrated error on the test rows only.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from . import calibration as C
from . import calibration_store as CS
from . import launch_time
from .frontend import HTTP_CLIENTS

MAX_SIM_REQUESTS = 8000       # offline runs: cap on simulated requests (the 128/128 rows: 30000 -> 8000 moves the result < 0.1 %)
DEFAULT_OFFLINE_REQUESTS = 2000
# a Poisson row that states how many requests it ran is simulated with that many (up to this cap):
# with long, heavy-tailed outputs (MLPerf deepseek-r1: mean 3.7k, up to 20k+ tokens) a shorter run
# ends in a drain tail that halves the throughput a 26k-query run measures (the cap bounds the cost
# of the efficiency fit, which re-costs every simulated step)
MAX_STATED_REQUESTS = 30_000
# A Poisson run that issued more queries than MAX_STATED_REQUESTS (MLPerf Server / Interactive:
# LoadGen issues target_qps x min_duration queries, e.g. 884,736 over 2,430 s) is represented by
# its steady state (loadgen_steady_state): one data-parallel replica at its share of the rate, so
# the capped count spans dp times more of the run, with the requests arriving in the first
# STEADY_STATE_WARMUP_FRACTION of the simulated span left out (the ramp from an empty engine, which
# is ~1 % of LoadGen's >= 600 s run but a third of a capped 80 s one).
STEADY_STATE_WARMUP_FRACTION = 0.1
REPORT_COLUMNS = ("id", "model", "hardware", "engine", "metric", "measured", "predicted", "rel_error",
                  "predicted_calibrated", "rel_error_calibrated", "split", "status", "reason")

RUN_METRICS = {
    # metric -> (summary variable, rate-like, divide by device count)
    "output_tok_s": ("output_tok_s", True, False),
    "output_tok_s_per_gpu": ("output_tok_s", True, True),
    "total_tok_s": ("total_tok_s", True, False),
    "total_tok_s_per_gpu": ("total_tok_s", True, True),
    "request_throughput_rps": ("request_throughput_rps", True, False),
    "ttft_ms": ("ttft_mean_ms", False, False), "ttft_mean_ms": ("ttft_mean_ms", False, False),
    "ttft_p50_ms": ("ttft_p50_ms", False, False), "ttft_p90_ms": ("ttft_p90_ms", False, False),
    "ttft_p99_ms": ("ttft_p99_ms", False, False),
    "tpot_ms": ("tpot_mean_ms", False, False), "tpot_mean_ms": ("tpot_mean_ms", False, False),
    "tpot_p50_ms": ("tpot_p50_ms", False, False), "tpot_p90_ms": ("tpot_p90_ms", False, False),
    "tpot_p99_ms": ("tpot_p99_ms", False, False),
    "e2e_ms": ("e2e_mean_ms", False, False), "e2e_mean_ms": ("e2e_mean_ms", False, False),
    "e2e_p50_ms": ("e2e_p50_ms", False, False), "e2e_p90_ms": ("e2e_p90_ms", False, False),
    "e2e_p99_ms": ("e2e_p99_ms", False, False),
    # aliases used by public result tables
    "requests_s": ("request_throughput_rps", True, False), "request_throughput": ("request_throughput_rps", True, False),
    "tpot_p50": ("tpot_p50_ms", False, False),
    "itl_ms": ("tpot_mean_ms", False, False), "itl_mean_ms": ("tpot_mean_ms", False, False),   # inter-token latency
    "itl_p50_ms": ("tpot_p50_ms", False, False), "itl_p99_ms": ("tpot_p99_ms", False, False),  # = TPOT without speculation
    # $ per 1M tokens from the predicted throughput and the catalog price per device-hour
    "usd_per_1m_output_tokens": ("output_tok_s", False, False), "usd_per_1m_tokens": ("total_tok_s", False, False),
}
COST_METRICS = ("usd_per_1m_output_tokens", "usd_per_1m_tokens")
REPLICA_RATE_KEYS = ("output_tok_s", "total_tok_s", "request_throughput_rps")   # summary rates summed over replicas
STEP_ROW_METRICS = ("prefill_ms", "decode_step_ms", "ttft_ms")
# TTFT rows fitted through their prefill steps (calibration.RunObservation.prefill_steps): the mean
# or median TTFT of a static batch or of a closed loop with at most this many users, where a new
# request waits for little more than its own prefill (docs/calibration.md, "Fitting TTFT"). Tail
# percentiles (p90, p99) stay unfitted: over the 10 x concurrency prompts of a typical benchmark
# they are the first wave and cold-start outliers (JIT compiles), which no step time represents.
TTFT_FIT_MAX_CONCURRENCY = 8
TTFT_FIT_METRICS = ("ttft_ms", "ttft_mean_ms", "ttft_p50_ms")
# Where one run reports both, the fit takes the median TTFT and leaves the mean out: the mean over
# 10 x concurrency prompts carries the first wave and cold starts (kernel JIT on a new shape) that
# no step time represents (InferenceMAX SGLang ROCm DeepSeek-R1 at 4 users: median 86 ms, mean
# 515 ms), and fitting both pulled the prefill efficiency between two different quantities.
TTFT_MEAN_METRICS = ("ttft_ms", "ttft_mean_ms")
# the row fields that identify one benchmark run (all of its metrics share them)
RUN_KEY_FIELDS = ("source", "engine", "engine_version", "model", "hardware", "num_accel", "tp", "pp",
                  "precision", "workload", "isl", "osl", "batch_or_concurrency", "request_rate", "dataset")


# ============================================================================ engine settings
def trtllm_bench_settings(client, isl: int, osl: int, kv_fraction: float = 0.95) -> tuple[int, int]:
    """(max_batch_size, max_num_tokens) that ``trtllm-bench throughput`` picks for a dataset of
    fixed ISL/OSL (TensorRT-LLM ``bench/build/tuning.py``): KV-limited request count
    ``R = f·(total memory − weights)/(KV bytes per token · (isl + osl))``, batch ``min(R, 4096)/pp``
    rounded up (to 32 below 256, 128 below 1024, else 256; at least 64), tokens
    ``min(batch·(1 + isl/osl), 32768)`` rounded up (to 256 below 4096, 512 below 8192, else 1024;
    at least 2048)."""
    m = client.model
    n_gpu = client.tp * client.pp
    GiB = float(2**30)
    from .specs import DTYPE_BYTES
    engine = m.param_count() * DTYPE_BYTES[client.precision.weights] / GiB
    total = client.device.memory_GiB * n_gpu
    kv_heads = max(client.tp, m.num_kv_heads)
    per_tok = 2 * m.num_layers * kv_heads * m.head_dim * DTYPE_BYTES[client.precision.kv] / GiB
    reqs = max((total - engine) * kv_fraction / (per_tok * (isl + osl)), 1.0)
    raw_bs = min(reqs, 4096) / client.pp
    raw_tok = min(raw_bs * (1 + isl / max(osl, 1)), 32768)
    if raw_bs < 256:
        bs = max(64, 32 * math.ceil(raw_bs / 32))
    elif raw_bs < 1024:
        bs = 128 * math.ceil(raw_bs / 128)
    else:
        bs = 256 * math.ceil(raw_bs / 256)
    if raw_tok < 4096:
        tok = max(2048, 256 * math.ceil(raw_tok / 256))
    elif raw_tok < 8192:
        tok = 512 * math.ceil(raw_tok / 512)
    else:
        tok = 1024 * math.ceil(raw_tok / 1024)
    return int(bs), int(tok)


# ATOM (ROCm/ATOM, the engine of InferenceMAX's MI355X "atom" rows, image atom0.1.1 of January 2026)
# as its own defaults run it, instead of the vLLM-like fallback (8,192 tokens, 256 sequences, prefill
# chunks mixed with decodes): ``atom/model_engine/arg_utils.py`` and ``atom/config.py`` at f969215aa
# (2026-01-14) default max_num_batched_tokens 16,384 and max_num_seqs 512, and
# ``atom/model_engine/scheduler.py`` Scheduler.schedule admits whole waiting prompts while they fit the
# token budget and returns a prefill-only batch whenever it admitted any (decodes wait), else a decode
# batch. InferenceMAX's ATOM launchers (benchmarks/dsr1_fp*_mi355x_atom_slurm.sh,
# gptoss_fp4_mi355x_atom_slurm.sh) set neither flag. Simulated as the chunked scheduler at a 16,384-token
# budget with prefills apart from decodes (a prompt never needs splitting at these lengths: ISL <= 8,192).
# docs/ttft-under-load.md, "InferenceMAX's first wave from outside its rows, session 16 (branch
# fid-firstwave)"; off by default until measured held out.
ATOM_DEFAULTS_IN_VALIDATE = False
ATOM_MAX_BATCHED_TOKENS = 16384
ATOM_MAX_NUM_SEQS = 512


def offline_scheduler(engine: str, client, isl: int, osl: int) -> dict:
    """Scheduler fields for an offline max-throughput run of ``engine`` (family name)."""
    if engine.startswith("atom") and ATOM_DEFAULTS_IN_VALIDATE:
        return {"batching": "chunked", "max_batch_size": ATOM_MAX_NUM_SEQS,
                "max_batched_tokens": ATOM_MAX_BATCHED_TOKENS, "chunk_size": ATOM_MAX_BATCHED_TOKENS,
                "mix_prefill": False}
    if engine.startswith("trtllm"):
        bs, tok = trtllm_bench_settings(client, isl, osl)
        tok = max(tok, 1)
        return {"batching": "chunked", "max_batch_size": bs, "max_batched_tokens": tok, "chunk_size": tok,
                "kv_memory_fraction": 0.95}
    if engine == "vllm":   # vLLM V1 engine defaults (max_num_batched_tokens 8192, max_num_seqs 256)
        return {"batching": "chunked", "max_batch_size": 256, "max_batched_tokens": 8192, "chunk_size": 8192}
    if engine == "sglang":
        return {"batching": "chunked", "max_batch_size": 1024, "max_batched_tokens": 8192, "chunk_size": 8192}
    return {"batching": "chunked", "max_batch_size": 256, "max_batched_tokens": 8192, "chunk_size": 8192}


def served_settings(engine: str, client, r: Mapping, isl: int = 0, osl: int = 0, concurrency: int = 0):
    """The server settings (:mod:`mistfast.engine_defaults`) of a row served by vLLM, SGLang or
    ``trtllm-serve`` (TensorRT-LLM 1.x): the engine's defaults for its version and device, the
    InferenceMAX launcher's flags, the flags the row's ``engine``/``notes`` text states; None for
    other engines and for TensorRT-LLM runs not served by ``trtllm-serve`` (``trtllm-bench`` and
    MLPerf harnesses keep :func:`trtllm_bench_settings` and the limits of their configs).
    Raises ``engine_defaults.EngineSettingsError`` for a stated flag the engine would not accept."""
    from . import engine_defaults as ED
    engine_text = _txt(r.get("engine"))
    if engine.startswith("trtllm") and not (engine == "trtllm-1" and "serve" in engine_text.lower()):
        return None
    if engine not in ("vllm", "sglang", "trtllm-1"):
        return None
    return ED.row_settings(engine, _txt(r.get("engine_version")), client,
                           engine_text + " " + _txt(r.get("notes")), source=_txt(r.get("source")),
                           model_text=_txt(r.get("model")), isl=isl, osl=osl, concurrency=concurrency)


def engine_scheduler(engine: str, client, r: Mapping, isl: int, osl: int, concurrency: int = 0):
    """(scheduler fields, server settings or None) of a run row: :func:`offline_scheduler` with the
    batch, token and KV-memory settings of the engine as the row's benchmark ran it
    (:func:`served_settings`) on top."""
    sched = offline_scheduler(engine, client, isl, osl)
    served = served_settings(engine, client, r, isl, osl, concurrency)
    if served is not None:
        sched = {**sched, **served.scheduler(client.device.memory_GiB)}
    return sched, served


# A served engine's KV cache with no --kv-cache-dtype flag: "auto", the model's data type (vLLM
# `vllm/config/cache.py` CacheConfig.cache_dtype: 'If "auto", will use model data type'; SGLang
# `server_args.py` kv_cache_dtype "auto", the same words; TensorRT-LLM's KvCacheConfig.dtype "auto":
# the checkpoint's KV quantisation, else the model's type). An FP8 or FP4 checkpoint of Qwen or
# DeepSeek (block-scaled weights, no KV quantisation in its config) thus keeps a BF16 cache, where
# parse_precision's free-text rule assumes ModelOpt's FP8 cache. docs/engines.md, "KV memory".
# Off by default: held out it helps the GPUStack fold (all rows 27.8 -> 27.1 %, on top of the gemm16
# scope) but the refit on those rows moves the MLPerf fold 15.6 -> 19.5 % (E2E 32 -> 56 %, TPOT 35 ->
# 52 %: TensorRT-LLM B200 Llama-3.1-405B); docs/calibration.md, "GPUStack bursts".
KV_AUTO_IN_VALIDATE = False


def kv_auto_dtype(r: Mapping, precision_key: str) -> str:
    """The KV format of a vLLM / SGLang / ``trtllm-serve`` row that states no KV flag: the model's
    16-bit activation type, unless the row's precision text states a KV format or the checkpoint is
    a ModelOpt one (``nvidia/...`` names, "ModelOpt" in the text: their config quantises the KV
    cache), which keep the row's own; "" = keep."""
    text = _txt(r.get("precision")).lower()
    if CS.KV_TEXT.search(text) or "modelopt" in text or _txt(r.get("model")).lower().startswith("nvidia/"):
        return ""
    parts = precision_key.split("/")
    return parts[3] if len(parts) >= 4 and parts[2] != parts[3] else ""


def _with_kv_dtype(precision_key: str, kv: str) -> str:
    """A precision key (weights/compute/kv/activations[/...]) with its KV format replaced."""
    parts = precision_key.split("/")
    if kv and len(parts) >= 4:
        parts[2] = kv
    return "/".join(parts)


# ============================================================================ row plans
@dataclass
class RowPlan:
    id: str
    model_text: str
    hardware_text: str
    engine_text: str
    metric: str
    measured: float
    group: str
    status: str = "ok"            # ok | unsupported
    reason: str = ""
    kind: str = ""                # step | run
    model: str = ""
    device: str = ""
    engine: str = ""
    tp: int = 1
    pp: int = 1
    dp: int = 1
    n_devices: int = 1
    precision: str = ""
    # step rows
    prefill: tuple = ()
    decode: tuple = ()
    # run rows
    scenario: dict = field(default_factory=dict)
    value_key: str = ""
    rate_like: bool = True
    per_device: bool = False
    price_usd_per_hour: float = 0.0    # cost metrics ($ per 1M tokens)
    source_doc: str = ""               # the measurement's source repository / document (--cv)
    source_text: str = ""
    isl: int = 0
    osl: int = 0
    n_requests_measured: int = 0
    n_requests_sim: int = 0
    workload_kind: str = ""
    dataset: str = ""   # named benchmark dataset giving the length distribution (mistfast.datasets)
    disagg: "DisaggLayout | None" = None   # prefill/decode disaggregation: the row is a two-pool pipeline
    tokens_per_chunk: int = 1   # ITL rows: tokens per streamed chunk (multi-step scheduling streams N tokens at once)
    scheduler_steps: int = 1    # vLLM multi-step scheduling: decode steps run back to back before new prefills
    recv_interval: int = 1      # SGLang --scheduler-recv-interval: decode iterations between polls for new requests
    schedule_ahead: bool = False   # the engine forms step n + 1 while step n runs (engine_defaults.ServerSettings)
    decode_launch_us: float = 0.0   # device time per kernel of a graph-replayed decode step (launch_time)
    concurrency: int = 0    # closed-loop users or static batch size (run rows)
    replica_scale: int = 1  # rate metrics x this: one of that many identical replicas was simulated (loadgen_steady_state)
    run_key: str = ""       # the benchmark run the row is one metric of (RUN_KEY_FIELDS)
    loadgen: bool = False   # measured by MLPerf LoadGen inside the harness process (no client-side TTFT overhead)
    # the launch-time floor of a TensorRT-LLM MLPerf harness row, applied to its predictions only
    # (MLPERF_LAUNCH_FLOOR_AT_PREDICT): (efficiency fields, no-graphs flag); ({}, False) for other rows
    predict_floor: tuple = ({}, False)
    # the predicting client's attention-kernel share (SINK_ATTENTION_TRITON_SHARE); 1.0 = as modelled
    attention_share: float = 1.0
    benchmark_client: str = ""   # the tool that measured the row (mistfast.bench_clients.benchmark_client)
    itl_per_chunk: bool = False  # an ITL row over pooled per-chunk gaps (vllm bench serve, sglang.bench_serving)
    adp_balance: tuple = ()      # TensorRT-LLM attention-DP balancing: (ranks, timeout_iters, batching_wait_iters[, "chain"])
    frontend: Any = None         # the serving front-end's queue in front of the engine (mistfast.frontend.FrontEnd)
    frontend_wait_ms: dict = field(default_factory=dict)   # its queue waits: mean, p50, p90, p99 (set with the point)
    burst_intake: Any = None     # the front-end that takes in a whole offline burst before the engine sees it (BURST_INTAKE_IN_VALIDATE)
    # the benchmark client's realised token counts per request (mean input, mean output; 0 = not
    # stated) and the chat-template tokens the server adds to every prompt (stated_lengths)
    stated_input_mean: float = 0.0
    stated_output_mean: float = 0.0
    template_tokens: int = 0
    # the front-end's per-prompt-token intake (PROMPT_INTAKE_US_PER_TOKEN): mean, p50, p90, p99 ms (set with the point)
    prompt_intake_ms: dict = field(default_factory=dict)
    # the front-end's fixed pre-processing per request on the chat endpoint (CHAT_PREPROCESS_FIXED_IN_VALIDATE), ms
    chat_preprocess_ms: float = 0.0

    @property
    def client_key(self) -> str:
        return C.client_key(self.model, self.device, self.tp, self.pp, self.precision, self.engine)

    def unsupported(self, reason: str) -> "RowPlan":
        self.status, self.reason = "unsupported", reason
        return self


def _txt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return str(v).strip()


def _int(v, default=None):
    x = C._num(v, None)
    return int(x) if x is not None and math.isfinite(x) else default


def group_of(r: Mapping) -> str:
    """Measurement group of a row: its ``group`` column, else the sweep it belongs to."""
    g = _txt(r.get("group"))
    if g:
        return g
    parts = [_txt(r.get(k)) for k in ("source", "engine", "engine_version", "model", "hardware", "tp", "pp",
                                      "precision", "metric", "workload")]
    return "|".join(parts)



def _apply_dataset(plan: RowPlan, r: Mapping) -> str:
    """A row whose ``dataset`` column (or ``workload`` text) names a benchmark dataset is simulated
    with that dataset's length distribution; missing isl/osl become the dataset's means (for the
    step rows and the engine heuristics). Returns why the row cannot be represented, or ""."""
    from . import datasets as D
    named = _txt(r.get("dataset"))
    if named:
        try:
            plan.dataset = D.resolve_dataset(named)
        except D.DatasetError as exc:
            return str(exc)
    else:
        plan.dataset = D.dataset_in_text(_txt(r.get("workload"))) or ""
    if plan.dataset and (plan.isl < 1 or plan.osl < 1):
        if D.get_dataset(plan.dataset).generator != "table":
            return f"dataset {plan.dataset!r} needs the row's isl and osl (its nominal lengths)"
        stats = D.dataset_stats(plan.dataset)
        plan.isl = plan.isl or max(int(round(stats["input_mean"])), 1)
        plan.osl = plan.osl or max(int(round(stats["output_mean"])), 1)
    return ""


def _dataset_preset(plan: RowPlan, r: Mapping) -> dict:
    """``workload.dataset`` of a row's scenario (the row's isl/osl are the nominal lengths of random/sonnet)."""
    from . import datasets as D
    if D.get_dataset(plan.dataset).generator == "table":
        return {"name": plan.dataset}
    return {"name": plan.dataset, "input_len": plan.isl, "output_len": plan.osl}


@dataclass(frozen=True)
class DisaggLayout:
    """Prefill/decode disaggregation of a measured endpoint: ``prefill_workers`` engines of
    ``prefill_tp`` devices (expert parallel ``prefill_ep``) hand their KV caches to
    ``decode_workers`` engines of ``decode_tp`` devices; the pools may differ in count and TP."""
    prefill_workers: int
    prefill_tp: int
    prefill_ep: int
    decode_workers: int
    decode_tp: int
    decode_ep: int
    prefill_dp_attention: bool = False   # the pool's attention is data parallel over its tp ranks
    decode_dp_attention: bool = False

    @property
    def n_devices(self) -> int:
        return self.prefill_workers * self.prefill_tp + self.decode_workers * self.decode_tp


_POOL_RE = r"(\d+)\s*{kind} worker\(s\)\s*x\s*tp\s*(\d+)(?:\s*\(ep\s*(\d+)(?:,\s*dp_attention\s*(true|false))?)?"


def disagg_layout(r: Mapping) -> DisaggLayout | None:
    """The P/D layout of a row whose workload says "disaggregated" and whose notes give both pools
    ("1 prefill worker(s) x tp 1 (ep 1, ...); 3 decode worker(s) x tp 4 (ep 4, ...)"), else None."""
    if "disaggregat" not in _txt(r.get("workload")).lower():
        return None
    notes = _txt(r.get("notes")).lower()
    pre = re.search(_POOL_RE.format(kind="prefill"), notes)
    dec = re.search(_POOL_RE.format(kind="decode"), notes)
    if not (pre and dec):
        return None
    return DisaggLayout(int(pre.group(1)), int(pre.group(2)), int(pre.group(3) or 1),
                        int(dec.group(1)), int(dec.group(2)), int(dec.group(3) or 1),
                        pre.group(4) == "true", dec.group(4) == "true")


def kv_transfer_link(device: str, n_devices: int) -> str:
    """Link (data/links.toml) that carries KV caches from prefill to decode engines: a GB200/GB300
    NVL72 rack is one NVLink5 domain; other multi-node endpoints (more than one 8-device node) use
    400 Gb/s RDMA NICs (InferenceMAX MI355X: MoRI over RDMA); within one node, the node's fabric."""
    dev = device.upper()
    if dev.startswith(("GB200", "GB300")):
        return "NVLink5"
    if n_devices > 8:
        return "RDMA-400G"
    if dev.startswith("MI"):
        return "InfinityFabric"
    return "NVLink5" if dev.startswith("B") else "NVLink4"


# Disaggregated rows (docs/ttft-under-load.md, "Disaggregated P/D rows"): the user's first token
# comes from the decode server, after the KV transfer, the wait for the decode client's next step
# boundary and its first step of the request (disagg_first_token_ms), not when the prefill client
# computes it (the pipeline's own TTFT); False: the pipeline's TTFT as is (the sessions 1-11 model).
DISAGG_FIRST_TOKEN_FROM_DECODE = True
# ... and their TTFT / E2E rows get the client-side per-request overhead every aggregated run row
# gets (client_side_ms: the fitted ttft_overhead_ms), from the decode pool's calibrated client
DISAGG_CLIENT_OVERHEAD_ON = True
# ... and the fitted cold first-wave delay of closed loops (first_wave_ms_term) of that client.
# Measured, OFF: held out (--cv-only mantile) it moves the 129 P/D TTFT rows from 16.2 to 18.5 %
# median |error| (its fold value for MI355X SGLang, from other publishers, does not carry the 7-20 s
# stall of those rows' p99; docs/ttft-under-load.md, "Disaggregated P/D rows")
DISAGG_FIRST_WAVE_ON = False
# A pool whose notes say "dp_attention true" runs data-parallel attention (client dp_attention), as
# an aggregated row's does; False: the pools' attention is tensor parallel whatever the notes say
# (sessions 1-11). Measured, OFF: held out (--cv-only mantile) the 105 rows of the 15 GB200 configs
# with attention-DP decode pools go from 9.5 to 14.6 % median |error| (TPOT 3.6 -> 17.4 %: the
# simulated DP decode step is slower than the measured one, as for the aggregated attention-DP
# rows; docs/ttft-under-load.md, "Disaggregated P/D rows")
DISAGG_DP_ATTENTION_ON = False


def _pipeline_scenario(plan: RowPlan, lay: DisaggLayout, workload: dict, isl: int, osl: int) -> dict:
    """A two-pool prefill -> decode pipeline scenario for a disaggregated row."""
    prec = C.precision_dict(plan.precision)
    clients = []
    for name, workers, tp, ep, dpa in (
            ("prefill", lay.prefill_workers, lay.prefill_tp, lay.prefill_ep, lay.prefill_dp_attention),
            ("decode", lay.decode_workers, lay.decode_tp, lay.decode_ep, lay.decode_dp_attention)):
        base = C._client_cached(plan.model, plan.device, tp, 1, plan.precision)
        sched = offline_scheduler(plan.engine, base, isl, osl)
        c = {"name": name, "model": plan.model, "device": plan.device, "tp": tp, "dp": workers,
             "precision": prec, "efficiency": launch_time.engine_launch_efficiency(plan.engine), "scheduler": sched}
        if ep > 1:
            c["ep"] = ep
        if dpa and DISAGG_DP_ATTENTION_ON:
            # as an aggregated row's notes give it (C.row_parallelism: MoE models with tp > 1 only)
            c.update({k: v for k, v in C.row_parallelism("dp_attention true", tp, plan.model).items()
                      if k == "dp_attention"})
        clients.append(c)
    return {"clients": clients,
            "network": {"default_link": kv_transfer_link(plan.device, lay.n_devices)},
            "pipelines": [{"name": "disaggregated", "stages": [
                {"kind": "prefill", "pool": "prefill", "routing": "least_prefill_tokens"},
                {"kind": "decode", "pool": "decode", "routing": "least_kv"}]}],
            "workload": workload,
            "simulation": {"horizon_s": 1e7, "seed": 0}}


def engine_limits_from_notes(notes: str, tp: int) -> dict:
    """Scheduler limits a row's notes state from the engine's own config ("engine limits from that
    config: max batch N, max num tokens M[ per rank (attention DP over the tp ranks)]"; the MLPerf
    rows): ``max_batch_size`` and ``max_batched_tokens``/``chunk_size`` of one engine. With attention
    data parallelism every one of the ``tp`` ranks batches its own requests, so the engine holds
    ``tp`` times the per-rank limits. A token budget below the batch limit also caps the batch
    (each sequence in a step takes at least one token of it)."""
    m = re.search(r"engine limits from that config:([^;]*)", notes or "")
    if not m:
        return {}
    text = m.group(1)
    ranks = tp if "per rank" in text else 1
    out: dict[str, int] = {}
    bs = re.search(r"max batch (\d+)", text)
    tok = re.search(r"max num tokens (\d+)", text)
    if bs:
        out["max_batch_size"] = int(bs.group(1)) * ranks
    if tok:
        out["max_batched_tokens"] = out["chunk_size"] = int(tok.group(1)) * ranks
        if bs:  # every sequence in a step costs at least one token of the budget (TensorRT-LLM max_num_tokens)
            out["max_batch_size"] = min(out["max_batch_size"], out["max_batched_tokens"])
    return out


# The MLPerf harnesses' dispatch to replicas (mistfast.mlperf.replica_arrival_cv: Erlang-dp gaps into
# the one simulated replica instead of a random Poisson split) is measured but not applied: it
# makes first tokens earlier, and the MLPerf Server/Interactive TTFTs are already too early because
# the simulated step is too short there (shipped, 78 runs: TTFT mean 64.8 -> 69.5 %, p99 58.3 -> 57.8 %;
# docs/ttft-under-load.md, "MLPerf Server/Interactive TTFT: the step, not the queue").
MLPERF_DISPATCH_IN_VALIDATE = False
# The per-layer harness time per engine step (mistfast.mlperf.HARNESS_STEP_US_PER_LAYER) added to the
# MLPerf rows with harness settings: off. Held out (--cv source --cv-only mlcommons, session 10) it
# overshoots: Offline tokens/s 24.1 -> 16.0 %, but the 156 TPOT rows 36.2 -> 50.4 % (signed mean
# -15 -> +35 %), the 156 TTFT rows 57.8 -> 65.9 %, all 784 rows 16.0 -> 21.2 % (same doc section).
MLPERF_HARNESS_TIME_IN_VALIDATE = False
# The TensorRT-LLM MLPerf harness steps are launch-bound (docs/ttft-under-load.md, "MLPerf TTFT, session
# 11"): a step of a row whose NVIDIA harness config has settings lasts at least the launch time of its
# kernels, launch_time.kernels_per_step x launch_time.EAGER_KERNEL_US (the host reading from outside the
# validation data); every step when the config sets use_graphs False (no CUDA graph replays), the steps
# with prefill rows when it sets use_graphs True (graphs replay decode-only batches only).
# Measured, OFF: held out it improves the MLPerf fold (--cv-only mlcommons: all rows 14.1 -> 12.2 %,
# TTFT 57.6 -> 54.9 %, TPOT 37.1 -> 31.9 %) but, through the fit on the MLPerf training rows, makes the
# InferenceMAX fold worse (--cv-only mantile: all rows 12.6 -> 21.7 %, TPOT 9.0 -> 22.8 %).
MLPERF_LAUNCH_FLOOR_IN_VALIDATE = False
# The same floor applied when a row is *predicted* only (session 12, docs/ttft-under-load.md "MLPerf
# launch-time floor at prediction only"): the fit's training runs of the MLPerf rows (the logged
# reference pass, the re-costed step sets, refine_runs, the first-wave fit) are simulated without it,
# so every fitted parameter is bit for bit the one of the switch off and no other source's prediction
# moves; the held-out MLPerf rows (and the shipped predictions of those rows) get the floor.
# (Ignored when MLPERF_LAUNCH_FLOOR_IN_VALIDATE is on: the floor is then in the row's client already.)
# ON: held out (--cv source --cv-only mlcommons) the MLPerf fold's 784 rows 15.5 -> 11.6 %, TTFT 59.4 ->
# 58.6 %, TPOT 42.5 -> 42.2 %, output tokens/s 6.2 -> 4.0 %; the TensorRT-LLM docs and InferenceMAX
# folds bit for bit unchanged (all 79 and 4,480 predictions); all LOSO rows 14.8 -> 14.5 %.
MLPERF_LAUNCH_FLOOR_AT_PREDICT = True
# The same prediction-only floor for AMD's vLLM harness (harness_llm) rows whose config sets
# enforce_eager True (session 14, docs/engines.md "vLLM ROCm at hundreds of sequences"): vLLM V0 without
# HIP graphs launches every kernel of every step from Python, so every step (decode-only ones too)
# lasts at least launch_time.kernels_per_step x launch_time.EAGER_KERNEL_US (Llama-2-70B at tp 1: 800
# kernels, 32 ms). Needs MLPERF_LAUNCH_FLOOR_AT_PREDICT. ON: held out (--cv-only mlcommons) alone the MLPerf
# fold's 784 rows 12.9 -> 10.6 % (126 rows move; TTFT 63.1 -> 61.0 %, MI325X Llama-2-70B Interactive TPOT
# -29.3 -> -4.0 %); with stepmodel.SUSTAINED_PEAK_ON 11.0 -> 9.2 % (TPOT 37.3 -> 37.2 %, E2E 42.9 ->
# 42.9 %, rows > 15 % 343 -> 327; MI325X Llama-2-70B Interactive TPOT -21.9 -> +5.4 %, MI300X -12.7 -> +18.5 %);
# prediction only, so every other fold is bit for bit unchanged (no other source has these rows).
MLPERF_EAGER_FLOOR_VLLM_AT_PREDICT = True
# The CDNA3 sustained matrix peak (stepmodel.SUSTAINED_PEAK_ON) at prediction only (session 15,
# docs/calibration.md "A vendor level of the compute efficiency"): the fit keeps the datasheet peaks, so
# every fitted term and every non-CDNA3 prediction is bit for bit as without it; the MI300X / MI325X rows
# to predict run at the MAF times the fitted efficiency. False: off.
SUSTAINED_PEAK_AT_PREDICT = False


def _apply_mlperf_harness(plan: RowPlan, r: Mapping, sched: dict) -> dict:
    """An MLPerf LoadGen row run as its harness config says (:mod:`mistfast.mlperf`): marks the
    row as LoadGen-timed, sets the prefill batching and multi-step scheduling the config's settings
    name, and returns the scheduler. The per-layer harness time measured on the MLPerf rows
    (:data:`mistfast.mlperf.HARNESS_STEP_US_PER_LAYER`) is not applied: out of sample it adds to
    efficiencies fitted on serving engines that already absorb their own per-step host time
    (docs/calibration.md, "MLPerf harnesses")."""
    from . import mlperf as MP
    plan.loadgen = MP.is_loadgen_row(_txt(r.get("workload")))
    settings = MP.harness_settings(_txt(r.get("notes"))) if plan.loadgen else {}
    if not settings:
        return sched
    batching = MP.harness_batching(settings)
    if batching and sched.get("batching") == "chunked":
        sched = {**sched, "batching": batching}
    plan.scheduler_steps = max(plan.scheduler_steps, int(settings.get("num_scheduler_steps", 1)))
    if settings.get("adp_balancing_enable") is True and "per rank (attention dp" in _txt(r.get("notes")).lower():
        plan.adp_balance = (plan.tp, int(settings.get("adp_balancing_timeout_iters", 0)),
                            int(settings.get("adp_balancing_batching_wait_iters", 0)))
    return sched


def mlperf_launch_floor(plan: RowPlan, r: Mapping) -> tuple[dict, bool]:
    """(efficiency fields, no-graphs flag) of the launch-time floor of a TensorRT-LLM MLPerf harness
    row (:data:`MLPERF_LAUNCH_FLOOR_IN_VALIDATE`): ``prefill_launch_us`` =
    :data:`launch_time.EAGER_KERNEL_US` and True when the harness settings say ``use_graphs False``;
    ({}, False) for other rows, rows without harness settings, or with the switch off."""
    if not MLPERF_LAUNCH_FLOOR_IN_VALIDATE:
        return {}, False
    return harness_launch_floor(plan, r)


def harness_launch_floor(plan: RowPlan, r: Mapping) -> tuple[dict, bool]:
    """The launch-time floor of a TensorRT-LLM MLPerf harness row whatever the switches say
    (:func:`mlperf_launch_floor` without its switch): ({"prefill_launch_us": EAGER_KERNEL_US},
    use_graphs is False), or ({}, False) for a row that is not one."""
    if not plan.loadgen or plan.engine != "trtllm-1":
        return {}, False
    from . import mlperf as MP
    settings = MP.harness_settings(_txt(r.get("notes")))
    if "use_graphs" not in settings:
        return {}, False
    return {"prefill_launch_us": launch_time.EAGER_KERNEL_US}, settings["use_graphs"] is False


def vllm_eager_floor(plan: RowPlan, r: Mapping) -> tuple[dict, bool]:
    """The prediction-only launch-time floor of an AMD vLLM harness row with ``enforce_eager True``
    (:data:`MLPERF_EAGER_FLOOR_VLLM_AT_PREDICT`): ({"prefill_launch_us": EAGER_KERNEL_US}, True) --
    no graph replays, so every step --, or ({}, False) for other rows or with the switch off."""
    if not (MLPERF_EAGER_FLOOR_VLLM_AT_PREDICT and plan.loadgen and plan.engine == "vllm"):
        return {}, False
    from . import mlperf as MP
    if MP.harness_settings(_txt(r.get("notes"))).get("enforce_eager") is not True:
        return {}, False
    return {"prefill_launch_us": launch_time.EAGER_KERNEL_US}, True


def _closed_loop_requests(wl: str, n_meas: int, concurrency: int, prompts_per_user: int = 0) -> int:
    """Requests to simulate for a fixed-concurrency row: the measured count, else ``k`` x the
    concurrency when the workload says ``num-prompts Kx concurrency`` (or the launcher's
    ``prompts_per_user``, :func:`inferencemax_prompts_per_user`), else 20x (at least 200). A
    stated count alone (``--num-prompts N``) is simulated as stated.

    A stated ``k`` x C is simulated exactly, without a floor: the first wave (the C prompts sent at
    t = 0) is C/N of the requests, and it sets the mean and the p99 of TTFT (docs/calibration.md,
    "The TTFT tail of closed loops"); 100 requests instead of the 40 of a 4-user run cut its
    weight in the mean by 2.5x and moved the p99 out of it."""
    k = re.search(r"(?:num[-_ ]prompts\s+|~)(\d+)\s*x\s*concurrency", wl)
    if n_meas and not (prompts_per_user or k):
        # the client sent exactly this many prompts (``--num-prompts N``): its first wave is C of
        # N, whatever N is (GPUStack: 100 prompts at 1-8 users, simulated as 200 before)
        return min(n_meas, MAX_SIM_REQUESTS)
    if prompts_per_user or k:
        per_user = prompts_per_user or int(k.group(1))
        return min(max(n_meas, per_user * concurrency), MAX_SIM_REQUESTS)
    return min(max(n_meas, 20 * concurrency, 200), MAX_SIM_REQUESTS)


def inferencemax_prompts_per_user(source: str, model: str, device: str, osl: int) -> int:
    """Prompts per user (``--num-prompts`` / ``--max-concurrency``) of an InferenceMAX run when its
    launcher sets a count other than the rows' "~10x concurrency", else 0. The MI355X launcher
    (github:SemiAnalysisAI/InferenceX@8c920ce54 ``runners/launch_mi355x-amd.sh``, the only MI355X
    single-node launcher of Dec 2025) sends DeepSeek-R1 50 x C prompts (20 x C at 8k output); the
    B200 docker launchers (``launch_b200-nvd.sh``, ``-dgxc.sh``) do too, but B200 runs also go to
    slurm launchers with 10 x C and a row does not say which, so B200 keeps 10 x C. Checked on the
    data: the share of slow (first-wave) requests implied by mean, median and standard deviation
    of TTFT is 0.21 C / 10 C and 0.50 C / 10 C for these rows, i.e. C of 50 C and of 20 C."""
    if "inferencemax" not in source.lower() or device != "MI355X" or not model.startswith("deepseek"):
        return 0
    return 20 if osl >= 8192 else 50


def _stated_prompt_count(wl: str) -> int:
    """The request count a benchmark command in the workload text states (``--num-prompt(s) N``), else 0."""
    m = re.search(r"--num[-_]prompts?[ =](\d+)|(\d+) queries \((?:samples_per_query|generated_query_count)\)", wl)
    return int(m.group(1) or m.group(2)) if m else 0


@dataclass(frozen=True)
class SteadyState:
    """How a Poisson run longer than the simulation cap is simulated (:func:`loadgen_steady_state`)."""
    replicas_simulated: int     # of the row's dp replicas (1: one replica stands for all)
    rate_rps: float             # arrival rate into the simulated replicas
    num_requests: int           # simulated requests
    warmup_s: float             # requests arriving before this are left out of every metric


def loadgen_steady_state(n_issued: int, rate_rps: float, dp: int, cap: int = MAX_STATED_REQUESTS) -> SteadyState | None:
    """Steady-state representation of a Poisson run of ``n_issued`` queries at ``rate_rps`` (the
    whole system's) on ``dp`` data-parallel replicas, when ``n_issued`` exceeds ``cap``; None when
    the whole run can be simulated as issued.

    LoadGen's Server scenario (mlcommons/inference loadgen) issues ``target_qps x min_duration``
    queries with exponential gaps and reports means and percentiles over all of them, throughput as
    tokens / time of the last completion. Over >= 600 s (2,400 s in NVIDIA's llama2-70b configs) the
    ramp from an empty engine and the final drain are about 1 % of the queries; in a capped run at
    the same rate (30,000 of 884,736 queries: 82 s) they are most of it, and the batch never reaches
    the size it holds in the measured run. So: one replica at ``rate/dp`` (a random split of a
    Poisson stream is Poisson; the capped count then covers ``dp`` times more time), ``min(ceil(
    n_issued/dp), cap)`` requests, the first ``STEADY_STATE_WARMUP_FRACTION`` of their arrival span
    left out; rate metrics are scaled by ``dp`` (:attr:`RowPlan.replica_scale`)."""
    if n_issued <= cap or not (rate_rps > 0):
        return None
    per_replica = -(-n_issued // dp)
    n = min(per_replica, cap)
    rate = rate_rps / dp
    return SteadyState(replicas_simulated=1, rate_rps=rate, num_requests=n,
                       warmup_s=STEADY_STATE_WARMUP_FRACTION * n / rate)


def streamed_tokens_per_chunk(metric: str, text: str) -> int:
    """Tokens per streamed chunk that an inter-token-latency row measures. vLLM's multi-step
    scheduling (``--num-scheduler-steps N``, vLLM 0.6) runs N decode steps before it returns their
    tokens, so the client sees one chunk of N tokens every N steps: its ITL (time between chunks)
    is N step times, while TPOT stays one step time per token."""
    return num_scheduler_steps(text) if metric.startswith("itl") else 1


def _apply_benchmark_client(plan: RowPlan, r: Mapping) -> None:
    """The row's benchmark client and, for a client whose ITL pools per-chunk gaps, the pooled
    statistic as the predicted value (docs/measurements.md, "Benchmark clients")."""
    from . import bench_clients as B
    plan.benchmark_client = B.benchmark_client(r)
    plan.itl_per_chunk = B.itl_per_chunk(plan.metric, plan.benchmark_client) and plan.value_key in B.CHUNK_ITL_KEYS


# The front-end queue is not applied by default: on GPUStack's vLLM bursts (the rows it would touch)
# it trades TTFT for TPOT. Leave-one-source-out (GPUStack fold): TTFT 45 -> 41 %, throughput 42 -> 39 %,
# requests/s 34 -> 32 %, but TPOT/ITL 35 -> 39 % (the simulated engine sees requests trickle in and
# streams faster, while the measured client TPOT is stretched by the same busy event loop); with the
# shipped calibration requests/s and TPOT get worse too (1,000 x 128/4 prompts: <= 72 requests/s
# simulated, 111-191 measured). docs/ttft-under-load.md, "The serving front-end".
FRONTEND_QUEUE_IN_VALIDATE = False


def serving_frontend(plan: RowPlan, version: str):
    """The serving front-end (:mod:`mistfast.frontend`) whose queue an open-loop row (offline burst
    or Poisson arrivals) passes before the engine: rows measured over HTTP by a serving benchmark
    client, of an engine with a published front-end time; None otherwise (closed loops: at most C
    requests are in the front-end at once and one pass is the fitted ``ttft_overhead_ms``; LoadGen
    harnesses and ``trtllm-bench`` have no HTTP front-end)."""
    from . import frontend as F
    if not FRONTEND_QUEUE_IN_VALIDATE:
        return None
    if plan.workload_kind not in ("offline", "poisson") or plan.loadgen or plan.disagg is not None \
            or plan.benchmark_client not in F.HTTP_CLIENTS:
        return None
    return F.frontend_for(plan.engine, version)


def with_frontend(p: RowPlan, pt):
    """The point of a row whose requests pass its serving front-end first: engine arrivals moved
    to the front-end's FIFO departures, the queue waits' statistics kept on the row
    (``frontend_wait_ms``, added to TTFT and E2E rows by :func:`plan_value`); other rows as given."""
    if p.frontend is None:
        return pt
    from . import frontend as F
    reqs = pt.requests
    service = p.frontend.service_s(reqs.input_tokens)
    dep = F.fifo_departures(reqs.arrival_s, service)
    p.frontend_wait_ms = F.wait_statistics_ms(dep - service - reqs.arrival_s)
    return dataclasses.replace(pt, requests=reqs.with_arrivals(dep))


def frontend_wait_term_ms(p: RowPlan) -> float:
    """The front-end queue wait as it enters this row's statistic: TTFT and E2E rows get the
    wait's own mean or percentile. (A percentile of a sum is the sum of the percentiles when both
    grow with the request's place in the queue, as in a burst sent at t = 0; at lower load it is an
    upper estimate.)"""
    if not p.frontend_wait_ms or not p.value_key.startswith(("ttft", "e2e")):
        return 0.0
    stat = p.value_key.split("_")[1]      # ttft_mean_ms -> mean, e2e_p99_ms -> p99
    return float(p.frontend_wait_ms.get(stat, 0.0))


# The intake of an offline burst by vLLM's API server (session 13, docs/ttft-under-load.md "GPUStack
# bursts: the event loop takes in the whole burst first"): the engine gets the burst, and the client
# its first token, only after the front-end's pre-processing of all N requests (13.5 ms + 1.2 us per
# prompt token each, the published figures of frontend.VLLM_V1). On, at prediction only
# (at_prediction): the fit's run surrogate scales a whole run metric by the re-costed step time
# (calibration_runs.RunObservation), which an idle intake gap breaks; with the intake in the fit's
# rows the InferenceMAX fold (GPUStack in training) got worse (all 11.3 -> 11.9 %), held out on the
# GPUStack fold it improves (TTFT 26.6 -> 23.2 %, throughput 21.4 -> 19.6 %, TPOT/ITL bit for bit).
BURST_INTAKE_IN_VALIDATE = True


def burst_intake(plan: RowPlan, version: str, model_text: str, endpoint_text: str):
    """The front-end whose intake an offline burst waits for (:func:`mistfast.frontend.burst_intake_for`):
    bursts sent at t = 0 over HTTP by a serving benchmark client to the chat endpoint of vLLM >= 0.8,
    models with a Jinja chat template; None for other rows (closed loops and Poisson arrivals: the
    requests trickle in and each pass is the fitted ``ttft_overhead_ms``; LoadGen harnesses; rows
    that already go through the FIFO front-end queue, FRONTEND_QUEUE_IN_VALIDATE)."""
    from . import frontend as F
    if not BURST_INTAKE_IN_VALIDATE or plan.frontend is not None:
        return None
    if plan.workload_kind != "offline" or plan.loadgen or plan.disagg is not None \
            or plan.benchmark_client not in F.HTTP_CLIENTS:
        return None
    return F.burst_intake_for(plan.engine, version, model_text, endpoint_text)


def with_burst_intake(p: RowPlan, pt):
    """The point of an offline burst whose requests reach the engine after the front-end's intake
    of the whole burst: every arrival moved later by the intake time, which TTFT and E2E rows also
    get (``frontend_wait_ms``, added by :func:`plan_value`: the client timed each request from t = 0);
    throughput rows see it through the run's longer duration. Other rows as given."""
    if p.burst_intake is None:
        return pt
    from . import frontend as F
    reqs = pt.requests
    intake_s = F.burst_intake_s(p.burst_intake, reqs.input_tokens)
    p.frontend_wait_ms = {k: intake_s * 1e3 for k in ("mean", "p50", "p90", "p99")}
    return dataclasses.replace(pt, requests=reqs.with_arrivals(np.asarray(reqs.arrival_s, dtype=np.float64) + intake_s))


def at_prediction(p: RowPlan, pt):
    """(plan, point) of a run row as predicted: with the burst intake (:func:`with_burst_intake`)
    applied to a copy of the plan, so the fit's plans and points stay without it; the row as given
    when it has none."""
    if p.burst_intake is None:
        return p, pt
    q = dataclasses.replace(p)
    return q, with_burst_intake(q, pt)


# A run's realised lengths (session 11, docs/calibration.md "GPUStack bursts, session 11"): the
# GPUStack notes carry what `vllm bench serve` counted, "client result: N successful requests, X
# input / Y generated tokens". The outputs are the ShareGPT completion lengths of the model's own
# tokenizer as max_tokens, without --ignore-eos: 187-202 per request where the Llama-3-based
# ShareGPT table gives 222, and random prompts stop at EOS (gpt-oss 4,000/200: 105-136 of 200;
# 32,000/100: 77-100). The simulated requests' lengths are scaled to those means
# (with_stated_lengths). Off by default: held out (--cv-only gpustack) all rows 27.4 -> 27.3 %, but
# requests/s 21.8 -> 24.7 % (signed +10.7 -> +18.1 %) and TTFT 29.0 -> 30.3 %: with the outputs the
# client counted, the simulated bursts drain even faster than measured (docs/calibration.md).
STATED_LENGTHS_IN_VALIDATE = False
# Chat-template tokens the server adds to a one-message prompt of the openai-chat endpoint, which
# the client's input count (the dataset prompt's own tokens) leaves out. ChatML (Qwen2/Qwen3, no
# default system message since Qwen3): "<|im_start|>user\n" (3) + "<|im_end|>\n" (2) +
# "<|im_start|>assistant\n" (3) = 8 (github:QwenLM/Qwen3 chat template; a thinking model's
# generation prompt adds nothing unless enable_thinking is false). Not counted: DeepSeek-R1 (3-5
# tokens), gpt-oss (its harmony system message, ~70 tokens, is the same for every request and
# vLLM's default prefix cache holds its full 16-token blocks).
CHAT_TEMPLATE_TOKENS = (("qwen", 8),)
_CLIENT_RESULT = re.compile(r"client result:\s*([\d,]+) successful requests,\s*([\d,]+) input\s*/\s*([\d,]+) "
                            r"generated tokens")


# Block-scaled FP8 checkpoints on Hopper (session 11): the prefill-bound GPUStack bursts of every
# block-scaled FP8 deployment on H100/H200 run 1.7-2.4x slower than predicted on all three engines,
# where BF16 on the same parts is within 0.9-1.4x (docs/calibration.md). The share is the hypothesis
# "block-scaled FP8 GEMMs run at the BF16 rate" (0.5 of the FP8 peak), not a fit; 1.0 = off. ON:
# held out, GPUStack fold all 27.4 -> 24.4 %, MLPerf 14.1 -> 13.5 %, InferenceMAX 12.6 -> 12.8 %
# (its TTFT 21.1 -> 22.9 % through the refit); leave-one-source-out with those folds replaced: all
# 15.2 -> 15.2 %, requests/s 10.7 -> 8.4 %, throughput 9.8 -> 9.5 %, TTFT 24.0 -> 24.7 % (docs/calibration.md).
# OFF since the merge with the fitted W8A8 FP8 expert efficiency η_f8 (efficiency.expert_fp8): the full
# leave-one-source-out run of the merged code with both (η_f8 fitted, this share 0.5) gave all 15.0 %,
# TTFT 24.2 %, requests/s 7.4 %, with η_f8 alone all 14.8 %, TTFT 23.3 %, requests/s 6.5 % (every metric
# class as good or better; docs/calibration.md, "GPUStack bursts, session 11", the merge).
BLOCK_FP8_SHARE_IN_VALIDATE = 1.0
HOPPER_DEVICES = ("H100", "H200", "H800", "H20", "GH200")
# Dense block-scaled FP8 GEMMs on Hopper at the BF16 rate, at prediction only (session 14, branch
# fid-gsspeed; docs/calibration.md "Dense block-scaled FP8 on Hopper at prediction only"). Hopper's
# FP8 MMAs take no block scales: the engines quantise each activation in 1x128 groups, and the GEMM
# promotes its partial sums every 128 of K to scale them on the CUDA cores. Published kernel figures
# on H100, outside the validation data: FBGEMM's block-scaled FP8 GEMM with its activation
# quantisation 595 / 762 / 548 TFLOP/s against cuBLAS BF16 585 / 575 / 546 on three large shapes
# (github:pytorch/FBGEMM PR 2546: 1.02, 1.33, 1.00x BF16); vLLM's Triton and CUTLASS block-FP8 GEMMs
# 350-490 against BF16 620-715 TFLOP/s at 1,024-8,192 tokens (github:vllm-project/vllm PR 23280). So
# 0.5 of the FP8 peak (= the BF16 peak): efficiency.dense_fp8 of the predicting client, for the rows
# of block_scaled_fp8 (dense GEMMs of Qwen3 / DeepSeek FP8 checkpoints; the experts keep the fitted
# η_f8), never in the fit's own clients (with_predict_floor), so no fold's fit moves; a fitted η_d8
# lower than it wins (min). 1.0 = off. ON (the lead, session 14): the value comes from the kernel
# figures above, not from any fold, and only GPUStack has dense block-scaled FP8 rows on Hopper, so its
# held-out fold is an out-of-sample measurement: GPUStack fold all 22.6 -> 21.0 %, TTFT 22.4 -> 19.1 %;
# leave-one-source-out all 13.09 -> 12.96 %, TTFT 19.37 -> 18.96 %, requests/s 5.63 -> 5.02 %, TPOT
# 12.19 -> 12.18 %; no other fold moves.
DENSE_BLOCK_FP8_AT_PREDICT = 0.5
# ... and for MoE checkpoints too (DeepSeek-R1, Qwen3-235B-A22B FP8: their attention projections and
# dense layers)? False: dense models only. Their fitted Hopper η_c / η_f8 were learned on block-scaled
# MoE rows without the share (InferenceMAX, GPUStack H200 DeepSeek-R1), so the share would count the
# slow GEMMs twice; held out it moved them both ways (InferenceMAX's 105 H200 SGLang DeepSeek-R1 rows
# TTFT 23.1 -> 24.1 %, throughput 9.3 -> 11.4 %; GPUStack's vLLM Qwen3-235B-FP8 TTFT 67 -> 71 %).
DENSE_BLOCK_FP8_AT_PREDICT_MOE = False

# Attention-sink models (gpt-oss) under vLLM on pre-Hopper NVIDIA GPUs, at prediction only (session 15,
# branch fid-gsdense; docs/calibration.md "gpt-oss on A100: vLLM's Triton attention"). vLLM's
# FlashAttention-2 kernels take no attention sinks (sinks only in FlashAttention 3, i.e. Hopper), so on
# Ampere vLLM runs gpt-oss with its Triton attention backend (TRITON_ATTN) and Marlin MXFP4 experts
# (github:vllm-project/vllm PR 22714 "Enable gpt-oss on ampere"; the backend selector rejects FLASH_ATTN
# and FLASHINFER for "sink setting not supported", vllm issue 40153). That Triton unified-attention
# kernel is tuned for H100 / MI300 and its A100 prefill has been slow (vllm issue 18152: an 8k-token
# prompt on an A100-40GB went from ~600 to ~1,500 ms TTFT when the V1 Triton backend moved to it; PR
# 20308 then skipped the fully masked causal tiles); no published A100 figure against FlashAttention-2
# for the v0.10-0.11 kernel was found. The share multiplies the attention FLOP rate of the predicting client only
# (ClientSpec.attention_kernel_share; with_predict_floor), never the fit's clients, so no fold's fit
# moves; GEMMs, bandwidth and the other rows are untouched. The value is a round hypothesis (the Triton
# kernel at half the FlashAttention-2 rate), set before the held-out run, not fitted. 1.0 = off.
# ON: only GPUStack has rows in scope (gpt-oss on A100 under vLLM, 187 rows) and no fold's fit moves, so
# its held-out fold is the whole effect: GPUStack fold all 21.02 -> 20.41 %, TTFT 19.19 -> 18.65 % (rows
# > 15 %: 308 -> 300); leave-one-source-out all 12.52 -> 12.44 %, TTFT 18.50 -> 18.40 %, TPOT/ITL 11.96
# -> 11.85 %, throughput and requests/s unchanged; cost: gpt-oss-120b's prefill-bound TPOT (+34 -> +60 %
# at 32k prompts), docs/calibration.md.
SINK_ATTENTION_TRITON_SHARE = 0.5
# NVIDIA parts before Hopper (compute capability 8.x) in the device catalog; vLLM >= 0.10.1 serves gpt-oss
PRE_HOPPER_NVIDIA = ("A100", "A10G", "A10", "L4", "L40S", "L40")


def triton_sink_attention(engine: str, version: str, device: str, model) -> bool:
    """True for a row whose attention runs in vLLM's Triton backend because the model has attention
    sinks and the GPU is pre-Hopper NVIDIA (:data:`SINK_ATTENTION_TRITON_SHARE`)."""
    if engine != "vllm" or not getattr(model, "attention_sinks", False):
        return False
    from .engine_defaults import version_tuple
    v = version_tuple(version)
    if v and v < (0, 10, 1):
        return False
    return device.upper().startswith(PRE_HOPPER_NVIDIA) and not device.upper().startswith(HOPPER_DEVICES)


def block_scaled_fp8(r: Mapping, device: str, precision_key: str) -> bool:
    """True for a row whose FP8 GEMMs are block-scaled and run on a Hopper part: FP8 compute, and the
    precision text says "block-scaled" or the model is an official Qwen ``-FP8`` checkpoint (their
    configs quantise with ``weight_block_size`` [128, 128]); ModelOpt / ``nvidia/`` FP8 is per-tensor."""
    parts = precision_key.split("/")
    if len(parts) < 2 or parts[1] != "fp8" or not device.upper().startswith(HOPPER_DEVICES):
        return False
    text, model = _txt(r.get("precision")).lower(), _txt(r.get("model"))
    return "block-scaled" in text or bool(re.match(r"qwen/.*-fp8$", model, re.I))


def stated_client_lengths(notes: str) -> tuple[float, float]:
    """(mean input, mean output tokens per request) of a run whose notes state the benchmark
    client's totals ("client result: 1000 successful requests, 219171 input / 200752 generated
    tokens" -> (219.171, 200.752)); (0, 0) when not stated."""
    m = _CLIENT_RESULT.search(notes or "")
    if not m:
        return 0.0, 0.0
    n, i, o = (float(g.replace(",", "")) for g in m.groups())
    return (i / n, o / n) if n > 0 and i > 0 and o > 0 else (0.0, 0.0)


def chat_template_tokens(model: str, endpoint_text: str) -> int:
    """Tokens the chat template adds to a one-message prompt sent to the chat endpoint
    (``/v1/chat/completions`` or ``--backend openai-chat`` in the row's text) for a model family of
    :data:`CHAT_TEMPLATE_TOKENS`; 0 otherwise."""
    t = (endpoint_text or "").lower()
    if "chat/completions" not in t and "openai-chat" not in t:
        return 0
    name = (model or "").lower()
    return next((k for fam, k in CHAT_TEMPLATE_TOKENS if fam in name), 0)


def scaled_to_mean(tokens: np.ndarray, mean: float) -> np.ndarray:
    """Token counts scaled by one factor to the given mean, rounded so the total stays the scaled
    total (each count is the rounded cumulative scaled sum minus the previous one: deterministic,
    order kept, every count >= 1)."""
    x = np.asarray(tokens, dtype=np.float64)
    if x.size == 0 or not (mean > 0):
        return np.asarray(tokens, dtype=np.int64)
    cum = np.rint(np.cumsum(x * (mean / x.mean())))
    out = np.diff(np.concatenate(([0.0], cum))).astype(np.int64)
    return np.maximum(out, 1)


def with_stated_lengths(p: RowPlan, pt):
    """The point of a row with its requests' lengths as the benchmark client realised them:
    outputs (and inputs) scaled to the stated means (:func:`stated_client_lengths`), plus the chat
    template's tokens on every prompt; other rows as given."""
    if not STATED_LENGTHS_IN_VALIDATE or not (p.stated_output_mean > 0 or p.template_tokens > 0):
        return pt
    reqs = pt.requests
    inp, out = reqs.input_tokens, reqs.output_tokens
    if p.stated_input_mean > 0:
        inp = scaled_to_mean(inp, p.stated_input_mean)
    if p.stated_output_mean > 0:
        out = scaled_to_mean(out, p.stated_output_mean)
    inp = inp + p.template_tokens
    new = reqs._replace(reqs.arrival_s, inp, out, reqs.hash_offsets, reqs.hash_ids)
    return dataclasses.replace(pt, requests=new)


def row_point(p: RowPlan):
    """The simulated point of a run row: its scenario's point with the stated lengths and the
    serving front-end's FIFO queue applied (the burst intake is applied at prediction only,
    :func:`at_prediction`)."""
    from .scenario import scenario_point
    from .specs import parse_scenario
    return with_prompt_intake(p, with_frontend(p, with_stated_lengths(p, scenario_point(parse_scenario(p.scenario)))))


# The serving front-end's time per prompt token, outside the engine steps and the same at every TP
# degree (session 14, docs/ttft-under-load.md "InferenceMAX TTFT versus TP"): the API server
# tokenises each prompt (the text the benchmark client sends) before the engine sees it, at a
# rate per token that no GPU or TP degree changes. The fixed part of the front-end is the fitted
# ``ttft_overhead_ms``; this is its per-token part, a published figure, not fitted: 1.2 us per
# token, vLLM's tokenisation of 256K tokens in ~300 ms (github:vllm-project/vllm#10635, the rate of
# frontend.VLLM_V1 that the GPUStack burst intake uses). Added to the TTFT and E2E rows of closed
# loops and Poisson arrivals served over HTTP (not MLPerf LoadGen, which sends token ids; not
# static batches; not disaggregated rows; not offline bursts, whose intake is BURST_INTAKE_IN_VALIDATE;
# not rows behind the FIFO front-end queue, whose service time has it). In the fit it is a fixed
# part of the row (calibration_runs.RunObservation.fixed_ms: not scaled by the re-costed steps), so
# the fitted ttft_overhead_ms keeps only the prompt-independent rest. None = off (bit for bit as before).
# ON: held out, InferenceMAX fold all 10.7 -> 10.4 %, TTFT 17.7 -> 16.8 % (the 8k prompts at TP 2-8); GPUStack
# fold all 22.6 -> 22.6 %, TTFT 22.4 -> 22.1 %, throughput 18.5 -> 18.8 % (docs/ttft-under-load.md).
PROMPT_INTAKE_US_PER_TOKEN: float | None = 1.2


def prompt_intake_applies(p: RowPlan) -> bool:
    """True for a row that gets the per-prompt-token front-end time (:data:`PROMPT_INTAKE_US_PER_TOKEN`)."""
    return PROMPT_INTAKE_US_PER_TOKEN is not None and PROMPT_INTAKE_US_PER_TOKEN > 0 \
        and p.value_key.startswith(("ttft", "e2e")) and not p.loadgen and p.disagg is None \
        and p.frontend is None and p.burst_intake is None and p.workload_kind in ("closed loop", "poisson")


def with_prompt_intake(p: RowPlan, pt):
    """The point unchanged; for a row of :func:`prompt_intake_applies` the statistics of its
    requests' front-end time per prompt (``PROMPT_INTAKE_US_PER_TOKEN`` x the prompt's tokens: mean,
    median, p90, p99 of the simulated prompts, numpy's linear percentiles) kept on the plan as
    ``prompt_intake_ms``. (The percentile of a TTFT is taken as the TTFT at the same percentile of
    the prompt length plus this one: exact for a TTFT that grows with the prompt, as at low load.)"""
    p.prompt_intake_ms = {}
    if not prompt_intake_applies(p):
        return pt
    tok = np.asarray(pt.requests.input_tokens, dtype=np.float64)
    if tok.size == 0:
        return pt
    ms = tok * (float(PROMPT_INTAKE_US_PER_TOKEN) / 1e3)
    p.prompt_intake_ms = {"mean": float(ms.mean()), "p50": float(np.percentile(ms, 50)),
                          "p90": float(np.percentile(ms, 90)), "p99": float(np.percentile(ms, 99))}
    return pt


def prompt_intake_term_ms(p: RowPlan) -> float:
    """The per-prompt-token front-end time as it enters this row's statistic (0 for other rows:
    :func:`with_prompt_intake` leaves ``prompt_intake_ms`` empty for them)."""
    if not p.prompt_intake_ms:
        return 0.0
    stat = p.value_key.split("_")[1]      # ttft_mean_ms -> mean, e2e_p99_ms -> p99
    return float(p.prompt_intake_ms.get(stat, p.prompt_intake_ms["mean"]))


# The fixed part of the serving front-end on the chat endpoint (session 15, branch fid-tpfixed;
# docs/ttft-under-load.md, "The chat endpoint's fixed pre-processing"). The fitted ttft_overhead_ms is
# one factorised sum (root + device + engine + pair; the publisher term is not stored), so a held-out
# publisher inherits the fixed part of the others' low-load rows. vLLM's only low-load TTFT rows outside
# InferenceMAX are GPUStack's closed loops on /v1/chat/completions (Qwen3 and Llama through their Jinja
# chat templates, ~60 ms measured at 1-8 users), which lift vLLM's fitted overhead to ~21 ms, where
# InferenceMAX's gpt-oss rows on the completions endpoint leave 11-12 ms at TP 8. The chat endpoint's
# per-request pre-processing (chat-template rendering, request build) is the published 13.5 ms of
# frontend.VLLM_V1 (vllm#21139: 12-15 ms), the figure the offline-burst intake already charges per
# request (BURST_INTAKE_IN_VALIDATE, the same scope: vLLM >= 0.8, chat endpoint, Jinja templates, not
# gpt-oss's harmony path). Here it is a fixed, unfitted part of the TTFT and E2E rows of closed loops and
# Poisson arrivals in that scope, in the prediction and in the fit (calibration_runs.RunObservation.fixed_ms,
# beside the per-token intake), so the fitted overhead keeps only the rest and the completions endpoint
# does not pay for the chat template. False = off (bit for bit as before).
# ON: held out, InferenceMAX fold all 10.42 -> 10.12 %, TTFT 16.83 -> 15.79 % (vLLM's 9.5 %, its 1k rows at
# TP 2-8), TPOT 8.09 -> 8.12; MLPerf fold all 10.41 -> 10.59 %, TTFT 60.6 -> 60.8, TPOT 41.9 -> 42.4 (through
# the refit); GPUStack fold's fit unchanged (its 15 rows +13.5 ms); leave-one-source-out with the three folds
# replaced: all 12.52 -> 12.33 %, TTFT 18.50 -> 17.70 % (docs/ttft-under-load.md, session 15).
CHAT_PREPROCESS_FIXED_IN_VALIDATE = True


def chat_preprocess_fixed_ms(plan: RowPlan, version: str, model_text: str, endpoint_text: str) -> float:
    """The chat endpoint's fixed pre-processing time per request (ms) of a closed-loop or Poisson
    row served over HTTP (:data:`CHAT_PREPROCESS_FIXED_IN_VALIDATE`): ``fixed_ms`` of the front-end
    :func:`mistfast.frontend.burst_intake_for` names (vLLM >= 0.8, chat endpoint, Jinja chat
    template); 0 for every other row (offline bursts, whose intake has it; rows behind the FIFO
    front-end queue; LoadGen; disaggregated rows; other engines and endpoints)."""
    from . import frontend as F
    if not CHAT_PREPROCESS_FIXED_IN_VALIDATE or plan.frontend is not None or plan.burst_intake is not None:
        return 0.0
    if plan.workload_kind not in ("closed loop", "poisson") or plan.loadgen or plan.disagg is not None \
            or plan.benchmark_client not in F.HTTP_CLIENTS:
        return 0.0
    fe = F.burst_intake_for(plan.engine, version, model_text, endpoint_text)
    return float(fe.fixed_ms) if fe is not None else 0.0


def chat_preprocess_term_ms(p: RowPlan) -> float:
    """The chat endpoint's fixed pre-processing as it enters this row's statistic: the same
    constant on the mean and every percentile of a TTFT or E2E row, 0 for other metrics."""
    if p.chat_preprocess_ms <= 0.0 or not p.value_key.startswith(("ttft", "e2e")):
        return 0.0
    return float(p.chat_preprocess_ms)


def num_scheduler_steps(text: str) -> int:
    """N of vLLM's multi-step scheduling (``--num-scheduler-steps N``) stated in a row's text, else 1."""
    m = re.search(r"--num[-_]scheduler[-_]steps[ =](\d+)", text)
    return max(int(m.group(1)), 1) if m else 1


def source_document(source: Any, level: str = "source") -> str:
    """The source a ``source`` cell names, for leave-one-source-out. ``level="source"``: a GitHub
    reference ``github:owner/repo@commit:path`` -> ``github:owner/repo`` (one repository = one
    source); ``level="document"``: -> ``github:owner/repo:path`` (each file apart, commit
    dropped). A URL -> scheme, host and path (no query, fragment or trailing note); other text ->
    its first 80 characters."""
    t = _txt(source)
    t = re.split(r"\s+\(|;\s", t, maxsplit=1)[0].strip()
    m = re.match(r"github:([^@:\s]+/[^@:\s]+)(?:@[^:\s]*)?(?::(\S+))?", t)
    if m:
        if level == "document" and m.group(2):
            return f"github:{m.group(1)}:{m.group(2)}"
        return f"github:{m.group(1)}"
    m = re.match(r"(https?://)([^/?#\s]+)([^?#\s]*)", t)
    if m:  # a web site is one publisher; its pages are documents
        return (m.group(1) + m.group(2) + m.group(3)).rstrip("/") if level == "document" else m.group(1) + m.group(2)
    return t[:80]


def plan_row(r: Mapping) -> RowPlan:
    """How to predict one measurement row (or why it cannot be); never raises: an unexpected
    failure becomes an ``unsupported`` row with the reason."""
    try:
        plan = _plan_row(r)
    except Exception as exc:  # keep going: one odd row must not stop a validation run
        plan = RowPlan(id=_txt(r.get("id")), model_text=_txt(r.get("model")), hardware_text=_txt(r.get("hardware")),
                       engine_text=_txt(r.get("engine")), metric=_txt(r.get("metric")),
                       measured=C._num(r.get("value"), float("nan")), group=group_of(r))
        from .engine_defaults import EngineSettingsError
        plan.unsupported(str(exc) if isinstance(exc, EngineSettingsError) else
                         f"row could not be planned: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
    plan.source_text = _txt(r.get("source"))
    plan.source_doc = source_document(plan.source_text)
    plan.run_key = run_key_of(r)
    excluded = re.search(r"validate-excluded:\s*([^;]+)", _txt(r.get("notes")))
    if excluded and plan.status == "ok":
        # a measurement the step model cannot express (the notes say why, from the source): it is
        # predicted and listed with the reason, but neither fitted nor counted in the statistics
        plan.status = "excluded"
        plan.reason = "not expressible, excluded from fitting and statistics: " + excluded.group(1).strip()
    return plan


def _plan_row(r: Mapping) -> RowPlan:
    metric = _txt(r.get("metric"))
    plan = RowPlan(id=_txt(r.get("id")), model_text=_txt(r.get("model")), hardware_text=_txt(r.get("hardware")),
                   engine_text=_txt(r.get("engine")), metric=metric, measured=C._num(r.get("value"), float("nan")),
                   group=group_of(r))
    if not (plan.measured > 0):
        return plan.unsupported(f"no positive measured value ({r.get('value')!r})")
    plan.model = C.resolve_model(plan.model_text) or ""
    if not plan.model:
        return plan.unsupported(f"model {plan.model_text!r} is not in the model catalog (data/models.toml)")
    plan.device = C.resolve_device(plan.hardware_text) or ""
    if not plan.device:
        return plan.unsupported(f"hardware {plan.hardware_text!r} is not in the device catalog (data/devices.toml)")
    prec = C.row_precision(r.get("precision"), plan.model_text, plan.hardware_text)  # MoE + FP4: expert format
    if prec is None:
        return plan.unsupported(f"precision {r.get('precision')!r} not recognised")
    plan.precision = C.precision_key(prec)
    fam_col = _txt(r.get("engine_family"))
    plan.engine = C.engine_family(fam_col) if fam_col and fam_col != "other" else \
        C.engine_family(r.get("engine"), r.get("engine_version"))
    plan.tp = _int(r.get("tp"), 1) or 1
    plan.pp = _int(r.get("pp"), 1) or 1
    n_acc = _int(r.get("num_accel"), None)
    plan.n_devices = n_acc or plan.tp * plan.pp
    plan.disagg = disagg_layout(r)
    if plan.disagg is not None:
        lay = plan.disagg
        if plan.pp != 1:
            return plan.unsupported(f"disaggregated row with pp = {plan.pp}: only pp = 1 pools are represented")
        if n_acc and n_acc != lay.n_devices:
            return plan.unsupported(f"num_accel = {n_acc} but the P/D layout in notes adds up to {lay.n_devices} "
                                    f"({lay.prefill_workers} x tp {lay.prefill_tp} + {lay.decode_workers} x tp "
                                    f"{lay.decode_tp})")
        plan.n_devices = lay.n_devices
        for tp in (lay.prefill_tp, lay.decode_tp):
            try:
                C._client_cached(plan.model, plan.device, tp, 1, plan.precision)
            except Exception as exc:
                return plan.unsupported(f"disaggregated pool with tp = {tp} not representable: "
                                        f"{str(exc).splitlines()[-1].strip()}")
    elif plan.n_devices % (plan.tp * plan.pp):
        return plan.unsupported(f"num_accel = {plan.n_devices} is not a multiple of tp*pp = {plan.tp * plan.pp}")
    plan.dp = 1 if plan.disagg is not None else plan.n_devices // (plan.tp * plan.pp)
    try:
        C._client_cached(plan.model, plan.device, plan.tp, plan.pp, plan.precision)
    except Exception as exc:  # does not fit, bad tp, ...
        return plan.unsupported(f"configuration not representable: {str(exc).splitlines()[-1].strip()}")
    plan.isl = _int(r.get("isl"), 0) or 0
    plan.osl = _int(r.get("osl"), 0) or 0
    wl = _txt(r.get("workload")).lower()
    bc_txt = _txt(r.get("batch_or_concurrency"))
    rr_txt = _txt(r.get("request_rate")).lower()
    batch = _int(bc_txt, None)
    why_not = _apply_dataset(plan, r)
    if why_not:
        return plan.unsupported(why_not)
    if plan.isl < 1:
        if _txt(r.get("dataset")):
            return plan.unsupported(f"dataset {_txt(r.get('dataset'))!r} gives no lengths here and the row has no isl")
        return plan.unsupported("no input length (isl)")

    # ---- single steps --------------------------------------------------------------------------
    batch1 = (batch or 1) == 1
    single = any(s in wl for s in ("single request", "single batch", "batch 1", "batch-1", "prefill only",
                                   "step", "microbenchmark"))
    if metric == "prefill_ms" or (metric == "ttft_ms" and (single or batch1) and "offline" not in wl
                                  and "concurrency" not in wl and not rr_txt.replace(".", "").isdigit()):
        if metric == "ttft_ms" and not batch1 and "static" not in wl:
            return plan.unsupported("TTFT at concurrency > 1 outside a static batch needs a run, not given")
        plan.kind, plan.workload_kind = "step", "prefill step"
        plan.prefill = ((0, plan.isl),) * (batch or 1)
        return plan
    if metric == "decode_step_ms":
        if plan.osl < 1:
            return plan.unsupported("decode step without an output length (context unknown)")
        plan.kind, plan.workload_kind = "step", "decode step"
        plan.decode = ((1, plan.isl + plan.osl // 2),) * (batch or 1)
        return plan

    # ---- whole runs --------------------------------------------------------------------------------
    if metric not in RUN_METRICS:
        return plan.unsupported(f"metric {metric!r} cannot be predicted (known: "
                                f"{', '.join(STEP_ROW_METRICS)}, {', '.join(RUN_METRICS)})")
    if plan.osl < 1:
        return plan.unsupported("no output length (osl)")
    plan.value_key, plan.rate_like, plan.per_device = RUN_METRICS[metric]
    if metric in COST_METRICS:
        price = C._num(r.get("price_usd_per_hour"), None) or C._client_cached(
            plan.model, plan.device, plan.tp, plan.pp, plan.precision).device.price_usd_per_hour
        if not price or not (price > 0):
            return plan.unsupported(f"metric {metric!r} needs a device price: {plan.device} has none in the catalog "
                                    "and the row gives no price_usd_per_hour")
        plan.price_usd_per_hour = float(price)
    client = C._client_cached(plan.model, plan.device, plan.tp, plan.pp, plan.precision)
    m = re.search(r"\(([\d,]+)\s*requests?\)", rr_txt)
    n_meas = int(m.group(1).replace(",", "")) if m else 0
    n_meas = n_meas or _stated_prompt_count(wl)
    flags = _txt(r.get("engine")) + " " + _txt(r.get("notes"))
    plan.tokens_per_chunk = streamed_tokens_per_chunk(metric, flags)
    _apply_benchmark_client(plan, r)
    plan.scheduler_steps = num_scheduler_steps(flags)
    rate = C._num(rr_txt, None)
    workload: dict[str, Any] = {"input": {"dist": "fixed", "value": plan.isl},
                                "output": {"dist": "fixed", "value": plan.osl}}
    if plan.dataset:
        workload = {"dataset": _dataset_preset(plan, r)}
    sched: dict[str, Any]
    if "static" in wl:
        if batch is None:
            return plan.unsupported(f"static batch without a batch size ({bc_txt!r})")
        plan.workload_kind = "static batch"
        n = batch
        plan.concurrency = batch
        sched = {"batching": "static", "max_batch_size": batch,
                 "max_batched_tokens": max(batch * plan.isl, plan.isl, 8192)}
        served = None
        workload["arrival"] = {"process": "offline"}
    elif ("concurren" in wl or "closed" in wl or "closed" in rr_txt) and batch is not None:
        plan.workload_kind = "closed loop"
        plan.concurrency = batch
        n = _closed_loop_requests(wl, n_meas, batch, inferencemax_prompts_per_user(
            _txt(r.get("source")), plan.model, plan.device, plan.osl))
        sched, served = engine_scheduler(plan.engine, client, r, plan.isl, plan.osl, batch)
        workload["arrival"] = {"process": "closed_loop", "concurrency": batch}
    elif "offline" in wl or rr_txt.startswith("inf") or rr_txt.startswith("offline"):
        plan.workload_kind = "offline"
        # a stated count is the whole endpoint's (MLPerf samples_per_query); n is per replica
        n = min(-(-n_meas // plan.dp) if n_meas else DEFAULT_OFFLINE_REQUESTS, MAX_SIM_REQUESTS)
        sched, served = engine_scheduler(plan.engine, client, r, plan.isl, plan.osl)
        if batch is not None:  # a fixed batch size given by the row
            sched["max_batch_size"] = batch
        workload["arrival"] = {"process": "offline"}
    elif "concurren" in wl or "closed" in wl:
        if batch is None:
            return plan.unsupported(f"fixed-concurrency run without a concurrency ({bc_txt!r})")
        plan.workload_kind = "closed loop"
        plan.concurrency = batch
        n = _closed_loop_requests(wl, n_meas, batch, inferencemax_prompts_per_user(
            _txt(r.get("source")), plan.model, plan.device, plan.osl))
        sched, served = engine_scheduler(plan.engine, client, r, plan.isl, plan.osl, batch)
        workload["arrival"] = {"process": "closed_loop", "concurrency": batch}
    elif rate is not None and math.isfinite(rate) and rate > 0:
        plan.workload_kind = "poisson"
        # a stated request count is the measured experiment (its warm-up and drain included); a
        # longer one than the cap is represented by its steady state (loadgen_steady_state)
        n = min(n_meas, MAX_STATED_REQUESTS) if n_meas else min(max(int(rate * 120), 500), MAX_SIM_REQUESTS)
        # (a disaggregated row's pools are not data-parallel copies of one engine: simulated as issued)
        steady = loadgen_steady_state(n_meas, rate, plan.dp) if n_meas and plan.disagg is None else None
        sched, served = engine_scheduler(plan.engine, client, r, plan.isl, plan.osl)
        workload["arrival"] = {"process": "poisson", "rate_rps": rate}
        if steady is not None:
            n = steady.num_requests
            workload["arrival"]["rate_rps"] = steady.rate_rps
            plan.replica_scale = plan.dp // steady.replicas_simulated
            plan.workload_kind = "poisson, steady state"
    else:
        return plan.unsupported(f"workload {r.get('workload')!r} with request rate {r.get('request_rate')!r} "
                                "is not a recognised kind (offline, static batch, fixed concurrency, Poisson rate)")
    if served is not None:   # the engine's KV format and continuous decode steps as the run set them
        plan.scheduler_steps = max(plan.scheduler_steps, served.decode_steps)
        plan.recv_interval = max(int(served.recv_interval), 1)
        plan.schedule_ahead = bool(served.schedule_ahead)
        if launch_time.GRAPH_DECODE_DEFAULT_ON:   # per-kernel decode time of the engine on this device
            plan.decode_launch_us = launch_time.decode_launch_default(served.engine, plan.device,
                                                                      served.torch_compile)
        if served.kv_dtype:
            plan.precision = _with_kv_dtype(plan.precision, served.kv_dtype)
        elif KV_AUTO_IN_VALIDATE and plan.benchmark_client in HTTP_CLIENTS:
            # (a server started from its command line; MLPerf harnesses set the KV format in their own configs)
            plan.precision = _with_kv_dtype(plan.precision, kv_auto_dtype(r, plan.precision))
        if served.adp_balance and ADP_BALANCE_CHAIN_ON and plan.disagg is None \
                and C.row_parallelism(r.get("notes"), plan.tp, plan.model).get("dp_attention"):
            # trtllm-serve with attention_dp_config.enable_balance under attention DP over the tp
            # ranks (the InferenceMAX gpt-oss B200 runs): the waiting chain of adp_balance_chain_waits
            plan.adp_balance = (plan.tp, *served.adp_balance, "chain")
    limits = engine_limits_from_notes(_txt(r.get("notes")), plan.tp)
    if limits and plan.workload_kind != "static batch":
        sched = {**sched, **limits}
        if sched.get("max_batched_tokens", 0) < sched["max_batch_size"]:
            # a batch limit without a token budget: the smallest budget that lets a full batch decode
            sched["max_batched_tokens"] = sched["chunk_size"] = sched["max_batch_size"]
    sched = _apply_mlperf_harness(plan, r, sched)
    harness_ms = 0.0
    if MLPERF_HARNESS_TIME_IN_VALIDATE and plan.loadgen and _txt(r.get("notes")).find("harness settings from that config") >= 0:
        from . import mlperf as MP   # the harness's own time per engine step (measured on v5.1: mistfast.mlperf)
        harness_ms = MP.harness_step_ms(client.model.num_layers)
    launch_eff = mlperf_launch_floor(plan, r)
    if MLPERF_LAUNCH_FLOOR_AT_PREDICT and not launch_eff[0]:
        plan.predict_floor = harness_launch_floor(plan, r)   # the fit's client stays without it
        if not plan.predict_floor[0]:
            plan.predict_floor = vllm_eager_floor(plan, r)   # AMD harness_llm, enforce_eager
    if DENSE_BLOCK_FP8_AT_PREDICT != 1.0 and block_scaled_fp8(r, plan.device, plan.precision) \
            and (DENSE_BLOCK_FP8_AT_PREDICT_MOE or not client.model.is_moe):
        fields, no_graphs = plan.predict_floor   # the predicting client only, like the launch floor
        plan.predict_floor = ({**fields, "dense_fp8": DENSE_BLOCK_FP8_AT_PREDICT}, no_graphs)
    if SINK_ATTENTION_TRITON_SHARE != 1.0 and triton_sink_attention(plan.engine, _txt(r.get("engine_version")),
                                                                     plan.device, client.model):
        plan.attention_share = SINK_ATTENTION_TRITON_SHARE   # the predicting client only, like the floor
    if MLPERF_DISPATCH_IN_VALIDATE and plan.loadgen and plan.workload_kind == "poisson, steady state" and plan.dp > 1:
        from . import mlperf as MP   # the harness deals queries to replicas in turn, not at random
        workload["arrival"] = {"process": "gamma", "rate_rps": workload["arrival"]["rate_rps"],
                               "cv": MP.replica_arrival_cv(plan.dp)}
    plan.frontend = serving_frontend(plan, _txt(r.get("engine_version")))
    plan.burst_intake = burst_intake(plan, _txt(r.get("engine_version")), plan.model_text, wl)
    plan.chat_preprocess_ms = chat_preprocess_fixed_ms(plan, _txt(r.get("engine_version")), plan.model_text, wl)
    if plan.workload_kind in ("offline", "closed loop") and plan.disagg is None:
        # the client's realised lengths (a run of exactly the stated prompts: offline bursts and closed loops)
        plan.stated_input_mean, plan.stated_output_mean = stated_client_lengths(_txt(r.get("notes")))
        if plan.stated_output_mean > 0:
            plan.template_tokens = chat_template_tokens(plan.model_text, wl)
    plan.kind = "run"
    rr = re.search(r"random[-_ ]range[-_ ]ratio[ =]*([0-9.]+)", wl)
    if rr and plan.dataset in ("", "random") and 0.0 < float(rr.group(1)) < 1.0:
        # benchmark_serving's random prompts (SGLang, vLLM before 0.9, InferenceMAX's client
        # kimbochen/bench_serving): lengths uniform in [int(ratio*L), L]. Also where the row's
        # dataset column says "random" (vLLM's newer random dataset reads the ratio as [L(1-r),
        # L(1+r)]; these rows state [ratio*L, L]): with one fixed length every closed-loop user
        # finishes in step with the others and re-enters with them, so new prompts arrive in
        # groups and wait for each other's prefills, which no benchmark with spread lengths does.
        lo = float(rr.group(1))
        workload.pop("dataset", None)
        workload["input"] = {"dist": "uniform", "low": max(1, int(lo * plan.isl)), "high": plan.isl}
        workload["output"] = {"dist": "uniform", "low": max(1, int(lo * plan.osl)), "high": plan.osl}
    notes = _txt(r.get("notes")).lower()
    if plan.n_devices > 1 and not plan.per_device and plan.rate_like and re.search(
            r"per[- ]gpu or total|total or per[- ]gpu|per[- ]gpu.{0,40}not stated|ambiguous", notes):
        plan.status = "ambiguous"
        plan.reason = (f"the source does not say whether this throughput is per GPU or for all {plan.n_devices} "
                       "GPUs: predicted as labelled (total), excluded from fitting and from the error statistics")
    plan.n_requests_measured = n_meas or n
    # data-parallel replicas: closed-loop users and offline batches are per replica; a Poisson
    # rate is the whole system's, so its request count (from the rate) is already global
    total = n if plan.workload_kind.startswith("poisson") else n * plan.dp
    plan.n_requests_sim = total
    workload["num_requests"] = total
    if plan.disagg is not None:
        plan.kind, plan.workload_kind = "pipeline", plan.workload_kind + ", disaggregated P/D"
        plan.scenario = _pipeline_scenario(plan, plan.disagg, workload, plan.isl, plan.osl)
        return plan
    client_doc = {"model": plan.model, "device": plan.device, "tp": plan.tp, "pp": plan.pp,
                  "dp": plan.dp // plan.replica_scale,
                  "precision": C.precision_dict(plan.precision),
                  **C.row_parallelism(r.get("notes"), plan.tp, plan.model),   # ep, dp_attention from the notes
                  # analytical base (0.75; calibrations replace it) with the engine's kernel-launch model
                  "efficiency": {**launch_time.engine_launch_efficiency(plan.engine),
                                 **({"decode_launch_us": plan.decode_launch_us} if plan.decode_launch_us else {}),
                                 **({"fp8_block_share": BLOCK_FP8_SHARE_IN_VALIDATE}
                                    if BLOCK_FP8_SHARE_IN_VALIDATE != 1.0
                                    and block_scaled_fp8(r, plan.device, plan.precision) else {}),
                                 **launch_eff[0]},
                  "scheduler": sched}
    if harness_ms > 0:
        client_doc["harness_step_ms"] = harness_ms
    if launch_eff[1]:
        client_doc["harness_no_graphs"] = True
    ep = re.search(r"\bmoe ep\s*=\s*(\d+)", notes)
    if ep and int(ep.group(1)) > 1 and "ep" not in client_doc:   # MoE EP stated by the source (MLPerf configs)
        client_doc["ep"] = int(ep.group(1))
    simulation: dict[str, Any] = {"horizon_s": 1e7, "seed": 0}
    if plan.workload_kind == "poisson, steady state":
        simulation["warmup_s"] = steady.warmup_s
    plan.scenario = {
        "clients": [client_doc],
        "workload": workload,
        "simulation": simulation,
    }
    return plan


# ============================================================================ split
def split_groups(plans: list[RowPlan], test_fraction: float = 0.3, seed: int = 0) -> dict[str, str]:
    """Group -> "train"/"test". Groups are shuffled deterministically (seeded hash of the group
    name) within each metric; groups go to test while that moves the metric's test share closer
    to ``test_fraction``; a metric with a single group keeps it in train."""
    by_metric: dict[str, dict[str, int]] = {}
    for p in plans:
        if p.status != "ok":
            continue
        by_metric.setdefault(p.metric, {}).setdefault(p.group, 0)
        by_metric[p.metric][p.group] += 1
    out: dict[str, str] = {}
    for metric, groups in sorted(by_metric.items()):
        names = sorted(groups, key=lambda g: hashlib.sha256(f"{seed}|{g}".encode()).hexdigest())
        total = sum(groups.values())
        target = test_fraction * total
        test = 0
        for i, g in enumerate(names):
            n = groups[g]
            remaining_train = total - test - n
            if len(groups) > 1 and abs(test + n - target) < abs(test - target) and remaining_train > 0:
                out[g] = "test"
                test += n
            else:
                out.setdefault(g, "train")
    return out


# ============================================================================ predictions
def _points(plans: list[RowPlan]):
    return [row_point(p) for p in plans]


def _note_unfinished(p: RowPlan, summ: dict | None) -> None:
    # requests before the warm-up are not in n_finished (steady-state runs leave them out)
    done = summ.get("n_finished", p.n_requests_sim) + summ.get("n_before_warmup", 0) if summ else 0
    if summ and done < p.n_requests_sim:
        note = f"{int(p.n_requests_sim - done)} simulated requests did not finish"
        if note not in p.reason:
            p.reason = (p.reason + "; " if p.reason else "") + note


def _predict_runs(plans: list[RowPlan], points: list, clients: list) -> tuple[np.ndarray, np.ndarray]:
    """Simulate run rows (clients replace the points' clients); returns (values, steps outside the
    step-correction range)."""
    from .runner import run_points
    if not plans:
        return np.zeros(0), np.zeros(0)
    pts = [dataclasses.replace(pt, client=c, think_s=closed_loop_think_s(p, c) or pt.think_s)
           for p, pt, c in zip(plans, points, clients)]
    logged = [q for q, p in enumerate(plans) if p.itl_per_chunk]   # need the step log (bench_clients)
    plain = [q for q in range(len(plans)) if not plans[q].itl_per_chunk]
    summaries: dict[int, dict] = {}
    if plain:
        res = run_points([pts[q] for q in plain], parallel=len(plain) > 1)
        summaries.update((q, C._run_summary(res, j)) for j, q in enumerate(plain))
    if logged:
        from .bench_clients import simulate_with_chunk_itl
        summaries.update(zip(logged, simulate_with_chunk_itl([pts[q] for q in logged])))
    out = np.full(len(plans), np.nan)
    outside = np.array([float(summaries[q].get("steps_outside_calibration", 0.0)) for q in range(len(plans))])
    for q, p in enumerate(plans):
        s = summaries[q]
        if pts[q].think_s > 0.0 and closed_loop_landing_in_kernel(p):
            s = {**s, LANDED_IN_KERNEL: 1.0}   # closed_loop_step_wait_ms: the kernel has the landing wait
        out[q] = plan_value(p, s) + client_side_ms(p, pts[q].client) + first_wave_ms_term(p, pts[q].client)
        _note_unfinished(p, s)
    return out, outside


def client_side_ms(p: RowPlan, client) -> float:
    """Time a benchmark client measures outside the engine steps, added to a predicted TTFT or
    E2E row (any statistic: a constant shifts the mean and every percentile alike): the client's
    ``efficiency.ttft_overhead_ms``, fitted from low-load TTFT rows (docs/calibration.md). In a
    closed loop it also delays each user's next request: with :data:`CLOSED_LOOP_LANDING_IN_KERNEL`
    (off by default) simulated as the loop's think time for the TTFT and E2E rows
    (:func:`closed_loop_think_s`, where the next prompt lands in the step grid); its effect on the load (about overhead / E2E, under 1 % on the InferenceMAX rows) is left out of
    the throughput and TPOT rows."""
    if not (p.metric.startswith("ttft") or p.metric.startswith("e2e")) or p.loadgen:
        return 0.0   # (LoadGen timestamps tokens inside the harness process: no client stack)
    return float(getattr(client.efficiency, "ttft_overhead_ms", 0.0))


def first_wave_weight(p: RowPlan) -> float:
    """How much of a cold-start delay of the first wave (:func:`first_wave_ms_term`) a closed-loop
    row's statistic carries, 0 for every other row. A closed loop of C users and N prompts sends C
    prompts at t = 0 (benchmark_serving with ``--max-concurrency C --request-rate inf``); a delay D
    of those C requests moves the mean by (C/N) D. For a percentile q (numpy's linear
    interpolation at index q (N - 1) of the sorted values) the C delayed requests are taken as the
    top C (they are, where D exceeds the spread of the others' TTFT): the weight is the share of the
    interpolation that falls on them, clip(q (N - 1) - (N - C - 1), 0, 1) -- 1 for the p99 of
    N = 10 C or 50 C, 0 for the median. E2E: the mean only (E2E percentiles are set by the output
    lengths, not by the first wave)."""
    if p.workload_kind != "closed loop" or p.concurrency <= 0 or p.n_requests_sim <= 0:
        return 0.0
    n = p.n_requests_sim
    c = min(p.concurrency * max(p.dp, 1), n)    # users of all replicas; N counts every replica's prompts
    key = p.value_key
    if key in ("ttft_mean_ms", "e2e_mean_ms"):
        return c / n
    m = re.fullmatch(r"ttft_p(\d+)_ms", key)
    if not m:
        return 0.0
    q = int(m.group(1)) / 100.0
    return float(min(max(q * (n - 1) - (n - c - 1), 0.0), 1.0))


def first_wave_ms_term(p: RowPlan, client) -> float:
    """The client's ``efficiency.first_wave_ms`` (a one-time delay of the C requests a cold closed
    loop sends at t = 0) as it enters this row's statistic: ``first_wave_weight(p)`` x D. Nothing
    else moves: in a closed loop the stall shifts every later step by D, which changes no other
    request's TTFT or TPOT (throughput would drop by D / run time, < 3 % on the fitted rows; not
    applied)."""
    d = float(getattr(client.efficiency, "first_wave_ms", 0.0))
    return d * first_wave_weight(p) if d > 0 else 0.0


# the least number of closed-loop p99 TTFT rows an entry needs for its own first-wave delay; with
# fewer it takes its parent's (engine pooled over devices, then the current engines, then 0)
FIRST_WAVE_MIN_ROWS = 3


def first_wave_rows(plans) -> list[RowPlan]:
    """Rows that identify the first-wave delay: closed-loop TTFT percentiles that lie wholly in the
    first wave (weight 1; the p99 of 10 x C prompts)."""
    return [p for p in plans if p.status == "ok" and p.kind == "run" and p.metric.startswith("ttft_p")
            and first_wave_weight(p) >= 1.0]


def fit_first_wave(cal: C.Calibration, plans, predicted: Mapping[str, float]) -> dict:
    """Set ``first_wave_ms`` of every efficiency entry of ``cal`` from closed-loop tail rows
    (:func:`first_wave_rows`) and their predictions with that calibration (first-wave delay 0):
    per row, D = measured - predicted; an entry takes the median D over the rows it covers (its
    device and engine, ``*`` = any, ``current`` = the current engines), clipped at 0, when it covers
    at least FIRST_WAVE_MIN_ROWS of them, else its parent's value ((*, engine) for (device,
    engine); (*, current) for (device, current) and (device, *); 0 at the root). Returns
    {(device, engine): value}."""
    from .calibration_store import CURRENT_ENGINE_FAMILIES, POOLED_ENGINE
    d_rows = [(p.device, p.engine, p.measured - predicted[p.id]) for p in plans
              if p.id in predicted and np.isfinite(predicted[p.id])]

    def covers(dev, eng, row_dev, row_eng) -> bool:
        if dev != "*" and dev != row_dev:
            return False
        if eng == "*":
            return True
        if eng == POOLED_ENGINE:
            return row_eng in CURRENT_ENGINE_FAMILIES
        return eng == row_eng

    def own(dev, eng):
        v = [d for rd, re_, d in d_rows if covers(dev, eng, rd, re_)]
        return max(float(np.median(v)), 0.0) if len(v) >= FIRST_WAVE_MIN_ROWS else None

    def value(dev, eng) -> float:
        chain = [(dev, eng), ("*", eng), ("*", POOLED_ENGINE), ("*", "*")] if eng not in ("*", POOLED_ENGINE) \
            else [(dev, eng), ("*", POOLED_ENGINE), ("*", "*")]
        for k in dict.fromkeys(chain):
            v = own(*k)
            if v is not None:
                return v
        return 0.0

    out = {}
    for key in list(cal.efficiencies):
        d = value(*key)
        e = cal.efficiencies[key]
        cal.efficiencies[key] = dataclasses.replace(e, first_wave_ms=d) if hasattr(e, "as_efficiency") \
            else {**e, "first_wave_ms": d}
        out[key] = d
    return out


def _estimated_lengths(p: RowPlan) -> bool:
    """True when the row's dataset says its dominant lengths are estimates (not to be fitted)."""
    if not p.dataset:
        return False
    from . import datasets as D
    return D.get_dataset(p.dataset).estimated_lengths


def _pipeline_summary(spec) -> dict:
    from .scenario import simulate
    ds = simulate(spec)
    return {k: float(ds[k]) for k in ds.data_vars if ds[k].ndim == 0}


def _predict_pipelines(plans: list[RowPlan], cal_client=None) -> tuple[dict, dict]:
    """Simulate the disaggregated (pipeline) rows, one simulation per distinct scenario (several
    metrics of one run share it); ``cal_client(base, plan)`` calibrates each pool's client.
    Returns (id -> value, id -> calibration used)."""
    import json
    from .specs import parse_scenario
    pred, used, done = {}, {}, {}
    for p in plans:
        key = json.dumps(p.scenario, sort_keys=True, default=str)
        if key not in done:
            spec = parse_scenario(p.scenario)
            what = []
            if cal_client is not None:
                clients = []
                for c in spec.clients:  # each pool's own configuration (tp) picks its correction
                    cc, u = cal_client(c, dataclasses.replace(p, tp=c.tp, pp=c.pp))
                    clients.append(cc)
                    what.append(f"{c.name}: {u}")
                spec = spec.model_copy(update={"clients": clients})
            done[key] = (_pipeline_summary(spec), "; ".join(what), spec)
        summ, u, spec = done[key]
        decode = next((c for c in spec.clients if c.name == "decode"), spec.clients[-1])
        pred[p.id] = plan_value(p, summ) + disagg_first_token_ms(p, summ, decode, spec.network.default_link) \
            + disagg_client_terms_ms(p, decode)
        used[p.id] = u
        _note_unfinished(p, summ)
    return pred, used


def disagg_first_token_ms(p: RowPlan, summary: Mapping, decode_client, link) -> float:
    """Time from the end of a disaggregated request's prefill (where the simulated pipeline stamps
    its first token) to the first token the user receives, which the decode server streams: the
    prompt's KV crosses the link (isl x the model's KV bytes per token at the link's bandwidth x
    efficiency, plus its latency; unloaded), the request waits for the decode client's next step
    boundary (uniform over one step: half a step for the mean and the median, q steps for the
    q-quantile) and one more step passes before the token is out (TensorRT-LLM's generation server
    answers after its first generation step; SGLang's decode server streams the prebuilt batch's
    token one iteration late under its default overlap scheduler). One decode step = the run's
    mean TPOT. TTFT rows only (the simulated E2E already holds the transfer and the decode steps);
    0 for other rows and with DISAGG_FIRST_TOKEN_FROM_DECODE off. Sources: docs/ttft-under-load.md,
    "Disaggregated P/D rows"."""
    if not DISAGG_FIRST_TOKEN_FROM_DECODE or p.disagg is None or not p.metric.startswith("ttft"):
        return 0.0
    q = uniform_wait_share(p)
    step_ms = float(summary.get("tpot_mean_ms", 0.0))
    step_ms = step_ms if np.isfinite(step_ms) else 0.0
    bw_Bps = float(link.bandwidth_GBps) * 1e9 * float(link.efficiency)
    kv_ms = p.isl * float(decode_client.kv_bytes_per_token()) / bw_Bps * 1e3 + float(link.latency_us) * 1e-3
    return kv_ms + (q + 1.0) * step_ms


def disagg_client_terms_ms(p: RowPlan, decode_client) -> float:
    """What a disaggregated row's TTFT / E2E statistic gets outside the simulated pipeline, as an
    aggregated run row does (:func:`client_side_ms` + :func:`first_wave_ms_term`, each behind its
    switch, DISAGG_CLIENT_OVERHEAD_ON and DISAGG_FIRST_WAVE_ON), from the decode
    pool's client: the benchmark client's stream comes from the decode server (SGLang's router and
    Dynamo's frontend forward the decode server's stream). The first-wave weight is that of the
    row's closed loop (its ``workload_kind`` without the ", disaggregated P/D" suffix)."""
    if p.disagg is None:
        return 0.0
    base = dataclasses.replace(p, workload_kind=p.workload_kind.split(", disaggregated")[0])
    return (client_side_ms(base, decode_client) if DISAGG_CLIENT_OVERHEAD_ON else 0.0) \
        + (first_wave_ms_term(base, decode_client) if DISAGG_FIRST_WAVE_ON else 0.0)


def _live_pipelines(pipes: list[RowPlan]) -> list[RowPlan]:
    """Pipeline rows whose scenario validates; the others become unsupported with the reason."""
    from .specs import parse_scenario
    keep = []
    for p in pipes:
        try:
            parse_scenario(p.scenario)
            keep.append(p)
        except Exception as exc:  # a row's own configuration problem: report, keep going
            p.unsupported(f"scenario not representable: {str(exc).splitlines()[-1].strip()[:200]}")
    return keep


def _predict_steps(plans: list[RowPlan], clients: list) -> tuple[np.ndarray, np.ndarray]:
    from .stepmodel import step_latency
    out = np.full(len(plans), np.nan)
    flag = np.zeros(len(plans))
    for i, (p, c) in enumerate(zip(plans, clients)):
        st = step_latency(c, prefill=p.prefill, decode=p.decode)
        out[i] = st.total_ms
        flag[i] = st.breakdown.get("outside_calibrated_range", 0.0)
    return out, flag


def uniform_wait_share(p: RowPlan) -> float:
    """The share of a wait uniform over 0..W that a TTFT / E2E row's statistic carries: 1/2 for the
    mean and the median, q for a q-quantile row (p90, p99)."""
    stat = p.value_key.split("_")[1]      # ttft_mean_ms -> mean, e2e_p99_ms -> p99
    return int(stat[1:]) / 100.0 if stat.startswith("p") and stat[1:].isdigit() else 0.5


def multistep_admission_wait_ms(p: RowPlan, summary: Mapping) -> float:
    """Extra time to first token under vLLM multi-step scheduling (``--num-scheduler-steps N``): a
    request that arrives while the running batch is inside a group of N decode steps is admitted
    only when the group ends, a wait uniform over 0..N step times. TTFT and E2E rows get its mean
    (N/2 steps; the p-th percentile for p90/p99 rows), one step = the run's mean TPOT."""
    if p.scheduler_steps <= 1 or not p.metric.startswith(("ttft", "e2e")):
        return 0.0
    q = uniform_wait_share(p)
    return q * p.scheduler_steps * float(summary["tpot_mean_ms"])


def recv_poll_wait_ms(p: RowPlan, summary: Mapping) -> float:
    """Extra time to first token under SGLang's ``--scheduler-recv-interval K``: the scheduler
    reads new requests only once every K decode iterations (and right after a prefill), so a
    request that arrives while the engine decodes waits for the next poll, uniform over 0..K
    iterations of ``scheduler_steps`` decode steps each, where the simulation (which admits at the
    next step boundary) has 0..1 of them. TTFT and E2E rows get the mean of the difference, (K - 1)/2
    iterations (the p-th percentile, p (K - 1), for p90/p99 rows); one decode step = the run's mean
    TPOT. Offline and static-batch rows are unaffected: their requests are all there at the first
    poll. Source: github:sgl-project/sglang python/sglang/srt/managers/scheduler_recv_skipper.py
    (SchedulerRecvSkipper: +1 per decode iteration, +1000 after any other forward mode, poll at
    >= K), read by Scheduler.recv_requests."""
    if p.recv_interval <= 1 or not p.metric.startswith(("ttft", "e2e")) \
            or p.workload_kind in ("offline", "static batch"):
        return 0.0
    q = uniform_wait_share(p)
    return q * (p.recv_interval - 1) * max(p.scheduler_steps, 1) * float(summary["tpot_mean_ms"])


# A closed loop's next request lands at a random phase of a decode step (and one step later still
# under async / overlap scheduling): validate.closed_loop_step_wait_ms; False leaves closed-loop rows
# as the simulation admits them, at the step boundary where the user's previous request ended
# (docs/ttft-under-load.md, "Closed loops: the re-issued request waits for the step in flight")
CLOSED_LOOP_STEP_WAIT_ON = True
# steps an engine that schedules one step ahead adds to that wait (1: the batch of step n + 1 is
# fixed while step n runs; 0 keeps the landing wait alone, for A/B runs: tools/validate_variant.py)
SCHEDULE_AHEAD_STEPS = 1.0


# The landing wait of a closed loop's next request simulated by the kernel instead of added as 1/2
# step: the user's next prompt reaches the engine the client-side time after its last token
# (validate.closed_loop_think_s), lands mid-step and waits there for the step boundary -- long
# (prefill) steps are landed in more often and requests that land during them queue behind each
# other, which a constant 1/2 mean step misses (docs/ttft-under-load.md, "Closed loops in continuous
# time, session 13"). Measured held out (InferenceMAX fold: vLLM TTFT 12.1 -> 11.7 %, ATOM 29.2 -> 30.3 %,
# the fold's TTFT 18.0 -> 18.2 %): not an improvement, so OFF (False: the session-12 post-hoc 1/2 step).
CLOSED_LOOP_LANDING_IN_KERNEL = False
# summary key _predict_runs sets on runs simulated with that think time
LANDED_IN_KERNEL = "closed_loop_landed_in_kernel"


def closed_loop_landing_in_kernel(p: RowPlan) -> bool:
    """True for the rows whose landing wait the kernel simulates (:data:`CLOSED_LOOP_LANDING_IN_KERNEL`):
    the TTFT and E2E rows of an HTTP closed loop that :func:`closed_loop_step_wait_ms` gives a
    landing wait (not multi-step rows, whose step-grid wait has the landing already)."""
    return CLOSED_LOOP_LANDING_IN_KERNEL and CLOSED_LOOP_STEP_WAIT_ON and p.workload_kind == "closed loop" \
        and not p.loadgen and p.disagg is None and p.scheduler_steps <= 1 and p.metric.startswith(("ttft", "e2e"))


def closed_loop_think_s(p: RowPlan, client) -> float:
    """Seconds from the engine step that emits a closed-loop user's last token to its next prompt
    reaching the engine, for :func:`closed_loop_landing_in_kernel` rows (else 0): the last token
    goes out through the front-end and the client (output processing, streaming), the client sends
    the next prompt at once (think time 0), the server takes it in (HTTP, template, tokeniser) --
    the two halves of the client-side time the client measures in every TTFT, the fitted
    ``efficiency.ttft_overhead_ms`` (:func:`client_side_ms`). Simulated as the closed loop's think
    time, so the prompt lands at its phase of the step then running. Only the TTFT / E2E rows'
    runs get it (it lengthens a user's cycle by overhead / E2E, < 1 % of throughput on the
    InferenceMAX rows; the throughput and TPOT rows keep the session-12 simulation)."""
    if not closed_loop_landing_in_kernel(p):
        return 0.0
    return max(float(getattr(client.efficiency, "ttft_overhead_ms", 0.0)), 0.0) / 1e3


def closed_loop_step_wait_ms(p: RowPlan, summary: Mapping) -> float:
    """Extra time to first token of a closed-loop row served over HTTP, one step = the run's
    simulated mean TPOT. The simulation re-issues a user's next request at the step boundary where
    the previous one finished and prefills it in the very next step. A real client receives the last
    token, sends the next prompt, the server tokenises it (the fixed ``ttft_overhead_ms``), and
    meanwhile the engine keeps stepping: the request lands at a uniform phase of a step and waits for
    it to end (1/2 step mean, q for the q-quantile); an engine that forms step n + 1 while step n runs
    (``RowPlan.schedule_ahead``: vLLM --async-scheduling, SGLang's and TensorRT-LLM's overlap
    schedulers) first schedules it in step n + 2, :data:`SCHEDULE_AHEAD_STEPS` more. Where the
    kernel simulated the landing (:func:`closed_loop_think_s`, ``LANDED_IN_KERNEL`` in the summary:
    the prompt arrives mid-step and waits for the boundary, in long prefill steps more often) only
    the step ahead is added.
    TTFT and E2E rows; the C prompts a closed loop sends at t = 0 find the engine idle and do not
    wait, so the term is weighted by 1 - :func:`first_wave_weight`. Rows that already carry a wait
    for the step grid -- vLLM multi-step or SGLang continuous decode steps (scheduler_steps > 1,
    :func:`multistep_admission_wait_ms`) -- keep only the scheduling-ahead step. Not for MLPerf
    LoadGen (no HTTP client) or disaggregated rows. Like the other waits it does not feed back on
    the load (a user's next request comes later by the wait: about wait / E2E of the throughput)."""
    if not CLOSED_LOOP_STEP_WAIT_ON or p.workload_kind != "closed loop" or p.loadgen or p.disagg is not None \
            or not p.metric.startswith(("ttft", "e2e")):
        return 0.0
    # multi-step rows have the landing already; so has a run whose kernel simulated it (think time)
    landed = p.scheduler_steps > 1 or float(summary.get(LANDED_IN_KERNEL, 0.0)) > 0.0
    landing = 0.0 if landed else uniform_wait_share(p)
    steps = landing + (SCHEDULE_AHEAD_STEPS if p.schedule_ahead else 0.0)
    weight = 1.0 - first_wave_weight(p)
    tpot = float(summary.get("tpot_mean_ms", 0.0))
    if not (weight > 0.0 and tpot > 0.0 and math.isfinite(tpot)):
        return 0.0
    return weight * steps * tpot


def adp_balance_wait_iters(arrivals_per_iter: float, ranks: int, timeout_iters: int, batching_wait_iters: int,
                           q: float | None = None) -> float:
    """Iterations a new context request waits under TensorRT-LLM's attention-DP balancing (mean, or
    the q-quantile). ``PyExecutor._balance_adp_requests`` (github:NVIDIA/TensorRT-LLM
    tensorrt_llm/_torch/pyexecutor/py_executor.py; docs/source/blogs/tech_blog/
    blog10_ADP_Balance_Strategy.md): while some rank has no context request, every rank holds its
    context requests and counts iterations; at ``timeout_iters`` all are released. When every rank
    has one, they wait ``batching_wait_iters`` more instead. So the holding windows last L
    iterations: L = timeout_iters while fewer than ``ranks`` requests arrive in one (r L < ranks,
    r = arrivals per iteration), else batching_wait_iters. The request that opens a window waits
    L, the r L that arrive during it wait uniformly 0..L: mean (L + r L^2/2) / (1 + r L); the
    quantile is L above the share 1 - 1/(1 + r L) of uniform waits."""
    r = max(float(arrivals_per_iter), 0.0)
    window = float(timeout_iters) if r * timeout_iters < ranks else float(batching_wait_iters)
    if window <= 0:
        return 0.0
    opener = 1.0 / (1.0 + r * window)      # share of requests that open a window (wait all of it)
    if q is None:
        return (window + r * window * window / 2.0) * opener
    return window if q >= 1.0 - opener else q * window / (1.0 - opener)


# Closed-loop and served rows of trtllm-serve with attention_dp_config.enable_balance (the
# InferenceMAX gpt-oss-120b B200 attention-DP runs) wait in the balancing chain
# (adp_balance_chain_waits); False leaves them without the wait (docs/ttft-under-load.md,
# "Attention-DP balancing in closed loops")
ADP_BALANCE_CHAIN_ON = True


def adp_balance_chain_waits(arrivals_per_iter: float, ranks: int, timeout_iters: int,
                            batching_wait_iters: int) -> np.ndarray:
    """Distribution of the iterations a new context request waits under TensorRT-LLM's attention-DP
    balancing, as weights over waits 0 .. timeout_iters + batching_wait_iters (expected arrivals of
    one renewal cycle with that wait; normalise to get the share of requests).

    The counters of ``PyExecutor._balance_adp_requests`` (github:NVIDIA/TensorRT-LLM
    tensorrt_llm/_torch/pyexecutor/py_executor.py, called by ``_schedule`` every iteration under
    attention DP with ``enable_balance``): in an iteration where some rank has no context request,
    every rank holds its context requests and the waiting count goes up by one -- also in iterations
    where no rank has one, so the count runs freely -- and at ``timeout_iters`` it is reset and the
    held requests are released. In an iteration where every rank has one (and every rank is
    decoding) the waiting count is reset and the batching count goes up instead; they are released
    in the iteration after it reached ``batching_wait_iters``. So a cycle starts with both counts at
    0 and ends with a release at iteration T (timeout) or at tau + B, tau the first iteration in
    which every rank holds a request.

    Arrivals: Poisson with ``arrivals_per_iter`` per iteration, each to one of the ``ranks`` ranks
    at random (a closed loop's new request goes to the least-loaded rank, the one whose request
    just finished, a random one), so each rank independently receives Poisson(lambda/a): an
    uncovered rank is covered in an iteration with p = 1 - exp(-lambda/a), bringing on average
    lambda/a / p requests (a zero-truncated Poisson); a covered rank brings lambda/a. The chain runs
    over (iteration t of the cycle, ranks covered k) and carries the expected held requests by
    arrival iteration, so the release time is known for each: exact, in O(T a^2 T)."""
    a = int(ranks)
    T = max(int(timeout_iters), 1)
    B = max(int(batching_wait_iters), 0)
    out = np.zeros(T + B + 1)
    lam = float(arrivals_per_iter)
    if not lam > 0.0 or a <= 1:
        out[0] = 1.0     # (one rank has a context request whenever any rank has one: no wait)
        return out
    m = lam / a
    p = -math.expm1(-m)
    if not p > 0.0:
        out[0] = 1.0
        return out
    mu1 = m / p
    prob = np.zeros(a)
    prob[0] = 1.0
    held = np.zeros((a, T + 1))     # held[k, s]: E[requests that arrived at s, still held; k ranks covered]
    for t in range(1, T + 1):
        nprob = np.zeros(a)
        nheld = np.zeros((a, T + 1))
        for k in range(a):
            if prob[k] == 0.0:
                continue
            u = a - k
            for j in range(u + 1):
                tr = math.comb(u, j) * p ** j * (1.0 - p) ** (u - j)
                if tr == 0.0:
                    continue
                kept = held[k] * tr
                new = prob[k] * tr * (k * m + j * mu1)      # arrivals of iteration t on this path
                if k + j == a:   # every rank holds one: released at t + B
                    out[B + t - np.arange(1, t)] += kept[1:t]
                    out[B] += new
                    for i in range(1, B + 1):             # arrivals during the batching wait
                        out[B - i] += prob[k] * tr * lam
                else:
                    nprob[k + j] += prob[k] * tr
                    nheld[k + j] += kept
                    nheld[k + j, t] += new
        prob, held = nprob, nheld
    for k in range(a):            # still uncovered at T: the timeout releases everyone held
        out[T - np.arange(1, T + 1)] += held[k, 1:T + 1]
    return out


def adp_chain_wait_iters(arrivals_per_iter: float, ranks: int, timeout_iters: int, batching_wait_iters: int,
                         q: float | None = None) -> float:
    """Mean (q None) or q-quantile (the least wait whose cumulative share reaches q) of
    :func:`adp_balance_chain_waits`, in iterations."""
    w = adp_balance_chain_waits(arrivals_per_iter, ranks, timeout_iters, batching_wait_iters)
    tot = float(w.sum())
    d = np.arange(len(w))
    if q is None:
        return float((d * w).sum() / tot)
    return float(np.searchsorted(np.cumsum(w) / tot, min(max(q, 0.0), 1.0) - 1e-12))


def adp_balance_wait_ms(p: RowPlan, summary: Mapping) -> float:
    """Extra time to first token of a row whose TensorRT-LLM engine runs attention-DP balancing,
    one iteration = the run's simulated mean TPOT; TTFT and E2E rows (mean: the mean wait; p-th
    percentile: its percentile).

    * Poisson rows whose MLPerf harness config enables it (``adp_balancing_enable``; the
      DeepSeek-R1 Server configs): :func:`adp_balance_wait_iters` at the row's arrival rate per engine.
    * trtllm-serve rows with ``attention_dp_config.enable_balance`` (4th field "chain"; the
      InferenceMAX gpt-oss B200 runs): :func:`adp_chain_wait_iters` at the simulated request
      rate per engine (closed loops: the rate the C users reach). In a closed loop the C prompts of
      t = 0 do not wait (no rank is decoding yet, so the balancing releases them at once): the mean
      is weighted by the share of later requests, a percentile by 1 - :func:`first_wave_weight`
      (the p99 of a 10 x C run is a first-wave request)."""
    if not p.adp_balance or not p.metric.startswith(("ttft", "e2e")):
        return 0.0
    chain = len(p.adp_balance) > 3 and p.adp_balance[3] == "chain"
    if not (p.workload_kind.startswith("poisson") or (chain and p.workload_kind == "closed loop")):
        return 0.0
    stat = p.value_key.split("_")[1]
    q = None if stat == "mean" else int(stat[1:]) / 100.0
    iter_ms = float(summary["tpot_mean_ms"])
    ranks, timeout, batching = p.adp_balance[:3]
    engines = max(p.dp // max(p.replica_scale, 1), 1)
    if p.workload_kind == "closed loop":   # (chain rows only, by the test above)
        rate_per_engine = float(summary.get("request_throughput_rps", 0.0)) / engines
    else:
        rate_per_engine = float(p.scenario.get("workload", {}).get("arrival", {}).get("rate_rps", 0.0)) / engines
    if not chain:
        return adp_balance_wait_iters(rate_per_engine * iter_ms / 1e3, ranks, timeout, batching, q) * iter_ms
    weight = 1.0 - first_wave_weight(p) if p.workload_kind == "closed loop" else 1.0
    if not (rate_per_engine > 0.0 and iter_ms > 0.0) or weight <= 0.0:
        return 0.0
    return weight * adp_chain_wait_iters(rate_per_engine * iter_ms / 1e3, ranks, timeout, batching, q) * iter_ms


def plan_value(p: RowPlan, summary: Mapping) -> float:
    """The row's metric from a run summary: per device when the metric says so; $ per 1M tokens
    = price per device-hour x devices / (tokens/s x 3600) x 1e6."""
    key = p.value_key
    if p.itl_per_chunk and _chunk_itl_keys()[key] in summary:
        # pooled per-chunk gaps (bench_clients); a run simulated without step log (the fit's
        # reference pass, where these rows are not fitted) has only the per-request statistic
        key = _chunk_itl_keys()[key]
    v = float(summary[key]) * p.tokens_per_chunk + multistep_admission_wait_ms(p, summary) \
        + recv_poll_wait_ms(p, summary) + frontend_wait_term_ms(p) + adp_balance_wait_ms(p, summary) \
        + closed_loop_step_wait_ms(p, summary) + prompt_intake_term_ms(p) + chat_preprocess_term_ms(p)
    if p.value_key in REPLICA_RATE_KEYS:   # one simulated replica stands for replica_scale of them
        v *= p.replica_scale
    if p.metric in COST_METRICS:
        return p.price_usd_per_hour * p.n_devices / (v * 3600.0) * 1e6 if v > 0 else float("inf")
    return v / p.n_devices if p.per_device else v


def _chunk_itl_keys() -> dict:
    from .bench_clients import CHUNK_ITL_KEYS
    return CHUNK_ITL_KEYS


def low_load_ttft(p: RowPlan) -> bool:
    """True for a TTFT row the efficiency fit re-costs through its prefill steps: mean or median
    TTFT of a static batch or of a closed loop of at most TTFT_FIT_MAX_CONCURRENCY users."""
    return p.metric in TTFT_FIT_METRICS and (
        p.workload_kind == "static batch"
        or (p.workload_kind == "closed loop" and 0 < p.concurrency <= TTFT_FIT_MAX_CONCURRENCY))


def run_key_of(r: Mapping) -> str:
    """The benchmark run a row is one metric of: its RUN_KEY_FIELDS, joined."""
    return "|".join(_txt(r.get(k)) for k in RUN_KEY_FIELDS)


def ttft_fit_rows(plans) -> set[str]:
    """Ids of the TTFT rows the efficiency fit uses: the low-load ones (low_load_ttft), with a
    run's mean TTFT dropped where the same run also has a usable median (TTFT_MEAN_METRICS)."""
    low = [p for p in plans if p.status == "ok" and low_load_ttft(p)]
    with_median = {p.run_key for p in low if p.metric == "ttft_p50_ms"}
    return {p.id for p in low if not (p.metric in TTFT_MEAN_METRICS and p.run_key in with_median)}


def _run_observation(p: RowPlan, point) -> C.RunObservation:
    def value_of(s, p=p):
        return plan_value(p, s)
    import json
    return C.RunObservation(id=p.id, device=p.device, engine=p.engine, point=point, measured=p.measured,
                            value_of=value_of, rate_like=p.rate_like, group=p.group, isl=p.isl, osl=p.osl,
                            share_key=json.dumps(p.scenario, sort_keys=True, default=str),
                            prefill_steps=low_load_ttft(p), source=p.source_doc,
                            wait_of=lambda s, p=p: closed_loop_step_wait_ms(p, s),
                            fixed_ms=prompt_intake_term_ms(p) + chat_preprocess_term_ms(p))


def _step_observation(p: RowPlan) -> C.StepObservation:
    return C.StepObservation(model=p.model, device=p.device, tp=p.tp, pp=p.pp, precision=p.precision,
                             engine=p.engine, prefill=p.prefill, decode=p.decode, time_s=p.measured / 1e3,
                             id=p.id, group=p.group, source=p.source_doc)


# ============================================================================ statistics
def _stats(err: pd.Series) -> tuple[int, float, float]:
    e = err.dropna().abs()
    if len(e) == 0:
        return 0, float("nan"), float("nan")
    return len(e), float(np.median(e)), float(np.percentile(e, 90))


EVAL_SPLITS = ("test", "cv", "shipped", "file")   # rows whose calibrated error is an out-of-fit estimate


def error_table(rep: pd.DataFrame, by: str) -> pd.DataFrame:
    """Per value of ``by``: n and median / p90 absolute relative error of the analytical model (all
    rows and test rows) and of the calibrated model (test rows, and train rows for reference)."""
    ok = rep[rep.status == "ok"]
    rows = []
    for key, g in ok.groupby(by, sort=True):
        n_all, med_u, p90_u = _stats(g.rel_error)
        t = g[g.split.isin(EVAL_SPLITS)]
        tr = g[g.split == "train"]
        n_t, med_ut, p90_ut = _stats(t.rel_error)
        _, med_ct, p90_ct = _stats(t.rel_error_calibrated) if "rel_error_calibrated" in g else (0, np.nan, np.nan)
        n_tr, med_ctr, p90_ctr = _stats(tr.rel_error_calibrated) if "rel_error_calibrated" in g else (0, np.nan, np.nan)
        rows.append({by: key, "n": n_all, "uncal_median": med_u, "uncal_p90": p90_u,
                     "n_test": n_t, "uncal_test_median": med_ut, "uncal_test_p90": p90_ut,
                     "cal_test_median": med_ct, "cal_test_p90": p90_ct,
                     "n_train": n_tr, "cal_train_median": med_ctr, "cal_train_p90": p90_ctr})
    return pd.DataFrame(rows)


def _pct(x) -> str:
    return "—" if x is None or not np.isfinite(x) else f"{100 * x:.1f} %"


def _md_table(df: pd.DataFrame, by: str) -> str:
    head = (f"| {by} | n | analytical median | analytical p90 | n test | analytical test median | "
            "analytical test p90 | calibrated test median | calibrated test p90 | calibrated train median |")
    lines = [head, "|" + "---|" * 10]
    for _, r in df.iterrows():
        lines.append(f"| {r[by]} | {r.n} | {_pct(r.uncal_median)} | {_pct(r.uncal_p90)} | {r.n_test} | "
                     f"{_pct(r.uncal_test_median)} | {_pct(r.uncal_test_p90)} | {_pct(r.cal_test_median)} | "
                     f"{_pct(r.cal_test_p90)} | {_pct(r.cal_train_median)} |")
    return "\n".join(lines)


# ============================================================================ main entry
CALIBRATION_MODES = ("shipped", "fit", "none")
CV_MODES = ("source", "document")


def read_measurements(paths) -> pd.DataFrame:
    """One table from one or several measurement CSVs (columns of ../shared/calibration/measurements.csv,
    optional ``group``, ``dataset``, ``engine_family``, ``price_usd_per_hour``); ids are made unique
    by prefixing the file stem when files collide."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    frames = []
    for path in paths:
        p = Path(path)
        if not p.exists():
            raise C.CalibrationError(f"measurements file {str(path)!r} not found")
        df = pd.read_csv(p)
        if "metric" not in df.columns or "value" not in df.columns:
            raise C.CalibrationError(f"{path}: needs at least the columns metric and value")
        if "id" not in df.columns:
            df["id"] = [f"row{i + 1}" for i in range(len(df))]
        df["id"] = df["id"].astype(str)
        df["measurements_file"] = str(path)
        frames.append(df)
    df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    if df["id"].duplicated().any():
        df["id"] = [f"{Path(f).stem}:{i}" for f, i in zip(df["measurements_file"], df["id"])]
    return df


def _resolve_mode(calibrate: bool, calibration) -> tuple[str, Path | None]:
    """(mode, calibration file) from the ``calibration`` argument: shipped | fit | none | a path."""
    if calibration is None:
        return ("fit" if calibrate else "none"), None
    c = str(calibration)
    if c in ("fit", "none"):
        return c, None
    if c == "shipped":
        return "shipped", C.calibration_path()
    p = Path(c).expanduser()
    if not p.exists():
        raise C.CalibrationError(f"--calibration {c!r}: not one of {', '.join(CALIBRATION_MODES)} and no such file")
    return "file", p


def _live_points(runs: list[RowPlan]) -> tuple[list[RowPlan], list]:
    """Scenario points of the run rows; a row whose scenario does not validate becomes unsupported."""
    keep, pts = [], []
    for p in runs:
        try:
            pts.append(row_point(p))
            keep.append(p)
        except Exception as exc:  # a row's own configuration problem: report, keep going
            p.unsupported(f"scenario not representable: {str(exc).splitlines()[-1].strip()[:200]}")
    return keep, pts


def _stored_client(base, p: RowPlan, path: Path) -> tuple[Any, str]:
    """What a user gets from a stored calibration for this row's client: the (device, engine)
    efficiency with its fallbacks (no engine -> the pooled current engines) and the step
    correction of exactly this configuration."""
    cal = C.load_calibration(path)
    eff, used = cal.efficiency_for(p.device, p.engine)
    corr = cal.corrections.get(p.client_key)
    if eff is None and corr is None:
        return base, "default"
    return C.with_efficiency(base, eff, corr, source=f"{path.name} [{used}]"), used + ("+correction" if corr else "")


# vLLM's MXFP4 expert weights on Hopper take more memory than their 4.25 bits per value (session 16,
# branch fid-gsttft; docs/ttft-under-load.md "vLLM's padded MXFP4 experts on Hopper"). vLLM's Mxfp4MoEMethod
# pads each expert's intermediate size per partition up to a multiple of 256 for its Hopper kernels
# (github:vllm-project/vllm vllm/model_executor/layers/quantization/mxfp4.py, create_weights:
# ``intermediate_size_per_partition_after_pad = round_up(intermediate_size_per_partition, 256)``; gpt-oss's
# 2,880 -> 3,072, x 1.067). Check against a published log, outside the validation data: gpt-oss-120b on
# one H100 "Model loading took 64.38 GiB" (github:vllm-project/vllm#33155, a run that fitted on one H100
# with v0.11.2); the catalog's unpadded weights are 60.69 GiB, padded 64.48 GiB. vLLM's KV cache is what
# gpu_memory_utilization leaves after the weights (engine_defaults), so the padding comes out of the KV
# pool: on one H100 9.8 -> 6.0 GiB, where GPUStack's 1,000-prompt ShareGPT bursts of gpt-oss-120b at TP 1
# are KV-bound (TTFT measured 24 s, predicted 7.7-8.2 s). At prediction only (the predicting client's
# reserved memory, as with_predict_floor does for its other terms), so no fold's fit moves. 256 is vLLM's
# alignment, nothing fitted. OFF: held out (--cv-only gpustack) it moves the 63 rows of gpt-oss-120b on one
# H100 the right way on median (TTFT 58.0 -> 33.5 %, TPOT 45.0 -> 26.7 %) but no TTFT row crosses 15 % net,
# 8 more TPOT rows go above it (the KV-bound ShareGPT TPOT, +6..+9 % -> -22..-29 %) and the fold's all-rows
# median goes 20.41 -> 20.53 %.
MXFP4_PAD_AT_PREDICT = False
MXFP4_PAD_ALIGN = 256


def mxfp4_pad_GiB(client, p: RowPlan) -> float:
    """GiB per device that vLLM's padding of MXFP4 expert weights on Hopper (:data:`MXFP4_PAD_AT_PREDICT`)
    adds to the weights of ``client`` for row ``p``: the expert bytes per device x (the intermediate size
    per partition rounded up to :data:`MXFP4_PAD_ALIGN`, over itself, minus 1); 0 for other rows."""
    if not MXFP4_PAD_AT_PREDICT or p.engine != "vllm" or not p.device.startswith(HOPPER_DEVICES):
        return 0.0
    from .specs import DTYPE_BYTES
    m = client.model
    if not m.is_moe or client.precision.expert_weights != "mxfp4":
        return 0.0
    part = m.expert_ffn_dim / max(client.tp, 1)
    if part != int(part):
        return 0.0
    padded = math.ceil(part / MXFP4_PAD_ALIGN) * MXFP4_PAD_ALIGN
    expert_bytes = m.num_moe_layers * m.num_experts * m.ffn_mats * m.hidden_size * part * DTYPE_BYTES["mxfp4"]
    return expert_bytes * (padded / part - 1.0) / 2**30


def with_mxfp4_pad(client, p: RowPlan):
    """``client`` with :func:`mxfp4_pad_GiB` added to its scheduler's reserved memory (out of the KV pool)."""
    pad = mxfp4_pad_GiB(client, p)
    if pad <= 0.0:
        return client
    s = client.scheduler
    return client.model_copy(update={"scheduler": s.model_copy(update={"reserved_memory_GiB": s.reserved_memory_GiB + pad})})


def with_predict_floor(client, p: RowPlan):
    """``client`` with the row's prediction-only launch-time floor (:data:`MLPERF_LAUNCH_FLOOR_AT_PREDICT`,
    ``p.predict_floor``) added to its efficiency, its attention-kernel share (``p.attention_share``,
    :data:`SINK_ATTENTION_TRITON_SHARE`) and vLLM's MXFP4 expert padding on Hopper out of its KV pool
    (:func:`with_mxfp4_pad`), unchanged for a row without any."""
    if p.attention_share != 1.0:   # SINK_ATTENTION_TRITON_SHARE: the engine's slower attention kernel
        client = client.model_copy(update={"attention_kernel_share": p.attention_share})
    client = with_mxfp4_pad(client, p)   # MXFP4_PAD_AT_PREDICT: vLLM's padded MXFP4 experts on Hopper
    fields, no_graphs = p.predict_floor
    if not fields:
        return client
    if "dense_fp8" in fields:   # DENSE_BLOCK_FP8_AT_PREDICT: a fitted η_d8 below the share stays
        fields = {**fields, "dense_fp8": min(fields["dense_fp8"], client.efficiency.dense_fp8)}
    eff = client.efficiency.model_copy(update=fields)
    return client.model_copy(update={"efficiency": eff, **({"harness_no_graphs": True} if no_graphs else {})})


def _predict_with(cal_client, steps, base_step, runs, points, pipes=(), predict_floor: bool = True):
    """Predictions (id -> value), calibration used (id -> text) and out-of-range flags of every
    step and run row, with clients made by ``cal_client(base_client, plan)``. ``predict_floor``:
    run rows get their prediction-only launch-time floor (:func:`with_predict_floor`) and burst
    intake (:func:`at_prediction`); False for
    the predictions the fit itself makes of its training rows (the first-wave fit)."""
    from . import stepmodel
    if predict_floor and SUSTAINED_PEAK_AT_PREDICT and not stepmodel.SUSTAINED_PEAK_ON:
        stepmodel.SUSTAINED_PEAK_ON = True   # the rows to predict only; the fit kept the datasheet peaks
        try:
            return _predict_with(cal_client, steps, base_step, runs, points, pipes, predict_floor)
        finally:
            stepmodel.SUSTAINED_PEAK_ON = False
    pred, used, outside = {}, {}, {}
    if predict_floor:   # the prediction-only burst intake (BURST_INTAKE_IN_VALIDATE) too
        rp = [at_prediction(p, pt) for p, pt in zip(runs, points)]
        runs, points = [q for q, _ in rp], [pt for _, pt in rp]
    cs = []
    for p, b in zip(steps, base_step):
        c, u = cal_client(b, p)
        cs.append(c)
        used[p.id] = u
    v, fl = _predict_steps(steps, cs)
    pred.update(zip((p.id for p in steps), v))
    outside.update(zip((p.id for p in steps), fl))
    cr = []
    for p, pt in zip(runs, points):
        c, u = cal_client(pt.client, p)
        cr.append(with_predict_floor(c, p) if predict_floor else c)
        used[p.id] = u
    v, fl = _predict_runs(runs, points, cr)
    pred.update(zip((p.id for p in runs), v))
    outside.update(zip((p.id for p in runs), fl))
    pv, pu = _predict_pipelines(list(pipes), cal_client)
    pred.update(pv)
    used.update(pu)
    return pred, used, outside


def validate(measurements_csv, out_dir: str | Path, *, calibrate: bool = True, calibration: str | Path | None = None,
             cv: str | None = None, test_fraction: float = 0.3, seed: int = 0, write_catalog: str | Path | None = None,
             plot: bool = True, cv_only: str | None = None) -> pd.DataFrame:
    """Predict every row of ``measurements_csv`` (a path or a list of paths); write ``report.csv``,
    ``report.md``, ``predicted_vs_measured.png`` (and, when fitting, ``calibration.toml``) into
    ``out_dir``. Returns the report table (one row per input row, unsupported ones included).

    ``calibration``: ``"shipped"`` — data/calibration.toml exactly as a client gets it (no refit
    on the validated rows); a file path — the same with that file; ``"fit"`` — fit on a train
    split of the rows and report the held-out split; ``"none"`` — the analytical model only
    (default: ``"fit"`` when ``calibrate`` else ``"none"``). ``cv="source"``: leave-one-source-out
    cross-validation — for each source document/repository (:func:`source_document`) the
    calibration is fitted (as the shipped one is) on all other sources' rows and predicts the
    held-out source's rows; every row is predicted once, by a fit that never saw its source.
    ``cv_only``: with ``cv``, hold out only the folds whose source contains this text (case-
    insensitive); the other rows get no calibrated prediction, and the fit on every row (what
    would be shipped) is skipped unless ``write_catalog`` asks for it — one fold, for iterating."""
    t_start = time.time()
    mode, cal_path = _resolve_mode(calibrate, calibration)
    if cv is not None and cv not in CV_MODES:
        raise C.CalibrationError(f"--cv {cv!r}: allowed: {', '.join(CV_MODES)}")
    if cv_only is not None and cv is None:
        raise C.CalibrationError(f"--cv-only {cv_only!r}: needs --cv source or --cv document")
    fitting = mode == "fit" or cv is not None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    df = read_measurements(measurements_csv)
    plans = [plan_row(r) for r in df.to_dict("records")]
    live = [p for p in plans if p.status in ("ok", "ambiguous", "excluded")]
    steps = [p for p in live if p.kind == "step"]
    runs, points = _live_points([p for p in live if p.kind == "run"])
    pipes = _live_pipelines([p for p in live if p.kind == "pipeline"])
    if cv is not None:
        split = {}
    elif mode == "fit":
        split = split_groups(plans, test_fraction, seed)
    else:
        split = {}
    base_step = [C._client_cached(p.model, p.device, p.tp, p.pp, p.precision) for p in steps]

    pred_u = {}
    v, _ = _predict_steps(steps, base_step)
    pred_u.update(zip((p.id for p in steps), v))
    # one logged pass with the analytical clients: the uncalibrated predictions, and the batch
    # sequences the efficiency fit re-costs
    run_obs = [_run_observation(p, pt) for p, pt in zip(runs, points)]
    if run_obs:
        C.prepare_runs(run_obs)
    for p, ro in zip(runs, run_obs):
        pred_u[p.id] = ro.ref_value
        _note_unfinished(p, ro.ref_summary)
    # pooled per-chunk ITL rows need the step log of their own run (the logged pass above keeps
    # only compressed batches): simulated again with the analytical clients
    chunk_rows = [(p, pt) for p, pt in zip(runs, points) if p.itl_per_chunk]
    if chunk_rows:
        v, _ = _predict_runs([p for p, _ in chunk_rows], [pt for _, pt in chunk_rows], [pt.client for _, pt in chunk_rows])
        pred_u.update(zip((p.id for p, _ in chunk_rows), v))
    # disaggregated rows: simulated as pipelines, predicted but not fitted (the efficiency fit
    # re-costs single-client batch logs)
    pred_u.update(_predict_pipelines(pipes)[0])

    pred_c: dict[str, float] = {}
    used: dict[str, str] = {}
    outside: dict[str, float] = {}
    row_split: dict[str, str] = {}
    cal = None
    fit_warnings: list[str] = []
    obs_of = {p.id: _step_observation(p) for p in steps if p.status == "ok"}
    # TTFT of a loaded run is mostly queueing behind the engine's own scheduling choices; fitting
    # step efficiencies to it would distort every other prediction, so such rows are validated
    # but not fitted (single-step TTFT rows are fitted, and low-load TTFT rows through their
    # prefill steps: low_load_ttft)
    # (MLPerf Server / Interactive latencies likewise: set by the submitter's batching against the bound)
    # rows on a dataset whose dominant lengths are estimates (MLPerf deepseek-r1, llama3.1-405b,
    # mixtral mixes) are validated but not fitted: a wrong length guess would move the efficiencies
    ttft_fitted = ttft_fit_rows(runs)
    ro_of = {p.id: ro for p, ro in zip(runs, run_obs) if p.status == "ok"
             and (not p.metric.startswith("ttft") or p.id in ttft_fitted)
             and not C.latency_set_by_policy(p.metric, p.group) and not _estimated_lengths(p)
             and not p.itl_per_chunk}   # pooled per-chunk gaps are not a ratio of re-costed step totals

    def fit_on(keep, predicts=None, corrections_for_runs: bool = True) -> C.Calibration:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            c = C.calibrate([o for i, o in obs_of.items() if keep(i)], [r for i, r in ro_of.items() if keep(i)])
        fit_warnings.extend(str(w.message) for w in caught)
        # the first-wave delay, from the closed-loop TTFT tails of the training rows predicted with
        # this calibration; skipped where none of the rows to predict (``predicts``) could use it
        if predicts is None or any(first_wave_weight(p) > 0 for p in predicts):
            fw = [p for p in first_wave_rows(runs) if keep(p.id)]
            fw_ids = {p.id for p in fw}
            pts = [pt for p, pt in zip(runs, points) if p.id in fw_ids]
            pr = _predict_with(from_cal(c, corrections_for_runs), [], [], fw, pts, predict_floor=False)[0] if fw else {}
            fit_first_wave(c, fw, pr)
        return c

    def from_cal(c: C.Calibration, corrections_for_runs: bool = True):
        # "fit" mode keeps its historical rule (step corrections for single-step rows only); the
        # shipped procedure applies a stored correction to every client of that configuration
        def make(base, p):
            use_key = p.kind == "step" or corrections_for_runs
            return c.client(base, p.device, p.engine, p.client_key if use_key else None)
        return make

    t_fit = time.time()
    if cv is not None:
        if cv == "document":
            for p in plans:
                p.source_doc = source_document(p.source_text, "document")
        folds: dict[str, list[RowPlan]] = {}
        for p in steps + runs + pipes:
            folds.setdefault(p.source_doc, []).append(p)
        docs = {p.id: p.source_doc for p in plans}
        if cv_only is not None:
            folds = {d: m for d, m in folds.items() if cv_only.lower() in d.lower()}
            if not folds:
                raise C.CalibrationError(f"--cv-only {cv_only!r}: no source contains it; sources: "
                                         + ", ".join(sorted({p.source_doc for p in steps + runs + pipes})))
        for doc, members in sorted(folds.items()):
            c = fit_on(lambda i, doc=doc: docs.get(i) != doc, predicts=members)
            f_steps = [p for p in steps if p.source_doc == doc]
            f_base = [b for p, b in zip(steps, base_step) if p.source_doc == doc]
            f_runs = [(p, pt) for p, pt in zip(runs, points) if p.source_doc == doc]
            f_pipes = [p for p in pipes if p.source_doc == doc]
            pr, us, ou = _predict_with(from_cal(c), f_steps, f_base, [p for p, _ in f_runs], [pt for _, pt in f_runs],
                                       f_pipes)
            pred_c.update(pr)
            used.update(us)
            outside.update(ou)
            for p in members:
                row_split[p.id] = "cv"
        if cv_only is None or write_catalog:
            cal = fit_on(lambda i: True)   # the fit on every source: what would be shipped
    elif mode == "fit":
        group_of_id = {p.id: p.group for p in plans}
        cal = fit_on(lambda i: split.get(group_of_id.get(i)) == "train", corrections_for_runs=False)
        pr, us, ou = _predict_with(from_cal(cal, corrections_for_runs=False), steps, base_step, runs, points, pipes)
        pred_c.update(pr), used.update(us), outside.update(ou)
        for p in steps + runs + pipes:
            row_split[p.id] = split.get(p.group, "")
    elif mode in ("shipped", "file"):
        pr, us, ou = _predict_with(lambda b, p: _stored_client(b, p, cal_path), steps, base_step, runs, points, pipes)
        pred_c.update(pr), used.update(us), outside.update(ou)
        for p in steps + runs + pipes:
            row_split[p.id] = "shipped" if mode == "shipped" else "file"
    if cal is not None:
        cal.provenance.update({
            "measurements": ", ".join(str(x) for x in ([measurements_csv] if isinstance(measurements_csv, (str, Path))
                                                       else measurements_csv)),
            "measurements_sha256": _sha_of(measurements_csv),
            "split": (f"by measurement group, stratified by metric, test_fraction={test_fraction}, seed={seed}"
                      if cv is None else f"fitted on every row (leave-one-{cv}-out errors in the report)"),
            "command": _command_line(measurements_csv, out_dir, mode, cal_path, cv, seed, test_fraction, write_catalog),
            "date": time.strftime("%Y-%m-%d"),
            "fit_seconds": round(time.time() - t_fit, 1),
        })
    fit_warnings = sorted(set(fit_warnings))

    for p in plans:
        if p.status == "ambiguous" and p.id in pred_u:
            alt = [f"per-device reading (value x {p.n_devices} as total): analytical error "
                   f"{pred_u[p.id] / (p.measured * p.n_devices) - 1:+.1%}"]
            if p.id in pred_c:
                alt.append(f"calibrated {pred_c[p.id] / (p.measured * p.n_devices) - 1:+.1%}")
            p.reason = (p.reason + "; " if p.reason else "") + ", ".join(alt)

    rows = []
    for p in plans:
        pu = pred_u.get(p.id, np.nan)
        pc = pred_c.get(p.id, np.nan)
        reason = p.reason
        if outside.get(p.id, 0) > 0:
            reason = (reason + "; " if reason else "") + "calibrated prediction used steps outside the step-correction range"
        rows.append({
            "id": p.id, "model": p.model_text, "hardware": p.hardware_text, "engine": p.engine_text,
            "metric": p.metric, "measured": p.measured, "predicted": pu,
            "rel_error": (pu - p.measured) / p.measured if np.isfinite(pu) else np.nan,
            "predicted_calibrated": pc,
            "rel_error_calibrated": (pc - p.measured) / p.measured if np.isfinite(pc) else np.nan,
            "split": row_split.get(p.id, "") if p.status == "ok" else "",
            "status": p.status, "reason": reason,
            "model_preset": p.model, "device": p.device, "engine_family": p.engine, "tp": p.tp, "pp": p.pp,
            "precision_used": p.precision, "prediction_kind": p.workload_kind, "group": p.group,
            "source_document": p.source_doc,
            "simulated_requests": p.n_requests_sim if p.kind in ("run", "pipeline") else 0,
            "calibration_used": used.get(p.id, ""),
        })
    rep = pd.DataFrame(rows)
    rep.to_csv(out / "report.csv", index=False)
    if cal is not None:
        errs = {}
        okr = rep[rep.status == "ok"]
        for (dev, eng), g in okr.groupby(["device", "engine_family"]):
            for sp in ("train", "test", "cv"):
                e = g[g.split == sp].rel_error_calibrated.abs().dropna()
                if len(e):
                    errs.setdefault((dev, eng), {})[f"{sp}_rows_calibrated_median_abs_rel_err"] = float(np.median(e))
            if (g.split == "test").any():
                errs.setdefault((dev, eng), {})["test_rows"] = sorted(g[g.split == "test"].id)
        C.write_calibration_toml(cal, out / "calibration.toml", errors=errs, header=_toml_header())
        if write_catalog:
            C.write_calibration_toml(cal, write_catalog, errors=errs, header=_toml_header())
    note = _plot(rep, out / "predicted_vs_measured.png") if plot else "plot skipped"
    _write_md(rep, cal, out / "report.md", mode, note, time.time() - t_start, measurements_csv,
              test_fraction, seed, fit_warnings, cv=cv, cal_path=cal_path)
    return rep


def _sha_of(paths) -> str:
    h = hashlib.sha256()
    for pth in ([paths] if isinstance(paths, (str, Path)) else paths):
        h.update(Path(pth).read_bytes())
    return h.hexdigest()[:16]


def _command_line(csvs, out_dir, mode, cal_path, cv, seed, test_fraction, write_catalog) -> str:
    files = " ".join(str(x) for x in ([csvs] if isinstance(csvs, (str, Path)) else csvs))
    cmd = f"mistfast validate {files} -o {out_dir} --calibration {cal_path if mode == 'file' else mode}"
    if cv:
        cmd += f" --cv {cv}"
    if mode == "fit" and not cv:
        cmd += f" --seed {seed} --test-fraction {test_fraction}"
    if write_catalog:
        cmd += f" --write-catalog {write_catalog}"
    return cmd


def _toml_header() -> str:
    return ("mistfast calibration: efficiencies fitted per (device, engine family) from measured data.\n"
            "Written by `python -m mistfast.validate CSV OUT_DIR --write-catalog data/calibration.toml`\n"
            "(mistfast.calibration.write_calibration_toml); read by mistfast.calibration.calibrated_efficiency.\n"
            "[efficiency.DEVICE.ENGINE]: compute = eta_c, memory = eta_m, network = eta_net, op_overhead_us = tau,\n"
            "step_overhead_ms = fixed host time per engine step (docs/step-model.md), prefill = prefill-step\n"
            "efficiency (fitted from low-load TTFT rows, docs/calibration.md)\n"
            "(MODEL.md §2.1); '*' = pooled over devices, 'current' = pooled over vLLM, SGLang and TensorRT-LLM 1.x\n"
            "(the default of a row or client without an engine). [meta] split says what the fit saw (a train split,\n"
            "or every row with leave-one-source-out errors reported separately); train_rows list the measurement ids;\n"
            "errors are |predicted/measured - 1| of the calibrated simulator. [step_correction.KEY]: residual factor\n"
            "tables per measured configuration (attention_* rows: the attention op's own factor).")


def _plot(rep: pd.DataFrame, path: Path) -> str:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception:  # pragma: no cover - optional dependency
        return "matplotlib is not installed: predicted_vs_measured.png was not written"
    ok = rep[rep.status == "ok"]
    has_cal = ok.predicted_calibrated.notna().any()
    fig, axes = plt.subplots(1, 2 if has_cal else 1, figsize=(12 if has_cal else 6, 5.5), squeeze=False)
    metrics = sorted(ok.metric.unique())
    cmap = plt.get_cmap("tab10")
    panels = [("analytical model (all rows)", "predicted", None)]
    if has_cal:
        panels.append(("calibrated (filled: out-of-fit rows, faint: train)", "predicted_calibrated", "test"))
    for ax, (title, col, sp) in zip(axes[0], panels):
        for i, m in enumerate(metrics):
            g = ok[ok.metric == m]
            if sp is None:
                ax.scatter(g.measured, g[col], s=18, color=cmap(i % 10), label=m)
            else:
                t, tr = g[g.split.isin(EVAL_SPLITS)], g[g.split == "train"]
                ax.scatter(tr.measured, tr[col], s=12, color=cmap(i % 10), alpha=0.25)
                ax.scatter(t.measured, t[col], s=22, color=cmap(i % 10), label=m)
        vals = pd.concat([ok.measured, ok[col]]).dropna()
        lo, hi = vals[vals > 0].min() / 1.5, vals.max() * 1.5
        xs = np.array([lo, hi])
        ax.plot(xs, xs, "k-", lw=0.8)
        for f, ls in ((1.1, ":"), (1.25, "--")):
            ax.plot(xs, xs * f, "k" + ls, lw=0.6)
            ax.plot(xs, xs / f, "k" + ls, lw=0.6)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_xlabel("measured")
        ax.set_ylabel("predicted")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=7, loc="upper left")
    fig.suptitle("mistfast predicted vs measured (lines: exact, ±10 %, ±25 %)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return f"plot: {path.name}"


MODE_TEXT = {
    "fit": ("*Calibrated*: efficiencies fitted per (device, engine family) on the **train** split (plus step "
            "corrections per measured configuration); its error is reported on the **test** split, whose "
            "measurement groups (whole sweeps) were not used for fitting."),
    "shipped": ("*Calibrated*: the shipped `data/calibration.toml` exactly as a client gets it (efficiency of "
                "(device, engine family) with its fallbacks, no engine = the pooled fit of current engines, plus "
                "the step correction of the exact configuration); nothing is refitted on these rows, so rows "
                "that were used to fit the shipped file are in-sample."),
    "file": "*Calibrated*: the calibration file given with `--calibration`, exactly as a client gets it.",
    "cv": ("*Calibrated*: **leave-one-source-out** cross-validation. For each source (publisher, or document with "
           "`--cv document`) "
           "the calibration is fitted, as the shipped one is (per (device, engine family) with priors towards "
           "the pooled fits), on the rows of every **other** source and predicts the held-out source's rows. "
           "This is the honest estimate of the error on a new engine release, a new chip or a new benchmark."),
}


def _write_md(rep, cal, path, mode, note, elapsed, csv_path, test_fraction, seed, fit_warnings=(), *, cv=None,
              cal_path=None):
    if mode is True or mode is False:  # historical signature: calibrate flag
        mode = "fit" if mode else "none"
    ok = rep[rep.status == "ok"]
    un = rep[rep.status != "ok"]
    files = csv_path if isinstance(csv_path, (str, Path)) else ", ".join(str(x) for x in csv_path)
    n_all = len(rep)
    cov = len(ok) / n_all if n_all else float("nan")
    key = "cv" if cv else mode
    L = ["# mistfast validation report", "",
         f"Measurements: `{files}` — {n_all} rows: {len(ok)} in the statistics (coverage {_pct(cov)}), "
         f"{(rep.status == 'unsupported').sum()} unsupported, {(rep.status == 'ambiguous').sum()} ambiguous, "
         f"{(rep.status == 'excluded').sum()} excluded (predicted, not expressible; reasons below). "
         f"Run time {elapsed:.0f} s.", "",
         "Error = |predicted / measured − 1|. *Analytical*: the roofline step model with default "
         "efficiencies (η_c = η_m = 0.75, τ = 0). " + MODE_TEXT.get(key, "No calibration."), ""]
    if key == "fit":
        L += [f"Split: by measurement group, stratified by metric, test fraction {test_fraction}, seed {seed}: "
              f"{(ok.split == 'train').sum()} train rows, {(ok.split == 'test').sum()} test rows.", ""]
    if key == "cv":
        L += [f"Folds: {ok.source_document.nunique()} source documents / repositories.", "",
              "## Per held-out source", "", _md_table(error_table(rep, "source_document"), "source_document"), ""]
    if key == "file" and cal_path is not None:
        L += [f"Calibration file: `{cal_path}`.", ""]
    for by, title in (("metric", "Per metric"), ("device", "Per hardware"), ("engine_family", "Per engine")):
        L += [f"## {title}", "", _md_table(error_table(rep, by), by), ""]
    if cal is not None:
        L += ["## Fitted efficiencies (" + ("every row" if key == "cv" else "train split") + ")", "",
              "| device | engine | η_c | η_m | τ (µs/op) | step overhead (ms) | η_prefill | step rows | run rows | train median err |",
              "|---|---|---|---|---|---|---|---|---|---|"]
        for (d, e), f in sorted(cal.efficiencies.items(), key=lambda kv: (kv[0][0] == "*", kv[0][1] == "*", kv[0])):
            if not hasattr(f, "as_efficiency"):
                continue
            L.append(f"| {d} | {e} | {f.compute:.3f} | {f.memory:.3f} | {f.op_overhead_us:.2f} | {f.step_overhead_ms:.2f} | {f.prefill:.3f} | {f.n_steps} | "
                     f"{f.n_runs} | {_pct(f.median_abs_rel_err)} |")
        L += ["", f"Step corrections fitted for {len(cal.corrections)} configuration(s) (used for single-step "
              "rows of exactly that configuration; whole runs use the efficiencies only): "
              + ", ".join(f"`{k}`" for k in sorted(cal.corrections)), ""]
        if fit_warnings:
            L += ["Fit warnings:", ""] + [f"* {w}" for w in fit_warnings] + [""]
    L += ["## Rows outside the statistics (unsupported or ambiguous)", ""]
    if len(un):
        L += ["| id | status | model | hardware | metric | measured | analytical | calibrated | reason |",
              "|---|---|---|---|---|---|---|---|---|"]
        for _, r in un.iterrows():
            L.append(f"| {r.id} | {r.status} | {r.model} | {r.hardware} | {r.metric} | {r.measured:.4g} | "
                     f"{r.predicted:.4g} | {r.predicted_calibrated:.4g} | {r.reason} |")
    else:
        L.append("None: every row was simulated.")
    L += ["", "## Worst rows (calibrated, out of fit; else analytical)", ""]
    calibrated = key != "none"
    col = "rel_error_calibrated" if calibrated else "rel_error"
    sub = ok[ok.split.isin(EVAL_SPLITS)] if calibrated else ok
    worst = sub.assign(a=sub[col].abs()).sort_values("a", ascending=False).head(10)
    L += ["| id | metric | hardware | model | measured | analytical | calibrated | calibration used |", "|---|---|---|---|---|---|---|---|"]
    for _, r in worst.iterrows():
        L.append(f"| {r.id} | {r.metric} | {r.device} | {r.model_preset} | {r.measured:.4g} | {r.predicted:.4g} | "
                 f"{r.predicted_calibrated:.4g} | {r.calibration_used} |")
    L += ["", "## How to read this", "",
          "* `report.csv` has one line per input row: `predicted`/`rel_error` are the analytical model, "
          "`predicted_calibrated`/`rel_error_calibrated` the calibrated one (signed: > 0 = over-prediction), "
          "`split` says whether the row's group was used for fitting, `calibration_used` which fitted "
          "entry applied (`device/engine`, a `*` fallback, or `default`).",
          "* Compare *analytical test* with *calibrated test*: same rows, before and after calibration.",
          "* *Calibrated train* shows how well the fit reproduces the rows it was fitted on.",
          f"* {note}.", ""]
    Path(path).write_text("\n".join(L))


def summary_table(rep: pd.DataFrame) -> pd.DataFrame:
    """Per metric: n, median and p90 absolute relative error before (all rows) and after calibration
    (test split)."""
    t = error_table(rep, "metric")
    return t[["metric", "n", "uncal_median", "uncal_p90", "n_test", "uncal_test_median", "cal_test_median",
              "cal_test_p90"]]


def main(csv_path, out_dir, calibrate: bool = True, seed: int = 0, write_catalog=None,
         test_fraction: float = 0.3, calibration: str | None = None, cv: str | None = None,
         cv_only: str | None = None) -> int:
    """Run :func:`validate` and print coverage and a per-metric summary; returns 0 on success, 2 on
    bad input (one line naming the problem)."""
    try:
        rep = validate(csv_path, out_dir, calibrate=calibrate, calibration=calibration, cv=cv, seed=seed,
                       write_catalog=write_catalog, test_fraction=test_fraction, cv_only=cv_only)
    except C.CalibrationError as exc:
        print(f"error: {exc}")
        return 2
    t = summary_table(rep)
    n_un = int((rep.status == "unsupported").sum())
    n_amb = int((rep.status == "ambiguous").sum())
    n_exc = int((rep.status == "excluded").sum())
    n_ok = len(rep) - n_un - n_amb - n_exc
    print(f"{len(rep)} rows: {n_ok} in the statistics (coverage {_pct(n_ok / max(len(rep), 1))}), {n_un} unsupported, "
          f"{n_amb} ambiguous" + (f", {n_exc} excluded" if n_exc else "") + f" (see {Path(out_dir) / 'report.md'})")
    if n_un:
        reasons = rep[rep.status == "unsupported"].reason.str.replace(r"'[^']*'", "'…'", regex=True).value_counts()
        for why, n in reasons.head(6).items():
            print(f"  unsupported x{n}: {why[:110]}")
    mode = f"leave-one-{cv}-out" if cv else (calibration or ("fit, test split" if calibrate else "none"))
    hdr = f"{'metric':<24}{'n':>5}{'median':>9}{'p90':>9}{'n_eval':>8}{'an. med':>9}{'cal med':>9}{'cal p90':>9}"
    print(f"abs. relative error: analytical (all rows) | analytical and calibrated ({mode}) on the evaluated rows")
    print(hdr)
    for _, r in t.iterrows():
        print(f"{r.metric:<24}{r.n:>5}{_pct(r.uncal_median):>9}{_pct(r.uncal_p90):>9}{r.n_test:>8}"
              f"{_pct(r.uncal_test_median):>9}{_pct(r.cal_test_median):>9}{_pct(r.cal_test_p90):>9}")
    return 0


if __name__ == "__main__":
    # ``python -m mistfast.validate ...`` is the same command as ``mistfast validate ...`` (run as a
    # script this module is the entry point, so it may reach the CLI floor)
    import sys

    from mistfast.cli import main as cli_main
    cli_main(["validate", *sys.argv[1:]])
