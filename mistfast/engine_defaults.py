"""Server settings of serving engines as a benchmark ran them: batch and token limits and the KV-cache
memory rule, per engine family and version, from the engines' own defaults or the flags a run states.

One table per engine (:data:`VLLM`, :data:`SGLANG`, :data:`TRTLLM_SERVE`), each number with the
file of the engine's source it comes from. :func:`server_settings` resolves the defaults of an
engine on a device, :func:`parse_flags` reads the flags stated in a row's text (``--max-num-seqs
512``, ``--mem-fraction-static 0.8``, ...), :func:`launcher_flags` adds the flags of the InferenceMAX
launch scripts that a row's text does not repeat, and :meth:`ServerSettings.scheduler` gives the
``[clients.scheduler]`` fields of a mistfast client.

KV memory rules (``M`` = device memory, ``W`` = weights per device, ``A`` = the engine's activation
and runtime memory):

* vLLM: ``gpu_memory_utilization`` ``u`` (0.9) bounds *all* of the engine's memory, so the KV cache
  is ``u·M − W − A`` (``A``: the peak of a profiling forward pass at the token budget, plus memory
  outside PyTorch); CUDA graphs are captured after the KV cache is allocated and come out of the
  ``(1 − u)·M`` headroom.
* SGLang: ``mem_fraction_static`` ``s`` is (weights + KV pool) / M, so the KV pool is ``s·M − W``;
  its default is derived from the GPU memory (``_handle_gpu_memory_settings``, below).
* TensorRT-LLM 1.x (PyTorch backend): ``free_gpu_memory_fraction`` ``f`` (0.9) of the memory that is
  free after the weights are loaded and a warm-up ran: ``f·(M − W − A)``.

Each is expressed in the existing client fields: ``kv_memory_fraction`` ``f`` and
``reserved_memory_GiB`` ``R`` with KV = ``f·(M − W − R)``: vLLM and SGLang ``f = 1``, ``R = (1 − u)·M
+ A``; TensorRT-LLM ``f``, ``R = A``.
"""
from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Mapping

GiB = float(2**30)


class EngineSettingsError(ValueError):
    """A stated engine flag with a value the engine would not accept."""


# ============================================================================ default tables
# vLLM V1 (0.8 and later): EngineArgs.get_batch_defaults (vllm/engine/arg_utils.py): for the OpenAI
# server (`vllm serve`) on a device of >= 70 GiB that is not an A100, max_num_batched_tokens 8192
# and max_num_seqs 1024; otherwise 2048 and 256 (the A100 exception since PR #17885, vLLM 0.9).
# gpu_memory_utilization 0.9 (vllm/config CacheConfig). V0 (before 0.8): max_num_seqs 256
# (vllm/config.py SchedulerConfig); its token budget is kept at 8192 (chunked prefill, as before).
VLLM = {
    "gpu_memory_utilization": 0.9,
    "large_device_min_GiB": 70.0,
    "large": {"max_num_seqs": 1024, "max_num_batched_tokens": 8192},
    "small": {"max_num_seqs": 256, "max_num_batched_tokens": 2048},
    "v0": {"max_num_seqs": 256, "max_num_batched_tokens": 8192},
    "non_torch_GiB": 1.0,   # NCCL / cuBLAS workspaces outside the PyTorch allocator (estimate)
    "source": "github:vllm-project/vllm vllm/engine/arg_utils.py (EngineArgs.get_batch_defaults), "
              "vllm/config/cache.py (gpu_memory_utilization = 0.9), vllm/v1/worker/gpu_worker.py "
              "(determine_available_memory: requested memory - weights - peak activation - non-torch)",
}

