"""The lean path of ``mistfast run``: one scenario to summary numbers without building an xarray
Dataset (importing xarray and pandas costs more than simulating a small scenario), plus the
one-time compilation notice and timing that leaves kernel loading out.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

COMPILE_NOTICE = "compiling kernels (about a minute, once per install) ..."

# compiled entry points a command needs, by kernel module (numba cache index files start so)
_ENTRY_POINTS = {"single": ("cluster._simulate_single_points_serial", "metrics.summarize_points"),
                 "pipeline": ("cluster.simulate_cluster", "metrics.summarize_points")}


def kernels_cached(kind: str = "single") -> bool:
    """Are the kernels of ``kind`` (single | pipeline) in numba's on-disk cache for this version
    of the sources and this Python? (When caching is off they never are.)"""
    from ._numba import _CACHE_DIR, CACHE
    if not CACHE or _CACHE_DIR is None:
        return False
    tag = f"py{sys.version_info.major}{sys.version_info.minor}.nbi"
    names = [p.name for p in Path(_CACHE_DIR).rglob(f"*{tag}")]
    return all(any(n.startswith(prefix) for n in names) for prefix in _ENTRY_POINTS[kind])


def notice_if_compiling(kind: str = "single", echo=None) -> None:
    """Say once, before a long silence, that the kernels are being compiled."""
    if not kernels_cached(kind):
        (echo or (lambda m: print(m, file=sys.stderr, flush=True)))(COMPILE_NOTICE)


def _tiny(spec):
    """The scenario with a handful of requests: loads (or compiles) the same kernels."""
    wl = spec.workload.model_copy(update={"num_requests": min(spec.workload.num_requests, 4)})
    return spec.model_copy(update={"workload": wl})


def load_kernels(spec, dataset: bool = False) -> float:
    """Load the kernels ``spec`` needs (from numba's cache, or compile them); returns seconds.
    ``dataset``: also build a Dataset once (xarray and pandas set up much on first use)."""
    t0 = time.perf_counter()
    if dataset:
        from .scenario import simulate
        simulate(_tiny(spec))
    else:
        summary_of(_tiny(spec))
    return time.perf_counter() - t0


def summary_of(spec) -> dict[str, np.ndarray]:
    """Summary variables of one scenario (arrays of length 1), as ``simulate`` computes them."""
    from .runner import summaries
    from .scenario import any_point
    return summaries([any_point(spec)])[0][1]


def timed_summary(spec) -> tuple[dict[str, float], float, float]:
    """(summary scalars, simulation seconds, kernel-loading seconds): the simulation time
    excludes imports and compilation, which are paid once per process."""
    load_s = load_kernels(spec)
    t0 = time.perf_counter()
    s = summary_of(spec)
    sim_s = time.perf_counter() - t0
    return {k: np.asarray(v)[0] for k, v in s.items()}, sim_s, load_s
