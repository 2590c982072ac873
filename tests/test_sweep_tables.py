"""A sweep of a multi-client scenario keeps the per-client, per-stage and per-resource variables a
single run has, along the sweep's dims; every point's values are those of a single run of that
point's scenario (an independent path: ``simulate``), and labels a point lacks are NaN."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from mistfast.results import pipeline_summary, table_vars
from mistfast.runner import run_pipeline
from mistfast.scenario import build_requests, simulate
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
