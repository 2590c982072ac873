"""Run lowered points through the numba kernels and hand their outputs to results.py.

``run_points``: many single-client points in one kernel call (``CL.simulate_points``, prange over
sub-points), except a closed loop over several replicas, which runs as its one-stage pipeline;
their outputs are gathered into one ``KernelRun``. ``run_pipeline``: one multi-client point
(``CL.simulate_cluster``). ``summaries``:
any mix of both, in point order, as sweeps and capacity searches need. Python work here is per
point and per batch; nothing is per step or per request.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .kernels import cluster as CL
from .kernels import metrics as M
from .lowering import (LoweredPoints, PipelinePoint, Point, lower_pipeline, lower_points, metric_vectors,
                       one_stage_scenario, splits_up_front)
from .results import (first_token_replica, pipeline_summary, point_summary,
                      requested_output_tokens, stacked_point_tables, sum_replica_stats, table_vars)


def _request_arrays(n: int) -> dict[str, np.ndarray]:
    """The per-request outputs the kernels write (one row per request)."""
    f = lambda: np.empty(n)  # noqa: E731
    return dict(status=np.empty(n, np.int8), reason=np.empty(n, np.int8), arrival=f(), t_first_sched=f(),
                t_first_tok=f(), t_last_tok=f(), t_finish=f(), generated=np.empty(n, np.int64),
                preempts=np.empty(n, np.int32), hit_first=np.empty(n, np.int64), computed_pf=np.empty(n, np.int64))


@dataclass
class KernelRun:
    """What the kernels returned for a list of single-client points, gathered per point: the
    per-request outputs in each point's request order (``pt_off`` slices them), and one row of
    engine statistics per replica (``owner``: its point; rows of a point in replica order)."""
    pt_off: np.ndarray      # (P + 1,) first request of each point
    req: dict               # per-request outputs, with prompt, output, branches and replica
    owner: np.ndarray       # (rows,) the point of each replica row
    cstats: np.ndarray      # (rows, N_CS) engine statistics of each replica
    row_end: np.ndarray     # (rows,) end of the run each replica was in (s)
    steplog: np.ndarray     # (logs, L, LOG_COLS) step logs: one per kernel call
    log_owner: np.ndarray   # (logs,) the point of each step log
    log_steps: np.ndarray   # (logs,) steps each kernel call took (its log holds at most L)
    mp: np.ndarray          # (P, N_MPARAMS) metric vectors


def run_points(points: list[Point], *, per_request: bool = False, log_steps: int = 0,
               parallel: bool = False, decode_runs: bool = True, tables: bool = False) -> dict:
    """Simulate every point; returns summary arrays (length P) and, on request, per-request data.
    ``decode_runs=False`` steps every decode step through the full loop (same results, slower;
    kept as a cross-check of the decode-run fast path). ``tables``: also each point's per-client,
    per-stage and per-resource variables and labels, under "tables"; ``tables="stacked"``: the
    same stacked by label set (``results.stacked_point_tables``, which builds both), under
    "table_parts"."""
    kr = run_kernels(points, log_steps=log_steps, decode_runs=decode_runs, parallel=parallel)
    return _point_results(points, kr, per_request, log_steps, tables)


def run_kernels(points: list[Point], *, log_steps: int = 0, decode_runs: bool = True,
                parallel: bool = False) -> KernelRun:
    """The kernel outputs of single-client points, gathered per point. Points whose replicas can
    be split up front (``lowering.splits_up_front``) share one batched kernel call; any other runs
    as its one-stage pipeline, so both give what the pipeline does."""
    split = [q for q, pt in enumerate(points) if splits_up_front(pt)]
    if len(split) == len(points):
        return _run_split(points, log_steps, decode_runs, parallel)
    pooled = sorted(set(range(len(points))) - set(split))
    parts = [(split, _run_split([points[q] for q in split], log_steps, decode_runs, parallel))] if split else []
    parts += [([q], _run_pool(points[q], log_steps, decode_runs)) for q in pooled]
    return _gather(points, parts)


def _point_results(points, kr: KernelRun, per_request, log_steps, tables) -> dict:
    """Summary (and on request tables, per-request data, step logs) of the points' kernel outputs."""
    res = kr.req
    rs, end, nrep = _point_stats(len(points), kr.owner, kr.cstats, kr.row_end)
    out = np.zeros((len(points), M.N_OUT))
    M.summarize_points(kr.mp, kr.pt_off, res["prompt"], res["branches"], res["status"], res["reason"], res["arrival"],
                       res["t_first_sched"], res["t_first_tok"], res["t_last_tok"], res["t_finish"],
                       res["generated"], res["hit_first"], res["computed_pf"], end, out)
    summary = point_summary(points, out, rs, end, nrep)
    result = {"summary": summary, "offsets": kr.pt_off}
    if tables:   # one entry per label set, all points at once (summaries, sweeps), or per point
        parts = stacked_point_tables(points, kr.owner, kr.cstats, end, res, kr.pt_off)
        result["table_parts" if tables == "stacked" else "tables"] = \
            parts if tables == "stacked" else _per_point_tables(len(points), parts)
    if per_request:
        result["requests"] = {k: v for k, v in res.items() if k != "branches"}
    if log_steps:
        result["steplog"] = kr.steplog
        result["steplog_points"] = kr.log_owner
        result["steps_per_sub"] = kr.log_steps
    return result


