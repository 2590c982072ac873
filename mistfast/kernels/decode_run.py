"""Decode runs: a client whose batch is every running request, all decoding, advances through the
steps that repeat that batch with O(1) work per step (ENGINE_SEMANTICS.md, "Decode runs")."""
from __future__ import annotations

import numpy as np

from .._numba import jit_inline, jit_noalloc
from . import steptime as ST
from .engine import (CHUNKED, FCFS, FINISHED, L_DEC_TOKENS, L_DT, L_KV_USED, L_NDEC, L_NPF, L_PF_TOKENS, L_T, N_LOG,
                     S_AGING, S_BATCHING, S_BLOCK, S_CHUNK, S_MAX_SEQS, S_KV_RESERVE, S_POLICY, S_PREFILL_APART, S_SEQS_PER_STEP, S_TOTAL_BLOCKS,
                     STATIC)
from .layout import (C_FORM, C_NLOG, CS_BATCH_SEQS, CS_BATCH_TOKENS, CS_BUSY, CS_DEC_SEQ_S, CS_DEC_SEQS,
                     CS_DEC_TOKENS, CS_FINISH_STEP_START, CS_KV_BLOCK_S, CS_KV_PEAK, CS_RUN_LEAVES, CS_RUN_STEPS,
                     CS_STEPS, F_COUNT, F_LAZY_T, F_NEXT, F_START, G_CONC, G_DRAIN, G_HORIZON, G_LOG_CAP, G_MAX_SIM, I_LAZY_CTX, I_LAZY_DONE, I_LAZY_F, I_LAZY_FORM, I_LAZY_LEFT, I_LAZY_N,
                     I_LAZY_OK, I_LAZY_READ, I_LAZY_W, I_MIST,
                     I_NDEC, I_NDEC_C, I_NREAL, I_NREQ, I_NRUN, I_USED, I_WCOUNT, I_WHEAD, LOG_COLS, Q_BLOCKS, Q_CUR,
                     Q_GEN, Q_HIT, Q_IN_STEP, Q_OUT, Q_PROMPT, Q_WNEXT)
from .lazy import _keep_entry
from .llm_step import _add_step_cost
from .stages import _next_stage


