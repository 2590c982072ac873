"""Replay the reference simulator's own run W1 (MIST v0.1.0 + GenZ, ../shared/peer-data/mist) in
GenZ-compatible mode with MIST's metric definitions and print mistfast vs MIST, per metric and per
request. Not a test (tests/test_mist_parity.py checks the 0.1 % bound); needs ../shared.

    python benchmarks/mist_parity.py [--shared PATH]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("NUMBA_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from mistfast import workload as W  # noqa: E402
from mistfast.runner import run_points  # noqa: E402
from mistfast.scenario import per_request_vars, scenario_point  # noqa: E402
from mistfast.specs import parse_scenario  # noqa: E402

W1_SPEC = {
    "simulation": {"horizon_s": 1e6, "drain": True, "metrics": "mist"},
    "clients": [{"name": "llm", "model": "llama-3.1-8b", "device": "H100-genz", "reference": "genz",
                 "scheduler": {"batching": "chunked", "chunk_size": 512, "max_batch_size": 128,
                               "policy": "fcfs", "preemption": False, "block_size": 1,
                               "reserved_memory_GiB": 0, "watermark": 0}}],
}
METRICS = {"ttft_mean_ms": "TTFT", "tpot_mean_ms": "TPOT", "e2e_p50_ms": "T50_latency",
           "e2e_p90_ms": "T90_latency", "e2e_p99_ms": "T99_latency", "request_throughput_rps": "rps",
           "output_tok_s": "output_throughput", "total_tok_s": "total_token_throughput"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared"))
    d = Path(ap.parse_args().shared) / "peer-data" / "mist"
    ref = pd.read_csv(d / "W1_requests.csv").sort_values("request_id").reset_index(drop=True)
    stats = json.loads((d / "W1_stats.json").read_text())
    reqs = W.Requests.from_arrays(ref.arrival_ms.to_numpy() / 1e3, ref.input_len.to_numpy(), ref.output_len.to_numpy())
    for memo in (False, True):
        doc = {**W1_SPEC, "clients": [{**W1_SPEC["clients"][0], "mist_memo": memo}]}
        pt = scenario_point(parse_scenario(doc), requests=reqs)
        run_points([pt])  # compile / load the kernels outside the timing
        t0 = time.perf_counter()
        res = run_points([pt], per_request=True)
        wall = time.perf_counter() - t0
        s, pr = res["summary"], per_request_vars(res["requests"])
        print(f"\nW1, mist_memo = {str(memo).lower()}: {len(ref)} requests, {int(s['n_steps'][0])} steps "
              f"(MIST: {stats['scheduled_steps']}); {wall * 1e3:.1f} ms wall here, {stats['wall_run_sim_s']:.0f} s in MIST")
        print(f"{'metric':24s} {'mistfast':>14s} {'MIST':>14s} {'diff':>9s}")
        for k, m in METRICS.items():
            a, b = float(s[k][0]), float(stats["stats"][m])
            print(f"{k:24s} {a:14.6f} {b:14.6f} {100 * (a / b - 1):+8.4f}%")
        for col, refcol in (("req_ttft_ms", "ttft_ms"), ("req_e2e_ms", "e2e_ms")):
            rel = np.abs(pr[col] / ref[refcol].to_numpy() - 1)
            exact = int(np.argmax(rel > 1e-9)) if (rel > 1e-9).any() else len(rel)
            print(f"per-request {refcol}: median |diff| {np.median(rel) * 100:.4f} %, max {rel.max() * 100:.3g} %, "
                  f"> 1 %: {(rel > 0.01).sum()} requests; exact (1e-9) up to request {exact}")


if __name__ == "__main__":
    main()
