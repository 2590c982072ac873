"""Parameter sweeps: a base scenario plus axes over any spec field, run as chunks of many points
per task (serially, on Dask's threaded/process schedulers or on a dask.distributed cluster),
streamed to disk chunk by chunk, resumable, and assembled into one xarray Dataset.

Sweep file layout (TOML)::

    [sweep]
    seed = 1
    mode = "product"            # product | zip | sample
    chunk_points = 128          # points per task
    [sweep.axes]                # dotted spec paths -> values (dim name = last path component)
    "clients[0].device" = ["H100", "H200"]
    [[sweep.axis]]              # or named axes
    name = "rate"
    path = "workload.arrival.rate_rps"
    values = [1, 2, 4]          # sample mode: low/high/log/integer instead of values
    [sweep.derived]             # named derived quantities, expressions over axis names
    "clients[0].dp" = "8 // tp"
    [scenario]                  # the base scenario (same format as a scenario file)
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from . import __version__
from . import parts as P
from .lowering import PipelinePoint, Point
from .runner import summaries
from .scenario import LEFT_OUT_REASONS, any_point, build_requests_report
from .specs import DEFAULT_SCENARIO, SpecError, deep_merge, load_toml, parse_scenario, resolve_spec_paths, set_path
from .sweepspec import _axis_name, _check_expr, check_path, safe_eval  # noqa: F401 (check_path: API)
from .variables import REGISTRY, add_coord_attrs, coord_attrs, global_attrs, slo_attrs, variable

# ----------------------------------------------------------------------------- spec
MODES = ("product", "zip", "sample", "refine")


@dataclass(frozen=True)
class Axis:
    name: str
    path: str
    values: tuple = ()
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False


@dataclass(frozen=True)
class SweepSpec:
    base: dict
    axes: tuple[Axis, ...]
    derived: tuple[tuple[str, str, str], ...] = ()   # (name, path, expression)
    mode: str = "product"
    samples: int = 0
    method: str = "lhs"
    seed: int = 0
    chunk_points: int = 128
    text: str = ""
    name: str = "sweep"
    refine: tuple = ()   # mode "refine": (axis name, constraints, rounds); see mistfast/refine.py

    @property
    def shape(self) -> tuple[int, ...]:
        if self.mode in ("product", "refine"):  # refine: the coarse grid
            return tuple(len(a.values) for a in self.axes)
        if self.mode == "zip":
            return (len(self.axes[0].values),)
        return (self.samples,)

    @property
    def n_points(self) -> int:
        return int(np.prod(self.shape)) if self.axes else 1

    @property
    def dims(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.axes) if self.mode in ("product", "refine") else ("point",)


def parse_sweep(doc: dict, text: str = "", name: str = "sweep") -> SweepSpec:
    """Validate a sweep document; every problem is reported before any work starts."""
    from .sweepspec import check_sweep_doc
    check_sweep_doc(doc)   # types, paths, values, expressions and size, in the scenarios' error style
    if "sweep" not in doc:
        raise SpecError(["sweep: missing [sweep] table (a sweep file needs [sweep] plus [scenario])"])
    sw = dict(doc["sweep"])
    base = doc.get("scenario", {k: v for k, v in doc.items() if k != "sweep"})
    problems: list[str] = []
    allowed = {"seed", "mode", "samples", "method", "chunk_points", "axes", "axis", "derived", "name", "refine"}
    for k in sw:
        if k not in allowed:
            problems.append(f"sweep.{k}: unknown field; allowed: {', '.join(sorted(allowed))}")
    mode = sw.get("mode", "product")
    if mode not in MODES:
        problems.append(f"sweep.mode = {mode!r}: allowed: {', '.join(MODES)}")
    axes: list[Axis] = []
    for path, vals in (sw.get("axes") or {}).items():
        axes.append(Axis(_axis_name(path), path, tuple(vals) if isinstance(vals, list) else (vals,)))
    for i, t in enumerate(sw.get("axis") or []):
        if "path" not in t:
            problems.append(f"sweep.axis[{i}].path: required field is missing")
            continue
        ok = {"name", "path", "values", "low", "high", "log", "integer"}
        for k in t:
            if k not in ok:
                problems.append(f"sweep.axis[{i}].{k}: unknown field; allowed: {', '.join(sorted(ok))}")
        axes.append(Axis(t.get("name") or _axis_name(t["path"]), t["path"], tuple(t.get("values", ())),
                         t.get("low"), t.get("high"), bool(t.get("log", False)), bool(t.get("integer", False))))
    names = [a.name for a in axes]
    for nm in set(names):
        if names.count(nm) > 1:
            problems.append(f"sweep axes: two axes are named {nm!r}; give one an explicit name with [[sweep.axis]]")
    samples = int(sw.get("samples", 0))
    for a in axes:
        try:
            check_path(a.path)
        except SpecError as e:
            problems.extend(f"sweep axis {a.name!r}: {p}" for p in e.problems)
        if a.path.startswith("metrics."):
            problems.append(f"sweep axis {a.name!r} ({a.path}): the quantiles are a dimension of the results; "
                            "set them in [scenario.metrics], not on an axis")
        if mode == "sample" and not a.values:
            if a.low is None or a.high is None or not a.high > a.low:
                problems.append(f"sweep axis {a.name!r}: sample mode needs values = [...] or low < high")
            elif a.log and a.low <= 0:
                problems.append(f"sweep axis {a.name!r}: low = {a.low}: a log axis needs low > 0")
        elif not a.values:
            problems.append(f"sweep axis {a.name!r} ({a.path}): empty axis; give at least one value")
    if mode == "zip" and axes and len({len(a.values) for a in axes}) > 1:
        problems.append("sweep.mode = 'zip': every axis needs the same number of values, got "
                        + ", ".join(f"{a.name}={len(a.values)}" for a in axes))
    if mode == "sample" and samples < 1:
        problems.append(f"sweep.samples = {samples}: sample mode needs samples >= 1")
    derived = []
    for path, expr in (sw.get("derived") or {}).items():
        try:
            check_path(path)
        except SpecError as e:
            problems.extend(f"sweep.derived {path!r}: {p}" for p in e.problems)
        try:
            _check_expr(str(expr), names + [d[0] for d in derived])
        except SpecError as e:
            problems.extend(f"sweep.derived {path!r}: {p}" for p in e.problems)
        derived.append((_axis_name(path), path, str(expr)))
    chunk = int(sw.get("chunk_points", 128))
    if chunk < 1:
        problems.append(f"sweep.chunk_points = {chunk}: must be >= 1")
    refine = ()
    if mode == "refine":
        from .refine import parse_refine
        refine, refine_problems = parse_refine(sw.get("refine"), axes)
        problems += refine_problems
    elif "refine" in sw:
        problems.append(f"sweep.refine: only used with mode = 'refine' (mode is {mode!r})")
    if problems:
        raise SpecError(problems)
    spec = SweepSpec(refine=refine, base=base, axes=tuple(axes), derived=tuple(derived), mode=mode, samples=samples,
                     method=sw.get("method", "lhs"), seed=int(sw.get("seed", 0)), chunk_points=chunk, text=text,
                     name=sw.get("name", name))
    # the base scenario must be valid on its own
    try:
        parse_scenario(base)
    except SpecError as e:
        # invalid base values may be overridden by axes; only structural errors are fatal here
        fatal = [p for p in e.problems if "unknown field" in p or "not valid" in p or "unknown" in p]
        if fatal:
            raise SpecError([f"scenario: {p}" for p in fatal]) from None
    return spec


def load_sweep(path: str | Path) -> SweepSpec:
    p = Path(path)
    doc = resolve_spec_paths(load_toml(p), p.parent)   # relative trace paths: the file's folder
    return parse_sweep(doc, p.read_text(), p.stem)


# ----------------------------------------------------------------------------- expressions
# ----------------------------------------------------------------------------- points
def point_values(spec: SweepSpec, start: int = 0, stop: int | None = None) -> list[tuple]:
    """Axis values of points [start, stop), in point order (C order over the axes for products)."""
    stop = spec.n_points if stop is None else stop
    if not spec.axes:
        return [()][start:stop]
    if spec.mode == "product":
        idx = np.unravel_index(np.arange(start, stop), spec.shape)
        return list(zip(*[[a.values[k] for k in i.tolist()] for a, i in zip(spec.axes, idx)]))
    if spec.mode == "zip":
        return list(zip(*[a.values[start:stop] for a in spec.axes]))
    return _sample_values(spec)[start:stop]


def _sample_values(spec: SweepSpec) -> list[tuple]:
    # sample: Latin hypercube (or plain random) over the ranges; lists are sampled as choices
    n, d = spec.samples, len(spec.axes)
    rng = np.random.default_rng(np.random.SeedSequence([spec.seed, 0x5A3B]))
    if spec.method == "lhs":
        from scipy.stats import qmc
        u = qmc.LatinHypercube(d=d, seed=rng).random(n)
    else:
        u = rng.random((n, d))
    cols = []
    for j, a in enumerate(spec.axes):
        if a.values:
            idx = np.minimum((u[:, j] * len(a.values)).astype(int), len(a.values) - 1)
            cols.append([a.values[i] for i in idx])
        else:
            if a.log:
                x = np.exp(np.log(a.low) + u[:, j] * (np.log(a.high) - np.log(a.low)))
            else:
                x = a.low + u[:, j] * (a.high - a.low)
            cols.append([int(round(v)) for v in x] if a.integer else [float(v) for v in x])
    return list(zip(*cols))


def _draws_path(path: str) -> bool:
    """Does a field at ``path`` change a point's random draws (its requests)?"""
    return path.split(".")[0].split("[")[0] in ("workload", "simulation")


