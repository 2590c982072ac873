"""Whole-run observations (throughput, latency) fitted through the simulator: one logged
simulation per run, its batches compressed into a step set re-costed at trial efficiencies."""
from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .specs import ClientSpec
from .calibration_store import with_efficiency
from .calibration_recost import StepSet


# ============================================================================ run observations
@dataclass(eq=False)
class RunObservation:
    """A measured whole-run metric (throughput or latency) fitted through the simulator.

    ``point`` is a :class:`mistfast.lowering.Point` whose client carries the *base* configuration;
    ``value_of(summary)`` extracts the predicted metric from the run summary (a dict of scalars);
    ``rate_like``: the metric scales as 1/(step time) (throughputs) rather than with it.

    Fitting runs the simulator once with the step log on (:func:`prepare_runs`), compresses the
    logged batches (prefill chunk count and tokens, decode count, KV in use) into a step set, and
    predicts the metric at trial efficiencies as ``m_ref · (S_ref/S)`` (rate-like) or
    ``m_ref · S/S_ref`` (time-like), with S the re-costed time of the logged steps and m_ref the
    simulated metric at an anchor efficiency. The batch sequence of an offline or static-batch run
    does not depend on step durations, so only the compression of each batch is approximate, and it
    enters through the ratio S/S_ref only (optionally the fit re-anchors at its result with a plain
    simulation, ``fit_efficiency(refine_runs=True)``). Open-loop and closed-loop runs change their
    batches with the step times; the same scheme is then an approximation.

    ``prefill_steps``: S re-costs only the logged steps that carry prefill tokens. For the TTFT of a
    run without queueing (low concurrency, static batch) the first token waits for its prefill
    step(s), not for the decode steps that dominate the run's total time (which is what ties
    throughput and TPOT rows to decode efficiencies).
    """
    id: str
    device: str
    engine: str
    point: Any
    measured: float
    value_of: Callable[[dict], float]
    rate_like: bool = True
    group: str = ""
    isl: int = 0
    osl: int = 0
    n_steps_hint: int = 0
    steps: list | None = None          # compressed batches: (prefill, decode, weight, n_done)
    ref_value: float = float("nan")    # simulated metric of the base client
    ref_summary: dict | None = None
    share_key: str = ""                # runs with equal keys are the same simulation (several metrics of one run)
    prefill_steps: bool = False        # re-cost only the steps with prefill (low-load TTFT)
    # the part of value_of(summary) that is a wait in decode steps added after the simulation (the
    # closed-loop step wait, validate.closed_loop_step_wait_ms); a prefill_steps row keeps it at its
    # reference value (ref_wait) instead of scaling it with the prefill steps (:func:`recosted`)
    wait_of: Callable[[dict], float] | None = None
    ref_wait: float = 0.0
    source: str = ""                   # publisher (leave-one-source-out unit), for the factorised fit
    # a part of value_of(summary) that is no step time (validate.prompt_intake_term_ms, the front-end's
    # per-prompt-token time): kept at its value, never scaled with the re-costed steps (:func:`recosted`)
    fixed_ms: float = 0.0

    @property
    def client(self) -> ClientSpec:
        return self.point.client


MAX_SURROGATE_STEPS = 3000


def _simulate_points(points, *, log_steps: int = 0, parallel: bool = True) -> dict:
    from .runner import run_points
    return run_points(list(points), log_steps=log_steps, parallel=parallel and len(points) > 1)


def _run_summary(res: dict, q: int) -> dict:
    return {k: float(np.asarray(v)[q]) if np.asarray(v).ndim == 1 else np.asarray(v)[q] for k, v in res["summary"].items()}


LOG_CAP = 65536        # steps logged per run in the batched reference pass
LOG_BATCH_BYTES = 3e8  # memory budget of one batched logged pass


