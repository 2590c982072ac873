"""Session fixtures shared by test modules: the quick-start sweep, run once."""
from __future__ import annotations

from pathlib import Path

import os

import pytest

ROOT = Path(__file__).resolve().parents[1]

try:
    from hypothesis import settings as _hyp_settings
except ImportError:      # hypothesis is a test extra; the modules that use it import it themselves
    _hyp_settings = None
if _hyp_settings is not None:
    # The property tests draw the same examples on every run ("deterministic": CI passes or fails
    # for the code, not for the draw). HYPOTHESIS_PROFILE=explore draws new ones each run, to
    # search for bugs; a failure found that way becomes an explicit regression test.
    _hyp_settings.register_profile("deterministic", derandomize=True, print_blob=True)
    _hyp_settings.register_profile("explore", derandomize=False, print_blob=True)
    _hyp_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "deterministic"))


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
