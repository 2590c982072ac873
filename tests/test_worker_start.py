"""How the local cluster starts its workers (mistfast/worker_start.py): forked from a forkserver
that has loaded mistfast's kernels, where the platform has one; the user's choice otherwise."""
from __future__ import annotations

import multiprocessing
import os
import sys

import pytest

from mistfast.specs import SpecError
from mistfast.worker_start import local_start_method, local_worker_start

HAS_FORKSERVER = "forkserver" in multiprocessing.get_all_start_methods()


def test_default_is_forkserver_where_the_platform_has_it(monkeypatch):
    monkeypatch.delenv("MISTFAST_WORKER_START", raising=False)
    assert local_start_method() == ("forkserver" if HAS_FORKSERVER else "spawn")


def test_a_method_chosen_in_dask_config_is_kept(monkeypatch):
    import dask
    monkeypatch.delenv("MISTFAST_WORKER_START", raising=False)
    with dask.config.set({"distributed.worker.multiprocessing-method": "fork"}):
        assert local_start_method() == "fork"


def test_environment_variable_chooses_spawn(monkeypatch):
    monkeypatch.setenv("MISTFAST_WORKER_START", "spawn")
    assert local_start_method() == "spawn"


def test_unknown_method_is_one_line_naming_the_variable(monkeypatch):
    monkeypatch.setenv("MISTFAST_WORKER_START", "teleport")
    with pytest.raises(SpecError) as e:
        local_start_method()
    msg = str(e.value)
    assert "MISTFAST_WORKER_START" in msg and "'teleport'" in msg and "spawn" in msg and "\n" not in msg


def test_a_forkserver_that_cannot_start_falls_back_to_spawn(monkeypatch):
    import dask

    import mistfast.worker_start as W
    monkeypatch.delenv("MISTFAST_WORKER_START", raising=False)
    monkeypatch.setattr(W, "local_start_method", lambda: "forkserver")

    def broken():
        raise OSError(24, "Too many open files")
    monkeypatch.setattr(W, "_set_preload", broken)
    with W.local_worker_start():
        assert dask.config.get("distributed.worker.multiprocessing-method") == "spawn"


def _worker_view():
    """What a worker process has before it runs any task."""
    import psutil
    return {"preloaded": "mistfast._worker_preload" in sys.modules,
            "kernels": "mistfast.kernels.cluster" in sys.modules,
            "parent": " ".join(psutil.Process(os.getppid()).cmdline()),
            "marker": os.environ.get("MISTFAST_TEST_MARKER"),
            "cwd": os.getcwd(),
            "mistfast": sys.modules["mistfast"].__file__}


@pytest.mark.skipif(not HAS_FORKSERVER, reason="this platform has no forkserver start method")
def test_workers_are_forked_with_the_kernels_loaded_and_get_the_environment(monkeypatch, tmp_path):
    pytest.importorskip("psutil")
    from distributed import Client, LocalCluster
    monkeypatch.delenv("MISTFAST_WORKER_START", raising=False)
    monkeypatch.setenv("MISTFAST_TEST_MARKER", "set-after-import")
    monkeypatch.chdir(tmp_path)
    with local_worker_start() as kw:
        with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None,
                          silence_logs=40, **kw) as cluster, Client(cluster) as client:
            (view,) = client.run(_worker_view).values()
    assert "multiprocessing.forkserver" in view["parent"]
    assert view["preloaded"] and view["kernels"]
    assert view["marker"] == "set-after-import"
    assert view["cwd"] == str(tmp_path)
    import mistfast
    assert view["mistfast"] == mistfast.__file__   # the driver's code, not another checkout's
