"""The event loop: one global clock over every client, transfer and arrival of a point.

Event order at equal times (MODEL.md §1.2): flow completions, then arrivals, then client step
boundaries: the outputs of every step ending at t are released and routed before any client
forms its next batch; clients go in index order, flows in start order. Times are float64 s.
Each phase below is a small function inlined into the loop (``jit_inline``: one call site, no
argument passing at run time).
"""
from __future__ import annotations

import numpy as np

from .._numba import jit_inline, jit_noalloc
from .backpressure import _free_held, _reserve_kv, _reserved_first
from . import steptime as ST
from .decode_run import _decode_run
from .engine import FCFS, RUNNING, S_BATCHING, S_POLICY, S_SEQS_PER_STEP, STATIC, UNFINISHED, WAITING
from .flows import _retime_flows
from .lazy import _lazy_settle
from .layout import (C_NA, C_NFL, C_NLOG, CK_BATCH, CK_LLM, CK_SLOTS, CS_BUSY, F_NEXT, F_START, G_DECODE_RUNS,
                     G_CONC, G_DRAIN, G_HORIZON, G_MAX_SIM, I_BPHASE, I_DIRTY, F_COUNT, I_LAZY_N, I_LAZY_OK, I_LAZY_SHARED, I_MIST, I_NDEC, I_NPF, I_NREAL, I_NRUN, I_RCOUNT,
                     I_WCOUNT, K_KVFETCH, K_LLM, Q_CUR, Q_FETCHED, Q_PENDING, Q_RESV, SRV_SLOTS)
from .layout import I_NREQ, RT_OVERFLOW
from .llm_step import _llm_step_end, _llm_step_start
from .ppipe import _pp_busy_after, _pp_may_form, _pp_oldest_done, _pp_on, _pp_restore_oldest, _pp_set_next
from .servers import _retrieval_phase_end, _retrieval_start, _slots_release, _slots_start
from .routing import _route
from .stages import _arrive, _release, _workload_arrivals
from .views import batches_forming, clients_batching, requests_batching
from .views import (batches_decoding, clients_decoding, loop_core, loop_logging, requests_decoding,
                    clients_arriving, requests_moving, stages_arriving, stages_decoding, tier_chains)
from .views import clients_routing, stages_routing


# ============================================================================ the clock
@jit_inline
def _next_event_time(req, cli, fl, lp):
    """The earliest of: the next workload arrival (by the horizon), a flow's end of latency or of
    transfer, a client's next step boundary. inf when nothing is left to happen."""
    n = req.arrival.shape[0]
    t_next = np.inf
    na = lp.ctr[C_NA]
    if na < n and req.arrival[na] <= lp.g[G_HORIZON]:
        t_next = req.arrival[na]
    for k in range(lp.ctr[C_NFL]):
        f = fl.live[k]
        x = fl.t0[f] if fl.state[f] == 1 else fl.done[f]
        if x < t_next:
            t_next = x
    for c in range(cli.kind.shape[0]):
        if cli.cf[c, F_NEXT] < t_next:
            t_next = cli.cf[c, F_NEXT]
    return t_next


@jit_inline
def _llm_step_ends_by(t, cli):
    """Does some LLM client's step end at or before t? (Past max_sim_s, that step still ends.)"""
    for c in range(cli.kind.shape[0]):
        if cli.cf[c, F_NEXT] <= t and cli.kind[c] == CK_LLM:
            return True
    return False


@jit_inline
def _arrivals_due(t, req, lp):
    na = lp.ctr[C_NA]
    return na < req.arrival.shape[0] and req.arrival[na] <= t


# ============================================================================ phase 0: transfers
@jit_inline
def _carry_bytes(dt, fl, nfl):
    """Moving flows carry rate x dt bytes (at most what is left) over every link of their route."""
    for k in range(nfl):
        f = fl.live[k]
        if fl.state[f] == 2 and fl.nhops[f] > 0 and dt > 0.0:
            moved = min(fl.rate[f] * dt, fl.rem[f])
            fl.rem[f] -= moved
            for h in range(fl.nhops[f]):
                fl.link_bytes[fl.hops[f, h]] += moved