def prepare_runs(runs: Sequence[RunObservation], parallel: bool = True) -> None:
    """Simulate each run (base client) once with the step log on; keep its summary
    (``ref_summary``), reference metric (``ref_value``) and compressed batch sequence (``steps``).
    Runs are simulated in parallel batches with a log of ``min(n_steps_hint or LOG_CAP)`` steps;
    a run with more steps than logged is simulated again alone with an exact log."""
    from .kernels import engine as E
    need = [r for r in runs if r.steps is None]
    if not need:
        return
    # several metrics of one run (throughput, TTFT, TPOT, ...) share one simulation
    followers: dict[str, list[RunObservation]] = {}
    leaders = []
    for r in need:
        if r.share_key and r.share_key in followers:
            followers[r.share_key].append(r)
        else:
            if r.share_key:
                followers[r.share_key] = []
            leaders.append(r)
    need = leaders
    row_bytes = 8.0 * E.N_LOG
    todo = sorted(need, key=lambda r: r.n_steps_hint or LOG_CAP)
    i = 0
    while i < len(todo):
        cap = max(todo[i].n_steps_hint or LOG_CAP, 1)
        j = i + 1
        while j < len(todo) and (j + 1 - i) * max(cap, todo[j].n_steps_hint or LOG_CAP) * row_bytes < LOG_BATCH_BYTES:
            cap = max(cap, todo[j].n_steps_hint or LOG_CAP)
            j += 1
        batch = todo[i:j]
        res = _simulate_points([r.point for r in batch], log_steps=int(cap), parallel=parallel)
        own = np.asarray(res["steplog_points"])
        for q, r in enumerate(batch):
            n = int(res["summary"]["n_steps"][q])
            subs = np.flatnonzero(own == q)
            if n > cap or len(subs) != 1:   # log too short (or data-parallel replicas): redo alone
                r.n_steps_hint = n
                rr = _simulate_points([r.point], log_steps=max(n, 1), parallel=False)
                _set_reference(r, _run_summary(rr, 0), rr["steplog"][0, :int(rr["steps_per_sub"][0])])
            else:
                _set_reference(r, _run_summary(res, q), res["steplog"][subs[0], :int(res["steps_per_sub"][subs[0]])])
        i = j
    for r in leaders:
        for f in followers.get(r.share_key, ()) if r.share_key else ():
            f.ref_summary, f.n_steps_hint, f.steps = r.ref_summary, r.n_steps_hint, r.steps
            f.ref_value = float(f.value_of(r.ref_summary))
            f.ref_wait = _ref_wait(f, r.ref_summary)


# Latency metrics whose value is set by a scheduling policy rather than by step times: a
# latency-constrained benchmark scenario (MLPerf Server / Interactive: the submitter tunes its
# batching to just meet the p99 TTFT/TPOT bound, so the measured TPOT is the bound's batch, not the
# batch a first-come scheduler forms at that rate). Such rows are validated but not fitted, as
# the TTFT of loaded runs: fitting step efficiencies to them moves every other prediction.
POLICY_SET_LATENCY = re.compile(r"\b(server|interactive)\b.*\b(p99|p90|p50)\s*(ttft|tpot)\s*<=", re.I)
LATENCY_METRIC = re.compile(r"^(ttft|tpot|itl|e2e)", re.I)


def latency_set_by_policy(metric: str, workload_text: str) -> bool:
    """True for a latency metric of a latency-constrained benchmark scenario (see POLICY_SET_LATENCY)."""
    return bool(LATENCY_METRIC.match(metric or "")) and bool(POLICY_SET_LATENCY.search(workload_text or ""))


def _set_reference(r: RunObservation, summ: dict, log: np.ndarray) -> None:
    r.ref_summary = summ
    r.ref_value = float(r.value_of(summ))
    r.ref_wait = _ref_wait(r, summ)
    r.n_steps_hint = len(log)
    r.steps = _compress_log(r.point.client, log, r)


# a low-load TTFT row's closed-loop step wait kept out of the prefill-step ratio (:func:`recosted`);
# False: scaled with the prefill steps as before session 13. Right on synthetic rows (tests/test_ttft_fit.py)
# but worse held out (InferenceMAX fold TTFT 18.2 -> 19.0 % with the landing on: vLLM's fitted fixed part
# rises where the scaled wait had hidden an over-predicted short prefill at TP > 1), so OFF
# (docs/ttft-under-load.md, "The fit's re-costing of the wait, session 13")
WAIT_OUT_OF_PREFILL_RATIO = False


def _ref_wait(r: RunObservation, summ: dict) -> float:
    """The part of a run's reference value that :func:`recosted` keeps unscaled: its fixed part
    (:attr:`RunObservation.fixed_ms`) plus, for a prefill_steps row with
    :data:`WAIT_OUT_OF_PREFILL_RATIO` on, its decode-step wait; never more than the reference value."""
    w = max(float(r.fixed_ms), 0.0)
    if WAIT_OUT_OF_PREFILL_RATIO and r.prefill_steps and r.wait_of is not None:
        w += max(float(r.wait_of(summ)), 0.0)
    return min(w, max(float(r.ref_value), 0.0))


def ref_waits(runs: Sequence[RunObservation]) -> np.ndarray:
    """``ref_wait`` of every run (after :func:`prepare_runs`)."""
    return np.array([float(r.ref_wait) for r in runs])


