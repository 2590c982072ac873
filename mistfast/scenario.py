"""``simulate(spec) -> xr.Dataset`` for one scenario, and the workload builder it shares with
the sweep runner."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import lowering
from . import workload as W
from .lowering import Point
from .results import (STEP_LOG_VARS, per_request_vars, pipeline_dataset, point_dataset,  # noqa: F401 (re-exported)
                      spec_attrs, summary_dataset, with_step_log)
from .runner import run_pipeline, run_points
from .seeds import point_seed, seed_child  # noqa: F401 (re-exported: callers build requests with them)
from .specs import ScenarioSpec, SpecError, WorkloadSpec, load_scenario, parse_scenario
from .variables import add_coord_attrs, variable

if TYPE_CHECKING:
    import xarray as xr


def _shared_dir() -> Path | None:
    import os
    env = os.environ.get("MISTFAST_SHARED")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parents[1]
    for cand in (here.parent / "shared", here / "shared"):
        if cand.is_dir():
            return cand
    return None


def resolve_trace_path(path: str) -> Path:
    """Trace paths may start with ``shared:`` (the ../shared folder) or ``samples:`` (data/samples)."""
    if path.startswith("shared:"):
        base = _shared_dir()
        if base is None:
            raise SpecError([f"workload.trace.path = {path!r}: the shared folder was not found (set MISTFAST_SHARED)"])
        return base / path[len("shared:"):]
    if path.startswith("samples:"):
        from .catalog import data_dir
        return data_dir() / "samples" / path[len("samples:"):]
    return Path(path).expanduser()


def _lengths(spec, n, rng, what):
    kw = {k: getattr(spec, k) for k in ("value", "mean", "std", "low", "high", "values", "probs", "dataset",
                                        "range_ratio") if getattr(spec, k) is not None}
    if spec.dist == "dataset":
        kw["side"] = what
    try:
        return W.sample_lengths(spec.dist, n, rng, max_tokens=spec.max_tokens, **kw)
    except W.WorkloadError as exc:
        raise SpecError([f"workload.{what}: {exc}"]) from None


def _workload_lengths(wl: WorkloadSpec, n: int, s_in, s_out) -> tuple[np.ndarray, np.ndarray]:
    """Input and output lengths. Both sides from the same named dataset are drawn as joint pairs
    (its rank correlation and total-length filter) from the input stream; otherwise each side on
    its own stream."""
    i, o = wl.input, wl.output
    if i.dist == o.dist == "dataset" and i.dataset == o.dataset and i.range_ratio == o.range_ratio:
        inp, out = W.sample_dataset_pairs(i.dataset, n, s_in, input_len=i.value, output_len=o.value,
                                          range_ratio=i.range_ratio)
        for side, spec in ((inp, i), (out, o)):
            if spec.max_tokens is not None:
                np.minimum(side, spec.max_tokens, out=side)
        return inp, out
    return _lengths(i, n, s_in, "input"), _lengths(o, n, s_out, "output")


LEFT_OUT_REASONS = ("outside_trace_window", "trace_sample", "num_requests")


def build_requests(wl: WorkloadSpec, horizon_s: float, seed_seq: np.random.SeedSequence) -> W.Requests:
    """The point's requests: independent streams for arrivals, inputs, outputs and sampling."""
    return build_requests_report(wl, horizon_s, seed_seq)[0]


