#!/usr/bin/env python
"""Where the kernel's CPU goes per single-client point: a perf map for the cached kernel, so that
``perf`` names numba's functions (docs/kernels.md, "Round 5").

The point kernel runs from its image (``mistfast._kernel_image``: the machine code numba cached,
linked by an LLVM JIT). This script loads that image itself, writes ``/tmp/perf-<pid>.map`` with
the address and size of every function in the image's object file (``nm`` of the object code,
offsets from the address of its one exported wrapper), prints its process id, then runs the points
of ``bench_kernel_point.py`` in a loop. Record it from another shell and read the report:

    PYTHONPATH=<tree> python benchmarks/profile_kernel_point.py --rounds 30 &
    perf record -F 4000 -p <pid printed> -o /tmp/k.data -- sleep 15
    perf report -i /tmp/k.data --sort sym --stdio

``--object /tmp/k.o`` keeps the object file, for ``objdump -d -j .ltext`` of a hot function
(instruction offsets = sample address minus the base printed). Needs ``nm`` (binutils) and a
``perf`` allowed to sample the user's own processes (``kernel.perf_event_paranoid`` <= 2).

Usage: python benchmarks/profile_kernel_point.py [--rounds 30] [--points 100] [--object PATH]
"""
from __future__ import annotations

import os

os.environ["NUMBA_NUM_THREADS"] = "1"  # must precede the numba import

import argparse
import glob
import pickle
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

MODULE, KERNEL = "mistfast.kernels.cluster", "_simulate_single_points_serial"


def image_kernel(chunks):
    """The point kernel called through its image, and the LLVM engines that linked it."""
    from mistfast import _kernel_image as KI, _numba
    engines = []
    make_engine = KI._engine

    def recording_engine():
        engine = make_engine()
        engines.append(engine)
        return engine

    KI._engine = recording_engine
    KI._numba_ready = lambda: False        # the image even though numba is imported
    KI.CALL_LIMIT = 10 ** 12
    KI._LOADED.clear()

    def kernel(*args):
        done, result = KI.call(_numba._CACHE_DIR, MODULE, KERNEL, args)
        if not done:
            raise SystemExit("profile_kernel_point: no usable kernel image (MISTFAST_KERNEL_IMAGES=0?)")
        return result

    from bench_kernel_point import run_all
    run_all(kernel, chunks[:1])    # loads the image
    return kernel, engines, _numba._CACHE_DIR


def write_perf_map(engines, cache_dir, keep_object: str | None) -> int:
    """/tmp/perf-<pid>.map for every function of the point kernel's image; returns the base address."""
    path = glob.glob(f"{cache_dir}/{MODULE}.{KERNEL}-*.mfimage")[0]
    payload = pickle.loads(Path(path).read_bytes())
    obj = keep_object or f"/tmp/kernel-{os.getpid()}.o"
    Path(obj).write_bytes(payload["object_code"])
    listing = subprocess.run(["nm", "-S", "--defined-only", obj], capture_output=True, text=True,
                             check=True).stdout
    symbols = []
    for line in listing.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[2] in "tTW":
            symbols.append((int(parts[0], 16), int(parts[1], 16), parts[3]))
    wrapper = payload["wrapper"]
    address = next(a for a in (e.get_function_address(wrapper) for e in engines) if a)
    base = address - next(off for off, _, name in symbols if name == wrapper)
    with open(f"/tmp/perf-{os.getpid()}.map", "w") as out:
        for off, size, name in symbols:
            out.write(f"{base + off:x} {size:x} {name}\n")
    if not keep_object:
        os.unlink(obj)
    return base


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--points", type=int, default=100)
    ap.add_argument("--object", default=None, help="keep the image's object file here")
    args = ap.parse_args()
    from bench_kernel_point import captured_chunks, run_all
    chunks = captured_chunks(args.points)
    kernel, engines, cache_dir = image_kernel(chunks)
    base = write_perf_map(engines, cache_dir, args.object)
    print(f"pid {os.getpid()}; functions mapped in /tmp/perf-{os.getpid()}.map; base {base:#x}", flush=True)
    t0 = time.process_time()
    for _ in range(args.rounds):
        run_all(kernel, chunks)
    cpu = time.process_time() - t0
    print(f"{args.rounds} rounds of {len(chunks)} chunks: {cpu:.2f} CPU s", flush=True)


if __name__ == "__main__":
    main()
