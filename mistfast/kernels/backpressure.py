"""KV backpressure of a decode pool on its prefill pool (ENGINE_SEMANTICS.md, MODEL.md §4.4): a
finished prefill keeps its KV blocks on the prefill client until its decode client has reserved
room for it; only then does the transfer start. The decode client keeps a FIFO of such requests
(its reservation queue, linked through ``Q_WNEXT``: a request there is in no waiting queue)."""
from __future__ import annotations

from .._numba import jit_inline, jit_noalloc
from .engine import (R_KV_CAPACITY, R_MAX_MODEL_LEN, R_NONE, REJECTED, S_BLOCK, S_MAX_MODEL_LEN, S_TOTAL_BLOCKS,
                     S_WATERMARK, WAITING, _blocks_for)
from .flows import _layerwise_left, _start_flow
from .layout import (CK_LLM, CS_KV_BLOCKED_S, F_KV_BACKPRESSURE, F_LAYERWISE, F_START, I_DIRTY, I_NREQ, I_RCOUNT, I_RHEAD, I_RTAIL, I_USED,
                     K_DECODE, K_PREFILL, Q_BLOCKS, Q_CUR, Q_FETCHED, Q_HELD, Q_HELD_C, Q_RESV, Q_WNEXT)
from .queues import _wpush_front, _wremove
from .routing import _route
from .stages import _arrive, _n_layers, _next_stage, _release
from .views import clients_arriving, clients_routing, requests_moving, stages_arriving, stages_routing


@jit_inline
def _holds_kv(r, s, stg):
    """True when request r, whose prefill stage s just ended, keeps its KV blocks on the prefill
    client: its next stage is a decode stage with KV backpressure."""
    if stg.kind[s] != K_PREFILL:
        return False
    nxt = _next_stage(r, s, stg)
    return nxt < stg.off[r + 1] and stg.kind[nxt] == K_DECODE and (stg.flags[nxt] & F_KV_BACKPRESSURE) != 0


@jit_inline
def _free_held(r, req, cli):
    """The KV r held on its prefill client has left it (transfer done): the blocks are free there."""
    if req.rq[r, Q_HELD] > 0:
        hc = req.rq[r, Q_HELD_C]
        cli.ci[hc, I_USED] -= req.rq[r, Q_HELD]
        req.rq[r, Q_HELD] = 0
        cli.ci[hc, I_DIRTY] = 1


@jit_inline
def _bp_reject(r, c, t, reason, req, cli, lp):
    """Reject r, routed to decode client c, at time t: the KV it held on its prefill client is freed."""
    _free_held(r, req, cli)
    req.status[r] = REJECTED
    req.reason[r] = reason
    req.t_finish[r] = t
    cli.ci[c, I_NREQ] -= 1
    _release(t, req, lp)


@jit_inline
def _reserved_first(r, c, req, cli):
    """A request whose blocks are reserved goes to the front of c's waiting queue: it holds its KV
    room already, so no request that does not fit may stop the scan before it."""
    _wremove(req.rq, cli.ci, c, r)
    _wpush_front(req.rq, cli.ci, c, r)


