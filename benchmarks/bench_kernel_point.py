#!/usr/bin/env python
"""Kernel CPU time per single-client sweep point, without the sweep's Python around it.

The points are those of ``bench_sweep.py --quick`` (500 single-client points of 1,000 requests:
Llama-3.1-8B on 5 devices x 2 batching policies x 5 batch sizes x 10 request rates). Each chunk
of the sweep is lowered once (``mistfast.sweep.run_chunk`` with the kernel call captured); then
only ``kernels.cluster.simulate_points_serial`` is timed over all the captured chunks, several
rounds, CPU time of the process (``time.process_time``), and the best round is reported as CPU
ms per point. A SHA-256 of every kernel output is printed too, so two trees can be compared bit
for bit (``PYTHONPATH=<tree> python benchmarks/bench_kernel_point.py``).

Usage: python benchmarks/bench_kernel_point.py [--rounds 5] [--points N]
"""
from __future__ import annotations

import os

os.environ["NUMBA_NUM_THREADS"] = "1"  # per-core figures: must precede the numba import

import argparse
import hashlib
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def captured_chunks(n_points: int | None) -> list[tuple]:
    """The kernel arguments of every chunk of the quick sweep (arrays copied before the call)."""
    import mistfast.runner as runner
    from mistfast.sweep import parse_sweep, run_chunk
    from bench_sweep import sweep_doc

    calls = []
    real = runner.CL

    class Capture:
        def __getattr__(self, name):
            if name in ("simulate_points", "simulate_points_serial"):
                def record(*args):
                    calls.append(tuple(a.copy() if isinstance(a, np.ndarray) else a for a in args))
                    return getattr(real, name)(*args)
                return record
            return getattr(real, name)

    spec = parse_sweep(sweep_doc(True))
    total = spec.n_points if n_points is None else min(n_points, spec.n_points)
    runner.CL = Capture()
    try:
        step = 100
        for start in range(0, total, step):
            run_chunk(spec, start, min(start + step, total))
    finally:
        runner.CL = real
    return calls


def run_all(kern, chunks) -> list[tuple]:
    """Run the kernel on fresh copies of every chunk's arguments; returns the argument tuples."""
    done = []
    for args in chunks:
        a = tuple(x.copy() if isinstance(x, np.ndarray) else x for x in args)
        kern(*a)
        done.append(a)
    return done


def digest(done, engine_counters: bool = True) -> str:
    """SHA-256 of every kernel output. engine_counters=False zeroes the per-client count of steps
    advanced inside decode runs (CS_RUN_STEPS): how the engine did the work, not what it simulated,
    so a change that runs more steps in decode runs keeps the other digest."""
    from mistfast.kernels import cluster as CL
    h = hashlib.sha256()
    for args in done:
        for j, x in enumerate(args):
            if isinstance(x, np.ndarray):
                if not engine_counters and j == len(args) - 3:   # cstats[point, client, CS_*]
                    x = x.copy()
                    x[..., CL.CS_RUN_STEPS] = 0
                h.update(np.ascontiguousarray(x).tobytes())
    return h.hexdigest()[:16]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--points", type=int, default=None)
    args = ap.parse_args()
    import mistfast
    from mistfast.kernels import cluster as CL
    chunks = captured_chunks(args.points)
    n_points = sum(c[0].shape[0] for c in chunks)
    kern = CL.simulate_points_serial
    done = run_all(kern, chunks)
    out = digest(done)
    simulated = digest(done, engine_counters=False)
    best = np.inf
    for _ in range(args.rounds):
        copies = [tuple(x.copy() if isinstance(x, np.ndarray) else x for x in c) for c in chunks]
        t0 = time.process_time()
        for a in copies:
            kern(*a)
        best = min(best, time.process_time() - t0)
    steps = sum(float(c[-3][:, 0, CL.CS_STEPS].sum()) for c in run_all(kern, chunks))
    print(f"{Path(mistfast.__file__).parent.parent.name}: {n_points} points, {steps:.0f} steps; kernel CPU "
          f"{best / n_points * 1e3:.3f} ms/point ({n_points / best:.0f} points/s), best of {args.rounds}; "
          f"outputs {out}, without engine-work counters {simulated}")


if __name__ == "__main__":
    main()
