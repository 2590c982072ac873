"""Plain-Python twin of a prefill -> decode pipeline on two clients (one prefill client P, one
decode client D, one link), with and without KV backpressure.

Written from ``mistfast/ENGINE_SEMANTICS.md`` (the engine rules, the pipeline event order of
``kernels/cluster.py``'s module docstring, and the section "KV backpressure of a decode pool on its
prefill pool"). It is slow and obvious on purpose: lists, one loop iteration per event time, every
phase spelled out. Nothing here imports ``mistfast``.

Scope (the twin refuses anything else): CONTINUOUS batching and FCFS on both clients, one branch,
no prefix cache, no preemption needed (a decode whose KV growth does not fit raises), drain on.
The link is one resource of ``bandwidth_Bps`` shared equally by the transfers moving on it (max-min
fairness on one resource), after a fixed ``latency_s``.
"""
from __future__ import annotations

import math

PENDING, WAITING, RUNNING, FINISHED, REJECTED, UNFINISHED = 0, 1, 2, 3, 4, 5
R_NONE, R_TOKEN_BUDGET, R_MAX_MODEL_LEN, R_KV_CAPACITY = 0, 1, 2, 3


def _cdiv(a, b):
    return -(-a // b)


class _Engine:
    """One client's scheduler state (CONTINUOUS, FCFS)."""

    def __init__(self, sched, step_fn):
        self.B_tok = int(sched["max_batched_tokens"])
        self.B_seq = int(sched["max_batch_size"])
        self.b = int(sched["block_size"])
        self.N_blk = int(sched["total_blocks"])
        self.wm = int(sched["watermark_blocks"])
        self.mml = int(sched["max_model_len"])
        self.step_fn = step_fn
        self.waiting = []      # FIFO
        self.running = []      # admission order
        self.used = 0          # blocks in use: running + held (P) or reserved (D)
        self.next_end = math.inf
        self.batch_pf = []     # ids prefilled in the step in flight
        self.batch_dec = []    # ids decoded in the step in flight
        self.busy_s = 0.0
        self.steps = 0
        self.blocked_s = 0.0   # prefill client: time finished prefills waited for decode KV room
        self.reserve_q = []    # decode client: FIFO of requests waiting to reserve blocks


def reference_pd(requests: dict, p_sched: dict, d_sched: dict, p_step_fn, d_step_fn, link: dict,
                 kv_bytes_per_token: float, backpressure: bool) -> dict:
    """requests: {'arrival_s', 'prompt', 'output'} (sorted by arrival); *_sched: the engine settings
    of ENGINE_SEMANTICS.md's Inputs (batching/policy ignored: CONTINUOUS/FCFS); link:
    {'latency_s', 'bandwidth_Bps'}. Returns per-request arrays and per-client statistics."""
    arrival = [float(x) for x in requests["arrival_s"]]
    prompt = [int(x) for x in requests["prompt"]]
    output = [int(x) for x in requests["output"]]
    n = len(prompt)
    P, D = _Engine(p_sched, p_step_fn), _Engine(d_sched, d_step_fn)
    nan = float("nan")
    status = [PENDING] * n
    reason = [R_NONE] * n
    t_first = [nan] * n
    t_last = [nan] * n
    t_fin = [nan] * n
    t_dec_arrive = [nan] * n      # the decode stage's arrival (KV landed on D)
    gen = [0] * n                 # tokens emitted
    blocks = [0] * n              # blocks held on the client the request is running on
    held = [0] * n                # blocks held on P after the prefill (backpressure)
    reserved = [0] * n            # blocks reserved on D
    prefill_end = [nan] * n
    flows = []                    # [id, phase(1 latency, 2 moving), t0, rem, rate, done], start order
    lat, cap = float(link["latency_s"]), float(link["bandwidth_Bps"])

    def retime(t):
        moving = [f for f in flows if f[1] == 2]
        for f in moving:
            f[4] = cap / len(moving)
            f[5] = t + f[3] / f[4]

    def arrive_decode(r, t):
        """KV landed on D (or reserved with nothing to move): checks (without backpressure), queue."""
        t_dec_arrive[r] = t
        if not backpressure:
            if prompt[r] + output[r] > D.mml:
                reject(r, R_MAX_MODEL_LEN, t)
                return
            if _cdiv(prompt[r] + output[r], D.b) > D.N_blk:
                reject(r, R_KV_CAPACITY, t)
                return
        status[r] = WAITING
        D.waiting.append(r)

    def reject(r, why, t):
        status[r] = REJECTED
        reason[r] = why
        t_fin[r] = t

    def free_held(r):
        if held[r] > 0:
            P.used -= held[r]
            held[r] = 0

    def prefill_done(r, t):
        """r's prefill step ended at t: token 1; then it leaves for the decode stage or finishes."""
        gen[r] = 1
        t_first[r] = t
        t_last[r] = t
        P.running.remove(r)
        if output[r] <= 1:
            P.used -= blocks[r]
            blocks[r] = 0
            status[r] = FINISHED
            t_fin[r] = t
            return
        prefill_end[r] = t
        status[r] = WAITING
        if backpressure:
            held[r] = blocks[r]
            blocks[r] = 0
            if prompt[r] + output[r] > D.mml:
                free_held(r)
                reject(r, R_MAX_MODEL_LEN, t)
            elif _cdiv(prompt[r] + output[r], D.b) > D.N_blk:
                free_held(r)
                reject(r, R_KV_CAPACITY, t)
            else:
                D.reserve_q.append(r)
            return
        P.used -= blocks[r]
        blocks[r] = 0
        flows.append([r, 1, t + lat, prompt[r] * kv_bytes_per_token, 0.0, math.inf])

    def reserve_pass(t):
        while D.reserve_q:
            r = D.reserve_q[0]
            need = _cdiv(prompt[r] + 1, D.b)
            fits = D.N_blk - D.used - need >= D.wm
            if not fits and D.used > 0:
                break
            D.reserve_q.pop(0)
            if not fits:
                free_held(r)
                reject(r, R_KV_CAPACITY, t)
                continue
            D.used += need
            reserved[r] = need
            P.blocked_s += t - prefill_end[r]
            flows.append([r, 1, t + lat, prompt[r] * kv_bytes_per_token, 0.0, math.inf])

    def form_P(t):
        tok = 0
        for r in list(P.waiting):
            if len(P.running) >= P.B_seq:
                break
            if tok + prompt[r] > P.B_tok:
                break
            need = _cdiv(prompt[r] + 1, P.b)
            if P.N_blk - P.used - need < P.wm:
                break
            P.waiting.remove(r)
            P.running.append(r)
            status[r] = RUNNING
            blocks[r] = need
            P.used += need
            tok += prompt[r]
            P.batch_pf.append(r)
        if P.batch_pf:
            return P.step_fn([(0, prompt[r]) for r in P.batch_pf], [], len(P.batch_pf))
        if not P.running and P.waiting and P.used == 0:
            # nothing runs and the head can never be admitted
            r = P.waiting.pop(0)
            reject(r, R_TOKEN_BUDGET if prompt[r] > P.B_tok else R_KV_CAPACITY, t)
            return "again"
        return None

    def form_D(t):
        for r in list(D.waiting):
            if len(D.running) >= D.B_seq:
                break
            need = _cdiv(prompt[r] + 1, D.b)
            if reserved[r] == 0 and D.N_blk - D.used - need < D.wm:
                break
            D.waiting.remove(r)
            D.running.append(r)
            status[r] = RUNNING
            D.used += need - reserved[r]
            reserved[r] = 0
            blocks[r] = need
        for r in D.running:
            grow = _cdiv(prompt[r] + gen[r], D.b) - blocks[r]
            if grow > D.N_blk - D.used:
                raise NotImplementedError("the twin covers runs without decode preemption")
            blocks[r] += max(grow, 0)
            D.used += max(grow, 0)
            D.batch_dec.append(r)
        if D.batch_dec:
            return D.step_fn([], [(1, 0, prompt[r] + gen[r] - 1) for r in D.batch_dec], 0)
        if D.waiting and D.used == 0:
            r = D.waiting.pop(0)
            reject(r, R_TOKEN_BUDGET if prompt[r] > D.B_tok else R_KV_CAPACITY, t)
            return "again"
        return None

    t = 0.0
    flow_clock = 0.0
    na = 0
    while True:
        # next event: a workload arrival, a transfer's latency end or completion, a step end
        cands = [P.next_end, D.next_end]
        if na < n:
            cands.append(arrival[na])
        cands += [f[2] if f[1] == 1 else f[5] for f in flows]
        t_next = min(cands)
        if t_next == math.inf:
            break
        t = max(t, t_next)
        # phase 0: transfers
        if flows:
            dt_f = t - flow_clock
            for f in flows:
                if f[1] == 2 and dt_f > 0.0:
                    f[3] -= min(f[4] * dt_f, f[3])
            changed = False
            k = 0
            while k < len(flows):
                f = flows[k]
                if f[1] == 1 and f[2] <= t:
                    f[1] = 2
                    changed = True
                if f[1] == 2 and f[5] <= t:
                    flows.pop(k)
                    changed = True
                    free_held(f[0])
                    arrive_decode(f[0], t)
                    continue
                k += 1
            flow_clock = t
            if changed:
                retime(t)
        # phase 1: workload arrivals (checks at P)
        while na < n and arrival[na] <= t:
            r = na
            na += 1
            if prompt[r] > P.B_tok:
                reject(r, R_TOKEN_BUDGET, arrival[r])
            elif prompt[r] + 1 > P.mml:
                reject(r, R_MAX_MODEL_LEN, arrival[r])
            elif _cdiv(prompt[r] + 1, P.b) > P.N_blk:
                reject(r, R_KV_CAPACITY, arrival[r])
            else:
                status[r] = WAITING
                P.waiting.append(r)
        # phase 2: step ends, P then D
        if P.next_end <= t:
            P.next_end = math.inf
            done = P.batch_pf
            P.batch_pf = []
            for r in [x for x in P.running if x in done]:   # running (admission) order
                prefill_done(r, t)
        if D.next_end <= t:
            D.next_end = math.inf
            for r in D.batch_dec:
                gen[r] += 1
                t_last[r] = t
            for r in [x for x in D.running if x in D.batch_dec and gen[x] >= output[x]]:
                D.running.remove(r)
                D.used -= blocks[r]
                blocks[r] = 0
                status[r] = FINISHED
                t_fin[r] = t
            D.batch_dec = []
        if flows:
            flow_clock = t
            retime(t)
        # phase 3: reservations (backpressure), then formations of idle clients
        n_flows = len(flows)
        if backpressure:
            reserve_pass(t)
        for eng, form in ((P, form_P), (D, form_D)):
            if eng.next_end < math.inf:
                continue
            dt = form(t)
            while dt == "again":
                dt = form(t)
            if dt is not None:
                eng.busy_s += dt
                eng.steps += 1
                eng.next_end = t + dt
        if len(flows) != n_flows:
            flow_clock = t
            retime(t)

    for r in range(n):
        if status[r] in (WAITING, RUNNING):
            status[r] = UNFINISHED
    return dict(status=status, reason=reason, t_first_token=t_first, t_last_token=t_last, t_finish=t_fin,
                t_decode_arrive=t_dec_arrive, generated=gen, busy_s=[P.busy_s, D.busy_s],
                steps=[P.steps, D.steps], kv_blocked_s=P.blocked_s, end_s=t)
