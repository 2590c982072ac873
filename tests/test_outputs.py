"""What a user sees: CF attributes, the SLO in the Dataset, tidy exports, the HTML report (from the
quick-start sweep, with a real browser check), and the CLI fixes of issue 14 (catalog files shaped
like data/, --set without tomllib, Ctrl-C, summary of a single run, --scheduler auto)."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from click.testing import CliRunner

from mistfast.catalog import tomllib
from mistfast.cli import _auto_scheduler, _best_text, main
from mistfast.sweep import load_sweep, parse_sweep, run_sweep
from mistfast.variables import REGISTRY

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "sweeps" / "quickstart.toml"

TINY = """
[sweep]
seed = 2
chunk_points = 4
[sweep.axes]
"clients[0].scheduler.batching" = ["continuous", "chunked"]
"workload.arrival.rate_rps" = [4, 16]
[scenario.workload]
num_requests = 60
[[scenario.clients]]
name = "llm"
model = "llama-3.1-8b"
device = "H100"
"""


def invoke(*args, ok=True, **kw):
    res = CliRunner().invoke(main, [str(a) for a in args], **kw)
    if ok:
        assert res.exit_code == 0, f"exit {res.exit_code}: {res.output}\n{res.exception!r}"
    return res


@pytest.fixture(scope="module")
def report_dir(quickstart_nc):
    d = quickstart_nc.parent / "report"
    res = invoke("report", quickstart_nc, "-o", d)
    assert "5 figures" in res.output
    return d


# ----------------------------------------------------------------------------- CF conventions
def test_every_registered_unit_is_udunits():
    cf_units = pytest.importorskip("cf_units", reason="cf-units is not installed (pip install -e '.[test]')")
    for name, v in REGISTRY.items():
        if v.units is not None:
            cf_units.Unit(v.units)  # raises ValueError on a unit UDUNITS-2 cannot parse
        assert 0 < len(v.long_name) <= 40, (name, v.long_name)
        assert v.description, name
    # conversions a reader relies on: tokens/s -> s-1 per second, GiB -> 2^30 bytes
    assert cf_units.Unit(REGISTRY["weights_GiB_per_device"].units).convert(1.0, "byte") == 2**30
    assert cf_units.Unit(REGISTRY["ttft_p99_ms"].units).convert(1500.0, "s") == pytest.approx(1.5)


def test_sweep_dataset_is_cf(quickstart_nc):
    cf_units = pytest.importorskip("cf_units")
    with xr.open_dataset(quickstart_nc, engine="netcdf4") as ds:
        assert ds.attrs["Conventions"].startswith("CF-")
        for k in ("history", "source", "title", "sweep_spec_toml"):
            assert ds.attrs[k], k
        for name in ds.coords:
            cf_units.Unit(ds[name].attrs["units"])
            assert ds[name].attrs["long_name"]
        assert ds.rate_rps.attrs["units"] == "s-1"
        for name, da in ds.data_vars.items():
            assert da.attrs["long_name"], name
            if da.dtype.kind in "fiu":
                cf_units.Unit(da.attrs["units"])
        assert ds.output_tok_s.attrs["display_units"] == "tokens/s"
        # quickstart.toml sets a 1,000 ms TTFT SLO
        assert ds.attrs["slo_ttft_ms"] == 1000.0 and ds.attrs["slo_tpot_ms"] == 50.0


def test_single_run_attrs_and_coords():
    from mistfast.scenario import simulate
    ds = simulate({"workload": {"num_requests": 30}}, per_request=True)
    assert ds.attrs["Conventions"].startswith("CF-") and "spec_json" in ds.attrs
    assert ds.attrs["slo_ttft_ms"] == 500.0  # the SLOSpec default, validated
    for name in ds.coords:
        assert "units" in ds[name].attrs, name


# ----------------------------------------------------------------------------- SLO defaults
def test_sweep_without_slo_uses_the_validated_default(tmp_path):
    ds = run_sweep(parse_sweep(tomllib.loads(TINY), TINY))
    assert ds.attrs["slo_ttft_ms"] == 500.0 and ds.attrs["slo_tpot_ms"] == 50.0
    text = _best_text(ds, "output_tok_s", ())
    assert "ttft_p99_ms<=500.0" in text and "1000" not in text
    # goodput was computed with the same limits: a point whose p99 TTFT exceeds 500 ms cannot
    # have every request meet the SLO
    bad = (ds.ttft_p99_ms > 500) & (ds.status == 0)
    assert (ds.slo_attainment.where(bad) < 1).sum() == int(bad.sum())


# ----------------------------------------------------------------------------- export
def test_export_csv_and_parquet(quickstart_nc, tmp_path):
    pd = pytest.importorskip("pandas")
    csv = tmp_path / "q.csv"
    invoke("export", quickstart_nc, "--csv", "-o", csv)
    df = pd.read_csv(csv)
    with xr.open_dataset(quickstart_nc, engine="netcdf4") as ds:
        assert len(df) == ds.attrs["n_points"] == 1280
        for axis in ("device", "tp", "batching", "max_batch_size", "rate_rps"):
            assert axis in df.columns
        row = df[(df.device == "H200") & (df.tp == 8) & (df.batching == "chunked") & (df.max_batch_size == 256)
                 & (df.rate_rps == 4)].iloc[0]
        ref = ds.sel(device="H200", tp=8, batching="chunked", max_batch_size=256, rate_rps=4)
        assert row["ttft_p99_ms"] == pytest.approx(float(ref.ttft_p99_ms), rel=1e-12)
        assert row["n_rejected_by_reason[kv_exhausted]"] == int(ref.n_rejected_by_reason.sel(reject_reason="kv_exhausted"))
    pytest.importorskip("pyarrow", reason="pyarrow is not installed (pip install -e '.[export]')")
    pq = tmp_path / "q.parquet"
    invoke("export", quickstart_nc, "--parquet", "-o", pq)
    dp = pd.read_parquet(pq)
    assert dp.shape == df.shape
    import pyarrow.parquet as pqm
    assert pqm.read_schema(pq).field("ttft_p99_ms").metadata[b"units"] == b"ms"


def test_export_per_request(tmp_path):
    pd = pytest.importorskip("pandas")
    scen = tmp_path / "s.toml"
    scen.write_text("[workload]\nnum_requests = 25\n")
    nc = tmp_path / "s.nc"
    invoke("run", scen, "--per-request", "-o", nc)
    invoke("export", nc, "--per-request")
    df = pd.read_csv(tmp_path / "s_requests.csv")
    assert len(df) == 25 and "req_ttft_ms" in df.columns
    one = tmp_path / "one.csv"
    invoke("export", nc, "-o", one)
    assert len(pd.read_csv(one)) == 1
    res = invoke("export", ROOT / "sweeps" / "quickstart.toml", ok=False)  # not a netCDF file
    assert res.exit_code == 2 and "Traceback" not in res.output


# ----------------------------------------------------------------------------- report
def test_report_from_the_quickstart_sweep(report_dir):
    names = ("latency_throughput.png", "latency_cdf.png", "timeline.png", "stage_breakdown.png", "pareto.png")
    for n in names:
        p = report_dir / n
        assert p.stat().st_size > 10_000, n
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (report_dir / "index.html").read_text()
    for n in names:
        assert f'src="{n}"' in page
    assert "Best point per policy" in page and "chunked" in page


def test_report_of_a_single_run(tmp_path):
    scen = tmp_path / "s.toml"
    scen.write_text("[workload]\nnum_requests = 40\n")
    nc = tmp_path / "s.nc"
    invoke("run", scen, "-o", nc)
    invoke("report", nc, "-o", tmp_path / "rep")
    for n in ("latency_cdf.png", "timeline.png", "stage_breakdown.png", "index.html"):
        assert (tmp_path / "rep" / n).stat().st_size > 1000, n


def test_timeline_by_hand():
    from mistfast.report import timeline
    # two steps: [0, 1) and [2, 4) s with 10 then 30 KV blocks of 100; 4 bins of 1 s
    log = np.array([[0.0, 1.0, 1, 0, 0, 0, 10], [2.0, 2.0, 0, 0, 1, 1, 30]], float)
    t, busy, kv = timeline(log, 100.0, n_bins=4)
    assert np.allclose(t, [0.5, 1.5, 2.5, 3.5])
    assert np.allclose(busy, [1, 0, 1, 1])
    assert np.allclose(kv, [0.1, 0.1, 0.3, 0.3])


def _browser() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def test_report_renders_in_a_headless_browser(report_dir, tmp_path):
    browser = _browser()
    if browser is None:
        pytest.skip("no Chromium/Chrome on PATH (apt-get install -y chromium)")
    shot = tmp_path / "page.png"
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--screenshot={shot}",
           "--window-size=1200,1600", (report_dir / "index.html").as_uri()]
    subprocess.run(cmd, capture_output=True, timeout=120)
    assert shot.exists() and shot.stat().st_size > 20_000
    import matplotlib.image as mpimg
    img = mpimg.imread(shot)
    # the page is not blank: the figures put many distinct colours on it
    assert img.shape[0] >= 1600 and np.unique(img[..., :3].reshape(-1, 3), axis=0).shape[0] > 50


# ----------------------------------------------------------------------------- CLI fixes
def test_summary_of_a_single_run_shows_metrics(tmp_path):
    scen = tmp_path / "s.toml"
    scen.write_text("[workload]\nnum_requests = 20\n")
    nc = tmp_path / "s.nc"
    invoke("run", scen, "-o", nc)
    out = invoke("summary", nc).output
    assert "TTFT ms" in out and "throughput" in out and "requests   arrived 20" in out


def test_catalog_file_shaped_like_data_devices(tmp_path, monkeypatch):
    from mistfast.catalog import Catalog, CatalogError
    shaped = tmp_path / "mychips.toml"
    shaped.write_text('[MyChip]\nkind = "gpu"\nmemory_GiB = 96.0\nmemory_bandwidth_GBps = 4000.0\n'
                      'tflops = { bf16 = 1000.0 }\nprice_usd_per_hour = 3.0\ntdp_W = 700\n')
    assert Catalog(extra_files=[shaped]).get("devices", "MyChip")["memory_GiB"] == 96.0
    named = tmp_path / "devices.toml"
    named.write_text('[Other]\nkind = "gpu"\n')
    assert Catalog(extra_files=[named]).has("devices", "Other")
    odd = tmp_path / "odd.toml"
    odd.write_text('[Thing]\ncolour = "blue"\n')
    with pytest.raises(CatalogError, match=r"odd.toml: \[Thing\] is not a catalog entry"):
        Catalog(extra_files=[odd])
    # through the CLI and MISTFAST_CATALOG: one clear line
    import mistfast.catalog as C
    monkeypatch.setenv("MISTFAST_CATALOG", str(odd))
    C._builtin.cache_clear()
    C.default_catalog.cache_clear()
    try:
        res = invoke("catalog", "devices", ok=False)
        assert res.exit_code == 2 and "[Thing] is not a catalog entry" in res.output and "Traceback" not in res.output
        monkeypatch.setenv("MISTFAST_CATALOG", str(shaped))
        C._builtin.cache_clear()
        C.default_catalog.cache_clear()
        assert "MyChip" in invoke("catalog", "devices").output
    finally:
        monkeypatch.delenv("MISTFAST_CATALOG")
        C._builtin.cache_clear()
        C.default_catalog.cache_clear()


def test_set_works_without_tomllib(tmp_path):
    pytest.importorskip("tomli", reason="tomli is not installed (the Python 3.10 TOML parser)")
    scen = tmp_path / "s.toml"
    scen.write_text("[workload]\nnum_requests = 10\n")
    code = ("import sys; sys.modules['tomllib'] = None\n"  # as on Python 3.10: no tomllib
            "from mistfast.cli import main\n"
            f"main(['run', {str(scen)!r}, '--set', 'clients[0].tp=2', '--set', 'workload.num_requests=12'])\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr
    assert "requests   arrived 12" in r.stdout


def test_ctrl_c_mid_sweep_says_resume(tmp_path):
    sweep = tmp_path / "long.toml"
    sweep.write_text(TINY.replace('[4, 16]', str([float(x) for x in range(1, 400)]))
                     .replace("chunk_points = 4", "chunk_points = 2"))
    out = tmp_path / "long.nc"
    proc = subprocess.Popen([sys.executable, "-m", "mistfast.cli", "sweep", str(sweep), "-o", str(out),
                             "--scheduler", "serial", "--no-progress"], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    parts = Path(str(out) + ".parts")
    t0 = time.time()
    while not (parts.exists() and any(parts.glob("chunk-*.npz"))) and time.time() - t0 < 240 and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, "the sweep ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "interrupted — rerun with --resume" in stderr and "Traceback" not in stderr
    assert not out.exists()


def test_scheduler_auto(tmp_path):
    small = tmp_path / "small.toml"
    small.write_text(TINY)
    assert _auto_scheduler(load_sweep(small)) == "serial"
    assert _auto_scheduler(load_sweep(QUICKSTART)) == "serial"  # 1,280 x 400 requests: about 2 s serially
    big = tmp_path / "big.toml"
    big.write_text(TINY.replace("[4, 16]", str(list(range(1, 101)))).replace("num_requests = 60", "num_requests = 20000"))
    expected = "processes" if (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()) > 1 else "serial"
    assert _auto_scheduler(load_sweep(big)) == expected


def test_compile_notice(monkeypatch, tmp_path):
    import mistfast._numba as N
    from mistfast import quickrun
    assert quickrun.kernels_cached("single")  # the suite compiled them already
    monkeypatch.setattr(N, "_CACHE_DIR", str(tmp_path))
    said = []
    quickrun.notice_if_compiling("single", said.append)
    assert said == [quickrun.COMPILE_NOTICE] and "once per install" in said[0]


# ----------------------------------------------------------------------------- quantiles
def test_configured_quantiles_match_numpy_and_the_fixed_percentiles():
    from mistfast.scenario import simulate
    ds = simulate({"workload": {"num_requests": 300}, "metrics": {"quantiles": [0.5, 0.9, 0.95, 0.99, 0.999]}},
                  per_request=True)
    assert [float(q) for q in ds["quantile"].values] == [0.5, 0.9, 0.95, 0.99, 0.999]
    for base in ("ttft", "tpot", "e2e"):
        v = ds[f"{base}_quantile_ms"].values
        # the same kernel percentile as the fixed p50/p90/p99 variables: bit-identical
        assert (v[0], v[1], v[3]) == tuple(float(ds[f"{base}_{p}_ms"]) for p in ("p50", "p90", "p99"))
        req = ds[f"req_{base}_ms"].values
        ref = np.percentile(req[np.isfinite(req)], [50, 90, 95, 99, 99.9])  # numpy "linear", independent
        assert np.allclose(v, ref, rtol=1e-12), base


def test_quantiles_in_pipelines_sweeps_and_errors(tmp_path):
    from mistfast.scenario import simulate
    from mistfast.specs import SpecError
    assert "ttft_quantile_ms" not in simulate(ROOT / "examples" / "rag.toml")  # only when configured
    ds = simulate(
        {**tomllib.loads((ROOT / "examples" / "rag.toml").read_text()),
         "metrics": {"quantiles": [0.5, 0.9, 0.99]}})
    assert ds.ttft_quantile_ms.sizes == {"quantile": 3}
    assert float(ds.ttft_quantile_ms.sel(quantile=0.99)) == float(ds.ttft_p99_ms)
    with pytest.raises(SpecError, match=r"metrics\.quantiles.*\(0, 1\)"):
        simulate({"metrics": {"quantiles": [0.5, 95]}})
    sw = TINY + "\n[scenario.metrics]\nquantiles = [0.25, 0.75]\n"
    ds = run_sweep(parse_sweep(tomllib.loads(sw), sw))
    assert ds.ttft_quantile_ms.dims == ("batching", "rate_rps", "quantile") and list(ds["quantile"].values) == [0.25, 0.75]
    with pytest.raises(SpecError, match="not on an axis"):
        bad = TINY.replace("[sweep.axes]", '[sweep.axes]\n"metrics.quantiles" = [[0.5], [0.9]]')
        parse_sweep(tomllib.loads(bad), bad)
    res = invoke("run", ROOT / "examples" / "single_client.toml", "--set", "metrics.quantiles=[0.5,0.95,0.999]")
    assert "p95" in res.output and "p99.9" in res.output


def test_lean_run_prints_what_the_dataset_holds(tmp_path):
    """`mistfast run` without -o builds no Dataset; its summary must equal the Dataset path's."""
    scen = ROOT / "examples" / "pd_disaggregation.toml"
    lean = invoke("run", scen).output.splitlines()
    full = invoke("run", scen, "-o", tmp_path / "x.nc").output.splitlines()
    assert lean[:-2] == full[:-3] and "simulated in" in lean[-1] and "kernel loading excluded" in lean[-1]
    assert "requests   arrived" in lean[0]
