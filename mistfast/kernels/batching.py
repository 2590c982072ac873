"""LLM batch formation (ENGINE_SEMANTICS.md): decodes and prefill chunks of the running requests,
admissions from the waiting queue in policy order (strict head of line), KV growth with
recompute preemption, and the rejections that break a deadlock."""
from __future__ import annotations

import numpy as np

from .._numba import jit_inline, jit_noalloc
from .engine import (CHUNKED, FCFS, FINISHED, MIXED, RESERVE_CLIP_TOKENS, R_KV_CAPACITY, R_KV_EXHAUSTED, R_TOKEN_BUDGET, REJECTED, RUNNING,
                     S_AGING, S_BATCHING, S_BLOCK, S_CHUNK, S_KV_RESERVE, S_MAX_SEQS, S_MAX_TOKENS, S_POLICY, S_PREEMPTION,
                     S_PREFILL_APART, S_SEQS_PER_STEP, S_STATIC_PAD, S_TOTAL_BLOCKS, S_WATERMARK, SPF, STATIC, WAITING, _blocks_for, _cache_lookup,
                     _cache_touch, _reserve_ratio)
from .layout import (C_FORM, CS_PREEMPT, CS_RECOMP, G_HASH_BLOCK, I_RESERVE_DECAYS, I_NDEC, I_NDEC_C, I_NPF, I_NREAL, I_NREQ, I_NRUN,
                     I_NSTATIC, I_PEND_PF, I_PFTOK, I_LEAVE_CHECK, I_LAZY_N, I_USED, I_WCOUNT, I_WHEAD, I_MB_N, I_MB_REQS, Q_BLOCKS, Q_COMPUTED, Q_FETCHED,
                     Q_GEN, Q_HIT, Q_IN_STEP, Q_MB, Q_OUT, Q_PF_TARGET, Q_PROMPT, Q_RESV, Q_WNEXT)
from .lazy import _place_decodes_lazily
from .queues import _sort_by_key, _wpush_front, _wremove


@jit_inline
def _preempt(v, c, req, cli, w_of):
    """Recompute preemption (vLLM): free v's blocks, back to the front of waiting."""
    if req.rq[v, Q_COMPUTED] >= req.rq[v, Q_PF_TARGET]:
        cli.ci[c, I_NDEC_C] -= 1
    cli.ci[c, I_USED] -= req.rq[v, Q_BLOCKS]
    cli.ci[c, I_PEND_PF] -= req.rq[v, Q_PF_TARGET] - req.rq[v, Q_COMPUTED]
    req.rq[v, Q_BLOCKS] = 0
    req.status[v] = WAITING
    req.rq[v, Q_PF_TARGET] = req.rq[v, Q_PROMPT] + w_of * req.rq[v, Q_GEN]
    req.rq[v, Q_COMPUTED] = 0
    req.rq[v, Q_HIT] = 0
    req.rq[v, Q_FETCHED] = 0
    cli.ci[c, I_PEND_PF] += req.rq[v, Q_PF_TARGET]
    req.preempts[v] += 1
    cli.stats[c, CS_PREEMPT] += 1.0
    cli.stats[c, CS_RECOMP] += req.rq[v, Q_PF_TARGET]
    _wpush_front(req.rq, cli.ci, c, v)


@jit_noalloc
def _add_decode(r, c, form, sch, req, cli, bat):
    """Grow r's KV for this decode (preempting the newest others if needed) and add it.
    Returns 1 added, 0 skipped, -1 r itself was preempted; bit 2 set when anyone was preempted."""
    w = req.branches[r]
    b = int(sch[S_BLOCK])
    total = int(sch[S_TOTAL_BLOCKS])
    need = _blocks_for(req.rq[r, Q_PROMPT] - req.rq[r, Q_HIT], req.rq[r, Q_GEN], w, b) - req.rq[r, Q_BLOCKS]
    pre = 0
    while need > total - cli.ci[c, I_USED]:
        if sch[S_PREEMPTION] <= 0.0:
            return 0
        victim = -1
        for jj in range(cli.ci[c, I_NRUN] - 1, -1, -1):
            v = bat.run[c, jj]
            if v != r and req.status[v] == RUNNING and req.rq[v, Q_IN_STEP] != form and req.rq[v, Q_MB] == 0:
                victim = v
                break
        if victim < 0:
            _preempt(r, c, req, cli, w)
            return -1
        _preempt(victim, c, req, cli, req.branches[victim])
        pre = 2
    if need > 0:
        cli.ci[c, I_USED] += need
        req.rq[r, Q_BLOCKS] += need
    req.rq[r, Q_IN_STEP] = form
    k = cli.ci[c, I_NDEC]
    bat.dec_req[c, k] = r
    bat.dec_w[c, k] = w
    if w == 1:
        bat.dec_s[c, k] = 0.0
        bat.dec_k[c, k] = req.rq[r, Q_PROMPT] + req.rq[r, Q_GEN] - 1
    else:
        bat.dec_s[c, k] = req.rq[r, Q_PROMPT]
        bat.dec_k[c, k] = req.rq[r, Q_GEN] - 1
    cli.ci[c, I_NDEC] = k + 1
    return 1 | pre


