"""Step corrections: residual factor tables over token count (and context) that make one exact
client reproduce its measured steps, with the per-step fit diagnostics."""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, replace
from typing import Mapping, Sequence

import numpy as np

from .kernels import steptime as K
from .specs import ClientSpec
from .calibration_store import CalibrationError, with_efficiency
from .calibration_observations import StepObservation
from .calibration_recost import StepSet

CORRECTION_TOLERANCE = 0.02   # a calibrated client reproduces distinct training steps within this


# ============================================================================ step correction
def _representative(obs: StepObservation, T: float) -> tuple[list, list]:
    """The observation's batch shape rescaled to ``T`` token rows (for checks between knots)."""
    s = T / obs.tokens
    if obs.prefill:
        return [(p, max(1.0, n * s)) for p, n in obs.prefill], [(w, k) for w, k in obs.decode]
    n = max(1, int(round(len(obs.decode) * s)))
    k = float(np.mean([k for _, k in obs.decode]))
    w = float(np.mean([w for w, _ in obs.decode]))
    return [], [(w, k)] * n


def fit_step_correction(observations: Sequence[StepObservation], client: ClientSpec, *, max_knots: int | None = None,
                        monotone_grid: int = 24, monotone_rtol: float = 1e-3, source: str = "",
                        context: bool = True) -> dict:
    """Residual factor table (a ``StepCorrectionSpec`` dict) that makes ``client`` reproduce the
    measured steps of one configuration.

    For each step kind (with prefill / decode-only) the ratio measured/predicted is computed at
    every observation (geometric mean over observations with the same token count T); the kernel
    interpolates the factor linearly in log T between knots and clamps it at the ends. Knots are
    the union of both kinds' T values (the table shares them); a kind's factor at the other kind's
    knots is its own interpolant, so each kind reproduces its distinct-T training points exactly
    (within :data:`CORRECTION_TOLERANCE` after thinning to ``max_knots``). A kind with no data keeps
    factor 1.

    Monotone-safe: between two neighbouring measured points whose times are ordered, the corrected
    time f(T)·analytical(T) is checked on a grid; where it turns back (possible when the factor
    falls steeply while the analytical time rises), knots are inserted where the curve is furthest
    from the log-linear interpolation of the measured times, with that interpolation as target,
    until it is monotone or the knot budget is used. A turn-back larger than ``monotone_rtol``
    (relative) left at the end is reported with a warning.
    """
    if max_knots is not None and max_knots > K.CORR_MAX:
        raise CalibrationError(f"max_knots = {max_knots}: the kernel table holds at most {K.CORR_MAX}")
    if client.efficiency.step_overhead_ms > 0 and observations:
        return _correction_over_step_overhead(observations, client, max_knots=max_knots, context=context,
                                              source=source, monotone_grid=monotone_grid,
                                              monotone_rtol=monotone_rtol)
    if context and observations and _has_context_info(observations):
        return fit_context_correction(observations, client, max_knots=max_knots or K.CORR_MAX, source=source)
    max_knots = max_knots or 16
    base = client.model_copy(update={"step_correction": None})
    kinds: dict[str, list[StepObservation]] = {"prefill": [], "decode": []}
    for o in observations:
        kinds[o.kind].append(o)
    if not observations:
        raise CalibrationError("fit_step_correction: no observations")

    def analytic(prefill, decode) -> float:
        st = StepSet()
        st.add(base, prefill, decode)
        return float(st.times(base.efficiency.compute, base.efficiency.memory, base.efficiency.op_overhead_us,
                              base.efficiency.network, base.efficiency.step_overhead_ms)[0])

    # per kind: sorted distinct log T, log-ratio, measured log time, representative obs
    data: dict[str, dict] = {}
    for kind, obs in kinds.items():
        if not obs:
            continue
        by_T: dict[int, list] = {}
        for o in obs:
            pred = analytic(o.prefill, o.decode)
            by_T.setdefault(o.tokens, []).append((math.log(o.time_s / pred), math.log(o.time_s), o))
        Ts = sorted(by_T)
        data[kind] = {
            "x": np.log(np.array(Ts, dtype=float)),
            "lr": np.array([np.mean([v[0] for v in by_T[t]]) for t in Ts]),
            "lt": np.array([np.mean([v[1] for v in by_T[t]]) for t in Ts]),
            "obs": [by_T[t][0][2] for t in Ts],
        }
    knots = np.unique(np.concatenate([d["x"] for d in data.values()]))
    knots = _thin_knots(knots, max_knots)

    def factors(kind, xs):
        if kind not in data:
            return np.ones(len(xs))
        d = data[kind]
        return np.exp(np.interp(xs, d["x"], d["lr"]))

    table = {k: factors(k, knots) for k in ("prefill", "decode")}

    # ---- monotone safety between measured neighbours ------------------------------------------
    def corrected(kind, x, obs_lo):
        f = np.interp(x, knots, table[kind])
        pf, dec = _representative(obs_lo, math.exp(x))
        return f * analytic(pf, dec)

    def find_violation(rtol=0.0):
        """First (kind, segment, grid xs, model log-times incl. ends, direction) that is not
        monotone (within ``rtol``) between two measured neighbours, or None."""
        for kind, d in data.items():
            for i in range(len(d["x"]) - 1):
                lo_t, hi_t = d["lt"][i], d["lt"][i + 1]
                if abs(hi_t - lo_t) < 1e-12:
                    continue
                xs = np.linspace(d["x"][i], d["x"][i + 1], monotone_grid + 2)[1:-1]
                if kind == "decode":  # decode rows are whole numbers
                    xs = np.unique(np.log(np.unique(np.round(np.exp(xs)))))
                    xs = xs[(xs > d["x"][i] + 1e-12) & (xs < d["x"][i + 1] - 1e-12)]
                xs = np.unique(np.concatenate([xs, knots[(knots > d["x"][i]) & (knots < d["x"][i + 1])]]))
                if len(xs) == 0:
                    continue
                ys = np.concatenate([[math.log(corrected(kind, d["x"][i], d["obs"][i]))],
                                     np.log([corrected(kind, x, d["obs"][i]) for x in xs]),
                                     [math.log(corrected(kind, d["x"][i + 1], d["obs"][i]))]])
                sgn = 1.0 if hi_t > lo_t else -1.0
                back = np.maximum.accumulate(ys * sgn) - ys * sgn   # how far the curve turned back
                if (back > math.log1p(rtol) + 1e-10).any():
                    return kind, i, np.concatenate([[d["x"][i]], xs, [d["x"][i + 1]]]), ys, sgn
        return None

    # 1) insert knots (targets: log-linear interpolation of the measured times) while the budget lasts
    while len(knots) < max_knots:
        v = find_violation()
        if v is None:
            break
        kind, i, xs, ys, sgn = v
        d = data[kind]
        # new knot where the curve is furthest from the log-linear interpolation of the measured
        # times, away from existing knots
        u_all = (xs - d["x"][i]) / (d["x"][i + 1] - d["x"][i])
        dev = np.abs(ys - (d["lt"][i] + u_all * (d["lt"][i + 1] - d["lt"][i])))
        far = np.array([np.min(np.abs(knots - x)) > 1e-6 for x in xs])
        if not far.any():
            break
        xn = xs[np.flatnonzero(far)[np.argmax(dev[far])]]
        u = (xn - d["x"][i]) / (d["x"][i + 1] - d["x"][i])
        target = math.exp(d["lt"][i] + u * (d["lt"][i + 1] - d["lt"][i]))
        pf, dec = _representative(d["obs"][i], math.exp(xn))
        f_new = target / analytic(pf, dec)
        new_knots = np.sort(np.append(knots, xn))
        new_table = {}
        for k2 in ("prefill", "decode"):
            vals = np.interp(new_knots, knots, table[k2])
            if k2 == kind:
                vals[np.searchsorted(new_knots, xn)] = f_new
            new_table[k2] = vals
        knots, table = new_knots, new_table
    if find_violation(monotone_rtol) is not None:
        warnings.warn(f"fit_step_correction: the corrected step time turns back by more than {monotone_rtol:.1%} "
                      "between measured neighbours whose times are monotone (knot budget used up)", stacklevel=2)

    # reproduction error of the distinct-T training points
    worst = 0.0
    for kind, d in data.items():
        for x, lt, o in zip(d["x"], d["lt"], d["obs"]):
            worst = max(worst, abs(math.log(corrected(kind, x, o)) - lt))
    worst = math.expm1(worst)

    tokens = [float(round(math.exp(x), 6)) for x in knots]
    # strictly increasing after rounding
    keep = [0] + [i for i in range(1, len(tokens)) if tokens[i] > tokens[i - 1]]
    corr = {"tokens": [tokens[i] for i in keep], "prefill": [float(table["prefill"][i]) for i in keep],
            "decode": [float(table["decode"][i]) for i in keep]}
    # the real per-step error over every training step (the distinct-T representatives above are
    # reproduced within `worst`; steps of other batch shapes at the same T can differ)
    diag = step_fit_errors(observations, with_efficiency(base, None, corr))
    _warn_if_poor(diag)
    corr["source"] = ((source or f"fit_step_correction on {len(observations)} measured steps")
                      + f"; distinct-T training steps within {100 * worst:.2g} %; per-step error {diag.summary()}")
    return corr


