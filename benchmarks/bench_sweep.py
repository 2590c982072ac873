#!/usr/bin/env python
"""Speed and memory of whole sweeps (``mistfast.run_sweep``): configuration points per second
and peak memory.

(a) 10,000 single-client points of 1,000 requests each: Llama-3.1-8B, product over
    device (H100, H200, B200, MI300X, A100) x batching (continuous, chunked) x max_batch_size
    (32..512) x chunk_size (256..2048) x request rate (50 rates, 0.5..25 req/s); default Azure-like
    lengths. Run (1) serially on one core and (2) with the ``processes`` scheduler on 2 workers,
    each in a fresh Python process, writing the parts directory and the netCDF file as a user would.
    Reported: wall time (kernel loading, process start-up and the netCDF write included), CPU time of
    the driver and its worker processes (points per CPU-second: what load on shared cores stretches least),
    points/s, points/s per core against the target of 200, simulated requests/s, peak RSS of the
    driver and of its worker processes (``resource`` maxrss; for children the largest one), and
    the driver's peak traced Python allocation (``tracemalloc``, on during the timed run: it costs
    a few per cent here because the kernel, not Python, takes the time; ``--no-tracemalloc`` to
    time without it). The numba cache is checked (compiled if stale) before anything is timed.
    Static batching is left out of the product: a static batch runs until its longest output is
    done, 10-20x the engine steps of the other policies; its cost per point is printed on its own.
(b) 100 points of 10,000-request 3-client RAG pipelines (embedder client, IVF-PQ retrieval
    server, Llama-3.1-8B client; 20 x 512 retrieved tokens per query): embedder device (5) x
    LLM device (2) x request rate (10), serially in a fresh process.

Usage: python benchmarks/bench_sweep.py [--quick] [--no-tracemalloc] [--chunk-points N]
``--quick`` runs 500 points (a smoke run of a minute or less).
"""
from __future__ import annotations

import os

os.environ["NUMBA_NUM_THREADS"] = "1"  # per-core figures: must precede the numba import

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGET_POINTS_PER_CORE_S = 200.0
N_REQUESTS = 1000


def rag_sweep_doc(quick: bool) -> dict:
    n = 1000 if quick else 10000
    return {
        "sweep": {"name": "bench_rag", "seed": 1, "chunk_points": 5, "axis": [
            {"name": "embed_device", "path": "clients[1].device", "values": ["Grace", "SPR", "Genoa", "A100", "H100"]},
            {"name": "llm_device", "path": "clients[0].device", "values": ["H100", "H200"]},
            {"name": "rate_rps", "path": "workload.arrival.rate_rps", "values": [0.2 * k for k in range(1, 11)]}]},
        "scenario": {
            "simulation": {"horizon_s": 1e6, "seed": 259},
            "workload": {"num_requests": n, "arrival": {"process": "poisson", "rate_rps": 1.0},
                         "input": {"dist": "lognormal", "mean": 1155, "std": 1109, "max_tokens": 4096},
                         "output": {"dist": "lognormal", "mean": 211, "std": 230, "max_tokens": 1024}},
            "clients": [{"name": "llm", "model": "llama-3.1-8b", "device": "H100",
                         "scheduler": {"batching": "chunked", "chunk_size": 2048}},
                        {"name": "embed", "model": "e5-base", "device": "Grace",
                         "scheduler": {"batching": "continuous", "max_batched_tokens": 8192}}],
            "servers": [{"name": "retrieval", "kind": "retrieval", "device": "Grace"}],
            "links": [{"between": ["retrieval", "llm"], "link": "PCIe4-x4"}],
            "pipelines": [{"name": "rag", "stages": [
                {"kind": "embed", "pool": "embed"},
                {"kind": "retrieve", "pool": "retrieval", "docs": 20, "doc_tokens": 512},
                {"kind": "llm", "pool": "llm"}]}],
        },
    }