def _stable_key(spec: SweepSpec, values: tuple, derived: dict | None = None) -> int:
    """Seed key from the point's workload and simulation coordinates only (axes and derived
    quantities whose path starts with ``workload`` or ``simulation``).

    Points that differ only in hardware, model, parallelism or scheduler therefore simulate the same
    requests (common random numbers): the differences between them are the configuration's, not
    sampling noise. Adding values to any axis leaves the other points' seeds unchanged."""
    items = sorted((a.name, repr(v)) for a, v in zip(spec.axes, values) if _draws_path(a.path))
    items += sorted((name, repr((derived or {}).get(name))) for name, path, _ in spec.derived if _draws_path(path))
    h = hashlib.sha256(json.dumps(items).encode()).digest()
    return int.from_bytes(h[:8], "little")


# Requests of recent points, per process: points sharing a seed key share their request sample, and
# a chunk (or a worker's run of chunks) usually revisits the same few workloads. Keyed by everything
# build_requests reads; bounded by the number of requests held.
_REQUESTS_CACHE: dict = {}
_REQUESTS_CACHE_MAX = 2_000_000
_REQUESTS_HELD = 0   # requests held in _REQUESTS_CACHE (kept as entries come and go: no scan per miss)


_WORKLOAD_JSON: dict = {}   # id -> (workload object, kept alive with its key; its JSON)


def _workload_json(wl) -> str:
    """The workload's JSON (the requests cache key), once per workload object: a sweep's points
    share the validated workload section of their rates and lengths (sweep_points.py)."""
    hit = _WORKLOAD_JSON.get(id(wl))
    if hit is None or hit[0] is not wl:
        if len(_WORKLOAD_JSON) >= 4096:
            _WORKLOAD_JSON.clear()
        hit = _WORKLOAD_JSON[id(wl)] = (wl, wl.model_dump_json())
    return hit[1]


def _cached_requests(scen, ss: np.random.SeedSequence, cwd: str | None = None):
    """The point's requests (a cached sample when an earlier point drew the same)."""
    return _cached_requests_report(scen, ss, cwd)[0]


def _cached_requests_report(scen, ss: np.random.SeedSequence, cwd: str | None = None):
    """(requests, trace requests left out per reason) of a point, cached. ``cwd``: the working
    directory (part of the key: relative trace paths), passed in once per chunk by run_chunk."""
    key = (_workload_json(scen.workload), "num_requests" in scen.workload.model_fields_set,  # (a trace runs whole unless it is set)
           scen.simulation.horizon_s, repr(ss.entropy), repr(ss.spawn_key), cwd or os.getcwd())
    global _REQUESTS_HELD
    if not _REQUESTS_CACHE:
        _REQUESTS_HELD = 0   # (emptied from outside: tests and benchmarks clear the cache)
    hit = _REQUESTS_CACHE.pop(key, None)
    if hit is None:
        hit = build_requests_report(scen.workload, scen.simulation.horizon_s, ss)
        while _REQUESTS_CACHE and _REQUESTS_HELD + len(hit[0]) > _REQUESTS_CACHE_MAX:
            _REQUESTS_HELD -= len(_REQUESTS_CACHE.pop(next(iter(_REQUESTS_CACHE)))[0])  # least recently used
        _REQUESTS_HELD += len(hit[0])
    _REQUESTS_CACHE[key] = hit  # most recently used last
    return hit