@jit_inline
def _transfer_done(f, t, req, stg, cli, fl, lp):
    """Flow f ended at t. A request's transfer: it arrives at the client (a KV read ends its fetch
    stage first, and the stage it was for begins). A retrieval server's index read: its batch is
    done now."""
    n = req.arrival.shape[0]
    if f >= n + cli.kind.shape[0]:
        return  # a KV write-back to a tier ended: nothing waits for it
    if f >= n:
        c2 = f - n
        cli.ci[c2, I_BPHASE] = 3
        cli.cf[c2, F_NEXT] = t
        return
    r = f
    c2 = fl.dest[f]
    s = req.rq[r, Q_CUR]
    fetched_tokens = 0
    if stg.kind[s] == K_KVFETCH:
        stg.t_exit[s] = t
        fetched_tokens = req.rq[r, Q_PENDING]
        s = s + 1
        req.rq[r, Q_CUR] = s
        stg.t_ready[s] = t
    stg.t_arrive[s] = t
    _free_held(r, req, cli)   # KV backpressure: the prefill client's copy is gone
    if _arrive(r, c2, t, s, requests_moving(req), stages_arriving(stg), clients_arriving(cli)):
        req.rq[r, Q_FETCHED] = fetched_tokens
        if req.rq[r, Q_RESV] > 0:
            _reserved_first(r, c2, req, cli)
    else:
        _release(t, req, lp)


@jit_noalloc
def _advance_transfers(t, dt, req, stg, cli, fl, lp):
    """Phase 0: bytes moved since the last event (dt s ago); latency phases that end now start
    moving bytes; transfers that end now complete, in start order; rates are shared out again
    when anything changed."""
    _carry_bytes(dt, fl, lp.ctr[C_NFL])
    changed = False
    k = 0
    while k < lp.ctr[C_NFL]:
        f = fl.live[k]
        if fl.state[f] == 1 and fl.t0[f] <= t:
            fl.state[f] = 2
            changed = True
            if fl.nhops[f] == 0:
                fl.done[f] = t
        if fl.state[f] == 2 and fl.done[f] <= t:
            fl.state[f] = 0
            fl.done[f] = np.inf
            for j in range(k, lp.ctr[C_NFL] - 1):
                fl.live[j] = fl.live[j + 1]
            lp.ctr[C_NFL] -= 1
            changed = True
            _transfer_done(f, t, req, stg, cli, fl, lp)
            continue
        k += 1
    if changed:
        _retime_flows(t, fl, lp.ctr[C_NFL])


# ============================================================================ phase 1: arrivals
@jit_inline
def _plain_arrivals(t, req, stg, cli, rte, lp):
    """Phase 1 for one plain LLM client (_one_plain_client): what _workload_arrivals does, with
    _enter_stage's steps for an LLM stage entered from the workload written out here instead of
    called (a call carries ~400 machine words; one per arrival). The stage's pool can only pick the
    one client: a pool of one member is picked without reading any load (routing._choose), other
    pools go through _route as _enter_stage does; nothing moves (no source client), and the
    open loop releases nobody. _arrive (the checks and the queue) is the same call."""
    n = req.arrival.shape[0]
    horizon = lp.g[G_HORIZON]
    while lp.ctr[C_NA] < n and req.arrival[lp.ctr[C_NA]] <= t and req.arrival[lp.ctr[C_NA]] <= horizon:
        r = lp.ctr[C_NA]
        lp.ctr[C_NA] += 1
        s = stg.off[r]
        req.rq[r, Q_CUR] = s
        req.rq[r, Q_FETCHED] = 0
        c2 = stg.client[s]
        if c2 < 0:
            p = stg.pool[s]
            a = rte.pool_off[p]
            if rte.pool_off[p + 1] - a == 1 and rte.pool_policy[p] < RT_OVERFLOW:
                c2 = rte.pool_cli[a]
            else:
                c2 = _route(s, stg.prompt[s], req.branches[r], stages_routing(stg), rte, clients_routing(cli), t)
            stg.client[s] = c2
        cli.ci[c2, I_NREQ] += 1
        stg.t_arrive[s] = t
        if not _arrive(r, c2, t, s, requests_moving(req), stages_arriving(stg), clients_arriving(cli)):
            _release(t, req, lp)
        stg.t_ready[s] = req.arrival[r]


