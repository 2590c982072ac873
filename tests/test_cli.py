"""The command line (mistfast.cli) through click's CliRunner: run, sweep (--dry-run, -o, --resume),
summary, step, catalog, and error paths that must end with exit code 2 and a message naming the
problem, never a traceback."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from click.testing import CliRunner

from mistfast.cli import main

ROOT = Path(__file__).resolve().parents[1]
SMALL = ROOT / "sweeps" / "small_test.toml"

SCENARIO = """
[simulation]
seed = 3

[workload]
num_requests = 40
arrival = { process = "poisson", rate_rps = 8.0 }

[[clients]]
name = "llm"
model = "llama-3.1-8b"
device = "H100"
tp = 1
scheduler = { batching = "chunked", chunk_size = 512 }
"""

TINY_SWEEP = """
[sweep]
seed = 2
chunk_points = 4

[sweep.axes]
"clients[0].tp" = [1, 2, 3]
"clients[0].scheduler.batching" = ["continuous", "chunked"]
"workload.arrival.rate_rps" = [4, 16]

[scenario.workload]
num_requests = 25

[[scenario.clients]]
name = "llm"
model = "llama-3.1-8b"
device = "H100"
"""


def invoke(*args, ok=True):
    res = CliRunner().invoke(main, [str(a) for a in args])
    if ok:
        assert res.exit_code == 0, f"exit {res.exit_code}: {res.output}\n{res.exception!r}"
    return res


def assert_clean_error(res, *needles):
    assert res.exit_code == 2, f"exit {res.exit_code}: {res.output}\n{res.exception!r}"
    assert isinstance(res.exception, SystemExit), repr(res.exception)
    assert "Traceback" not in res.output
    for n in needles:
        assert n in res.output, f"{n!r} not in {res.output!r}"


@pytest.fixture
def scenario(tmp_path):
    p = tmp_path / "scenario.toml"
    p.write_text(SCENARIO)
    return p


@pytest.fixture
def tiny(tmp_path):
    p = tmp_path / "tiny.toml"
    p.write_text(TINY_SWEEP)
    return p


# ----------------------------------------------------------------------------- run
def test_run_prints_a_summary_and_writes_netcdf(scenario, tmp_path):
    out = tmp_path / "one.nc"
    res = invoke("run", scenario, "-o", out)
    for s in ("requests   arrived 40  finished 40", "TTFT ms", "TPOT ms", "throughput", "tokens/$", "simulated in",
              f"written to {out}"):
        assert s in res.output, s
    ds = xr.load_dataset(out, engine="netcdf4")
    assert int(ds.n_finished) == 40 and ds.ttft_p99_ms.attrs["units"] == "ms"


def test_run_set_override_changes_the_result(scenario):
    def ttft_line(text):
        return next(line for line in text.splitlines() if line.startswith("TTFT ms"))
    a = invoke("run", scenario).output
    b = invoke("run", scenario, "--set", "clients[0].tp=2").output
    assert ttft_line(a) != ttft_line(b)
    assert invoke("run", scenario, "--set", "clients[0].tp=1").output.splitlines()[:-1] == a.splitlines()[:-1]


def test_run_errors(scenario, tmp_path):
    assert_clean_error(invoke("run", tmp_path / "missing.toml", ok=False), "missing.toml", "file not found")
    assert_clean_error(invoke("run", scenario, "--set", "clients[0].tpp=2", ok=False), "clients[0].tpp", "unknown field")
    assert_clean_error(invoke("run", scenario, "--set", "tp", ok=False), "--set 'tp'", "PATH=VALUE")
    bad = tmp_path / "bad.toml"
    bad.write_text(SCENARIO.replace("num_requests", "num_request"))
    assert_clean_error(invoke("run", bad, ok=False), "workload.num_request", "unknown field")


# ----------------------------------------------------------------------------- sweep
def test_sweep_dry_run():
    res = invoke("sweep", SMALL, "--dry-run")
    assert "72 points (device=3 x tp=2 x batching=3 x rate_rps=4) in 5 chunks" in res.output
    assert "estimated" in res.output and "ms per point" in res.output and "on one core" in res.output


def test_sweep_output_summary_and_resume(tiny, tmp_path):
    out = tmp_path / "tiny.nc"
    res = invoke("sweep", tiny, "-o", out, "--scheduler", "serial", "--no-progress")
    assert "12 points in" in res.output and "4 invalid" in res.output
    assert f"results: {out}" in res.output
    assert "best configurations by output_tok_s_per_usd_per_hour" in res.output and "per batching" in res.output
    ds = xr.load_dataset(out, engine="netcdf4")   # the file: reason as codes into 2 messages ("", tp = 3's)
    assert dict(ds.sizes) == {"tp": 3, "batching": 2, "rate_rps": 2, "reject_reason": 4, "left_out_reason": 3,
                              "client": 1, "stage_kind": 8, "resource": 0, "reason_code": 2}
    assert ds.reason.dtype == np.int32 and ds.reason_message.values[0] == ""
    assert int((ds.status != 0).sum()) == 4

    summ = invoke("summary", out).output
    assert f"{out}: mistfast" in summ and "12 points" in summ
    assert "dims: tp=3, batching=2, rate_rps=2, reject_reason=4" in summ
    assert "invalid points: 4; first reason: clients[0].tp = 3" in summ
    assert "best configurations" in summ
    custom = invoke("summary", out, "--objective", "output_tok_s", "--constraint", "ttft_p99_ms<=1e9").output
    assert "best configurations by output_tok_s " in custom and "subject to ttft_p99_ms<=1e9" in custom

    # --resume with the same spec: every chunk is on disk, same file content
    again = invoke("sweep", tiny, "-o", out, "--scheduler", "threads", "--workers", "2", "--resume", "--no-progress")
    assert "12 points in" in again.output
    xr.testing.assert_identical(xr.load_dataset(out, engine="netcdf4"), ds)

    assert not Path(str(out) + ".parts").exists()  # chunk files go once the results file is written

    # --resume with another spec's leftover chunks is refused cleanly
    import mistfast.sweep as S

    def fail_to_write(*args, **kw):
        raise KeyboardInterrupt
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(S, "write_parts_netcdf", fail_to_write)
        res = invoke("sweep", tiny, "-o", tmp_path / "other.nc", "--scheduler", "serial", "--no-progress", ok=False)
    assert res.exit_code == 130 and "interrupted — rerun with --resume" in res.output
    out = tmp_path / "other.nc"
    tiny.write_text(TINY_SWEEP.replace("[4, 16]", "[4, 8]"))
    assert_clean_error(invoke("sweep", tiny, "-o", out, "--resume", "--no-progress", ok=False),
                       "different sweep spec")


def test_sweep_processes_scheduler(tiny, tmp_path):
    out = tmp_path / "p.nc"
    res = invoke("sweep", tiny, "-o", out, "--workers", "2", "--scheduler", "processes", "--no-progress")
    assert "12 points in" in res.output
    ref = tmp_path / "s.nc"
    invoke("sweep", tiny, "-o", ref, "--scheduler", "serial", "--no-progress")
    a, b = xr.load_dataset(out, engine="netcdf4"), xr.load_dataset(ref, engine="netcdf4")
    for name in a.data_vars:
        assert np.array_equal(a[name].values, b[name].values, equal_nan=a[name].dtype.kind == "f"), name


@pytest.mark.parametrize("text, needles", [
    (TINY_SWEEP.replace('"clients[0].tp"', '"clients[0].tpp"'), ["clients[0].tpp", "unknown field 'tpp'"]),
    (TINY_SWEEP.replace("[1, 2, 3]", "[]"), ["clients[0].tp", "empty axis"]),
    (TINY_SWEEP.replace("chunk_points", "chunk_size"), ["sweep.chunk_size", "unknown field"]),
    (TINY_SWEEP + '\n[sweep.derived]\n"clients[0].dp" = "8 // tpx"\n', ["clients[0].dp", "unknown name 'tpx'"]),
    (TINY_SWEEP.replace("[sweep.axes]", "[sweep.axes"), ["not valid TOML"]),
])
def test_sweep_spec_errors(tmp_path, text, needles):
    p = tmp_path / "bad.toml"
    p.write_text(text)
    out = tmp_path / "bad.nc"
    for args in (("--dry-run",), ("-o", out, "--scheduler", "serial")):
        assert_clean_error(invoke("sweep", p, *args, ok=False), *needles)
    assert not out.exists() and not Path(str(out) + ".parts").exists()


def test_sweep_other_errors(tiny, tmp_path):
    assert_clean_error(invoke("sweep", tmp_path / "nope.toml", ok=False), "nope.toml", "file not found")
    assert_clean_error(invoke("sweep", tiny, "--scheduler", "proceses", ok=False), "'proceses'", "processes")


def test_summary_missing_file(tmp_path):
    res = invoke("summary", tmp_path / "missing.nc", ok=False)
    assert res.exit_code == 2 and "does not exist" in res.output and "Traceback" not in res.output


# ----------------------------------------------------------------------------- step / catalog
def test_step_genz_reference_value():
    res = invoke("step", "--reference", "genz", "--device", "H100-genz", "--prefill", "0:512")
    assert "llama-3.1-8b on 1 x H100-genz" in res.output
    assert "step latency          11.28" in res.output  # GenZ's 8B prefill of 512 tokens: 11.28 ms
    assert "weights per device" in res.output


def test_step_decode_and_errors():
    res = invoke("step", "--model", "llama-3.1-70b", "--tp", "8", "--decode", "1:1024x64")
    assert "64 decodes" in res.output and "step latency" in res.output
    assert_clean_error(invoke("step", "--model", "nope", ok=False), "'nope'", "llama-3.1-8b")
    assert_clean_error(invoke("step", "--prefill", "a:b", ok=False), "PAST:NEW")


def test_step_prefill_without_colon_is_a_clean_error():
    assert_clean_error(invoke("step", "--prefill", "512", ok=False), "PAST:NEW")


def test_catalog_models_and_devices():
    models = invoke("catalog", "models").output
    assert "llama-3.1-8b" in models and "llama-3.1-70b" in models and "L=32" in models
    devices = invoke("catalog", "devices").output
    assert "H100" in devices and "GiB" in devices
    assert invoke("catalog", "gpus", ok=False).exit_code == 2


def test_help():
    res = invoke("--help")
    for cmd in ("run", "sweep", "summary", "step", "catalog"):
        assert cmd in res.output
    assert "--dry-run" in invoke("sweep", "--help").output


def test_summary_prints_plain_coordinate_values(tiny, tmp_path):
    out = tmp_path / "c.nc"
    invoke("sweep", tiny, "-o", out, "--scheduler", "serial", "--no-progress")
    summ = invoke("summary", out).output
    assert "batching: ['continuous', 'chunked']" in summ and "np.str_" not in summ
