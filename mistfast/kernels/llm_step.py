"""One step of an LLM client, from both ends (ENGINE_SEMANTICS.md): at its end the step's tokens
are emitted and the requests that completed their stage leave it; at its start a batch is formed,
timed by the step model (``steptime``), logged and booked in the client's statistics."""
from __future__ import annotations

import numpy as np

from .._numba import jit_inline, jit_noalloc
from . import steptime as ST
from .backpressure import _bp_leave, _holds_kv
from .batching import _form_batch
from .engine import (FINISHED, L_DEC_TOKENS, L_DT, L_KV_USED, L_NDEC, L_NPF, L_PF_TOKENS, L_T, N_LOG, RUNNING,
                     S_BATCHING, S_PREFIX_BLOCKS, STATIC, _cache_insert)
from .layout import (C_NLOG, CS_BATCH_SEQS, CS_BATCH_TOKENS, CS_BUSY, CS_BYTES, CS_DEC_SEQ_S, CS_DEC_SEQS,
                     CS_DEC_TOKENS, CS_FINISH_STEP_START, CS_FLOPS, CS_KV_BLOCK_S, CS_KV_PEAK, CS_OUT_OF_RANGE,
                     CS_PF_TOKENS, CS_PREEMPT, CS_STEPS, CS_TC, CS_TM, CS_TN, F_COUNT, F_NEXT, F_START, G_HASH_BLOCK,
                     G_LOG_CAP, F_WRITE_BACK, I_DIRTY, I_LAZY_CTX, I_LAZY_READ, I_LAZY_W, I_LEAVE_CHECK, I_MIST, I_NDEC, I_NDEC_C, I_NPF, I_NREAL, I_NRUN, I_NSTATIC, I_PEND_PF,
                     I_PFTOK, I_USED, K_ENCODE, K_KVFETCH, K_PREFILL, LOG_COLS, Q_BLOCKS, Q_COMPUTED, Q_CUR, Q_GEN,
                     Q_INSERTED, Q_OUT, Q_PENDING, Q_PF_TARGET, Q_PROMPT)
from .flows import _start_flow
from .lazy import _lazy_in_step, _lazy_step_end
from .mist import _mist_memo, _mist_step_load
from .ppipe import _pp_launch, _pp_on, _pp_set_next
from .stages import _emit, _leave_stage, _release
from .tiers import _tier_insert
from .views import (batches_forming, clients_batching, loop_core, prefix_caches, requests_batching,
                    requests_moving, tier_chains)


# ============================================================================ the end of a step

@jit_inline
def _add_step_cost(stats, c, bd):
    """Add one step's time split (compute, memory, network), work and out-of-range flag
    (``bd``, the step model's breakdown) to client c's statistics."""
    stats[c, CS_TC] += bd[ST.B_TC]
    stats[c, CS_TM] += bd[ST.B_TM]
    stats[c, CS_TN] += bd[ST.B_TN]
    stats[c, CS_FLOPS] += bd[ST.B_FLOPS]
    stats[c, CS_BYTES] += bd[ST.B_BYTES]
    stats[c, CS_OUT_OF_RANGE] += bd[ST.B_OUT_OF_RANGE]

