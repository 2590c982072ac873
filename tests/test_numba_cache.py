"""The kernels' on-disk cache is keyed by a hash of every kernel source, so editing one module (a
callee of the event loop in another file) can never load stale compiled code."""
import os
import subprocess
import sys
from pathlib import Path

import numba

import mistfast._numba as NB
from mistfast.kernels import cluster, steptime


def test_source_tag_follows_every_kernel_file(tmp_path):
    pkg = Path(NB.__file__).parent
    files = [pkg / "_numba.py", *(pkg / "kernels").glob("*.py")]
    copies = []
    for f in files:
        c = tmp_path / f.name
        c.write_bytes(f.read_bytes())
        copies.append(c)
    tag = NB.kernel_source_tag(files)
    assert tag == NB.kernel_source_tag(copies) and tag.startswith("src-")
    steptime_copy = tmp_path / "steptime.py"
    steptime_copy.write_bytes(steptime_copy.read_bytes() + b"\n# edited\n")
    assert NB.kernel_source_tag(copies) != tag


def test_kernels_cache_in_the_tagged_directory_and_leave_numba_config_alone():
    if not NB.CACHE:
        return
    pkg = Path(NB.__file__).parent
    tag = NB.kernel_source_tag([pkg / "_numba.py", *(pkg / "kernels").glob("*.py")])
    for f in (cluster.simulate_points_serial, cluster.simulate_single, steptime.step_time):
        assert tag in Path(f._cache._cache_path).parts
    # the global numba setting is only borrowed while the kernels are decorated
    assert numba.config.CACHE_DIR == os.environ.get("NUMBA_CACHE_DIR", "")


def test_numba_cache_dir_variable_is_honoured(tmp_path):
    code = ("from mistfast.kernels import cluster; print(cluster.simulate_single._cache._cache_path)")
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path), MISTFAST_NUMBA_CACHE="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    path = Path(out.strip())
    assert path.is_relative_to(tmp_path / "mistfast") and path.parts[len((tmp_path / "mistfast").parts)].startswith("src-")


def test_parallel_and_serial_point_kernels_have_their_own_cache_entries():
    """numba's cache file is named after the function, not its options: the parallel and the
    serial point kernels must not share one (the first compiled would be served to the other)."""
    if not NB.CACHE:
        return
    par = cluster.simulate_points._cache._cache_file._index_path
    ser = cluster.simulate_points_serial._cache._cache_file._index_path
    assert par != ser
    assert cluster.simulate_points.targetoptions.get("parallel") is True
    assert not cluster.simulate_points_serial.targetoptions.get("parallel")
