"""Single-client serving engine: struct-of-arrays request state advanced step by step.

Semantics: ``mistfast/ENGINE_SEMANTICS.md`` (shared with the pure-Python reference twin in
``tests/reference/engine_reference.py``). Times are float64 seconds throughout.
"""
from __future__ import annotations

import numba
import numpy as np

from .._numba import CACHE, jit
from . import steptime as ST

# ---- integer codes ------------------------------------------------------------------------
STATIC, CONTINUOUS, MIXED, CHUNKED = 0, 1, 2, 3
FCFS, SPF, LWL = 0, 1, 2
PENDING, WAITING, RUNNING, FINISHED, REJECTED, UNFINISHED = 0, 1, 2, 3, 4, 5
R_NONE, R_TOKEN_BUDGET, R_MAX_MODEL_LEN, R_KV_CAPACITY, R_KV_EXHAUSTED = 0, 1, 2, 3, 4
REASON_NAMES = ("none", "prompt_exceeds_token_budget", "exceeds_max_model_len", "kv_exceeds_capacity",
                "kv_exhausted")
STATUS_NAMES = ("not_arrived", "waiting", "running", "finished", "rejected", "unfinished")

# ---- scheduler parameter vector --------------------------------------------------------------
S_BATCHING = 0
S_POLICY = 1
S_MAX_TOKENS = 2
S_MAX_SEQS = 3
S_CHUNK = 4
S_BLOCK = 5
S_TOTAL_BLOCKS = 6
S_WATERMARK = 7
S_PREEMPTION = 8
S_PREFIX_BLOCKS = 9
S_STATIC_PAD = 10
S_AGING = 11
S_MAX_MODEL_LEN = 12
S_CONCURRENCY = 13
S_THINK = 14
S_HORIZON = 15
S_MAX_SIM = 16
S_DRAIN = 17
S_BRANCHES = 18
S_HASH_BLOCK = 19
S_LOG_CAP = 20
N_SCHED = 21

# ---- run statistics ----------------------------------------------------------------------------
RS_BUSY = 0
RS_STEPS = 1
RS_BATCH_TOKENS = 2
RS_BATCH_SEQS = 3
RS_KV_PEAK = 4
RS_KV_BLOCK_S = 5
RS_PREEMPTIONS = 6
RS_RECOMPUTED = 7
RS_END = 8
RS_TC = 9
RS_TM = 10
RS_TN = 11
RS_FLOPS = 12
RS_BYTES = 13
RS_PF_TOKENS = 14
RS_DEC_TOKENS = 15
RS_OUT_OF_RANGE = 16   # steps costed outside the calibrated range of a step correction table
N_RUNSTATS = 17

# ---- step log columns -----------------------------------------------------------------------------
L_T, L_DT, L_NPF, L_PF_TOKENS, L_NDEC, L_DEC_TOKENS, L_KV_USED = 0, 1, 2, 3, 4, 5, 6
N_LOG = 7


@jit
def _cdiv(a, b):
    return (a + b - 1) // b


@jit
def _blocks_for(prompt_uncached, g, w, b):
    if w == 1:
        return _cdiv(prompt_uncached + g, b)
    return _cdiv(prompt_uncached, b) + w * _cdiv(g, b)


# ---- prefix cache: LRU doubly linked list over dense hash ids -----------------------------------
@jit
def _lru_unlink(prev, nxt, ends, h):
    p = prev[h]
    q = nxt[h]
    if p >= 0:
        nxt[p] = q
    else:
        ends[0] = q
    if q >= 0:
        prev[q] = p
    else:
        ends[1] = p
    prev[h] = -1
    nxt[h] = -1


@jit
def _lru_push_mru(prev, nxt, ends, h):
    tail = ends[1]
    prev[h] = tail
    nxt[h] = -1
    if tail >= 0:
        nxt[tail] = h
    else:
        ends[0] = h
    ends[1] = h


