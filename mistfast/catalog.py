"""Catalogs of devices, memory tiers, links, topologies and models (TOML files in ``data/``).

Entries are plain dicts; :mod:`mistfast.specs` turns them into validated specs. Users add
entries without code: put TOML tables of the same shape in a file and pass it with
``extra_catalogs`` (or list it in the ``MISTFAST_CATALOG`` environment variable, ``:``
separated), or write them inline in a scenario under ``[catalog.devices.NAME]`` etc.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover
    import tomli as tomllib

KINDS = ("devices", "memory_tiers", "links", "topologies", "models")


def data_dir() -> Path:
    """The catalog folder: ``data/`` of a source checkout, or ``mistfast/_data`` in a wheel."""
    here = Path(__file__).resolve().parent
    for cand in (here.parent / "data", here / "_data"):
        if (cand / "devices.toml").exists():
            return cand
    raise FileNotFoundError(f"mistfast catalog folder not found next to {here}")


def _read(path: Path) -> dict[str, Any]:
    from .tomlcache import load_toml  # a parsed copy when the file is unchanged
    return load_toml(path)


class CatalogError(ValueError):
    """A catalog file that cannot be read as catalog entries (message names the file and table)."""


# fields that only one kind of entry has: how a bare ``[NAME]`` table in a user file is sorted
_KIND_MARKERS = (("models", ("hidden_size", "num_layers")), ("topologies", ("levels", "gpus_per_node")),
                 ("devices", ("tflops", "memory_bandwidth_GBps", "memory_GiB")),
                 ("memory_tiers", ("capacity_GB",)), ("links", ("bandwidth_GBps",)))


def _guess_kind(entry: dict[str, Any]) -> str | None:
    for kind, fields in _KIND_MARKERS:
        if any(f in entry for f in fields):
            return kind
    return None


def _split(doc: dict[str, Any], default_kind: str | None, source: str | None = None) -> dict[str, dict[str, Any]]:
    """Sort a TOML document into catalog kinds. A file may hold ``[devices.X]`` style tables
    or bare ``[X]`` tables, as the shipped one-kind files do. For a user file (``source``) a bare
    table goes to the kind its file is named after (``devices.toml``) or, failing that, the kind
    its fields identify; a table that fits no kind is refused, never silently dropped."""
    out: dict[str, dict[str, Any]] = {k: {} for k in KINDS}
    if source is not None and default_kind is None and Path(source).stem in KINDS:
        default_kind = Path(source).stem
    for key, val in doc.items():
        if key in KINDS and isinstance(val, dict):
            out[key].update(val)
        elif default_kind is not None and isinstance(val, dict):
            out[default_kind][key] = val
        elif source is not None:
            kind = _guess_kind(val) if isinstance(val, dict) else None
            if kind is None:
                raise CatalogError(f"catalog file {source}: [{key}] is not a catalog entry; write "
                                   f"[devices.{key}] (or memory_tiers, links, topologies, models), or name the "
                                   f"file after its kind (devices.toml)")
            out[kind][key] = val
    return out


def _read_user(path: str | Path) -> dict[str, dict[str, Any]]:
    p = Path(path)
    try:
        doc = _read(p)
    except FileNotFoundError:
        raise CatalogError(f"catalog file {p}: not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(f"catalog file {p}: not valid TOML: {exc}") from None
    return _split(doc, None, str(p))


@functools.lru_cache(maxsize=None)
def _builtin() -> dict[str, dict[str, Any]]:
    d = data_dir()
    merged: dict[str, dict[str, Any]] = {k: {} for k in KINDS}
    files = {"devices.toml": "devices", "memory_tiers.toml": "memory_tiers", "models.toml": "models",
             "links.toml": None}
    for name, kind in files.items():
        p = d / name
        if not p.exists():
            continue
        for k, v in _split(_read(p), kind).items():
            merged[k].update(v)
    for extra in filter(None, os.environ.get("MISTFAST_CATALOG", "").split(":")):
        for k, v in _read_user(extra).items():
            merged[k].update(v)
    return merged


class Catalog:
    """Case-insensitive view over built-in entries plus user additions (later wins)."""

    def __init__(self, extra: dict[str, dict[str, Any]] | None = None, extra_files=()):
        self._tables = {k: dict(v) for k, v in _builtin().items()}
        for f in extra_files:
            for k, v in _read_user(f).items():
                self._tables[k].update(v)
        for k, v in (extra or {}).items():
            if k not in KINDS:
                raise KeyError(f"catalog.{k}: unknown catalog kind; allowed: {', '.join(KINDS)}")
            self._tables[k].update(v)
        self._lower = {k: {n.lower(): n for n in t} for k, t in self._tables.items()}

    def names(self, kind: str) -> list[str]:
        return sorted(self._tables[kind])

    def has(self, kind: str, name: str) -> bool:
        return name.lower() in self._lower[kind]

    def entry(self, kind: str, name: str) -> tuple[str, dict[str, Any]] | None:
        """(preset name, the stored entry, NOT a copy: do not modify it), or None if unknown."""
        real = self._lower[kind].get(str(name).lower())
        return None if real is None else (real, self._tables[kind][real])

    def get(self, kind: str, name: str) -> dict[str, Any]:
        real = self._lower[kind].get(str(name).lower())
        if real is None:
            raise KeyError(f"unknown {kind[:-1].replace('_', ' ')} preset {name!r}; "
                           f"known: {', '.join(self.names(kind))}")
        entry = dict(self._tables[kind][real])
        entry.setdefault("name", real)
        return entry


@functools.lru_cache(maxsize=1)
def default_catalog() -> Catalog:
    return Catalog()
