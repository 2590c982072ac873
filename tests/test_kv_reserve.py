"""SGLang's admission reserve (`scheduler.kv_reserve = "sglang"`, ENGINE_SEMANTICS.md "Admission
reserve"): a prompt is admitted only while the free KV tokens, less new_token_ratio x the running
requests' remaining outputs, hold the prompt and its whole output; the ratio starts at 0.7 and
decays by (0.7 - 0.098)/600 per decode batch. By hand, against the twin, and through the spec."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from mistfast import engine_defaults as ED
from mistfast.kernels import cluster as CL
from mistfast.kernels import engine as E
from mistfast.lowering import scheduler_vector
from mistfast.specs import SpecError, make_client
from tests.test_engine import assert_same, make_case, run_kernel
from tests.test_prefill_apart import BASE, _requests


def _first_admission_by_hand(total_blocks, prompt=64, output=100, b=16):
    """A and B (same prompt and output) arrive at 0; A is admitted first. At the formation where A
    has generated k tokens, A holds ceil((prompt + k)/b) blocks after its growth (mixed chunks: the
    decodes are placed before the admissions) and k - 1 decode batches have run since the reset.
    The first k at which B fits, from SGLang's rule written out here."""
    for k in range(1, output):
        ratio = max(0.7 - (k - 1) * (0.7 - 0.7 * 0.14) / 600, 0.7 * 0.14)
        free_tokens = (total_blocks - -(-(prompt + k) // b)) * b
        if prompt + output < free_tokens - ratio * (output - k):
            return k
    return None


def test_reserve_holds_the_second_prompt_until_the_ratio_has_decayed():
    # 19 blocks of 16 tokens: B's 64 + 100 tokens fit the free 224 tokens only once A's reserve
    # 0.7·99 = 69.3 has shrunk below 60 (A's remaining output and the decaying ratio): at k = 13
    # (ratio 0.68796 × 87 = 59.85; at k = 12 0.68896 × 88 = 60.63 still blocks). Without the decay
    # (ratio fixed at 0.7) it would be k = 15.
    k = _first_admission_by_hand(19)
    assert k == 13
    req = _requests([0.0, 0.0], [64, 64], [100, 100])
    sch = dict(BASE, total_blocks=19, chunk_size=256, kv_reserve=1)
    got, cs, log = run_kernel(req, sch)
    assert log[0, E.L_NPF] == 1 and log[0, E.L_PF_TOKENS] == 64          # A alone
    assert np.all(log[1:k, E.L_NPF] == 0) and np.all(log[1:k, E.L_NDEC] == 1)
    assert log[k, E.L_NPF] == 1 and log[k, E.L_PF_TOKENS] == 64 and log[k, E.L_NDEC] == 1
    assert got["t_first_sched"][1] == log[k, E.L_T]
    assert_same(req, sch)
    # without the reserve both prompts go in the first step. (With it, the ratio below 1 still lets
    # both run out of room later, 2 × 11 > 19 blocks: one preemption either way, as SGLang retracts.)
    got0, cs0, log0 = run_kernel(req, dict(sch, kv_reserve=0))
    assert log0[0, E.L_NPF] == 2 and log0[0, E.L_PF_TOKENS] == 128


def test_reserve_with_prefill_apart_by_hand():
    # prefill apart: the admission scan comes before the decodes' growth; A holds
    # ceil((64 + k - 1)/16) = 5 blocks up to k = 17, so the same k = 13, and B's prompt runs alone
    k = 13
    req = _requests([0.0, 0.0], [64, 64], [100, 100])
    sch = dict(BASE, total_blocks=19, chunk_size=256, kv_reserve=1, prefill_apart=1)
    got, cs, log = run_kernel(req, sch)
    assert np.all(log[1:k, E.L_NPF] == 0)
    assert log[k, E.L_NPF] == 1 and log[k, E.L_NDEC] == 0
    assert got["t_first_sched"][1] == log[k, E.L_T]
    assert_same(req, sch)


def test_reserve_never_binds_with_room_for_every_output():
    # 20,000 blocks: every prompt and output fits many times over: the same steps as without it
    rng = np.random.default_rng(3)
    req, sch = make_case(rng, E.CHUNKED, 30, total_blocks=20000)
    sch.update(prefill_apart=1)
    np.testing.assert_array_equal(run_kernel(req, dict(sch, kv_reserve=1))[2], run_kernel(req, sch)[2])


@pytest.mark.parametrize("batching", [E.STATIC, E.CONTINUOUS, E.MIXED, E.CHUNKED])
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 40), policy=st.sampled_from([0, 1, 2]),
       preemption=st.sampled_from([0, 1]), hashes=st.booleans(), branches=st.sampled_from([1, 1, 3]),
       apart=st.sampled_from([0, 1]))
def test_kernel_matches_twin_with_the_reserve(batching, seed, n, policy, preemption, hashes, branches, apart):
    rng = np.random.default_rng(seed)
    req, sch = make_case(rng, batching, n, branches=branches, hashes=hashes, preemption=preemption, policy=policy,
                         total_blocks=int(rng.integers(150, 600)))
    assert_same(req, dict(sch, kv_reserve=1, prefill_apart=apart))


def test_kernel_matches_twin_with_the_reserve_closed_loop():
    for seed in range(4):
        rng = np.random.default_rng(50 + seed)
        req, sch = make_case(rng, E.CHUNKED, 40, concurrency=8, total_blocks=300)
        assert_same(req, dict(sch, kv_reserve=1, prefill_apart=1))


def test_kv_reserve_lowers_and_is_set_for_sglang():
    plain = make_client("llama-3.1-8b", "H100")
    assert scheduler_vector(plain)[E.S_KV_RESERVE] == 0.0
    sg = ED.apply_engine_defaults(plain, "sglang", "0.5.6")
    assert sg.scheduler.kv_reserve == ED.SGLANG["kv_reserve_default"]
    assert scheduler_vector(sg)[E.S_KV_RESERVE] == (1.0 if ED.SGLANG["kv_reserve_default"] == "sglang" else 0.0)
    assert ED.apply_engine_defaults(plain, "vllm", "0.11.0").scheduler.kv_reserve == "none"


def test_kv_reserve_with_pp_micro_batches_is_one_clear_error():
    with pytest.raises((SpecError, ValueError)) as e:
        make_client("llama-3.1-70b", "H100", tp=4, pp=2, scheduler={"kv_reserve": "sglang"})
    assert "scheduler.kv_reserve" in str(e.value) and "micro_batching" in str(e.value)
    make_client("llama-3.1-70b", "H100", tp=4, pp=2, scheduler={"kv_reserve": "sglang", "micro_batching": False})