def point_doc(spec: SweepSpec, values: tuple, base_doc: dict | None = None) -> tuple[dict, dict]:
    """The point's scenario document and its derived values. ``base_doc``: the base scenario
    merged over the defaults, when the caller has it already (run_chunk merges once per chunk)."""
    doc = deep_merge(DEFAULT_SCENARIO, spec.base) if base_doc is None else base_doc
    env = {a.name: v for a, v in zip(spec.axes, values)}
    for a, v in zip(spec.axes, values):
        doc = set_path(doc, a.path, v)
    derived_vals = {}
    for name, path, expr in spec.derived:
        v = safe_eval(expr, env)   # bounded: sizes and time (sweepspec.py)
        env[name] = v
        derived_vals[name] = v
        doc = set_path(doc, path, v)
    return doc, derived_vals


def build_point(spec: SweepSpec, values: tuple) -> tuple[Point | PipelinePoint | None, str, dict]:
    """The point's simulation input, or (None, reason) when the configuration is invalid."""
    pt, why, derived, _ = _build_point(spec, values, _ChunkContext(spec))
    return pt, why, derived


class _ChunkContext:
    """What every point of a chunk shares: the merged base document, the working directory and
    the seed keys already computed (points differing only in hardware share a key)."""

    def __init__(self, spec: SweepSpec, builder=None):
        self.builder = builder
        self.base_doc = deep_merge(DEFAULT_SCENARIO, spec.base) if builder is None else builder.base_doc
        self.cwd = os.getcwd()
        self.keys: dict = {}

    def seed_key(self, spec: SweepSpec, values: tuple, derived: dict) -> int:
        draws = (tuple(repr(v) for a, v in zip(spec.axes, values) if _draws_path(a.path)),
                 tuple(repr(derived.get(name)) for name, path, _ in spec.derived if _draws_path(path)))
        key = self.keys.get(draws)
        if key is None:
            key = self.keys[draws] = _stable_key(spec, values, derived)
        return key


def _build_point(spec: SweepSpec, values: tuple, ctx: _ChunkContext):
    """build_point, plus the point's trace requests left out per reason (None if invalid, and
    for pipeline points, whose requests run_chunk builds). Valid points come from the sweep's
    validated sections (sweep_points.PointBuilder); anything else takes the full path, so that an
    invalid point's message is the one its scenario file would give."""
    builder = ctx.builder
    if builder is not None and builder.ok:
        both = builder.derived_values(values)
        derived = both[0] if both else {}
        scen, why = (None, "") if both is None else builder.scenario(values, both[1])
        if why:
            return None, why, derived, None
        if scen is not None:
            try:
                ss = builder.seed_sequence(scen.simulation.seed, spec.seed, ctx.seed_key(spec, values, derived))
                reqs, left = _cached_requests_report(scen, ss, ctx.cwd)
                return any_point(scen, ss, reqs), "", derived, left
            except (SpecError, ZeroDivisionError):
                pass   # the full path gives the message
    return _build_point_full(spec, values, ctx)


def _build_point_full(spec: SweepSpec, values: tuple, ctx: _ChunkContext):
    """_build_point through the point's whole scenario document (parse_scenario)."""
    derived: dict = {}  # kept for invalid points too, when the expressions could be evaluated
    try:
        doc, derived = point_doc(spec, values, ctx.base_doc)
        scen = parse_scenario(doc, base={})
        base_seed = scen.simulation.seed
        ss = np.random.SeedSequence([base_seed, spec.seed, ctx.seed_key(spec, values, derived)])
        reqs, left = _cached_requests_report(scen, ss, ctx.cwd)
        return any_point(scen, ss, reqs), "", derived, left
    except SpecError as e:
        return None, "; ".join(e.problems), derived, None
    except ZeroDivisionError:
        return None, "derived expression divided by zero", derived, None


# ----------------------------------------------------------------------------- chunks
from .kernels.engine import REASON_NAMES  # noqa: E402

REJECT_REASONS = list(REASON_NAMES[1:])


def run_chunk(spec: SweepSpec, start: int, stop: int) -> dict[str, np.ndarray]:
    """Simulate points [start, stop); returns flat arrays (point order) of every summary variable."""
    from ._malloc import keep_freed_memory
    keep_freed_memory()   # the chunk's ~1 MB arrays reuse the last chunk's pages (mistfast/_malloc.py)
    allv = point_values(spec, start, stop)
    pts, where, reasons = [], [], []
    derived_cols: dict[str, list] = {name: [np.nan] * len(allv) for name, _, _ in spec.derived}
    left_out = np.full((len(allv), len(LEFT_OUT_REASONS)), np.nan)   # invalid points: NaN
    from .sweep_points import builder_for
    ctx = _ChunkContext(spec, builder_for(spec, _spec_hash(spec)).start_chunk())
    for i, vals in enumerate(allv):
        pt, why, der, left = _build_point(spec, vals, ctx)
        reasons.append(why)
        if left is not None:
            left_out[i] = [left[k] for k in LEFT_OUT_REASONS]
        for k, v in der.items():
            derived_cols[k][i] = v
        if pt is not None:
            pts.append(pt)
            where.append(i)
    n = len(allv)
    out: dict[str, np.ndarray] = {}
    # single-client points go through the kernel together, pipeline points one call each; each
    # list of results is then scattered to its points' rows
    labels = sweep_table_labels(spec)
    n_quantiles = len(sweep_quantiles(spec))
    where_ = np.asarray(where, np.int64)
    parts_ = [(where_[at], summ) for at, summ in summaries(pts, tables=labels is not None)]
    for name, var in REGISTRY.items():
        if var.dims and var.dims not in (("reject_reason",), ("quantile",)):
            continue  # (n_left_out, on left_out_reason, is counted before the simulation: below)
        if var.dims == ("quantile",) and not n_quantiles:
            continue
        if name in ("status", "reason"):
            continue
        shape = (n,) + ((len(REJECT_REASONS),) if var.dims == ("reject_reason",) else
                        (n_quantiles,) if var.dims else ())
        arr = np.full(shape, np.nan)
        for rows_at, summ in parts_:
            if name in summ:
                arr[rows_at] = summ[name]
        out[name] = arr
    if labels is not None:
        from .sweep_tables import table_columns
        out.update(table_columns(labels, n, parts_))
    out["n_left_out"] = left_out
    out["status"] = np.array([0 if not r else 1 for r in reasons], np.int8)
    out["reason"] = np.array(reasons, dtype=object)
    for k, v in derived_cols.items():
        try:
            out[f"in_{k}"] = np.array(v, dtype=float)
        except (TypeError, ValueError):  # text-valued derived inputs (preset names)
            out[f"in_{k}"] = np.array(["" if x is None or x != x else str(x) for x in v], dtype=object)
    return out


def sweep_table_labels(spec: SweepSpec) -> dict[str, list] | None:
    """Client, stage-kind and resource labels of the sweep's pipeline points (sweep_tables.py)."""
    from .sweep_tables import table_labels
    return table_labels(spec, _spec_hash(spec), _label_points, point_doc)


