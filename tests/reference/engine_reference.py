"""Plain-Python twin of the single-client engine kernel (``mistfast.kernels.engine``).

Written directly from ``mistfast/ENGINE_SEMANTICS.md`` (with MODEL.md §4.4, §5, §8 as context),
WITHOUT looking at the numba kernel: it is the test oracle for that kernel. It is slow and
obvious on purpose: per-request Python lists, a deque for ``waiting``, a list for ``running``,
an ``OrderedDict`` LRU for the prefix cache, and every rule spelled out where it applies.

Nothing here imports ``mistfast``.

Choices made where the contract is silent or ambiguous are marked ``AMBIGUITY:`` below
(and listed in ``AMBIGUITIES`` at the bottom of this module).
"""
from __future__ import annotations

import math
from collections import OrderedDict, deque

import numpy as np

# batching strategies
STATIC, CONTINUOUS, MIXED, CHUNKED = 0, 1, 2, 3
# admission order policies
FCFS, SPF, LWL = 0, 1, 2
# request status codes
PENDING, WAITING, RUNNING, FINISHED, REJECTED, UNFINISHED = 0, 1, 2, 3, 4, 5
# reasons
R_NONE = 0
R_PROMPT_EXCEEDS_TOKEN_BUDGET = 1
R_EXCEEDS_MAX_MODEL_LEN = 2
R_KV_EXCEEDS_CAPACITY = 3
R_KV_EXHAUSTED = 4

# AMBIGUITY (prefix-cache insertion time): the loop text (step 4) says a request inserts its full
# prompt hash blocks when it *finishes*; the "Prefix cache" section says "when the request
# finishes its first prefill (i.e. when computed reaches pf_target the first time)", and MODEL.md
# §4.2 says "new full blocks are written after prefill". We follow the specific section:
# "first_prefill". Set to "finish" to get the other reading.
PREFIX_INSERT_AT = "first_prefill"


