#!/usr/bin/env python
"""Cost and effect of the P/D pipeline features (docs/pipeline-features.md): the docs example (two
prefill engines, a decode engine with 5 % KV memory, one mixed engine; Llama-3.1-8B on H100, 40 req/s)
scaled to 3,000 requests, with every feature off and with KV backpressure, Splitwise overflow (both
stages) and layer-wise KV transfer on.

Reported per variant: simulated requests/s (best of 3, after a warm-up call that loads the numba
cache), p99 TTFT, the prefill side's KV-blocked seconds per client, request status counts, peak RSS.

Usage: python benchmarks/bench_pipeline_features.py
"""
from __future__ import annotations

import os

os.environ["NUMBA_NUM_THREADS"] = "1"  # per-core figures: must precede the numba import

import re  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mistfast.catalog import tomllib  # noqa: E402
from mistfast.pipeline import pipeline_dataset, run_pipeline  # noqa: E402
from mistfast.scenario import build_requests, point_seed  # noqa: E402
from mistfast.specs import parse_scenario  # noqa: E402

FEATURES = (', overflow_pool = "M", overflow_tokens = 4096',
            ', overflow_pool = "M", kv_backpressure = true, kv_transfer = "layerwise"')


def main():
    doc = (ROOT / "docs" / "pipeline-features.md").read_text()
    code = re.search(r"```toml\n(.*?)```", doc, re.S).group(1)
    code = code.replace("num_requests = 60", "num_requests = 3000").replace("horizon_s = 20", "horizon_s = 200")
    off = code
    for f in FEATURES:
        off = off.replace(f, "")
    for name, text in (("all off", off), ("all on", code)):
        sc = parse_scenario(tomllib.loads(text))
        ss = point_seed(sc.simulation.seed)
        reqs = build_requests(sc.workload, sc.simulation.horizon_s, ss)
        run_pipeline(sc, reqs, ss)
        best = np.inf
        for _ in range(3):
            t0 = time.perf_counter()
            run = run_pipeline(sc, reqs, ss)
            best = min(best, time.perf_counter() - t0)
        ds = pipeline_dataset(sc, run, False)
        print(f"{name:8s} {len(reqs) / best:9.0f} simulated requests/s   p99 TTFT {float(ds['ttft_p99_ms']):7.1f} ms   "
              f"KV-blocked s per client {ds['client_kv_blocked_s'].values.round(2)}   "
              f"status counts {np.bincount(run['requests']['status'], minlength=6)}")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