def build_requests_report(wl: WorkloadSpec, horizon_s: float, seed_seq: np.random.SeedSequence
                          ) -> tuple[W.Requests, dict[str, int]]:
    """build_requests, plus how many trace requests were left out before the simulation, per
    reason (LEFT_OUT_REASONS): outside the [start_s, end_s) window, not drawn by ``sample``, or
    beyond an explicit ``num_requests``. (Requests arriving after the horizon are simulated as not
    arrived and reported as n_not_arrived.)"""
    s_arr, s_in, s_out, s_sub = (np.random.default_rng(seed_child(seed_seq, i)) for i in range(4))
    n = wl.num_requests
    explicit_n = "num_requests" in wl.model_fields_set
    a = wl.arrival
    left = dict.fromkeys(LEFT_OUT_REASONS, 0)
    try:
        if wl.trace is not None:
            tr = wl.trace
            path = resolve_trace_path(tr.path)
            if tr.format == "servegen":
                client = W.load_servegen(path, tr.chunk or 0)
                end = tr.end_s if tr.end_s is not None else tr.start_s + horizon_s
                if not np.isfinite(end):
                    end = tr.start_s + client.period_s  # one period of the daily profile
                reqs, _ = W.servegen_requests(client, s_arr, start_s=tr.start_s, duration_s=end - tr.start_s,
                                              max_requests=n if explicit_n else None)
            else:
                reqs = W.load_trace(path, tr.format)
                if tr.start_s > 0 or tr.end_s is not None:
                    n0 = len(reqs)
                    reqs = reqs.window(tr.start_s, tr.end_s if tr.end_s is not None else np.inf)
                    left["outside_trace_window"] = n0 - len(reqs)
                elif len(reqs) and tr.shift_arrivals:
                    reqs = reqs.with_arrivals(reqs.arrival_s - reqs.arrival_s[0])
                if tr.rate_scale != 1.0:
                    reqs = reqs.scale_rate(tr.rate_scale)
                if tr.sample is not None:
                    n0 = len(reqs)
                    reqs = reqs.subsample(int(tr.sample) if tr.sample >= 1 else tr.sample, s_sub)
                    left["trace_sample"] = n0 - len(reqs)
                if not tr.use_arrivals:
                    reqs = reqs.with_arrivals(_arrivals(a, len(reqs), s_arr))
                if explicit_n and len(reqs) > n:
                    left["num_requests"] = len(reqs) - n
                    reqs = reqs.head(n)
            if len(reqs) == 0:
                raise SpecError([f"workload.trace = {tr.path!r}: no requests left after windowing/sampling"])
        else:
            arr = _arrivals(a, n, s_arr)
            reqs = W.Requests.from_arrays(arr, *_workload_lengths(wl, n, s_in, s_out))
    except W.WorkloadError as exc:
        if wl.trace is not None:   # name the field and the value given, then what went wrong
            raise SpecError([f"workload.trace.path = {wl.trace.path!r}: {exc}"]) from None
        raise SpecError([f"workload: {exc}"]) from None
    if wl.prefix_tokens > 0 and not reqs.has_hashes:
        reqs = _synthetic_prefixes(reqs, wl.prefix_tokens, wl.prefix_groups, s_sub)
    return reqs, left


def _arrivals(a, n, rng):
    if a.process == "closed_loop":
        return np.zeros(n)
    return W.arrival_times(a.process, n, rng, rate_rps=a.rate_rps, cv=a.cv, burst_factor=a.burst_factor,
                           burst_freq=a.burst_freq, burst_power=a.burst_power)


def _synthetic_prefixes(reqs: W.Requests, prefix_tokens: int, groups: int, rng) -> W.Requests:
    """Shared system-prompt style prefixes: request i gets group g's first prefix_tokens//block ids,
    then ids of its own. Prompts shorter than the prefix are lengthened to prefix + 1."""
    hb = reqs.hash_block_tokens
    k = prefix_tokens // hb
    inp = np.maximum(reqs.input_tokens, prefix_tokens + 1)
    g = rng.integers(0, groups, size=len(reqs))
    lists = []
    nxt = groups * k
    for i in range(len(reqs)):
        own = int(np.ceil(inp[i] / hb)) - k
        ids = list(range(g[i] * k, g[i] * k + k)) + list(range(nxt, nxt + own))
        nxt += own
        lists.append(ids)
    return W.Requests.from_arrays(reqs.arrival_s, inp, reqs.output_tokens, lists, hash_block_tokens=hb)


def scenario_point(spec: ScenarioSpec, seed_seq: np.random.SeedSequence | None = None,
                   requests: W.Requests | None = None) -> Point:
    """The single-client point of a scenario; ``requests`` (built from this seed) may be passed in."""
    if spec.is_pipeline:
        raise SpecError(["scenario: a multi-client pipeline scenario has no single-client point"])
    return any_point(spec, seed_seq, requests)


