"""Part files pack their numeric arrays (mistfast/parts.py): what is written reads back bit for bit,
parts in the earlier one-array-per-variable layout still read, and the per-process requests cache
keeps an exact count of the requests it holds."""
from __future__ import annotations

import numpy as np
import pytest

from mistfast import parts as P
from mistfast import sweep as S
from mistfast.specs import SpecError


def _chunk_arrays(n: int = 5) -> dict:
    """Arrays like run_chunk's: 1-D and 2-D float64 (NaN with a payload, -0.0, inf), int8, int64,
    bool, float32, and text (object) columns, in a deliberately unsorted order."""
    rng = np.random.default_rng(7)
    odd_nan = np.array([0x7FF8_0000_0000_0123], np.uint64).view(np.float64)[0]
    ttft = rng.random(n)
    ttft[1], ttft[2], ttft[3] = odd_nan, -0.0, np.inf
    return {
        "ttft_p99_ms": ttft,
        "status": np.array([0, 1, 0, 0, 1], np.int8)[:n],
        "n_rejected": np.arange(n * 3, dtype=np.float64).reshape(n, 3) * 0.5,
        "reason": np.array(["", "does not fit", "", "", "x; y"][:n], dtype=object),
        "n_steps": np.arange(n, dtype=np.int64) * 7,
        "flag": np.arange(n) % 2 == 0,
        "in_preset": np.array(["a", "bb", "", "c", "d"][:n], dtype=object),
        "f32": np.linspace(0, 1, n, dtype=np.float32),
        "n_left_out": np.full((n, 3), np.nan),
    }


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def test_packed_part_reads_back_bit_for_bit(tmp_path):
    arrays = _chunk_arrays()
    path = tmp_path / P.part_name(3)
    entry = P.save_part(path, arrays, (3, 15, 20), "abc")
    assert entry["chunk"] == 3 and entry["bytes"] == path.stat().st_size
    assert sorted(entry["nan_vars"]) == ["n_left_out", "ttft_p99_ms"]
    got = P.read_part_columns(path, list(arrays), (3, 15, 20), "abc")
    for name, want in arrays.items():
        if want.dtype == object:
            assert got[name].dtype.kind == "U" and got[name].tolist() == want.tolist(), name
        else:
            assert _same_bits(np.ascontiguousarray(got[name]), want), name
    # a subset, in another order, reads the same
    sub = P.read_part_columns(path, ["n_rejected", "status"], (3, 15, 20), "abc")
    assert list(sub) == ["n_rejected", "status"] and _same_bits(np.ascontiguousarray(sub["n_rejected"]),
                                                               arrays["n_rejected"])
    # layout: every variable in the order given, with its dtype (text as object) and trailing shape
    layout = P.part_layout(path)
    assert list(layout) == list(arrays)
    assert layout["n_rejected"] == (np.dtype(np.float64), (3,))
    assert layout["reason"] == (np.dtype(object), ())
    assert layout["status"] == (np.dtype(np.int8), ())
    assert layout["flag"] == (np.dtype(bool), ())
    # fewer zip entries than variables: one per dtype (float64, int8, int64, bool, float32), one per
    # text column, plus the identity and the column table
    with np.load(path) as z:
        assert len(z.files) == 5 + 2 + 3


def test_packed_part_checks_its_identity(tmp_path):
    path = tmp_path / P.part_name(0)
    P.save_part(path, _chunk_arrays(), (0, 0, 5), "abc")
    with pytest.raises(SpecError, match="holds points 0..4 of another run, expected 5..9"):
        P.read_part_columns(path, ["status"], (0, 5, 10), "abc")
    with pytest.raises(SpecError, match="another run"):
        P.read_part_columns(path, ["status"], (0, 0, 5), "other")


def test_parts_in_the_earlier_layout_still_read(tmp_path):
    """A part written one array per variable (before the packing) reads as before."""
    arrays = _chunk_arrays()
    path = tmp_path / P.part_name(1)
    legacy = {n: (v.astype(str) if v.dtype == object else v) for n, v in arrays.items()}
    np.savez(path, **legacy, __chunk__=np.array([1, 5, 10], np.int64), __sweep__=np.array("h"))
    got = P.read_part_columns(path, ["ttft_p99_ms", "reason", "n_rejected"], (1, 5, 10), "h")
    assert _same_bits(got["ttft_p99_ms"], arrays["ttft_p99_ms"])
    assert got["reason"].tolist() == arrays["reason"].tolist()
    layout = P.part_layout(path)
    assert set(layout) == set(arrays) and layout["n_rejected"] == (np.dtype(np.float64), (3,))


