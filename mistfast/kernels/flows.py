"""Transfers between clients and tiers: a fixed latency, then bytes over the links of the route,
each link shared max-min fairly among the flows crossing it (progressive filling, MODEL.md §4.3)."""
from __future__ import annotations

import numpy as np

from .._numba import jit_noalloc
from .layout import C_NFL


@jit_noalloc
def _max_min_rates(fl, nfl):
    """Max-min fair rates of the moving flows (progressive filling, MODEL.md §4.3)."""
    for i in range(fl.link_cap.shape[0]):
        fl.link_left[i] = fl.link_cap[i]
        fl.link_n[i] = 0
    n_unfrozen = 0
    for k in range(nfl):
        f = fl.live[k]
        if fl.state[f] != 2:
            fl.frozen[f] = True
            continue
        if fl.nhops[f] == 0:
            fl.rate[f] = np.inf
            fl.frozen[f] = True
            continue
        fl.frozen[f] = False
        n_unfrozen += 1
        for h in range(fl.nhops[f]):
            fl.link_n[fl.hops[f, h]] += 1
    while n_unfrozen > 0:
        best = -1
        share = np.inf
        for i in range(fl.link_cap.shape[0]):
            if fl.link_n[i] > 0:
                s = fl.link_left[i] / fl.link_n[i]
                if s < share:
                    share = s
                    best = i
        for k in range(nfl):
            f = fl.live[k]
            if fl.frozen[f]:
                continue
            uses = False
            for h in range(fl.nhops[f]):
                if fl.hops[f, h] == best:
                    uses = True
            if uses:
                fl.frozen[f] = True
                n_unfrozen -= 1
                fl.rate[f] = share
                for h in range(fl.nhops[f]):
                    j = fl.hops[f, h]
                    fl.link_left[j] -= share
                    fl.link_n[j] -= 1


@jit_noalloc
def _retime_flows(t, fl, nfl):
    _max_min_rates(fl, nfl)
    for k in range(nfl):
        f = fl.live[k]
        if fl.state[f] == 2:
            fl.done[f] = t + fl.rem[f] / fl.rate[f] if fl.rate[f] > 0 else np.inf


@jit_noalloc
def _start_flow(f, src, dst, byts, t, rte, fl, ctr):
    """Register a transfer: fixed latency first (no bandwidth), then bytes over the route."""
    fl.state[f] = 1
    fl.t0[f] = t + rte.lat[src, dst]
    fl.rem[f] = byts
    fl.nhops[f] = rte.nhops[src, dst]
    for h in range(fl.nhops[f]):
        fl.hops[f, h] = rte.hops[src, dst, h]
    fl.dest[f] = dst
    fl.live[ctr[C_NFL]] = f
    ctr[C_NFL] += 1


@jit_noalloc
def _layerwise_left(byts, src, dst, t_pf, n_layers, rte, fl):
    """Layer-wise KV transfer (ENGINE_SEMANTICS.md, MODEL.md §5.2): layer l's KV leaves as soon as
    the prefill step has computed layer l, so during the t_pf s step the first L - 1 layers stream
    at the route's bottleneck bandwidth (at most their (L-1)/L share of the bytes; those bytes are
    booked on the route's links now). Returns the bytes left for the transfer after the step."""
    bw = np.inf
    for h in range(rte.nhops[src, dst]):
        bw = min(bw, fl.link_cap[rte.hops[src, dst, h]])
    early = min(byts * (n_layers - 1.0) / n_layers, bw * t_pf * (n_layers - 1.0) / n_layers)
    for h in range(rte.nhops[src, dst]):
        fl.link_bytes[rte.hops[src, dst, h]] += early
    return byts - early
