"""Streaming assembly and per-point counts of sweeps at scale (issue 15).

- The netCDF written block by block from the part files holds exactly what writing the
  in-memory Dataset gives (floats bit for bit, NaN and invalid points, strings, derived inputs),
  with blocks that cut across dimensions.
- ``n_left_out`` of every sweep point equals the single run's value for that point's scenario.
- The distributed driver keeps a bounded number of chunk tasks in flight.
"""
from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import mistfast as mf
import mistfast.sweep as S
from mistfast.sweep import parse_sweep, run_sweep
from tests.test_sweep import BASE, assert_bit_identical, make_spec

LLM = {"name": "llm", "model": "llama-3.1-8b", "device": "H100"}


def _open(path) -> xr.Dataset:
    with xr.open_dataset(path, engine="netcdf4") as ds:
        return ds.load()


def _derived_spec():
    """Invalid points (tp = 3), a text-valued derived input and a numeric one, 2 x 3 x 2 x 2."""
    return make_spec(axes={"clients[0].device": ["H100", "A100"], "clients[0].tp": [1, 2, 3],
                           "clients[0].scheduler.batching": ["continuous", "chunked"],
                           "workload.arrival.rate_rps": [4, 16]},
                     derived={"clients[0].scheduler.max_batch_size": "16 * tp",
                              "clients[1].device": "device"},
                     scenario={**BASE, "clients": BASE["clients"] + [
                         {"name": "spare", "model": "llama-3.1-8b", "device": "H100"}]})


@pytest.mark.parametrize("block_points", [5, 7, 100_000])
def test_streamed_file_equals_the_in_memory_write(tmp_path, monkeypatch, block_points):
    spec = make_spec(chunk_points=4)
    in_memory = run_sweep(spec)                      # no output: assembled from arrays in memory
    S.write_netcdf(in_memory, tmp_path / "mem.nc")   # xarray's own writer of that Dataset
    monkeypatch.setattr(S, "BLOCK_POINTS", block_points)  # blocks across several dims and parts
    returned = run_sweep(spec, tmp_path / "stream.nc")
    assert_bit_identical(returned, in_memory)
    assert_bit_identical(_open(tmp_path / "stream.nc"), _open(tmp_path / "mem.nc"))
    assert int(_open(tmp_path / "stream.nc").attrs["n_invalid"]) == 12


def test_streamed_file_with_derived_text_inputs_and_no_axes(tmp_path, monkeypatch):
    monkeypatch.setattr(S, "BLOCK_POINTS", 3)
    for k, spec in enumerate([_derived_spec(), make_spec(axes={})]):
        mem = run_sweep(spec)
        S.write_netcdf(mem, tmp_path / f"mem{k}.nc")
        assert_bit_identical(run_sweep(spec, tmp_path / f"s{k}.nc"), mem)
        assert_bit_identical(_open(tmp_path / f"s{k}.nc"), _open(tmp_path / f"mem{k}.nc"))


def test_large_sweeps_come_back_lazily_from_the_streamed_file(tmp_path, monkeypatch):
    spec = make_spec(chunk_points=6)
    mem = run_sweep(spec)
    monkeypatch.setattr(S, "LOAD_MAX_POINTS", 10)
    monkeypatch.setattr(S, "BLOCK_POINTS", 8)
    ds = run_sweep(spec, tmp_path / "big.nc")
    import netCDF4

    from mistfast import parts as P
    with netCDF4.Dataset(tmp_path / "big.nc") as nc:   # the file's chunks are the blocks' whole chunks
        assert tuple(nc.variables["ttft_p99_ms"].chunking()) == P.file_chunk_shape(spec.shape, 8)
        assert tuple(nc.variables["n_rejected_by_reason"].chunking()) == P.file_chunk_shape(spec.shape, 8) + (4,)
    try:
        assert ds.ttft_p99_ms.variable._in_memory is False
        assert np.array_equal(ds.ttft_p99_ms.values, mem.ttft_p99_ms.values, equal_nan=True)
        assert ds.reason.values.tolist() == mem.reason.values.tolist()
    finally:
        ds.close()


# ----------------------------------------------------------------------------- n_left_out
def _trace_sweep():
    # the sample trace, windowed and subsampled per point; tp = 3 makes invalid points
    return parse_sweep({"sweep": {"seed": 2, "chunk_points": 3, "axes": {
        "workload.trace.sample": [0.5, 0.9, 1.0], "workload.trace.start_s": [0.0, 5.0], "clients[0].tp": [1, 3]}},
        "scenario": {"clients": [LLM], "simulation": {"horizon_s": 100.0},
                     "workload": {"num_requests": 8,
                                  "trace": {"path": "samples:azure_sample.csv", "format": "azure"}}}})