def _correction_over_step_overhead(observations, client: ClientSpec, **kw) -> dict:
    """The kernel adds the per-step overhead after the correction (``f·analytical + overhead``), so
    the factors are fitted on the measured times less that overhead, against the client without
    it; a step measured faster than the overhead keeps a small positive remainder (2 % of it)."""
    ovh_s = client.efficiency.step_overhead_ms * 1e-3
    core = with_efficiency(client, {"step_overhead_ms": 0.0})
    reduced = [replace(o, time_s=max(o.time_s - ovh_s, 0.02 * o.time_s)) for o in observations]
    corr = fit_step_correction(reduced, core, **kw)
    diag = step_fit_errors(observations, with_efficiency(client.model_copy(update={"step_correction": None}),
                                                        None, {k: v for k, v in corr.items() if k != "source"}))
    corr["source"] = ((kw.get("source") or f"fit_step_correction on {len(observations)} measured steps")
                      + f"; factors on the measured times less the {client.efficiency.step_overhead_ms:.3g} ms "
                      f"per-step overhead; per-step error {diag.summary()}")
    return corr


# ============================================================================ context-aware correction
def _analytic_parts(client: ClientSpec, obs: StepObservation) -> tuple[float, float]:
    """(non-attention s, attention s) of the uncorrected analytical model for one observation."""
    from .stepmodel import step_latency
    st = step_latency(client, prefill=obs.prefill, decode=obs.decode)
    at = st.breakdown["attention_s"]
    return st.total_s - at, at