@jit
def _cache_lookup(r, prompt, hash_off, hash_ids, in_cache, hb):
    m = 0
    for j in range(hash_off[r], hash_off[r + 1]):
        if in_cache[hash_ids[j]]:
            m += 1
        else:
            break
    hit = hb * m
    if hit > prompt - 1:
        hit = prompt - 1
    return m, hit


@jit
def _cache_touch(r, m, hash_off, hash_ids, prev, nxt, ends):
    for j in range(hash_off[r], hash_off[r] + m):
        h = hash_ids[j]
        _lru_unlink(prev, nxt, ends, h)
        _lru_push_mru(prev, nxt, ends, h)


@jit
def _cache_insert(r, prompt, hash_off, hash_ids, in_cache, prev, nxt, ends, cap, hb):
    full = prompt // hb
    n = hash_off[r + 1] - hash_off[r]
    if full > n:
        full = n
    for j in range(hash_off[r], hash_off[r] + full):
        h = hash_ids[j]
        if in_cache[h]:
            _lru_unlink(prev, nxt, ends, h)
            _lru_push_mru(prev, nxt, ends, h)
        else:
            if ends[2] >= cap:
                old = ends[0]
                _lru_unlink(prev, nxt, ends, old)
                in_cache[old] = False
                ends[2] -= 1
            in_cache[h] = True
            _lru_push_mru(prev, nxt, ends, h)
            ends[2] += 1