def _label_points(spec: SweepSpec) -> list[tuple]:
    """The points the table-label scan must visit, in point order: of a product without derived
    quantities, the first point of each combination of the axes that can change the topology
    (every other axis at its first value) — the points where each topology first appears."""
    from itertools import product

    from .sweep_tables import _topology_path
    if spec.mode != "product" or spec.derived or not spec.axes:
        return point_values(spec)
    ranges = [range(len(a.values)) if _topology_path(a.path) else range(1) for a in spec.axes]
    return [tuple(a.values[i] for a, i in zip(spec.axes, idx)) for idx in product(*ranges)]


def _chunks(n: int, size: int) -> list[tuple[int, int]]:
    return [(a, min(a + size, n)) for a in range(0, n, size)]


def _spec_hash(spec: SweepSpec) -> str:
    payload = json.dumps({"base": spec.base, "axes": [a.__dict__ for a in spec.axes], "derived": spec.derived,
                          "mode": spec.mode, "samples": spec.samples, "method": spec.method, "seed": spec.seed,
                          "chunk": spec.chunk_points, "version": __version__}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


class SweepInterrupted(KeyboardInterrupt):
    """The sweep was interrupted (Ctrl-C); finished parts are kept for ``--resume``."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class ResumeWarning(UserWarning):
    """Parts of an earlier run that did not verify and are recomputed."""


# Sweeps up to this many points come back as an in-memory Dataset; larger ones with an output file
# come back opened lazily from that file, so the driver never holds the whole result.
LOAD_MAX_POINTS = 50_000


def _warm():
    """Load (or compile) the kernels once in this process."""
    from .runner import run_points
    from .scenario import scenario_point
    from .specs import parse_scenario
    pt = scenario_point(parse_scenario({"workload": {"num_requests": 4}}))
    run_points([pt])
    return os.getpid()


def _task(spec: SweepSpec, k: int, start: int, stop: int, part: str | None, sweep_hash: str = "") -> dict:
    """One chunk: a pure function of (spec, chunk). Returns the arrays, or with ``part`` the part's
    manifest entry after writing it (so a recomputed task rewrites the very same bytes)."""
    arrays = run_chunk(spec, start, stop)
    if part is None:
        return arrays
    return P.save_part(Path(part), arrays, (k, start, stop), sweep_hash)


def _labelled_task(spec_labels: tuple, k: int, start: int, stop: int, part: str | None, sweep_hash: str) -> dict:
    """_task with the sweep's table labels given (the same as the worker's own scan would find)."""
    from .sweep_tables import prime_labels
    spec, labels = spec_labels
    prime_labels(sweep_hash, labels)
    return _task(spec, k, start, stop, part, sweep_hash)


def run_sweep(spec: SweepSpec | str | Path, output: str | Path | None = None, *, scheduler: str = "serial",
              workers: int | None = None, resume: bool = False, progress: bool = False,
              chunk_points: int | None = None, client=None) -> xr.Dataset:
    """Run a sweep and return its Dataset (also written to ``output`` as netCDF when given).

    scheduler: "serial", "threads", "processes" (a ``distributed.LocalCluster`` of ``workers``
    single-threaded processes), or a dask.distributed scheduler address ("tcp://host:8786");
    ``client`` may be an existing ``distributed.Client`` (e.g. of a ``dask_jobqueue.SLURMCluster``).

    With ``output``, every finished chunk is written to ``<output>.parts/`` with its checksum in
    the manifest, and the netCDF is assembled from the parts block by block (bounded memory).
    ``resume=True`` reuses the parts of an earlier run of the same sweep that verify and recomputes
    the others (a :class:`ResumeWarning` names them). Ctrl-C raises :class:`SweepInterrupted`;
    unwritable outputs raise :class:`mistfast.parts.SweepOutputError` (a ``SpecError``).
    """
    if not isinstance(spec, SweepSpec):
        spec = load_sweep(spec)
    if client is None and scheduler not in ("serial", "threads", "processes") and ":" not in scheduler:
        raise SpecError([f"scheduler = {scheduler!r}: use serial, threads, processes or a dask.distributed "
                         "address such as tcp://host:8786"])
    if chunk_points is not None:
        spec = SweepSpec(**{**spec.__dict__, "chunk_points": int(chunk_points)})
    _refuse_per_request(spec)
    if output is None:
        from .limits import check_sweep_in_memory
        check_sweep_in_memory(spec.n_points)
    if spec.mode == "refine":
        from .refine import run_refine
        return run_refine(spec, output, run_sweep=run_sweep, write_netcdf=write_netcdf, resume=resume,
                          scheduler=scheduler, workers=workers, progress=progress, client=client)
    chunks = _chunks(spec.n_points, spec.chunk_points)
    h = _spec_hash(spec)
    parts_dir = None if output is None else Path(str(output) + ".parts")
    manifest = None if parts_dir is None else _open_parts(spec, parts_dir, chunks, h, resume)
    todo = [(k, a, z, None if parts_dir is None else str(parts_dir / P.part_name(k)))
            for k, (a, z) in enumerate(chunks) if manifest is None or P.part_name(k) not in manifest.parts]
    results: dict[int, dict] = {}

    def done(k: int, result: dict) -> None:
        if manifest is None:
            results[k] = result
        else:
            manifest.add(P.part_name(k), result)

    bar = _progress(len(chunks), len(chunks) - len(todo), progress)
    try:
        if scheduler == "serial" and client is None:
            for k, a, z, part in todo:
                done(k, _task(spec, k, a, z, part, h))
                bar.update(1)
        elif scheduler == "threads" and client is None:
            _run_threads(spec, todo, done, workers, bar, h)
        else:
            _run_distributed(spec, todo, done, scheduler, workers, client, bar, h, progress)
    except KeyboardInterrupt:
        if manifest is None:
            raise SweepInterrupted("interrupted (nothing was kept: give an output file to keep finished chunks)") from None
        raise SweepInterrupted(f"interrupted — rerun with --resume; {len(manifest.parts)} of {len(chunks)} chunks "
                               f"are kept in {parts_dir}") from None
    finally:
        bar.close()
        if manifest is not None:
            manifest.flush()
    if manifest is None:
        cat = {name: np.concatenate([results[k][name] for k in range(len(chunks))]) for name in results[0]}
        return assemble(spec, cat)
    return _assemble_from_parts(spec, parts_dir, chunks, manifest, h, Path(output))


def _refuse_per_request(spec: SweepSpec) -> None:
    """Sweeps keep summary variables only; per-request data would be points x requests rows."""
    wants = bool(deep_merge(DEFAULT_SCENARIO, spec.base).get("simulation", {}).get("per_request", False))
    wants |= any(a.path.endswith("per_request") and any(bool(v) for v in a.values) for a in spec.axes)
    if wants:
        n_req = int(deep_merge(DEFAULT_SCENARIO, spec.base).get("workload", {}).get("num_requests", 0) or 0)
        est = spec.n_points * n_req * 11 * 8
        raise SpecError([f"simulation.per_request = true: a sweep stores summary variables only; per-request "
                         f"variables of {spec.n_points} points x {n_req} requests would take about {est / 2**30:.2f} GiB. "
                         "Set it to false, or run single points with `mistfast run --per-request`"])


def _open_parts(spec: SweepSpec, parts_dir: Path, chunks: list, h: str, resume: bool) -> P.Manifest:
    """Prepare ``parts_dir``: fresh, or (resume) keep exactly the parts that verify."""
    header = {"hash": h, "n_points": spec.n_points, "chunk_points": spec.chunk_points, "chunks": len(chunks)}
    try:
        parts_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise P.output_error(parts_dir, exc, "the sweep's parts folder") from None
    manifest = P.Manifest(parts_dir, header)
    old, why_not = P.read_manifest(parts_dir) if resume else (None, "")
    if resume and old is not None and (old["hash"], old.get("chunks")) != (h, len(chunks)):
        raise SpecError([f"--resume: {parts_dir} belongs to a different sweep spec; remove it or drop --resume"])
    present = sorted(parts_dir.glob("chunk-*.npz"))
    if resume:
        rejected = []
        for k, (a, z) in enumerate(chunks):
            path = parts_dir / P.part_name(k)
            if not path.exists():
                continue
            entry = None if old is None else old["parts"].get(path.name)
            problem = why_not or P.part_problem(path, entry, (k, a, z))
            if problem:
                rejected.append(f"{path.name} ({problem})")
            else:
                manifest.parts[path.name] = entry
        expected = {P.part_name(k) for k in range(len(chunks))}
        rejected += [f"{p.name} (not a chunk of this sweep)" for p in present if p.name not in expected]
        if rejected:
            warnings.warn(f"resume: {len(rejected)} part file(s) in {parts_dir} do not verify and are recomputed: "
                          + ", ".join(rejected[:20]) + (" ..." if len(rejected) > 20 else ""), ResumeWarning, stacklevel=3)
    for p in present:  # never combine a part that did not verify: it is recomputed and overwritten
        if p.name not in manifest.parts:
            p.unlink()
    manifest.write()
    return manifest


def _progress(total, done, enabled):
    from tqdm.auto import tqdm
    return tqdm(total=total, initial=done, disable=not enabled, unit="chunk", desc="sweep")


def _run_threads(spec, todo, done, workers, bar, h):
    """Dask's threaded scheduler, in batches so that progress and parts arrive as they finish."""
    import dask
    _warm()
    n_workers = workers or os.cpu_count() or 1
    batch = max(n_workers * 8, 1)
    for i in range(0, len(todo), batch):
        tasks = [dask.delayed(_task)(spec, k, a, z, part, h) for k, a, z, part in todo[i:i + batch]]
        outs = dask.compute(*tasks, scheduler="threads", num_workers=n_workers)
        for (k, *_), o in zip(todo[i:i + batch], outs):
            done(k, o)
        bar.update(len(outs))


