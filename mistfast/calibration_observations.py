"""Step observations: what the calibration fits are fitted to (MODEL.md §2.2), and their importers.

Inputs
------
*Per-step measurements* (:data:`STEP_CSV_COLUMNS`, :func:`load_step_csv`): one row per measured
engine step::

    id,model,hardware,tp,pp,precision,engine,prefill,decode,time_ms
    s1,llama-3.1-8b,H100,1,1,fp8,vllm,0:512,,31.2
    s2,llama-3.1-8b,H100,1,1,fp8,vllm,,64*1:576,9.8
    s3,llama-3.1-8b,H100,1,1,fp8,vllm,0:256;1024:256,8*1:2048,22.5

``prefill`` lists the step's prefill chunks as ``past:new`` (KV tokens already cached : new
tokens), ``decode`` its decodes as ``branches:kv`` (parallel branches : context tokens before
this token); entries are separated by ``;`` and ``N*entry`` repeats an entry N times. ``pp``,
``precision`` and ``engine`` may be empty (1, ``bf16``, ``""``); optional ``group`` and
``source`` columns are kept (``group`` drives train/test splits).

*Splitwise-style profile tables* (:func:`import_splitwise_profile`; splitwise-sim
``data/perf_model.csv``): ``model, hardware, tensor_parallel, prompt_size, batch_size,
token_size, prompt_time, token_time`` (ms). ``prompt_time`` is one prefill step of
``batch_size`` prompts of ``prompt_size`` tokens; ``token_time`` is the mean decode step of
the batch while it generates ``token_size`` tokens, i.e. ``batch_size`` decodes at the mean
context ``prompt_size + token_size/2``. Repeated runs are averaged.

*Per-request benchmark results* (:data:`REQUEST_CSV_COLUMNS`,
:func:`import_request_benchmark`): ``isl, osl, ttft_ms`` and ``tpot_ms`` (or ``e2e_ms``), plus
``batch`` (requests served together as one static batch, default 1) and optional model /
hardware / tp / pp / precision / engine columns. Without queueing (batch-1 or static-batch runs)
each row is two step observations: TTFT = one prefill step of ``batch`` prompts of ``isl``
tokens; TPOT (= (e2e − ttft)/(osl − 1) when only e2e is given) = one decode step of ``batch``
decodes at the mean context ``isl + osl/2``. Rows measured under load (a ``concurrency`` or
``rate`` column > 1) include queueing and are skipped with a reason.

*The shared measurements table* (``../shared/calibration/measurements.csv``):
:func:`observations_from_measurements` turns its ``prefill_ms``, ``decode_step_ms`` and
``ttft_ms`` rows into step observations; throughput rows are fitted through
:class:`RunObservation` (the simulator is run once, the logged batch sequence is re-costed for
every trial parameter set; see :func:`fit_efficiency`).
"""
from __future__ import annotations

import csv
import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from .specs import ClientSpec, make_client
from .calibration_store import (
    CalibrationError, _num, client_key, engine_family, precision_dict, precision_key, resolve_device,
    resolve_model, row_precision)

# ============================================================================ schemas
STEP_CSV_COLUMNS = ("id", "model", "hardware", "tp", "pp", "precision", "engine", "prefill", "decode", "time_ms")
STEP_CSV_OPTIONAL = ("group", "source")
REQUEST_CSV_COLUMNS = ("isl", "osl", "ttft_ms", "tpot_ms", "e2e_ms", "batch")
SPLITWISE_COLUMNS = ("model", "hardware", "tensor_parallel", "prompt_size", "batch_size", "token_size",
                     "prompt_time", "token_time")


