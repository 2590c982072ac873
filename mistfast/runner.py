"""Run lowered points through the numba kernels and hand their outputs to results.py.

``run_points``: many single-client points in one kernel call (``CL.simulate_points``, prange over
sub-points). ``run_pipeline``: one multi-client point (``CL.simulate_cluster``). ``summaries``:
any mix of both, in point order, as sweeps and capacity searches need. Python work here is per
point and per batch; nothing is per step or per request.
"""
from __future__ import annotations

import numpy as np

from .kernels import cluster as CL
from .kernels import metrics as M
from .lowering import LoweredPoints, PipelinePoint, Point, lower_pipeline, lower_points
from .results import (pipeline_summary, point_summary, point_tables, quantile_summary, stacked_point_tables,
                      sum_replica_stats, table_vars)


def _request_arrays(n: int) -> dict[str, np.ndarray]:
    """The per-request outputs the kernels write (one row per request)."""
    f = lambda: np.empty(n)  # noqa: E731
    return dict(status=np.empty(n, np.int8), reason=np.empty(n, np.int8), arrival=f(), t_first_sched=f(),
                t_first_tok=f(), t_last_tok=f(), t_finish=f(), generated=np.empty(n, np.int64),
                preempts=np.empty(n, np.int32), hit_first=np.empty(n, np.int64), computed_pf=np.empty(n, np.int64))


def run_points(points: list[Point], *, per_request: bool = False, log_steps: int = 0,
               parallel: bool = False, decode_runs: bool = True, tables: bool = False) -> dict:
    """Simulate every point; returns summary arrays (length P) and, on request, per-request data.
    ``decode_runs=False`` steps every decode step through the full loop (same results, slower;
    kept as a cross-check of the decode-run fast path). ``tables``: also each point's per-client,
    per-stage and per-resource variables and labels (``results.point_tables``), under "tables";
    ``tables="stacked"``: the same stacked by label set (``results.stacked_point_tables``), under
    "table_parts"."""
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
        prompt, output, branches = lo.prompt[perm], lo.output[perm], lo.branches[perm]
    else:
        prompt, output, branches = lo.prompt, lo.output, lo.branches
    rs, end, nrep = _point_stats(len(points), lo.owner, cstats, runstats)
    out = np.zeros((len(points), M.N_OUT))
    M.summarize_points(lo.mp, pt_off, prompt, branches, res["status"], res["reason"], res["arrival"],
                       res["t_first_sched"], res["t_first_tok"], res["t_last_tok"], res["t_finish"],
                       res["generated"], res["hit_first"], res["computed_pf"], end, out)
    summary = point_summary(points, out, rs, end, nrep)
    summary.update(quantile_summary(out, [pt.quantiles for pt in points]))
    result = {"summary": summary, "offsets": pt_off}
    if tables == "stacked":   # one entry per label set, all points at once (summaries, sweeps)
        result["table_parts"] = stacked_point_tables(points, lo.owner, cstats[:, 0], end, res, pt_off)
    elif tables:
        result["tables"] = _point_tables(points, lo.owner, cstats, end, res, pt_off)
    if per_request:
        result["requests"] = dict(res, prompt=prompt, output=output, replica=replica)
    if log_steps:
        result["steplog"] = steplog
        result["steplog_points"] = np.asarray(lo.owner)
        result["steps_per_sub"] = cstats[:, 0, CL.CS_STEPS].astype(np.int64)
    return result


def _point_tables(points, owner, cstats, end, res, pt_off) -> list:
    """(tables, labels) of each point: its replicas' rows of ``cstats``, its requests' outputs."""
    rows = [[] for _ in points]
    for s, q in enumerate(owner):
        rows[q].append(s)
    return [point_tables(pt, cstats[rows[q], 0], float(end[q]),
                         {k: res[k][pt_off[q]:pt_off[q + 1]] for k in ("status", "arrival", "t_first_sched", "t_finish")})
            for q, pt in enumerate(points)]


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


def _point_stats(P, owner, cstats, runstats):
    """Per-point engine statistics (results.sum_replica_stats) and end: the latest replica's end."""
    rs, nrep = sum_replica_stats(owner, cstats[:, 0], P)
    if len(owner) == P and np.array_equal(owner, np.arange(P)):   # one replica per point: no loop
        return rs, np.where(runstats[:, 0] > 0.0, runstats[:, 0], 0.0), nrep
    end = np.zeros(P)
    for s, q in enumerate(owner):
        end[q] = max(end[q], runstats[s, 0])
    return rs, end, nrep


def run_pipeline(scen, reqs, seed_seq, *, per_request=False, log_steps=0, decode_runs=True) -> dict:
    """Simulate one multi-client scenario; returns its lowered inputs and the kernel's outputs."""
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
    steplog = np.zeros((max(log_steps, 1), CL.LOG_COLS))
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
