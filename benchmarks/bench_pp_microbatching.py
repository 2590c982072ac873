#!/usr/bin/env python
"""Speed of the engine with PP micro-batch pipelining (``scheduler.micro_batching``, kernels/ppipe.py)
against the sequential engine on the same load.

One Llama-3.1-8B engine on H100 with pp = 2, chunked batching (max_batch_size 64), 5,000 Poisson
requests at 20 req/s with Azure-conversation-like lengths. A pipelined engine forms about twice as
many steps (two micro-batches in flight) and does not advance in decode runs (measured on a shared
2-core machine: 0.09-0.19 s either way, i.e. 26,000-55,000 simulated requests/s). Reported: wall time (after the numba cache is loaded), simulated requests/s,
steps, output tokens/s of the simulated engine, peak RSS.

Usage: python benchmarks/bench_pp_microbatching.py
"""
from __future__ import annotations

import os

os.environ["NUMBA_NUM_THREADS"] = "1"  # per-core figures: must precede the numba import

import resource
import time

import mistfast as mf

N = 5000


def scenario(micro_batching: bool) -> dict:
    return {"simulation": {"seed": 3, "horizon_s": 600},
            "clients": [{"name": "llm", "model": "llama-3.1-8b", "device": "H100", "pp": 2,
                         "scheduler": {"batching": "chunked", "max_batch_size": 64, "micro_batching": micro_batching}}],
            "workload": {"num_requests": N, "arrival": {"process": "poisson", "rate_rps": 20},
                         "input": {"dist": "lognormal", "mean": 1155, "std": 1109, "max_tokens": 8192},
                         "output": {"dist": "lognormal", "mean": 211, "std": 230, "max_tokens": 2048}}}


def main() -> None:
    for mb in (False, True):
        mf.simulate(scenario(mb))          # load (or compile) the kernels
        t0 = time.perf_counter()
        ds = mf.simulate(scenario(mb))
        wall = time.perf_counter() - t0
        print(f"micro_batching={str(mb):5s}  {wall:6.2f} s  {N / wall:8.0f} requests/s  "
              f"steps {int(ds.n_steps):6d}  engine output {float(ds.output_tok_s):6.0f} tok/s")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
