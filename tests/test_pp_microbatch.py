"""PP micro-batch pipelining (ENGINE_SEMANTICS.md "PP micro-batch pipelining", MODEL.md §2.1): the
numba engine against its plain-Python twin (tests/reference/engine_reference.py, pipelined loop) on
random cases, hand-checked timelines, and the switch (off = today's sequential engine, bit for bit)."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from mistfast import stepmodel
from mistfast.kernels import cluster as CL
from mistfast.kernels import engine as E
from mistfast.kernels import steptime as ST
from mistfast.specs import make_client
from tests.reference.engine_reference import reference_simulate
from tests.test_engine import PER_REQUEST, make_case
from tests.test_engine import run_single as run_kernel


def client_prm(pp, **fields):
    return stepmodel.client_params(make_client("llama-3.1-8b", "H100", pp=pp, efficiency={}, **fields))


def step_fns(prm):
    """(step_fn, stage_fn) of the twin. stage_fn splits the step model's latency into the PP stages
    as ENGINE_SEMANTICS.md states it (written here from that text, not from kernels/ppipe.py)."""
    pp = int(prm[ST.P_PP])

    def step(pf, dec, n_done):
        pf = np.asarray(pf, float).reshape(-1, 2)
        dec = np.asarray(dec, float).reshape(-1, 3)
        out = np.zeros(ST.N_OUT)
        dt = ST.step_time(prm, pf[:, 0].copy(), pf[:, 1].copy(), len(pf), float(n_done),
                          dec[:, 0].copy(), dec[:, 1].copy(), dec[:, 2].copy(), len(dec), out)
        return dt, out

    def step_fn(pf, dec, n_done):
        return step(pf, dec, n_done)[0]

    def stage_fn(pf, dec, n_done):
        dt, out = step(pf, dec, n_done)
        f = out[ST.X_FACTOR]
        emb, head, hop = out[ST.X_EMB] * f, out[ST.X_HEAD] * f, out[ST.X_P2P] * f
        host = prm[ST.P_STEP_OVH]
        n_layers = prm[ST.P_N_DENSE] + prm[ST.P_N_MOE]
        per_layer = max(0.0, dt - host - emb - head - hop) / n_layers
        each = float(-(-int(n_layers) // pp))
        layers = [min(each, max(0.0, n_layers - q * each)) for q in range(pp - 1)]
        layers.append(max(0.0, n_layers - (pp - 1) * each))
        d = []
        for q in range(pp):
            x = layers[q] * per_layer
            if q == 0:
                x += emb
                x += host
            if q == pp - 1:
                x += head
            else:
                x += hop / (pp - 1)
            d.append(x)
        return d

    return step_fn, stage_fn


def assert_same(prm, req, sch):
    """Kernel and twin agree bit for bit: every step, every request time, the run statistics."""
    got, cs, log, end = run_kernel(prm, req, sch)
    step_fn, stage_fn = step_fns(prm)
    want = reference_simulate(req, sch, step_fn, stage_fn)
    assert len(log) == want["n_steps"] == int(cs[CL.CS_STEPS])
    for j, st_ in enumerate(want["steps"]):
        assert log[j, E.L_T] == st_["t"] and log[j, E.L_DT] == st_["dt"], f"step {j}"
        assert log[j, E.L_NPF] == len(st_["prefill"])
        assert log[j, E.L_PF_TOKENS] == sum(x[2] for x in st_["prefill"])
        assert log[j, E.L_NDEC] == len(st_["decode"]) or sch["static_pad"]
        assert log[j, E.L_KV_USED] == st_["kv_blocks"]
    for k_got, k_want in PER_REQUEST:
        np.testing.assert_array_equal(np.asarray(got[k_got], float), np.asarray(want[k_want], float), err_msg=k_got)
    assert cs[CL.CS_PREEMPT] == want["preemptions_total"]
    assert cs[CL.CS_KV_PEAK] == want["kv_peak_blocks"]
    assert cs[CL.CS_RECOMP] == want["recomputed_tokens"]
    assert cs[CL.CS_BUSY] == want["busy_s"]
    assert cs[CL.CS_KV_BLOCK_S] == want["kv_block_seconds"]
    assert end == want["end_time_s"]
    return got, cs, log, want


PRM = {p: client_prm(p) for p in (2, 4)}


@pytest.mark.parametrize("pp", [2, 4])
@pytest.mark.parametrize("batching", [E.STATIC, E.CONTINUOUS, E.MIXED, E.CHUNKED])
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 40), policy=st.sampled_from([0, 1, 2]),
       preemption=st.sampled_from([0, 1]), hashes=st.booleans(), branches=st.sampled_from([1, 1, 3]))
def test_pipelined_kernel_matches_twin(pp, batching, seed, n, policy, preemption, hashes, branches):
    rng = np.random.default_rng(seed)
    req, sch = make_case(rng, batching, n, branches=branches, hashes=hashes, preemption=preemption, policy=policy)
    sch["pp_stages"] = pp
    assert_same(PRM[pp], req, sch)


@pytest.mark.parametrize("batching", [E.CONTINUOUS, E.CHUNKED])
def test_pipelined_twin_closed_loop_horizon_scarce_kv(batching):
    for seed in range(3):
        rng = np.random.default_rng(seed)
        for opts in (dict(concurrency=4), dict(drain=0), dict(total_blocks=160)):
            req, sch = make_case(rng, batching, 30, **opts)
            sch["pp_stages"] = 4
            assert_same(PRM[4], req, sch)


# ---- hand-checked timelines ------------------------------------------------------------------------
def simple_case(n, prompt, output, *, batching=E.CONTINUOUS, max_seq=1, pp=2, arrival=None):
    req = dict(arrival_s=np.zeros(n) if arrival is None else np.asarray(arrival, float),
               prompt=np.full(n, prompt, np.int64), output=np.full(n, output, np.int64),
               hash_off=np.zeros(n + 1, np.int64), hash_ids=np.zeros(0, np.int64), branches=1, hash_block=512)
    sch = dict(batching=batching, policy=0, max_batched_tokens=8192, max_batch_size=max_seq, chunk_size=8192,
               block_size=16, total_blocks=100000, watermark_blocks=0, preemption=1, prefix_cache_blocks=0,
               static_pad=0, aging_s=30.0, max_model_len=100000, concurrency=0, think_s=0.0, horizon_s=1e9,
               max_sim_s=1e9, drain=1, pp_stages=pp)
    return req, sch


def test_two_prefills_overlap_by_the_gate():
    """pp = 2, one sequence per micro-batch, two 512-token prompts at t = 0, 2 tokens each. With the
    prefill's stage times (a0, a1) and M = max: r0 starts at 0 and emits at a0 + a1; r1 starts at the
    gate M, enters stage 1 at M + a0 (>= a0 + a1, stage 1 is free) and emits at M + a0 + a1; r0's
    decode waits for the next gate, r1's start + M = 2M."""
    prm = PRM[2]
    _, stage_fn = step_fns(prm)
    req, sch = simple_case(2, 512, 2)
    got, cs, log, _ = assert_same(prm, req, sch)
    a0, a1 = stage_fn([(0, 512)], [], 1)
    M = max(a0, a1)
    assert a0 != a1   # embedding and host time on the first stage, LM head on the last
    np.testing.assert_allclose(got["t_first_sched"], [0.0, M], rtol=1e-12)
    np.testing.assert_allclose(got["t_first_tok"], [a0 + a1, M + a0 + a1], rtol=1e-12)
    np.testing.assert_allclose(log[:3, E.L_T], [0.0, M, 2 * M], rtol=1e-12)
    np.testing.assert_allclose(log[:2, E.L_DT], [a0 + a1, a0 + a1], rtol=1e-12)
    assert log[2, E.L_NDEC] == 1 and log[2, E.L_NPF] == 0
    # busy time is the union of the in-flight intervals, not the sum of the latencies
    assert cs[CL.CS_BUSY] < log[:, E.L_DT].sum()
    assert cs[CL.CS_BUSY] == pytest.approx(got["t_finish"].max(), rel=1e-12)


