"""Typed, frozen specifications of everything a simulation needs, loaded from TOML.

A field that names a catalog entry accepts either the preset name (``model = "llama-3.1-8b"``)
or a table with an optional ``preset`` key plus overrides
(``model = { preset = "llama-3.1-8b", num_layers = 2 }``). Validation happens once, at load
time; every problem is reported as ``path = value: what is allowed`` in one
:class:`SpecError`.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

from pydantic import (BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, ValidationInfo, field_validator,
                      model_validator)
from pydantic_core import PydanticCustomError

from .catalog import Catalog, default_catalog, tomllib
from .errors import SpecError  # noqa: F401 (the spec modules' error; defined on a lower floor)

GiB = float(2**30)

# bytes per element of each precision name (fp6 packs 4 values in 3 bytes)
DTYPE_BYTES = {"fp32": 4.0, "tf32": 4.0, "bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "int8": 1.0,
               "fp6": 0.75, "fp4": 0.5, "int4": 0.5,
               # block-scaled FP4 (OCP MX / NVIDIA): 4-bit E2M1 values plus one scale per block,
               # MXFP4 an 8-bit E8M0 scale per 32 values (4.25 bits), NVFP4 an FP8 E4M3 scale per
               # 16 values (4.5 bits; its one FP32 per-tensor scale is negligible)
               "mxfp4": 4.25 / 8, "nvfp4": 4.5 / 8}
# an unsupported compute dtype runs at the next higher supported rate (MODEL.md §2.3)
DTYPE_FALLBACK = {"mxfp4": "fp6", "nvfp4": "fp6", "fp4": "fp6", "int4": "int8", "fp6": "fp8", "int8": "fp8", "fp8": "bf16",
                  "fp16": "bf16", "bf16": "fp32", "tf32": "fp32", "fp32": None}
Dtype = Literal["fp32", "tf32", "bf16", "fp16", "fp8", "int8", "fp6", "fp4", "int4", "mxfp4", "nvfp4"]
FP4_FORMATS = ("mxfp4", "nvfp4")


FIELD_ERROR = "mistfast_field"   # the pydantic error type of field_error / field_errors


def field_error(field: str, value: Any, message: str) -> PydanticCustomError:
    """Cross-field check failure of ``field`` (relative to the model being validated) with the
    value given and what is allowed; the formatter prefixes the model's path."""
    return field_errors([(field, value, message)])


def field_errors(problems: list[tuple[str, Any, str]]) -> PydanticCustomError:
    """Several cross-field failures at once: ``(field, value, message)`` each, carried in the
    error's context (``ctx["problems"]``) as (field, repr of the value, allowed)."""
    rows = [(str(f), repr(v), str(m)) for f, v, m in problems]
    return PydanticCustomError(FIELD_ERROR, "{summary}",
                               {"problems": rows, "summary": "; ".join(f"{f} = {v}: {m}" for f, v, m in rows)})


