"""Slim views of the state bundles, for the helpers called per request or per step.

numba passes a NamedTuple by value, every member flattened into its machine words (a 1-D array is
7, a 2-D one 9), at every call that is not inlined. The stage transitions (``_enter_stage``,
``_leave_stage``, ``_arrive``), batch formation and decode runs touch only some members of the
bundles they would receive, so their callers hand them a view holding just those members: the same
arrays (nothing is copied), the same member names (so the helpers' code reads ``req.rq``,
``bat.run`` as with the full bundle), fewer words per call. This is "style f" of
``../shared/design/KERNEL-STATE.md``: the loop and its phases hold the bundles, the hottest helpers
take what they use. Each view factory is inlined, so building a view costs nothing, and every
caller of a helper builds the same view, so each helper has one numba type.
The classes are module-level (numba's cache must find them, see ``state.py``).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .._numba import jit_inline


# ============================================================================ stage transitions
class RequestsMoving(NamedTuple):
    """The request columns a stage transition touches (``_workload_arrivals``, ``_enter_stage``,
    ``_leave_stage``, ``_arrive`` and what they call)."""
    arrival: np.ndarray
    branches: np.ndarray
    hash_off: np.ndarray
    hash_ids: np.ndarray
    rq: np.ndarray
    status: np.ndarray
    reason: np.ndarray
    t_finish: np.ndarray


class TierChains(NamedTuple):
    """The hash-mode KV tiers a kv_fetch stage searches when it is entered."""
    tier_state: np.ndarray
    chain_off: np.ndarray
    chain_tier: np.ndarray


class LoopCore(NamedTuple):
    """The loop's settings and counters (no step log)."""
    g: np.ndarray
    ctr: np.ndarray


@jit_inline
def requests_moving(req):
    return RequestsMoving(req.arrival, req.branches, req.hash_off, req.hash_ids, req.rq, req.status, req.reason,
                          req.t_finish)


@jit_inline
def tier_chains(kv):
    return TierChains(kv.tier_state, kv.chain_off, kv.chain_tier)


@jit_inline
def loop_core(lp):
    return LoopCore(lp.g, lp.ctr)


class StagesRouting(NamedTuple):
    """The stage columns routing (``_route``) reads."""
    kind: np.ndarray
    pool: np.ndarray


class ClientsRouting(NamedTuple):
    """The client state routing (``_route``, ``_choose``) reads."""
    sch: np.ndarray
    srv: np.ndarray
    ci: np.ndarray


class StagesArriving(NamedTuple):
    """The stage columns an arrival at a client (``_arrive``) reads."""
    kind: np.ndarray
    prompt: np.ndarray
    output: np.ndarray


class ClientsArriving(NamedTuple):
    """The client state an arrival at a client (``_arrive``) reads and writes."""
    kind: np.ndarray
    sch: np.ndarray
    ci: np.ndarray


@jit_inline
def stages_routing(stg):
    return StagesRouting(stg.kind, stg.pool)


@jit_inline
def clients_routing(cli):
    return ClientsRouting(cli.sch, cli.srv, cli.ci)


@jit_inline
def stages_arriving(stg):
    return StagesArriving(stg.kind, stg.prompt, stg.output)


@jit_inline
def clients_arriving(cli):
    return ClientsArriving(cli.kind, cli.sch, cli.ci)


# ============================================================================ batch formation
class RequestsBatching(NamedTuple):
    """The request columns batch formation (``_form_batch``) reads and writes."""
    arrival: np.ndarray
    branches: np.ndarray
    hash_off: np.ndarray
    hash_ids: np.ndarray
    rq: np.ndarray
    status: np.ndarray
    reason: np.ndarray
    t_finish: np.ndarray
    preempts: np.ndarray
    hit_first: np.ndarray
    generated: np.ndarray      # (lazy decodes: a member is brought up to date in a formation)
    t_last_tok: np.ndarray


class ClientsBatching(NamedTuple):
    sch: np.ndarray
    ci: np.ndarray
    stats: np.ndarray
    cf: np.ndarray


