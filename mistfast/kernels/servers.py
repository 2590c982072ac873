"""Non-LLM clients (MODEL.md §6.1): CPU slot servers (each slot serves one request for a base
time plus a per-token time) and batched retrieval servers (a compute phase, then an index read
from host memory, a link shared with tier reads unless the memory is private)."""
from __future__ import annotations

import numpy as np

from .._numba import jit_inline, jit_noalloc
from .engine import RUNNING
from .layout import (C_NFL, CS_BATCH_SEQS, CS_BUSY, CS_SERVED, CS_STEPS, F_NEXT, F_START, I_BPHASE, I_DIRTY, I_NPF,
                     I_WCOUNT, I_WHEAD, Q_CUR, SRV_BASE_S, SRV_BATCH_MAX, SRV_BW, SRV_BYTES_BATCH, SRV_BYTES_Q,
                     SRV_FLOP_Q, SRV_FLOPS, SRV_MEM_RES, SRV_OVERLAP, SRV_PER_TOKEN_S, SRV_SLOTS)
from .queues import _wremove
from .stages import _leave_stage
from .views import loop_core, requests_moving, tier_chains

# Retrieval server phases (ci[c, I_BPHASE]): 0 idle, 1 computing, 2 reading the index over a link
# (a flow), 3 the batch is done at cf[c, F_NEXT]


@jit_noalloc
def _slots_release(c, t, req, stg, cli, rte, fl, kv, bat, lp):
    """Slot server c at time t: the services ending now leave their stage."""
    for j in range(int(cli.srv[c, SRV_SLOTS])):
        r = bat.run[c, j]
        if r >= 0 and bat.pf_past[c, j] <= t:
            bat.run[c, j] = -1
            cli.stats[c, CS_SERVED] += 1.0
            _leave_stage(r, c, t, requests_moving(req), stg, cli, rte, fl, tier_chains(kv), loop_core(lp))
    cli.cf[c, F_NEXT] = np.inf
    cli.ci[c, I_DIRTY] = 1


@jit_noalloc
def _slots_start(c, t, req, stg, cli, bat):
    """Slot server c at time t: waiting requests take the free slots (bat.pf_past holds each slot's
    end of service); the server's next event is the earliest end."""
    nxt = np.inf
    for j in range(int(cli.srv[c, SRV_SLOTS])):
        if bat.run[c, j] < 0 and cli.ci[c, I_WCOUNT] > 0:
            r = cli.ci[c, I_WHEAD]
            _wremove(req.rq, cli.ci, c, r)
            s = req.rq[r, Q_CUR]
            svc = cli.srv[c, SRV_BASE_S] + cli.srv[c, SRV_PER_TOKEN_S] * stg.prompt[s]
            bat.run[c, j] = r
            bat.pf_past[c, j] = t + svc
            stg.t_sched[s] = t
            if np.isnan(req.t_first_sched[r]):
                req.t_first_sched[r] = t
            cli.stats[c, CS_BUSY] += svc
            req.status[r] = RUNNING
        if bat.run[c, j] >= 0 and bat.pf_past[c, j] < nxt:
            nxt = bat.pf_past[c, j]
    cli.cf[c, F_NEXT] = nxt


@jit_noalloc
def _retrieval_phase_end(c, t, req, stg, cli, rte, fl, kv, bat, lp):
    """Retrieval server c at time t: the compute phase hands over to the index read (a flow in
    slot n + c), or the batch is done and its requests leave their stage."""
    n = req.arrival.shape[0]
    if cli.ci[c, I_BPHASE] == 1:
        byts = cli.srv[c, SRV_BYTES_BATCH] + cli.ci[c, I_NPF] * cli.srv[c, SRV_BYTES_Q]
        f = n + c
        fl.state[f] = 2
        fl.t0[f] = t
        fl.rem[f] = byts
        fl.hops[f, 0] = int(cli.srv[c, SRV_MEM_RES])
        fl.nhops[f] = 1
        fl.live[lp.ctr[C_NFL]] = f
        lp.ctr[C_NFL] += 1
        cli.ci[c, I_BPHASE] = 2
        cli.cf[c, F_NEXT] = np.inf
        return
    cli.stats[c, CS_BUSY] += t - cli.cf[c, F_START]
    cli.stats[c, CS_STEPS] += 1.0
    cli.stats[c, CS_BATCH_SEQS] += cli.ci[c, I_NPF]
    nb = cli.ci[c, I_NPF]
    cli.ci[c, I_NPF] = 0
    cli.ci[c, I_BPHASE] = 0
    cli.cf[c, F_NEXT] = np.inf
    cli.ci[c, I_DIRTY] = 1
    for i in range(nb):
        r = bat.pf_req[c, i]
        cli.stats[c, CS_SERVED] += 1.0
        _leave_stage(r, c, t, requests_moving(req), stg, cli, rte, fl, tier_chains(kv), loop_core(lp))


@jit_noalloc
def _retrieval_start(c, t, req, stg, cli, bat):
    """Idle retrieval server c at time t: the waiting requests (up to the batch size) form a batch;
    its compute phase starts (with a shared memory link) or the whole batch is timed at once."""
    if cli.ci[c, I_BPHASE] != 0 or cli.ci[c, I_WCOUNT] == 0:
        return
    nb = 0
    while cli.ci[c, I_WCOUNT] > 0 and nb < int(cli.srv[c, SRV_BATCH_MAX]):
        r = cli.ci[c, I_WHEAD]
        _wremove(req.rq, cli.ci, c, r)
        bat.pf_req[c, nb] = r
        nb += 1
        s = req.rq[r, Q_CUR]
        stg.t_sched[s] = t
        if np.isnan(req.t_first_sched[r]):
            req.t_first_sched[r] = t
        req.status[r] = RUNNING
    cli.ci[c, I_NPF] = nb
    comp = nb * cli.srv[c, SRV_FLOP_Q] / cli.srv[c, SRV_FLOPS]
    cli.cf[c, F_START] = t
    if cli.srv[c, SRV_MEM_RES] >= 0:
        cli.ci[c, I_BPHASE] = 1
        cli.cf[c, F_NEXT] = t + comp
    else:
        mem = (cli.srv[c, SRV_BYTES_BATCH] + nb * cli.srv[c, SRV_BYTES_Q]) / cli.srv[c, SRV_BW]
        cli.ci[c, I_BPHASE] = 3
        cli.cf[c, F_NEXT] = t + (max(comp, mem) if cli.srv[c, SRV_OVERLAP] > 0.0 else comp + mem)
