"""Execute notebooks/case_studies.ipynb at the reduced size (MISTFAST_STUDIES_SIZE=reduced) with
nbclient: every study section runs its sweep or capacity search and draws its figure. Skipped,
with the reason, when nbclient/nbformat/ipykernel/matplotlib or a python3 kernel are missing."""
from __future__ import annotations

from pathlib import Path

from .test_notebooks import run_notebook

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "case_studies.ipynb"
TIME_LIMIT_S = 240  # whole notebook at the reduced size (about a minute on a quiet 2-core machine)
STUDIES = 8


def test_case_studies_notebook_runs_reduced(monkeypatch):
    nb, outputs = run_notebook(NOTEBOOK, monkeypatch, TIME_LIMIT_S, {"MISTFAST_STUDIES_SIZE": "reduced"})
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "size: reduced" in text
    images = sum("image/png" in o.get("data", {}) for o in outputs if o.output_type in ("display_data", "execute_result"))
    have_shared = "skipping" not in text
    assert images >= STUDIES - 1 + (2 if have_shared else 0), images
    headings = [c.source.splitlines()[0] for c in nb.cells if c.cell_type == "markdown" and c.source.startswith("## ")]
    assert [h.split(".")[0] for h in headings[:STUDIES]] == [f"## {i}" for i in range(1, STUDIES + 1)]