class BatchesForming(NamedTuple):
    """The batch and the scratch of batch formation (no decode-run scratch, no step-time memo)."""
    run: np.ndarray
    pf_req: np.ndarray
    pf_past: np.ndarray
    pf_new: np.ndarray
    dec_req: np.ndarray
    dec_w: np.ndarray
    dec_s: np.ndarray
    dec_k: np.ndarray
    static_batch: np.ndarray
    order: np.ndarray
    keys: np.ndarray
    run_j1: np.ndarray         # (lazy decodes: the members' KV growth)
    run_amt: np.ndarray
    ring: np.ndarray
    run_j0: np.ndarray
    run_rem: np.ndarray


class PrefixCaches(NamedTuple):
    """The LLM clients' prefix caches (no KV tiers)."""
    cache_slot: np.ndarray
    in_cache: np.ndarray
    lru_prev: np.ndarray
    lru_next: np.ndarray
    lru_ends: np.ndarray


@jit_inline
def requests_batching(req):
    return RequestsBatching(req.arrival, req.branches, req.hash_off, req.hash_ids, req.rq, req.status, req.reason,
                            req.t_finish, req.preempts, req.hit_first, req.generated, req.t_last_tok)


@jit_inline
def clients_batching(cli):
    return ClientsBatching(cli.sch, cli.ci, cli.stats, cli.cf)


@jit_inline
def batches_forming(bat):
    return BatchesForming(bat.run, bat.pf_req, bat.pf_past, bat.pf_new, bat.dec_req, bat.dec_w, bat.dec_s, bat.dec_k,
                          bat.static_batch, bat.order, bat.keys, bat.run_j1, bat.run_amt, bat.ring, bat.run_j0,
                          bat.run_rem)


@jit_inline
def prefix_caches(kv):
    return PrefixCaches(kv.cache_slot, kv.in_cache, kv.lru_prev, kv.lru_next, kv.lru_ends)


# ============================================================================ decode runs
class RequestsDecoding(NamedTuple):
    """The request columns a decode run (``_decode_run``) reads and writes."""
    arrival: np.ndarray
    rq: np.ndarray
    status: np.ndarray
    t_finish: np.ndarray
    generated: np.ndarray
    t_last_tok: np.ndarray


class StagesDecoding(NamedTuple):
    off: np.ndarray
    kind: np.ndarray
    output: np.ndarray
    flags: np.ndarray
    t_exit: np.ndarray


class ClientsDecoding(NamedTuple):
    prm: np.ndarray
    sch: np.ndarray
    ci: np.ndarray
    cf: np.ndarray
    stats: np.ndarray


class BatchesDecoding(NamedTuple):
    """The decodes of the batch and the decode-run scratch."""
    run: np.ndarray
    dec_req: np.ndarray
    dec_w: np.ndarray
    dec_s: np.ndarray
    dec_k: np.ndarray
    bd: np.ndarray
    run_j1: np.ndarray
    run_amt: np.ndarray
    ring: np.ndarray
    run_j0: np.ndarray
    run_rem: np.ndarray


class LoopLogging(NamedTuple):
    """The loop's settings, counters and step log."""
    g: np.ndarray
    ctr: np.ndarray
    steplog: np.ndarray


@jit_inline
def requests_decoding(req):
    return RequestsDecoding(req.arrival, req.rq, req.status, req.t_finish, req.generated, req.t_last_tok)


@jit_inline
def stages_decoding(stg):
    return StagesDecoding(stg.off, stg.kind, stg.output, stg.flags, stg.t_exit)


@jit_inline
def clients_decoding(cli):
    return ClientsDecoding(cli.prm, cli.sch, cli.ci, cli.cf, cli.stats)


@jit_inline
def batches_decoding(bat):
    return BatchesDecoding(bat.run, bat.dec_req, bat.dec_w, bat.dec_s, bat.dec_k, bat.bd, bat.run_j1, bat.run_amt,
                           bat.ring, bat.run_j0, bat.run_rem)


@jit_inline
def loop_logging(lp):
    return LoopLogging(lp.g, lp.ctr, lp.steplog)