def _makespan(prm, pp_stages, n, max_seq):
    req, sch = simple_case(n, 128, 300, max_seq=max_seq, pp=pp_stages)
    got, cs, log, want = assert_same(prm, req, sch)
    return got["t_finish"].max(), log


def test_pp2_saturated_decode_doubles_throughput_at_the_same_step_latency():
    """16 requests at t = 0, 8 sequences per micro-batch, 300 tokens each. Sequential (pp = 2
    without micro-batching) decodes them 8 at a time: 2 x 300 steps of D. Pipelined, the two halves
    alternate: a micro-batch every M (the slowest stage), each still taking D = a0 + a1, so the
    throughput gain is D / M (2 for equal stages; the LM head makes the last stage a little longer)."""
    prm = PRM[2]
    _, stage_fn = step_fns(prm)
    t_seq, log_seq = _makespan(prm, 1, 16, 8)
    t_pipe, log_pipe = _makespan(prm, 2, 16, 8)
    d = stage_fn([], [(1, 0, 128 + 150)] * 8, 0)   # a decode micro-batch of 8 at mid context
    gain = sum(d) / max(d)
    assert 1.8 < gain < 2.0
    assert t_seq / t_pipe == pytest.approx(gain, rel=0.02)
    # the latency of a full decode step of 8 is the same in both engines
    dec_seq = log_seq[(log_seq[:, E.L_NPF] == 0) & (log_seq[:, E.L_NDEC] == 8), E.L_DT]
    dec_pipe = log_pipe[(log_pipe[:, E.L_NPF] == 0) & (log_pipe[:, E.L_NDEC] == 8), E.L_DT]
    assert np.median(dec_pipe) == pytest.approx(np.median(dec_seq), rel=1e-4)


