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

import ast
import hashlib
import json
import math
import operator
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from . import __version__
from .runner import Point, run_points
from .scenario import build_requests, scenario_point
from .specs import DEFAULT_SCENARIO, SpecError, deep_merge, load_toml, parse_scenario, resolve_spec_paths, set_path
from .sweepspec import safe_eval
from .variables import REGISTRY, add_coord_attrs, coord_attrs, global_attrs, slo_attrs, variable

# ----------------------------------------------------------------------------- spec
MODES = ("product", "zip", "sample")


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

    @property
    def shape(self) -> tuple[int, ...]:
        if self.mode == "product":
            return tuple(len(a.values) for a in self.axes)
        if self.mode == "zip":
            return (len(self.axes[0].values),)
        return (self.samples,)

    @property
    def n_points(self) -> int:
        return int(np.prod(self.shape)) if self.axes else 1

    @property
    def dims(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.axes) if self.mode == "product" else ("point",)


def check_path(path: str) -> None:
    """Raise SpecError if ``path`` does not name a field of the scenario schema (typo check)."""
    import re
    import typing

    from .specs import ScenarioSpec
    parts = [p for p in re.split(r"\.|\[(\d+)\]", path) if p]
    cur: Any = ScenarioSpec
    walked = []
    for p in parts:
        if p.isdigit():
            walked.append(f"[{p}]")
            continue
        if p == "preset":
            cur = None
            walked.append(".preset")
            continue
        models = _models_in(cur)
        if not models:
            if cur is dict or typing.get_origin(cur) is dict:
                cur = typing.get_args(cur)[1] if typing.get_args(cur) else Any
                walked.append(f".{p}")
                continue
            raise SpecError([f"{path}: {''.join(walked).lstrip('.') or 'field'} has no sub-field {p!r}"])
        found = None
        for m in models:
            if p in m.model_fields:
                found = m.model_fields[p].annotation
                break
        if found is None:
            allowed = sorted({k for m in models for k in m.model_fields})
            raise SpecError([f"{path}: unknown field {p!r} in {''.join(walked).lstrip('.') or 'scenario'}; "
                             f"allowed: {', '.join(allowed)}"])
        cur = found
        walked.append(f".{p}")


def _models_in(ann) -> list:
    import typing

    from pydantic import BaseModel
    if ann is None:
        return []
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return [ann]
    out = []
    for a in typing.get_args(ann):
        out.extend(_models_in(a))
    return out


def _axis_name(path: str) -> str:
    import re
    last = [p for p in re.split(r"\.|\[(\d+)\]", path) if p and not p.isdigit()][-1]
    return last


def parse_sweep(doc: dict, text: str = "", name: str = "sweep") -> SweepSpec:
    """Validate a sweep document; every problem is reported before any work starts."""
    from .sweepspec import check_sweep_doc
    check_sweep_doc(doc)   # types, paths, values, expressions and size, in the scenarios' error style
    if "sweep" not in doc:
        raise SpecError(["sweep: missing [sweep] table (a sweep file needs [sweep] plus [scenario])"])
    sw = dict(doc["sweep"])
    base = doc.get("scenario", {k: v for k, v in doc.items() if k != "sweep"})
    problems: list[str] = []
    allowed = {"seed", "mode", "samples", "method", "chunk_points", "axes", "axis", "derived", "name"}
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
    if problems:
        raise SpecError(problems)
    spec = SweepSpec(base=base, axes=tuple(axes), derived=tuple(derived), mode=mode, samples=samples,
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
_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
        ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow, ast.USub: operator.neg,
        ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
        ast.Eq: operator.eq, ast.NotEq: operator.ne}
_FUNCS = {"min": min, "max": max, "round": round, "int": int, "float": float, "abs": abs, "ceil": math.ceil,
          "floor": math.floor, "log2": math.log2}


def _eval(node, env):
    if isinstance(node, ast.Expression):
        return _eval(node.body, env)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str)):
        return node.value
    if isinstance(node, ast.Name):
        if node.id not in env:
            raise SpecError([f"unknown name {node.id!r}; available: {', '.join(sorted(env))}"])
        return env[node.id]
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        return _OPS[type(node.op)](_eval(node.left, env), _eval(node.right, env))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
        return _OPS[type(node.op)](_eval(node.operand, env))
    if isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _OPS:
        return _OPS[type(node.ops[0])](_eval(node.left, env), _eval(node.comparators[0], env))
    if isinstance(node, ast.IfExp):
        return _eval(node.body, env) if _eval(node.test, env) else _eval(node.orelse, env)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCS:
        return _FUNCS[node.func.id](*[_eval(a, env) for a in node.args])
    raise SpecError([f"unsupported expression element {ast.dump(node)[:60]}"])


