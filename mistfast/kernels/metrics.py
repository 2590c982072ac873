"""Per-point reduction of per-request results to summary metrics (MODEL.md §8), in numba so a
sweep of many points reduces without Python per point."""
from __future__ import annotations

import numpy as np

from .._numba import jit, jit_internal
from .engine import FINISHED, PENDING, REASON_NAMES, REJECTED, UNFINISHED

# ---- metric parameter vector ----------------------------------------------------------------------
M_SLO_TTFT = 0
M_SLO_TPOT = 1
M_SLO_E2E = 2       # inf when unset
M_WARMUP = 3
M_HORIZON = 4
M_PCT_COMPAT = 5    # 1: reference percentile (value at sorted index int(q n))
M_NQ = 6            # number of configured quantiles ([metrics] quantiles)
MAX_QUANTILES = 8
M_Q = 7             # MAX_QUANTILES slots: the configured quantiles in (0, 1)
N_MPARAMS = M_Q + MAX_QUANTILES

# ---- outputs -------------------------------------------------------------------------------------------
QUANTILES = (0.5, 0.9, 0.99)
O_N_MEASURED = 0
O_N_FINISHED = 1
O_N_REJECTED = 2
O_N_UNFINISHED = 3
O_N_NOT_ARRIVED = 4
O_TTFT = 5      # mean, p50, p90, p99 (4 slots)
O_TPOT = 9
O_E2E = 13
O_QUEUE = 17
O_N_GOOD = 21
O_OUT_TOKENS = 22
O_PROMPT_TOKENS = 23
O_COMPUTED_PROMPT = 24
O_HIT_TOKENS = 25
O_GOOD_TOKENS = 26
O_WINDOW = 27
O_TTFT_MAX = 28
O_N_BEFORE_WARMUP = 29   # arrived before warmup_s: entered the system, left out of every measurement
O_REJ_BY_REASON = 30     # measured rejections by reason code (N_REASONS slots, code 0 unused)
N_REASONS = len(REASON_NAMES)
O_QUANT = O_REJ_BY_REASON + N_REASONS  # configured quantiles: MAX_QUANTILES slots each for TTFT, TPOT, E2E, queueing delay
N_OUT = O_QUANT + 4 * MAX_QUANTILES


@jit_internal
def _percentile(sorted_x, n, q, compat):
    if n == 0:
        return np.nan
    if compat:
        i = int(q * n)
        if i > n - 1:
            i = n - 1
        return sorted_x[i]
    pos = q * (n - 1)
    lo = int(np.floor(pos))
    hi = lo + 1 if lo + 1 < n else n - 1
    frac = pos - lo
    a = sorted_x[lo]
    b = sorted_x[hi]
    # numpy's lerp: symmetric form for bit-compatibility with np.percentile(method="linear")
    d = b - a
    if frac >= 0.5:
        return b - d * (1.0 - frac)
    return a + d * frac


@jit_internal
def _order_statistics(x, n, compat, mp, kth):
    """x[:n] partitioned so that every rank a percentile below reads holds its sorted value (the
    p50/p90/p99 and configured quantiles): a selection, O(n), instead of a full sort."""
    m = 0
    nq = int(mp[M_NQ])
    for j in range(3 + nq):
        q = QUANTILES[j] if j < 3 else mp[M_Q + j - 3]
        if compat:
            i = int(q * n)
            kth[m] = i if i < n - 1 else n - 1
            m += 1
        else:
            lo = int(np.floor(q * (n - 1)))
            kth[m] = lo
            kth[m + 1] = lo + 1 if lo + 1 < n else n - 1
            m += 2
    return np.partition(x[:n], kth[:m])


@jit_internal
def _stats(x, n, out, at, compat, mp, qat, kth):
    """Mean and p50/p90/p99 at out[at:at+4]; the configured quantiles at out[qat:qat+M_NQ]."""
    nq = int(mp[M_NQ])
    if n == 0:
        for j in range(4):
            out[at + j] = np.nan
        for j in range(nq):
            out[qat + j] = np.nan
        return
    s = 0.0
    for i in range(n):
        s += x[i]
    out[at] = s / n
    xs = _order_statistics(x, n, compat, mp, kth)
    for j in range(3):
        out[at + 1 + j] = _percentile(xs, n, QUANTILES[j], compat)
    for j in range(nq):
        out[qat + j] = _percentile(xs, n, mp[M_Q + j], compat)


