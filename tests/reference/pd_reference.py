"""Plain-Python twin of a prefill -> decode pipeline: one prefill client P, one decode client D and
optionally one Splitwise mixed client M (the overflow pool of both stages), with or without KV
backpressure.

Written from ``mistfast/ENGINE_SEMANTICS.md`` (the engine rules, the pipeline event order of
``kernels/cluster.py``'s module docstring, and the sections "KV backpressure of a decode pool on its
prefill pool" and "Splitwise overflow into a mixed pool"). Slow and obvious on purpose: lists, one
loop iteration per event time, every phase spelled out. Nothing here imports ``mistfast``.

Scope (the twin refuses anything else): CONTINUOUS (P, D) or MIXED (M) batching, FCFS, one branch,
no prefix cache, no preemption needed (a decode whose KV growth does not fit raises), drain on.
Every pair of clients has its own link (one resource each, shared equally by the transfers moving
on it, i.e. max-min fairness on one resource) with the same latency and bandwidth.
"""
from __future__ import annotations

import math

PENDING, WAITING, RUNNING, FINISHED, REJECTED, UNFINISHED = 0, 1, 2, 3, 4, 5
R_NONE, R_TOKEN_BUDGET, R_MAX_MODEL_LEN, R_KV_CAPACITY = 0, 1, 2, 3
CONTINUOUS, MIXED = 1, 2


