"""Routing: which client of a pool a request goes to, read from the loads at the moment of routing
(MODEL.md §6.3), including MIST's disaggregated join-shortest-queue."""
from __future__ import annotations

import numpy as np

from .._numba import jit_inline, jit_noalloc
from .engine import S_BLOCK, S_TOTAL_BLOCKS, S_WATERMARK, _blocks_for
from .layout import (I_MIST_Q, I_MIST_STEP, I_NDEC_C, I_NREQ, I_PEND_PF, I_RR, I_RR2, I_USED, I_WCOUNT, K_DECODE,
                     RT_DRAIN, RT_HEAVY_LIGHT, RT_JSQ, RT_LEAST_DECODE, RT_LEAST_KV, RT_LEAST_PREFILL, RT_MIST_JSQ,
                     RT_OVERFLOW, RT_RR, SRV_DRAIN_DEC_S, SRV_DRAIN_PF_S_PER_TOKEN, SRV_MIST_STEP_END)


@jit_inline
def _mist_load(c, t, cli):
    """MIST's token load of client c at time t (Distserve coordinator, tokens_load): the load of
    the step in flight (while it runs) plus what arrived since it began."""
    step = cli.ci[c, I_MIST_STEP] if t < cli.srv[c, SRV_MIST_STEP_END] else 0
    return step + cli.ci[c, I_MIST_Q]


@jit_noalloc
def _choose_mist(p, t, rte, cli):
    """MIST's join-shortest-queue: when every client of the pool has the same token load, round
    robin over a list rotated at each such pick; otherwise the least loaded, the first in the
    rotated list on ties."""
    a = rte.pool_off[p]
    m = rte.pool_off[p + 1] - a
    lead = rte.pool_cli[a]
    k = cli.ci[lead, I_RR] % m
    first = _mist_load(rte.pool_cli[a + k], t, cli)
    same = True
    best = rte.pool_cli[a + k]
    bestv = first
    for j in range(1, m):
        c = rte.pool_cli[a + (k + j) % m]
        v = _mist_load(c, t, cli)
        if v != first:
            same = False
        if v < bestv:
            bestv = v
            best = c
    if same:
        cli.ci[lead, I_RR] += 1
        return rte.pool_cli[a + k]
    return best


@jit_noalloc
def _choose(p, P, rte, cli, t=0.0):
    """Pick a client of pool p for a request with P prompt tokens at time t (MODEL.md §6.3).
    Loads are read at the moment of routing; ties go to the lowest position in the pool."""
    a = rte.pool_off[p]
    z = rte.pool_off[p + 1]
    m = z - a
    pol = rte.pool_policy[p] % RT_OVERFLOW
    if m == 1:
        return rte.pool_cli[a]
    lead = rte.pool_cli[a]  # per-pool round-robin pointers live on the pool's first client
    if pol == RT_MIST_JSQ:
        return _choose_mist(p, t, rte, cli)
    if pol == RT_RR:
        c = rte.pool_cli[a + cli.ci[lead, I_RR] % m]
        cli.ci[lead, I_RR] += 1
        return c
    if pol == RT_HEAVY_LIGHT:
        # heavy (prompt > threshold) to even positions, light to odd; round robin within each group
        if P > rte.pool_thresh[p]:
            ne = (m + 1) // 2
            c = rte.pool_cli[a + 2 * (cli.ci[lead, I_RR] % ne)]
            cli.ci[lead, I_RR] += 1
        else:
            no = m // 2
            c = rte.pool_cli[a + 1 + 2 * (cli.ci[lead, I_RR2] % no)]
            cli.ci[lead, I_RR2] += 1
        return c
    best = lead
    bestv = np.inf
    for j in range(a, z):
        c = rte.pool_cli[j]
        if pol == RT_LEAST_PREFILL:
            v = float(cli.ci[c, I_PEND_PF])
        elif pol == RT_LEAST_DECODE:
            v = float(cli.ci[c, I_NDEC_C])
        elif pol == RT_LEAST_KV:
            v = float(cli.ci[c, I_USED])
        elif pol == RT_JSQ:
            v = float(cli.ci[c, I_PEND_PF] + cli.ci[c, I_NDEC_C])
        elif pol == RT_DRAIN:
            # estimated drain time: pending prefill work, then one decode step per running decode
            # batch (MODEL.md §6.3, with step times measured once per client)
            v = (cli.ci[c, I_PEND_PF] * cli.srv[c, SRV_DRAIN_PF_S_PER_TOKEN]
                 + cli.ci[c, I_NDEC_C] * cli.srv[c, SRV_DRAIN_DEC_S])
        else:
            v = float(cli.ci[c, I_NREQ])
        if v < bestv:
            bestv = v
            best = c
    return best


@jit_noalloc
def _route(s, P, w, stg, rte, cli, t):
    """The client of stage s: its pool's pick; with a Splitwise overflow pool, an overloaded pick is
    replaced by the overflow pool's (ENGINE_SEMANTICS.md). A prefill pick is overloaded when requests
    wait there and its pending prefill tokens + P exceed the threshold; a decode pick when it could
    not admit the request now (free blocks - admission need < watermark)."""
    p = stg.pool[s]
    c = _choose(p, P, rte, cli, t)
    if rte.pool_policy[p] < RT_OVERFLOW:
        return c
    if stg.kind[s] == K_DECODE:
        sch = cli.sch[c]
        need = _blocks_for(P, 1, w, int(sch[S_BLOCK]))
        loaded = int(sch[S_TOTAL_BLOCKS]) - cli.ci[c, I_USED] - need < int(sch[S_WATERMARK])
    else:
        loaded = cli.ci[c, I_WCOUNT] > 0 and cli.ci[c, I_PEND_PF] + P > rte.pool_thresh[p]
    if loaded:
        c = _choose(p + 1, P, rte, cli, t)
    return c
