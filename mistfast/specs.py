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

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from .catalog import Catalog, default_catalog, tomllib

GiB = float(2**30)

# bytes per element of each precision name (fp6 packs 4 values in 3 bytes)
DTYPE_BYTES = {"fp32": 4.0, "tf32": 4.0, "bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "int8": 1.0,
               "fp6": 0.75, "fp4": 0.5, "int4": 0.5}
# an unsupported compute dtype runs at the next higher supported rate (MODEL.md §2.3)
DTYPE_FALLBACK = {"fp4": "fp6", "int4": "int8", "fp6": "fp8", "int8": "fp8", "fp8": "bf16",
                  "fp16": "bf16", "bf16": "fp32", "tf32": "fp32", "fp32": None}
Dtype = Literal["fp32", "tf32", "bf16", "fp16", "fp8", "int8", "fp6", "fp4", "int4"]


class SpecError(ValueError):
    """A spec problem. ``str()`` lists every problem as ``path = value: what is allowed``."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid spec:\n  " + "\n  ".join(problems) if len(problems) > 1
                         else problems[0])


def field_error(field: str, value: Any, message: str) -> ValueError:
    """Cross-field check failure; the formatter appends ``field`` to the error path."""
    return ValueError(f"@{field}@{value!r}@{message}")


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
        if msg.startswith("@"):  # from field_error
            _, fld, val, msg = msg.split("@", 3)
            path = f"{path}.{fld}" if path else fld
            problems.append(f"{prefix}{path} = {val}: {msg}")
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
    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)

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
    tdp_W: float = Field(ge=0, default=0.0)
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

    def peak_flops(self, dtype: str) -> float:
        """Dense peak FLOP/s for ``dtype``; unsupported dtypes run at the next higher rate."""
        d: str | None = dtype
        while d is not None:
            if d in self.tflops:
                return self.tflops[d] * 1e12
            d = DTYPE_FALLBACK[d]
        # nothing at or above: the slowest the device has
        return min(self.tflops.values()) * 1e12


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
        return self

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
        dense_ffn = self.ffn_mats * D * self.ffn_dim
        if self.is_moe:
            moe_ffn = (self.num_experts + self.num_shared_experts) * self.ffn_mats * D * self.expert_ffn_dim \
                + D * self.num_experts
            ffn = self.first_dense_layers * dense_ffn + (L - self.first_dense_layers) * moe_ffn
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

    @model_validator(mode="before")
    @classmethod
    def _from_str(cls, v):
        if isinstance(v, str):
            if v not in DTYPE_BYTES:
                raise ValueError(f"unknown precision {v!r}; allowed: {', '.join(DTYPE_BYTES)}")
            # one name: weights, compute and KV in that dtype; activations stay 16-bit
            return {"weights": v, "compute": v, "kv": v, "activations": "bf16" if DTYPE_BYTES[v] < 2 else v}
        return v


class EfficiencySpec(Spec):
    compute: float = Field(gt=0, le=1, default=0.75)
    memory: float = Field(gt=0, le=1, default=0.75)
    network: float = Field(gt=0, le=1, default=1.0)
    op_overhead_us: float = Field(ge=0, default=0.0)
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
    calibration: str | None = Field(default=None, description="calibration TOML to take engine efficiencies and step "
                                    "corrections from (default data/calibration.toml)")

    @model_validator(mode="before")
    @classmethod
    def _calibrated(cls, data):
        """A client that names its engine (or a calibration file) gets the efficiencies fitted for
        (device, engine) and the step correction of its exact configuration from that calibration
        (MODEL.md §2.2) unless it sets ``efficiency`` / ``step_correction`` itself; an unknown engine
        name is an error listing the known families (mistfast.calibration_store.client_calibration)."""
        if isinstance(data, dict) and (data.get("engine") or data.get("calibration")):
            from .calibration_store import CalibrationError, client_calibration
            try:
                data = {**data, **client_calibration(data)}
            except CalibrationError as exc:
                which = "calibration" if str(exc).startswith("calibration file") else "engine"
                raise field_error(which, data.get(which), str(exc)) from None
        return data

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
        s = self.scheduler
        if s.batching == "chunked" and s.chunk_size > s.max_batched_tokens:
            raise field_error("scheduler.chunk_size", s.chunk_size,
                              f"must be <= scheduler.max_batched_tokens ({s.max_batched_tokens})")
        return self

    # ---- derived sizes (MODEL.md §4.4) ----
    def kv_bytes_per_token_device(self) -> float:
        """KV bytes per token on one device: 2·ceil(Hkv/t)·dh·ceil(L/p)·b_kv (MLA: replicated)."""
        m = self.model
        if m.architecture == "encoder":
            return 0.0
        b_kv = DTYPE_BYTES[self.precision.kv]
        lp = math.ceil(m.num_layers / self.pp)
        if m.is_mla:
            return (m.kv_lora_rank + m.rope_head_dim) * lp * b_kv
        return 2 * math.ceil(m.num_kv_heads / self.tp) * m.head_dim * lp * b_kv

    def kv_bytes_per_token(self) -> float:
        """KV bytes per token of the whole model (what moves between clients)."""
        return self.model.kv_elems_per_token() * DTYPE_BYTES[self.precision.kv]

    def weight_bytes_device(self) -> float:
        """Weight bytes on the most loaded device (first or last PP stage)."""
        m, t = self.model, self.tp
        bw = DTYPE_BYTES[self.precision.weights]
        D, dh = m.hidden_size, m.head_dim
        hq, hkv = math.ceil(m.num_heads / t), math.ceil(m.num_kv_heads / t)
        if m.is_mla:
            # q (lora) + kv down/up projections + output, sharded by heads
            attn = D * (m.q_lora_rank or D) + (m.q_lora_rank or 0) * hq * (dh + m.rope_head_dim) \
                + D * (m.kv_lora_rank + m.rope_head_dim) + m.kv_lora_rank * hq * 2 * dh + hq * dh * D
        else:
            attn = D * (hq + 2 * hkv) * dh + hq * dh * D
        dense = m.ffn_mats * D * m.ffn_dim / t
        if m.is_moe:
            moe = (m.num_experts + m.num_shared_experts) * m.ffn_mats * D * m.expert_ffn_dim / t + D * m.num_experts
        else:
            moe = 0.0
        L, p = m.num_layers, self.pp
        lp = math.ceil(L / p)
        n_dense = m.first_dense_layers if m.is_moe else L
        per_layer = [attn + (dense if i < n_dense else moe) for i in range(L)]
        stages = [sum(per_layer[i:i + lp]) for i in range(0, L, lp)]
        emb = m.vocab_size * D / t
        stages[0] += emb
        stages[-1] += 0.0 if (m.tied_embeddings and p == 1) else emb
        return max(stages) * bw

    def kv_capacity_tokens(self) -> int:
        """KV tokens one engine can hold: floor(f·(M − W − R)/kv_bytes_per_token_device)."""
        s = self.scheduler
        if s.kv_capacity_tokens is not None:
            return int(s.kv_capacity_tokens)
        free = s.kv_memory_fraction * (self.device.memory_GiB * GiB - self.weight_bytes_device()
                                       - s.reserved_memory_GiB * GiB)
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
    if blocks < 1:
        raise SpecError([
            f"{path} = {client.model.name} on {client.num_devices} x {client.device.name}: model does not fit; "
            f"weights need {w / GiB:.1f} GiB per device (tp={client.tp}, pp={client.pp}, {client.precision.weights}) "
            f"+ {client.scheduler.reserved_memory_GiB} GiB reserved, but the device has {mem / GiB:.0f} GiB; "
            f"raise tp/pp, use a smaller precision, or a larger device"])


# ----------------------------------------------------------------------------- workload
class LengthSpec(Spec):
    dist: Literal["fixed", "normal", "lognormal", "uniform", "empirical"] = "fixed"
    value: int | None = Field(default=None, ge=1)
    mean: float | None = Field(default=None, gt=0)
    std: float | None = Field(default=None, ge=0)
    low: int | None = Field(default=None, ge=1)
    high: int | None = Field(default=None, ge=1)
    values: list[int] | None = None
    probs: list[float] | None = None
    max_tokens: int | None = Field(default=None, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _from_int(cls, v):
        return {"dist": "fixed", "value": v} if isinstance(v, int) else v

    @model_validator(mode="after")
    def _check(self):
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


class WorkloadSpec(Spec):
    num_requests: int = Field(default=1000, ge=1)
    arrival: ArrivalSpec = ArrivalSpec(rate_rps=10.0)
    input: LengthSpec = LengthSpec(dist="lognormal", mean=1155, std=1109, max_tokens=16384)
    output: LengthSpec = LengthSpec(dist="lognormal", mean=211, std=230, max_tokens=4096)
    trace: TraceSpec | None = None
    prefix_tokens: int = Field(default=0, ge=0, description="synthetic shared prefix per request (tokens)")
    prefix_groups: int = Field(default=1, ge=1, description="number of distinct shared prefixes")
    branches: int = Field(default=1, ge=1, description="parallel decode branches per request (multi-path reasoning)")


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
                     "heavy_light", "least_requests", "least_drain_time"] = "round_robin"
    heavy_threshold: int = Field(default=2048, ge=0)
    # retrieve / rerank
    docs: int = Field(default=0, ge=0)
    doc_tokens: int = Field(default=512, ge=1)
    # kv_fetch
    past_tokens: int = Field(default=0, ge=0)
    tiers: list[TierHitSpec] = []
    use_hashes: bool = Field(default=False, description="hits emerge from the tiers' LRU contents and the requests' prefix-block hashes (the prompt's own blocks), instead of fixed hit rates")
    # reason: a policy LLM writing `steps` segments of `step_tokens`, each checked by `verifier`
    steps: int = Field(default=1, ge=1, description="most reasoning segments")
    step_tokens: int = Field(default=256, ge=1)
    verifier: str | list[str] | None = None
    stop_prob: float = Field(default=0.0, ge=0, le=1, description="chance the verifier stops the loop after a segment")


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
    horizon_s: float = Field(default=3600.0, gt=0, description="arrivals stop here")
    max_sim_time_s: float | None = Field(default=None, gt=0, description="hard stop; default horizon_s*10")
    drain: bool = True
    seed: int = Field(default=259, ge=0)
    warmup_s: float = Field(default=0.0, ge=0)
    per_request: bool = False
    percentile_method: Literal["linear", "compat"] = "linear"


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


# ----------------------------------------------------------------------------- loading
DEFAULT_SCENARIO: dict[str, Any] = {
    "clients": [{"name": "llm", "model": "llama-3.1-8b", "device": "H100", "tp": 1,
                 "scheduler": {"batching": "chunked"}}],
    "workload": {"num_requests": 1000, "arrival": {"process": "poisson", "rate_rps": 10.0}},
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
                nxt = {}
            elif isinstance(nxt, dict):
                nxt = dict(nxt)
            elif isinstance(nxt, list):
                nxt = list(nxt)
            cur[key] = nxt
            cur = nxt
    return out


def parse_scenario(doc: dict[str, Any], catalog: Catalog | None = None, *, base: dict | None = None) -> ScenarioSpec:
    """Validate a scenario document (already-parsed TOML), merged over the built-in defaults."""
    doc = dict(doc)
    extra_cat = doc.pop("catalog", None)
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


def load_scenario(path: str | Path, overrides: dict[str, Any] | None = None) -> ScenarioSpec:
    """Load a scenario TOML; ``overrides`` maps dotted paths to values (``{"clients[0].tp": 2}``)."""
    doc = load_toml(path)
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
