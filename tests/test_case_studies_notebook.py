"""Execute notebooks/case_studies.ipynb at the reduced size (MISTFAST_STUDIES_SIZE=reduced) with
nbclient: every study section runs its sweep or capacity search and draws its figure. Skipped,
with the reason, when nbclient/nbformat/ipykernel/matplotlib or a python3 kernel are missing."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "case_studies.ipynb"
TIME_LIMIT_S = 240  # whole notebook at the reduced size (about a minute on a quiet 2-core machine)
STUDIES = 8


def _require(module: str):
    return pytest.importorskip(module, reason=f"{module} is not installed (pip install -e '.[test]')")


def test_case_studies_notebook_runs_reduced(monkeypatch):
    nbformat = _require("nbformat")
    nbclient = _require("nbclient")
    _require("ipykernel")
    _require("matplotlib")
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
    try:
        KernelSpecManager().get_kernel_spec("python3")
    except NoSuchKernel:
        pytest.skip("no 'python3' Jupyter kernel (python -m ipykernel install --user)")
    monkeypatch.setenv("MISTFAST_STUDIES_SIZE", "reduced")
    # the kernel imports this checkout's package, not whichever one is installed
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    monkeypatch.delenv("MPLBACKEND", raising=False)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=TIME_LIMIT_S, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    t0 = time.perf_counter()
    client.execute()  # raises CellExecutionError on the first failing cell
    assert time.perf_counter() - t0 < TIME_LIMIT_S
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "size: reduced" in text
    images = sum("image/png" in o.get("data", {}) for o in outputs if o.output_type in ("display_data", "execute_result"))
    have_shared = "skipping" not in text
    assert images >= STUDIES - 1 + (2 if have_shared else 0), images
    headings = [c.source.splitlines()[0] for c in nb.cells if c.cell_type == "markdown" and c.source.startswith("## ")]
    assert [h.split(".")[0] for h in headings[:STUDIES]] == [f"## {i}" for i in range(1, STUDIES + 1)]