def _ceil_div(a, b):
    return -(-a // b)


class _PrefixLRU:
    """LRU set of hash-block ids with a fixed capacity (in hash blocks)."""

    def __init__(self, capacity):
        self.capacity = int(capacity)
        self.od = OrderedDict()

    def leading_hits(self, ids):
        """m = number of leading ids present (stops at the first miss). Does not touch."""
        m = 0
        for h in ids:
            if h in self.od:
                m += 1
            else:
                break
        return m

    def touch(self, ids, m):
        # lookup hits move to the most-recent end, in prefix order (so the last hit block ends
        # up most recent)
        for h in ids[:m]:
            self.od.move_to_end(h)

    def insert(self, ids):
        for h in ids:
            if h in self.od:
                # AMBIGUITY: inserting an id that is already cached just moves it to the
                # most-recent end (no duplicate, no eviction).
                self.od.move_to_end(h)
            else:
                if len(self.od) >= self.capacity:
                    self.od.popitem(last=False)  # evict least recent
                self.od[h] = True


def reference_simulate(requests: dict, sched: dict, step_fn, stage_fn=None) -> dict:
    """Simulate one engine (single client) step by step.

    requests: {'arrival_s': float64[n] sorted, 'prompt': int64[n], 'output': int64[n],
               'hash_off': int64[n+1], 'hash_ids': int64[m] (dense ids 0..H-1),
               'branches': int, 'hash_block': int}
    sched: {'batching': 0 STATIC|1 CONTINUOUS|2 MIXED|3 CHUNKED, 'policy': 0 FCFS|1 SPF|2 LWL,
            'max_batched_tokens', 'max_batch_size', 'chunk_size', 'block_size', 'total_blocks',
            'watermark_blocks', 'preemption' (0/1), 'prefix_cache_blocks' (0 = off),
            'static_pad' (0/1), 'aging_s', 'max_model_len', 'concurrency' (0 = open loop),
            'think_s', 'horizon_s', 'max_sim_s', 'drain' (0/1), optional 'prefill_apart' (0/1,
            CHUNKED: prefill steps carry no decodes, SGLang)}
    step_fn(prefill: list[(past, new)], decode: list[(w, s, k)], n_done: int) -> seconds

    PP micro-batch pipelining (ENGINE_SEMANTICS.md "PP micro-batch pipelining"): with
    sched['pp_stages'] = p > 1, stage_fn(prefill, decode, n_done) -> [p stage durations in s]
    replaces step_fn and up to p micro-batches are in flight (see ``pipelined_loop`` below).

    Returns per-request numpy arrays ('status', 'reason', 'arrival_s', 't_first_scheduled',
    't_first_token', 't_last_token', 't_finish', 'generated', 'preemptions', 'hit_tokens',
    'computed_prompt_tokens') and per-run values ('steps', 'busy_s', 'n_steps',
    'kv_peak_blocks', 'kv_block_seconds', 'preemptions_total', 'recomputed_tokens',
    'end_time_s', plus the extras 'sum_batch_tokens', 'sum_batch_seqs').

    Each step dict is {'t', 'dt', 'prefill': [(id, past, new)], 'decode': [(id, w, s, k)]} plus
    the extras 'n_done' (what was passed to step_fn) and 'kv_blocks' (blocks in use after the
    step's admissions/growth, the value used for the peak and the time-weighted sum).
    """
    # ---------------------------------------------------------------- inputs
    arrival_in = [float(x) for x in np.asarray(requests["arrival_s"], dtype=np.float64)]
    prompt = [int(x) for x in np.asarray(requests["prompt"])]
    output = [int(x) for x in np.asarray(requests["output"])]
    n = len(prompt)
    hash_off = np.asarray(requests.get("hash_off", np.zeros(n + 1, dtype=np.int64)))
    hash_ids_all = np.asarray(requests.get("hash_ids", np.zeros(0, dtype=np.int64)))
    if hash_off.size == 0:
        hash_off = np.zeros(n + 1, dtype=np.int64)
    if hash_off.size != n + 1:
        raise ValueError(f"hash_off needs n + 1 = {n + 1} entries, got {hash_off.size}")
    ids_of = [[int(h) for h in hash_ids_all[int(hash_off[i]):int(hash_off[i + 1])]] for i in range(n)]
    w = int(requests.get("branches", 1))
    hash_block = int(requests.get("hash_block", 512))

    batching = int(sched["batching"])
    policy = int(sched["policy"])
    B_tok = int(sched["max_batched_tokens"])
    B_seq = int(sched["max_batch_size"])
    C = int(sched["chunk_size"])
    b = int(sched["block_size"])
    N_blk = int(sched["total_blocks"])
    watermark = int(sched["watermark_blocks"])
    preemption = int(sched["preemption"])
    cache_cap = int(sched["prefix_cache_blocks"])
    static_pad = int(sched["static_pad"])
    aging_s = float(sched["aging_s"])
    max_model_len = int(sched["max_model_len"])
    concurrency = int(sched["concurrency"])
    think_s = float(sched["think_s"])
    horizon_s = float(sched["horizon_s"])
    max_sim_s = float(sched["max_sim_s"])
    drain = int(sched["drain"])
    # MIST's rule (docs/mist_parity.md): max_batch_size bounds the requests of one step, not the
    # running set
    per_step = int(sched.get("seqs_per_step", 0)) > 0
    # CHUNKED with prefill apart (SGLang's default scheduler): a step with any prefill chunk carries
    # no decodes; the decodes run in the steps without one
    prefill_apart = batching == CHUNKED and int(sched.get("prefill_apart", 0)) > 0
    pp = int(sched.get("pp_stages", 1))
    pipelined = pp > 1
    inflight = set()    # PP micro-batching: requests in a micro-batch in flight

    cache = _PrefixLRU(cache_cap) if cache_cap > 0 else None

    # ---------------------------------------------------------------- per-request state
    nan = float("nan")
    status = [PENDING] * n
    reason = [R_NONE] * n
    arrival = [nan] * n        # effective arrival times (NaN = not released in closed loop)
    released = [False] * n     # arrival time known
    t_first_sched = [nan] * n
    t_first_tok = [nan] * n
    t_last_tok = [nan] * n
    t_fin = [nan] * n
    generated = [0] * n
    preempt_count = [0] * n
    hit_first = [0] * n        # hit tokens at first admission
    cpt = [0] * n              # computed prompt tokens (all chunk tokens summed)
    pf_target = list(prompt)
    computed = [0] * n
    blocks = [0] * n
    hit = [0] * n              # hit at the latest admission
    admitted_once = [False] * n
    first_prefill_done = [False] * n

    # AMBIGUITY (closed loop): "only the first N requests have their arrival times given (0)" is
    # read as: the first N requests arrive at t = 0 (their input arrival_s is ignored), the rest
    # get x + think_s when released.
    if concurrency > 0:
        for i in range(min(concurrency, n)):
            arrival[i] = 0.0
            released[i] = True
        next_release = min(concurrency, n)
    else:
        for i in range(n):
            arrival[i] = arrival_in[i]
            released[i] = True
        next_release = n

    def release_next(x):
        """Closed loop: a request finished or was rejected at time x."""
        nonlocal next_release
        if concurrency > 0 and next_release < n:
            j = next_release
            arrival[j] = x + think_s
            released[j] = True
            next_release += 1

    waiting = deque()   # FCFS / deque order; preempted requests go to the front
    running = []        # admission order, newest last
    used_blocks = 0     # Σ blocks of running requests
    static_batch = []   # STATIC: the requests admitted together in the current batch

    preemptions_total = 0
    # SGLang's admission reserve (sched['kv_reserve'] = 1, ENGINE_SEMANTICS.md "Admission reserve"):
    # decode batches since new_token_ratio was last reset, and the KV tokens this formation's
    # admissions set aside (None until its first admission attempt)
    kv_reserve = int(sched.get("kv_reserve", 0)) > 0
    reserve_decays = 0
    set_aside = [None]

    def reserve_ratio():
        init, low = 0.7, 0.7 * 0.14          # SGLang environ.py: init ratio, min factor, 600 decay steps
        ratio = init - reserve_decays * ((init - low) / 600.0)
        return ratio if ratio > low else low

    def output_left(i):
        return w * min(output[i] - generated[i], 4096)   # (SGLANG_CLIP_MAX_NEW_TOKENS_ESTIMATION)
    recomputed_tokens = 0

    def blocks_for(i, g, h):
        p_eff = prompt[i] - h
        if w == 1:
            return _ceil_div(p_eff + g, b)
        return _ceil_div(p_eff, b) + w * _ceil_div(g, b)

    # ---------------------------------------------------------------- arrivals
    # Requests before `first_open` are settled: arrived, or released with an arrival after the
    # horizon (they never arrive). Released-but-unsettled requests lie in [first_open, next_release).
    settled = [False] * n
    first_open = 0

    def settle(i):
        nonlocal first_open
        settled[i] = True
        while first_open < n and settled[first_open]:
            first_open += 1

    def process_arrivals(t):
        # AMBIGUITY (closed loop): releases happen when the loop processes a finish (at step end)
        # or a rejection (stamped at the rejected request's arrival time, which can be earlier
        # than a finish processed just before), so effective arrival times need not be monotone
        # in index. Literal rule: every released request with arrival <= t arrives, in index
        # order; a request released during this pass (a rejection with a small think_s) is
        # considered in the same pass (it has a higher index).
        i = first_open
        while i < next_release:  # next_release grows when a rejection releases a request
            if not settled[i]:
                a = arrival[i]
                if a > horizon_s:
                    settle(i)  # arrivals after the horizon never arrive (stay PENDING)
                elif a <= t:
                    settle(i)
                    rej = R_NONE
                    if batching != CHUNKED and prompt[i] > B_tok:
                        rej = R_PROMPT_EXCEEDS_TOKEN_BUDGET
                    elif prompt[i] + output[i] > max_model_len:
                        rej = R_EXCEEDS_MAX_MODEL_LEN
                    elif blocks_for(i, output[i], 0) > N_blk:
                        rej = R_KV_EXCEEDS_CAPACITY
                    if rej != R_NONE:
                        status[i] = REJECTED
                        reason[i] = rej
                        t_fin[i] = a  # t_finish = arrival time
                        release_next(a)
                    else:
                        status[i] = WAITING
                        waiting.append(i)
                elif concurrency == 0:
                    break  # open loop: input sorted by arrival, nothing further can be due
            i += 1

    def next_arrival_time():
        """Earliest arrival among released requests still to arrive (all <= horizon), or None."""
        best = None
        for i in range(first_open, next_release):
            if not settled[i]:
                if arrival[i] > horizon_s:
                    continue
                if best is None or arrival[i] < best:
                    best = arrival[i]
                if concurrency == 0:
                    break  # sorted
        return best

    # ---------------------------------------------------------------- scheduling helpers
    def scan_order(t):
        order = list(waiting)
        if policy == FCFS:
            return order
        # AMBIGUITY: "waited longer than aging_s" is t - arrival > aging_s (strict), measured from
        # the (effective) first arrival, also for preempted requests; aging_s = 0 is NOT "off"
        # (every request with t > arrival is then aged, i.e. FCFS); use inf to disable aging.
        aged = [i for i in order if t - arrival[i] > aging_s]
        rest = [i for i in order if not (t - arrival[i] > aging_s)]
        if policy == SPF:
            rest.sort(key=lambda i: (prompt[i], i))
        elif policy == LWL:
            rest.sort(key=lambda i: (pf_target[i] - computed[i] + output[i] - generated[i], i))
        else:
            raise ValueError(f"unknown policy {policy}")
        return aged + rest

    def try_admit(i, token_ok, in_step=0):
        """Try to admit waiting request i. token_ok(new_prefill_tokens) -> bool is the caller's
        token-budget test; in_step: requests already in the step (the per-step limit). Returns the
        number of new prefill tokens (pf_target - hit) on success, None on failure (a failed
        admission changes nothing)."""
        nonlocal used_blocks
        if cache is not None:
            m = cache.leading_hits(ids_of[i])
            h = min(hash_block * m, prompt[i] - 1)
        else:
            m, h = 0, 0
        new_tokens = pf_target[i] - h
        if not token_ok(new_tokens):
            return None
        # (PP micro-batching: B_seq bounds each micro-batch, so requests in flight do not count)
        if (in_step if per_step else len(running) - sum(1 for r in running if r in inflight)) >= B_seq:
            return None
        need = blocks_for(i, generated[i] + 1, h)
        free = N_blk - used_blocks
        if free - need < watermark:
            return None
        if kv_reserve:
            if set_aside[0] is None:
                set_aside[0] = reserve_ratio() * sum(output_left(r) for r in running)
            if not new_tokens + output_left(i) < free * b - set_aside[0]:
                return None
            set_aside[0] += output_left(i)
        # success
        if cache is not None:
            cache.touch(ids_of[i], m)
        hit[i] = h
        computed[i] = h
        blocks[i] = need
        used_blocks += need
        if not admitted_once[i]:
            admitted_once[i] = True
            hit_first[i] = h
        waiting.remove(i)
        status[i] = RUNNING
        running.append(i)
        return new_tokens

    def preempt(v):
        nonlocal used_blocks, preemptions_total, recomputed_tokens
        used_blocks -= blocks[v]
        blocks[v] = 0
        running.remove(v)
        pf_target[v] = prompt[v] + w * generated[v]
        computed[v] = 0
        hit[v] = 0
        status[v] = WAITING
        waiting.appendleft(v)
        preempt_count[v] += 1
        preemptions_total += 1
        recomputed_tokens += pf_target[v]
        if v in static_batch:
            static_batch.remove(v)

    def is_decode(i):
        # (a request in a PP micro-batch in flight is in no other batch)
        return computed[i] == pf_target[i] and generated[i] >= 1 and i not in inflight

    def decode_tuple(i):
        # contract: with g generated, w = 1 -> (1, 0, prompt + g - 1) (tokens whose KV exists
        # before the step); w > 1 -> (w, prompt, g - 1)
        g = generated[i]
        if w == 1:
            return (1, 0, prompt[i] + g - 1)
        return (w, prompt[i], g - 1)

    def add_decode(r, dec, prefill_ids):
        """Add decode r to the decode list `dec` (list of ids), growing its KV and preempting if
        needed. Returns (added, removed) where removed lists already-batched decodes that were
        preempted as victims (the caller gives their token budget back)."""
        nonlocal used_blocks
        removed = []
        extra = blocks_for(r, generated[r], hit[r]) - blocks[r]
        if extra > 0 and N_blk - used_blocks < extra:
            if not preemption:
                return False, removed  # skipped this step
            while N_blk - used_blocks < extra:
                victims = [v for v in running if v != r and v not in prefill_ids and v not in dec
                           and v not in inflight]
                if victims:
                    v = victims[-1]  # newest
                    # victims exclude decodes already in this step's batch (ENGINE_SEMANTICS: like
                    # vLLM, which pops the last running request, never one already scheduled);
                    # the removal below is kept as a guard and never triggers.
                    if v in dec:
                        dec.remove(v)
                        removed.append(v)
                    preempt(v)
                else:
                    preempt(r)
                    return False, removed
        if extra > 0:
            blocks[r] += extra
            used_blocks += extra
        dec.append(r)
        return True, removed

    # ---------------------------------------------------------------- batch formation
    def form_batch(t):
        """Form one batch at time t (admissions, KV growth and preemptions happen here).

        Returns (prefill, dec, pad_order): prefill = [(id, past, new)] in batch order; dec = ids
        of the live decodes in batch order; pad_order = None except for a STATIC decode step, where
        it is the full decode order as [(id, is_pad)] (pads only with static_pad)."""
        nonlocal static_batch
        set_aside[0] = None
        prefill = []   # (id, past, new)
        dec = []       # ids of live decodes
        pad_order = None  # STATIC with pad: full decode order as list of (id, is_pad)

        if batching == STATIC:
            if not running:
                static_batch = []
                tok = [0]

                def ok(new):
                    return tok[0] + new <= B_tok

                for i in scan_order(t):
                    got = try_admit(i, ok, len(prefill))
                    if got is None:
                        break  # strict head-of-line
                    tok[0] += got
                    prefill.append((i, hit[i], got))
                    static_batch.append(i)
            else:
                # decode step: walk the batch in admission order; finished members are pads
                # (only with static_pad), live members are decodes (KV growth / preemption)
                pad_order = []
                for i in list(static_batch):
                    if status[i] == FINISHED:
                        if static_pad:
                            pad_order.append((i, True))
                    elif status[i] == RUNNING and is_decode(i):
                        added, _removed = add_decode(i, dec, ())
                        if added:
                            pad_order.append((i, False))
                # drop live entries that a later decode preempted as its victim
                pad_order = [(i, p) for (i, p) in pad_order if p or i in dec]

        elif batching in (CONTINUOUS, MIXED):
            tok = [0]

            def ok(new):
                return tok[0] + new <= B_tok

            for i in scan_order(t):
                got = try_admit(i, ok, len(prefill))
                if got is None:
                    break
                tok[0] += got
                prefill.append((i, hit[i], got))
            if batching == CONTINUOUS:
                if not prefill:
                    for i in list(running):
                        if per_step and len(dec) >= B_seq:
                            break
                        if i in running and is_decode(i):
                            if len(dec) >= B_seq:
                                break   # (only a PP micro-batch has more candidates than B_seq)
                            add_decode(i, dec, ())
            else:  # MIXED
                budget = B_tok - tok[0]
                pf_ids = {p[0] for p in prefill}
                for i in list(running):
                    if per_step and len(prefill) + len(dec) >= B_seq:
                        break
                    if i not in running or not is_decode(i):
                        continue
                    if budget < w or len(prefill) + len(dec) >= B_seq:
                        break
                    added, removed = add_decode(i, dec, pf_ids)
                    budget += w * len(removed)
                    if added:
                        budget -= w

        elif batching == CHUNKED:
            budget = C

            def chunked_decodes(budget):
                for i in list(running):
                    if per_step and len(dec) >= B_seq:
                        break
                    if i not in running or not is_decode(i):
                        continue
                    if budget < w or len(dec) >= B_seq:
                        break
                    added, removed = add_decode(i, dec, ())
                    budget += w * len(removed)
                    if added:
                        budget -= w
                return budget

            # 1. decodes in running order while budget >= w (prefill apart: last, see 4.)
            if not prefill_apart:
                budget = chunked_decodes(budget)
            # 2. partials in running order
            for i in list(running):
                if budget <= 0 or (per_step and len(prefill) + len(dec) >= B_seq):
                    break
                if computed[i] < pf_target[i] and i not in inflight:
                    if len(dec) + len(prefill) >= B_seq:
                        break   # (only a PP micro-batch has more candidates than B_seq)
                    chunk = min(pf_target[i] - computed[i], budget)
                    prefill.append((i, computed[i], chunk))
                    budget -= chunk
            # 3. new admissions (strict), token budget = whatever is left (> 0)
            for i in scan_order(t):
                if budget <= 0:
                    break
                got = try_admit(i, lambda new: True, len(prefill) + len(dec))
                if got is None:
                    break
                chunk = min(got, budget)
                prefill.append((i, hit[i], chunk))
                budget -= chunk
            # 4. prefill apart: the decodes, with the whole budget, only in a step without prefill
            if prefill_apart and not prefill:
                chunked_decodes(budget)
        else:
            raise ValueError(f"unknown batching {batching}")

        return prefill, dec, pad_order

    # ---------------------------------------------------------------- main loop
    steps = []
    busy_s = 0.0
    kv_peak = 0
    kv_block_seconds = 0.0
    sum_batch_tokens = 0
    sum_batch_seqs = 0
    t = 0.0

    def decode_entries_of(dec, pad_order):
        if pad_order is not None:  # STATIC decode step (with or without pad)
            return [(i, 1, 0, prompt[i] + output[i] - 1) if is_pad else (i,) + decode_tuple(i)
                    for i, is_pad in pad_order]
        return [(i,) + decode_tuple(i) for i in dec]

    def apply_batch(prefill, dec, t_end):
        """A batch's tokens at its end t_end (step 4 of the loop)."""

        def emit(i):
            nonlocal used_blocks
            generated[i] += 1
            if math.isnan(t_first_tok[i]):
                t_first_tok[i] = t_end
            t_last_tok[i] = t_end
            if generated[i] >= output[i]:
                status[i] = FINISHED
                t_fin[i] = t_end
                used_blocks -= blocks[i]
                blocks[i] = 0
                running.remove(i)
                if cache is not None and PREFIX_INSERT_AT == "finish":
                    cache.insert(ids_of[i][:prompt[i] // hash_block])
                release_next(t_end)

        for (i, past, new) in prefill:
            computed[i] += new
            cpt[i] += new
            if computed[i] == pf_target[i]:
                if not first_prefill_done[i]:
                    first_prefill_done[i] = True
                    if cache is not None and PREFIX_INSERT_AT == "first_prefill":
                        cache.insert(ids_of[i][:prompt[i] // hash_block])
                emit(i)
        for i in dec:
            emit(i)

    def pipelined_loop():
        """PP micro-batch pipelining, written from ENGINE_SEMANTICS.md "PP micro-batch pipelining":
        events are arrivals, micro-batch completions (launch order) and the gate (the previous
        micro-batch's start + its slowest stage). At an event: arrivals; completions apply their
        tokens; stop tests; arrivals released now; then, if the gate has passed and fewer than pp
        are in flight, one micro-batch is formed from the requests not in flight. Its stages
        follow the flow-shop recurrence; busy time is the union of the in-flight intervals.
        (Written by the author of ``mistfast/kernels/ppipe.py`` from the text, as a plain event loop
        over a deque, not as a port of the kernel's ring and event phases: it checks the kernel's
        bookkeeping; the reading of the text is checked by the hand-computed timelines of
        tests/test_pp_microbatch.py.)"""
        nonlocal used_blocks
        busy = kv_bs = 0.0
        peak = tok_sum = seq_sum = 0
        flight = deque()              # micro-batches in flight, in launch order
        stage_left = [0.0] * pp       # when the latest micro-batch leaves each stage
        gate, gate_pending = 0.0, False
        t = 0.0
        while True:
            t_next = math.inf
            a = next_arrival_time()
            if a is not None:
                t_next = a
            if flight:
                t_next = min(t_next, flight[0]["end"])
            if gate_pending:
                t_next = min(t_next, gate)
            if t_next == math.inf:
                break
            t = max(t, t_next)
            engine_event = bool(flight and flight[0]["end"] <= t) or (gate_pending and gate <= t)
            if t > max_sim_s and not engine_event:
                break
            process_arrivals(t)
            ended = False
            while flight and flight[0]["end"] <= t:
                mb = flight.popleft()
                for (i, _, _) in mb["prefill"]:
                    inflight.discard(i)
                for i in mb["dec"]:
                    inflight.discard(i)
                apply_batch(mb["prefill"], mb["dec"], t)
                ended = True
            if gate_pending and gate <= t:
                gate_pending = False
            if t > max_sim_s or (ended and drain == 0 and t >= horizon_s):
                break
            process_arrivals(t)
            if len(flight) >= pp or t < gate:
                continue
            while True:
                preempted_before = preemptions_total
                prefill, dec, pad_order = form_batch(t)
                if prefill or dec:
                    break
                if preemptions_total != preempted_before:
                    continue      # only preemptions (e.g. a decode of its own): the victims may be admitted now
                if not running or flight:
                    break
                v = running[-1]   # nothing in flight and nobody can run: abort the newest, form again
                used_blocks -= blocks[v]
                blocks[v] = 0
                running.remove(v)
                if v in static_batch:
                    static_batch.remove(v)
                status[v] = REJECTED
                reason[v] = R_KV_EXHAUSTED
                t_fin[v] = t
                release_next(t)
            if not prefill and not dec:
                continue
            dec_entries = decode_entries_of(dec, pad_order)
            n_done = sum(1 for (i, past, new) in prefill if past + new == pf_target[i])
            d = [float(x) for x in stage_fn([(past, new) for (_, past, new) in prefill],
                                            [(ww, s_, k) for (_, ww, s_, k) in dec_entries], n_done)]
            assert len(d) == pp
            prev_end = stage_left[-1]
            left = t
            next_gate = t
            before = 0.0          # (added one by one: Python's sum() of floats is compensated)
            for q in range(pp):   # flow shop: enter q once out of q - 1 and q is free
                left = max(left, stage_left[q]) + d[q]
                stage_left[q] = left
                # gate: a next batch with these stage times would reach q only once this one left it
                next_gate = max(next_gate, left - before)
                before += d[q]
            added = left - max(t, prev_end)
            busy += added
            peak = max(peak, used_blocks)
            kv_bs += used_blocks * added
            tok_sum += sum(new for (_, _, new) in prefill) + sum(ww for (_, ww, _, _) in dec_entries)
            seq_sum += len(prefill) + len(dec_entries)
            steps.append({"t": t, "dt": left - t, "prefill": list(prefill), "decode": list(dec_entries),
                          "n_done": n_done, "kv_blocks": used_blocks, "stages": d})
            for (i, _, _) in prefill:
                inflight.add(i)
                if math.isnan(t_first_sched[i]):
                    t_first_sched[i] = t
            for (i, _, _, _) in dec_entries:
                if math.isnan(t_first_sched[i]):
                    t_first_sched[i] = t
            inflight.update(dec)
            flight.append({"end": left, "prefill": prefill, "dec": dec})
            gate = next_gate
            gate_pending = gate > t
        if flight and stage_left[-1] > t:
            busy -= stage_left[-1] - t    # work in progress at the stop counts up to the stop
        return t, busy, peak, kv_bs, tok_sum, seq_sum

    if pipelined:
        t, busy_s, kv_peak, kv_block_seconds, sum_batch_tokens, sum_batch_seqs = pipelined_loop()

    while not pipelined:
        # 1. arrivals
        process_arrivals(t)
        # 2. batch
        preempted_before = preemptions_total
        prefill, dec, pad_order = form_batch(t)
        # new_token_ratio: a retraction resets it, a decode batch decays it, an idle engine resets it
        if preemptions_total != preempted_before:
            reserve_decays = 0
        elif not prefill and dec:
            reserve_decays += 1
        if not prefill and not dec and not running:
            reserve_decays = 0
        if not prefill and not dec:
            # AMBIGUITY: a STATIC step that would hold only padded (finished) entries counts as
            # empty: it has no live work.
            if running:
                # AMBIGUITY: applied whatever the preemption flag (the doc says it only happens with
                # preemption off). After the abort we go back to step 1 at the same t (a closed-loop
                # release with think_s = 0 can arrive at once) and form the batch again.
                v = running[-1]
                used_blocks -= blocks[v]
                blocks[v] = 0
                running.remove(v)
                if v in static_batch:
                    static_batch.remove(v)
                status[v] = REJECTED
                reason[v] = R_KV_EXHAUSTED
                t_fin[v] = t
                release_next(t)
                continue
            nxt = next_arrival_time()
            if nxt is not None:
                # AMBIGUITY: literal — no max_sim_s / horizon check after this jump; the step
                # formed at the new t runs, and the stop test of step 5 applies after it.
                t = max(t, nxt)
                continue
            break

        # decode entries in batch order
        if pad_order is not None:  # STATIC decode step (with or without pad)
            dec_entries = []
            for i, is_pad in pad_order:
                if is_pad:
                    # contract: a padded entry is (1, 0, prompt + output - 1), for every w
                    dec_entries.append((i, 1, 0, prompt[i] + output[i] - 1))
                else:
                    dec_entries.append((i,) + decode_tuple(i))
        else:
            dec_entries = [(i,) + decode_tuple(i) for i in dec]

        n_done = sum(1 for (i, past, new) in prefill if past + new == pf_target[i])

        # 3. step time
        dt = float(step_fn([(past, new) for (_, past, new) in prefill],
                           [(ww, s, k) for (_, ww, s, k) in dec_entries], n_done))
        busy_s += dt
        kv_peak = max(kv_peak, used_blocks)
        kv_block_seconds += used_blocks * dt
        sum_batch_tokens += sum(new for (_, _, new) in prefill) + sum(ww for (_, ww, _, _) in dec_entries)
        sum_batch_seqs += len(prefill) + len(dec_entries)
        steps.append({"t": t, "dt": dt, "prefill": list(prefill), "decode": list(dec_entries),
                      "n_done": n_done, "kv_blocks": used_blocks})
        for (i, _, _) in prefill:
            if math.isnan(t_first_sched[i]):
                t_first_sched[i] = t
        for (i, _, _, _) in dec_entries:
            if math.isnan(t_first_sched[i]):
                t_first_sched[i] = t

        # 4. apply at t + dt
        t_end = t + dt

        def emit(i):
            nonlocal used_blocks
            generated[i] += 1
            if math.isnan(t_first_tok[i]):
                t_first_tok[i] = t_end
            t_last_tok[i] = t_end
            if generated[i] >= output[i]:
                status[i] = FINISHED
                t_fin[i] = t_end
                used_blocks -= blocks[i]
                blocks[i] = 0
                running.remove(i)
                if cache is not None and PREFIX_INSERT_AT == "finish":
                    cache.insert(ids_of[i][:prompt[i] // hash_block])
                release_next(t_end)

        for (i, past, new) in prefill:
            computed[i] += new
            cpt[i] += new
            if computed[i] == pf_target[i]:
                if not first_prefill_done[i]:
                    first_prefill_done[i] = True
                    if cache is not None and PREFIX_INSERT_AT == "first_prefill":
                        # only full prompt blocks, in order
                        cache.insert(ids_of[i][:prompt[i] // hash_block])
                emit(i)
        for i in dec:
            emit(i)

        # 5. advance and stop test
        t = t_end
        if t > max_sim_s or (drain == 0 and t >= horizon_s):
            break

    for i in range(n):
        if status[i] in (WAITING, RUNNING):
            status[i] = UNFINISHED

    f64 = np.float64
    return {
        "status": np.array(status, dtype=np.int64),
        "reason": np.array(reason, dtype=np.int64),
        "arrival_s": np.array(arrival, dtype=f64),
        "t_first_scheduled": np.array(t_first_sched, dtype=f64),
        "t_first_token": np.array(t_first_tok, dtype=f64),
        "t_last_token": np.array(t_last_tok, dtype=f64),
        "t_finish": np.array(t_fin, dtype=f64),
        "generated": np.array(generated, dtype=np.int64),
        "preemptions": np.array(preempt_count, dtype=np.int64),
        "hit_tokens": np.array(hit_first, dtype=np.int64),
        "computed_prompt_tokens": np.array(cpt, dtype=np.int64),
        "steps": steps,
        "busy_s": busy_s,
        "n_steps": len(steps),
        "kv_peak_blocks": kv_peak,
        "kv_block_seconds": kv_block_seconds,
        "preemptions_total": preemptions_total,
        "recomputed_tokens": recomputed_tokens,
        "end_time_s": t,
        "sum_batch_tokens": sum_batch_tokens,
        "sum_batch_seqs": sum_batch_seqs,
    }


AMBIGUITIES = """Readings chosen where ENGINE_SEMANTICS.md is silent or ambiguous (see AMBIGUITY comments):

 1. Prefix-cache insert time: at the first prefill completion (the "Prefix cache" section and
    MODEL.md 4.2), not at finish (loop step 4). Switch: PREFIX_INSERT_AT.
 2. Inserting an id already in the cache moves it to the most-recent end (no eviction).
 3. m counts leading ids over all of a request's hash ids (not only its floor(prompt/hash_block)
    full blocks); the min(., prompt - 1) cap handles a partial last block.
 4. Closed loop: the first N requests arrive at t = 0 (input arrival_s ignored).
 5. Closed loop: releases happen when the loop processes a finish (x = step end), a rejection at
    arrival (x = the rejected request's arrival time) or a kv_exhausted abort (x = t). Effective
    arrivals can therefore be non-monotone in index; every released request with arrival <= t
    arrives, in index order (no index pointer that would hold an earlier one behind a later one).
 6. Aging: t - arrival > aging_s (strict), from the effective first arrival (also for preempted
    requests); aging_s = 0 is not "off" (all requests with t > arrival are aged -> FCFS).
 7. SPF sorts preempted requests by prompt (not pf_target) too.
 8. A preemption victim may be an older decode already placed in this step's batch (only r and
    the prefill list are protected); it is removed from the batch and its w tokens go back to the
    MIXED/CHUNKED budget. (vLLM would preempt r itself in that case.)
 9. Decode KV growth ignores the watermark (the watermark applies to admissions only).
10. MIXED/CHUNKED decodes: the token budget is tested before KV growth; a decode skipped for KV
    (preemption off) uses no budget and the scan continues; the scan stops at the first budget
    misfit.
11. Empty batch with running requests: the newest is aborted whatever the preemption flag, then
    the loop goes back to step 1 at the same t and forms the batch again. (Preemptions done while
    forming the empty batch stay.)
12. STATIC + static_pad: a batch with only pad entries counts as empty; pads keep their place in
    the batch's admission order; preempted/aborted members leave the batch and are not padded.
    A preempted request waits until the whole static batch is done.
13. CHUNKED admissions: only B_seq and KV can stop the scan (any budget > 0 admits a partial chunk).
14. After an idle jump (t = next arrival) there is no stop test before the step runs; with
    horizon_s > max_sim_s one step can start after max_sim_s. An arrival exactly at horizon_s
    arrives.
15. recomputed_tokens += pf_target = prompt + w*generated even if the victim was a partial prefill
    or had a prefix hit.
16. Effective arrival_s of a never-released request (closed loop) is NaN.
17. kv_peak_blocks / kv_block_seconds use the blocks in use after batch formation (before the
    step's finishes free blocks).
18. PP micro-batching: an empty formation that preempted someone (a decode that could only
    preempt itself, the others being in flight) is formed again at once, as the kernel does
    (_form_batch returns 3); the sequential loop keeps its own reading (11).

Doc issues noticed (not ambiguities):
 a. MODEL.md 5.5 ex. 3: under non-chunked batching R2 (20,000 tokens) is rejected with reason 1
    (checked first), not kv_exceeds_capacity.
 b. Non-chunked strategies: a preempted request whose recompute pf_target = prompt + w*generated
    exceeds B_tok can never be re-admitted; with the strict head-of-line scan it blocks the
    queue until the run stops (those requests end UNFINISHED).
"""
