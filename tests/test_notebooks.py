"""Execute notebooks/sweep_analysis.ipynb with nbclient (kernel python3) on the small test sweep:
once letting the notebook run sweeps/small_test.toml itself, once on a results file given through
MISTFAST_NOTEBOOK_RESULTS. Skipped, with the reason, when nbclient/nbformat/ipykernel/matplotlib
or a python3 kernel are missing."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "sweep_analysis.ipynb"
TIME_LIMIT_S = 240  # whole notebook; the small sweep itself takes a few seconds


def _require(module: str):
    return pytest.importorskip(module, reason=f"{module} is not installed (pip install -e '.[test]')")


def run_notebook(path: Path, monkeypatch, time_limit_s: float, env: dict | None = None):
    """Execute a notebook with nbclient (kernel python3) in its own folder, importing this checkout's
    package, with ``env`` set (None values unset); returns (notebook, code-cell outputs). Skips,
    with the reason, when nbclient/nbformat/ipykernel/matplotlib or a python3 kernel are missing."""
    nbformat = _require("nbformat")
    nbclient = _require("nbclient")
    _require("ipykernel")
    _require("matplotlib")
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
    try:
        KernelSpecManager().get_kernel_spec("python3")
    except NoSuchKernel:
        pytest.skip("no 'python3' Jupyter kernel (python -m ipykernel install --user)")
    for k, v in (env or {}).items():
        if v is None:
            monkeypatch.delenv(k, raising=False)
        else:
            monkeypatch.setenv(k, v)
    # the kernel imports this checkout's package, not whichever one is installed
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    monkeypatch.delenv("MPLBACKEND", raising=False)  # keep the kernel's inline backend: figures become outputs
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=time_limit_s, kernel_name="python3",
                                     resources={"metadata": {"path": str(path.parent)}})
    t0 = time.perf_counter()
    client.execute()  # raises CellExecutionError on the first failing cell
    assert time.perf_counter() - t0 < time_limit_s
    return nb, [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]


def execute(env_results: str | None, monkeypatch) -> list:
    return run_notebook(NOTEBOOK, monkeypatch, TIME_LIMIT_S, {"MISTFAST_NOTEBOOK_RESULTS": env_results})[1]


def _text(outputs) -> str:
    return "".join(o.get("text", "") for o in outputs if o.output_type == "stream")


def _images(outputs) -> int:
    return sum("image/png" in o.get("data", {}) for o in outputs if o.output_type in ("display_data", "execute_result"))


def check_outputs(outputs) -> str:
    assert not [o for o in outputs if o.output_type == "error"]
    text = _text(outputs)
    assert _images(outputs) >= 3, "expected the latency-throughput figure, the xarray line plot and the heatmap"
    assert "axis device" in text and "clients[0].scheduler.batching" in text
    assert "best output tokens/s per USD/h subject to ttft_p99_ms<=500.0" in text
    assert "per batching" in text and "Pareto front" in text and "tidy table: 72 rows" in text
    assert "skipping" not in text
    return text


def test_notebook_runs_the_small_sweep_itself(monkeypatch):
    text = check_outputs(execute(None, monkeypatch))
    assert "ran small_test.toml (72 points)" in text


def test_notebook_on_a_results_file(tmp_path, monkeypatch):
    from mistfast.sweep import run_sweep
    out = tmp_path / "small.nc"
    run_sweep(ROOT / "sweeps" / "small_test.toml", out, scheduler="serial")
    text = check_outputs(execute(str(out), monkeypatch))
    assert f"loaded {out}" in text
