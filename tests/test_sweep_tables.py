"""A sweep of a multi-client scenario keeps the per-client, per-stage and per-resource variables a
single run has, along the sweep's dims; every point's values are those of a single run of that
point's scenario (an independent path: ``simulate``), and labels a point lacks are NaN."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from mistfast.results import pipeline_summary, table_vars
from mistfast.runner import run_pipeline, run_points
from mistfast.scenario import any_point, build_requests, simulate
from mistfast.specs import parse_scenario
from mistfast.sweep import _stable_key, parse_sweep, point_doc, run_sweep
from mistfast.variables import REGISTRY, check_dataset

PD = {
    "simulation": {"horizon_s": 60.0, "seed": 3},
    "slo": {"ttft_ms": 1000.0, "tpot_ms": 50.0},
    "workload": {"num_requests": 40, "arrival": {"process": "poisson", "rate_rps": 2.0},
                 "input": {"dist": "lognormal", "mean": 900, "std": 500, "max_tokens": 4096},
                 "output": {"dist": "lognormal", "mean": 80, "std": 50, "max_tokens": 512}},
    "clients": [{"name": "P", "model": "llama-3.1-8b", "device": "H100", "dp": 1,
                 "scheduler": {"batching": "chunked", "chunk_size": 2048}},
                {"name": "D", "model": "llama-3.1-8b", "device": "H100",
                 "scheduler": {"batching": "continuous"}}],
    "network": {"default_link": "NVLink4"},
    "pipelines": [{"name": "pd", "stages": [{"kind": "prefill", "pool": "P", "routing": "round_robin"},
                                            {"kind": "decode", "pool": "D", "routing": "least_kv"}]}],
}
TABLES = [n for n, v in REGISTRY.items() if v.dims in (("client",), ("stage_kind",), ("resource",))]


@pytest.fixture(scope="module")
def pd_sweep():
    # prefill replicas 1 or 2 (the client labels differ between points), two rates, and a device
    # that does not exist (an invalid point: NaN everywhere)
    spec = parse_sweep({"sweep": {"name": "pd", "seed": 4, "chunk_points": 3,
                                  "axes": {"clients[0].dp": [1, 2], "clients[1].device": ["H100", "NoSuchGPU"],
                                           "workload.arrival.rate_rps": [1.0, 4.0]}},
                        "scenario": PD})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = run_sweep(spec, scheduler="serial")
    return spec, ds


def test_pd_sweep_has_every_table_variable(pd_sweep):
    spec, ds = pd_sweep
    check_dataset(ds, spec.dims)
    for name in TABLES:
        assert name in ds, name
        assert ds[name].dims[:3] == spec.dims
    # the union of the points' instances, in order of first appearance
    assert list(ds.client.values) == ["P", "D", "P[0]", "P[1]"]
    assert "n_rejected_by_reason" in ds and "energy_J" in ds


def test_pd_sweep_points_equal_single_runs(pd_sweep):
    """Each valid point against its own pipeline run (same scenario, same seed sequence)."""
    spec, ds = pd_sweep
    for dp in (1, 2):
        for rate in (1.0, 4.0):
            doc, _ = point_doc(spec, (dp, "H100", rate))
            scen = parse_scenario(doc, base={})
            ss = np.random.SeedSequence([scen.simulation.seed, spec.seed, _stable_key(spec, (dp, "H100", rate))])
            run = run_pipeline(scen, build_requests(scen.workload, scen.simulation.horizon_s, ss), ss)
            data, labels = table_vars(scen, run)
            at = ds.sel(dp=dp, device="H100", rate_rps=rate)
            for name in TABLES:
                dim = REGISTRY[name].dims[0]
                got = at[name].sel({dim: labels[dim]}).values
                np.testing.assert_array_equal(got, data[name].astype(got.dtype), err_msg=name)
                rest = [x for x in ds[dim].values if x not in labels[dim]]
                assert np.isnan(at[name].sel({dim: rest}).values.astype(float)).all(), name
            assert float(at.energy_J) == float(pipeline_summary(scen, run)["energy_J"][0])


def test_pd_sweep_invalid_points_are_nan(pd_sweep):
    _, ds = pd_sweep
    bad = ds.sel(device="NoSuchGPU")
    assert (bad.status.values != 0).all()
    for name in TABLES:
        assert np.isnan(bad[name].values.astype(float)).all(), name


def test_single_run_and_sweep_point_agree_on_tables():
    """The sweep's per-point values equal ``simulate`` of the point (same seed: a sweep with no
    workload axis and seed 0 gives each point the scenario seed's stream)."""
    spec = parse_sweep({"sweep": {"name": "one", "seed": 0, "axes": {"clients[1].device": ["H100", "A100"]}},
                        "scenario": PD})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = run_sweep(spec, scheduler="serial")
    assert ds.client.values.tolist() == ["P", "D"]
    assert ds.resource.size >= 1
    for dev in ("H100", "A100"):
        doc, _ = point_doc(spec, (dev,))
        one = simulate(doc)
        at = ds.sel(device=dev)
        for name in TABLES:
            assert at[name].dims == one[name].dims
            assert list(at[one[name].dims[0]].values) == list(one[one[name].dims[0]].values)


