"""The per-client, per-stage and per-resource tables of many single-client points, built at once
(``results.stacked_point_tables``, what sweeps and single runs use), equal those built point by
point through a one-stage pipeline's formulas (``point_tables`` below -> ``table_vars``), bit for bit: replicas
(dp 1-3, so differing client and resource labels), a device without a power figure (NaN energy),
a network topology, overload (requests that never finish or wait) and an invalid point."""
from __future__ import annotations

import warnings

import numpy as np

from mistfast.kernels import cluster as CL
from mistfast.kernels import engine as E
from mistfast.lowering import Point, Topology
from mistfast.results import table_vars
from mistfast.runner import run_kernels, run_points
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


def point_tables(pt, cstats: np.ndarray, end_s: float, r: dict):
    """The twin: a single-client point's tables through its one-stage pipeline's formulas
    (``table_vars``): ``cstats`` its replicas' statistics (replica order), ``end_s`` the run's
    end, ``r`` its per-request outputs. Its one stage is an LLM stage that requests enter at
    arrival (no transfer); no bytes cross a resource."""
    topo = Topology(pt.scenario)
    topo.routes()   # creates the network resources a one-stage pipeline of these replicas has
    finished = r["status"] == E.FINISHED
    stages = {"ready": r["arrival"], "arrive": r["arrival"], "sched": r["t_first_sched"],
              "exit": np.where(finished, r["t_finish"], np.nan)}
    run = {"inputs": {"topo": topo, "st_kind": np.full(r["status"].size, CL.K_LLM), "res_cap": np.array(topo.res_cap)},
           "cstats": cstats, "end": end_s, "stages": stages, "res_bytes": np.zeros(len(topo.res_cap))}
    return table_vars(pt.scenario, run)


def _one_by_one(points):
    """Each point's tables through the twin, from the kernel outputs gathered per point (a
    point's end: its latest replica's)."""
    kr = run_kernels(points)
    end = np.zeros(len(points))
    np.maximum.at(end, kr.owner, kr.row_end)
    out = []
    for q, pt in enumerate(points):
        rows = np.flatnonzero(kr.owner == q)
        a, z = kr.pt_off[q], kr.pt_off[q + 1]
        out.append(point_tables(pt, kr.cstats[rows], float(end[q]),
                                {k: kr.req[k][a:z] for k in ("status", "arrival", "t_first_sched", "t_finish")}))
    return out


def _same_tables(points):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        one_by_one = _one_by_one(points)
        stacked = run_points(points, tables="stacked")["table_parts"]
        per_point = run_points(points, tables=True)["tables"]
    for (data, labels), (own, own_labels) in zip(one_by_one, per_point):
        assert own_labels == labels and set(own) == set(data)
        for name, values in data.items():
            np.testing.assert_array_equal(_bits(own[name]), _bits(values), err_msg=name)
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