# SGLang 0.5.x: ServerArgs._handle_gpu_memory_settings (python/sglang/srt/server_args.py).
# chunked_prefill_size and cuda_graph_max_bs by GPU memory (MiB, as torch reports it):
#   < 20 GiB 2048 / 8; < 35 GiB 2048 / 24 (tp < 4) or 80; < 60 GiB 4096 / 32 or 160;
#   < 90 GiB (H100) 8192 / 256 or 512; < 160 GiB (H200) 8192 / 256 or 512; else (B200, MI300X)
#   16384 / 512.
# mem_fraction_static = (M - reserved) / M with reserved (MiB) = 512 + 1.5 * max(chunk, 2048)
#   + 2 * cuda_graph_max_bs + 1024 * tp * pp / 8 (+ 3 * bs * dp with DP attention), at least
#   10 GiB on GPUs above 60 GiB. max_running_requests: the request-slot pool, min(max(tokens /
#   context_len * 512, 2048), 4096) (model_runner.py) -- 2048 for long-context models.
# max_prefill_tokens default 16384.
# Before 0.5 (0.3.x - 0.4.x, ServerArgs.__post_init__): mem_fraction_static by TP alone -- 0.79
# (tp >= 16), 0.81 (>= 8), 0.85 (>= 4), 0.87 (>= 2), 0.88 -- and chunked_prefill_size 8192 (2048
# below 25,000 MB of GPU memory).
SGLANG = {
    "pre_0_5_fraction_by_tp": ((16, 0.79), (8, 0.81), (4, 0.85), (2, 0.87), (1, 0.88)),
    "chunk_by_memory": ((20, 2048, 8, 8), (35, 2048, 24, 80), (60, 4096, 32, 160),
                        (90, 8192, 256, 512), (160, 8192, 256, 512), (math.inf, 16384, 512, 512)),
    "max_running_requests": 2048,
    "max_prefill_tokens": 16384,
    "source": "github:sgl-project/sglang python/sglang/srt/server_args.py "
              "(ServerArgs._handle_gpu_memory_settings), python/sglang/srt/model_executor/model_runner.py",
    # The scheduler runs a prefill batch (the chunked request's next chunk and new prompts, up to
    # chunked_prefill_size tokens) whenever it can admit one, and the decode batch otherwise; only
    # --enable-mixed-chunk (off by default) puts the decodes into the prefill batch
    # (github:sgl-project/sglang@d51c1c21d1ac07cd5d1de9ead6c99087d8428e79:python/sglang/srt/managers/
    # scheduler.py, Scheduler.run_step / get_new_batch_prefill). mistfast: scheduler.mix_prefill.
    # Kept mixed (True) for SGLang rows: prefill apart made the held-out InferenceMAX SGLang rows
    # worse (median |error| 21.6 -> 22.8 %, docs/engines.md "SGLang's scheduler"); set
    # mix_prefill = false on a client to run SGLang's order.
    "mix_prefill_default": True,
    "mix_source": "github:sgl-project/sglang@d51c1c21d1ac07cd5d1de9ead6c99087d8428e79:"
                  "python/sglang/srt/managers/scheduler.py (run_step, get_new_batch_prefill: is_mixed_chunk)",
    # PrefillAdder admits a prompt only while the free KV tokens, less new_token_ratio x the running
    # requests' remaining outputs (clipped at 4,096), hold the prompt and its whole output
    # (python/sglang/srt/managers/schedule_policy.py; ratio constants in python/sglang/srt/environ.py).
    # mistfast: scheduler.kv_reserve = "sglang" (ENGINE_SEMANTICS.md "Admission reserve"); off for
    # SGLang rows until measured out of sample (docs/engines.md "SGLang's scheduler").
    "kv_reserve_default": "none",
}

# TensorRT-LLM 1.x `trtllm-serve` (PyTorch backend): --max_batch_size and --max_num_tokens default
# to BuildConfig's 2048 and 8192 (tensorrt_llm/commands/serve.py, tensorrt_llm/builder.py
# BuildConfig), --kv_cache_free_gpu_memory_fraction 0.9 (commands/serve.py; KvCacheConfig).
TRTLLM_SERVE = {
    "max_batch_size": 2048,
    "max_num_tokens": 8192,
    "free_gpu_memory_fraction": 0.9,
    "non_torch_GiB": 1.0,
    "source": "github:NVIDIA/TensorRT-LLM tensorrt_llm/commands/serve.py (trtllm-serve options), "
              "tensorrt_llm/builder.py (BuildConfig max_batch_size 2048, max_num_tokens 8192)",
}


