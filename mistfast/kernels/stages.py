"""Stage transitions: a request arrives from the workload, is routed to a client of its stage's pool
(late binding), moves its data there (at once, or as a flow), waits in the client's queue, and on
leaving the stage finishes or enters the next one."""
from __future__ import annotations

import numpy as np

from .._numba import jit_inline, jit_noalloc
from .engine import (CHUNKED, FINISHED, R_KV_CAPACITY, R_MAX_MODEL_LEN, R_NONE, R_TOKEN_BUDGET, REJECTED, S_BATCHING,
                     S_BLOCK, S_MAX_MODEL_LEN, S_MAX_TOKENS, S_TOTAL_BLOCKS, WAITING, _blocks_for)
from . import steptime as ST
from .flows import _layerwise_left, _start_flow
from .layout import (C_NA, C_REL, CK_LLM, F_COUNT, F_LAYERWISE, F_START, F_TTFT, G_CONC, G_HASH_BLOCK, G_HORIZON,
                     G_THINK, I_DIRTY, I_MIST, I_MIST_Q, I_NREQ, I_PEND_PF, K_DECODE, K_KVFETCH, K_LLM, K_PREFILL, K_SKIP,
                     Q_COMPUTED, Q_CUR, Q_FETCHED, Q_GEN, Q_HIT, Q_OUT, Q_PENDING, Q_PF_TARGET, Q_PROMPT, RT_MIST_JSQ)
from .queues import _wpush_back
from .routing import _choose, _route
from .tiers import _tier_lookup
from .views import clients_arriving, clients_routing, stages_arriving, stages_routing


@jit_inline
def _emit(r, s, t, stg, req):
    flags = stg.flags[s]
    if (flags & F_TTFT) and np.isnan(req.t_first_tok[r]):
        req.t_first_tok[r] = t
    if flags & F_COUNT:
        req.generated[r] += 1
        req.t_last_tok[r] = t


@jit_inline
def _release(t, req, lp):
    """Closed loop: a request that left the system lets the next user submit after think time."""
    n = req.arrival.shape[0]
    if lp.g[G_CONC] > 0 and lp.ctr[C_REL] < n:
        req.arrival[lp.ctr[C_REL]] = t + lp.g[G_THINK]
        lp.ctr[C_REL] += 1


@jit_noalloc
def _arrive(r, c, t, s, req, stg, cli):
    """Request r arrives for stage s at client c at time t: checks, then the waiting queue.
    Returns False when it was rejected."""
    sk = stg.kind[s]
    P = stg.prompt[s]
    if cli.ci[c, I_MIST] > 0:
        # MIST token load: a prompt still to prefill counts its tokens, a decode counts 1
        cli.ci[c, I_MIST_Q] += P if (sk == K_LLM or sk == K_PREFILL) else 1
    O = stg.output[s]
    req.rq[r, Q_PROMPT] = P
    req.rq[r, Q_OUT] = O
    if cli.kind[c] == CK_LLM:
        sch = cli.sch[c]
        w = req.branches[r]
        b = int(sch[S_BLOCK])
        rej = R_NONE
        if sk != K_DECODE and int(sch[S_BATCHING]) != CHUNKED and P > int(sch[S_MAX_TOKENS]):
            rej = R_TOKEN_BUDGET
        elif P + O > int(sch[S_MAX_MODEL_LEN]):
            rej = R_MAX_MODEL_LEN
        elif _blocks_for(P, O, w, b) > int(sch[S_TOTAL_BLOCKS]):
            rej = R_KV_CAPACITY
        if rej != R_NONE:
            req.status[r] = REJECTED
            req.reason[r] = rej
            req.t_finish[r] = t
            cli.ci[c, I_NREQ] -= 1
            return False
        req.rq[r, Q_PF_TARGET] = P
        req.rq[r, Q_HIT] = 0
        if sk == K_DECODE:
            req.rq[r, Q_COMPUTED] = P   # its KV arrived with it
            req.rq[r, Q_GEN] = 1        # token 1 was emitted by the prefill client
        else:
            req.rq[r, Q_COMPUTED] = 0
            req.rq[r, Q_GEN] = 0
            cli.ci[c, I_PEND_PF] += P
    req.status[r] = WAITING
    _wpush_back(req.rq, cli.ci, c, r)
    cli.ci[c, I_DIRTY] = 1
    return True


@jit_inline
def _n_layers(c, cli):
    """Transformer layers of LLM client c's model (layer-wise KV transfer)."""
    return cli.prm[c, ST.P_N_DENSE] + cli.prm[c, ST.P_N_MOE]


