"""The one place that decides numba options for every kernel.

``cache=True`` keeps a second process from recompiling; the cache directory can be
redirected (e.g. off a shared filesystem on cluster workers) with the standard
``NUMBA_CACHE_DIR`` environment variable, and switched off with ``MISTFAST_NUMBA_CACHE=0``.
``fastmath`` stays off: results must be bit-identical across runs and schedulers.
"""
from __future__ import annotations

import os

import numba

CACHE = os.environ.get("MISTFAST_NUMBA_CACHE", "1") not in ("0", "false", "no")

jit = numba.njit(cache=CACHE, nogil=True, fastmath=False, boundscheck=False, error_model="numpy")

# small helpers called per token or per decode: inlined into their callers at the numba-IR
# level (a plain call passes every array argument with reference counting, which dominated the
# per-step cost of the engine)
jit_inline = numba.njit(cache=CACHE, nogil=True, fastmath=False, boundscheck=False, error_model="numpy",
                        inline="always")

# helpers that never allocate: compiled without the numba runtime (NRT), so they do not
# reference-count their array arguments. A jitted call otherwise increfs and decrefs every array
# argument (atomic operations); for the event helpers taking 30-50 arrays that was most of the
# cost of an arrival or a departure. An allocation inside one of these is a compile error.
jit_noalloc = numba.njit(cache=CACHE, nogil=True, fastmath=False, boundscheck=False, error_model="numpy",
                         _nrt=False)
