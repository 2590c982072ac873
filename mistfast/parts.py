"""Part files of a sweep written to disk: one ``.npz`` per chunk of points, a manifest that records
each part's chunk identity and checksum, verification on resume, and lazy reads for assembly.

Layout of ``<output>.parts/``::

    manifest.json        {"format": 2, "hash": <sweep hash>, "n_points", "chunk_points", "chunks",
                          "parts": {"chunk-000003.npz": {"chunk": 3, "start": 384, "stop": 512,
                                    "sha256": ..., "bytes": ..., "nan_vars": [...]}}}
    chunk-000003.npz     the chunk's flat arrays (point order) plus ``__chunk__`` = [k, start, stop]
                         and ``__sweep__`` = the sweep hash. The numeric arrays are packed into
                         one 2-D ``__pack_<dtype>__`` array per dtype (a column range each), named in
                         ``__columns__`` (JSON: name, dtype, first column, trailing shape, in the
                         order they were given); text arrays stay whole. Fewer zip entries: about
                         8 instead of 70, each with its own headers to write and parse.
                         Parts without ``__columns__`` (written before) are read as they are.

Only the driver writes the manifest, always atomically (temporary file, fsync, rename), at most
about once a second while parts arrive and once more at the end or on an interruption: a part
finished in the last second before a crash is not in the manifest and is recomputed on resume.
A part is reused only when its file's SHA-256, size and chunk identity match the manifest entry.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import signal
import time
from pathlib import Path

import numpy as np

from .specs import SpecError

MANIFEST = "manifest.json"
FORMAT = 2


class SweepOutputError(SpecError):
    """An output file or folder cannot be written (disk full, no permission, missing folder)."""


def part_name(k: int) -> str:
    return f"chunk-{k:06d}.npz"


def output_error(path: Path | str, exc: BaseException, what: str) -> SweepOutputError:
    """One line naming the path, what was being written and why it failed."""
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        reason = "no space left on device"
    return SweepOutputError([f"{path}: cannot write {what} ({reason}); nothing was written under the final name"])


def remove_quietly(path: Path) -> None:
    """Remove a temporary file if it exists (a read-only disk refuses even that; nothing to do then)."""
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file next to ``path``, fsync it and rename it over ``path``."""
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError:
        remove_quietly(tmp)
        raise


