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

CLIENT = make_client("llama-3.1-8b", "H100", efficiency={})   # MODEL.md 0.75: the cases below are timed on it
PRM = stepmodel.client_params(CLIENT)


def numba_step_fn(pf, dec, n_done):
    pf = np.asarray(pf, float).reshape(-1, 2)
    dec = np.asarray(dec, float).reshape(-1, 3)
    out = np.zeros(ST.N_OUT)
    return ST.step_time(PRM, pf[:, 0].copy(), pf[:, 1].copy(), len(pf), float(n_done),
                        dec[:, 0].copy(), dec[:, 1].copy(), dec[:, 2].copy(), len(dec), out)


def run_kernel(req, sch, log_cap=100000):
    """The single-client kernel on the default client: (per-request outputs, statistics, step log)."""
    return run_single(PRM, req, sch, log_cap)[:3]


def run_single(prm, req, sch, log_cap=100000):
    """The single-client kernel with these step-time parameters: (per-request outputs, statistics,
    step log, end time)."""
    n = len(req["prompt"])
    s = np.zeros(E.N_SCHED)
    names = dict(batching=E.S_BATCHING, policy=E.S_POLICY, max_batched_tokens=E.S_MAX_TOKENS,
                 max_batch_size=E.S_MAX_SEQS, chunk_size=E.S_CHUNK, block_size=E.S_BLOCK,
                 total_blocks=E.S_TOTAL_BLOCKS, watermark_blocks=E.S_WATERMARK, preemption=E.S_PREEMPTION,
                 prefix_cache_blocks=E.S_PREFIX_BLOCKS, static_pad=E.S_STATIC_PAD, aging_s=E.S_AGING,
                 max_model_len=E.S_MAX_MODEL_LEN)
    for k, i in names.items():
        s[i] = sch[k]
    s[E.S_SEQS_PER_STEP] = sch.get("seqs_per_step", 0)   # MIST's per-step batch limit (docs/mist_parity.md)
    s[E.S_PP_MB] = 1.0 if sch.get("pp_stages", 1) > 1 else 0.0   # PP micro-batching (kernels/ppipe.py)
    s[E.S_PREFILL_APART] = sch.get("prefill_apart", 0)   # CHUNKED: prefill steps carry no decodes (SGLang)
    s[E.S_KV_RESERVE] = sch.get("kv_reserve", 0)   # SGLang's admission reserve
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


def test_kernel_matches_twin_on_readmission_with_a_larger_prefix_hit():
    """The hypothesis-found case of tests/test_engine_reference.py (a preempted request re-admitted
    with a larger prefix-cache hit than at its first admission): engine and reference agree."""
    from tests.test_engine_reference import readmission_case
    req, sch = readmission_case()
    assert_same(req, sch)


@pytest.mark.parametrize("batching", [E.STATIC, E.CONTINUOUS, E.MIXED, E.CHUNKED])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 40), policy=st.sampled_from([0, 1, 2]),
       preemption=st.sampled_from([0, 1]), hashes=st.booleans(), branches=st.sampled_from([1, 1, 3]))
def test_kernel_matches_twin(batching, seed, n, policy, preemption, hashes, branches):
    rng = np.random.default_rng(seed)
    req, sch = make_case(rng, batching, n, branches=branches, hashes=hashes, preemption=preemption, policy=policy)
    assert_same(req, sch)


@pytest.mark.parametrize("batching", [E.STATIC, E.CONTINUOUS, E.MIXED, E.CHUNKED])
def test_kernel_matches_twin_with_mists_per_step_batch_limit(batching):
    # max_batch_size bounds each step's requests, not the running set (scheduler.max_batch_size_scope
    # = "step"): random cases with small limits, ample and scarce KV, with and without preemption
    bound = 0
    for seed in range(6):
        rng = np.random.default_rng(100 + seed)
        req, sch = make_case(rng, batching, 40, total_blocks=None if seed % 2 else 220,
                             preemption=seed % 3 != 0, hashes=seed == 4)
        sch.update(seqs_per_step=1, max_batch_size=int(rng.integers(2, 6)))
        assert_same(req, sch)
        got, _, _ = run_kernel(req, sch)
        vllm, _, _ = run_kernel(req, {**sch, "seqs_per_step": 0})
        bound += not np.array_equal(got["t_finish"], vllm["t_finish"])
    if batching in (E.CONTINUOUS, E.MIXED):
        assert bound >= 3   # the limit really binds: the timelines differ from vLLM's rule
    # (static and chunked: every running request is in the step unless KV or the token budget
    # stopped it, so the two rules almost always coincide)


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