def _cdiv(a, b):
    return -(-a // b)


class _Engine:
    """One client's scheduler state (FCFS)."""

    def __init__(self, name, sched, step_fn, batching):
        self.name = name
        self.batching = batching
        self.B_tok = int(sched["max_batched_tokens"])
        self.B_seq = int(sched["max_batch_size"])
        self.b = int(sched["block_size"])
        self.N_blk = int(sched["total_blocks"])
        self.wm = int(sched["watermark_blocks"])
        self.mml = int(sched["max_model_len"])
        self.step_fn = step_fn
        self.waiting = []      # FIFO
        self.running = []      # admission order
        self.used = 0          # blocks in use: running + held (prefill side) + reserved (decode side)
        self.pending_pf = 0    # prompt tokens of prefill-stage requests here not yet computed
        self.next_end = math.inf
        self.step_start = math.nan
        self.batch_pf = []     # ids prefilled in the step in flight
        self.batch_dec = []    # ids decoded in the step in flight
        self.busy_s = 0.0
        self.steps = 0
        self.blocked_s = 0.0   # prefill side: time finished prefills waited for decode KV room
        self.reserve_q = []    # decode side: FIFO of requests waiting to reserve blocks


def reference_pd(requests: dict, p_sched: dict, d_sched: dict, p_step_fn, d_step_fn, link: dict,
                 kv_bytes_per_token: float, backpressure: bool, m_sched: dict | None = None, m_step_fn=None,
                 overflow_tokens: int | None = None, decode_overflow: bool = False, layerwise: bool = False,
                 n_layers: float = 1.0) -> dict:
    """requests: {'arrival_s', 'prompt', 'output'} (sorted by arrival); *_sched: the engine settings
    of ENGINE_SEMANTICS.md's Inputs (P and D run CONTINUOUS, M MIXED); link: {'latency_s',
    'bandwidth_Bps'} of every client pair. With m_sched: the prefill stage overflows into M with
    ``overflow_tokens``; the decode stage too if ``decode_overflow``. ``layerwise``: the KV of a
    transfer that starts at its prefill's end streamed its first n_layers - 1 layers during that step.
    Returns per-request lists and per-client statistics in client order P, D[, M]."""
    arrival = [float(x) for x in requests["arrival_s"]]
    prompt = [int(x) for x in requests["prompt"]]
    output = [int(x) for x in requests["output"]]
    n = len(prompt)
    P = _Engine("P", p_sched, p_step_fn, CONTINUOUS)
    D = _Engine("D", d_sched, d_step_fn, CONTINUOUS)
    engines = [P, D]
    M = None
    if m_sched is not None:
        M = _Engine("M", m_sched, m_step_fn, MIXED)
        engines.append(M)
    nan = float("nan")
    status = [PENDING] * n
    reason = [R_NONE] * n
    t_first = [nan] * n
    t_last = [nan] * n
    t_fin = [nan] * n
    t_dec_arrive = [nan] * n      # the decode stage's arrival (KV landed on its client)
    prefill_on = [None] * n       # engine of the prefill stage
    decode_on = [None] * n        # engine of the decode stage
    in_decode = [False] * n       # the request is in its decode stage
    gen = [0] * n                 # tokens emitted
    blocks = [0] * n              # blocks held on the client the request runs on
    held = [0] * n                # blocks held on the prefill client after the prefill (backpressure)
    reserved = [0] * n            # blocks reserved on the decode client
    prefill_end = [nan] * n
    flows = []                    # [id, phase(1 latency, 2 moving), t0, rem, rate, done, link], start order
    lat, cap = float(link["latency_s"]), float(link["bandwidth_Bps"])

    def retime(t):
        for key in {f[6] for f in flows if f[1] == 2}:
            moving = [f for f in flows if f[1] == 2 and f[6] == key]
            for f in moving:
                f[4] = cap / len(moving)
                f[5] = t + f[3] / f[4]

    def start_flow(r, src, dst, t):
        byts = prompt[r] * kv_bytes_per_token
        if layerwise and t == prefill_end[r]:
            # layers 1 .. L-1 left during the prefill step (t_pf s) at the link's bandwidth, at most
            # their share of the bytes; the rest moves now
            t_pf = t - src.step_start
            early = min(byts * (n_layers - 1.0) / n_layers, cap * t_pf * (n_layers - 1.0) / n_layers)
            byts = byts - early
        flows.append([r, 1, t + lat, byts, 0.0, math.inf, frozenset((src.name, dst.name))])

    def reject(r, why, t):
        status[r] = REJECTED
        reason[r] = why
        t_fin[r] = t

    def decode_rejects(r, E):
        if prompt[r] + output[r] > E.mml:
            return R_MAX_MODEL_LEN
        if _cdiv(prompt[r] + output[r], E.b) > E.N_blk:
            return R_KV_CAPACITY
        return R_NONE

    def arrive_decode(r, t):
        """KV landed on the decode client (or needed no move): checks (without backpressure), queue."""
        E = decode_on[r]
        t_dec_arrive[r] = t
        in_decode[r] = True
        if not backpressure:
            why = decode_rejects(r, E)
            if why != R_NONE:
                reject(r, why, t)
                return
        status[r] = WAITING
        if reserved[r] > 0:
            E.waiting.insert(0, r)   # reserved KV room: the front of the queue
        else:
            E.waiting.append(r)

    def free_held(r):
        if held[r] > 0:
            prefill_on[r].used -= held[r]
            held[r] = 0

    def route_prefill(r):
        if M is not None and P.waiting and P.pending_pf + prompt[r] > overflow_tokens:
            return M
        return P

    def route_decode(r):
        need = _cdiv(prompt[r] + 1, D.b)
        if M is not None and decode_overflow and D.N_blk - D.used - need < D.wm:
            return M
        return D

    def prefill_done(r, t):
        """r's prefill step ended at t on E: token 1; then it leaves for the decode stage or finishes."""
        E = prefill_on[r]
        gen[r] = 1
        t_first[r] = t
        t_last[r] = t
        E.running.remove(r)
        if output[r] <= 1:
            E.used -= blocks[r]
            blocks[r] = 0
            status[r] = FINISHED
            t_fin[r] = t
            return
        prefill_end[r] = t
        status[r] = WAITING
        if backpressure:
            held[r] = blocks[r]          # routed while the held blocks still count on E
            blocks[r] = 0
            Dst = decode_on[r] = route_decode(r)
            if Dst is E:
                free_held(r)
                arrive_decode(r, t)
                return
            why = decode_rejects(r, Dst)
            if why != R_NONE:
                free_held(r)
                reject(r, why, t)
            else:
                Dst.reserve_q.append(r)
            return
        E.used -= blocks[r]              # freed, then routed
        blocks[r] = 0
        Dst = decode_on[r] = route_decode(r)
        if Dst is E:
            arrive_decode(r, t)
        else:
            start_flow(r, E, Dst, t)

    def reserve_pass(E, t):
        while E.reserve_q:
            r = E.reserve_q[0]
            need = _cdiv(prompt[r] + 1, E.b)
            fits = E.N_blk - E.used - need >= E.wm
            if not fits and E.used > 0:
                break
            E.reserve_q.pop(0)
            if not fits:
                free_held(r)
                reject(r, R_KV_CAPACITY, t)
                continue
            E.used += need
            reserved[r] = need
            prefill_on[r].blocked_s += t - prefill_end[r]
            start_flow(r, prefill_on[r], E, t)

    def form(E, t):
        """One batch (ENGINE_SEMANTICS.md: CONTINUOUS / MIXED, whole prompts, FCFS strict scan)."""
        tok = 0
        for r in list(E.waiting):
            if len(E.running) >= E.B_seq:
                break
            cc = 0 if in_decode[r] else prompt[r]
            if cc > E.B_tok - tok:
                break
            need = _cdiv(prompt[r] + 1, E.b)
            if reserved[r] == 0 and E.N_blk - E.used - need < E.wm:
                break
            E.waiting.remove(r)
            E.running.append(r)
            status[r] = RUNNING
            E.used += need - reserved[r]
            reserved[r] = 0
            blocks[r] = need
            if cc > 0:
                tok += cc
                E.batch_pf.append(r)
        if E.batching == MIXED or not E.batch_pf:
            budget = E.B_tok - tok
            for r in E.running:
                if not in_decode[r]:
                    continue
                if E.batching == MIXED and budget < 1:
                    break
                grow = _cdiv(prompt[r] + gen[r], E.b) - blocks[r]
                if grow > E.N_blk - E.used:
                    raise NotImplementedError("the twin covers runs without decode preemption")
                blocks[r] += max(grow, 0)
                E.used += max(grow, 0)
                E.batch_dec.append(r)
                budget -= 1
        if E.batch_pf or E.batch_dec:
            return E.step_fn([(0, prompt[r]) for r in E.batch_pf],
                             [(1, 0, prompt[r] + gen[r] - 1) for r in E.batch_dec], len(E.batch_pf))
        if not E.running and E.waiting and E.used == 0:
            # nothing runs and the head can never be admitted
            r = E.waiting.pop(0)
            if not in_decode[r]:
                E.pending_pf -= prompt[r]
            reject(r, R_TOKEN_BUDGET if prompt[r] > E.B_tok else R_KV_CAPACITY, t)
            return "again"
        return None

    def step_end(E, t):
        E.next_end = math.inf
        for r in E.batch_pf:
            E.pending_pf -= prompt[r]
        for r in E.batch_dec:
            gen[r] += 1
            t_last[r] = t
        for r in [x for x in E.running if x in E.batch_pf or (x in E.batch_dec and gen[x] >= output[x])]:
            if r in E.batch_pf:
                prefill_done(r, t)
            else:
                E.running.remove(r)
                E.used -= blocks[r]
                blocks[r] = 0
                status[r] = FINISHED
                t_fin[r] = t
        E.batch_pf = []
        E.batch_dec = []

    t = 0.0
    flow_clock = 0.0
    na = 0
    while True:
        # next event: a workload arrival, a transfer's latency end or completion, a step end
        cands = [E.next_end for E in engines]
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
        # phase 1: workload arrivals, routed to the prefill client (checks there)
        while na < n and arrival[na] <= t:
            r = na
            na += 1
            E = prefill_on[r] = route_prefill(r)
            if prompt[r] > E.B_tok:
                reject(r, R_TOKEN_BUDGET, arrival[r])
            elif prompt[r] + 1 > E.mml:
                reject(r, R_MAX_MODEL_LEN, arrival[r])
            elif _cdiv(prompt[r] + 1, E.b) > E.N_blk:
                reject(r, R_KV_CAPACITY, arrival[r])
            else:
                status[r] = WAITING
                E.waiting.append(r)
                E.pending_pf += prompt[r]
        # phase 2: step ends, in client order
        for E in engines:
            if E.next_end <= t:
                step_end(E, t)
        if flows:
            flow_clock = t
            retime(t)
        # phase 3: reservations (backpressure), then formations of idle clients, in client order
        n_flows = len(flows)
        if backpressure:
            for E in engines:
                reserve_pass(E, t)
        for E in engines:
            if E.next_end < math.inf:
                continue
            dt = form(E, t)
            while dt == "again":
                dt = form(E, t)
            if dt is not None:
                E.busy_s += dt
                E.steps += 1
                E.next_end = t + dt
                E.step_start = t
        if len(flows) != n_flows:
            flow_clock = t
            retime(t)

    for r in range(n):
        if status[r] in (WAITING, RUNNING):
            status[r] = UNFINISHED
    return dict(status=status, reason=reason, t_first_token=t_first, t_last_token=t_last, t_finish=t_fin,
                t_decode_arrive=t_dec_arrive, generated=gen, busy_s=[E.busy_s for E in engines],
                steps=[E.steps for E in engines], kv_blocked_s=[E.blocked_s for E in engines], end_s=t,
                prefill_client=[E.name if E else None for E in prefill_on],
                decode_client=[E.name if E else None for E in decode_on])


def reference_kv_store(requests: dict, sched: dict, step_fn, hash_ids: list, hash_block: int, tier_blocks: int,
                       route: dict, res_cap: list, kv_bytes_per_token: float, write_back: bool) -> dict:
    """Twin of a hash-mode KV store in front of one LLM client: the pipeline kv_fetch (use_hashes =
    true, one tier) -> llm, with or without KV write-back (``mistfast/ENGINE_SEMANTICS.md``: the
    sections on the prefix store, "Pipelines: KV write-back of new blocks to a tier", the event
    order of ``kernels/cluster.py``'s docstring; MODEL.md §4.2, §4.3).

    requests: {'arrival_s', 'prompt', 'output'} (sorted by arrival; prompt = the LLM stage's);
    hash_ids[r]: r's dense prefix-block ids (one per hash_block tokens, the last one partial);
    tier_blocks: the tier's LRU capacity in hash blocks; route: {'latency_s', 'resources'} from
    the tier to the client (reads; writes take the same route the other way); res_cap: bytes/s of
    every resource. The client runs CONTINUOUS batching, FCFS, one branch, no prefix cache, no
    preemption needed. Every transfer is a latency, then bytes shared max-min fairly over the
    resources it crosses (progressive filling, resources in index order). Returns per-request
    lists, the client's busy time and steps, the bytes carried per resource and the end time."""
    arrival = [float(x) for x in requests["arrival_s"]]
    prompt = [int(x) for x in requests["prompt"]]
    output = [int(x) for x in requests["output"]]
    n = len(prompt)
    E = _Engine("llm", sched, step_fn, CONTINUOUS)
    nan = float("nan")
    status = [PENDING] * n
    reason = [R_NONE] * n
    t_first = [nan] * n
    t_last = [nan] * n
    t_fin = [nan] * n
    t_read_end = [nan] * n        # the kv_fetch stage's exit (its read landed, or no read)
    gen = [0] * n
    blocks = [0] * n
    fetched = [0] * n             # KV tokens read from the tier (held in the client's blocks)
    found = [0] * n               # tokens the lookup found (also when nothing was read)
    computed = [0] * n
    computed_pf = [0] * n
    hit_first = [-1] * n
    store = []                    # the tier's LRU, least recently used first
    lat = float(route["latency_s"])
    hops = list(route["resources"])
    res_bytes = [0.0] * len(res_cap)
    flows = []                    # dicts in start order: id, write, phase (1 latency, 2 moving), t0, rem, rate, done
    writing = set()               # requests whose write-back is moving (one slot each)

    # ---- the tier store: lookup of leading blocks, insertion with LRU eviction
    def lookup(r):
        m = 0
        for h in hash_ids[r]:
            if h not in store:
                break
            m += 1
        return m

    def insert(r, nblocks):
        for h in hash_ids[r][:nblocks]:
            if h in store:
                store.remove(h)
            if len(store) >= tier_blocks and store:
                store.pop(0)
            if tier_blocks > 0:
                store.append(h)

    # ---- transfers: max-min fair rates over the route's resources
    def retime(t):
        left = list(res_cap)
        count = [0] * len(res_cap)
        moving = [f for f in flows if f["phase"] == 2]
        for f in moving:
            for i in hops:
                count[i] += 1
        frozen = set()
        while len(frozen) < len(moving):
            best, share = -1, math.inf
            for i in range(len(res_cap)):
                if count[i] > 0 and left[i] / count[i] < share:
                    best, share = i, left[i] / count[i]
            for f in moving:
                if id(f) not in frozen and best in hops:
                    frozen.add(id(f))
                    f["rate"] = share
                    for i in hops:
                        left[i] -= share
                        count[i] -= 1
        for f in moving:
            f["done"] = t + f["rem"] / f["rate"] if f["rate"] > 0 else math.inf

    def start_flow(r, byts, t, write):
        flows.append(dict(id=r, write=write, phase=1, t0=t + lat, rem=byts, rate=0.0, done=math.inf))
        if write:
            writing.add(r)

    # ---- the client
    def arrive(r, t):
        """r arrives at the client for its LLM stage: checks, then the waiting queue."""
        why = R_NONE
        if prompt[r] > E.B_tok:
            why = R_TOKEN_BUDGET
        elif prompt[r] + output[r] > E.mml:
            why = R_MAX_MODEL_LEN
        elif _cdiv(prompt[r] + output[r], E.b) > E.N_blk:
            why = R_KV_CAPACITY
        if why != R_NONE:
            status[r] = REJECTED
            reason[r] = why
            t_fin[r] = t
            return False
        status[r] = WAITING
        E.waiting.append(r)
        return True

    def enter_fetch(r, t):
        """The kv_fetch stage: the leading blocks the tier holds are read (all but the last prompt
        token's); on a miss nothing moves and the request arrives at once."""
        m = lookup(r)
        tok = min(hash_block * m, prompt[r] - 1)
        found[r] = tok
        if m == 0 or tok <= 0:
            t_read_end[r] = t
            arrive(r, t)
            return
        start_flow(r, tok * kv_bytes_per_token, t, False)

    def transfer_done(f, t):
        if f["write"]:
            writing.discard(f["id"])   # nobody waits for a write
            return
        r = f["id"]
        t_read_end[r] = t
        if arrive(r, t):
            fetched[r] = found[r]

    def form(t):
        tok = 0
        for r in list(E.waiting):
            if len(E.running) >= E.B_seq:
                break
            h = fetched[r]
            cc = prompt[r] - h
            if cc > E.B_tok - tok:
                break
            need = _cdiv(prompt[r] + 1, E.b)
            if E.N_blk - E.used - need < E.wm:
                break
            E.waiting.remove(r)
            E.running.append(r)
            status[r] = RUNNING
            E.used += need
            blocks[r] = need
            computed[r] = h
            if hit_first[r] < 0:
                hit_first[r] = h
            E.batch_pf.append((r, h, cc))
            tok += cc
        if not E.batch_pf:
            for r in E.running:
                if computed[r] < prompt[r] or gen[r] < 1:
                    continue
                grow = _cdiv(prompt[r] + gen[r], E.b) - blocks[r]
                if grow > E.N_blk - E.used:
                    raise NotImplementedError("the twin covers runs without decode preemption")
                blocks[r] += max(grow, 0)
                E.used += max(grow, 0)
                E.batch_dec.append(r)
        if E.batch_pf or E.batch_dec:
            return E.step_fn([(h, cc) for _, h, cc in E.batch_pf],
                             [(1, 0, prompt[r] + gen[r] - 1) for r in E.batch_dec], len(E.batch_pf))
        if not E.running and E.waiting and E.used == 0:
            r = E.waiting.pop(0)
            status[r] = REJECTED
            reason[r] = R_TOKEN_BUDGET if prompt[r] > E.B_tok else R_KV_CAPACITY
            t_fin[r] = t
            return "again"
        return None

    def step_end(t):
        E.next_end = math.inf
        for r, h, cc in E.batch_pf:
            computed[r] += cc
            computed_pf[r] += cc
            if computed[r] >= prompt[r]:
                # the prompt's full blocks enter the store (first tier), visible at once; with
                # write-back the ones the lookup did not find move there as a transfer
                insert(r, prompt[r] // hash_block)
                new_tokens = (prompt[r] // hash_block) * hash_block - found[r]
                if write_back and new_tokens > 0 and r not in writing:
                    start_flow(r, new_tokens * kv_bytes_per_token, t, True)
                gen[r] += 1
                t_first[r] = t
                t_last[r] = t
        for r in E.batch_dec:
            gen[r] += 1
            t_last[r] = t
        for r in [x for x in E.running if gen[x] >= output[x]]:
            E.running.remove(r)
            E.used -= blocks[r]
            blocks[r] = 0
            status[r] = FINISHED
            t_fin[r] = t
        E.batch_pf = []
        E.batch_dec = []

    t = 0.0
    flow_clock = 0.0
    na = 0
    while True:
        cands = [E.next_end] + [f["t0"] if f["phase"] == 1 else f["done"] for f in flows]
        if na < n:
            cands.append(arrival[na])
        t_next = min(cands)
        if t_next == math.inf:
            break
        t = max(t, t_next)
        # phase 0: transfers (bytes carried since the last event; latency ends; completions in start order)
        if flows:
            dt_f = t - flow_clock
            for f in flows:
                if f["phase"] == 2 and dt_f > 0.0:
                    moved = min(f["rate"] * dt_f, f["rem"])
                    f["rem"] -= moved
                    for i in hops:
                        res_bytes[i] += moved
            changed = False
            k = 0
            while k < len(flows):
                f = flows[k]
                if f["phase"] == 1 and f["t0"] <= t:
                    f["phase"] = 2
                    changed = True
                if f["phase"] == 2 and f["done"] <= t:
                    flows.pop(k)
                    changed = True
                    transfer_done(f, t)
                    continue
                k += 1
            flow_clock = t
            if changed:
                retime(t)
        # phase 1: workload arrivals enter the kv_fetch stage
        while na < n and arrival[na] <= t:
            enter_fetch(na, t)
            na += 1
        # phase 2: the step ending now (write-backs start here)
        if E.next_end <= t:
            step_end(t)
        if flows:
            flow_clock = t
            retime(t)
        # phase 3: an idle client forms its next batch
        if E.next_end == math.inf:
            dt = form(t)
            while dt == "again":
                dt = form(t)
            if dt is not None:
                E.busy_s += dt
                E.steps += 1
                E.next_end = t + dt
    for r in range(n):
        if status[r] in (WAITING, RUNNING):
            status[r] = UNFINISHED
    return dict(status=status, reason=reason, t_first_token=t_first, t_last_token=t_last, t_finish=t_fin,
                t_read_end=t_read_end, generated=gen, computed_pf=computed_pf, hit_first=hit_first,
                busy_s=E.busy_s, steps=E.steps, res_bytes=res_bytes, end_s=t)