def recosted(m0: np.ndarray, ratio: np.ndarray, w0: np.ndarray) -> np.ndarray:
    """A run's metric at trial efficiencies from its reference value ``m0``: the simulated part
    scaled by the re-costed step ratio, the decode-step wait ``w0`` of a low-load TTFT row
    (:attr:`RunObservation.wait_of`) kept as simulated. The prefill steps such a row re-costs say
    nothing about the decode steps the wait counts (scaled with them, a ~3 ms wait beside 20-130 ms
    of TTFT moved the recovered prefill efficiency of tests/test_ttft_fit.py from 0.400 to 0.412);
    at the low loads of these rows the decode step barely depends on the fitted efficiencies'
    prefill share, so the reference value stands for it."""
    return (m0 - w0) * ratio + w0


def run_values(runs: Sequence[RunObservation], eff: Mapping[str, float] | None, parallel: bool = True) -> np.ndarray:
    """Simulated metric of every run with its client's efficiency replaced by ``eff``."""
    pts = [dataclasses.replace(r.point, client=with_efficiency(r.point.client, eff)) if eff else r.point for r in runs]
    res = _simulate_points(pts, parallel=parallel)
    return np.array([float(r.value_of(_run_summary(res, q))) for q, r in enumerate(runs)])


class _SharedRunSteps:
    """The compressed batches of several runs, each distinct batch sequence costed once (runs
    that share a simulation share its ``steps`` list)."""

    def __init__(self, runs: Sequence[RunObservation]):
        self.st = StepSet()
        index: dict[tuple, int] = {}
        self.of_run = np.zeros(len(runs), dtype=np.int64)
        for j, r in enumerate(runs):
            key = (id(r.steps), r.prefill_steps)
            if key not in index:
                index[key] = len(index)
                for pf, dec, w, done in r.steps or ():
                    if r.prefill_steps and not pf:
                        continue
                    self.st.add(r.point.client, pf, dec, weight=w, owner=index[key], done=done)
            self.of_run[j] = index[key]
        self.n_distinct = len(index)
        if len(self.st):
            self.st.build()

    def totals(self, n_runs: int, *args, **kw) -> np.ndarray:
        if not len(self.st):
            return np.zeros(n_runs)
        return self.st.totals(self.n_distinct, *args, **kw)[self.of_run]


def _run_stepset(runs: Sequence[RunObservation]) -> _SharedRunSteps:
    return _SharedRunSteps(runs)


def _compress_log(client: ClientSpec, log: np.ndarray, run: RunObservation) -> list:
    """Group identical (prefills, prefill tokens, decodes, KV-in-use bucket) compositions of a step
    log; keep at most MAX_SURROGATE_STEPS groups (stride sample, reweighted). A decode group becomes
    one entry with ``w`` = number of decodes at the mean context (identical attention sums)."""
    from .kernels import engine as E
    if len(log) == 0:
        return []
    bs = client.scheduler.block_size
    npf = log[:, E.L_NPF].astype(np.int64)
    pft = log[:, E.L_PF_TOKENS].astype(np.int64)
    ndec = log[:, E.L_NDEC].astype(np.int64)
    kv = log[:, E.L_KV_USED] * bs
    kbucket = np.round(np.log2(np.maximum(kv, 1.0)) * 8).astype(np.int64)
    keys = np.stack([npf, pft, ndec, kbucket], axis=1)
    uniq, inv, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    inv = inv.ravel()
    kv_mean = np.bincount(inv, weights=kv) / counts
    order = np.arange(len(uniq))
    scale = 1.0
    if len(uniq) > MAX_SURROGATE_STEPS:
        stride = int(math.ceil(len(uniq) / MAX_SURROGATE_STEPS))
        order = order[::stride]
        scale = counts.sum() / counts[order].sum()
    out = []
    for g in order:
        n_pf, toks, n_dec = int(uniq[g, 0]), int(uniq[g, 1]), int(uniq[g, 2])
        prefill = [(0.0, toks / n_pf)] * n_pf if n_pf > 0 else []
        decode = []
        if n_dec > 0:
            # KV in use minus the prompts being prefilled, shared by the decodes
            k = max(1.0, (kv_mean[g] - (toks if n_pf else 0)) / n_dec - 1.0)
            if run.osl > 0 and run.isl > 0:
                k = min(max(k, float(run.isl)), float(run.isl + run.osl))
            decode = [(float(n_dec), k)]
        if prefill or decode:
            out.append((prefill, decode, float(counts[g]) * scale, float(n_pf)))
    return out
