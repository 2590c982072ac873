"""Per-group efficiency fit: η_c, η_m, τ, the per-step and TTFT overheads and η_prefill of one
(device, engine) group (or a pooled one) by least squares on log-ratio errors."""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from .specs import ClientSpec
from .calibration_store import DEFAULT_EFFICIENCY, CalibrationError, _eff_dict
from .calibration_observations import StepObservation, default_client
from .calibration_recost import StepSet
from .calibration_runs import RunObservation, _run_stepset, prepare_runs, recosted, ref_waits, run_values


def one_blas_thread():
    """Context in which BLAS/LAPACK use one thread (threadpoolctl; a no-op without it).

    The fits' least-squares solver takes an SVD of its Jacobian (thousands of rows x hundreds of
    terms) at every iteration. On a node whose cores are busy with other jobs (a sweep, a test
    suite, another fit) OpenBLAS's worker threads spin against them: measured on a 2-core machine
    under load, one SVD of 6,000 x 500 took 10x the wall time and 20x the CPU time with two BLAS
    threads than with one. One thread also makes the fit's arithmetic independent of the core count.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:   # pragma: no cover - threadpoolctl is a dependency; keep the fit usable without it
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


EFFICIENCY_PARAMS = ("compute", "memory", "op_overhead_us", "step_overhead_ms", "prefill", "ttft_overhead_ms")
# fitted parameters on a linear scale (>= 0); the η are fitted in log units within ETA_BOUNDS
LINEAR_PARAMS = ("op_overhead_us", "step_overhead_ms", "ttft_overhead_ms")
LINEAR_START = {"op_overhead_us": 0.5, "step_overhead_ms": 0.1, "ttft_overhead_ms": 1.0}   # offset from the start value
LINEAR_SCALE = {"op_overhead_us": 5.0, "step_overhead_ms": 1.0, "ttft_overhead_ms": 5.0}   # least_squares x_scale
# prior units: ``tau_prior_weight`` counts per 10 µs of per-op overhead, ``step_prior_weight`` per
# 0.2 ms of per-step overhead. With one model per group a constant per-step floor cannot be split
# between the two (both add the same time to every step); the stiffer per-step unit gives such a
# floor to τ, as before the per-step overhead was fitted (> 95 % of it for a model of >= 100 ops).
# Data with several layer counts in a group (or the Splitwise 30-45 ms floors) outweigh it by far.
LINEAR_PRIOR_UNIT = {"op_overhead_us": 10.0, "step_overhead_ms": 0.2, "ttft_overhead_ms": 10.0}
STEP_PRIOR_WEIGHT = 1e-3
# the per-request TTFT overhead (client-measured time outside the engine steps) is identified only by
# low-load TTFT rows (RunObservation.prefill_steps); a weak prior (per 10 ms) keeps it at the parent
# entry's value (0 at the root) where a group has none
TTFT_PRIOR_WEIGHT = 0.02
ETA_BOUNDS = (0.05, 1.0)
ROBUST_SCALE = 0.2           # log units: residuals beyond ~20 % count linearly in the efficiency fit (soft L1)


# ============================================================================ efficiency fit
@dataclass
class EfficiencyFit:
    """Result of :func:`fit_efficiency` for one group (errors are |predicted/measured − 1| on the
    fitted rows)."""
    compute: float
    memory: float
    op_overhead_us: float
    network: float = 1.0
    step_overhead_ms: float = 0.0
    prefill: float = 1.0
    ttft_overhead_ms: float = 0.0
    first_wave_ms: float = 0.0      # set after the fit from closed-loop TTFT tails (validate.fit_first_wave)
    n_steps: int = 0
    n_runs: int = 0
    rows: tuple = ()
    params: tuple = ()
    median_abs_rel_err: float = float("nan")
    p90_abs_rel_err: float = float("nan")
    success: bool = True
    message: str = ""
    seq_overhead_us: float = 0.0    # host time per sequence per step (factorised fit only)
    collective_us: float = 5.0      # per collective call (factorised fit; the per-group fit keeps the default)
    expert_compute: float = 1.0     # expert-GEMM share of the peak on top of compute (factorised fit only)
    expert_fp8: float = 1.0         # W8A8 FP8 expert GEMMs' share of the FP8 peak (factorised fit only)
    dense_fp8: float = 1.0          # block-scaled FP8 dense GEMMs' share of the FP8 peak (factorised fit only)

    def as_efficiency(self) -> dict:
        return {"compute": self.compute, "memory": self.memory, "network": self.network,
                "op_overhead_us": self.op_overhead_us, "step_overhead_ms": self.step_overhead_ms,
                "prefill": self.prefill, "ttft_overhead_ms": self.ttft_overhead_ms,
                "first_wave_ms": self.first_wave_ms, "seq_overhead_us": self.seq_overhead_us,
                "collective_us": self.collective_us, "expert_compute": self.expert_compute,
                "expert_fp8": self.expert_fp8, "dense_fp8": self.dense_fp8}

    def __getitem__(self, k):
        return getattr(self, k)


def _group_key(device: str, engine: str, group_by) -> tuple:
    if group_by is None:
        return ("*", "*")
    g = tuple(group_by)
    return (device if "device" in g else "*", engine if "engine" in g else "*")


def fit_efficiency(observations: Sequence[StepObservation],
                   base_client_factory: Callable[[StepObservation], ClientSpec] = default_client, *,
                   runs: Sequence[RunObservation] = (), group_by: Sequence[str] | None = ("device", "engine"),
                   params: Sequence[str] | None = None, x0: Mapping[str, float] | None = None,
                   prior_weight: float = 0.02, tau_prior_weight: float = 1e-3, memory_floor: float = 0.5,
                   floor_weight: float = 1.0, refine_runs: bool = False, step_prior_weight: float = STEP_PRIOR_WEIGHT,
                   prior: Mapping[str, float] | Callable[[tuple], Mapping[str, float] | None] | None = None,
                   equal_model_weights: bool = False):
    """Fit η_c, η_m, τ (and η_net) by minimising the log-ratio error ``log(predicted/measured)``
    over step observations (and run observations) with :func:`scipy.optimize.least_squares`
    (bounds: η in [0.05, 1], τ >= 0 µs).

    ``base_client_factory(obs)`` gives the analytical client of an observation (its efficiency is
    replaced during the fit). ``group_by``: a separate fit per (device, engine) by default; a
    subset such as ``("engine",)`` pools devices; None fits one set for everything and returns a
    single :class:`EfficiencyFit` instead of a dict keyed by (device, engine) (``"*"`` = pooled).

    ``params`` (default: compute, memory, op_overhead_us, step_overhead_ms; add ``"network"`` to fit η_net too) are
    the fitted parameters; the others stay at ``x0`` (default η = 0.75, η_net = 1, τ = 0). η_net
    is off by default: the collective model has bandwidth but no fitted latency, so at one TP
    degree η_net mostly trades off against η_c and does not transfer to other TP degrees.

    A weak prior keeps parameters the data cannot identify near their defaults: ``prior_weight`` per η in log units (towards η_c = η_m = 0.75, η_net = 1) and
    ``tau_prior_weight`` per 10 µs of τ; with exact data it moves the fit by about prior_weight²
    (relative). Memory-bound steps of one configuration cannot tell a slow memory (low η_m) from
    a fixed per-op overhead (τ): both add a constant to every decode step. Streaming weights and
    KV from HBM reaches well over half the datasheet bandwidth in any serving engine, while
    launch, synchronisation and framework overheads differ a lot between engines, so a one-sided
    penalty (``floor_weight`` per log unit below ``memory_floor``) makes the fit explain such
    floors with τ rather than with η_m < ``memory_floor`` unless the data insists.

    Run observations are re-costed through their logged batch sequences (:class:`RunObservation`);
    with ``refine_runs`` the runs are simulated again at the fitted values and the fit is redone
    around that anchor (on the measurements.csv throughput rows this moved the fitted values by
    < 2 % and the errors by < 0.5 %, so it is off by default).
    """
    from scipy.optimize import least_squares

    groups: dict[tuple, tuple[list, list]] = {}
    for o in observations:
        groups.setdefault(_group_key(o.device, o.engine, group_by), ([], []))[0].append(o)
    for r in runs:
        groups.setdefault(_group_key(r.device, r.engine, group_by), ([], []))[1].append(r)
    if params is not None:
        for p in params:
            if p not in ("compute", "memory", "op_overhead_us", "network", "step_overhead_ms", "prefill",
                         "ttft_overhead_ms"):
                raise CalibrationError(f"params: unknown parameter {p!r}")
    start = dict(DEFAULT_EFFICIENCY)
    if x0:
        start.update(x0)
    results = {}
    for key, (obs, rns) in groups.items():
        ps = tuple(params) if params is not None else EFFICIENCY_PARAMS
        centre = prior(key) if callable(prior) else prior
        centre = _eff_dict(centre) if centre is not None else None
        results[key] = _fit_one(obs, rns, base_client_factory, ps, dict(start, **(centre or {})), prior_weight,
                                tau_prior_weight, memory_floor, floor_weight, refine_runs, least_squares,
                                prior_centre=centre, equal_model_weights=equal_model_weights,
                                step_prior_weight=step_prior_weight)
    if group_by is None:
        return results.get(("*", "*")) if results else None
    return results


def _fit_one(obs, runs, factory, params, start, prior_weight, tau_prior_weight, memory_floor, floor_weight,
             refine_runs, least_squares, prior_centre=None, equal_model_weights=False,
             step_prior_weight=STEP_PRIOR_WEIGHT) -> EfficiencyFit:
    steps = StepSet()
    for i, o in enumerate(obs):
        steps.add(factory(o), o.prefill, o.decode, owner=i)
    if len(steps):
        steps.build()
    meas = np.log([o.time_s for o in obs]) if obs else np.zeros(0)
    run_meas = np.log([r.measured for r in runs]) if runs else np.zeros(0)
    lo_eta, hi_eta = ETA_BOUNDS
    names = ("compute", "memory", "network", "op_overhead_us", "step_overhead_ms", "prefill", "ttft_overhead_ms")

    def unpack(x) -> dict:
        v = {k: start.get(k, DEFAULT_EFFICIENCY[k]) for k in names}
        for p, xi in zip(params, x):
            v[p] = float(np.exp(xi)) if p not in LINEAR_PARAMS else float(xi)
        return v

    def clip_eta(v):
        return min(max(v, lo_eta), hi_eta)

    x_start = np.array([math.log(clip_eta(start[p])) if p not in LINEAR_PARAMS
                        else max(start.get(p, 0.0), 0.0) + LINEAR_START[p] for p in params])
    lb = np.array([math.log(lo_eta) if p not in LINEAR_PARAMS else 0.0 for p in params])
    ub = np.array([math.log(hi_eta) if p not in LINEAR_PARAMS else np.inf for p in params])
    x_start = np.clip(x_start, lb, ub)
    pc = {**DEFAULT_EFFICIENCY, **(prior_centre or {})}
    prior_at = {"compute": math.log(min(max(pc["compute"], lo_eta), hi_eta)),
                "memory": math.log(min(max(pc["memory"], lo_eta), hi_eta)),
                "network": math.log(min(max(pc["network"], lo_eta), hi_eta)), "op_overhead_us": float(pc["op_overhead_us"]),
                "prefill": math.log(min(max(pc.get("prefill", 1.0), lo_eta), hi_eta)),
                "step_overhead_ms": float(pc.get("step_overhead_ms", 0.0)),
                "ttft_overhead_ms": float(pc.get("ttft_overhead_ms", 0.0))}
    x_scale = np.array([0.3 if p not in LINEAR_PARAMS else LINEAR_SCALE[p] for p in params])

    run_steps = None
    anchor = {}
    if runs:
        prepare_runs(runs)
        run_steps = _run_stepset(runs)
        # the logged reference simulations ran with each run's base-client efficiency
        for j, r in enumerate(runs):
            e = r.client.efficiency
            anchor.setdefault(j, ((e.compute, e.memory, e.op_overhead_us, e.network, e.step_overhead_ms,
                                   e.prefill), r.ref_value))

    def anchor_totals():
        S0 = np.zeros(len(runs))
        for key in {a[0] for a in anchor.values()}:
            tot = run_steps.totals(len(runs), *key)
            for j, a in anchor.items():
                if a[0] == key:
                    S0[j] = tot[j]
        return S0, np.array([anchor[j][1] for j in range(len(runs))])

    # pooled fits: each (device, engine, model) group carries the weight of ~one group's rows, so
    # one large benchmark sweep of one model cannot set the pooled efficiencies of every other model
    if equal_model_weights:
        keys = [(o.device, o.engine, o.model) for o in obs] + \
            [(r.device, r.engine, r.point.client.model.name) for r in runs]
        sizes: dict[tuple, int] = {}
        for k in keys:
            sizes[k] = sizes.get(k, 0) + 1
        n_mean = len(keys) / max(len(sizes), 1)
        wts = np.sqrt(np.array([n_mean / sizes[k] for k in keys])) if keys else np.zeros(0)
    else:
        wts = np.ones(len(obs) + len(runs))
    w_obs, w_run = wts[:len(obs)], wts[len(obs):]
    ttft_rows = np.array([1.0 if r.prefill_steps else 0.0 for r in runs])
    w0 = ref_waits(runs) if runs else np.zeros(0)   # decode-step waits kept out of the prefill ratio

    def residuals(x, S0, m0):
        v = unpack(x)
        res = []
        if len(obs):
            t = steps.times(v["compute"], v["memory"], v["op_overhead_us"], v["network"], v["step_overhead_ms"],
                            v["prefill"])
            res.append(w_obs * (np.log(t) - meas))
        if runs:
            S = run_steps.totals(len(runs), v["compute"], v["memory"], v["op_overhead_us"], v["network"],
                                 v["step_overhead_ms"], v["prefill"])
            ratio = np.where([r.rate_like for r in runs], S0 / S, S / S0)
            # a low-load TTFT row adds the per-request time outside the engine steps (the reference
            # simulations never include it)
            pred = recosted(m0, ratio, w0) + v["ttft_overhead_ms"] * ttft_rows
            res.append(w_run * (np.log(np.maximum(pred, 1e-300)) - run_meas))
        linear_weight = {"op_overhead_us": tau_prior_weight, "step_overhead_ms": step_prior_weight,
                         "ttft_overhead_ms": TTFT_PRIOR_WEIGHT}
        pri = [prior_weight * (xi - prior_at[p]) if p not in LINEAR_PARAMS
               else linear_weight[p] * (xi - prior_at[p]) / LINEAR_PRIOR_UNIT[p]
               for p, xi in zip(params, x)]
        if "memory" in params and floor_weight > 0:
            pri.append(floor_weight * max(0.0, math.log(memory_floor) - x[params.index("memory")]))
        res.append(np.asarray(pri, dtype=float))
        return np.concatenate(res)

    S0, m0 = anchor_totals() if runs else (None, None)
    # robust loss: a few rows the step model cannot represent (e.g. scheduling effects) must not
    # drag the efficiencies of every other row; residuals below ROBUST_SCALE count as squares
    kw = dict(bounds=(lb, ub), method="trf", x_scale=x_scale, xtol=1e-10, ftol=1e-12, gtol=1e-12, max_nfev=300,
              loss="soft_l1", f_scale=ROBUST_SCALE)
    with one_blas_thread():
        sol = least_squares(residuals, x_start, args=(S0, m0), **kw)
    if runs and refine_runs:
        v = unpack(sol.x)
        vals = run_values(runs, v)
        key = (v["compute"], v["memory"], v["op_overhead_us"], v["network"], v["step_overhead_ms"], v["prefill"])
        anchor = {j: (key, vals[j]) for j in range(len(runs))}
        S0, m0 = anchor_totals()
        with one_blas_thread():
            sol = least_squares(residuals, sol.x, args=(S0, m0), **kw)
    v = unpack(sol.x)
    r = residuals(sol.x, S0, m0)[:len(obs) + len(runs)] / np.maximum(wts, 1e-300)
    err = np.abs(np.expm1(r)) if len(r) else np.array([np.nan])
    return EfficiencyFit(compute=v["compute"], memory=v["memory"], op_overhead_us=v["op_overhead_us"],
                         network=v["network"], step_overhead_ms=v["step_overhead_ms"], prefill=v["prefill"],
                         ttft_overhead_ms=v["ttft_overhead_ms"], n_steps=len(obs), n_runs=len(runs), params=tuple(params),
                         rows=tuple([o.id for o in obs] + [r_.id for r_ in runs]),
                         median_abs_rel_err=float(np.median(err)), p90_abs_rel_err=float(np.percentile(err, 90)),
                         success=bool(sol.success), message=str(sol.message))