# ----------------------------------------------------------------------------- part files
@contextlib.contextmanager
def _sigint_deferred():
    """Hold Ctrl-C back until the block ends. A KeyboardInterrupt raised inside np.savez's zip
    writer turns into zipfile's ValueError ("Can't close the ZIP file while there is an open
    writing handle"), so the sweep would end in a traceback instead of its resume hint; blocked,
    the signal is delivered right after the write, at a clean point. (Only the main thread can
    receive SIGINT; elsewhere the mask changes nothing.)"""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def save_part(path: Path, arrays: dict, chunk: tuple[int, int, int], sweep_hash: str) -> dict:
    """Write one chunk's arrays atomically; returns its manifest entry (identity and checksum)."""
    k, start, stop = chunk
    payload = _packed(arrays)
    payload["__chunk__"] = np.array([k, start, stop], np.int64)
    payload["__sweep__"] = np.array(sweep_hash)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    try:
        with _sigint_deferred(), open(tmp, "wb") as f:
            np.savez(f, **payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        remove_quietly(tmp)
        raise output_error(path, exc, "a sweep part file") from None
    nan_vars = sorted(n for n, v in arrays.items() if v.dtype.kind == "f" and np.isnan(v).any())
    return {"chunk": k, "start": start, "stop": stop, "sha256": file_sha256(path), "bytes": path.stat().st_size,
            "nan_vars": nan_vars}


def part_problem(path: Path, entry: dict | None, chunk: tuple[int, int, int]) -> str:
    """Why the part file at ``path`` cannot be used for ``chunk`` ("" when it verifies)."""
    k, start, stop = chunk
    if entry is None:
        return "not in the manifest: finished after it was last written, or not this run's"
    if (entry.get("chunk"), entry.get("start"), entry.get("stop")) != (k, start, stop):
        return "the manifest entry is for other points"
    try:
        size = path.stat().st_size
    except OSError as exc:
        return f"unreadable ({exc.strerror})"
    if size != entry.get("bytes"):
        return f"size {size} B, the manifest says {entry.get('bytes')} B (truncated or replaced)"
    if file_sha256(path) != entry.get("sha256"):
        return "checksum mismatch (damaged or replaced by another file)"
    return ""


def read_part_columns(path: Path, names: list[str], chunk: tuple[int, int, int], sweep_hash: str) -> dict:
    """Some arrays of a verified part, after checking the identity stored inside the file."""
    with np.load(path, allow_pickle=False) as z:
        ident = tuple(int(x) for x in z["__chunk__"])
        if ident != tuple(chunk) or str(z["__sweep__"]) != sweep_hash:
            raise SpecError([f"{path}: holds points {ident[1]}..{ident[2] - 1} of another run, expected "
                             f"{chunk[1]}..{chunk[2] - 1}; rerun with --resume to recompute it"])
        if COLUMNS not in z.files:
            return {n: z[n] for n in names}
        columns = _column_table(z)
        packs: dict[str, np.ndarray] = {}   # each packed array read once, whatever the columns asked
        out = {}
        for n in names:
            dt, first, trailing = columns.get(n, (None, 0, ()))
            if dt is None:
                out[n] = z[n]
                continue
            if dt not in packs:
                packs[dt] = z[_pack_name(dt)]
            pack = packs[dt]
            width = int(np.prod(trailing, dtype=np.int64))
            out[n] = pack[:, first:first + width].reshape((pack.shape[0],) + tuple(trailing))
        return out


def part_layout(path: Path) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
    """Variable name -> (dtype, trailing shape) of a part file (strings as object)."""
    with np.load(path, allow_pickle=False) as z:
        if COLUMNS in z.files:
            return {n: (np.dtype(object), tuple(shape)) if dt is None else (np.dtype(dt), tuple(shape))
                    for n, (dt, _, shape) in _column_table(z).items()}
        out = {}
        for n in z.files:
            if n.startswith("__"):
                continue
            a = z[n]
            out[n] = (np.dtype(object) if a.dtype.kind in "US" else a.dtype, a.shape[1:])
        return out


COLUMNS = "__columns__"


def _pack_name(dtype_str: str) -> str:
    return f"__pack_{dtype_str}__"


def _packed(arrays: dict) -> dict:
    """A part's payload: the numeric arrays side by side in one 2-D array per dtype (bytes
    unchanged, so every value reads back bit for bit), text arrays whole, and the column table."""
    groups: dict[str, list[np.ndarray]] = {}
    width: dict[str, int] = {}
    table, payload = [], {}
    for name, v in arrays.items():
        if v.dtype.kind not in "biuf":
            payload[name] = v.astype(str) if v.dtype == object else v
            table.append([name, None, 0, list(v.shape[1:])])
            continue
        dt = v.dtype.str
        cols = v.reshape(v.shape[0], -1)
        table.append([name, dt, width.get(dt, 0), list(v.shape[1:])])
        groups.setdefault(dt, []).append(cols)
        width[dt] = width.get(dt, 0) + cols.shape[1]
    for dt, cols in groups.items():
        payload[_pack_name(dt)] = np.concatenate(cols, axis=1)
    payload[COLUMNS] = np.array(json.dumps(table))
    return payload


def _column_table(z) -> dict[str, tuple]:
    """name -> (dtype string or None for text, first column, trailing shape), in the saved order."""
    return {n: (dt, first, tuple(shape)) for n, dt, first, shape in json.loads(str(z[COLUMNS]))}


# ----------------------------------------------------------------------------- manifest
class Manifest:
    """The driver's record of verified parts; written atomically, throttled while parts arrive."""

    def __init__(self, folder: Path, header: dict, min_interval_s: float = 1.0):
        self.folder = folder
        self.path = folder / MANIFEST
        self.header = dict(header, format=FORMAT)
        self.parts: dict[str, dict] = {}
        self.min_interval_s = min_interval_s
        self._written_at = 0.0
        self._dirty = False

    def add(self, name: str, entry: dict) -> None:
        self.parts[name] = entry
        self._dirty = True
        if time.monotonic() - self._written_at >= self.min_interval_s:
            self.write()

    def write(self) -> None:
        data = json.dumps({**self.header, "parts": self.parts}, sort_keys=True).encode()
        try:
            write_atomic(self.path, data)
        except OSError as exc:
            raise output_error(self.path, exc, "the sweep manifest") from None
        self._written_at = time.monotonic()
        self._dirty = False

    def flush(self) -> None:
        if self._dirty:
            self.write()


def read_manifest(folder: Path) -> tuple[dict | None, str]:
    """(manifest, "") or (None, why it cannot be used)."""
    path = folder / MANIFEST
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return None, "manifest.json is missing"
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return None, f"manifest.json is damaged ({type(exc).__name__}: {str(exc)[:80]})"
    if not isinstance(doc, dict) or not isinstance(doc.get("hash"), str):
        return None, "manifest.json is damaged (no sweep hash)"
    if doc.get("format") != FORMAT or not isinstance(doc.get("parts"), dict):
        return None, f"manifest.json has format {doc.get('format')!r}, this version writes {FORMAT} (no checksums)"
    return doc, ""


# ----------------------------------------------------------------------------- lazy reads
def block_grid(shape: tuple[int, ...], target_points: int = 65536) -> tuple[tuple[int, ...], ...]:
    """Dask chunks over ``shape`` whose every block is one contiguous run of C-order point indices
    (leading dims one index at a time, one dim split in runs of rows, trailing dims whole), of
    about ``target_points`` points, so that each block reads a few consecutive parts. The runs
    are a multiple of file_chunk_shape's rows, so that every block writes whole file chunks."""
    k, inner, rows = _split(shape, target_points)
    step = _file_rows(shape, k, inner, rows)
    rows = step * max(1, rows // step)
    out = []
    for d, n in enumerate(shape):
        if d < k:
            out.append((1,) * n)
        elif d == k:
            out.append(tuple(min(rows, n - a) for a in range(0, n, rows)) or (0,))
        else:
            out.append((n,))
    return tuple(out)


def file_chunk_shape(shape: tuple[int, ...], target_points: int = 65536) -> tuple[int, ...]:
    """HDF5 chunk shape of the results file, written block by block (block_grid).

    HDF5 holds in memory, until the file is closed, every edge chunk (one that sticks out of the
    array) that it was given; with one edge chunk per run of the leading dims, a file of millions of
    points would hold most of its data in memory. So the split dimension's chunk length divides
    its size whenever that leaves chunks of 512 points or more (then no chunk sticks out)."""
    if not shape:
        return ()
    k, inner, rows = _split(shape, target_points)
    return tuple(1 if d < k else _file_rows(shape, k, inner, rows) if d == k else n for d, n in enumerate(shape))


def _split(shape, target_points):
    """(split dim, points per index of it, rows per block) of block_grid."""
    nd = len(shape)
    k = 0
    while k < nd - 1 and int(np.prod(shape[k + 1:])) > target_points:
        k += 1
    inner = int(np.prod(shape[k + 1:])) if k + 1 < nd else 1
    return k, inner, max(1, target_points // max(inner, 1))


def _file_rows(shape, k, inner, rows) -> int:
    n = int(shape[k]) if shape else 1
    if n <= rows:
        return max(n, 1)
    d = max(x for x in _divisors(n) if x <= rows)
    return d if d * inner >= min(512, rows * inner) else rows


def _divisors(n: int) -> list[int]:
    small = [x for x in range(1, int(n ** 0.5) + 1) if n % x == 0]
    return small + [n // x for x in small]


def read_flat_block(folder: Path, names: list[str], first: int, stop: int, chunks: list[tuple[int, int]],
                    chunk_points: int, sweep_hash: str) -> dict[str, np.ndarray]:
    """Points [first, stop) of every variable in ``names``, each part read once."""
    pieces: dict[str, list] = {n: [] for n in names}
    for k in range(first // chunk_points, (stop - 1) // chunk_points + 1):
        a, z = chunks[k]
        cols = read_part_columns(Path(folder) / part_name(k), names, (k, a, z), sweep_hash)
        for n in names:
            pieces[n].append(cols[n][max(first, a) - a: min(stop, z) - a])
    out = {}
    for n in names:
        arr = np.concatenate(pieces[n])
        out[n] = arr.astype(object) if arr.dtype.kind in "US" else arr
    return out
