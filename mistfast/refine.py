"""Adaptive sweeps (``mode = "refine"``): run a coarse product grid, then bisect only the
intervals of one numeric axis where the SLO verdict changes, for a few rounds.

::

    [sweep]
    mode = "refine"
    [sweep.axes]
    "clients[0].device" = ["H100", "A100"]
    "workload.arrival.rate_rps" = [1, 2, 4, 8, 16, 32]
    [sweep.refine]
    axis = "rate_rps"                              # a numeric axis of the grid
    constraints = ["ttft_p99_ms<=500", "tpot_p99_ms<=50"]   # a point passes when every one holds
    rounds = 4                                     # bisections of each interval where the verdict flips

Each round simulates the midpoints of the intervals (between neighbouring simulated values of
``axis`` on one line of the grid, every other coordinate fixed) whose end points disagree (one
passes, the other fails or is invalid). After ``rounds`` rounds every boundary is bracketed
within 1/2^rounds of its coarse interval, at a cost of one point per boundary per round instead
of a whole denser grid. Points are seeded by their coordinates, so every simulated point is
bit-identical to the same point of a dense product sweep.

The result is a product Dataset over the coarse values plus every midpoint: points never
simulated are NaN (``status`` too, so integer variables come back as floats); the coordinate
``refine_round`` says in which round each point was simulated (0 = the coarse grid).
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import xarray as xr

from .specs import SpecError

KEYS = ("axis", "constraints", "rounds")
MAX_ROUNDS = 20


def parse_refine(table, axes) -> tuple[tuple, list[str]]:
    """(axis name, constraints, rounds) and the problems found, for a ``[sweep.refine]`` table."""
    from .analysis import parse_constraints
    from .variables import REGISTRY
    problems: list[str] = []
    if not isinstance(table, dict):
        return (), [f"sweep.refine = {table!r}: mode = 'refine' needs a [sweep.refine] table with {', '.join(KEYS)}"]
    for k in table:
        if k not in KEYS:
            problems.append(f"sweep.refine.{k}: unknown field; allowed: {', '.join(KEYS)}")
    names = [a.name for a in axes]
    axis = table.get("axis")
    if axis not in names:
        problems.append(f"sweep.refine.axis = {axis!r}: must name one of the axes ({', '.join(names) or 'none'})")
    else:
        vals = next(a.values for a in axes if a.name == axis)
        if len(vals) < 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
            problems.append(f"sweep.refine.axis = {axis!r}: the refined axis needs at least 2 numeric values, got {list(vals)}")
    cons = table.get("constraints")
    if isinstance(cons, str):
        cons = [cons]
    if not isinstance(cons, list) or not cons:
        problems.append(f"sweep.refine.constraints = {cons!r}: give a list such as [\"ttft_p99_ms<=500\"]")
        cons = []
    parsed = []
    for i, c in enumerate(cons):
        try:
            (var, op, value), = parse_constraints([str(c)])
        except ValueError as exc:
            problems.append(f"sweep.refine.constraints[{i}]: {exc}")
            continue
        if var not in REGISTRY or REGISTRY[var].dims:
            problems.append(f"sweep.refine.constraints[{i}] = {c!r}: {var!r} is not a summary variable")
        parsed.append(str(c))
    rounds = table.get("rounds", 3)
    if isinstance(rounds, bool) or not isinstance(rounds, int) or not 1 <= rounds <= MAX_ROUNDS:
        problems.append(f"sweep.refine.rounds = {rounds!r}: an integer from 1 to {MAX_ROUNDS}")
    return (axis, tuple(parsed), rounds), problems


def run_refine(spec, output=None, *, run_sweep, write_netcdf, resume: bool = False, **run_kw) -> xr.Dataset:
    """Run a ``mode = "refine"`` sweep (see the module docstring): each round is a zip sweep run by
    ``run_sweep`` with its schedulers (``run_kw``); ``write_netcdf`` writes the result (sweep.py
    passes its own: this module sits beside it and imports neither)."""
    from .analysis import _CMP, parse_constraints
    if resume:
        raise SpecError(["--resume: not available for mode = 'refine' (each round depends on the one before); "
                         "rerun without --resume"])
    axis, constraints, rounds = spec.refine
    j = [a.name for a in spec.axes].index(axis)
    integer = all(isinstance(v, int) for v in spec.axes[j].values)
    cons = parse_constraints(list(constraints))
    verdict: dict[tuple, bool] = {}
    found: list[xr.Dataset] = []
    points = [tuple(a.values[i] for a, i in zip(spec.axes, idx)) for idx in np.ndindex(*spec.shape)]
    for r in range(rounds + 1):
        if not points:
            break
        sub = replace(spec, mode="zip", refine=(),
                      axes=tuple(replace(a, values=tuple(p[k] for p in points)) for k, a in enumerate(spec.axes)))
        ds = run_sweep(sub, **run_kw)
        ok = (ds.status == 0).values
        for var, op, value in cons:
            ok &= np.asarray(_CMP[op](ds[var].values, value))
        verdict.update(zip(points, ok.tolist()))
        found.append(ds.assign_coords(refine_round=("point", np.full(len(points), float(r)))))
        points = [] if r == rounds else _midpoints(verdict, j, integer)
    ds = _product(spec, found, axis)
    ds.attrs.update({"sweep_mode": "refine", "n_points": sum(len(d.point) for d in found),
                     "n_invalid": int(sum(int((d.status != 0).sum()) for d in found)),
                     "n_points_dense": int(np.prod([ds.sizes[a.name] for a in spec.axes])),
                     "refine_json": json.dumps({"axis": axis, "constraints": list(constraints), "rounds": rounds})})
    if output is not None:
        write_netcdf(ds, Path(output))
    return ds


def _midpoints(verdict: dict[tuple, bool], j: int, integer: bool) -> list[tuple]:
    """Midpoints of neighbouring simulated values of axis ``j`` on one line whose verdicts differ."""
    lines: dict[tuple, list] = {}
    for p in verdict:
        lines.setdefault(p[:j] + p[j + 1:], []).append(p[j])
    out = []
    for rest, vals in lines.items():
        vals.sort()
        for a, b in zip(vals, vals[1:]):
            pa, pb = rest[:j] + (a,) + rest[j:], rest[:j] + (b,) + rest[j:]
            if verdict[pa] == verdict[pb]:
                continue
            m = (a + b) // 2 if integer else (a + b) / 2
            if a < m < b:
                out.append(rest[:j] + (m,) + rest[j:])
    return out


def _product(spec, found: list[xr.Dataset], axis: str) -> xr.Dataset:
    """One product Dataset over the coarse values and every midpoint (NaN where not simulated)."""
    names = [a.name for a in spec.axes]
    pts = xr.concat([d.drop_vars("point") for d in found], dim="point", combine_attrs="override")
    if len(names) == 1:  # one axis: no multi-index to unstack
        ds = pts.swap_dims(point=names[0])
    else:
        ds = pts.set_index(point=names).unstack("point")
    order = {a.name: list(a.values) for a in spec.axes}
    order[axis] = sorted(set(ds[axis].values.tolist()))
    ds = ds.reindex(order).transpose(*names, ...)
    for a in spec.axes:
        ds[a.name].attrs.update({"spec_path": a.path, "long_name": f"sweep axis {a.path}"})
    ds["refine_round"].attrs.update({"long_name": "refinement round that simulated the point (0 = coarse grid; "
                                                  "NaN = not simulated)"})
    return ds