def _check_expr(expr: str, names: list[str]) -> None:
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError as exc:
        raise SpecError([f"{expr!r}: not a valid expression ({exc.msg})"]) from None
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id not in names and node.id not in _FUNCS:
            raise SpecError([f"{expr!r}: unknown name {node.id!r}; axis names: {', '.join(names)}"])
        # reject what _eval cannot evaluate now, not at run time in every point
        ok = (isinstance(node, (ast.Expression, ast.Name, ast.Load, ast.BinOp, ast.UnaryOp, ast.IfExp))
              or type(node) in _OPS
              or (isinstance(node, ast.Compare) and len(node.ops) == 1)
              or (isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str)))
              or (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCS
                  and not node.keywords))
        if not ok:
            what = type(node).__name__ if not isinstance(node, ast.Call) else "call with keywords or of an unknown function"
            raise SpecError([f"{expr!r}: unsupported expression element ({what}); use numbers, axis names, "
                             f"+ - * / // % **, comparisons, 'a if c else b' and {', '.join(_FUNCS)}"])


# ----------------------------------------------------------------------------- points
def point_values(spec: SweepSpec, start: int = 0, stop: int | None = None) -> list[tuple]:
    """Axis values of points [start, stop), in point order (C order over the axes for products)."""
    stop = spec.n_points if stop is None else stop
    if not spec.axes:
        return [()][start:stop]
    if spec.mode == "product":
        idx = np.unravel_index(np.arange(start, stop), spec.shape)
        return [tuple(a.values[int(i[j])] for a, i in zip(spec.axes, idx)) for j in range(stop - start)]
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


def _cached_requests(scen, ss: np.random.SeedSequence):
    key = (scen.workload.model_dump_json(), "num_requests" in scen.workload.model_fields_set,  # (a trace runs whole unless it is set)
           scen.simulation.horizon_s, repr(ss.entropy), repr(ss.spawn_key), os.getcwd())
    reqs = _REQUESTS_CACHE.pop(key, None)
    if reqs is None:
        reqs = build_requests(scen.workload, scen.simulation.horizon_s, ss)
        held = sum(len(r) for r in _REQUESTS_CACHE.values())
        while _REQUESTS_CACHE and held + len(reqs) > _REQUESTS_CACHE_MAX:
            held -= len(_REQUESTS_CACHE.pop(next(iter(_REQUESTS_CACHE))))  # least recently used
    _REQUESTS_CACHE[key] = reqs  # most recently used last
    return reqs


def point_doc(spec: SweepSpec, values: tuple) -> tuple[dict, dict]:
    doc = deep_merge(DEFAULT_SCENARIO, spec.base)
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


def build_point(spec: SweepSpec, values: tuple) -> tuple[Point | None, str, dict]:
    """The point's simulation input, or (None, reason) when the configuration is invalid."""
    derived: dict = {}  # kept for invalid points too, when the expressions could be evaluated
    try:
        doc, derived = point_doc(spec, values)
        scen = parse_scenario(doc, base={})
        base_seed = scen.simulation.seed
        ss = np.random.SeedSequence([base_seed, spec.seed, _stable_key(spec, values, derived)])
        if scen.is_pipeline:
            return (scen, ss), "", derived
        return scenario_point(scen, ss, _cached_requests(scen, ss)), "", derived
    except SpecError as e:
        return None, "; ".join(e.problems), derived
    except ZeroDivisionError:
        return None, "derived expression divided by zero", derived


# ----------------------------------------------------------------------------- chunks
from .kernels.engine import REASON_NAMES  # noqa: E402

REJECT_REASONS = list(REASON_NAMES[1:])


def run_chunk(spec: SweepSpec, start: int, stop: int) -> dict[str, np.ndarray]:
    """Simulate points [start, stop); returns flat arrays (point order) of every summary variable."""
    allv = point_values(spec, start, stop)
    pts, where, reasons = [], [], []
    derived_cols: dict[str, list] = {name: [np.nan] * len(allv) for name, _, _ in spec.derived}
    for i, vals in enumerate(allv):
        pt, why, der = build_point(spec, vals)
        reasons.append(why)
        for k, v in der.items():
            derived_cols[k][i] = v
        if pt is not None:
            pts.append(pt)
            where.append(i)
    n = len(allv)
    out: dict[str, np.ndarray] = {}
    # single-client points go through the kernel together; pipeline points one call each (their
    # client sets differ). Each list of results is then scattered to its points' rows.
    is_single = np.array([isinstance(p, Point) for p in pts], bool)
    parts_ = []
    if is_single.any():
        parts_.append((np.asarray(where)[is_single], run_points([p for p in pts if isinstance(p, Point)])["summary"]))
    if not is_single.all():
        from .pipeline import pipeline_summary, run_pipeline
        rows = []
        for p in pts:
            if not isinstance(p, Point):
                scen, ss = p
                reqs = _cached_requests(scen, ss)
                rows.append(pipeline_summary(scen, run_pipeline(scen, reqs, ss)))
        parts_.append((np.asarray(where)[~is_single], {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}))
    for name, var in REGISTRY.items():
        if var.dims and var.dims not in (("reject_reason",), ("quantile",)):
            continue
        if var.dims == ("quantile",) and not sweep_quantiles(spec):
            continue
        if name in ("status", "reason"):
            continue
        shape = (n,) + ((len(REJECT_REASONS),) if var.dims == ("reject_reason",) else
                        (len(sweep_quantiles(spec)),) if var.dims else ())
        arr = np.full(shape, np.nan)
        for rows_at, summ in parts_:
            if name in summ:
                arr[rows_at] = summ[name]
        out[name] = arr
    out["status"] = np.array([0 if not r else 1 for r in reasons], np.int8)
    out["reason"] = np.array(reasons, dtype=object)
    for k, v in derived_cols.items():
        try:
            out[f"in_{k}"] = np.array(v, dtype=float)
        except (TypeError, ValueError):  # text-valued derived inputs (preset names)
            out[f"in_{k}"] = np.array(["" if x is None or x != x else str(x) for x in v], dtype=object)
    return out


