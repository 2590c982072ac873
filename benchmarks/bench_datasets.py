"""Sampling speed of the named benchmark datasets (mistfast.datasets).

    python benchmarks/bench_datasets.py [--n 1000000] [--repeat 3]

Prints, per dataset, the (input, output) pairs drawn per second by ``sample_pairs`` (best of
--repeat) and the peak traced memory of one draw. One core, numpy only (no numba).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import tracemalloc
from pathlib import Path

os.environ.setdefault("NUMBA_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from mistfast import datasets as D  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="pairs per draw")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    print(f"{'dataset':<17} {'pairs/s':>12} {'peak MiB':>9}")
    for name in D.dataset_names():
        D.sample_pairs(name, 1000, np.random.default_rng(0))   # load the catalog, warm up scipy
        best = float("inf")
        for r in range(args.repeat):
            t0 = time.perf_counter()
            D.sample_pairs(name, args.n, np.random.default_rng(r))
            best = min(best, time.perf_counter() - t0)
        tracemalloc.start()
        D.sample_pairs(name, args.n, np.random.default_rng(0))
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        print(f"{name:<17} {args.n / best:>12,.0f} {peak:>9.1f}")


if __name__ == "__main__":
    main()
