"""Imported once by the forkserver that a local cluster's workers are forked from
(``mistfast.worker_start``): it imports distributed's worker and mistfast and loads the numba
kernels, so that every forked worker starts with them in memory.

It never raises: the forkserver only tolerates an ImportError from a preload module, and any
other error would stop it. A worker forked after a failure here loads the kernels itself
(``sweep._warm`` runs on every worker before the tasks)."""
try:
    import distributed.nanny  # noqa: F401
    import distributed.worker  # noqa: F401

    from .sweep import _warm
    _warm()
except Exception:  # noqa: BLE001 - see the docstring
    pass
