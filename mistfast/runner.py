"""Run many single-client configuration points through the numba kernels in one call.

Python work here is per point (building parameter vectors) and per batch (concatenating
request arrays); nothing is per step or per request.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import stepmodel
from .kernels import cluster as CL
from .kernels import engine as E
from .kernels import metrics as M
from .specs import ClientSpec, SLOSpec, SimulationSpec
from .workload import Requests

BATCHING_CODE = {"static": E.STATIC, "continuous": E.CONTINUOUS, "mixed": E.MIXED, "chunked": E.CHUNKED}
POLICY_CODE = {"fcfs": E.FCFS, "spf": E.SPF, "lwl": E.LWL}
POWER_SPLIT = (0.30, 0.40, 0.20, 0.10)
HASH_BLOCK_TOKENS = 512   # Mooncake prefix-hash block (MODEL.md §4.2)   # static, compute, memory, network share of TDP (MODEL.md §8)


@dataclass(frozen=True)
class Point:
    """One configuration point: a client, its workload and the run settings."""
    client: ClientSpec
    requests: Requests
    simulation: SimulationSpec
    slo: SLOSpec
    branches: int = 1
    concurrency: int = 0      # closed loop: users in flight (0 = open loop)
    think_s: float = 0.0
    quantiles: tuple = ()     # [metrics] quantiles (none: no *_quantile_ms variables)


def scheduler_vector(client: ClientSpec) -> np.ndarray:
    """The LLM scheduler settings of a client as the kernel's flat vector."""
    s = client.scheduler
    sch = np.zeros(E.N_SCHED)
    kv_blocks = client.kv_capacity_blocks()
    prefix_blocks = 0
    if s.prefix_caching:
        # fixed carve-out of KV memory for the prefix cache, counted in 512-token hash blocks
        carve = int(kv_blocks * s.prefix_cache_fraction)
        prefix_blocks = max(1, carve * s.block_size // HASH_BLOCK_TOKENS)
        kv_blocks -= carve
    sch[E.S_BATCHING] = BATCHING_CODE[s.batching]
    sch[E.S_POLICY] = POLICY_CODE[s.policy]
    sch[E.S_MAX_TOKENS] = s.max_batched_tokens
    sch[E.S_MAX_SEQS] = s.max_batch_size
    sch[E.S_CHUNK] = s.chunk_size
    sch[E.S_BLOCK] = s.block_size
    sch[E.S_TOTAL_BLOCKS] = min(kv_blocks, 2**52)
    sch[E.S_WATERMARK] = int(s.watermark * min(kv_blocks, 2**52))
    sch[E.S_PREEMPTION] = 1.0 if s.preemption else 0.0
    sch[E.S_PREFIX_BLOCKS] = prefix_blocks
    sch[E.S_STATIC_PAD] = 1.0 if s.static_pad else 0.0
    sch[E.S_AGING] = s.aging_s
    sch[E.S_MAX_MODEL_LEN] = client.model.max_model_len
    return sch


def global_vector(sim: SimulationSpec, concurrency: int, think_s: float, hash_block: int, log_cap: int,
                  decode_runs: bool = True) -> np.ndarray:
    g = np.zeros(CL.N_G)
    g[CL.G_HORIZON] = sim.horizon_s
    g[CL.G_MAX_SIM] = sim.max_sim_time_s if sim.max_sim_time_s is not None else 10.0 * sim.horizon_s
    g[CL.G_DRAIN] = 1.0 if sim.drain else 0.0
    g[CL.G_CONC] = concurrency
    g[CL.G_THINK] = think_s
    g[CL.G_LOG_CAP] = log_cap
    g[CL.G_HASH_BLOCK] = hash_block
    g[CL.G_DECODE_RUNS] = 1.0 if decode_runs else 0.0
    return g


def metric_vector(sim: SimulationSpec, slo: SLOSpec, quantiles=()) -> np.ndarray:
    mp = np.zeros(M.N_MPARAMS)
    mp[M.M_NQ] = len(quantiles)
    mp[M.M_Q:M.M_Q + len(quantiles)] = quantiles
    mp[M.M_SLO_TTFT] = slo.ttft_ms / 1e3
    mp[M.M_SLO_TPOT] = slo.tpot_ms / 1e3
    mp[M.M_SLO_E2E] = np.inf if slo.e2e_ms is None else slo.e2e_ms / 1e3
    mp[M.M_WARMUP] = sim.warmup_s
    mp[M.M_HORIZON] = sim.horizon_s
    mp[M.M_PCT_COMPAT] = 1.0 if sim.percentile_method == "compat" or sim.metrics == "mist" else 0.0
    return mp


def _dense_hashes(reqs: Requests) -> tuple[np.ndarray, np.ndarray, int]:
    """Remap hash ids to 0..H-1 so the kernel can index arrays by them."""
    if reqs.hash_ids.size == 0:
        return reqs.hash_offsets.astype(np.int64), np.zeros(0, np.int64), 0
    uniq, inv = np.unique(reqs.hash_ids, return_inverse=True)
    return reqs.hash_offsets.astype(np.int64), inv.astype(np.int64), int(uniq.size)


def _split_replicas(reqs: Requests, dp: int) -> list[np.ndarray]:
    """Round-robin assignment of requests to ``dp`` identical engines (exact for round robin:
    the replicas never interact)."""
    idx = np.arange(len(reqs))
    return [idx[r::dp] for r in range(dp)]


def run_points(points: list[Point], *, per_request: bool = False, log_steps: int = 0,
               parallel: bool = False, decode_runs: bool = True) -> dict:
    """Simulate every point; returns summary arrays (length P) and, on request, per-request data.
    ``decode_runs=False`` steps every decode step through the full loop (same results, slower;
    kept as a cross-check of the decode-run fast path)."""
    # expand data-parallel replicas into sub-points
    sub_client, sub_idx, owner = [], [], []
    for q, pt in enumerate(points):
        for idx in _split_replicas(pt.requests, pt.client.dp):
            sub_client.append(q)
            sub_idx.append(idx)
            owner.append(q)
    ns = len(sub_idx)
    prm_cache: dict[int, tuple] = {}
    prm = np.empty((ns, stepmodel.K.N_PARAMS))
    sch = np.empty((ns, E.N_SCHED))
    gv = np.empty((ns, CL.N_G))
    offsets = np.zeros(ns + 1, np.int64)
    n_hash = np.zeros(ns, np.int64)
    arr_l, pr_l, out_l, br_l, ho_l, hi_l = [], [], [], [], [], []
    hbase = 0
    for s, (q, idx) in enumerate(zip(sub_client, sub_idx)):
        pt = points[q]
        key = id(pt.client)
        if key not in prm_cache:
            prm_cache[key] = (stepmodel.client_params(pt.client), scheduler_vector(pt.client))
        prm[s], sch[s] = prm_cache[key]
        r = pt.requests._take(idx) if pt.client.dp > 1 else pt.requests
        conc = pt.concurrency if pt.client.dp == 1 else -(-pt.concurrency // pt.client.dp)
        gv[s] = global_vector(pt.simulation, conc, pt.think_s, r.hash_block_tokens, log_steps, decode_runs)
        offsets[s + 1] = offsets[s] + len(r)
        arr_l.append(r.arrival_s)
        pr_l.append(r.input_tokens)
        out_l.append(r.output_tokens)
        br_l.append(np.full(len(r), pt.branches, np.int64))
        ho, hi, nh = _dense_hashes(r)
        ho_l.append(ho + hbase)
        hi_l.append(hi)
        hbase += hi.size
        n_hash[s] = nh
    N = int(offsets[-1])
    cat = lambda xs, dt: np.concatenate(xs).astype(dt) if xs else np.zeros(0, dt)  # noqa: E731
    arrival_in = cat(arr_l, np.float64)
    prompt = cat(pr_l, np.int64)
    output = cat(out_l, np.int64)
    branches = cat(br_l, np.int64)
    hash_off = cat(ho_l, np.int64)
    hash_ids = cat(hi_l, np.int64)
    f = lambda: np.empty(N)  # noqa: E731
    res = dict(status=np.empty(N, np.int8), reason=np.empty(N, np.int8), arrival=f(), t_first_sched=f(),
               t_first_tok=f(), t_last_tok=f(), t_finish=f(), generated=np.empty(N, np.int64),
               preempts=np.empty(N, np.int32), hit_first=np.empty(N, np.int64), computed_pf=np.empty(N, np.int64))
    cstats = np.zeros((ns, 1, CL.N_CS))
    runstats = np.zeros((ns, 4))
    steplog = np.zeros((ns, max(log_steps, 1), CL.LOG_COLS))
    kern = CL.simulate_points if parallel else CL.simulate_points_serial
    kern(prm, sch, gv, offsets, arrival_in, prompt, output, branches, hash_off, hash_ids, n_hash,
         res["status"], res["reason"], res["arrival"], res["t_first_sched"], res["t_first_tok"],
         res["t_last_tok"], res["t_finish"], res["generated"], res["preempts"], res["hit_first"],
         res["computed_pf"], cstats, runstats, steplog)

    # ---- regroup replicas into their points (original request order) --------------------------
    P = len(points)
    pt_off = np.zeros(P + 1, np.int64)
    for q, pt in enumerate(points):
        pt_off[q + 1] = pt_off[q] + len(pt.requests)
    perm = np.empty(N, np.int64)
    replica = np.empty(N, np.int32)
    pos = 0
    rep_count: dict[int, int] = {}
    for s, (q, idx) in enumerate(zip(sub_client, sub_idx)):
        perm[pt_off[q] + idx] = np.arange(offsets[s], offsets[s + 1])
        replica[pt_off[q] + idx] = rep_count.get(q, 0)
        rep_count[q] = rep_count.get(q, 0) + 1
        pos += len(idx)
    if ns != P:
        for k in res:
            res[k] = res[k][perm]
        prompt_p, output_p, branches_p = prompt[perm], output[perm], branches[perm]
    else:
        prompt_p, output_p, branches_p = prompt, output, branches
    # per-point engine stats: sums over replicas; end = latest replica end; KV peak = largest
    rs = np.zeros((P, CL.N_CS))
    end = np.zeros(P)
    nrep = np.zeros(P)
    for s, q in enumerate(owner):
        peak = max(rs[q, CL.CS_KV_PEAK], cstats[s, 0, CL.CS_KV_PEAK])
        last = max(rs[q, CL.CS_FINISH_STEP_START], cstats[s, 0, CL.CS_FINISH_STEP_START])
        rs[q] += cstats[s, 0]
        rs[q, CL.CS_KV_PEAK] = peak
        rs[q, CL.CS_FINISH_STEP_START] = last
        end[q] = max(end[q], runstats[s, 0])
        nrep[q] += 1
    mp = np.stack([metric_vector(pt.simulation, pt.slo, pt.quantiles) for pt in points])
    out = np.zeros((P, M.N_OUT))
    M.summarize_points(mp, pt_off, prompt_p, branches_p, res["status"], res["reason"], res["arrival"], res["t_first_sched"],
                       res["t_first_tok"], res["t_last_tok"], res["t_finish"], res["generated"],
                       res["hit_first"], res["computed_pf"], end, out)
    summary = _summary(points, out, rs, end, nrep, res, pt_off)
    summary.update(quantile_summary(out, [pt.quantiles for pt in points]))
    result = {"summary": summary, "offsets": pt_off}
    if per_request:
        result["requests"] = dict(res, prompt=prompt_p, output=output_p, replica=replica)
    if log_steps:
        result["steplog"] = steplog
        result["steplog_points"] = np.asarray(owner)
        result["steps_per_sub"] = cstats[:, 0, CL.CS_STEPS].astype(np.int64)
    return result


QUANTILE_BASES = ("ttft", "tpot", "e2e", "queue_delay")


def quantile_summary(out: np.ndarray, quantiles_per_point) -> dict[str, np.ndarray]:
    """``{base}_quantile_ms`` arrays (points x quantiles) of the configured quantiles; every point
    of one call must have the same quantiles (they are a dimension of the results)."""
    qs = {tuple(q) for q in quantiles_per_point}
    if len(qs) > 1:
        from .specs import SpecError
        raise SpecError([f"metrics.quantiles: points of one run differ ({sorted(qs)}); the quantiles are a "
                         "dimension of the results and cannot be swept"])
    nq = len(next(iter(qs))) if qs else 0
    if nq == 0:
        return {}
    return {f"{b}_quantile_ms": out[:, M.O_QUANT + k * M.MAX_QUANTILES:M.O_QUANT + k * M.MAX_QUANTILES + nq] * 1e3
            for k, b in enumerate(QUANTILE_BASES)}


def request_summary(out: np.ndarray, status: np.ndarray, reason: np.ndarray, pt_off: np.ndarray) -> dict[str, np.ndarray]:
    """The summary variables that come from per-request results (the metrics kernel's ``out``),
    shared by single-client points and multi-client pipelines. (``status``, ``reason`` and
    ``pt_off`` are no longer needed: the metrics kernel counts rejections by reason in its window.)"""
    s: dict[str, np.ndarray] = {}
    # rates over an empty window (the run stopped before warmup_s) are undefined, not huge
    win = np.where(out[:, M.O_WINDOW] > 0, out[:, M.O_WINDOW], np.nan)
    s["n_arrived"] = out[:, M.O_N_MEASURED]
    s["n_finished"] = out[:, M.O_N_FINISHED]
    s["n_rejected"] = out[:, M.O_N_REJECTED]
    s["n_unfinished"] = out[:, M.O_N_UNFINISHED]
    s["n_not_arrived"] = out[:, M.O_N_NOT_ARRIVED]
    s["n_before_warmup"] = out[:, M.O_N_BEFORE_WARMUP]
    # measured rejections only, like n_rejected (the metrics kernel applies the same window)
    s["n_rejected_by_reason"] = out[:, M.O_REJ_BY_REASON + 1:M.O_REJ_BY_REASON + len(E.REASON_NAMES)].copy()
    for base, at in (("ttft", M.O_TTFT), ("tpot", M.O_TPOT), ("e2e", M.O_E2E), ("queue_delay", M.O_QUEUE)):
        for j, q in enumerate(("mean", "p50", "p90", "p99")):
            s[f"{base}_{q}_ms"] = out[:, at + j] * 1e3
    s["ttft_max_ms"] = out[:, M.O_TTFT_MAX] * 1e3
    s["output_tok_s"] = out[:, M.O_OUT_TOKENS] / win
    s["total_tok_s"] = (out[:, M.O_OUT_TOKENS] + out[:, M.O_PROMPT_TOKENS]) / win
    s["computed_prompt_tok_s"] = out[:, M.O_COMPUTED_PROMPT] / win
    s["request_throughput_rps"] = out[:, M.O_N_FINISHED] / win
    s["goodput_rps"] = out[:, M.O_N_GOOD] / win
    s["goodput_tok_s"] = out[:, M.O_GOOD_TOKENS] / win
    s["slo_attainment"] = np.where(out[:, M.O_N_MEASURED] > 0, out[:, M.O_N_GOOD] / np.maximum(out[:, M.O_N_MEASURED], 1), np.nan)
    s["window_s"] = out[:, M.O_WINDOW]
    s["prefix_hit_rate"] = out[:, M.O_HIT_TOKENS] / np.maximum(out[:, M.O_PROMPT_TOKENS], 1)
    return s


def _summary(points, out, rs, end_time, nrep, res, pt_off) -> dict[str, np.ndarray]:
    s = request_summary(out, res["status"], res["reason"], pt_off)
    steps = rs[:, CL.CS_STEPS]
    s["n_steps"] = steps
    s["mean_batch_tokens"] = rs[:, CL.CS_BATCH_TOKENS] / np.maximum(steps, 1)
    s["mean_batch_size"] = rs[:, CL.CS_BATCH_SEQS] / np.maximum(steps, 1)
    end = np.maximum(end_time, 1e-300)
    busy_rep = rs[:, CL.CS_BUSY] / nrep  # mean busy time per replica
    s["busy_fraction"] = busy_rep / end
    kvb = np.array([max(pt.client.kv_capacity_blocks(), 1) for pt in points], dtype=float)
    s["kv_util_mean"] = rs[:, CL.CS_KV_BLOCK_S] / np.maximum(rs[:, CL.CS_BUSY], 1e-300) / kvb
    s["kv_util_peak"] = rs[:, CL.CS_KV_PEAK] / kvb
    fpk = np.array([pt.client.device.peak_flops(pt.client.precision.compute) for pt in points])
    bwd = np.array([pt.client.device.memory_bandwidth_GBps * 1e9 for pt in points])
    s["mfu"] = rs[:, CL.CS_FLOPS] / nrep / (fpk * end)
    s["mbu"] = rs[:, CL.CS_BYTES] / nrep / (bwd * end)
    s["preemptions"] = rs[:, CL.CS_PREEMPT]
    s["recomputed_tokens"] = rs[:, CL.CS_RECOMP]
    s["kv_capacity_tokens"] = np.array([min(pt.client.kv_capacity_tokens(), 2**62) for pt in points], dtype=float)
    s["weights_GiB_per_device"] = np.array([pt.client.weight_bytes_device() / 2**30 for pt in points])
    # energy: per device E = busy·P_s + Σt_c·P_c + Σt_m·P_m + Σt_n·P_n, idle devices draw P_s
    tdp = np.array([pt.client.device.tdp_W for pt in points])
    ndev_rep = np.array([pt.client.tp * pt.client.pp for pt in points], dtype=float)
    ps, pc, pm, pn = (tdp * f for f in POWER_SPLIT)
    busy_energy = ndev_rep * (rs[:, CL.CS_BUSY] * ps + rs[:, CL.CS_TC] * pc + rs[:, CL.CS_TM] * pm + rs[:, CL.CS_TN] * pn)
    p_idle = np.array([pt.client.device.idle_power_W for pt in points])
    idle_energy = ndev_rep * p_idle * (nrep * end - rs[:, CL.CS_BUSY])
    s["energy_J"] = busy_energy + idle_energy
    s["energy_per_output_token_J"] = s["energy_J"] / np.maximum(out[:, M.O_OUT_TOKENS], 1)
    from .power import apply_to_points  # no TDP -> NaN energy; estimated idle flagged (docs/idle-power.md)
    apply_to_points(s, [[pt.client.device] for pt in points])
    price_h = np.array([pt.client.device.price_usd_per_hour * pt.client.num_devices for pt in points])
    s["cost_usd"] = price_h * end / 3600.0
    with np.errstate(divide="ignore", invalid="ignore"):
        s["tokens_per_dollar"] = np.where(price_h > 0, out[:, M.O_OUT_TOKENS] / s["cost_usd"], np.nan)
        s["output_tok_s_per_usd_per_hour"] = np.where(price_h > 0, s["output_tok_s"] / price_h, np.nan)
    s["steps_outside_calibration"] = rs[:, CL.CS_OUT_OF_RANGE]
    mist = np.array([pt.simulation.metrics == "mist" for pt in points])
    if mist.any():
        warm = np.array([pt.simulation.warmup_s for pt in points])
        apply_mist_metrics(s, out, rs[:, CL.CS_DEC_SEQS], rs[:, CL.CS_DEC_SEQ_S],
                           rs[:, CL.CS_FINISH_STEP_START] - warm, mist)
    return s


def apply_mist_metrics(s: dict, out: np.ndarray, dec_seqs: np.ndarray, dec_seq_s: np.ndarray,
                       window_s: np.ndarray, where: np.ndarray) -> None:
    """MIST's metric definitions (docs/mist_parity.md) for the points in ``where``: TPOT mean = mean,
    over every decode of every step, of that step's duration; throughputs divided by the time from
    warmup to the start of the last step that finished a request. (Percentiles are int(q n), set
    through the metric vector.)"""
    with np.errstate(divide="ignore", invalid="ignore"):
        tpot = np.where(dec_seqs > 0, dec_seq_s / np.maximum(dec_seqs, 1) * 1e3, np.nan)
        win = np.maximum(window_s, 1e-300)
        s["tpot_mean_ms"] = np.where(where, tpot, s["tpot_mean_ms"])
        rates = {"output_tok_s": out[:, M.O_OUT_TOKENS],
                 "total_tok_s": out[:, M.O_OUT_TOKENS] + out[:, M.O_PROMPT_TOKENS],
                 "computed_prompt_tok_s": out[:, M.O_COMPUTED_PROMPT],
                 "request_throughput_rps": out[:, M.O_N_FINISHED],
                 "goodput_rps": out[:, M.O_N_GOOD], "goodput_tok_s": out[:, M.O_GOOD_TOKENS]}
        for k, num in rates.items():
            s[k] = np.where(where, num / win, s[k])
        s["window_s"] = np.where(where, window_s, s["window_s"])
