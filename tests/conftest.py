"""Session fixtures shared by test modules: the quick-start sweep, run once."""
from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def quickstart_nc(tmp_path_factory) -> Path:
    """sweeps/quickstart.toml run serially through the CLI (README's first command)."""
    from click.testing import CliRunner

    from mistfast.cli import main
    out = tmp_path_factory.mktemp("quickstart") / "quickstart.nc"
    res = CliRunner().invoke(main, ["sweep", str(ROOT / "sweeps" / "quickstart.toml"), "-o", str(out),
                                    "--scheduler", "serial", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "1280 points" in res.output
    return out