def rag_child(quick: bool) -> dict:
    import tracemalloc
    from mistfast.sweep import _warm, parse_sweep, run_sweep
    _warm()
    spec = parse_sweep(rag_sweep_doc(quick))
    run_sweep(parse_sweep({**rag_sweep_doc(True), "sweep": {**rag_sweep_doc(True)["sweep"], "axis": [
        {"name": "rate_rps", "path": "workload.arrival.rate_rps", "values": [1.0]}]}}))  # load the pipeline kernel
    tracemalloc.start()
    t0 = time.perf_counter()
    ds = run_sweep(spec)
    wall = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    return {"points": spec.n_points, "wall_s": wall, "requests": int(ds.n_arrived.sum()),
            "finished": int(ds.n_finished.sum()), "maxrss_MiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "tracemalloc_peak_MiB": peak}


def sweep_doc(quick: bool, batching=("continuous", "chunked")) -> dict:
    rates = [0.5 * k for k in range(1, 51)]             # 50 rates, 0.5 .. 25 req/s
    chunk_sizes = [256, 512, 1024, 2048]
    if quick:
        rates = [2.5 * k for k in range(1, 11)]         # 10 rates
        chunk_sizes = [512]
    return {
        "sweep": {"name": "bench_sweep", "seed": 1, "chunk_points": 128, "axes": {
            "clients[0].device": ["H100", "H200", "B200", "MI300X", "A100"],
            "clients[0].scheduler.batching": list(batching),
            "clients[0].scheduler.max_batch_size": [32, 64, 128, 256, 512],
            "clients[0].scheduler.chunk_size": chunk_sizes,
            "workload.arrival.rate_rps": rates,
        }},
        "scenario": {
            "simulation": {"seed": 259},
            "slo": {"ttft_ms": 1000.0, "tpot_ms": 50.0},
            "workload": {"num_requests": N_REQUESTS, "arrival": {"process": "poisson"}},
            "clients": [{"name": "llm", "model": "llama-3.1-8b", "device": "H100", "tp": 1,
                         "scheduler": {"batching": "chunked", "max_batched_tokens": 8192}}],
        },
    }


# ----------------------------------------------------------------------------- child process
def child(mode: str, quick: bool, trace: bool, chunk_points: int | None) -> dict:
    import tracemalloc

    from mistfast.sweep import _warm, parse_sweep, run_sweep
    spec = parse_sweep(sweep_doc(quick))
    # load the kernels and the modules a sweep uses in the driver first, so that tracemalloc
    # measures the sweep's own data (numba's cache loading alone allocates ~30 MiB)
    t_warm = time.perf_counter()
    _warm()
    import dask.multiprocessing  # noqa: F401
    import netCDF4  # noqa: F401
    import tqdm.auto  # noqa: F401
    t_warm = time.perf_counter() - t_warm
    with tempfile.TemporaryDirectory(prefix="bench_sweep_") as tmp:
        out = Path(tmp) / "bench.nc"
        if trace:
            tracemalloc.start()
        t0 = time.perf_counter()
        cpu0 = _cpu_s()
        ds = run_sweep(spec, out, scheduler=mode, workers=2 if mode == "processes" else None,
                       chunk_points=chunk_points)
        wall = time.perf_counter() - t0
        _stop_forkserver()   # its children, the workers, count once it is reaped
        cpu = _cpu_s() - cpu0
        peak_traced = tracemalloc.get_traced_memory()[1] if trace else None
        if trace:
            tracemalloc.stop()
        nc_bytes = out.stat().st_size
        parts = sum(1 for _ in Path(str(out) + ".parts").glob("chunk-*.npz"))
    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"mode": mode, "points": int(ds.attrs["n_points"]), "invalid": int(ds.attrs["n_invalid"]), "wall_s": wall,
            "cpu_s": cpu,
            "driver_warm_s": t_warm,
            "maxrss_self_MiB": self_kb / 1024, "maxrss_children_MiB": child_kb / 1024,
            "tracemalloc_peak_MiB": None if peak_traced is None else peak_traced / 2**20,
            "nc_MiB": nc_bytes / 2**20, "chunks": parts, "chunk_points": spec.chunk_points if chunk_points is None
            else chunk_points}


def _stop_forkserver() -> None:
    """Workers forked by a forkserver are its children: their CPU time reaches this process's
    RUSAGE_CHILDREN only once the server has exited and been reaped (mistfast.worker_start)."""
    try:
        from mistfast.worker_start import stop_forkserver
    except ImportError:   # a checkout without it starts workers with spawn: nothing to stop
        return
    stop_forkserver()


def _cpu_s() -> float:
    """CPU seconds of this process and of its finished child processes (LocalCluster nannies and
    workers are counted once the cluster is closed): a figure that load on shared cores does not
    stretch as much as wall time."""
    return sum(getattr(resource.getrusage(who), f) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
               for f in ("ru_utime", "ru_stime"))