def _has_context_info(observations: Sequence[StepObservation]) -> bool:
    """True when the observations can separate the attention factor from the rest: they carry
    their attention time, or some token count T was measured at several contexts."""
    if any(o.attention_s is not None for o in observations):
        return True
    seen: dict[tuple, set] = {}
    for o in observations:
        ctx = sum(w * k for w, k in o.decode) + sum(n * p for p, n in o.prefill)
        seen.setdefault((o.kind, o.tokens), set()).add(ctx)
    return any(len(v) > 1 for v in seen.values())


def fit_context_correction(observations: Sequence[StepObservation], client: ClientSpec, *,
                           max_knots: int = K.CORR_MAX, knot_tolerance: float = 0.002, source: str = "") -> dict:
    """Step correction over (tokens, context): per step kind and token count T, one factor f(T) for
    every op but attention and one g(T) for the attention op, so that a corrected step costs
    ``f(T)·A(T) + g(T)·Attn(T, context)`` with A and Attn the analytical parts. Decode steps then
    follow the context length through the attention work instead of taking one factor per T.

    At each T: observations that carry their attention time (:attr:`StepObservation.attention_s`,
    e.g. from a Vidur profile) give f and g directly (geometric means over contexts); otherwise
    steps measured at several contexts give (f, g) by non-negative least squares on relative error;
    a single context gives f = g. The kernel interpolates both factors linearly in log T between
    knots; knots are chosen greedily among the measured T (:func:`_greedy_knots`) until every
    measured factor is reproduced within ``knot_tolerance`` (log units) or ``max_knots`` are used,
    so tile steps of a measured GEMM profile get a knot on each side."""
    from scipy.optimize import nnls
    if not observations:
        raise CalibrationError("fit_context_correction: no observations")
    if max_knots > K.CORR_MAX:
        raise CalibrationError(f"max_knots = {max_knots}: the kernel table holds at most {K.CORR_MAX}")
    base = client.model_copy(update={"step_correction": None})
    per: dict[str, dict[int, list]] = {"prefill": {}, "decode": {}}
    for o in observations:
        a, at = _analytic_parts(base, o)
        per[o.kind].setdefault(o.tokens, []).append((o, a, at))
    fits: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for kind, byT in per.items():
        xs, fs, gs = [], [], []
        for T in sorted(byT):
            rows = byT[T]
            f, g = _factors_at(rows, nnls)
            xs.append(math.log(T))
            fs.append(f)
            gs.append(g)
        if xs:
            fits[kind] = (np.array(xs), np.array(fs), np.array(gs))
    knots = _greedy_knots(fits, max_knots, knot_tolerance)
    table = {}
    for kind in ("prefill", "decode"):
        if kind in fits:
            x, f, g = fits[kind]
            table[kind] = (np.exp(np.interp(knots, x, np.log(f))), np.exp(np.interp(knots, x, np.log(g))))
        else:
            table[kind] = (np.ones(len(knots)), np.ones(len(knots)))
    tokens = [float(round(math.exp(x), 6)) for x in knots]
    keep = [0] + [i for i in range(1, len(tokens)) if tokens[i] > tokens[i - 1]]
    corr = {"tokens": [tokens[i] for i in keep],
            "prefill": [float(table["prefill"][0][i]) for i in keep],
            "decode": [float(table["decode"][0][i]) for i in keep],
            "attention_prefill": [float(table["prefill"][1][i]) for i in keep],
            "attention_decode": [float(table["decode"][1][i]) for i in keep]}
    diag = step_fit_errors(observations, with_efficiency(base, None, corr))
    corr["source"] = ((source or f"fit_context_correction on {len(observations)} measured steps")
                      + f"; per-step error {diag.summary()}")
    _warn_if_poor(diag)
    return corr


