"""Private vs shared KV stores (TierSpec.group_size): one tier instance per group of replicas,
favourite-client routing restricted to the group, hand-checked fetch times. The feature lives in
the lowering (mistfast/pipeline.py); the kernel sees more tier instances and sub-pools."""
from __future__ import annotations

import numpy as np
import pytest

from mistfast.pipeline import run_pipeline
from mistfast.scenario import build_requests
from mistfast.specs import SpecError, parse_scenario

KV_BYTES_8B = 32 * 8 * 128 * 2 * 2      # Llama-3.1-8B bf16: layers x kv heads x head dim x (K, V) x 2 B
PAST = 1000                              # tokens fetched per request
TIER_GBPS = 1.0                          # the tier port binds (the link is 100x faster)
FETCH_S = PAST * KV_BYTES_8B / (TIER_GBPS * 1e9)   # one fetch alone on an instance: 0.131072 s


def scenario(group_size=None, dp=2, n=4, hit=1.0, tiers_extra=None, arrival=None, stages_extra=()):
    tier = {"name": "store", "tier": "slow", "link": "fat"}
    if group_size is not None:
        tier["group_size"] = group_size
    return parse_scenario({
        "catalog": {"memory_tiers": {"slow": {"kind": "dram", "capacity_GB": 1000.0, "bandwidth_GBps": TIER_GBPS,
                                              "latency_us": 0.0, "source": "test"}},
                    "links": {"fat": {"bandwidth_GBps": 100.0, "latency_us": 0.0, "efficiency": 1.0,
                                      "source": "test"}}},
        "simulation": {"seed": 1},
        "workload": {"num_requests": n, "arrival": arrival or {"process": "offline"},
                     "input": {"dist": "fixed", "value": 16}, "output": {"dist": "fixed", "value": 2}},
        "clients": [{"name": "llm", "model": "llama-3.1-8b", "device": "H100", "dp": dp}],
        "tiers": [tier] + list(tiers_extra or []),
        "pipelines": [{"name": "kv", "stages": [
            {"kind": "kv_fetch", "past_tokens": PAST, "tiers": [{"tier": "store", "hit": hit}]},
            {"kind": "llm", "pool": "llm", "routing": "least_prefill_tokens"}, *stages_extra]}],
    })


def run(scen, seed=5):
    ss = np.random.SeedSequence(seed)
    out = run_pipeline(scen, build_requests(scen.workload, scen.simulation.horizon_s, ss), ss)
    ins, st = out["inputs"], out["stages"]
    first = ins["st_off"][:-1]           # the kv_fetch stage of each request
    return dict(topo=ins["topo"], tier=ins["st_tier"][first], fetch_end=st["exit"][first],
                llm_client=st["client"][first + 1], status=out["requests"]["status"])


def test_kv_bytes_constant_matches_the_model():
    assert scenario().clients[0].kv_bytes_per_token() == KV_BYTES_8B


def test_shared_store_four_fetches_share_one_port():
    r = run(scenario(None))
    assert r["topo"].res_names[:2] == ["tier:store", "tierlink:store"]
    # four equal fetches from t = 0 on one 1 GB/s port (processor sharing): all end at 4 x 0.131 s
    np.testing.assert_allclose(r["fetch_end"], 4 * FETCH_S, rtol=1e-9)


def test_private_stores_one_instance_per_client_hand_checked_times():
    r = run(scenario(1))
    names = r["topo"].res_names
    assert names[:4] == ["tier:store[0]", "tier:store[1]", "tierlink:store[0]", "tierlink:store[1]"]
    # each request reads its favourite's own store; k requests on an instance end at k x 0.131 s
    k = np.bincount(r["tier"], minlength=2)
    np.testing.assert_allclose(r["fetch_end"], k[r["tier"]] * FETCH_S, rtol=1e-9)
    assert (r["llm_client"] == r["tier"]).all()     # served only by the store's own client


