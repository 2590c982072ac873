"""A single client is a one-stage pipeline, in the output too.

The same scenario is written twice: as a single client (the batched single-client path:
``lowering.lower_points`` + ``kernels.cluster.simulate_points``) and as an explicit one-stage
``[[pipelines]]`` on that client with round-robin routing (the multi-client path:
``lowering.lower_pipeline`` + ``simulate_cluster``). Round robin over replicas that never
interact (open loop) is decided up front by the first and as requests arrive by the second, so
the two are the same model computed by two independent code paths: every variable, every
coordinate and the per-request ones must agree bit for bit, for dp = 1, 2 and 4 replicas. In a
closed loop the replicas interact (users return to the pool) and the single client runs as its
one-stage pipeline; the routing is checked against a hand-worked example."""
from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest

from mistfast.scenario import simulate
from mistfast.variables import REGISTRY, check_dataset

BASE = {
    "simulation": {"horizon_s": 40.0, "seed": 5, "per_request": True},
    "metrics": {"quantiles": [0.5, 0.95]},
    "workload": {"num_requests": 160, "arrival": {"process": "poisson", "rate_rps": 5.0},
                 "input": {"dist": "lognormal", "mean": 900, "std": 500, "max_tokens": 4096},
                 "output": {"dist": "lognormal", "mean": 120, "std": 60, "max_tokens": 512}},
    "clients": [{"name": "llm", "model": "llama-3.1-8b", "device": "H100",
                 "scheduler": {"batching": "chunked", "chunk_size": 1024}}],
}
ONE_STAGE = [{"name": "one", "stages": [{"kind": "llm", "pool": "llm", "routing": "round_robin"}]}]
TABLES = [n for n, v in REGISTRY.items() if v.dims in (("client",), ("stage_kind",), ("resource",))]


def both(doc: dict, dp: int):
    single = copy.deepcopy(doc)
    single["clients"][0]["dp"] = dp
    pipe = copy.deepcopy(single)
    pipe["pipelines"] = ONE_STAGE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return simulate(single), simulate(pipe)


def assert_same(a, b):
    assert sorted(a.data_vars) == sorted(b.data_vars)
    assert sorted(a.coords) == sorted(b.coords)
    for k in a.coords:
        np.testing.assert_array_equal(a[k].values, b[k].values, err_msg=f"coordinate {k}")
    for k in a.data_vars:
        assert a[k].dims == b[k].dims, k
        np.testing.assert_array_equal(a[k].values, b[k].values, err_msg=k)
        assert a[k].attrs == b[k].attrs, k


@pytest.mark.parametrize("dp", [1, 2, 4])
def test_single_client_equals_its_one_stage_pipeline(dp):
    single, pipe = both(BASE, dp)
    check_dataset(single)
    for name in TABLES + ["req_class", "req_replica"]:
        assert name in single, name
    # the replicas as instances: the spec entry's name, indexed when there are several
    names = ["llm"] if dp == 1 else [f"llm[{i}]" for i in range(dp)]
    assert list(single.client.values) == names
    assert_same(single, pipe)
    # round robin: request i goes to replica i mod dp (every request arrives before the horizon)
    assert (single.req_status.values != 0).all()
    np.testing.assert_array_equal(single.req_replica.values, np.arange(single.sizes["request"]) % dp)


def test_prefix_cache_and_mist_metrics_agree_too():
    """Prefix caching (per-replica caches) and MIST's metric definitions, dp = 2."""
    doc = copy.deepcopy(BASE)
    doc["workload"].update(prefix_tokens=1024, prefix_groups=3)
    doc["clients"][0]["scheduler"].update(prefix_caching=True)
    doc["simulation"]["metrics"] = "mist"
    single, pipe = both(doc, 2)
    assert float(single.prefix_hit_rate) > 0
    assert_same(single, pipe)


def test_single_client_tables_by_hand():
    """The per-client table of a single client against its own summary: replicas' energies add
    up to the run's energy, their steps to n_steps, and the one stage kind served every finished
    request with no transfer."""
    single, _ = both(BASE, 2)
    np.testing.assert_allclose(float(single.client_energy_J.sum()), float(single.energy_J), rtol=1e-12)
    assert int(single.client_steps.sum()) == int(single.n_steps)
    np.testing.assert_allclose(float(single.client_busy_fraction.mean()), float(single.busy_fraction), rtol=1e-12)
    llm = single.sel(stage_kind="llm")
    assert int(llm.stage_count) == int((single.req_status.values == 3).sum())   # 3: finished
    served = single.req_e2e_ms.notnull()
    np.testing.assert_allclose(float(llm.stage_queue_ms),
                               float(single.req_queue_ms.where(served).mean()), rtol=1e-12)
    assert float(llm.stage_transfer_ms) == 0.0
    others = single.drop_sel(stage_kind="llm")
    assert (others.stage_count.values == 0).all() and np.isnan(others.stage_service_ms.values).all()
    # two replicas of one group talk over the default network: a resource nothing crosses
    assert list(single.resource.values) == ["net:llm"]
    assert float(single.resource_bytes.sum()) == 0.0


