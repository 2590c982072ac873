#!/usr/bin/env python
"""Paired, interleaved kernel CPU time of two source trees on the points of ``bench_kernel_point.py``.

On a shared, loaded machine the CPU time of a process varies by tens of percent from one second
to the next (other processes share the cores' caches), so comparing two runs made minutes apart
says little. Here each tree gets a child process that lowers the quick sweep's points once and
then times one round of ``kernels.cluster.simulate_points_serial`` over them whenever asked; the
rounds alternate between the trees (A B, B A, A B, ...), so neighbouring rounds see the same
load, and the median of the per-pair ratios B/A is reported with its quartiles and the ratio of
the best rounds.

Usage: python benchmarks/bench_kernel_pair.py TREE_A TREE_B [--points 100] [--rounds 30]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys

CHILD = r'''
import os, sys, time
os.environ["NUMBA_NUM_THREADS"] = "1"
tree, n_points = sys.argv[1], int(sys.argv[2])
sys.path.insert(0, os.path.join(tree, "benchmarks"))
import numpy as np
import mistfast
assert mistfast.__file__.startswith(os.path.realpath(tree)), mistfast.__file__
from bench_kernel_point import captured_chunks
from mistfast.kernels import cluster as CL
chunks = captured_chunks(n_points)
kern = CL.simulate_points_serial
fresh = lambda: [[x.copy() if isinstance(x, np.ndarray) else x for x in c] for c in chunks]
for args in fresh():
    kern(*args)
n = sum(c[0].shape[0] for c in chunks)
print("ready", flush=True)
for _ in sys.stdin:
    copies = fresh()
    t0 = time.process_time()
    for args in copies:
        kern(*args)
    print((time.process_time() - t0) / n * 1e3, flush=True)
'''


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("tree_a")
    ap.add_argument("tree_b")
    ap.add_argument("--points", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=30)
    args = ap.parse_args()
    trees = [os.path.realpath(args.tree_a), os.path.realpath(args.tree_b)]
    children = []
    for tree in trees:
        env = dict(os.environ, PYTHONPATH=tree, NUMBA_NUM_THREADS="1")
        child = subprocess.Popen([sys.executable, "-c", CHILD, tree, str(args.points)], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True, env=env)
        if child.stdout.readline().strip() != "ready":
            sys.exit(f"bench_kernel_pair: the child for {tree} did not start")
        children.append(child)
    ms = [[], []]
    for i in range(args.rounds):
        for k in ((0, 1) if i % 2 == 0 else (1, 0)):
            children[k].stdin.write("go\n")
            children[k].stdin.flush()
            ms[k].append(float(children[k].stdout.readline()))
    for child in children:
        child.stdin.close()
        child.wait()
    ratios = [b / a for a, b in zip(*ms)]
    q1, _, q3 = statistics.quantiles(ratios, n=4)
    for tree, m in zip(trees, ms):
        print(f"{tree}: kernel CPU ms per point, median {statistics.median(m):.3f}, best {min(m):.3f} "
              f"({args.rounds} rounds of {args.points} points)")
    print(f"B/A per interleaved pair: median {statistics.median(ratios):.3f} (quartiles {q1:.3f}, {q3:.3f}); "
          f"best/best {min(ms[1]) / min(ms[0]):.3f}")


if __name__ == "__main__":
    main()