# ============================================================================ settings
@dataclass(frozen=True)
class ServerSettings:
    """What one serving engine was running with. ``kv_rule``: ``"total"`` (KV = f·M − W − A: vLLM
    gpu_memory_utilization, SGLang mem_fraction_static) or ``"free"`` (KV = f·(M − W − A):
    TensorRT-LLM free_gpu_memory_fraction)."""
    engine: str
    max_num_seqs: int
    token_budget: int          # tokens per step (vLLM max_num_batched_tokens, SGLang chunked_prefill_size, TRT max_num_tokens)
    kv_rule: str
    memory_fraction: float
    activation_GiB: float      # A: activations and runtime memory the engine keeps outside weights and KV
    kv_dtype: str = ""         # "" = the row's precision; else "fp8" (--kv-cache-dtype fp8*)
    decode_steps: int = 1      # SGLang --num-continuous-decode-steps
    recv_interval: int = 1     # SGLang --scheduler-recv-interval: decode iterations between polls for new requests
    sources: tuple[str, ...] = ()
    mix_prefill: bool = True   # prefill chunks share a step with the decodes (SGLang: only with --enable-mixed-chunk)
    kv_reserve: str = "none"   # admission reserve for the running requests' outputs ("sglang": PrefillAdder's)
    torch_compile: bool = False   # SGLang --enable-torch-compile
    # TensorRT-LLM attention_dp_config with enable_balance: true: (timeout_iters, batching_wait_iters);
    # () = off. It acts only under enable_attention_dp (PyExecutor._schedule), so validate applies it
    # to the rows whose client has dp_attention (validate.adp_balance_wait_ms)
    adp_balance: tuple = ()
    # the batch of step n + 1 is formed while step n runs (vLLM --async-scheduling, SGLang's overlap
    # scheduler, TensorRT-LLM's PyTorch overlap scheduler): a request that arrives during step n is
    # first scheduled in step n + 2 (validate.closed_loop_step_wait_ms)
    schedule_ahead: bool = False

    def scheduler(self, device_memory_GiB: float) -> dict:
        """``[clients.scheduler]`` fields: chunked batching with the engine's limits and its KV rule."""
        budget = max(self.token_budget, self.max_num_seqs)
        out = {"batching": "chunked", "max_batch_size": int(self.max_num_seqs),
               "max_batched_tokens": int(budget), "chunk_size": int(budget)}
        if not self.mix_prefill:
            out["mix_prefill"] = False
        if self.kv_reserve != "none":
            out["kv_reserve"] = self.kv_reserve
        if self.kv_rule == "total":
            out["kv_memory_fraction"] = 1.0
            out["reserved_memory_GiB"] = round((1.0 - self.memory_fraction) * device_memory_GiB + self.activation_GiB, 6)
        else:
            out["kv_memory_fraction"] = float(self.memory_fraction)
            out["reserved_memory_GiB"] = round(self.activation_GiB, 6)
        return out


def version_tuple(text: str) -> tuple[int, ...]:
    """(major, minor, patch) of the first version number in ``text`` ("v0.11.2 (container ...)" ->
    (0, 11, 2)); () when there is none."""
    m = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text or "")
    return tuple(int(g) for g in m.groups() if g is not None) if m else ()


def activation_GiB(model, tp: int, tokens: int, non_torch_GiB: float) -> float:
    """Estimated peak activation memory of one forward pass over ``tokens`` tokens on one of ``tp``
    devices, in GiB, plus memory outside PyTorch: the FFN's gate/up output (2·I/tp values per token;
    MoE: top_k experts of expert_ffn_dim) and four hidden-size buffers per token, 16-bit."""
    inter = model.top_k * model.expert_ffn_dim if getattr(model, "is_moe", False) else model.ffn_dim
    per_token = (2 * inter / max(tp, 1) + 4 * model.hidden_size) * 2
    return non_torch_GiB + tokens * per_token / GiB


