"""Examples that cannot rot: every TOML and Python block of README.md and docs/*.md is extracted
and run, and every scenario in examples/ is simulated.

A block preceded by ``<!-- no-test: REASON -->`` is intentionally partial (an excerpt with
``...``, or one that needs a cluster or a user's data); it is reported as skipped with the reason.
TOML blocks are simulated (scenario) or validated and dry-run (sweep); Python blocks run in a
temporary directory holding ``scenario.toml`` (examples/single_client.toml) and
``quickstart.nc`` (the quick-start sweep), the files the README's snippets read.
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from mistfast.catalog import tomllib

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
EXAMPLES = sorted((ROOT / "examples").glob("*.toml"))
_BLOCK = re.compile(r"(?:<!--\s*no-test:?\s*(?P<why>[^>]*?)\s*-->\s*\n)?^```(?P<lang>toml|python)[ \t]*\n(?P<code>.*?)^```",
                    re.S | re.M)


def doc_blocks():
    out = []
    for doc in DOCS:
        for k, m in enumerate(_BLOCK.finditer(doc.read_text())):
            line = doc.read_text()[:m.start("code")].count("\n") + 1
            out.append(pytest.param(m.group("lang"), m.group("code"), m.group("why"),
                                    id=f"{doc.relative_to(ROOT)}:{line}-{m.group('lang')}"))
    return out


@pytest.fixture
def workdir(tmp_path, monkeypatch, quickstart_nc):
    shutil.copy(ROOT / "examples" / "single_client.toml", tmp_path / "scenario.toml")
    shutil.copy(quickstart_nc, tmp_path / "quickstart.nc")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def check_counts(ds):
    """Every request that arrives ends finished, rejected or unfinished (README, engine semantics)."""
    assert int(ds.n_arrived) > 0
    assert int(ds.n_arrived) == int(ds.n_finished) + int(ds.n_rejected) + int(ds.n_unfinished)
    assert np.isfinite(float(ds.output_tok_s))


def run_toml(code: str):
    from mistfast.scenario import simulate
    from mistfast.sweep import dry_run, parse_sweep
    doc = tomllib.loads(code)
    if "sweep" in doc:
        spec = parse_sweep(doc, code)
        assert spec.n_points >= 1 and dry_run(spec, sample_points=1)["n_points"] == spec.n_points
    else:
        check_counts(simulate(doc))


@pytest.mark.parametrize("lang, code, why", doc_blocks())
def test_doc_block(lang, code, why, workdir):
    if why is not None:
        pytest.skip(f"marked no-test: {why or 'partial example'}")
    if lang == "toml":
        run_toml(code)
    else:
        import matplotlib
        matplotlib.use("Agg")
        exec(compile(code, "<doc block>", "exec"), {"__name__": "__doc_example__"})


def test_docs_have_blocks():
    blocks = doc_blocks()
    assert sum(p.values[0] == "toml" for p in blocks) >= 3 and sum(p.values[0] == "python" for p in blocks) >= 2


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_scenario(path):
    from mistfast.scenario import simulate
    ds = simulate(path, per_request=True)
    check_counts(ds)
    fin = ds.req_status.values == 3
    # a finished request generated what it asked for (pipelines included)
    assert np.array_equal(ds.req_output_tokens.values[fin], ds.req_generated_tokens.values[fin])


def test_examples_cover_the_scenarios_users_copy():
    assert {p.stem for p in EXAMPLES} >= {"single_client", "rag", "pd_disaggregation", "kv_tiers", "reasoning"}
    for p in EXAMPLES:
        assert f"mistfast run examples/{p.name}" in p.read_text(), p.name  # says how to run it
