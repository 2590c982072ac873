"""The per-client, per-stage and per-resource variables of a sweep's points.

Every run has them along ``client`` (instances: a single client's ``dp`` replicas too, as its
one-stage pipeline has them), ``stage_kind`` and ``resource`` (links and tier ports). A sweep puts
them after its own dims, so every point needs the same labels: the union, in order of first
appearance over the points, of each point's labels (a point without a client or resource has NaN
there; an invalid point has NaN everywhere). The labels are known before any point runs: they
follow from the topology, which only the non-workload axes can change, so one scenario per
distinct topology is parsed (cached per sweep and process).
"""
from __future__ import annotations

import numpy as np

from .kernels import cluster as CL
from .variables import REGISTRY

TABLE_DIMS = ("client", "stage_kind", "resource")
_LABELS: dict[str, dict[str, list] | None] = {}


def _topology_path(path: str) -> bool:
    """Can a field at ``path`` change the clients, servers, tiers, links or stages of a point?"""
    return path.split(".")[0].split("[")[0] not in ("workload", "simulation", "slo", "metrics")


def _names_free(path: str) -> bool:
    """Is ``path`` a client's device or scheduler setting? Those decide whether a point is valid
    (its memory fit), never which instances or resources it has: the topology's names come from the
    clients' names, dp, tp x pp (node packing), servers, tiers, links and network. Valid points
    that differ only there have the same labels, so the scan parses one of them."""
    head, _, rest = path.partition(".")
    return head.startswith("clients[") and rest.split(".")[0].split("[")[0] in ("device", "scheduler")


def table_labels(spec, key: str, point_values, point_doc) -> dict[str, list] | None:
    """Labels of the table dims over every point of ``spec`` (None: no point is valid).
    ``key``: the sweep's hash (the cache key); ``point_values(spec)`` and ``point_doc(spec, values)``
    enumerate the points and build their scenario documents (sweep.py's)."""
    if key in _LABELS:
        return _LABELS[key]
    from .lowering import Topology
    from .specs import SpecError, parse_scenario
    seen: set = set()
    named: set = set()   # keys of the labels a valid point has given already
    labels: dict[str, dict] = {"client": {}, "resource": {}}
    any_valid = False
    for values in point_values(spec):
        # derived expressions may read any axis: then every point is its own topology
        topo_key = values if spec.derived else tuple(v for a, v in zip(spec.axes, values) if _topology_path(a.path))
        rk = repr(topo_key)
        if rk in seen:
            continue
        seen.add(rk)
        nk = rk if spec.derived else repr(tuple(v for a, v in zip(spec.axes, values)
                                                if _topology_path(a.path) and not _names_free(a.path)))
        if nk in named:
            continue       # a valid point with the same labels was parsed: this one adds none
        try:
            doc, _ = point_doc(spec, values)
            scen = parse_scenario(doc, base={})
            topo = Topology(scen)
        except (SpecError, ZeroDivisionError):
            continue       # an invalid point: reported by the chunk that runs it
        any_valid = True
        named.add(nk)
        topo.routes()      # creates the network resources
        for dim, names in (("client", topo.names), ("resource", topo.res_names)):
            for nm in names:
                labels[dim].setdefault(nm, len(labels[dim]))
    out = None
    if any_valid:
        out = {"client": list(labels["client"]), "stage_kind": list(CL.STAGE_NAMES),
               "resource": list(labels["resource"])}
    _LABELS[key] = out
    return out


def prime_labels(key: str, labels: dict[str, list] | None) -> None:
    """Give this process the labels of sweep ``key`` that another process scanned (a driver
    sends them with the spec, so that each worker does not scan the points again)."""
    _LABELS.setdefault(key, labels)


def table_columns(labels: dict[str, list], n: int, parts) -> dict[str, np.ndarray]:
    """Columns (n points x labels) of every table variable, NaN where a point has no such label;
    ``parts``: (positions, summary) pairs of ``runner.summaries(..., tables=True)``."""
    index = {dim: {nm: i for i, nm in enumerate(names)} for dim, names in labels.items()}
    cols = {name: np.full((n, len(labels[v.dims[0]])), np.nan)
            for name, v in REGISTRY.items() if len(v.dims) == 1 and v.dims[0] in TABLE_DIMS}
    for rows_at, summ in parts:
        own = summ.get("_labels")
        if own is None:
            continue
        for name, col in cols.items():
            dim = REGISTRY[name].dims[0]
            where = [index[dim].get(nm, -1) for nm in own[dim]]
            if min(where, default=0) < 0:
                raise RuntimeError(f"sweep tables: {dim} labels {own[dim]} of a point are not among the sweep's "
                                   f"{labels[dim]} (a topology the label scan did not see)")
            col[np.ix_(rows_at, where)] = summ[name]
    return cols
