"""``simulate(spec) -> xr.Dataset`` for one scenario, and the workload builder it shares with
the sweep runner."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from . import __version__
from . import workload as W
from .kernels import engine as E
from .runner import Point, run_points
from .specs import ScenarioSpec, SpecError, WorkloadSpec, load_scenario, parse_scenario
from .variables import REGISTRY, add_coord_attrs, variable


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


def seed_child(seed_seq: np.random.SeedSequence, i: int) -> np.random.SeedSequence:
    """Child ``i`` of a point's seed, without the state ``SeedSequence.spawn`` keeps: a point's
    random streams do not depend on what was drawn before (or on a cache skipping a draw).
    Children 0-3: arrivals, input lengths, output lengths, trace sampling; 4: pipeline sampling."""
    return np.random.SeedSequence(seed_seq.entropy, spawn_key=tuple(seed_seq.spawn_key) + (i,),
                                  pool_size=seed_seq.pool_size)


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


def point_seed(seed: int, *key: int) -> np.random.SeedSequence:
    return np.random.SeedSequence([seed, *key])


def scenario_point(spec: ScenarioSpec, seed_seq: np.random.SeedSequence | None = None,
                   requests: W.Requests | None = None) -> Point:
    """The single-client point of a scenario; ``requests`` (built from this seed) may be passed in."""
    if spec.is_pipeline:
        raise SpecError(["scenario: a multi-client pipeline scenario has no single-client point"])
    sim = spec.simulation
    ss = seed_seq if seed_seq is not None else point_seed(sim.seed)
    reqs = requests if requests is not None else build_requests(spec.workload, sim.horizon_s, ss)
    a = spec.workload.arrival
    return Point(spec.client, reqs, sim, spec.slo, spec.workload.branches,
                 concurrency=a.concurrency or 0 if a.process == "closed_loop" else 0,
                 think_s=a.think_time_s, quantiles=tuple(spec.metrics.quantiles or ()))


def summary_dataset(summary: dict[str, np.ndarray], index: int | None = None, extra_dims=(),
                    quantiles=()) -> xr.Dataset:
    # one constructor call: adding variables one by one costs an xarray merge each
    import xarray as xr
    ds = xr.Dataset({name: variable(name, arr if index is None else arr[index], extra_dims)
                     for name, arr in summary.items()})
    coords = {"reject_reason": list(E.REASON_NAMES[1:])}
    if "quantile" in ds.dims:
        coords["quantile"] = list(quantiles)
    return add_coord_attrs(ds.assign_coords(coords))


def simulate(spec: ScenarioSpec | dict | str | Path, *, per_request: bool | None = None,
             log_steps: int = 0, decode_runs: bool = True) -> xr.Dataset:
    """Simulate one scenario; returns summary variables (and per-request ones on request).
    ``decode_runs=False`` takes every engine step through the full event loop instead of advancing
    repeated decode-only steps in runs: identical results, several times slower (a cross-check)."""
    if isinstance(spec, (str, Path)):
        spec = load_scenario(spec)
    elif isinstance(spec, dict):
        spec = parse_scenario(spec)
    import xarray as xr
    want_req = spec.simulation.per_request if per_request is None else per_request
    if spec.is_pipeline:
        from .pipeline import pipeline_dataset, run_pipeline
        ss = point_seed(spec.simulation.seed)
        reqs, left = build_requests_report(spec.workload, spec.simulation.horizon_s, ss)
        run = run_pipeline(spec, reqs, ss, per_request=want_req, log_steps=log_steps, decode_runs=decode_runs)
        ds = pipeline_dataset(spec, run, want_req)
        if log_steps:
            ds = _with_step_log(ds, run["steplog"], client_names=run["inputs"]["topo"].names)
        ds.attrs.update(spec_attrs(spec))
        return add_coord_attrs(_with_left_out(ds, spec, left))
    reqs, left = build_requests_report(spec.workload, spec.simulation.horizon_s, point_seed(spec.simulation.seed))
    pt = scenario_point(spec, requests=reqs)
    res = run_points([pt], per_request=want_req, log_steps=log_steps, decode_runs=decode_runs)
    ds = summary_dataset(res["summary"], 0, quantiles=spec.metrics.quantiles)
    n_out = int(res["summary"]["steps_outside_calibration"][0])
    if n_out:
        import warnings
        warnings.warn(f"{n_out} of {int(ds.n_steps)} steps fell outside the measured range of the step correction "
                      f"of client {spec.client.name!r}; the factor of the nearest measured point was used", stacklevel=2)
    if want_req:
        for k, v in per_request_vars(res["requests"]).items():
            ds[k] = variable(k, v)
    if log_steps:
        n = int(min(res["steps_per_sub"][0], log_steps))
        ds = _with_step_log(ds, res["steplog"][0, :n])
    ds.attrs.update(spec_attrs(spec))
    return add_coord_attrs(_with_left_out(ds, spec, left))


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


STEP_LOG_VARS = ("step_start_s", "step_duration_s", "step_prefills", "step_prefill_tokens",
                 "step_decodes", "step_decode_tokens", "step_kv_blocks")


def _with_step_log(ds: xr.Dataset, log: np.ndarray, client_names=None) -> xr.Dataset:
    """The engine step log as variables along a ``step`` dimension (in the order the steps were
    formed); with several clients, ``step_client`` names the client of each step."""
    import xarray as xr
    n = log.shape[0]
    ds.attrs["steplog"] = "see .steplog"
    ds = ds.assign_coords(step=np.arange(n))
    for j, name in enumerate(STEP_LOG_VARS):
        ds[name] = xr.Variable(("step",), log[:, j], attrs=_STEPLOG_ATTRS[name])
    if client_names is not None:
        from .kernels.cluster import N_LOG
        ds["step_client"] = xr.Variable(("step",), np.asarray(client_names, dtype=object)[log[:, N_LOG].astype(np.int64)],
                                        attrs={"long_name": "client of the step"})
    return ds


# the step log of a traced run (CF attributes; these variables are not in the registry)
_STEPLOG_ATTRS = {"step_start_s": {"units": "s", "long_name": "step start"},
                  "step_duration_s": {"units": "s", "long_name": "step duration"},
                  "step_prefills": {"units": "1", "long_name": "prefill chunks in the step"},
                  "step_prefill_tokens": {"units": "1", "long_name": "prefill tokens in the step"},
                  "step_decodes": {"units": "1", "long_name": "decodes in the step"},
                  "step_decode_tokens": {"units": "1", "long_name": "decode tokens in the step"},
                  "step_kv_blocks": {"units": "1", "long_name": "KV blocks in use"}}


def per_request_vars(r: dict) -> dict:
    with np.errstate(invalid="ignore", divide="ignore"):
        gen = r["generated"].astype(float)
        tpot = np.where(gen >= 2, (r["t_last_tok"] - r["t_first_tok"]) / np.maximum(gen - 1, 1), np.nan)
        return {
            "req_arrival_s": r["arrival"], "req_prompt_tokens": r["prompt"], "req_output_tokens": r["output"],
            "req_status": r["status"], "req_reason": r["reason"], "req_replica": r["replica"],
            "req_ttft_ms": (r["t_first_tok"] - r["arrival"]) * 1e3, "req_tpot_ms": tpot * 1e3,
            "req_e2e_ms": np.where(r["status"] == E.FINISHED, r["t_finish"] - r["arrival"], np.nan) * 1e3,
            "req_queue_ms": (r["t_first_sched"] - r["arrival"]) * 1e3,
            "req_first_scheduled_s": r["t_first_sched"], "req_first_token_s": r["t_first_tok"],
            "req_finish_s": r["t_finish"], "req_generated_tokens": r["generated"],
            "req_preemptions": r["preempts"], "req_hit_tokens": np.maximum(r["hit_first"], 0),
        }


def spec_attrs(spec) -> dict:
    from .variables import global_attrs, slo_attrs
    return {**global_attrs("simulate one scenario"), **slo_attrs(spec.slo),
            "mistfast_version": __version__, "spec_json": json.dumps(spec.model_dump(mode="json"), sort_keys=True),
            "token_counting": "tokens of requests arriving in [warmup, horizon], divided by the time from warmup "
                              "to the end of the simulation (drain included)",
            "percentiles": "over requests that reached the event (counts of the others are reported)"}


assert all(k in REGISTRY for k in ("ttft_p99_ms", "req_ttft_ms"))