def _run_distributed(spec, todo, done, scheduler, workers, client, bar, h, announce):
    """Every parallel run that uses processes goes through a dask.distributed scheduler: a
    LocalCluster of nanny-managed single-threaded workers for ``processes``, a remote scheduler
    for an address, or the caller's client (SLURM). Nannies restart a worker that dies and the
    scheduler reruns its tasks; worker processes exit when the driver's process disappears."""
    from distributed import Client
    stack = []
    start = contextlib.ExitStack()   # how the local cluster starts workers, for as long as it runs
    try:
        if client is None:
            if scheduler == "processes":
                from distributed import LocalCluster

                from .worker_start import local_worker_start
                kw = start.enter_context(local_worker_start())
                start.enter_context(_quiet_local_cluster(watched=announce))
                cluster = LocalCluster(n_workers=workers or os.cpu_count() or 1, threads_per_worker=1, processes=True,
                                       dashboard_address=":0" if announce and _has_bokeh() else None, silence_logs=40,
                                       **kw)
                stack.append(cluster)
                client = Client(cluster)
            else:
                client = Client(scheduler)
            stack.append(client)
            if announce and client.dashboard_link and stack[0] is not client:
                print(f"dask dashboard: {client.dashboard_link}", file=sys.stderr)
        client.run(_warm)  # pay kernel loading once per worker, before the tasks
        # the spec travels once, as the result of a task (recomputed like any other if its worker
        # dies), instead of once inside every chunk task the scheduler holds. With it go the table
        # labels, scanned here once (the assembly needs them too) instead of once per worker
        spec_f = client.submit(_same, (spec, sweep_table_labels(spec)), pure=False, key=f"mistfast-spec-{h}")
        _run_windowed(client, todo, done, bar, lambda k, a, z, part: client.submit(
            _labelled_task, spec_f, k, a, z, part, h, pure=False, key=f"mistfast-chunk-{k}-{h}"))
    finally:
        for obj in reversed(stack):
            obj.close()
        start.close()


def _quiet_local_cluster(watched: bool):
    """dask settings for a local cluster nobody watches (no ``--progress``): no dashboard (its
    bokeh import costs the driver about 2 CPU-s), and no statistical profiler in the workers. The
    profiler samples the task thread's stack every 10 ms on the worker's event loop: about 20 ms
    of CPU per second of wall time per worker (12 % of the tasks' own CPU in a 4,000-point run
    under load; docs/scaling.md), for a profile only the dashboard shows. The nannies (in the driver's process) and workers read
    their memory use every 500 ms instead of every 100 ms: the chunks' results are small, so the
    limits are reached by a runaway task, which a nanny stops half a second later at most.
    A watched cluster keeps dask's settings."""
    import dask
    if watched:
        return contextlib.nullcontext()
    return dask.config.set({"distributed.worker.profile.enabled": False,
                            "distributed.worker.memory.monitor-interval": "500ms"})


# chunk tasks in flight per worker thread: enough to keep every worker busy while the driver
# records results, few enough that the scheduler (in the driver's process for a LocalCluster)
# holds a bounded number of tasks whatever the number of chunks
IN_FLIGHT_PER_THREAD = 4
IN_FLIGHT_MIN = 16


