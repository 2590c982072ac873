#!/usr/bin/env python
"""mistfast calibrated to Vidur's per-operator profile, against Vidur's own run.

Reads ../shared/peer-data/vidur/llama2-70b_a100_tp2 (Vidur's Llama-2-70B / A100 / TP2 profile)
with ``mistfast.importers.load_vidur_profile``, samples Vidur's step-time model on its profiled
batch shapes, fits efficiencies and a (tokens, context) step correction (``calibration.calibrate``),
writes them to a calibration TOML, points a client at it (``engine = "vidur"``, ``calibration =
FILE``) and replays the 10,000 requests of ../shared/peer-data/vidur/run_vllm_n10000 with Vidur's
vLLM settings (continuous batching with prefill-only steps, batch cap 128, 4,096 tokens per batch,
3,328 KV blocks of 16 tokens). Prints TTFT / TPOT / E2E mean, median and p99 against
``vidur_summary.json``, the per-step fit error, and the time and peak memory of each phase.

Usage: python benchmarks/bench_vidur.py [--shared PATH]
"""
from __future__ import annotations

import os

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", default=os.environ.get("MISTFAST_SHARED")
                    or str(Path(__file__).resolve().parents[2] / "shared"))
    a = ap.parse_args()
    vid = Path(a.shared) / "peer-data" / "vidur"
    if not (vid / "llama2-70b_a100_tp2" / "mlp.csv").exists():
        print(f"skipped: {vid} not found")
        return 0
    import mistfast as mf
    from mistfast import calibration as C
    from mistfast import importers as I
    from mistfast.specs import parse_scenario

    t0 = time.perf_counter()
    prof = I.load_vidur_profile(vid / "llama2-70b_a100_tp2", model="llama-2-70b", device="A100", tp=2)
    obs = prof.observations()
    t1 = time.perf_counter()
    cal = C.calibrate(obs)
    t2 = time.perf_counter()
    key = "llama-2-70b|A100|tp2|pp1|fp16/fp16/fp16/fp16|vidur"
    print(f"profile: {len(obs)} step observations in {t1 - t0:.2f} s; fit in {t2 - t1:.2f} s")
    print(f"step correction: {len(cal.corrections[key]['tokens'])} knots; {cal.corrections[key]['source']}")
    with tempfile.TemporaryDirectory() as d:
        path = C.write_calibration_toml(cal, Path(d) / "vidur.toml")
        spec = parse_scenario({
            "calibration": str(path),
            "clients": [{"model": "llama-2-70b", "device": "A100", "tp": 2, "precision": "fp16", "engine": "vidur",
                         "scheduler": {"batching": "continuous", "max_batch_size": 128, "max_batched_tokens": 4096,
                                       "block_size": 16, "kv_capacity_tokens": 3328 * 16, "watermark": 0.01}}],
            "workload": {"num_requests": 10000,
                         "trace": {"path": str(vid / "run_vllm_n10000" / "workload.csv.gz"), "format": "lengths"}},
            "simulation": {"horizon_s": 1e6},
        })
    mf.simulate(spec)  # compile / warm up
    t3 = time.perf_counter()
    ds = mf.simulate(spec)
    t4 = time.perf_counter()
    n = int(ds["n_finished"])
    print(f"simulate: {n} requests in {t4 - t3:.3f} s = {n / (t4 - t3):,.0f} requests/s; "
          f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    ref = json.loads((vid / "run_vllm_n10000" / "vidur_summary.json").read_text())
    print(f"{'metric':<10}{'stat':>6}{'mistfast':>12}{'Vidur':>12}{'error':>9}")
    worst = 0.0
    for ours, theirs in (("ttft", "prefill_e2e_time"), ("tpot", "tpot_derived_s"), ("e2e", "request_e2e_time")):
        for q in ("mean", "p50", "p99"):
            got, want = float(ds[f"{ours}_{q}_ms"]), ref[theirs][q] * 1e3
            err = got / want - 1
            if q != "mean":
                worst = max(worst, abs(err))
            print(f"{ours:<10}{q:>6}{got:>12.1f}{want:>12.1f}{err:>+9.1%}")
    print(f"largest |error| over medians and p99: {worst:.1%} (target 5 %)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
