"""Parsed copies of the shipped TOML data files, so a one-off command does not parse them again.

Parsing ``data/calibration.toml`` (a quarter of a megabyte, mostly the ids of the measurements a
fit saw) and the catalogs costs more CPU than simulating a small scenario; unmarshalling the
parsed tables costs about a tenth of that. A copy is keyed by a hash of the file's bytes (read on
every call; an edited file can never be served from an old copy) and of the Python version
(marshal's format), and lives in ``$XDG_CACHE_HOME/mistfast/toml`` (default ``~/.cache``).
Anything unusual (no writable cache folder, a damaged copy, values marshal cannot hold such as
TOML dates) falls back to parsing. ``MISTFAST_TOML_CACHE=0`` turns it off.
"""
from __future__ import annotations

import hashlib
import marshal
import os
import sys
from pathlib import Path
from typing import Any

ENABLED = os.environ.get("MISTFAST_TOML_CACHE", "1") not in ("0", "false", "no")


def _folder() -> Path:
    home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return home / "mistfast" / "toml"


def load_toml(path: str | Path) -> dict[str, Any]:
    """``tomllib.load`` of ``path`` (same result, same errors), from a parsed copy when one exists."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    raw = Path(path).read_bytes()
    if not ENABLED:
        return tomllib.loads(raw.decode())
    key = hashlib.sha256(raw).hexdigest()[:32]
    copy = _folder() / f"{key}.py{sys.version_info.major}{sys.version_info.minor}.marshal"
    try:
        doc = marshal.loads(copy.read_bytes())
        if isinstance(doc, dict):
            return doc
    except (OSError, ValueError, EOFError, TypeError):
        pass
    doc = tomllib.loads(raw.decode())
    _save(copy, doc)
    return doc


def _save(copy: Path, doc: dict) -> None:
    try:
        data = marshal.dumps(doc)
    except ValueError:  # e.g. TOML dates: not worth a copy
        return
    try:
        copy.parent.mkdir(parents=True, exist_ok=True)
        tmp = copy.with_name(f"{copy.name}.tmp{os.getpid()}")
        tmp.write_bytes(data)
        os.replace(tmp, copy)   # atomic: a concurrent reader sees the whole copy or none
    except OSError:
        pass
