"""The one registry of every output variable: name, dims, dtype, units, description.

Used both to build Datasets (:func:`variable`) and to check them (:func:`check_dataset`).
Summary variables have no dims of their own (a sweep adds its axes or ``point`` in front);
per-request variables live on ``request``; rejection counts on ``reject_reason``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xarray as xr


@dataclass(frozen=True)
class Var:
    name: str
    dims: tuple[str, ...]
    dtype: str
    units: str
    description: str


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
# ---- throughput and SLO ----
_add("output_tok_s", (), "float64", "tokens/s", "output tokens (all branches) of measured requests / window")
_add("total_tok_s", (), "float64", "tokens/s", "(prompt + output) tokens of measured requests / window")
_add("computed_prompt_tok_s", (), "float64", "tokens/s", "prompt tokens actually computed (cache hits excluded, recompute included) / window")
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
_add("kv_util_mean", (), "float64", "1", "time-weighted mean of KV blocks in use / KV blocks, over busy time")
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
_add("req_replica", ("request",), "int32", "1", "data-parallel replica that served the request")
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
_add("client_served", ("client",), "int64", "1", "requests served (servers)")
_add("stage_count", ("stage_kind",), "int64", "1", "stage instances completed")
_add("stage_transfer_ms", ("stage_kind",), "float64", "ms", "mean time moving data into the stage (previous exit to arrival)")
_add("stage_queue_ms", ("stage_kind",), "float64", "ms", "mean time from arrival at the client to first scheduled")
_add("stage_service_ms", ("stage_kind",), "float64", "ms", "mean time from first scheduled to leaving the stage")
_add("resource_utilisation", ("resource",), "float64", "1", "bytes moved / (capacity x simulated time) of each link or tier port")
_add("resource_bytes", ("resource",), "float64", "B", "bytes moved through each link or tier port")

REGISTRY = _V


def variable(name: str, data, extra_dims: tuple[str, ...] = ()) -> xr.Variable:
    """An xr.Variable for a registered name; ``extra_dims`` are sweep dims put in front."""
    v = _V[name]
    arr = np.asarray(data)
    if v.dtype != "str":
        arr = arr.astype(v.dtype)
    return xr.Variable(extra_dims + v.dims, arr, attrs={"units": v.units, "long_name": v.description})


def check_dataset(ds: xr.Dataset, extra_dims: tuple[str, ...] | None = None) -> None:
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
