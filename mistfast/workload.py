"""Workload inputs: arrival processes, length distributions and trace loaders (MODEL.md §1.4).

Pure numpy (pandas for CSV parsing, scipy only inside the Weibull solver). Every stochastic
function takes an explicit ``numpy.random.Generator`` so results are bit-reproducible.

Main types
----------
``Requests``        struct of arrays sorted by arrival time (stable), with Mooncake prefix-block
                    hash ids stored as CSR (``hash_offsets``/``hash_ids``).
``ServeGenClient``  one ServeGen client (``chunk-N-trace.csv`` + ``chunk-N-dataset.json``).

Units: seconds (float64) for time, tokens (int64) for lengths.
"""
from __future__ import annotations

import ast
import csv
import functools
import gzip
import io
import json
import math
import numbers
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = [
    "WorkloadError",
    "Requests",
    "ARRIVAL_PROCESSES",
    "LENGTH_DISTS",
    "TRACE_FORMATS",
    "arrival_times",
    "sample_lengths",
    "load_azure_trace",
    "load_mooncake_trace",
    "load_length_trace",
    "load_trace",
    "ServeGenClient",
    "load_servegen",
    "servegen_requests",
]

ARRIVAL_PROCESSES = ("poisson", "gamma", "weibull", "uniform", "normal", "bursty", "offline")
LENGTH_DISTS = ("fixed", "normal", "lognormal", "uniform", "empirical", "dataset")
TRACE_FORMATS = ("azure", "mooncake", "lengths")
SERVEGEN_DISTS = ("Gamma", "Weibull", "Exponential")
MOONCAKE_BLOCK_TOKENS = 512

_I64 = np.int64
_F64 = np.float64
_INT_SET = frozenset({int})


class WorkloadError(ValueError):
    """Bad workload input. The message names the file/field, the offending value or row, and
    what is allowed."""


# ----------------------------------------------------------------------------------------------
# small validation helpers
# ----------------------------------------------------------------------------------------------
def _is_int(x: Any) -> bool:
    return isinstance(x, (numbers.Integral, np.integer)) and not isinstance(x, (bool, np.bool_))


def _check_count(name: str, n: Any) -> int:
    if not _is_int(n) or int(n) < 0:
        raise WorkloadError(f"{name} must be a non-negative integer, got {n!r}")
    return int(n)


def _check_pos(name: str, x: Any, *, allow_zero: bool = False) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        raise WorkloadError(f"{name} must be a finite number {'>= 0' if allow_zero else '> 0'}, "
                            f"got {x!r}") from None
    if isinstance(x, (bool, np.bool_)) or not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise WorkloadError(f"{name} must be a finite number {'>= 0' if allow_zero else '> 0'}, "
                            f"got {x!r}")
    return v


def _check_finite(name: str, x: Any) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        raise WorkloadError(f"{name} must be a finite number, got {x!r}") from None
    if not math.isfinite(v):
        raise WorkloadError(f"{name} must be a finite number, got {x!r}")
    return v


def _as_int_tokens(name: str, a: Any) -> np.ndarray:
    arr = np.asarray(a)
    if arr.ndim != 1:
        raise WorkloadError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.dtype.kind in "iu":
        return arr.astype(_I64, copy=True)
    if arr.size == 0:
        return np.zeros(0, _I64)
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr) | (arr != np.round(arr))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise WorkloadError(f"{name}[{i}] = {arr[i]!r} is not an integer token count")
        return arr.astype(_I64)
    raise WorkloadError(f"{name} must be an integer array, got dtype {arr.dtype}")


