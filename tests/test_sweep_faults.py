"""Sweeps under faults (mistfast.sweep, mistfast.parts): resume trusts only parts that verify
(swapped, bit-flipped, truncated, empty, foreign and stray part files, a damaged manifest), the
netCDF is assembled block by block and larger results come back lazily from the file, Ctrl-C
exits 130 with the resume hint, a full or read-only disk gives one line and no file under the
final name, and per-request sweeps are refused with a size estimate.

Expected results are the serial in-memory run of the same spec (test_sweep's reference)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from click.testing import CliRunner

import mistfast.parts as P
import mistfast.sweep as S
from mistfast.cli import main
from mistfast.specs import SpecError
from mistfast.sweep import ResumeWarning, run_sweep

from .test_sweep import BASE, assert_bit_identical, assert_same_values, count_chunks, make_spec, toml_text

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def spec():
    return make_spec()  # 36 points (12 invalid) in 8 chunks of 5


@pytest.fixture(scope="module")
def reference(spec):
    return run_sweep(spec, scheduler="serial")


@pytest.fixture(scope="module")
def finished(spec, tmp_path_factory):
    """A finished run on disk: (output path, a pristine copy of its parts folder)."""
    d = tmp_path_factory.mktemp("finished")
    out = d / "f.nc"
    run_sweep(spec, out, scheduler="serial")
    pristine = d / "pristine"
    shutil.copytree(str(out) + ".parts", pristine)
    return out, pristine


def fresh_copy(finished, tmp_path) -> tuple[Path, Path]:
    out = tmp_path / "f.nc"
    parts = Path(str(out) + ".parts")
    shutil.copytree(finished[1], parts)
    return out, parts


def flip_byte(path: Path, at: int) -> None:
    b = bytearray(path.read_bytes())
    b[at] ^= 0x40
    path.write_bytes(bytes(b))


# each case damages the parts folder and returns the chunks that must be recomputed
def swap(parts):
    shutil.copy(parts / "chunk-000002.npz", parts / "chunk-000005.npz")  # another chunk's file
    return [5]


def bit_flip(parts):
    p = parts / "chunk-000003.npz"
    flip_byte(p, p.stat().st_size // 2)
    return [3]


def truncate(parts):
    p = parts / "chunk-000004.npz"
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    return [4]


def empty(parts):
    (parts / "chunk-000001.npz").write_bytes(b"")
    return [1]


def foreign(parts):
    # chunk 0 of a sweep with another seed: same points, other numbers, a valid file
    other = make_spec(seed=4)
    arrays = S.run_chunk(other, 0, 5)
    P.save_part(parts / "chunk-000000.npz", arrays, (0, 0, 5), S._spec_hash(other))
    return [0]


def manifest_truncated(parts):
    m = parts / "manifest.json"
    m.write_text(m.read_text()[:40])
    return list(range(8))


def manifest_missing(parts):
    (parts / "manifest.json").unlink()
    return list(range(8))


def stray_and_deleted(parts):
    shutil.copy(parts / "chunk-000002.npz", parts / "chunk-000099.npz")
    (parts / "chunk-000006.npz").unlink()
    return [6]


CASES = [swap, bit_flip, truncate, empty, foreign, manifest_truncated, manifest_missing, stray_and_deleted]


@pytest.mark.parametrize("damage", CASES, ids=[c.__name__ for c in CASES])
def test_resume_detects_damaged_parts_and_recomputes_them(spec, reference, finished, tmp_path, monkeypatch, damage):
    out, parts = fresh_copy(finished, tmp_path)
    expect = damage(parts)
    calls = count_chunks(monkeypatch)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = run_sweep(spec, out, scheduler="serial", resume=True)
    assert sorted(a // 5 for a, _ in calls) == expect
    said = " ".join(str(w.message) for w in caught if issubclass(w.category, ResumeWarning))
    if damage is stray_and_deleted:
        assert "chunk-000099.npz" in said and "chunk-000006" not in said  # a missing part is no news
        assert not (parts / "chunk-000099.npz").exists()
    else:
        for k in expect:
            assert f"chunk-{k:06d}.npz" in said, said
    assert_bit_identical(ds, reference)
    assert_same_values(S.open_sweep(out).load(), reference)
    # the rewritten manifest verifies every part now
    doc, why = P.read_manifest(parts)
    assert why == "" and len(doc["parts"]) == 8
    for k in range(8):
        entry = doc["parts"][P.part_name(k)]
        assert P.part_problem(parts / P.part_name(k), entry, (k, 5 * k, min(5 * k + 5, 36))) == ""


def test_part_consistent_with_a_forged_manifest_is_still_refused(spec, finished, tmp_path):
    """Second line of defence: a part carries its chunk identity inside; a file holding chunk 2's
    points under chunk 5's name never reaches the Dataset even when its checksum is in the
    manifest."""
    out, parts = fresh_copy(finished, tmp_path)
    shutil.copy(parts / "chunk-000002.npz", parts / "chunk-000005.npz")
    m = json.loads((parts / "manifest.json").read_text())
    m["parts"]["chunk-000005.npz"].update(sha256=P.file_sha256(parts / "chunk-000005.npz"),
                                          bytes=(parts / "chunk-000005.npz").stat().st_size)
    (parts / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(SpecError, match="holds points 10..14 of another run, expected 25..29"):
        run_sweep(spec, out, scheduler="serial", resume=True)
    assert not out.exists()


def test_manifest_is_written_atomically_and_lists_checksums(spec, tmp_path, monkeypatch):
    out = tmp_path / "m.nc"
    renames = []
    real_replace = os.replace

    def recording_replace(src, dst):
        renames.append((Path(src).name, Path(dst).name))
        return real_replace(src, dst)

    monkeypatch.setattr(P.os, "replace", recording_replace)
    run_sweep(spec, out, scheduler="serial")
    assert any(dst == "manifest.json" and src != dst for src, dst in renames)
    parts = Path(str(out) + ".parts")
    assert not list(parts.glob("*.tmp"))
    doc = json.loads((parts / "manifest.json").read_text())
    assert doc["chunks"] == 8 and doc["n_points"] == 36 and doc["chunk_points"] == 5
    for k in range(8):
        e = doc["parts"][P.part_name(k)]
        assert (e["chunk"], e["start"], e["stop"]) == (k, 5 * k, min(5 * k + 5, 36))
        assert e["sha256"] == P.file_sha256(parts / P.part_name(k))


# ----------------------------------------------------------------------------- assembly
@pytest.mark.parametrize("shape", [(7,), (3, 5), (2, 3, 4), (4, 1, 9), (5, 70000), (3, 200, 400), (1,)])
def test_block_grid_blocks_are_contiguous_runs_that_tile_the_array(shape):
    grid = P.block_grid(shape, target_points=65536)
    assert tuple(sum(c) for c in grid) == shape
    seen = np.zeros(int(np.prod(shape)), bool)
    for idx in np.ndindex(*[len(c) for c in grid]):
        lo = [sum(c[:i]) for c, i in zip(grid, idx)]
        hi = [a + c[i] for a, c, i in zip(lo, grid, idx)]
        flat = np.ravel_multi_index(np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi)], indexing="ij"), shape).ravel()
        assert np.array_equal(flat, np.arange(flat[0], flat[0] + flat.size)), (shape, lo, hi)
        assert flat.size <= max(65536, shape[-1]) and not seen[flat].any()
        seen[flat] = True
    assert seen.all()


def test_large_results_come_back_lazily_from_the_file(spec, reference, tmp_path, monkeypatch):
    monkeypatch.setattr(S, "LOAD_MAX_POINTS", 10)
    out = tmp_path / "lazy.nc"
    ds = run_sweep(spec, out, scheduler="serial")
    try:
        assert not ds["ttft_p99_ms"].variable._in_memory  # backed by the file, not the driver's memory
        assert_same_values(ds.load(), reference)
    finally:
        ds.close()


@pytest.mark.parametrize("mode", ["zip", "single"])
def test_zip_and_single_point_sweeps_through_parts(tmp_path, mode):
    if mode == "zip":
        sp = make_spec(axes={"clients[0].tp": [1, 2, 3, 1], "workload.arrival.rate_rps": [4, 8, 16, 2]}, mode="zip",
                       chunk_points=3)
    else:
        sp = make_spec(axes={}, chunk_points=3)
    ref = run_sweep(sp, scheduler="serial")
    assert_bit_identical(run_sweep(sp, tmp_path / "z.nc", scheduler="serial"), ref)


# ----------------------------------------------------------------------------- interrupts
def write_sweep(tmp_path, n_rates=60, requests=1500, chunk_points=2) -> Path:
    doc = {"sweep": {"seed": 1, "chunk_points": chunk_points},
           "sweep.axes": {"workload.arrival.rate_rps": [float(r) for r in range(2, 2 + n_rates)]},
           "scenario.simulation": {"seed": 5},
           "scenario.workload": {"num_requests": requests}}
    p = tmp_path / "long.toml"
    p.write_text(toml_text(doc) + '[[scenario.clients]]\nname = "llm"\nmodel = "llama-3.1-8b"\ndevice = "H100"\n')
    return p


def start_cli(*args) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NUMBA_NUM_THREADS": "1"}
    # SIGINT back to its default: a shell starts background jobs (a CI runner's, too) with SIGINT
    # ignored, and the child would inherit that
    return subprocess.Popen([sys.executable, "-m", "mistfast.cli", *map(str, args)], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for_parts(parts: Path, n: int, proc: subprocess.Popen, timeout=240.0) -> None:
    t0 = time.monotonic()
    while len(list(parts.glob("chunk-*.npz"))) < n:
        assert proc.poll() is None, f"the sweep ended before it could be interrupted: {proc.communicate()}"
        assert time.monotonic() - t0 < timeout, "no parts appeared"
        time.sleep(0.05)


def test_sigint_exits_130_with_the_resume_hint_and_resume_is_identical(tmp_path):
    sweep_file = write_sweep(tmp_path)
    out = tmp_path / "int.nc"
    proc = start_cli("sweep", sweep_file, "-o", out, "--scheduler", "serial", "--no-progress")
    try:
        wait_for_parts(Path(str(out) + ".parts"), 3, proc)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    assert "interrupted — rerun with --resume" in err and "Traceback" not in err
    assert not out.exists()
    n_kept = len(list(Path(str(out) + ".parts").glob("chunk-*.npz")))
    assert 3 <= n_kept < 30
    ds = run_sweep(S.load_sweep(sweep_file), out, scheduler="serial", resume=True)
    assert_bit_identical(ds, run_sweep(S.load_sweep(sweep_file), scheduler="serial"))


def descendants(pid: int) -> list:
    import psutil
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def worker_processes(driver_pid: int) -> list:
    """The LocalCluster's worker processes: spawned by the driver (``spawn_main``), or forked by
    its forkserver (mistfast.worker_start: the forkserver's children)."""
    found = []
    for p in descendants(driver_pid):
        cmd = " ".join(p.cmdline())
        if "spawn_main" in cmd or ("multiprocessing.forkserver" in cmd and p.ppid() != driver_pid):
            found.append(p)
    return found


def test_killed_worker_then_killed_driver_leave_no_process_and_resume_is_identical(tmp_path):
    """SIGKILL one LocalCluster worker mid-sweep (the nanny replaces it), then SIGKILL the driver:
    every process the sweep started is gone within seconds, and --resume completes the sweep
    to the Dataset of an uninterrupted serial run."""
    psutil = pytest.importorskip("psutil")
    sweep_file = write_sweep(tmp_path, n_rates=120, requests=1500, chunk_points=2)
    out = tmp_path / "k.nc"
    parts = Path(str(out) + ".parts")
    proc = start_cli("sweep", sweep_file, "-o", out, "--scheduler", "processes", "--workers", "2", "--no-progress")
    seen = {}
    try:
        wait_for_parts(parts, 2, proc)
        workers = worker_processes(proc.pid)
        assert workers, "no worker processes found"
        workers[0].kill()
        n = len(list(parts.glob("chunk-*.npz")))
        wait_for_parts(parts, n + 4, proc)
        seen = {p.pid: p for p in descendants(proc.pid)}
        proc.kill()
        proc.wait(timeout=30)
        deadline = time.monotonic() + 30
        alive = list(seen.values())
        while alive and time.monotonic() < deadline:
            alive = [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
            time.sleep(0.2)
        assert not alive, f"left running after the driver died: {[(p.pid, p.cmdline()) for p in alive]}"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        for p in seen.values():  # only processes this test started
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
    assert not out.exists()
    assert len(list(parts.glob("chunk-*.npz"))) < 60
    spec = S.load_sweep(sweep_file)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResumeWarning)  # parts finished in the driver's last second
        ds = run_sweep(spec, out, scheduler="serial", resume=True)
    assert_bit_identical(ds, run_sweep(spec, scheduler="serial"))


# ----------------------------------------------------------------------------- disks
@pytest.fixture
def small_disk(tmp_path):
    """A 512 KiB tmpfs (root only; skipped elsewhere)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root and mount(8)")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_one_clean_line(res, *needles):
    assert res.exit_code == 2, f"exit {res.exit_code}: {res.output}\n{res.exception!r}"
    assert "Traceback" not in res.output and res.output.strip().count("\n") == 0, res.output
    for n in needles:
        assert n in res.output, res.output


def fill(mnt: Path, leave_bytes: int) -> None:
    free = shutil.disk_usage(mnt).free
    with open(mnt / "filler", "wb") as f:
        f.write(b"\0" * max(free - leave_bytes, 0))


def tiny_sweep(tmp_path) -> Path:
    p = tmp_path / "tiny.toml"
    p.write_text(toml_text({"sweep": {"seed": 2, "chunk_points": 4}, "sweep.axes": {"clients[0].tp": [1, 2]},
                            "scenario.workload": {"num_requests": 20}})
                 + '[[scenario.clients]]\nname = "llm"\nmodel = "llama-3.1-8b"\ndevice = "H100"\n')
    return p


def test_full_disk_sweep_is_one_line_and_leaves_no_file(small_disk, tmp_path):
    fill(small_disk, 2048)
    out = small_disk / "r.nc"
    res = invoke("sweep", tiny_sweep(tmp_path), "-o", out, "--scheduler", "serial", "--no-progress")
    assert_one_clean_line(res, "no space left on device")
    assert not out.exists() and not list(small_disk.glob("r.nc*tmp")) and not list(small_disk.glob("r.nc.parts/*tmp"))


def test_full_disk_while_writing_the_netcdf(small_disk, tmp_path):
    """Parts fit, the netCDF does not: the temporary file is removed, nothing under the name."""
    sp = make_spec(chunk_points=36)
    out = small_disk / "n.nc"
    run_sweep(sp, out, scheduler="serial")  # learn the sizes
    part_bytes = (Path(str(out) + ".parts") / "chunk-000000.npz").stat().st_size
    nc_bytes = out.stat().st_size
    out.unlink()
    shutil.rmtree(str(out) + ".parts")
    fill(small_disk, part_bytes + 8192 + nc_bytes // 2)
    with pytest.raises(P.SweepOutputError, match="n.nc: cannot write the results file .no space left on device"):
        run_sweep(sp, out, scheduler="serial")
    assert not out.exists() and not Path(str(out) + ".tmp").exists()


def test_read_only_disk_and_bad_folders_are_one_line(small_disk, tmp_path):
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    sweep = tiny_sweep(tmp_path)
    # the CLI checks the output path before any work (one line naming it); the sweep's own parts
    # writer says the same when it is called directly
    res = invoke("sweep", sweep, "-o", small_disk / "r.nc", "--scheduler", "serial", "--no-progress")
    assert_one_clean_line(res, "r.nc")
    assert "Read-only file system" in res.output or "no permission to write" in res.output, res.output
    afile = tmp_path / "afile"
    afile.write_text("")
    res = invoke("sweep", sweep, "-o", afile / "r.nc", "--scheduler", "serial", "--no-progress")
    assert_one_clean_line(res, "afile/r.nc")
    scen = tmp_path / "s.toml"
    scen.write_text('[workload]\nnum_requests = 10\n')
    res = invoke("run", scen, "-o", small_disk / "one.nc")  # the summary is printed before the file is written
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    last = res.output.strip().splitlines()[-1]
    assert "one.nc: cannot write the results file" in last or "one.nc: no permission to write there" in last, last


def test_per_request_sweeps_are_refused_with_a_size_estimate():
    sp = make_spec(scenario={**BASE, "simulation": {"seed": 5, "per_request": True}})
    with pytest.raises(SpecError, match=r"simulation.per_request = true: .*36 points x 30 requests .* GiB"):
        run_sweep(sp, scheduler="serial")


@pytest.mark.parametrize("to_disk", [True, False], ids=["with-output", "in-memory"])
def test_keyboard_interrupt_keeps_finished_chunks_in_the_manifest(spec, reference, tmp_path, monkeypatch, to_disk):
    orig = S.run_chunk

    def interrupted(spec_, start, stop):
        if start == 15:
            raise KeyboardInterrupt
        return orig(spec_, start, stop)

    monkeypatch.setattr(S, "run_chunk", interrupted)
    out = tmp_path / "i.nc" if to_disk else None
    with pytest.raises(S.SweepInterrupted) as e:
        run_sweep(spec, out, scheduler="serial")
    if not to_disk:
        assert "nothing was kept" in e.value.message
        return
    assert e.value.message.startswith("interrupted — rerun with --resume; 3 of 8 chunks are kept in")
    doc, why = P.read_manifest(Path(str(out) + ".parts"))
    assert why == "" and sorted(doc["parts"]) == [P.part_name(k) for k in range(3)]
    monkeypatch.setattr(S, "run_chunk", orig)
    calls = count_chunks(monkeypatch)
    assert_bit_identical(run_sweep(spec, out, scheduler="serial", resume=True), reference)
    assert [a for a, _ in calls] == [15, 20, 25, 30, 35]