def sglang_memory_defaults(device_memory_GiB: float, tp: int, pp: int = 1, chunk: int | None = None,
                           cuda_graph_max_bs: int | None = None, dp_attention: bool = False) -> dict:
    """SGLang's chunked_prefill_size, cuda_graph_max_bs and mem_fraction_static for a device (the
    heuristic of :data:`SGLANG`); a stated chunk or graph batch size replaces the default."""
    mem_mib = device_memory_GiB * 1024
    for limit_gib, c, bs_small, bs_large in SGLANG["chunk_by_memory"]:
        if mem_mib < limit_gib * 1024:
            break
    chunk = chunk or c
    bs = cuda_graph_max_bs or (bs_small if tp < 4 else bs_large)
    reserved = 512 + max(chunk, 2048) * 1.5 + bs * 2 + tp * pp / 8 * 1024
    if dp_attention:
        reserved += bs * tp * 3 + (bs * tp * 1.5 if bs > 300 else 0.0)
    if mem_mib > 60 * 1024:
        reserved = max(reserved, 10 * 1024)
    return {"chunked_prefill_size": int(chunk), "cuda_graph_max_bs": int(bs),
            "mem_fraction_static": round((mem_mib - reserved) / mem_mib, 3)}


def server_settings(engine: str, version: str = "", *, client=None, device_name: str = "",
                    device_memory_GiB: float | None = None, tp: int = 1, pp: int = 1,
                    flags: Mapping | None = None) -> ServerSettings | None:
    """The settings of ``engine`` (family: ``vllm``, ``sglang``, ``trtllm-1``) at ``version`` on a
    device, with the stated ``flags`` (:func:`parse_flags`) over its defaults; None for an engine
    without a table. ``client`` (a ClientSpec) gives the device, parallelism and model (for the
    activation estimate) unless given apart."""
    flags = dict(flags or {})
    if client is not None:
        device_name = device_name or client.device.name
        device_memory_GiB = device_memory_GiB or client.device.memory_GiB
        tp, pp = client.tp, client.pp
    mem = float(device_memory_GiB or 0.0)
    model = client.model if client is not None else None
    if engine == "vllm":
        return _vllm(version, device_name, mem, tp, model, flags)
    if engine == "sglang":
        return _sglang(version, mem, tp, pp, flags, dp_attention=bool(client is not None and client.dp_attention))
    if engine.startswith("trtllm-1"):
        return _trtllm_serve(tp, model, flags)
    return None


def _vllm(version, device_name, mem, tp, model, flags) -> ServerSettings:
    v = version_tuple(version)
    if v and v < (0, 8):
        d = VLLM["v0"]
    elif mem >= VLLM["large_device_min_GiB"] and "a100" not in device_name.lower():
        d = VLLM["large"]
    else:
        d = VLLM["small"]
    seqs = int(flags.get("max_num_seqs", d["max_num_seqs"]))
    tokens = int(flags.get("max_num_batched_tokens", d["max_num_batched_tokens"]))
    util = float(flags.get("gpu_memory_utilization", VLLM["gpu_memory_utilization"]))
    act = activation_GiB(model, tp, tokens, VLLM["non_torch_GiB"]) if model is not None else VLLM["non_torch_GiB"]
    # async scheduling: off unless stated (SchedulerConfig.async_scheduling, vllm/config/scheduler.py,
    # False through v0.13; made the default later by vllm-project/vllm#27614, no rows of such versions)
    return ServerSettings("vllm", seqs, tokens, "total", util, act, kv_dtype=flags.get("kv_dtype", ""),
                          sources=(VLLM["source"],) + tuple(flags.get("sources", ())),
                          schedule_ahead=bool(flags.get("schedule_ahead", False)))


def _sglang(version, mem, tp, pp, flags, dp_attention=False) -> ServerSettings:
    v = version_tuple(version)
    if v and v < (0, 5):
        frac_tp = next(f for t, f in SGLANG["pre_0_5_fraction_by_tp"] if tp * pp >= t)
        d = {"chunked_prefill_size": int(flags.get("chunked_prefill_size", 2048 if mem * 1024 < 25_000 else 8192)),
             "mem_fraction_static": frac_tp}
    else:
        d = sglang_memory_defaults(mem, tp, pp, chunk=flags.get("chunked_prefill_size"),
                                   cuda_graph_max_bs=flags.get("cuda_graph_max_bs"), dp_attention=dp_attention)
    frac = float(flags.get("mem_fraction_static", d["mem_fraction_static"]))
    seqs = int(flags.get("max_running_requests", SGLANG["max_running_requests"]))
    return ServerSettings("sglang", seqs, d["chunked_prefill_size"], "total", frac, 0.0,
                          kv_dtype=flags.get("kv_dtype", ""), decode_steps=int(flags.get("decode_steps", 1)),
                          recv_interval=int(flags.get("recv_interval", 1)),
                          sources=(SGLANG["source"],) + tuple(flags.get("sources", ())),
                          mix_prefill=bool(flags.get("enable_mixed_chunk", SGLANG["mix_prefill_default"])),
                          kv_reserve=SGLANG["kv_reserve_default"],
                          torch_compile=bool(flags.get("torch_compile", False)),
                          # the overlap scheduler: on unless --disable-overlap-schedule
                          # (ServerArgs.disable_overlap_schedule = False, python/sglang/srt/server_args.py,
                          # since v0.4.0; Scheduler.event_loop_overlap)
                          schedule_ahead=bool(flags.get("schedule_ahead", not v or v >= (0, 4))))


