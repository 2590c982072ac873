"""Tests of the pure-Python engine reference (tests/reference/engine_reference.py) against
hand-derived expectations: MODEL.md §5.5 worked examples, each batching strategy, ordering
policies, closed loop, prefix cache, horizon/drain, plus hypothesis invariants.

Expected values are derived by hand from ENGINE_SEMANTICS.md, never from re-runs of the
reference. Step times use the linear step function below, so the time arithmetic is written out
with the same float operations the doc prescribes (t_new = t + dt).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.reference.engine_reference import (
    CHUNKED, CONTINUOUS, FCFS, FINISHED, LWL, MIXED, PENDING, REJECTED, SPF, STATIC, UNFINISHED,
    reference_simulate,
)

INF = float("inf")


def step_fn(pf, dec, n):
    return 0.01 + 1e-5 * (sum(c for _, c in pf) + sum(w for w, _, _ in dec))


def dt(tokens):
    """Duration of a step with `tokens` batch tokens (same float ops as step_fn)."""
    return 0.01 + 1e-5 * tokens


def make_requests(rows, branches=1, hash_block=512):
    """rows: list of (arrival, prompt, output) or (arrival, prompt, output, hash_ids)."""
    off = [0]
    ids = []
    for r in rows:
        h = list(r[3]) if len(r) > 3 else []
        ids += h
        off.append(len(ids))
    return {
        "arrival_s": np.array([r[0] for r in rows], dtype=np.float64),
        "prompt": np.array([r[1] for r in rows], dtype=np.int64),
        "output": np.array([r[2] for r in rows], dtype=np.int64),
        "hash_off": np.array(off, dtype=np.int64),
        "hash_ids": np.array(ids, dtype=np.int64),
        "branches": branches,
        "hash_block": hash_block,
    }


def make_sched(**kw):
    s = dict(batching=CONTINUOUS, policy=FCFS, max_batched_tokens=2048, max_batch_size=8,
             chunk_size=512, block_size=16, total_blocks=10**6, watermark_blocks=0, preemption=1,
             prefix_cache_blocks=0, static_pad=0, aging_s=INF, max_model_len=10**9,
             concurrency=0, think_s=0.0, horizon_s=1e9, max_sim_s=1e6, drain=1)
    s.update(kw)
    return s


def run(rows, branches=1, hash_block=512, **kw):
    return reference_simulate(make_requests(rows, branches, hash_block), make_sched(**kw), step_fn)


def pf(step):
    return step["prefill"]


def dec(step):
    return step["decode"]


# --------------------------------------------------------------------------- §5.5 example 1
def test_example1_continuous_strict_hol():
    # R0 (prompt 700) runs first: after its prefill token its decode context is 700.
    # R1 900, R2 1500, R3 300 arrive during R0's prefill step. B_tok 2048, B_seq 8.
    r = run([(0.0, 700, 10), (0.005, 900, 5), (0.005, 1500, 5), (0.005, 300, 5)],
            max_batched_tokens=2048, max_batch_size=8)
    s = r["steps"]
    assert pf(s[0]) == [(0, 0, 700)] and dec(s[0]) == []
    # example step 1: R1 fits, R1 + R2 = 2400 > 2048 -> scan stops, R3 not considered; R0 idle
    assert pf(s[1]) == [(1, 0, 900)] and dec(s[1]) == []
    # example step 2
    assert pf(s[2]) == [(2, 0, 1500), (3, 0, 300)] and dec(s[2]) == []
    # example step 3: all decodes, k = prompt + g - 1 (exactly MODEL.md's tuples)
    assert pf(s[3]) == [] and dec(s[3]) == [(0, 1, 0, 700), (1, 1, 0, 900), (2, 1, 0, 1500), (3, 1, 0, 300)]
    t1 = 0.0 + dt(700)
    t2 = t1 + dt(900)
    t3 = t2 + dt(1800)
    assert s[1]["t"] == t1 and s[2]["t"] == t2 and s[3]["t"] == t3
    # TTFT(R1) = end of its step - arrival
    assert r["t_first_token"][1] == t2
    assert r["t_first_token"][1] - r["arrival_s"][1] == t2 - 0.005
    assert r["t_first_scheduled"][3] == t2 and r["t_first_token"][3] == t3
    assert list(r["status"]) == [FINISHED] * 4
    assert list(r["generated"]) == [10, 5, 5, 5]
    # R0: prefill + 9 decodes; the others: prefill + 4 decodes -> steps 0..2 prefills, then R0
    # decodes alone after the others finish
    assert r["n_steps"] == 3 + 9
    assert r["t_last_token"][0] == r["t_finish"][0] == r["end_time_s"]


# --------------------------------------------------------------------------- §5.5 example 2
def test_example2_chunked():
    # five requests whose prompts fit one 512 budget become decodes with contexts 100, 200, 50,
    # 100, 40; R5 (1200) and R6 (200) arrive during that first step.
    rows = [(0.0, 100, 50), (0.0, 200, 50), (0.0, 50, 50), (0.0, 100, 50), (0.0, 40, 50),
            (0.001, 1200, 3), (0.002, 200, 3)]
    r = run(rows, batching=CHUNKED, chunk_size=512)
    s = r["steps"]
    assert pf(s[0]) == [(0, 0, 100), (1, 0, 200), (2, 0, 50), (3, 0, 100), (4, 0, 40)]
    ctx = [100, 200, 50, 100, 40]
    for k in (1, 2, 3):
        assert dec(s[k]) == [(i, 1, 0, ctx[i] + k - 1) for i in range(5)]
    assert pf(s[1]) == [(5, 0, 507)]                  # R2 waits
    assert pf(s[2]) == [(5, 507, 507)]
    assert pf(s[3]) == [(5, 1014, 186), (6, 0, 200)]  # 5 + 186 + 200 = 391 <= 512
    assert s[1]["n_done"] == 0 and s[2]["n_done"] == 0 and s[3]["n_done"] == 2
    t1 = 0.0 + dt(490)
    t2 = t1 + dt(512)
    t3 = t2 + dt(512)
    t4 = t3 + dt(391)
    assert r["t_first_scheduled"][5] == t1 and r["t_first_scheduled"][6] == t3
    assert r["t_first_token"][5] == t4 and r["t_first_token"][6] == t4
    assert r["computed_prompt_tokens"][5] == 1200
    # from step 4 on: 7 decodes, no prefill
    assert pf(s[4]) == [] and len(dec(s[4])) == 7
    assert all(r["status"] == FINISHED)


# --------------------------------------------------------------------------- §5.5 example 3
def test_example3_rejections_and_kv_wait():
    # scaled-down capacity (the doc's 1,000 blocks with 940 used cannot be filled by one
    # non-chunked prompt <= 2,048): 100 blocks of 16, R0 holds 63 -> 37 free.
    rows = [
        (0.0, 1000, 5),      # R0: needs ceil(1001/16) = 63 blocks
        (0.001, 700, 5),     # R1: needs ceil(701/16) = 44 > 37 free -> waits
        (0.002, 1500, 200),  # R2: ceil(1700/16) = 107 > 100 -> kv_exceeds_capacity
        (0.003, 2100, 5),    # R3: 2100 > B_tok -> prompt_exceeds_token_budget
        (0.004, 10, 5),      # R4: would fit (1 block) but strict HOL behind R1
        (0.005, 1000, 3001), # R5: 4001 > max_model_len (reason 2 is checked before reason 3)
    ]
    r = run(rows, total_blocks=100, block_size=16, max_batched_tokens=2048, max_model_len=4000)
    assert list(r["reason"]) == [0, 0, 3, 1, 0, 2]
    assert list(r["status"]) == [FINISHED, FINISHED, REJECTED, REJECTED, FINISHED, REJECTED]
    for i, a in ((2, 0.002), (3, 0.003), (5, 0.005)):
        assert r["t_finish"][i] == a
        assert math.isnan(r["t_first_scheduled"][i]) and math.isnan(r["t_first_token"][i])
        assert r["generated"][i] == 0
    s = r["steps"]
    assert pf(s[0]) == [(0, 0, 1000)] and s[0]["kv_blocks"] == 63
    for k in (1, 2, 3, 4):  # R0 decodes alone, R1 and R4 wait for KV
        assert pf(s[k]) == [] and dec(s[k]) == [(0, 1, 0, 999 + k)]
        assert s[k]["kv_blocks"] == 63
    assert r["t_finish"][0] == s[5]["t"]
    assert pf(s[5]) == [(1, 0, 700), (4, 0, 10)] and s[5]["kv_blocks"] == 45
    assert r["t_first_scheduled"][1] == r["t_first_scheduled"][4] == r["t_finish"][0]
    assert r["kv_peak_blocks"] == 63

    # R3 is valid under CHUNKED (enough blocks: ceil(2105/16) = 132)
    r2 = run([(0.0, 2100, 5)], batching=CHUNKED, chunk_size=512, total_blocks=200)
    assert r2["status"][0] == FINISHED and r2["reason"][0] == 0
    assert [p[0][1:] for p in (pf(x) for x in r2["steps"][:5])] == [
        (0, 512), (512, 512), (1024, 512), (1536, 512), (2048, 52)]


def test_example3_doc_numbers_reasons():
    # MODEL.md's R2 (20,000 tokens, 1,000 blocks): ceil(20,001/16) = 1,251 > 1,000. Non-chunked,
    # the prompt-budget check comes first (reason 1); under CHUNKED it is kv_exceeds_capacity.
    r = run([(0.0, 20000, 1)], total_blocks=1000)
    assert r["reason"][0] == 1
    r = run([(0.0, 20000, 1)], total_blocks=1000, batching=CHUNKED)
    assert r["reason"][0] == 3
    r = run([(0.0, 20000, 1)], total_blocks=1251, batching=CHUNKED)
    assert r["reason"][0] == 0 and r["status"][0] == FINISHED


def test_watermark_blocks_admission():
    # free - need >= watermark: 10 blocks, watermark 2; R0 needs 7 (prompt 100), R1 needs 2
    # (prompt 20): 3 - 2 = 1 < 2 -> waits until R0 finishes.
    r = run([(0.0, 100, 2), (0.0, 20, 2)], total_blocks=10, watermark_blocks=2)
    s = r["steps"]
    assert pf(s[0]) == [(0, 0, 100)]
    assert dec(s[1]) == [(0, 1, 0, 100)]
    assert pf(s[2]) == [(1, 0, 20)]
    r = run([(0.0, 100, 2), (0.0, 20, 2)], total_blocks=10, watermark_blocks=1)
    assert pf(r["steps"][0]) == [(0, 0, 100), (1, 0, 20)]


# --------------------------------------------------------------------------- §5.5 example 4
def test_example4_preemption_of_newest():
    # 140 blocks of 16. A (prompt 1599) holds ceil(1600/16) = 100 blocks, C (prompt 639) holds
    # 40. After one decode A has context 1,600 (100 full blocks) and needs block 101: no free
    # block -> C (newest) is preempted.
    r = run([(0.0, 1599, 10), (0.0, 639, 10)], total_blocks=140, max_batched_tokens=4096)
    s = r["steps"]
    assert pf(s[0]) == [(0, 0, 1599), (1, 0, 639)] and s[0]["kv_blocks"] == 140
    assert dec(s[1]) == [(0, 1, 0, 1599), (1, 1, 0, 639)] and s[1]["kv_blocks"] == 140
    assert dec(s[2]) == [(0, 1, 0, 1600)] and s[2]["kv_blocks"] == 101  # C preempted
    # C needs blocks_for(g + 1 = 3) = ceil(642/16) = 41 > 39 free -> waits while A decodes
    for k in range(3, 10):
        assert pf(s[k]) == [] and dec(s[k]) == [(0, 1, 0, 1598 + k)]
    assert r["t_finish"][0] == s[10]["t"]
    # C recomputes prompt + generated = 641 tokens, then emits its 3rd token
    assert pf(s[10]) == [(1, 0, 641)] and s[10]["n_done"] == 1
    assert dec(s[11]) == [(1, 1, 0, 639 + 3 - 1)]
    assert r["preemptions_total"] == 1 and list(r["preemptions"]) == [0, 1]
    assert r["recomputed_tokens"] == 641
    assert list(r["computed_prompt_tokens"]) == [1599, 639 + 641]
    assert list(r["generated"]) == [10, 10] and all(r["status"] == FINISHED)
    assert r["t_first_token"][1] == s[1]["t"]  # not re-stamped by the recompute
    assert r["kv_peak_blocks"] == 140
    # C: 1 prefill + 1 decode + recompute + 7 decodes
    assert r["n_steps"] == 10 + 1 + 7


def test_victim_is_never_an_already_batched_decode():
    # vLLM pops the last running request: when the request that needs a block is itself the
    # newest, it preempts itself, not an older decode already scheduled in this step.
    # 2 blocks of 16: A (prompt 1) and B (prompt 15) hold 1 block each. At step 2, A (context 3)
    # needs nothing, B (context 17) needs a 2nd block: A is already in the batch, so B goes.
    r = run([(0.0, 1, 10), (0.0, 15, 10)], total_blocks=2)
    s = r["steps"]
    assert pf(s[0]) == [(0, 0, 1), (1, 0, 15)]
    assert dec(s[1]) == [(0, 1, 0, 1), (1, 1, 0, 15)]
    assert dec(s[2]) == [(0, 1, 0, 2)]
    assert list(r["preemptions"]) == [0, 1] and r["recomputed_tokens"] == 15 + 2
    # B then needs blocks_for(3) = ceil(18/16) = 2 blocks: free only once A finishes (end of step 9)
    assert r["t_finish"][0] == s[10]["t"]
    assert pf(s[10]) == [(1, 0, 17)]
    assert all(r["status"] == FINISHED) and list(r["generated"]) == [10, 10]


def test_kv_exhausted_abort_without_preemption():
    # 2 blocks of 16; A and B (prompt 15) hold 1 block each; both need a 2nd block at context 17.
    # preemption off: both decodes are skipped -> empty batch with running requests -> the
    # newest (B) is aborted (REJECTED, kv_exhausted, t_finish = t); A then grows and finishes.
    r = run([(0.0, 15, 10), (0.0, 15, 10)], total_blocks=2, preemption=0)
    s = r["steps"]
    assert pf(s[0]) == [(0, 0, 15), (1, 0, 15)]
    assert dec(s[1]) == [(0, 1, 0, 15), (1, 1, 0, 15)]
    assert dec(s[2]) == [(0, 1, 0, 16)]
    assert list(r["status"]) == [FINISHED, REJECTED] and list(r["reason"]) == [0, 4]
    assert r["t_finish"][1] == s[2]["t"] and r["generated"][1] == 2
    assert r["preemptions_total"] == 0


def test_preemption_off_skips_decode():
    # 3 blocks: A (15) and B (15) hold 1 each; at context 17 A grows into the last block, B is
    # skipped (no abort: the batch is not empty), and B waits until A frees its blocks.
    r = run([(0.0, 15, 3), (0.0, 15, 3)], total_blocks=3, preemption=0)
    s = r["steps"]
    assert dec(s[1]) == [(0, 1, 0, 15), (1, 1, 0, 15)]
    assert dec(s[2]) == [(0, 1, 0, 16)]  # A finishes (3 tokens)
    assert dec(s[3]) == [(1, 1, 0, 16)]
    assert all(r["status"] == FINISHED)


# --------------------------------------------------------------------------- strategies
def test_static_no_refill_until_batch_done():
    rows = [(0.0, 100, 2), (0.0, 200, 5), (0.0, 50, 1)]
    r = run(rows, batching=STATIC, max_batch_size=2)
    s = r["steps"]
    assert pf(s[0]) == [(0, 0, 100), (1, 0, 200)]
    assert dec(s[1]) == [(0, 1, 0, 100), (1, 1, 0, 200)]  # R0 finishes
    for k in (2, 3, 4):                                   # R2 is not admitted
        assert pf(s[k]) == [] and dec(s[k]) == [(1, 1, 0, 199 + k)]
    assert pf(s[5]) == [(2, 0, 50)] and dec(s[5]) == []
    assert r["n_steps"] == 6 and all(r["status"] == FINISHED)
    assert r["t_first_scheduled"][2] == r["t_finish"][1]

    # with padding, the finished R0 stays in the decode list as (1, 0, prompt + output - 1)
    r = run(rows, batching=STATIC, max_batch_size=2, static_pad=1)
    s = r["steps"]
    for k in (2, 3, 4):
        assert dec(s[k]) == [(0, 1, 0, 101), (1, 1, 0, 199 + k)]
    assert pf(s[5]) == [(2, 0, 50)] and dec(s[5]) == []
    assert r["generated"][0] == 2 and r["t_finish"][0] == s[2]["t"]
    assert s[2]["dt"] == dt(2)


def test_static_token_budget():
    # Σ(pf_target - hit) <= B_tok: 600 + 500 > 1000 -> R1 waits for the next batch
    r = run([(0.0, 600, 2), (0.0, 500, 2), (0.0, 300, 2)], batching=STATIC, max_batched_tokens=1000)
    s = r["steps"]
    assert pf(s[0]) == [(0, 0, 600)]
    assert dec(s[1]) == [(0, 1, 0, 600)]
    assert pf(s[2]) == [(1, 0, 500), (2, 0, 300)]


def test_mixed_prefill_and_decode_in_one_step():
    rows = [(0.0, 100, 5), (0.001, 300, 3), (0.001, 50, 3)]
    r = run(rows, batching=MIXED, max_batched_tokens=351)
    s = r["steps"]
    assert pf(s[0]) == [(0, 0, 100)]
    assert pf(s[1]) == [(1, 0, 300), (2, 0, 50)] and dec(s[1]) == [(0, 1, 0, 100)]
    assert s[1]["dt"] == dt(351)
    assert pf(s[2]) == [] and dec(s[2]) == [(0, 1, 0, 101), (1, 1, 0, 300), (2, 1, 0, 50)]
    # no budget left for the decode
    r = run(rows, batching=MIXED, max_batched_tokens=350)
    s = r["steps"]
    assert pf(s[1]) == [(1, 0, 300), (2, 0, 50)] and dec(s[1]) == []
    # CONTINUOUS: the same step is prefill-only even with budget to spare
    r = run(rows, batching=CONTINUOUS, max_batched_tokens=2048)
    s = r["steps"]
    assert pf(s[1]) == [(1, 0, 300), (2, 0, 50)] and dec(s[1]) == []


def test_mixed_budget_limits_decodes():
    # 3 decodes running, then a 100-token prompt with B_tok = 102: only 2 decodes fit
    rows = [(0.0, 10, 5), (0.0, 10, 5), (0.0, 10, 5), (0.001, 100, 2)]
    r = run(rows, batching=MIXED, max_batched_tokens=102)
    s = r["steps"]
    assert pf(s[0]) == [(0, 0, 10), (1, 0, 10), (2, 0, 10)]
    assert pf(s[1]) == [(3, 0, 100)] and dec(s[1]) == [(0, 1, 0, 10), (1, 1, 0, 10)]


def test_chunked_decode_budget_and_seq_limit():
    # C = 4: 3 decodes + 1 prefill token per step; B_seq = 3 blocks a 4th admission
    rows = [(0.0, 1, 6), (0.0, 1, 6), (0.0, 1, 6), (0.001, 10, 1)]
    r = run(rows, batching=CHUNKED, chunk_size=4, max_batch_size=3)
    s = r["steps"]
    assert pf(s[0]) == [(0, 0, 1), (1, 0, 1), (2, 0, 1)]
    assert pf(s[1]) == [] and len(dec(s[1])) == 3     # B_seq full
    r = run(rows, batching=CHUNKED, chunk_size=4, max_batch_size=4)
    s = r["steps"]
    assert pf(s[1]) == [(3, 0, 1)] and len(dec(s[1])) == 3
    assert pf(s[2]) == [(3, 1, 1)]


def test_branches_decode_tuple_and_blocks():
    # w = 2: decode tuple (w, prompt, g - 1); blocks = ceil(P/b) + w*ceil(g/b)
    r = run([(0.0, 20, 3)], branches=2, block_size=16)
    s = r["steps"]
    assert pf(s[0]) == [(0, 0, 20)] and s[0]["kv_blocks"] == 2 + 2 * 1
    assert dec(s[1]) == [(0, 2, 20, 0)] and dec(s[2]) == [(0, 2, 20, 1)]
    assert s[1]["dt"] == dt(2)
    assert r["generated"][0] == 3 and r["n_steps"] == 3
    # rejection check for w = 2: ceil(20/16) + 2*ceil(20/16) = 6 > 5
    r = run([(0.0, 20, 20)], branches=2, total_blocks=5)
    assert r["reason"][0] == 3


# --------------------------------------------------------------------------- ordering
def _order_run(policy, aging_s=INF):
    # R0 occupies the only slot; R1 (200, out 1), R2 (50, out 80), R3 (100, out 1) wait.
    # FCFS: 1,2,3; SPF by prompt: 2,3,1; LWL by prompt + output: 3 (101), 2 (130), 1 (201)
    rows = [(0.0, 10, 2), (0.001, 200, 1), (0.001, 50, 80), (0.001, 100, 1)]
    r = run(rows, policy=policy, aging_s=aging_s, max_batch_size=1)
    return list(np.argsort(r["t_first_scheduled"][1:]) + 1)


def test_policies_order():
    assert _order_run(FCFS) == [1, 2, 3]
    assert _order_run(SPF) == [2, 3, 1]   # prompts 50 < 100 < 200
    assert _order_run(LWL) == [3, 2, 1]   # work left 101 < 130 < 201
    # aging: everything waited longer than 1 ms -> FCFS order among the aged
    assert _order_run(SPF, aging_s=0.001) == [1, 2, 3]
    assert _order_run(LWL, aging_s=0.001) == [1, 2, 3]


def test_spf_aging_mixes_aged_fcfs_first():
    # one slot (B_seq 1). R0 (10, out 3) and R1 (200) arrive at 0; R2 (100) and R3 (50) at 0.025.
    # t=0: nobody aged, SPF picks R0. R0 ends at 0.03012: R1 waited 0.03012 > aging 0.02 (aged,
    # first); R2, R3 waited 0.00512 (SPF). At 0.04212 R2, R3 waited 0.01712 < 0.02: SPF -> R3, R2.
    rows = [(0.0, 10, 3), (0.0, 200, 1), (0.025, 100, 1), (0.025, 50, 1)]

    def order(**kw):
        r = run(rows, policy=SPF, max_batch_size=1, **kw)
        return list(np.argsort(r["t_first_scheduled"][1:]) + 1), r

    o, r = order(aging_s=0.02)
    assert o == [1, 3, 2]
    assert r["t_first_scheduled"][1] == ((0.0 + dt(10)) + dt(1)) + dt(1)
    assert order(aging_s=INF)[0] == [3, 2, 1]
    assert order(aging_s=0.0)[0] == [1, 2, 3]   # aging 0: everybody aged -> FCFS


def test_spf_token_budget_scan():
    # B_tok 1000, SPF order R2 (100), R3 (500), R1 (950): 100 + 500 fit, 950 does not -> stop
    rows = [(0.0, 10, 3), (0.001, 950, 2), (0.001, 100, 2), (0.001, 500, 2)]
    r = run(rows, policy=SPF, max_batched_tokens=1000)
    assert pf(r["steps"][1]) == [(2, 0, 100), (3, 0, 500)]
    assert pf(r["steps"][2]) == [(1, 0, 950)]
    # FCFS with the same budget: R1 (950) first; R2 would make 1050 -> strict stop, and R3 is
    # not considered
    r = run(rows, policy=FCFS, max_batched_tokens=1000)
    assert pf(r["steps"][1]) == [(1, 0, 950)]
    assert pf(r["steps"][2]) == [(2, 0, 100), (3, 0, 500)]


# --------------------------------------------------------------------------- closed loop
def test_closed_loop_arrivals():
    # concurrency 2, think 0.5: the first two arrive at 0 (input arrival times ignored); a finish
    # or a rejection at x releases the next request at x + 0.5.
    rows = [(5.0, 100, 2), (6.0, 100, 2), (7.0, 5000, 2), (8.0, 100, 2), (9.0, 100, 2)]
    r = run(rows, concurrency=2, think_s=0.5)
    ta = 0.0 + dt(200)
    ta = ta + dt(2)                     # R0, R1 finish
    tb = ta + 0.5                       # R2 (rejected: 5000 > B_tok) and R3 arrive
    tc = tb + 0.5                       # R4 released by R2's rejection
    assert r["arrival_s"][0] == 0.0 and r["arrival_s"][1] == 0.0
    assert r["t_finish"][0] == ta and r["t_finish"][1] == ta
    assert r["arrival_s"][2] == tb and r["arrival_s"][3] == tb and r["arrival_s"][4] == tc
    assert r["status"][2] == REJECTED and r["reason"][2] == 1 and r["t_finish"][2] == tb
    s = r["steps"]
    assert s[2]["t"] == tb and pf(s[2]) == [(3, 0, 100)]   # idle jump to the next arrival
    td = tb + dt(100)
    td = td + dt(1)                     # R3 finishes; no request left to release
    assert r["t_finish"][3] == td
    assert s[4]["t"] == tc and pf(s[4]) == [(4, 0, 100)]
    assert list(r["status"]) == [FINISHED, FINISHED, REJECTED, FINISHED, FINISHED]


def test_closed_loop_nonmonotone_release():
    # concurrency 2, think 0.015. R1 (5000 > B_tok) is rejected at 0 -> R2 released at 0.015.
    # Step 0 (R0, 1000 tokens) ends at T = dt(1000) = 0.02: R0's finish releases R3 at T + 0.015;
    # then, at t = T, R2 arrives and is rejected at its arrival 0.015 -> R4 released at 0.03,
    # i.e. before R3. Every released request with arrival <= t arrives, so R4 is not held
    # behind R3.
    rows = [(0.0, 1000, 1), (0.0, 5000, 1), (0.0, 5000, 1), (0.0, 100, 1), (0.0, 100, 1)]
    r = run(rows, concurrency=2, think_s=0.015)
    T = 0.0 + dt(1000)
    assert list(r["arrival_s"]) == [0.0, 0.0, 0.0 + 0.015, T + 0.015, (0.0 + 0.015) + 0.015]
    assert list(r["reason"]) == [0, 1, 1, 0, 0]
    s = r["steps"]
    assert s[1]["t"] == 0.03 and pf(s[1]) == [(4, 0, 100)]
    assert s[2]["t"] == 0.03 + dt(100) and pf(s[2]) == [(3, 0, 100)]


def test_closed_loop_unreleased_stay_pending():
    rows = [(0.0, 100, 2), (0.0, 100, 2), (0.0, 100, 2)]
    r = run(rows, concurrency=1, think_s=10.0, horizon_s=5.0)
    # R1 released at R0's finish + 10 > horizon: never arrives; R2 never released
    assert list(r["status"]) == [FINISHED, PENDING, PENDING]
    assert r["arrival_s"][1] == r["t_finish"][0] + 10.0
    assert math.isnan(r["arrival_s"][2])


# --------------------------------------------------------------------------- prefix cache
def test_prefix_cache_hits():
    rows = [
        (0.0, 1100, 2, [0, 1, 2]),  # inserts floor(1100/512) = 2 full blocks: ids 0, 1
        (1.0, 1100, 2, [0, 1, 2]),  # m = 2 -> hit 1024, first chunk (1024, 76)
        (2.0, 1024, 2, [0, 1]),     # m = 2 -> hit min(1024, 1023) = 1023 -> chunk (1023, 1)
        (3.0, 1100, 2, [5, 0, 1]),  # leading id misses -> m = 0
    ]
    r = run(rows, hash_block=512, prefix_cache_blocks=100)
    assert list(r["hit_tokens"]) == [0, 1024, 1023, 0]
    assert list(r["computed_prompt_tokens"]) == [1100, 76, 1, 1100]
    by_req = {st["prefill"][0][0]: st for st in r["steps"] if st["prefill"]}
    assert by_req[1]["prefill"] == [(1, 1024, 76)] and by_req[1]["dt"] == dt(76)
    assert by_req[1]["kv_blocks"] == math.ceil(77 / 16)       # blocks use P' = prompt - hit
    assert by_req[2]["prefill"] == [(2, 1023, 1)] and by_req[2]["kv_blocks"] == 1
    assert r["t_first_token"][1] == 1.0 + dt(76)
    # cache off: no hits
    r = run(rows, hash_block=512, prefix_cache_blocks=0)
    assert list(r["hit_tokens"]) == [0, 0, 0, 0]


def test_prefix_cache_lru_eviction():
    rows = [
        (0.0, 1100, 1, [0, 1]),
        (1.0, 1100, 1, [2, 3]),   # inserts 2, 3: evicts 0, 1 (capacity 2)
        (2.0, 1100, 1, [0, 1]),   # miss; re-inserts 0, 1 evicting 2, 3
        (3.0, 1100, 1, [0, 1]),   # hit 1024
        (4.0, 1100, 1, [2, 3]),   # miss
    ]
    r = run(rows, hash_block=512, prefix_cache_blocks=2)
    assert list(r["hit_tokens"]) == [0, 0, 0, 1024, 0]
    # lookups touch (move to most recent): capacity 3
    rows = [
        (0.0, 1600, 1, [0, 1, 2]),  # inserts floor(1600/512) = 3 blocks -> LRU order [0, 1, 2]
        (1.0, 500, 1, [0, 9]),      # m = 1 -> hit min(512, 499) = 499; touch 0 -> [1, 2, 0];
                                    # inserts nothing (500 < 512)
        (2.0, 600, 1, [7]),         # miss; inserts 7 -> evicts 1 (not 0) -> [2, 0, 7]
        (3.0, 600, 1, [0]),         # hit 512
        (4.0, 1100, 1, [0, 1]),     # id 0 hits, id 1 was evicted -> 512
    ]
    r = run(rows, hash_block=512, prefix_cache_blocks=3)
    assert list(r["hit_tokens"]) == [0, 499, 0, 512, 512]


def test_prefix_cache_insert_after_first_prefill():
    # Documents the chosen reading (PREFIX_INSERT_AT = "first_prefill"): R1 arrives after R0's
    # prefill step but while R0 is still decoding, and already hits.
    rows = [(0.0, 1100, 50, [0, 1]), (0.05, 1100, 2, [0, 1])]
    r = run(rows, hash_block=512, prefix_cache_blocks=10)
    assert r["t_finish"][0] > r["t_first_scheduled"][1]
    assert list(r["hit_tokens"]) == [0, 1024]


def test_preempted_request_relooks_up_cache():
    # A preempted request re-admitted gets a fresh lookup: its recompute chunk starts at the hit.
    # 140 blocks (as example 4) with C's prompt cached by an earlier request R.
    rows = [(0.0, 639, 1, [0]), (1.0, 1599, 10), (1.0, 639, 10, [0])]
    # C (id 2) hits 512 at first admission and holds ceil(128/16) = 8 blocks; with 100 + 8 blocks
    # A grows into block 101 at context 1601 and preempts C; C's re-admission needs
    # ceil((127 + 3)/16) = 9 > 7 free, so it waits for A, then recomputes (512, 641 - 512).
    r = run(rows, hash_block=512, prefix_cache_blocks=10, total_blocks=108, max_batched_tokens=4096)
    assert r["hit_tokens"][2] == 512 and r["preemptions"][2] == 1
    assert r["recomputed_tokens"] == 639 + 2
    chunks = [p for st in r["steps"] for p in st["prefill"] if p[0] == 2]
    assert chunks == [(2, 512, 127), (2, 512, 129)]
    assert r["computed_prompt_tokens"][2] == 127 + 129


# --------------------------------------------------------------------------- horizon / drain
ROWS_H = [(0.0, 100, 100), (0.02, 100, 100), (0.06, 100, 5)]


def _times_h():
    t1 = 0.0 + dt(100)          # R0 prefill
    t2 = t1 + dt(1)             # R0 decode (R1 not arrived at t1)
    t3 = t2 + dt(100)           # R1 prefill
    t4 = t3 + dt(2)
    t5 = t4 + dt(2)
    return t1, t2, t3, t4, t5


def test_horizon_hard_stop():
    r = run(ROWS_H, horizon_s=0.05, drain=0)
    t5 = _times_h()[-1]
    assert t5 >= 0.05 > _times_h()[-2]
    assert r["end_time_s"] == t5 and r["n_steps"] == 5
    assert list(r["status"]) == [UNFINISHED, UNFINISHED, PENDING]
    assert list(r["generated"]) == [4, 3, 0]


def test_max_sim_stop():
    r = run(ROWS_H, horizon_s=1e9, max_sim_s=0.05, drain=1)
    assert r["end_time_s"] == _times_h()[-1]
    assert list(r["status"]) == [UNFINISHED, UNFINISHED, PENDING]


def test_horizon_drain():
    r = run(ROWS_H, horizon_s=0.05, drain=1)
    assert list(r["status"]) == [FINISHED, FINISHED, PENDING]   # R2 arrives after the horizon
    assert r["end_time_s"] == r["t_finish"][1]
    # unfinished requests that never fit (watermark too big) become UNFINISHED at the stop
    r = run([(0.0, 100, 2)], total_blocks=10, watermark_blocks=5)
    assert r["status"][0] == UNFINISHED and r["n_steps"] == 0 and r["end_time_s"] == 0.0


def test_idle_jump_and_busy():
    r = run([(0.0, 100, 1), (1.0, 100, 1)])
    s = r["steps"]
    assert s[1]["t"] == 1.0
    assert r["busy_s"] == dt(100) + dt(100)
    assert r["end_time_s"] == 1.0 + dt(100)
    assert r["kv_block_seconds"] == 7 * dt(100) + 7 * dt(100)


# --------------------------------------------------------------------------- invariants
@st.composite
def workloads(draw, batching):
    n = draw(st.integers(1, 9))
    w = draw(st.sampled_from([1, 1, 2, 3]))
    hb = draw(st.sampled_from([8, 16]))
    spread = draw(st.sampled_from([0.02, 0.3]))
    arr = sorted(draw(st.lists(st.floats(0, spread), min_size=n, max_size=n)))
    # half of the cases: KV pressure (short prompts, long outputs, small blocks) so that decode
    # growth triggers preemption / kv_exhausted aborts
    pressure = draw(st.booleans())
    rows = []
    for i in range(n):
        p = draw(st.integers(1, 30 if pressure else 100))
        o = draw(st.integers(8, 40) if pressure else st.integers(1, 25))
        fam = draw(st.integers(0, 2))
        k = p // hb + draw(st.integers(0, 1))
        rows.append((arr[i], p, o, [fam * 20 + j for j in range(k)]))
    b = draw(st.sampled_from([2, 4] if pressure else [2, 4, 8, 16]))
    sched = dict(
        batching=batching,
        policy=draw(st.sampled_from([FCFS, SPF, LWL])),
        max_batched_tokens=draw(st.integers(16, 300)),
        max_batch_size=draw(st.integers(2 if pressure else 1, 6)),
        chunk_size=draw(st.integers(w, 64)),
        block_size=b,
        total_blocks=draw(st.integers(8, 40) if pressure else st.integers(3, 60)),
        watermark_blocks=draw(st.sampled_from([0, 0, 0, 1, 2])),
        preemption=draw(st.sampled_from([0, 1, 1])),
        prefix_cache_blocks=draw(st.sampled_from([0, 0, 3, 50])),
        static_pad=draw(st.integers(0, 1)),
        aging_s=draw(st.sampled_from([INF, 0.05, 0.0])),
        max_model_len=draw(st.sampled_from([10**9, 120])),
        concurrency=draw(st.sampled_from([0, 0, 1, 3])),
        think_s=draw(st.sampled_from([0.0, 0.03])),
        horizon_s=draw(st.sampled_from([1e9, 0.2])),
        max_sim_s=draw(st.sampled_from([1e6, 0.3])),
        drain=draw(st.integers(0, 1)),
    )
    return make_requests(rows, branches=w, hash_block=hb), make_sched(**sched)


def check_invariants(req, sched, r):
    n = len(req["prompt"])
    w = req["branches"]
    prompt, output = req["prompt"], req["output"]
    status = r["status"]
    # every request ends in a terminal or explicit state
    assert set(status.tolist()) <= {PENDING, FINISHED, REJECTED, UNFINISHED}
    for i in range(n):
        a = r["arrival_s"][i]
        if status[i] == PENDING:
            # never released, after the horizon, or due after the last arrival processing
            assert math.isnan(a) or a > sched["horizon_s"] or (r["steps"] and a > r["steps"][-1]["t"])
            assert math.isnan(r["t_first_scheduled"][i])
            continue
        assert a <= sched["horizon_s"]
        if status[i] == FINISHED:
            assert r["generated"][i] == output[i]
            assert a <= r["t_first_scheduled"][i] <= r["t_first_token"][i] <= r["t_last_token"][i] == r["t_finish"][i]
            # hit_tokens is the prefix-cache hit at the *first* admission; a request preempted
            # and re-admitted can hit more (its own and others' blocks cached meanwhile), so then
            # only the last admission's token (a hit leaves at least one to compute) is certain
            if r["preemptions"][i] == 0:
                assert r["computed_prompt_tokens"][i] >= prompt[i] - r["hit_tokens"][i]
            else:
                assert r["computed_prompt_tokens"][i] >= 1
        else:
            assert r["generated"][i] < output[i]
        if status[i] == REJECTED:
            assert r["reason"][i] in (1, 2, 3, 4)
            if r["reason"][i] != 4:
                assert r["t_finish"][i] == a and math.isnan(r["t_first_scheduled"][i])
            else:
                assert a <= r["t_first_scheduled"][i] <= r["t_finish"][i]
        else:
            assert r["reason"][i] == 0
        if not math.isnan(r["t_first_token"][i]):
            assert a <= r["t_first_scheduled"][i] <= r["t_first_token"][i] <= r["t_last_token"][i]
        assert 0 <= r["hit_tokens"][i] <= prompt[i] - 1
    if sched["concurrency"] == 0:
        assert np.array_equal(r["arrival_s"], req["arrival_s"])
    # KV never exceeds capacity
    assert r["kv_peak_blocks"] <= sched["total_blocks"]
    assert all(s["kv_blocks"] <= sched["total_blocks"] for s in r["steps"])
    # token accounting: decode tokens + prompt-completing chunks = Σ generated × w
    emitted = 0
    chunks = np.zeros(n, dtype=np.int64)
    prev_t_end = 0.0
    busy = 0.0
    for s in r["steps"]:
        assert s["t"] >= prev_t_end
        prev_t_end = s["t"] + s["dt"]
        busy += s["dt"]
        # pad entries are (1, 0, prompt + output - 1); a live decode has k <= prompt + output - 2
        # (w = 1) or a first element w > 1
        live = [d for d in s["decode"] if d[1:] != (1, 0, prompt[d[0]] + output[d[0]] - 1)]
        emitted += w * len(live) + w * s["n_done"]
        ntok = sum(c for _, _, c in s["prefill"])
        for i, _, c in s["prefill"]:
            chunks[i] += c
            assert c >= 1
        assert len(s["prefill"]) + len(s["decode"]) <= sched["max_batch_size"]
        assert s["prefill"] or live
        bt = sched["batching"]
        if bt == CHUNKED:
            assert ntok + w * len(s["decode"]) <= sched["chunk_size"]
        elif bt == MIXED:
            assert ntok + w * len(s["decode"]) <= sched["max_batched_tokens"]
        else:
            assert ntok <= sched["max_batched_tokens"]
            assert not (s["prefill"] and s["decode"])
        ids = [p[0] for p in s["prefill"]] + [d[0] for d in s["decode"]]
        assert len(ids) == len(set(ids))
    assert emitted == w * int(r["generated"].sum())
    assert np.array_equal(chunks, r["computed_prompt_tokens"])
    assert r["busy_s"] == pytest.approx(busy)
    assert r["n_steps"] == len(r["steps"])
    assert r["preemptions_total"] == int(r["preemptions"].sum())
    if r["preemptions_total"] == 0:
        assert r["recomputed_tokens"] == 0
    # liveness: with drain, no step limit and no watermark, every arrived request ends
    # FINISHED or REJECTED, unless a preempted request's recompute exceeds B_tok (non-chunked)
    if (sched["drain"] and sched["max_sim_s"] >= 1e6 and sched["watermark_blocks"] == 0
            and (sched["batching"] == CHUNKED or r["preemptions_total"] == 0)):
        assert UNFINISHED not in set(status.tolist())


def readmission_case():
    """Found by hypothesis: request 1 (80 prompt tokens, its 10 hash blocks the first 10 of request
    0's) is admitted with no hit while request 0 is still computing, preempted after a 2-token
    chunk, and re-admitted once request 0's blocks are cached: it hits 77 tokens and computes 1."""
    req = {"arrival_s": np.zeros(9), "prompt": np.array([95, 80, 1, 1, 1, 1, 1, 1, 1]),
           "output": np.array([3, 1, 1, 1, 1, 1, 1, 1, 1]),
           "hash_off": np.array([0, 11, 21, 21, 21, 21, 21, 21, 21, 21]),
           "hash_ids": np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9]),
           "branches": 1, "hash_block": 8}
    sched = {"batching": CHUNKED, "policy": 0, "max_batched_tokens": 16, "max_batch_size": 2, "chunk_size": 2,
             "block_size": 16, "total_blocks": 12, "watermark_blocks": 0, "preemption": 1,
             "prefix_cache_blocks": 50, "static_pad": 0, "aging_s": float("inf"), "max_model_len": 1_000_000_000,
             "concurrency": 0, "think_s": 0.0, "horizon_s": 1e9, "max_sim_s": 1e6, "drain": 0}
    return req, sched


def test_readmission_after_preemption_hits_the_prefix_cache_again():
    """Request 1's computed prompt tokens (2 + 1 = 3) are below prompt − hit at first admission
    (80 − 0), as they should be (hit_tokens is the first admission's hit); the invariants allow it.
    tests/test_engine.py runs the same case through the numba engine against this reference."""
    req, sched = readmission_case()
    r = reference_simulate(req, sched, step_fn)
    assert r["preemptions"][1] == 1 and r["hit_tokens"][1] == 0
    assert r["computed_prompt_tokens"][1] == 3
    check_invariants(req, sched, r)


@pytest.mark.parametrize("batching", [STATIC, CONTINUOUS, MIXED, CHUNKED])
def test_invariants_random(batching):
    @settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
    @given(workloads(batching))
    def inner(case):
        req, sched = case
        r = reference_simulate(req, sched, step_fn)
        check_invariants(req, sched, r)

    inner()
