"""Lazy decodes (kernels/lazy.py): formed steps advance a decode run's members without touching
their rows. The kernel with decode runs on (lazy decodes on) must give exactly what it gives
stepping one by one (runs off: no members) and what the pure-Python twin gives, in the cases that
exercise the lazy paths: admissions and multi-chunk prompts next to the members (chunked), prefill
steps the members sit out (continuous), a token budget too small for every member (mixed), KV
growth and preemption, branches sharing a prompt, prefix-cache hits, last tokens in formed steps
while requests wait, the horizon."""
import numpy as np
import pytest

from mistfast.kernels import cluster as CL
from mistfast.kernels import engine as E
from tests.test_engine import assert_same, make_case, run_kernel

RUN_COLS = [CL.CS_RUN_STEPS, CL.CS_RUN_LEAVES]

CASES = {
    # name: (batching, make_case options, scheduler overrides)
    "chunked_small_chunks": (E.CHUNKED, {}, dict(chunk_size=64)),
    "chunked_loaded": (E.CHUNKED, {}, dict(chunk_size=256, max_batch_size=16)),
    "chunked_branches": (E.CHUNKED, dict(branches=3), dict(chunk_size=512)),
    "chunked_prefix_cache": (E.CHUNKED, dict(hashes=True), dict(chunk_size=256)),
    "chunked_scarce_kv": (E.CHUNKED, dict(total_blocks=150), dict(chunk_size=256)),
    "continuous_loaded": (E.CONTINUOUS, {}, dict(max_batch_size=16)),
    "continuous_branches": (E.CONTINUOUS, dict(branches=3), {}),
    "continuous_scarce_kv": (E.CONTINUOUS, dict(total_blocks=150), {}),
    "mixed_small_budget": (E.MIXED, {}, dict(max_batched_tokens=600)),
    "mixed_branches_prefix": (E.MIXED, dict(branches=3, hashes=True), {}),
    "chunked_horizon": (E.CHUNKED, dict(drain=0), dict(chunk_size=256)),
    "lwl_chunked": (E.CHUNKED, dict(policy=E.LWL, total_blocks=300), dict(chunk_size=128)),
}


def loaded_case(seed, batching, opts, over):
    """Many requests arriving faster than they finish, long outputs: decode runs are cut by every
    arrival and last token, so most formed steps hold members."""
    rng = np.random.default_rng(1000 + seed)
    n = 60
    req, sch = make_case(rng, batching, n, **opts)
    req["output"] = rng.integers(2, 400, n).astype(np.int64)
    req["arrival_s"] = np.sort(rng.uniform(0.0, 4.0, n))
    sch.update(max_batch_size=12, static_pad=0)
    sch.update(over)
    if not opts.get("drain", 1):
        sch.update(horizon_s=3.0, max_sim_s=1e9)
    return req, sch


@pytest.mark.parametrize("name", sorted(CASES))
def test_lazy_decodes_match_step_by_step_and_twin(name):
    batching, opts, over = CASES[name]
    ran = 0.0
    for seed in range(3):
        req, sch = loaded_case(seed, batching, opts, over)
        assert_same(req, sch)
        got_on, cs_on, log_on = run_kernel(req, sch)
        got_off, cs_off, log_off = run_kernel(req, dict(sch, decode_runs=0))
        ran += cs_on[CL.CS_RUN_STEPS]
        np.testing.assert_array_equal(log_on, log_off)
        np.testing.assert_array_equal(np.delete(cs_on, RUN_COLS), np.delete(cs_off, RUN_COLS))
        for k in got_on:
            np.testing.assert_array_equal(got_on[k], got_off[k], err_msg=k)
    assert ran > 0, "the cases must exercise decode runs (lazy decodes start from them)"


def test_lazy_decodes_without_step_log_ids():
    """With a step log too small for request ids (as sweeps run), the same results."""
    req, sch = loaded_case(7, E.CHUNKED, {}, dict(chunk_size=128))
    got_on, cs_on, _ = run_kernel(req, sch, log_cap=1)
    got_off, cs_off, _ = run_kernel(req, dict(sch, decode_runs=0), log_cap=1)
    np.testing.assert_array_equal(np.delete(cs_on, RUN_COLS), np.delete(cs_off, RUN_COLS))
    for k in got_on:
        np.testing.assert_array_equal(got_on[k], got_off[k], err_msg=k)


@pytest.mark.parametrize("batching", [E.CHUNKED, E.CONTINUOUS])
def test_many_members_leave_in_one_step(batching):
    """Outputs of a few lengths, arrivals in bursts: several members (and decode-run entries) emit
    their last token in the same step, at scattered places in the running order, so the pass that
    finds the leavers from their tokens left (bat.run_rem) and closes the ranks of the others moves
    blocks of stayers; the step log's request ids check the order of those that stay."""
    for seed in range(3):
        rng = np.random.default_rng(2000 + seed)
        n = 48
        req, sch = make_case(rng, batching, n)
        req["output"] = rng.choice(np.array([9, 17, 33], np.int64), n)
        # bursts of 8, the first four far apart (queues drain: runs go on through last tokens), the
        # others overlapping (last tokens in formed steps, members and joiners)
        starts = np.concatenate([3.0 * np.arange(4), 12.0 + rng.uniform(0.0, 0.3, n // 8 - 4)])
        req["arrival_s"] = np.sort(np.repeat(starts, 8) + rng.uniform(0.0, 1e-3, n))
        sch.update(max_batch_size=16, static_pad=0, chunk_size=256)
        assert_same(req, sch)
        got_on, cs_on, log_on = run_kernel(req, sch)
        got_off, cs_off, log_off = run_kernel(req, dict(sch, decode_runs=0))
        assert cs_on[CL.CS_RUN_LEAVES] > 0, "requests must leave inside decode runs"
        np.testing.assert_array_equal(log_on, log_off)
        np.testing.assert_array_equal(np.delete(cs_on, RUN_COLS), np.delete(cs_off, RUN_COLS))
        for k in got_on:
            np.testing.assert_array_equal(got_on[k], got_off[k], err_msg=k)


@pytest.mark.parametrize("batching", [E.CHUNKED, E.CONTINUOUS, E.MIXED])
def test_members_only_formations_between_quiet_bursts(batching):
    """Bursts far apart: once a burst's prompts are in, nobody waits and every running request is a
    member, so decode runs go on through last tokens and the formations between them place the
    members and nothing else; the same as stepping one by one and as the twin."""
    for seed in range(3):
        rng = np.random.default_rng(3000 + seed)
        n = 36
        req, sch = make_case(rng, batching, n)
        req["output"] = rng.integers(3, 120, n).astype(np.int64)
        req["arrival_s"] = np.sort(np.repeat(8.0 * np.arange(n // 12), 12) + rng.uniform(0.0, 0.05, n))
        sch.update(max_batch_size=16, static_pad=0, chunk_size=256)
        assert_same(req, sch)
        got_on, cs_on, log_on = run_kernel(req, sch)
        got_off, cs_off, log_off = run_kernel(req, dict(sch, decode_runs=0))
        assert cs_on[CL.CS_RUN_LEAVES] > 0, "members must leave inside decode runs"
        np.testing.assert_array_equal(log_on, log_off)
        np.testing.assert_array_equal(np.delete(cs_on, RUN_COLS), np.delete(cs_off, RUN_COLS))
        for k in got_on:
            np.testing.assert_array_equal(got_on[k], got_off[k], err_msg=k)