def test_closed_loop_agrees_on_every_replica_count():
    """Closed loop: the users return to the pool, so the replicas interact and the single client
    runs as its one-stage pipeline; both agree bit for bit for 1, 2 and 4 replicas."""
    doc = copy.deepcopy(BASE)
    doc["workload"]["arrival"] = {"process": "closed_loop", "concurrency": 8, "think_time_s": 0.5}
    for dp in (1, 2, 4):
        single, pipe = both(doc, dp)
        assert_same(single, pipe)
        assert int(single.n_finished) == single.sizes["request"]


def test_closed_loop_routing_by_hand():
    """Three users on two replicas, no think time, identical requests (1,000 prompt and 50 output
    tokens). At t = 0 requests 0, 1, 2 arrive and round robin sends them to replicas 0, 1, 0; from
    then on request 3 + j arrives when the (j+1)-th earliest request finishes, and round robin keeps
    counting: the k-th request to arrive goes to replica k mod 2, whichever replica freed its user.
    Replica 1 (one request in its batch) finishes first, so request 3 arrives at request 1's finish,
    while requests 0 and 2 are still running: three users in flight, never four (splitting the
    users up front gave each replica ceil(3 / 2) = 2 users: request 3 arrived at t = 0)."""
    doc = copy.deepcopy(BASE)
    doc["workload"] = {"num_requests": 12, "arrival": {"process": "closed_loop", "concurrency": 3},
                       "input": {"dist": "fixed", "value": 1000}, "output": {"dist": "fixed", "value": 50}}
    single, pipe = both(doc, 2)
    assert_same(single, pipe)
    arrival, finish = single.req_arrival_s.values, single.req_finish_s.values
    assert (single.req_status.values == 3).all()   # 3: finished
    np.testing.assert_array_equal(arrival[:3], 0.0)
    np.testing.assert_array_equal(arrival[3:], np.sort(finish)[:len(arrival) - 3])
    assert finish[1] < min(finish[0], finish[2]) and arrival[3] == finish[1]
    order = np.argsort(arrival, kind="stable")
    np.testing.assert_array_equal(single.req_replica.values[order], np.arange(len(order)) % 2)
    in_flight = [((arrival <= t) & (finish > t)).sum() for t in np.unique(arrival)]
    assert max(in_flight) == 3


def test_kernel_kind_follows_the_split():
    """``mistfast run`` announces compilation of the kernels the scenario runs on: a closed loop over
    several replicas runs on the pipeline kernel, any other single client on the batched one."""
    from mistfast.quickrun import kernel_kind
    from mistfast.specs import parse_scenario

    def kind(process, dp):
        doc = copy.deepcopy(BASE)
        doc["clients"][0]["dp"] = dp
        doc["workload"]["arrival"] = ({"process": "closed_loop", "concurrency": 4} if process == "closed"
                                      else {"process": "poisson", "rate_rps": 5.0})
        return kernel_kind(parse_scenario(doc))
    assert [kind("open", 1), kind("open", 2), kind("closed", 1), kind("closed", 2)] == \
        ["single", "single", "single", "pipeline"]


def test_mixed_points_in_one_call_equal_each_alone():
    """``run_points`` over points split up front and points run as their one-stage pipeline (a
    closed loop over replicas) in one call: each point's summary, tables and per-request outputs
    are those of a call with that point alone (the gathering puts everything back in point order)."""
    from mistfast.runner import run_points
    from mistfast.scenario import scenario_point
    from mistfast.specs import parse_scenario

    def point(process, dp, seed):
        doc = copy.deepcopy(BASE)
        doc["clients"][0]["dp"] = dp
        doc["simulation"]["seed"] = seed
        doc["workload"]["num_requests"] = 60
        if process == "closed":
            doc["workload"]["arrival"] = {"process": "closed_loop", "concurrency": 5, "think_time_s": 0.2}
        return scenario_point(parse_scenario(doc))
    pts = [point("closed", 2, 1), point("open", 2, 2), point("closed", 1, 3), point("closed", 4, 4),
           point("open", 1, 5)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        together = run_points(pts, per_request=True, tables=True)
        alone = [run_points([p], per_request=True, tables=True) for p in pts]
    off = together["offsets"]
    for q, one in enumerate(alone):
        for k, v in one["summary"].items():
            np.testing.assert_array_equal(together["summary"][k][q], v[0], err_msg=f"{k} of point {q}")
        for k, v in one["requests"].items():
            np.testing.assert_array_equal(together["requests"][k][off[q]:off[q + 1]], v, err_msg=f"{k} of point {q}")
        data, labels = together["tables"][q]
        assert labels == one["tables"][0][1]
        for k, v in one["tables"][0][0].items():
            np.testing.assert_array_equal(data[k], v, err_msg=f"{k} of point {q}")
    # the closed loop over 4 replicas: every replica served, users never more than 5 in flight
    r = alone[3]["requests"]
    assert sorted(set(r["replica"].tolist())) == [0, 1, 2, 3]
    arr, fin = r["arrival"], r["t_finish"]
    assert max(((arr <= t) & (fin > t)).sum() for t in np.unique(arr[np.isfinite(arr)])) == 5