@jit_noalloc
def _bp_leave(r, c, t, req, stg, cli, rte, lp):
    """Request r ended its prefill stage at client c at time t and keeps its KV blocks there: the
    decode stage is routed now (late binding, as without backpressure), checked as an arrival
    would be, and r joins the decode client's reservation queue."""
    s = req.rq[r, Q_CUR]
    stg.t_exit[s] = t
    cli.ci[c, I_NREQ] -= 1
    req.rq[r, Q_HELD] = req.rq[r, Q_BLOCKS]
    req.rq[r, Q_HELD_C] = c
    req.rq[r, Q_BLOCKS] = 0
    nxt = _next_stage(r, s, stg)
    req.rq[r, Q_CUR] = nxt
    req.rq[r, Q_FETCHED] = 0
    stg.t_ready[nxt] = t
    req.status[r] = WAITING
    c2 = stg.client[nxt]
    if c2 < 0:
        c2 = _route(nxt, stg.prompt[nxt], req.branches[r], stages_routing(stg), rte, clients_routing(cli), t)
        stg.client[nxt] = c2
    cli.ci[c2, I_NREQ] += 1
    if c2 == c:
        # decoded where it was prefilled: the KV stays in place, nothing to reserve
        _free_held(r, req, cli)
        stg.t_arrive[nxt] = t
        if not _arrive(r, c2, t, nxt, requests_moving(req), stages_arriving(stg), clients_arriving(cli)):
            _release(t, req, lp)
        return
    sch = cli.sch[c2]
    P = stg.prompt[nxt]
    O = stg.output[nxt]
    rej = R_NONE
    if P + O > int(sch[S_MAX_MODEL_LEN]):
        rej = R_MAX_MODEL_LEN
    elif _blocks_for(P, O, req.branches[r], int(sch[S_BLOCK])) > int(sch[S_TOTAL_BLOCKS]):
        rej = R_KV_CAPACITY
    if rej != R_NONE:
        _bp_reject(r, c2, t, rej, req, cli, lp)
        return
    req.rq[r, Q_WNEXT] = -1
    if cli.ci[c2, I_RCOUNT] == 0:
        cli.ci[c2, I_RHEAD] = r
    else:
        req.rq[cli.ci[c2, I_RTAIL], Q_WNEXT] = r
    cli.ci[c2, I_RTAIL] = r
    cli.ci[c2, I_RCOUNT] += 1


@jit_noalloc
def _bp_reserve(c, t, req, stg, cli, rte, fl, lp):
    """Decode client c reserves KV blocks for the head of its reservation queue while the admission
    rule holds (free - need >= watermark; strict FIFO); each reserved request's KV transfer starts."""
    sch = cli.sch[c]
    b = int(sch[S_BLOCK])
    total = int(sch[S_TOTAL_BLOCKS])
    wm = int(sch[S_WATERMARK])
    while cli.ci[c, I_RCOUNT] > 0:
        r = cli.ci[c, I_RHEAD]
        s = req.rq[r, Q_CUR]
        need = _blocks_for(stg.prompt[s], 1, req.branches[r], b)
        fits = total - cli.ci[c, I_USED] - need >= wm
        if not fits and cli.ci[c, I_USED] > 0:
            break
        cli.ci[c, I_RHEAD] = req.rq[r, Q_WNEXT]
        req.rq[r, Q_WNEXT] = -1
        cli.ci[c, I_RCOUNT] -= 1
        if not fits:
            # nothing is held or reserved here and it still does not fit: it never will
            _bp_reject(r, c, t, R_KV_CAPACITY, req, cli, lp)
            continue
        cli.ci[c, I_USED] += need
        req.rq[r, Q_RESV] = need
        hc = req.rq[r, Q_HELD_C]
        cli.stats[hc, CS_KV_BLOCKED_S] += t - stg.t_ready[s]
        if stg.bytes[s] <= 0.0:
            _free_held(r, req, cli)
            stg.t_arrive[s] = t
            _arrive(r, c, t, s, requests_moving(req), stages_arriving(stg), clients_arriving(cli))
            _reserved_first(r, c, req, cli)
        else:
            byts = stg.bytes[s]
            if (stg.flags[s] & F_LAYERWISE) and t == stg.t_ready[s]:
                # reserved at the prefill's end: its layers streamed during the prefill step
                byts = _layerwise_left(byts, hc, c, t - cli.cf[hc, F_START], _n_layers(hc, cli), rte, fl)
            _start_flow(r, hc, c, byts, t, rte, fl, lp.ctr)


@jit_inline
def _reserve_kv(t, req, stg, cli, rte, fl, lp):
    """Start of phase 3: every decode client, in index order, reserves for its reservation queue."""
    for c in range(cli.kind.shape[0]):
        if cli.kind[c] == CK_LLM and cli.ci[c, I_RCOUNT] > 0:
            _bp_reserve(c, t, req, stg, cli, rte, fl, lp)