def _chunks(n: int, size: int) -> list[tuple[int, int]]:
    return [(a, min(a + size, n)) for a in range(0, n, size)]


def _spec_hash(spec: SweepSpec) -> str:
    payload = json.dumps({"base": spec.base, "axes": [a.__dict__ for a in spec.axes], "derived": spec.derived,
                          "mode": spec.mode, "samples": spec.samples, "method": spec.method, "seed": spec.seed,
                          "chunk": spec.chunk_points, "version": __version__}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _save_part(path: Path, arrays: dict) -> None:
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **{k: (v.astype(str) if v.dtype == object else v) for k, v in arrays.items()})
    os.replace(tmp, path)


def _load_part(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _warm():
    """Load (or compile) the kernels once in this process."""
    from .runner import run_points
    from .scenario import scenario_point
    from .specs import parse_scenario
    pt = scenario_point(parse_scenario({"workload": {"num_requests": 4}}))
    run_points([pt])
    return os.getpid()


def _task(spec: SweepSpec, start: int, stop: int, part: str | None) -> dict | str:
    arrays = run_chunk(spec, start, stop)
    if part is None:
        return arrays
    _save_part(Path(part), arrays)
    return part


def run_sweep(spec: SweepSpec | str | Path, output: str | Path | None = None, *, scheduler: str = "serial",
              workers: int | None = None, resume: bool = False, progress: bool = False,
              chunk_points: int | None = None, client=None) -> xr.Dataset:
    """Run a sweep and return its Dataset (also written to ``output`` as netCDF when given).

    scheduler: "serial", "threads", "processes", or a dask.distributed scheduler address
    ("tcp://host:8786"); ``client`` may be an existing ``distributed.Client``. With ``output``,
    finished chunks are written to ``<output>.parts/`` as they complete; ``resume=True`` reuses
    the parts of an interrupted run of the same sweep.
    """
    if not isinstance(spec, SweepSpec):
        spec = load_sweep(spec)
    if client is None and scheduler not in ("serial", "threads", "processes") and ":" not in scheduler:
        raise SpecError([f"scheduler = {scheduler!r}: use serial, threads, processes or a dask.distributed "
                         "address such as tcp://host:8786"])
    if chunk_points is not None:
        spec = SweepSpec(**{**spec.__dict__, "chunk_points": int(chunk_points)})
    chunks = _chunks(spec.n_points, spec.chunk_points)
    parts_dir = None
    if output is not None:
        parts_dir = Path(str(output) + ".parts")
        h = _spec_hash(spec)
        if parts_dir.exists() and resume:
            mf = parts_dir / "manifest.json"
            if not mf.exists() or json.loads(mf.read_text()).get("hash") != h:
                raise SpecError([f"--resume: {parts_dir} belongs to a different sweep spec; remove it or drop --resume"])
        elif parts_dir.exists():
            for f in parts_dir.glob("chunk-*.npz"):
                f.unlink()
        parts_dir.mkdir(parents=True, exist_ok=True)
        (parts_dir / "manifest.json").write_text(json.dumps({"hash": h, "n_points": spec.n_points,
                                                             "chunks": len(chunks)}))
    todo, results = [], {}
    for k, (a, z) in enumerate(chunks):
        part = None if parts_dir is None else parts_dir / f"chunk-{k:06d}.npz"
        if part is not None and resume and part.exists():
            continue
        todo.append((k, a, z, None if part is None else str(part)))
    bar = _progress(len(chunks), len(chunks) - len(todo), progress)
    try:
        if scheduler == "serial" and client is None:
            for k, a, z, part in todo:
                results[k] = _task(spec, a, z, part)
                bar.update(1)
        else:
            _run_dask(spec, todo, results, scheduler, workers, client, bar)
    finally:
        bar.close()
    # ---- assemble ---------------------------------------------------------------------------
    flat: dict[str, list] = {}
    for k in range(len(chunks)):
        if k in results and isinstance(results[k], dict):
            arrays = results[k]
        else:
            arrays = _load_part(parts_dir / f"chunk-{k:06d}.npz")
        for name, arr in arrays.items():
            flat.setdefault(name, []).append(arr)
    cat = {k: np.concatenate(v) for k, v in flat.items()}
    ds = assemble(spec, cat)
    if output is not None:
        write_netcdf(ds, output)
    return ds


def _progress(total, done, enabled):
    from tqdm.auto import tqdm
    return tqdm(total=total, initial=done, disable=not enabled, unit="chunk", desc="sweep")


def _run_dask(spec, todo, results, scheduler, workers, client, bar):
    import dask
    if client is None and scheduler not in ("threads", "processes"):
        from distributed import Client
        client = Client(scheduler)
        owns = True
    else:
        owns = False
    if client is not None:
        from distributed import as_completed
        client.run(_warm)  # pay kernel loading once per worker, before the tasks
        futs = {client.submit(_task, spec, a, z, part, pure=False, key=f"mistfast-chunk-{k}-{_spec_hash(spec)}"): k
                for k, a, z, part in todo}
        for fut in as_completed(futs):
            results[futs[fut]] = fut.result()
            bar.update(1)
        if owns:
            client.close()
        return
    # threaded / process schedulers: one delayed task per chunk, computed in batches for progress.
    # The kernels are compiled (or loaded from numba's cache) in this process first, so worker
    # processes only load the cache; one pool serves every batch.
    _warm()
    tasks = [dask.delayed(_task)(spec, a, z, part) for k, a, z, part in todo]
    n_workers = workers or os.cpu_count() or 1
    batch = max(n_workers * 8, 1)
    pool = None
    if scheduler == "processes":
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor
        pool = ProcessPoolExecutor(n_workers, mp_context=multiprocessing.get_context("spawn"), initializer=_warm)
    try:
        for i in range(0, len(tasks), batch):
            # chunksize=1: dask's process scheduler otherwise hands 6 tasks per submission, so a batch
            # of 16 on 2 workers splits 6+4 / 6 and one worker idles for a quarter of the batch
            kw = {"pool": pool, "chunksize": 1} if pool is not None else {"num_workers": n_workers}
            outs = dask.compute(*tasks[i:i + batch], scheduler=scheduler, **kw)
            for (k, *_), o in zip(todo[i:i + batch], outs):
                results[k] = o
            bar.update(len(outs))
    finally:
        if pool is not None:
            pool.shutdown()


def assemble(spec: SweepSpec, cat: dict[str, np.ndarray]) -> xr.Dataset:
    shape = spec.shape
    dims = spec.dims
    ds = xr.Dataset()
    for name, arr in cat.items():
        if name.startswith("in_"):
            data = arr.reshape(shape)
            if data.dtype.kind in "US":
                data = data.astype(object)
            paths = {d[0]: d[1] for d in spec.derived}
            attrs = {"long_name": f"derived input {name[3:]}", "description": f"derived input {name[3:]}",
                     "spec_path": paths.get(name[3:], "")}
            if data.dtype.kind in "fiu":
                attrs["units"] = coord_attrs(name[3:], paths.get(name[3:]))["units"]
            ds[name] = xr.Variable(dims, data, attrs=attrs)
            continue
        v = REGISTRY[name]
        data = arr.reshape(shape + arr.shape[1:])
        if v.dtype.startswith("int") and np.isnan(data.astype(float)).any():
            var = xr.Variable(dims + v.dims, data.astype(float), attrs=v.attrs())
        elif v.dtype == "str":
            var = xr.Variable(dims + v.dims, data.astype(str).astype(object), attrs=v.attrs())
        else:
            var = variable(name, data, dims)
        ds[name] = var
    coords: dict[str, Any] = {"reject_reason": REJECT_REASONS}
    if "quantile" in ds.dims:
        coords["quantile"] = sweep_quantiles(spec)
    vals = point_values(spec)
    if spec.mode == "product":
        for a in spec.axes:
            coords[a.name] = list(a.values)
    else:
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
                     "n_points": spec.n_points, "n_invalid": int((cat["status"] != 0).sum()),
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


def write_netcdf(ds: xr.Dataset, path: str | Path) -> None:
    tmp = Path(str(path) + ".tmp")
    enc = {k: {"zlib": True, "complevel": 1} for k, v in ds.data_vars.items() if v.dtype != object}
    ds.to_netcdf(tmp, engine="netcdf4", encoding=enc)
    os.replace(tmp, path)


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
