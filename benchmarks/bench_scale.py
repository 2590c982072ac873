#!/usr/bin/env python
"""How sweeps scale with the number of points (``mistfast.run_sweep`` with an output file).

10^3, 10^4 and 10^5 single-client points of 1,000 requests each (Llama-3.1-8B; device (5) x
batching (continuous, chunked) x max_batch_size (5) x chunk_size (4) x request rate (n/200 rates
spread over 0.5..25 req/s)), each run in a fresh Python process with the ``processes`` scheduler
(a ``distributed.LocalCluster`` of 2 single-threaded workers), writing the parts folder and the
netCDF file as a user would. Reported per size: wall time (cluster start-up, worker kernel
loading, parts and the netCDF write included), points/s, points/s per core (goal >= 500), the CPU
time of the driver and its workers and points per CPU-second (load on shared cores stretches it
far less than wall time), the
driver's peak RSS (goal: flat within 20 % from 10^4 to 10^5 points), the largest worker's peak
RSS, the netCDF and parts sizes.

``--resume-check``: first, a sweep of ``--resume-points`` points (default 10^5) of
``--resume-requests`` requests each (default 100, to keep it affordable) is run once to the end,
then run again, interrupted with SIGINT once about half of its parts exist, resumed in a new
process, and the resumed file is compared with the uninterrupted run's file (every variable,
coordinate and attribute; floats bit for bit).

``--assembly-sizes 10000,100000,1000000``: the driver's side alone, at sizes too large to simulate on
a shared 2-core machine. For each size, one real chunk of the sweep is simulated and its arrays are
tiled into the part files of every chunk (with their true identities and checksums in the
manifest) by a first process; a fresh second process then runs the sweep with ``resume=True``,
which verifies every part and streams the netCDF from them, and reports its wall time, its RSS
after the imports, its peak RSS once the file is written, and its peak RSS at the end (the
returned Dataset opened from the file included). (The simulated values repeat; the writer's work
does not depend on them.) Sweeps of 10^7 points need ``MISTFAST_MAX_MEMORY_GB=100``: the sweep size
check (``mistfast/limits.py``) still counts 4 kB per point held in memory.

Usage: python benchmarks/bench_scale.py [--sizes 1000,10000,100000] [--workers 2] [--chunk-points 128]
                                        [--resume-check [--resume-points N] [--resume-requests N]] [--keep DIR]
                                        [--assembly-sizes N,N,... [--assembly-chunk-points 1024]]
"""
from __future__ import annotations

import os

os.environ["NUMBA_NUM_THREADS"] = "1"  # per-core figures: must precede the numba import

import argparse
import json
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_sweep import _cpu_s, _stop_forkserver  # noqa: E402  (CPU of this process and its workers)

GOAL_POINTS_PER_CORE_S = 500.0
N_REQUESTS = 1000


def sweep_doc(n_points: int, chunk_points: int, n_requests: int = N_REQUESTS) -> dict:
    n_rates = max(n_points // 200, 1)
    rates = [0.5 + 24.5 * k / max(n_rates - 1, 1) for k in range(n_rates)]
    return {
        "sweep": {"name": f"bench_scale_{n_points}", "seed": 1, "chunk_points": chunk_points, "axes": {
            "clients[0].device": ["H100", "H200", "B200", "MI300X", "A100"],
            "clients[0].scheduler.batching": ["continuous", "chunked"],
            "clients[0].scheduler.max_batch_size": [32, 64, 128, 256, 512],
            "clients[0].scheduler.chunk_size": [256, 512, 1024, 2048],
            "workload.arrival.rate_rps": rates,
        }},
        "scenario": {
            "simulation": {"seed": 259},
            "slo": {"ttft_ms": 1000.0, "tpot_ms": 50.0},
            "workload": {"num_requests": n_requests, "arrival": {"process": "poisson"}},
            "clients": [{"name": "llm", "model": "llama-3.1-8b", "device": "H100", "tp": 1,
                         "scheduler": {"batching": "chunked", "max_batched_tokens": 8192}}],
        },
    }


def spec_file(folder: Path, n_points: int, chunk_points: int, n_requests: int = N_REQUESTS) -> Path:
    """The sweep as a TOML file (the spec text is stored in the results, so runs compare equal)."""
    doc = sweep_doc(n_points, chunk_points, n_requests)

    def val(v):
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{k} = {val(x)}" for k, x in v.items()) + " }"
        if isinstance(v, list):
            return "[" + ", ".join(val(x) for x in v) + "]"
        return json.dumps(v) if isinstance(v, str) else repr(v)

    sw = doc["sweep"]
    lines = ["[sweep]"] + [f"{k} = {val(v)}" for k, v in sw.items() if k != "axes"] + ["[sweep.axes]"]
    lines += [f"{json.dumps(k)} = {val(v)}" for k, v in sw["axes"].items()]
    sc = doc["scenario"]
    for table in ("simulation", "slo", "workload"):
        lines += [f"[scenario.{table}]"] + [f"{k} = {val(v)}" for k, v in sc[table].items()]
    for c in sc["clients"]:
        lines += ["[[scenario.clients]]"] + [f"{k} = {val(v)}" for k, v in c.items()]
    p = folder / f"scale_{n_points}_{n_requests}.toml"
    p.write_text("\n".join(lines) + "\n")
    return p


