"""How the local (``processes``) cluster starts its worker processes.

A ``distributed.LocalCluster`` starts each worker with ``multiprocessing``'s ``spawn`` method by
default: a fresh interpreter that imports distributed and mistfast and loads the numba kernels,
about 2 CPU-seconds per worker, paid again whenever a nanny restarts a worker. With the
``forkserver`` method, one server process imports them and loads the kernels once
(``mistfast._worker_preload``), and every worker is forked from it with all of that in memory.

The forkserver is used only for the local cluster, only where the platform has it, and only when
the user has not chosen another method in dask's configuration
(``distributed.worker.multiprocessing-method``; "spawn", the default, counts as not chosen unless
``MISTFAST_WORKER_START=spawn`` is set). A remote scheduler or a caller's client (SLURM) starts its
workers as it always did.

What a forked worker does not pick up by itself, and what this module passes on: the variables
of the ``MISTFAST_*`` environment the driver has when the cluster starts (the forkserver keeps
the environment of the moment it was started). The working directory and ``sys.path`` travel with
every process start, as with ``spawn``.
"""
from __future__ import annotations

import contextlib
import multiprocessing
import os
import sys

PRELOAD_MODULE = "mistfast._worker_preload"
_CONFIG_KEY = "distributed.worker.multiprocessing-method"


def local_start_method() -> str:
    """The start method for a LocalCluster's workers: "forkserver" where it is available and
    nobody chose otherwise, else what dask's configuration says."""
    import dask
    configured = dask.config.get(_CONFIG_KEY, "spawn")
    chosen = os.environ.get("MISTFAST_WORKER_START", "").strip().lower()
    if chosen:
        if chosen not in multiprocessing.get_all_start_methods():
            from .specs import SpecError
            raise SpecError([f"MISTFAST_WORKER_START = {chosen!r}: use one of "
                             f"{', '.join(multiprocessing.get_all_start_methods())} (this platform's start methods)"])
        return chosen
    if configured != "spawn":
        return configured
    return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


@contextlib.contextmanager
def local_worker_start():
    """Within this block, a LocalCluster's nannies start (and restart) workers with
    ``local_start_method()``; yields the keyword arguments for ``LocalCluster``."""
    import dask
    method = local_start_method()
    with dask.config.set({_CONFIG_KEY: method}):
        if method == "forkserver":
            try:
                _set_preload()
            except (OSError, RuntimeError, ValueError):   # no forkserver here after all: spawn, as before
                method = "spawn"
        with dask.config.set({_CONFIG_KEY: method}):
            yield {"env": {k: v for k, v in os.environ.items() if k.startswith("MISTFAST_")}}


def _set_preload() -> None:
    """The forkserver's preload list: distributed's own (which distributed sets the first time it
    asks for the context) plus the module that loads mistfast's kernels. It only takes effect when
    the forkserver starts, i.e. at the first forkserver cluster of this process."""
    from distributed.utils import get_mp_context
    ctx = get_mp_context()   # distributed sets its preload list here, once per process
    from multiprocessing import forkserver
    current = list(getattr(forkserver._forkserver, "_preload_modules", None) or ["distributed"])
    if PRELOAD_MODULE not in current:
        ctx.set_forkserver_preload(current + [PRELOAD_MODULE])
    if getattr(forkserver._forkserver, "_forkserver_pid", None) is None:
        _start_with_this_path(forkserver)


def _start_with_this_path(forkserver) -> None:
    """Start the forkserver now, importing from this process's ``sys.path``: Python 3.11's
    forkserver imports its preload modules before it applies the driver's path, so it would
    otherwise load mistfast from wherever its own default path finds it (another checkout, or
    none when the driver was run from a source tree), and the workers would run that code."""
    path = os.pathsep.join(os.path.abspath(p) if p else os.getcwd() for p in sys.path)
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = path
    try:
        forkserver.ensure_running()
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old


def stop_forkserver() -> None:
    """Stop this process's forkserver, if one runs (it otherwise lives as long as the process).
    Benchmarks call it before they read the CPU time of their child processes: the workers are
    the forkserver's children, so their CPU time reaches this process when it reaps the server."""
    from multiprocessing import forkserver
    server = forkserver._forkserver
    if getattr(server, "_forkserver_pid", None) is not None and hasattr(server, "_stop"):
        server._stop()