def test_group_stores_restrict_routing_to_the_group():
    r = run(scenario(2, dp=4, n=400, arrival={"process": "poisson", "rate_rps": 2.0}))
    assert len(r["topo"].tier_groups["store"]) == 2
    assert (r["llm_client"] // 2 == r["tier"]).all()
    counts = np.bincount(r["tier"], minlength=2)
    assert (counts > 150).all(), counts             # favourites uniform over the 4 clients: ~200 per group
    assert (r["status"] == 3).all()


def test_misses_are_not_restricted():
    r = run(scenario(1, dp=4, n=400, hit=0.5, arrival={"process": "poisson", "rate_rps": 2.0}))
    hit = r["tier"] >= 0
    assert 120 < hit.sum() < 280
    assert (r["llm_client"][hit] == r["tier"][hit]).all()
    # a miss recomputes anywhere: the router's choice over the whole pool, not a store, decides
    assert len(set(r["llm_client"][~hit].tolist())) > 1


def test_group_covering_the_pool_is_the_shared_store():
    a, b = run(scenario(None, dp=2)), run(scenario(2, dp=2))
    np.testing.assert_array_equal(a["fetch_end"], b["fetch_end"])
    np.testing.assert_array_equal(a["llm_client"], b["llm_client"])


def test_last_group_may_be_short():
    r = run(scenario(2, dp=3, n=300, arrival={"process": "poisson", "rate_rps": 2.0}))
    assert len(r["topo"].tier_groups["store"]) == 2      # replicas {0, 1} and {2}
    assert (r["llm_client"] // 2 == r["tier"]).all()


def test_grouped_tier_in_hash_mode_needs_prefix_hashes():
    sc = parse_scenario({
        "workload": {"num_requests": 4},
        "clients": [{"name": "llm", "model": "llama-3.1-8b", "device": "H100", "dp": 2}],
        "tiers": [{"name": "store", "tier": "kvstore-B-dram", "link": "kvlink-B", "group_size": 1}],
        "pipelines": [{"name": "kv", "stages": [
            {"kind": "kv_fetch", "use_hashes": True, "tiers": [{"tier": "store", "hit": 1.0}]},
            {"kind": "llm", "pool": "llm"}]}],
    })
    with pytest.raises(SpecError, match=r"pipelines\[kv\]\.stages\[0\]: use_hashes with a grouped tier needs prefix-block hashes"):
        run(sc)


def test_grouped_tier_feeding_pools_of_two_sizes_is_refused():
    sc = parse_scenario({
        "clients": [{"name": "a", "model": "llama-3.1-8b", "device": "H100", "dp": 2},
                    {"name": "b", "model": "llama-3.1-8b", "device": "H100", "dp": 3}],
        "tiers": [{"name": "store", "tier": "kvstore-B-dram", "link": "kvlink-B", "group_size": 1}],
        "pipelines": [
            {"name": "x", "stages": [{"kind": "kv_fetch", "past_tokens": 10, "tiers": [{"tier": "store", "hit": 1.0}]},
                                     {"kind": "llm", "pool": "a"}]},
            {"name": "y", "stages": [{"kind": "kv_fetch", "past_tokens": 10, "tiers": [{"tier": "store", "hit": 1.0}]},
                                     {"kind": "llm", "pool": "b"}]}],
    })
    with pytest.raises(SpecError, match=r"pipelines\[y\]\.stages\[0\]\.tiers\[0\]\.tier = 'store'.*2 replicas, this stage 3"):
        run(sc)


def test_shared_tier_may_feed_pools_of_two_sizes():
    sc = parse_scenario({
        "workload": {"num_requests": 20},
        "clients": [{"name": "a", "model": "llama-3.1-8b", "device": "H100", "dp": 2},
                    {"name": "b", "model": "llama-3.1-8b", "device": "H100", "dp": 3}],
        "tiers": [{"name": "store", "tier": "kvstore-B-dram", "link": "kvlink-B"}],
        "pipelines": [
            {"name": "x", "stages": [{"kind": "kv_fetch", "past_tokens": 10, "tiers": [{"tier": "store", "hit": 1.0}]},
                                     {"kind": "llm", "pool": "a"}]},
            {"name": "y", "stages": [{"kind": "kv_fetch", "past_tokens": 10, "tiers": [{"tier": "store", "hit": 1.0}]},
                                     {"kind": "llm", "pool": "b"}]}],
    })
    assert (run(sc)["status"] == 3).all()


def test_group_size_must_be_positive():
    with pytest.raises(SpecError, match=r"tiers\[0\]\.group_size"):
        scenario(0)


def hash_scenario(group_size, dp=2, n=4, groups=1, rate=0.1):
    tier = {"name": "store", "tier": "slow", "link": "fat"}
    if group_size is not None:
        tier["group_size"] = group_size
    return parse_scenario({
        "catalog": {"memory_tiers": {"slow": {"kind": "dram", "capacity_GB": 1000.0, "bandwidth_GBps": TIER_GBPS,
                                              "latency_us": 0.0, "source": "test"}},
                    "links": {"fat": {"bandwidth_GBps": 100.0, "latency_us": 0.0, "efficiency": 1.0,
                                      "source": "test"}}},
        "simulation": {"seed": 1},
        "workload": {"num_requests": n, "arrival": {"process": "uniform", "rate_rps": rate},
                     "input": {"dist": "fixed", "value": 2100}, "output": {"dist": "fixed", "value": 2},
                     "prefix_tokens": 2048, "prefix_groups": groups},
        "clients": [{"name": "llm", "model": "llama-3.1-8b", "device": "H100", "dp": dp}],
        "tiers": [tier],
        "pipelines": [{"name": "kv", "stages": [
            {"kind": "kv_fetch", "use_hashes": True, "tiers": [{"tier": "store", "hit": 1.0}]},
            {"kind": "llm", "pool": "llm", "routing": "round_robin"}]}],
    })


def run_stages(scen, seed=5):
    ss = np.random.SeedSequence(seed)
    out = run_pipeline(scen, build_requests(scen.workload, scen.simulation.horizon_s, ss), ss)
    ins, st = out["inputs"], out["stages"]
    first = ins["st_off"][:-1]
    return dict(topo=ins["topo"], fetch_s=st["exit"][first] - st["ready"][first], client=st["client"][first + 1],
                chain=-2 - ins["st_tier"][first], chains=ins["topo"].chains, status=out["requests"]["status"])


@pytest.mark.parametrize("group_size", [None, 1])
def test_hash_mode_private_store_serves_the_users_repeat_requests(group_size):
    # one shared prefix (one user): the first request misses (nothing moves), the next three read
    # the 2,048-token prefix (4 blocks of 512) = 2,048 x 131,072 B at 1 GB/s = 0.268 s each
    r = run_stages(hash_scenario(group_size))
    np.testing.assert_allclose(r["fetch_s"], [0.0] + [2048 * KV_BYTES_8B / 1e9] * 3, rtol=1e-9)
    if group_size == 1:
        # private: every request of the user goes to its favourite client, whose store holds the KV
        assert len(set(r["client"].tolist())) == 1
        assert len(r["topo"].tier_groups["store"]) == 2 and len(set(r["chain"].tolist())) == 1
    else:
        assert len(set(r["client"].tolist())) == 2   # round robin over both clients, one shared store


def test_hash_mode_users_spread_over_private_stores():
    r = run_stages(hash_scenario(1, dp=4, n=200, groups=40, rate=2.0))
    inst = np.array([r["chains"][c][0] for c in r["chain"]])
    assert (r["client"] == inst).all()                 # served where its store is
    assert len(set(r["client"].tolist())) == 4          # 40 users spread over the 4 clients
    assert (r["status"] == 3).all()