def _greedy_knots(fits: Mapping[str, tuple], max_knots: int, tol: float) -> np.ndarray:
    """Knots (log T) among the measured ones: start from the ends of each kind's range, then add
    the measured point whose factor (f or g, any kind) the piecewise-linear table misses most,
    until all are within ``tol`` (log units) or ``max_knots`` are used."""
    curves = []
    for x, f, g in fits.values():
        curves.append((x, np.log(f)))
        curves.append((x, np.log(g)))
    knots = sorted({float(c[0][0]) for c in curves} | {float(c[0][-1]) for c in curves})
    while len(knots) < max_knots:
        kn = np.array(knots)
        worst, at = tol, None
        for x, y in curves:
            err = np.abs(np.interp(x, kn, np.interp(kn, x, y)) - y)
            i = int(np.argmax(err))
            if err[i] > worst:
                worst, at = float(err[i]), float(x[i])
        if at is None:
            break
        knots = sorted(set(knots) | {at})
    if len(knots) > max_knots:  # more kinds' end points than the budget
        knots = list(_thin_knots(np.array(knots), max_knots))
    return np.array(knots)


def _factors_at(rows, nnls) -> tuple[float, float]:
    """(f, g) at one token count from (observation, analytical rest, analytical attention) rows."""
    with_attn = [(o, a, at) for o, a, at in rows if o.attention_s is not None and a > 0]
    if with_attn:
        f = math.exp(np.mean([math.log(max(o.time_s - o.attention_s, 1e-12) / a) for o, a, at in with_attn]))
        gl = [math.log(o.attention_s / at) for o, a, at in with_attn if at > 0 and o.attention_s > 0]
        g = math.exp(np.mean(gl)) if gl else f
        return f, g
    ratios = {round(at / max(a, 1e-300), 9) for _, a, at in rows}
    if len(ratios) > 1:
        # relative least squares: t_i = f a_i + g at_i, each row divided by t_i
        A = np.array([[a / o.time_s, at / o.time_s] for o, a, at in rows])
        sol, _ = nnls(A, np.ones(len(rows)))
        if sol[0] > 0 and sol[1] > 0:
            return float(sol[0]), float(sol[1])
    f = math.exp(np.mean([math.log(o.time_s / (a + at)) for o, a, at in rows]))
    return f, f


@dataclass
class StepFitErrors:
    """Per-step relative errors |corrected/measured − 1| of a calibrated client on the steps it was
    fitted on (every step, not one representative per token count)."""
    n: int
    median: float
    p90: float
    max: float
    worst_id: str = ""

    def summary(self) -> str:
        return (f"median {100 * self.median:.2g} %, p90 {100 * self.p90:.2g} %, max {100 * self.max:.2g} % "
                f"over {self.n} steps" + (f" (worst {self.worst_id})" if self.worst_id else ""))


def step_fit_errors(observations: Sequence[StepObservation], client: ClientSpec) -> StepFitErrors:
    """Relative error of ``client`` on every observation (fit diagnostics)."""
    from .stepmodel import step_latency
    errs = np.array([abs(step_latency(client, prefill=o.prefill, decode=o.decode).total_s / o.time_s - 1.0)
                     for o in observations])
    if len(errs) == 0:
        return StepFitErrors(0, float("nan"), float("nan"), float("nan"))
    i = int(np.argmax(errs))
    return StepFitErrors(len(errs), float(np.median(errs)), float(np.percentile(errs, 90)), float(errs[i]),
                         observations[i].id)


def _warn_if_poor(diag: StepFitErrors) -> None:
    if diag.n and diag.median > CORRECTION_TOLERANCE:
        warnings.warn(f"step correction: calibrated client reproduces its training steps with {diag.summary()} "
                      f"(tolerance on the median {CORRECTION_TOLERANCE:.0%})", stacklevel=3)


def _thin_knots(x: np.ndarray, max_knots: int) -> np.ndarray:
    x = np.asarray(sorted(set(float(v) for v in x)))
    while len(x) > max_knots:
        gaps = np.diff(x)
        j = int(np.argmin(gaps))
        if j == 0:
            x = np.delete(x, 1)           # keep the end points
        elif j == len(gaps) - 1:
            x = np.delete(x, j)
        else:
            x = np.concatenate([x[:j], [(x[j] + x[j + 1]) / 2], x[j + 2:]])
    return x