def _run_windowed(client, todo, done, bar, submit) -> None:
    """Submit the chunks a window at a time and record each as it finishes. The window follows
    the cluster's size (re-read at most once a second: an adaptive SLURM cluster grows)."""
    from distributed import as_completed
    pending = iter(todo)
    futs: dict = {}
    done_iter = as_completed()
    limit, checked = IN_FLIGHT_MIN, -1.0

    def top_up():
        nonlocal limit, checked
        if time.monotonic() - checked >= 1.0:
            threads = sum(client.nthreads().values())
            limit, checked = max(IN_FLIGHT_MIN, IN_FLIGHT_PER_THREAD * threads), time.monotonic()
        while len(futs) < limit:
            item = next(pending, None)
            if item is None:
                return
            fut = submit(*item)
            futs[fut] = item[0]
            done_iter.add(fut)

    try:
        top_up()
        for fut in done_iter:
            done(futs.pop(fut), fut.result())
            fut.release()  # once recorded, a lost worker's copy need not be recomputed
            bar.update(1)
            top_up()
    except BaseException:  # an error or Ctrl-C: stop the remaining chunks before leaving
        client.cancel(list(futs))
        raise


def _same(x):
    return x


def _has_bokeh() -> bool:
    try:
        import bokeh  # noqa: F401
    except ImportError:
        return False
    return True


def _assemble_from_parts(spec, parts_dir, chunks, manifest, h, output) -> xr.Dataset:
    """Verify every part, write the netCDF block by block from them, return the Dataset (in
    memory up to LOAD_MAX_POINTS points, else opened lazily from the written file)."""
    for k, (a, z) in enumerate(chunks):
        name = P.part_name(k)
        problem = P.part_problem(parts_dir / name, manifest.parts.get(name), (k, a, z))
        if problem:
            raise SpecError([f"{parts_dir / name}: {problem} after it was written; rerun with --resume to recompute it"])
    nan_vars = {n for e in manifest.parts.values() for n in e.get("nan_vars", ())}
    write_parts_netcdf(spec, parts_dir, chunks, nan_vars, h, output)
    if spec.n_points <= LOAD_MAX_POINTS:  # small enough to hold: the very Dataset of an in-memory run
        names = list(P.part_layout(parts_dir / P.part_name(0)))
        return assemble(spec, P.read_flat_block(parts_dir, names, 0, spec.n_points, chunks, spec.chunk_points, h))
    return open_sweep(output)


# points per assembly block: all variables of one block are held at once (~70 x 8 B x 16,384 = 9 MB)
BLOCK_POINTS = 16384


def write_parts_netcdf(spec, parts_dir: Path, chunks, nan_vars: set, h: str, output: Path) -> None:
    """Write the sweep's netCDF from its part files, one block of points at a time.

    xarray lays out the file (dimensions, coordinates, attributes, variable definitions and
    encodings) from a skeleton Dataset whose data variables are lazy dask arrays that are never
    computed; then each block (a contiguous run of C-order points, ``parts.block_grid``) is read
    from its few parts, CF-encoded like xarray encodes a whole variable, and written into its
    region of every variable. The driver holds one block (about 9 MB) and no task graph, whatever
    the number of points. Every block writes whole HDF5 chunks (``parts.file_chunk_shape``)."""
    from xarray.backends import NetCDF4DataStore
    from xarray.backends.writers import ArrayWriter, dump_to_store
    layout = P.part_layout(parts_dir / P.part_name(0))
    shape = spec.shape if spec.axes else ()   # a sweep without axes is one point: scalar variables
    grid = P.block_grid(shape, BLOCK_POINTS) if spec.axes else ()
    messages = _reason_index(_reason_table(parts_dir, chunks, h))
    skeleton = _coded_skeleton(_dataset(spec, _skeleton_columns(layout, shape, grid), nan_vars, n_invalid=0),
                               messages)
    encoding = _netcdf_encoding(skeleton, block_chunks=False)
    file_chunks = P.file_chunk_shape(shape, BLOCK_POINTS)
    for name in skeleton.data_vars:  # the sweep's dims in the file's chunk shape, other dims whole
        if shape and name != REASON_TABLE:
            encoding.setdefault(name, {})["chunksizes"] = file_chunks + skeleton[name].shape[len(shape):]
    n_invalid = 0
    with _results_file(output) as tmp, _small_chunk_cache():
        store = NetCDF4DataStore.open(tmp, mode="w", format="NETCDF4")
        try:
            dump_to_store(skeleton, store, ArrayWriter(), encoding=encoding)  # lazy data: layout only
            for region, first, stop in _blocks(shape, grid):
                block = P.read_flat_block(parts_dir, list(layout), first, stop, chunks, spec.chunk_points, h)
                n_invalid += int(np.count_nonzero(block["status"]))
                block["reason"] = _reason_codes(block["reason"], messages)
                _write_block(store.ds, skeleton, encoding, block, region)
            store.ds.setncattr("n_invalid", n_invalid)
        finally:
            store.close()


