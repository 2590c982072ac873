"""Questions users ask of a sweep Dataset: the best configuration per group under SLO
constraints, Pareto fronts, and a tidy table."""
from __future__ import annotations

import operator
import re

import numpy as np
import pandas as pd
import xarray as xr

_CMP = {"<=": operator.le, "<": operator.lt, ">=": operator.ge, ">": operator.gt, "==": operator.eq}


# dims of per-request, step-log and table variables (one value per label, not per point)
_NOT_POINT_DIMS = ("reject_reason", "request", "step", "left_out_reason", "client", "stage_kind", "resource")


def to_table(ds: xr.Dataset, variables: list[str] | None = None) -> pd.DataFrame:
    """One row per configuration point: the axis coordinates, inputs and summary variables."""
    names = variables or [k for k, v in ds.data_vars.items() if not set(v.dims) & set(_NOT_POINT_DIMS)]
    df = ds[names].to_dataframe().reset_index()
    return df.drop(columns=[c for c in ("point",) if c in df.columns and "point" not in ds.dims])


def parse_constraints(items) -> list[tuple[str, str, float]]:
    """``["ttft_p99_ms<=500", ...]`` or ``{"ttft_p99_ms": ("<=", 500)}`` -> [(var, op, value)]."""
    out = []
    if isinstance(items, dict):
        for k, (op, v) in items.items():
            out.append((k, op, float(v)))
        return out
    for s in items or []:
        m = re.fullmatch(r"\s*([A-Za-z_][\w]*)\s*(<=|>=|<|>|==)\s*([-+0-9.eE]+)\s*", s)
        if not m:
            raise ValueError(f"constraint {s!r}: expected VAR<=VALUE (ops: <=, <, >=, >, ==)")
        out.append((m.group(1), m.group(2), float(m.group(3))))
    return out


def best_configs(ds: xr.Dataset, objective: str = "output_tok_s_per_usd_per_hour", *, maximize: bool = True,
                 constraints=(), by: list[str] | str | None = None, n: int = 1) -> pd.DataFrame:
    """Best ``n`` valid points per group of ``by`` (axis names) that satisfy every constraint."""
    cons = parse_constraints(constraints)
    for var, _, _ in cons + [(objective, "", 0)]:
        if var not in ds:
            raise KeyError(f"{var!r} is not a variable of this Dataset; choose from {', '.join(ds.data_vars)}")
    df = to_table(ds, sorted({objective, "status", *(c[0] for c in cons)}))
    ok = (df["status"] == 0) & df[objective].notna()
    for var, op, v in cons:
        ok &= _CMP[op](df[var], v)
    df = df[ok]
    by = [by] if isinstance(by, str) else list(by or [])
    df = df.sort_values(objective, ascending=not maximize, kind="mergesort")
    if by:
        return df.groupby(by, sort=True, group_keys=False).head(n).sort_values(by, kind="mergesort").reset_index(drop=True)
    return df.head(n).reset_index(drop=True)


def pareto_front(ds: xr.Dataset, x: str = "output_tok_s", y: str = "ttft_p99_ms", *, maximize_x: bool = True,
                 maximize_y: bool = False, constraints=()) -> pd.DataFrame:
    """Valid points not dominated in (x, y), sorted by x."""
    cons = parse_constraints(constraints)
    df = to_table(ds, sorted({x, y, "status", *(c[0] for c in cons)}))
    ok = (df["status"] == 0) & df[x].notna() & df[y].notna()
    for var, op, v in cons:
        ok &= _CMP[op](df[var], v)
    df = df[ok]
    xs = df[x].to_numpy() * (1 if maximize_x else -1)
    ys = df[y].to_numpy() * (1 if maximize_y else -1)
    order = np.lexsort((-ys, -xs))  # best x first, ties best y first
    keep = []
    best_y = -np.inf
    for i in order:
        if ys[i] > best_y:
            keep.append(i)
            best_y = ys[i]
    return df.iloc[keep].sort_values(x, kind="mergesort").reset_index(drop=True)
