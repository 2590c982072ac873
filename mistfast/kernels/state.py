"""The state of one simulated point, as a few named bundles (one per entity) of arrays.

numba passes a NamedTuple by value, member by member, so a helper takes only the bundles it
touches (``../shared/design/KERNEL-STATE.md``). Every bundle is built here, by its ``new_*``
factory (NRT on: the only place that allocates), so each bundle has one numba type; the event
loop and its helpers (``jit_noalloc``) only read and write the members. Scalars that change
during a run live in ``Loop.ctr`` or in the loop's locals (a NamedTuple is immutable).
The classes are module-level so numba's cache can find them (a class in ``__main__`` or in a
function is pickled by value and never hits the cache).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .._numba import jit
from . import steptime as ST
from .engine import PENDING, R_NONE, S_BLOCK, S_MAX_SEQS, S_PP_MB, S_PREFIX_BLOCKS, S_SEQS_PER_STEP
from .layout import (C_REL, CK_LLM, CK_SLOTS, F_NEXT, G_CONC, I_MIST, I_WHEAD, I_WTAIL, MAX_HOPS, MEMO_CAP,
                     N_CTR, N_F, N_I, N_Q, Q_IN_STEP, Q_WNEXT, Q_WPREV, SRV_BATCH_MAX, SRV_MIST_JSQ, SRV_SLOTS)


class Requests(NamedTuple):
    """One row per request: inputs, the state table and the per-request outputs."""
    arrival: np.ndarray        # float64[n] s (closed loop: set when the user submits; inf before)
    branches: np.ndarray       # int64[n] parallel output sequences
    hash_off: np.ndarray       # int64[n + 1] CSR offsets of each request's prefix-block hash ids
    hash_ids: np.ndarray       # int64 dense hash ids
    rq: np.ndarray             # int64[n, N_Q] state columns (layout.Q_*)
    status: np.ndarray         # engine.PENDING .. UNFINISHED
    reason: np.ndarray         # engine.R_* rejection reason
    t_first_sched: np.ndarray  # float64 s
    t_first_tok: np.ndarray    # float64 s
    t_last_tok: np.ndarray     # float64 s
    t_finish: np.ndarray       # float64 s
    generated: np.ndarray      # output tokens emitted
    preempts: np.ndarray       # times preempted
    hit_first: np.ndarray      # prefix-cache hit tokens at first admission (-1: never admitted)
    computed_pf: np.ndarray    # prompt tokens computed, recomputation included


class Stages(NamedTuple):
    """One row per (request, stage); request r owns rows off[r]:off[r + 1]."""
    off: np.ndarray            # int64[n + 1]
    kind: np.ndarray           # layout.K_*
    pool: np.ndarray           # pool routed to
    prompt: np.ndarray         # int64 tokens in
    output: np.ndarray         # int64 tokens out
    bytes: np.ndarray          # float64 B moved into the stage (kv_fetch hash mode: B per token)
    tier: np.ndarray           # kv_fetch: tier read (-1 miss; <= -2: hash mode over chain -2 - tier)
    flags: np.ndarray          # layout.F_TTFT | F_COUNT
    client: np.ndarray         # out: client that served it (-1: not routed yet)
    t_ready: np.ndarray        # out, float64 s
    t_arrive: np.ndarray       # out, float64 s
    t_sched: np.ndarray        # out, float64 s
    t_exit: np.ndarray         # out, float64 s


class Clients(NamedTuple):
    """One row per client (LLM engine, slot server or batched retrieval server)."""
    kind: np.ndarray           # layout.CK_*
    prm: np.ndarray            # float64[C, ST.N_PARAMS] step-model parameters
    sch: np.ndarray            # float64[C, engine.N_SCHED] scheduler settings
    srv: np.ndarray            # float64[C, N_SRV] server parameters (layout.SRV_*)
    ci: np.ndarray             # int64[C, N_I] integer state columns (layout.I_*)
    cf: np.ndarray             # float64[C, N_F] s: end and start of the step in flight
    stats: np.ndarray          # float64[C, N_CS] out: per-client statistics (layout.CS_*)


class Routes(NamedTuple):
    """Pools (the clients a stage may be routed to) and the routes between clients and tiers."""
    pool_off: np.ndarray       # int64[P + 1] CSR offsets into pool_cli
    pool_cli: np.ndarray       # int64 client ids
    pool_policy: np.ndarray    # layout.RT_*
    pool_thresh: np.ndarray    # float64 heavy_light prompt threshold, tokens
    lat: np.ndarray            # float64[N, N] s fixed latency from node to node
    hops: np.ndarray           # int64[N, N, MAX_HOPS] links crossed
    nhops: np.ndarray          # int64[N, N]


class Flows(NamedTuple):
    """Transfers in flight (slot r: request r's; slot n + c: client c's memory read) and the links
    they share (max-min fair rates, MODEL.md §4.3)."""
    state: np.ndarray          # int64[n + C] 0 idle, 1 latency phase, 2 moving bytes
    t0: np.ndarray             # float64 s end of the latency phase
    rem: np.ndarray            # float64 B left
    rate: np.ndarray           # float64 B/s
    done: np.ndarray           # float64 s completion at the current rate
    hops: np.ndarray           # int64[n + C, MAX_HOPS] links crossed
    nhops: np.ndarray          # int64
    frozen: np.ndarray         # bool: rate fixed in this round of progressive filling
    dest: np.ndarray           # int64 client reached
    live: np.ndarray           # int64 flow slots in flight, in start order (Loop.ctr[C_NFL] of them)
    link_cap: np.ndarray       # float64[R] B/s
    link_left: np.ndarray      # float64 B/s not yet shared out
    link_n: np.ndarray         # int64 unfrozen flows crossing the link
    link_bytes: np.ndarray     # float64[R] out: B carried


class KVStores(NamedTuple):
    """Prefix caches of LLM clients (one LRU per caching client) and hash-mode KV tiers."""
    cache_slot: np.ndarray     # int64[C] client's prefix-cache row (-1: none)
    in_cache: np.ndarray       # bool[slots, H]
    lru_prev: np.ndarray       # int64[slots, H]
    lru_next: np.ndarray       # int64[slots, H]
    lru_ends: np.ndarray       # int64[slots, 3] LRU head, MRU tail, count
    tier_state: np.ndarray     # int64[T, 3, H] prev, next, present
    tier_ends: np.ndarray      # int64[T, 3] LRU head, MRU tail, count
    tier_cap: np.ndarray       # int64[T] capacity in hash blocks
    chain_off: np.ndarray      # int64 CSR offsets: the tiers a kv_fetch stage searches
    chain_tier: np.ndarray     # int64 tier ids, first to last


class Batches(NamedTuple):
    """Per-client batch in flight and the scratch of batch formation and decode runs."""
    run: np.ndarray            # int64[C, cap] running requests (slot servers: one per slot)
    pf_req: np.ndarray         # int64[C, cap] prefill chunks of the step (retrieval: the batch)
    pf_past: np.ndarray        # float64 tokens already computed (slot servers: end of service, s)
    pf_new: np.ndarray         # float64 tokens of the chunk
    dec_req: np.ndarray        # int64[C, cap] decodes of the step (-1: static padding)
    dec_w: np.ndarray          # float64 branches
    dec_s: np.ndarray          # float64 shared prompt tokens (branches > 1)
    dec_k: np.ndarray          # float64 context tokens per branch
    static_batch: np.ndarray   # int64[C, cap] members of a static batch
    order: np.ndarray          # int64[n] waiting order (sorted policies)
    keys: np.ndarray           # float64[n] sort keys
    bd: np.ndarray             # float64[ST.N_OUT_MEMO] step-time breakdown of the last step, scratch, step_fixed's memo
    run_j1: np.ndarray         # int64[cap] decode run: first formation that grows the entry's KV
    run_amt: np.ndarray        # int64[cap] decode run: blocks it grows by
    ring: np.ndarray           # int64[max block] decode run: blocks needed per step mod block size
    memo_key: np.ndarray       # int64[memo, 4] MIST step-time memo keys
    memo_dt: np.ndarray        # float64[memo] s
    # PP micro-batching (kernels/ppipe.py): a ring of up to pp micro-batches in flight per client
    mb_req: np.ndarray         # int64[C, pp, 2, cap + 1] ids of the prefill chunks [.., 0, :] and decodes
                               # [.., 1, :]; their counts in the last column
    mb_f: np.ndarray           # float64[C, pp, cap + 3] tokens of each prefill chunk; then start and
                               # completion (s); then, per stage q in row q, when the latest micro-batch left it (s)
    # lazy decodes (kernels/lazy.py): the formation count at which each member joined
    run_j0: np.ndarray         # int64[cap]
    # decode runs and lazy decodes: each entry's tokens left as of the run's base formation (its row's
    # output minus generated while the run holds it), contiguous so that a pass looking for the
    # entries that finish reads no request rows
    run_rem: np.ndarray        # int64[cap]


class Loop(NamedTuple):
    """Settings, counters and the loop's own outputs."""
    g: np.ndarray              # float64[N_G] settings (layout.G_*)
    ctr: np.ndarray            # int64[N_CTR] counters (layout.C_*)
    steplog: np.ndarray        # float64[log_cap, >= LOG_COLS] out
    runstats: np.ndarray       # float64[4] out: [0] simulated time at the stop, s


