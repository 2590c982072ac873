#!/usr/bin/env python
"""Cold compile of the kernels, and where its time goes (issue 13, docs/kernels.md "Compile time").

Runs a fresh Python process with an empty ``NUMBA_CACHE_DIR`` that simulates
``examples/single_client.toml`` (compiles the single-client kernels) and then
``examples/kv_tiers.toml`` (a pipeline: whatever simulate_cluster needs on top), and prints the
CPU time of each (``time.process_time``: the machine is shared, wall time means little), then,
from numba's event API (``numba.core.event``), per compiled function: how many signatures it was
compiled for and the CPU time of its compiler passes (exclusive of nested compiles), and how much
of the total went to LLVM (function passes, module passes after linking the callees, machine
code). A function compiled more than once (an integer literal argument, another array layout) is
marked.

Usage: python benchmarks/bench_compile.py [--top 25] [--passes 20] [--json out.json]
It measures the checkout it belongs to (the child runs in its root); to compare two trees, run
each tree's copy, interleaved, on a shared machine.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = r'''
import json, sys, time
from collections import defaultdict
c_start = time.process_time()
from numba.core import codegen, event

stack = []                      # [kind, key, start, time of nested compiles]
compiles = []                   # (function, signature)
by_function = defaultdict(float)
by_pass = defaultdict(float)    # "function|pass" -> exclusive CPU s
llvm = defaultdict(float)


class Passes(event.Listener):
    """Exclusive CPU time of each compiler pass, by function (nested compiles subtracted)."""
    def __init__(self, kind):
        self.kind = kind

    def on_start(self, ev):
        data = ev.data or {}
        if self.kind == "compile":
            fn = getattr(data.get("dispatcher"), "py_func", None)
            key = (f"{fn.__module__}.{fn.__qualname__}" if fn else "?", str(data.get("args")))
        else:
            key = data.get("qualname")
        stack.append([self.kind, key, time.process_time(), 0.0])

    def on_end(self, ev):
        kind, key, t0, nested = stack.pop()
        spent = time.process_time() - t0
        if stack:
            stack[-1][3] += spent
        if kind == "compile":
            compiles.append(key)
        else:
            by_function[key] += spent - nested
            by_pass[f"{key}|{(ev.data or {}).get('name')}"] += spent - nested


def timed(cls, name, label):
    original = getattr(cls, name)

    def wrapper(self, *args, **kwargs):
        t0 = time.process_time()
        try:
            return original(self, *args, **kwargs)
        finally:
            llvm[label] += time.process_time() - t0
    setattr(cls, name, wrapper)


event.register("numba:compile", Passes("compile"))
event.register("numba:run_pass", Passes("pass"))
timed(codegen.CPUCodeLibrary, "_optimize_functions", "function passes")
timed(codegen.CPUCodeLibrary, "_optimize_final_module", "module passes after linking")
timed(codegen.CPUCodeLibrary, "_finalize_final_module", "machine code")
import mistfast
c0 = time.process_time()
mistfast.simulate("examples/single_client.toml")
c1 = time.process_time()
mistfast.simulate("examples/kv_tiers.toml")
c2 = time.process_time()
json.dump(dict(tree=str(mistfast.__file__), import_s=c0 - c_start, single_s=c1 - c_start, pipeline_s=c2 - c1, compiles=compiles,
               by_function=dict(by_function), by_pass=dict(by_pass), llvm=dict(llvm)), sys.stdout)
'''


def profile(env_extra: dict | None = None) -> dict:
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache, NUMBA_NUM_THREADS="1", **(env_extra or {}))
        out = subprocess.run([sys.executable, "-c", CHILD], cwd=ROOT, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"bench_compile: the child failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout)


def report(res: dict, top: int) -> None:
    print(f"mistfast from {Path(res['tree']).parent.parent}")
    print(f"cold compile + first simulate, examples/single_client.toml: {res['single_s']:.1f} CPU s "
          f"(import {res['import_s']:.1f}); then examples/kv_tiers.toml: {res['pipeline_s']:.1f} CPU s")
    counts: dict[str, int] = {}
    for name, _sig in res["compiles"]:
        short = name.rsplit(".", 1)[-1]
        counts[short] = counts.get(short, 0) + 1
    total = sum(res["by_function"].values())
    print(f"compiler passes: {total:.1f} CPU s over {len(res['compiles'])} compiles; "
          + ", ".join(f"{k} {v:.1f} s" for k, v in res["llvm"].items()) + " (LLVM)")
    print(f"{'CPU s':>7} {'share':>6} {'compiles':>8}  function")
    for fn, s in sorted(res["by_function"].items(), key=lambda kv: -kv[1])[:top]:
        n = counts.get(fn, 0)
        mark = "  <- compiled more than once" if n > 1 and not fn.endswith("impl") else ""
        print(f"{s:7.2f} {s / (total or 1.0):6.1%} {n:8d}  {fn}{mark}")


def report_passes(res: dict, top: int) -> None:
    """The costliest (function, compiler pass) pairs: where a function's time goes (type inference,
    numba's IR inlining, lowering to LLVM with LLVM's function passes, ...)."""
    rows = sorted(res.get("by_pass", {}).items(), key=lambda kv: -kv[1])[:top]
    print(f"{'CPU s':>7}  function | compiler pass")
    for key, s in rows:
        print(f"{s:7.2f}  {key.replace('|', ' | ')}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--top", type=int, default=25, help="functions listed (default 25)")
    ap.add_argument("--json", help="also write the raw profile here")
    ap.add_argument("--passes", type=int, default=0, help="also list the N costliest (function, pass) pairs")
    args = ap.parse_args()
    res = profile()
    if args.json:
        Path(args.json).write_text(json.dumps(res))
    report(res, args.top)
    if args.passes:
        report_passes(res, args.passes)


if __name__ == "__main__":
    main()