# ---- decode runs: repeated decode-only steps advanced in O(1) each (cluster._decode_run) --------
def long_decode_case(seed, batching, *, policy=0, branches=1, total_blocks=4000, drain=1, aging_s=30.0,
                     concurrency=0, max_seq=8):
    """Few requests with long outputs: most steps repeat the previous batch, so runs are long and
    are cut by arrivals, last tokens, the horizon, KV growth and waiting-order changes."""
    rng = np.random.default_rng(seed)
    req, sch = make_case(rng, batching, 12, branches=branches, total_blocks=total_blocks, policy=policy,
                         concurrency=concurrency, drain=drain)
    req["output"] = rng.integers(50, 600, 12).astype(np.int64)
    req["arrival_s"] = np.sort(rng.uniform(0.0, 3.0, 12))
    sch.update(max_batch_size=max_seq, aging_s=aging_s, static_pad=0, chunk_size=512)
    if not drain:
        sch.update(horizon_s=2.0, max_sim_s=1e9)
    return req, sch


DECODE_RUN_CASES = {
    # name: (batching, options)
    "continuous": (E.CONTINUOUS, {}),
    "mixed": (E.MIXED, {}),
    "chunked": (E.CHUNKED, {}),
    "static": (E.STATIC, {}),
    "three_branches": (E.CONTINUOUS, dict(branches=3)),
    "horizon_cuts_a_run": (E.CONTINUOUS, dict(drain=0)),
    "closed_loop": (E.CHUNKED, dict(concurrency=3)),
    # KV so scarce that growth inside a run must preempt (the run stops before that step)
    "growth_preempts": (E.CONTINUOUS, dict(total_blocks=120)),
    # waiting requests blocked by KV while decodes run; aging reorders the queue mid-run
    "spf_aging": (E.CONTINUOUS, dict(policy=E.SPF, total_blocks=160, aging_s=0.3)),
    "lwl_aging": (E.CHUNKED, dict(policy=E.LWL, total_blocks=160, aging_s=0.3)),
    "max_seq_full": (E.MIXED, dict(policy=E.SPF, max_seq=2, aging_s=0.3)),
    # FCFS queues behind a full batch: runs go on through arrivals that can only join the queue
    "fcfs_queue_behind_full_batch": (E.CONTINUOUS, dict(max_seq=2)),
    "fcfs_queue_behind_kv": (E.CHUNKED, dict(max_seq=4, total_blocks=200)),
}


@pytest.mark.parametrize("name", sorted(DECODE_RUN_CASES))
def test_decode_runs_match_twin_step_by_step(name):
    batching, opts = DECODE_RUN_CASES[name]
    ran = left_in_runs = 0.0
    for seed in range(4):
        req, sch = long_decode_case(seed, batching, **opts)
        assert_same(req, sch)              # the twin steps one at a time
        _, cs, _ = run_kernel(req, sch)
        ran += cs[CL.CS_RUN_STEPS]
        left_in_runs += cs[CL.CS_RUN_LEAVES]
        sch_off = dict(sch, decode_runs=0)
        got_off, cs_off, log_off = run_kernel(req, sch_off)
        assert cs_off[CL.CS_RUN_STEPS] == 0
        got_on, cs_on, log_on = run_kernel(req, sch)
        np.testing.assert_array_equal(log_on, log_off)
        run_cols = [CL.CS_RUN_STEPS, CL.CS_RUN_LEAVES]
        np.testing.assert_array_equal(np.delete(cs_on, run_cols), np.delete(cs_off, run_cols))
        for k in got_on:
            np.testing.assert_array_equal(got_on[k], got_off[k], err_msg=k)
    assert ran > 0, "the cases must exercise decode runs"
    # requests leave inside runs when nobody waits (open loop, not static batches)
    assert (left_in_runs > 0) == (name not in ("static", "closed_loop")), left_in_runs