# ============================================================================ phases 2-4: clients
@jit_inline
def _release_step_outputs(t, req, stg, cli, rte, fl, kv, bat, lp):
    """Phase 2: every client whose step (or service, or retrieval phase) ends at t releases its
    outputs, which are routed on. Returns whether an LLM step ended."""
    any_step_end = False
    for c in range(cli.kind.shape[0]):
        if cli.cf[c, F_NEXT] > t:
            continue
        kind = cli.kind[c]
        if kind == CK_LLM:
            # PP micro-batching (kernels/ppipe.py): the micro-batches that completed by t end in
            # launch order, each as an ordinary step end; then the client may form again (after a
            # completion or at its gate) and its next event is set
            pipelined = _pp_on(c, cli)
            while not pipelined or _pp_oldest_done(c, t, cli, bat):
                if pipelined:
                    _pp_restore_oldest(c, req, cli, bat)
                any_step_end = True
                _llm_step_end(c, t, req, stg, cli, rte, fl, kv, bat, lp)
                if not pipelined:
                    break
            if pipelined:
                cli.ci[c, I_DIRTY] = 1
                _pp_set_next(c, t, cli, bat)
        elif kind == CK_SLOTS:
            _slots_release(c, t, req, stg, cli, rte, fl, kv, bat, lp)
        else:  # CK_BATCH: retrieval
            _retrieval_phase_end(c, t, req, stg, cli, rte, fl, kv, bat, lp)
    return any_step_end


@jit_inline
def _start_new_work(t, req, stg, cli, kv, bat, lp):
    """Phase 3: every free client whose queue or state changed since it last looked starts work."""
    for c in range(cli.kind.shape[0]):
        if cli.ci[c, I_DIRTY] == 0:
            continue
        if cli.kind[c] == CK_LLM and _pp_on(c, cli):
            if not _pp_may_form(c, t, cli):
                continue   # (PP micro-batching: forms between its events, once the gate has passed)
        elif cli.cf[c, F_NEXT] < np.inf:
            continue
        cli.ci[c, I_DIRTY] = 0
        kind = cli.kind[c]
        if kind == CK_SLOTS:
            _slots_start(c, t, req, stg, cli, bat)
        elif kind == CK_BATCH:
            _retrieval_start(c, t, req, stg, cli, bat)
        else:
            _llm_step_start(c, t, req, stg, cli, kv, bat, lp)


@jit_inline
def _one_plain_client(stg, cli, lp):
    """One LLM client, every stage an LLM stage, an open loop: an arriving request goes straight
    into that client's waiting queue and touches nothing else (no routing choice, no transfer, no
    closed-loop release)."""
    if cli.kind.shape[0] != 1 or cli.kind[0] != CK_LLM or lp.g[G_CONC] > 0.0:
        return False
    for s in range(stg.kind.shape[0]):
        if stg.kind[s] != K_LLM:
            return False
    return True


@jit_inline
def _arrivals_wait_behind(c, plain, cli):
    """Can no arrival during a decode run of client c change the batch it forms? True when an
    arrival only joins the tail of c's FCFS queue (plain: see _one_plain_client) and that queue
    already has a head the run's formations cannot admit: the formation that started the run
    stopped its head-of-line scan there, and during the run free KV blocks only shrink while the
    sequence and token budgets stay (decode_run._oldest_unaged_arrival). Such arrivals are
    applied by the loop at their own times after the run; they read and write nothing the run does."""
    return plain and int(cli.sch[c, S_POLICY]) == FCFS and cli.ci[c, I_WCOUNT] > 0


