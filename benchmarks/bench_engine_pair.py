#!/usr/bin/env python
"""Paired, interleaved CPU time of ``bench_engine.py``'s raw kernel call in two source trees.

``bench_engine.py`` prints best-of wall times, which on a shared, loaded machine mostly measure the
load. Here each tree gets a child process that builds the same point (10,000 Poisson requests at
20 req/s, Llama-3.1-8B on 1 x H100, chunked prefill) once and times ``simulate_points_serial`` on
fresh copies of its arrays whenever asked, CPU time of the process; rounds alternate between the
trees (A B, B A, ...) and the median of the per-pair ratios B/A is reported with its quartiles.
The children also print the steps and the steps advanced in decode runs (the same steps in both
trees for any bit-identical change of the engine).

Usage: python benchmarks/bench_engine_pair.py TREE_A TREE_B [--rounds 8] [--requests 10000] [--rate 20]
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
tree, n, rate = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
sys.path.insert(0, os.path.join(tree, "benchmarks"))
import numpy as np
import mistfast
assert mistfast.__file__.startswith(os.path.realpath(tree)), mistfast.__file__
from bench_engine import kernel_args, scenario_doc
from mistfast import scenario as SC
from mistfast.specs import parse_scenario
from mistfast.kernels import cluster as CL
kargs = kernel_args(SC.scenario_point(parse_scenario(scenario_doc(n, rate))))
fresh = lambda: [x.copy() if isinstance(x, np.ndarray) else x for x in kargs]
CL.simulate_points_serial(*fresh())
print("ready", flush=True)
for _ in sys.stdin:
    a = fresh()
    t0 = time.process_time()
    CL.simulate_points_serial(*a)
    cs = a[-3][0, 0]
    print((time.process_time() - t0) * 1e3, int(cs[CL.CS_STEPS]), int(cs[CL.CS_RUN_STEPS]), flush=True)
'''


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("tree_a")
    ap.add_argument("tree_b")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--requests", type=int, default=10_000)
    ap.add_argument("--rate", type=float, default=20.0)
    args = ap.parse_args()
    trees = [os.path.realpath(args.tree_a), os.path.realpath(args.tree_b)]
    children = []
    for tree in trees:
        env = dict(os.environ, PYTHONPATH=tree, NUMBA_NUM_THREADS="1")
        child = subprocess.Popen([sys.executable, "-c", CHILD, tree, str(args.requests), str(args.rate)],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        if child.stdout.readline().strip() != "ready":
            sys.exit(f"bench_engine_pair: the child for {tree} did not start")
        children.append(child)
    ms, steps = [[], []], [None, None]
    for i in range(args.rounds):
        for k in ((0, 1) if i % 2 == 0 else (1, 0)):
            children[k].stdin.write("go\n")
            children[k].stdin.flush()
            cpu_ms, n_steps, n_run = children[k].stdout.readline().split()
            ms[k].append(float(cpu_ms))
            steps[k] = (n_steps, n_run)
    for child in children:
        child.stdin.close()
        child.wait()
    ratios = [b / a for a, b in zip(*ms)]
    q1, _, q3 = statistics.quantiles(ratios, n=4)
    for tree, m, (n_steps, n_run) in zip(trees, ms, steps):
        print(f"{tree}: raw kernel CPU ms, median {statistics.median(m):.1f}, best {min(m):.1f} "
              f"({args.rounds} rounds; {n_steps} steps, {n_run} in decode runs)")
    print(f"B/A per interleaved pair: median {statistics.median(ratios):.3f} (quartiles {q1:.3f}, {q3:.3f}); "
          f"best/best {min(ms[1]) / min(ms[0]):.3f}")


if __name__ == "__main__":
    main()