def _run_split(points, log_steps, decode_runs, parallel) -> KernelRun:
    """Points with their replicas split up front, in one ``simulate_points`` call over sub-points."""
    lo = lower_points(points, log_steps, decode_runs)
    ns, N = len(lo.owner), int(lo.offsets[-1])
    res = _request_arrays(N)
    cstats = np.zeros((ns, 1, CL.N_CS))
    runstats = np.zeros((ns, 4))
    steplog = np.zeros((ns, max(log_steps, 1), CL.LOG_COLS))
    kern = CL.simulate_points if parallel else CL.simulate_points_serial
    kern(lo.prm, lo.sch, lo.gv, lo.offsets, lo.arrival_in, lo.prompt, lo.output, lo.branches, lo.hash_off,
         lo.hash_ids, lo.n_hash, res["status"], res["reason"], res["arrival"], res["t_first_sched"],
         res["t_first_tok"], res["t_last_tok"], res["t_finish"], res["generated"], res["preempts"],
         res["hit_first"], res["computed_pf"], cstats, runstats, steplog)
    pt_off, perm, replica = _replica_order(points, lo)
    if ns != len(points):
        res = {k: v[perm] for k, v in res.items()}
        res.update(prompt=lo.prompt[perm], output=lo.output[perm], branches=lo.branches[perm])
    else:
        res.update(prompt=lo.prompt, output=lo.output, branches=lo.branches)
    res["replica"] = replica
    owner = np.asarray(lo.owner, np.int64)
    return KernelRun(pt_off, res, owner, cstats[:, 0], runstats[:, 0], steplog, owner,
                     cstats[:, 0, CL.CS_STEPS].astype(np.int64), lo.mp)


def _run_pool(pt: Point, log_steps, decode_runs) -> KernelRun:
    """A point whose replicas interact, as its one-stage pipeline (one ``simulate_cluster`` call;
    its one round-robin LLM stage draws no random numbers, so no seed enters)."""
    run = run_pipeline(one_stage_scenario(pt), pt.requests, np.random.SeedSequence(0), log_steps=log_steps,
                       decode_runs=decode_runs)
    ins, n, dp = run["inputs"], len(pt.requests), run["cstats"].shape[0]
    res = dict(run["requests"], prompt=run["prompt"], output=requested_output_tokens(ins),
               branches=ins["branches"], replica=first_token_replica(run))
    steplog = np.zeros((1, max(log_steps, 1), CL.LOG_COLS))
    steplog[0, :len(run["steplog"])] = run["steplog"]
    return KernelRun(np.array([0, n], np.int64), res, np.zeros(dp, np.int64), run["cstats"], np.full(dp, run["end"]),
                     steplog, np.zeros(1, np.int64), np.array([len(run["steplog"])], np.int64),
                     metric_vectors([pt]))


def _gather(points, parts: list[tuple[list[int], KernelRun]]) -> KernelRun:
    """One KernelRun of all points from runs of subsets of them (``parts``: the points of each, in
    order): requests back in point order, replica rows and step logs relabelled to their points."""
    pt_off = np.zeros(len(points) + 1, np.int64)
    pt_off[1:] = np.cumsum([len(pt.requests) for pt in points])
    first = parts[0][1]
    req = {k: np.empty(int(pt_off[-1]), v.dtype) for k, v in first.req.items()}
    mp = np.empty((len(points), first.mp.shape[1]))
    for qs, kr in parts:
        at = np.concatenate([np.arange(pt_off[q], pt_off[q + 1]) for q in qs])   # where its requests go
        for k, v in kr.req.items():
            req[k][at] = v
        mp[qs] = kr.mp
    relabel = lambda name: np.concatenate([np.asarray(qs, np.int64)[getattr(kr, name)] for qs, kr in parts])  # noqa: E731
    joined = lambda name: np.concatenate([getattr(kr, name) for _, kr in parts])  # noqa: E731
    return KernelRun(pt_off, req, relabel("owner"), joined("cstats"), joined("row_end"), joined("steplog"),
                     relabel("log_owner"), joined("log_steps"), mp)


def _per_point_tables(P: int, parts: list) -> list:
    """(tables, labels) of each point from ``stacked_point_tables``' entries (rows of its arrays)."""
    out: list = [None] * P
    for at, summ in parts:
        labels = summ["_labels"]
        for row, q in enumerate(at.tolist()):
            out[q] = ({k: v[row] for k, v in summ.items() if k != "_labels"}, labels)
    return out


