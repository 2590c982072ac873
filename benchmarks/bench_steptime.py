#!/usr/bin/env python
"""Speed of the step-latency kernel (``mistfast.kernels.steptime.step_time``).

Prints step-latency evaluations per second on ONE thread for
  (a) decode-only steps: 64 decodes, KV lengths uniform in [100, 4000];
  (b) mixed steps: 8 prefill chunks + 248 decodes (256 requests);
for Llama-3.1-8B on 1 x H100 and Llama-3.1-70B on 8 x H100 (TP8), measured three ways:
  * ``calibration._cost_steps`` (the fitter's CSR re-costing) over a batch of distinct steps
    (one Python call per pass);
  * a tiny njit loop calling ``step_time`` with one reused breakdown buffer (as the engine does);
  * the public Python API ``mistfast.step_latency`` (per-call cost, Python overhead included).

Usage: python benchmarks/bench_steptime.py [--quick] [--evals N]
"""
from __future__ import annotations

import os

os.environ["NUMBA_NUM_THREADS"] = "1"  # per-core figures: must precede the numba import

import argparse
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

TARGET_EVALS_S = 1_000_000  # (a), per core


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fast smoke run (fewer evaluations and repeats)")
    ap.add_argument("--evals", type=int, default=None, help="evaluations per timed pass (default 200000; 20000 with --quick)")
    ap.add_argument("--seed", type=int, default=0)
    return ap.parse_args()


