"""Lazy decodes: the decodes of a decode run stay the run's members after it ends, so that formed
steps (chunked-prefill steps, the step after an admission) advance them in O(1) as a run does.

A decode run (``decode_run.py``) holds its batch as entries with their state at the run's base
formation (tokens generated, context, blocks held) and advances every entry by one token per
step, from integer sums and a ring of KV growth. Without lazy decodes it writes each entry back
when it ends, and every later formed step reads, places, sums, marks and emits each decode again.
With them (one plain LLM client: ``loop._lazy_decodes_ok``), the entries stay *members*:

- a formation places all members at once (the growth of this formation from the ring, the token
  budget against their token rows) or none; running requests after them that start decoding join
  (in running order, so the members stay the head of the running list and of the decode list);
- the step time comes from the members' integer sums (``steptime.step_time_sums``), which are the
  same integers step_time would sum;
- a step end emits the members' tokens by counting the formation as done;
- a member's row is brought up to date (*settled*, ``_lazy_settle``) only when something needs it:
  a member emits its last token, a formation that cannot place them all or has a decode after a
  prefill, the end of the point. Then everything is as if every step had been formed one by one.

Representation: member i's row holds its tokens as of the run's base formation 0 ("virtual":
a request that joins at formation F0 has F0 taken off its generated counts and its context), so
that after the members' formation F every member has emitted F tokens (F + 1 once that step has
ended). ``bat.run_j1``/``run_amt``/``ring`` are the run's KV growth, ``bat.run_j0`` the formation
at which the member joined (its own tokens since: F - j0). The client's slots are in
``layout.py`` (``I_LAZY_*``, ``F_LAZY_T``). ENGINE_SEMANTICS.md, "Decode runs".
"""
from __future__ import annotations

import numpy as np

from .._numba import jit_inline, jit_noalloc
from .engine import CHUNKED, FINISHED, MIXED, RUNNING, S_BATCHING, S_BLOCK, S_TOTAL_BLOCKS, _blocks_for
from .layout import (CS_FINISH_STEP_START, F_LAZY_T, F_START, I_NDEC_C, I_NREQ, Q_CUR, I_LAZY_CTX, I_LAZY_DONE, I_LAZY_F, I_LAZY_FORM, I_LAZY_LEFT, I_LAZY_N, I_LAZY_READ,
                     I_LAZY_SHARED, I_LAZY_W, I_NDEC, I_NRUN, I_USED, Q_BLOCKS, Q_COMPUTED, Q_GEN, Q_HIT, Q_IN_STEP,
                     Q_MB, Q_OUT, Q_PF_TARGET, Q_PROMPT)


@jit_inline
def _keep_entry(c, i, k2, r, bat):
    """Entry i of client c's run (request r) stays in the run: moved down to slot k2 (k2 <= i) as
    the entries that leave are squeezed out (a decode run's catch-up and the lazy members' leave pass)."""
    bat.dec_req[c, k2] = r
    bat.dec_w[c, k2] = bat.dec_w[c, i]
    bat.dec_s[c, k2] = bat.dec_s[c, i]
    bat.dec_k[c, k2] = bat.dec_k[c, i]
    bat.run_j1[k2] = bat.run_j1[i]
    bat.run_amt[k2] = bat.run_amt[i]
    bat.run_j0[k2] = bat.run_j0[i]
    bat.run_rem[k2] = bat.run_rem[i]
    bat.run[c, k2] = r