def _replica_order(points, lo: LoweredPoints):
    """Point offsets, the permutation from sub-point order back to each point's request order,
    and the replica that served each request."""
    P = len(points)
    pt_off = np.zeros(P + 1, np.int64)
    for q, pt in enumerate(points):
        pt_off[q + 1] = pt_off[q] + len(pt.requests)
    N = int(lo.offsets[-1])
    if len(lo.owner) == P:   # one replica per point: sub-points are the points, in request order
        return pt_off, np.arange(N, dtype=np.int64), np.zeros(N, np.int32)
    perm = np.empty(N, np.int64)
    replica = np.empty(N, np.int32)
    rep_count: dict[int, int] = {}
    for s, (q, idx) in enumerate(zip(lo.owner, lo.sub_idx)):
        perm[pt_off[q] + idx] = np.arange(lo.offsets[s], lo.offsets[s + 1])
        replica[pt_off[q] + idx] = rep_count.get(q, 0)
        rep_count[q] = rep_count.get(q, 0) + 1
    return pt_off, perm, replica


def _point_stats(P, owner, cstats, row_end):
    """Per-point engine statistics (results.sum_replica_stats) and end: the latest replica's end."""
    rs, nrep = sum_replica_stats(owner, cstats, P)
    if len(owner) == P and np.array_equal(owner, np.arange(P)):   # one replica per point: no loop
        return rs, np.where(row_end > 0.0, row_end, 0.0), nrep
    end = np.zeros(P)
    for s, q in enumerate(owner):
        end[q] = max(end[q], row_end[s])
    return rs, end, nrep


def run_pipeline(scen, reqs, seed_seq, *, per_request=False, log_steps=0, decode_runs=True,
                 log_id_cols=0) -> dict:
    """Simulate one multi-client scenario; returns its lowered inputs and the kernel's outputs.
    ``log_id_cols``: extra step-log columns after ``CL.LOG_COLS``, where the kernel writes the ids
    of a logged step's requests (as many as fit; -1 pads)."""
    ins = lower_pipeline(scen, reqs, seed_seq, log_steps, decode_runs)
    n = len(reqs)
    S = ins["st_kind"].size
    C = ins["topo"].C
    out = _request_arrays(n)
    f = lambda k: np.empty(k)  # noqa: E731
    st = dict(client=np.empty(S, np.int64), ready=f(S), arrive=f(S), sched=f(S), exit=f(S))
    cstats = np.zeros((C, CL.N_CS))
    res_bytes = np.zeros(len(ins["res_cap"]))
    runstats = np.zeros(4)
    steplog = np.full((max(log_steps, 1), CL.LOG_COLS + log_id_cols), -1.0) if log_id_cols else \
        np.zeros((max(log_steps, 1), CL.LOG_COLS))
    nlog = CL.simulate_cluster(
        ins["cli_kind"], ins["cli_prm"], ins["cli_sch"], ins["cli_srv"], ins["pool_off"], ins["pool_cli"],
        ins["pool_policy"], ins["pool_thresh"], ins["res_cap"], ins["route_lat"], ins["route_res"], ins["route_nres"],
        ins["g"], ins["arrival_in"], ins["branches"], ins["hash_off"], ins["hash_ids"], ins["n_hash"], ins["st_off"],
        ins["st_kind"], ins["st_pool"], ins["st_prompt"], ins["st_output"], ins["st_bytes"], ins["st_tier"],
        ins["st_flags"], out["status"], out["reason"], out["arrival"], out["t_first_sched"], out["t_first_tok"],
        out["t_last_tok"], out["t_finish"], out["generated"], out["preempts"], out["hit_first"], out["computed_pf"],
        st["client"], st["ready"], st["arrive"], st["sched"], st["exit"], cstats, res_bytes, runstats, steplog,
        ins["tcap"], ins["chain_off"], ins["chain_tier"])
    return dict(inputs=ins, requests=out, stages=st, cstats=cstats, res_bytes=res_bytes, end=float(runstats[0]),
                steplog=steplog[:nlog], prompt=reqs.input_tokens.astype(np.int64),
                output=reqs.output_tokens.astype(np.int64))


def summaries(points: list[Point | PipelinePoint], *, tables: bool = False,
              decode_runs: bool = True) -> list[tuple[np.ndarray, dict[str, np.ndarray]]]:
    """Summary variables of a mix of points as (positions in ``points``, arrays along those
    positions): all single-client points through one batched kernel call, each pipeline through
    its own. ``tables``: a pipeline's entry also has its per-client, per-stage and per-resource
    variables, and their labels under ``"_labels"``; single-client points' tables come as extra
    entries, one per distinct label set."""
    parts: list = []
    single = [i for i, p in enumerate(points) if isinstance(p, Point)]
    if single:
        run = run_points([points[i] for i in single], decode_runs=decode_runs, tables="stacked" if tables else False)
        parts.append((np.asarray(single, np.int64), run["summary"]))
        if tables:
            parts += [(np.asarray(single, np.int64)[at], summ) for at, summ in run["table_parts"]]
    for i, p in enumerate(points):
        if isinstance(p, PipelinePoint):
            run = run_pipeline(p.scenario, p.requests, p.seed_seq, decode_runs=decode_runs)
            summ = pipeline_summary(p.scenario, run)
            if tables:
                data, labels = table_vars(p.scenario, run)
                summ.update({k: v[None] for k, v in data.items()})
                summ["_labels"] = labels
            parts.append((np.array([i], np.int64), summ))
    return parts
