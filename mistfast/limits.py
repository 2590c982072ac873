"""Resource limits checked from the spec before any work starts.

A scenario's memory is estimated from what it asks for (requests x bytes per request, pipeline
stages, prefix-hash blocks, engine replicas and client instances); a sweep adds its points and
the points one task holds at once. An estimate above the limit is refused with one line naming the
field, its value, the estimate and the limit, instead of an out-of-memory kill or a hang.

The limit is ``MISTFAST_MAX_MEMORY_GB`` (GB = 1e9 bytes; default: half of this machine's memory) or
:func:`set_max_memory_GB`. The per-item sizes below are upper bounds measured on this code
(``ru_maxrss`` of a 200,000- and 800,000-request run: 490 bytes per request single-client, +75 per
extra stage, +31 per prefix-hash block), rounded up about 2x so an accepted spec fits.
"""
from __future__ import annotations

import math
import os
from typing import Any

from .errors import SpecError

BYTES_PER_REQUEST = 1024          # arrays in, per-request state, results (per_request off)
BYTES_PER_REQUEST_STAGE = 256     # each pipeline stage instance of a request
BYTES_PER_HASH_BLOCK = 64         # each 512-token prefix-hash id (Python list while building)
BYTES_PER_REPLICA = 8192          # per engine replica / client instance (parameter vectors, stats)
BYTES_PER_ROUTE = 8 * (2 + 4)     # per (instance, instance) pair of a pipeline: latency, hops
BYTES_PER_SWEEP_POINT = 4096      # summary variables of one point held in memory (no output file)
BYTES_PER_STREAMED_POINT = 16     # a point of a sweep written to a file, in the driver: its int32 reason
                                  # code when the result is opened (the variables stay on disk, issue 15)
                                  # and its share of the chunk bookkeeping (manifest entry and chunk list,
                                  # about 1.2 kB per chunk: 10 B per point at chunk_points = 128)
HASH_BLOCK_TOKENS = 512          # Mooncake prefix-hash block (MODEL.md §4.2); the lowering uses it too

_override_GB: float | None = None


def set_max_memory_GB(limit: float | None) -> None:
    """Set the memory limit for this process (None: back to the environment / default)."""
    global _override_GB
    _override_GB = limit


def max_memory_bytes() -> float:
    if _override_GB is not None:
        return _override_GB * 1e9
    env = os.environ.get("MISTFAST_MAX_MEMORY_GB")
    if env:
        try:
            v = float(env)
        except ValueError:
            raise SpecError([f"MISTFAST_MAX_MEMORY_GB = {env!r}: must be a number of GB (1e9 bytes) > 0"]) from None
        if not v > 0:
            raise SpecError([f"MISTFAST_MAX_MEMORY_GB = {env!r}: must be a number of GB (1e9 bytes) > 0"])
        return v * 1e9
    try:
        return 0.5 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 8e9


def _gb(x: float) -> str:
    return f"{x / 1e9:.3g} GB"


def _mean_length(ls) -> float:
    """A length distribution's mean (bounded by max_tokens), for the hash-block estimate."""
    if ls.dist == "fixed":
        m = ls.value
    elif ls.dist == "uniform":
        m = (ls.low + ls.high) / 2
    elif ls.dist == "empirical":
        m = max(ls.values)
    else:
        m = ls.mean + 3 * (ls.std or 0)
    return float(min(m, ls.max_tokens) if ls.max_tokens else m)