# ----------------------------------------------------------------------------- child processes
def child_run(spec_path: str, out: str, workers: int, resume: bool) -> dict:
    from mistfast.sweep import load_sweep, run_sweep
    spec = load_sweep(spec_path)
    t0 = time.perf_counter()
    cpu0 = _cpu_s()
    ds = run_sweep(spec, out, scheduler="processes", workers=workers, resume=resume)
    wall = time.perf_counter() - t0
    _stop_forkserver()
    cpu = _cpu_s() - cpu0   # the driver's, and its worker processes' (closed with the cluster)
    n, n_invalid = int(ds.attrs["n_points"]), int(ds.attrs["n_invalid"])
    finished = float(ds.n_finished.sum())  # read back through the file, block by block
    ds.close()
    parts = Path(out + ".parts")
    return {"points": n, "invalid": n_invalid, "finished": finished, "wall_s": wall, "cpu_s": cpu,
            "rss_driver_MiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "rss_worker_MiB": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
            "nc_MiB": Path(out).stat().st_size / 2**20,
            "parts_MiB": sum(p.stat().st_size for p in parts.glob("chunk-*.npz")) / 2**20,
            "chunks": sum(1 for _ in parts.glob("chunk-*.npz"))}


def child_make_parts(spec_path: str, out: str) -> dict:
    """Part files and manifest of every chunk of the sweep, tiled from one simulated chunk."""
    import numpy as np

    from mistfast import parts as P
    from mistfast.sweep import _chunks, _open_parts, _spec_hash, load_sweep, run_chunk
    spec = load_sweep(spec_path)
    chunks = _chunks(spec.n_points, spec.chunk_points)
    h = _spec_hash(spec)
    parts = Path(out + ".parts")
    manifest = _open_parts(spec, parts, chunks, h, resume=False)
    one = run_chunk(spec, 0, min(128, spec.n_points))
    reps = -(-spec.chunk_points // len(one["status"]))
    template = {k: np.concatenate([v] * reps) for k, v in one.items()}
    for k, (a, z) in enumerate(chunks):
        arrays = {name: v[: z - a] for name, v in template.items()}
        manifest.parts[P.part_name(k)] = P.save_part(parts / P.part_name(k), arrays, (k, a, z), h)
    manifest.write()
    return {"chunks": len(chunks), "parts_MiB": sum(p.stat().st_size for p in parts.glob("chunk-*.npz")) / 2**20}


def child_assemble(spec_path: str, out: str) -> dict:
    """Verify every part and stream the netCDF (run_sweep with resume and nothing left to run).
    The peak RSS is also read right after the write, before the file is opened to be returned."""
    import mistfast.sweep as S
    from mistfast.sweep import load_sweep, run_sweep
    spec = load_sweep(spec_path)
    rss_imports = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    after_write = {}
    write = S.write_parts_netcdf

    def timed_write(*args, **kw):
        write(*args, **kw)
        after_write["rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    S.write_parts_netcdf = timed_write
    t0 = time.perf_counter()
    ds = run_sweep(spec, out, scheduler="serial", resume=True)
    wall = time.perf_counter() - t0
    n = int(ds.attrs["n_points"])
    ds.close()
    return {"points": n, "wall_s": wall, "rss_imports_MiB": rss_imports, "rss_write_MiB": after_write["rss"],
            "rss_driver_MiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "nc_MiB": Path(out).stat().st_size / 2**20}


def assembly_scaling(sizes: list[int], chunk_points: int, work: Path) -> None:
    print(f"driver alone: verify the parts and stream the netCDF (chunk_points = {chunk_points}; parts tiled from "
          "one simulated chunk)")
    print(f"    {'points':>10}{'chunks':>8}{'parts MiB':>11}{'wall s':>9}{'RSS imports':>13}{'RSS write':>11}"
          f"{'RSS peak MiB':>14}{'netCDF MiB':>12}")
    rows = []
    for n in sizes:
        sp = spec_file(work, n, chunk_points)
        out = work / f"assembly_{n}.nc"
        made = run_child("make-parts", str(sp), str(out), "0", "fresh")
        r = run_child("assemble", str(sp), str(out), "0", "resume")
        rows.append(r)
        print(f"    {n:>10,}{made['chunks']:>8}{made['parts_MiB']:>11.1f}{r['wall_s']:>9.1f}"
              f"{r['rss_imports_MiB']:>13.0f}{r['rss_write_MiB']:>11.0f}{r['rss_driver_MiB']:>14.0f}"
              f"{r['nc_MiB']:>12.1f}", flush=True)
        shutil.rmtree(str(out) + ".parts", ignore_errors=True)
        out.unlink(missing_ok=True)
    if len(rows) >= 2:
        a, b = rows[0]["rss_driver_MiB"], rows[-1]["rss_driver_MiB"]
        print(f"    driver peak RSS {sizes[0]:,} -> {sizes[-1]:,} points: {a:.0f} -> {b:.0f} MiB ({b / a - 1:+.1%})")


def run_child(*args: str) -> dict:
    res = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, cwd=ROOT)
    if res.returncode != 0:
        sys.stderr.write(res.stdout + res.stderr)
        raise SystemExit("child failed")
    return json.loads(res.stdout.strip().splitlines()[-1])


def compare_files(a: Path, b: Path) -> str:
    """'' when the two results files hold the same Dataset (floats bit for bit), else what differs."""
    import numpy as np
    import xarray as xr
    with xr.open_dataset(a, engine="netcdf4") as x, xr.open_dataset(b, engine="netcdf4") as y:
        if set(x.variables) != set(y.variables) or x.attrs != y.attrs:
            return "variables or attributes differ"
        for name in x.variables:
            u, v = x[name].values, y[name].values
            if u.shape != v.shape or u.dtype != v.dtype:
                return f"{name}: shape or dtype differs"
            same = u.tobytes() == v.tobytes() if u.dtype.kind in "fiub" else u.tolist() == v.tolist()
            if not same or x[name].attrs != y[name].attrs:
                return f"{name}: values differ"
        return "" if np.array_equal(x.status.values, y.status.values) else "status differs"


def default_sigint() -> None:
    """A shell starts background jobs with SIGINT ignored, and children inherit that; the sweep
    must see the signal as a user's Ctrl-C would deliver it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def resume_check(spec_path: Path, reference: Path, workdir: Path, workers: int) -> None:
    out = workdir / "interrupted.nc"
    parts = Path(str(out) + ".parts")
    n_chunks = json.loads((Path(str(reference) + ".parts") / "manifest.json").read_text())["chunks"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NUMBA_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "mistfast.cli", "sweep", str(spec_path), "-o", str(out),
                             "--scheduler", "processes", "--workers", str(workers), "--no-progress"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=default_sigint)
    while len(list(parts.glob("chunk-*.npz"))) < n_chunks // 2 and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    kept = sum(1 for _ in parts.glob("chunk-*.npz"))
    print(f"    interrupted after {time.perf_counter() - t0:.0f} s: exit {proc.returncode}, "
          f"{kept} of {n_chunks} parts on disk; stderr: {err.strip().splitlines()[-1] if err.strip() else ''}")
    t0 = time.perf_counter()
    r = run_child("run", str(spec_path), str(out), str(workers), "resume")
    print(f"    resumed in {time.perf_counter() - t0:.0f} s ({r['points']:,} points)", flush=True)
    diff = compare_files(out, reference)
    print(f"    resumed Dataset identical to the uninterrupted run: {'YES' if not diff else 'NO: ' + diff}", flush=True)


# ----------------------------------------------------------------------------- report
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", help="comma-separated numbers of points (default 1000,10000,100000; none with "
                    "--assembly-sizes alone)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--chunk-points", type=int, default=128)
    ap.add_argument("--resume-check", action="store_true", help="interrupt and resume a sweep, compare")
    ap.add_argument("--resume-points", type=int, default=100_000)
    ap.add_argument("--resume-requests", type=int, default=100)
    ap.add_argument("--keep", help="keep the results in this folder")
    ap.add_argument("--assembly-sizes", help="comma-separated numbers of points: the driver's assembly alone")
    ap.add_argument("--assembly-chunk-points", type=int, default=1024)
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        what, spec_path, out, workers, mode = args.child
        fn = {"run": lambda: child_run(spec_path, out, int(workers), mode == "resume"),
              "make-parts": lambda: child_make_parts(spec_path, out),
              "assemble": lambda: child_assemble(spec_path, out)}[what]
        print(json.dumps(fn()))
        return

    import mistfast
    if args.sizes is None:
        args.sizes = "" if args.assembly_sizes else "1000,10000,100000"
    sizes = [int(s) for s in args.sizes.split(",") if s]
    print(f"mistfast {mistfast.__version__} | Python {platform.python_version()} | {platform.machine()} | "
          f"{os.cpu_count()} cores | load average {', '.join(f'{x:.2f}' for x in os.getloadavg())} | "
          f"NUMBA_NUM_THREADS=1 | {args.workers} workers | chunk_points={args.chunk_points}")
    subprocess.run([sys.executable, "-c", "from mistfast.sweep import _warm; _warm()"], cwd=ROOT, check=True)
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_scale_"))
    work.mkdir(parents=True, exist_ok=True)
    rows = {}
    try:
        if args.assembly_sizes:
            assembly_scaling([int(x) for x in args.assembly_sizes.split(",")], args.assembly_chunk_points, work)
            if not args.sizes:
                return
        if args.resume_check:
            n, q = args.resume_points, args.resume_requests
            sp = spec_file(work, n, args.chunk_points, q)
            print(f"resume check: {n:,} points of {q:,} requests run to the end, then interrupted with SIGINT at about "
                  "half, resumed, compared", flush=True)
            ref = work / f"resume_ref_{n}.nc"
            if ref.exists():  # from an earlier run with --keep
                print(f"    uninterrupted run: reusing {ref}", flush=True)
            else:
                r = run_child("run", str(sp), str(ref), str(args.workers), "fresh")
                print(f"    uninterrupted run: {r['wall_s']:.0f} s ({r['points'] / r['wall_s'] / args.workers:.0f} "
                      f"points/s per core), driver peak RSS {r['rss_driver_MiB']:.0f} MiB", flush=True)
            resume_check(sp, ref, work, args.workers)
        if not sizes:   # --sizes "" --resume-check: the resume check alone
            return
        print(f"single-client points of {N_REQUESTS:,} requests (Llama-3.1-8B; device x batching x max_batch_size x "
              "chunk_size x rate); wall time includes cluster start-up and the netCDF write")
        print(f"    {'points':>8}{'wall s':>9}{'points/s':>10}{'/core':>8}{'CPU s':>8}{'pts/CPU-s':>11}"
              f"{'RSS drv MiB':>13}{'RSS wrk MiB':>13}{'netCDF MiB':>12}{'parts MiB':>11}{'chunks':>8}")
        for n in sizes:
            sp = spec_file(work, n, args.chunk_points)
            r = run_child("run", str(sp), str(work / f"scale_{n}.nc"), str(args.workers), "fresh")
            rows[n] = r
            pps = r["points"] / r["wall_s"]
            print(f"    {r['points']:>8,}{r['wall_s']:>9.1f}{pps:>10.0f}{pps / args.workers:>8.0f}"
                  f"{r['cpu_s']:>8.1f}{r['points'] / r['cpu_s']:>11.0f}{r['rss_driver_MiB']:>13.0f}{r['rss_worker_MiB']:>13.0f}{r['nc_MiB']:>12.1f}"
                  f"{r['parts_MiB']:>11.1f}{r['chunks']:>8}", flush=True)
        best = max(r["points"] / r["wall_s"] / args.workers for r in rows.values())
        print(f"    goal >= {GOAL_POINTS_PER_CORE_S:.0f} points/s per core: {'MET' if best >= GOAL_POINTS_PER_CORE_S else 'NOT MET'}"
              f" (best {best:.0f})")
        big = [n for n in sizes if n >= 10_000]
        if len(big) >= 2:
            a, b = rows[big[0]]["rss_driver_MiB"], rows[big[-1]]["rss_driver_MiB"]
            print(f"    driver peak RSS {big[0]:,} -> {big[-1]:,} points: {a:.0f} -> {b:.0f} MiB ({b / a - 1:+.1%}; "
                  f"goal within 20 %: {'MET' if abs(b / a - 1) <= 0.2 else 'NOT MET'})")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