def test_n_left_out_per_point_equals_the_single_run():
    spec = _trace_sweep()
    ds = run_sweep(spec)
    assert list(ds.left_out_reason.values) == ["outside_trace_window", "trace_sample", "num_requests"]
    checked = 0
    for vals in S.point_values(spec):
        sel = dict(zip(spec.dims, vals))
        got = ds.n_left_out.sel(sel).values
        if vals[2] == 3:   # an invalid point has no requests: NaN, like its other counts
            assert np.isnan(got).all() and int(ds.status.sel(sel)) == 1
            continue
        doc, _ = S.point_doc(spec, vals)
        with pytest.warns(UserWarning):
            single = mf.simulate(doc)
        assert got.tolist() == single.n_left_out.values.tolist(), sel
        checked += 1
    assert checked == 6
    # not all zero: the windows and samples do leave requests out (else the test proves nothing)
    assert np.nansum(ds.n_left_out.values[..., 0]) > 0 and np.nansum(ds.n_left_out.values[..., 1]) > 0


def test_n_left_out_is_zero_and_integer_for_synthetic_workloads():
    ds = run_sweep(make_spec(axes={"workload.arrival.rate_rps": [4, 16]}))
    assert ds.n_left_out.dtype == np.int64 and (ds.n_left_out == 0).all()
    assert ds.n_left_out.dims == ("rate_rps", "left_out_reason")


# ----------------------------------------------------------------------------- bounded scheduler load
def test_distributed_driver_keeps_a_bounded_window_of_chunks_in_flight(monkeypatch):
    distributed = pytest.importorskip("distributed")
    monkeypatch.setattr(S, "IN_FLIGHT_MIN", 3)
    monkeypatch.setattr(S, "IN_FLIGHT_PER_THREAD", 1)
    todo = [(k, 10 * k, 10 * k + 10, None) for k in range(40)]
    state = {"submitted": 0, "recorded": 0, "max_in_flight": 0}
    got: dict[int, int] = {}

    class Bar:
        def update(self, n):
            pass

    with distributed.Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=None) as client:
        def submit(k, a, z, part):
            state["submitted"] += 1
            state["max_in_flight"] = max(state["max_in_flight"], state["submitted"] - state["recorded"])
            return client.submit(sum, range(a, z), pure=False, key=f"window-test-{k}")

        def done(k, result):
            state["recorded"] += 1
            got[k] = result

        S._run_windowed(client, todo, done, Bar(), submit)
    assert got == {k: sum(range(10 * k, 10 * k + 10)) for k in range(40)}   # every chunk, once
    assert state["submitted"] == 40 and state["max_in_flight"] == 3          # max(3, 1 thread x 1)


# ----------------------------------------------------------------------------- file chunks
@pytest.mark.parametrize("shape, target, chunk", [
    ((5, 2, 5, 4, 5000), 16384, (1, 1, 1, 2, 5000)),   # 3 rows of 5,000 fit; 2 divides 4
    ((5, 2, 5, 4, 500), 16384, (1, 1, 5, 4, 500)),      # 10,000 points per index of dim 1: one per block
    ((10, 7, 1000), 4096, (1, 1, 1000)),                 # 4 rows of 1,000 fit, 7 is prime: 1 row (1,000 >= 512)
    ((10, 7, 100), 400, (1, 4, 100)),                    # 1 row = 100 points < 512: 4 rows, the edge sticks out
    ((9_999_991,), 16384, (16384,)),                     # a prime length: only the last chunk sticks out
    ((1_000_000,), 16384, (15625,)),                     # 15,625 divides 10^6
])
def test_file_chunks_tile_the_split_dim_and_blocks_write_whole_chunks(shape, target, chunk):
    from mistfast import parts as P
    assert P.file_chunk_shape(shape, target) == chunk
    grid = P.block_grid(shape, target)
    for d, (c, runs) in enumerate(zip(chunk, grid)):
        starts = np.concatenate([[0], np.cumsum(runs)[:-1]])
        assert all(a % c == 0 for a in starts), (d, c, runs[:3])   # every block starts on a chunk


def test_n_left_out_of_pipeline_points_equals_the_single_run():
    scenario = {"simulation": {"horizon_s": 100.0},
                "workload": {"num_requests": 6, "trace": {"path": "samples:azure_sample.csv", "format": "azure"}},
                "clients": [{"name": "llm", "model": "llama-3.1-8b", "device": "H100"}],
                "servers": [{"name": "pre", "kind": "cpu", "device": "Grace"}],
                "pipelines": [{"name": "p", "stages": [{"kind": "pre", "pool": "pre"}, {"kind": "llm", "pool": "llm"}]}]}
    spec = parse_sweep({"sweep": {"chunk_points": 2, "axes": {"workload.trace.sample": [0.5, 1.0]}},
                        "scenario": scenario})
    ds = run_sweep(spec)
    for v in (0.5, 1.0):
        doc, _ = S.point_doc(spec, (v,))
        with pytest.warns(UserWarning):
            single = mf.simulate(doc)
        assert ds.n_left_out.sel(sample=v).values.tolist() == single.n_left_out.values.tolist()
    assert ds.n_left_out.sel(sample=0.5, left_out_reason="trace_sample") > 0