# ============================================================================ observations
@dataclass(frozen=True)
class StepObservation:
    """One measured engine step. ``prefill``: ((past, new), ...); ``decode``: ((branches, kv), ...)."""
    model: str
    device: str
    time_s: float
    prefill: tuple = ()
    decode: tuple = ()
    tp: int = 1
    pp: int = 1
    precision: str = "bf16/bf16/bf16/bf16"
    engine: str = ""
    id: str = ""
    group: str = ""
    source: str = ""
    attention_s: float | None = None   # measured time of the attention ops alone, when known (profiles)

    def __post_init__(self):
        object.__setattr__(self, "prefill", tuple((int(p), int(n)) for p, n in self.prefill))
        object.__setattr__(self, "decode", tuple((int(w), int(k)) for w, k in self.decode))
        object.__setattr__(self, "precision", precision_key(self.precision))
        if not (self.time_s > 0):
            raise CalibrationError(f"observation {self.id!r}: time must be > 0, got {self.time_s}")
        if not self.prefill and not self.decode:
            raise CalibrationError(f"observation {self.id!r}: a step needs prefill chunks or decodes")

    @property
    def tokens(self) -> int:
        """Token rows T of the step (prefill tokens + decode branches)."""
        return sum(n for _, n in self.prefill) + sum(w for w, _ in self.decode)

    @property
    def kind(self) -> str:
        """``prefill`` for any step with prefill chunks (the kernel's correction row), else ``decode``."""
        return "prefill" if self.prefill else "decode"

    @property
    def client_key(self) -> str:
        return client_key(self.model, self.device, self.tp, self.pp, self.precision, self.engine)


def parse_batch(text: Any) -> tuple[tuple[int, int], ...]:
    """``"0:512;1024:256"`` or ``"64*1:576"`` -> ((0, 512), (1024, 256)) / 64 x (1, 576)."""
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return ()
    out: list[tuple[int, int]] = []
    for part in str(text).replace(" ", "").split(";"):
        if not part:
            continue
        rep = 1
        if "*" in part:
            r, part = part.split("*", 1)
            rep = int(r)
        a, b = part.split(":")
        out.extend([(int(float(a)), int(float(b)))] * rep)
    return tuple(out)


def format_batch(entries: Sequence[tuple[int, int]]) -> str:
    """Inverse of :func:`parse_batch` (runs of equal entries use ``N*``)."""
    parts, i = [], 0
    entries = list(entries)
    while i < len(entries):
        j = i
        while j < len(entries) and entries[j] == entries[i]:
            j += 1
        a, b = entries[i]
        parts.append(f"{j - i}*{a}:{b}" if j - i > 1 else f"{a}:{b}")
        i = j
    return ";".join(parts)