def _trtllm_serve(tp, model, flags) -> ServerSettings:
    seqs = int(flags.get("max_batch_size", TRTLLM_SERVE["max_batch_size"]))
    tokens = int(flags.get("max_num_tokens", TRTLLM_SERVE["max_num_tokens"]))
    frac = float(flags.get("free_gpu_memory_fraction", TRTLLM_SERVE["free_gpu_memory_fraction"]))
    act = activation_GiB(model, tp, tokens, TRTLLM_SERVE["non_torch_GiB"]) if model is not None \
        else TRTLLM_SERVE["non_torch_GiB"]
    return ServerSettings("trtllm-1", seqs, tokens, "free", frac, act, kv_dtype=flags.get("kv_dtype", ""),
                          sources=(TRTLLM_SERVE["source"],) + tuple(flags.get("sources", ())),
                          adp_balance=tuple(flags.get("adp_balance", ())),
                          # the PyTorch backend's overlap scheduler: on unless disable_overlap_scheduler
                          # (TorchLlmArgs.disable_overlap_scheduler = False, tensorrt_llm/llmapi/llm_args.py;
                          # PyExecutor._executor_loop_overlap)
                          schedule_ahead=bool(flags.get("schedule_ahead", True)))


# ============================================================================ flags in text
_INT_FLAGS = {
    # flag spellings (- or _) -> settings key
    "max-num-seqs": "max_num_seqs", "max-num-batched-tokens": "max_num_batched_tokens",
    "chunked-prefill-size": "chunked_prefill_size", "max-running-requests": "max_running_requests",
    "cuda-graph-max-bs": "cuda_graph_max_bs", "num-continuous-decode-steps": "decode_steps",
    "max-batch-size": "max_batch_size", "max-num-tokens": "max_num_tokens",
    "scheduler-recv-interval": "recv_interval",
}
_FRACTION_FLAGS = {
    "gpu-memory-utilization": "gpu_memory_utilization", "mem-fraction-static": "mem_fraction_static",
    "kv-cache-free-gpu-memory-fraction": "free_gpu_memory_fraction",
    "free-gpu-memory-fraction": "free_gpu_memory_fraction",
}


def _flag_re(name: str) -> str:
    # --max-num-seqs 512, --max_num_seqs=512, YAML "max-num-seqs: 512" / "free_gpu_memory_fraction: 0.85"
    spelled = name.replace("-", "[-_]")
    return rf"(?<![\w-])(?:--)?{spelled}\s*[ =:]\s*([0-9.]+)"


# TensorRT-LLM AttentionDpConfig defaults (tensorrt_llm/llmapi/llm_args.py): iterations every rank
# holds its new context requests while some rank has none, and the further iterations they wait
# once every rank has one
ADP_TIMEOUT_ITERS = 50
ADP_BATCHING_WAIT_ITERS = 10