@jit_inline
def _compact_running(c, req, cli, bat):
    k = 0
    for ii in range(cli.ci[c, I_NRUN]):
        r = bat.run[c, ii]
        if req.status[r] == RUNNING:
            bat.run[c, k] = r
            k += 1
    cli.ci[c, I_NRUN] = k


@jit_inline
def _place_running_decodes(c, form, budget, npf, start, req, cli, bat):
    """The running requests that decode join the batch in running order, growing their KV (and
    preempting the newest others when it does not fit); per-step sequence limit (MIST): at most
    max_batch_size entries with the npf prefills. The scan starts at running index start (lazy
    decodes placed those before it). Returns (token budget left, preempted, the first index of the
    running list that may hold a partial prefill: every request before it was seen here and is not
    running or has its prompt computed)."""
    sch = cli.sch[c]
    batching = int(sch[S_BATCHING])
    b = int(sch[S_BLOCK])
    total = int(sch[S_TOTAL_BLOCKS])
    step_room = int(sch[S_MAX_SEQS]) - npf if sch[S_SEQS_PER_STEP] > 0.0 else cli.ci[c, I_NRUN] + 1
    max_seq = int(sch[S_MAX_SEQS])
    preempted = False
    n_run = cli.ci[c, I_NRUN]
    first_partial = -1   # (the scan's stop when it stops before seeing every request)
    for ii in range(start, n_run):
        if cli.ci[c, I_NDEC] >= step_room:
            first_partial = ii if first_partial < 0 else first_partial
            break
        r = bat.run[c, ii]
        if req.status[r] != RUNNING:
            continue
        if req.rq[r, Q_COMPUTED] < req.rq[r, Q_PF_TARGET]:
            first_partial = ii if first_partial < 0 else first_partial
            continue
        if req.rq[r, Q_GEN] < 1:
            continue
        if req.rq[r, Q_IN_STEP] == form or req.rq[r, Q_MB] != 0:   # (Q_MB: in a PP micro-batch in flight)
            continue
        if cli.ci[c, I_NDEC] + cli.ci[c, I_NPF] >= max_seq:
            first_partial = ii if first_partial < 0 else first_partial
            break   # (only a PP micro-batch can have more candidates than max_batch_size)
        w = req.branches[r]
        if (batching == CHUNKED or batching == MIXED) and budget < w:
            first_partial = ii if first_partial < 0 else first_partial
            break
        held = req.rq[r, Q_BLOCKS]
        if w == 1 and req.rq[r, Q_PROMPT] - req.rq[r, Q_HIT] + req.rq[r, Q_GEN] <= held * b \
                and cli.ci[c, I_USED] <= total:
            # the context still fits the blocks held (b - 1 decodes in b): no growth, and no
            # integer division (_blocks_for would give need <= 0, which takes this same path)
            need = 0
        else:
            need = _blocks_for(req.rq[r, Q_PROMPT] - req.rq[r, Q_HIT], req.rq[r, Q_GEN], w, b) - held
        if need <= total - cli.ci[c, I_USED]:
            # fast path, written out here: a helper call per decode costs array
            # reference counting on every token
            if need > 0:
                cli.ci[c, I_USED] += need
                req.rq[r, Q_BLOCKS] += need
            req.rq[r, Q_IN_STEP] = form
            k = cli.ci[c, I_NDEC]
            bat.dec_req[c, k] = r
            bat.dec_w[c, k] = w
            if w == 1:
                bat.dec_s[c, k] = 0.0
                bat.dec_k[c, k] = req.rq[r, Q_PROMPT] + req.rq[r, Q_GEN] - 1
            else:
                bat.dec_s[c, k] = req.rq[r, Q_PROMPT]
                bat.dec_k[c, k] = req.rq[r, Q_GEN] - 1
            cli.ci[c, I_NDEC] = k + 1
            budget -= w
            continue
        res = _add_decode(r, c, form, sch, req, cli, bat)
        if res & 2 or res < 0:
            preempted = True
        if res & 1 and res > 0:
            budget -= w
    if first_partial < 0:
        first_partial = n_run
    if preempted:
        _compact_running(c, req, cli, bat)  # victims may be re-admitted below
        first_partial = 0                   # (the running list changed)
    return budget, preempted, first_partial


