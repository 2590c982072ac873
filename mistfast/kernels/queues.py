"""Waiting queues: a doubly linked list per client threaded through the request table
(``rq[r, Q_WPREV]``, ``rq[r, Q_WNEXT]``; head, tail and count in ``ci``), and the allocation-free
heapsort that puts a queue in policy order."""
from __future__ import annotations

from .._numba import jit_inline, jit_noalloc
from .layout import I_WCOUNT, I_WHEAD, I_WTAIL, Q_WNEXT, Q_WPREV


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