def parse_flags(text: str) -> dict:
    """Engine settings a row's text states as command-line flags or config keys; a value the
    engine would not accept raises :class:`EngineSettingsError` naming the flag, the value and
    what is allowed."""
    out: dict = {}
    t = text or ""
    checks = [(_INT_FLAGS, lambda v: v >= 1 and v == int(v), int, "must be a whole number >= 1"),
              (_FRACTION_FLAGS, lambda v: 0.0 < v <= 1.0, float, "must be a fraction in (0, 1]")]
    for flags, ok, kind, allowed in checks:
        for name, key in flags.items():
            m = re.search(_flag_re(name), t)
            if not m:
                continue
            try:
                v = float(m.group(1))
            except ValueError:
                v = float("nan")
            if not ok(v):
                raise EngineSettingsError(f"engine flag --{name} = {m.group(1)!r}: {allowed}")
            out[key] = kind(v)
    kv = re.search(r"kv[-_]cache[-_]dtype\s*[ =:]\s*['\"]?([a-z0-9_]+)", t, re.I)
    if kv and kv.group(1).lower().startswith("fp8"):
        out["kv_dtype"] = "fp8"
    # TensorRT-LLM ``attention_dp_config: {enable_balance: true[, timeout_iters: N][,
    # batching_wait_iters: N]}`` (extra-llm-api-options YAML); unset counts take AttentionDpConfig's
    # defaults, timeout_iters 50 and batching_wait_iters 10 (github:NVIDIA/TensorRT-LLM
    # tensorrt_llm/llmapi/llm_args.py, class AttentionDpConfig)
    if re.search(r"enable[-_]balance\s*[=:]\s*true\b", t, re.I):
        counts = []
        for name, default in (("timeout_iters", ADP_TIMEOUT_ITERS), ("batching_wait_iters", ADP_BATCHING_WAIT_ITERS)):
            m = re.search(rf"(?<![\w]){name}\s*[=:]\s*(-?\d+)", t, re.I)
            v = int(m.group(1)) if m else default
            if v < 0:
                raise EngineSettingsError(f"engine flag attention_dp_config.{name} = {v}: must be a whole number >= 0")
            counts.append(v)
        out["adp_balance"] = tuple(counts)
    # SGLang --enable-torch-compile (a switch): the decode graphs are captured from compiled, fused code
    if re.search(r"(?<![\w-])(?:--)?enable[-_]torch[-_]compile\b(?!\s*[=:]\s*(?:false|0|no)\b)", t, re.I):
        out["torch_compile"] = True
    # scheduling one step ahead (ServerSettings.schedule_ahead): vLLM --async-scheduling /
    # "async-scheduling: true" (--no-async-scheduling turns it off), SGLang --disable-overlap-schedule,
    # TensorRT-LLM "disable_overlap_scheduler: true" (": false" keeps it on)
    ahead = re.search(r"(?<![\w-])(?:--)?(no[-_])?async[-_]scheduling\b(\s*[=:]\s*(\w+))?", t, re.I)
    if ahead:
        on = (ahead.group(3) or "true").lower() not in ("false", "0", "no")
        out["schedule_ahead"] = on != bool(ahead.group(1))
    off = re.search(r"(?<![\w-])(?:--)?disable[-_]overlap[-_]scheduler?\b(\s*[=:]\s*(\w+))?", t, re.I)
    if off:
        out["schedule_ahead"] = (off.group(2) or "true").lower() in ("false", "0", "no")
    # SGLang --enable-mixed-chunk (a switch; "enable_mixed_chunk: false" in a config turns it off)
    mixed = re.search(r"(?<![\w-])(?:--)?enable[-_]mixed[-_]chunk\b(\s*[=:]\s*(\w+))?", t, re.I)
    if mixed:
        out["enable_mixed_chunk"] = (mixed.group(2) or "true").lower() not in ("false", "0", "no")
    return out