def test_decode_run_stops_when_aging_reorders_the_queue():
    """SPF: S (short prompt) heads the queue but does not fit; B (longer prompt, mostly a prefix-
    cache hit) would fit. B waits behind S until it ages, which happens in the middle of a run of
    decode-only steps of R0: the run must stop there so that B is admitted on time."""
    # requests R0, R1, B, S (arrival order); hash blocks of 512 tokens, dense ids
    lists = [[0, 1, 2], [3], [0, 1, 4], [5, 6]]
    off = np.zeros(5, np.int64)
    off[1:] = np.cumsum([len(x) for x in lists])
    req = dict(arrival_s=np.array([0.0, 0.001, 0.5, 0.6]), prompt=np.array([1100, 100, 1200, 1000], np.int64),
               output=np.array([3000, 300, 50, 50], np.int64), hash_off=off,
               hash_ids=np.array([x for l in lists for x in l], np.int64), branches=1, hash_block=512)
    sch = dict(batching=E.CONTINUOUS, policy=E.SPF, max_batched_tokens=2048, max_batch_size=2, chunk_size=512,
               block_size=16, total_blocks=300, watermark_blocks=160, preemption=1, prefix_cache_blocks=8,
               static_pad=0, aging_s=2.0, max_model_len=8192, concurrency=0, think_s=0.0, horizon_s=1e9,
               max_sim_s=1e9, drain=1)
    assert_same(req, sch)
    got, cs, _ = run_kernel(req, sch)
    want = reference_simulate(req, sch, numba_step_fn)
    t_done_r1 = want["t_finish"][1]
    # the scenario is what it claims: B was admitted after R1 left, once it had aged, before S
    assert t_done_r1 < req["arrival_s"][2] + sch["aging_s"] < want["t_first_scheduled"][2] < want["t_first_scheduled"][3]
    assert want["t_first_scheduled"][2] - (req["arrival_s"][2] + sch["aging_s"]) < 0.05
    assert cs[CL.CS_RUN_STEPS] > 0


def test_decode_run_goes_on_through_arrivals_queued_behind_a_blocked_head():
    """Two long decodes fill the batch (max_batch_size 2); forty requests arrive during their
    run and can only join the FCFS queue behind a head that cannot be admitted. Those arrivals
    are not outside events for the run (loop._arrivals_wait_behind): the steps up to the horizon
    are nearly all run steps, and every output equals stepping one by one (the twin, runs off)."""
    n_late = 40
    arrival = np.concatenate([[0.0, 0.0], 0.5 + 0.1 * np.arange(n_late)])
    n = arrival.shape[0]
    req = dict(arrival_s=arrival, prompt=np.full(n, 100, np.int64),
               output=np.concatenate([[3000, 3000], np.full(n_late, 10)]).astype(np.int64),
               hash_off=np.zeros(n + 1, np.int64), hash_ids=np.zeros(0, np.int64), branches=1, hash_block=512)
    sch = dict(batching=E.CONTINUOUS, policy=E.FCFS, max_batched_tokens=2048, max_batch_size=2, chunk_size=512,
               block_size=16, total_blocks=4000, watermark_blocks=0, preemption=1, prefix_cache_blocks=0,
               static_pad=0, aging_s=30.0, max_model_len=8192, concurrency=0, think_s=0.0, horizon_s=6.0,
               max_sim_s=1e9, drain=0)
    assert_same(req, sch)
    got_on, cs_on, log_on = run_kernel(req, sch)
    got_off, cs_off, log_off = run_kernel(req, dict(sch, decode_runs=0))
    np.testing.assert_array_equal(log_on, log_off)
    for k in got_on:
        np.testing.assert_array_equal(got_on[k], got_off[k], err_msg=k)
    # the scenario is what it claims: the long decodes were still running at the horizon, after
    # every late arrival, and nobody else was scheduled
    assert np.isnan(got_on["t_finish"][:2]).all() or (got_on["t_finish"][:2] > arrival[-1]).all()
    assert np.isnan(got_on["t_first_sched"][2:]).all()
    formed = cs_on[CL.CS_STEPS] - cs_on[CL.CS_RUN_STEPS]
    # each arrival used to end the run (then a formed step and a new run): 40+ formed steps
    assert cs_on[CL.CS_STEPS] > 2 * n_late and formed < 5, (cs_on[CL.CS_STEPS], formed)