# rare (a formation that cannot place every member, the end of a point): kept out of line, so its
# loop is compiled once rather than inlined into each of its four call sites (cold compile time)
@jit_noalloc
def _lazy_settle(c, req, cli, bat):
    """Bring every member's row up to date and end lazy mode: tokens emitted by the members'
    latest formation F (F + 1 once its step ended), the KV growth of formations 1 .. F, the
    context of formation F in the decode list (as a run's catch-up does)."""
    n = cli.ci[c, I_LAZY_N]
    F = cli.ci[c, I_LAZY_F]
    E = F + cli.ci[c, I_LAZY_DONE]
    form = cli.ci[c, I_LAZY_FORM]
    t_tok = cli.cf[c, F_LAZY_T]
    b = int(cli.sch[c, S_BLOCK])
    for i in range(n):
        r = bat.dec_req[c, i]
        req.rq[r, Q_GEN] += E
        req.generated[r] += E      # (every stage of a lazy client counts its tokens)
        if E > bat.run_j0[i]:
            req.t_last_tok[r] = t_tok
        if bat.run_amt[i] > 0 and F >= bat.run_j1[i]:
            req.rq[r, Q_BLOCKS] += bat.run_amt[i] * ((F - bat.run_j1[i]) // b + 1)
        req.rq[r, Q_IN_STEP] = form
        bat.dec_k[c, i] += F
    cli.ci[c, I_LAZY_N] = 0


@jit_inline
def _lazy_members_step(c, form, budget, cli, bat):
    """Every member decodes in this formation (True), or none can be placed as the ordinary
    placement would place them all (False): the token budget is short of their token rows, or
    their KV growth at this formation (the ring) does not fit the free blocks (a preemption)."""
    sch = cli.sch[c]
    batching = int(sch[S_BATCHING])
    w_sum = cli.ci[c, I_LAZY_W]
    if (batching == CHUNKED or batching == MIXED) and budget < w_sum:
        return False
    F = cli.ci[c, I_LAZY_F] + 1
    grow = bat.ring[F % int(sch[S_BLOCK])]
    if cli.ci[c, I_USED] + grow > int(sch[S_TOTAL_BLOCKS]):
        return False
    cli.ci[c, I_USED] += grow
    cli.ci[c, I_LAZY_F] = F
    cli.ci[c, I_LAZY_DONE] = 0
    cli.ci[c, I_LAZY_FORM] = form
    cli.ci[c, I_LAZY_CTX] += w_sum      # every member's context one token longer
    cli.ci[c, I_LAZY_READ] += w_sum
    cli.ci[c, I_NDEC] = cli.ci[c, I_LAZY_N]
    return True


@jit_inline
def _decodes_now(r, form, req):
    """Would the ordinary placement add running request r as a decode? (its tests, in its order)"""
    return (req.status[r] == RUNNING and req.rq[r, Q_COMPUTED] >= req.rq[r, Q_PF_TARGET] and req.rq[r, Q_GEN] >= 1
            and req.rq[r, Q_IN_STEP] != form and req.rq[r, Q_MB] == 0)


@jit_inline
def _lazy_join(r, c, form, budget, req, cli, bat):
    """Running request r, next after the members, decodes in this formation: it becomes a member
    (True) when the ordinary placement would add it without a preemption and its KV growth from
    now on fits the ring (a block every b tokens from its first growth, within b formations);
    else nothing changes (False)."""
    sch = cli.sch[c]
    batching = int(sch[S_BATCHING])
    w = req.branches[r]
    if (batching == CHUNKED or batching == MIXED) and budget < w:
        return False
    b = int(sch[S_BLOCK])
    F = cli.ci[c, I_LAZY_F]
    pu = req.rq[r, Q_PROMPT] - req.rq[r, Q_HIT]
    g = req.rq[r, Q_GEN]
    held = req.rq[r, Q_BLOCKS]
    need = _blocks_for(pu, g, w, b) - held
    if need > int(sch[S_TOTAL_BLOCKS]) - cli.ci[c, I_USED]:
        return False
    b0 = held + need if need > 0 else held
    gv = g - F    # its tokens as if it had been a member since formation 0
    # first formation needing a block more than b0, and the blocks it grows by (decode_run._run_entries)
    if w == 1:
        j1 = b0 * b - pu - gv + 1
        amt = 1
    else:
        base = (pu + b - 1) // b
        q1 = (b0 - base) // w + 1
        j1 = (q1 - 1) * b - gv + 1
        amt = base + w * q1 - b0
    if not (j1 - F <= b and amt == w):
        return False
    # ---- place it as the ordinary placement does, as member k
    if need > 0:
        cli.ci[c, I_USED] += need
        req.rq[r, Q_BLOCKS] = b0
    req.rq[r, Q_IN_STEP] = form
    k = cli.ci[c, I_LAZY_N]
    bat.dec_req[c, k] = r
    bat.dec_w[c, k] = w
    if w == 1:
        s = 0
        kk = req.rq[r, Q_PROMPT] + g - 1
    else:
        s = req.rq[r, Q_PROMPT]
        kk = g - 1
    bat.dec_s[c, k] = s
    bat.dec_k[c, k] = kk - F
    cli.ci[c, I_LAZY_W] += w
    cli.ci[c, I_LAZY_CTX] += w * (s + kk + 1)
    cli.ci[c, I_LAZY_READ] += (s if cli.ci[c, I_LAZY_SHARED] > 0 else s * w) + w * (kk + 1)
    if req.rq[r, Q_OUT] - gv < cli.ci[c, I_LAZY_LEFT]:
        cli.ci[c, I_LAZY_LEFT] = req.rq[r, Q_OUT] - gv
    bat.run_j1[k] = j1
    bat.run_amt[k] = amt
    bat.ring[j1 % b] += amt
    bat.run_j0[k] = F
    bat.run_rem[k] = req.rq[r, Q_OUT] - gv
    req.rq[r, Q_GEN] = gv
    req.generated[r] -= F
    cli.ci[c, I_LAZY_N] = k + 1
    cli.ci[c, I_NDEC] = k + 1
    return True


@jit_inline
def _place_decodes_lazily(c, form, budget, req, cli, bat):
    """The decode placement of a lazy client: the members, then the running requests after them that
    decode (joining). Returns (members and joiners placed, budget left, the running index the
    ordinary placement goes on from). When not everything could be placed here, the members are
    settled (as if placed one by one) and the ordinary placement goes on from that index: from 0
    when the members could not be placed, after them otherwise."""
    if not _lazy_members_step(c, form, budget, cli, bat):
        _lazy_settle(c, req, cli, bat)
        return False, budget, 0
    budget -= cli.ci[c, I_LAZY_W]
    n_run = cli.ci[c, I_NRUN]
    ii = cli.ci[c, I_LAZY_N]
    while ii < n_run:
        r = bat.run[c, ii]
        if not _decodes_now(r, form, req):
            break
        w = req.branches[r]
        if not _lazy_join(r, c, form, budget, req, cli, bat):
            _lazy_settle(c, req, cli, bat)
            return False, budget, ii
        budget -= w
        ii += 1
    for jj in range(ii, n_run):
        if _decodes_now(bat.run[c, jj], form, req):
            # a decode after a request still prefilling: the decode list would not be the members
            # followed by it in running order
            _lazy_settle(c, req, cli, bat)
            return False, budget, ii
    return True, budget, ii


@jit_inline
def _lazy_in_step(c, cli):
    """Are the members in c's step just formed (in flight)?"""
    return cli.ci[c, I_LAZY_N] > 0 and cli.ci[c, I_LAZY_DONE] == 0


@jit_inline
def _lazy_members_leave(c, t, req, stg, cli, bat):
    """The members emitting their last token at t leave (ENGINE_SEMANTICS.md step 4: a lazy client's
    requests have one stage, so they finish), in one pass that also closes the ranks of the members,
    their sums and KV ring; the running requests after them close ranks too."""
    n = cli.ci[c, I_LAZY_N]
    F = cli.ci[c, I_LAZY_F]
    F1 = F + 1      # tokens emitted once the step ends
    b = int(cli.sch[c, S_BLOCK])
    shared_once = cli.ci[c, I_LAZY_SHARED] > 0
    dec_req = bat.dec_req[c]
    dec_w = bat.dec_w[c]
    dec_s = bat.dec_s[c]
    dec_k = bat.dec_k[c]
    run = bat.run[c]
    left = np.iinfo(np.int64).max
    k2 = 0
    rem = bat.run_rem
    for i in range(n):
        # (tokens left from the contiguous run_rem: only a leaver's row is read)
        if rem[i] != F1:
            if k2 < i:
                _keep_entry(c, i, k2, dec_req[i], bat)
            if rem[i] < left:
                left = rem[i]
            k2 += 1
            continue
        r = dec_req[i]
        w = int(dec_w[i])
        s = int(dec_s[i])
        kf = int(dec_k[i]) + F      # its context at formation F
        cli.ci[c, I_LAZY_W] -= w
        cli.ci[c, I_LAZY_CTX] -= w * (s + kf + 1)
        cli.ci[c, I_LAZY_READ] -= (s if shared_once else s * w) + w * (kf + 1)
        blocks = req.rq[r, Q_BLOCKS]
        if bat.run_amt[i] > 0:
            bat.ring[bat.run_j1[i] % b] -= bat.run_amt[i]
            if F >= bat.run_j1[i]:
                blocks += bat.run_amt[i] * ((F - bat.run_j1[i]) // b + 1)
        req.rq[r, Q_GEN] += F1
        req.generated[r] += F1
        req.t_last_tok[r] = t
        req.rq[r, Q_IN_STEP] = cli.ci[c, I_LAZY_FORM]
        # as llm_step._finished_leave and stages._leave_stage for a request's last stage
        cli.ci[c, I_USED] -= blocks
        req.rq[r, Q_BLOCKS] = 0
        cli.ci[c, I_NDEC_C] -= 1
        stg.t_exit[req.rq[r, Q_CUR]] = t
        cli.ci[c, I_NREQ] -= 1
        req.status[r] = FINISHED
        req.t_finish[r] = t
        if cli.cf[c, F_START] > cli.stats[c, CS_FINISH_STEP_START]:
            cli.stats[c, CS_FINISH_STEP_START] = cli.cf[c, F_START]
    n_run = cli.ci[c, I_NRUN]
    for ii in range(n, n_run):
        run[k2 + ii - n] = run[ii]
    cli.ci[c, I_NRUN] = n_run - (n - k2)
    cli.ci[c, I_LAZY_N] = k2
    cli.ci[c, I_LAZY_LEFT] = left


@jit_inline
def _lazy_step_end(c, t, req, stg, cli, bat):
    """c's step holding the members ends at t: they emit their tokens by counting, and those that
    emitted their last token leave (one pass over the members, only then)."""
    if cli.ci[c, I_LAZY_F] + 1 >= cli.ci[c, I_LAZY_LEFT]:
        _lazy_members_leave(c, t, req, stg, cli, bat)
    cli.ci[c, I_LAZY_DONE] = 1
    cli.cf[c, F_LAZY_T] = t