def test_pp4_uneven_stages_the_gate_is_the_slowest_stage():
    """pp = 4 with 32 layers (8 per stage): the last stage also runs the LM head, so it is the slowest.
    Four one-sequence decode micro-batches keep the pipeline busy; a micro-batch starts every
    (slowest stage of the previous one) and still takes the full sum of its stages (no queueing
    in front of a stage); four are in flight at times."""
    prm = PRM[4]
    req, sch = simple_case(8, 64, 60, max_seq=1, pp=4)
    got, cs, log, want = assert_same(prm, req, sch)
    steps = want["steps"]
    t_first_finish = got["t_finish"].min()
    pairs = [(a, b) for a, b in zip(steps, steps[1:])
             if not a["prefill"] and not b["prefill"] and b["t"] < t_first_finish][8:]   # (after the prefills' cadence)
    assert len(pairs) > 100
    for prev, nxt in pairs:
        d = prev["stages"]
        assert int(np.argmax(d)) == 3 and min(d) < max(d) * 0.999
        assert nxt["t"] - prev["t"] == pytest.approx(max(d), rel=1e-9)
        assert prev["dt"] == pytest.approx(sum(d), rel=1e-9)
    in_flight = [sum(1 for s in steps if s["t"] <= x["t"] < s["t"] + s["dt"]) for x in steps]
    assert max(in_flight) == 4


def test_micro_batching_off_is_the_sequential_engine():
    """pp = 2 with the switch off runs the sequential engine: the kernel agrees with the twin's
    sequential loop (one step at a time, latency = the full sum)."""
    rng = np.random.default_rng(3)
    for batching in (E.CONTINUOUS, E.CHUNKED):
        req, sch = make_case(rng, batching, 30)
        got, cs, log, want = assert_same(PRM[2], req, sch)
        assert np.all(log[1:, E.L_T] >= log[:-1, E.L_T] + log[:-1, E.L_DT] - 1e-12)


def test_static_batching_never_pipelines():
    """A static batch is one micro-batch: nothing else may run until it is done."""
    req, sch = simple_case(6, 200, 20, batching=E.STATIC, max_seq=3, pp=4)
    got, cs, log, want = assert_same(PRM[4], req, sch)
    assert np.all(log[1:, E.L_T] >= log[:-1, E.L_T] + log[:-1, E.L_DT] * (1 - 1e-12))


# ---- the switch: spec, validation, lowering ----------------------------------------------------------
def test_switch_defaults_and_lowering():
    from mistfast.lowering import scheduler_vector
    on = lambda **kw: scheduler_vector(make_client("llama-3.1-8b", "H100", **kw))[E.S_PP_MB]  # noqa: E731
    assert on(pp=2) == 1.0                                               # default on for pp > 1
    assert on(pp=1) == 0.0 and on(pp=1, scheduler={"micro_batching": True}) == 0.0
    assert on(pp=4, scheduler={"micro_batching": False}) == 0.0
    assert on(pp=2, reference="genz") == 0.0                             # compat: strictly sequential


def test_switch_refused_under_genz_compat():
    import mistfast as mf
    from mistfast.specs import SpecError
    doc = {"clients": [{"name": "llm", "model": "llama-3.1-8b", "device": "H100", "pp": 2, "reference": "genz",
                        "scheduler": {"micro_batching": True}}], "workload": {"num_requests": 4}}
    with pytest.raises(SpecError) as ei:
        mf.simulate(doc)
    msg = str(ei.value)
    assert "micro_batching" in msg and "genz" in msg and "\n" not in msg.strip()


def test_scenario_pp2_pipelined_beats_sequential_and_is_deterministic():
    """Through the public API: a pp = 2 engine with micro-batching finishes a saturating load sooner
    than with micro_batching = false, and the same spec and seed give bit-identical results."""
    import mistfast as mf

    def doc(mb):
        return {"simulation": {"seed": 3, "horizon_s": 30},
                "clients": [{"name": "llm", "model": "llama-3.1-8b", "device": "H100", "pp": 2,
                             "scheduler": {"batching": "continuous", "max_batch_size": 8,
                                           "max_batched_tokens": 8192, "micro_batching": mb}}],
                "workload": {"num_requests": 48, "arrival": {"process": "poisson", "rate_rps": 100},
                             "input": {"dist": "fixed", "value": 256}, "output": {"dist": "fixed", "value": 128}}}
    a = mf.simulate(doc(True))
    b = mf.simulate(doc(True))
    seq = mf.simulate(doc(False))
    for k in a.data_vars:
        np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]), err_msg=k)
    assert float(a["output_tok_s"]) > 1.5 * float(seq["output_tok_s"])
