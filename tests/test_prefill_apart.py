"""Chunked batching with prefill apart (`scheduler.mix_prefill = false`, SGLang's default scheduler,
ENGINE_SEMANTICS.md "Batch formation per strategy"): a step that admits or continues any prefill
carries no decodes; the decodes run in the steps without one. The kernel against a hand-worked step
sequence, against its pure-Python twin, and with decode runs and lazy decodes against stepping one
by one; the lowering and the SGLang engine defaults."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from mistfast import engine_defaults as ED
from mistfast.kernels import cluster as CL
from mistfast.kernels import engine as E
from mistfast.lowering import scheduler_vector
from mistfast.specs import SpecError, make_client
from tests.test_engine import assert_same, make_case, numba_step_fn, run_kernel
from tests.test_lazy_decodes import RUN_COLS, loaded_case

BASE = dict(batching=E.CHUNKED, policy=0, max_batched_tokens=2048, max_batch_size=8, chunk_size=64, block_size=16,
            total_blocks=1000, watermark_blocks=0, preemption=1, prefix_cache_blocks=0, static_pad=0, aging_s=30.0,
            max_model_len=4096, concurrency=0, think_s=0.0, horizon_s=1e9, max_sim_s=1e9, drain=1)


def _requests(arrival, prompt, output):
    n = len(prompt)
    return dict(arrival_s=np.asarray(arrival, float), prompt=np.asarray(prompt, np.int64),
                output=np.asarray(output, np.int64), hash_off=np.zeros(n + 1, np.int64),
                hash_ids=np.zeros(0, np.int64), branches=1, hash_block=512)


def _hand_steps(apart):
    """Requests A and B (prompts of 32, 6 tokens each) arrive at 0; X (a 100-token prompt, 3 tokens)
    arrives while A and B decode their third token. Chunk 64. The steps worked out by hand from
    ENGINE_SEMANTICS.md, as (prefill [(past, new)], decode [(w, s, k)], n_done), k = prompt + g - 1."""
    dec = lambda *ks: [(1, 0, k) for k in ks]   # noqa: E731
    first = [([(0, 32), (0, 32)], [], 2),        # A and B prefilled together: token 1 each
             ([], dec(32, 32), 0),               # token 2
             ([], dec(33, 33), 0)]               # token 3; X arrives during this step
    if apart:
        rest = [([(0, 64)], [], 0),              # X's first chunk alone: A and B wait
                ([(64, 36)], [], 1),             # X's last chunk alone: X's token 1
                ([], dec(34, 34, 100), 0),       # A, B token 4; X token 2
                ([], dec(35, 35, 101), 0),       # A, B token 5; X token 3: X finishes
                ([], dec(36, 36), 0)]            # A, B token 6: they finish
    else:
        rest = [([(0, 62)], dec(34, 34), 0),     # mixed: the decodes take 2 of the 64 tokens
                ([(62, 38)], dec(35, 35), 1),    # X's token 1; A, B token 5
                ([], dec(36, 36, 100), 0)]       # A, B token 6 (finish); X token 2
        rest += [([], dec(101), 0)]              # X token 3
    return first + rest


@pytest.mark.parametrize("apart", [1, 0])
def test_two_decodes_and_one_arrival_by_hand(apart):
    steps = _hand_steps(apart)
    dts = [numba_step_fn(pf, dc, nd) for pf, dc, nd in steps]
    t = np.zeros(len(dts) + 1)                         # step starts (and the last end)
    for j, dt in enumerate(dts):
        t[j + 1] = t[j] + dt                            # (the kernel's own order of additions)
    x_arrival = t[2] + 0.5 * dts[2]
    req = _requests([0.0, 0.0, x_arrival], [32, 32, 100], [6, 6, 3])
    sch = dict(BASE, prefill_apart=apart)
    for runs in (1, 0):
        got, cs, log = run_kernel(req, dict(sch, decode_runs=runs))
        assert len(log) == len(steps)
        for j, (pf, dc, nd) in enumerate(steps):
            assert log[j, E.L_T] == t[j] and log[j, E.L_DT] == dts[j], f"step {j}"
            assert log[j, E.L_NPF] == len(pf) and log[j, E.L_PF_TOKENS] == sum(n for _, n in pf), f"step {j}"
            assert log[j, E.L_NDEC] == len(dc), f"step {j}"
        if apart:
            np.testing.assert_array_equal(got["t_first_tok"], [t[1], t[1], t[5]])
            np.testing.assert_array_equal(got["t_finish"], [t[8], t[8], t[7]])
            np.testing.assert_array_equal(got["t_first_sched"], [0.0, 0.0, t[3]])
        else:
            np.testing.assert_array_equal(got["t_first_tok"], [t[1], t[1], t[5]])
            np.testing.assert_array_equal(got["t_finish"], [t[6], t[6], t[7]])
        np.testing.assert_array_equal(got["generated"], [6, 6, 3])
    assert_same(req, sch)


@pytest.mark.parametrize("batching", [E.CHUNKED])
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 40), policy=st.sampled_from([0, 1, 2]),
       preemption=st.sampled_from([0, 1]), hashes=st.booleans(), branches=st.sampled_from([1, 1, 3]))
def test_kernel_matches_twin_with_prefill_apart(batching, seed, n, policy, preemption, hashes, branches):
    rng = np.random.default_rng(seed)
    req, sch = make_case(rng, batching, n, branches=branches, hashes=hashes, preemption=preemption, policy=policy)
    assert_same(req, dict(sch, prefill_apart=1))


CASES = {
    # name: (make_case options, scheduler overrides)
    "small_chunks": ({}, dict(chunk_size=64)),
    "loaded": ({}, dict(chunk_size=256, max_batch_size=16)),
    "branches": (dict(branches=3), dict(chunk_size=512)),
    "prefix_cache": (dict(hashes=True), dict(chunk_size=256)),
    "scarce_kv": (dict(total_blocks=150), dict(chunk_size=256)),
    "horizon": (dict(drain=0), dict(chunk_size=256)),
    "lwl": (dict(policy=E.LWL, total_blocks=300), dict(chunk_size=128)),
    # the decodes fill the chunk (w_sum = C) while a free sequence slot and SPF aging remain: a run
    # must still stop when the oldest waiting request ages (prefill apart admits with the whole chunk)
    "spf_chunk_full_of_decodes": (dict(policy=E.SPF, total_blocks=120), dict(chunk_size=4, max_batch_size=8,
                                                                              aging_s=0.3)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_decode_runs_and_lazy_decodes_match_step_by_step(name):
    opts, over = CASES[name]
    for seed in range(3):
        req, sch = loaded_case(seed, E.CHUNKED, opts, dict(over, prefill_apart=1))
        assert_same(req, sch)
        got_on, cs_on, log_on = run_kernel(req, sch)
        got_off, cs_off, log_off = run_kernel(req, dict(sch, decode_runs=0))
        np.testing.assert_array_equal(log_on, log_off)
        np.testing.assert_array_equal(np.delete(cs_on, RUN_COLS), np.delete(cs_off, RUN_COLS))
        for k in got_on:
            np.testing.assert_array_equal(got_on[k], got_off[k], err_msg=k)


def test_prefill_apart_changes_steps_only_under_chunked_batching():
    # the same random case: prefill apart never puts a decode into a step with prefill, mixed does
    rng = np.random.default_rng(7)
    req, sch = make_case(rng, E.CHUNKED, 30)
    sch.update(chunk_size=256, max_batch_size=16)
    _, _, log_apart = run_kernel(req, dict(sch, prefill_apart=1))
    _, _, log_mixed = run_kernel(req, sch)
    assert not np.any((log_apart[:, E.L_NPF] > 0) & (log_apart[:, E.L_NDEC] > 0))
    assert np.any((log_mixed[:, E.L_NPF] > 0) & (log_mixed[:, E.L_NDEC] > 0))
    # (continuous batching already keeps prompts apart: the flag is not read there)
    req, sch = make_case(np.random.default_rng(8), E.CONTINUOUS, 30)
    np.testing.assert_array_equal(run_kernel(req, dict(sch, prefill_apart=1))[2], run_kernel(req, sch)[2])


# ---------------------------------------------------------------- spec, lowering, engine defaults
def test_mix_prefill_lowers_to_the_kernel_flag():
    apart = make_client("llama-3.1-8b", "H100", scheduler={"batching": "chunked", "mix_prefill": False})
    mixed = make_client("llama-3.1-8b", "H100", scheduler={"batching": "chunked"})
    cont = make_client("llama-3.1-8b", "H100", scheduler={"batching": "continuous", "mix_prefill": False})
    assert scheduler_vector(apart)[E.S_PREFILL_APART] == 1.0
    assert scheduler_vector(mixed)[E.S_PREFILL_APART] == 0.0
    assert scheduler_vector(cont)[E.S_PREFILL_APART] == 0.0


def test_mix_prefill_false_with_mixed_batching_is_one_clear_error():
    with pytest.raises((SpecError, ValueError)) as e:
        make_client("llama-3.1-8b", "H100", scheduler={"batching": "mixed", "mix_prefill": False})
    msg = str(e.value)
    assert "scheduler.mix_prefill" in msg and "continuous" in msg


def test_sglang_mixing_follows_the_default_and_the_stated_flag():
    client = make_client("llama-3.1-8b", "H100")
    sg = ED.apply_engine_defaults(client, "sglang", "0.5.6")
    assert sg.scheduler.mix_prefill is ED.SGLANG["mix_prefill_default"]
    mixed = ED.apply_engine_defaults(client, "sglang", "0.5.6", "--tp 1 --enable-mixed-chunk")
    assert mixed.scheduler.mix_prefill is True
    off = ED.apply_engine_defaults(client, "sglang", "0.5.6", "enable_mixed_chunk: false")
    assert off.scheduler.mix_prefill is False
    # vLLM and trtllm-serve mix their chunks
    assert ED.apply_engine_defaults(client, "vllm", "0.11.0").scheduler.mix_prefill is True
    assert ED.apply_engine_defaults(client, "trtllm-1", "1.0").scheduler.mix_prefill is True
    assert ED.parse_flags("--enable-mixed-chunked-prefill 1") == {}