# ----------------------------------------------------------------------------------------------
# CSR helpers
# ----------------------------------------------------------------------------------------------
def _csr_take(offsets: np.ndarray, ids: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gather rows ``idx`` (any order) of a CSR (offsets, ids)."""
    idx = np.asarray(idx, dtype=_I64)
    starts = offsets[:-1][idx]
    lens = offsets[1:][idx] - starts
    new_off = np.zeros(idx.size + 1, _I64)
    np.cumsum(lens, out=new_off[1:])
    total = int(new_off[-1])
    if total == 0:
        return new_off, np.zeros(0, _I64)
    seg = np.repeat(np.arange(idx.size, dtype=_I64), lens)
    gather = starts[seg] + (np.arange(total, dtype=_I64) - new_off[:-1][seg])
    return new_off, ids[gather]


def _csr_slice(offsets: np.ndarray, ids: np.ndarray, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
    off = offsets[lo:hi + 1]
    return off - off[0], ids[off[0]:off[-1]]


def _csr_from_lists(lists: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    lens = np.fromiter((len(x) for x in lists), dtype=_I64, count=len(lists))
    off = np.zeros(len(lists) + 1, _I64)
    np.cumsum(lens, out=off[1:])
    ids = np.fromiter((h for x in lists for h in x), dtype=_I64, count=int(off[-1]))
    return off, ids


# ----------------------------------------------------------------------------------------------
# Requests
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Requests:
    """Struct of arrays, sorted by arrival (stable sort: ties keep input order).

    The constructor copies and validates its inputs and sorts them by arrival if needed (hash
    rows follow their request). ``hash_offsets`` is CSR into ``hash_ids`` (length n+1; all zeros
    if the workload has no hashes); each id stands for one ``hash_block_tokens``-token prompt
    block. ``eq=False``: arrays do not compare with ``==``; use :meth:`equals`.
    """

    arrival_s: np.ndarray
    input_tokens: np.ndarray
    output_tokens: np.ndarray
    hash_offsets: np.ndarray
    hash_ids: np.ndarray
    hash_block_tokens: int = MOONCAKE_BLOCK_TOKENS

    def __post_init__(self) -> None:
        arr = np.array(self.arrival_s, dtype=_F64, copy=True)
        if arr.ndim != 1:
            raise WorkloadError(f"arrival_s must be 1-D, got shape {arr.shape}")
        n = arr.size
        inp = _as_int_tokens("input_tokens", self.input_tokens)
        out = _as_int_tokens("output_tokens", self.output_tokens)
        if inp.size != n or out.size != n:
            raise WorkloadError(f"arrival_s, input_tokens, output_tokens must have equal lengths, "
                                f"got {n}, {inp.size}, {out.size}")
        bad = ~np.isfinite(arr) | (arr < 0)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise WorkloadError(f"arrival_s[{i}] = {arr[i]!r}: arrival times must be finite and >= 0")
        for name, a in (("input_tokens", inp), ("output_tokens", out)):
            if n and a.min() < 1:
                i = int(np.argmin(a))
                raise WorkloadError(f"{name}[{i}] = {int(a[i])}: token counts must be >= 1")
        off = _as_int_tokens("hash_offsets", self.hash_offsets)
        ids = np.asarray(self.hash_ids)
        ids = np.zeros(0, _I64) if ids.size == 0 else _as_int_tokens("hash_ids", ids)
        if off.size != n + 1:
            raise WorkloadError(f"hash_offsets must have length n+1 = {n + 1}, got {off.size}")
        if off[0] != 0 or off[-1] != ids.size or (n and np.any(np.diff(off) < 0)):
            raise WorkloadError(f"hash_offsets must start at 0, be non-decreasing and end at "
                                f"len(hash_ids) = {ids.size}; got first {int(off[0])}, last {int(off[-1])}")
        hbt = self.hash_block_tokens
        if not _is_int(hbt) or int(hbt) < 1:
            raise WorkloadError(f"hash_block_tokens must be an integer >= 1, got {hbt!r}")
        if n > 1 and np.any(arr[1:] < arr[:-1]):
            perm = np.argsort(arr, kind="stable")
            arr, inp, out = arr[perm], inp[perm], out[perm]
            off, ids = _csr_take(off, ids, perm)
        object.__setattr__(self, "arrival_s", arr)
        object.__setattr__(self, "input_tokens", inp)
        object.__setattr__(self, "output_tokens", out)
        object.__setattr__(self, "hash_offsets", off)
        object.__setattr__(self, "hash_ids", ids)
        object.__setattr__(self, "hash_block_tokens", int(hbt))

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def from_arrays(cls, arrival_s, input_tokens, output_tokens,
                    hash_ids: Sequence[Sequence[int]] | None = None, *,
                    hash_block_tokens: int = MOONCAKE_BLOCK_TOKENS) -> "Requests":
        """Build from plain arrays; ``hash_ids`` is one id list per request (or None)."""
        n = np.asarray(arrival_s).size
        if hash_ids is None:
            off, ids = np.zeros(n + 1, _I64), np.zeros(0, _I64)
        else:
            if len(hash_ids) != n:
                raise WorkloadError(f"hash_ids needs one list per request ({n}), got {len(hash_ids)}")
            off, ids = _csr_from_lists(hash_ids)
        return cls(arrival_s, input_tokens, output_tokens, off, ids, hash_block_tokens)

    def _replace(self, arrival_s, input_tokens, output_tokens, hash_offsets, hash_ids) -> "Requests":
        return Requests(arrival_s, input_tokens, output_tokens, hash_offsets, hash_ids,
                        self.hash_block_tokens)

    def _take(self, idx: np.ndarray) -> "Requests":
        off, ids = _csr_take(self.hash_offsets, self.hash_ids, idx)
        return self._replace(self.arrival_s[idx], self.input_tokens[idx], self.output_tokens[idx], off, ids)

    def _slice(self, lo: int, hi: int) -> "Requests":
        off, ids = _csr_slice(self.hash_offsets, self.hash_ids, lo, hi)
        return self._replace(self.arrival_s[lo:hi], self.input_tokens[lo:hi],
                             self.output_tokens[lo:hi], off, ids)

    # -- queries ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.arrival_s.size)

    @property
    def has_hashes(self) -> bool:
        return self.hash_ids.size > 0

    def hashes(self, i: int) -> np.ndarray:
        """Prefix-block hash ids of request ``i`` (a view)."""
        return self.hash_ids[self.hash_offsets[i]:self.hash_offsets[i + 1]]

    @property
    def duration_s(self) -> float:
        """Time from 0 to the last arrival (0 for an empty set)."""
        return float(self.arrival_s[-1]) if len(self) else 0.0

    def equals(self, other: "Requests") -> bool:
        return (isinstance(other, Requests) and self.hash_block_tokens == other.hash_block_tokens
                and all(np.array_equal(getattr(self, f), getattr(other, f))
                        for f in ("arrival_s", "input_tokens", "output_tokens", "hash_offsets", "hash_ids")))

    def __repr__(self) -> str:
        n = len(self)
        if n == 0:
            return "Requests(n=0)"
        return (f"Requests(n={n}, arrivals {self.arrival_s[0]:.3f}..{self.arrival_s[-1]:.3f} s, "
                f"mean in {self.input_tokens.mean():.1f}, mean out {self.output_tokens.mean():.1f}, "
                f"hash ids {self.hash_ids.size})")

    # -- transformations -------------------------------------------------------------------
    def window(self, start_s: float, end_s: float) -> "Requests":
        """Requests arriving in ``[start_s, end_s)``, shifted so ``start_s`` maps to 0."""
        start = _check_finite("window start_s", start_s)
        try:
            end = float(end_s)
        except (TypeError, ValueError):
            raise WorkloadError(f"window end_s must be a number, got {end_s!r}") from None
        if math.isnan(end) or end < start:
            raise WorkloadError(f"window end_s must be >= start_s = {start}, got {end_s!r}")
        lo = int(np.searchsorted(self.arrival_s, start, side="left"))
        hi = int(np.searchsorted(self.arrival_s, end, side="left"))
        r = self._slice(lo, hi)
        return r._replace(np.maximum(r.arrival_s - start, 0.0), r.input_tokens, r.output_tokens,
                          r.hash_offsets, r.hash_ids)

    def scale_rate(self, factor: float) -> "Requests":
        """Multiply the arrival rate by ``factor`` (arrival times divided by it)."""
        f = _check_pos("scale_rate factor", factor)
        return self._replace(self.arrival_s / f, self.input_tokens, self.output_tokens,
                             self.hash_offsets, self.hash_ids)

    def subsample(self, n_or_fraction: int | float, rng: np.random.Generator) -> "Requests":
        """Uniform random subset without replacement, arrival order kept.

        An integer is a count (0..len); a float is a fraction in [0, 1] (count rounded half up).
        """
        n = len(self)
        if _is_int(n_or_fraction):
            k = int(n_or_fraction)
            if not 0 <= k <= n:
                raise WorkloadError(f"subsample count must be in [0, {n}], got {n_or_fraction!r}")
        elif isinstance(n_or_fraction, (float, np.floating)):
            f = float(n_or_fraction)
            if not (0.0 <= f <= 1.0):
                raise WorkloadError(f"subsample fraction must be in [0, 1] (pass an int for a count), "
                                    f"got {n_or_fraction!r}")
            k = int(math.floor(f * n + 0.5))
        else:
            raise WorkloadError(f"subsample takes an int count or a float fraction, got {n_or_fraction!r}")
        idx = np.sort(rng.choice(n, size=k, replace=False)) if k < n else np.arange(n)
        return self._take(idx)

    def head(self, n: int) -> "Requests":
        """The first ``n`` requests by arrival (all of them if fewer)."""
        k = _check_count("head n", n)
        return self._slice(0, min(k, len(self)))

    def with_arrivals(self, arrival_s) -> "Requests":
        """Same requests with new arrival times (re-sorted stably; hashes follow)."""
        a = np.asarray(arrival_s, dtype=_F64)
        if a.shape != (len(self),):
            raise WorkloadError(f"with_arrivals needs {len(self)} arrival times, got shape {a.shape}")
        return self._replace(a, self.input_tokens, self.output_tokens, self.hash_offsets, self.hash_ids)


# ----------------------------------------------------------------------------------------------
# arrival processes
# ----------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=256)
def _weibull_shape_for_cv(cv: float) -> float:
    """Weibull shape k with CV(k) = sqrt(Γ(1+2/k)/Γ(1+1/k)² − 1) = cv (solved in log space)."""
    from scipy.optimize import brentq
    from scipy.special import gammaln

    target = math.log1p(cv * cv)

    def f(k: float) -> float:
        return float(gammaln(1.0 + 2.0 / k) - 2.0 * gammaln(1.0 + 1.0 / k)) - target

    lo, hi = 0.02, 1.0e5
    if not (f(lo) > 0 > f(hi)):
        raise WorkloadError(f"cv = {cv!r} is outside the range a Weibull inter-arrival time can reach "
                            f"(about {math.sqrt(math.expm1(f(hi) + target)):.2g}.."
                            f"{math.sqrt(math.expm1(min(f(lo) + target, 700.0))):.2g})")
    return float(brentq(f, lo, hi, xtol=1e-14, rtol=1e-13, maxiter=500))


def _burst_mean_factor(f: float, w: float) -> float:
    """Time-average of rate(t)/rate for the bursty process: 1 + (f−1)·(1/2π)∫₀^π sin^w."""
    cw = math.exp(math.lgamma((w + 1) / 2) - math.lgamma(w / 2 + 1)) / (2.0 * math.sqrt(math.pi))
    return 1.0 + (f - 1.0) * cw


def bursty_rate(t: np.ndarray, rate_rps: float, burst_factor: float = 3.0, burst_freq: float = 0.1,
                burst_power: float = 4.0) -> np.ndarray:
    """Instantaneous rate of the bursty process: rate·(1 + (f−1)·sin(2πνt)^w) where sin > 0,
    else rate."""
    s = np.sin(2.0 * np.pi * burst_freq * np.asarray(t, dtype=_F64))
    np.maximum(s, 0.0, out=s)
    w = float(burst_power)
    if w.is_integer() and 1 <= w <= 64:  # exponentiation by squaring: ~10x faster than pow()
        k, acc, base = int(w), None, s
        while k:
            if k & 1:
                acc = base.copy() if acc is None else acc * base
            k >>= 1
            if k:
                base = base * base
        s = acc
    else:
        s = s ** w
    return rate_rps * (1.0 + (burst_factor - 1.0) * s)


def arrival_times(process: str, n: int, rng: np.random.Generator, *, rate_rps: float | None = None,
                  cv: float = 1.0, burst_factor: float = 3.0, burst_freq: float = 0.1,
                  burst_power: float = 4.0) -> np.ndarray:
    """``n`` sorted float64 arrival times (s) of a renewal / modulated process.

    The first gap is included (first arrival > 0), except ``uniform`` (t_i = i/rate) and
    ``offline`` (all 0). ``gamma``/``weibull`` gaps have mean 1/rate and coefficient of
    variation ``cv``; ``normal`` gaps are N(1/rate, sd 1/(4·rate)) clipped at 0; ``bursty`` is a
    non-homogeneous Poisson process (thinning) with
    rate(t) = rate·(1 + (f−1)·sin(2πνt)^w) while sin > 0, else rate — its long-run mean rate is
    rate·(1 + (f−1)·Γ((w+1)/2)/(2√π·Γ(w/2+1))), i.e. 1.375·rate for f=3, w=4.
    """
    if process not in ARRIVAL_PROCESSES:
        raise WorkloadError(f"unknown arrival process {process!r}; allowed: {', '.join(ARRIVAL_PROCESSES)}")
    n = _check_count("n", n)
    if process == "offline":
        return np.zeros(n, _F64)
    if rate_rps is None:
        raise WorkloadError(f"arrival process {process!r} needs rate_rps (> 0)")
    rate = _check_pos("rate_rps", rate_rps)
    mean_gap = 1.0 / rate
    if n == 0:
        return np.zeros(0, _F64)
    if process == "uniform":
        return np.arange(n, dtype=_F64) * mean_gap
    if process == "poisson":
        return np.cumsum(rng.exponential(mean_gap, n))
    if process == "normal":
        return np.cumsum(np.maximum(rng.normal(mean_gap, 0.25 * mean_gap, n), 0.0))
    if process in ("gamma", "weibull"):
        c = _check_pos("cv", cv)
        if process == "gamma":
            k = 1.0 / (c * c)
            return np.cumsum(rng.gamma(k, mean_gap / k, n))
        k = _weibull_shape_for_cv(c)
        scale = mean_gap / math.gamma(1.0 + 1.0 / k)
        return np.cumsum(scale * rng.weibull(k, n))
    # bursty
    f = _check_pos("burst_factor", burst_factor)
    nu = _check_pos("burst_freq", burst_freq)
    w = _check_pos("burst_power", burst_power)
    lam_max = rate * max(f, 1.0)
    accept = _burst_mean_factor(f, w) * rate / lam_max
    chunks: list[np.ndarray] = []
    need, t = n, 0.0
    while need > 0:
        m = int(need / accept * 1.1) + 64
        cand = t + np.cumsum(rng.exponential(1.0 / lam_max, m))
        u = rng.random(m)
        acc = cand[u * lam_max < bursty_rate(cand, rate, f, nu, w)]
        acc = acc[:need]
        chunks.append(acc)
        need -= acc.size
        t = float(cand[-1])
    return np.concatenate(chunks)


# ----------------------------------------------------------------------------------------------
# length distributions
# ----------------------------------------------------------------------------------------------
_DIST_PARAMS = {
    "fixed": ({"value"}, set()),
    "normal": ({"mean", "std"}, set()),
    "lognormal": ({"mean"}, {"std", "sigma"}),
    "uniform": ({"low", "high"}, set()),
    "empirical": ({"values"}, {"probs"}),
    "dataset": ({"dataset"}, {"value", "range_ratio", "side"}),
}


def _empirical_pmf(values: Any, probs: Any, where: str = "empirical") -> tuple[np.ndarray, np.ndarray | None]:
    if isinstance(values, Mapping):
        if probs is not None:
            raise WorkloadError(f"{where}: give probs either in the values dict or as probs, not both")
        probs = list(values.values())
        values = list(values.keys())
    v = np.asarray(values, dtype=_F64).ravel()
    if v.size == 0:
        raise WorkloadError(f"{where}: values is empty; need at least one value")
    if not np.all(np.isfinite(v)):
        raise WorkloadError(f"{where}: values must be finite, got {v[~np.isfinite(v)][0]!r}")
    if probs is None:
        return v, None
    p = np.asarray(probs, dtype=_F64).ravel()
    if p.size != v.size:
        raise WorkloadError(f"{where}: probs has {p.size} entries but values has {v.size}")
    if not np.all(np.isfinite(p)) or np.any(p < 0) or p.sum() <= 0:
        raise WorkloadError(f"{where}: probs must be finite, >= 0 and not all zero")
    return v, p / p.sum()


def sample_lengths(dist: str, n: int, rng: np.random.Generator, *, value=None, mean=None, std=None,
                   sigma=None, low=None, high=None, values=None, probs=None, min_tokens: int = 1,
                   max_tokens: int | None = None, dataset=None, side=None, range_ratio=None) -> np.ndarray:
    """``n`` int64 token lengths, rounded to the nearest integer and clamped to
    [min_tokens, max_tokens] (min_tokens >= 1, so never 0).

    fixed: ``value``. normal: ``mean``, ``std``. lognormal: ``mean`` of the lengths and either
    ``std`` of the lengths (σ² = ln(1 + std²/mean²)) or the log-space ``sigma``; μ = ln(mean) − σ²/2.
    uniform: integers in [``low``, ``high``] inclusive. empirical: draws from ``values`` (uniformly,
    or with ``probs``; ``values`` may also be a {value: prob} dict). Parameters that do not belong to
    the chosen distribution are rejected. dataset: one ``side`` ("input", the default, or "output")
    of a named benchmark dataset (:mod:`mistfast.datasets`); ``value`` and ``range_ratio`` set the
    nominal length and spread of the parametric ones (random, sonnet).
    """
    if dist not in LENGTH_DISTS:
        raise WorkloadError(f"unknown length distribution {dist!r}; allowed: {', '.join(LENGTH_DISTS)}")
    n = _check_count("n", n)
    given = {k: v for k, v in dict(value=value, mean=mean, std=std, sigma=sigma, low=low, high=high,
                                   values=values, probs=probs, dataset=dataset, side=side,
                                   range_ratio=range_ratio).items() if v is not None}
    required, optional = _DIST_PARAMS[dist]
    missing = required - given.keys()
    if missing:
        raise WorkloadError(f"length distribution {dist!r} needs {', '.join(sorted(missing))}")
    extra = given.keys() - required - optional
    if extra:
        raise WorkloadError(f"length distribution {dist!r} does not take {', '.join(sorted(extra))} "
                            f"(allowed: {', '.join(sorted(required | optional))})")
    if not _is_int(min_tokens) or min_tokens < 1:
        raise WorkloadError(f"min_tokens must be an integer >= 1, got {min_tokens!r}")
    if max_tokens is not None and (not _is_int(max_tokens) or max_tokens < min_tokens):
        raise WorkloadError(f"max_tokens must be an integer >= min_tokens = {min_tokens}, got {max_tokens!r}")

    if dist == "fixed":
        x = np.full(n, _check_pos("fixed value", value), _F64)
    elif dist == "normal":
        x = rng.normal(_check_finite("normal mean", mean), _check_pos("normal std", std, allow_zero=True), n)
    elif dist == "lognormal":
        m = _check_pos("lognormal mean", mean)
        if (std is None) == (sigma is None):
            raise WorkloadError("lognormal needs exactly one of std (of the lengths) or sigma (log-space)")
        if std is not None:
            s2 = math.log1p((_check_pos("lognormal std", std, allow_zero=True) / m) ** 2)
        else:
            s2 = _check_pos("lognormal sigma", sigma, allow_zero=True) ** 2
        x = rng.lognormal(math.log(m) - 0.5 * s2, math.sqrt(s2), n)
    elif dist == "uniform":
        lo, hi = _check_finite("uniform low", low), _check_finite("uniform high", high)
        if lo != round(lo) or hi != round(hi) or hi < lo:
            raise WorkloadError(f"uniform needs integers low <= high, got low={low!r}, high={high!r}")
        x = rng.integers(int(lo), int(hi) + 1, n).astype(_F64)
    elif dist == "dataset":
        x = _dataset_side(dataset, side or "input", n, rng, value, range_ratio).astype(_F64)
    else:
        v, p = _empirical_pmf(values, probs)
        x = rng.choice(v, size=n, p=p)
    hi = np.inf if max_tokens is None else float(max_tokens)
    return np.clip(np.rint(x), float(min_tokens), hi).astype(_I64)


def dataset_options(side: str, value=None, range_ratio=None) -> dict:
    """Options of a parametric dataset for one side: its nominal length (``value``) and spread."""
    return {f"{side}_len": value, "range_ratio": range_ratio}


def _dataset_side(name, side: str, n: int, rng: np.random.Generator, value=None, range_ratio=None) -> np.ndarray:
    from .datasets import DatasetError, sample_side
    try:
        return sample_side(name, side, n, rng, **dataset_options(side, value, range_ratio))
    except DatasetError as exc:
        raise WorkloadError(str(exc)) from None


def sample_dataset_pairs(name, n: int, rng: np.random.Generator, *, input_len=None, output_len=None,
                         range_ratio=None) -> tuple[np.ndarray, np.ndarray]:
    """``n`` jointly drawn (input, output) length pairs of a named benchmark dataset (int64)."""
    from .datasets import DatasetError, sample_pairs
    n = _check_count("n", n)
    try:
        return sample_pairs(name, n, rng, input_len=input_len, output_len=output_len, range_ratio=range_ratio)
    except DatasetError as exc:
        raise WorkloadError(str(exc)) from None


# ----------------------------------------------------------------------------------------------
# trace loaders
# ----------------------------------------------------------------------------------------------
def _check_file(path: Any) -> Path:
    p = Path(os.fspath(path))
    if not p.exists():
        raise WorkloadError(f"trace file not found: {p}")
    if not p.is_file():
        raise WorkloadError(f"trace path is not a file: {p}")
    return p


def _open_text(p: Path):
    if p.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(p, "rb"), encoding="utf-8")
    return open(p, "r", encoding="utf-8")


def _read_csv(p: Path, required: Sequence[str], what: str):
    import pandas as pd

    try:
        df = pd.read_csv(p, skip_blank_lines=False, skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise WorkloadError(f"{p}: empty {what} file (no header, no rows)") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise WorkloadError(f"{p}: malformed {what} CSV: {e}") from None
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise WorkloadError(f"{p}: missing column(s) {', '.join(missing)}; found columns: "
                            f"{', '.join(map(str, df.columns)) or '(none)'}")
    df = df[~df.isna().all(axis=1)]  # blank lines; the index keeps file positions (line = index + 2)
    if len(df) == 0:
        raise WorkloadError(f"{p}: empty {what} (header only, no rows)")
    return df


def _csv_int_column(p: Path, df, col: str, *, zero_ok_clamp: bool) -> np.ndarray:
    """Integer token column; line numbers are 1-based file lines (header = line 1)."""
    import pandas as pd

    s = df[col]
    if s.dtype.kind in "iu":
        a = s.to_numpy(dtype=_I64)
    else:
        num = pd.to_numeric(s, errors="coerce").to_numpy(dtype=_F64, na_value=np.nan)
        bad = ~np.isfinite(num) | (num != np.round(num))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise WorkloadError(f"{p}: line {int(df.index[i]) + 2}: column {col} value {s.iloc[i]!r} is not "
                                f"an integer token count")
        a = num.astype(_I64)
    lim = 0 if zero_ok_clamp else 1
    bad = a < lim
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        allowed = ">= 0 (0 is clamped to 1)" if zero_ok_clamp else ">= 1"
        kind = "negative" if a[i] < 0 else "zero"
        raise WorkloadError(f"{p}: line {int(df.index[i]) + 2}: column {col} value {int(a[i])} is {kind}; "
                            f"token counts must be {allowed}")
    if zero_ok_clamp:
        a = np.maximum(a, 1)
    return a


def load_azure_trace(path) -> Requests:
    """Azure LLM inference trace (2023/2024 CSV): ``TIMESTAMP`` (datetime string),
    ``ContextTokens``, ``GeneratedTokens``.

    Arrival = seconds since the earliest timestamp (= the first row in the published, sorted
    files). ``GeneratedTokens`` = 0 is clamped to 1; negative values and ``ContextTokens`` < 1 are
    errors. No prefix hashes.
    """
    import pandas as pd

    p = _check_file(path)
    df = _read_csv(p, ("TIMESTAMP", "ContextTokens", "GeneratedTokens"), "Azure trace")
    raw = df["TIMESTAMP"].astype("string").str.strip()
    ts = pd.to_datetime(raw, format="%Y-%m-%d %H:%M:%S.%f", errors="coerce")
    nat = ts.isna().to_numpy()
    if nat.any():  # other ISO-like spellings (no fraction, 'T' separator, ...)
        ts2 = pd.to_datetime(raw[nat], format="ISO8601", errors="coerce")
        ts = ts.copy()
        ts[nat] = ts2
        nat = ts.isna().to_numpy()
        if nat.any():
            i = int(np.flatnonzero(nat)[0])
            raise WorkloadError(f"{p}: line {int(df.index[i]) + 2}: column TIMESTAMP value {df['TIMESTAMP'].iloc[i]!r} "
                                f"is not a datetime like '2023-11-16 18:15:46.6805900'")
    t = (ts - ts.min()).dt.total_seconds().to_numpy(dtype=_F64)
    inp = _csv_int_column(p, df, "ContextTokens", zero_ok_clamp=False)
    out = _csv_int_column(p, df, "GeneratedTokens", zero_ok_clamp=True)
    n = t.size
    return Requests(t, inp, out, np.zeros(n + 1, _I64), np.zeros(0, _I64), MOONCAKE_BLOCK_TOKENS)


def load_length_trace(path) -> Requests:
    """Length-only CSV (Vidur ``processed_traces`` format): ``num_prefill_tokens``,
    ``num_decode_tokens``. Arrivals are all 0 (replace them with ``with_arrivals``), unless an
    ``arrived_at`` column (seconds, Vidur's splitwise_* files) is present, which is then used."""
    p = _check_file(path)
    df = _read_csv(p, ("num_prefill_tokens", "num_decode_tokens"), "length trace")
    inp = _csv_int_column(p, df, "num_prefill_tokens", zero_ok_clamp=False)
    out = _csv_int_column(p, df, "num_decode_tokens", zero_ok_clamp=True)
    n = inp.size
    if "arrived_at" in df.columns:
        import pandas as pd

        t = pd.to_numeric(df["arrived_at"], errors="coerce").to_numpy(dtype=_F64, na_value=np.nan)
        bad = ~np.isfinite(t) | (t < 0)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise WorkloadError(f"{p}: line {int(df.index[i]) + 2}: column arrived_at value {df['arrived_at'].iloc[i]!r} "
                                f"must be a finite number of seconds >= 0")
    else:
        t = np.zeros(n, _F64)
    return Requests(t, inp, out, np.zeros(n + 1, _I64), np.zeros(0, _I64), MOONCAKE_BLOCK_TOKENS)


def load_mooncake_trace(path) -> Requests:
    """Mooncake FAST'25 JSONL: ``timestamp`` (ms), ``input_length``, ``output_length``,
    ``hash_ids`` (512-token prefix blocks; optional per line, empty if absent).

    ``output_length`` = 0 is clamped to 1; blank lines are skipped; line numbers in errors are
    1-based."""
    p = _check_file(path)
    ts: list[float] = []
    inp: list[int] = []
    out: list[int] = []
    hashes: list[list[int]] = []
    try:
        fh = _open_text(p)
        with fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    r = json.loads(line)
                except json.JSONDecodeError as e:
                    raise WorkloadError(f"{p}: line {lineno}: not valid JSON ({e.msg}): {line.strip()[:80]!r}") from None
                if not isinstance(r, dict):
                    raise WorkloadError(f"{p}: line {lineno}: expected a JSON object, got {line.strip()[:80]!r}")
                for k in ("timestamp", "input_length", "output_length"):
                    if k not in r:
                        raise WorkloadError(f"{p}: line {lineno}: missing field {k}; found fields: "
                                            f"{', '.join(r) or '(none)'}")
                t = r["timestamp"]
                if type(t) not in (int, float) or not math.isfinite(t) or t < 0:
                    raise WorkloadError(f"{p}: line {lineno}: field timestamp value {t!r} must be a "
                                        f"finite number of ms >= 0")
                i_len, o_len = r["input_length"], r["output_length"]
                if type(i_len) is not int or i_len < 1:
                    raise WorkloadError(f"{p}: line {lineno}: field input_length value {i_len!r} must be "
                                        f"an integer >= 1" + (" (negative)" if type(i_len) is int and i_len < 0 else ""))
                if type(o_len) is not int or o_len < 0:
                    raise WorkloadError(f"{p}: line {lineno}: field output_length value {o_len!r} must be "
                                        f"an integer >= 0 (0 is clamped to 1)"
                                        + (" (negative)" if type(o_len) is int and o_len < 0 else ""))
                h = r.get("hash_ids", [])
                if type(h) is not list or (h and not set(map(type, h)) <= _INT_SET):
                    raise WorkloadError(f"{p}: line {lineno}: field hash_ids must be a list of integers, "
                                        f"got {str(h)[:80]}")
                ts.append(t)
                inp.append(i_len)
                out.append(o_len)
                hashes.append(h)
    except (OSError, UnicodeDecodeError) as e:
        raise WorkloadError(f"{p}: cannot read Mooncake trace: {e}") from None
    if not ts:
        raise WorkloadError(f"{p}: empty Mooncake trace (no JSON lines)")
    try:
        off, ids = _csr_from_lists(hashes)
        inp_a, out_a = np.asarray(inp, _I64), np.asarray(out, _I64)
    except OverflowError as e:
        raise WorkloadError(f"{p}: a token count or hash id does not fit in int64 ({e})") from None
    return Requests(np.asarray(ts, _F64) / 1000.0, inp_a,
                    np.maximum(out_a, 1), off, ids, MOONCAKE_BLOCK_TOKENS)


def _sniff_format(p: Path) -> str:
    name = p.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    if name.endswith((".jsonl", ".json", ".ndjson")):
        return "mooncake"
    try:
        with _open_text(p) as fh:
            header = fh.readline()
    except (OSError, UnicodeDecodeError) as e:
        raise WorkloadError(f"{p}: cannot read trace header: {e}") from None
    cols = {c.strip() for c in header.strip().split(",")}
    if "TIMESTAMP" in cols:
        return "azure"
    if {"num_prefill_tokens", "num_decode_tokens"} <= cols:
        return "lengths"
    if header.lstrip().startswith("{"):
        return "mooncake"
    raise WorkloadError(f"{p}: cannot tell the trace format from the name or header {header.strip()[:80]!r}; "
                        f"pass format= one of {', '.join(TRACE_FORMATS)}")


def load_trace(path, format: str | None = None) -> Requests:  # noqa: A002 - name fixed by the API
    """Load a trace; ``format`` in {"azure", "mooncake", "lengths"} or None to sniff it from the
    extension (.jsonl → mooncake) or the CSV header (TIMESTAMP → azure, num_prefill_tokens → lengths)."""
    if format is not None and format not in TRACE_FORMATS:
        raise WorkloadError(f"unknown trace format {format!r}; allowed: {', '.join(TRACE_FORMATS)}")
    p = _check_file(path)
    fmt = format or _sniff_format(p)
    return {"azure": load_azure_trace, "mooncake": load_mooncake_trace,
            "lengths": load_length_trace}[fmt](p)


# ----------------------------------------------------------------------------------------------
# ServeGen
# ----------------------------------------------------------------------------------------------
_PMF_FIELDS = ("input_tokens", "output_tokens", "reason_ratio")


@dataclass(frozen=True, eq=False)
class ServeGenClient:
    """One ServeGen client (``chunk-N-trace.csv`` + ``chunk-N-dataset.json``).

    Per arrival window i (``window_s`` long, usually 600 s): ``window_start_s[i]``, mean
    ``rate_rps[i]``, inter-arrival ``cv[i]``, fitted ``dist[i]`` in {"Gamma", "Weibull",
    "Exponential", ""} ("" when the rate is 0) with shape ``p1`` and scale ``p2`` (s).
    ``pmfs[key]`` for each length window starting at ``key`` s (6-h windows 0/21600/43200/64800):
    {"input_tokens": (int64 values, probs), "output_tokens": ..., "reason_ratio": (float64 values,
    probs)}; probs are normalised to sum 1; empty arrays when the window has no data.
    """

    window_start_s: np.ndarray
    rate_rps: np.ndarray
    cv: np.ndarray
    dist: tuple[str, ...]
    p1: np.ndarray
    p2: np.ndarray
    pmfs: dict
    name: str = ""

    @property
    def window_s(self) -> float:
        w = self.window_start_s
        return float(w[1] - w[0]) if w.size > 1 else 600.0

    @property
    def period_s(self) -> float:
        """Length covered by the trace (86,400 s for the DeepSeek-R1 files); later times wrap."""
        return float(self.window_start_s[-1]) + self.window_s

    @property
    def pmf_keys(self) -> np.ndarray:
        return np.array(sorted(self.pmfs), dtype=_I64)

    @property
    def mean_rate_rps(self) -> float:
        return float(self.rate_rps.mean())


def _parse_pmf(src: str, where: str, integer: bool) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(src, Mapping):
        d = src
    else:
        if not isinstance(src, str):
            raise WorkloadError(f"{where}: expected a string-encoded dict, got {type(src).__name__}")
        try:
            d = ast.literal_eval(src.strip() or "{}")
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as e:
            raise WorkloadError(f"{where}: not a dict literal ({type(e).__name__}): {src[:80]!r}") from None
        if not isinstance(d, dict):
            raise WorkloadError(f"{where}: expected a dict literal {{value: prob}}, got {type(d).__name__}")
    if not d:
        return np.zeros(0, _I64 if integer else _F64), np.zeros(0, _F64)
    try:
        v = np.array(list(d.keys()), dtype=_F64)
        p = np.array(list(d.values()), dtype=_F64)
    except (TypeError, ValueError):
        raise WorkloadError(f"{where}: keys and probabilities must be numbers: {str(d)[:80]}") from None
    if not np.all(np.isfinite(v)) or not np.all(np.isfinite(p)) or np.any(p < 0) or p.sum() <= 0:
        raise WorkloadError(f"{where}: values and probabilities must be finite, probabilities >= 0 "
                            f"and not all zero")
    if integer:
        if np.any(v != np.round(v)):
            raise WorkloadError(f"{where}: token values must be integers, got {v[v != np.round(v)][0]!r}")
        v = v.astype(_I64)
    order = np.argsort(v, kind="stable")
    return v[order], p[order] / p.sum()


def load_servegen(directory, chunk: int) -> ServeGenClient:
    """Load ServeGen client ``chunk`` from ``directory`` (``chunk-N-trace.csv`` has no header:
    window_start_s, rate_rps, cv, dist, p1, p2; ``chunk-N-dataset.json`` holds string-encoded
    PMF dicts, parsed with ``ast.literal_eval``)."""
    d = Path(os.fspath(directory))
    if not d.is_dir():
        raise WorkloadError(f"ServeGen directory not found: {d}")
    if not _is_int(chunk) or chunk < 0:
        raise WorkloadError(f"ServeGen chunk must be an integer >= 0, got {chunk!r}")
    tpath, jpath = d / f"chunk-{chunk}-trace.csv", d / f"chunk-{chunk}-dataset.json"
    for fp in (tpath, jpath):
        if not fp.is_file():
            avail = sorted(int(x.name.split("-")[1]) for x in d.glob("chunk-*-trace.csv")
                           if x.name.split("-")[1].isdigit())
            raise WorkloadError(f"ServeGen file not found: {fp}; chunks available in {d}: "
                                f"{', '.join(map(str, avail)) or '(none)'}")
    rows: list[tuple[float, float, float, str, float, float, int]] = []
    with open(tpath, newline="", encoding="utf-8") as fh:
        for lineno, rec in enumerate(csv.reader(fh), 1):
            if not rec or all(not x.strip() for x in rec):
                continue
            if len(rec) != 6:
                raise WorkloadError(f"{tpath}: line {lineno}: expected 6 fields (window_start_s, rate_rps, "
                                    f"cv, dist, p1, p2), got {len(rec)}: {','.join(rec)[:80]!r}")
            try:
                w, rate, cv = float(rec[0]), float(rec[1]), float(rec[2] or 0)
                p1, p2 = float(rec[4] or 0), float(rec[5] or 0)
            except ValueError:
                raise WorkloadError(f"{tpath}: line {lineno}: non-numeric field in {','.join(rec)!r}") from None
            dist = rec[3].strip()
            if not all(math.isfinite(x) for x in (w, rate, cv, p1, p2)) or w < 0:
                raise WorkloadError(f"{tpath}: line {lineno}: window_start_s must be >= 0 and all numbers "
                                    f"finite, got {','.join(rec)!r}")
            if rate < 0:
                raise WorkloadError(f"{tpath}: line {lineno}: rate_rps value {rec[1]!r} is negative; must be >= 0")
            if rate > 0:
                if dist not in SERVEGEN_DISTS:
                    raise WorkloadError(f"{tpath}: line {lineno}: dist value {dist!r} with rate {rate} "
                                        f"is not one of {', '.join(SERVEGEN_DISTS)}")
                if dist != "Exponential" and not (p1 > 0 and p2 > 0):
                    raise WorkloadError(f"{tpath}: line {lineno}: {dist} needs shape p1 > 0 and scale "
                                        f"p2 > 0, got p1={rec[4]!r}, p2={rec[5]!r}")
            rows.append((w, rate, cv, dist, p1, p2, lineno))
    if not rows:
        raise WorkloadError(f"{tpath}: empty ServeGen trace (no windows)")
    ws = np.array([r[0] for r in rows], _F64)
    if ws.size > 1:
        step = np.diff(ws)
        if np.any(step <= 0) or np.any(np.abs(step - step[0]) > 1e-9 * max(1.0, step[0])):
            i = int(np.flatnonzero((step <= 0) | (np.abs(step - step[0]) > 1e-9 * max(1.0, step[0])))[0])
            raise WorkloadError(f"{tpath}: line {rows[i + 1][6]}: window_start_s {ws[i + 1]:g} breaks the regular, "
                                f"increasing window grid (step {step[0]})")
    try:
        with open(jpath, encoding="utf-8") as fh:
            js = json.load(fh)
    except json.JSONDecodeError as e:
        raise WorkloadError(f"{jpath}: not valid JSON: {e}") from None
    if not isinstance(js, dict) or not js:
        raise WorkloadError(f"{jpath}: expected a non-empty object keyed by window start (s)")
    pmfs: dict[int, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    for key, entry in js.items():
        try:
            k = int(key)
        except ValueError:
            raise WorkloadError(f"{jpath}: window key {key!r} is not an integer number of seconds") from None
        if not isinstance(entry, dict):
            raise WorkloadError(f"{jpath}: window {key}: expected an object with {', '.join(_PMF_FIELDS)}")
        missing = [f for f in _PMF_FIELDS if f not in entry]
        if missing:
            raise WorkloadError(f"{jpath}: window {key}: missing field(s) {', '.join(missing)}; "
                                f"found: {', '.join(entry) or '(none)'}")
        pmfs[k] = {f: _parse_pmf(entry[f], f"{jpath}: window {key}: field {f}", f != "reason_ratio")
                   for f in _PMF_FIELDS}
    if min(pmfs) > 0:
        raise WorkloadError(f"{jpath}: the first length window must start at 0, keys are {sorted(pmfs)}")
    return ServeGenClient(
        window_start_s=ws,
        rate_rps=np.array([r[1] for r in rows], _F64),
        cv=np.array([r[2] for r in rows], _F64),
        dist=tuple(r[3] for r in rows),
        p1=np.array([r[4] for r in rows], _F64),
        p2=np.array([r[5] for r in rows], _F64),
        pmfs=pmfs,
        name=f"{d.name}/chunk-{chunk}",
    )


def _window_arrivals(dist: str, rate: float, p1: float, p2: float, t0: float, t1: float,
                     rng: np.random.Generator) -> np.ndarray:
    """Renewal process restarted at the window start t0; arrivals in (t0, t1)."""
    if rate <= 0 or not dist:
        return np.zeros(0, _F64)
    span = t1 - t0
    m = rate * span
    chunks: list[np.ndarray] = []
    t = t0
    while True:
        k = int(m * 1.2 + 6.0 * math.sqrt(m) + 16)
        if dist == "Gamma":
            g = rng.gamma(p1, p2, k)
        elif dist == "Weibull":
            g = p2 * rng.weibull(p1, k)
        else:
            g = rng.exponential(1.0 / rate, k)
        ts = t + np.cumsum(g)
        inside = ts[ts < t1]
        chunks.append(inside)
        if inside.size < k:
            break
        t = float(ts[-1])
    return np.concatenate(chunks)


def servegen_requests(client: ServeGenClient, rng: np.random.Generator, *, start_s: float = 0.0,
                      duration_s: float, max_requests: int | None = None) -> tuple[Requests, np.ndarray]:
    """Requests of one ServeGen client in [start_s, start_s + duration_s).

    Arrivals: per arrival window, a renewal process restarted at the window start with the fitted
    Gamma/Weibull(shape p1, scale p2 s) or Exponential(rate) gaps; windows with rate 0 or no
    distribution give none. Times past ``client.period_s`` wrap around (the profile is a day).
    Each request draws input/output tokens and a reason ratio independently from the PMFs of the
    length window containing its arrival. Returned arrival times are relative to ``start_s``
    (start_s → 0). ``max_requests`` keeps the first ones. Returns (requests, reason_ratio).
    """
    start = _check_pos("start_s", start_s, allow_zero=True)
    dur = _check_pos("duration_s", duration_s)
    cap = None if max_requests is None else _check_count("max_requests", max_requests)
    end = start + dur
    W, period = client.window_s, client.period_s
    nwin = client.window_start_s.size
    base = float(client.window_start_s[0])
    j0 = int(math.floor((start - base) / W)) if start > base else 0
    chunks: list[np.ndarray] = []
    count = 0
    j = j0
    while True:
        a0 = base + j * W
        if a0 >= end or (cap is not None and count >= cap):
            break
        i = j % nwin
        ta = _window_arrivals(client.dist[i], float(client.rate_rps[i]), float(client.p1[i]),
                              float(client.p2[i]), a0, a0 + W, rng)
        ta = ta[(ta >= start) & (ta < end)]
        chunks.append(ta)
        count += ta.size
        j += 1
    t = np.concatenate(chunks) if chunks else np.zeros(0, _F64)
    if cap is not None:
        t = t[:cap]
    n = t.size
    keys = client.pmf_keys
    widx = np.searchsorted(keys, np.mod(t, period), side="right") - 1
    inp = np.empty(n, _I64)
    out = np.empty(n, _I64)
    rr = np.empty(n, _F64)
    for ki in np.unique(widx):
        sel = np.flatnonzero(widx == ki)
        pm = client.pmfs[int(keys[ki])]
        for fname, dest in (("input_tokens", inp), ("output_tokens", out), ("reason_ratio", rr)):
            v, p = pm[fname]
            if v.size == 0:
                raise WorkloadError(f"ServeGen {client.name or 'client'}: length window {int(keys[ki])} has "
                                    f"an empty {fname} PMF but {sel.size} arrivals fall in it")
            dest[sel] = rng.choice(v, size=sel.size, p=p)
    np.maximum(inp, 1, out=inp)
    np.maximum(out, 1, out=out)
    req = Requests(t - start, inp, out, np.zeros(n + 1, _I64), np.zeros(0, _I64), MOONCAKE_BLOCK_TOKENS)
    return req, rr