def _read_rows(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def load_step_csv(path: str | Path) -> list[StepObservation]:
    """Load per-step measurements (schema :data:`STEP_CSV_COLUMNS`); model and hardware names are
    resolved to catalog presets (a row whose names do not resolve raises)."""
    rows = _read_rows(path)
    obs = []
    for i, r in enumerate(rows):
        missing = [c for c in ("model", "hardware", "time_ms") if not (r.get(c) or "").strip()]
        if missing:
            raise CalibrationError(f"{path}: row {i + 1}: missing {', '.join(missing)}")
        model, dev = resolve_model(r["model"]), resolve_device(r["hardware"])
        if model is None or dev is None:
            raise CalibrationError(f"{path}: row {i + 1}: unknown model {r['model']!r} or hardware {r['hardware']!r}")
        obs.append(StepObservation(
            model=model, device=dev, time_s=float(r["time_ms"]) / 1e3,
            prefill=parse_batch(r.get("prefill")), decode=parse_batch(r.get("decode")),
            tp=int(_num(r.get("tp"), 1)), pp=int(_num(r.get("pp"), 1)),
            precision=precision_key(r.get("precision") or "bf16"),
            engine=engine_family(r.get("engine") or ""), id=(r.get("id") or f"row{i + 1}"),
            group=r.get("group") or "", source=r.get("source") or str(path)))
    return obs


def write_step_csv(observations: Iterable[StepObservation], path: str | Path) -> None:
    """Write observations in the :data:`STEP_CSV_COLUMNS` schema (plus group, source)."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(STEP_CSV_COLUMNS + STEP_CSV_OPTIONAL)
        for o in observations:
            w.writerow([o.id, o.model, o.device, o.tp, o.pp, o.precision, o.engine, format_batch(o.prefill),
                        format_batch(o.decode), repr(o.time_s * 1e3), o.group, o.source])


def import_splitwise_profile(path: str | Path, *, precision: str = "fp16", engine: str = "splitwise",
                             model: str | None = None, hardware: str | None = None) -> list[StepObservation]:
    """Step observations from a splitwise-sim style profile table (see the module docstring).

    Rows with the same (model, hardware, TP, prompt, batch, token size) are averaged (mean).
    ``model``/``hardware`` override the table's names (else they are resolved to presets).
    """
    rows = _read_rows(path)
    groups: dict[tuple, list[tuple[float, float]]] = {}
    for i, r in enumerate(rows):
        m = model or resolve_model(r.get("model", ""))
        d = hardware or resolve_device(r.get("hardware", ""))
        if m is None or d is None:
            raise CalibrationError(f"{path}: row {i + 1}: unknown model {r.get('model')!r} or hardware {r.get('hardware')!r}")
        key = (m, d, int(_num(r.get("tensor_parallel"), 1)), int(_num(r["prompt_size"])),
               int(_num(r["batch_size"])), int(_num(r.get("token_size"), 0)))
        groups.setdefault(key, []).append((_num(r.get("prompt_time"), float("nan")), _num(r.get("token_time"), float("nan"))))
    obs = []
    prec = precision_key(precision)
    fam = engine_family(engine)
    for (m, d, tp, P, B, S), vals in sorted(groups.items()):
        pt = np.nanmean([v[0] for v in vals]) if any(np.isfinite(v[0]) for v in vals) else np.nan
        tt = np.nanmean([v[1] for v in vals]) if any(np.isfinite(v[1]) for v in vals) else np.nan
        grp = f"splitwise|{m}|{d}|tp{tp}"
        if np.isfinite(pt) and pt > 0:
            obs.append(StepObservation(model=m, device=d, tp=tp, precision=prec, engine=fam, time_s=pt / 1e3,
                                       prefill=((0, P),) * B, id=f"{m}-{d}-tp{tp}-prefill-P{P}-B{B}",
                                       group=grp + "|prefill", source=str(path)))
        if np.isfinite(tt) and tt > 0 and S > 1:
            obs.append(StepObservation(model=m, device=d, tp=tp, precision=prec, engine=fam, time_s=tt / 1e3,
                                       decode=((1, P + S // 2),) * B, id=f"{m}-{d}-tp{tp}-decode-P{P}-B{B}-S{S}",
                                       group=grp + "|decode", source=str(path)))
    return obs


def import_request_benchmark(path: str | Path, *, model: str | None = None, hardware: str | None = None,
                             tp: int = 1, pp: int = 1, precision: str = "bf16", engine: str = ""
                             ) -> tuple[list[StepObservation], list[tuple[str, str]]]:
    """Step observations from per-request benchmark results (see the module docstring).

    Returns (observations, skipped) where skipped lists (row id, reason)."""
    rows = _read_rows(path)
    obs, skipped = [], []
    for i, r in enumerate(rows):
        rid = r.get("id") or f"row{i + 1}"
        m = resolve_model(r["model"]) if r.get("model") else model
        d = resolve_device(r["hardware"]) if r.get("hardware") else hardware
        if m is None or d is None:
            skipped.append((rid, f"unknown model {r.get('model') or model!r} or hardware {r.get('hardware') or hardware!r}"))
            continue
        conc = _num(r.get("concurrency"), 1.0)
        rate = _num(r.get("rate"), None)
        if conc > 1 or (rate is not None and rate > 0 and math.isfinite(rate)):
            skipped.append((rid, "measured under load (concurrency/rate): TTFT/TPOT include queueing and "
                                 "interleaving, not single steps; use it in `mistfast validate` instead"))
            continue
        isl, osl = _num(r.get("isl")), _num(r.get("osl"), 1)
        if isl is None:
            skipped.append((rid, "no isl"))
            continue
        isl, osl = int(isl), int(osl)
        B = int(_num(r.get("batch"), 1))
        kw = dict(model=m, device=d, tp=int(_num(r.get("tp"), tp)), pp=int(_num(r.get("pp"), pp)),
                  precision=precision_key(r.get("precision") or precision),
                  engine=engine_family(r.get("engine") or engine), group=f"{path}|{rid}", source=str(path))
        ttft, tpot, e2e = _num(r.get("ttft_ms")), _num(r.get("tpot_ms")), _num(r.get("e2e_ms"))
        if ttft is not None and ttft > 0:
            obs.append(StepObservation(time_s=ttft / 1e3, prefill=((0, isl),) * B, id=f"{rid}:ttft", **kw))
        if (tpot is None or tpot <= 0) and e2e is not None and ttft is not None and osl > 1:
            tpot = (e2e - ttft) / (osl - 1)
        if tpot is not None and tpot > 0 and osl > 1:
            obs.append(StepObservation(time_s=tpot / 1e3, decode=((1, isl + osl // 2),) * B, id=f"{rid}:tpot", **kw))
        elif ttft is None:
            skipped.append((rid, "neither ttft_ms nor tpot_ms/e2e_ms"))
    return obs, skipped


STEP_METRICS = ("prefill_ms", "decode_step_ms", "ttft_ms")


def _batch_of(value) -> int | None:
    b = _num(value, None)
    return int(b) if b is not None and b >= 1 else None


def observations_from_measurements(data) -> tuple[list[StepObservation], dict[str, str]]:
    """Step observations from the step-like rows of a measurements table (the schema of
    ``../shared/calibration/measurements.csv``): ``prefill_ms`` (one prefill step of ``batch``
    prompts of ``isl`` tokens), ``decode_step_ms`` (one decode step of ``batch`` decodes at context
    ``isl + osl/2``) and ``ttft_ms`` at batch/concurrency 1 (one prefill step of ``isl`` tokens).

    Returns (observations, skipped: id -> reason) for rows that are not step measurements or
    cannot be mapped."""
    import pandas as pd
    df = data if isinstance(data, pd.DataFrame) else pd.read_csv(data)
    obs, skipped = [], {}
    for _, r in df.iterrows():
        rid = str(r.get("id"))
        metric = str(r.get("metric", "")).strip()
        if metric not in STEP_METRICS:
            skipped[rid] = f"metric {metric!r} is not a single-step measurement"
            continue
        m, d = resolve_model(r.get("model", "")), resolve_device(r.get("hardware", ""))
        prec = row_precision(r.get("precision"), str(r.get("model", "")), str(r.get("hardware", "")))
        if m is None or d is None or prec is None:
            skipped[rid] = f"unknown model/hardware/precision {r.get('model')!r} / {r.get('hardware')!r} / {r.get('precision')!r}"
            continue
        B = _batch_of(r.get("batch_or_concurrency")) or 1
        isl = int(_num(r.get("isl"), 0) or 0)
        osl = int(_num(r.get("osl"), 1) or 1)
        if isl < 1:
            skipped[rid] = "no isl"
            continue
        if metric == "ttft_ms" and B > 1 and "static" not in str(r.get("workload", "")).lower():
            skipped[rid] = "ttft at concurrency > 1 includes queueing"
            continue
        kw = dict(model=m, device=d, tp=int(_num(r.get("tp"), 1)), pp=int(_num(r.get("pp"), 1)),
                  precision=precision_key(prec), engine=engine_family(r.get("engine"), r.get("engine_version")),
                  id=rid, source=str(r.get("source", "")), time_s=float(r["value"]) / 1e3)
        if metric in ("prefill_ms", "ttft_ms"):
            obs.append(StepObservation(prefill=((0, isl),) * B, **kw))
        else:
            obs.append(StepObservation(decode=((1, isl + osl // 2),) * B, **kw))
    return obs, skipped


# ============================================================================ clients
@functools.lru_cache(maxsize=512)
def _client_cached(model: str, device: str, tp: int, pp: int, precision: str) -> ClientSpec:
    # the uncalibrated analytical client: MODEL.md's default efficiencies, not the pooled fit
    return make_client(model, device, tp=tp, pp=pp, precision=precision_dict(precision), efficiency={})


def default_client(obs: StepObservation) -> ClientSpec:
    """The uncalibrated analytical client of an observation (default efficiencies)."""
    return _client_cached(obs.model, obs.device, int(obs.tp), int(obs.pp), obs.precision)
