#!/usr/bin/env python
"""Where a worker's task spends its CPU time: ``sweep._task`` (run_chunk and the part file write)
over chunks spread evenly across ``bench_scale.py``'s sweep of ``--points`` single-client points of
1,000 requests, after one warm-up chunk, split by ``time.process_time`` timers around the engine
kernel, the metrics kernel, the lowering (``lower_points``), the tables, the summaries, the replica
order and the part write; "rest" is the other Python (building the points, workloads, the chunk's
arrays). Prints ms of CPU per point, one line per round. CPU time stretches far less than wall
time with other processes' load, so two trees are compared by running each one's copy of this
file, interleaved:

    NUMBA_NUM_THREADS=1 python benchmarks/bench_task_split.py [--points 10000] [--chunks 16] [--rounds 1]
                                                              [--tree /work/wt-start]

``--tree``: time another checkout's mistfast (and its bench_scale.py sweep) with this file.
"""
from __future__ import annotations

import os

os.environ["NUMBA_NUM_THREADS"] = "1"  # must precede the numba import

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--points", type=int, default=10000, help="size of the bench_scale.py sweep to sample")
    ap.add_argument("--chunks", type=int, default=16, help="chunks of 128 points to time, spread over the sweep")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--tree", type=Path, default=ROOT, help="checkout to time (default: this file's)")
    args = ap.parse_args()
    tree = args.tree.resolve()
    sys.path[:0] = [str(tree), str(tree / "benchmarks")]
    import mistfast.parts as P
    import mistfast.runner as R
    import mistfast.sweep as S
    from bench_scale import sweep_doc
    from mistfast.kernels import cluster as CL
    from mistfast.kernels import metrics as M
    spent: dict[str, float] = {}

    def timed(owner, name: str, part: str) -> None:
        fn = getattr(owner, name, None)
        if fn is None:   # (a checkout without this function)
            return

        def wrapper(*a, **kw):
            t = time.process_time()
            try:
                return fn(*a, **kw)
            finally:
                spent[part] = spent.get(part, 0.0) + time.process_time() - t
        setattr(owner, name, wrapper)

    S._warm()
    for owner, name, part in ((CL, "simulate_points_serial", "engine kernel"), (M, "summarize_points", "metrics kernel"),
                              (R, "lower_points", "lowering"), (R, "stacked_point_tables", "tables"),
                              (R, "point_summary", "summaries"), (R, "_replica_order", "replica order"),
                              (P, "save_part", "part write")):
        timed(owner, name, part)
    spec = S.parse_sweep(sweep_doc(args.points, 128))
    h = S._spec_hash(spec)
    chunks = S._chunks(spec.n_points, 128)
    step = max(len(chunks) // args.chunks, 1)
    picked = chunks[::step][:args.chunks]
    with tempfile.TemporaryDirectory(prefix="bench_task_split_") as tmp:
        S._task(spec, 0, *chunks[0], str(Path(tmp) / "warm.npz"), h)   # per-process caches, label scan
        print(f"{tree} | load average {os.getloadavg()[0]:.1f} | ms of CPU per point over "
              f"{sum(z - a for a, z in picked)} points of the {spec.n_points}-point sweep")
        for _ in range(args.rounds):
            spent.clear()
            n = 0
            t = time.process_time()
            for j, (a, z) in enumerate(picked):
                S._task(spec, j, a, z, str(Path(tmp) / P.part_name(j)), h)
                n += z - a
            total = time.process_time() - t
            row = {k: v / n * 1e3 for k, v in spent.items()}
            row["rest"] = (total - sum(spent.values())) / n * 1e3
            row["outside the engine kernel"] = (total - spent.get("engine kernel", 0.0)) / n * 1e3
            row["total"] = total / n * 1e3
            print("    " + " | ".join(f"{k} {v:.3f}" for k, v in row.items()), flush=True)


if __name__ == "__main__":
    main()