@jit_inline
def _place_decodes(c, form, budget, npf, req, cli, bat):
    """The running decodes join the batch: lazily when c keeps lazy decodes (kernels/lazy.py), the
    rest (or all, when the lazy placement could not place them) one by one. Returns as
    _place_running_decodes."""
    start = 0
    if cli.ci[c, I_LAZY_N] > 0:
        done, budget, start = _place_decodes_lazily(c, form, budget, req, cli, bat)
        if done:
            return budget, False, start
    return _place_running_decodes(c, form, budget, npf, start, req, cli, bat)


@jit_inline
def _place_partial_prefills(c, form, budget, npf, first, req, cli, bat):
    """CHUNKED: running requests still prefilling get their next chunk, within the token budget.
    The running list is scanned from index first (the decode placement saw none before it).
    Returns (budget left, prefill entries)."""
    per_step = cli.sch[c, S_SEQS_PER_STEP] > 0.0
    max_seq = int(cli.sch[c, S_MAX_SEQS])
    for ii in range(first, cli.ci[c, I_NRUN]):
        if budget <= 0 or (per_step and npf + cli.ci[c, I_NDEC] >= max_seq):
            break
        r = bat.run[c, ii]
        if req.status[r] != RUNNING or req.rq[r, Q_COMPUTED] >= req.rq[r, Q_PF_TARGET] or req.rq[r, Q_MB] != 0:
            continue
        if cli.ci[c, I_NDEC] + npf >= int(cli.sch[c, S_MAX_SEQS]):
            break   # (only a PP micro-batch can have more candidates than max_batch_size)
        cc = req.rq[r, Q_PF_TARGET] - req.rq[r, Q_COMPUTED]
        if cc > budget:
            cc = budget
        bat.pf_req[c, npf] = r
        bat.pf_past[c, npf] = req.rq[r, Q_COMPUTED]
        bat.pf_new[c, npf] = cc
        req.rq[r, Q_IN_STEP] = form
        npf += 1
        budget -= cc
        cli.ci[c, I_PFTOK] += cc
    return budget, npf


@jit_noalloc
def _sort_waiting(c, t, nw, req, cli, bat):
    """SPF / LWL: the waiting queue's nw requests in bat.order, sorted (aged requests first, in
    queue order). FCFS walks the queue itself and stops at the head-of-line block."""
    sch = cli.sch[c]
    r = cli.ci[c, I_WHEAD]
    for i in range(nw):
        bat.order[i] = r
        r = req.rq[r, Q_WNEXT]
    for i in range(nw):
        r = bat.order[i]
        if t - req.arrival[r] > sch[S_AGING] or req.rq[r, Q_RESV] > 0:   # (reserved KV: first, as if aged)
            bat.keys[i] = i - 4.0e15
        elif int(sch[S_POLICY]) == SPF:
            bat.keys[i] = req.rq[r, Q_PROMPT] * (req.rq.shape[0] + 1.0) + r
        else:
            work_left = (req.rq[r, Q_PF_TARGET] - req.rq[r, Q_COMPUTED] + req.rq[r, Q_OUT]
                         - req.rq[r, Q_GEN])
            bat.keys[i] = work_left * (req.rq.shape[0] + 1.0) + r
    _sort_by_key(bat.order, bat.keys, nw)


@jit_noalloc
def _remaining_outputs(c, req, cli, bat):
    """Σ over c's running requests of their output tokens still to emit (all branches), each
    clipped at SGLang's 4,096 (the admission reserve, ENGINE_SEMANTICS.md)."""
    total = 0
    for ii in range(cli.ci[c, I_NRUN]):
        r = bat.run[c, ii]
        if req.status[r] == RUNNING:
            left = req.rq[r, Q_OUT] - req.rq[r, Q_GEN]
            total += req.branches[r] * (left if left < RESERVE_CLIP_TOKENS else RESERVE_CLIP_TOKENS)
    return total