@jit_inline
def _run_decodes_ahead(t, plain, req, stg, cli, bat, lp):
    """Phase 4: a client that just formed a pure-decode batch of all its running requests runs
    ahead through the steps that repeat it, up to the next outside event (the caller checks that
    no transfer is in flight: their byte accounting is per loop iteration). Arrivals that can only
    wait behind a blocked queue are not outside events (_arrivals_wait_behind)."""
    n = req.arrival.shape[0]
    C = cli.kind.shape[0]
    for c in range(C):
        if cli.kind[c] != CK_LLM or cli.cf[c, F_START] != t or cli.cf[c, F_NEXT] == np.inf or cli.ci[c, I_DIRTY] != 0:
            continue
        if cli.ci[c, I_NPF] != 0 or cli.ci[c, I_NDEC] != cli.ci[c, I_NREAL] or cli.ci[c, I_NREAL] != cli.ci[c, I_NRUN]:
            continue
        if cli.ci[c, I_RCOUNT] > 0:
            continue  # KV backpressure: blocks freed inside a run would be reserved at once
        if _pp_on(c, cli):
            continue  # PP micro-batching: steps overlap, no decode runs
        t_other = np.inf
        if lp.ctr[C_NA] < n and req.arrival[lp.ctr[C_NA]] <= lp.g[G_HORIZON] and not _arrivals_wait_behind(
                c, plain, cli):
            t_other = req.arrival[lp.ctr[C_NA]]
        for c2 in range(C):
            if c2 != c and cli.cf[c2, F_NEXT] < t_other:
                t_other = cli.cf[c2, F_NEXT]
        _decode_run(c, t_other, requests_decoding(req), stages_decoding(stg), clients_decoding(cli),
                    batches_decoding(bat), loop_logging(lp))


@jit_noalloc
def _lazy_decodes_ok(plain, req, stg, cli, lp):
    """Lazy decodes (kernels/lazy.py) for each client: one plain LLM client (see _one_plain_client)
    with decode runs on, one stage per request, every stage counting its tokens and having a prompt (so nobody arrives to
    decode only), not GenZ compat (per-decode grouping), no windowed attention, no MIST emulation,
    no per-step sequence limit, no PP micro-batching, no static batches."""
    if not plain or not lp.g[G_DECODE_RUNS] > 0.0 or stg.kind.shape[0] != req.arrival.shape[0]:
        return   # (as many stages as requests: one each, so a request that completes its stage finishes)
    for s in range(stg.kind.shape[0]):
        if not (stg.flags[s] & F_COUNT) or stg.prompt[s] < 1:
            return
    c = 0
    prm = cli.prm[c]
    sch = cli.sch[c]
    if (prm[ST.P_GENZ] > 0.0 or prm[ST.P_N_WIN] > 0.0 or prm[ST.P_MIST_MEMO] > 0.0 or cli.ci[c, I_MIST] > 0
            or sch[S_SEQS_PER_STEP] > 0.0 or _pp_on(c, cli) or int(sch[S_BATCHING]) == STATIC):
        return
    cli.ci[c, I_LAZY_OK] = 1
    cli.ci[c, I_LAZY_SHARED] = 1 if prm[ST.P_SHARED_ONCE] > 0.0 else 0