def _point_run(spec, values):
    """A sweep point run on its own (its scenario, its seed sequence, the plain runner): its
    tables, their labels and its requests."""
    doc, _ = point_doc(spec, values)
    scen = parse_scenario(doc, base={})
    ss = np.random.SeedSequence([scen.simulation.seed, spec.seed, _stable_key(spec, values)])
    reqs = build_requests(scen.workload, scen.simulation.horizon_s, ss)
    pt = any_point(scen, ss, reqs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if scen.is_pipeline:
            return (*table_vars(scen, run_pipeline(scen, reqs, ss)), reqs)
        return (*run_points([pt], tables=True)["tables"][0], reqs)


RAG = {
    "simulation": {"horizon_s": 120.0, "seed": 7},
    "workload": {"num_requests": 30, "arrival": {"process": "poisson", "rate_rps": 1.0},
                 "input": {"dist": "lognormal", "mean": 600, "std": 300, "max_tokens": 2048},
                 "output": {"dist": "fixed", "value": 16}},
    "clients": [{"name": "llm", "model": "llama-3.1-8b", "device": "H100"},
                {"name": "embed", "model": "e5-base", "device": "A100", "scheduler": {"batching": "continuous"}}],
    "servers": [{"name": "ret", "kind": "retrieval", "device": "Grace"}],
    "links": [{"between": ["ret", "llm"], "link": "PCIe4-x4"}],
    "pipelines": [{"name": "rag", "stages": [{"kind": "embed", "pool": "embed"},
                                             {"kind": "retrieve", "pool": "ret", "docs": 4, "doc_tokens": 256},
                                             {"kind": "llm", "pool": "llm"}]}],
}


def test_rag_sweep_has_tables_equal_to_single_runs():
    """A RAG sweep over the LLM's replicas and the embedder's device: every table variable along
    the sweep dims, each point's values those of ``simulate`` of its scenario, and the bytes over
    the retrieval link by hand: the LLM stage's prompt (query + 4 x 256 retrieved tokens) as int32
    token ids, once per request."""
    spec = parse_sweep({"sweep": {"name": "rag", "seed": 0, "axes": {"clients[0].dp": [1, 2],
                                                                    "clients[1].device": ["A100", "H100"]}},
                        "scenario": RAG})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = run_sweep(spec, scheduler="serial")
    check_dataset(ds, spec.dims)
    assert list(ds.client.values) == ["llm", "embed", "ret", "llm[0]", "llm[1]"]
    assert "link:ret-llm" in list(ds.resource.values)
    kinds = list(ds.stage_kind.values)
    for dp in (1, 2):
        for dev in ("A100", "H100"):
            data, labels, reqs = _point_run(spec, (dp, dev))
            at = ds.sel(dp=dp, device=dev)
            for name in TABLES:
                dim = REGISTRY[name].dims[0]
                np.testing.assert_array_equal(at[name].sel({dim: labels[dim]}).values,
                                              data[name].astype(float), err_msg=f"{name} dp={dp} {dev}")
            n = len(reqs)
            for kind in ("encode", "retrieve", "llm"):
                assert int(at.stage_count[kinds.index(kind)]) == n
            want = 4.0 * (reqs.input_tokens + 4 * 256).sum()
            # the kernel integrates rate x time between events: equal up to that sum's rounding
            assert float(at.resource_bytes.sel(resource="link:ret-llm")) == pytest.approx(want, rel=1e-8)
            llm = ["llm"] if dp == 1 else ["llm[0]", "llm[1]"]
            assert int(at.client_served.sel(client="ret")) == n
            assert at.client_steps.sel(client=llm).values.min() > 0


def test_single_client_sweep_has_tables_of_its_replicas():
    """A single-client sweep over dp: its replicas are the client labels (as a one-stage pipeline
    has them), each point equal to ``simulate`` of its scenario, absent replicas NaN."""
    doc = {"simulation": {"horizon_s": 30.0, "seed": 2},
           "workload": {"num_requests": 40, "arrival": {"process": "poisson", "rate_rps": 3.0}},
           "clients": [{"name": "solo", "model": "llama-3.1-8b", "device": "H100"}]}
    spec = parse_sweep({"sweep": {"name": "solo", "seed": 0, "axes": {"clients[0].dp": [1, 2]}}, "scenario": doc})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = run_sweep(spec, scheduler="serial")
    check_dataset(ds, spec.dims)
    assert list(ds.client.values) == ["solo", "solo[0]", "solo[1]"]
    assert list(ds.resource.values) == ["net:solo"]   # two replicas of one entry: the default network
    for dp in (1, 2):
        data, labels, _ = _point_run(spec, (dp,))
        at = ds.sel(dp=dp)
        for name in TABLES:
            dim = REGISTRY[name].dims[0]
            np.testing.assert_array_equal(at[name].sel({dim: labels[dim]}).values,
                                          data[name].astype(float), err_msg=f"{name} dp={dp}")
        # the replicas' energies add up to the point's
        assert float(at.client_energy_J.sum()) == pytest.approx(float(at.energy_J), rel=1e-12)
    assert np.isnan(ds.client_steps.sel(dp=1, client=["solo[0]", "solo[1]"]).values).all()
    assert np.isnan(ds.client_steps.sel(dp=2, client="solo").values)
