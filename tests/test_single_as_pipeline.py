"""A single client is a one-stage pipeline, in the output too.

The same scenario is written twice: as a single client (the batched single-client path:
``lowering.lower_points`` + ``kernels.cluster.simulate_points``) and as an explicit one-stage
``[[pipelines]]`` on that client with round-robin routing (the multi-client path:
``lowering.lower_pipeline`` + ``simulate_cluster``). Round robin over replicas that never
interact is decided up front by the first and as requests arrive by the second, so the two are
the same model computed by two independent code paths: every variable, every coordinate and the
per-request ones must agree bit for bit, for dp = 1, 2 and 4 replicas."""
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


def test_closed_loop_agrees_with_one_replica_only():
    """Closed loop: with one replica the two paths agree bit for bit; with several, the single
    client keeps each user on its replica (users split up front) while the pipeline routes each
    returning user's request round robin, so the latencies differ (ARCHITECTURE.md, known
    departures). The request accounting agrees either way."""
    doc = copy.deepcopy(BASE)
    doc["workload"]["arrival"] = {"process": "closed_loop", "concurrency": 8, "think_time_s": 0.5}
    assert_same(*both(doc, 1))
    single, pipe = both(doc, 2)
    assert int(single.n_finished) == int(pipe.n_finished) == single.sizes["request"]
    assert float(single.ttft_mean_ms) != float(pipe.ttft_mean_ms)
