"""Multi-client pipelines: hand-checkable scenarios for each mechanism, invariants on random
pipelines, and the paper's qualitative findings on small setups."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import mistfast as mf
from mistfast.kernels import cluster as CL
from mistfast.pipeline import run_pipeline
from mistfast.scenario import build_requests, point_seed
from mistfast.specs import parse_scenario

LLM = {"name": "llm", "model": "llama-3.1-8b", "device": "H100"}


def scen(**doc):
    base = {"clients": [LLM], "simulation": {"seed": 3}}
    base.update(doc)
    return parse_scenario(base)


def run(spec, decode_runs=True):
    ss = point_seed(spec.simulation.seed)
    reqs = build_requests(spec.workload, spec.simulation.horizon_s, ss)
    return run_pipeline(spec, reqs, ss, log_steps=100000, decode_runs=decode_runs)


def fixed(n, prompt, output, rate=None):
    arr = {"process": "offline"} if rate is None else {"process": "uniform", "rate_rps": rate}
    return {"num_requests": n, "arrival": arr, "input": {"dist": "fixed", "value": prompt},
            "output": {"dist": "fixed", "value": output}}


def stage_times(r, req, j):
    s = r["inputs"]["st_off"][req] + j
    st = r["stages"]
    return st["ready"][s], st["arrive"][s], st["sched"][s], st["exit"][s], st["client"][s]


# ---- contention -----------------------------------------------------------------------------
def kv_tier_scenario(n):
    tier = {"name": "dram", "tier": {"preset": "ref-DRAM", "bandwidth_GBps": 10.0, "latency_us": 100.0},
            "link": {"preset": "PCIe5-x16", "bandwidth_GBps": 1000.0, "latency_us": 0.0}}
    return scen(tiers=[tier], workload=fixed(n, 100, 2),
                pipelines=[{"stages": [{"kind": "kv_fetch", "past_tokens": 4000, "tiers": [{"tier": "dram", "hit": 1.0}]},
                                       {"kind": "llm", "pool": "llm"}]}])


def test_two_equal_kv_retrievals_take_twice_as_long():
    kvb = 131072  # Llama-3.1-8B bf16 KV bytes per token
    S = 4000 * kvb
    one = run(kv_tier_scenario(1))
    two = run(kv_tier_scenario(2))
    # alone: lookup latency + S / min(tier 10 GB/s, link 1000 GB/s)
    t1 = stage_times(one, 0, 0)[3]
    assert t1 == pytest.approx(100e-6 + S / 10e9, rel=1e-9)
    # two at once on one tier port: each gets half the bandwidth, both end at 2 S / BW
    for req in (0, 1):
        assert stage_times(two, req, 0)[3] == pytest.approx(100e-6 + 2 * S / 10e9, rel=1e-9)
    # the fetched KV is used: prefill computes only the 100 new tokens
    assert one["requests"]["computed_pf"][0] == 100


def test_full_miss_costs_exactly_the_recompute_prefill():
    miss = scen(tiers=[{"name": "ssd", "tier": "ref-SSD", "link": "PCIe5-x16"}], workload=fixed(3, 100, 4, rate=1.0),
                pipelines=[{"stages": [{"kind": "kv_fetch", "past_tokens": 3000, "tiers": [{"tier": "ssd", "hit": 0.0}]},
                                       {"kind": "llm", "pool": "llm"}]}])
    plain = scen(workload=fixed(3, 3100, 4, rate=1.0), pipelines=[{"stages": [{"kind": "llm", "pool": "llm"}]}])
    a, b = run(miss), run(plain)
    np.testing.assert_array_equal(a["requests"]["t_first_tok"], b["requests"]["t_first_tok"])
    np.testing.assert_array_equal(a["requests"]["t_finish"], b["requests"]["t_finish"])
    assert list(a["requests"]["computed_pf"]) == [3100] * 3


def test_pd_transfer_adds_latency_plus_bytes_over_bandwidth():
    L, B = 0.02e-3, 50e9 * 0.9
    spec = scen(clients=[{**LLM, "name": "P"}, {**LLM, "name": "D", "device": "H200"}],
                links=[{"between": ["P", "D"], "link": {"preset": "RDMA-400G", "bandwidth_GBps": 50.0,
                                                          "efficiency": 0.9, "latency_us": 20.0}}],
                workload=fixed(1, 3000, 8),
                pipelines=[{"stages": [{"kind": "prefill", "pool": "P"}, {"kind": "decode", "pool": "D"}]}])
    r = run(spec)
    _, _, _, p_exit, pc = stage_times(r, 0, 0)
    d_ready, d_arrive, d_sched, _, dc = stage_times(r, 0, 1)
    K = 3000 * 131072
    assert d_arrive - p_exit == pytest.approx(L + K / B, rel=1e-9)
    assert d_sched == d_arrive  # an idle decode client takes it at once
    assert r["inputs"]["topo"].names[pc] == "P" and r["inputs"]["topo"].names[dc] == "D"
    # TTFT is stamped at the end of prefill (token 1 comes from the prefill client)
    assert r["requests"]["t_first_tok"][0] == p_exit
    assert r["requests"]["generated"][0] == 8


def test_disaggregated_decode_runs_on_its_own_hardware():
    # the reference ignores decode_platform (MODEL.md §12.7): here D really is an H200
    base = dict(links=[{"between": ["P", "D"], "link": "RDMA-400G"}], workload=fixed(4, 1000, 200),
                pipelines=[{"stages": [{"kind": "prefill", "pool": "P"}, {"kind": "decode", "pool": "D"}]}])
    llm = {**LLM, "efficiency": {}}   # MODEL.md's 0.75, no fitted per-op overhead: the bandwidth ratio shows
    h100 = run(scen(clients=[{**llm, "name": "P"}, {**llm, "name": "D"}], **base))
    h200 = run(scen(clients=[{**llm, "name": "P"}, {**llm, "name": "D", "device": "H200"}], **base))
    tpot = lambda r: np.mean((r["requests"]["t_last_tok"] - r["requests"]["t_first_tok"]) / 199)  # noqa: E731
    assert tpot(h200) < tpot(h100) * 0.8  # decode is memory bound: 4.8 vs 3.35 TB/s


# ---- routing ------------------------------------------------------------------------------------
def test_round_robin_alternates():
    spec = scen(clients=[{**LLM, "name": "a"}, {**LLM, "name": "b"}, {**LLM, "name": "c"}],
                workload=fixed(7, 100, 2, rate=10.0),
                pipelines=[{"stages": [{"kind": "llm", "pool": ["a", "b", "c"], "routing": "round_robin"}]}])
    r = run(spec)
    clients = [stage_times(r, i, 0)[4] for i in range(7)]
    assert clients == [0, 1, 2, 0, 1, 2, 0]


def test_heavy_light_separates_by_threshold():
    spec = scen(clients=[{**LLM, "name": f"c{i}"} for i in range(4)],
                workload={"num_requests": 40, "arrival": {"process": "uniform", "rate_rps": 5.0},
                          "input": {"dist": "uniform", "low": 100, "high": 4000}, "output": {"dist": "fixed", "value": 2}},
                pipelines=[{"stages": [{"kind": "llm", "pool": ["c0", "c1", "c2", "c3"], "routing": "heavy_light",
                                        "heavy_threshold": 2048}]}])
    r = run(spec)
    prompts = r["prompt"]
    for i in range(40):
        c = stage_times(r, i, 0)[4]
        assert (c % 2 == 0) == (prompts[i] > 2048)


def test_model_routing_by_class():
    spec = scen(clients=[{**LLM, "name": "small"}, {"name": "big", "model": "llama-3.1-70b", "device": "H100", "tp": 4}],
                workload=fixed(200, 200, 4, rate=20.0),
                pipelines=[{"name": "easy", "weight": 3, "stages": [{"kind": "llm", "pool": "small"}]},
                           {"name": "hard", "weight": 1, "stages": [{"kind": "llm", "pool": "big"}]}])
    r = run(spec)
    cls = r["inputs"]["cls"]
    for i in range(200):
        assert stage_times(r, i, 0)[4] == (0 if cls[i] == 0 else 1)
    assert 0.6 < np.mean(cls == 0) < 0.9


def test_least_loaded_prefers_the_idle_client():
    spec = scen(clients=[{**LLM, "name": "a"}, {**LLM, "name": "b"}], workload=fixed(2, 8000, 50),
                pipelines=[{"stages": [{"kind": "llm", "pool": ["a", "b"], "routing": "least_prefill_tokens"}]}])
    r = run(spec)
    assert {stage_times(r, 0, 0)[4], stage_times(r, 1, 0)[4]} == {0, 1}


# ---- servers -----------------------------------------------------------------------------------
def test_cpu_slots_serve_fcfs_in_parallel():
    spec = scen(servers=[{"name": "cpu", "kind": "cpu", "slots": 2, "base_ms": 10.0, "per_token_us": 0.0}],
                workload=fixed(5, 100, 2),
                pipelines=[{"stages": [{"kind": "pre", "pool": "cpu"}, {"kind": "llm", "pool": "llm"}]}])
    r = run(spec)
    exits = sorted(stage_times(r, i, 0)[3] for i in range(5))
    assert exits == pytest.approx([0.01, 0.01, 0.02, 0.02, 0.03])


def test_retrieval_batch_time_is_rago():
    srv = {"name": "ret", "kind": "retrieval", "device": "SPR", "dim": 128, "centroids": 8192, "probes": 10,
           "pq_m": 8, "vectors_per_list": 1000, "top_k": 5, "max_batch": 8}
    spec = scen(servers=[srv], workload=fixed(1, 100, 2),
                pipelines=[{"stages": [{"kind": "retrieve", "pool": "ret", "docs": 5, "doc_tokens": 100},
                                       {"kind": "llm", "pool": "llm"}]}])
    r = run(spec)
    D, C, npb, M, Nc, k = 128, 8192, 10, 8, 1000, 5
    flop = 2 * D * C + M * Nc * npb + 2 * D * k
    byts = 4 * C * D + 4 * 256 * D + 4 * D + 8 * npb + npb * Nc * (M + 8) + 4 * k + 4 * k * D + 4 * k
    want = flop / 6.27e12 + byts / 308e9
    assert stage_times(r, 0, 0)[3] == pytest.approx(want, rel=1e-9)
    # the retrieved context lengthens the prompt
    assert r["requests"]["computed_pf"][0] == 100 + 5 * 100


# ---- invariants on random pipelines -------------------------------------------------------------
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**6), n=st.integers(1, 30), kinds=st.sampled_from(["rag", "pd", "kv", "reason"]),
       rate=st.sampled_from([1.0, 10.0, 100.0]), out_high=st.sampled_from([60, 400]))
def test_random_pipeline_invariants(seed, n, kinds, rate, out_high):
    clients = [{**LLM, "name": "a"}, {**LLM, "name": "b", "device": "H200"},
               {"name": "emb", "model": "e5-base", "device": "A100", "scheduler": {"batching": "continuous"}}]
    stages = {
        "rag": [{"kind": "pre", "pool": "cpu"}, {"kind": "embed", "pool": "emb"},
                {"kind": "retrieve", "pool": "ret", "docs": 4, "doc_tokens": 256}, {"kind": "llm", "pool": ["a", "b"], "routing": "join_shortest_queue"},
                {"kind": "post", "pool": "cpu"}],
        "pd": [{"kind": "prefill", "pool": "a"}, {"kind": "decode", "pool": "b"}],
        "kv": [{"kind": "kv_fetch", "past_tokens": 2000, "tiers": [{"tier": "dram", "hit": 0.5}]},
               {"kind": "llm", "pool": ["a", "b"], "routing": "least_kv"}],
        "reason": [{"kind": "reason", "pool": "a", "steps": 3, "step_tokens": 32, "verifier": "b"}, {"kind": "llm", "pool": "a"}],
    }[kinds]
    spec = scen(clients=clients,
                servers=[{"name": "cpu", "kind": "cpu", "slots": 2}, {"name": "ret", "kind": "retrieval", "device": "Grace",
                                                                      "memory_resource": "dram"}],
                tiers=[{"name": "dram", "tier": "ref-DRAM", "link": "PCIe5-x16"}],
                workload={"num_requests": n, "arrival": {"process": "poisson", "rate_rps": rate},
                          "input": {"dist": "uniform", "low": 10, "high": 3000}, "output": {"dist": "uniform", "low": 1, "high": out_high}},
                simulation={"seed": seed}, pipelines=[{"stages": stages}])
    r = run(spec)
    req, stg, ins = r["requests"], r["stages"], r["inputs"]
    assert set(req["status"]) <= {3, 4}  # drained: everything finished or was rejected
    for i in range(n):
        a, z = ins["st_off"][i], ins["st_off"][i + 1]
        if req["status"][i] != 3:
            continue
        assert stg["ready"][a] == req["arrival"][i]
        prev_exit = req["arrival"][i]
        for s in range(a, z):
            if ins["st_kind"][s] == CL.K_DECODE and ins["st_output"][s] <= 1:
                assert np.isnan(stg["exit"][s])  # nothing left to decode: the stage is passed over
                continue
            assert stg["ready"][s] == prev_exit
            assert stg["arrive"][s] >= stg["ready"][s]
            if not np.isnan(stg["sched"][s]):
                assert stg["sched"][s] >= stg["arrive"][s]
            assert stg["exit"][s] >= stg["arrive"][s]
            prev_exit = stg["exit"][s]
        assert req["t_finish"][i] == prev_exit
        assert req["arrival"][i] <= req["t_first_tok"][i] <= req["t_finish"][i]
    # deterministic, and decode runs (several clients, transfers, servers) change nothing: every step
    # taken one by one through the event loop gives the same requests, stages, steps and statistics
    r2 = run(spec, decode_runs=False)
    for part in ("requests", "stages"):
        for k in r[part]:
            np.testing.assert_array_equal(r[part][k], r2[part][k], err_msg=f"{part}.{k}")
    np.testing.assert_array_equal(r["steplog"], r2["steplog"])
    keep = [j for j in range(CL.N_CS) if j not in (CL.CS_RUN_STEPS, CL.CS_RUN_LEAVES)]
    np.testing.assert_array_equal(r["cstats"][:, keep], r2["cstats"][:, keep])
    np.testing.assert_array_equal(r["res_bytes"], r2["res_bytes"])
    assert r["end"] == r2["end"]
    assert r2["cstats"][:, CL.CS_RUN_STEPS].sum() == 0


# ---- the paper's qualitative findings (MODEL.md §10.2, §10.5) -------------------------------------
def rag_scenario(embed_model, embed_device, link="PCIe4-x4"):
    return scen(clients=[LLM, {"name": "embed", "model": embed_model, "device": embed_device,
                               "scheduler": {"batching": "continuous", "max_batched_tokens": 8192}}],
                servers=[{"name": "ret", "kind": "retrieval", "device": "Grace"}],
                links=[{"between": ["ret", "llm"], "link": link}],
                workload={"num_requests": 60, "arrival": {"process": "poisson", "rate_rps": 1.0},
                          "input": {"dist": "lognormal", "mean": 1155, "std": 1109, "max_tokens": 4096},
                          "output": {"dist": "fixed", "value": 32}},
                pipelines=[{"stages": [{"kind": "embed", "pool": "embed"},
                                       {"kind": "retrieve", "pool": "ret", "docs": 20, "doc_tokens": 512},
                                       {"kind": "llm", "pool": "llm"}]}])


def test_big_embedder_on_cpu_dominates_rag_ttft_and_gpu_removes_it():
    cpu = mf.simulate(rag_scenario("e5-mistral-7b", "SPR"))
    gpu = mf.simulate(rag_scenario("e5-mistral-7b", "A100"))
    small = mf.simulate(rag_scenario("e5-base", "SPR"))
    enc = list(cpu.stage_kind.values).index("encode")
    # a 7B embedder on a CPU: seconds of embedding, most of TTFT
    assert float(cpu.stage_service_ms[enc]) > 1000
    assert float(cpu.stage_service_ms[enc] + cpu.stage_queue_ms[enc]) > 0.5 * float(cpu.ttft_mean_ms)
    # on a GPU most of it is gone
    assert float(gpu.ttft_mean_ms) < 0.2 * float(cpu.ttft_mean_ms)
    assert float(small.ttft_mean_ms) < float(cpu.ttft_mean_ms)


def test_moving_retrieved_context_costs_little():
    slow = mf.simulate(rag_scenario("e5-base", "A100", link="PCIe4-x4"))
    fast = mf.simulate(rag_scenario("e5-base", "A100", link="PCIe5-x16"))
    llm = list(slow.stage_kind.values).index("llm")
    # 20 x 512 token ids = 40 KB: microseconds even on a x4 link
    assert float(slow.stage_transfer_ms[llm]) < 0.01 * float(slow.ttft_mean_ms)
    assert float(slow.e2e_mean_ms) == pytest.approx(float(fast.e2e_mean_ms), rel=0.03)


def kv_vs_recompute(context, hit):
    tier = {"name": "ssd", "tier": "kvstore-C-ssd", "link": "kvlink-C"}
    return scen(tiers=[tier], workload=fixed(20, 200, 16, rate=0.5),
                pipelines=[{"stages": [{"kind": "kv_fetch", "past_tokens": context, "tiers": [{"tier": "ssd", "hit": hit}]},
                                       {"kind": "llm", "pool": "llm"}]}])


def test_recompute_beats_slow_remote_kv_for_short_contexts_not_long():
    short_fetch = mf.simulate(kv_vs_recompute(1024, 1.0)).ttft_mean_ms
    short_recompute = mf.simulate(kv_vs_recompute(1024, 0.0)).ttft_mean_ms
    assert float(short_recompute) < float(short_fetch)
    # on a fast tier, long contexts are cheaper to fetch than to recompute (attention is quadratic)
    fast = {"name": "dram", "tier": "kvstore-A-lpddr", "link": "kvlink-A"}
    long_fetch = mf.simulate(scen(tiers=[fast], workload=fixed(20, 200, 16, rate=0.5),
                                  pipelines=[{"stages": [{"kind": "kv_fetch", "past_tokens": 24576,
                                                          "tiers": [{"tier": "dram", "hit": 1.0}]},
                                                         {"kind": "llm", "pool": "llm"}]}])).ttft_mean_ms
    long_recompute = mf.simulate(kv_vs_recompute(24576, 0.0)).ttft_mean_ms
    assert float(long_fetch) < float(long_recompute)


def test_bad_pipeline_specs_are_clear():
    with pytest.raises(mf.SpecError, match=r"stages\[0\].pool = 'nope': unknown client"):
        mf.simulate(scen(pipelines=[{"stages": [{"kind": "llm", "pool": "nope"}]}]))
    with pytest.raises(mf.SpecError, match=r"decode stage must follow a prefill"):
        scen(pipelines=[{"stages": [{"kind": "decode", "pool": "llm"}]}])
    with pytest.raises(mf.SpecError, match=r"unknown tier"):
        mf.simulate(scen(pipelines=[{"stages": [{"kind": "kv_fetch", "past_tokens": 10, "tiers": [{"tier": "x", "hit": 1}]},
                                                {"kind": "llm", "pool": "llm"}]}]))


def test_hierarchical_topology_multi_hop_paths():
    # 10 TP8 clients on H100_nvl8: one node each, 8 nodes per rack -> clients 8, 9 in rack 1.
    clients = [{**LLM, "name": f"c{i}", "model": "llama-3.1-70b", "tp": 8} for i in range(10)]
    spec = scen(clients=clients, network={"topology": "H100_nvl8"}, workload=fixed(1, 1000, 2),
                pipelines=[{"stages": [{"kind": "prefill", "pool": "c0"}, {"kind": "decode", "pool": "c9"}]}])
    r = run(spec)
    topo = r["inputs"]["topo"]
    assert topo.node[:10] == list(range(10)) and topo.rack[9] == 1
    lat, res, nres = r["inputs"]["route_lat"], r["inputs"]["route_res"], r["inputs"]["route_nres"]
    assert nres[0, 1] == 2 and lat[0, 1] == pytest.approx(20e-6)     # same rack: two node uplinks
    assert nres[0, 9] == 4 and lat[0, 9] == pytest.approx(200e-6)    # across racks: 4 hops
    # the KV of 1000 tokens moves at the slowest hop: inter-rack 12.5 GB/s x 0.6
    _, _, _, p_exit, _ = stage_times(r, 0, 0)
    d_arrive = stage_times(r, 0, 1)[1]
    assert d_arrive - p_exit == pytest.approx(200e-6 + 1000 * 327680 / (12.5e9 * 0.6), rel=1e-9)


def test_post_filter_model_pass_on_an_llm_client():
    spec = scen(clients=[LLM, {"name": "guard", "model": "llama-3.1-8b", "device": "A100"}],
                links=[{"between": ["llm", "guard"], "link": "PCIe5-x16"}], workload=fixed(2, 300, 20),
                pipelines=[{"stages": [{"kind": "llm", "pool": "llm"}, {"kind": "post", "pool": "guard"}]}])
    r = run(spec)
    assert list(r["requests"]["computed_pf"]) == [300 + 320, 300 + 320]  # the filter reads prompt + answer
    assert all(r["requests"]["status"] == 3)


def test_reasoning_loop_with_verifier_stops_early():
    base = dict(clients=[LLM, {**LLM, "name": "rm", "device": "A100"}],
                links=[{"between": ["llm", "rm"], "link": "RDMA-400G"}], workload=fixed(200, 300, 50, rate=5.0))
    always = run(scen(pipelines=[{"stages": [{"kind": "reason", "pool": "llm", "steps": 4, "step_tokens": 64,
                                              "verifier": "rm"}, {"kind": "llm", "pool": "llm"}]}], **base))
    early = run(scen(pipelines=[{"stages": [{"kind": "reason", "pool": "llm", "steps": 4, "step_tokens": 64,
                                             "verifier": "rm", "stop_prob": 0.5}, {"kind": "llm", "pool": "llm"}]}], **base))
    # every request ends; output tokens = segments taken x 64 + the 50-token answer
    assert all(always["requests"]["status"] == 3) and all(early["requests"]["status"] == 3)
    assert set(always["requests"]["generated"]) == {4 * 64 + 50}
    gen = early["requests"]["generated"]
    assert set(gen) <= {k * 64 + 50 for k in range(1, 5)}
    # geometric(0.5) capped at 4: mean segments 1.875
    assert np.mean((gen - 50) / 64) == pytest.approx(1.875, abs=0.25)
    # the verifier sees the context so far: prompt + segments (+1 output token)
    ins = always["inputs"]
    vs = [s for s in range(ins["st_off"][0], ins["st_off"][1]) if ins["st_pool"][s] == ins["st_pool"][ins["st_off"][0] + 1]]
    assert list(ins["st_prompt"][vs]) == [300 + 64 * k for k in range(1, 5)]


def hash_kv_scenario(capacity_blocks, n=40, tiers=1):
    kvb = 131072
    tier_defs = [{"name": f"t{k}", "tier": {"preset": "ref-DRAM", "capacity_GB": capacity_blocks * 512 * kvb / 1e9,
                                            "bandwidth_GBps": 100.0, "latency_us": 10.0},
                  "link": {"preset": "PCIe5-x16", "bandwidth_GBps": 1000.0, "latency_us": 2.0}} for k in range(tiers)]
    return scen(tiers=tier_defs,
                workload={"num_requests": n, "arrival": {"process": "uniform", "rate_rps": 2.0},
                          "input": {"dist": "fixed", "value": 2100}, "output": {"dist": "fixed", "value": 4},
                          "prefix_tokens": 2048, "prefix_groups": 4},
                pipelines=[{"stages": [{"kind": "kv_fetch", "use_hashes": True,
                                        "tiers": [{"tier": f"t{k}", "hit": 0.0} for k in range(tiers)]},
                                       {"kind": "llm", "pool": "llm"}]}])


def test_kv_store_hits_emerge_from_capacity_and_lru():
    # 4 groups share a 2048-token prefix (4 blocks of 512); every prompt adds its own 5th block
    big = run(hash_kv_scenario(10_000))
    small = run(hash_kv_scenario(6))        # room for one group's prefix (+ a block), not four
    two_tier = run(hash_kv_scenario(6, tiers=2))  # evictions fall into a second tier
    c_big = big["requests"]["computed_pf"]
    # with room for everything, only the first request of each group computes its prefix
    assert int((c_big > 100).sum()) == 4
    assert sorted(set(c_big)) == [2100 - 2048, 2100]
    c_small = small["requests"]["computed_pf"]
    assert int((c_small > 100).sum()) > 4               # LRU thrash: prefixes evicted and recomputed
    assert int((two_tier["requests"]["computed_pf"] > 100).sum()) < int((c_small > 100).sum())
    # a hit reads exactly the 4 matched blocks: lookup 10 us + link 2 us + 2048 x 128 KiB / 100 GB/s
    k = int(np.flatnonzero(c_big < 100)[0])
    ready, arrive, _, exit_, _ = stage_times(big, k, 0)
    assert exit_ - ready == pytest.approx(12e-6 + 2048 * 131072 / 100e9, rel=1e-9)


def test_drain_time_router_prefers_the_faster_client():
    # same queue lengths, but an H200 drains memory-bound decodes faster than an A100
    spec = scen(clients=[{**LLM, "name": "slow", "device": "A100"}, {**LLM, "name": "fast", "device": "H200"}],
                workload=fixed(60, 500, 200, rate=20.0),
                pipelines=[{"stages": [{"kind": "llm", "pool": ["slow", "fast"], "routing": "least_drain_time"}]}])
    r = run(spec)
    served = np.array([stage_times(r, i, 0)[4] for i in range(60)])
    assert (served == 1).sum() > (served == 0).sum()


def test_retrieval_and_kv_fetch_on_one_dram_slow_each_other():
    # the retrieval index reads and the KV fetches share the host DRAM tier's bandwidth
    def spec(shared, with_kv):
        srv = {"name": "ret", "kind": "retrieval", "device": "SPR", "dim": 128, "centroids": 65536, "probes": 50,
               "pq_m": 32, "vectors_per_list": 5000, "top_k": 20, "max_batch": 1}
        if shared:
            srv["memory_resource"] = "dram"
        tier = {"name": "dram", "tier": {"preset": "ref-DRAM", "bandwidth_GBps": 20.0, "latency_us": 0.0},
                "link": {"preset": "PCIe5-x16", "bandwidth_GBps": 1000.0, "latency_us": 0.0}}
        pipes = [{"name": "rag", "weight": 1, "stages": [{"kind": "retrieve", "pool": "ret", "docs": 1, "doc_tokens": 10},
                                                         {"kind": "llm", "pool": "llm"}]}]
        if with_kv:
            pipes.append({"name": "kv", "weight": 1, "stages": [
                {"kind": "kv_fetch", "past_tokens": 8000, "tiers": [{"tier": "dram", "hit": 1.0}]},
                {"kind": "llm", "pool": "llm"}]})
        return scen(servers=[srv], tiers=[tier], pipelines=pipes, workload=fixed(40, 50, 2, rate=20.0))

    def mean_retrieval(r):
        ins, st = r["inputs"], r["stages"]
        m = ins["st_kind"] == 5  # K_RETRIEVE
        return np.nanmean((st["exit"] - st["sched"])[m])

    alone = mean_retrieval(run(spec(True, False)))
    contended = mean_retrieval(run(spec(True, True)))
    private = mean_retrieval(run(spec(False, True)))
    assert contended > 1.2 * alone
    assert private < contended
