#!/usr/bin/env python
"""Time every case-study run of docs/case-studies.md at its full size (issue 12 target: all of them
together in <= 5 minutes on 2 cores).

The runs are independent, so they run side by side: ``--workers`` processes (default 2) each take
the next run, longest first (the expected CPU seconds below, from a previous measurement), and
run it serially (a sweep with the serial scheduler, a capacity search in-process). Prints, per
run, its wall and CPU time in its worker, then the elapsed wall time of the whole set, the summed
CPU time, the load average before and after (the machine is shared: wall time depends on it) and
the peak RSS of any worker. Study 8b needs ../shared/traces (skipped, with a note, when missing).

Usage: python benchmarks/bench_case_studies.py [--workers N] [--only NAME ...]
"""
from __future__ import annotations

import os

os.environ["NUMBA_NUM_THREADS"] = "1"  # must precede the numba import

import argparse
import multiprocessing as mp
import resource
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RELAXED = ["tpot_p99_ms<=40", "ttft_p99_ms<=2000"]
STRICT = ["tpot_p99_ms<=20", "ttft_p99_ms<=2000"]
RUNS = [  # (label, sweep file, capacity constraints or None for a plain sweep, expected CPU s)
    ("1 batching_policies", "batching_policies", None, 6),
    ("1 pd_disaggregation", "pd_disaggregation", None, 8),
    ("2 rag_placement", "rag_placement", None, 5),
    ("3 pipelines_colocated", "pipelines_colocated", None, 5),
    ("3 pipelines_disaggregated", "pipelines_disaggregated", None, 6),
    ("3 pipelines_colocated_large", "pipelines_colocated_large", None, 7),
    ("3 pipelines_disaggregated_large", "pipelines_disaggregated_large", None, 17),
    ("4 scaling_clients relaxed", "scaling_clients", RELAXED, 25),
    ("4 scaling_clients strict", "scaling_clients", STRICT, 29),
    ("4 scaling_clients_pd relaxed", "scaling_clients_pd", RELAXED, 21),
    ("4 scaling_clients_pd strict", "scaling_clients_pd", STRICT, 19),
    ("5 remote_kv", "remote_kv", None, 22),
    ("6 hetero_pd", "hetero_pd", None, 7),
    ("7 output_scaling (capacity)", "output_scaling", "spec", 2),
    ("8a validation_offline", "validation_offline", None, 4),
    ("8b validation_splitwise", "validation_splitwise", None, 5),
]


def cpu_s() -> float:
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def run_one(label: str, name: str, cons) -> tuple[str, float, float, float]:
    """One run in this (worker) process: (label, wall s, CPU s, peak RSS MiB of this process)."""
    from mistfast.capacity_search import capacity
    from mistfast.sweep import run_sweep
    warnings.filterwarnings("ignore", message="capacity: at")
    path = ROOT / "sweeps" / f"{name}.toml"
    t0, c0 = time.perf_counter(), cpu_s()
    if cons is None:
        run_sweep(path, scheduler="serial")
    else:
        capacity(path, slo=None if cons == "spec" else cons)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return label, time.perf_counter() - t0, cpu_s() - c0, rss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2, help="runs side by side (default 2)")
    ap.add_argument("--only", nargs="*", default=None, help="sweep names to run (default: all)")
    args = ap.parse_args()
    from mistfast.scenario import _shared_dir
    todo = []
    for label, name, cons, expect in RUNS:
        if args.only and name not in args.only:
            continue
        if name == "validation_splitwise" and _shared_dir() is None:
            print(f"{label:<36} skipped: ../shared/traces not found")
            continue
        todo.append((expect, label, name, cons))
    todo.sort(key=lambda r: -r[0])   # longest first: the last run to start is a short one
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    done = []
    with ProcessPoolExecutor(max_workers=max(1, args.workers), mp_context=mp.get_context("spawn")) as pool:
        futs = [pool.submit(run_one, label, name, cons) for _, label, name, cons in todo]
        for fut in as_completed(futs):
            done.append(fut.result())
    wall = time.perf_counter() - t0
    load1 = os.getloadavg()
    order = {label: i for i, (label, *_rest) in enumerate(RUNS)}
    print(f"{'run':<36} {'wall s':>8} {'cpu s':>8}")
    for label, w, c, _ in sorted(done, key=lambda r: order[r[0]]):
        print(f"{label:<36} {w:8.1f} {c:8.1f}")
    peak = max((r[3] for r in done), default=0.0)
    print(f"{'total (elapsed wall, summed cpu)':<36} {wall:8.1f} {sum(r[2] for r in done):8.1f}   "
          f"({args.workers} workers, peak RSS {peak:.0f} MiB)")
    print(f"load average (1, 5, 15 min) before {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}, "
          f"after {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}")


if __name__ == "__main__":
    main()