# latency kinds, in the order of their output slots (O_TTFT, O_TPOT, O_E2E, O_QUEUE: 4 apart)
L_TTFT = 0
L_TPOT = 1
L_E2E = 2
L_QUEUE = 3


@jit
def summarize_point(mp, prompt, branches, status, reason, arrival, t_first_sched, t_first_tok, t_last_tok, t_finish,
                    generated, hit_first, computed_pf, end_time, out, lat, kth):
    """One point's summary into ``out``; ``lat`` (4 x at least n) and ``kth``: scratch."""
    n = prompt.shape[0]
    for j in range(N_OUT):
        out[j] = 0.0
    warm = mp[M_WARMUP]
    horizon = mp[M_HORIZON]
    compat = mp[M_PCT_COMPAT] > 0.0
    cnt = np.zeros(4, np.int64)
    ttft_max = 0.0
    for i in range(n):
        st = status[i]
        if st == PENDING:
            out[O_N_NOT_ARRIVED] += 1.0
            continue
        # every request lands in exactly one count: not arrived, before warmup, or measured
        if arrival[i] > horizon:
            out[O_N_NOT_ARRIVED] += 1.0
            continue
        if arrival[i] < warm:
            out[O_N_BEFORE_WARMUP] += 1.0
            continue
        out[O_N_MEASURED] += 1.0
        out[O_PROMPT_TOKENS] += prompt[i]
        out[O_COMPUTED_PROMPT] += computed_pf[i]
        if hit_first[i] > 0:
            out[O_HIT_TOKENS] += hit_first[i]
        out[O_OUT_TOKENS] += generated[i] * branches[i]
        if st == REJECTED:
            out[O_N_REJECTED] += 1.0
            out[O_REJ_BY_REASON + reason[i]] += 1.0
        elif st == UNFINISHED:
            out[O_N_UNFINISHED] += 1.0
        if not np.isnan(t_first_sched[i]):
            lat[L_QUEUE, cnt[L_QUEUE]] = t_first_sched[i] - arrival[i]
            cnt[L_QUEUE] += 1
        good = st == FINISHED
        if not np.isnan(t_first_tok[i]):
            x = t_first_tok[i] - arrival[i]
            lat[L_TTFT, cnt[L_TTFT]] = x
            cnt[L_TTFT] += 1
            if x > ttft_max:
                ttft_max = x
            if x > mp[M_SLO_TTFT]:
                good = False
        if st == FINISHED:
            out[O_N_FINISHED] += 1.0
            e = t_finish[i] - arrival[i]
            lat[L_E2E, cnt[L_E2E]] = e
            cnt[L_E2E] += 1
            if e > mp[M_SLO_E2E]:
                good = False
            if generated[i] >= 2:
                tp = (t_last_tok[i] - t_first_tok[i]) / (generated[i] - 1)
                lat[L_TPOT, cnt[L_TPOT]] = tp
                cnt[L_TPOT] += 1
                if tp > mp[M_SLO_TPOT]:
                    good = False
        if good:
            out[O_N_GOOD] += 1.0
            out[O_GOOD_TOKENS] += generated[i] * branches[i]
    for k in range(4):
        _stats(lat[k], cnt[k], out, O_TTFT + 4 * k, compat, mp, O_QUANT + k * MAX_QUANTILES, kth)
    out[O_TTFT_MAX] = ttft_max if cnt[L_TTFT] > 0 else np.nan
    # a run that stopped before warmup_s measured nothing: the window is empty, not negative
    out[O_WINDOW] = end_time - warm if end_time > warm else 0.0


@jit
def summarize_points(mp, offsets, prompt, branches, status, reason, arrival, t_first_sched, t_first_tok, t_last_tok,
                     t_finish, generated, hit_first, computed_pf, end_time, out):
    longest = 0
    for q in range(offsets.shape[0] - 1):
        longest = max(longest, offsets[q + 1] - offsets[q])
    lat = np.empty((4, longest))        # scratch of every point: the latencies each statistic reads
    kth = np.empty(2 * (3 + MAX_QUANTILES), np.int64)
    for q in range(offsets.shape[0] - 1):
        a = offsets[q]
        z = offsets[q + 1]
        summarize_point(mp[q], prompt[a:z], branches[a:z], status[a:z], reason[a:z], arrival[a:z], t_first_sched[a:z],
                        t_first_tok[a:z], t_last_tok[a:z], t_finish[a:z], generated[a:z], hit_first[a:z],
                        computed_pf[a:z], end_time[q], out[q], lat, kth)
