"""The per-client, per-stage and per-resource tables of many single-client points, built at once
(``results.stacked_point_tables``, what sweeps use), equal those built point by point through a
one-stage pipeline's formulas (``results.point_tables`` -> ``table_vars``), bit for bit: replicas
(dp 1-3, so differing client and resource labels), a device without a power figure (NaN energy),
a network topology, overload (requests that never finish or wait) and an invalid point."""
from __future__ import annotations

import warnings

import numpy as np

from mistfast.lowering import Point
from mistfast.runner import run_points
from mistfast.sweep import build_point, parse_sweep, point_values

SCENARIO = {
    "simulation": {"seed": 5, "horizon_s": 30.0},
    "slo": {"ttft_ms": 300.0, "tpot_ms": 30.0},
    "workload": {"num_requests": 150, "arrival": {"process": "poisson"}},
    "clients": [{"name": "llm", "model": "llama-3.1-8b", "device": "H100",
                 "scheduler": {"batching": "chunked", "chunk_size": 512, "max_batched_tokens": 8192}}],
}


def _points(axes: dict, scenario=SCENARIO) -> list[Point]:
    spec = parse_sweep({"sweep": {"name": "tables", "seed": 2, "axes": axes}, "scenario": scenario})
    pts = [build_point(spec, v)[0] for v in point_values(spec)]
    return [p for p in pts if isinstance(p, Point)]


def _bits(a) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(a, np.float64)).view(np.int64)


def _same_tables(points):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        one_by_one = run_points(points, tables=True)["tables"]
        stacked = run_points(points, tables="stacked")["table_parts"]
    seen = np.zeros(len(points), int)
    for at, summ in stacked:
        labels = summ["_labels"]
        for row, q in enumerate(at):
            data, own = one_by_one[q]
            assert own == labels
            assert set(data) == set(summ) - {"_labels"}
            for name, values in data.items():
                np.testing.assert_array_equal(_bits(summ[name][row]), _bits(values), err_msg=f"{name} of point {q}")
            seen[q] += 1
    assert (seen == 1).all()      # every point in exactly one label group
    return stacked


def test_replicas_power_and_overload_bit_for_bit():
    pts = _points({"clients[0].dp": [1, 2, 3], "clients[0].device": ["H100", "TPU-v5p"],
                   "workload.arrival.rate_rps": [2.0, 60.0]})
    assert len(pts) == 12
    stacked = _same_tables(pts)
    # three label sets (dp 1, 2, 3), the dp > 1 ones with a shared network link between replicas
    assert [len(s["_labels"]["client"]) for _, s in stacked] == [1, 2, 3]
    assert [s["_labels"]["resource"] for _, s in stacked][1:] == [["net:llm"], ["net:llm"]]
    tpu = [s["client_energy_J"] for _, s in stacked]
    # each group's points: H100 at both rates, then TPU-v5p (no power figure: NaN energy)
    assert all(np.isfinite(t[:2]).all() and np.isnan(t[2:]).all() for t in tpu)


def test_network_topology_and_mixed_points_bit_for_bit():
    scen = {**SCENARIO, "network": {"topology": "H100_nvl8"}}
    pts = _points({"clients[0].dp": [1, 4], "clients[0].tp": [1, 2, 3], "workload.arrival.rate_rps": [5.0]}, scen)
    assert len(pts) == 4          # tp = 3 does not divide the heads: invalid, not a point
    _same_tables(pts[::-1])       # label sets in any order


def test_points_where_nothing_finished_have_nan_means():
    pts = _points({"simulation.horizon_s": [0.05, 0.5], "workload.arrival.rate_rps": [2.0, 400.0]})
    (_, summ), = _same_tables(pts)
    llm = summ["_labels"]["stage_kind"].index("llm")
    count = summ["stage_count"][:, llm]
    assert (count == 0).any() and (count > 0).any()
    assert np.isnan(summ["stage_queue_ms"][count == 0, llm]).all()
    assert (summ["stage_transfer_ms"][count > 0, llm] == 0.0).all()    # requests enter at arrival


def test_closed_loop_replicas_run_as_pipelines_bit_for_bit():
    # closed loops over several replicas run as one-stage pipelines (lowering.splits_up_front),
    # gathered with the split points into one KernelRun: their stacked tables must still equal
    # the point-by-point ones
    scen = {**SCENARIO, "workload": {"num_requests": 80, "arrival": {"process": "closed_loop", "concurrency": 6}}}
    pts = _points({"clients[0].dp": [1, 2, 3]}, scen)
    assert len(pts) == 3
    stacked = _same_tables(pts)
    assert sorted(len(s["_labels"]["client"]) for _, s in stacked) == [1, 2, 3]