@jit
def simulate_client(prm, sch, arrival_in, prompt, output, hash_off, hash_ids, n_hash,
                    status, reason, arrival, t_first_sched, t_first_tok, t_last_tok, t_finish,
                    generated, preempts, hit_first, computed_pf, runstats, steplog):
    """Simulate one client over one workload. Output arrays are filled in place."""
    n = prompt.shape[0]
    batching = int(sch[S_BATCHING])
    policy = int(sch[S_POLICY])
    max_tok = int(sch[S_MAX_TOKENS])
    max_seq = int(sch[S_MAX_SEQS])
    chunk = int(sch[S_CHUNK])
    b = int(sch[S_BLOCK])
    total_blocks = int(sch[S_TOTAL_BLOCKS])
    watermark = int(sch[S_WATERMARK])
    preemption = sch[S_PREEMPTION] > 0.0
    cache_cap = int(sch[S_PREFIX_BLOCKS])
    static_pad = sch[S_STATIC_PAD] > 0.0
    aging = sch[S_AGING]
    max_len = int(sch[S_MAX_MODEL_LEN])
    conc = int(sch[S_CONCURRENCY])
    think = sch[S_THINK]
    horizon = sch[S_HORIZON]
    max_sim = sch[S_MAX_SIM]
    drain = sch[S_DRAIN] > 0.0
    w = int(sch[S_BRANCHES])
    hb = int(sch[S_HASH_BLOCK])
    log_cap = int(sch[S_LOG_CAP])
    caching = cache_cap > 0

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
    for i in range(runstats.shape[0]):
        runstats[i] = 0.0
    n_released = n
    if conc > 0:
        n_released = min(conc, n)
        for i in range(n):
            arrival[i] = 0.0 if i < n_released else np.inf

    pf_target = np.zeros(n, np.int64)
    computed = np.zeros(n, np.int64)
    blocks = np.zeros(n, np.int64)
    hit = np.zeros(n, np.int64)
    pf_inserted = np.zeros(n, np.bool_)
    in_step_pf = np.full(n, -1, np.int64)   # step index in which r got a prefill chunk
    wq = np.empty(max(n, 1), np.int64)      # waiting deque (ring buffer)
    wh = 0
    wn = 0
    run = np.empty(max(n, 1), np.int64)     # running list, admission order
    nrun = 0
    # batch buffers (a step never holds more sequences than running <= max_seq)
    cap = max_seq + 1
    pf_req = np.empty(cap, np.int64)
    pf_past = np.empty(cap, np.float64)
    pf_new = np.empty(cap, np.float64)
    dec_req = np.empty(cap, np.int64)
    dec_w = np.empty(cap, np.float64)
    dec_s = np.empty(cap, np.float64)
    dec_k = np.empty(cap, np.float64)
    bd = np.zeros(ST.N_BREAKDOWN)
    order = np.empty(max(n, 1), np.int64)
    keys = np.empty(max(n, 1), np.float64)
    static_batch = np.empty(cap, np.int64)   # members of the current STATIC batch
    n_static = 0
    # prefix cache
    lru_prev = np.full(max(n_hash, 1), -1, np.int64)
    lru_next = np.full(max(n_hash, 1), -1, np.int64)
    in_cache = np.zeros(max(n_hash, 1), np.bool_)
    ends = np.array([-1, -1, 0], np.int64)   # LRU head, MRU tail, count

    used = 0
    t = 0.0
    na = 0            # next request to arrive
    step = 0
    stop = False
    while not stop:
        # ---- 1. arrivals ------------------------------------------------------------------------
        while na < n and arrival[na] <= t and arrival[na] <= horizon:
            r = na
            na += 1
            P = prompt[r]
            rej = R_NONE
            if batching != CHUNKED and P > max_tok:
                rej = R_TOKEN_BUDGET
            elif P + output[r] > max_len:
                rej = R_MAX_MODEL_LEN
            elif _blocks_for(P, output[r], w, b) > total_blocks:
                rej = R_KV_CAPACITY
            if rej != R_NONE:
                status[r] = REJECTED
                reason[r] = rej
                t_finish[r] = arrival[r]
                if conc > 0 and n_released < n:
                    arrival[n_released] = arrival[r] + think
                    n_released += 1
            else:
                status[r] = WAITING
                pf_target[r] = P
                wq[(wh + wn) % n] = r
                wn += 1

        # ---- 2. batch formation -------------------------------------------------------------------
        npf = 0
        ndec = 0
        pf_tokens = 0
        budget = chunk if batching == CHUNKED else max_tok
        preempted_now = False

        admit_allowed = True
        if batching == STATIC and nrun > 0:
            admit_allowed = False

        # ---- decodes first (CHUNKED) ------------------------------------------------------------------
        if batching == CHUNKED:
            for ii in range(nrun):
                r = run[ii]
                if status[r] != RUNNING or computed[r] < pf_target[r] or generated[r] < 1:
                    continue
                if budget < w:
                    break
                ok = True
                need = _blocks_for(prompt[r] - hit[r], generated[r], w, b) - blocks[r]
                while need > total_blocks - used and ok:
                    if not preemption:
                        ok = False
                        break
                    victim = -1
                    for jj in range(nrun - 1, -1, -1):
                        v = run[jj]
                        if v != r and status[v] == RUNNING and in_step_pf[v] != step:
                            victim = v
                            break
                    if victim < 0:
                        victim = r
                        ok = False
                    # preempt victim: recompute later (vLLM behaviour)
                    used -= blocks[victim]
                    blocks[victim] = 0
                    status[victim] = WAITING
                    pf_target[victim] = prompt[victim] + w * generated[victim]
                    computed[victim] = 0
                    hit[victim] = 0
                    preempts[victim] += 1
                    runstats[RS_PREEMPTIONS] += 1.0
                    runstats[RS_RECOMPUTED] += pf_target[victim]
                    wh = (wh - 1) % n
                    wq[wh] = victim
                    wn += 1
                    preempted_now = True
                if not ok:
                    continue
                used += need
                blocks[r] += need
                dec_req[ndec] = r
                dec_w[ndec] = w
                if w == 1:
                    dec_s[ndec] = 0.0
                    dec_k[ndec] = prompt[r] + generated[r] - 1
                else:
                    dec_s[ndec] = prompt[r]
                    dec_k[ndec] = generated[r] - 1
                ndec += 1
                budget -= w
            # partial prefills
            for ii in range(nrun):
                if budget <= 0:
                    break
                r = run[ii]
                if status[r] != RUNNING or computed[r] >= pf_target[r]:
                    continue
                c = pf_target[r] - computed[r]
                if c > budget:
                    c = budget
                pf_req[npf] = r
                pf_past[npf] = computed[r]
                pf_new[npf] = c
                in_step_pf[r] = step
                npf += 1
                budget -= c
                pf_tokens += c

        # ---- admissions ----------------------------------------------------------------------------------
        # waiting order (FCFS = deque order; SPF/LWL sorted with aging)
        nw = wn
        if policy != FCFS and nw > 1:
            for i in range(nw):
                r = wq[(wh + i) % n]
                order[i] = r
                if t - arrival[r] > aging:
                    keys[i] = i - 4.0e15
                elif policy == SPF:
                    keys[i] = prompt[r] * (n + 1.0) + r
                else:
                    keys[i] = (pf_target[r] - computed[r] + output[r] - generated[r]) * (n + 1.0) + r
            idx = np.argsort(keys[:nw], kind="mergesort")
            tmp = order[:nw].copy()
            for i in range(nw):
                order[i] = tmp[idx[i]]
        else:
            for i in range(nw):
                order[i] = wq[(wh + i) % n]

        n_adm = 0
        if admit_allowed:
            for i in range(nw):
                r = order[i]
                if status[r] != WAITING:
                    continue
                if nrun >= max_seq:
                    break
                if batching == CHUNKED and budget <= 0:
                    break
                m = 0
                h = 0
                if caching:
                    m, h = _cache_lookup(r, prompt[r], hash_off, hash_ids, in_cache, hb)
                c = pf_target[r] - h
                if batching != CHUNKED:
                    if c > budget:
                        break
                need = _blocks_for(prompt[r] - h, generated[r] + 1, w, b)
                if total_blocks - used - need < watermark:
                    break
                # admit
                if caching and m > 0:
                    _cache_touch(r, m, hash_off, hash_ids, lru_prev, lru_next, ends)
                hit[r] = h
                if hit_first[r] < 0:
                    hit_first[r] = h
                computed[r] = h
                used += need
                blocks[r] = need
                status[r] = RUNNING
                run[nrun] = r
                nrun += 1
                n_adm += 1
                if batching == CHUNKED and c > budget:
                    c = budget
                pf_req[npf] = r
                pf_past[npf] = h
                pf_new[npf] = c
                in_step_pf[r] = step
                npf += 1
                budget -= c
                pf_tokens += c
                if batching == STATIC:
                    static_batch[n_static] = r
                    n_static += 1
            if n_adm > 0:
                # drop admitted requests from the waiting deque (keeps the others' order)
                k = 0
                for i in range(wn):
                    r = wq[(wh + i) % n]
                    if status[r] == WAITING:
                        wq[(wh + k) % n] = r
                        k += 1
                wn = k

        # ---- decodes (non-chunked) ------------------------------------------------------------------------
        do_decodes = False
        if batching == STATIC:
            do_decodes = npf == 0
        elif batching == CONTINUOUS:
            do_decodes = npf == 0
        elif batching == MIXED:
            do_decodes = True
        if do_decodes:
            for ii in range(nrun):
                r = run[ii]
                if status[r] != RUNNING or computed[r] < pf_target[r] or generated[r] < 1:
                    continue
                if in_step_pf[r] == step:
                    continue
                if batching == MIXED and budget < w:
                    break
                ok = True
                need = _blocks_for(prompt[r] - hit[r], generated[r], w, b) - blocks[r]
                while need > total_blocks - used and ok:
                    if not preemption:
                        ok = False
                        break
                    victim = -1
                    for jj in range(nrun - 1, -1, -1):
                        v = run[jj]
                        if v != r and status[v] == RUNNING and in_step_pf[v] != step:
                            victim = v
                            break
                    if victim < 0:
                        victim = r
                        ok = False
                    used -= blocks[victim]
                    blocks[victim] = 0
                    status[victim] = WAITING
                    pf_target[victim] = prompt[victim] + w * generated[victim]
                    computed[victim] = 0
                    hit[victim] = 0
                    preempts[victim] += 1
                    runstats[RS_PREEMPTIONS] += 1.0
                    runstats[RS_RECOMPUTED] += pf_target[victim]
                    wh = (wh - 1) % n
                    wq[wh] = victim
                    wn += 1
                    preempted_now = True
                if not ok:
                    continue
                used += need
                blocks[r] += need
                dec_req[ndec] = r
                dec_w[ndec] = w
                if w == 1:
                    dec_s[ndec] = 0.0
                    dec_k[ndec] = prompt[r] + generated[r] - 1
                else:
                    dec_s[ndec] = prompt[r]
                    dec_k[ndec] = generated[r] - 1
                ndec += 1
                budget -= w
        n_real_dec = ndec
        if batching == STATIC and static_pad and npf == 0 and ndec > 0:
            # padded static batching: finished members keep costing a decode slot
            for ii in range(n_static):
                r = static_batch[ii]
                if status[r] == FINISHED:
                    dec_req[ndec] = -1
                    dec_w[ndec] = 1.0
                    dec_s[ndec] = 0.0
                    dec_k[ndec] = prompt[r] + generated[r] - 1
                    ndec += 1

        # compact running (preempted requests left it)
        if preempted_now:
            k = 0
            for ii in range(nrun):
                r = run[ii]
                if status[r] == RUNNING:
                    run[k] = r
                    k += 1
            nrun = k

        # ---- empty batch ------------------------------------------------------------------------------------
        if npf == 0 and ndec == 0:
            if preempted_now:
                continue  # freed blocks: form the batch again at the same time
            if nrun > 0:
                # only without preemption: nobody can grow; abort the newest to break the deadlock
                r = run[nrun - 1]
                nrun -= 1
                used -= blocks[r]
                blocks[r] = 0
                status[r] = REJECTED
                reason[r] = R_KV_EXHAUSTED
                t_finish[r] = t
                if conc > 0 and n_released < n:
                    arrival[n_released] = t + think
                    n_released += 1
                continue
            if wn > 0:
                # nothing runs, yet the first request in policy order cannot be admitted: it never
                # will be (watermark, or a recompute target above the token budget)
                r = order[0]
                status[r] = REJECTED
                if batching != CHUNKED and pf_target[r] > max_tok:
                    reason[r] = R_TOKEN_BUDGET
                else:
                    reason[r] = R_KV_CAPACITY
                t_finish[r] = t
                k = 0
                for i in range(wn):
                    v = wq[(wh + i) % n]
                    if v != r:
                        wq[(wh + k) % n] = v
                        k += 1
                wn = k
                if conc > 0 and n_released < n:
                    arrival[n_released] = t + think
                    n_released += 1
                continue
            if na < n and arrival[na] <= horizon and arrival[na] < np.inf:
                if arrival[na] > t:
                    t = arrival[na]
                if t > max_sim:
                    break
                continue
            break
        # ---- 3. cost the step ----------------------------------------------------------------------------
        n_done = 0
        for i in range(npf):
            r = pf_req[i]
            if computed[r] + pf_new[i] >= pf_target[r]:
                n_done += 1
        dt = ST.step_time(prm, pf_past, pf_new, npf, float(n_done), dec_w, dec_s, dec_k, ndec, bd)
        t_end = t + dt
        for i in range(npf):
            r = pf_req[i]
            if np.isnan(t_first_sched[r]):
                t_first_sched[r] = t
        for i in range(n_real_dec):
            r = dec_req[i]
            if np.isnan(t_first_sched[r]):
                t_first_sched[r] = t
        if log_cap > 0 and step < log_cap:
            steplog[step, L_T] = t
            steplog[step, L_DT] = dt
            steplog[step, L_NPF] = npf
            steplog[step, L_PF_TOKENS] = pf_tokens
            steplog[step, L_NDEC] = n_real_dec
            steplog[step, L_DEC_TOKENS] = n_real_dec * w
            steplog[step, L_KV_USED] = used
        runstats[RS_BUSY] += dt
        runstats[RS_STEPS] += 1.0
        runstats[RS_BATCH_TOKENS] += pf_tokens + n_real_dec * w
        runstats[RS_BATCH_SEQS] += npf + n_real_dec
        runstats[RS_PF_TOKENS] += pf_tokens
        runstats[RS_DEC_TOKENS] += n_real_dec * w
        if used > runstats[RS_KV_PEAK]:
            runstats[RS_KV_PEAK] = used
        runstats[RS_KV_BLOCK_S] += used * dt
        runstats[RS_TC] += bd[ST.B_TC]
        runstats[RS_TM] += bd[ST.B_TM]
        runstats[RS_TN] += bd[ST.B_TN]
        runstats[RS_FLOPS] += bd[ST.B_FLOPS]
        runstats[RS_BYTES] += bd[ST.B_BYTES]
        runstats[RS_OUT_OF_RANGE] += bd[ST.B_OUT_OF_RANGE]

        # ---- 4. apply at t_end ---------------------------------------------------------------------------------
        any_finished = False
        for i in range(npf):
            r = pf_req[i]
            c = int(pf_new[i])
            computed[r] += c
            computed_pf[r] += c
            if computed[r] >= pf_target[r]:
                if caching and not pf_inserted[r]:
                    _cache_insert(r, prompt[r], hash_off, hash_ids, in_cache, lru_prev, lru_next, ends,
                                  cache_cap, hb)
                    pf_inserted[r] = True
                generated[r] += 1
                if np.isnan(t_first_tok[r]):
                    t_first_tok[r] = t_end
                t_last_tok[r] = t_end
                if generated[r] >= output[r]:
                    any_finished = True
        for i in range(n_real_dec):
            r = dec_req[i]
            generated[r] += 1
            t_last_tok[r] = t_end
            if generated[r] >= output[r]:
                any_finished = True
        if any_finished:
            k = 0
            for ii in range(nrun):
                r = run[ii]
                if status[r] == RUNNING and generated[r] >= output[r]:
                    status[r] = FINISHED
                    t_finish[r] = t_end
                    used -= blocks[r]
                    blocks[r] = 0
                    if conc > 0 and n_released < n:
                        arrival[n_released] = t_end + think
                        n_released += 1
                else:
                    run[k] = r
                    k += 1
            nrun = k
        if batching == STATIC and nrun == 0:
            n_static = 0
        t = t_end
        step += 1
        if t > max_sim or ((not drain) and t >= horizon):
            stop = True

    runstats[RS_END] = t
    for i in range(n):
        if status[i] == WAITING or status[i] == RUNNING:
            status[i] = UNFINISHED
    return step