def test_requests_cache_counts_what_it_holds(monkeypatch):
    """The running count equals the requests held, through misses, hits and evictions."""
    from tests.test_sweep import make_spec
    monkeypatch.setattr(S, "_REQUESTS_CACHE_MAX", 70)   # room for two of its 30-request workloads
    S._REQUESTS_CACHE.clear()
    spec = make_spec(axes={"workload.arrival.rate_rps": [1, 2, 4, 8]})
    for v in S.point_values(spec) * 2:
        S.build_point(spec, v)
        held = sum(len(r) for r, _ in S._REQUESTS_CACHE.values())
        assert S._REQUESTS_HELD == held <= 70
    assert len(S._REQUESTS_CACHE) == 2
    S._REQUESTS_CACHE.clear()


def test_unwatched_local_cluster_turns_the_worker_profiler_off():
    import dask
    import distributed  # noqa: F401  (loads distributed's configuration defaults)
    before = dask.config.get("distributed.worker.profile.enabled")
    with S._quiet_local_cluster(watched=False):
        assert dask.config.get("distributed.worker.profile.enabled") is False
        assert dask.config.get("distributed.worker.memory.monitor-interval") == "500ms"
    assert dask.config.get("distributed.worker.profile.enabled") == before
    with S._quiet_local_cluster(watched=True):
        assert dask.config.get("distributed.worker.profile.enabled") == before


def _labels_of_every_point(spec) -> dict | None:
    """Independent twin of sweep_tables.table_labels: parse every point of the sweep, build its
    topology and take the union of its instance and resource names in order of first appearance."""
    from mistfast.kernels import cluster as CL
    from mistfast.lowering import Topology
    from mistfast.specs import parse_scenario
    names: dict[str, dict] = {"client": {}, "resource": {}}
    valid = False
    for values in S.point_values(spec):
        try:
            topo = Topology(parse_scenario(S.point_doc(spec, values)[0], base={}))
        except SpecError:
            continue
        valid = True
        topo.routes()
        for dim, got in (("client", topo.names), ("resource", topo.res_names)):
            for nm in got:
                names[dim].setdefault(nm, None)
    return {"client": list(names["client"]), "stage_kind": list(CL.STAGE_NAMES),
            "resource": list(names["resource"])} if valid else None


PD_BASE = {
    "simulation": {"seed": 3},
    "workload": {"num_requests": 20, "arrival": {"process": "poisson", "rate_rps": 2.0}},
    "clients": [{"name": "P", "model": "llama-3.1-8b", "device": "H100"},
                {"name": "D", "model": "llama-3.1-70b", "device": "H100", "tp": 4}],
    "pipelines": [{"name": "pd", "stages": [{"kind": "prefill", "pool": "P"}, {"kind": "decode", "pool": "D"}]}],
}


@pytest.mark.parametrize("axes", [
    # the first device of D cannot hold the 70B model at tp 1: the first points are invalid
    {"clients[1].tp": [1, 4], "clients[1].device": ["A100", "H200"], "clients[0].dp": [1, 2],
     "clients[0].scheduler.batching": ["continuous", "chunked"]},
    {"clients[1].device": ["NoSuchGPU", "H100"], "clients[0].dp": [2, 1], "workload.arrival.rate_rps": [1.0, 3.0]},
    {"clients[1].device": ["NoSuchGPU"], "clients[0].scheduler.max_batch_size": [8, 16]},   # no valid point
])
def test_table_label_scan_parses_one_point_per_set_of_names(axes):
    """The scan skips points that differ from a parsed valid one only in a client's device or
    scheduler, and finds the labels a scan of every point finds."""
    from mistfast import sweep_tables as ST
    spec = S.parse_sweep({"sweep": {"name": "labels", "seed": 1, "chunk_points": 4, "axes": axes},
                          "scenario": PD_BASE})
    ST._LABELS.pop(S._spec_hash(spec), None)
    assert S.sweep_table_labels(spec) == _labels_of_every_point(spec)


def test_names_free_paths():
    from mistfast.sweep_tables import _names_free
    assert _names_free("clients[0].device") and _names_free("clients[2].scheduler.batching")
    assert not _names_free("clients[0].dp") and not _names_free("clients[0].tp")
    assert not _names_free("servers[0].device") and not _names_free("clients[0].devices")
