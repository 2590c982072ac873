#!/usr/bin/env python
"""Engine speed on models of 2025-26 (ONE thread): gpt-oss-120b (sliding windows, MXFP4 experts),
DeepSeek-R1 (MLA, MoE with EP), Llama-4-Scout (chunked attention: no decode runs).

Workload: N Poisson requests (default 4,000) with Azure-conversation-like input lengths
(lognormal mean 1155, std 1109) and outputs of mean 400 (std 300), at a rate below saturation.
Prints, per model, the best-of-K wall time of ``mistfast.simulate`` with and without decode runs,
simulated requests/s, the TPOT/TTFT medians (identical in both modes) and the peak Python memory.

Usage: python benchmarks/bench_models_2025.py [--requests N] [--repeats K]
"""
from __future__ import annotations

import os

os.environ["NUMBA_NUM_THREADS"] = "1"  # per-core figures: must precede the numba import

import argparse
import sys
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CASES = {
    "gpt-oss-120b, 1 x H100": ({"model": "openai/gpt-oss-120b", "device": "H100",
                                "scheduler": {"max_batch_size": 256}}, 4.0),
    "DeepSeek-R1 fp8, 8 x H200, EP 8": ({"model": "deepseek-ai/DeepSeek-R1", "device": "H200", "tp": 8, "ep": 8,
                                         "efficiency": {"expert_imbalance": 1.2}}, 4.0),
    "Llama-4-Scout fp8, 4 x H100": ({"model": "llama-4-scout", "device": "H100", "tp": 4, "precision": "fp8"}, 8.0),
}


def scenario(client: dict, rate: float, n: int) -> dict:
    return {"clients": [client],
            "workload": {"num_requests": n, "arrival": {"process": "poisson", "rate_rps": rate},
                         "input": {"dist": "lognormal", "mean": 1155, "std": 1109, "max_tokens": 8000},
                         "output": {"dist": "lognormal", "mean": 400, "std": 300, "max_tokens": 4000}},
            "simulation": {"seed": 1}}


def best_time(fn, repeats: int):
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=4000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    import mistfast as mf

    t = time.perf_counter()
    mf.simulate(scenario(CASES["gpt-oss-120b, 1 x H100"][0], 4.0, 20))
    print(f"first call (kernel cache load or compilation): {time.perf_counter() - t:.1f} s")
    for name, (client, rate) in CASES.items():
        doc = scenario(client, rate, args.requests)
        for runs in (True, False):
            tracemalloc.start()
            dt, ds = best_time(lambda: mf.simulate(doc, decode_runs=runs), args.repeats)
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            print(f"{name:<34} decode_runs={runs!s:<5} {dt:7.3f} s  {args.requests / dt:9.0f} requests/s  "
                  f"TPOT p50 {float(ds.tpot_p50_ms):6.2f} ms  TTFT p50 {float(ds.ttft_p50_ms):8.1f} ms  "
                  f"finished {int(ds.n_finished)}  peak {peak / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