def scenario_estimate(spec) -> list[tuple[str, Any, float]]:
    """Memory of one scenario run, itemised as (field path, value, bytes) — the largest items."""
    wl = spec.workload
    n = wl.num_requests
    items: list[tuple[str, Any, float]] = []
    stages = max((len(p.stages) + sum(2 * s.steps for s in p.stages if s.kind == "reason") for p in spec.pipelines),
                 default=1)
    per_req = BYTES_PER_REQUEST + (BYTES_PER_REQUEST_STAGE * stages if spec.is_pipeline else 0)
    if spec.simulation.per_request:
        per_req += 256
    items.append(("workload.num_requests", n, float(n) * per_req))
    if wl.prefix_tokens > 0:
        # every prompt is lengthened to prefix + 1 and cut into 512-token hash blocks
        tokens = max(_mean_length(wl.input), wl.prefix_tokens + 1)
        blocks = math.ceil(tokens / HASH_BLOCK_TOKENS)
        items.append(("workload.prefix_tokens", wl.prefix_tokens, float(n) * blocks * BYTES_PER_HASH_BLOCK))
    # per-client batch arrays (about 12 of 8 bytes per batch slot) and the KV-growth ring (block_size);
    # a single-client run simulates its replicas one at a time, a pipeline holds every instance
    pipe = spec.is_pipeline
    blocks_total = float(n) * math.ceil(max(_mean_length(wl.input), wl.prefix_tokens + 1) / HASH_BLOCK_TOKENS) \
        if wl.prefix_tokens > 0 else 0.0
    for i, c in enumerate(spec.clients):
        copies = c.dp if pipe else 1
        items.append((f"clients[{i}].scheduler.max_batch_size", c.scheduler.max_batch_size,
                      96.0 * (c.scheduler.max_batch_size + 1) * copies))
        items.append((f"clients[{i}].scheduler.block_size", c.scheduler.block_size, 8.0 * c.scheduler.block_size))
        if c.scheduler.prefix_caching and blocks_total:
            # LRU lists over every distinct hash id, per caching instance
            items.append((f"clients[{i}].scheduler.prefix_caching", True, 24.0 * blocks_total * copies))
    for i, sv in enumerate(spec.servers):
        items.append((f"servers[{i}].slots" if sv.kind == "cpu" else f"servers[{i}].max_batch",
                      sv.slots if sv.kind == "cpu" else sv.max_batch,
                      96.0 * ((sv.slots if sv.kind == "cpu" else sv.max_batch) + 1) * sv.replicas))
    instances = sum(c.dp for c in spec.clients) + sum(s.replicas for s in spec.servers)
    for i, c in enumerate(spec.clients):
        if c.dp > 1:
            items.append((f"clients[{i}].dp", c.dp, float(c.dp) * BYTES_PER_REPLICA))
    for i, s in enumerate(spec.servers):
        if s.replicas > 1:
            items.append((f"servers[{i}].replicas", s.replicas, float(s.replicas) * BYTES_PER_REPLICA))
    if spec.is_pipeline:
        nodes = instances + len(spec.tiers)
        biggest = max(((f"clients[{i}].dp", c.dp) for i, c in enumerate(spec.clients)), key=lambda x: x[1])
        for i, s in enumerate(spec.servers):
            if s.replicas > biggest[1]:
                biggest = (f"servers[{i}].replicas", s.replicas)
        # routes between every pair of instances (and tiers)
        items.append((biggest[0], biggest[1], float(nodes) ** 2 * BYTES_PER_ROUTE))
    return items


def scenario_bytes(spec) -> float:
    return sum(b for _, _, b in scenario_estimate(spec))


def check_scenario(spec, prefix: str = "") -> None:
    """Refuse a scenario whose estimated memory exceeds the limit, naming the field that drives it."""
    limit = max_memory_bytes()
    items = scenario_estimate(spec)
    total = sum(b for _, _, b in items)
    if total <= limit:
        return
    field, value, b = max(items, key=lambda x: x[2])
    raise SpecError([f"{prefix}{field} = {value!r}: needs about {_gb(total)} of memory ({_gb(b)} from this field), "
                     f"more than the limit of {_gb(limit)}; lower it, or raise MISTFAST_MAX_MEMORY_GB"])


def check_sweep(n_points: int, chunk_points: int, point_bytes: float, point_field: str = "",
                point_value: Any = None) -> list[str]:
    """Problems of a sweep's size: all points' results, and the points one task simulates at once."""
    limit = max_memory_bytes()
    problems = []
    # the smallest a sweep can need: its results written to a file (run_sweep checks the in-memory
    # case, where the output is known)
    res = float(n_points) * BYTES_PER_STREAMED_POINT
    if res > limit:
        problems.append(f"sweep axes: {n_points} points need about {_gb(res)} for their results, more than the "
                        f"limit of {_gb(limit)}; use fewer values or raise MISTFAST_MAX_MEMORY_GB")
    per_task = min(chunk_points, n_points) * point_bytes
    if per_task > limit:
        what = f" (the largest point: {point_field} = {point_value!r})" if point_field else ""
        problems.append(f"sweep.chunk_points = {chunk_points}: one task holds {min(chunk_points, n_points)} points "
                        f"of about {_gb(point_bytes)} each{what}, {_gb(per_task)} in all, more than the limit of "
                        f"{_gb(limit)}; lower chunk_points or raise MISTFAST_MAX_MEMORY_GB")
    return problems


def check_sweep_in_memory(n_points: int) -> None:
    """Refuse a sweep whose results would be held in memory (no output file) beyond the limit."""
    limit = max_memory_bytes()
    res = float(n_points) * BYTES_PER_SWEEP_POINT
    if res > limit:
        raise SpecError([f"sweep: {n_points} points held in memory need about {_gb(res)}, more than the limit of "
                         f"{_gb(limit)}; write the results to a file (-o / output=), which keeps the driver's "
                         f"memory flat, or raise MISTFAST_MAX_MEMORY_GB"])
