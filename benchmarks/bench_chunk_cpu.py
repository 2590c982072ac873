"""CPU seconds of ``sweep.run_chunk`` over bench_sweep.py's quick sweeps (500 single-client points,
100 three-client RAG points), serial and in-process (no parts, no netCDF), split into kernel time
and Python time (lowering, results). ``time.process_time``, the least of 3 repetitions: on a
shared machine it moves far less with other processes' load than wall time, so two trees can be
compared by running this in each, interleaved.

    PYTHONPATH=. NUMBA_NUM_THREADS=1 python benchmarks/bench_chunk_cpu.py
"""
from __future__ import annotations

import importlib.util
import time
import warnings
from pathlib import Path


def main() -> None:
    warnings.filterwarnings("ignore")
    path = Path(__file__).with_name("bench_sweep.py")
    spec_ = importlib.util.spec_from_file_location("bench_sweep", path)
    B = importlib.util.module_from_spec(spec_)
    spec_.loader.exec_module(B)
    from mistfast import sweep as S
    from mistfast.kernels import cluster as CL
    from mistfast.kernels import metrics as M
    S._warm()
    kernel_s = [0.0]

    def timed(f):
        def g(*a):
            t = time.process_time()
            r = f(*a)
            kernel_s[0] += time.process_time() - t
            return r
        return g

    CL.simulate_points_serial = timed(CL.simulate_points_serial)
    CL.simulate_cluster = timed(CL.simulate_cluster)
    M.summarize_points = timed(M.summarize_points)
    for name, doc in (("single-client", B.sweep_doc(True)), ("RAG pipeline", B.rag_sweep_doc(True))):
        spec = S.parse_sweep(doc)
        S.run_chunk(spec, 0, 2)   # labels, caches and kernels loaded before timing
        total, kern = [], []
        for _ in range(3):
            S._REQUESTS_CACHE.clear()
            kernel_s[0] = 0.0
            t = time.process_time()
            for a, z in S._chunks(spec.n_points, spec.chunk_points):
                S.run_chunk(spec, a, z)
            total.append(time.process_time() - t)
            kern.append(kernel_s[0])
        py = min(t - k for t, k in zip(total, kern))
        print(f"{name:14} {spec.n_points:4} points: {min(total):.2f} CPU s ({spec.n_points / min(total):.0f} points/CPU s); "
              f"kernels {min(kern):.2f} s, Python {py:.3f} s ({py / spec.n_points * 1e3:.2f} ms/point)")


if __name__ == "__main__":
    main()