# ============================================================================ InferenceMAX launchers
# Server flags of the InferenceMAX single-node launch scripts, github:SemiAnalysisAI/InferenceX at
# e264c0eedbf8d611e3a317a67e13911f0d4d687c (2026-01-08), unchanged in these flags from 2025-12-05
# (25506e87c) except where noted; the docker and slurm variants of each script state the same flags.
# (engine family, model-name text, device) -> (flags as the script states them, script path)
INFERENCEMAX_SOURCE = "github:SemiAnalysisAI/InferenceX@e264c0eedbf8d611e3a317a67e13911f0d4d687c"
INFERENCEMAX_LAUNCHERS = (
    ("vllm", "gpt-oss-120b", "B200",
     "--gpu-memory-utilization 0.9 --max-num-seqs 512 max-num-batched-tokens: 8192 kv-cache-dtype: fp8 "
     "async-scheduling: true",
     "benchmarks/gptoss_fp4_b200_docker.sh"),
    ("vllm", "gpt-oss-120b", "H100",
     "--gpu-memory-utilization 0.9 --max-num-seqs {conc} max-num-batched-tokens: 8192 async-scheduling: true",
     "benchmarks/gptoss_fp4_h100_docker.sh"),
    ("vllm", "gpt-oss-120b", "H200",
     "--gpu-memory-utilization 0.9 --max-num-seqs {conc} max-num-batched-tokens: 8192 async-scheduling: true",
     "benchmarks/gptoss_fp4_h200_slurm.sh"),
    ("sglang", "DeepSeek-R1", "H200",
     "--max-running-requests {h200_seqs} --chunked-prefill-size 32768 --mem-fraction-static 0.82",
     "benchmarks/dsr1_fp8_h200_slurm.sh"),
    # (the script adds "attention_dp_config: enable_balance: true" to its extra-llm-api-options YAML
    # when DP_ATTENTION is true, since InferenceX@06667a51e, 2025-12-02; the balancing acts only
    # under enable_attention_dp, so stating it for every run of the script changes only the DP runs)
    ("trtllm-1", "gpt-oss-120b", "B200",
     "--max_batch_size 512 --max_num_tokens 20000 free_gpu_memory_fraction: 0.85 kv-cache-dtype: fp8 "
     "attention_dp_config: enable_balance: true",
     "benchmarks/gptoss_fp4_b200_trt_slurm.sh"),
    ("sglang", "DeepSeek-R1-0528-FP4", "B200",
     "--cuda-graph-max-bs 256 --max-running-requests 256 --mem-fraction-static 0.85 --kv-cache-dtype fp8_e4m3 "
     "--chunked-prefill-size 16384 --scheduler-recv-interval {recv}", "benchmarks/dsr1_fp4_b200_docker.sh"),
    ("sglang", "DeepSeek-R1", "B200",
     "--cuda-graph-max-bs 128 --max-running-requests 128 --mem-fraction-static 0.82 --kv-cache-dtype fp8_e4m3 "
     "--chunked-prefill-size 32768 --scheduler-recv-interval {recv}", "benchmarks/dsr1_fp8_b200_docker.sh"),
    ("sglang", "DeepSeek-R1-0528-MXFP4", "MI355X",
     "--chunked-prefill-size 196608 --mem-fraction-static 0.8 --num-continuous-decode-steps 4 "
     "--cuda-graph-max-bs 128 --kv-cache-dtype fp8_e4m3", "benchmarks/dsr1_fp4_mi355x_docker.sh"),
    ("sglang", "DeepSeek-R1", "MI355X",
     "--chunked-prefill-size 196608 --mem-fraction-static 0.8 --num-continuous-decode-steps 4 "
     "--cuda-graph-max-bs 128 --attention-backend aiter --enable-torch-compile",
     "benchmarks/dsr1_fp8_mi355x_docker.sh"),
    ("sglang", "DeepSeek-R1", "MI325X",
     "--chunked-prefill-size 196608 --mem-fraction-static 0.8 --num-continuous-decode-steps 4 "
     "--cuda-graph-max-bs 128", "benchmarks/dsr1_fp8_mi325x_docker.sh"),
    ("sglang", "DeepSeek-R1", "MI300X",
     "--chunked-prefill-size 196608 --mem-fraction-static 0.8 --num-continuous-decode-steps 4 "
     "--cuda-graph-max-bs 128", "benchmarks/dsr1_fp8_mi300x_docker.sh"),
)


# The DeepSeek-R1 FP8 B200 script branches on TP since github:SemiAnalysisAI/InferenceX@1d29967c4
# (2026-01-13, "adds more SGLang B200 configs", the commit that added the TP4 runs; kept by the
# consolidated benchmarks/dsr1_fp8_b200.sh of b0c4ed21b): TP8 keeps the flags above, TP4 (8k/1k only)
# runs 32 requests with 95 % of memory static -- at 0.82 the ~157 GiB of FP8 weights per device
# would not fit the 147.6 GiB static share of a 180 GB B200 and SGLang would refuse to start.
INFERENCEMAX_TP_LAUNCHERS = {
    ("benchmarks/dsr1_fp8_b200_docker.sh", 4): (
        "--cuda-graph-max-bs 32 --max-running-requests 32 --mem-fraction-static 0.95 --kv-cache-dtype fp8_e4m3 "
        "--chunked-prefill-size 8192 --scheduler-recv-interval 10",
        "github:SemiAnalysisAI/InferenceX@1d29967c46d489dceedf4142f7038053052d55b0:benchmarks/dsr1_fp8_b200_docker.sh"),
}


