"""A sweep through a real SLURM: .ci/slurm-local.sh starts a one-node cluster (munged, slurmctld,
slurmd, all state in a temporary folder), dask_jobqueue.SLURMCluster submits two single-core
worker jobs with sbatch (the sweep starts once one runs), and the sweep's Dataset is
bit-identical to the serial run. Skips with
the reason when SLURM cannot be started here (no root, no slurm-wlm/munge, no dask-jobqueue)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mistfast.sweep import open_sweep, run_sweep

from .test_sweep import assert_bit_identical, assert_same_values, make_spec

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / ".ci" / "slurm-local.sh"


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """SLURM_CONF of a running one-node cluster; stopped (jobs cancelled) afterwards."""
    pytest.importorskip("dask_jobqueue", reason="dask-jobqueue is not installed (pip install -e '.[cluster]')")
    missing = [exe for exe in ("munged", "slurmctld", "slurmd", "sbatch") if shutil.which(exe) is None]
    if missing:
        pytest.skip(f"SLURM is not installed ({', '.join(missing)} missing): apt-get install -y slurm-wlm munge")
    if os.geteuid() != 0:
        pytest.skip("starting slurmd needs root")
    state = tmp_path_factory.mktemp("slurm")
    r = subprocess.run(["bash", str(SCRIPT), "start", str(state)], capture_output=True, text=True, timeout=120)
    try:
        if r.returncode != 0:
            pytest.skip(f"a local SLURM could not be started: {r.stderr.strip()[-300:]}")
        old = os.environ.get("SLURM_CONF")
        os.environ["SLURM_CONF"] = r.stdout.strip().splitlines()[-1]
        yield os.environ["SLURM_CONF"]
        if old is None:
            os.environ.pop("SLURM_CONF")
        else:
            os.environ["SLURM_CONF"] = old
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop", str(state)], capture_output=True, timeout=120)


def slurm_report(tmp_path) -> str:
    """squeue and the tails of the job logs, for a failure message."""
    q = subprocess.run(["squeue", "-o", "%i %T %R %M"], capture_output=True, text=True)
    logs = "".join(f"--- {p.name}\n{p.read_text()[-1500:]}\n" for p in sorted((tmp_path / "logs").glob("*")))
    return q.stdout + q.stderr + logs


def test_sweep_on_slurm_is_bit_identical_to_serial(slurm, tmp_path):
    from dask_jobqueue import SLURMCluster
    from distributed import Client

    spec = make_spec()
    reference = run_sweep(spec, scheduler="serial")
    prologue = [f"export PYTHONPATH={ROOT}", "export NUMBA_NUM_THREADS=1", f"cd {ROOT}"]
    with SLURMCluster(cores=1, processes=1, memory="2GB", walltime="00:10:00", python=sys.executable,
                      job_script_prologue=prologue, log_directory=str(tmp_path / "logs"),
                      local_directory=str(tmp_path / "dask"), scheduler_options={"dashboard_address": None},
                      job_extra_directives=[f"--chdir={tmp_path}"]) as cluster:
        cluster.scale(jobs=2)
        with Client(cluster) as client:
            try:
                client.wait_for_workers(1, timeout=240)
            except Exception as exc:  # the local SLURM did not run a job in time (an overloaded
                # machine): an infrastructure problem, not a result; skip and say what SLURM thinks
                pytest.skip(f"the local SLURM started no worker job within 240 s ({exc}):\n{slurm_report(tmp_path)}")
            jobs = client.run(lambda: os.environ.get("SLURM_JOB_ID"))
            assert jobs and all(jobs.values()), f"workers are not SLURM jobs: {jobs}"
            assert_bit_identical(run_sweep(spec, client=client), reference)
            out = tmp_path / "slurm.nc"
            ds = run_sweep(spec, out, client=client, chunk_points=4)
    assert_bit_identical(ds, reference)
    import xarray as xr
    assert_same_values(open_sweep(out).load(), reference)
