"""The one registry of every output variable: name, dims, dtype, units, names for people.

Used both to build Datasets (:func:`variable`) and to check them (:func:`check_dataset`).
Summary variables have no dims of their own (a sweep adds its axes or ``point`` in front);
per-request variables live on ``request``; rejection counts on ``reject_reason``.

Attributes follow the CF conventions (https://cfconventions.org): ``units`` is a UDUNITS-2
string (counts of tokens or requests are dimensionless, ``1``; ``tokens/s`` is ``s-1``), the
unit people read is kept in ``display_units``; ``long_name`` is a short label for plot axes and
``description`` the full definition.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CONVENTIONS = "CF-1.10"

# units written as people say them -> UDUNITS-2 (cf-units parses every value; tested)
_UDUNITS = {"": "1", "tokens": "1", "requests": "1", "tokens/s": "s-1", "requests/s": "s-1",
            "GiB": "1073741824 byte", "B": "byte", "J/token": "J", "USD": "1", "tokens/USD": "1",
            "tokens/s per USD/h": "h s-1", "USD/h": "h-1", "GB/s": "1e9 byte s-1", "GBps": "1e9 byte s-1",
            "TFLOPS": "1e12 s-1", "tokens/s/USD": "s-1"}


def udunits(units: str) -> str:
    """The UDUNITS-2 spelling of a unit as written in the registry."""
    return _UDUNITS.get(units, units)


@dataclass(frozen=True)
class Var:
    name: str
    dims: tuple[str, ...]
    dtype: str
    display_units: str
    description: str

    @property
    def units(self) -> str | None:
        """UDUNITS-2 units; None for text variables (CF gives strings no units)."""
        return None if self.dtype == "str" else udunits(self.display_units)

    @property
    def long_name(self) -> str:
        return _LONG_NAMES.get(self.name) or _default_long_name(self.name)

    def attrs(self) -> dict:
        a = {"long_name": self.long_name, "description": self.description}
        if self.units is not None:
            a["units"] = self.units
            if self.display_units and self.display_units != self.units:
                a["display_units"] = self.display_units
        return a


_V: dict[str, Var] = {}


def _add(name, dims, dtype, units, description):
    _V[name] = Var(name, tuple(dims), dtype, units, description)


# ---- request accounting ----
_add("n_arrived", (), "int64", "1", "requests that arrived in the measurement window [warmup, horizon]")
_add("n_finished", (), "int64", "1", "measured requests that finished")
_add("n_rejected", (), "int64", "1", "measured requests rejected (any reason)")
_add("n_unfinished", (), "int64", "1", "measured requests still in flight when the simulation stopped")
_add("n_not_arrived", (), "int64", "1", "requests of the workload whose arrival fell after the horizon (never entered)")
_add("n_before_warmup", (), "int64", "1", "requests that arrived before warmup_s (served, but in no other count or metric)")
_add("n_rejected_by_reason", ("reject_reason",), "int64", "1", "measured requests rejected, by reason")
# ---- latency ----
for base, what in (("ttft", "time to first token (first token time - arrival)"),
                   ("tpot", "time per output token after the first, per request: (t_last - t_first)/(n_out - 1)"),
                   ("e2e", "end-to-end latency of finished requests (finish - arrival)"),
                   ("queue_delay", "time from arrival to the first step that scheduled the request")):
    _add(f"{base}_mean_ms", (), "float64", "ms", f"mean {what}")
    for q in ("p50", "p90", "p99"):
        _add(f"{base}_{q}_ms", (), "float64", "ms", f"{q} of {what}")
_add("ttft_max_ms", (), "float64", "ms", "largest time to first token")
for base, what in (("ttft", "time to first token"), ("tpot", "time per output token after the first"),
                   ("e2e", "end-to-end latency of finished requests"), ("queue_delay", "queueing delay")):
    _add(f"{base}_quantile_ms", ("quantile",), "float64", "ms",
         f"{what} at the quantiles of [metrics] quantiles (the `quantile` coordinate), same method as the p50/p90/p99 variables")
# ---- throughput and SLO ----
_add("output_tok_s", (), "float64", "tokens/s", "output tokens (all branches) of measured requests / window")
_add("total_tok_s", (), "float64", "tokens/s", "(prompt + output) tokens of measured requests / window")
_add("computed_prompt_tok_s", (), "float64", "tokens/s", "prompt tokens actually computed (cache hits excluded, recompute included), summed over every "
     "client a request passes (embedder, LLM, filter: see client_computed_prompt_tok_s for each) / window")
_add("request_throughput_rps", (), "float64", "requests/s", "finished requests / window")
_add("goodput_rps", (), "float64", "requests/s", "finished requests meeting every SLO / window")
_add("goodput_tok_s", (), "float64", "tokens/s", "output tokens of requests meeting every SLO / window")
_add("slo_attainment", (), "float64", "1", "requests meeting every SLO / measured requests (rejected and unfinished are misses)")
_add("window_s", (), "float64", "s", "measurement window: from warmup to the time the simulation stopped")
# ---- engine ----
_add("n_steps", (), "int64", "1", "engine steps (summed over replicas)")
_add("mean_batch_tokens", (), "float64", "tokens", "mean tokens per step")
_add("mean_batch_size", (), "float64", "requests", "mean sequences per step")
_add("busy_fraction", (), "float64", "1", "sum of step times / simulated time, mean over replicas")
_add("kv_util_mean", (), "float64", "1", "time-weighted mean of KV blocks in use / KV blocks, over busy time "
     "(several LLM clients: their values weighted by busy time)")
_add("kv_util_peak", (), "float64", "1", "peak KV blocks in use / KV blocks")
_add("mfu", (), "float64", "1", "model FLOP utilisation: FLOP / (peak FLOP/s x simulated time) per device")
_add("mbu", (), "float64", "1", "memory bandwidth utilisation: HBM bytes / (bandwidth x simulated time) per device")
_add("preemptions", (), "int64", "1", "preemptions (recompute)")
_add("recomputed_tokens", (), "int64", "tokens", "prompt+generated tokens scheduled again after preemption")
_add("prefix_hit_rate", (), "float64", "1", "prompt tokens served from the prefix cache / prompt tokens")
_add("steps_outside_calibration", (), "int64", "1", "steps whose token count fell outside the measured range of the client's step correction (the nearest boundary factor was used)")
_add("kv_capacity_tokens", (), "int64", "tokens", "KV tokens one engine can hold")
_add("weights_GiB_per_device", (), "float64", "GiB", "weight bytes on the most loaded device")
# ---- energy and cost ----
_add("energy_J", (), "float64", "J", "energy of all devices over the simulated time (busy by op, idle at static power)")
_add("energy_per_output_token_J", (), "float64", "J/token", "energy / output tokens")
_add("idle_power_estimated", (), "float64", "1", "1 when the idle energy uses the estimated idle power 0.3 x tdp_W of a "
     "device without a sourced idle_W, 0 when every device's idle power is sourced; NaN when a device has no "
     "tdp_W (then the energy variables are NaN too; docs/idle-power.md)")
_add("cost_usd", (), "float64", "USD", "device-hours x price over the simulated time, busy or idle")
_add("tokens_per_dollar", (), "float64", "tokens/USD", "output tokens / cost")
_add("output_tok_s_per_usd_per_hour", (), "float64", "tokens/s per USD/h", "output tokens/s divided by the cluster's price per hour")
# ---- sweep bookkeeping ----
_add("status", (), "int8", "1", "0 = ok, 1 = invalid configuration (see reason)")
_add("reason", (), "str", "", "why a point is invalid (empty when ok)")
# ---- per request ----
_add("req_arrival_s", ("request",), "float64", "s", "arrival time (closed loop: release time)")
_add("req_prompt_tokens", ("request",), "int64", "tokens", "prompt tokens")
_add("req_output_tokens", ("request",), "int64", "tokens", "requested output tokens per branch")
_add("req_status", ("request",), "int8", "1", "0 not arrived, 1 waiting, 2 running, 3 finished, 4 rejected, 5 unfinished")
_add("req_reason", ("request",), "int8", "1", "rejection reason code (index into reject_reason)")
_add("req_replica", ("request",), "int32", "1", "data-parallel replica, within its client entry, that emitted the "
     "request's first token (pipelines: -1 when the request never reached that stage)")
_add("req_ttft_ms", ("request",), "float64", "ms", "time to first token")
_add("req_tpot_ms", ("request",), "float64", "ms", "time per output token after the first")
_add("req_e2e_ms", ("request",), "float64", "ms", "end-to-end latency")
_add("req_queue_ms", ("request",), "float64", "ms", "arrival to first scheduled")
_add("req_first_scheduled_s", ("request",), "float64", "s", "start of the first step that included the request")
_add("req_first_token_s", ("request",), "float64", "s", "end of the step that emitted the first token")
_add("req_finish_s", ("request",), "float64", "s", "finish (or rejection) time")
_add("req_generated_tokens", ("request",), "int64", "tokens", "tokens generated per branch")
_add("req_preemptions", ("request",), "int32", "1", "times the request was preempted")
_add("req_hit_tokens", ("request",), "int64", "tokens", "prefix-cache tokens reused at first admission")

_add("req_class", ("request",), "int32", "1", "pipeline (request class) index")
# ---- multi-client runs ----
_add("client_busy_fraction", ("client",), "float64", "1", "busy time / simulated time (slot servers: per core)")
_add("client_kv_util_mean", ("client",), "float64", "1", "time-weighted KV blocks in use / KV blocks, over busy time")
_add("client_kv_util_peak", ("client",), "float64", "1", "peak KV blocks in use / KV blocks")
_add("client_mfu", ("client",), "float64", "1", "model FLOP utilisation of the client's devices")
_add("client_mbu", ("client",), "float64", "1", "memory bandwidth utilisation of the client's devices")
_add("client_energy_J", ("client",), "float64", "J", "energy of the client's devices over the simulated time")
_add("client_price_usd_per_hour", ("client",), "float64", "USD/h", "price of the client's devices per hour")
_add("client_steps", ("client",), "int64", "1", "engine steps (LLM) or batches (retrieval)")
_add("n_left_out", ("left_out_reason",), "int64", "1",
     "trace requests not simulated, per reason (trace window, trace sample, explicit num_requests); "
     "arrivals after horizon_s are n_not_arrived")
_add("client_computed_prompt_tok_s", ("client",), "float64", "tokens/s",
     "prompt tokens this client computed (prefill or encoder chunks, recompute included) / simulated time")
_add("client_served", ("client",), "int64", "1", "requests served (servers)")
_add("client_kv_blocked_s", ("client",), "float64", "s",
     "KV backpressure: time finished prefills held their KV here waiting for blocks on the decode client "
     "(summed over requests; 0 without kv_backpressure)")
_add("stage_count", ("stage_kind",), "int64", "1", "stage instances completed")
_add("stage_transfer_ms", ("stage_kind",), "float64", "ms", "mean time moving data into the stage (previous exit to arrival)")
_add("stage_queue_ms", ("stage_kind",), "float64", "ms", "mean time from arrival at the client to first scheduled")
_add("stage_service_ms", ("stage_kind",), "float64", "ms", "mean time from first scheduled to leaving the stage")
_add("resource_utilisation", ("resource",), "float64", "1", "bytes moved / (capacity x simulated time) of each link or tier port")
_add("resource_bytes", ("resource",), "float64", "B", "bytes moved through each link or tier port")
# ---- the engine step log of a traced run (--log-steps), in the order the steps were formed ----
_add("step_start_s", ("step",), "float64", "s", "start of the engine step")
_add("step_duration_s", ("step",), "float64", "s", "duration of the engine step")
_add("step_prefills", ("step",), "float64", "1", "prefill chunks in the step")
_add("step_prefill_tokens", ("step",), "float64", "1", "prefill tokens in the step")
_add("step_decodes", ("step",), "float64", "1", "decodes in the step")
_add("step_decode_tokens", ("step",), "float64", "1", "decode tokens in the step")
_add("step_kv_blocks", ("step",), "float64", "1", "KV blocks in use after the step")
_add("step_client", ("step",), "str", "", "client instance that ran the step (several clients)")

REGISTRY = _V

# short labels for plot axes and tables (the full definition is in ``description``)
_BASE_LABEL = {"ttft": "TTFT", "tpot": "TPOT", "e2e": "end-to-end latency", "queue_delay": "queueing delay"}
_LONG_NAMES = {
    "n_arrived": "requests arrived", "n_finished": "requests finished", "n_rejected": "requests rejected",
    "n_unfinished": "requests unfinished", "n_not_arrived": "requests not arrived",
    "n_rejected_by_reason": "requests rejected by reason", "ttft_max_ms": "max TTFT",
    "output_tok_s": "output throughput", "total_tok_s": "total token throughput",
    "computed_prompt_tok_s": "computed prompt throughput", "request_throughput_rps": "request throughput",
    "goodput_rps": "goodput", "goodput_tok_s": "goodput (tokens)", "slo_attainment": "SLO attainment",
    "window_s": "measurement window", "n_steps": "engine steps", "mean_batch_tokens": "mean batch tokens",
    "mean_batch_size": "mean batch size", "busy_fraction": "busy fraction", "kv_util_mean": "mean KV use",
    "kv_util_peak": "peak KV use", "mfu": "MFU", "mbu": "MBU", "preemptions": "preemptions",
    "recomputed_tokens": "recomputed tokens", "prefix_hit_rate": "prefix-cache hit rate",
    "steps_outside_calibration": "steps outside calibration", "kv_capacity_tokens": "KV capacity",
    "weights_GiB_per_device": "weights per device", "energy_J": "energy",
    "energy_per_output_token_J": "energy per output token", "cost_usd": "cost", "tokens_per_dollar": "tokens per dollar",
    "output_tok_s_per_usd_per_hour": "output throughput per price", "status": "point status",
    "reason": "invalid-point reason", "req_arrival_s": "arrival time", "req_prompt_tokens": "prompt tokens",
    "req_output_tokens": "requested output tokens", "req_status": "request status", "req_reason": "rejection reason",
    "req_replica": "replica", "req_ttft_ms": "TTFT", "req_tpot_ms": "TPOT", "req_e2e_ms": "end-to-end latency",
    "req_queue_ms": "queueing delay", "req_first_scheduled_s": "first scheduled", "req_first_token_s": "first token time",
    "req_finish_s": "finish time", "req_generated_tokens": "generated tokens", "req_preemptions": "preemptions",
    "req_hit_tokens": "prefix-cache hit tokens", "req_class": "request class",
    "client_busy_fraction": "client busy fraction", "client_kv_util_mean": "client mean KV use",
    "client_kv_util_peak": "client peak KV use", "client_mfu": "client MFU", "client_mbu": "client MBU",
    "client_energy_J": "client energy", "client_price_usd_per_hour": "client price", "client_steps": "client steps",
    "client_served": "client requests served", "stage_count": "stage count", "stage_transfer_ms": "stage transfer time",
    "stage_queue_ms": "stage queueing time", "stage_service_ms": "stage service time",
    "resource_utilisation": "resource utilisation", "resource_bytes": "resource bytes",
    "step_start_s": "step start", "step_duration_s": "step duration", "step_prefills": "prefill chunks",
    "step_prefill_tokens": "prefill tokens", "step_decodes": "decodes", "step_decode_tokens": "decode tokens",
    "step_kv_blocks": "KV blocks in use", "step_client": "client of the step",
    "ttft_quantile_ms": "TTFT quantile", "tpot_quantile_ms": "TPOT quantile",
    "e2e_quantile_ms": "end-to-end latency quantile", "queue_delay_quantile_ms": "queueing delay quantile",
}
for _b, _lab in _BASE_LABEL.items():
    _LONG_NAMES[f"{_b}_mean_ms"] = f"mean {_lab}"
    for _q in ("p50", "p90", "p99"):
        _LONG_NAMES[f"{_b}_{_q}_ms"] = f"{_lab} {_q}"

_UNIT_SUFFIXES = ("_ms", "_s", "_J", "_GiB", "_rps", "_usd", "_tokens")


def _default_long_name(name: str) -> str:
    """A label from the variable name (for variables added without one): unit suffix dropped."""
    for suf in _UNIT_SUFFIXES:
        if name.endswith(suf) and len(name) > len(suf):
            name = name[: -len(suf)]
            break
    return name.replace("_", " ")


# coordinates: units by the spec field's name (the last component of a sweep axis path)
_COORD_UNIT_SUFFIX = (("_ms", "ms"), ("_us", "us"), ("_s", "s"), ("_rps", "s-1"), ("_GBps", "1e9 byte s-1"),
                      ("_GiB", "1073741824 byte"), ("_GB", "1e9 byte"), ("_W", "W"), ("_usd_per_hour", "h-1"))
_COORD_LONG = {"request": "request index", "reject_reason": "rejection reason", "client": "client",
               "stage_kind": "stage kind", "resource": "link or tier port", "point": "sweep point",
               "step": "engine step index", "quantile": "quantile"}


def coord_attrs(name: str, path: str | None = None) -> dict:
    """CF attributes of a coordinate: every coordinate gets ``units`` (``1`` for counts, indices
    and labels) and a ``long_name``; sweep axes also name the spec field they set."""
    units = "1"
    for suf, u in _COORD_UNIT_SUFFIX:
        if name.endswith(suf) or (path or "").endswith(suf):
            units = u
            break
    a = {"units": units, "long_name": _COORD_LONG.get(name) or (f"sweep axis {path}" if path else name.replace("_", " "))}
    if path:
        a["spec_path"] = path
    return a


def add_coord_attrs(ds):
    """Give every coordinate of ``ds`` CF attributes it does not have yet (in place; returns ds)."""
    for k in ds.coords:
        for key, val in coord_attrs(str(k), ds[k].attrs.get("spec_path")).items():
            ds[k].attrs.setdefault(key, val)
    return ds


def slo_attrs(slo) -> dict:
    """The validated SLO as global attributes: every default constraint is derived from these."""
    import json
    d = slo.model_dump(mode="json") if hasattr(slo, "model_dump") else dict(slo)
    out = {"slo_json": json.dumps(d, sort_keys=True)}
    for k, v in d.items():
        if v is not None:
            out[f"slo_{k}"] = float(v)
    return out


def slo_of(ds) -> dict:
    """The SLO a Dataset was simulated with (the validated defaults for files without one)."""
    import json
    try:
        d = json.loads(ds.attrs.get("slo_json") or "{}")
    except ValueError:
        d = {}
    if not d or "ttft_ms" not in d:
        from .specs import SLOSpec
        d = {**SLOSpec().model_dump(mode="json"), **d}
    return d


def default_constraints(ds) -> list[str]:
    """Best-configuration constraints from the Dataset's SLO: p99 TTFT and TPOT (and E2E when
    set) within the SLO, no rejected and no unfinished requests."""
    slo = slo_of(ds)
    out = [f"ttft_p99_ms<={slo['ttft_ms']}", f"tpot_p99_ms<={slo['tpot_ms']}"]
    if slo.get("e2e_ms") is not None:
        out.append(f"e2e_p99_ms<={slo['e2e_ms']}")
    return out + ["n_rejected<=0", "n_unfinished<=0"]


def global_attrs(what: str) -> dict:
    """CF global attributes. ``history`` carries no time stamp on purpose: the same spec and seed
    must give bit-identical files."""
    from . import __version__
    return {"Conventions": CONVENTIONS, "title": f"mistfast {what}",
            "source": f"mistfast {__version__} (LLM inference serving simulator)",
            "history": f"mistfast {__version__}: {what}",
            "references": "MIST (arXiv 2504.09775); GenZ; mistfast ENGINE_SEMANTICS.md"}


def variable(name: str, data, extra_dims: tuple[str, ...] = ()):
    """An xr.Variable for a registered name; ``extra_dims`` are sweep dims put in front."""
    import xarray as xr
    v = _V[name]
    arr = np.asarray(data)
    if v.dtype != "str":
        arr = arr.astype(v.dtype)
    return xr.Variable(extra_dims + v.dims, arr, attrs=v.attrs())


def check_dataset(ds, extra_dims: tuple[str, ...] | None = None) -> None:
    """Raise if a data variable is unregistered or has the wrong dims, dtype or units."""
    for name, da in ds.data_vars.items():
        if name.startswith("in_"):
            continue  # sweep inputs, documented by the sweep
        if name not in _V:
            raise AssertionError(f"{name}: not in the variable registry")
        v = _V[name]
        if da.dims[len(da.dims) - len(v.dims):] != v.dims:
            raise AssertionError(f"{name}: dims {da.dims} do not end with {v.dims}")
        if extra_dims is not None and tuple(da.dims[: len(da.dims) - len(v.dims)]) != tuple(extra_dims):
            raise AssertionError(f"{name}: leading dims {da.dims} != {extra_dims}")
        if v.dtype != "str" and str(da.dtype) != v.dtype and not (v.dtype.startswith("int") and da.dtype.kind == "f"):
            raise AssertionError(f"{name}: dtype {da.dtype} != {v.dtype}")
        if da.attrs.get("units") != v.units:
            raise AssertionError(f"{name}: units {da.attrs.get('units')!r} != {v.units!r}")