@jit
def new_loop(g, n, steplog, runstats):
    runstats[:] = 0.0
    ctr = np.zeros(N_CTR, np.int64)
    ctr[C_REL] = n
    if g[G_CONC] > 0:
        ctr[C_REL] = min(int(g[G_CONC]), n)
    return Loop(g, ctr, steplog, runstats)


@jit
def new_requests(lp, arrival_in, branches, hash_off, hash_ids, status, reason, arrival, t_first_sched, t_first_tok,
                 t_last_tok, t_finish, generated, preempts, hit_first, computed_pf):
    n = arrival_in.shape[0]
    for i in range(n):
        arrival[i] = arrival_in[i]
        status[i] = PENDING
        reason[i] = R_NONE
        t_first_sched[i] = np.nan
        t_first_tok[i] = np.nan
        t_last_tok[i] = np.nan
        t_finish[i] = np.nan
        generated[i] = 0
        preempts[i] = 0
        hit_first[i] = -1
        computed_pf[i] = 0
    if lp.g[G_CONC] > 0:
        # closed loop: the first users submit at 0, the others once a request leaves
        for i in range(n):
            arrival[i] = 0.0 if i < lp.ctr[C_REL] else np.inf
    rq = np.zeros((n, N_Q), np.int64)
    for i in range(n):
        rq[i, Q_IN_STEP] = -1
        rq[i, Q_WNEXT] = -1
        rq[i, Q_WPREV] = -1
    return Requests(arrival, branches, hash_off, hash_ids, rq, status, reason, t_first_sched, t_first_tok,
                    t_last_tok, t_finish, generated, preempts, hit_first, computed_pf)