@jit_inline
def _run_catch_up(r, i, n_tok, n_grow, t_tok, b, req, stg, bat):
    """Bring request r (batch entry i of a decode run) up to date: n_tok tokens emitted (the last
    at t_tok) and the KV growth of the run's first n_grow formations; returns its blocks."""
    req.rq[r, Q_GEN] += n_tok
    if stg.flags[req.rq[r, Q_CUR]] & F_COUNT:
        req.generated[r] += n_tok
        req.t_last_tok[r] = t_tok
    blocks = req.rq[r, Q_BLOCKS]
    if bat.run_amt[i] > 0 and n_grow >= bat.run_j1[i]:
        blocks += bat.run_amt[i] * ((n_grow - bat.run_j1[i]) // b + 1)
    return blocks


@jit_inline
def _ring_slot(j, b):
    """j % b (b > 0) without an integer division when 0 <= j < 2 b, the usual case."""
    if 0 <= j < b:
        return j
    if b <= j < 2 * b:
        return j - b
    return j % b


@jit_inline
def _oldest_unaged_arrival(c, w_sum, req, cli):
    """Would the next formation admit someone? (strict head-of-line scan, ENGINE_SEMANTICS.md)
    Free blocks only shrink during the run and the sequence/token budgets stay as they were, so a
    scan that stopped at a request that did not fit stops there again, unless the waiting order
    changes: under SPF/LWL a request that reaches its aging time moves to the front. Returns the
    arrival time of the oldest waiting request not yet aged (inf: none, or FCFS)."""
    sch = cli.sch[c]
    batching = int(sch[S_BATCHING])
    t_age = np.inf
    if cli.ci[c, I_WCOUNT] > 0 and int(sch[S_POLICY]) != FCFS and cli.ci[c, I_NRUN] < int(sch[S_MAX_SEQS]) and not (
            batching == CHUNKED and int(sch[S_CHUNK]) - w_sum <= 0 and not sch[S_PREFILL_APART] > 0.0):
        # (prefill apart: admissions scan with the whole chunk, before the decodes)
        r = cli.ci[c, I_WHEAD]
        t0 = cli.cf[c, F_START]
        while r >= 0:
            if not (t0 - req.arrival[r] > sch[S_AGING]) and req.arrival[r] < t_age:
                t_age = req.arrival[r]
            r = req.rq[r, Q_WNEXT]
    return t_age


@jit_inline
def _run_entries(c, n_dec, b, req, cli, bat):
    """Per request of the batch: tokens left, first KV growth and the growth ring (blocks needed
    per step, mod b). Returns (fewest tokens left, first step that is not a plain repeat, the
    attention sums a_ctx and a_read)."""
    prm = cli.prm[c]
    dec_req = bat.dec_req[c]
    big = np.iinfo(np.int64).max
    left = big
    j_irregular = big
    a_ctx = 0
    a_read = 0
    shared_once = prm[ST.P_SHARED_ONCE] > 0.0
    genz = prm[ST.P_GENZ] > 0.0
    for j in range(b):
        bat.ring[j] = 0
    for i in range(n_dec):
        r = dec_req[i]
        w = int(bat.dec_w[c, i])
        s = int(bat.dec_s[c, i])
        k = int(bat.dec_k[c, i])
        a_ctx += w * (s + k + 1)
        a_read += (s if shared_once else s * w) + w * (k + 1)
        g0 = req.rq[r, Q_GEN]
        if req.rq[r, Q_OUT] - g0 < left:
            left = req.rq[r, Q_OUT] - g0
        if genz and (ST.genz_decode_compute_bound(prm, w, s, k)
                     or ST.genz_decode_compute_bound(prm, w, s, k + req.rq[r, Q_OUT] - g0)):
            j_irregular = 1  # GenZ compat sums memory-bound decodes only: ordinary steps
        pu = req.rq[r, Q_PROMPT] - req.rq[r, Q_HIT]
        b0 = req.rq[r, Q_BLOCKS]
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
        bat.run_j1[i] = j1
        bat.run_amt[i] = amt
        bat.run_j0[i] = 0
        bat.run_rem[i] = req.rq[r, Q_OUT] - g0
        if j1 <= b and amt == w:
            bat.ring[_ring_slot(j1, b)] += amt
        else:
            # more blocks held than the context needs: no admission rule allocates that today,
            # but should one, the run stops before this request's first growth (ordinary step)
            bat.run_amt[i] = 0
            if j1 < j_irregular:
                j_irregular = j1
    return left, j_irregular, a_ctx, a_read


@jit_inline
def _finishers_may_leave(c, j, n_dec, req, stg, bat):
    """Requests emit their last token at step j: the run goes on without them only if each leaves
    the system (last stage: no routing, no transfer) and others remain."""
    n_left = 0
    for i in range(n_dec):
        if bat.run_rem[i] == j:
            r = bat.dec_req[c, i]
            n_left += 1
            if _next_stage(r, req.rq[r, Q_CUR], stg) < stg.off[r + 1]:
                return False  # a later stage follows: routing and transfers (ordinary step)
    return n_left < n_dec


@jit_inline
def _finishers_leave(c, j, te, t_start, w_sum, a_ctx, a_read, used, req, stg, cli, bat):
    """The requests emitting their last token at te (step j) leave (ENGINE_SEMANTICS.md step 4), in
    running order, before the formation; the others close ranks. Returns the batch's new
    (n_dec, w_sum, a_ctx, a_read, used)."""
    shared_once = cli.prm[c, ST.P_SHARED_ONCE] > 0.0
    b = int(cli.sch[c, S_BLOCK])
    n_dec = cli.ci[c, I_NDEC]   # (the run keeps it equal to its own count)
    dec_req = bat.dec_req[c]
    dec_w = bat.dec_w[c]
    dec_s = bat.dec_s[c]
    dec_k = bat.dec_k[c]
    k2 = 0
    for i in range(n_dec):
        if bat.run_rem[i] != j:
            if k2 < i:
                _keep_entry(c, i, k2, dec_req[i], bat)
            k2 += 1
            continue
        r = dec_req[i]
        w = int(dec_w[i])
        s = int(dec_s[i])
        kj = int(dec_k[i]) + j      # its context at this formation, had it stayed
        a_ctx -= w * (s + kj + 1)
        a_read -= (s if shared_once else s * w) + w * (kj + 1)
        w_sum -= w
        if bat.run_amt[i] > 0:
            bat.ring[_ring_slot(bat.run_j1[i], b)] -= bat.run_amt[i]
        # j tokens (the last one now), the growth of formations 1 .. j - 1
        used -= _run_catch_up(r, i, j, j - 1, te, b, req, stg, bat)
        req.rq[r, Q_BLOCKS] = 0
        cli.ci[c, I_NDEC_C] -= 1
        # _leave for the last stage: the request finishes
        stg.t_exit[req.rq[r, Q_CUR]] = te
        cli.ci[c, I_NREQ] -= 1
        req.status[r] = FINISHED
        req.t_finish[r] = te
        cli.stats[c, CS_RUN_LEAVES] += 1.0
        cli.stats[c, CS_FINISH_STEP_START] = t_start  # the step ending at te started then
    cli.ci[c, I_NRUN] = k2
    cli.ci[c, I_NDEC] = k2
    cli.ci[c, I_NREAL] = k2
    return k2, w_sum, a_ctx, a_read, used


@jit_inline
def _fewest_tokens_left(c, n_dec, req, bat):
    big = np.iinfo(np.int64).max
    left = big
    for i in range(n_dec):
        if bat.run_rem[i] < left:
            left = bat.run_rem[i]
    return left


@jit_inline
def _run_fixed_part(c, w_sum, cli, bat):
    """The part of the step time that stays for the run: every op but attention (as step_time does
    for this batch: T = R = w_sum, t_pf = 0), windowed attention included."""
    prm = cli.prm[c]
    w_f = float(w_sum)
    bat.bd[ST.X_CALLER] = c   # (step_fixed's memo key: after the step just formed, a hit)
    ST.step_fixed(prm, w_f, w_f, 0.0, bat.bd)
    if prm[ST.P_N_WIN] > 0.0:
        ST.add_window_attention_full(prm, w_sum, bat.bd)
    return w_f


@jit_inline
def _log_run_step(c, te, dt, n_dec, w_f, used, bat, lp):
    """One row of the step log (while it has room), as the ordinary step writes it."""
    nlog = lp.ctr[C_NLOG]
    if nlog >= int(lp.g[G_LOG_CAP]):
        return
    lp.steplog[nlog, L_T] = te
    lp.steplog[nlog, L_DT] = dt
    lp.steplog[nlog, L_NPF] = 0
    lp.steplog[nlog, L_PF_TOKENS] = 0
    lp.steplog[nlog, L_NDEC] = n_dec
    lp.steplog[nlog, L_DEC_TOKENS] = w_f
    lp.steplog[nlog, L_KV_USED] = used
    lp.steplog[nlog, N_LOG] = c
    jj = LOG_COLS
    for i in range(n_dec):
        if jj < lp.steplog.shape[1]:
            lp.steplog[nlog, jj] = bat.dec_req[c, i]
            jj += 1
    lp.ctr[C_NLOG] = nlog + 1


@jit_inline
def _book_run_step(c, dt, n_dec, w_f, used, cli, bat):
    """The same accumulations, in the same order, as the ordinary step (llm_step._book_step)."""
    cli.stats[c, CS_BUSY] += dt
    cli.stats[c, CS_STEPS] += 1.0
    cli.stats[c, CS_RUN_STEPS] += 1.0
    cli.stats[c, CS_BATCH_TOKENS] += w_f   # (+ 0 prefill tokens)
    cli.stats[c, CS_BATCH_SEQS] += n_dec
    cli.stats[c, CS_DEC_TOKENS] += w_f
    cli.stats[c, CS_DEC_SEQS] += n_dec
    cli.stats[c, CS_DEC_SEQ_S] += n_dec * dt
    if used > cli.stats[c, CS_KV_PEAK]:
        cli.stats[c, CS_KV_PEAK] = used
    cli.stats[c, CS_KV_BLOCK_S] += used * dt
    _add_step_cost(cli.stats, c, bat.bd)


@jit_inline
def _run_catch_up_all(c, J, t_start, te, b, n_dec, req, stg, cli, bat, lp):
    """Per-request state after J applied steps and the formation of the step now in flight."""
    form = lp.ctr[C_FORM]
    for i in range(n_dec):
        r = bat.dec_req[c, i]
        req.rq[r, Q_BLOCKS] = _run_catch_up(r, i, J, J, t_start, b, req, stg, bat)
        req.rq[r, Q_IN_STEP] = form
        bat.dec_k[c, i] += J
    cli.cf[c, F_START] = t_start
    cli.cf[c, F_NEXT] = te


@jit_inline
def _run_stays_lazy(c, J0, J, t_start, te, n_dec, w_sum, a_ctx, a_read, left, cli, lp):
    """Instead of the catch-up: the run's entries stay members of lazy decodes (kernels/lazy.py), their
    latest formation J (the step in flight), with the run's sums."""
    cli.ci[c, I_LAZY_N] = n_dec
    cli.ci[c, I_LAZY_F] = J
    cli.ci[c, I_LAZY_DONE] = 0
    cli.ci[c, I_LAZY_FORM] = lp.ctr[C_FORM]
    cli.ci[c, I_LAZY_W] = w_sum
    cli.ci[c, I_LAZY_CTX] = a_ctx
    cli.ci[c, I_LAZY_READ] = a_read
    cli.ci[c, I_LAZY_LEFT] = left
    if J > J0:
        cli.cf[c, F_LAZY_T] = t_start   # the members' last tokens: the end of step J - 1
        cli.cf[c, F_START] = t_start
        cli.cf[c, F_NEXT] = te


@jit_noalloc
def _decode_run(c, t_other, req, stg, cli, bat, lp):
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
    horizon = lp.g[G_HORIZON]
    max_sim = lp.g[G_MAX_SIM]
    drain = lp.g[G_DRAIN] > 0.0
    prm = cli.prm[c]
    sch = cli.sch[c]
    if cli.ci[c, I_MIST] > 0 or prm[ST.P_MIST_MEMO] > 0.0:
        return  # MIST token loads / the MIST memo are taken at every formation: ordinary steps
    if sch[S_SEQS_PER_STEP] + sch[S_KV_RESERVE] > 0.0:
        # MIST's per-step sequence limit: which decodes run changes as requests finish; SGLang's
        # admission reserve shrinks every decode step: an admission may come without an event.
        # (one test of both non-negative flags: a second early return cost ~4 % of the kernel per point)
        return
    te = cli.cf[c, F_NEXT]
    if not (te < t_other) or te > max_sim or (not drain and te >= horizon):
        return  # the step in flight ends at or after the next outside event: nothing repeats
    n_dec = cli.ci[c, I_NDEC]
    if prm[ST.P_N_WIN] > 0.0 and not ST.window_run_ok(prm, bat.dec_k[c], n_dec):
        return  # windowed attention that still changes from step to step: step by step
    b = int(sch[S_BLOCK])
    total = int(sch[S_TOTAL_BLOCKS])
    lazy = cli.ci[c, I_LAZY_N] > 0
    if lazy:
        # lazy decodes (kernels/lazy.py): the batch is the members, the run's entries already
        w_sum = cli.ci[c, I_LAZY_W]
        J0 = cli.ci[c, I_LAZY_F]
        left = cli.ci[c, I_LAZY_LEFT]
        j_irregular = np.iinfo(np.int64).max
        a_ctx = cli.ci[c, I_LAZY_CTX]
        a_read = cli.ci[c, I_LAZY_READ]
    else:
        w_sum = np.int64(0)   # not a literal 0: add_window_attention_full would compile twice (docs/kernels.md "Compile time")
        for i in range(n_dec):
            w_sum += int(bat.dec_w[c, i])
        J0 = 0
    t_age = _oldest_unaged_arrival(c, w_sum, req, cli)
    # A request emitting its last token leaves; the run goes on without it only if its blocks and
    # its sequence slot cannot admit anybody (nobody waits), no closed-loop user is released by it
    # (and _finishers_may_leave). STATIC batches end as a whole instead.
    through_finish = cli.ci[c, I_WCOUNT] == 0 and not lp.g[G_CONC] > 0.0 and int(sch[S_BATCHING]) != STATIC
    if not lazy:
        left, j_irregular, a_ctx, a_read = _run_entries(c, n_dec, b, req, cli, bat)
        if left < 1:
            # a request with no token left (e.g. a 1-token output after a remote prefill) leaves at the ordinary step
            return
    # ---- the run: iteration j ends the step in flight at te and forms the same batch again ------
    w_f = _run_fixed_part(c, w_sum, cli, bat)
    used = cli.ci[c, I_USED]
    t_start = cli.cf[c, F_START]
    J = J0
    j_slot = J0 % b if J0 > 0 else 0   # j % b, kept without a division per step
    while True:
        j = J + 1
        j_slot = j_slot + 1 if j_slot + 1 < b else 0
        # anything else happening at or before te ends the run
        if not (te < t_other) or te > max_sim or (not drain and te >= horizon):
            break
        if j >= j_irregular or te - t_age > sch[S_AGING]:
            break
        if j >= left:
            # requests emit their last token at te
            if not (through_finish and _finishers_may_leave(c, j, n_dec, req, stg, bat)):
                break
            a_ctx += w_sum
            a_read += w_sum
            n_dec, w_sum, a_ctx, a_read, used = _finishers_leave(c, j, te, t_start, w_sum, a_ctx, a_read, used,
                                                                 req, stg, cli, bat)
            w_f = _run_fixed_part(c, w_sum, cli, bat)
            left = _fewest_tokens_left(c, n_dec, req, bat)
        else:
            a_ctx += w_sum
            a_read += w_sum
        grow = bat.ring[j_slot]
        if used + grow > total:
            # someone would be preempted: the ordinary step forms this batch. (If requests left
            # just now, that is already done: it applies the step of those that stay.)
            a_ctx -= w_sum   # (the sums of the step in flight, for lazy decodes)
            a_read -= w_sum
            break
        used += grow
        lp.ctr[C_FORM] += 1
        dt = ST.decode_step_finish(prm, w_f, float(a_ctx), float(a_read), n_dec, bat.bd)
        _log_run_step(c, te, dt, n_dec, w_f, used, bat, lp)
        _book_run_step(c, dt, n_dec, w_f, used, cli, bat)
        t_start = te
        te = te + dt
        J = j
    cli.ci[c, I_USED] = used  # (requests that left gave their blocks back even when J = 0)
    if cli.ci[c, I_LAZY_OK] > 0 and j_irregular == np.iinfo(np.int64).max:
        _run_stays_lazy(c, J0, J, t_start, te, n_dec, w_sum, a_ctx, a_read, left, cli, lp)
    elif J > 0:
        _run_catch_up_all(c, J, t_start, te, b, n_dec, req, stg, cli, bat, lp)