@jit_noalloc
def _enter_stage(r, s, c_from, t, req, stg, cli, rte, fl, kv, lp):
    """Request r becomes ready for stage s at time t, coming from client c_from (-1: its source).
    Late binding: the stage is routed now, then the data moves (immediate arrival, or a flow)."""
    C = cli.kind.shape[0]
    req.rq[r, Q_CUR] = s
    req.rq[r, Q_FETCHED] = 0
    stg.t_ready[s] = t
    if stg.kind[s] == K_KVFETCH:
        # route the stage the KV is for, then read it from the sampled tier; on a miss nothing moves
        # and the next stage recomputes the whole prompt, past tokens included (MODEL.md §4.1)
        s2 = s + 1
        c2 = _route(s2, stg.prompt[s2], req.branches[r], stages_routing(stg), rte, clients_routing(cli), t)
        stg.client[s2] = c2
        cli.ci[c2, I_NREQ] += 1
        stg.t_arrive[s] = t
        tier = stg.tier[s]
        byts = stg.bytes[s]
        req.rq[r, Q_PENDING] = stg.prompt[s]
        if tier <= -2:
            # hash mode: the hits emerge from what the tiers hold (LRU, MODEL.md §4.2); the
            # deepest tier holding a matched block serves the read; bytes = KV bytes per token
            m, tier = _tier_lookup(r, -2 - tier, req, kv)
            tok = min(int(lp.g[G_HASH_BLOCK]) * m, stg.prompt[s2] - 1)
            req.rq[r, Q_PENDING] = tok
            byts = tok * stg.bytes[s]
            if m == 0 or tok <= 0:
                tier = -1
        if tier >= 0 and byts > 0.0:
            stg.client[s] = C + tier
            _start_flow(r, C + tier, c2, byts, t, rte, fl, lp.ctr)
            return
        stg.t_exit[s] = t
        stg.t_ready[s2] = t
        stg.t_arrive[s2] = t
        req.rq[r, Q_CUR] = s2
        if not _arrive(r, c2, t, s2, req, stages_arriving(stg), clients_arriving(cli)):
            _release(t, req, lp)
        return
    c2 = stg.client[s]
    if c2 < 0:
        c2 = _route(s, stg.prompt[s], req.branches[r], stages_routing(stg), rte, clients_routing(cli), t)
        stg.client[s] = c2
        s2 = s + 1  # (a decode stage always directly follows its prefill stage)
        if (rte.pool_policy[stg.pool[s]] == RT_MIST_JSQ and stg.kind[s] == K_PREFILL and s2 < stg.client.shape[0]
                and stg.kind[s2] == K_DECODE and stg.client[s2] < 0 and rte.pool_policy[stg.pool[s2]] == RT_MIST_JSQ):
            # MIST picks the decode client together with the prefill client, on the loads of now
            stg.client[s2] = _choose(stg.pool[s2], stg.prompt[s2], rte, clients_routing(cli), t)
    cli.ci[c2, I_NREQ] += 1
    if c_from < 0 or c_from == c2 or stg.bytes[s] <= 0.0:
        stg.t_arrive[s] = t
        if not _arrive(r, c2, t, s, req, stages_arriving(stg), clients_arriving(cli)):
            _release(t, req, lp)
        return
    req.status[r] = WAITING  # in transfer
    byts = stg.bytes[s]
    if stg.flags[s] & F_LAYERWISE:
        byts = _layerwise_left(byts, c_from, c2, t - cli.cf[c_from, F_START], _n_layers(c_from, cli), rte, fl)
    _start_flow(r, c_from, c2, byts, t, rte, fl, lp.ctr)


@jit_inline
def _next_stage(r, s, stg):
    """The stage r takes after stage s (skipped stages passed over); st_off[r + 1] if none.
    A decode stage with nothing left to generate (output <= 1: the prefill client emitted the only
    token) is passed over too: the request leaves from the prefill client, no KV moves."""
    nxt = s + 1
    while nxt < stg.off[r + 1] and (stg.kind[nxt] == K_SKIP or (stg.kind[nxt] == K_DECODE and stg.output[nxt] <= 1)):
        nxt += 1
    return nxt


@jit_noalloc
def _leave_stage(r, c, t, req, stg, cli, rte, fl, kv, lp):
    """Request r finished its stage at client c at time t: it finishes, or enters the next stage."""
    s = req.rq[r, Q_CUR]
    stg.t_exit[s] = t
    cli.ci[c, I_NREQ] -= 1
    nxt = _next_stage(r, s, stg)
    if nxt >= stg.off[r + 1]:
        req.status[r] = FINISHED
        req.t_finish[r] = t
        _release(t, req, lp)
        return
    req.status[r] = WAITING
    _enter_stage(r, nxt, c, t, req, stg, cli, rte, fl, kv, lp)


@jit_noalloc
def _workload_arrivals(t, req, stg, cli, rte, fl, kv, lp):
    """Requests of the workload arriving by time t (and by the horizon) enter their first stage."""
    n = req.arrival.shape[0]
    horizon = lp.g[G_HORIZON]
    while lp.ctr[C_NA] < n and req.arrival[lp.ctr[C_NA]] <= t and req.arrival[lp.ctr[C_NA]] <= horizon:
        r = lp.ctr[C_NA]
        lp.ctr[C_NA] += 1
        # np.int64(-1), not -1: numba compiles a callee once per literal argument value, and
        # _enter_stage (with _start_flow, _layerwise_left) would be compiled for -1 and for int64
        _enter_stage(r, stg.off[r], np.int64(-1), t, req, stg, cli, rte, fl, kv, lp)
        stg.t_ready[stg.off[r]] = req.arrival[r]