@jit
def new_stages(st_off, st_kind, st_pool, st_prompt, st_output, st_bytes, st_tier, st_flags, st_client, st_t_ready,
               st_t_arrive, st_t_sched, st_t_exit):
    for s in range(st_kind.shape[0]):
        st_client[s] = -1
        st_t_ready[s] = np.nan
        st_t_arrive[s] = np.nan
        st_t_sched[s] = np.nan
        st_t_exit[s] = np.nan
    return Stages(st_off, st_kind, st_pool, st_prompt, st_output, st_bytes, st_tier, st_flags, st_client, st_t_ready,
                  st_t_arrive, st_t_sched, st_t_exit)


@jit
def new_clients(cli_kind, cli_prm, cli_sch, cli_srv, cstats):
    C = cli_kind.shape[0]
    cstats[:, :] = 0.0
    ci = np.zeros((C, N_I), np.int64)
    cf = np.zeros((C, N_F))
    for c in range(C):
        ci[c, I_WHEAD] = -1
        ci[c, I_WTAIL] = -1
        cf[c, F_NEXT] = np.inf
        if cli_kind[c] == CK_LLM and cli_srv[c, SRV_MIST_JSQ] > 0.0:
            ci[c, I_MIST] = 1
    return Clients(cli_kind, cli_prm, cli_sch, cli_srv, ci, cf, cstats)


