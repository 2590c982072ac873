"""Results: kernel outputs become summary variables and xarray Datasets. The one place that
builds them, for single runs, pipelines and sweeps: per-request metrics (through
``kernels.metrics``), engine statistics, energy and cost (each formula written once, below),
per-client, per-stage and per-resource tables, the per-request and step-log variables. Every
variable takes its dims, units and attributes from ``variables.py``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from . import __version__
from .kernels import cluster as CL
from .kernels import engine as E
from .kernels import metrics as M
from .specs import SpecError
from .lowering import Topology, metric_vector
from .variables import REGISTRY, add_coord_attrs, global_attrs, slo_attrs, variable

if TYPE_CHECKING:   # xarray is imported where a Dataset is built (import time of the CLI)
    import xarray as xr

POWER_SPLIT = (0.30, 0.40, 0.20, 0.10)   # static, compute, memory, network share of TDP (MODEL.md §8)


# ----------------------------------------------------------------------------- formulas (once)
def device_energy_J(tdp_W, idle_W, n_devices, busy_s, compute_s, memory_s, network_s, idle_s):
    """Energy of ``n_devices`` identical devices (MODEL.md §8): while busy each draws the static
    share of TDP plus the compute, memory and network shares for the time each unit worked; while
    idle it draws its idle power. Works on scalars and arrays alike."""
    ps, pc, pm, pn = (tdp_W * f for f in POWER_SPLIT)
    busy = n_devices * (busy_s * ps + compute_s * pc + memory_s * pm + network_s * pn)
    return busy + n_devices * idle_W * idle_s


def host_energy_J(tdp_W, idle_W, busy_fraction, end_s):
    """A CPU or vector-search host: its idle power all the time, the rest of its TDP while busy
    (assumption: catalog idle_W, else 30 % of TDP)."""
    return idle_W * end_s + (tdp_W - idle_W) * busy_fraction * end_s


def utilisation(work, replicas, peak_per_s, end_s):
    """Mean work per replica over what the peak rate could have done in the run (MFU, MBU)."""
    return work / replicas / (peak_per_s * end_s)


def kv_utilisation(block_s, kv_peak_blocks, busy_s, kv_blocks):
    """(time-weighted mean over busy time, peak) of KV blocks in use over the KV blocks."""
    return block_s / np.maximum(busy_s, 1e-300) / kv_blocks, kv_peak_blocks / kv_blocks


def cost_vars(s: dict, price_usd_per_hour, end_s, output_tokens) -> None:
    """cost_usd, tokens_per_dollar and output_tok_s_per_usd_per_hour (NaN when the devices are free)."""
    price_h = np.asarray(price_usd_per_hour, float)
    s["cost_usd"] = price_h * end_s / 3600.0
    with np.errstate(divide="ignore", invalid="ignore"):
        s["tokens_per_dollar"] = np.where(price_h > 0, output_tokens / s["cost_usd"], np.nan)
        s["output_tok_s_per_usd_per_hour"] = np.where(price_h > 0, s["output_tok_s"] / price_h, np.nan)


# ----------------------------------------------------------------------------- summaries
QUANTILE_BASES = ("ttft", "tpot", "e2e", "queue_delay")


def quantile_summary(out: np.ndarray, quantiles_per_point) -> dict[str, np.ndarray]:
    """``{base}_quantile_ms`` arrays (points x quantiles) of the configured quantiles; every point
    of one call must have the same quantiles (they are a dimension of the results)."""
    qs = {tuple(q) for q in quantiles_per_point}
    if len(qs) > 1:
        raise SpecError([f"metrics.quantiles: points of one run differ ({sorted(qs)}); the quantiles are a "
                         "dimension of the results and cannot be swept"])
    nq = len(next(iter(qs))) if qs else 0
    if nq == 0:
        return {}
    return {f"{b}_quantile_ms": out[:, M.O_QUANT + k * M.MAX_QUANTILES:M.O_QUANT + k * M.MAX_QUANTILES + nq] * 1e3
            for k, b in enumerate(QUANTILE_BASES)}


def request_summary(out: np.ndarray) -> dict[str, np.ndarray]:
    """The summary variables that come from per-request results (the metrics kernel's ``out``),
    shared by single-client points and multi-client pipelines."""
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


def sum_replica_stats(owner, cstats: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Engine statistics of the replicas of each group (a single-client point, or one client entry
    of a pipeline), summed in replica order; the KV peak and the last finishing step are the
    largest. ``owner``: the group of each row of ``cstats`` (rows x N_CS). Returns (sums, replicas)."""
    rs = np.zeros((n_groups, CL.N_CS))
    if len(owner) == n_groups and np.array_equal(owner, np.arange(n_groups)):
        # one replica per group: the loop below without the loop (same values: 0 + x, max(0.0, x))
        rs += cstats
        for col in (CL.CS_KV_PEAK, CL.CS_FINISH_STEP_START):
            rs[:, col] = np.where(cstats[:, col] > 0.0, cstats[:, col], 0.0)
        return rs, np.ones(n_groups)
    nrep = np.zeros(n_groups)
    for row, q in enumerate(owner):
        peak = max(rs[q, CL.CS_KV_PEAK], cstats[row, CL.CS_KV_PEAK])
        last = max(rs[q, CL.CS_FINISH_STEP_START], cstats[row, CL.CS_FINISH_STEP_START])
        rs[q] += cstats[row]
        rs[q, CL.CS_KV_PEAK] = peak
        rs[q, CL.CS_FINISH_STEP_START] = last
        nrep[q] += 1
    return rs, nrep


def engine_vars(rs: np.ndarray, nrep: np.ndarray, clients, end: np.ndarray) -> dict[str, np.ndarray]:
    """Busy fraction, KV, FLOP and bandwidth utilisation, device energy and price of groups of
    identical LLM replicas (one entry per group): ``rs`` their summed statistics, ``nrep`` the
    replicas, ``clients`` the spec of one replica, ``end`` the run's end (s). The one formula of
    single-client points and of every client entry of a pipeline."""
    end = np.maximum(end, 1e-300)
    v: dict[str, np.ndarray] = {}
    per_client = _client_constants(clients)
    v["busy_fraction"] = rs[:, CL.CS_BUSY] / nrep / end   # mean busy time per replica
    v["kv_util_mean"], v["kv_util_peak"] = kv_utilisation(rs[:, CL.CS_KV_BLOCK_S], rs[:, CL.CS_KV_PEAK],
                                                          rs[:, CL.CS_BUSY], per_client("kv_blocks"))
    # the step's work covers every PP stage: per device, it is shared by the pp stages' devices
    pps = per_client("pp")
    v["mfu"] = utilisation(rs[:, CL.CS_FLOPS], nrep * pps, per_client("peak_flops"), end)
    v["mbu"] = utilisation(rs[:, CL.CS_BYTES], nrep * pps, per_client("bandwidth"), end)
    # every replica's devices: busy for their replica's busy time, idle for the rest of the run
    v["energy_J"] = device_energy_J(per_client("tdp_W"), per_client("idle_W"), per_client("devices"),
                                    rs[:, CL.CS_BUSY], rs[:, CL.CS_TC], rs[:, CL.CS_TM], rs[:, CL.CS_TN],
                                    np.maximum(nrep * end - rs[:, CL.CS_BUSY], 0.0))
    return v


@dataclass
class SummaryInputs:
    """What every summary variable of P points is computed from (``summary_vars``). A point's LLM
    engines come as groups of identical replicas (a single-client point: one group; a pipeline:
    one group per LLM client entry), each with its replicas' statistics summed
    (``sum_replica_stats``); the rest is per point."""
    out: np.ndarray             # (P, N_OUT) the metrics kernel's per-request reduction
    end_s: np.ndarray           # (P,) end of each point's run
    totals: np.ndarray          # (P, N_CS) statistics over all the point's engines (sums; KV peak and
    #                             last finishing step: the largest)
    group_point: np.ndarray     # (G,) the point of each LLM group, in point order
    group_stats: np.ndarray     # (G, N_CS) each group's statistics summed over its replicas
    group_replicas: np.ndarray  # (G,) replicas of each group
    group_clients: list         # (G,) the client spec of one replica of each group
    devices: list               # per point: the devices that draw energy in it (None: no device)
    host_energy_J: np.ndarray   # (P,) energy of the point's CPU / vector-search hosts (0: none)
    price_usd_per_hour: np.ndarray  # (P,) price of every device of the point
    warmup_s: np.ndarray        # (P,)
    mist: np.ndarray            # (P,) bool: MIST's metric definitions
    quantiles: list             # per point: the configured quantiles (tuples, equal across points)
    prefix_hit_rate: np.ndarray | None = None   # (P,) when not the metrics kernel's (pipelines)


def summary_vars(inp: SummaryInputs) -> dict[str, np.ndarray]:
    """Every summary variable (length-P arrays) of single-client points and pipeline runs alike:
    request metrics, steps and batch means, engine utilisation and KV, energy (with the power
    figures it rests on), cost, MIST's metric definitions. Groups of one point are combined as
    means over replicas (over busy time for the KV), the largest KV peak, summed energy."""
    out, tot = inp.out, inp.totals
    s = request_summary(out)
    if inp.prefix_hit_rate is not None:
        s["prefix_hit_rate"] = inp.prefix_hit_rate
    steps = tot[:, CL.CS_STEPS]
    s["n_steps"] = steps
    s["mean_batch_tokens"] = tot[:, CL.CS_BATCH_TOKENS] / np.maximum(steps, 1)
    s["mean_batch_size"] = tot[:, CL.CS_BATCH_SEQS] / np.maximum(steps, 1)
    end = np.maximum(inp.end_s, 1e-300)
    per_group = _client_constants(inp.group_clients)
    eng = engine_vars(inp.group_stats, inp.group_replicas, inp.group_clients, end[inp.group_point])
    eng["kv_capacity_tokens"] = per_group("kv_tokens")
    eng["weights_GiB_per_device"] = per_group("weights_GiB")
    eng = _per_point(inp, eng, inp.group_stats[:, CL.CS_BUSY])
    for k in ("busy_fraction", "kv_util_mean", "kv_util_peak", "mfu", "mbu"):
        s[k] = eng[k]
    s["preemptions"] = tot[:, CL.CS_PREEMPT]
    s["recomputed_tokens"] = tot[:, CL.CS_RECOMP]
    s["kv_capacity_tokens"] = eng["kv_capacity_tokens"]
    s["weights_GiB_per_device"] = eng["weights_GiB_per_device"]
    s["energy_J"] = eng["energy_J"]
    s["energy_per_output_token_J"] = s["energy_J"] / np.maximum(out[:, M.O_OUT_TOKENS], 1)
    from .power import apply_to_points  # no TDP -> NaN energy; estimated idle flagged (docs/idle-power.md)
    apply_to_points(s, inp.devices)
    cost_vars(s, inp.price_usd_per_hour, end, out[:, M.O_OUT_TOKENS])
    s["steps_outside_calibration"] = tot[:, CL.CS_OUT_OF_RANGE]
    if inp.mist.any():
        apply_mist_metrics(s, out, tot[:, CL.CS_DEC_SEQS], tot[:, CL.CS_DEC_SEQ_S],
                           tot[:, CL.CS_FINISH_STEP_START] - inp.warmup_s, inp.mist)
    s.update(quantile_summary(out, inp.quantiles))
    return s


def _per_point(inp: SummaryInputs, eng: dict, busy_s: np.ndarray) -> dict[str, np.ndarray]:
    """Group values of ``eng`` as point values: a point's one group as it is (and its energy plus
    its hosts'); several groups combined as ``summary_vars`` says."""
    P, g = len(inp.end_s), inp.group_point
    if len(g) == P and np.array_equal(g, np.arange(P)):   # one group per point (single clients)
        if inp.host_energy_J.any():
            eng = dict(eng, energy_J=eng["energy_J"] + inp.host_energy_J)
        return eng
    at = np.searchsorted(g, np.arange(P + 1))
    v = {k: np.full(P, np.nan) for k in eng}
    for q in range(P):
        a, z = at[q], at[q + 1]
        if a == z:
            raise RuntimeError(f"summary: point {q} has no LLM engine")
        nrep = inp.group_replicas[a:z]
        v["busy_fraction"][q] = _combine(eng["busy_fraction"][a:z], nrep)
        v["kv_util_mean"][q] = _combine(eng["kv_util_mean"][a:z], busy_s[a:z])
        v["kv_util_peak"][q] = np.nanmax(eng["kv_util_peak"][a:z])
        v["mfu"][q] = _combine(eng["mfu"][a:z], nrep)
        v["mbu"][q] = _combine(eng["mbu"][a:z], nrep)
        v["kv_capacity_tokens"][q] = eng["kv_capacity_tokens"][a:z].min()
        v["weights_GiB_per_device"][q] = eng["weights_GiB_per_device"][a:z].max()
        v["energy_J"][q] = eng["energy_J"][a:z].sum() + inp.host_energy_J[q]
    return v


def point_inputs(points, out, rs, end_time, nrep) -> SummaryInputs:
    """``summary_vars``' inputs of single-client points (one group each): ``out`` from the metrics
    kernel, ``rs`` the engine statistics summed over each point's replicas, ``end_time`` the
    latest replica's end, ``nrep`` replicas."""
    clients = [pt.client for pt in points]
    P = len(points)
    return SummaryInputs(
        out=out, end_s=end_time, totals=rs, group_point=np.arange(P), group_stats=rs, group_replicas=nrep,
        group_clients=clients, devices=[[c.device] for c in clients], host_energy_J=np.zeros(P),
        price_usd_per_hour=_client_constants(clients)("price_usd_per_hour"),
        warmup_s=np.array([pt.simulation.warmup_s for pt in points], float),
        mist=np.array([pt.simulation.metrics == "mist" for pt in points], bool),
        quantiles=[pt.quantiles for pt in points])


def point_summary(points, out, rs, end_time, nrep) -> dict[str, np.ndarray]:
    """Summary variables of single-client points (length-P arrays): ``summary_vars`` of their
    ``point_inputs``."""
    return summary_vars(point_inputs(points, out, rs, end_time, nrep))


def _client_constants(clients):
    """``per_client(name)``: one value per point of a client quantity (as float64), computed once
    per distinct client object (the points of a sweep share them) and gathered to the points."""
    first: dict[int, int] = {}
    where = np.array([first.setdefault(id(c), len(first)) for c in clients], np.int64)
    uniq = [None] * len(first)
    for c in clients:
        uniq[first[id(c)]] = c
    quantities = {
        "kv_blocks": lambda c: max(c.kv_capacity_blocks(), 1),
        "peak_flops": lambda c: c.device.peak_flops(c.precision.compute),
        "bandwidth": lambda c: c.device.memory_bandwidth_GBps * 1e9,
        "kv_tokens": lambda c: min(c.kv_capacity_tokens(), 2**62),
        "weights_GiB": lambda c: c.weight_bytes_device() / 2**30,
        "tdp_W": lambda c: c.device.tdp_W, "idle_W": lambda c: c.device.idle_power_W,
        "devices": lambda c: c.tp * c.pp, "pp": lambda c: c.pp,
        "price_usd_per_hour": lambda c: c.device.price_usd_per_hour * c.num_devices}

    def per_client(name: str) -> np.ndarray:
        return np.array([quantities[name](c) for c in uniq], dtype=float)[where]
    return per_client


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


def prefix_hit_rate(scen, ins: dict, r: dict) -> float:
    """Reused KV tokens over the prompt tokens of the LLM stage that reused them. That stage's
    prompt includes past context fetched from a KV tier (a request's own new prompt alone would let
    the rate exceed 1). Over the requests the other metrics count (arrived, in [warmup, horizon])."""
    sim = scen.simulation
    kinds, off = ins["st_kind"], ins["st_off"]
    is_llm = (kinds == CL.K_LLM) | (kinds == CL.K_PREFILL)
    idx = np.flatnonzero(is_llm)
    owner = np.searchsorted(off, idx, side="right") - 1       # request of each LLM stage
    first = np.full(len(off) - 1, -1, np.int64)
    first[owner[::-1]] = idx[::-1]                            # the first LLM stage of each request
    keep = (r["status"] != E.PENDING) & (r["arrival"] >= sim.warmup_s) & (r["arrival"] <= sim.horizon_s) & (first >= 0)
    prompt = ins["st_prompt"][first[keep]].astype(float).sum()
    hits = np.maximum(r["hit_first"][keep], 0).sum()
    return float(hits / prompt) if prompt > 0 else 0.0


def pipeline_inputs(scen, run: dict) -> SummaryInputs:
    """``summary_vars``' inputs of one pipeline run: requests over the whole pipeline, one group
    per LLM client entry (its replicas summed as a single client's), the hosts' energy."""
    ins, r, topo, cs = run["inputs"], run["requests"], run["inputs"]["topo"], run["cstats"]
    n = r["status"].size
    mp = metric_vector(scen.simulation, scen.slo, tuple(scen.metrics.quantiles or ()))[None, :]
    out = np.zeros((1, M.N_OUT))
    end = np.array([run["end"]])
    M.summarize_points(mp, np.array([0, n], np.int64), run["prompt"], ins["branches"], r["status"], r["reason"], r["arrival"],
                       r["t_first_sched"], r["t_first_tok"], r["t_last_tok"], r["t_finish"], r["generated"],
                       r["hit_first"], r["computed_pf"], end, out)
    llm = [c for c in range(topo.C) if topo.llm[c] is not None]
    groups = list(dict.fromkeys(topo.group[c] for c in llm))
    owner = [groups.index(topo.group[c]) for c in llm]
    rs, nrep = sum_replica_stats(owner, cs[llm], len(groups))
    tot = np.zeros((1, CL.N_CS))
    for col in (CL.CS_STEPS, CL.CS_BATCH_TOKENS, CL.CS_BATCH_SEQS, CL.CS_DEC_SEQS, CL.CS_DEC_SEQ_S):
        tot[0, col] = cs[llm, col].sum()
    for col in (CL.CS_PREEMPT, CL.CS_RECOMP, CL.CS_OUT_OF_RANGE):
        tot[0, col] = cs[:, col].sum()
    tot[0, CL.CS_FINISH_STEP_START] = cs[llm, CL.CS_FINISH_STEP_START].max()
    endt = max(run["end"], 1e-300)
    hosts = [c for c in range(topo.C) if topo.llm[c] is None]
    from .power import topology_devices
    return SummaryInputs(
        out=out, end_s=end, totals=tot, group_point=np.zeros(len(groups), np.int64), group_stats=rs,
        group_replicas=nrep, group_clients=[topo.llm[llm[owner.index(g)]] for g in range(len(groups))],
        devices=[topology_devices(topo)], host_energy_J=np.array([_host_energies(topo, cs, endt)[hosts].sum()]),
        price_usd_per_hour=np.array([_instance_prices(topo).sum()]),
        warmup_s=np.array([scen.simulation.warmup_s]), mist=np.array([scen.simulation.metrics == "mist"]),
        quantiles=[tuple(scen.metrics.quantiles or ())], prefix_hit_rate=np.array([prefix_hit_rate(scen, ins, r)]))


def pipeline_summary(scen, run: dict) -> dict[str, np.ndarray]:
    """Summary variables (length-1 arrays, as the single-client runner's) of one pipeline run:
    ``summary_vars`` of its ``pipeline_inputs``."""
    return summary_vars(pipeline_inputs(scen, run))


def _combine(values: np.ndarray, weights: np.ndarray) -> float:
    """One client entry's value as it is; several entries' weighted mean (plain mean when no
    entry has weight)."""
    if values.size == 1:
        return values[0]
    w = weights if weights.sum() > 0 else np.ones_like(weights)
    return (values * w).sum() / w.sum()


def client_vars(scen, run) -> dict[str, np.ndarray]:
    """Per client instance (replicas expanded): utilisation, energy, price and work of a pipeline run."""
    topo, cs = run["inputs"]["topo"], run["cstats"]
    endt = max(run["end"], 1e-300)
    C = topo.C
    out = {k: np.full(C, np.nan) for k in ("client_busy_fraction", "client_kv_util_mean", "client_kv_util_peak",
                                            "client_mfu", "client_mbu", "client_energy_J")}
    out["client_price_usd_per_hour"] = _instance_prices(topo)
    out.update(_instance_work(cs, endt))
    llm = [c for c in range(C) if topo.llm[c] is not None]
    if llm:
        # each instance is a group of one replica: the single client's formulas (engine_vars)
        eng = engine_vars(cs[llm], np.ones(len(llm)), [topo.llm[c] for c in llm], np.full(len(llm), endt))
        for k in ("busy_fraction", "kv_util_mean", "kv_util_peak", "mfu", "mbu", "energy_J"):
            out[f"client_{k}"][llm] = eng[k]
    hosts = [c for c in range(C) if topo.llm[c] is None]
    out["client_busy_fraction"][hosts] = _host_busy_fractions(topo, cs, endt)[hosts]
    out["client_energy_J"][hosts] = _host_energies(topo, cs, endt)[hosts]
    from .power import mask_client_energy, topology_devices  # no TDP -> NaN energy (docs/idle-power.md)
    mask_client_energy(out["client_energy_J"], topology_devices(topo))
    return out


def _instance_work(cs: np.ndarray, end_s) -> dict[str, np.ndarray]:
    """Steps, requests served, time blocked on KV and computed prompt tokens per second of the run
    (prefill or encode chunks, recompute included; the scalar computed_prompt_tok_s sums every
    client's) of each instance: ``cs`` one row per instance, ``end_s`` its run's end."""
    return {"client_steps": cs[:, CL.CS_STEPS].copy(), "client_served": cs[:, CL.CS_SERVED].copy(),
            "client_kv_blocked_s": cs[:, CL.CS_KV_BLOCKED_S].copy(),
            "client_computed_prompt_tok_s": cs[:, CL.CS_PF_TOKENS] / end_s}


def _instance_prices(topo) -> np.ndarray:
    """Price per hour of each client instance of a topology: its devices (none: free)."""
    return np.array([cl.device.price_usd_per_hour * (cl.tp * cl.pp) if cl is not None else
                     (s.device.price_usd_per_hour if s.device is not None else 0.0)
                     for cl, s in zip(topo.llm, topo.server)], float)


def _host_busy_fractions(topo, cs, endt) -> np.ndarray:
    """Busy fraction of each slot server (NaN for LLM instances): a CPU server is busy for the sum
    of its slots' service over ``slots`` cores."""
    return np.array([np.nan if s is None else cs[c, CL.CS_BUSY] / endt / (s.slots if s.kind == "cpu" else 1)
                     for c, s in enumerate(topo.server)], float)


def _host_energies(topo, cs, endt) -> np.ndarray:
    """Energy of each slot server over the run (NaN for LLM instances; a server without a device: 0)."""
    frac = _host_busy_fractions(topo, cs, endt)
    return np.array([np.nan if s is None else
                     host_energy_J(s.device.tdp_W if s.device is not None else 0.0,
                                   s.device.idle_power_W if s.device is not None else 0.0, frac[c], endt)
                     for c, s in enumerate(topo.server)], float)


def stage_vars(run) -> dict[str, np.ndarray]:
    """Mean transfer-in, queue and service time per stage kind (MODEL.md §8 breakdown)."""
    ins, st = run["inputs"], run["stages"]
    kinds = ins["st_kind"]
    K = len(CL.STAGE_NAMES)
    with np.errstate(invalid="ignore"):
        tr = st["arrive"] - st["ready"]
        qu = st["sched"] - st["arrive"]
        sv = st["exit"] - np.where(np.isnan(st["sched"]), st["arrive"], st["sched"])
    done = np.flatnonzero(~np.isnan(st["exit"]))
    order = done[np.argsort(kinds[done], kind="stable")]       # completed stages by kind, in stage order
    at = np.searchsorted(kinds[order], np.arange(K + 1))
    qu = qu[order]
    return {"stage_transfer_ms": _segment_nanmeans(tr[order], at) * 1e3,
            "stage_queue_ms": _segment_nanmeans(np.where(np.isnan(qu), 0.0, qu), at) * 1e3,
            "stage_service_ms": _segment_nanmeans(sv[order], at) * 1e3,
            "stage_count": np.diff(at).astype(float)}


def _segment_nanmeans(x: np.ndarray, at: np.ndarray) -> np.ndarray:
    """``np.nanmean`` of each segment ``x[at[i]:at[i + 1]]`` (NaN when empty or all NaN), computed
    as it does, bit for bit: NaN as 0 in one contiguous sum per segment, over the count of the
    others (a segmented ``np.add.reduceat`` adds in another order and changes the last bit)."""
    n = np.diff(at)
    nan = np.isnan(x)
    counted = n - np.bincount(np.repeat(np.arange(len(n)), n)[nan], minlength=len(n))
    x = np.where(nan, 0.0, x)
    sums = np.full(len(n), np.nan)
    for i in np.flatnonzero(n).tolist():
        sums[i] = np.add.reduce(x[at[i]:at[i + 1]])
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counted


# ----------------------------------------------------------------------------- Datasets
def summary_dataset(summary: dict[str, np.ndarray], index: int | None = None, extra_dims=(),
                    quantiles=()) -> xr.Dataset:
    """The Dataset of summary variables (``index``: one point of length-P arrays)."""
    # one constructor call: adding variables one by one costs an xarray merge each
    import xarray as xr
    ds = xr.Dataset({name: variable(name, arr if index is None else arr[index], extra_dims)
                     for name, arr in summary.items()})
    coords = {"reject_reason": list(E.REASON_NAMES[1:])}
    if "quantile" in ds.dims:
        coords["quantile"] = list(quantiles)
    return add_coord_attrs(ds.assign_coords(coords))


def resource_vars(run) -> dict[str, np.ndarray]:
    """Bytes through each link or tier port of a pipeline run, and their share of its capacity."""
    return _resource_vars(run["res_bytes"], run["inputs"]["res_cap"], max(run["end"], 1e-300))


def _resource_vars(bytes_: np.ndarray, cap: np.ndarray, end_s) -> dict[str, np.ndarray]:
    """Bytes through each resource and their share of what its capacity could carry by ``end_s``
    (a scalar, or one per row of ``bytes_`` as a column)."""
    return {"resource_utilisation": bytes_ / np.maximum(cap, 1e-300) / end_s, "resource_bytes": bytes_}


def table_vars(scen, run) -> tuple[dict[str, np.ndarray], dict[str, list]]:
    """The per-client, per-stage and per-resource variables of a pipeline run, and their labels."""
    topo = run["inputs"]["topo"]
    data = {**client_vars(scen, run), **stage_vars(run), **resource_vars(run)}
    return data, {"client": list(topo.names), "stage_kind": list(CL.STAGE_NAMES), "resource": list(topo.res_names)}


def stacked_point_tables(points, owner, cstats: np.ndarray, end: np.ndarray, r: dict,
                         pt_off: np.ndarray) -> list[tuple[np.ndarray, dict]]:
    """The per-client, per-stage and per-resource variables of many single-client points at once,
    as their one-stage pipelines have them (``table_vars``), as (positions in ``points``, tables
    stacked along those points with their labels under ``"_labels"``), one entry per distinct
    label set in order of first appearance. ``owner``: the point of each row of ``cstats``
    (rows x N_CS; a point's rows in replica order), ``end`` each point's end, ``r`` the
    per-request outputs in point then request order, ``pt_off`` each point's first request.
    A point's one stage is an LLM stage that requests enter at arrival (no transfer); no bytes
    cross a resource. The same values as ``table_vars`` of each point's one-stage pipeline, bit
    for bit (tests/test_point_tables.py):
    every formula is elementwise, and each point's stage means sum its own requests as one numpy
    sum, as ``np.nanmean`` does (a segmented sum would add them in another order)."""
    P = len(points)
    owner = np.asarray(owner, np.int64)
    reps = np.bincount(owner, minlength=P)
    first_row = np.concatenate([[0], np.cumsum(reps)[:-1]])
    order = np.argsort(owner, kind="stable")                 # rows point by point, replica order
    instance = np.empty(len(owner), np.int64)
    instance[order] = np.arange(len(owner)) - first_row[owner[order]]
    topos = _point_topologies(points)
    endt = np.maximum(np.asarray(end, float), 1e-300)
    clients = _client_rows(cstats, owner, instance, topos, endt)
    stages = _llm_stage_rows(r, pt_off)
    by_labels: dict = {}
    for q, topo in enumerate(topos):
        by_labels.setdefault((tuple(topo.names), tuple(topo.res_names)), []).append(q)
    out = []
    for (names, res_names), qs in by_labels.items():
        qs = np.asarray(qs, np.int64)
        if np.any(reps[qs] != len(names)):
            raise RuntimeError(f"point tables: a point has {reps[qs].tolist()} replicas for clients {list(names)}")
        rows = order[first_row[qs][:, None] + np.arange(len(names))]        # (points, instances)
        price = np.array([topos[q].price for q in qs]).reshape(len(qs), len(names))
        summ = {}
        for k, v in clients.items():   # in client_vars' order (a single run's Dataset shows it)
            summ[k] = v[rows]
            if k == "client_energy_J":
                summ["client_price_usd_per_hour"] = price
        summ.update({k: v[qs] for k, v in stages.items()})
        cap = np.array([topos[q].res_cap for q in qs], float).reshape(len(qs), len(res_names))
        bytes_ = np.zeros_like(cap)    # a single client's requests cross no link or tier port
        summ.update(_resource_vars(bytes_, cap, endt[qs][:, None]))
        summ["_labels"] = {"client": list(names), "stage_kind": list(CL.STAGE_NAMES), "resource": list(res_names)}
        out.append((qs, summ))
    return out


def _point_topologies(points) -> list:
    """Each single-client point's Topology (routes made), with ``price`` (per instance) and
    ``no_power`` (instances whose device has no power figure, warned about once), made once per
    distinct set of the sections a topology reads (the points of a sweep share those objects)."""
    from .power import mask_client_energy, topology_devices
    out = []
    for pt in points:
        scen = pt.scenario
        reads = (*scen.clients, None, *scen.servers, None, *scen.tiers, None, *scen.links, None, *scen.pipelines,
                 None, scen.network)
        key = tuple(map(id, reads))
        hit = _TOPOLOGIES.get(key)
        if hit is None:
            topo = Topology(scen)
            if any(cl is None for cl in topo.llm):
                raise RuntimeError("point tables: a single-client point with a server")
            topo.routes()   # creates the network resources a one-stage pipeline of these replicas has
            topo.price = _instance_prices(topo)
            energy = np.zeros(topo.C)
            mask_client_energy(energy, topology_devices(topo))
            topo.no_power = np.isnan(energy)
            if len(_TOPOLOGIES) >= 4096:
                _TOPOLOGIES.clear()
            hit = _TOPOLOGIES[key] = (topo, reads)   # the sections stay alive with their ids
        elif hit[0].no_power.any():   # the warning, as each point's own run gives it (once per process)
            mask_client_energy(np.zeros(hit[0].C), topology_devices(hit[0]))
        out.append(hit[0])
    return out


_TOPOLOGIES: dict = {}   # per process: (topology, the sections it was made from) by their ids


def _client_rows(cstats, owner, instance, topos, endt) -> dict[str, np.ndarray]:
    """client_vars' LLM formulas for every row of ``cstats`` (one replica of one point) at once."""
    llm = [topos[q].llm[c] for q, c in zip(owner.tolist(), instance.tolist())]
    end_rows = endt[owner]
    eng = engine_vars(cstats, np.ones(len(owner)), llm, end_rows)
    v = {f"client_{k}": eng[k] for k in ("busy_fraction", "kv_util_mean", "kv_util_peak", "mfu", "mbu")}
    no_power = np.array([topos[q].no_power[c] for q, c in zip(owner.tolist(), instance.tolist())], bool)
    v["client_energy_J"] = np.where(no_power, np.nan, eng["energy_J"])
    v.update(_instance_work(cstats, end_rows))
    return v


def _llm_stage_rows(r: dict, pt_off: np.ndarray) -> dict[str, np.ndarray]:
    """stage_vars of each point's one LLM stage, which requests enter at arrival (points x kinds):
    the count of finished requests, and the mean transfer (none), queue and service times."""
    P = len(pt_off) - 1
    K = len(CL.STAGE_NAMES)
    done = np.flatnonzero((r["status"] == E.FINISHED) & ~np.isnan(r["t_finish"]))   # the stage's exits
    pick = (lambda x: x) if done.size == r["status"].size else (lambda x: x[done])  # noqa: E731
    arrive, sched, exit_ = pick(r["arrival"]), pick(r["t_first_sched"]), pick(r["t_finish"])
    with np.errstate(invalid="ignore"):
        times = [arrive - arrive, sched - arrive, exit_ - np.where(np.isnan(sched), arrive, sched)]
    times[1] = np.where(np.isnan(times[1]), 0.0, times[1])     # a queue time never known counts as none
    at = np.searchsorted(done, pt_off)                          # each point's first exit in ``done``
    count = np.zeros((P, K))
    count[:, CL.K_LLM] = np.diff(at)
    out = {}   # in stage_vars' order
    for j, name in enumerate(("stage_transfer_ms", "stage_queue_ms", "stage_service_ms")):
        out[name] = np.full((P, K), np.nan)
        out[name][:, CL.K_LLM] = _segment_nanmeans(times[j], at) * 1e3
    out["stage_count"] = count
    return out


def run_dataset(summary: dict, quantiles, tables: tuple | None = None, requests: dict | None = None,
                req_class=None, steplog: np.ndarray | None = None, step_clients=None) -> xr.Dataset:
    """The Dataset of one run, single client or pipeline: its summary (length-1 arrays), its
    per-client, per-stage and per-resource ``tables`` (variables, labels), on request its
    per-request outputs (``requests``, with ``req_class``) and its step log."""
    ds = summary_dataset(summary, 0, quantiles=quantiles)
    if tables is not None:
        data, labels = tables
        ds = ds.assign({k: variable(k, v) for k, v in data.items()}).assign_coords(labels)
    if requests is not None:
        for k, v in per_request_vars(requests).items():
            ds[k] = variable(k, v)
        ds["req_class"] = variable("req_class", req_class)
    if steplog is not None:
        ds = with_step_log(ds, steplog, client_names=step_clients)
    return ds


def point_dataset(spec, res: dict, per_request: bool, log_steps: int = 0) -> xr.Dataset:
    """The Dataset of one single-client run (``runner.run_points`` of its one point, with tables)."""
    rq = res["requests"] if per_request else None
    log = res["steplog"][0, :int(min(res["steps_per_sub"][0], log_steps))] if log_steps else None
    return run_dataset(res["summary"], spec.metrics.quantiles, res["tables"][0] if "tables" in res else None, rq,
                       np.zeros(rq["status"].size, np.int32) if per_request else None, log)


def pipeline_dataset(scen, run, per_request: bool) -> xr.Dataset:
    """The Dataset of one pipeline run (``runner.run_pipeline``; its step log: ``with_step_log``)."""
    rq = None
    if per_request:
        rq = dict(run["requests"], prompt=run["prompt"], output=requested_output_tokens(run["inputs"]),
                  replica=first_token_replica(run))
    return run_dataset(pipeline_summary(scen, run), scen.metrics.quantiles, table_vars(scen, run), rq,
                       run["inputs"]["cls"] if per_request else None)


def first_token_replica(run) -> np.ndarray:
    """Per request of a pipeline run: the replica, within its client entry, of the instance that
    ran the stage emitting the first token (-1 when the request never reached that stage)."""
    ins, topo = run["inputs"], run["inputs"]["topo"]
    n = ins["st_off"].size - 1
    rep_of = np.array([topo.group[:c].count(topo.group[c]) for c in range(topo.C)] + [-1], np.int32)
    ttft = np.flatnonzero((ins["st_flags"] & CL.F_TTFT) != 0)
    owner = np.searchsorted(ins["st_off"], ttft, side="right") - 1
    out = np.full(n, -1, np.int32)
    out[owner] = rep_of[run["stages"]["client"][ttft]]   # an unrouted stage's client -1 picks the -1
    return out


def requested_output_tokens(ins) -> np.ndarray:
    """Per request: output tokens of the stages whose tokens count as its output (the LLM,
    decode and reasoning segments it takes; skipped segments excluded), per branch."""
    n = ins["st_off"].size - 1
    kind = ins["st_kind"]
    counted = ((ins["st_flags"] & CL.F_COUNT) != 0) & (kind != CL.K_SKIP)
    owner = np.repeat(np.arange(n), np.diff(ins["st_off"]))
    # a decode stage's output includes the token its prefill stage emitted: count that one once
    has_decode = np.bincount(owner, weights=kind == CL.K_DECODE, minlength=n) > 0
    counted &= ~((kind == CL.K_PREFILL) & has_decode[owner])
    return np.bincount(owner, weights=np.where(counted, ins["st_output"], 0), minlength=n).astype(np.int64)


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


STEP_LOG_VARS = ("step_start_s", "step_duration_s", "step_prefills", "step_prefill_tokens",
                 "step_decodes", "step_decode_tokens", "step_kv_blocks")


def with_step_log(ds: xr.Dataset, log: np.ndarray, client_names=None) -> xr.Dataset:
    """The engine step log as variables along a ``step`` dimension (in the order the steps were
    formed); with several clients, ``step_client`` names the client of each step."""
    n = log.shape[0]
    ds.attrs["steplog"] = "see .steplog"
    ds = ds.assign_coords(step=np.arange(n))
    for j, name in enumerate(STEP_LOG_VARS):
        ds[name] = variable(name, log[:, j])
    if client_names is not None:
        ds["step_client"] = variable("step_client", np.asarray(client_names, dtype=object)[log[:, CL.N_LOG].astype(np.int64)])
    return ds


def spec_attrs(spec) -> dict:
    return {**global_attrs("simulate one scenario"), **slo_attrs(spec.slo),
            "mistfast_version": __version__, "spec_json": json.dumps(spec.model_dump(mode="json"), sort_keys=True),
            "token_counting": "tokens of requests arriving in [warmup, horizon], divided by the time from warmup "
                              "to the end of the simulation (drain included)",
            "percentiles": "over requests that reached the event (counts of the others are reported)"}


assert all(k in REGISTRY for k in ("ttft_p99_ms", "req_ttft_ms"))
