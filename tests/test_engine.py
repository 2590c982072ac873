"""The numba engine against its pure-Python twin (tests/reference/engine_reference.py), plus
behaviour users expect of a serving simulator."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import mistfast as mf
from mistfast import stepmodel
from mistfast.kernels import cluster as CL
from mistfast.kernels import engine as E
from mistfast.kernels import steptime as ST
from mistfast.specs import make_client
from tests.reference.engine_reference import reference_simulate

CLIENT = make_client("llama-3.1-8b", "H100")
PRM = stepmodel.client_params(CLIENT)


def numba_step_fn(pf, dec, n_done):
    pf = np.asarray(pf, float).reshape(-1, 2)
    dec = np.asarray(dec, float).reshape(-1, 3)
    out = np.zeros(ST.N_BREAKDOWN)
    return ST.step_time(PRM, pf[:, 0].copy(), pf[:, 1].copy(), len(pf), float(n_done),
                        dec[:, 0].copy(), dec[:, 1].copy(), dec[:, 2].copy(), len(dec), out)


def run_kernel(req, sch, log_cap=100000):
    n = len(req["prompt"])
    s = np.zeros(E.N_SCHED)
    names = dict(batching=E.S_BATCHING, policy=E.S_POLICY, max_batched_tokens=E.S_MAX_TOKENS,
                 max_batch_size=E.S_MAX_SEQS, chunk_size=E.S_CHUNK, block_size=E.S_BLOCK,
                 total_blocks=E.S_TOTAL_BLOCKS, watermark_blocks=E.S_WATERMARK, preemption=E.S_PREEMPTION,
                 prefix_cache_blocks=E.S_PREFIX_BLOCKS, static_pad=E.S_STATIC_PAD, aging_s=E.S_AGING,
                 max_model_len=E.S_MAX_MODEL_LEN)
    for k, i in names.items():
        s[i] = sch[k]
    g = np.zeros(CL.N_G)
    g[CL.G_HORIZON], g[CL.G_MAX_SIM], g[CL.G_DRAIN] = sch["horizon_s"], sch["max_sim_s"], sch["drain"]
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
    steps = CL.simulate_single(PRM, s, g, req["arrival_s"], req["prompt"], req["output"], branches,
                               req["hash_off"], req["hash_ids"], nh, out["status"], out["reason"], out["arrival"],
                               out["t_first_sched"], out["t_first_tok"], out["t_last_tok"], out["t_finish"],
                               out["generated"], out["preempts"], out["hit_first"], out["computed_pf"], cs, rs, log)
    return out, cs[0], log[:steps]


def make_case(rng, batching, n, branches=1, hashes=False, total_blocks=None, preemption=1, policy=0,
              concurrency=0, drain=1):
    arrival = np.sort(rng.exponential(0.05, n).cumsum())
    prompt = rng.integers(1, 1500, n)
    output = rng.integers(1, 120, n)
    if hashes:
        lists = []
        for i in range(n):
            nb = -(-int(prompt[i]) // 512)
            base = [0, 1, 2][: nb] if rng.random() < 0.6 else []
            lists.append(base + list(range(100 + 10 * i, 100 + 10 * i + nb - len(base))))
        off = np.zeros(n + 1, np.int64)
        off[1:] = np.cumsum([len(x) for x in lists])
        ids = np.array([x for l in lists for x in l], np.int64)
        uniq, inv = np.unique(ids, return_inverse=True)
        ids = inv.astype(np.int64)
    else:
        off, ids = np.zeros(n + 1, np.int64), np.zeros(0, np.int64)
    req = dict(arrival_s=arrival, prompt=prompt.astype(np.int64), output=output.astype(np.int64),
               hash_off=off, hash_ids=ids, branches=branches, hash_block=512)
    sch = dict(batching=batching, policy=policy, max_batched_tokens=2048, max_batch_size=int(rng.integers(2, 24)),
               chunk_size=int(rng.choice([64, 256, 512])), block_size=16,
               total_blocks=total_blocks or int(rng.integers(150, 2000)), watermark_blocks=int(rng.integers(0, 4)),
               preemption=preemption, prefix_cache_blocks=8 if hashes else 0, static_pad=int(rng.integers(0, 2)),
               aging_s=0.5, max_model_len=4096, concurrency=concurrency, think_s=0.01,
               horizon_s=float(arrival[-1] * 0.9) if not drain else 1e9, max_sim_s=1e9 if drain else float(arrival[-1]),
               drain=drain)
    return req, sch


PER_REQUEST = [("status", "status"), ("reason", "reason"), ("arrival", "arrival_s"),
               ("t_first_sched", "t_first_scheduled"), ("t_first_tok", "t_first_token"),
               ("t_last_tok", "t_last_token"), ("t_finish", "t_finish"), ("generated", "generated"),
               ("preempts", "preemptions"), ("computed_pf", "computed_prompt_tokens")]


def assert_same(req, sch):
    got, rs, log = run_kernel(req, sch)
    want = reference_simulate(req, sch, numba_step_fn)
    assert len(log) == want["n_steps"] == int(rs[CL.CS_STEPS])
    for j, st_ in enumerate(want["steps"]):
        assert log[j, E.L_T] == st_["t"] and log[j, E.L_DT] == st_["dt"], f"step {j}"
        assert log[j, E.L_NPF] == len(st_["prefill"])
        assert log[j, E.L_PF_TOKENS] == sum(x[2] for x in st_["prefill"])
        assert log[j, E.L_NDEC] == len(st_["decode"]) or sch["static_pad"]
    for k_got, k_want in PER_REQUEST:
        np.testing.assert_array_equal(np.asarray(got[k_got], float), np.asarray(want[k_want], float), err_msg=k_got)
    assert rs[CL.CS_PREEMPT] == want["preemptions_total"]
    assert rs[CL.CS_KV_PEAK] == want["kv_peak_blocks"]
    assert rs[CL.CS_RECOMP] == want["recomputed_tokens"]
    assert rs[CL.CS_BUSY] == pytest.approx(want["busy_s"], rel=1e-12)


@pytest.mark.parametrize("batching", [E.STATIC, E.CONTINUOUS, E.MIXED, E.CHUNKED])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 40), policy=st.sampled_from([0, 1, 2]),
       preemption=st.sampled_from([0, 1]), hashes=st.booleans(), branches=st.sampled_from([1, 1, 3]))
def test_kernel_matches_twin(batching, seed, n, policy, preemption, hashes, branches):
    rng = np.random.default_rng(seed)
    req, sch = make_case(rng, batching, n, branches=branches, hashes=hashes, preemption=preemption, policy=policy)
    assert_same(req, sch)


@pytest.mark.parametrize("batching", [E.CONTINUOUS, E.CHUNKED])
def test_kernel_matches_twin_closed_loop_and_horizon(batching):
    rng = np.random.default_rng(7)
    req, sch = make_case(rng, batching, 30, concurrency=4)
    assert_same(req, sch)
    req, sch = make_case(rng, batching, 30, drain=0)
    assert_same(req, sch)


@pytest.mark.parametrize("batching", [E.STATIC, E.CONTINUOUS, E.MIXED, E.CHUNKED])
def test_kernel_matches_twin_scarce_kv(batching):
    for seed in range(5):
        rng = np.random.default_rng(seed)
        req, sch = make_case(rng, batching, 40, total_blocks=160)
        assert_same(req, sch)
