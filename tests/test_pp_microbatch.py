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


def run_kernel(prm, req, sch, log_cap=100000):
    n = len(req["prompt"])
    s = np.zeros(E.N_SCHED)
    names = dict(batching=E.S_BATCHING, policy=E.S_POLICY, max_batched_tokens=E.S_MAX_TOKENS,
                 max_batch_size=E.S_MAX_SEQS, chunk_size=E.S_CHUNK, block_size=E.S_BLOCK,
                 total_blocks=E.S_TOTAL_BLOCKS, watermark_blocks=E.S_WATERMARK, preemption=E.S_PREEMPTION,
                 prefix_cache_blocks=E.S_PREFIX_BLOCKS, static_pad=E.S_STATIC_PAD, aging_s=E.S_AGING,
                 max_model_len=E.S_MAX_MODEL_LEN)
    for k, i in names.items():
        s[i] = sch[k]
    s[E.S_PP_MB] = 1.0 if sch.get("pp_stages", 1) > 1 else 0.0
    g = np.zeros(CL.N_G)
    g[CL.G_HORIZON], g[CL.G_MAX_SIM], g[CL.G_DRAIN] = sch["horizon_s"], sch["max_sim_s"], sch["drain"]
    g[CL.G_DECODE_RUNS] = sch.get("decode_runs", 1)
    g[CL.G_CONC], g[CL.G_THINK], g[CL.G_LOG_CAP], g[CL.G_HASH_BLOCK] = (sch["concurrency"], sch["think_s"],
                                                                        log_cap, req["hash_block"])
    f = lambda: np.empty(n)  # noqa: E731
    out = dict(status=np.empty(n, np.int8), reason=np.empty(n, np.int8), arrival=f(), t_first_sched=f(),
               t_first_tok=f(), t_last_tok=f(), t_finish=f(), generated=np.empty(n, np.int64),
               preempts=np.empty(n, np.int32), hit_first=np.empty(n, np.int64), computed_pf=np.empty(n, np.int64))
    cs = np.zeros((1, CL.N_CS))
    rs = np.zeros(4)
    log = np.full((log_cap, CL.LOG_COLS + 64), -1.0)
    nh = int(req["hash_ids"].max()) + 1 if req["hash_ids"].size else 0
    branches = np.full(n, req["branches"], np.int64)
    steps = CL.simulate_single(prm, s, g, req["arrival_s"], req["prompt"], req["output"], branches,
                               req["hash_off"], req["hash_ids"], nh, out["status"], out["reason"], out["arrival"],
                               out["t_first_sched"], out["t_first_tok"], out["t_last_tok"], out["t_finish"],
                               out["generated"], out["preempts"], out["hit_first"], out["computed_pf"], cs, rs, log)
    return out, cs[0], log[:steps], rs[0]


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
