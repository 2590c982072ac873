#!/usr/bin/env python
"""Speed of a vectorised capacity search (``mistfast.capacity_search``) over a sweep's configuration points.

100 single-client points of 1,000 requests each: Llama-3.1-8B on device (H100, H200, B200, MI300X,
A100) x batching (continuous, chunked) x max_batch_size (32, 64, 128, 256, 512) x chunk_size
(512, 2048); Poisson arrivals with default (Azure-conversation-like) lengths; constraints p99
TTFT <= 500 ms and p99 TPOT <= 50 ms (the scenario's default [slo]) and >= 99 % finished; bisection
to 2 %. All unconverged points are simulated together in one kernel call per iteration.

Reported: wall time (after the numba cache is loaded), points searched per second, simulations per
second (every trial rate of every point is one simulation of 1,000 requests), simulated requests/s,
peak RSS. Target (issue 12): a 100-point search in under 30 s on 2 cores; this runs on one.

Usage: python benchmarks/bench_capacity.py [--points-per-device N]
"""
from __future__ import annotations

import os

os.environ["NUMBA_NUM_THREADS"] = "1"  # per-core figures: must precede the numba import

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SWEEP = """
[sweep]
name = "bench_capacity"
seed = 1
[sweep.axes]
"clients[0].device" = ["H100", "H200", "B200", "MI300X", "A100"]
"clients[0].scheduler.batching" = ["continuous", "chunked"]
"clients[0].scheduler.max_batch_size" = [32, 64, 128, 256, 512]
"clients[0].scheduler.chunk_size" = [512, 2048]
[scenario]
clients = [{ name = "llm", model = "llama-3.1-8b", device = "H100" }]
workload = { num_requests = 1000, arrival = { process = "poisson", rate_rps = 8 } }
slo = { ttft_ms = 500, tpot_ms = 50 }
"""


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    from mistfast.capacity_search import capacity
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "cap.toml"
        path.write_text(SWEEP)
        # load (or compile) the kernels outside the timed run
        capacity({"clients": [{"name": "llm", "model": "llama-3.1-8b", "device": "H100"}],
                  "workload": {"num_requests": 50, "arrival": {"process": "poisson", "rate_rps": 4}}})
        t0 = time.perf_counter()
        ds = capacity(str(path))
        wall = time.perf_counter() - t0
    n = int(ds.max_rate_rps.size)
    sims = int(ds.n_evaluations.sum())
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"points                     {n}")
    print(f"wall time                  {wall:8.2f} s   (target < 30 s for 100 points on 2 cores)")
    print(f"points/s                   {n / wall:8.1f}")
    print(f"simulations (trial rates)  {sims}  ({sims / n:.1f} per point)")
    print(f"simulations/s              {sims / wall:8.1f}")
    print(f"simulated requests/s       {sims * 1000 / wall:10.0f}")
    print(f"converged                  {int(ds.converged.sum())}/{n}")
    print(f"max rate (req/s) min/median/max  {float(ds.max_rate_rps.min()):.2f} / "
          f"{float(ds.max_rate_rps.median()):.2f} / {float(ds.max_rate_rps.max()):.2f}")
    print(f"peak RSS                   {rss:8.0f} MiB")


if __name__ == "__main__":
    main()
