#!/usr/bin/env python
"""Time every case-study run of docs/case-studies.md at its full size (issue 12 target: all of them
together in <= 5 minutes on 2 cores).

Each sweep runs with the "processes" scheduler on ``--workers`` processes (default 2); each
capacity search runs in this process (it vectorises its points itself). Prints, per run, the wall
time and the CPU time of this process and its children, then the totals and the peak RSS.
Study 8b needs ../shared/traces (skipped, with a note, when missing).

Usage: python benchmarks/bench_case_studies.py [--workers N] [--only NAME ...]
"""
from __future__ import annotations

import os

os.environ["NUMBA_NUM_THREADS"] = "1"  # must precede the numba import

import argparse
import resource
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RELAXED = ["tpot_p99_ms<=40", "ttft_p99_ms<=2000"]
STRICT = ["tpot_p99_ms<=20", "ttft_p99_ms<=2000"]
RUNS = [  # (label, sweep file, capacity constraints or None for a plain sweep)
    ("1 batching_policies", "batching_policies", None),
    ("1 pd_disaggregation", "pd_disaggregation", None),
    ("2 rag_placement", "rag_placement", None),
    ("3 pipelines_colocated", "pipelines_colocated", None),
    ("3 pipelines_disaggregated", "pipelines_disaggregated", None),
    ("4 scaling_clients relaxed", "scaling_clients", RELAXED),
    ("4 scaling_clients strict", "scaling_clients", STRICT),
    ("4 scaling_clients_pd relaxed", "scaling_clients_pd", RELAXED),
    ("4 scaling_clients_pd strict", "scaling_clients_pd", STRICT),
    ("5 remote_kv", "remote_kv", None),
    ("6 hetero_pd", "hetero_pd", None),
    ("7 output_scaling (capacity)", "output_scaling", "spec"),
    ("8a validation_offline", "validation_offline", None),
    ("8b validation_splitwise", "validation_splitwise", None),
]


def cpu_s() -> float:
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--only", nargs="*", default=None, help="sweep names to run (default: all)")
    args = ap.parse_args()
    from mistfast.capacity_search import capacity
    from mistfast.scenario import _shared_dir
    from mistfast.sweep import run_sweep
    warnings.filterwarnings("ignore", message="capacity: at")
    tot_wall = tot_cpu = 0.0
    print(f"{'run':<34} {'wall s':>8} {'cpu s':>8}")
    for label, name, cons in RUNS:
        if args.only and name not in args.only:
            continue
        if name == "validation_splitwise" and _shared_dir() is None:
            print(f"{label:<34} skipped: ../shared/traces not found")
            continue
        path = ROOT / "sweeps" / f"{name}.toml"
        t0, c0 = time.perf_counter(), cpu_s()
        if cons is None:
            run_sweep(path, scheduler="processes", workers=args.workers)
        else:
            capacity(path, slo=None if cons == "spec" else cons)
        wall, cpu = time.perf_counter() - t0, cpu_s() - c0
        tot_wall += wall
        tot_cpu += cpu
        print(f"{label:<34} {wall:8.1f} {cpu:8.1f}", flush=True)
    peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    print(f"{'total':<34} {tot_wall:8.1f} {tot_cpu:8.1f}   (peak RSS {peak / 1024:.0f} MiB)")


if __name__ == "__main__":
    main()
