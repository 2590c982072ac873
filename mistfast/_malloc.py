"""Keep freed memory in the process's heap while sweep chunks run (glibc's ``mallopt``).

A chunk of 128 points of 1,000 requests allocates a few dozen arrays of about 1 MB (the kernel's
inputs and outputs, the per-request arrays, the tables) and frees them when it ends. With glibc's
defaults the freed top of the heap is returned to the system (trimmed) and arrays this size may be
mapped afresh, so the next chunk touches every page again: about 2,000 page faults for one
``lower_points`` call alone, each paid in kernel time (zeroing the page). Measured on the
``bench_scale.py`` sweep (``run_chunk``, CPU time): ``lower_points`` 0.058 -> 0.025 ms per point
and the tables 0.055 -> 0.027 ms with the heap kept (docs/scaling.md, session 7).

The thresholds are fixed instead of glibc's adaptive ones: blocks under 32 MiB come from the heap
and up to 256 MiB of free heap is kept. A worker's peak memory does not change (the chunks'
arrays are freed and reused, not accumulated); what it holds between chunks can stay near that
peak. Results do not depend on it. Elsewhere (macOS, musl, Windows) nothing is changed.
"""
from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD = -1           # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 << 20    # glibc's largest allowed value on 64-bit systems
TRIM_THRESHOLD_BYTES = 256 << 20

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Set the thresholds once per process; True when glibc accepted them."""
    global _applied
    if _applied is None:
        _applied = _set_thresholds()
    return _applied


def _set_thresholds() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:         # not glibc (musl): no such library name
        return False
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
