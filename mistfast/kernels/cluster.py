"""Multi-client, multi-stage serving simulation: one global event loop over LLM clients (each a
scheduler + step-latency model), CPU slot servers, batched retrieval servers, memory tiers and
links with processor-sharing bandwidth (MODEL.md §1.2, §3, §4, §5, §6, §7).

The single-client engine is this loop with one LLM client and one stage per request; the LLM
scheduler semantics are in ``mistfast/ENGINE_SEMANTICS.md``.

Event order at equal times (MODEL.md §1.2): flow completions, then arrivals, then client step
boundaries: the outputs of every step ending at t are released and routed before any client
forms its next batch; clients go in index order, flows in start order. Times are float64 s.

State is struct-of-arrays: ``rq[r, Q_*]`` per request, ``ci[c, I_*]`` / ``cf[c, F_*]`` per client,
``ctr[*]`` loop counters, so helpers share state without per-request objects.
"""
from __future__ import annotations

import numba
import numpy as np

from .._numba import jit, jit_inline, jit_noalloc, njit
from . import steptime as ST
from .engine import (CHUNKED, FINISHED, L_DEC_TOKENS, L_DT, L_KV_USED, L_NDEC, L_NPF, L_PF_TOKENS, L_T,
                     MIXED, N_LOG, PENDING, R_KV_CAPACITY, R_KV_EXHAUSTED, R_MAX_MODEL_LEN, R_NONE,
                     R_TOKEN_BUDGET, REJECTED, RUNNING, S_AGING, S_BATCHING, S_BLOCK, S_CHUNK, S_MAX_MODEL_LEN,
                     S_MAX_SEQS, S_MAX_TOKENS, S_POLICY, S_PREEMPTION, S_PREFIX_BLOCKS, S_STATIC_PAD,
                     S_TOTAL_BLOCKS, S_WATERMARK, SPF, STATIC, FCFS, UNFINISHED, WAITING, _blocks_for,
                     _cache_insert, _cache_lookup, _cache_touch, _lru_push_mru, _lru_unlink)

# ---- client kinds ---------------------------------------------------------------------------
CK_LLM, CK_SLOTS, CK_BATCH = 0, 1, 2
# ---- stage kinds -----------------------------------------------------------------------------
K_LLM, K_PREFILL, K_DECODE, K_ENCODE, K_SERVE, K_RETRIEVE, K_KVFETCH = 0, 1, 2, 3, 4, 5, 6
K_SKIP = 7        # a stage the request does not take (e.g. reasoning steps after the verifier said stop)
STAGE_NAMES = ("llm", "prefill", "decode", "encode", "serve", "retrieve", "kv_fetch", "skipped")
F_TTFT = 1        # the first token emitted in this stage is the request's first token
F_COUNT = 2       # tokens emitted in this stage count as the request's output tokens
# a decode stage with KV backpressure: its client reserves the KV blocks before the transfer starts;
# until then the request holds its blocks on the prefill client (ENGINE_SEMANTICS.md, MODEL.md §4.4)
F_KV_BACKPRESSURE = 4
# ---- routing policies -----------------------------------------------------------------------------
RT_RR, RT_LEAST_PREFILL, RT_LEAST_DECODE, RT_LEAST_KV, RT_JSQ, RT_HEAVY_LIGHT, RT_LEAST_REQUESTS = 0, 1, 2, 3, 4, 5, 6
RT_DRAIN = 7
RT_MIST_JSQ = 8   # MIST's disaggregated join-shortest-queue (docs/mist_parity.md)
# Splitwise overflow: pool_policy[p] = RT_OVERFLOW + policy marks a pool whose overloaded pick goes to
# the overflow (mixed) pool p + 1; pool_thresh[p] is then the prefill overload threshold in tokens
RT_OVERFLOW = 100
ROUTING_NAMES = ("round_robin", "least_prefill_tokens", "least_decodes", "least_kv", "join_shortest_queue",
                 "heavy_light", "least_requests", "least_drain_time", "mist_jsq")
# LLM clients: step-time estimates for the drain-time router, measured once on dummy batches
SRV_DRAIN_PF_S_PER_TOKEN = 0
SRV_DRAIN_DEC_S = 1
# ---- server parameters (CK_SLOTS / CK_BATCH) ---------------------------------------------------------
SRV_SLOTS, SRV_BASE_S, SRV_PER_TOKEN_S, SRV_BATCH_MAX, SRV_FLOP_Q, SRV_BYTES_BATCH = 0, 1, 2, 3, 4, 5
SRV_BYTES_Q, SRV_FLOPS, SRV_BW, SRV_MEM_RES, SRV_OVERLAP = 6, 7, 8, 9, 10
# LLM clients of a mist_jsq pool: the flag (input), and the end of the step in flight (state the
# loop writes: MIST counts a step's load while it runs)
SRV_MIST_JSQ = 11
SRV_MIST_STEP_END = 12
N_SRV = 13
# ---- simulation settings ---------------------------------------------------------------------------
G_HORIZON, G_MAX_SIM, G_DRAIN, G_CONC, G_THINK, G_LOG_CAP, G_HASH_BLOCK = 0, 1, 2, 3, 4, 5, 6
G_DECODE_RUNS = 7  # 1: repeated decode-only steps are advanced in runs (phase 4); 0: one by one (tests)
N_G = 8
# ---- per-client statistics -------------------------------------------------------------------------
CS_BUSY, CS_STEPS, CS_BATCH_TOKENS, CS_BATCH_SEQS, CS_KV_PEAK, CS_KV_BLOCK_S, CS_PREEMPT, CS_RECOMP = range(8)
CS_TC, CS_TM, CS_TN, CS_FLOPS, CS_BYTES, CS_PF_TOKENS, CS_DEC_TOKENS, CS_OUT_OF_RANGE, CS_SERVED = range(8, 17)
CS_RUN_STEPS = 17  # steps advanced inside decode runs (a subset of CS_STEPS)
CS_RUN_LEAVES = 18  # requests that emitted their last token and left inside a decode run
# MIST metric definitions (metrics = "mist"): sum over steps of the decoding requests, of decoding
# requests x step duration, and the latest start of a step at whose end a request finished
CS_DEC_SEQS = 19
CS_DEC_SEQ_S = 20
CS_FINISH_STEP_START = 21
CS_KV_BLOCKED_S = 22  # prefill client: s finished prefills waited for KV room on their decode client
N_CS = 23
# ---- request state columns ---------------------------------------------------------------------------
Q_CUR, Q_PF_TARGET, Q_COMPUTED, Q_GEN, Q_BLOCKS, Q_HIT, Q_FETCHED, Q_PROMPT, Q_OUT = range(9)
Q_IN_STEP, Q_WNEXT, Q_WPREV, Q_INSERTED, Q_PENDING = 9, 10, 11, 12, 13
# KV backpressure: blocks held on the prefill client (and which client), blocks reserved on the decode client
Q_HELD, Q_HELD_C, Q_RESV = 14, 15, 16
N_Q = 17
# ---- client state columns ------------------------------------------------------------------------------
I_WHEAD, I_WTAIL, I_WCOUNT, I_NRUN, I_USED, I_NPF, I_NDEC, I_NREAL, I_PFTOK = range(9)
I_NSTATIC, I_PEND_PF, I_NDEC_C, I_NREQ, I_BPHASE, I_DIRTY, I_RR, I_RR2 = range(9, 17)
# MIST token load (mist_jsq pools): flag, load of the step in flight, load that arrived since it began
I_MIST, I_MIST_STEP, I_MIST_Q = 17, 18, 19
# KV backpressure: the FIFO of requests waiting to reserve KV blocks here (linked through Q_WNEXT)
I_RHEAD, I_RTAIL, I_RCOUNT = 20, 21, 22
N_I = 23
F_NEXT, F_START = 0, 1
N_F = 2
# ---- loop counters -------------------------------------------------------------------------------------
C_NFL, C_REL, C_NA, C_FORM, C_NLOG = 0, 1, 2, 3, 4
N_CTR = 5
MAX_HOPS = 4
LOG_COLS = N_LOG + 1   # step log: engine columns + client index


@jit_inline
def _sift_down(order, keys, i, end):
    while True:
        j = 2 * i + 1
        if j >= end:
            return
        if j + 1 < end and keys[j + 1] > keys[j]:
            j += 1
        if keys[i] >= keys[j]:
            return
        keys[i], keys[j] = keys[j], keys[i]
        order[i], order[j] = order[j], order[i]
        i = j