@jit_noalloc
def _write_back(r, c, s, t, req, stg, cli, rte, fl, kv, lp):
    """KV write-back (ENGINE_SEMANTICS.md): the prompt's full blocks that the kv_fetch stage s did not
    find (hash blocks x tokens x KV bytes per token) move from client c to the first tier of the
    stage's chain, over that tier's port and link (the route of a read, the other way), as a flow in
    the request's write-back slot. Nobody waits for it; it only loads the port and the link."""
    hb = int(lp.g[G_HASH_BLOCK])
    new_tokens = (req.rq[r, Q_PROMPT] // hb) * hb - req.rq[r, Q_PENDING]
    if new_tokens <= 0:
        return
    C = cli.kind.shape[0]
    f = req.arrival.shape[0] + C + r
    if fl.state[f] != 0:
        return  # (a recompute after a preemption: the first write is still moving)
    tier = kv.chain_tier[kv.chain_off[-2 - stg.tier[s]]]
    _start_flow(f, C + tier, c, new_tokens * stg.bytes[s], t, rte, fl, lp.ctr)


@jit_inline
def _stage_complete(r, s, req, stg):
    """Has running request r completed its stage s? (A prefill or encode stage when its prompt is
    computed, any other when its output is.)"""
    sk = stg.kind[s]
    if sk == K_ENCODE or sk == K_PREFILL:
        return req.rq[r, Q_COMPUTED] >= req.rq[r, Q_PF_TARGET]
    return req.rq[r, Q_GEN] >= req.rq[r, Q_OUT]


@jit_inline
def _prefill_chunks_done(c, t, req, stg, cli, rte, fl, kv, bat, lp):
    """The step's prefill chunks are computed; a prompt now complete enters the prefix cache and the
    KV store it was fetched for, and emits its first token. Returns whether any prompt completed
    and whether any of those requests completed its stage."""
    hb = int(lp.g[G_HASH_BLOCK])
    any_done = False
    any_complete = False
    for i in range(cli.ci[c, I_NPF]):
        r = bat.pf_req[c, i]
        cc = int(bat.pf_new[c, i])
        req.rq[r, Q_COMPUTED] += cc
        req.computed_pf[r] += cc
        cli.ci[c, I_PEND_PF] -= cc
        if req.rq[r, Q_COMPUTED] >= req.rq[r, Q_PF_TARGET]:
            s = req.rq[r, Q_CUR]
            slot = kv.cache_slot[c]
            if slot >= 0 and req.rq[r, Q_INSERTED] == 0:
                _cache_insert(r, req.rq[r, Q_PROMPT], req.hash_off, req.hash_ids, kv.in_cache[slot],
                              kv.lru_prev[slot], kv.lru_next[slot], kv.lru_ends[slot],
                              int(cli.sch[c, S_PREFIX_BLOCKS]), hb)
                req.rq[r, Q_INSERTED] = 1
            cli.ci[c, I_NDEC_C] += 1
            if s > stg.off[r] and stg.kind[s - 1] == K_KVFETCH and stg.tier[s - 1] <= -2:
                # the new prompt blocks are written to the KV store (first tier; LRU
                # evictions demote down the chain)
                _tier_insert(r, req.rq[r, Q_PROMPT] // hb, -2 - stg.tier[s - 1], req, kv)
                if stg.flags[s - 1] & F_WRITE_BACK:
                    _write_back(r, c, s - 1, t, req, stg, cli, rte, fl, kv, lp)
            any_done = True  # (a prefill-only stage ends here; an LLM stage may too)
            if stg.kind[s] != K_ENCODE:
                req.rq[r, Q_GEN] += 1
                _emit(r, s, t, stg, req)
            if _stage_complete(r, s, req, stg):
                any_complete = True
    return any_done, any_complete


@jit_inline
def _decodes_emit(c, t, req, stg, cli, bat):
    """Every decode of the step emits a token; returns whether any request reached its output."""
    any_done = False
    for i in range(cli.ci[c, I_NREAL]):
        # decodes never carry a first token; written out (no helper call per token)
        r = bat.dec_req[c, i]
        req.rq[r, Q_GEN] += 1
        if stg.flags[req.rq[r, Q_CUR]] & F_COUNT:
            req.generated[r] += 1
            req.t_last_tok[r] = t
        if req.rq[r, Q_GEN] >= req.rq[r, Q_OUT]:
            any_done = True
    return any_done


@jit_inline
def _finished_leave(c, t, req, stg, cli, rte, fl, kv, bat, lp):
    """Running requests whose stage is complete give their KV blocks back and leave the stage, in
    running order; the others stay in the running list."""
    k2 = 0
    for ii in range(cli.ci[c, I_NRUN]):
        r = bat.run[c, ii]
        s = req.rq[r, Q_CUR]
        done = req.status[r] == RUNNING and _stage_complete(r, s, req, stg)
        if done and _holds_kv(r, s, stg):
            cli.ci[c, I_NDEC_C] -= 1
            _bp_leave(r, c, t, req, stg, cli, rte, lp)   # KV backpressure: the blocks stay until reserved
        elif done:
            cli.ci[c, I_USED] -= req.rq[r, Q_BLOCKS]
            req.rq[r, Q_BLOCKS] = 0
            cli.ci[c, I_NDEC_C] -= 1
            _leave_stage(r, c, t, requests_moving(req), stg, cli, rte, fl, tier_chains(kv), loop_core(lp))
            if req.status[r] == FINISHED and cli.cf[c, F_START] > cli.stats[c, CS_FINISH_STEP_START]:
                cli.stats[c, CS_FINISH_STEP_START] = cli.cf[c, F_START]
        else:
            bat.run[c, k2] = r
            k2 += 1
    cli.ci[c, I_NRUN] = k2


@jit_inline
def _llm_step_end(c, t, req, stg, cli, rte, fl, kv, bat, lp):
    """LLM client c's step ends at t: its outputs are released and routed; c is free to form."""
    cli.cf[c, F_NEXT] = np.inf
    prompt_done, leaving = _prefill_chunks_done(c, t, req, stg, cli, rte, fl, kv, bat, lp)
    if _lazy_in_step(c, cli):
        # lazy decodes (kernels/lazy.py): the step's decodes are the members; those with their last
        # token leave at once
        _lazy_step_end(c, t, req, stg, cli, bat)
    elif _decodes_emit(c, t, req, stg, cli, bat):
        leaving = True
    # A prompt completed by the step, its request going on to decode, makes nobody leave: a
    # running request completes its stage in a step (tested above) or, admitted with its prompt
    # computed, possibly at its admission (I_LEAVE_CHECK: then a completed prompt triggers the pass,
    # as do PP micro-batches in flight). The pass over the running requests runs only when needed.
    if prompt_done and (cli.ci[c, I_LEAVE_CHECK] > 0 or _pp_on(c, cli)):
        leaving = True
    if leaving:
        cli.ci[c, I_LEAVE_CHECK] = 0
        _finished_leave(c, t, req, stg, cli, rte, fl, kv, bat, lp)
    if int(cli.sch[c, S_BATCHING]) == STATIC and cli.ci[c, I_NRUN] == 0:
        cli.ci[c, I_NSTATIC] = 0
    cli.ci[c, I_NPF] = 0
    cli.ci[c, I_NDEC] = 0
    cli.ci[c, I_NREAL] = 0
    cli.ci[c, I_DIRTY] = 1


# ============================================================================ the start of a step
@jit_inline
def _form_until_settled(c, t, req, cli, bat, kv, lp):
    """Form c's batch again while a formation only rejected or preempted requests. Returns True when
    a batch runs (False: nothing to run)."""
    res = 3
    n_preempt = cli.stats[c, CS_PREEMPT]
    while res == 2 or res == 3:
        res = _form_batch(c, t, requests_batching(req), clients_batching(cli), batches_forming(bat),
                          prefix_caches(kv), loop_core(lp))
        if res == 2:
            _release(t, req, lp)
    if res != 1:
        return False
    if cli.stats[c, CS_PREEMPT] != n_preempt:
        # victims joined the waiting queue after its scan, so the next formation may admit
        # them: no decode run (phase 4) from this batch
        cli.ci[c, I_DIRTY] = 1
    return True


@jit_inline
def _batch_step_time(c, req, cli, bat):
    """Step time of c's batch, s (the step model; MIST's memo when it is on)."""
    npf = cli.ci[c, I_NPF]
    nd = 0
    for i in range(npf):
        r = bat.pf_req[c, i]
        if req.rq[r, Q_COMPUTED] + bat.pf_new[c, i] >= req.rq[r, Q_PF_TARGET]:
            nd += 1
    bat.bd[ST.X_CALLER] = c   # (step_fixed's memo key)
    if _lazy_in_step(c, cli):
        # lazy decodes: the step's decodes are the members, whose sums the client keeps
        # (no windowed attention with lazy decodes)
        return ST.step_time_sums(cli.prm[c], bat.pf_past[c], bat.pf_new[c], npf, float(nd), cli.ci[c, I_LAZY_W],
                                 cli.ci[c, I_LAZY_CTX], cli.ci[c, I_LAZY_READ], cli.ci[c, I_NDEC], 0.0, 0.0, bat.bd)
    dt = ST.step_time(cli.prm[c], bat.pf_past[c], bat.pf_new[c], npf, float(nd), bat.dec_w[c], bat.dec_s[c],
                      bat.dec_k[c], cli.ci[c, I_NDEC], bat.bd)
    if cli.prm[c, ST.P_MIST_MEMO] > 0.0:
        dt = _mist_memo(cli.prm[c, ST.P_MIST_MEMO], npf, bat.pf_past[c], bat.pf_new[c], cli.ci[c, I_NDEC],
                        bat.dec_w[c], bat.dec_s[c], bat.dec_k[c], dt, bat.memo_key, bat.memo_dt)
    return dt


@jit_inline
def _mark_scheduled(c, t, req, stg, cli, bat):
    """First scheduling times of the batch's stages and requests; returns the decode tokens."""
    w_tok = 0.0
    for i in range(cli.ci[c, I_NPF]):
        r = bat.pf_req[c, i]
        s = req.rq[r, Q_CUR]
        if np.isnan(stg.t_sched[s]):
            stg.t_sched[s] = t
        if np.isnan(req.t_first_sched[r]):
            req.t_first_sched[r] = t
    if _lazy_in_step(c, cli):
        # lazy decodes: every member was scheduled before (in a step, or its prefill entries); the
        # float sum of their integer token rows is exact, so it is their integer sum
        return w_tok + cli.ci[c, I_LAZY_W]
    for i in range(cli.ci[c, I_NREAL]):
        r = bat.dec_req[c, i]
        s = req.rq[r, Q_CUR]
        w_tok += bat.dec_w[c, i]
        if np.isnan(stg.t_sched[s]):
            stg.t_sched[s] = t
        if np.isnan(req.t_first_sched[r]):
            req.t_first_sched[r] = t
    return w_tok


@jit_inline
def _log_step(c, t, dt, w_tok, cli, bat, lp):
    """One row of the step log (while it has room)."""
    nlog = lp.ctr[C_NLOG]
    if nlog >= int(lp.g[G_LOG_CAP]):
        return
    npf = cli.ci[c, I_NPF]
    lp.steplog[nlog, L_T] = t
    lp.steplog[nlog, L_DT] = dt
    lp.steplog[nlog, L_NPF] = npf
    lp.steplog[nlog, L_PF_TOKENS] = cli.ci[c, I_PFTOK]
    lp.steplog[nlog, L_NDEC] = cli.ci[c, I_NREAL]
    lp.steplog[nlog, L_DEC_TOKENS] = w_tok
    lp.steplog[nlog, L_KV_USED] = cli.ci[c, I_USED]
    lp.steplog[nlog, N_LOG] = c
    # optional extra columns: ids of the step's prefills, then its decodes (-1 pads)
    j = LOG_COLS
    for i in range(npf):
        if j < lp.steplog.shape[1]:
            lp.steplog[nlog, j] = bat.pf_req[c, i]
            j += 1
    for i in range(cli.ci[c, I_NREAL]):
        if j < lp.steplog.shape[1]:
            lp.steplog[nlog, j] = bat.dec_req[c, i]
            j += 1
    lp.ctr[C_NLOG] = nlog + 1


@jit_inline
def _book_step(c, dt, busy_dt, w_tok, cli, bat):
    """The step's time, tokens, sequences, KV occupancy and roofline breakdown, in c's statistics.
    busy_dt: the busy time it adds (= dt but for PP micro-batches, which overlap)."""
    npf = cli.ci[c, I_NPF]
    cli.stats[c, CS_BUSY] += busy_dt
    cli.stats[c, CS_STEPS] += 1.0
    cli.stats[c, CS_BATCH_TOKENS] += cli.ci[c, I_PFTOK] + w_tok
    cli.stats[c, CS_BATCH_SEQS] += npf + cli.ci[c, I_NREAL]
    cli.stats[c, CS_PF_TOKENS] += cli.ci[c, I_PFTOK]
    cli.stats[c, CS_DEC_TOKENS] += w_tok
    cli.stats[c, CS_DEC_SEQS] += cli.ci[c, I_NREAL]
    cli.stats[c, CS_DEC_SEQ_S] += cli.ci[c, I_NREAL] * dt
    if cli.ci[c, I_USED] > cli.stats[c, CS_KV_PEAK]:
        cli.stats[c, CS_KV_PEAK] = cli.ci[c, I_USED]
    cli.stats[c, CS_KV_BLOCK_S] += cli.ci[c, I_USED] * busy_dt
    _add_step_cost(cli.stats, c, bat.bd)


@jit_inline
def _llm_step_start(c, t, req, stg, cli, kv, bat, lp):
    """Free LLM client c forms a batch at t and starts its step (nothing happens when there is
    nothing to run)."""
    if not _form_until_settled(c, t, req, cli, bat, kv, lp):
        return
    dt = _batch_step_time(c, req, cli, bat)
    busy_dt = dt
    pipelined = _pp_on(c, cli)
    if pipelined:   # PP micro-batching: the batch enters the pipeline (kernels/ppipe.py)
        dt, busy_dt = _pp_launch(c, t, dt, req, cli, bat)
    w_tok = _mark_scheduled(c, t, req, stg, cli, bat)
    _log_step(c, t, dt, w_tok, cli, bat, lp)
    _book_step(c, dt, busy_dt, w_tok, cli, bat)
    cli.cf[c, F_START] = t
    cli.cf[c, F_NEXT] = t + dt
    if pipelined:
        _pp_set_next(c, t, cli, bat)
    if cli.ci[c, I_MIST] > 0:
        _mist_step_load(c, t + dt, cli.ci[c, I_NPF], req, stg, cli, bat, lp.ctr)