def make_steps(rng, n_distinct, n_pf, n_dec):
    """CSR description of ``n_distinct`` different steps of n_pf prefill chunks + n_dec decodes."""
    pf_off = np.arange(n_distinct + 1, dtype=np.int64) * n_pf
    dec_off = np.arange(n_distinct + 1, dtype=np.int64) * n_dec
    pf_past = rng.integers(0, 4000, n_distinct * n_pf).astype(np.float64)
    pf_new = rng.integers(16, 513, n_distinct * n_pf).astype(np.float64)
    pf_done = np.full(n_distinct, float(n_pf // 2))
    dec_w = np.ones(n_distinct * n_dec)
    dec_s = np.zeros(n_distinct * n_dec)
    dec_k = rng.integers(100, 4001, n_distinct * n_dec).astype(np.float64)
    return pf_past, pf_new, pf_off, pf_done, dec_w, dec_s, dec_k, dec_off


def cost_csr(prm, pool, out_t):
    """Cost every step of a CSR pool with the fitter's re-costing loop (one parameter row)."""
    from mistfast.calibration import _cost_steps
    pf_past, pf_new, pf_off, pf_done, dec_w, dec_s, dec_k, dec_off = pool
    _cost_steps(prm[None, :], np.zeros(len(out_t), dtype=np.int64), pf_off, pf_past, pf_new, pf_done,
                dec_off, dec_w, dec_s, dec_k, out_t)


def best_of(fn, repeats):
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main():
    args = parse_args()
    quick = args.quick
    n_evals = args.evals or (20_000 if quick else 200_000)
    repeats = 2 if quick else 5
    n_distinct = 2_000  # distinct steps in the CSR pool; passes cycle over it

    t_imp = time.perf_counter()
    import numba
    import mistfast
    from mistfast import stepmodel
    from mistfast.kernels import steptime as K
    from mistfast.specs import make_client
    t_imp = time.perf_counter() - t_imp

    ST = K.step_time

    @numba.njit(cache=False, nogil=True)
    def loop_step_time(prm, pf_past, pf_new, pf_off, pf_done, dec_w, dec_s, dec_k, dec_off, n_evals, out):
        """n_evals calls of step_time cycling over the pool; one breakdown buffer (engine-like)."""
        n = pf_off.shape[0] - 1
        acc = 0.0
        i = 0
        for _ in range(n_evals):
            a, b = pf_off[i], pf_off[i + 1]
            c, d = dec_off[i], dec_off[i + 1]
            acc += ST(prm, pf_past[a:b], pf_new[a:b], b - a, pf_done[i],
                      dec_w[c:d], dec_s[c:d], dec_k[c:d], d - c, out)
            i += 1
            if i == n:
                i = 0
        return acc

    print("mistfast step-latency kernel benchmark")
    print(f"  python {platform.python_version()}, numpy {np.__version__}, numba {numba.__version__}, "
          f"NUMBA_NUM_THREADS={numba.config.NUMBA_NUM_THREADS}, cpu: {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} logical CPUs")
    print(f"  {n_evals:,} evaluations per timed pass (pool of {n_distinct:,} distinct steps), best of {repeats}"
          f"{'  [--quick]' if quick else ''}")
    print(f"  import mistfast + kernels: {t_imp:.2f} s")

    clients = [
        ("Llama-3.1-8B  1xH100", make_client("llama-3.1-8b", "H100", tp=1)),
        ("Llama-3.1-70B 8xH100 TP8", make_client("llama-3.1-70b", "H100", tp=8)),
    ]
    cases = [("(a) decode-only, 64 decodes, KV 100-4000", 0, 64),
             ("(b) mixed, 8 prefill chunks + 248 decodes", 8, 248)]

    rng = np.random.default_rng(args.seed)
    pools = {name: make_steps(rng, n_distinct, n_pf, n_dec) for name, n_pf, n_dec in cases}

    # ---- warm-up: load from the on-disk cache (or compile) ----------------------------------
    prm0 = stepmodel.client_params(clients[0][1])
    p0 = pools[cases[0][0]]
    t0 = time.perf_counter()
    cost_csr(prm0, p0, np.empty(n_distinct))
    t_warm_many = time.perf_counter() - t0
    t0 = time.perf_counter()
    loop_step_time(prm0, *p0, 1, np.zeros(K.N_OUT))
    t_warm_loop = time.perf_counter() - t0
    print(f"  first call CSR cost_steps (cache load or compile): {t_warm_many:.3f} s; "
          f"benchmark njit loop (compile): {t_warm_loop:.3f} s")
    print()

    results = []
    hdr = f"{'client':<26}{'case':<44}{'CSR cost_steps':>16}{'njit loop':>14}{'ns/eval':>9}{'step ms':>9}"
    print("Kernel throughput, single thread (evaluations/s)")
    print(hdr)
    print("-" * len(hdr))
    for cname, client in clients:
        prm = stepmodel.client_params(client)
        for case, n_pf, n_dec in cases:
            pool = pools[case]
            passes = max(1, n_evals // n_distinct)
            out_t = np.empty(n_distinct)

            def run_many():
                for _ in range(passes):
                    cost_csr(prm, pool, out_t)

            out1 = np.zeros(K.N_OUT)

            def run_loop():
                loop_step_time(prm, *pool, passes * n_distinct, out1)

            run_many()
            run_loop()
            t_many = best_of(run_many, repeats)
            t_loop = best_of(run_loop, repeats)
            ev = passes * n_distinct
            r_many, r_loop = ev / t_many, ev / t_loop
            results.append((cname, case, r_many, r_loop))
            print(f"{cname:<26}{case:<44}{r_many:>16,.0f}{r_loop:>14,.0f}{1e9 / max(r_many, r_loop):>9.0f}"
                  f"{np.median(out_t) * 1e3:>9.3f}")
    print()

    # ---- Python API -------------------------------------------------------------------------
    print("Public Python API mistfast.step_latency (per call, includes client_params + list->array)")
    hdr = f"{'client':<26}{'case':<44}{'us/call':>10}{'calls/s':>12}{'  of which client_params us':>28}"
    print(hdr)
    print("-" * len(hdr))
    n_api = 300 if quick else 2000
    for cname, client in clients:
        t0 = time.perf_counter()
        for _ in range(n_api):
            stepmodel.client_params(client)
        t_prm = (time.perf_counter() - t0) / n_api
        for case, n_pf, n_dec in cases:
            pool = pools[case]
            pf = [(int(pool[0][i]), int(pool[1][i])) for i in range(n_pf)]
            dec = [(1, int(pool[6][j])) for j in range(n_dec)]
            mistfast.step_latency(client, pf, dec)  # warm
            best = np.inf
            for _ in range(3):
                t0 = time.perf_counter()
                for _ in range(n_api):
                    mistfast.step_latency(client, pf, dec)
                best = min(best, (time.perf_counter() - t0) / n_api)
            print(f"{cname:<26}{case:<44}{best * 1e6:>10.1f}{1 / best:>12,.0f}{t_prm * 1e6:>28.1f}")
    print()

    a_rates = [max(r_many, r_loop) for _, case, r_many, r_loop in results if case.startswith("(a)")]
    worst = min(a_rates)
    verdict = "MET" if worst >= TARGET_EVALS_S else "NOT MET"
    print(f"Target (a) >= {TARGET_EVALS_S:,} evals/s per core: {verdict} "
          f"(slowest client {worst:,.0f} evals/s = {worst / TARGET_EVALS_S:.1f}x target)")


if __name__ == "__main__":
    main()