@contextlib.contextmanager
def _results_file(path):
    """Yield a temporary path next to ``path``; it becomes ``path`` when the block ends. On any
    failure (disk full, permission, Ctrl-C, a part that does not verify) it is removed, nothing is
    left under ``path``, and an OS/HDF error becomes one SweepOutputError line."""
    tmp = Path(str(path) + ".tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:  # netCDF4 reports HDF errors (e.g. a full disk) as RuntimeError
        P.remove_quietly(tmp)
        if isinstance(exc, RuntimeError) and "HDF" in str(exc) and _disk_nearly_full(Path(path)):
            exc = OSError(28, "no space left on device")
        raise P.output_error(path, exc, "the results file") from None
    except BaseException:
        P.remove_quietly(tmp)
        raise


def _skeleton_columns(layout: dict, shape: tuple, grid: tuple) -> dict:
    """Lazy arrays shaped like the sweep, chunked like the blocks, that are never computed: they
    give xarray the dtypes and shapes to lay out the file."""
    import dask.array as da
    from xarray.coding.strings import create_vlen_dtype
    cols = {}
    for name, (dtype, trail) in layout.items():
        if dtype == object:  # declared variable-length strings
            dtype = create_vlen_dtype(str)
        # a fixed name: dask would otherwise hash (tokenize, cloudpickle) every array's creation call
        cols[name] = da.empty(shape + trail, dtype=dtype, chunks=grid + tuple((t,) for t in trail),
                              name=f"mistfast-skeleton-{name}")
    return cols


def _blocks(shape: tuple, grid: tuple):
    """(region, first point, stop point) of every block of ``grid``, in point order."""
    if not shape:
        yield (), 0, 1
        return
    offsets = [np.concatenate([[0], np.cumsum(c)[:-1]]).astype(int) for c in grid]
    for idx in np.ndindex(*[len(c) for c in grid]):
        lo = [int(o[i]) for o, i in zip(offsets, idx)]
        bshape = [int(c[i]) for c, i in zip(grid, idx)]
        first = int(np.ravel_multi_index(lo, shape))
        yield tuple(slice(a, a + n) for a, n in zip(lo, bshape)), first, first + int(np.prod(bshape))


def _write_block(nc, skeleton: xr.Dataset, encoding: dict, block: dict, region: tuple) -> None:
    """One block of every variable into its region of the open netCDF4 file ``nc``: the values
    are put through the skeleton variable's dtype conversion and CF encoding, as xarray would."""
    from xarray.conventions import encode_cf_variable
    bshape = tuple(r.stop - r.start for r in region)
    for name, arr in block.items():
        sk = skeleton[name].variable
        values = _block_variable(sk, arr.reshape(bshape + arr.shape[1:]))
        enc = encode_cf_variable(xr.Variable(sk.dims, values, sk.attrs, encoding.get(name, {})), name=name)
        nc.variables[name][region + (slice(None),) * (enc.ndim - len(region))] = enc.values


def _block_variable(sk: xr.Variable, values: np.ndarray) -> np.ndarray:
    """A block's values with the dtype _dataset gives the whole variable."""
    if sk.dtype == object:
        return values if values.dtype == object else values.astype(str).astype(object)
    return values.astype(sk.dtype)


def assemble(spec: SweepSpec, cat: dict[str, np.ndarray]) -> xr.Dataset:
    """The sweep's Dataset from flat per-point arrays held in memory."""
    shape = spec.shape
    cols = {name: arr.reshape(shape + arr.shape[1:]) for name, arr in cat.items()}
    nan_vars = {name for name, arr in cat.items() if arr.dtype.kind == "f" and np.isnan(arr).any()}
    return _dataset(spec, cols, nan_vars, int((cat["status"] != 0).sum()))


def _dataset(spec: SweepSpec, cols: dict, nan_vars: set, n_invalid: int) -> xr.Dataset:
    """Variables (numpy or dask arrays shaped like the sweep), coordinates and attrs.
    ``nan_vars``: variables with a NaN somewhere (integer ones then stay float)."""
    dims = spec.dims
    data_vars: dict[str, xr.Variable] = {}   # one Dataset at the end: adding variables one by one re-merges them all each time
    for name, data in cols.items():
        if name.startswith("in_"):
            if data.dtype.kind in "US":
                data = data.astype(object)
            paths = {d[0]: d[1] for d in spec.derived}
            attrs = {"long_name": f"derived input {name[3:]}", "description": f"derived input {name[3:]}",
                     "spec_path": paths.get(name[3:], "")}
            if data.dtype.kind in "fiu":
                attrs["units"] = coord_attrs(name[3:], paths.get(name[3:]))["units"]
            data_vars[name] = xr.Variable(dims, data, attrs=attrs)
            continue
        v = REGISTRY[name]
        attrs = v.attrs()
        if v.dtype.startswith("int") and name in nan_vars:
            var = xr.Variable(dims + v.dims, data.astype(float), attrs=attrs)
        elif v.dtype == "str":
            var = xr.Variable(dims + v.dims, data if data.dtype == object else data.astype(str).astype(object), attrs=attrs)
        elif isinstance(data, np.ndarray):
            var = variable(name, data, dims)
        else:
            var = xr.Variable(dims + v.dims, data.astype(v.dtype), attrs=attrs)
        data_vars[name] = var
    ds = xr.Dataset(data_vars)
    coords: dict[str, Any] = {"reject_reason": REJECT_REASONS}
    coords.update({d: labels for d, labels in (sweep_table_labels(spec) or {}).items() if d in ds.dims})
    if "left_out_reason" in ds.dims:
        coords["left_out_reason"] = list(LEFT_OUT_REASONS)
    if "quantile" in ds.dims:
        coords["quantile"] = sweep_quantiles(spec)
    if spec.mode == "product":
        for a in spec.axes:
            coords[a.name] = list(a.values)
    else:
        vals = point_values(spec)
        coords["point"] = np.arange(spec.n_points)
        for j, a in enumerate(spec.axes):
            coords[a.name] = ("point", [v[j] for v in vals])
    ds = ds.assign_coords(coords)
    for a in spec.axes:
        ds[a.name].attrs.update({"spec_path": a.path, "long_name": f"sweep axis {a.path}"})
    ds.attrs.update(_sweep_slo_attrs(spec))
    add_coord_attrs(ds)
    ds.attrs.update(global_attrs(f"sweep {spec.name}, {spec.n_points} points"))
    ds.attrs.update({"mistfast_version": __version__, "sweep_name": spec.name, "sweep_mode": spec.mode,
                     "sweep_seed": spec.seed, "sweep_spec_toml": spec.text or json.dumps(spec.base, default=str),
                     "n_points": spec.n_points, "n_invalid": n_invalid,
                     "seeding": "each point's seed = SeedSequence([scenario seed, sweep seed, sha256(the point's coordinates "
                                "on workload.* and simulation.* axes)]): points differing only in hardware, "
                                "model or scheduler simulate the same requests"})
    return ds


def sweep_quantiles(spec: SweepSpec) -> list[float]:
    """The [metrics] quantiles of the base scenario (a dimension of the results: not sweepable)."""
    from .specs import MetricsSpec
    try:
        return list(MetricsSpec.model_validate(spec.base.get("metrics", {})).quantiles or [])
    except Exception:  # reported by every point's validation
        return []


def _sweep_slo_attrs(spec: SweepSpec) -> dict:
    """The base scenario's SLO after validation (defaults filled in). A sweep axis over an SLO
    field is a per-point input; the attributes then hold the base value."""
    from .specs import SLOSpec
    raw = deep_merge(DEFAULT_SCENARIO, spec.base).get("slo", {})
    try:
        slo = SLOSpec.model_validate(raw)
    except Exception:  # an invalid base SLO is reported per point; keep the defaults here
        slo = SLOSpec()
    return slo_attrs(slo)


def write_netcdf(ds: xr.Dataset, path: str | Path, block_chunks: bool = False) -> None:
    """Write ``ds`` to ``path`` through a temporary file: on any failure (disk full, permission)
    the temporary file is removed, nothing is left under ``path``, and one SweepOutputError line
    says why. Dask-backed variables are written block by block; with ``block_chunks`` the file's
    HDF5 chunks are the dask blocks, so every block writes whole chunks."""
    ds = encode_reasons(ds)
    with _results_file(path) as tmp, _small_chunk_cache():
        ds.to_netcdf(tmp, engine="netcdf4", encoding=_netcdf_encoding(ds, block_chunks))


# ----------------------------------------------------------------------------- reason codes
# In a results file, ``reason`` (why each point is invalid; "" when it is valid) is an int32 code
# per point that indexes ``reason_message``, the table of distinct messages along ``reason_code``
# (code 0 = "" = valid; the others in order of first appearance over the points, C order). A sweep
# has a handful of distinct messages, so the file and the opened Dataset hold 4 B per point instead
# of about 60 B of text. ``open_sweep`` / ``decode_reasons`` give ``reason`` back as text (lazily
# for a file opened lazily); ``run_sweep`` always returns it decoded.
REASON_TABLE = "reason_message"
REASON_DIM = "reason_code"
_REASON_CODED = {"units": "1", "flag_table": REASON_TABLE,
                 "coding": "index into reason_message (0 = valid point); mistfast.sweep.decode_reasons(ds) or "
                           "mistfast.sweep.open_sweep(path) give the text (docs/scaling.md)"}


def _reason_index(messages) -> dict[str, int]:
    """Message -> code: "" first, then the messages in order of first appearance."""
    table = {"": 0}
    for m in messages:
        if m not in table:
            table[m] = len(table)
    return table


def _reason_codes(reasons: np.ndarray, table: dict[str, int]) -> np.ndarray:
    uniq, inverse = np.unique(reasons.astype(str), return_inverse=True)
    return np.array([table[u] for u in uniq.tolist()], np.int32)[inverse].reshape(reasons.shape)


def encode_reasons(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` with ``reason`` as codes and the ``reason_message`` table (a copy; ``ds`` itself
    is left as it is). A Dataset without text reasons is returned unchanged."""
    if "reason" not in ds or ds["reason"].dtype.kind not in "OUS":
        return ds
    var = ds["reason"].variable
    flat = np.asarray(var.values).astype(str).ravel()
    table = _reason_index(_distinct_in_order(flat))
    out = ds.copy()
    out["reason"] = xr.Variable(var.dims, _reason_codes(flat, table).reshape(var.shape), {**var.attrs, **_REASON_CODED})
    out[REASON_TABLE] = _reason_table_variable(list(table))
    return out


def _distinct_in_order(values: np.ndarray) -> list:
    """Distinct values in order of first appearance."""
    import pandas as pd
    return pd.unique(values).tolist()


def _reason_table_variable(messages: list[str]) -> xr.Variable:
    return xr.Variable((REASON_DIM,), np.array(messages, dtype=object),
                       {"long_name": "invalid-point reason of each reason code",
                        "description": "reason_message[reason] is why a point is invalid (code 0: valid, '')"})


def decode_reasons(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` with ``reason`` as text again (what run_sweep returns). A ``reason`` read lazily from
    a file stays lazy (decoded block by block when it is read); the table variable is dropped."""
    if REASON_TABLE not in ds or "reason" not in ds or ds["reason"].dtype.kind not in "iu":
        return ds
    table = np.asarray(ds[REASON_TABLE].values, dtype=object)
    var = ds["reason"].variable
    attrs = {k: v for k, v in var.attrs.items() if k not in _REASON_CODED}
    if var._in_memory:
        text = table[np.asarray(var.values)]
    else:
        chunks = var.encoding.get("chunksizes") or var.shape   # the file's chunks: each read once
        codes = ds["reason"].chunk(dict(zip(var.dims, chunks))).data
        text = codes.map_blocks(lambda c: table[c], dtype=object)
    out = ds.drop_vars(REASON_TABLE)
    out["reason"] = xr.Variable(var.dims, text, attrs)
    return out


def open_sweep(path: str | Path, **kw) -> xr.Dataset:
    """A sweep's results file, opened lazily (xarray.open_dataset) with ``reason`` as text."""
    return decode_reasons(xr.open_dataset(path, engine="netcdf4", **kw))


def _reason_table(parts_dir: Path, chunks, h: str) -> list[str]:
    """Every distinct reason of the parts, in point order (a first pass over the parts reading
    one column)."""
    seen: dict[str, int] = {"": 0}
    for k, (a, z) in enumerate(chunks):
        col = P.read_part_columns(parts_dir / P.part_name(k), ["reason"], (k, a, z), h)["reason"]
        for m in _distinct_in_order(col.astype(str)):
            seen.setdefault(m, len(seen))
    return list(seen)


def _coded_skeleton(skeleton: xr.Dataset, messages: dict[str, int]) -> xr.Dataset:
    """The skeleton with ``reason`` as lazy int32 codes and the (small, real) message table."""
    import dask.array as da
    var = skeleton["reason"].variable
    data = da.empty(var.shape, dtype=np.int32, chunks=var.chunks) if var.chunks else np.zeros(var.shape, np.int32)
    out = skeleton.copy()
    out["reason"] = xr.Variable(var.dims, data, {**var.attrs, **_REASON_CODED})
    out[REASON_TABLE] = _reason_table_variable(list(messages))
    return out


def _netcdf_encoding(ds: xr.Dataset, block_chunks: bool) -> dict:
    """zlib level 1 for every non-string variable; with ``block_chunks``, HDF5 chunks = dask blocks."""
    enc = {k: {"zlib": True, "complevel": 1} for k, v in ds.data_vars.items() if v.dtype != object}
    if block_chunks:
        for k in enc:
            if ds[k].chunks and ds[k].ndim:
                enc[k]["chunksizes"] = tuple(max(c) for c in ds[k].chunks)
    return enc


class _small_chunk_cache:
    """HDF5 keeps written chunks in a per-variable cache (64 MiB each by default) until the file
    is closed; blocks arrive in file order, so a small cache bounds the writer's memory."""

    def __enter__(self):
        import netCDF4
        self.saved = netCDF4.get_chunk_cache()
        netCDF4.set_chunk_cache(256 << 10, 521, 1.0)

    def __exit__(self, *exc):
        import netCDF4
        netCDF4.set_chunk_cache(*self.saved)


def _disk_nearly_full(path: Path) -> bool:
    import shutil
    try:
        return shutil.disk_usage(path.resolve().parent).free < 64 << 20
    except OSError:
        return False


def dry_run(spec: SweepSpec, sample_points: int = 4) -> dict:
    """Number of points and an estimated serial time from a few timed points."""
    n = spec.n_points
    k = min(sample_points, n)
    _warm()  # load (or compile) the kernels; point 0 may be invalid and would not touch them
    run_chunk(spec, 0, 1)
    t0 = time.perf_counter()
    idx = np.linspace(0, n - 1, k).astype(int)
    for i in idx:
        run_chunk(spec, int(i), int(i) + 1)
    per = (time.perf_counter() - t0) / max(k, 1)
    return {"n_points": n, "shape": dict(zip(spec.dims, spec.shape)), "chunks": len(_chunks(n, spec.chunk_points)),
            "seconds_per_point_est": per, "serial_seconds_est": per * n}
