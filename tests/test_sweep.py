"""Sweeps (mistfast.sweep): every scheduler gives the same bits, resume recomputes only missing
chunks, a killed worker loses no point, invalid points are recorded and the sweep goes on, spec
mistakes are reported before any work, seeds come from coordinates, derived quantities, zip and
sample modes, and the netCDF round trip.

The sweeps are tiny (tens of points of 30 requests) so the file runs in well under two minutes
on two cores; the numba kernels are loaded from numba's on-disk cache.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import mistfast.sweep as S
from mistfast.specs import SpecError
from mistfast.sweep import load_sweep, parse_sweep, run_sweep
from mistfast.variables import REGISTRY, check_dataset

BASE = {
    "simulation": {"seed": 5},
    "slo": {"ttft_ms": 500.0, "tpot_ms": 50.0},
    "workload": {"num_requests": 30, "arrival": {"process": "poisson"},
                 "input": {"dist": "lognormal", "mean": 800, "std": 600, "max_tokens": 4096},
                 "output": {"dist": "lognormal", "mean": 120, "std": 100, "max_tokens": 1024}},
    "clients": [{"name": "llm", "model": "llama-3.1-8b", "device": "H100", "tp": 1,
                 "scheduler": {"batching": "chunked", "chunk_size": 512, "max_batched_tokens": 4096}}],
}

# 2 devices x 3 TP x 3 batching x 2 rates = 36 points; tp = 3 does not divide Llama-8B's 32 heads,
# so 12 points are invalid and the NaN positions are part of every comparison.
MAIN_AXES = {
    "clients[0].device": ["H100", "A100"],
    "clients[0].tp": [1, 2, 3],
    "clients[0].scheduler.batching": ["static", "continuous", "chunked"],
    "workload.arrival.rate_rps": [4, 16],
}


def make_spec(axes=None, scenario=None, **sweep) -> S.SweepSpec:
    sw = {"seed": 3, "chunk_points": 5, "axes": MAIN_AXES if axes is None else axes, **sweep}
    return parse_sweep({"sweep": sw, "scenario": BASE if scenario is None else scenario})


def assert_bit_identical(a: xr.Dataset, b: xr.Dataset) -> None:
    """Same variables, coords, attrs, dtypes and the very same bytes of every float (NaN included)."""
    xr.testing.assert_identical(a, b)
    for name in a.variables:
        x, y = a[name].values, b[name].values
        assert x.dtype == y.dtype, name
        if x.dtype.kind == "f":
            assert x.tobytes() == y.tobytes(), f"{name}: values differ in their bits"
        else:
            assert np.array_equal(x, y), name


def assert_same_values(a: xr.Dataset, b: xr.Dataset) -> None:
    """For a Dataset read back from netCDF: same variables, shapes and values (NaN positions
    included); strings may come back as fixed-width instead of object arrays."""
    assert set(a.variables) == set(b.variables)
    for name in a.variables:
        x, y = a[name].values, b[name].values
        assert x.shape == y.shape, name
        if x.dtype.kind == "f":
            assert np.array_equal(x, y, equal_nan=True), name
        else:
            assert x.tolist() == y.tolist(), name


def toml_text(doc: dict) -> str:
    """A minimal TOML writer for test documents: one table per top-level key, inline values."""
    def val(v):
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{json.dumps(k)} = {val(x)}" for k, x in v.items()) + " }"
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(val(x) for x in v) + "]"
        if isinstance(v, bool):
            return "true" if v else "false"
        return json.dumps(v) if isinstance(v, str) else repr(v)
    return "".join(f"[{table}]\n" + "".join(f"{json.dumps(k)} = {val(v)}\n" for k, v in body.items())
                   for table, body in doc.items())


def data_only(ds: xr.Dataset) -> xr.Dataset:
    return ds.drop_attrs() if hasattr(ds, "drop_attrs") else ds.copy().assign_attrs({})


@pytest.fixture(scope="module")
def spec():
    return make_spec()


@pytest.fixture(scope="module")
def reference(spec):
    """The serial, one-chunk-per-5-points run every other run is compared with."""
    return run_sweep(spec, scheduler="serial")


@pytest.fixture(scope="module")
def cluster_client():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None,
                                  silence_logs=40) as cluster, distributed.Client(cluster) as client:
        yield client


def count_chunks(monkeypatch) -> list[tuple[int, int]]:
    """Record every (start, stop) that mistfast.sweep.run_chunk computes in this process."""
    calls: list[tuple[int, int]] = []
    orig = S.run_chunk

    def counting(spec, start, stop):
        calls.append((start, stop))
        return orig(spec, start, stop)

    monkeypatch.setattr(S, "run_chunk", counting)
    return calls


# ----------------------------------------------------------------------------- schedulers
def test_reference_shape(reference, spec):
    # a single client's table dims: its one instance, every stage kind, no resource
    assert reference.sizes == {"device": 2, "tp": 3, "batching": 3, "rate_rps": 2, "reject_reason": 4,
                               "left_out_reason": 3, "client": 1, "stage_kind": 8, "resource": 0}
    assert reference.attrs["n_points"] == 36 and reference.attrs["n_invalid"] == 12
    assert (reference.status.sel(tp=3) == 1).all() and (reference.status.sel(tp=[1, 2]) == 0).all()
    assert np.isfinite(reference.ttft_p99_ms.sel(tp=[1, 2])).all()


@pytest.mark.parametrize("chunk_points", [1, 7, 36, 1000])
def test_chunking_is_bit_identical(spec, reference, chunk_points):
    assert_bit_identical(run_sweep(spec, scheduler="serial", chunk_points=chunk_points), reference)


def test_threads_bit_identical(spec, reference):
    assert_bit_identical(run_sweep(spec, scheduler="threads", workers=2, chunk_points=3), reference)


def test_processes_bit_identical(spec, reference, tmp_path):
    assert_bit_identical(run_sweep(spec, scheduler="processes", workers=2), reference)
    # and through the parts directory (results come back as files, not arrays)
    assert_bit_identical(run_sweep(spec, tmp_path / "p.nc", scheduler="processes", workers=2), reference)


def test_local_cluster_bit_identical(spec, reference, cluster_client, tmp_path):
    assert_bit_identical(run_sweep(spec, client=cluster_client), reference)
    assert_bit_identical(run_sweep(spec, tmp_path / "c.nc", client=cluster_client, chunk_points=4), reference)


@pytest.mark.parametrize("to_disk", [True, False], ids=["parts-on-disk", "results-in-worker-memory"])
def test_killed_worker_loses_no_point(spec, reference, cluster_client, tmp_path, to_disk):
    """The worker that picks up the chunk starting at point 15 dies (os._exit) on its first
    attempt; the nanny restarts it, the scheduler reruns the chunk (and any finished result that
    was only in the dead worker's memory), every point is present."""
    marker = str(tmp_path / "killed")
    kill_start = 15  # chunk 3 of 8 (chunk_points = 5)

    def install_killer(marker, kill_start):  # runs in each worker process (pickled by value)
        import os as _os

        import mistfast.sweep as _S
        orig = _S.run_chunk

        def run_chunk(spec, start, stop):
            if start == kill_start and not _os.path.exists(marker):
                open(marker, "w").close()
                _os._exit(1)
            return orig(spec, start, stop)

        _S.run_chunk = run_chunk
        return _os.getpid()

    before = set(cluster_client.run(install_killer, marker, kill_start).values())
    out = tmp_path / "killed.nc" if to_disk else None
    ds = run_sweep(spec, out, client=cluster_client)
    assert os.path.exists(marker), "the killer never fired: the test did not kill a worker"
    cluster_client.wait_for_workers(2, timeout=60)
    after = set(cluster_client.run(os.getpid).values())
    assert len(before - after) == 1, "exactly one worker process should have been replaced"
    assert int(ds.status.size) == 36 and ds.attrs["n_points"] == 36
    assert_bit_identical(ds, reference)
    if to_disk:
        assert sorted(p.name for p in Path(str(out) + ".parts").glob("chunk-*.npz")) == \
            [f"chunk-{k:06d}.npz" for k in range(8)]
        assert_same_values(S.open_sweep(out).load(), ds)


# ----------------------------------------------------------------------------- resume
def _mtimes(parts: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in parts.glob("chunk-*.npz")}


def test_resume_recomputes_only_deleted_chunks(spec, reference, tmp_path, monkeypatch):
    out = tmp_path / "r.nc"
    calls = count_chunks(monkeypatch)
    run_sweep(spec, out, scheduler="serial")
    assert len(calls) == 8
    first = xr.load_dataset(out, engine="netcdf4")
    parts = Path(str(out) + ".parts")
    for k in (1, 6):
        (parts / f"chunk-{k:06d}.npz").unlink()
    kept = _mtimes(parts)
    calls.clear()
    ds = run_sweep(spec, out, scheduler="serial", resume=True)
    assert calls == [(5, 10), (30, 35)]
    assert {k: v for k, v in _mtimes(parts).items() if k in kept} == kept  # untouched
    assert_bit_identical(ds, reference)
    assert_bit_identical(xr.load_dataset(out, engine="netcdf4"), first)  # the rewritten file too


def test_resume_after_crash(spec, reference, tmp_path, monkeypatch):
    out = tmp_path / "crash.nc"
    orig_task = S._task

    def crashing(spec_, k, a, z, part, h):
        if a == 20:
            raise RuntimeError("simulated crash in chunk 4")
        return orig_task(spec_, k, a, z, part, h)

    monkeypatch.setattr(S, "_task", crashing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_sweep(spec, out, scheduler="serial")
    assert not out.exists()
    parts = Path(str(out) + ".parts")
    written = _mtimes(parts)
    assert sorted(written) == [f"chunk-{k:06d}.npz" for k in range(4)]
    monkeypatch.setattr(S, "_task", orig_task)
    calls = count_chunks(monkeypatch)
    ds = run_sweep(spec, out, scheduler="serial", resume=True)
    assert calls == [(20, 25), (25, 30), (30, 35), (35, 36)]
    assert {k: v for k, v in _mtimes(parts).items() if k in written} == written
    assert_bit_identical(ds, reference)
    assert out.exists()


def test_resume_with_threads_and_nothing_missing(spec, reference, tmp_path, monkeypatch):
    out = tmp_path / "t.nc"
    run_sweep(spec, out, scheduler="threads", workers=2)
    calls = count_chunks(monkeypatch)
    assert_bit_identical(run_sweep(spec, out, scheduler="threads", workers=2, resume=True), reference)
    assert calls == []


def test_resume_with_a_different_spec_is_refused(spec, tmp_path, monkeypatch):
    out = tmp_path / "d.nc"
    run_sweep(spec, out, scheduler="serial")
    other = make_spec(axes={**MAIN_AXES, "workload.arrival.rate_rps": [4, 17]})
    calls = count_chunks(monkeypatch)
    with pytest.raises(SpecError, match="different sweep spec"):
        run_sweep(other, out, scheduler="serial", resume=True)
    with pytest.raises(SpecError, match="different sweep spec"):  # other chunk boundaries
        run_sweep(spec, out, scheduler="serial", resume=True, chunk_points=6)
    assert calls == []
    # without --resume the old parts are discarded and everything is recomputed
    run_sweep(other, out, scheduler="serial")
    assert len(calls) == 8


# ----------------------------------------------------------------------------- invalid points
def test_invalid_points_have_status_reason_and_nan():
    spec = make_spec(axes={"clients[0].model": ["llama-3.1-8b", "llama-3.1-70b"], "clients[0].tp": [1, 3]})
    ds = run_sweep(spec)
    st = ds.status.to_series().to_dict()
    assert st == {("llama-3.1-8b", 1): 0, ("llama-3.1-8b", 3): 1, ("llama-3.1-70b", 1): 1, ("llama-3.1-70b", 3): 1}
    assert ds.reason.sel(model="llama-3.1-8b", tp=1).item() == ""
    no_fit = ds.reason.sel(model="llama-3.1-70b", tp=1).item()
    assert "does not fit" in no_fit and "llama-3.1-70b" in no_fit and "clients[0]" in no_fit
    for model in ("llama-3.1-8b", "llama-3.1-70b"):
        r = ds.reason.sel(model=model, tp=3).item()
        assert "clients[0].tp = 3" in r and "divide" in r and "num_heads" in r
    bad = ds.status != 0
    for name, da in ds.data_vars.items():
        if name in ("status", "reason"):
            continue
        assert da.dtype.kind == "f", f"{name}: an int variable with invalid points must be float (NaN)"
        assert np.isnan(da.values[bad.broadcast_like(da).values]).all(), name
    assert np.isfinite(ds.ttft_p99_ms.sel(model="llama-3.1-8b", tp=1))
    assert int(ds.n_finished.sel(model="llama-3.1-8b", tp=1)) == 30
    assert ds.attrs["n_invalid"] == 3


# ----------------------------------------------------------------------------- spec errors
_GOOD = {"clients[0].tp": [1, 2]}


@pytest.mark.parametrize("sweep, needles", [
    ({"axes": {"clients[0].devcie": ["H100"]}}, ["clients[0].devcie", "'devcie'", "device"]),
    ({"axes": {"workload.arival.rate_rps": [1, 2]}}, ["workload.arival.rate_rps", "'arival'", "arrival"]),
    ({"axes": {"clients[0].scheduler.batchng": ["static"]}}, ["clients[0].scheduler.batchng", "batching"]),
    ({"axes": {"clients[0].tp": []}}, ["clients[0].tp", "empty axis"]),
    ({"mode": "zip", "axes": {"clients[0].tp": [1, 2], "clients[0].device": ["H100"]}},
     ["zip", "same number of values", "tp=2", "device=1"]),
    ({"axes": _GOOD, "chunks": 4}, ["sweep.chunks", "unknown field", "chunk_points"]),
    ({"axes": _GOOD, "derived": {"clients[0].dp": "4 //"}}, ["clients[0].dp", "'4 //'", "not a valid expression"]),
    ({"axes": _GOOD, "derived": {"clients[0].dp": "4 // tpp"}}, ["clients[0].dp", "unknown name 'tpp'"]),
    ({"axes": _GOOD, "derived": {"clients[0].dp": "tp.real"}}, ["clients[0].dp", "unsupported expression"]),
    ({"axes": _GOOD, "derived": {"clients[0].dp": "__import__('os')"}}, ["clients[0].dp", "__import__"]),
    ({"axes": _GOOD, "derived": {"clients[0].dpp": "4 // tp"}}, ["clients[0].dpp", "'dpp'"]),
    ({"mode": "grid", "axes": _GOOD}, ["sweep.mode", "'grid'", "product"]),
    ({"mode": "sample", "axis": [{"path": "workload.arrival.rate_rps", "low": 1, "high": 4}]},
     ["sweep.samples", "samples >= 1"]),
    ({"axes": _GOOD, "chunk_points": 0}, ["chunk_points", ">= 1"]),
])
def test_spec_errors_before_any_work(tmp_path, monkeypatch, sweep, needles):
    path = tmp_path / "bad.toml"
    path.write_text(toml_text({"sweep": sweep, "scenario": BASE}))
    calls = count_chunks(monkeypatch)
    out = tmp_path / "bad.nc"
    with pytest.raises(SpecError) as err:
        run_sweep(path, out, scheduler="serial")
    msg = str(err.value)
    for n in needles:
        assert n in msg, f"{n!r} not in error message {msg!r}"
    assert calls == [] and not out.exists() and not Path(str(out) + ".parts").exists()


def test_scenario_typo_in_a_sweep_file(tmp_path):
    doc = {"sweep": {"axes": _GOOD}, "scenario": {**BASE, "workload": {**BASE["workload"], "num_request": 3}}}
    with pytest.raises(SpecError, match=r"workload\.num_request"):
        parse_sweep(doc)


def test_unknown_scheduler_is_a_spec_error(spec):
    with pytest.raises(SpecError, match="'proceses'"):
        run_sweep(spec, scheduler="proceses")


# ----------------------------------------------------------------------------- seeds
def test_adding_axis_values_keeps_existing_points():
    small = make_spec(axes={"clients[0].scheduler.batching": ["continuous", "chunked"],
                            "workload.arrival.rate_rps": [4, 16]})
    big = make_spec(axes={"clients[0].scheduler.batching": ["static", "continuous", "chunked"],
                          "workload.arrival.rate_rps": [4, 8, 16, 30]}, chunk_points=3)
    a, b = run_sweep(small), run_sweep(big)
    sub = b.sel(batching=["continuous", "chunked"], rate_rps=[4, 16])
    xr.testing.assert_equal(data_only(sub), data_only(a))
    assert sub.ttft_p99_ms.values.tobytes() == a.ttft_p99_ms.values.tobytes()
    # and different points really have different requests (the seed is per point)
    assert a.ttft_p99_ms.sel(batching="chunked", rate_rps=4) != a.ttft_p99_ms.sel(batching="chunked", rate_rps=16)


def test_sweep_seed_changes_results():
    a = run_sweep(make_spec(axes={"workload.arrival.rate_rps": [4, 16]}))
    b = run_sweep(make_spec(axes={"workload.arrival.rate_rps": [4, 16]}, seed=4))
    assert not np.array_equal(a.ttft_p99_ms.values, b.ttft_p99_ms.values)


def test_common_random_numbers_across_configurations():
    """Points differing only in hardware or scheduler simulate the same requests; a workload axis, a
    derived workload quantity or the sweep seed changes them. The per-process request cache gives
    the requests a fresh build gives."""
    spec = make_spec(axes={"clients[0].device": ["H100", "A100"], "clients[0].scheduler.batching": ["continuous", "chunked"],
                           "workload.arrival.rate_rps": [4, 16]})
    vals = S.point_values(spec, 0, spec.n_points)
    S._REQUESTS_CACHE.clear()
    pts = {v: S.build_point(spec, v)[0] for v in vals}
    same = [pts[("H100", "continuous", 4)], pts[("A100", "continuous", 4)], pts[("A100", "chunked", 4)]]
    for p in same[1:]:
        assert p.requests.equals(same[0].requests)
    assert not pts[("H100", "continuous", 16)].requests.equals(same[0].requests)
    # cache hit == fresh build (the cache holds 2 workloads here)
    assert len(S._REQUESTS_CACHE) == 2
    S._REQUESTS_CACHE.clear()
    fresh = S.build_point(spec, ("A100", "chunked", 16))[0]
    assert fresh.requests.equals(pts[("A100", "chunked", 16)].requests)
    other_seed = make_spec(axes={"clients[0].device": ["H100"], "workload.arrival.rate_rps": [4]}, seed=4)
    assert not S.build_point(other_seed, ("H100", 4))[0].requests.equals(same[0].requests)
    # a derived quantity that sets a workload field from a hardware axis is part of the seed key
    der = make_spec(axes={"clients[0].tp": [1, 2]}, derived={"workload.num_requests": "10 * tp"})
    a, b = (S.build_point(der, (tp,))[0] for tp in (1, 2))
    assert len(a.requests) == 10 and len(b.requests) == 20
    assert not np.array_equal(a.requests.arrival_s, b.requests.arrival_s[:10])


# ----------------------------------------------------------------------------- derived
def test_derived_quantity_lands_as_input_and_changes_results():
    axes = {"clients[0].tp": [1, 2], "workload.arrival.rate_rps": [16]}
    with_dp = run_sweep(make_spec(axes=axes, derived={"clients[0].dp": "4 // tp"}))
    plain = run_sweep(make_spec(axes=axes))
    assert "in_dp" in with_dp and "in_dp" not in plain
    assert with_dp.in_dp.dims == ("tp", "rate_rps")
    assert with_dp.in_dp.sel(rate_rps=16).values.tolist() == [4.0, 2.0]
    assert not np.array_equal(with_dp.cost_usd.values, plain.cost_usd.values)
    # an invalid point keeps its derived inputs (tp = 3 does not divide 32 heads; dp = 4 // 3 = 1)
    bad = run_sweep(make_spec(axes={"clients[0].tp": [3]}, derived={"clients[0].dp": "4 // tp"}))
    assert bad.status.item() == 1 and bad.in_dp.item() == 1.0
    assert not np.array_equal(with_dp.n_steps.values, plain.n_steps.values)
    # the derived point equals the same configuration written out by hand (same coordinates, same seed)
    base = {**BASE, "clients": [{**BASE["clients"][0], "dp": 4}]}
    by_hand = run_sweep(make_spec(axes={"clients[0].tp": [1], "workload.arrival.rate_rps": [16]}, scenario=base))
    xr.testing.assert_equal(data_only(with_dp.drop_vars("in_dp").sel(tp=[1])), data_only(by_hand))


def test_derived_chain_and_division_by_zero():
    spec = make_spec(axes={"clients[0].tp": [1, 2]},
                     derived={"workload.num_requests": "10 * (3 - tp)", "workload.arrival.rate_rps": "num_requests // (2 - tp)"})
    ds = run_sweep(spec)
    assert ds.in_num_requests.sel(tp=1).item() == 20
    assert np.isnan(ds.in_num_requests.sel(tp=2).item())  # the chain broke before it was stored
    assert ds.in_rate_rps.sel(tp=1).item() == 20
    assert int(ds.n_arrived.sel(tp=1)) == 20 and ds.status.sel(tp=1) == 0
    assert ds.status.sel(tp=2) == 1 and "divided by zero" in ds.reason.sel(tp=2).item()


# ----------------------------------------------------------------------------- zip / sample
def test_zip_mode_point_dimension(reference):
    spec = make_spec(axes={"clients[0].device": ["H100", "A100", "H100"], "clients[0].tp": [1, 2, 3],
                           "clients[0].scheduler.batching": ["chunked", "static", "continuous"],
                           "workload.arrival.rate_rps": [4, 16, 16]}, mode="zip", chunk_points=2)
    ds = run_sweep(spec)
    assert dict(ds.sizes) == {"point": 3, "reject_reason": 4, "left_out_reason": 3, "client": 1, "stage_kind": 8, "resource": 0}
    assert ds.ttft_p99_ms.dims == ("point",)
    assert ds.device.dims == ("point",) and list(ds.device.values) == ["H100", "A100", "H100"]
    assert list(ds.tp.values) == [1, 2, 3] and list(ds.status.values) == [0, 0, 1]
    # a point's seed depends only on its coordinates: zip points equal the product points
    for p in range(3):
        sel = {k: ds[k].values[p].item() for k in ("device", "tp", "batching", "rate_rps")}
        got = ds.isel(point=p).drop_vars(["point", "device", "tp", "batching", "rate_rps"])
        want = reference.sel(sel).drop_vars(["device", "tp", "batching", "rate_rps"])
        xr.testing.assert_equal(data_only(got), data_only(want))


def test_sample_mode_latin_hypercube():
    n = 8
    spec = make_spec(axes={"clients[0].scheduler.batching": ["continuous", "chunked"]}, mode="sample", samples=n,
                     axis=[{"name": "rate", "path": "workload.arrival.rate_rps", "low": 1.0, "high": 20.0, "log": True},
                           {"path": "workload.num_requests", "low": 10, "high": 40, "integer": True}],
                     chunk_points=3)
    ds = run_sweep(spec)
    assert dict(ds.sizes) == {"point": n, "reject_reason": 4, "left_out_reason": 3, "client": 1, "stage_kind": 8, "resource": 0}
    for c in ("batching", "rate", "num_requests"):
        assert ds[c].dims == ("point",)
    assert ds.rate.attrs["spec_path"] == "workload.arrival.rate_rps"
    r = ds.rate.values
    assert ((r >= 1.0) & (r <= 20.0)).all()
    # Latin hypercube: one sample in each of the n equal strata (log scale for a log axis)
    strata = np.floor((np.log(r) - np.log(1.0)) / (np.log(20.0) - np.log(1.0)) * n).astype(int)
    assert sorted(strata.tolist()) == list(range(n))
    assert ds.num_requests.dtype.kind == "i" and ((ds.num_requests >= 10) & (ds.num_requests <= 40)).all()
    assert (ds.n_arrived.values == ds.num_requests.values).all()
    assert (ds.status == 0).all()
    assert_bit_identical(run_sweep(spec, chunk_points=8), ds)
    assert_bit_identical(run_sweep(spec, scheduler="threads", workers=2, chunk_points=1), ds)


# ----------------------------------------------------------------------------- netCDF
def test_netcdf_round_trip_and_registry(spec, reference, tmp_path):
    out = tmp_path / "nc.nc"
    ds = run_sweep(spec, out)
    assert_bit_identical(ds, reference)
    check_dataset(ds, extra_dims=("device", "tp", "batching", "rate_rps"))
    back = S.open_sweep(out)   # reason decoded from its codes
    try:
        check_dataset(back, extra_dims=("device", "tp", "batching", "rate_rps"))
        assert_same_values(back, ds)
        for name, da in back.data_vars.items():
            if name in REGISTRY:
                assert da.attrs.get("units") == REGISTRY[name].units and da.attrs["long_name"], name
        assert back.ttft_p99_ms.attrs["units"] == "ms"
        assert back.device.attrs["spec_path"] == "clients[0].device"
        for k in ("mistfast_version", "sweep_spec_toml", "sweep_seed", "n_points", "slo_json"):
            assert k in back.attrs, k
        assert back.attrs["n_invalid"] == 12
    finally:
        back.close()


def test_small_test_sweep_file(tmp_path):
    """The tiny sweep shipped for the notebook: valid spec, every point valid, registry-clean."""
    spec = load_sweep(Path(__file__).resolve().parents[1] / "sweeps" / "small_test.toml")
    assert spec.n_points == 72
    ds = run_sweep(spec)
    assert (ds.status == 0).all()
    check_dataset(ds, extra_dims=spec.dims)