def launcher_flags(source: str, engine: str, model_text: str, device: str, isl: int = 0, osl: int = 0,
                   concurrency: int = 0, tp: int = 0) -> tuple[str, str]:
    """(flags, source) of the InferenceMAX launch script that ran a row (``source`` names the
    InferenceMAX artifacts), else ("", ""). The first entry whose model text the row's model
    contains wins (the FP4 entries come before the FP8 ones)."""
    if "inferencemax" not in (source or "").lower() and "mantile" not in (source or "").lower():
        return "", ""
    for fam, model_part, dev, flags, path in INFERENCEMAX_LAUNCHERS:
        if fam == engine and dev == device and model_part.lower() in (model_text or "").lower():
            if (path, tp) in INFERENCEMAX_TP_LAUNCHERS:   # a script that branches on TP (above)
                return INFERENCEMAX_TP_LAUNCHERS[(path, tp)]
            if path.endswith("dsr1_fp4_mi355x_docker.sh") and isl == 8192 and osl == 1024 and concurrency > 32:
                # the script lowers the prefill chunk for 8k/1k above 32 users
                flags = flags.replace("--chunked-prefill-size 196608", "--chunked-prefill-size 32768")
            # (the H100/H200 gpt-oss scripts set --max-num-seqs to the run's concurrency; the H200
            # DeepSeek-R1 script runs 512 requests at 1k/1k and 256 otherwise)
            flags = flags.replace("{conc}", str(max(int(concurrency), 1)) if concurrency else "1024")
            flags = flags.replace("{h200_seqs}", "512" if (isl, osl) == (1024, 1024) else "256")
            # the B200 SGLang scripts poll for new requests every 10 decode iterations, every 30
            # from 16 users on ("relax to ~30 requests between scheduler recv polls")
            flags = flags.replace("{recv}", "30" if concurrency >= 16 else "10")
            return flags, f"{INFERENCEMAX_SOURCE}:{path}"
    return "", ""


def row_settings(engine: str, version: str, client, text: str, *, source: str = "", model_text: str = "",
                 isl: int = 0, osl: int = 0, concurrency: int = 0) -> ServerSettings | None:
    """Settings of the server behind one measurement row: the engine's defaults for its version and
    device, the InferenceMAX launcher's flags (when the row is one of its runs), and the flags the
    row's own text states (last, so they win)."""
    imax_flags, imax_src = launcher_flags(source, engine, model_text, client.device.name, isl, osl, concurrency,
                                          tp=client.tp)
    flags = parse_flags(imax_flags)
    flags.update(parse_flags(text))
    if imax_src:
        flags["sources"] = (imax_src,)
    return server_settings(engine, version, client=client, flags=flags)


def apply_engine_defaults(client, engine: str, version: str = "", flags: str = ""):
    """A copy of ``client`` (a ClientSpec) whose scheduler runs as ``engine`` (``vllm``, ``sglang``,
    ``trtllm-1``) at ``version`` with the command-line ``flags`` given: batch and token limits and
    the engine's KV-memory rule; an FP8 KV cache (``--kv-cache-dtype fp8``) also sets the KV
    precision. Raises EngineSettingsError for an engine without a table or a bad flag."""
    s = server_settings(engine, version, client=client, flags=parse_flags(flags))
    if s is None:
        raise EngineSettingsError(f"engine = {engine!r}: no server defaults; known: vllm, sglang, trtllm-1")
    update = {"scheduler": client.scheduler.model_copy(update=s.scheduler(client.device.memory_GiB))}
    if s.kv_dtype:
        update["precision"] = client.precision.model_copy(update={"kv": s.kv_dtype})
    return client.model_copy(update=update)