def any_point(spec: ScenarioSpec, seed_seq: np.random.SeedSequence | None = None,
              requests: W.Requests | None = None) -> Point | lowering.PipelinePoint:
    """The point of a scenario, single-client or pipeline, with its requests."""
    ss = seed_seq if seed_seq is not None else point_seed(spec.simulation.seed)
    reqs = requests if requests is not None else build_requests(spec.workload, spec.simulation.horizon_s, ss)
    return lowering.scenario_point(spec, reqs, ss)


def simulate(spec: ScenarioSpec | dict | str | Path, *, per_request: bool | None = None,
             log_steps: int = 0, decode_runs: bool = True) -> xr.Dataset:
    """Simulate one scenario; returns summary variables (and per-request ones on request).
    ``decode_runs=False`` takes every engine step through the full event loop instead of advancing
    repeated decode-only steps in runs: identical results, several times slower (a cross-check)."""
    if isinstance(spec, (str, Path)):
        spec = load_scenario(spec)
    elif isinstance(spec, dict):
        spec = parse_scenario(spec)
    want_req = spec.simulation.per_request if per_request is None else per_request
    ss = point_seed(spec.simulation.seed)
    reqs, left = build_requests_report(spec.workload, spec.simulation.horizon_s, ss)
    ds = point_result(lowering.scenario_point(spec, reqs, ss), want_req, log_steps, decode_runs)
    ds.attrs.update(spec_attrs(spec))
    return add_coord_attrs(_with_left_out(ds, spec, left))


def point_result(pt: Point | lowering.PipelinePoint, per_request: bool, log_steps: int = 0,
                 decode_runs: bool = True) -> xr.Dataset:
    """The Dataset of one point: a pipeline through its own kernel call, a single client through
    the batched one (``runner.run_points``, which runs a closed loop over several replicas as its
    one-stage pipeline); results.py builds both."""
    if isinstance(pt, lowering.PipelinePoint):
        run = run_pipeline(pt.scenario, pt.requests, pt.seed_seq, per_request=per_request, log_steps=log_steps,
                           decode_runs=decode_runs)
        ds = pipeline_dataset(pt.scenario, run, per_request)
        if log_steps:
            ds = with_step_log(ds, run["steplog"], client_names=run["inputs"]["topo"].names)
        return ds
    res = run_points([pt], per_request=per_request, log_steps=log_steps, decode_runs=decode_runs, tables=True)
    ds = point_dataset(pt.scenario, res, per_request, log_steps)
    n_out = int(ds.steps_outside_calibration)
    if n_out:
        import warnings
        warnings.warn(f"{n_out} of {int(ds.n_steps)} steps fell outside the measured range of the step correction "
                      f"of client {pt.client.name!r}; the factor of the nearest measured point was used", stacklevel=3)
    return ds


def _with_left_out(ds: xr.Dataset, spec: ScenarioSpec, left: dict[str, int]) -> xr.Dataset:
    """Count, per reason, the trace requests not simulated (n_left_out); warn about every one of
    them, and about trace requests that arrived after the horizon (n_not_arrived)."""
    ds = ds.assign_coords(left_out_reason=list(LEFT_OUT_REASONS))
    ds["n_left_out"] = variable("n_left_out", np.array([left[k] for k in LEFT_OUT_REASONS], dtype=np.int64))
    if spec.workload.trace is None:
        return ds
    import warnings
    why = {"outside_trace_window": "outside workload.trace start_s/end_s",
           "trace_sample": "not drawn by workload.trace.sample",
           "num_requests": f"beyond workload.num_requests = {spec.workload.num_requests}"}
    parts = [f"{left[k]} {why[k]}" for k in LEFT_OUT_REASONS if left[k]]
    late = int(ds.n_not_arrived)
    if late:
        parts.append(f"{late} arriving after simulation.horizon_s = {spec.simulation.horizon_s:g} s (n_not_arrived)")
    if parts:
        warnings.warn(f"workload.trace {spec.workload.trace.path!r}: trace requests not simulated: "
                      + "; ".join(parts), stacklevel=3)
    return ds

