"""Capacity search: the highest request rate at which every SLO holds (MODEL.md §8, "max
sustainable rate"), for one scenario or for every configuration point of a sweep at once.

How it works
------------
* The searched quantity is the arrival rate of an open-loop workload: ``workload.arrival.rate_rps``
  (poisson, gamma, weibull, uniform, normal, bursty), or for a trace its ``rate_scale`` (reported as
  the trace's native mean rate times the scale). Closed-loop and offline workloads have no rate and
  are refused.
* **Common random numbers**: every trial rate of a point reuses the point's seed. Arrival gaps,
  input and output lengths come from separate streams, so a higher rate replays the same requests
  compressed in time (for Poisson, gamma and Weibull gaps exactly: the gaps scale with 1/rate).
  Pass/fail is then a property of the configuration, not of resampling noise.
* **Bisection, vectorised**: all unconverged points are simulated together in one kernel call per
  iteration. A point first brackets its capacity (doubling up from a passing rate, or halving down
  from a failing one), then bisects geometrically until ``fail / pass <= 1 + rel_tol``.
* The search assumes pass/fail is monotone in the rate. It admits every request of the workload:
  the horizon is lifted, so a slow rate is not cut short by ``simulation.horizon_s``.

Constraints
-----------
``slo`` picks the limits that must all hold at a passing rate:

* ``None`` / ``"spec"``: the scenario's ``[slo]`` as p99 limits — ``ttft_p99_ms <= slo.ttft_ms``,
  ``tpot_p99_ms <= slo.tpot_ms`` and, when set, ``e2e_p99_ms <= slo.e2e_ms``;
* ``"table2"`` / ``"table2-rag"``: the six limits of the MIST paper's Table II (MODEL.md §8);
* a list of ``"VAR<=VALUE"`` strings or a ``{var: (op, value)}`` dict over summary variables.

Every preset also requires ``finished_fraction >= min_finished`` (default 0.99): a configuration
that rejects or cannot finish its requests does not pass on the percentiles of the few it served.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import xarray as xr

from .analysis import _CMP, parse_constraints
from .specs import ScenarioSpec, SpecError, load_scenario, parse_scenario

# MODEL.md §8, Table II: (metric, quantile) -> multiple of the baseline; baselines TTFT 250 ms
# (1,000 ms for RAG / KV-retrieval pipelines), TPOT 25 ms.
_TABLE2 = (("ttft", "p50", 2.0), ("ttft", "p90", 3.0), ("ttft", "p99", 6.0),
           ("tpot", "p50", 1.25), ("tpot", "p90", 1.5), ("tpot", "p99", 5.0))
RATE_MIN_RPS = 1e-4      # below this a point is reported as never passing
LOAD_INDEPENDENT_RTOL = 0.01  # binding metric unchanged by halving the rate: load-independent miss
RATE_MAX_RPS = 1e6       # above this a point is reported as never failing (capacity >= this)
STEADY_STATE_MIN = 10.0  # arrival span / mean E2E below which a warning says the run is a transient
OPEN_LOOP = ("poisson", "gamma", "weibull", "uniform", "normal", "bursty")


def slo_constraints(slo, scenario: ScenarioSpec, min_finished: float = 0.99) -> list[tuple[str, str, float]]:
    """The (variable, op, limit) list every passing rate must satisfy."""
    if slo is None or slo == "spec":
        s = scenario.slo
        cons = [("ttft_p99_ms", "<=", s.ttft_ms), ("tpot_p99_ms", "<=", s.tpot_ms)]
        if s.e2e_ms is not None:
            cons.append(("e2e_p99_ms", "<=", s.e2e_ms))
    elif slo in ("table2", "table2-rag"):
        base = {"ttft": 1000.0 if slo == "table2-rag" else 250.0, "tpot": 25.0}
        cons = [(f"{m}_{q}_ms", "<=", base[m] * k) for m, q, k in _TABLE2]
    elif isinstance(slo, str):
        raise SpecError([f"slo = {slo!r}: expected 'spec', 'table2', 'table2-rag', a list of 'VAR<=VALUE' "
                         "constraints or a {var: (op, value)} table"])
    else:
        try:
            cons = parse_constraints(slo)
        except ValueError as exc:
            raise SpecError([f"slo: {exc}"]) from None
    if min_finished > 0:
        cons.append(("finished_fraction", ">=", float(min_finished)))
    return cons


# ----------------------------------------------------------------------------- configuration points
@dataclass
class _Config:
    """One configuration point of the search: its scenario and fixed seed, or why it is invalid."""
    scenario: ScenarioSpec | None
    seed: np.random.SeedSequence | None
    reason: str = ""
    rate0: float = float("nan")        # the point's own rate (start of the search)
    trace_rate: float = float("nan")   # traces: native mean rate (req/s) at rate_scale = 1
    replicas: int = 1
    derived: dict = field(default_factory=dict)


def _rate_kind(scen: ScenarioSpec) -> str:
    wl = scen.workload
    if wl.trace is not None and wl.trace.use_arrivals:
        return "trace"
    return "rate" if wl.arrival.process in OPEN_LOOP else "none"


def _replicas(scen: ScenarioSpec) -> int:
    if not scen.is_pipeline:
        return scen.client.dp
    return sum(c.dp for c in scen.clients if c.model.architecture == "decoder") or 1


def _config(scen: ScenarioSpec, seed: np.random.SeedSequence) -> _Config:
    from .scenario import build_requests
    kind = _rate_kind(scen)
    if kind == "none":
        return _Config(None, None, f"workload.arrival.process = {scen.workload.arrival.process!r}: capacity search "
                                   f"needs an open-loop arrival process with a rate ({', '.join(OPEN_LOOP)}) "
                                   "or a trace replayed at its own arrival times")
    cfg = _Config(scen, seed, replicas=_replicas(scen))
    if kind == "trace":
        base = _with_rate(scen, 1.0, "trace")
        reqs = build_requests(base.workload, base.simulation.horizon_s, seed)
        span = float(reqs.arrival_s[-1] - reqs.arrival_s[0]) if len(reqs) > 1 else 0.0
        if span <= 0:
            return _Config(None, None, f"workload.trace = {scen.workload.trace.path!r}: all arrivals at one instant, "
                                       "so the trace has no rate to scale")
        cfg.trace_rate = (len(reqs) - 1) / span
        cfg.rate0 = cfg.trace_rate * scen.workload.trace.rate_scale
    else:
        cfg.rate0 = float(scen.workload.arrival.rate_rps)
    return cfg


def _with_rate(scen: ScenarioSpec, value: float, kind: str) -> ScenarioSpec:
    """The scenario at arrival rate (or trace rate scale) ``value``, horizon lifted."""
    wl = scen.workload
    if kind == "trace":
        wl = wl.model_copy(update={"trace": wl.trace.model_copy(update={"rate_scale": float(value)})})
    else:
        wl = wl.model_copy(update={"arrival": wl.arrival.model_copy(update={"rate_rps": float(value)})})
    sim = scen.simulation
    # every request of the workload enters: a slow trial rate must not be cut by the horizon
    sim = sim.model_copy(update={"horizon_s": 1e12, "max_sim_time_s": sim.max_sim_time_s or 1e13})
    return scen.model_copy(update={"workload": wl, "simulation": sim})


def _evaluate(configs: list[_Config], rates: np.ndarray, decode_runs: bool = True) -> dict[str, np.ndarray]:
    """Summary variables of every config at its trial rate: single-client points in one kernel call,
    pipelines one call each."""
    from .runner import summaries
    from .scenario import any_point
    points = []
    for cfg, r in zip(configs, rates):
        kind = "trace" if not math.isnan(cfg.trace_rate) else "rate"
        value = r / cfg.trace_rate if kind == "trace" else r
        points.append(any_point(_with_rate(cfg.scenario, value, kind), cfg.seed))
    out: dict[str, np.ndarray] = {}

    def put(rows, summ):
        for k, v in summ.items():
            v = np.asarray(v)
            if v.ndim != 1:
                continue
            if k not in out:
                out[k] = np.full(len(configs), np.nan)
            out[k][rows] = v

    for rows, summ in summaries(points, decode_runs=decode_runs):
        put(rows, summ)
    with np.errstate(invalid="ignore", divide="ignore"):
        out["finished_fraction"] = out["n_finished"] / out["n_arrived"]
    return out


def _failed(values: dict[str, np.ndarray], cons) -> tuple[np.ndarray, list[str]]:
    """Per config: did any constraint fail, and the first one that did (the binding SLO)."""
    n = len(next(iter(values.values())))
    fail = np.zeros(n, bool)
    binding = [""] * n
    value = np.full(n, np.nan)   # the binding variable's value
    for var, op, lim in cons:
        if var not in values:
            raise SpecError([f"slo: {var!r} is not a summary variable; choose from {', '.join(sorted(values))}"])
        x = values[var]
        bad = ~_CMP[op](x, lim) | np.isnan(x)   # a metric nobody reached (NaN) is a miss
        for i in np.flatnonzero(bad & ~fail):
            binding[i] = f"{var}{op}{lim:g}"
            value[i] = x[i]
        fail |= bad
    return fail, binding, value


# ----------------------------------------------------------------------------- the search
def search(configs: list[_Config], cons, *, rel_tol: float = 0.02, max_iter: int = 60,
           decode_runs: bool = True) -> dict[str, np.ndarray]:
    """Vectorised bracketing + geometric bisection over the rate of every valid config."""
    n = len(configs)
    lo = np.zeros(n)                 # highest rate seen passing
    hi = np.full(n, np.inf)          # lowest rate seen failing
    binding = np.array([""] * n, dtype=object)
    at_lo: dict[str, np.ndarray] = {}
    evals = np.zeros(n, np.int64)
    last_fail = np.full(n, np.nan)              # binding metric at the last failing rate
    load_independent = np.zeros(n, bool)
    valid = np.array([c.scenario is not None for c in configs])
    trial = np.array([c.rate0 if c.scenario is not None else np.nan for c in configs])
    done = ~valid
    for _ in range(max_iter):
        act = np.flatnonzero(~done)
        if act.size == 0:
            break
        vals = _evaluate([configs[i] for i in act], trial[act], decode_runs)
        fail, why, val = _failed(vals, cons)
        evals[act] += 1
        for k, i in enumerate(act):
            if fail[k]:
                # halving the rate left the binding metric where it was: it does not depend on the
                # load (e.g. one request's TPOT is above the limit), so no lower rate will pass
                if (lo[i] == 0.0 and why[k] == binding[i] and np.isfinite(val[k]) and np.isfinite(last_fail[i])
                        and abs(val[k] - last_fail[i]) <= LOAD_INDEPENDENT_RTOL * abs(last_fail[i])):
                    load_independent[i] = True
                hi[i] = trial[i]
                binding[i] = why[k]
                last_fail[i] = val[k]
                if load_independent[i]:
                    done[i] = True
                    continue
            else:
                lo[i] = trial[i]
                for name, v in vals.items():
                    at_lo.setdefault(name, np.full(n, np.nan))[i] = v[k]
            # next trial: expand, shrink or bisect
            if np.isinf(hi[i]):
                nxt = lo[i] * 2.0
                if nxt > RATE_MAX_RPS:
                    done[i] = True
                    continue
            elif lo[i] == 0.0:
                nxt = hi[i] / 2.0
                if nxt < RATE_MIN_RPS:
                    done[i] = True
                    continue
            else:
                if hi[i] / lo[i] <= 1.0 + rel_tol:
                    done[i] = True
                    continue
                nxt = math.sqrt(lo[i] * hi[i])
            trial[i] = nxt
    res = {"max_rate_rps": np.where(valid & (lo > 0), lo, np.nan),
           "rate_fail_rps": np.where(valid, hi, np.nan),
           "binding_slo": binding, "n_evaluations": evals, "fails_at_any_rate": load_independent}
    res["converged"] = valid & (lo > 0) & np.isfinite(hi) & (hi / np.where(lo > 0, lo, 1) <= 1 + rel_tol)
    for name in ("ttft_p99_ms", "tpot_p99_ms", "e2e_p99_ms", "output_tok_s", "slo_attainment", "finished_fraction"):
        res[f"{name}_at_max_rate"] = at_lo.get(name, np.full(n, np.nan))
    # how long arrivals last at the maximum rate, in mean request lifetimes: a short burst of
    # requests drains before queues reach their steady state, which overstates the capacity
    with np.errstate(invalid="ignore", divide="ignore"):
        span_s = at_lo.get("n_arrived", np.full(n, np.nan)) / res["max_rate_rps"]
        res["steady_state_ratio"] = span_s / (at_lo.get("e2e_mean_ms", np.full(n, np.nan)) / 1e3)
    return res


def _variables(res: dict, configs: list[_Config], dims: tuple, shape: tuple) -> dict[str, xr.Variable]:
    rep = np.array([c.replicas for c in configs], float)
    reason = np.array([c.reason for c in configs], dtype=object)
    attrs = {
        "max_rate_rps": ("highest passing arrival rate", "s-1",
                         "highest request rate found to meet every SLO constraint (lower end of the final bracket)"),
        "max_rate_per_replica_rps": ("highest passing rate per replica", "s-1",
                                     "max_rate_rps divided by the number of LLM engine replicas (dp summed over "
                                     "LLM clients)"),
        "rate_fail_rps": ("lowest failing arrival rate", "s-1",
                          "lowest request rate found to miss an SLO (upper end of the final bracket; inf: none "
                          f"failed up to {RATE_MAX_RPS:g})"),
        "binding_slo": ("binding SLO", "", "the first constraint that failed at rate_fail_rps"),
        "n_evaluations": ("simulations run", "1", "trial rates simulated for this point"),
        "converged": ("bracket converged", "1", "rate_fail_rps / max_rate_rps <= 1 + rel_tol"),
        "fails_at_any_rate": ("SLO missed at any load", "1",
                              "halving the rate left the binding metric within 1 % of its value: the limit is "
                              "missed by the configuration itself (e.g. the TPOT of a lone request), not by load"),
        "invalid_reason": ("why the point was not searched", "", "empty for searched points"),
        "steady_state_ratio": ("arrival span over request lifetime", "1",
                               "(requests / max_rate_rps) / mean E2E at max_rate_rps; below about 10 the "
                               "requests arrive as a burst that drains before queues reach a steady state, "
                               "and max_rate_rps overstates the sustainable rate: raise num_requests"),
    }
    data = dict(res)
    data["max_rate_per_replica_rps"] = res["max_rate_rps"] / rep
    data["invalid_reason"] = reason
    out = {}
    for name, v in data.items():
        v = np.asarray(v)
        if v.dtype == bool:
            v = v.astype(np.int8)
        a = attrs.get(name)
        if a is None and name.endswith("_at_max_rate"):
            base = name[: -len("_at_max_rate")]
            unit = "ms" if base.endswith("_ms") else ("s-1" if base.endswith("tok_s") else "1")
            a = (f"{base} at max rate", unit, f"{base} simulated at max_rate_rps")
        ln, units, desc = a
        at = {"long_name": ln, "description": desc}
        if units:
            at["units"] = units
        out[name] = xr.Variable(dims, v.reshape(shape), attrs=at)
    return out


def capacity(spec, slo=None, *, rel_tol: float = 0.02, min_finished: float = 0.99, max_iter: int = 60,
             decode_runs: bool = True) -> xr.Dataset:
    """Highest request rate at which every SLO holds.

    ``spec``: a scenario (path, dict or ScenarioSpec) or a sweep (path to a sweep TOML or a
    SweepSpec); for a sweep every configuration point is searched at once and an axis over
    ``workload.arrival.rate_rps`` (if any) is dropped — the rate is what is searched.
    ``slo``: see the module docstring. Returns a Dataset with ``max_rate_rps`` and its bracket,
    the binding SLO and the metrics at the maximum rate, over the sweep's dimensions.
    """
    if not 0 < rel_tol < 1:
        raise SpecError([f"rel_tol = {rel_tol!r}: must be in (0, 1)"])
    sweep = _as_sweep(spec)
    if sweep is None:
        scen = _as_scenario(spec)
        from .scenario import point_seed
        configs = [_config(scen, point_seed(scen.simulation.seed))]
        dims, shape, coords, ref = (), (), {}, (scen if configs[0].scenario is not None else None)
    else:
        configs, dims, shape, coords, ref = _sweep_configs(sweep)
    if ref is None:
        raise SpecError([configs[0].reason or "capacity: no valid configuration point to search"])
    cons = slo_constraints(slo, ref, min_finished)
    res = search(configs, cons, rel_tol=rel_tol, max_iter=max_iter, decode_runs=decode_runs)
    ds = xr.Dataset(_variables(res, configs, dims, shape), coords=coords)
    short = np.asarray(res["steady_state_ratio"] < STEADY_STATE_MIN)
    if short.any():
        import warnings
        warnings.warn(f"capacity: at {int(short.sum())} of {short.size} points the requests arrive within fewer than "
                      f"{STEADY_STATE_MIN} mean request lifetimes at the maximum rate (steady_state_ratio), so the "
                      "search measured a transient burst and overstates the sustainable rate; raise "
                      "workload.num_requests", stacklevel=2)
    ds.attrs.update({"constraints": "; ".join(f"{v}{op}{lim:g}" for v, op, lim in cons),
                     "rel_tol": rel_tol,
                     "method": "bisection over the arrival rate with common random numbers (same seed at every "
                               "rate); horizon lifted so every request of the workload arrives"})
    return ds


def _as_sweep(spec):
    from pathlib import Path

    from .sweep import SweepSpec, load_sweep
    if isinstance(spec, SweepSpec):
        return spec
    if isinstance(spec, (str, Path)):
        from .specs import load_toml
        doc = load_toml(spec)
        if "sweep" in doc:
            return load_sweep(spec)
    return None


def _as_scenario(spec) -> ScenarioSpec:
    from pathlib import Path
    if isinstance(spec, ScenarioSpec):
        return spec
    if isinstance(spec, (str, Path)):
        return load_scenario(spec)
    if isinstance(spec, dict):
        return parse_scenario(spec)
    raise SpecError([f"capacity: spec of type {type(spec).__name__} is not a scenario or a sweep"])


_RATE_PATHS = ("workload.arrival.rate_rps", "workload.trace.rate_scale")


def _sweep_configs(sweep):
    """Configs of every sweep point (rate axes dropped) with the Dataset layout of the sweep."""
    import dataclasses

    from .scenario import point_seed
    from .sweep import point_doc, point_values
    dropped = [a for a in sweep.axes if a.path in _RATE_PATHS]
    if dropped:
        sweep = dataclasses.replace(sweep, axes=tuple(a for a in sweep.axes if a.path not in _RATE_PATHS))
        if sweep.mode == "zip" and sweep.axes == ():
            sweep = dataclasses.replace(sweep, mode="product")
    configs, ref = [], None
    for vals in point_values(sweep):
        try:
            doc, derived = point_doc(sweep, vals)
            scen = parse_scenario(doc, base={})
            # common random numbers across configurations too: every point uses its scenario's seed
            # as a single run would, so a point's capacity equals capacity() of its own scenario
            ss = point_seed(scen.simulation.seed)
            cfg = _config(scen, ss)
            cfg.derived = derived
            if cfg.scenario is not None and ref is None:
                ref = scen
        except SpecError as e:
            cfg = _Config(None, None, "; ".join(e.problems))
        except ZeroDivisionError:
            cfg = _Config(None, None, "derived expression divided by zero")
        configs.append(cfg)
    if sweep.mode == "product" and sweep.axes:
        dims = tuple(a.name for a in sweep.axes)
        shape = tuple(len(a.values) for a in sweep.axes)
        coords = {a.name: (a.name, _coord(a.values)) for a in sweep.axes}
    elif sweep.axes:
        vals = point_values(sweep)
        dims, shape = ("point",), (len(vals),)
        coords = {"point": np.arange(len(vals))}
        for j, a in enumerate(sweep.axes):
            coords[a.name] = ("point", _coord([v[j] for v in vals]))
    else:
        dims, shape, coords = (), (), {}
    return configs, dims, shape, coords, ref


def _coord(values):
    try:
        return np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        return np.asarray([str(v) for v in values], dtype=object)


# ----------------------------------------------------------------------------- goodput over an SLO grid
def goodput_grid(spec, ttft_ms, tpot_ms, *, decode_runs: bool = True) -> xr.Dataset:
    """Goodput and SLO attainment of one scenario over a grid of (TTFT, TPOT) limits, from one
    simulation: a request counts at a grid point when it finished, its TTFT is within the TTFT limit
    and its TPOT (requests of two or more tokens) within the TPOT limit (and its E2E within the
    scenario's ``slo.e2e_ms`` when set). Requests are counted over the measured window (arrivals in
    [warmup_s, horizon_s]); rejected and unfinished requests are misses."""
    from .scenario import simulate
    scen = _as_scenario(spec)
    ds = simulate(scen, per_request=True, decode_runs=decode_runs)
    a = np.asarray(ttft_ms, float)
    b = np.asarray(tpot_ms, float)
    if a.ndim != 1 or b.ndim != 1 or a.size == 0 or b.size == 0 or (a <= 0).any() or (b <= 0).any():
        raise SpecError(["goodput_grid: ttft_ms and tpot_ms must be non-empty lists of limits > 0"])
    arr = ds["req_arrival_s"].values
    sim = scen.simulation
    measured = (arr >= sim.warmup_s) & (arr <= sim.horizon_s) & ~np.isnan(arr)
    from .kernels.engine import FINISHED
    fin = measured & (ds["req_status"].values == FINISHED)
    ttft = ds["req_ttft_ms"].values
    tpot = ds["req_tpot_ms"].values
    e2e_ok = np.ones_like(fin)
    if scen.slo.e2e_ms is not None:
        e2e_ok = ds["req_e2e_ms"].values <= scen.slo.e2e_ms
    gen = ds["req_generated_tokens"].values
    ok_t = ttft[None, :] <= a[:, None]                                    # (ttft limit, request)
    ok_p = (gen < 2)[None, :] | (tpot[None, :] <= b[:, None])            # (tpot limit, request)
    good = (fin & e2e_ok)[None, None, :] & ok_t[:, None, :] & ok_p[None, :, :]
    n_good = good.sum(axis=-1).astype(float)
    win = float(ds["window_s"])
    out = xr.Dataset(coords={"slo_ttft_ms": ("slo_ttft_ms", a, {"units": "ms", "long_name": "TTFT limit"}),
                             "slo_tpot_ms": ("slo_tpot_ms", b, {"units": "ms", "long_name": "TPOT limit"})})
    out["goodput_rps"] = xr.Variable(("slo_ttft_ms", "slo_tpot_ms"), n_good / win if win > 0 else np.full_like(n_good, np.nan),
                                     {"units": "s-1", "long_name": "goodput",
                                      "description": "finished requests meeting both limits / measured window"})
    out["slo_attainment"] = xr.Variable(("slo_ttft_ms", "slo_tpot_ms"), n_good / max(int(measured.sum()), 1),
                                        {"units": "1", "long_name": "SLO attainment",
                                         "description": "requests meeting both limits / measured requests"})
    return out
