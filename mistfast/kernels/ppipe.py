"""PP micro-batch pipelining of an LLM client (ENGINE_SEMANTICS.md "PP micro-batch pipelining",
MODEL.md §2.1): an engine with pp = p stages keeps up to p micro-batches (disjoint request sets) in
flight. A micro-batch passes the stages in order; it enters stage q when it has left stage q - 1 and
the previous micro-batch has left stage q (the flow-shop recurrence). The next micro-batch may be
formed once the previous one's slowest stage time has passed since its start (the gate; later when
the previous one had to wait for a stage: then as late as keeps a batch of the same stage times from
waiting) and fewer than p are in flight. Its tokens are emitted when it leaves the last stage.

The batch arrays of the client (``bat.pf_req[c]`` ...) hold the batch being formed; a launched
micro-batch is copied into a ring of p slots (``bat.mb_*``) and copied back when it completes, so
the ordinary step end (``llm_step._llm_step_end``) applies it unchanged. Ring layout (state.py):
``mb_req[c, slot, k, :n]`` request ids (k = 0 prefill chunks, 1 decodes), their count n in the last
column; ``mb_f[c, slot, :n]`` chunk tokens, then the start and completion times; ``mb_f[c, q, -1]``
when the latest micro-batch left stage q.
"""
from __future__ import annotations

import numpy as np

from .._numba import jit_inline, jit_noalloc
from . import steptime as ST
from .engine import S_PP_MB
from .layout import F_GATE, F_NEXT, F_START, I_MB_HEAD, I_MB_N, I_MB_REQS, I_NDEC, I_NPF, I_NREAL, Q_MB


@jit_inline
def _pp_on(c, cli):
    """Does LLM client c pipeline micro-batches? (Lowering sets the flag only for pp > 1.)"""
    return cli.sch[c, S_PP_MB] > 0.0


@jit_inline
def _stage_layers(q, p, n_layers, per_stage):
    """Layers of stage q of p: ceil(L/p) each, the last holds the rest (none when L runs out)."""
    if q < p - 1:
        return min(per_stage, max(0.0, n_layers - q * per_stage))
    return max(0.0, n_layers - (p - 1) * per_stage)


@jit_inline
def _stage_time(prm, bd, dt, q, p):
    """Duration (s) of stage q of a step of latency dt whose breakdown is ``bd`` (after step_time):
    its share of the layers (the layers' time split evenly over L), the embedding and the fixed host
    time on the first stage, the LM head on the last, one P2P hop after every stage but the last.
    The p stage times sum to dt (up to rounding)."""
    f = bd[ST.X_FACTOR]
    emb = bd[ST.X_EMB] * f
    head = bd[ST.X_HEAD] * f
    p2p = bd[ST.X_P2P] * f
    ovh = prm[ST.P_STEP_OVH]
    n_layers = prm[ST.P_N_DENSE] + prm[ST.P_N_MOE]
    per_layer = max(0.0, dt - ovh - emb - head - p2p) / n_layers
    d = _stage_layers(q, p, n_layers, prm[ST.P_STAGE_LAYERS]) * per_layer
    if q == 0:
        d += emb
        d += ovh
    if q == p - 1:
        d += head
    else:
        d += p2p / (p - 1)
    return d


