"""MIST compatibility (docs/mist_parity.md): the step-time memo of its engine and the token load
its join-shortest-queue router reads."""
from __future__ import annotations

from .._numba import jit_inline, jit_noalloc, jit_noalloc_py
from .layout import (C_FORM, I_MIST_Q, I_MIST_STEP, I_NREAL, I_NRUN, I_WHEAD, K_LLM, K_PREFILL, Q_COMPUTED, Q_CUR,
                     Q_IN_STEP, Q_PF_TARGET, Q_WNEXT, SRV_MIST_STEP_END)


@jit_noalloc_py
def _mist_memo(group, npf, pf_past, pf_new, n_dec, dec_w, dec_s, dec_k, dt, memo_key, memo_dt):
    """MIST's step-time memo with tolerance 0 (Mixed_LLM_Engine.step, platforms.get_chunked_time):
    a decode-only batch is keyed by (decodes, sum of their KV lengths), any other batch by (prefill
    chunk tokens + decode branches, sum of the chunks' past KV and the decodes' KV lengths); a key
    seen before returns the step time stored then. MIST's KV length of a decode is prompt + branches
    x generated = s + w (k + 1). Returns the step time to use."""
    kv = 0
    for j in range(n_dec):
        kv += int(dec_s[j]) + int(dec_w[j]) * (int(dec_k[j]) + 1)
    if npf == 0:
        kind = 0
        tokens = n_dec
    else:
        kind = 1
        tokens = 0
        for i in range(npf):
            tokens += int(pf_new[i])
            kv += int(pf_past[i])
        for j in range(n_dec):
            tokens += int(dec_w[j])
    cap = memo_key.shape[0]
    gid = int(group)
    h = (gid * 1000003 + kind * 7919 + tokens * 2654435761 + kv * 40503) & (cap - 1)
    for _ in range(cap):
        if memo_key[h, 0] < 0:
            memo_key[h, 0] = gid
            memo_key[h, 1] = kind
            memo_key[h, 2] = tokens
            memo_key[h, 3] = kv
            memo_dt[h] = dt
            return dt
        if memo_key[h, 0] == gid and memo_key[h, 1] == kind and memo_key[h, 2] == tokens and memo_key[h, 3] == kv:
            return memo_dt[h]
        h = (h + 1) & (cap - 1)
    return dt  # table full: no memo


@jit_noalloc
def _mist_step_load(c, t_end, npf, req, stg, cli, bat, ctr):
    """MIST's load of the step just formed (MIST_Engine step: the scheduled prefills' prompts and
    decodes are counted twice, every other waiting or running request once: its prompt while it
    still prefills, else 1). Everything that had arrived is now in the scheduler."""
    form = ctr[C_FORM]
    load = 0
    for i in range(npf):
        r = bat.pf_req[c, i]
        load += 2 * stg.prompt[req.rq[r, Q_CUR]]
    load += 2 * cli.ci[c, I_NREAL]
    for i in range(cli.ci[c, I_NRUN]):
        r = bat.run[c, i]
        if req.rq[r, Q_IN_STEP] != form:
            load += _mist_weight(r, stg, req.rq)
    r = cli.ci[c, I_WHEAD]
    while r >= 0:
        load += _mist_weight(r, stg, req.rq)
        r = req.rq[r, Q_WNEXT]
    cli.ci[c, I_MIST_STEP] = load
    cli.ci[c, I_MIST_Q] = 0
    cli.srv[c, SRV_MIST_STEP_END] = t_end


@jit_inline
def _mist_weight(r, stg, rq):
    s = rq[r, Q_CUR]
    k = stg.kind[s]
    if (k == K_LLM or k == K_PREFILL) and rq[r, Q_COMPUTED] < rq[r, Q_PF_TARGET]:
        return stg.prompt[s]
    return 1