def _simulate_points_impl(prm, sch, offsets, arrival_in, prompt, output, hash_off, hash_ids, n_hash,
                          status, reason, arrival, t_first_sched, t_first_tok, t_last_tok, t_finish,
                          generated, preempts, hit_first, computed_pf, runstats, steplog):
    """Many configuration points in one call: point q owns requests offsets[q]:offsets[q+1]
    (and hash CSR slice hash_off[offsets[q] + q : offsets[q+1] + q + 1], relative offsets)."""
    n_points = prm.shape[0]
    for q in numba.prange(n_points):
        a = offsets[q]
        z = offsets[q + 1]
        simulate_client(prm[q], sch[q], arrival_in[a:z], prompt[a:z], output[a:z],
                        hash_off[a + q:z + q + 1], hash_ids, n_hash[q],
                        status[a:z], reason[a:z], arrival[a:z], t_first_sched[a:z], t_first_tok[a:z],
                        t_last_tok[a:z], t_finish[a:z], generated[a:z], preempts[a:z], hit_first[a:z],
                        computed_pf[a:z], runstats[q], steplog[q])


simulate_points = numba.njit(parallel=True, cache=CACHE, nogil=True)(_simulate_points_impl)
simulate_points_serial = numba.njit(parallel=False, cache=CACHE, nogil=True)(_simulate_points_impl)