@jit_noalloc
def _place_decodes_apart(c, form, budget, npf, req, cli, bat):
    """The running decodes of a step that placed no prefill (prefill apart, SGLang's default
    scheduler): out of line, so `_form_batch`'s common path keeps one inlined placement."""
    return _place_decodes(c, form, budget, npf, req, cli, bat)


@jit_inline
def _admit_waiting(c, form, budget, npf, nw, sorted_order, req, cli, bat, kv, lp):
    """Admissions in policy order, strict head of line: the first request that does not fit (sequence
    limit, token budget, KV watermark) stops the scan. A prefix-cache or fetched-KV hit shortens
    the prompt to compute. Per-step sequence limit (MIST): max_batch_size bounds the entries of this
    step (prefills and decodes), not the running set; a decode-only arrival enters running whatever
    the step holds. Returns (budget left, prefill entries)."""
    sch = cli.sch[c]
    batching = int(sch[S_BATCHING])
    max_seq = int(sch[S_MAX_SEQS])
    per_step = sch[S_SEQS_PER_STEP] > 0.0
    b = int(sch[S_BLOCK])
    total = int(sch[S_TOTAL_BLOCKS])
    watermark = int(sch[S_WATERMARK])
    hb = int(lp.g[G_HASH_BLOCK])
    slot = kv.cache_slot[c]
    nxt = cli.ci[c, I_WHEAD]
    # SGLang's admission reserve: KV tokens set aside for the running requests' outputs (at
    # new_token_ratio) and for the whole outputs of the prompts this scan admits
    reserve = sch[S_KV_RESERVE] > 0.0
    set_aside = 0.0
    if reserve and nw > 0:
        set_aside = _reserve_ratio(cli.ci[c, I_RESERVE_DECAYS]) * _remaining_outputs(c, req, cli, bat)
    for i in range(nw):
        if sorted_order:
            r = bat.order[i]
        else:
            r = nxt
            nxt = req.rq[r, Q_WNEXT]  # read before an admission unlinks r
        if not per_step and cli.ci[c, I_NRUN] - cli.ci[c, I_MB_REQS] >= max_seq:   # (PP: requests in flight not counted)
            break
        if batching == CHUNKED and budget <= 0:
            break
        w = req.branches[r]
        m = 0
        h = 0
        if req.rq[r, Q_FETCHED] > 0:
            h = req.rq[r, Q_FETCHED]       # KV fetched from a tier: held in this client's blocks
        elif slot >= 0:
            m, h = _cache_lookup(r, req.rq[r, Q_PROMPT], req.hash_off, req.hash_ids, kv.in_cache[slot], hb)
        cc = req.rq[r, Q_PF_TARGET] - h
        if req.rq[r, Q_COMPUTED] >= req.rq[r, Q_PF_TARGET]:
            cc = 0                      # decode-only arrival (disaggregated)
        if batching != CHUNKED and cc > budget:
            break
        if per_step and cc > 0 and npf + cli.ci[c, I_NDEC] >= max_seq:
            break
        cached = h if req.rq[r, Q_FETCHED] == 0 else 0
        if req.rq[r, Q_COMPUTED] >= req.rq[r, Q_PF_TARGET]:
            need = _blocks_for(req.rq[r, Q_PROMPT], max(req.rq[r, Q_GEN], 1), w, b)
        else:
            need = _blocks_for(req.rq[r, Q_PROMPT] - cached, req.rq[r, Q_GEN] + 1, w, b)
        if req.rq[r, Q_RESV] == 0 and total - cli.ci[c, I_USED] - need < watermark:
            break  # (KV backpressure: a request with reserved blocks always has room)
        if reserve:
            left = req.rq[r, Q_OUT] - req.rq[r, Q_GEN]
            out_tok = w * (left if left < RESERVE_CLIP_TOKENS else RESERVE_CLIP_TOKENS)
            if not cc + out_tok < (total - cli.ci[c, I_USED]) * b - set_aside:
                break
            set_aside += out_tok
        # admit
        _wremove(req.rq, cli.ci, c, r)
        if m > 0:
            _cache_touch(r, m, req.hash_off, req.hash_ids, kv.lru_prev[slot], kv.lru_next[slot],
                         kv.lru_ends[slot])
        if cc == 0:
            cli.ci[c, I_NDEC_C] += 1
            cli.ci[c, I_LEAVE_CHECK] = 1   # (it may have no token left to emit)
        else:
            req.rq[r, Q_HIT] = cached
            if req.hit_first[r] < 0:
                req.hit_first[r] = h
            req.rq[r, Q_COMPUTED] = h
            cli.ci[c, I_PEND_PF] -= h
        cli.ci[c, I_USED] += need - req.rq[r, Q_RESV]
        req.rq[r, Q_RESV] = 0
        req.rq[r, Q_BLOCKS] = need
        req.status[r] = RUNNING
        bat.run[c, cli.ci[c, I_NRUN]] = r
        cli.ci[c, I_NRUN] += 1
        if batching == STATIC:
            bat.static_batch[c, cli.ci[c, I_NSTATIC]] = r
            cli.ci[c, I_NSTATIC] += 1
        if cc == 0:
            # a decode-only arrival (disaggregated): under CHUNKED the decodes were placed
            # before admissions, so place it now; other strategies add decodes below
            if batching == CHUNKED and budget >= w and not (per_step and npf + cli.ci[c, I_NDEC] >= max_seq) \
                    and not sch[S_PREFILL_APART] > 0.0:   # (prefill apart: decodes only in a step without prefill)
                res = _add_decode(r, c, form, sch, req, cli, bat)
                if res > 0 and res & 1:
                    budget -= w
            continue
        if batching == CHUNKED and cc > budget:
            cc = budget
        bat.pf_req[c, npf] = r
        bat.pf_past[c, npf] = h
        bat.pf_new[c, npf] = cc
        req.rq[r, Q_IN_STEP] = form
        npf += 1
        budget -= cc
        cli.ci[c, I_PFTOK] += cc
    return budget, npf