# ============================================================================ the end
@jit_noalloc
def _close_books(t, req, cli, bat, lp):
    """The run stopped at t. Busy time is booked when a step or a slot's service starts; work still
    in progress (cut at max_sim_s, or another client's step end without drain) counts only up to
    the stop. Requests still in the system are unfinished; closed-loop users never released get
    a NaN arrival."""
    for c in range(cli.kind.shape[0]):
        if cli.ci[c, I_LAZY_N] > 0:
            # lazy decodes: the members' rows brought up to date (as batch formation sees them:
            # the same argument types, so _lazy_settle is compiled once)
            _lazy_settle(c, requests_batching(req), clients_batching(cli), batches_forming(bat))
    for c in range(cli.kind.shape[0]):
        if cli.kind[c] == CK_LLM and _pp_on(c, cli):
            cli.stats[c, CS_BUSY] -= _pp_busy_after(c, t, cli, bat)
        elif cli.kind[c] == CK_LLM:
            if cli.cf[c, F_NEXT] < np.inf and cli.cf[c, F_NEXT] > t:
                cli.stats[c, CS_BUSY] -= cli.cf[c, F_NEXT] - t
        elif cli.kind[c] == CK_SLOTS:
            for j in range(int(cli.srv[c, SRV_SLOTS])):
                if bat.run[c, j] >= 0 and bat.pf_past[c, j] > t:
                    cli.stats[c, CS_BUSY] -= bat.pf_past[c, j] - t
    lp.runstats[0] = t
    for i in range(req.arrival.shape[0]):
        if req.status[i] == WAITING or req.status[i] == RUNNING:
            req.status[i] = UNFINISHED
        if req.arrival[i] == np.inf:
            req.arrival[i] = np.nan


@jit_noalloc
def _event_loop(req, stg, cli, rte, fl, kv, bat, lp):
    """Run one point to its end over state its bundles hold (no allocation: see jit_noalloc).
    Returns the number of steps logged."""
    max_sim = lp.g[G_MAX_SIM]
    horizon = lp.g[G_HORIZON]
    drain = lp.g[G_DRAIN] > 0.0
    flow_clock = 0.0   # when the flows' bytes were last brought up to date
    plain = _one_plain_client(stg, cli, lp)
    _lazy_decodes_ok(plain, req, stg, cli, lp)
    t = 0.0
    while True:
        t_next = _next_event_time(req, cli, fl, lp)
        if t_next == np.inf:
            break
        if t_next > t:
            t = t_next
        if t > max_sim and not _llm_step_ends_by(t, cli):
            break
        # phase 0: transfers
        if lp.ctr[C_NFL] > 0:
            _advance_transfers(t, t - flow_clock, req, stg, cli, fl, lp)
            flow_clock = t
        # phase 1: arrivals from the workload
        if plain and _arrivals_due(t, req, lp):
            _plain_arrivals(t, req, stg, cli, rte, lp)
        elif _arrivals_due(t, req, lp):
            _workload_arrivals(t, requests_moving(req), stg, cli, rte, fl, tier_chains(kv), loop_core(lp))
        # phase 2: outputs of every step ending now are released and routed
        nfl_before = lp.ctr[C_NFL]
        any_step_end = _release_step_outputs(t, req, stg, cli, rte, fl, kv, bat, lp)
        if lp.ctr[C_NFL] != nfl_before or lp.ctr[C_NFL] > 0:
            flow_clock = t
            _retime_flows(t, fl, lp.ctr[C_NFL])
        if t > max_sim or (any_step_end and (not drain) and t >= horizon):
            break
        # phase 3: clients start new work; requests released at this very time (closed loop, zero
        # think time) join first
        if _arrivals_due(t, req, lp):
            _workload_arrivals(t, requests_moving(req), stg, cli, rte, fl, tier_chains(kv), loop_core(lp))
        nfl_before = lp.ctr[C_NFL]
        _reserve_kv(t, req, stg, cli, rte, fl, lp)   # KV backpressure: reservations, then transfers
        _start_new_work(t, req, stg, cli, kv, bat, lp)
        if lp.ctr[C_NFL] != nfl_before:
            flow_clock = t
            _retime_flows(t, fl, lp.ctr[C_NFL])
        # phase 4: decode runs
        if lp.ctr[C_NFL] == 0 and lp.g[G_DECODE_RUNS] > 0.0:
            _run_decodes_ahead(t, plain, req, stg, cli, bat, lp)
    _close_books(t, req, cli, bat, lp)
    return lp.ctr[C_NLOG]
