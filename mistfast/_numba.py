"""The one place that decides numba options for every kernel.

``cache=True`` keeps a second process from recompiling. The cache lives in a directory named
after a hash of every kernel source (see ``kernel_cache_dir``), under the standard
``NUMBA_CACHE_DIR`` when it is set (e.g. node-local disk for cluster workers on a shared
filesystem); ``MISTFAST_NUMBA_CACHE=0`` switches it off.
``fastmath`` stays off: results must be bit-identical across runs and schedulers.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numba

CACHE = os.environ.get("MISTFAST_NUMBA_CACHE", "1") not in ("0", "false", "no")


def kernel_source_tag(files) -> str:
    """Hash of the kernel sources: numba checks only the file of the function it loads, so after
    an edit of a callee in another module (steptime.py for the event loop) it would load the old
    compiled code. One cache directory per version of the sources rules that out."""
    h = hashlib.sha256()
    for f in sorted((Path(x) for x in files), key=lambda p: p.name):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return "src-" + h.hexdigest()[:16]


def kernel_cache_dir() -> str | None:
    """Where this version of the kernels is cached: ``$NUMBA_CACHE_DIR/mistfast/<tag>`` when that
    variable is set, else the package's ``kernels/__pycache__/<tag>``, else (a read-only install)
    ``~/.cache/mistfast/<tag>``; None when none is writable (numba then picks its own place)."""
    pkg = Path(__file__).resolve().parent
    tag = kernel_source_tag([pkg / "_numba.py", *(pkg / "kernels").glob("*.py")])
    if os.environ.get("NUMBA_CACHE_DIR"):
        roots = [Path(os.environ["NUMBA_CACHE_DIR"]) / "mistfast"]
    else:
        home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        roots = [pkg / "kernels" / "__pycache__", home / "mistfast"]
    for root in roots:
        d = root / tag
        try:
            d.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(d, os.W_OK):
            return str(d)
    return None


_CACHE_DIR = kernel_cache_dir() if CACHE else None


def njit(**options):
    """``numba.njit`` with mistfast's cache directory. numba fixes a function's cache location when
    it is decorated, so the global setting is changed only for that moment (other libraries'
    numba caches in the same process are left where numba puts them)."""
    def decorate(fn):
        saved = numba.config.CACHE_DIR
        if _CACHE_DIR is not None:
            numba.config.CACHE_DIR = _CACHE_DIR
        try:
            return numba.njit(cache=CACHE, **options)(fn)
        finally:
            numba.config.CACHE_DIR = saved
    return decorate


jit = njit(nogil=True, fastmath=False, boundscheck=False, error_model="numpy")

# small helpers called per token or per decode: inlined into their callers at the numba-IR
# level (a plain call passes every array argument with reference counting, which dominated the
# per-step cost of the engine)
jit_inline = njit(nogil=True, fastmath=False, boundscheck=False, error_model="numpy", inline="always")

# helpers that never allocate: compiled without the numba runtime (NRT), so they do not
# reference-count their array arguments. A jitted call otherwise increfs and decrefs every array
# argument (atomic operations); for the event helpers taking 30-50 arrays that was most of the
# cost of an arrival or a departure. An allocation inside one of these is a compile error.
jit_noalloc = njit(nogil=True, fastmath=False, boundscheck=False, error_model="numpy", _nrt=False)