@jit_noalloc
def _sort_by_key(order, keys, nw):
    """Sort order[:nw] by keys[:nw] ascending, in place (heapsort: no allocation). The waiting-
    order keys are unique (they end in the request id), so any sort gives the same order."""
    for i in range(nw // 2 - 1, -1, -1):
        _sift_down(order, keys, i, nw)
    for end in range(nw - 1, 0, -1):
        keys[0], keys[end] = keys[end], keys[0]
        order[0], order[end] = order[end], order[0]
        _sift_down(order, keys, 0, end)


# ============================================================================ waiting queues
@jit_inline
def _wpush_back(rq, ci, c, r):
    t = ci[c, I_WTAIL]
    rq[r, Q_WPREV] = t
    rq[r, Q_WNEXT] = -1
    if t >= 0:
        rq[t, Q_WNEXT] = r
    else:
        ci[c, I_WHEAD] = r
    ci[c, I_WTAIL] = r
    ci[c, I_WCOUNT] += 1


@jit_inline
def _wpush_front(rq, ci, c, r):
    h = ci[c, I_WHEAD]
    rq[r, Q_WNEXT] = h
    rq[r, Q_WPREV] = -1
    if h >= 0:
        rq[h, Q_WPREV] = r
    else:
        ci[c, I_WTAIL] = r
    ci[c, I_WHEAD] = r
    ci[c, I_WCOUNT] += 1


@jit_inline
def _wremove(rq, ci, c, r):
    p = rq[r, Q_WPREV]
    q = rq[r, Q_WNEXT]
    if p >= 0:
        rq[p, Q_WNEXT] = q
    else:
        ci[c, I_WHEAD] = q
    if q >= 0:
        rq[q, Q_WPREV] = p
    else:
        ci[c, I_WTAIL] = p
    rq[r, Q_WNEXT] = -1
    rq[r, Q_WPREV] = -1
    ci[c, I_WCOUNT] -= 1


# ============================================================================ flows
@jit_noalloc
def _max_min_rates(flist, nfl, fstate, fres, fnres, frate, res_cap, res_left, res_cnt, frozen):
    """Max-min fair rates of the moving flows (progressive filling, MODEL.md §4.3)."""
    for i in range(res_cap.shape[0]):
        res_left[i] = res_cap[i]
        res_cnt[i] = 0
    n_unfrozen = 0
    for k in range(nfl):
        f = flist[k]
        if fstate[f] != 2:
            frozen[f] = True
            continue
        if fnres[f] == 0:
            frate[f] = np.inf
            frozen[f] = True
            continue
        frozen[f] = False
        n_unfrozen += 1
        for h in range(fnres[f]):
            res_cnt[fres[f, h]] += 1
    while n_unfrozen > 0:
        best = -1
        share = np.inf
        for i in range(res_cap.shape[0]):
            if res_cnt[i] > 0:
                s = res_left[i] / res_cnt[i]
                if s < share:
                    share = s
                    best = i
        for k in range(nfl):
            f = flist[k]
            if frozen[f]:
                continue
            uses = False
            for h in range(fnres[f]):
                if fres[f, h] == best:
                    uses = True
            if uses:
                frozen[f] = True
                n_unfrozen -= 1
                frate[f] = share
                for h in range(fnres[f]):
                    j = fres[f, h]
                    res_left[j] -= share
                    res_cnt[j] -= 1


@jit_noalloc
def _retime_flows(t, flist, nfl, fstate, fres, fnres, frate, frem, fdone, res_cap, res_left, res_cnt, frozen):
    _max_min_rates(flist, nfl, fstate, fres, fnres, frate, res_cap, res_left, res_cnt, frozen)
    for k in range(nfl):
        f = flist[k]
        if fstate[f] == 2:
            fdone[f] = t + frem[f] / frate[f] if frate[f] > 0 else np.inf


@jit_noalloc
def _start_flow(f, src, dst, byts, t, route_lat, route_res, route_nres, fstate, ft0, frem, fres, fnres, fdest,
                flist, ctr):
    """Register a transfer: fixed latency first (no bandwidth), then bytes over the route."""
    fstate[f] = 1
    ft0[f] = t + route_lat[src, dst]
    frem[f] = byts
    fnres[f] = route_nres[src, dst]
    for h in range(fnres[f]):
        fres[f, h] = route_res[src, dst, h]
    fdest[f] = dst
    flist[ctr[C_NFL]] = f
    ctr[C_NFL] += 1


# ============================================================================ routing
@jit_inline
def _mist_load(c, t, ci, cli_srv):
    """MIST's token load of client c at time t (Distserve coordinator, tokens_load): the load of
    the step in flight (while it runs) plus what arrived since it began."""
    step = ci[c, I_MIST_STEP] if t < cli_srv[c, SRV_MIST_STEP_END] else 0
    return step + ci[c, I_MIST_Q]


@jit_noalloc
def _choose_mist(p, t, pool_off, pool_cli, ci, cli_srv):
    """MIST's join-shortest-queue: when every client of the pool has the same token load, round
    robin over a list rotated at each such pick; otherwise the least loaded, the first in the
    rotated list on ties."""
    a = pool_off[p]
    m = pool_off[p + 1] - a
    lead = pool_cli[a]
    k = ci[lead, I_RR] % m
    first = _mist_load(pool_cli[a + k], t, ci, cli_srv)
    same = True
    best = pool_cli[a + k]
    bestv = first
    for j in range(1, m):
        c = pool_cli[a + (k + j) % m]
        v = _mist_load(c, t, ci, cli_srv)
        if v != first:
            same = False
        if v < bestv:
            bestv = v
            best = c
    if same:
        ci[lead, I_RR] += 1
        return pool_cli[a + k]
    return best


MEMO_CAP = 1 << 18


@jit_noalloc
def _mist_memo(group, npf, pf_past, pf_new, n_dec, dec_w, dec_s, dec_k, dt, memo_key, memo_dt):
    """MIST's step-time memo with tolerance 0 (Mixed_LLM_Engine.step, platforms.get_chunked_time):
    a decode-only batch is keyed by (decodes, sum of their KV lengths), any other batch by (prefill
    chunk tokens + decode branches, sum of the chunks' past KV and the decodes' KV lengths); a key
    seen before returns the step time stored then. MIST's KV length of a decode is prompt + branches
    x generated = s + w (k + 1). Returns the step time to use."""
    kv = 0
    for j in range(n_dec):
        kv += int(dec_s[j]) + int(dec_w[j]) * (int(dec_k[j]) + 1)
    if npf == 0:
        kind = 0
        tokens = n_dec
    else:
        kind = 1
        tokens = 0
        for i in range(npf):
            tokens += int(pf_new[i])
            kv += int(pf_past[i])
        for j in range(n_dec):
            tokens += int(dec_w[j])
    cap = memo_key.shape[0]
    gid = int(group)
    h = (gid * 1000003 + kind * 7919 + tokens * 2654435761 + kv * 40503) & (cap - 1)
    for _ in range(cap):
        if memo_key[h, 0] < 0:
            memo_key[h, 0] = gid
            memo_key[h, 1] = kind
            memo_key[h, 2] = tokens
            memo_key[h, 3] = kv
            memo_dt[h] = dt
            return dt
        if memo_key[h, 0] == gid and memo_key[h, 1] == kind and memo_key[h, 2] == tokens and memo_key[h, 3] == kv:
            return memo_dt[h]
        h = (h + 1) & (cap - 1)
    return dt  # table full: no memo


@jit_noalloc
def _mist_step_load(c, t_end, npf, st_kind, st_prompt, rq, ci, run, pf_req, ctr, cli_srv):
    """MIST's load of the step just formed (MIST_Engine step: the scheduled prefills' prompts and
    decodes are counted twice, every other waiting or running request once: its prompt while it
    still prefills, else 1). Everything that had arrived is now in the scheduler."""
    form = ctr[C_FORM]
    load = 0
    for i in range(npf):
        r = pf_req[c, i]
        load += 2 * st_prompt[rq[r, Q_CUR]]
    load += 2 * ci[c, I_NREAL]
    for i in range(ci[c, I_NRUN]):
        r = run[c, i]
        if rq[r, Q_IN_STEP] != form:
            load += _mist_weight(r, st_kind, st_prompt, rq)
    r = ci[c, I_WHEAD]
    while r >= 0:
        load += _mist_weight(r, st_kind, st_prompt, rq)
        r = rq[r, Q_WNEXT]
    ci[c, I_MIST_STEP] = load
    ci[c, I_MIST_Q] = 0
    cli_srv[c, SRV_MIST_STEP_END] = t_end


@jit_inline
def _mist_weight(r, st_kind, st_prompt, rq):
    s = rq[r, Q_CUR]
    k = st_kind[s]
    if (k == K_LLM or k == K_PREFILL) and rq[r, Q_COMPUTED] < rq[r, Q_PF_TARGET]:
        return st_prompt[s]
    return 1


@jit_noalloc
def _choose(p, P, pool_off, pool_cli, pool_policy, pool_thresh, ci, cli_srv, t=0.0):
    """Pick a client of pool p for a request with P prompt tokens at time t (MODEL.md §6.3).
    Loads are read at the moment of routing; ties go to the lowest position in the pool."""
    a = pool_off[p]
    z = pool_off[p + 1]
    m = z - a
    pol = pool_policy[p] % RT_OVERFLOW
    if m == 1:
        return pool_cli[a]
    lead = pool_cli[a]  # per-pool round-robin pointers live on the pool's first client
    if pol == RT_MIST_JSQ:
        return _choose_mist(p, t, pool_off, pool_cli, ci, cli_srv)
    if pol == RT_RR:
        c = pool_cli[a + ci[lead, I_RR] % m]
        ci[lead, I_RR] += 1
        return c
    if pol == RT_HEAVY_LIGHT:
        # heavy (prompt > threshold) to even positions, light to odd; round robin within each group
        if P > pool_thresh[p]:
            ne = (m + 1) // 2
            c = pool_cli[a + 2 * (ci[lead, I_RR] % ne)]
            ci[lead, I_RR] += 1
        else:
            no = m // 2
            c = pool_cli[a + 1 + 2 * (ci[lead, I_RR2] % no)]
            ci[lead, I_RR2] += 1
        return c
    best = lead
    bestv = np.inf
    for j in range(a, z):
        c = pool_cli[j]
        if pol == RT_LEAST_PREFILL:
            v = float(ci[c, I_PEND_PF])
        elif pol == RT_LEAST_DECODE:
            v = float(ci[c, I_NDEC_C])
        elif pol == RT_LEAST_KV:
            v = float(ci[c, I_USED])
        elif pol == RT_JSQ:
            v = float(ci[c, I_PEND_PF] + ci[c, I_NDEC_C])
        elif pol == RT_DRAIN:
            # estimated drain time: pending prefill work, then one decode step per running decode
            # batch (MODEL.md §6.3, with step times measured once per client)
            v = ci[c, I_PEND_PF] * cli_srv[c, SRV_DRAIN_PF_S_PER_TOKEN] + ci[c, I_NDEC_C] * cli_srv[c, SRV_DRAIN_DEC_S]
        else:
            v = float(ci[c, I_NREQ])
        if v < bestv:
            bestv = v
            best = c
    return best


@jit_noalloc
def _route(s, P, w, st_kind, st_pool, pool_off, pool_cli, pool_policy, pool_thresh, ci, cli_srv, cli_sch, t):
    """The client of stage s: its pool's pick; with a Splitwise overflow pool, an overloaded pick is
    replaced by the overflow pool's (ENGINE_SEMANTICS.md). A prefill pick is overloaded when requests
    wait there and its pending prefill tokens + P exceed the threshold; a decode pick when it could
    not admit the request now (free blocks - admission need < watermark)."""
    p = st_pool[s]
    c = _choose(p, P, pool_off, pool_cli, pool_policy, pool_thresh, ci, cli_srv, t)
    if pool_policy[p] < RT_OVERFLOW:
        return c
    if st_kind[s] == K_DECODE:
        sch = cli_sch[c]
        need = _blocks_for(P, 1, w, int(sch[S_BLOCK]))
        loaded = int(sch[S_TOTAL_BLOCKS]) - ci[c, I_USED] - need < int(sch[S_WATERMARK])
    else:
        loaded = ci[c, I_WCOUNT] > 0 and ci[c, I_PEND_PF] + P > pool_thresh[p]
    if loaded:
        c = _choose(p + 1, P, pool_off, pool_cli, pool_policy, pool_thresh, ci, cli_srv, t)
    return c


# ============================================================================ requests
@jit_inline
def _emit(r, s, t, st_flags, t_first_tok, t_last_tok, generated):
    fl = st_flags[s]
    if (fl & F_TTFT) and np.isnan(t_first_tok[r]):
        t_first_tok[r] = t
    if fl & F_COUNT:
        generated[r] += 1
        t_last_tok[r] = t


@jit_inline
def _release(t, n, g, arrival, ctr):
    """Closed loop: a request that left the system lets the next user submit after think time."""
    if g[G_CONC] > 0 and ctr[C_REL] < n:
        arrival[ctr[C_REL]] = t + g[G_THINK]
        ctr[C_REL] += 1


@jit_noalloc
def _arrive(r, c, t, s, cli_kind, cli_sch, st_kind, st_prompt, st_output, branches, status, reason, t_finish,
            rq, ci):
    """Request r arrives for stage s at client c at time t: checks, then the waiting queue.
    Returns False when it was rejected."""
    sk = st_kind[s]
    P = st_prompt[s]
    if ci[c, I_MIST] > 0:
        # MIST token load: a prompt still to prefill counts its tokens, a decode counts 1
        ci[c, I_MIST_Q] += P if (sk == K_LLM or sk == K_PREFILL) else 1
    O = st_output[s]
    rq[r, Q_PROMPT] = P
    rq[r, Q_OUT] = O
    if cli_kind[c] == 0:
        sch = cli_sch[c]
        w = branches[r]
        b = int(sch[S_BLOCK])
        rej = R_NONE
        if sk != K_DECODE and int(sch[S_BATCHING]) != CHUNKED and P > int(sch[S_MAX_TOKENS]):
            rej = R_TOKEN_BUDGET
        elif P + O > int(sch[S_MAX_MODEL_LEN]):
            rej = R_MAX_MODEL_LEN
        elif _blocks_for(P, O, w, b) > int(sch[S_TOTAL_BLOCKS]):
            rej = R_KV_CAPACITY
        if rej != R_NONE:
            status[r] = REJECTED
            reason[r] = rej
            t_finish[r] = t
            ci[c, I_NREQ] -= 1
            return False
        rq[r, Q_PF_TARGET] = P
        rq[r, Q_HIT] = 0
        if sk == K_DECODE:
            rq[r, Q_COMPUTED] = P   # its KV arrived with it
            rq[r, Q_GEN] = 1        # token 1 was emitted by the prefill client
        else:
            rq[r, Q_COMPUTED] = 0
            rq[r, Q_GEN] = 0
            ci[c, I_PEND_PF] += P
    status[r] = WAITING
    _wpush_back(rq, ci, c, r)
    ci[c, I_DIRTY] = 1
    return True


@jit_noalloc
def _enter_stage(r, s, c_from, t, n, g, cli_kind, cli_sch, pool_off, pool_cli, pool_policy, pool_thresh,
                 st_kind, st_pool, st_prompt, st_output, st_bytes, st_tier, branches,
                 status, reason, t_finish, arrival, st_client, st_t_ready, st_t_arrive, st_t_exit,
                 rq, ci, ctr, route_lat, route_res, route_nres, fstate, ft0, frem, fres, fnres, fdest, flist,
                 hash_off, hash_ids, tstate, tends, tcap, chain_off, chain_tier, cli_srv):
    """Request r becomes ready for stage s at time t, coming from client c_from (-1: its source).
    Late binding: the stage is routed now, then the data moves (immediate arrival, or a flow)."""
    C = cli_kind.shape[0]
    rq[r, Q_CUR] = s
    rq[r, Q_FETCHED] = 0
    st_t_ready[s] = t
    if st_kind[s] == K_KVFETCH:
        # route the stage the KV is for, then read it from the sampled tier; on a miss nothing moves
        # and the next stage recomputes the whole prompt, past tokens included (MODEL.md §4.1)
        s2 = s + 1
        c2 = _route(s2, st_prompt[s2], branches[r], st_kind, st_pool, pool_off, pool_cli, pool_policy, pool_thresh,
                    ci, cli_srv, cli_sch, t)
        st_client[s2] = c2
        ci[c2, I_NREQ] += 1
        st_t_arrive[s] = t
        tier = st_tier[s]
        byts = st_bytes[s]
        rq[r, Q_PENDING] = st_prompt[s]
        if tier <= -2:
            # hash mode: the hits emerge from what the tiers hold (LRU, MODEL.md §4.2); the
            # deepest tier holding a matched block serves the read; st_bytes = KV bytes per token
            m, tier = _tier_lookup(r, -2 - tier, hash_off, hash_ids, tstate, chain_off, chain_tier)
            tok = min(int(g[G_HASH_BLOCK]) * m, st_prompt[s2] - 1)
            rq[r, Q_PENDING] = tok
            byts = tok * st_bytes[s]
            if m == 0 or tok <= 0:
                tier = -1
        if tier >= 0 and byts > 0.0:
            st_client[s] = C + tier
            _start_flow(r, C + tier, c2, byts, t, route_lat, route_res, route_nres, fstate, ft0, frem,
                        fres, fnres, fdest, flist, ctr)
            return
        st_t_exit[s] = t
        st_t_ready[s2] = t
        st_t_arrive[s2] = t
        rq[r, Q_CUR] = s2
        if not _arrive(r, c2, t, s2, cli_kind, cli_sch, st_kind, st_prompt, st_output, branches, status, reason,
                       t_finish, rq, ci):
            _release(t, n, g, arrival, ctr)
        return
    c2 = st_client[s]
    if c2 < 0:
        c2 = _route(s, st_prompt[s], branches[r], st_kind, st_pool, pool_off, pool_cli, pool_policy, pool_thresh, ci,
                    cli_srv, cli_sch, t)
        st_client[s] = c2
        s2 = s + 1  # (a decode stage always directly follows its prefill stage)
        if (pool_policy[st_pool[s]] == RT_MIST_JSQ and st_kind[s] == K_PREFILL and s2 < st_client.shape[0]
                and st_kind[s2] == K_DECODE and st_client[s2] < 0 and pool_policy[st_pool[s2]] == RT_MIST_JSQ):
            # MIST picks the decode client together with the prefill client, on the loads of now
            st_client[s2] = _choose(st_pool[s2], st_prompt[s2], pool_off, pool_cli, pool_policy, pool_thresh,
                                    ci, cli_srv, t)
    ci[c2, I_NREQ] += 1
    if c_from < 0 or c_from == c2 or st_bytes[s] <= 0.0:
        st_t_arrive[s] = t
        if not _arrive(r, c2, t, s, cli_kind, cli_sch, st_kind, st_prompt, st_output, branches, status, reason,
                       t_finish, rq, ci):
            _release(t, n, g, arrival, ctr)
        return
    status[r] = WAITING  # in transfer
    _start_flow(r, c_from, c2, st_bytes[s], t, route_lat, route_res, route_nres, fstate, ft0, frem, fres, fnres,
                fdest, flist, ctr)


@jit_inline
def _next_stage(r, s, st_off, st_kind, st_output):
    """The stage r takes after stage s (skipped stages passed over); st_off[r + 1] if none.
    A decode stage with nothing left to generate (output <= 1: the prefill client emitted the only
    token) is passed over too: the request leaves from the prefill client, no KV moves."""
    nxt = s + 1
    while nxt < st_off[r + 1] and (st_kind[nxt] == K_SKIP or (st_kind[nxt] == K_DECODE and st_output[nxt] <= 1)):
        nxt += 1
    return nxt


@jit_noalloc
def _leave_stage(r, c, t, n, g, cli_kind, cli_sch, pool_off, pool_cli, pool_policy, pool_thresh,
                 st_off, st_kind, st_pool, st_prompt, st_output, st_bytes, st_tier, branches,
                 status, reason, t_finish, arrival, st_client, st_t_ready, st_t_arrive, st_t_exit,
                 rq, ci, ctr, route_lat, route_res, route_nres, fstate, ft0, frem, fres, fnres, fdest, flist,
                 hash_off, hash_ids, tstate, tends, tcap, chain_off, chain_tier, cli_srv):
    """Request r finished its stage at client c at time t: it finishes, or enters the next stage."""
    s = rq[r, Q_CUR]
    st_t_exit[s] = t
    ci[c, I_NREQ] -= 1
    nxt = _next_stage(r, s, st_off, st_kind, st_output)
    if nxt >= st_off[r + 1]:
        status[r] = FINISHED
        t_finish[r] = t
        _release(t, n, g, arrival, ctr)
        return
    status[r] = WAITING
    _enter_stage(r, nxt, c, t, n, g, cli_kind, cli_sch, pool_off, pool_cli, pool_policy, pool_thresh,
                 st_kind, st_pool, st_prompt, st_output, st_bytes, st_tier, branches,
                 status, reason, t_finish, arrival, st_client, st_t_ready, st_t_arrive, st_t_exit,
                 rq, ci, ctr, route_lat, route_res, route_nres, fstate, ft0, frem, fres, fnres, fdest, flist,
                 hash_off, hash_ids, tstate, tends, tcap, chain_off, chain_tier, cli_srv)


# ============================================================================ KV stores (hash mode)
@jit_noalloc
def _tier_lookup(r, ch, hash_off, hash_ids, tstate, chain_off, chain_tier):
    """Leading blocks of r found in the chain's tiers, and the deepest tier among them."""
    m = 0
    deepest = -1
    depth = -1
    for j in range(hash_off[r], hash_off[r + 1]):
        h = hash_ids[j]
        found = -1
        for q in range(chain_off[ch], chain_off[ch + 1]):
            if tstate[chain_tier[q], 2, h] != 0:
                found = q - chain_off[ch]
                break
        if found < 0:
            break
        m += 1
        if found > depth:
            depth = found
            deepest = chain_tier[chain_off[ch] + found]
    return m, deepest


@jit_noalloc
def _tier_insert(r, nblocks, ch, hash_off, hash_ids, tstate, tends, tcap, chain_off, chain_tier):
    """Write r's first nblocks full blocks to the chain's first tier (hits are promoted there);
    each tier is an LRU whose evictions move down the chain and fall off the last tier."""
    a = chain_off[ch]
    z = chain_off[ch + 1]
    nb = min(nblocks, hash_off[r + 1] - hash_off[r])
    for j in range(hash_off[r], hash_off[r] + nb):
        h = hash_ids[j]
        for q in range(a, z):
            k = chain_tier[q]
            if tstate[k, 2, h] != 0:
                _lru_unlink(tstate[k, 0], tstate[k, 1], tends[k], h)
                tstate[k, 2, h] = 0
                tends[k, 2] -= 1
                break
        cur = h
        for q in range(a, z):
            k = chain_tier[q]
            victim = -1
            if tends[k, 2] >= tcap[k]:
                victim = tends[k, 0]
                _lru_unlink(tstate[k, 0], tstate[k, 1], tends[k], victim)
                tstate[k, 2, victim] = 0
                tends[k, 2] -= 1
            if tcap[k] > 0:
                _lru_push_mru(tstate[k, 0], tstate[k, 1], tends[k], cur)
                tstate[k, 2, cur] = 1
                tends[k, 2] += 1
            else:
                victim = cur
            if victim < 0:
                break
            cur = victim


# ============================================================================ KV backpressure (P/D)
@jit_inline
def _holds_kv(r, s, st_off, st_kind, st_output, st_flags):
    """True when request r, whose prefill stage s just ended, keeps its KV blocks on the prefill
    client: its next stage is a decode stage with KV backpressure (MODEL.md §4.4)."""
    if st_kind[s] != K_PREFILL:
        return False
    nxt = _next_stage(r, s, st_off, st_kind, st_output)
    return nxt < st_off[r + 1] and st_kind[nxt] == K_DECODE and (st_flags[nxt] & F_KV_BACKPRESSURE) != 0


@jit_inline
def _free_held(r, rq, ci):
    """The KV r held on its prefill client has left it (transfer done): the blocks are free there."""
    if rq[r, Q_HELD] > 0:
        hc = rq[r, Q_HELD_C]
        ci[hc, I_USED] -= rq[r, Q_HELD]
        rq[r, Q_HELD] = 0
        ci[hc, I_DIRTY] = 1


@jit_inline
def _reserved_first(r, c, rq, ci):
    """A request whose blocks are reserved goes to the front of the waiting queue: it holds its KV
    room already, so no request that does not fit may stop the scan before it."""
    _wremove(rq, ci, c, r)
    _wpush_front(rq, ci, c, r)


@jit_noalloc
def _bp_leave(r, c, t, n, g, cli_kind, cli_sch, pool_off, pool_cli, pool_policy, pool_thresh, st_off, st_kind,
              st_pool, st_prompt, st_output, branches, status, reason, t_finish, arrival, st_client, st_t_ready,
              st_t_arrive, st_t_exit, rq, ci, ctr, cli_srv):
    """Request r ended its prefill stage at client c at time t and keeps its KV blocks there: the
    decode stage is routed now (late binding, as without backpressure), checked as an arrival
    would be, and r joins the decode client's reservation queue (FIFO)."""
    s = rq[r, Q_CUR]
    st_t_exit[s] = t
    ci[c, I_NREQ] -= 1
    rq[r, Q_HELD] = rq[r, Q_BLOCKS]
    rq[r, Q_HELD_C] = c
    rq[r, Q_BLOCKS] = 0
    nxt = _next_stage(r, s, st_off, st_kind, st_output)
    rq[r, Q_CUR] = nxt
    rq[r, Q_FETCHED] = 0
    st_t_ready[nxt] = t
    status[r] = WAITING
    c2 = st_client[nxt]
    if c2 < 0:
        c2 = _route(nxt, st_prompt[nxt], branches[r], st_kind, st_pool, pool_off, pool_cli, pool_policy, pool_thresh,
                    ci, cli_srv, cli_sch, t)
        st_client[nxt] = c2
    ci[c2, I_NREQ] += 1
    if c2 == c:
        # decoded where it was prefilled: the KV stays in place, nothing to reserve
        _free_held(r, rq, ci)
        st_t_arrive[nxt] = t
        if not _arrive(r, c2, t, nxt, cli_kind, cli_sch, st_kind, st_prompt, st_output, branches, status, reason,
                       t_finish, rq, ci):
            _release(t, n, g, arrival, ctr)
        return
    sch = cli_sch[c2]
    P = st_prompt[nxt]
    O = st_output[nxt]
    rej = R_NONE
    if P + O > int(sch[S_MAX_MODEL_LEN]):
        rej = R_MAX_MODEL_LEN
    elif _blocks_for(P, O, branches[r], int(sch[S_BLOCK])) > int(sch[S_TOTAL_BLOCKS]):
        rej = R_KV_CAPACITY
    if rej != R_NONE:
        _free_held(r, rq, ci)
        status[r] = REJECTED
        reason[r] = rej
        t_finish[r] = t
        ci[c2, I_NREQ] -= 1
        _release(t, n, g, arrival, ctr)
        return
    rq[r, Q_WNEXT] = -1
    if ci[c2, I_RCOUNT] == 0:
        ci[c2, I_RHEAD] = r
    else:
        rq[ci[c2, I_RTAIL], Q_WNEXT] = r
    ci[c2, I_RTAIL] = r
    ci[c2, I_RCOUNT] += 1


@jit_noalloc
def _bp_reserve(c, t, n, g, cli_kind, cli_sch, st_kind, st_prompt, st_output, st_bytes, branches, status, reason,
                t_finish, arrival, st_t_ready, st_t_arrive, rq, ci, ctr, cstats, route_lat, route_res, route_nres,
                fstate, ft0, frem, fres, fnres, fdest, flist):
    """Decode client c reserves KV blocks for the head of its reservation queue while the admission
    rule holds (free - need >= watermark; strict FIFO); each reserved request's KV transfer starts."""
    sch = cli_sch[c]
    b = int(sch[S_BLOCK])
    total = int(sch[S_TOTAL_BLOCKS])
    wm = int(sch[S_WATERMARK])
    while ci[c, I_RCOUNT] > 0:
        r = ci[c, I_RHEAD]
        s = rq[r, Q_CUR]
        need = _blocks_for(st_prompt[s], 1, branches[r], b)
        fits = total - ci[c, I_USED] - need >= wm
        if not fits and ci[c, I_USED] > 0:
            break
        ci[c, I_RHEAD] = rq[r, Q_WNEXT]
        rq[r, Q_WNEXT] = -1
        ci[c, I_RCOUNT] -= 1
        if not fits:
            # nothing is held or reserved here and it still does not fit: it never will
            _free_held(r, rq, ci)
            status[r] = REJECTED
            reason[r] = R_KV_CAPACITY
            t_finish[r] = t
            ci[c, I_NREQ] -= 1
            _release(t, n, g, arrival, ctr)
            continue
        ci[c, I_USED] += need
        rq[r, Q_RESV] = need
        hc = rq[r, Q_HELD_C]
        cstats[hc, CS_KV_BLOCKED_S] += t - st_t_ready[s]
        if st_bytes[s] <= 0.0:
            _free_held(r, rq, ci)
            st_t_arrive[s] = t
            _arrive(r, c, t, s, cli_kind, cli_sch, st_kind, st_prompt, st_output, branches, status, reason,
                    t_finish, rq, ci)
            _reserved_first(r, c, rq, ci)
        else:
            _start_flow(r, hc, c, st_bytes[s], t, route_lat, route_res, route_nres, fstate, ft0, frem, fres, fnres,
                        fdest, flist, ctr)


# ============================================================================ LLM batch formation
@jit_inline
def _preempt(v, c, rq, ci, run, status, preempts, cstats, w_of):
    """Recompute preemption (vLLM): free v's blocks, back to the front of waiting."""
    if rq[v, Q_COMPUTED] >= rq[v, Q_PF_TARGET]:
        ci[c, I_NDEC_C] -= 1
    ci[c, I_USED] -= rq[v, Q_BLOCKS]
    ci[c, I_PEND_PF] -= rq[v, Q_PF_TARGET] - rq[v, Q_COMPUTED]
    rq[v, Q_BLOCKS] = 0
    status[v] = WAITING
    rq[v, Q_PF_TARGET] = rq[v, Q_PROMPT] + w_of * rq[v, Q_GEN]
    rq[v, Q_COMPUTED] = 0
    rq[v, Q_HIT] = 0
    rq[v, Q_FETCHED] = 0
    ci[c, I_PEND_PF] += rq[v, Q_PF_TARGET]
    preempts[v] += 1
    cstats[c, CS_PREEMPT] += 1.0
    cstats[c, CS_RECOMP] += rq[v, Q_PF_TARGET]
    _wpush_front(rq, ci, c, v)


@jit_inline
def _add_decode(r, c, form, sch, rq, ci, run, status, preempts, cstats, branches, dec_req, dec_w, dec_s, dec_k):
    """Grow r's KV for this decode (preempting the newest others if needed) and add it.
    Returns 1 added, 0 skipped, -1 r itself was preempted; bit 2 set when anyone was preempted."""
    w = branches[r]
    b = int(sch[S_BLOCK])
    total = int(sch[S_TOTAL_BLOCKS])
    need = _blocks_for(rq[r, Q_PROMPT] - rq[r, Q_HIT], rq[r, Q_GEN], w, b) - rq[r, Q_BLOCKS]
    pre = 0
    while need > total - ci[c, I_USED]:
        if sch[S_PREEMPTION] <= 0.0:
            return 0
        victim = -1
        for jj in range(ci[c, I_NRUN] - 1, -1, -1):
            v = run[c, jj]
            if v != r and status[v] == RUNNING and rq[v, Q_IN_STEP] != form:
                victim = v
                break
        if victim < 0:
            _preempt(r, c, rq, ci, run, status, preempts, cstats, w)
            return -1
        _preempt(victim, c, rq, ci, run, status, preempts, cstats, branches[victim])
        pre = 2
    if need > 0:
        ci[c, I_USED] += need
        rq[r, Q_BLOCKS] += need
    rq[r, Q_IN_STEP] = form
    k = ci[c, I_NDEC]
    dec_req[c, k] = r
    dec_w[c, k] = w
    if w == 1:
        dec_s[c, k] = 0.0
        dec_k[c, k] = rq[r, Q_PROMPT] + rq[r, Q_GEN] - 1
    else:
        dec_s[c, k] = rq[r, Q_PROMPT]
        dec_k[c, k] = rq[r, Q_GEN] - 1
    ci[c, I_NDEC] = k + 1
    return 1 | pre


@jit_inline
def _compact_running(c, ci, run, status):
    k = 0
    for ii in range(ci[c, I_NRUN]):
        r = run[c, ii]
        if status[r] == RUNNING:
            run[c, k] = r
            k += 1
    ci[c, I_NRUN] = k


@jit_noalloc
def _form_batch(c, t, sch, rq, ci, run, status, reason, arrival, t_finish, preempts, hit_first, branches,
                order, keys, pf_req, pf_past, pf_new, dec_req, dec_w, dec_s, dec_k, static_batch, cstats,
                hash_off, hash_ids, cache_slot, in_cache, lru_prev, lru_next, lru_ends, hb, ctr):
    """One batch for LLM client c at time t (ENGINE_SEMANTICS.md). Returns
    1: a batch was formed; 2: a request was aborted/rejected (it left; form again);
    3: requests were preempted and the batch is empty (form again); 4: nothing to run."""
    ctr[C_FORM] += 1
    form = ctr[C_FORM]
    batching = int(sch[S_BATCHING])
    policy = int(sch[S_POLICY])
    max_seq = int(sch[S_MAX_SEQS])
    b = int(sch[S_BLOCK])
    total = int(sch[S_TOTAL_BLOCKS])
    watermark = int(sch[S_WATERMARK])
    budget = int(sch[S_CHUNK]) if batching == CHUNKED else int(sch[S_MAX_TOKENS])
    slot = cache_slot[c]
    ci[c, I_NPF] = 0
    ci[c, I_NDEC] = 0
    ci[c, I_PFTOK] = 0
    preempted = False
    npf = 0
    nw = 0
    sorted_order = False
    # CHUNKED places the running decodes (then partial prefills) before admissions; the other
    # strategies admit whole prompts first and add decodes after (MODEL.md §5.2)
    for part in range(2):
        decode_part = (part == 0) == (batching == CHUNKED)
        if decode_part:
            do_dec = batching == CHUNKED or batching == MIXED or npf == 0
            if do_dec:
                total_b = total
                for ii in range(ci[c, I_NRUN]):
                    r = run[c, ii]
                    if status[r] != RUNNING or rq[r, Q_COMPUTED] < rq[r, Q_PF_TARGET] or rq[r, Q_GEN] < 1:
                        continue
                    if rq[r, Q_IN_STEP] == form:
                        continue
                    w = branches[r]
                    if (batching == CHUNKED or batching == MIXED) and budget < w:
                        break
                    need = _blocks_for(rq[r, Q_PROMPT] - rq[r, Q_HIT], rq[r, Q_GEN], w, b) - rq[r, Q_BLOCKS]
                    if need <= total_b - ci[c, I_USED]:
                        # fast path, written out here: a helper call per decode costs array
                        # reference counting on every token
                        if need > 0:
                            ci[c, I_USED] += need
                            rq[r, Q_BLOCKS] += need
                        rq[r, Q_IN_STEP] = form
                        k = ci[c, I_NDEC]
                        dec_req[c, k] = r
                        dec_w[c, k] = w
                        if w == 1:
                            dec_s[c, k] = 0.0
                            dec_k[c, k] = rq[r, Q_PROMPT] + rq[r, Q_GEN] - 1
                        else:
                            dec_s[c, k] = rq[r, Q_PROMPT]
                            dec_k[c, k] = rq[r, Q_GEN] - 1
                        ci[c, I_NDEC] = k + 1
                        budget -= w
                        continue
                    res = _add_decode(r, c, form, sch, rq, ci, run, status, preempts, cstats, branches,
                                      dec_req, dec_w, dec_s, dec_k)
                    if res & 2 or res < 0:
                        preempted = True
                    if res & 1 and res > 0:
                        budget -= w
                if preempted:
                    _compact_running(c, ci, run, status)  # victims may be re-admitted below
            if batching == CHUNKED:
                for ii in range(ci[c, I_NRUN]):
                    if budget <= 0:
                        break
                    r = run[c, ii]
                    if status[r] != RUNNING or rq[r, Q_COMPUTED] >= rq[r, Q_PF_TARGET]:
                        continue
                    cc = rq[r, Q_PF_TARGET] - rq[r, Q_COMPUTED]
                    if cc > budget:
                        cc = budget
                    pf_req[c, npf] = r
                    pf_past[c, npf] = rq[r, Q_COMPUTED]
                    pf_new[c, npf] = cc
                    rq[r, Q_IN_STEP] = form
                    npf += 1
                    budget -= cc
                    ci[c, I_PFTOK] += cc
            continue
        # ---- waiting order (FCFS = queue order; SPF / LWL sorted, with aging) ----------------------------
        nw = ci[c, I_WCOUNT]
        sorted_order = policy != FCFS and nw > 1
        if sorted_order:
            # FCFS walks the queue itself below and stops at the head-of-line block; only the other
            # policies need the whole queue in order
            r = ci[c, I_WHEAD]
            for i in range(nw):
                order[i] = r
                r = rq[r, Q_WNEXT]
            for i in range(nw):
                r = order[i]
                if t - arrival[r] > sch[S_AGING] or rq[r, Q_RESV] > 0:   # (reserved KV: first, as if aged)
                    keys[i] = i - 4.0e15
                elif policy == SPF:
                    keys[i] = rq[r, Q_PROMPT] * (rq.shape[0] + 1.0) + r
                else:
                    keys[i] = (rq[r, Q_PF_TARGET] - rq[r, Q_COMPUTED] + rq[r, Q_OUT] - rq[r, Q_GEN]) * (rq.shape[0] + 1.0) + r
            _sort_by_key(order, keys, nw)
        # ---- admissions (strict head-of-line) ----------------------------------------------------------------
        admit = not (batching == STATIC and ci[c, I_NRUN] > 0)
        if admit:
            nxt = ci[c, I_WHEAD]
            for i in range(nw):
                if sorted_order:
                    r = order[i]
                else:
                    r = nxt
                    nxt = rq[r, Q_WNEXT]  # read before an admission unlinks r
                if ci[c, I_NRUN] >= max_seq:
                    break
                if batching == CHUNKED and budget <= 0:
                    break
                w = branches[r]
                m = 0
                h = 0
                if rq[r, Q_FETCHED] > 0:
                    h = rq[r, Q_FETCHED]       # KV fetched from a tier: held in this client's blocks
                elif slot >= 0:
                    m, h = _cache_lookup(r, rq[r, Q_PROMPT], hash_off, hash_ids, in_cache[slot], hb)
                cc = rq[r, Q_PF_TARGET] - h
                if rq[r, Q_COMPUTED] >= rq[r, Q_PF_TARGET]:
                    cc = 0                      # decode-only arrival (disaggregated)
                if batching != CHUNKED and cc > budget:
                    break
                cached = h if rq[r, Q_FETCHED] == 0 else 0
                if rq[r, Q_COMPUTED] >= rq[r, Q_PF_TARGET]:
                    need = _blocks_for(rq[r, Q_PROMPT], max(rq[r, Q_GEN], 1), w, b)
                else:
                    need = _blocks_for(rq[r, Q_PROMPT] - cached, rq[r, Q_GEN] + 1, w, b)
                if rq[r, Q_RESV] == 0 and total - ci[c, I_USED] - need < watermark:
                    break  # (KV backpressure: a request with reserved blocks always has room)
                # admit
                _wremove(rq, ci, c, r)
                if m > 0:
                    _cache_touch(r, m, hash_off, hash_ids, lru_prev[slot], lru_next[slot], lru_ends[slot])
                if cc == 0:
                    ci[c, I_NDEC_C] += 1
                else:
                    rq[r, Q_HIT] = cached
                    if hit_first[r] < 0:
                        hit_first[r] = h
                    rq[r, Q_COMPUTED] = h
                    ci[c, I_PEND_PF] -= h
                ci[c, I_USED] += need - rq[r, Q_RESV]
                rq[r, Q_RESV] = 0
                rq[r, Q_BLOCKS] = need
                status[r] = RUNNING
                run[c, ci[c, I_NRUN]] = r
                ci[c, I_NRUN] += 1
                if batching == STATIC:
                    static_batch[c, ci[c, I_NSTATIC]] = r
                    ci[c, I_NSTATIC] += 1
                if cc == 0:
                    # a decode-only arrival (disaggregated): under CHUNKED the decodes were placed
                    # before admissions, so place it now; other strategies add decodes below
                    if batching == CHUNKED and budget >= w:
                        res = _add_decode(r, c, form, sch, rq, ci, run, status, preempts, cstats, branches,
                                          dec_req, dec_w, dec_s, dec_k)
                        if res > 0 and res & 1:
                            budget -= w
                    continue
                if batching == CHUNKED and cc > budget:
                    cc = budget
                pf_req[c, npf] = r
                pf_past[c, npf] = h
                pf_new[c, npf] = cc
                rq[r, Q_IN_STEP] = form
                npf += 1
                budget -= cc
                ci[c, I_PFTOK] += cc
        ci[c, I_NPF] = npf
    ci[c, I_NREAL] = ci[c, I_NDEC]
    if batching == STATIC and sch[S_STATIC_PAD] > 0.0 and npf == 0 and ci[c, I_NDEC] > 0:
        # padded static batching: finished members keep costing a decode slot
        for ii in range(ci[c, I_NSTATIC]):
            r = static_batch[c, ii]
            if status[r] == FINISHED or (status[r] != RUNNING and status[r] != WAITING and status[r] != REJECTED):
                k = ci[c, I_NDEC]
                dec_req[c, k] = -1
                dec_w[c, k] = 1.0
                dec_s[c, k] = 0.0
                dec_k[c, k] = rq[r, Q_PROMPT] + rq[r, Q_GEN] - 1
                ci[c, I_NDEC] = k + 1
    if preempted:
        _compact_running(c, ci, run, status)
    if npf + ci[c, I_NDEC] > 0:
        return 1
    if preempted:
        return 3
    if ci[c, I_NRUN] > 0:
        # only without preemption: nobody can grow; abort the newest to break the deadlock
        r = run[c, ci[c, I_NRUN] - 1]
        ci[c, I_NRUN] -= 1
        if rq[r, Q_COMPUTED] >= rq[r, Q_PF_TARGET]:
            ci[c, I_NDEC_C] -= 1
        ci[c, I_USED] -= rq[r, Q_BLOCKS]
        ci[c, I_PEND_PF] -= rq[r, Q_PF_TARGET] - rq[r, Q_COMPUTED]
        ci[c, I_NREQ] -= 1
        rq[r, Q_BLOCKS] = 0
        status[r] = REJECTED
        reason[r] = R_KV_EXHAUSTED
        t_finish[r] = t
        return 2
    if nw > 0 and ci[c, I_USED] == 0:
        # nothing runs, yet the first request in policy order cannot be admitted: it never will be
        # (watermark, or a recompute target above the token budget). (Blocks in use with nothing
        # running are held or reserved for a KV-backpressure transfer: they will be freed.)
        r = order[0] if sorted_order else ci[c, I_WHEAD]
        _wremove(rq, ci, c, r)
        ci[c, I_PEND_PF] -= rq[r, Q_PF_TARGET] - rq[r, Q_COMPUTED]
        ci[c, I_NREQ] -= 1
        status[r] = REJECTED
        if batching != CHUNKED and rq[r, Q_PF_TARGET] > int(sch[S_MAX_TOKENS]):
            reason[r] = R_TOKEN_BUDGET
        else:
            reason[r] = R_KV_CAPACITY
        t_finish[r] = t
        return 2
    return 4


# ============================================================================ decode runs
@jit_inline
def _run_catch_up(r, i, n_tok, n_grow, t_tok, b, rq, st_flags, generated, t_last_tok, run_j1, run_amt):
    """Bring request r (batch entry i of a decode run) up to date: n_tok tokens emitted (the last
    at t_tok) and the KV growth of the run's first n_grow formations; returns its blocks."""
    rq[r, Q_GEN] += n_tok
    if st_flags[rq[r, Q_CUR]] & F_COUNT:
        generated[r] += n_tok
        t_last_tok[r] = t_tok
    blocks = rq[r, Q_BLOCKS]
    if run_amt[i] > 0 and n_grow >= run_j1[i]:
        blocks += run_amt[i] * ((n_grow - run_j1[i]) // b + 1)
    return blocks


@jit_noalloc
def _decode_run(c, t_other, horizon, max_sim, drain, log_cap, closed, prm, sch, rq, ci, cf, arrival, run, dec_req,
                dec_w, dec_s, dec_k, st_off, st_kind, st_output, st_flags, status, t_finish, st_t_exit, generated, t_last_tok,
                cstats, steplog, ctr, bd, run_j1, run_amt, ring):
    """Advance LLM client c through the decode-only steps that repeat its batch.

    Called right after c formed a decode-only batch holding every running request. Until the next
    outside event (t_other: an arrival, a transfer, another client's step), the horizon, a KV growth
    that would not fit (preemption) or a change in the waiting order, the loop would apply this
    step and form the same batch again with every context one token longer, less the requests
    that emitted their last token (those leave; with nobody waiting nothing else changes). Those
    iterations are done here with O(1) work per step: the step time comes from the same
    step_fixed/step_finish pair as step_time (only the attention sums change), KV growth from a ring
    of per-step block needs (a request grows every b tokens), and the per-request updates are
    applied when a request leaves or at the end. The results are bit-identical to stepping one by
    one (ENGINE_SEMANTICS.md; tests/test_engine.py checks the engine against its reference twin)."""
    if ci[c, I_MIST] > 0 or prm[ST.P_MIST_MEMO] > 0.0:
        return  # MIST token loads / the MIST memo are taken at every formation: ordinary steps
    n_dec = ci[c, I_NDEC]
    win = prm[ST.P_N_WIN] > 0.0
    if win and not ST.window_run_ok(prm, dec_k, n_dec):
        return  # windowed attention that still changes from step to step: step by step
    batching = int(sch[S_BATCHING])
    b = int(sch[S_BLOCK])
    total = int(sch[S_TOTAL_BLOCKS])
    # ---- would the next formation admit someone? (strict head-of-line scan, ENGINE_SEMANTICS.md)
    # Free blocks only shrink during the run and the sequence/token budgets stay as they were, so a
    # scan that stopped at a request that did not fit stops there again, unless the waiting order
    # changes: under SPF/LWL a request that reaches its aging time moves to the front.
    w_sum = 0
    for i in range(n_dec):
        w_sum += int(dec_w[i])
    nw = ci[c, I_WCOUNT]
    t_age = np.inf     # arrival time of the oldest waiting request not yet aged (SPF/LWL)
    if nw > 0 and int(sch[S_POLICY]) != FCFS and ci[c, I_NRUN] < int(sch[S_MAX_SEQS]) and not (
            batching == CHUNKED and int(sch[S_CHUNK]) - w_sum <= 0):
        r = ci[c, I_WHEAD]
        t0 = cf[c, F_START]
        while r >= 0:
            if not (t0 - arrival[r] > sch[S_AGING]) and arrival[r] < t_age:
                t_age = arrival[r]
            r = rq[r, Q_WNEXT]
    # A request emitting its last token leaves; the run goes on without it only if its blocks and
    # its sequence slot cannot admit anybody (nobody waits), it leaves the system (last stage: no
    # routing, no transfer), no closed-loop user is released by it, and others remain. STATIC
    # batches end as a whole instead.
    through_finish = nw == 0 and not closed and batching != STATIC
    # ---- per request: tokens left, first KV growth, growth ring ----------------------------------
    big = np.iinfo(np.int64).max
    left = big
    j_irregular = big
    a_ctx = 0
    a_read = 0
    shared_once = prm[ST.P_SHARED_ONCE] > 0.0
    genz = prm[ST.P_GENZ] > 0.0
    for j in range(b):
        ring[j] = 0
    for i in range(n_dec):
        r = dec_req[i]
        w = int(dec_w[i])
        s = int(dec_s[i])
        k = int(dec_k[i])
        a_ctx += w * (s + k + 1)
        a_read += (s if shared_once else s * w) + w * (k + 1)
        g0 = rq[r, Q_GEN]
        if rq[r, Q_OUT] - g0 < left:
            left = rq[r, Q_OUT] - g0
        if genz and (ST.genz_decode_compute_bound(prm, w, s, k)
                     or ST.genz_decode_compute_bound(prm, w, s, k + rq[r, Q_OUT] - g0)):
            j_irregular = 1  # GenZ compat sums memory-bound decodes only: ordinary steps
        pu = rq[r, Q_PROMPT] - rq[r, Q_HIT]
        b0 = rq[r, Q_BLOCKS]
        # the formation j steps ahead sees g0 + j tokens and needs _blocks_for(pu, g0 + j) blocks;
        # j1 = first j needing more than b0; from then on the request grows every b steps by w
        if w == 1:
            j1 = b0 * b - pu - g0 + 1
            amt = 1
        else:
            base = (pu + b - 1) // b
            q1 = (b0 - base) // w + 1
            j1 = (q1 - 1) * b - g0 + 1
            amt = base + w * q1 - b0
        run_j1[i] = j1
        run_amt[i] = amt
        if j1 <= b and amt == w:
            ring[j1 % b] += amt
        else:
            # more blocks held than the context needs: no admission rule allocates that today,
            # but should one, the run stops before this request's first growth (ordinary step)
            run_amt[i] = 0
            if j1 < j_irregular:
                j_irregular = j1
    if left < 1:
        return  # a request with no token left (e.g. a 1-token output after a remote prefill) leaves at the ordinary step
    # ---- the run ----------------------------------------------------------------------------
    w_f = float(w_sum)
    ST.step_fixed(prm, w_f, w_f, 0.0, bd)  # as step_time does for this batch: T = R = w_sum, t_pf = 0
    if win:
        ST.add_window_attention_full(prm, w_sum, bd)
    used = ci[c, I_USED]
    te = cf[c, F_NEXT]
    t_start = cf[c, F_START]
    J = 0
    while True:
        j = J + 1
        # iteration j: at te the step in flight ends and the batch is formed again; anything else
        # happening at or before te ends the run
        if not (te < t_other) or te > max_sim or (not drain and te >= horizon):
            break
        if j >= j_irregular or te - t_age > sch[S_AGING]:
            break
        if j >= left:
            # requests emit their last token at te
            if not through_finish:
                break
            n_left = 0
            stay = True
            for i in range(n_dec):
                r = dec_req[i]
                if rq[r, Q_OUT] - rq[r, Q_GEN] == j:
                    n_left += 1
                    if _next_stage(r, rq[r, Q_CUR], st_off, st_kind, st_output) < st_off[r + 1]:
                        stay = False  # a later stage follows: routing and transfers (ordinary step)
            if not stay or n_left == n_dec:
                break
            # they leave at te (ENGINE_SEMANTICS.md step 4), in running order, before the formation
            a_ctx += w_sum
            a_read += w_sum
            k2 = 0
            for i in range(n_dec):
                r = dec_req[i]
                w = int(dec_w[i])
                if rq[r, Q_OUT] - rq[r, Q_GEN] != j:
                    dec_req[k2] = r
                    dec_w[k2] = dec_w[i]
                    dec_s[k2] = dec_s[i]
                    dec_k[k2] = dec_k[i]
                    run_j1[k2] = run_j1[i]
                    run_amt[k2] = run_amt[i]
                    run[k2] = r
                    k2 += 1
                    continue
                s = int(dec_s[i])
                kj = int(dec_k[i]) + j      # its context at this formation, had it stayed
                a_ctx -= w * (s + kj + 1)
                a_read -= (s if shared_once else s * w) + w * (kj + 1)
                w_sum -= w
                if run_amt[i] > 0:
                    ring[run_j1[i] % b] -= run_amt[i]
                # j tokens (the last one now), the growth of formations 1 .. j - 1
                used -= _run_catch_up(r, i, j, j - 1, te, b, rq, st_flags, generated, t_last_tok, run_j1, run_amt)
                rq[r, Q_BLOCKS] = 0
                ci[c, I_NDEC_C] -= 1
                # _leave for the last stage: the request finishes
                st_t_exit[rq[r, Q_CUR]] = te
                ci[c, I_NREQ] -= 1
                status[r] = FINISHED
                t_finish[r] = te
                cstats[c, CS_RUN_LEAVES] += 1.0
                cstats[c, CS_FINISH_STEP_START] = t_start  # the step ending at te started then
            n_dec = k2
            ci[c, I_NRUN] = k2
            ci[c, I_NDEC] = k2
            ci[c, I_NREAL] = k2
            w_f = float(w_sum)
            ST.step_fixed(prm, w_f, w_f, 0.0, bd)
            if win:
                ST.add_window_attention_full(prm, w_sum, bd)
            left = big
            for i in range(n_dec):
                r = dec_req[i]
                if rq[r, Q_OUT] - rq[r, Q_GEN] < left:
                    left = rq[r, Q_OUT] - rq[r, Q_GEN]
        else:
            a_ctx += w_sum
            a_read += w_sum
        grow = ring[j % b]
        if used + grow > total:
            # someone would be preempted: the ordinary step forms this batch. (If requests left
            # just now, that is already done: it applies the step of those that stay.)
            break
        used += grow
        ctr[C_FORM] += 1
        dt = ST.decode_step_finish(prm, w_f, float(a_ctx), float(a_read), n_dec, bd)
        nlog = ctr[C_NLOG]
        if nlog < log_cap:
            steplog[nlog, L_T] = te
            steplog[nlog, L_DT] = dt
            steplog[nlog, L_NPF] = 0
            steplog[nlog, L_PF_TOKENS] = 0
            steplog[nlog, L_NDEC] = n_dec
            steplog[nlog, L_DEC_TOKENS] = w_f
            steplog[nlog, L_KV_USED] = used
            steplog[nlog, N_LOG] = c
            jj = LOG_COLS
            for i in range(n_dec):
                if jj < steplog.shape[1]:
                    steplog[nlog, jj] = dec_req[i]
                    jj += 1
            ctr[C_NLOG] = nlog + 1
        # the same accumulations, in the same order, as the ordinary step
        cstats[c, CS_BUSY] += dt
        cstats[c, CS_STEPS] += 1.0
        cstats[c, CS_RUN_STEPS] += 1.0
        cstats[c, CS_BATCH_TOKENS] += w_f   # (+ 0 prefill tokens)
        cstats[c, CS_BATCH_SEQS] += n_dec
        cstats[c, CS_DEC_TOKENS] += w_f
        cstats[c, CS_DEC_SEQS] += n_dec
        cstats[c, CS_DEC_SEQ_S] += n_dec * dt
        if used > cstats[c, CS_KV_PEAK]:
            cstats[c, CS_KV_PEAK] = used
        cstats[c, CS_KV_BLOCK_S] += used * dt
        cstats[c, CS_TC] += bd[ST.B_TC]
        cstats[c, CS_TM] += bd[ST.B_TM]
        cstats[c, CS_TN] += bd[ST.B_TN]
        cstats[c, CS_FLOPS] += bd[ST.B_FLOPS]
        cstats[c, CS_BYTES] += bd[ST.B_BYTES]
        cstats[c, CS_OUT_OF_RANGE] += bd[ST.B_OUT_OF_RANGE]
        t_start = te
        te = te + dt
        J = j
    ci[c, I_USED] = used  # (requests that left gave their blocks back even when J = 0)
    if J == 0:
        return
    # ---- per-request state after J applied steps and the formation of the one now in flight ----
    form = ctr[C_FORM]
    for i in range(n_dec):
        r = dec_req[i]
        rq[r, Q_BLOCKS] = _run_catch_up(r, i, J, J, t_start, b, rq, st_flags, generated, t_last_tok, run_j1, run_amt)
        rq[r, Q_IN_STEP] = form
        dec_k[i] += J
    cf[c, F_START] = t_start
    cf[c, F_NEXT] = te


# ============================================================================ the event loop
@jit
def simulate_cluster(cli_kind, cli_prm, cli_sch, cli_srv, pool_off, pool_cli, pool_policy, pool_thresh,
                     res_cap, route_lat, route_res, route_nres, g,
                     arrival_in, branches, hash_off, hash_ids, n_hash,
                     st_off, st_kind, st_pool, st_prompt, st_output, st_bytes, st_tier, st_flags,
                     status, reason, arrival, t_first_sched, t_first_tok, t_last_tok, t_finish,
                     generated, preempts, hit_first, computed_pf,
                     st_client, st_t_ready, st_t_arrive, st_t_sched, st_t_exit,
                     cstats, res_bytes, runstats, steplog, tcap, chain_off, chain_tier):
    """Simulate one configuration point; all outputs are filled in place. Returns steps logged.
    tcap[k]: capacity of tier k in hash blocks (hash-mode KV stores); chain_off/chain_tier: CSR
    lists of the tiers a hash-mode kv_fetch stage searches, first to last."""
    n = arrival_in.shape[0]
    C = cli_kind.shape[0]
    R = res_cap.shape[0]
    horizon = g[G_HORIZON]
    max_sim = g[G_MAX_SIM]
    drain = g[G_DRAIN] > 0.0
    log_cap = int(g[G_LOG_CAP])
    hb = int(g[G_HASH_BLOCK])

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
    for s in range(st_kind.shape[0]):
        st_client[s] = -1
        st_t_ready[s] = np.nan
        st_t_arrive[s] = np.nan
        st_t_sched[s] = np.nan
        st_t_exit[s] = np.nan
    cstats[:, :] = 0.0
    res_bytes[:] = 0.0
    runstats[:] = 0.0
    ctr = np.zeros(N_CTR, np.int64)
    ctr[C_REL] = n
    if g[G_CONC] > 0:
        ctr[C_REL] = min(int(g[G_CONC]), n)
        for i in range(n):
            arrival[i] = 0.0 if i < ctr[C_REL] else np.inf

    rq = np.zeros((n, N_Q), np.int64)
    for i in range(n):
        rq[i, Q_IN_STEP] = -1
        rq[i, Q_WNEXT] = -1
        rq[i, Q_WPREV] = -1
    ci = np.zeros((C, N_I), np.int64)
    cf = np.zeros((C, N_F))
    cap = 2
    for c in range(C):
        ci[c, I_WHEAD] = -1
        ci[c, I_WTAIL] = -1
        cf[c, F_NEXT] = np.inf
        if cli_kind[c] == CK_LLM and cli_srv[c, SRV_MIST_JSQ] > 0.0:
            ci[c, I_MIST] = 1
        if cli_kind[c] == CK_LLM:
            cap = max(cap, int(cli_sch[c, S_MAX_SEQS]) + 1)
        elif cli_kind[c] == CK_SLOTS:
            cap = max(cap, int(cli_srv[c, SRV_SLOTS]) + 1)
        else:
            cap = max(cap, int(cli_srv[c, SRV_BATCH_MAX]) + 1)
    run = np.full((C, cap), -1, np.int64)
    pf_req = np.zeros((C, cap), np.int64)
    pf_past = np.zeros((C, cap))
    pf_new = np.zeros((C, cap))
    dec_req = np.zeros((C, cap), np.int64)
    dec_w = np.zeros((C, cap))
    dec_s = np.zeros((C, cap))
    dec_k = np.zeros((C, cap))
    static_batch = np.zeros((C, cap), np.int64)
    bd = np.zeros(ST.N_OUT)
    run_j1 = np.zeros(cap, np.int64)   # decode runs: per batch entry, first growth step and amount
    run_amt = np.zeros(cap, np.int64)
    max_block = 1
    for c in range(C):
        if cli_kind[c] == CK_LLM:
            max_block = max(max_block, int(cli_sch[c, S_BLOCK]))
    ring = np.zeros(max_block, np.int64)
    order = np.zeros(max(n, 1), np.int64)
    keys = np.zeros(max(n, 1))
    cache_slot = np.full(C, -1, np.int64)
    ncache = 0
    for c in range(C):
        if cli_kind[c] == CK_LLM and cli_sch[c, S_PREFIX_BLOCKS] > 0:
            cache_slot[c] = ncache
            ncache += 1
    H = max(n_hash, 1)
    nc1 = max(ncache, 1)
    lru_prev = np.full((nc1, H), -1, np.int64)
    lru_next = np.full((nc1, H), -1, np.int64)
    in_cache = np.zeros((nc1, H), np.bool_)
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
    # flows: slot r = request r's current transfer; slot n + c = client c's retrieval memory read
    NF = n + C
    fstate = np.zeros(NF, np.int64)   # 0 idle, 1 latency phase, 2 moving bytes
    ft0 = np.zeros(NF)
    frem = np.zeros(NF)
    frate = np.zeros(NF)
    fdone = np.full(NF, np.inf)
    fres = np.full((NF, MAX_HOPS), -1, np.int64)
    fnres = np.zeros(NF, np.int64)
    ffrozen = np.zeros(NF, np.bool_)
    fdest = np.zeros(NF, np.int64)
    flist = np.zeros(NF, np.int64)
    res_left = np.zeros(max(R, 1))
    res_cnt = np.zeros(max(R, 1), np.int64)
    # MIST step-time memo (GenZ compat option): open addressing over (group, kind, tokens, KV)
    memo_cap = 1
    for c in range(C):
        if cli_kind[c] == CK_LLM and cli_prm[c, ST.P_MIST_MEMO] > 0.0:
            memo_cap = MEMO_CAP
    memo_key = np.full((memo_cap, 4), -1, np.int64)
    memo_dt = np.zeros(memo_cap)

    return _event_loop(
        n, C, horizon, max_sim, drain, log_cap, hb, g, cli_kind, cli_prm, cli_sch, cli_srv, pool_off, pool_cli,
        pool_policy, pool_thresh, res_cap, route_lat, route_res, route_nres, arrival, branches, hash_off, hash_ids,
        st_off, st_kind, st_pool, st_prompt, st_output, st_bytes, st_tier, st_flags, status, reason, t_first_sched,
        t_first_tok, t_last_tok, t_finish, generated, preempts, hit_first, computed_pf, st_client, st_t_ready,
        st_t_arrive, st_t_sched, st_t_exit, cstats, res_bytes, runstats, steplog, tcap, chain_off, chain_tier, ctr,
        rq, ci, cf, run, pf_req, pf_past, pf_new, dec_req, dec_w, dec_s, dec_k, static_batch, bd, run_j1, run_amt,
        ring, order, keys, cache_slot, in_cache, lru_prev, lru_next, lru_ends, tstate, tends, fstate, ft0, frem,
        frate, fdone, fres, fnres, ffrozen, fdest, flist, res_left, res_cnt, memo_key, memo_dt)


@jit_noalloc
def _event_loop(
        n, C, horizon, max_sim, drain, log_cap, hb, g, cli_kind, cli_prm, cli_sch, cli_srv, pool_off, pool_cli,
        pool_policy, pool_thresh, res_cap, route_lat, route_res, route_nres, arrival, branches, hash_off, hash_ids,
        st_off, st_kind, st_pool, st_prompt, st_output, st_bytes, st_tier, st_flags, status, reason, t_first_sched,
        t_first_tok, t_last_tok, t_finish, generated, preempts, hit_first, computed_pf, st_client, st_t_ready,
        st_t_arrive, st_t_sched, st_t_exit, cstats, res_bytes, runstats, steplog, tcap, chain_off, chain_tier, ctr,
        rq, ci, cf, run, pf_req, pf_past, pf_new, dec_req, dec_w, dec_s, dec_k, static_batch, bd, run_j1, run_amt,
        ring, order, keys, cache_slot, in_cache, lru_prev, lru_next, lru_ends, tstate, tends, fstate, ft0, frem,
        frate, fdone, fres, fnres, ffrozen, fdest, flist, res_left, res_cnt, memo_key, memo_dt):
    """The event loop of simulate_cluster over state it allocated (no allocation here: see jit_noalloc)."""
    bp_on = False   # some decode stage has KV backpressure
    for s in range(st_flags.shape[0]):
        if st_flags[s] & F_KV_BACKPRESSURE:
            bp_on = True
    flow_clock = 0.0
    t = 0.0
    while True:
        # ---- next event time -------------------------------------------------------------------
        t_next = np.inf
        na = ctr[C_NA]
        if na < n and arrival[na] <= horizon:
            t_next = arrival[na]
        for k in range(ctr[C_NFL]):
            f = flist[k]
            x = ft0[f] if fstate[f] == 1 else fdone[f]
            if x < t_next:
                t_next = x
        for c in range(C):
            if cf[c, F_NEXT] < t_next:
                t_next = cf[c, F_NEXT]
        if t_next == np.inf:
            break
        if t_next > t:
            t = t_next
        step_now = False
        for c in range(C):
            if cf[c, F_NEXT] <= t and cli_kind[c] == CK_LLM:
                step_now = True
        if t > max_sim and not step_now:
            break

        # ---- phase 0: transfers ------------------------------------------------------------------
        if ctr[C_NFL] > 0:
            dt_f = t - flow_clock
            for k in range(ctr[C_NFL]):
                f = flist[k]
                if fstate[f] == 2 and fnres[f] > 0 and dt_f > 0.0:
                    moved = min(frate[f] * dt_f, frem[f])
                    frem[f] -= moved
                    for h in range(fnres[f]):
                        res_bytes[fres[f, h]] += moved
            changed = False
            k = 0
            while k < ctr[C_NFL]:
                f = flist[k]
                if fstate[f] == 1 and ft0[f] <= t:
                    fstate[f] = 2
                    changed = True
                    if fnres[f] == 0:
                        fdone[f] = t
                if fstate[f] == 2 and fdone[f] <= t and not (changed and fdone[f] > t):
                    if fdone[f] <= t:
                        # transfer complete
                        fstate[f] = 0
                        fdone[f] = np.inf
                        for j in range(k, ctr[C_NFL] - 1):
                            flist[j] = flist[j + 1]
                        ctr[C_NFL] -= 1
                        changed = True
                        if f < n:
                            r = f
                            c2 = fdest[f]
                            s = rq[r, Q_CUR]
                            fetched_tokens = 0
                            if st_kind[s] == K_KVFETCH:
                                # the KV read ended: the fetch stage ends, the stage it was for begins
                                st_t_exit[s] = t
                                fetched_tokens = rq[r, Q_PENDING]
                                s = s + 1
                                rq[r, Q_CUR] = s
                                st_t_ready[s] = t
                            st_t_arrive[s] = t
                            _free_held(r, rq, ci)   # KV backpressure: the prefill client's copy is gone
                            if _arrive(r, c2, t, s, cli_kind, cli_sch, st_kind, st_prompt, st_output,
                                       branches, status, reason, t_finish, rq, ci):
                                rq[r, Q_FETCHED] = fetched_tokens
                                if rq[r, Q_RESV] > 0:
                                    _reserved_first(r, c2, rq, ci)
                            else:
                                _release(t, n, g, arrival, ctr)
                        else:
                            c2 = f - n
                            ci[c2, I_BPHASE] = 3
                            cf[c2, F_NEXT] = t
                        continue
                k += 1
            flow_clock = t
            if changed:
                _retime_flows(t, flist, ctr[C_NFL], fstate, fres, fnres, frate, frem, fdone, res_cap, res_left,
                              res_cnt, ffrozen)

        # ---- phase 1: arrivals from the workload ---------------------------------------------------------
        if ctr[C_NA] < n and arrival[ctr[C_NA]] <= t:
          _workload_arrivals(t, n, g, horizon, arrival, cli_kind, cli_sch, pool_off, pool_cli, pool_policy,
                             pool_thresh, st_off, st_kind, st_pool, st_prompt, st_output, st_bytes, st_tier, branches,
                             status, reason, t_finish, st_client, st_t_ready, st_t_arrive, st_t_exit, rq, ci, ctr,
                             route_lat, route_res, route_nres, fstate, ft0, frem, fres, fnres, fdest, flist,
                             hash_off, hash_ids, tstate, tends, tcap, chain_off, chain_tier, cli_srv)

        # ---- phase 2: outputs of every step ending now are released and routed ------------------------------
        nfl_before = ctr[C_NFL]
        any_step_end = False
        for c in range(C):
            if cf[c, F_NEXT] > t:
                continue
            kind = cli_kind[c]
            if kind == CK_LLM:
                any_step_end = True
                any_done = False
                cf[c, F_NEXT] = np.inf
                for i in range(ci[c, I_NPF]):
                    r = pf_req[c, i]
                    cc = int(pf_new[c, i])
                    rq[r, Q_COMPUTED] += cc
                    computed_pf[r] += cc
                    ci[c, I_PEND_PF] -= cc
                    if rq[r, Q_COMPUTED] >= rq[r, Q_PF_TARGET]:
                        s = rq[r, Q_CUR]
                        slot = cache_slot[c]
                        if slot >= 0 and rq[r, Q_INSERTED] == 0:
                            _cache_insert(r, rq[r, Q_PROMPT], hash_off, hash_ids, in_cache[slot], lru_prev[slot],
                                          lru_next[slot], lru_ends[slot], int(cli_sch[c, S_PREFIX_BLOCKS]), hb)
                            rq[r, Q_INSERTED] = 1
                        ci[c, I_NDEC_C] += 1
                        if s > st_off[r] and st_kind[s - 1] == K_KVFETCH and st_tier[s - 1] <= -2:
                            # the new prompt blocks are written to the KV store (first tier; LRU
                            # evictions demote down the chain)
                            _tier_insert(r, rq[r, Q_PROMPT] // hb, -2 - st_tier[s - 1], hash_off, hash_ids, tstate,
                                         tends, tcap, chain_off, chain_tier)
                        any_done = True  # (a prefill-only stage ends here; an LLM stage may too)
                        if st_kind[s] != K_ENCODE:
                            rq[r, Q_GEN] += 1
                            _emit(r, s, t, st_flags, t_first_tok, t_last_tok, generated)
                for i in range(ci[c, I_NREAL]):
                    # decodes never carry a first token; written out (no helper call per token)
                    r = dec_req[c, i]
                    rq[r, Q_GEN] += 1
                    if st_flags[rq[r, Q_CUR]] & F_COUNT:
                        generated[r] += 1
                        t_last_tok[r] = t
                    if rq[r, Q_GEN] >= rq[r, Q_OUT]:
                        any_done = True
                k2 = 0
                for ii in range(ci[c, I_NRUN] if any_done else 0):
                    r = run[c, ii]
                    s = rq[r, Q_CUR]
                    sk = st_kind[s]
                    done = False
                    if status[r] == RUNNING:
                        if sk == K_ENCODE or sk == K_PREFILL:
                            done = rq[r, Q_COMPUTED] >= rq[r, Q_PF_TARGET]
                        else:
                            done = rq[r, Q_GEN] >= rq[r, Q_OUT]
                    if done and bp_on and _holds_kv(r, s, st_off, st_kind, st_output, st_flags):
                        ci[c, I_NDEC_C] -= 1
                        _bp_leave(r, c, t, n, g, cli_kind, cli_sch, pool_off, pool_cli, pool_policy, pool_thresh,
                                  st_off, st_kind, st_pool, st_prompt, st_output, branches, status, reason,
                                  t_finish, arrival, st_client, st_t_ready, st_t_arrive, st_t_exit, rq, ci, ctr,
                                  cli_srv)
                    elif done:
                        ci[c, I_USED] -= rq[r, Q_BLOCKS]
                        rq[r, Q_BLOCKS] = 0
                        ci[c, I_NDEC_C] -= 1
                        _leave_stage(r, c, t, n, g, cli_kind, cli_sch, pool_off, pool_cli, pool_policy, pool_thresh,
                                     st_off, st_kind, st_pool, st_prompt, st_output, st_bytes, st_tier, branches,
                                     status, reason, t_finish, arrival, st_client, st_t_ready, st_t_arrive,
                                     st_t_exit, rq, ci, ctr, route_lat, route_res, route_nres, fstate, ft0, frem,
                                     fres, fnres, fdest, flist,
                                     hash_off, hash_ids, tstate, tends, tcap, chain_off, chain_tier, cli_srv)
                        if status[r] == FINISHED and cf[c, F_START] > cstats[c, CS_FINISH_STEP_START]:
                            cstats[c, CS_FINISH_STEP_START] = cf[c, F_START]
                    else:
                        run[c, k2] = r
                        k2 += 1
                if any_done:
                    ci[c, I_NRUN] = k2
                if int(cli_sch[c, S_BATCHING]) == STATIC and ci[c, I_NRUN] == 0:
                    ci[c, I_NSTATIC] = 0
                ci[c, I_NPF] = 0
                ci[c, I_NDEC] = 0
                ci[c, I_NREAL] = 0
                ci[c, I_DIRTY] = 1
            elif kind == CK_SLOTS:
                for j in range(int(cli_srv[c, SRV_SLOTS])):
                    r = run[c, j]
                    if r >= 0 and pf_past[c, j] <= t:
                        run[c, j] = -1
                        cstats[c, CS_SERVED] += 1.0
                        _leave_stage(r, c, t, n, g, cli_kind, cli_sch, pool_off, pool_cli, pool_policy, pool_thresh,
                                     st_off, st_kind, st_pool, st_prompt, st_output, st_bytes, st_tier, branches,
                                     status, reason, t_finish, arrival, st_client, st_t_ready, st_t_arrive,
                                     st_t_exit, rq, ci, ctr, route_lat, route_res, route_nres, fstate, ft0, frem,
                                     fres, fnres, fdest, flist,
                                     hash_off, hash_ids, tstate, tends, tcap, chain_off, chain_tier, cli_srv)
                cf[c, F_NEXT] = np.inf
                ci[c, I_DIRTY] = 1
            else:  # CK_BATCH: retrieval
                if ci[c, I_BPHASE] == 1:
                    # compute phase over: read the index from host memory, a resource shared with
                    # tier reads (processor sharing), unless the memory is private
                    byts = cli_srv[c, SRV_BYTES_BATCH] + ci[c, I_NPF] * cli_srv[c, SRV_BYTES_Q]
                    f = n + c
                    fstate[f] = 2
                    ft0[f] = t
                    frem[f] = byts
                    fres[f, 0] = int(cli_srv[c, SRV_MEM_RES])
                    fnres[f] = 1
                    flist[ctr[C_NFL]] = f
                    ctr[C_NFL] += 1
                    ci[c, I_BPHASE] = 2
                    cf[c, F_NEXT] = np.inf
                    continue
                cstats[c, CS_BUSY] += t - cf[c, F_START]
                cstats[c, CS_STEPS] += 1.0
                cstats[c, CS_BATCH_SEQS] += ci[c, I_NPF]
                nb = ci[c, I_NPF]
                ci[c, I_NPF] = 0
                ci[c, I_BPHASE] = 0
                cf[c, F_NEXT] = np.inf
                ci[c, I_DIRTY] = 1
                for i in range(nb):
                    r = pf_req[c, i]
                    cstats[c, CS_SERVED] += 1.0
                    _leave_stage(r, c, t, n, g, cli_kind, cli_sch, pool_off, pool_cli, pool_policy, pool_thresh,
                                 st_off, st_kind, st_pool, st_prompt, st_output, st_bytes, st_tier, branches,
                                 status, reason, t_finish, arrival, st_client, st_t_ready, st_t_arrive,
                                 st_t_exit, rq, ci, ctr, route_lat, route_res, route_nres, fstate, ft0, frem,
                                 fres, fnres, fdest, flist,
                                 hash_off, hash_ids, tstate, tends, tcap, chain_off, chain_tier, cli_srv)
        if ctr[C_NFL] != nfl_before or ctr[C_NFL] > 0:
            flow_clock = t
            _retime_flows(t, flist, ctr[C_NFL], fstate, fres, fnres, frate, frem, fdone, res_cap, res_left,
                          res_cnt, ffrozen)
        if t > max_sim or (any_step_end and (not drain) and t >= horizon):
            break

        # ---- phase 3: clients start new work -------------------------------------------------------------
        # requests released at this very time (closed loop, zero think time) join first
        if ctr[C_NA] < n and arrival[ctr[C_NA]] <= t:
          _workload_arrivals(t, n, g, horizon, arrival, cli_kind, cli_sch, pool_off, pool_cli, pool_policy,
                             pool_thresh, st_off, st_kind, st_pool, st_prompt, st_output, st_bytes, st_tier, branches,
                             status, reason, t_finish, st_client, st_t_ready, st_t_arrive, st_t_exit, rq, ci, ctr,
                             route_lat, route_res, route_nres, fstate, ft0, frem, fres, fnres, fdest, flist,
                             hash_off, hash_ids, tstate, tends, tcap, chain_off, chain_tier, cli_srv)
        nfl_before = ctr[C_NFL]
        if bp_on:
            # KV backpressure: decode clients reserve blocks for finished prefills (then transfers start)
            for c in range(C):
                if ci[c, I_RCOUNT] > 0:
                    _bp_reserve(c, t, n, g, cli_kind, cli_sch, st_kind, st_prompt, st_output, st_bytes, branches,
                                status, reason, t_finish, arrival, st_t_ready, st_t_arrive, rq, ci, ctr, cstats,
                                route_lat, route_res, route_nres, fstate, ft0, frem, fres, fnres, fdest, flist)
        for c in range(C):
            if ci[c, I_DIRTY] == 0 or cf[c, F_NEXT] < np.inf:
                continue
            ci[c, I_DIRTY] = 0
            kind = cli_kind[c]
            if kind == CK_SLOTS:
                nslots = int(cli_srv[c, SRV_SLOTS])
                nxt = np.inf
                for j in range(nslots):
                    if run[c, j] < 0 and ci[c, I_WCOUNT] > 0:
                        r = ci[c, I_WHEAD]
                        _wremove(rq, ci, c, r)
                        s = rq[r, Q_CUR]
                        svc = cli_srv[c, SRV_BASE_S] + cli_srv[c, SRV_PER_TOKEN_S] * st_prompt[s]
                        run[c, j] = r
                        pf_past[c, j] = t + svc
                        st_t_sched[s] = t
                        if np.isnan(t_first_sched[r]):
                            t_first_sched[r] = t
                        cstats[c, CS_BUSY] += svc
                        status[r] = RUNNING
                    if run[c, j] >= 0 and pf_past[c, j] < nxt:
                        nxt = pf_past[c, j]
                cf[c, F_NEXT] = nxt
                continue
            if kind == CK_BATCH:
                if ci[c, I_BPHASE] != 0 or ci[c, I_WCOUNT] == 0:
                    continue
                nb = 0
                while ci[c, I_WCOUNT] > 0 and nb < int(cli_srv[c, SRV_BATCH_MAX]):
                    r = ci[c, I_WHEAD]
                    _wremove(rq, ci, c, r)
                    pf_req[c, nb] = r
                    nb += 1
                    s = rq[r, Q_CUR]
                    st_t_sched[s] = t
                    if np.isnan(t_first_sched[r]):
                        t_first_sched[r] = t
                    status[r] = RUNNING
                ci[c, I_NPF] = nb
                comp = nb * cli_srv[c, SRV_FLOP_Q] / cli_srv[c, SRV_FLOPS]
                cf[c, F_START] = t
                if cli_srv[c, SRV_MEM_RES] >= 0:
                    ci[c, I_BPHASE] = 1
                    cf[c, F_NEXT] = t + comp
                else:
                    mem = (cli_srv[c, SRV_BYTES_BATCH] + nb * cli_srv[c, SRV_BYTES_Q]) / cli_srv[c, SRV_BW]
                    ci[c, I_BPHASE] = 3
                    cf[c, F_NEXT] = t + (max(comp, mem) if cli_srv[c, SRV_OVERLAP] > 0.0 else comp + mem)
                continue
            # ---- LLM client --------------------------------------------------------------------------
            res = 3
            n_preempt = cstats[c, CS_PREEMPT]
            while res == 2 or res == 3:
                res = _form_batch(c, t, cli_sch[c], rq, ci, run, status, reason, arrival, t_finish, preempts,
                                  hit_first, branches, order, keys, pf_req, pf_past, pf_new, dec_req, dec_w, dec_s,
                                  dec_k, static_batch, cstats, hash_off, hash_ids, cache_slot, in_cache, lru_prev,
                                  lru_next, lru_ends, hb, ctr)
                if res == 2:
                    _release(t, n, g, arrival, ctr)
            if res != 1:
                continue
            if cstats[c, CS_PREEMPT] != n_preempt:
                # victims joined the waiting queue after its scan, so the next formation may admit
                # them: no decode run (phase 4) from this batch
                ci[c, I_DIRTY] = 1
            npf = ci[c, I_NPF]
            nd = 0
            for i in range(npf):
                r = pf_req[c, i]
                if rq[r, Q_COMPUTED] + pf_new[c, i] >= rq[r, Q_PF_TARGET]:
                    nd += 1
            dt = ST.step_time(cli_prm[c], pf_past[c], pf_new[c], npf, float(nd), dec_w[c], dec_s[c], dec_k[c],
                              ci[c, I_NDEC], bd)
            if cli_prm[c, ST.P_MIST_MEMO] > 0.0:
                dt = _mist_memo(cli_prm[c, ST.P_MIST_MEMO], npf, pf_past[c], pf_new[c], ci[c, I_NDEC], dec_w[c],
                                dec_s[c], dec_k[c], dt, memo_key, memo_dt)
            w_tok = 0.0
            for i in range(npf):
                r = pf_req[c, i]
                s = rq[r, Q_CUR]
                if np.isnan(st_t_sched[s]):
                    st_t_sched[s] = t
                if np.isnan(t_first_sched[r]):
                    t_first_sched[r] = t
            for i in range(ci[c, I_NREAL]):
                r = dec_req[c, i]
                s = rq[r, Q_CUR]
                w_tok += dec_w[c, i]
                if np.isnan(st_t_sched[s]):
                    st_t_sched[s] = t
                if np.isnan(t_first_sched[r]):
                    t_first_sched[r] = t
            nlog = ctr[C_NLOG]
            if nlog < log_cap:
                steplog[nlog, L_T] = t
                steplog[nlog, L_DT] = dt
                steplog[nlog, L_NPF] = npf
                steplog[nlog, L_PF_TOKENS] = ci[c, I_PFTOK]
                steplog[nlog, L_NDEC] = ci[c, I_NREAL]
                steplog[nlog, L_DEC_TOKENS] = w_tok
                steplog[nlog, L_KV_USED] = ci[c, I_USED]
                steplog[nlog, N_LOG] = c
                # optional extra columns: ids of the step's prefills, then its decodes (-1 pads)
                j = LOG_COLS
                for i in range(npf):
                    if j < steplog.shape[1]:
                        steplog[nlog, j] = pf_req[c, i]
                        j += 1
                for i in range(ci[c, I_NREAL]):
                    if j < steplog.shape[1]:
                        steplog[nlog, j] = dec_req[c, i]
                        j += 1
                ctr[C_NLOG] = nlog + 1
            cstats[c, CS_BUSY] += dt
            cstats[c, CS_STEPS] += 1.0
            cstats[c, CS_BATCH_TOKENS] += ci[c, I_PFTOK] + w_tok
            cstats[c, CS_BATCH_SEQS] += npf + ci[c, I_NREAL]
            cstats[c, CS_PF_TOKENS] += ci[c, I_PFTOK]
            cstats[c, CS_DEC_TOKENS] += w_tok
            cstats[c, CS_DEC_SEQS] += ci[c, I_NREAL]
            cstats[c, CS_DEC_SEQ_S] += ci[c, I_NREAL] * dt
            if ci[c, I_USED] > cstats[c, CS_KV_PEAK]:
                cstats[c, CS_KV_PEAK] = ci[c, I_USED]
            cstats[c, CS_KV_BLOCK_S] += ci[c, I_USED] * dt
            cstats[c, CS_TC] += bd[ST.B_TC]
            cstats[c, CS_TM] += bd[ST.B_TM]
            cstats[c, CS_TN] += bd[ST.B_TN]
            cstats[c, CS_FLOPS] += bd[ST.B_FLOPS]
            cstats[c, CS_BYTES] += bd[ST.B_BYTES]
            cstats[c, CS_OUT_OF_RANGE] += bd[ST.B_OUT_OF_RANGE]
            cf[c, F_START] = t
            cf[c, F_NEXT] = t + dt
            if ci[c, I_MIST] > 0:
                _mist_step_load(c, t + dt, npf, st_kind, st_prompt, rq, ci, run, pf_req, ctr, cli_srv)
        if ctr[C_NFL] != nfl_before:
            flow_clock = t
            _retime_flows(t, flist, ctr[C_NFL], fstate, fres, fnres, frate, frem, fdone, res_cap, res_left,
                          res_cnt, ffrozen)

        # ---- phase 4: a client that just formed a pure-decode batch of all its running requests runs
        # ahead through the steps that repeat it (no transfers in flight: their byte accounting is
        # per loop iteration)
        if ctr[C_NFL] == 0 and g[G_DECODE_RUNS] > 0.0:
            for c in range(C):
                if cli_kind[c] != CK_LLM or cf[c, F_START] != t or cf[c, F_NEXT] == np.inf or ci[c, I_DIRTY] != 0:
                    continue
                if ci[c, I_NPF] != 0 or ci[c, I_NDEC] != ci[c, I_NREAL] or ci[c, I_NREAL] != ci[c, I_NRUN]:
                    continue
                if ci[c, I_RCOUNT] > 0:
                    continue  # KV backpressure: blocks freed inside a run would be reserved at once

                t_other = np.inf
                if ctr[C_NA] < n and arrival[ctr[C_NA]] <= horizon:
                    t_other = arrival[ctr[C_NA]]
                for c2 in range(C):
                    if c2 != c and cf[c2, F_NEXT] < t_other:
                        t_other = cf[c2, F_NEXT]
                _decode_run(c, t_other, horizon, max_sim, drain, log_cap, g[G_CONC] > 0.0, cli_prm[c], cli_sch[c], rq,
                            ci, cf, arrival, run[c], dec_req[c], dec_w[c], dec_s[c], dec_k[c], st_off, st_kind,
                            st_output, st_flags, status, t_finish, st_t_exit, generated, t_last_tok, cstats, steplog, ctr, bd,
                            run_j1, run_amt, ring)

    # busy time is booked when a step or a slot's service starts; work still in progress when the run
    # stops (cut at max_sim_s, or another client's step end without drain) counts only up to the stop
    for c in range(C):
        if cli_kind[c] == CK_LLM:
            if cf[c, F_NEXT] < np.inf and cf[c, F_NEXT] > t:
                cstats[c, CS_BUSY] -= cf[c, F_NEXT] - t
        elif cli_kind[c] == CK_SLOTS:
            for j in range(int(cli_srv[c, SRV_SLOTS])):
                if run[c, j] >= 0 and pf_past[c, j] > t:
                    cstats[c, CS_BUSY] -= pf_past[c, j] - t

    runstats[0] = t
    for i in range(n):
        if status[i] == WAITING or status[i] == RUNNING:
            status[i] = UNFINISHED
        if arrival[i] == np.inf:
            arrival[i] = np.nan  # closed loop: never released
    return ctr[C_NLOG]


@jit
def simulate_single(prm, sch, g, arrival_in, prompt, output, branches, hash_off, hash_ids, n_hash,
                    status, reason, arrival, t_first_sched, t_first_tok, t_last_tok, t_finish, generated, preempts,
                    hit_first, computed_pf, cstats, runstats, steplog):
    """One LLM client, one stage per request: the single-client engine."""
    n = prompt.shape[0]
    cli_kind = np.zeros(1, np.int64)
    cli_prm = prm.reshape(1, prm.shape[0])
    cli_sch = sch.reshape(1, sch.shape[0])
    cli_srv = np.zeros((1, N_SRV))
    pool_off = np.array([0, 1], np.int64)
    pool_cli = np.zeros(1, np.int64)
    pool_policy = np.zeros(1, np.int64)
    pool_thresh = np.zeros(1)
    res_cap = np.zeros(0)
    route_lat = np.zeros((1, 1))
    route_res = np.full((1, 1, MAX_HOPS), -1, np.int64)
    route_nres = np.zeros((1, 1), np.int64)
    st_off = np.arange(n + 1).astype(np.int64)
    st_kind = np.zeros(n, np.int64)
    st_pool = np.zeros(n, np.int64)
    st_bytes = np.zeros(n)
    st_tier = np.full(n, -1, np.int64)
    st_flags = np.full(n, F_TTFT | F_COUNT, np.int64)
    st_client = np.zeros(n, np.int64)
    st_a = np.zeros(n)
    st_b = np.zeros(n)
    st_c = np.zeros(n)
    st_d = np.zeros(n)
    res_bytes = np.zeros(0)
    return simulate_cluster(cli_kind, cli_prm, cli_sch, cli_srv, pool_off, pool_cli, pool_policy, pool_thresh,
                            res_cap, route_lat, route_res, route_nres, g, arrival_in, branches, hash_off, hash_ids,
                            n_hash, st_off, st_kind, st_pool, prompt, output, st_bytes, st_tier, st_flags,
                            status, reason, arrival, t_first_sched, t_first_tok, t_last_tok, t_finish, generated,
                            preempts, hit_first, computed_pf, st_client, st_a, st_b, st_c, st_d, cstats, res_bytes,
                            runstats, steplog, np.zeros(0, np.int64), np.zeros(1, np.int64), np.zeros(0, np.int64))


@jit_noalloc
def _workload_arrivals(t, n, g, horizon, arrival, cli_kind, cli_sch, pool_off, pool_cli, pool_policy, pool_thresh,
                       st_off, st_kind, st_pool, st_prompt, st_output, st_bytes, st_tier, branches, status, reason,
                       t_finish, st_client, st_t_ready, st_t_arrive, st_t_exit, rq, ci, ctr, route_lat, route_res,
                       route_nres, fstate, ft0, frem, fres, fnres, fdest, flist,
                       hash_off, hash_ids, tstate, tends, tcap, chain_off, chain_tier, cli_srv):
    while ctr[C_NA] < n and arrival[ctr[C_NA]] <= t and arrival[ctr[C_NA]] <= horizon:
        r = ctr[C_NA]
        ctr[C_NA] += 1
        _enter_stage(r, st_off[r], -1, t, n, g, cli_kind, cli_sch, pool_off, pool_cli, pool_policy, pool_thresh,
                     st_kind, st_pool, st_prompt, st_output, st_bytes, st_tier, branches,
                     status, reason, t_finish, arrival, st_client, st_t_ready, st_t_arrive, st_t_exit,
                     rq, ci, ctr, route_lat, route_res, route_nres, fstate, ft0, frem, fres, fnres, fdest, flist,
                     hash_off, hash_ids, tstate, tends, tcap, chain_off, chain_tier, cli_srv)
        st_t_ready[st_off[r]] = arrival[r]


def _simulate_single_points_impl(prm, sch, g, offsets, arrival_in, prompt, output, branches, hash_off, hash_ids,
                                 n_hash, status, reason, arrival, t_first_sched, t_first_tok, t_last_tok, t_finish,
                                 generated, preempts, hit_first, computed_pf, cstats, runstats, steplog):
    """Many single-client points in one call: point q owns requests offsets[q]:offsets[q+1] and the
    hash CSR slice hash_off[offsets[q] + q : offsets[q+1] + q + 1] (absolute offsets)."""
    for q in numba.prange(prm.shape[0]):
        a = offsets[q]
        z = offsets[q + 1]
        simulate_single(prm[q], sch[q], g[q], arrival_in[a:z], prompt[a:z], output[a:z], branches[a:z],
                        hash_off[a + q:z + q + 1], hash_ids, n_hash[q], status[a:z], reason[a:z], arrival[a:z],
                        t_first_sched[a:z], t_first_tok[a:z], t_last_tok[a:z], t_finish[a:z], generated[a:z],
                        preempts[a:z], hit_first[a:z], computed_pf[a:z], cstats[q], runstats[q], steplog[q])


simulate_points = njit(parallel=True, nogil=True)(_simulate_single_points_impl)
simulate_points_serial = njit(parallel=False, nogil=True)(_simulate_single_points_impl)
