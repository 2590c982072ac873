#!/usr/bin/env python
"""Where a sweep point's CPU time goes: the engine kernel, the metrics kernel, the per-client,
per-stage and per-resource tables, and the rest (Python: building the points, lowering,
summaries, the chunk's arrays). ``run_chunk`` over the 500 single-client points of 1,000
requests of ``bench_sweep.py --quick`` (chunks of 128), after one warm-up pass, with the two
numba entry points and the table builders wrapped by ``time.process_time`` timers (CPU time:
load from other processes stretches it far less than wall time). Prints ms per point per round.

Usage: python benchmarks/bench_point_split.py [--rounds 2]
Compare two checkouts by running each one's copy of this file, interleaved.
"""
from __future__ import annotations

import os

os.environ["NUMBA_NUM_THREADS"] = "1"  # must precede the numba import

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    import mistfast.runner as R
    import mistfast.sweep_tables as ST
    from bench_sweep import sweep_doc
    from mistfast.kernels import cluster as CL
    from mistfast.kernels import metrics as M
    from mistfast.sweep import _chunks, _warm, parse_sweep, run_chunk
    spent: dict[str, float] = {}

    def timed(owner, name: str, part: str) -> None:
        fn = getattr(owner, name, None)
        if fn is None:   # (an older checkout names its table builders differently)
            return

        def wrapper(*a, **kw):
            t = time.process_time()
            try:
                return fn(*a, **kw)
            finally:
                spent[part] = spent.get(part, 0.0) + time.process_time() - t
        setattr(owner, name, wrapper)

    spec = parse_sweep(sweep_doc(True))
    _warm()
    timed(CL, "simulate_points_serial", "engine kernel")
    timed(M, "summarize_points", "metrics kernel")
    for name in ("_point_tables", "_stack_tables", "stacked_point_tables"):
        timed(R, name, "tables")
    timed(ST, "table_columns", "tables")
    chunks = _chunks(spec.n_points, 128)
    for a, z in chunks:   # warm-up: per-process caches, label scan
        run_chunk(spec, a, z)
    print(f"{ROOT} | load average {os.getloadavg()[0]:.1f} | ms of CPU per point over {spec.n_points} points")
    for _ in range(args.rounds):
        spent.clear()
        t = time.process_time()
        for a, z in chunks:
            run_chunk(spec, a, z)
        total = time.process_time() - t
        row = {k: v / spec.n_points * 1e3 for k, v in spent.items()}
        row["Python (the rest)"] = (total - sum(spent.values())) / spec.n_points * 1e3
        row["total"] = total / spec.n_points * 1e3
        print("    " + " | ".join(f"{k} {v:.3f}" for k, v in row.items()), flush=True)


if __name__ == "__main__":
    main()