@jit_noalloc
def _pad_static_batch(c, req, cli, bat):
    """Padded static batching: finished members keep costing a decode slot."""
    for ii in range(cli.ci[c, I_NSTATIC]):
        r = bat.static_batch[c, ii]
        st = req.status[r]
        if st == FINISHED or (st != RUNNING and st != WAITING and st != REJECTED):
            k = cli.ci[c, I_NDEC]
            bat.dec_req[c, k] = -1
            bat.dec_w[c, k] = 1.0
            bat.dec_s[c, k] = 0.0
            bat.dec_k[c, k] = req.rq[r, Q_PROMPT] + req.rq[r, Q_GEN] - 1
            cli.ci[c, I_NDEC] = k + 1


@jit_noalloc
def _reject_to_unblock(c, t, nw, sorted_order, req, cli, bat):
    """Nothing could run and nobody was preempted. With running requests, nobody can grow: the
    newest is aborted (KV exhausted). Else the first waiting request in policy order can never be
    admitted (watermark, or a recompute target above the token budget): it is rejected.
    Returns 2 (someone left: form again) or 4 (nothing to run)."""
    if cli.ci[c, I_MB_N] > 0:
        return 4   # PP micro-batches in flight will free blocks and requests: wait for them
    sch = cli.sch[c]
    if cli.ci[c, I_NRUN] > 0:
        r = bat.run[c, cli.ci[c, I_NRUN] - 1]
        cli.ci[c, I_NRUN] -= 1
        if req.rq[r, Q_COMPUTED] >= req.rq[r, Q_PF_TARGET]:
            cli.ci[c, I_NDEC_C] -= 1
        cli.ci[c, I_USED] -= req.rq[r, Q_BLOCKS]
        cli.ci[c, I_PEND_PF] -= req.rq[r, Q_PF_TARGET] - req.rq[r, Q_COMPUTED]
        cli.ci[c, I_NREQ] -= 1
        req.rq[r, Q_BLOCKS] = 0
        req.status[r] = REJECTED
        req.reason[r] = R_KV_EXHAUSTED
        req.t_finish[r] = t
        return 2
    if nw > 0 and cli.ci[c, I_USED] == 0:
        # (blocks in use with nothing running are held or reserved for a KV-backpressure transfer:
        # they will be freed, so the head is not hopeless)
        r = bat.order[0] if sorted_order else cli.ci[c, I_WHEAD]
        _wremove(req.rq, cli.ci, c, r)
        cli.ci[c, I_PEND_PF] -= req.rq[r, Q_PF_TARGET] - req.rq[r, Q_COMPUTED]
        cli.ci[c, I_NREQ] -= 1
        req.status[r] = REJECTED
        if int(sch[S_BATCHING]) != CHUNKED and req.rq[r, Q_PF_TARGET] > int(sch[S_MAX_TOKENS]):
            req.reason[r] = R_TOKEN_BUDGET
        else:
            req.reason[r] = R_KV_CAPACITY
        req.t_finish[r] = t
        return 2
    return 4