@jit
def new_flows(n, C, res_cap, res_bytes):
    res_bytes[:] = 0.0
    R = res_cap.shape[0]
    NF = n + C + n   # + one KV write-back slot per request (layout.F_WRITE_BACK)
    return Flows(np.zeros(NF, np.int64), np.zeros(NF), np.zeros(NF), np.zeros(NF), np.full(NF, np.inf),
                 np.full((NF, MAX_HOPS), -1, np.int64), np.zeros(NF, np.int64), np.zeros(NF, np.bool_),
                 np.zeros(NF, np.int64), np.zeros(NF, np.int64), res_cap, np.zeros(max(R, 1)),
                 np.zeros(max(R, 1), np.int64), res_bytes)


@jit
def new_kv_stores(cli, n_hash, tcap, chain_off, chain_tier):
    C = cli.kind.shape[0]
    cache_slot = np.full(C, -1, np.int64)
    ncache = 0
    for c in range(C):
        if cli.kind[c] == CK_LLM and cli.sch[c, S_PREFIX_BLOCKS] > 0:
            cache_slot[c] = ncache
            ncache += 1
    H = max(n_hash, 1)
    nc1 = max(ncache, 1)
    lru_ends = np.zeros((nc1, 3), np.int64)
    lru_ends[:, 0] = -1
    lru_ends[:, 1] = -1
    # hash-mode KV stores: one LRU per tier over the dense hash ids (prev, next, present)
    T = tcap.shape[0]
    tstate = np.zeros((max(T, 1), 3, H), np.int64)
    tstate[:, 0, :] = -1
    tstate[:, 1, :] = -1
    tends = np.zeros((max(T, 1), 3), np.int64)
    tends[:, 0] = -1
    tends[:, 1] = -1
    return KVStores(cache_slot, np.zeros((nc1, H), np.bool_), np.full((nc1, H), -1, np.int64),
                    np.full((nc1, H), -1, np.int64), lru_ends, tstate, tends, tcap, chain_off, chain_tier)


@jit
def new_batches(cli, n):
    C = cli.kind.shape[0]
    cap = 2
    max_block = 1
    memo_cap = 1
    pp = 1
    for c in range(C):
        if cli.kind[c] == CK_LLM:
            cap = max(cap, int(cli.sch[c, S_MAX_SEQS]) + 1)
            if cli.sch[c, S_SEQS_PER_STEP] > 0.0:
                cap = max(cap, n + 1)   # per-step limit: any number of requests may run
            if cli.sch[c, S_PP_MB] > 0.0:
                # PP micro-batching: up to pp micro-batches of max_batch_size requests each are running
                pp = max(pp, int(cli.prm[c, ST.P_PP]))
                cap = max(cap, int(cli.prm[c, ST.P_PP]) * int(cli.sch[c, S_MAX_SEQS]) + 1)
            max_block = max(max_block, int(cli.sch[c, S_BLOCK]))
            if cli.prm[c, ST.P_MIST_MEMO] > 0.0:
                memo_cap = MEMO_CAP
        elif cli.kind[c] == CK_SLOTS:
            cap = max(cap, int(cli.srv[c, SRV_SLOTS]) + 1)
        else:
            cap = max(cap, int(cli.srv[c, SRV_BATCH_MAX]) + 1)
    bd = np.zeros(ST.N_OUT_MEMO)   # the scratch, then step_fixed's memo table (steptime.FIX_SLOTS)
    bd[ST.X_MEMO] = 1.0         # keep step_fixed's part with its key (steptime.py)
    bd[ST.X_KEY_CLIENT] = -1.0
    for e in range(ST.FIX_SLOTS):
        bd[ST.N_OUT + e * ST.FIX_W] = -1.0   # (no client: empty)
    return Batches(np.full((C, cap), -1, np.int64), np.zeros((C, cap), np.int64), np.zeros((C, cap)),
                   np.zeros((C, cap)), np.zeros((C, cap), np.int64), np.zeros((C, cap)), np.zeros((C, cap)),
                   np.zeros((C, cap)), np.zeros((C, cap), np.int64), np.zeros(max(n, 1), np.int64),
                   np.zeros(max(n, 1)), bd, np.zeros(cap, np.int64), np.zeros(cap, np.int64),
                   np.zeros(max_block, np.int64), np.full((memo_cap, 4), -1, np.int64), np.zeros(memo_cap),
                   np.full((C, pp, 2, (cap if pp > 1 else 0) + 1), -1, np.int64),
                   np.zeros((C, pp, (cap if pp > 1 else 0) + 3)), np.zeros(cap, np.int64), np.zeros(cap, np.int64))