@jit_noalloc
def _pp_launch(c, t, dt, req, cli, bat):
    """Client c's batch just formed at t (latency dt when run alone) enters the pipeline: it is
    copied into the ring, its requests are marked in flight, its stage times go through the
    flow-shop recurrence, and the gate of the next micro-batch is set. Returns (latency to its completion, busy time it adds: how far its
    completion extends the time the engine has work in flight)."""
    p = int(cli.prm[c, ST.P_PP])
    slot = (cli.ci[c, I_MB_HEAD] + cli.ci[c, I_MB_N]) % p
    npf = cli.ci[c, I_NPF]
    nreal = cli.ci[c, I_NREAL]
    n_col = bat.mb_req.shape[3] - 1
    t_col = bat.mb_f.shape[2] - 3
    for i in range(npf):
        r = bat.pf_req[c, i]
        bat.mb_req[c, slot, 0, i] = r
        bat.mb_f[c, slot, i] = bat.pf_new[c, i]
        req.rq[r, Q_MB] = 1
    for i in range(nreal):
        r = bat.dec_req[c, i]
        bat.mb_req[c, slot, 1, i] = r
        req.rq[r, Q_MB] = 1
    bat.mb_req[c, slot, 0, n_col] = npf
    bat.mb_req[c, slot, 1, n_col] = nreal
    busy_until = bat.mb_f[c, p - 1, t_col + 2]   # completion of the previous micro-batch
    left = t          # when this micro-batch left the previous stage
    before = 0.0      # its stage times before stage q
    gate = t
    for q in range(p):
        d = _stage_time(cli.prm[c], bat.bd, dt, q, p)
        enter = max(left, bat.mb_f[c, q, t_col + 2])
        left = enter + d
        bat.mb_f[c, q, t_col + 2] = left
        # the next micro-batch, were its stages as long, would reach stage q no earlier than this one leaves it
        if left - before > gate:
            gate = left - before
        before += d
    bat.mb_f[c, slot, t_col] = t
    bat.mb_f[c, slot, t_col + 1] = left
    cli.ci[c, I_MB_N] += 1
    cli.ci[c, I_MB_REQS] += npf + nreal
    cli.cf[c, F_GATE] = gate
    return left - t, left - max(t, busy_until)


@jit_inline
def _pp_next_event(c, t, cli, bat):
    """Client c's next event after t: its oldest micro-batch's completion or the gate, if later."""
    nxt = np.inf
    if cli.ci[c, I_MB_N] > 0:
        nxt = bat.mb_f[c, cli.ci[c, I_MB_HEAD], bat.mb_f.shape[2] - 2]
    gate = cli.cf[c, F_GATE]
    if gate > t and gate < nxt:
        nxt = gate
    return nxt


@jit_inline
def _pp_may_form(c, t, cli):
    """May client c form a micro-batch at t: the gate has passed and fewer than pp are in flight."""
    return t >= cli.cf[c, F_GATE] and cli.ci[c, I_MB_N] < int(cli.prm[c, ST.P_PP])


@jit_inline
def _pp_oldest_done(c, t, cli, bat):
    """Has client c's oldest micro-batch in flight completed by t?"""
    return cli.ci[c, I_MB_N] > 0 and bat.mb_f[c, cli.ci[c, I_MB_HEAD], bat.mb_f.shape[2] - 2] <= t


@jit_noalloc
def _pp_restore_oldest(c, req, cli, bat):
    """Take client c's oldest micro-batch out of the ring, back into the batch arrays (with its start
    in F_START), for the ordinary step end to apply; its requests are no longer in flight."""
    p = int(cli.prm[c, ST.P_PP])
    slot = cli.ci[c, I_MB_HEAD]
    n_col = bat.mb_req.shape[3] - 1
    npf = bat.mb_req[c, slot, 0, n_col]
    nreal = bat.mb_req[c, slot, 1, n_col]
    for i in range(npf):
        r = bat.mb_req[c, slot, 0, i]
        bat.pf_req[c, i] = r
        bat.pf_new[c, i] = bat.mb_f[c, slot, i]
        req.rq[r, Q_MB] = 0
    for i in range(nreal):
        r = bat.mb_req[c, slot, 1, i]
        bat.dec_req[c, i] = r
        req.rq[r, Q_MB] = 0
    cli.ci[c, I_NPF] = npf
    cli.ci[c, I_NDEC] = nreal
    cli.ci[c, I_NREAL] = nreal
    cli.cf[c, F_START] = bat.mb_f[c, slot, bat.mb_f.shape[2] - 3]
    cli.ci[c, I_MB_HEAD] = (slot + 1) % p
    cli.ci[c, I_MB_N] -= 1
    cli.ci[c, I_MB_REQS] -= npf + nreal


@jit_noalloc
def _pp_busy_after(c, t, cli, bat):
    """Busy time of client c's micro-batches in flight beyond t (a run cut at t)."""
    if cli.ci[c, I_MB_N] == 0:
        return 0.0
    end = bat.mb_f[c, int(cli.prm[c, ST.P_PP]) - 1, bat.mb_f.shape[2] - 1]
    return end - t if end > t else 0.0


@jit_noalloc
def _pp_set_next(c, t, cli, bat):
    """After client c's events at t: it may form again (dirty is set by the caller) and its next
    event is scheduled."""
    cli.cf[c, F_NEXT] = _pp_next_event(c, t, cli, bat)