def static_cost(n: int = 20) -> float:
    """Seconds per point of static-batching points (same workload), after a warm-up."""
    from mistfast.sweep import _warm, parse_sweep, run_chunk
    doc = sweep_doc(True, batching=("static",))
    spec = parse_sweep(doc)
    _warm()
    idx = range(0, spec.n_points, max(spec.n_points // n, 1))
    t0 = time.perf_counter()
    for i in idx:
        run_chunk(spec, i, i + 1)
    return (time.perf_counter() - t0) / len(idx)


def run_child(mode: str, args, trace: bool) -> dict:
    cmd = [sys.executable, __file__, "--child", mode] + (["--quick"] if args.quick else []) + \
        (["--trace"] if trace else []) + (["--chunk-points", str(args.chunk_points)] if args.chunk_points else [])
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if res.returncode != 0:
        sys.stderr.write(res.stdout + res.stderr)
        raise SystemExit(f"child {mode} failed")
    return json.loads(res.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- report
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="500 points instead of 10,000")
    ap.add_argument("--no-tracemalloc", action="store_true", help="time without tracemalloc")
    ap.add_argument("--chunk-points", type=int, default=None, help="points per task (default: 128)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--static", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--rag", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rag:
        print(json.dumps(rag_child(args.quick)))
        return
    if args.child:
        print(json.dumps(child(args.child, args.quick, args.trace, args.chunk_points)))
        return
    if args.static:
        print(json.dumps({"static_s_per_point": static_cost()}))
        return

    import mistfast
    from mistfast.sweep import parse_sweep
    spec = parse_sweep(sweep_doc(args.quick))
    shape = " x ".join(f"{d}={n}" for d, n in zip(spec.dims, spec.shape))
    print(f"mistfast {mistfast.__version__} | Python {platform.python_version()} | {platform.machine()} | "
          f"{os.cpu_count()} cores | load average {', '.join(f'{x:.2f}' for x in os.getloadavg())} | "
          f"NUMBA_NUM_THREADS=1")
    print()
    print(f"(a) {spec.n_points:,} single-client points of {N_REQUESTS:,} requests: Llama-3.1-8B, {shape}")
    print(f"    chunk_points={args.chunk_points or spec.chunk_points}; wall time includes worker start-up and their kernel "
          "loading, parts files and the netCDF write, not the driver's own kernel loading (printed below); "
          "tracemalloc " + ("off" if args.no_tracemalloc else "on") + " in the driver")
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "from mistfast.sweep import _warm; _warm()"], cwd=ROOT, check=True)
    print(f"    kernel cache check (a fresh process loading, or compiling if stale, the kernels): "
          f"{time.perf_counter() - t0:.1f} s")
    rows = []
    for mode, cores in (("serial", 1), ("processes", 2)):
        r = run_child(mode, args, trace=not args.no_tracemalloc)
        r["cores"] = cores
        rows.append(r)
    hdr = (f"    {'run':<22}{'wall s':>8}{'points/s':>10}{'/core':>8}{'req/s/core':>12}{'CPU s':>8}{'pts/CPU-s':>11}"
           f"{'RSS drv MiB':>13}{'RSS wrk MiB':>13}{'traced MiB':>12}")
    print(hdr)
    for r in rows:
        pps = r["points"] / r["wall_s"]
        label = "serial (1 core)" if r["mode"] == "serial" else "processes (2 workers)"
        wrk = f"{r['maxrss_children_MiB']:.0f}" if r["mode"] == "processes" else "-"
        tm = "-" if r["tracemalloc_peak_MiB"] is None else f"{r['tracemalloc_peak_MiB']:.1f}"
        print(f"    {label:<22}{r['wall_s']:>8.1f}{pps:>10.0f}{pps / r['cores']:>8.0f}"
              f"{pps / r['cores'] * N_REQUESTS:>12,.0f}{r['cpu_s']:>8.1f}{r['points'] / r['cpu_s']:>11.0f}"
              f"{r['maxrss_self_MiB']:>13.0f}{wrk:>13}{tm:>12}")
    r0 = rows[0]
    print(f"    {r0['points']:,} points, {r0['invalid']} invalid, {r0['chunks']} chunks; netCDF file {r0['nc_MiB']:.1f} MiB; "
          f"driver kernel loading before the timed run {r0['driver_warm_s']:.1f} s")
    best = max(r["points"] / r["wall_s"] / r["cores"] for r in rows)
    verdict = "MET" if best >= TARGET_POINTS_PER_CORE_S else "NOT MET"
    print(f"    target >= {TARGET_POINTS_PER_CORE_S:.0f} points/s per core: {verdict} "
          f"(best {best:.0f} points/s per core = {best / TARGET_POINTS_PER_CORE_S:.0%} of target; "
          f"{TARGET_POINTS_PER_CORE_S:.0f} points/s of {N_REQUESTS:,} requests = "
          f"{TARGET_POINTS_PER_CORE_S * N_REQUESTS:,.0f} simulated requests/s per core)")
    st = json.loads(subprocess.run([sys.executable, __file__, "--static"], capture_output=True, text=True,
                                   cwd=ROOT, check=True).stdout.strip().splitlines()[-1])["static_s_per_point"]
    print(f"    static batching (left out above): {st * 1e3:.0f} ms per point on one core "
          f"({1 / st:.0f} points/s), measured on 20 points of the same workload")
    print()
    cmd = [sys.executable, __file__, "--rag"] + (["--quick"] if args.quick else [])
    rag = json.loads(subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                                    check=True).stdout.strip().splitlines()[-1])
    print(f"(b) {rag['points']} points of {rag['requests'] // rag['points']:,}-request 3-client RAG pipelines "
          f"(embedder x LLM device x rate), serial, one core")
    print(f"    wall {rag['wall_s']:.1f} s: {rag['points'] / rag['wall_s']:.2f} points/s, "
          f"{rag['requests'] / rag['wall_s']:,.0f} simulated requests/s ({rag['finished']:,} of {rag['requests']:,} finished); "
          f"peak RSS {rag['maxrss_MiB']:.0f} MiB, traced {rag['tracemalloc_peak_MiB']:.1f} MiB")


if __name__ == "__main__":
    main()