def _format_loc(loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif str(part).startswith("function-"):
            continue
        else:
            out += ("." if out else "") + str(part)
    return out


def format_validation_error(err: ValidationError, prefix: str = "") -> SpecError:
    problems = []
    for e in err.errors(include_url=False):
        path = _format_loc(e["loc"])
        msg = e["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
        value = e.get("input")
        if e["type"] == FIELD_ERROR:
            for fld, val, text in e["ctx"]["problems"]:
                full = f"{path}.{fld}" if path else fld
                problems.append(f"{prefix}{full} = {val}: {text}")
            continue
        if e["type"] == "missing":
            problems.append(f"{prefix}{path}: required field is missing")
        elif e["type"] == "extra_forbidden":
            problems.append(f"{prefix}{path} = {value!r}: unknown field (check the spelling)")
        else:
            shown = value if not isinstance(value, dict) else "{...}"
            problems.append(f"{prefix}{path} = {shown!r}: {msg}")
    return SpecError(problems)


class Spec(BaseModel):
    # inf and nan are valid TOML floats but no valid spec value (they hang or poison results)
    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True, allow_inf_nan=False)

    def replace(self, **changes) -> "Spec":
        """A validated copy with some fields changed."""
        data = self.model_dump()
        data.update(changes)
        return type(self).model_validate(data)


def _catalog(info: ValidationInfo) -> Catalog:
    ctx = info.context or {}
    return ctx.get("catalog") or default_catalog()


def _resolve(kind: str, value: Any, info: ValidationInfo) -> Any:
    """Turn a preset name or ``{preset=..., overrides...}`` into a full dict."""
    if isinstance(value, BaseModel):
        return value
    if isinstance(value, str):
        try:
            return _catalog(info).get(kind, value)
        except KeyError as exc:
            raise ValueError(exc.args[0]) from None
    if isinstance(value, dict) and "preset" in value:
        value = dict(value)
        name = value.pop("preset")
        try:
            base = _catalog(info).get(kind, name)
        except KeyError as exc:
            raise ValueError(exc.args[0]) from None
        base.update(value)
        base["name"] = value.get("name", base["name"])
        return base
    return value


# ----------------------------------------------------------------------------- hardware
IDLE_SHARE_OF_TDP = 0.30  # reference static power share (MODEL.md §8), the fallback for idle power


class DeviceSpec(Spec):
    name: str = "custom"
    kind: Literal["gpu", "tpu", "asic", "cpu"]
    vendor: str = ""
    description: str = ""
    memory_GiB: float = Field(gt=0)
    memory_bandwidth_GBps: float = Field(gt=0)
    tflops: dict[Dtype, float]
    scaleup_bidir_GBps: float = Field(ge=0, default=0.0)
    scaleup_latency_us: float = Field(ge=0, default=1.0)
    devices_per_node: int = Field(ge=1, default=8)
    scaleup_domain_size: int | None = Field(
        default=None, ge=1, description="devices one scale-up fabric (NVLink domain, TPU ICI slice) connects "
        "at scaleup_bidir_GBps; default devices_per_node. A TP group larger than this uses the inter-node link")
    tdp_W: float = Field(ge=0, default=0.0)
    idle_W: float | None = Field(
        default=None, ge=0, description="power drawn by an idle device (W); default 0.3 x tdp_W (the reference's "
        "static share) when the catalog gives no sourced value")
    price_usd_per_hour: float = Field(ge=0, default=0.0)
    source: str = ""

    @field_validator("tflops")
    @classmethod
    def _tflops(cls, v):
        if not v:
            raise ValueError("needs at least one dtype peak, e.g. {bf16 = 989.4}")
        for k, x in v.items():
            if not (x > 0):
                raise field_error(k, x, "peak TFLOPS must be > 0")
        return v

    @property
    def idle_power_W(self) -> float:
        """Power of an idle device: the catalog's sourced idle_W, else the reference's static share
        of TDP (0.3 x tdp_W, MODEL.md §8)."""
        return self.idle_W if self.idle_W is not None else IDLE_SHARE_OF_TDP * self.tdp_W

    @property
    def scaleup_domain(self) -> int:
        """Devices reachable over the scale-up fabric (scaleup_domain_size, else devices_per_node)."""
        return self.scaleup_domain_size if self.scaleup_domain_size is not None else self.devices_per_node

    def peak_flops(self, dtype: str) -> float:
        """Dense peak FLOP/s for ``dtype``; unsupported dtypes run at the next higher rate."""
        d = self.mma_format(dtype)
        if d is not None:
            return self.tflops[d] * 1e12
        # nothing at or above: the slowest the device has
        return min(self.tflops.values()) * 1e12

    def mma_format(self, dtype: str) -> str | None:
        """The format whose peak ``dtype`` runs at on this device (``peak_flops``): ``dtype``
        itself where the device has a rate for it, else the next higher one it has (FP8 on A100
        -> bf16: engines run FP8 checkpoints there as W8A16, e.g. vLLM's Marlin kernels); None
        when the device lists nothing at or above it."""
        d: str | None = dtype
        if d in FP4_FORMATS and d not in self.tflops:
            # a device listing only a generic "fp4" peak runs every FP4 format there; one that
            # lists formats (MI355X: mxfp4 only) runs an unlisted one at the next lower peak
            listed = any(f in self.tflops for f in FP4_FORMATS)
            d = "fp4" if ("fp4" in self.tflops and not listed) else DTYPE_FALLBACK[d]
        while d is not None:
            if d in self.tflops:
                return d
            d = DTYPE_FALLBACK[d]
        return None


class LinkSpec(Spec):
    name: str = "custom"
    bandwidth_GBps: float = Field(gt=0, description="per direction")
    latency_us: float = Field(ge=0, default=0.0)
    efficiency: float = Field(gt=0, le=1, default=1.0)
    source: str = ""


class MemoryTierSpec(Spec):
    name: str = "custom"
    kind: Literal["dram", "lpddr", "cxl", "ssd", "hbm"] = "dram"
    capacity_GB: float = Field(gt=0)
    bandwidth_GBps: float = Field(gt=0)
    latency_us: float = Field(ge=0, default=0.0)
    price_usd_per_hour: float = Field(ge=0, default=0.0)
    source: str = ""


# ----------------------------------------------------------------------------- models
class ModelSpec(Spec):
    name: str = "custom"
    architecture: Literal["decoder", "encoder"] = "decoder"
    hidden_size: int = Field(gt=0)
    num_layers: int = Field(gt=0)
    num_heads: int = Field(gt=0)
    num_kv_heads: int = Field(gt=0)
    head_dim: int = Field(gt=0)
    ffn_dim: int = Field(gt=0)
    gated_ffn: bool = True
    vocab_size: int = Field(gt=0)
    tied_embeddings: bool = False
    max_model_len: int = Field(gt=0, default=131072)
    num_experts: int = Field(ge=0, default=0)
    top_k: int = Field(ge=0, default=0)
    expert_ffn_dim: int = Field(ge=0, default=0)
    num_shared_experts: int = Field(ge=0, default=0)
    first_dense_layers: int = Field(ge=0, default=0)
    kv_lora_rank: int = Field(ge=0, default=0)
    rope_head_dim: int = Field(ge=0, default=0)
    q_lora_rank: int = Field(ge=0, default=0)
    # MoE layer interleave (Llama-4 Maverick interleave_moe_layer_step = 2): after the first
    # first_dense_layers, layer i is MoE when (i + 1) % moe_every == 0, else a dense FFN
    moe_every: int = Field(ge=1, default=1)
    # local attention (docs/step-model.md): windowed layers attend to at most `sliding_window`
    # keys; "sliding" = the last W positions (Mistral, Gemma-3, gpt-oss), "chunked" = the
    # positions of the query's own aligned block of W (Llama-4 attention_chunk_size). Layer i is
    # full (global) attention when global_every > 0 and (i + 1) % global_every == 0; every other
    # layer is windowed (global_every = 0: all layers windowed)
    sliding_window: int = Field(ge=0, default=0)
    window_kind: Literal["sliding", "chunked"] = "sliding"
    global_every: int = Field(ge=0, default=0)
    attention_sinks: bool = Field(default=False, description="learned per-head sink logits (gpt-oss): no KV, cost neglected")
    # name resolution (mistfast/modelnames.py): Hugging Face ids and other spellings of this
    # architecture, and the weight format its reference checkpoint ships in
    hf_ids: list[str] = []
    aliases: list[str] = []
    native_precision: str | dict | None = None
    source: str = ""

    @model_validator(mode="after")
    def _check(self):
        if self.num_heads % self.num_kv_heads:
            raise field_error("num_kv_heads", self.num_kv_heads,
                              f"must divide num_heads ({self.num_heads})")
        if self.num_experts:
            if not (1 <= self.top_k <= self.num_experts):
                raise field_error("top_k", self.top_k, f"must be in 1..num_experts ({self.num_experts})")
            if self.expert_ffn_dim <= 0:
                raise field_error("expert_ffn_dim", self.expert_ffn_dim, "must be > 0 for a MoE model")
            if self.first_dense_layers > self.num_layers:
                raise field_error("first_dense_layers", self.first_dense_layers,
                                  f"must be <= num_layers ({self.num_layers})")
        if self.sliding_window and self.is_mla:
            raise field_error("sliding_window", self.sliding_window, "local attention is not modelled for MLA models; use 0")
        if self.sliding_window and self.global_every > self.num_layers:
            raise field_error("global_every", self.global_every, f"must be <= num_layers ({self.num_layers}); 0 = every layer windowed")
        return self

    def is_moe_layer(self, i: int) -> bool:
        """Layer i (0-based) has a MoE FFN."""
        return self.is_moe and i >= self.first_dense_layers and (i + 1) % self.moe_every == 0

    @property
    def num_moe_layers(self) -> int:
        return sum(self.is_moe_layer(i) for i in range(self.num_layers))

    def is_window_layer(self, i: int) -> bool:
        """Layer i (0-based) uses local (sliding or chunked) attention."""
        if not self.sliding_window:
            return False
        return self.global_every == 0 or (i + 1) % self.global_every != 0

    @property
    def num_window_layers(self) -> int:
        return sum(self.is_window_layer(i) for i in range(self.num_layers))

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    @property
    def is_mla(self) -> bool:
        return self.kv_lora_rank > 0

    @property
    def ffn_mats(self) -> int:
        return 3 if self.gated_ffn else 2

    def kv_elems_per_token(self) -> int:
        """KV-cache elements per token over all layers (MODEL.md §1.3, MLA: L·(r_kv+d_rope))."""
        if self.architecture == "encoder":
            return 0
        if self.is_mla:
            return self.num_layers * (self.kv_lora_rank + self.rope_head_dim)
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim

    def param_count(self) -> float:
        """Parameters from the shapes (norms ignored, untied unless ``tied_embeddings``)."""
        D, L, dh = self.hidden_size, self.num_layers, self.head_dim
        attn = D * (self.num_heads + 2 * self.num_kv_heads) * dh + self.num_heads * dh * D
        if self.is_mla:  # q_a, q_b, kv_a, kv_b, o (MODEL.md §9.4)
            H, rq, rkv, dr = self.num_heads, self.q_lora_rank, self.kv_lora_rank, self.rope_head_dim
            q = D * rq + rq * H * (dh + dr) if rq else D * H * (dh + dr)
            attn = q + D * (rkv + dr) + rkv * H * 2 * dh + H * dh * D
        dense_ffn = self.ffn_mats * D * self.ffn_dim
        if self.is_moe:
            moe_ffn = (self.num_experts + self.num_shared_experts) * self.ffn_mats * D * self.expert_ffn_dim \
                + D * self.num_experts
            n_moe = self.num_moe_layers
            ffn = (L - n_moe) * dense_ffn + n_moe * moe_ffn
        else:
            ffn = L * dense_ffn
        emb = self.vocab_size * D * (1 if self.tied_embeddings else 2)
        return float(L * attn + ffn + emb)


# ----------------------------------------------------------------------------- client
class PrecisionSpec(Spec):
    weights: Dtype = "bf16"
    compute: Dtype = "bf16"
    kv: Dtype = "bf16"
    activations: Dtype = "bf16"
    # MoE expert weights (routed and shared) may be stored and multiplied in another format than
    # the rest (gpt-oss: MXFP4 experts, BF16 attention); None = same as weights / compute
    experts: Dtype | None = None
    experts_compute: Dtype | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_str(cls, v):
        if isinstance(v, str):
            if v not in DTYPE_BYTES:
                raise ValueError(f"unknown precision {v!r}; allowed: {', '.join(DTYPE_BYTES)}")
            if v in FP4_FORMATS:
                # block-scaled FP4 checkpoints: weights and GEMMs in the format; engines keep the
                # KV cache and activations in 16 bits unless told otherwise
                return {"weights": v, "compute": v, "kv": "bf16", "activations": "bf16"}
            # one name: weights, compute and KV in that dtype; activations stay 16-bit
            return {"weights": v, "compute": v, "kv": v, "activations": "bf16" if DTYPE_BYTES[v] < 2 else v}
        return v

    @property
    def expert_weights(self) -> str:
        return self.experts or self.weights

    @property
    def expert_compute(self) -> str:
        return self.experts_compute or self.compute


class EfficiencySpec(Spec):
    compute: float = Field(gt=0, le=1, default=0.75)
    memory: float = Field(gt=0, le=1, default=0.75)
    network: float = Field(gt=0, le=1, default=1.0)
    op_overhead_us: float = Field(ge=0, default=0.0)
    # fixed host time per engine step (scheduler, sampling, kernel launches), added to every step
    # after the measured-step correction (docs/step-model.md)
    step_overhead_ms: float = Field(ge=0, default=0.0)
    # prefill-step efficiency: a step whose token rows are a share x prefill takes (1 + x (1/prefill - 1))
    # times its roofline time (fitted from low-load TTFT rows, docs/calibration.md); 1 = off
    prefill: float = Field(gt=0, le=1, default=1.0)
    # per-request time outside the engine steps that a serving benchmark's client measures in its
    # TTFT and E2E (HTTP intake, tokenisation, hand-off to the engine loop, output processing, the
    # first streamed chunk); ms. The kernel's TTFT is engine-side (arrival at the engine to the first
    # token); `mistfast validate` adds this to predicted TTFT/E2E rows (docs/calibration.md)
    ttft_overhead_ms: float = Field(ge=0, default=0.0)
    # one-time delay of the first wave of a cold closed-loop benchmark (the C prompts sent at t = 0
    # to an engine that has served only a warm-up prompt: kernel JIT/autotuning on new shapes); ms.
    # `mistfast validate` adds it to those requests' TTFT/E2E (docs/calibration.md, "The TTFT tail")
    first_wave_ms: float = Field(ge=0, default=0.0)
    # MoE expert parallelism: tokens on the busiest device / the mean (>= 1) (MODEL.md §2.1 λ)
    expert_imbalance: float = Field(ge=1, default=1.0)
    # MoE expert GEMMs (routed and shared experts): their share of the expert-format peak, on top of
    # `compute` (grouped GEMMs over few tokens per expert, FP4/FP8 dequantisation, thin expert-TP
    # slices reach less of the peak than dense GEMMs). It only matters where the expert op is
    # compute-bound (prefill); weight-read-bound decode is unchanged (docs/step-model.md); 1 = off
    expert_compute: float = Field(gt=0, le=1, default=1.0)
    # W8A8 FP8 expert GEMMs (FP8 expert weights multiplied at the device's native FP8 rate: the
    # 128x128 block-scaled DeepSeek-V3/R1 and Qwen3-FP8 checkpoints): their share of the FP8 peak, on
    # top of `compute`; only where stepmodel.expert_fp8_applies (docs/moe-fidelity.md, session 11);
    # 1 = off
    expert_fp8: float = Field(gt=0, le=1, default=1.0)
    # W8A8 FP8 dense GEMMs of the same block-scaled checkpoints (QKV / MLA projections, O, dense FFN,
    # LM head of DeepSeek-V3/R1, Qwen3-FP8 dense and MoE; not the shared experts): their share of the FP8
    # peak, on top of `compute`; only where stepmodel.dense_fp8_applies (docs/calibration.md, "A fitted
    # dense block-scaled FP8 efficiency, session 12"); 1 = off
    dense_fp8: float = Field(gt=0, le=1, default=1.0)
    # FP8 GEMMs of a block-scaled checkpoint (1x128 activation groups, 128x128 weight blocks: official
    # Qwen "-FP8", DeepSeek-V3/R1 native) on a part without block-scaled MMAs (Hopper: partial sums
    # promoted and scaled on the CUDA cores every 128 of K): their share of the FP8 peak, on top of
    # `compute`, dense and expert GEMMs alike; 1 = off (docs/calibration.md, "GPUStack bursts, session 11")
    fp8_block_share: float = Field(gt=0, le=1, default=1.0)
    # kernel launches (docs/step-model.md, "Launch-bound steps"; mistfast.launch_time): host time per
    # kernel of an eager prefill step (the step lasts at least kernels x this), and the time per kernel
    # a graph-replayed decode-only step adds; µs, 0 = off
    prefill_launch_us: float = Field(ge=0, default=0.0)
    decode_launch_us: float = Field(ge=0, default=0.0)
    # host time per sequence per step (scheduler, sampler, detokeniser, streamer: Python work per
    # running request in vLLM and SGLang), µs; a step of n decode rows and m prefill chunks takes
    # (n + m) x this longer (docs/step-model.md, "Host time per sequence"); 0 = off
    seq_overhead_us: float = Field(ge=0, default=0.0, allow_inf_nan=False)
    # fixed latency of one collective call (TP AllReduce, AllGather, EP dispatch/combine), µs, added to
    # the link's hop latency and the bytes/bandwidth term (docs/step-model.md, "Collective latency");
    # fitted per (device, engine) (NCCL/RCCL launch and synchronisation under the framework)
    collective_us: float = Field(ge=0, default=5.0)
    source: str = "MODEL.md §2.1 defaults (reference system_eff 0.75)"


class StepCorrectionSpec(Spec):
    """Measured-step correction of the analytical model (MODEL.md §2.2): step time is multiplied
    by a factor interpolated linearly in log(token rows) between ``tokens`` knots, separately for
    steps with prefill and decode-only steps; outside the knots the end factor applies."""
    tokens: list[float] = Field(min_length=1, max_length=128)   # kernels.steptime.CORR_MAX knots
    prefill: list[float]
    decode: list[float]
    # optional factors of the attention op alone (same knots): the step then follows the context
    # length through the attention work, a correction over (tokens, context); default = the rows above
    attention_prefill: list[float] | None = None
    attention_decode: list[float] | None = None
    source: str = ""

    @model_validator(mode="after")
    def _check(self):
        if any(x <= 0 for x in self.tokens) or any(b <= a for a, b in zip(self.tokens, self.tokens[1:])):
            raise field_error("tokens", self.tokens, "must be > 0 and strictly increasing")
        for name in ("prefill", "decode", "attention_prefill", "attention_decode"):
            v = getattr(self, name)
            if v is None:
                continue
            if len(v) != len(self.tokens):
                raise field_error(name, f"{len(v)} values", f"needs one factor per knot ({len(self.tokens)})")
            if any(not (x > 0) for x in v):
                raise field_error(name, v, "factors must be > 0")
        return self


# captured CUDA-graph batch sizes of serving engines (scheduler.cuda_graph_sizes = "NAME")
CUDA_GRAPH_PRESETS = {
    # vLLM v0 worker/model_runner.py: _BATCH_SIZES_TO_CAPTURE = [1, 2, 4] + [8 * i for i in range(1, 33)]
    "vllm-v0": [1, 2, 4] + [8 * i for i in range(1, 33)],
}


class SchedulerSpec(Spec):
    batching: Literal["static", "continuous", "mixed", "chunked"] = "chunked"
    policy: Literal["fcfs", "spf", "lwl"] = "fcfs"
    max_batched_tokens: int = Field(gt=0, default=8192)
    max_batch_size: int = Field(gt=0, default=128)
    chunk_size: int = Field(gt=0, default=512)
    block_size: int = Field(gt=0, default=16)
    kv_memory_fraction: float = Field(gt=0, le=1, default=0.95)
    reserved_memory_GiB: float = Field(ge=0, default=3.5)
    watermark: float = Field(ge=0, lt=1, default=0.01)
    preemption: bool = True
    prefix_caching: bool = False
    prefix_cache_fraction: float = Field(ge=0, lt=1, default=0.25)
    static_pad: bool = False
    aging_s: float = Field(gt=0, default=30.0, description="waiting time after which a non-FCFS policy serves a request first")
    # a tuple keeps the spec hashable (pydantic then shares the default instead of deep-copying it)
    micro_batching: bool | None = Field(default=None, description="PP micro-batch pipelining: with pp > 1, up to pp "
                                        "batches (disjoint request sets) in flight; default on for pp > 1 unless "
                                        "reference = \"genz\" (false: strictly sequential steps, ENGINE_SEMANTICS.md)")
    cuda_graph_sizes: tuple[int, ...] = Field(default=(), max_length=128, description="captured CUDA-graph batch sizes: a decode-only step of T <= max tokens runs at the next captured size (empty: no padding)")
    max_batch_size_scope: Literal["running", "step"] = Field(default="running", description="what max_batch_size limits: the running set (\"running\", vLLM) or the requests scheduled in one step (\"step\", MIST: any number may run; docs/mist_parity.md)")
    kv_reserve: Literal["none", "sglang"] = Field(default="none", description="admission reserve: \"sglang\" admits a prompt only while the free KV tokens, less new_token_ratio x the running requests' remaining outputs (0.7 decaying to 0.098 over 600 decode batches), hold the prompt and its whole output (SGLang's PrefillAdder; ENGINE_SEMANTICS.md); \"none\": the KV blocks of the prompt and the watermark only")
    mix_prefill: bool = Field(default=True, description="chunked batching: a step with prefill chunks also carries the running decodes (true: vLLM, SGLang --enable-mixed-chunk); false: a step that admits or continues any prefill carries no decodes and the decodes run in steps without prefill (SGLang's default scheduler; ENGINE_SEMANTICS.md)")

    @field_validator("cuda_graph_sizes", mode="before")
    @classmethod
    def _graph_preset(cls, v):
        if isinstance(v, str):
            if v not in CUDA_GRAPH_PRESETS:
                raise ValueError(f"unknown preset; allowed: {', '.join(CUDA_GRAPH_PRESETS)} or a list of sizes")
            return CUDA_GRAPH_PRESETS[v]
        return v

    @field_validator("cuda_graph_sizes")
    @classmethod
    def _graph_sizes(cls, v):
        if any(x < 1 for x in v) or any(b <= a for a, b in zip(v, v[1:])):
            raise ValueError("must be >= 1 and strictly increasing, e.g. [1, 2, 4, 8, 16]")
        return v

    @model_validator(mode="after")
    def _budget_holds_a_full_batch(self):
        # as vLLM (SchedulerConfig: max_num_batched_tokens >= max_num_seqs): a step must be able
        # to decode every sequence the batch may hold
        field = "chunk_size" if self.batching == "chunked" else "max_batched_tokens"
        budget = getattr(self, field)
        if budget < self.max_batch_size:
            raise field_error(field, budget, f"the per-step token budget must be >= max_batch_size "
                              f"({self.max_batch_size}), or a full batch could never decode in one step")
        return self

    # KV capacity given directly (e.g. what an engine or another simulator reported); replaces the
    # kv_memory_fraction * (HBM - weights - reserved) rule. At most one of the two.
    kv_capacity_tokens: int | None = Field(default=None, gt=0, description="KV tokens one engine holds (overrides the memory rule)")
    kv_capacity_GiB: float | None = Field(default=None, gt=0, description="KV memory per device in GiB (overrides the memory rule)")

    @model_validator(mode="after")
    def _one_kv_capacity(self):
        if self.kv_capacity_tokens is not None and self.kv_capacity_GiB is not None:
            raise field_error("kv_capacity_GiB", self.kv_capacity_GiB,
                              f"give kv_capacity_tokens ({self.kv_capacity_tokens}) or kv_capacity_GiB, not both")
        return self


class ClientSpec(Spec):
    # weight bytes per device, computed once per (frozen) client: it walks every layer and is read
    # several times per configuration point (KV capacity, fit checks, summaries)
    _weight_bytes: tuple | None = PrivateAttr(default=None)
    name: str = "llm"
    model: ModelSpec
    device: DeviceSpec
    num_devices: int | None = Field(default=None, ge=1)
    tp: int = Field(ge=1, default=1)
    pp: int = Field(ge=1, default=1)
    ep: int = Field(ge=1, default=1)
    dp: int = Field(ge=1, default=1)
    precision: PrecisionSpec = PrecisionSpec()
    efficiency: EfficiencySpec = EfficiencySpec()
    scheduler: SchedulerSpec = SchedulerSpec()
    intra_node_link: LinkSpec | None = None
    inter_node_link: LinkSpec | None = None
    reference: Literal["correct", "genz"] = "correct"
    engine: str | None = Field(default=None, description="serving engine (e.g. vllm, trtllm-1, splitwise): selects calibrated efficiencies")
    step_correction: StepCorrectionSpec | None = None
    causal_attention: bool | None = None
    shared_prefix_read_once: bool = True
    mla_prefill: Literal["expanded", "absorbed"] = Field(default="expanded", description="MLA prefill form: per-head K/V rebuilt from the latent (what engines run) or the absorbed decode form")
    mist_memo: bool = Field(default=False, description="GenZ compat: reuse a step time for a batch with the same "
                            "token count and total KV as an earlier one, as MIST's 'exact' memo does")
    calibration: str | None = Field(default=None, description="calibration TOML to take engine efficiencies and step "
                                    "corrections from (default data/calibration.toml)")
    dp_attention: bool = Field(default=False, description="data-parallel attention over the tp ranks (SGLang "
                               "--enable-dp-attention, TensorRT-LLM enable_attention_dp); the experts stay split "
                               "over ep (docs/step-model.md)")
    harness_step_ms: float = Field(ge=0, default=0.0, description="host time per engine step of the serving "
                                   "harness around the engine (MLPerf harnesses: mistfast.mlperf), added to every step "
                                   "like efficiency.step_overhead_ms but not replaced by a calibration")
    harness_no_graphs: bool = Field(default=False, description="the engine replays no CUDA graphs (MLPerf harness "
                                    "configs with use_graphs False): the launch-time floor of "
                                    "efficiency.prefill_launch_us holds for decode-only steps too")
    attention_kernel_share: float = Field(default=1.0, gt=0, le=1, description="share of the modelled attention "
                                          "FLOP rate (efficiency.compute x the activation peak) that the engine's "
                                          "attention kernel reaches: vLLM's Triton attention for attention-sink "
                                          "models on pre-Hopper GPUs (validate.SINK_ATTENTION_TRITON_SHARE); "
                                          "1 = as modelled")

    @model_validator(mode="before")
    @classmethod
    def _calibrated(cls, data):
        """A client that names its engine (or a calibration file) gets the efficiencies fitted for
        (device, engine) and the step correction of its exact configuration from that calibration
        (MODEL.md §2.2) unless it sets ``efficiency`` / ``step_correction`` itself; an unknown engine
        name is an error listing the known families (mistfast.calibration_store.client_calibration)."""
        if isinstance(data, dict):   # no engine: the pooled fit of current engines (calibration_store._pooled_default)
            from .calibration_store import CalibrationError, client_calibration
            try:
                data = {**data, **client_calibration(data)}
            except CalibrationError as exc:
                which = "calibration" if str(exc).startswith("calibration file") else "engine"
                raise field_error(which, data.get(which), str(exc)) from None
        return data

    @model_validator(mode="before")
    @classmethod
    def _model_name(cls, data, info: ValidationInfo):
        """Hugging Face ids and other spellings of a model name the catalog model, and (unless the
        client sets ``precision``) the weight format of that checkpoint (mistfast/modelnames.py)."""
        if not isinstance(data, dict):
            return data
        from .modelnames import resolve_client_model
        try:
            return resolve_client_model(data, _catalog(info))
        except KeyError as exc:
            raise field_error("model", data.get("model"), exc.args[0]) from None

    @field_validator("model", mode="before")
    @classmethod
    def _model(cls, v, info: ValidationInfo):
        return _resolve("models", v, info)

    @field_validator("device", mode="before")
    @classmethod
    def _device(cls, v, info: ValidationInfo):
        return _resolve("devices", v, info)

    @field_validator("intra_node_link", "inter_node_link", mode="before")
    @classmethod
    def _link(cls, v, info: ValidationInfo):
        return None if v is None else _resolve("links", v, info)

    @model_validator(mode="after")
    def _check(self):
        m = self.model
        need = self.tp * self.pp * self.dp
        if self.num_devices is None:
            object.__setattr__(self, "num_devices", need)
        if self.num_devices != need:
            raise field_error("num_devices", self.num_devices,
                              f"must equal tp*pp*dp = {self.tp}*{self.pp}*{self.dp} = {need}")
        if m.num_heads % self.tp:
            raise field_error("tp", self.tp, f"tp must divide num_heads ({m.num_heads}) and the device count ({self.num_devices})")
        if self.pp > m.num_layers:
            raise field_error("pp", self.pp, f"pp must be <= num_layers ({m.num_layers})")
        if self.ep > 1:
            if not m.is_moe:
                raise field_error("ep", self.ep, f"ep > 1 needs a MoE model; {m.name} is dense")
            if self.tp % self.ep or m.num_experts % self.ep:
                raise field_error("ep", self.ep, f"ep must divide tp ({self.tp}) and num_experts ({m.num_experts})")
        if self.dp_attention:
            if not m.is_moe or self.tp < 2 or self.reference == "genz":
                raise field_error("dp_attention", True, "data-parallel attention needs a MoE model, tp >= 2 and "
                                  f"reference = \"correct\" (got {m.name}, tp = {self.tp}, reference = {self.reference!r})")
        if self.mist_memo and self.reference != "genz":
            raise field_error("mist_memo", True, "the MIST step-time memo is a GenZ-compat option: set reference = \"genz\"")
        s = self.scheduler
        if s.micro_batching and self.reference == "genz":
            raise field_error("scheduler.micro_batching", True, "GenZ/MIST compat (reference = \"genz\") runs PP "
                              "stages strictly sequentially: set micro_batching = false or reference = \"correct\"")
        if s.micro_batching and s.max_batch_size_scope == "step":
            raise field_error("scheduler.micro_batching", True, "PP micro-batches are each bounded by max_batch_size "
                              "over their running set: set micro_batching = false or max_batch_size_scope = \"running\"")
        pipelined = self.pp > 1 and (s.micro_batching if s.micro_batching is not None else
                                     self.reference != "genz" and s.max_batch_size_scope != "step")
        if s.kv_reserve != "none" and pipelined:
            raise field_error("scheduler.kv_reserve", s.kv_reserve, "the admission reserve is modelled for sequential "
                              "steps only: set scheduler.micro_batching = false or kv_reserve = \"none\"")
        if s.batching == "mixed" and not s.mix_prefill:
            raise field_error("scheduler.mix_prefill", False, "batching = \"mixed\" always puts decodes next to the "
                              "prompts: use batching = \"continuous\" (prompts apart) or \"chunked\"")
        if s.batching == "chunked" and s.chunk_size > s.max_batched_tokens:
            raise field_error("scheduler.chunk_size", s.chunk_size,
                              f"must be <= scheduler.max_batched_tokens ({s.max_batched_tokens})")
        return self

    # ---- derived sizes (MODEL.md §4.4) ----
    def _stage_layers(self) -> list[range]:
        """Layer indices of each PP stage: ceil(L/p) per stage, the last holds the rest."""
        L = self.model.num_layers
        lp = math.ceil(L / self.pp)
        return [range(i, min(i + lp, L)) for i in range(0, L, lp)]

    def _kv_layer_bytes(self) -> float:
        """KV bytes per token of one non-MLA layer on one device."""
        m = self.model
        return 2 * self._kv_heads_device() * m.head_dim * DTYPE_BYTES[self.precision.kv]

    def _kv_heads_device(self) -> float:
        """KV heads per device: ceil(Hkv/t) under TP; Hkv/t on average under data-parallel
        attention (each rank keeps all heads of its own sequences)."""
        if self.dp_attention:
            return self.model.num_kv_heads / self.tp
        return math.ceil(self.model.num_kv_heads / self.tp)

    def kv_bytes_per_token_device(self) -> float:
        """KV bytes per token on one device: 2·ceil(Hkv/t)·dh·ceil(L/p)·b_kv (MLA: replicated).

        Local-attention layers (sliding or chunked window) keep at most a window of tokens per
        sequence; their memory is set aside up front (window_kv_reserve_bytes_device), so a
        context token costs only the full-attention layers of the most loaded stage. A model
        whose every layer is windowed is charged per token over all layers (no cap)."""
        m = self.model
        if m.architecture == "encoder":
            return 0.0
        b_kv = DTYPE_BYTES[self.precision.kv]
        lp = math.ceil(m.num_layers / self.pp)
        if m.is_mla:  # replicated under TP; each rank its own sequences' under DP attention
            return (m.kv_lora_rank + m.rope_head_dim) * lp * b_kv / (self.tp if self.dp_attention else 1)
        if m.sliding_window and m.num_window_layers < m.num_layers:
            full = max(sum(not m.is_window_layer(i) for i in st) for st in self._stage_layers())
            return full * self._kv_layer_bytes()
        return 2 * self._kv_heads_device() * m.head_dim * lp * b_kv

    def window_kv_reserve_bytes_device(self) -> float:
        """KV bytes set aside for the windowed layers of the most loaded stage.

        A sequence holds at most sliding_window + block_size tokens (the window plus one partly
        filled block) in a windowed layer, so max_batch_size sequences need at most
        B·(W + b)·w bytes (w = windowed-layer KV bytes per token). Nor can the running sequences
        hold more window tokens than context tokens, which the pool left after the reserve bounds
        by (pool − reserve)/f (f = full-layer bytes per token); the reserve is the smaller of the
        two, min(B·(W + b)·w, pool·w/(w + f)), so the memory is never oversubscribed and the
        capacity is never below charging every layer per token. 0 without windowed layers and
        when every layer is windowed (then tokens are charged over all layers)."""
        m = self.model
        if m.architecture == "encoder" or m.is_mla or not m.sliding_window or m.num_window_layers == m.num_layers:
            return 0.0
        stages = self._stage_layers()
        win = max(sum(m.is_window_layer(i) for i in st) for st in stages) * self._kv_layer_bytes()
        full = self.kv_bytes_per_token_device()
        pool = self._kv_pool_bytes()
        if pool <= 0:
            return 0.0
        tokens = min(m.sliding_window + self.scheduler.block_size, m.max_model_len)
        return float(min(self.scheduler.max_batch_size * tokens * win, pool * win / (win + full)))

    def _kv_pool_bytes(self) -> float:
        """f·(M − W − R): device memory the engine gives to the KV cache."""
        s = self.scheduler
        return s.kv_memory_fraction * (self.device.memory_GiB * GiB - self.weight_bytes_device()
                                       - s.reserved_memory_GiB * GiB)

    def kv_bytes_per_token(self) -> float:
        """KV bytes per token of the whole model (what moves between clients)."""
        return self.model.kv_elems_per_token() * DTYPE_BYTES[self.precision.kv]

    def weight_bytes_device(self) -> float:
        """Weight bytes on the most loaded device (first or last PP stage)."""
        # cached with the inputs it depends on: model_copy(update=...) copies private attributes,
        # so a copy with another tp, pp, model or precision must not reuse the value
        key = (self.model, self.tp, self.pp, self.precision, self.dp_attention)
        c = self._weight_bytes
        if c is None or any(a is not b for a, b in zip(c[0], key)):
            c = (key, self._weight_bytes_device())
            self._weight_bytes = c
        return c[1]

    def _weight_bytes_device(self) -> float:
        m, t = self.model, self.tp
        bw = DTYPE_BYTES[self.precision.weights]
        bx = DTYPE_BYTES[self.precision.expert_weights]
        D, dh = m.hidden_size, m.head_dim
        hq, hkv = math.ceil(m.num_heads / t), math.ceil(m.num_kv_heads / t)
        rep = t if self.dp_attention else 1   # DP attention: attention, dense FFN, shared experts replicated
        if self.dp_attention:
            hq, hkv = m.num_heads, m.num_kv_heads
        if m.is_mla:
            # q (lora) + kv down/up projections + output, sharded by heads
            attn = D * (m.q_lora_rank or D) + (m.q_lora_rank or 0) * hq * (dh + m.rope_head_dim) \
                + D * (m.kv_lora_rank + m.rope_head_dim) + m.kv_lora_rank * hq * 2 * dh + hq * dh * D
        else:
            attn = D * (hq + 2 * hkv) * dh + hq * dh * D
        dense = m.ffn_mats * D * m.ffn_dim / t * rep
        if m.is_moe:
            # expert weights in weight-element units of their own format (x bx/bw; 1 when the same)
            moe = (m.num_experts + m.num_shared_experts * rep) * m.ffn_mats * D * m.expert_ffn_dim / t * (bx / bw) \
                + D * m.num_experts
        else:
            moe = 0.0
        per_layer = [attn + (moe if m.is_moe_layer(i) else dense) for i in range(m.num_layers)]
        stages = [sum(per_layer[i] for i in st) for st in self._stage_layers()]
        emb = m.vocab_size * D / t
        stages[0] += emb
        stages[-1] += 0.0 if (m.tied_embeddings and self.pp == 1) else emb
        return max(stages) * bw

    def kv_capacity_tokens(self) -> int:
        """KV tokens one engine can hold: floor((f·(M − W − R) − window reserve)/kv_bytes_per_token_device)."""
        s = self.scheduler
        if s.kv_capacity_tokens is not None:
            return int(s.kv_capacity_tokens)
        free = s.kv_memory_fraction * (self.device.memory_GiB * GiB - self.weight_bytes_device()
                                       - s.reserved_memory_GiB * GiB)
        if self.model.sliding_window:
            free -= self.window_kv_reserve_bytes_device()
        if s.kv_capacity_GiB is not None:
            free = s.kv_capacity_GiB * GiB
        per_tok = self.kv_bytes_per_token_device()
        if per_tok == 0:
            return 2**62 if free > 0 else 0
        return max(0, int(free // per_tok))

    def kv_capacity_blocks(self) -> int:
        return self.kv_capacity_tokens() // self.scheduler.block_size


def check_fits(client: ClientSpec, path: str = "clients[0]") -> None:
    """Raise a SpecError when the model's weights (plus reserve) leave no room for KV."""
    w = client.weight_bytes_device()
    mem = client.device.memory_GiB * GiB
    blocks = client.kv_capacity_blocks()
    tokens = client.kv_capacity_tokens()
    if blocks < 1 and tokens >= 1:
        raise SpecError([f"{path}.scheduler.block_size = {client.scheduler.block_size}: larger than the KV cache "
                         f"({tokens} tokens for {client.model.name} on {client.device.name}); use a block of at most "
                         f"{tokens} tokens"])
    if blocks < 1:
        raise SpecError([
            f"{path} = {client.model.name} on {client.num_devices} x {client.device.name}: model does not fit; "
            f"weights need {w / GiB:.1f} GiB per device (tp={client.tp}, pp={client.pp}, {client.precision.weights}) "
            f"+ {client.scheduler.reserved_memory_GiB} GiB reserved, but the device has {mem / GiB:.0f} GiB; "
            f"raise tp/pp, use a smaller precision, or a larger device"])


# ----------------------------------------------------------------------------- workload
def _canonical_dataset(name: Any) -> str:
    """A named benchmark dataset's canonical name (mistfast.datasets); the error lists the known ones."""
    from .datasets import DatasetError, dataset_names, resolve_dataset
    try:
        return resolve_dataset(name)
    except DatasetError:
        raise field_error("dataset", name, f"unknown dataset; known: {', '.join(dataset_names())}") from None


class LengthSpec(Spec):
    dist: Literal["fixed", "normal", "lognormal", "uniform", "empirical", "dataset"] = "fixed"
    value: int | None = Field(default=None, ge=1)
    mean: float | None = Field(default=None, gt=0)
    std: float | None = Field(default=None, ge=0)
    low: int | None = Field(default=None, ge=1)
    high: int | None = Field(default=None, ge=1)
    values: list[int] | None = None
    probs: list[float] | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    # named benchmark dataset (mistfast.datasets): `{ dataset = "sharegpt" }`; `value` and
    # `range_ratio` set the nominal length and spread of the parametric ones (random, sonnet)
    dataset: str | None = None
    range_ratio: float | None = Field(default=None, ge=0, lt=1)

    @model_validator(mode="before")
    @classmethod
    def _from_int(cls, v):
        if isinstance(v, dict) and v.get("dataset") is not None:
            v = {**v, "dist": v.get("dist", "dataset"), "dataset": _canonical_dataset(v["dataset"])}
        return {"dist": "fixed", "value": v} if isinstance(v, int) else v

    @model_validator(mode="after")
    def _check(self):
        if self.dist == "dataset" or self.dataset is not None:
            return self._check_dataset()
        if self.range_ratio is not None:
            raise field_error("range_ratio", self.range_ratio, "only applies with dataset = \"random\"")
        need = {"fixed": ["value"], "normal": ["mean", "std"], "lognormal": ["mean", "std"],
                "uniform": ["low", "high"], "empirical": ["values"]}[self.dist]
        for f in need:
            if getattr(self, f) is None:
                raise field_error(f, None, f"required for dist = {self.dist!r}")
        if self.dist == "uniform" and self.high < self.low:
            raise field_error("high", self.high, f"must be >= low ({self.low})")
        if self.dist == "empirical" and self.probs is not None and len(self.probs) != len(self.values):
            raise field_error("probs", f"{len(self.probs)} items", f"must have one probability per value ({len(self.values)})")
        return self

    def _check_dataset(self):
        if self.dist != "dataset":
            raise field_error("dist", self.dist, "must be 'dataset' (or left out) when dataset is given")
        if self.dataset is None:
            raise field_error("dataset", None, "required for dist = 'dataset'")
        stray = [f for f in ("mean", "std", "low", "high", "values", "probs") if getattr(self, f) is not None]
        if stray:
            raise field_error(stray[0], getattr(self, stray[0]), f"does not apply to dataset = {self.dataset!r} "
                              f"(allowed with a dataset: value, range_ratio, max_tokens)")
        from .datasets import get_dataset
        if get_dataset(self.dataset).generator == "table":
            for f in ("value", "range_ratio"):
                if getattr(self, f) is not None:
                    raise field_error(f, getattr(self, f), f"dataset {self.dataset!r} has fixed length distributions; "
                                      f"{f} applies only to the parametric datasets (random, sonnet)")
        elif self.range_ratio is not None and get_dataset(self.dataset).generator != "vllm_random":
            raise field_error("range_ratio", self.range_ratio, "only applies with dataset = \"random\"")
        return self


class ArrivalSpec(Spec):
    process: Literal["poisson", "gamma", "weibull", "uniform", "normal", "bursty", "offline", "closed_loop"] = "poisson"
    rate_rps: float | None = Field(default=None, gt=0)
    cv: float = Field(default=1.0, gt=0)
    concurrency: int | None = Field(default=None, ge=1, description="users in a closed loop")
    think_time_s: float = Field(default=0.0, ge=0)
    burst_factor: float = Field(default=3.0, ge=1)
    burst_freq: float = Field(default=0.1, gt=0)
    burst_power: float = Field(default=4.0, gt=0)

    @model_validator(mode="after")
    def _check(self):
        if self.process in ("offline", "closed_loop"):
            if self.process == "closed_loop" and self.concurrency is None:
                raise field_error("concurrency", None, "required for process = 'closed_loop'")
        elif self.rate_rps is None:
            raise field_error("rate_rps", None, f"required (> 0) for process = {self.process!r}")
        return self


class TraceSpec(Spec):
    path: str
    format: Literal["azure", "mooncake", "lengths", "servegen"] | None = None
    chunk: int | None = Field(default=None, ge=0, description="ServeGen client chunk number")
    start_s: float = Field(default=0.0, ge=0)
    end_s: float | None = Field(default=None, gt=0)
    rate_scale: float = Field(default=1.0, gt=0)
    sample: float | None = Field(default=None, gt=0, description="keep this many requests (>=1) or this fraction (<1)")
    use_arrivals: bool = True
    shift_arrivals: bool = Field(default=False, description="move the trace so its first arrival is at t = 0 "
                                 "(otherwise the trace's own times are kept)")


class DatasetPresetSpec(Spec):
    """`workload.dataset`: a named benchmark dataset for both input and output lengths (drawn as
    joint pairs); options for the parametric ones (random, sonnet)."""
    name: str
    input_len: int | None = Field(default=None, ge=1)
    output_len: int | None = Field(default=None, ge=1)
    range_ratio: float | None = Field(default=None, ge=0, lt=1)


class WorkloadSpec(Spec):
    num_requests: int = Field(default=1000, ge=1, description="synthetic workloads: requests drawn; traces: "
                              "when given, the first ones kept (default: the whole trace)")
    arrival: ArrivalSpec = ArrivalSpec(rate_rps=10.0)
    input: LengthSpec = LengthSpec(dist="lognormal", mean=1155, std=1109, max_tokens=16384)
    output: LengthSpec = LengthSpec(dist="lognormal", mean=211, std=230, max_tokens=4096)
    trace: TraceSpec | None = None
    prefix_tokens: int = Field(default=0, ge=0, description="synthetic shared prefix per request (tokens)")
    prefix_groups: int = Field(default=1, ge=1, description="number of distinct shared prefixes")
    branches: int = Field(default=1, ge=1, description="parallel decode branches per request (multi-path reasoning)")
    dataset: DatasetPresetSpec | None = Field(default=None, description="named benchmark dataset for input and output")

    @model_validator(mode="before")
    @classmethod
    def _dataset_preset(cls, v):
        """`dataset = "sharegpt"` (or a table with name and options) sets input and output unless given."""
        if not isinstance(v, dict) or v.get("dataset") is None:
            return v
        preset = v["dataset"]
        if isinstance(preset, str):
            preset = {"name": preset}
        if not isinstance(preset, dict) or "name" not in preset:
            return v  # the field validator reports the shape
        name = _canonical_dataset(preset["name"])
        v = {**v, "dataset": {**preset, "name": name}}
        rr = preset.get("range_ratio")
        for side, length in (("input", preset.get("input_len")), ("output", preset.get("output_len"))):
            if side not in v:
                v[side] = {k: x for k, x in (("dataset", name), ("value", length), ("range_ratio", rr)) if x is not None}
        return v


# ----------------------------------------------------------------------------- pipelines (multi-client)


class ServerSpec(Spec):
    """A non-LLM client: CPU pre/post-processing (``kind = "cpu"``, c-server FCFS) or an IVF-PQ
    vector retrieval host (``kind = "retrieval"``, batched, RAGO cost model, MODEL.md §3.2)."""
    name: str
    kind: Literal["cpu", "retrieval"]
    device: DeviceSpec | None = None
    replicas: int = Field(default=1, ge=1)
    # cpu
    slots: int = Field(default=8, ge=1, description="cores serving requests in parallel")
    base_ms: float = Field(default=1.0, ge=0)
    per_token_us: float = Field(default=1.0, ge=0)
    # retrieval (RAGO; defaults: the MODEL.md §10.2 RAG study index)
    dim: int = Field(default=768, ge=1, description="vector dimension D")
    centroids: int = Field(default=4_000_000, ge=1)
    probes: int = Field(default=50, ge=1)
    pq_m: int = Field(default=16, ge=1)
    vectors_per_list: int = Field(default=5000, ge=1)
    top_k: int = Field(default=20, ge=1)
    id_bytes: int = Field(default=8, ge=0)
    max_batch: int = Field(default=32, ge=1)
    overlap: bool = False
    memory_resource: str | None = Field(default=None, description="name of a tier whose bandwidth the index reads share")

    @field_validator("device", mode="before")
    @classmethod
    def _device(cls, v, info: ValidationInfo):
        return None if v is None else _resolve("devices", v, info)

    @model_validator(mode="after")
    def _check(self):
        if self.kind == "retrieval" and self.device is None:
            raise field_error("device", None, "a retrieval server needs a device (e.g. \"SPR\", \"Grace\")")
        return self

    def ivf_costs(self) -> tuple[float, float, float]:
        """(FLOP per query, bytes per batch, bytes per query) of IVF-PQ search (MODEL.md §3.2)."""
        D, Cc, npb, M, Nc, k = self.dim, self.centroids, self.probes, self.pq_m, self.vectors_per_list, self.top_k
        flop_q = 2 * D * Cc + M * Nc * npb + 2 * D * k
        bytes_batch = 4 * Cc * D + 4 * 256 * D
        bytes_q = 4 * D + 8 * npb + npb * Nc * (M + self.id_bytes) + 4 * k + 4 * k * D + 4 * k
        return float(flop_q), float(bytes_batch), float(bytes_q)


class TierSpec(Spec):
    """A KV-cache memory tier (KV_FETCH source) with the link that brings KV to its clients."""
    name: str
    tier: MemoryTierSpec
    link: LinkSpec
    group_size: int | None = Field(default=None, ge=1, description="private/shared stores: one instance of this tier "
                                   "(with its own bandwidth and link) per group of this many consecutive replicas of "
                                   "the pool its kv_fetch stages feed (1 = private per client); None = one shared instance")

    @field_validator("tier", mode="before")
    @classmethod
    def _tier(cls, v, info: ValidationInfo):
        return _resolve("memory_tiers", v, info)

    @field_validator("link", mode="before")
    @classmethod
    def _link(cls, v, info: ValidationInfo):
        return _resolve("links", v, info)


class ClientLinkSpec(Spec):
    """The link used by transfers between two client groups (both directions); one shared resource."""
    between: tuple[str, str]
    link: LinkSpec

    @field_validator("link", mode="before")
    @classmethod
    def _link(cls, v, info: ValidationInfo):
        return _resolve("links", v, info)


class TierHitSpec(Spec):
    tier: str
    hit: float = Field(ge=0, le=1, description="hit rate at this tier given a miss above")


class StageSpec(Spec):
    kind: Literal["pre", "post", "embed", "retrieve", "rerank", "kv_fetch", "llm", "prefill", "decode", "reason", "verify"]
    pool: str | list[str] | None = None
    routing: Literal["round_robin", "least_prefill_tokens", "least_decodes", "least_kv", "join_shortest_queue",
                     "heavy_light", "least_requests", "least_drain_time", "mist_jsq"] = "round_robin"
    heavy_threshold: int = Field(default=2048, ge=0)
    # retrieve / rerank
    docs: int = Field(default=0, ge=0)
    doc_tokens: int = Field(default=512, ge=1)
    # kv_fetch
    past_tokens: int = Field(default=0, ge=0)
    tiers: list[TierHitSpec] = []
    write_back: bool = Field(default=False, description="kv_fetch with use_hashes: the prompt's new full blocks move to the first tier after the prefill as a transfer over its port and link, competing with reads (MODEL.md §4.2)")
    use_hashes: bool = Field(default=False, description="hits emerge from the tiers' LRU contents and the requests' prefix-block hashes (the prompt's own blocks), instead of fixed hit rates")
    # reason: a policy LLM writing `steps` segments of `step_tokens`, each checked by `verifier`
    steps: int = Field(default=1, ge=1, description="most reasoning segments")
    step_tokens: int = Field(default=256, ge=1)
    verifier: str | list[str] | None = None
    stop_prob: float = Field(default=0.0, ge=0, le=1, description="chance the verifier stops the loop after a segment")
    # prefill / decode (P/D disaggregation): Splitwise overflow into a mixed pool
    overflow_pool: str | list[str] | None = Field(default=None, description="Splitwise mixed pool: client(s) that take this prefill or decode stage when the pool's pick is overloaded (ENGINE_SEMANTICS.md)")
    overflow_tokens: int = Field(default=8192, ge=1, description="a prefill pick is overloaded when requests wait there and its pending prefill tokens + the prompt exceed this (Splitwise: 8,192)")
    # decode (P/D disaggregation)
    kv_transfer: Literal["whole", "layerwise"] = Field(default="whole", description="decode stage: the prompt's KV moves after the prefill step (whole) or layer by layer, overlapped with the prefill step that computes it (layerwise, MODEL.md §5.2)")
    kv_backpressure: bool = Field(default=False, description="the decode client reserves the KV blocks of a finished prefill before its transfer starts; until then the request holds its blocks on the prefill client (MODEL.md §4.4)")


class PipelineSpec(Spec):
    name: str = "default"
    weight: float = Field(default=1.0, gt=0)
    branches: int = Field(default=1, ge=1)
    stages: list[StageSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self):
        kinds = [s.kind for s in self.stages]
        for i, s in enumerate(self.stages):
            if s.kind == "kv_fetch" and (i + 1 >= len(kinds) or kinds[i + 1] not in ("llm", "prefill")):
                raise field_error(f"stages[{i}].kind", s.kind, "a kv_fetch stage must be followed by an llm or prefill stage")
            if s.kind == "decode" and (i == 0 or kinds[i - 1] != "prefill"):
                raise field_error(f"stages[{i}].kind", s.kind, "a decode stage must follow a prefill stage")
            if s.kind == "prefill" and (i + 1 >= len(kinds) or kinds[i + 1] != "decode"):
                raise field_error(f"stages[{i}].kind", s.kind, "a prefill stage must be followed by a decode stage")
            if s.kind != "kv_fetch" and s.pool is None:
                raise field_error(f"stages[{i}].pool", None, "names the client(s) serving this stage")
            if s.overflow_pool is not None and s.kind not in ("prefill", "decode"):
                raise field_error(f"stages[{i}].overflow_pool", s.overflow_pool, "applies to a prefill or decode stage only")
            if s.overflow_pool is not None and s.routing in ("heavy_light", "mist_jsq"):
                raise field_error(f"stages[{i}].routing", s.routing, "with overflow_pool, one of round_robin, "
                                  "least_prefill_tokens, least_decodes, least_kv, join_shortest_queue, least_requests, "
                                  "least_drain_time")
            if s.write_back and not (s.kind == "kv_fetch" and s.use_hashes):
                raise field_error(f"stages[{i}].write_back", True, "applies to a kv_fetch stage with use_hashes = true only")
            if s.kv_transfer != "whole" and s.kind != "decode":
                raise field_error(f"stages[{i}].kv_transfer", s.kv_transfer, "applies to a decode stage only")
            if s.kv_backpressure and s.kind != "decode":
                raise field_error(f"stages[{i}].kv_backpressure", True, "applies to a decode stage only")
            if s.kind == "reason" and s.verifier is None and s.steps > 1:
                raise field_error(f"stages[{i}].verifier", None, "a multi-step reason stage needs a verifier client")
        if not any(k in ("llm", "prefill", "reason") for k in kinds):
            raise field_error("stages", kinds, "a pipeline needs an llm, prefill or reason stage")
        return self


class TopologyLevelSpec(Spec):
    name: str
    bandwidth_GBps: float = Field(gt=0)
    efficiency: float = Field(gt=0, le=1, default=1.0)
    latency_us: float = Field(ge=0, default=0.0)


class TopologySpec(Spec):
    """Hierarchical interconnect (MODEL.md §7): clients are packed into nodes by their device
    footprint, nodes into racks; levels are node, rack, pod."""
    name: str = "custom"
    gpus_per_node: int = Field(default=8, ge=1)
    nodes_per_rack: int = Field(default=8, ge=1)
    levels: list[TopologyLevelSpec] = Field(min_length=3, max_length=3)
    source: str = ""


class NetworkSpec(Spec):
    default_link: LinkSpec = Field(default="mist-default")  # type: ignore[assignment]
    topology: TopologySpec | None = None

    @field_validator("topology", mode="before")
    @classmethod
    def _topo(cls, v, info: ValidationInfo):
        return None if v is None else _resolve("topologies", v, info)

    @field_validator("default_link", mode="before")
    @classmethod
    def _link(cls, v, info: ValidationInfo):
        return _resolve("links", v, info)



class SLOSpec(Spec):
    ttft_ms: float = Field(default=500.0, gt=0)
    tpot_ms: float = Field(default=50.0, gt=0)
    e2e_ms: float | None = Field(default=None, gt=0)


class SimulationSpec(Spec):
    horizon_s: float = Field(default=3600.0, gt=0, allow_inf_nan=True,
                             description="arrivals stop here (inf: never, the default of a request-list trace)")
    max_sim_time_s: float | None = Field(default=None, gt=0, description="hard stop; default horizon_s*10")
    drain: bool = True
    seed: int = Field(default=259, ge=0)
    warmup_s: float = Field(default=0.0, ge=0)
    per_request: bool = False
    percentile_method: Literal["linear", "compat"] = "linear"
    metrics: Literal["default", "mist"] = Field(
        default="default", description="'mist': the reference's definitions (docs/mist_parity.md): TPOT = mean "
        "duration of the steps each decode ran in, throughputs over [0, start of the last step that finished a "
        "request], int(q n) percentiles")

    @model_validator(mode="after")
    def _window(self):
        # the measurement window [warmup_s, horizon_s] must hold some arrivals
        if self.warmup_s >= self.horizon_s:
            raise field_error("warmup_s", self.warmup_s, f"must be < horizon_s ({self.horizon_s}): "
                              "requests arriving before warmup_s are left out of every metric")
        return self


class MetricsSpec(Spec):
    quantiles: list[float] | None = Field(default=None, min_length=1, max_length=8,
                                          description="quantiles of TTFT, TPOT, E2E and queueing delay (the "
                                                      "*_quantile_ms variables, on a `quantile` dimension, exist only "
                                                      "when this is set); p50/p90/p99 variables always exist")

    @field_validator("quantiles")
    @classmethod
    def _in_unit_interval(cls, v):
        if v is None:
            return v
        bad = [q for q in v if not 0.0 < q < 1.0]
        if bad:
            raise ValueError(f"every quantile must lie in (0, 1), e.g. 0.95 for p95; got {bad}")
        if len(set(v)) != len(v):
            raise ValueError("quantiles must be distinct")
        return v


class ScenarioSpec(Spec):
    clients: list[ClientSpec] = Field(min_length=1)
    servers: list[ServerSpec] = []
    tiers: list[TierSpec] = []
    links: list[ClientLinkSpec] = []
    network: NetworkSpec = NetworkSpec()
    pipelines: list[PipelineSpec] = []
    workload: WorkloadSpec = WorkloadSpec()
    simulation: SimulationSpec = SimulationSpec()
    slo: SLOSpec = SLOSpec()
    metrics: MetricsSpec = MetricsSpec()

    @model_validator(mode="before")
    @classmethod
    def _trace_runs_whole(cls, data):
        """A request-list trace (not the ServeGen generator) runs whole by default: unless the
        scenario sets simulation.horizon_s, arrivals never stop early (MODEL.md §1.4)."""
        if isinstance(data, dict):
            wl = data.get("workload")
            tr = wl.get("trace") if isinstance(wl, dict) else getattr(wl, "trace", None)
            fmt = tr.get("format") if isinstance(tr, dict) else getattr(tr, "format", None)
            if tr is not None and fmt != "servegen":
                sim = data.get("simulation")
                if sim is None or (isinstance(sim, dict) and "horizon_s" not in sim):
                    data = {**data, "simulation": {**(sim or {}), "horizon_s": float("inf")}}
        return data

    @model_validator(mode="after")
    def _references(self):
        problems = scenario_reference_problems(self)
        if problems:
            raise field_errors(problems)
        return self

    calibration: str | None = Field(default=None, description="calibration TOML for every client that names none")

    @model_validator(mode="before")
    @classmethod
    def _scenario_calibration(cls, data):
        """``calibration = "path.toml"`` at the top level applies to every client without its own."""
        if isinstance(data, dict) and data.get("calibration") and isinstance(data.get("clients"), list):
            cal = data["calibration"]
            data = {**data, "clients": [({**c, "calibration": cal} if isinstance(c, dict) and "calibration" not in c
                                         else c) for c in data["clients"]]}
        return data

    @property
    def is_pipeline(self) -> bool:
        """Several clients, servers or explicit pipelines: the multi-client path."""
        return len(self.clients) > 1 or bool(self.servers) or bool(self.pipelines)

    @property
    def client(self) -> ClientSpec:
        return self.clients[0]


# ----------------------------------------------------------------------------- cross references
# which kind of client each stage kind may run on: "llm" = an LLM client with a decoder model,
# "model" = any LLM client (encoders and decoder-based embedders), "cpu"/"retrieval" = servers
STAGE_RUNS_ON = {"pre": ("cpu", "model"), "post": ("cpu", "model"), "embed": ("model",), "rerank": ("model",),
                 "retrieve": ("retrieval",), "llm": ("llm",), "prefill": ("llm",), "decode": ("llm",),
                 "reason": ("llm",), "verify": ("llm",)}
# phrases of the cross-reference problems below (a sweep refuses an axis value that causes one)
REFERENCE_MARKERS = ("stage runs on", "unknown client", "unknown tier", "names must be unique", "of the same kind")
_KIND_WORDS = {"cpu": "a CPU server (servers kind = 'cpu')", "retrieval": "a retrieval server (servers kind = 'retrieval')",
               "model": "an LLM client", "llm": "an LLM client with a decoder model"}


def _client_kinds(spec: "ScenarioSpec") -> dict[str, tuple[str, str]]:
    """Client and server names (and their replica instance names ``name[i]``) -> (kind, description)."""
    out: dict[str, tuple[str, str]] = {}
    for c in spec.clients:
        kind = "llm" if c.model.architecture == "decoder" else "model"
        desc = f"LLM client {c.name!r} ({c.model.name}, {c.model.architecture})"
        out[c.name] = (kind, desc)
    for sv in spec.servers:
        out.setdefault(sv.name, (sv.kind, f"{sv.kind} server {sv.name!r}"))
    return out


def _pool_kind(name: str, kinds: dict) -> tuple[str, str] | None:
    if name in kinds:
        return kinds[name]
    base, _, rest = name.partition("[")
    if rest.endswith("]") and rest[:-1].isdigit() and base in kinds:
        return kinds[base]
    return None


def _stage_pool_problems(where: str, stage_kind: str, pool, kinds: dict, allowed: tuple[str, ...]) -> list:
    names = [pool] if isinstance(pool, str) else list(pool)
    if not names:
        return [(where, pool, "names at least one client")]
    problems, seen = [], []
    for nm in names:
        k = _pool_kind(nm, kinds)
        if k is None:
            return [(where, nm, f"unknown client; known: {', '.join(sorted(kinds))}")]
        seen.append(k[0])
        if k[0] not in allowed and not (k[0] == "llm" and "model" in allowed):
            words = " or ".join(_KIND_WORDS[a] for a in allowed)
            article = "an" if stage_kind[0] in "aeiou" or stage_kind == "llm" else "a"
            problems.append((where, nm, f"{article} {stage_kind} stage runs on {words}; {k[1]} is not one"))
    if not problems and len(set(seen)) > 1:
        problems.append((where, names, "every client of one pool must be of the same kind"))
    return problems


def scenario_reference_problems(spec: "ScenarioSpec") -> list[tuple[str, Any, str]]:
    """Names that must exist and kinds that must match, as (field path, value, what is allowed)."""
    problems: list[tuple[str, Any, str]] = []
    seen: dict[str, str] = {}
    for what, items in (("clients", spec.clients), ("servers", spec.servers)):
        for i, x in enumerate(items):
            if x.name in seen:
                problems.append((f"{what}[{i}].name", x.name, f"names must be unique; {seen[x.name]} has it too"))
            else:
                seen[x.name] = f"{what}[{i}]"
    tiers = [t.name for t in spec.tiers]
    for i, t in enumerate(spec.tiers):
        if tiers.index(t.name) != i:
            problems.append((f"tiers[{i}].name", t.name, f"names must be unique; tiers[{tiers.index(t.name)}] has it too"))
    kinds = _client_kinds(spec)
    for i, ln in enumerate(spec.links):
        for j, nm in enumerate(ln.between):
            if nm not in kinds:
                problems.append((f"links[{i}].between[{j}]", nm, f"unknown client; known: {', '.join(sorted(kinds))}"))
    for i, sv in enumerate(spec.servers):
        if sv.memory_resource is not None and sv.memory_resource not in tiers:
            problems.append((f"servers[{i}].memory_resource", sv.memory_resource,
                             f"not a tier; tiers: {', '.join(tiers) or '(none)'}"))
    for p, pipe in enumerate(spec.pipelines):
        for i, st in enumerate(pipe.stages):
            where = f"pipelines[{p}].stages[{i}]"
            if st.kind == "kv_fetch":
                for j, th in enumerate(st.tiers):
                    if th.tier not in tiers:
                        problems.append((f"{where}.tiers[{j}].tier", th.tier,
                                         f"unknown tier; tiers: {', '.join(tiers) or '(none)'}"))
                if st.pool is not None:
                    problems.append((f"{where}.pool", st.pool, "a kv_fetch stage has no pool (the next stage's pool receives the KV)"))
                continue
            if st.pool is not None:
                problems += _stage_pool_problems(f"{where}.pool", st.kind, st.pool, kinds, STAGE_RUNS_ON[st.kind])
            if st.verifier is not None:
                if st.kind != "reason":
                    problems.append((f"{where}.verifier", st.verifier, "only a reason stage has a verifier"))
                else:
                    problems += _stage_pool_problems(f"{where}.verifier", "verify", st.verifier, kinds, STAGE_RUNS_ON["verify"])
    if not spec.pipelines and spec.is_pipeline and spec.clients[0].model.architecture != "decoder":
        problems.append(("clients[0].model", spec.clients[0].model.name,
                         "without [[pipelines]] the first client serves the requests: it needs a decoder model"))
    return problems


# ----------------------------------------------------------------------------- loading
DEFAULT_SCENARIO: dict[str, Any] = {
    "clients": [{"name": "llm", "model": "llama-3.1-8b", "device": "H100", "tp": 1,
                 "scheduler": {"batching": "chunked"}}],
    "workload": {"arrival": {"process": "poisson", "rate_rps": 10.0}},  # num_requests: WorkloadSpec default
}


def deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and "preset" not in v:
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def set_path(doc: dict, path: str, value: Any) -> dict:
    """Return a copy of ``doc`` with the dotted ``path`` (``clients[0].tp``, ``clients.0.tp``) set.

    Only the tables and lists along the path are copied; everything else is shared with ``doc``
    (documents are never modified in place), which keeps building many sweep points cheap."""
    import re
    parts = [p for p in re.split(r"\.|\[(\d+)\]", path) if p]
    out = dict(doc)
    cur: Any = out
    for i, p in enumerate(parts):
        last = i == len(parts) - 1
        key: Any = int(p) if p.isdigit() and isinstance(cur, list) else p
        if isinstance(cur, list):
            if not (isinstance(key, int) and 0 <= key < len(cur)):
                raise SpecError([f"{path}: index {p} out of range (list has {len(cur)} items)"])
        elif not isinstance(cur, dict):
            raise SpecError([f"{path}: cannot set a field inside a {type(cur).__name__}"])
        if last:
            cur[key] = value
        else:
            nxt = cur[key] if isinstance(cur, list) else cur.get(key)
            if isinstance(nxt, str):  # preset name: expand to a table so fields can be overridden
                nxt = {"preset": nxt}
            elif nxt is None:
                if parts[i + 1].isdigit():   # an item of a list the document does not have
                    raise SpecError([f"{path}: index {parts[i + 1]} out of range ({p} has no items)"])
                nxt = {}
            elif isinstance(nxt, dict):
                nxt = dict(nxt)
            elif isinstance(nxt, list):
                nxt = list(nxt)
            cur[key] = nxt
            cur = nxt
    return out


def _check_catalog_table(extra: Any) -> None:
    """An inline ``[catalog]`` is a table of kinds, each a table of named entries, each a table."""
    if extra is None:
        return
    if not isinstance(extra, dict):
        raise SpecError([f"catalog = {extra!r}: must be a table of catalog kinds, e.g. [catalog.devices.MyChip]"])
    problems = []
    for kind, entries in extra.items():
        if not isinstance(entries, dict):
            problems.append(f"catalog.{kind} = {entries!r}: must be a table of named entries, e.g. [catalog.{kind}.MyName]")
            continue
        for name, entry in entries.items():
            if not isinstance(entry, dict):
                problems.append(f"catalog.{kind}.{name} = {entry!r}: must be a table of fields")
    if problems:
        raise SpecError(problems)


def parse_scenario(doc: dict[str, Any], catalog: Catalog | None = None, *, base: dict | None = None) -> ScenarioSpec:
    """Validate a scenario document (already-parsed TOML), merged over the built-in defaults."""
    doc = dict(doc)
    extra_cat = doc.pop("catalog", None)
    _check_catalog_table(extra_cat)
    if extra_cat is not None or catalog is None:
        try:
            catalog = Catalog(extra=extra_cat) if extra_cat else (catalog or default_catalog())
        except KeyError as exc:
            raise SpecError([exc.args[0]]) from None
    merged = deep_merge(DEFAULT_SCENARIO if base is None else base, doc)
    try:
        spec = ScenarioSpec.model_validate(merged, context={"catalog": catalog})
    except ValidationError as err:
        raise format_validation_error(err) from None
    for i, c in enumerate(spec.clients):
        if c.model.architecture == "decoder":
            check_fits(c, f"clients[{i}]")
    from .limits import check_scenario
    check_scenario(spec)   # refuse what would run out of memory, before any work
    return spec


def load_toml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.exists():
        raise SpecError([f"{p}: file not found"])
    try:
        with open(p, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError([f"{p}: not valid TOML: {exc}"]) from None


def resolve_spec_paths(doc: dict[str, Any], folder: str | Path) -> dict[str, Any]:
    """A copy of a scenario (or sweep) document whose relative file paths (``workload.trace.path``)
    name files in ``folder`` (the spec file's folder), not in the working directory."""
    if isinstance(doc.get("scenario"), dict):
        return {**doc, "scenario": resolve_spec_paths(doc["scenario"], folder)}
    wl = doc.get("workload")
    tr = wl.get("trace") if isinstance(wl, dict) else None
    path = tr.get("path") if isinstance(tr, dict) else None
    if not isinstance(path, str) or path.startswith(("shared:", "samples:")):
        return doc
    p = Path(path).expanduser()
    if p.is_absolute():
        return doc
    return {**doc, "workload": {**wl, "trace": {**tr, "path": str(Path(folder).resolve() / p)}}}


def load_scenario(path: str | Path, overrides: dict[str, Any] | None = None) -> ScenarioSpec:
    """Load a scenario TOML; ``overrides`` maps dotted paths to values (``{"clients[0].tp": 2}``).
    Relative trace paths are relative to the file's folder."""
    doc = resolve_spec_paths(load_toml(path), Path(path).parent)
    doc.pop("sweep", None)
    doc = doc.get("scenario", doc)
    doc = _calibration_paths_relative_to(doc, Path(path).parent)
    for k, v in (overrides or {}).items():
        doc = set_path(deep_merge(DEFAULT_SCENARIO, doc), k, v)
    return parse_scenario(doc)


def _calibration_paths_relative_to(doc: dict, folder: Path) -> dict:
    """``calibration`` paths in a scenario file are relative to that file."""
    def fix(v):
        return str(folder / v) if isinstance(v, str) and v and not Path(v).expanduser().is_absolute() else v
    out = dict(doc)
    if "calibration" in out:
        out["calibration"] = fix(out["calibration"])
    if isinstance(out.get("clients"), list):
        out["clients"] = [({**c, "calibration": fix(c["calibration"])} if isinstance(c, dict) and "calibration" in c
                           else c) for c in out["clients"]]
    return out


def make_client(model: str | dict = "llama-3.1-8b", device: str | dict = "H100", **fields) -> ClientSpec:
    """Convenience constructor for notebooks: ``make_client("llama-3.1-70b", "H100", tp=8)``."""
    try:
        c = ClientSpec.model_validate({"model": model, "device": device, **fields},
                                      context={"catalog": default_catalog()})
    except ValidationError as err:
        raise format_validation_error(err) from None
    if c.model.architecture == "decoder":
        check_fits(c, "client")
    return c