@jit_noalloc
def _form_batch(c, t, req, cli, bat, kv, lp):
    """One batch for LLM client c at time t (ENGINE_SEMANTICS.md). Returns
    1: a batch was formed; 2: a request was aborted/rejected (it left; form again);
    3: requests were preempted and the batch is empty (form again); 4: nothing to run."""
    sch = cli.sch[c]
    lp.ctr[C_FORM] += 1
    form = lp.ctr[C_FORM]
    batching = int(sch[S_BATCHING])
    budget = int(sch[S_CHUNK]) if batching == CHUNKED else int(sch[S_MAX_TOKENS])
    cli.ci[c, I_NPF] = 0
    cli.ci[c, I_NDEC] = 0
    cli.ci[c, I_PFTOK] = 0
    preempted = False
    npf = 0
    nw = 0
    sorted_order = False
    first_partial = 0
    # CHUNKED places the running decodes (then partial prefills) before admissions; the other
    # strategies admit whole prompts first and add decodes after (MODEL.md §5.2). CHUNKED with
    # prefill apart (SGLang) places partial prefills and admissions first, decodes only if none.
    # (prefill apart: the decodes after the loop, through an out-of-line copy of the placement, so
    # the common path keeps its fixed two-part loop)
    apart = batching == CHUNKED and sch[S_PREFILL_APART] > 0.0
    for part in range(2):
        if (part == 0) == (batching == CHUNKED):
            if (batching == CHUNKED and not apart) or batching == MIXED or (npf == 0 and part > 0):
                budget, preempted, first_partial = _place_decodes(c, form, budget, npf, req, cli, bat)
            if batching == CHUNKED:
                budget, npf = _place_partial_prefills(c, form, budget, npf, first_partial, req, cli, bat)
            continue
        nw = cli.ci[c, I_WCOUNT]
        sorted_order = int(sch[S_POLICY]) != FCFS and nw > 1
        if sorted_order:
            _sort_waiting(c, t, nw, req, cli, bat)
        if not (batching == STATIC and cli.ci[c, I_NRUN] > 0):
            budget, npf = _admit_waiting(c, form, budget, npf, nw, sorted_order, req, cli, bat, kv, lp)
        cli.ci[c, I_NPF] = npf
    if apart and npf == 0:
        budget, preempted, first_partial = _place_decodes_apart(c, form, budget, np.int64(npf), req, cli, bat)
    cli.ci[c, I_NREAL] = cli.ci[c, I_NDEC]
    # SGLang's new_token_ratio (admission reserve): a retraction resets it, a decode batch decays it
    # (counted for every client, read only with the reserve on; decode runs, off for such a
    # client, skip these formations)
    if preempted:
        cli.ci[c, I_RESERVE_DECAYS] = 0
    elif npf == 0 and cli.ci[c, I_NDEC] > 0:
        cli.ci[c, I_RESERVE_DECAYS] += 1
    if batching == STATIC and sch[S_STATIC_PAD] > 0.0 and npf == 0 and cli.ci[c, I_NDEC] > 0:
        _pad_static_batch(c, req, cli, bat)
    if preempted:
        _compact_running(c, req, cli, bat)
    if npf + cli.ci[c, I_NDEC] > 0:
        return 1
    if preempted:
        return 3
    if cli.ci[c, I_NRUN] == 0:
        cli.ci[c, I_RESERVE_DECAYS] = 0   # (idle: SGLang resets new_token_ratio)
    # (np.int64, np.bool_: nw = 0 and sorted_order = False would also type as literals and compile
    # _reject_to_unblock a second time)
    return _reject_to_unblock(c, t, np.int64(nw), np.bool_(sorted_order), req, cli, bat)
