"""Calibration of the analytical step model from measurements (MODEL.md §2.2, §11.2).

Two layers, both fitted by minimising relative (log-ratio) error:

1. **Efficiencies** η_c, η_m (and optionally η_net) and the per-op overhead τ of the roofline
   (MODEL §2.1), per (device, engine family): :func:`fit_efficiency`. The physical form
   extrapolates safely, so this is what other configurations of the same device and engine use.
2. **Step correction**: a residual factor over log(token rows) for one exact client (model,
   device, TP/PP, precision, engine), separately for steps with prefill and decode-only steps:
   :func:`fit_step_correction`. It makes the client reproduce its measured steps; outside the
   measured token range the kernel uses the factor of the nearest measured point and flags the
   step (``outside_calibrated_range``; ``simulate`` warns).

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

Stored results
--------------
``data/calibration.toml`` (written by :func:`write_calibration_toml`, read by
:func:`load_calibration`, :func:`calibrated_efficiency`, :func:`calibrated_step_correction`)
holds the fitted efficiencies per ``[efficiency.DEVICE.ENGINE]`` (``"*"`` = pooled over devices
or engines, ``current`` = pooled over current engines) with their provenance: rows used, date,
split, train and test errors. Reading it, names, engine families and precisions live in
:mod:`mistfast.calibration_store` (re-exported here), so specs need not import the fitter.
:func:`calibrate` fits per (device, engine family) with priors towards pooled fits; step
corrections may follow (tokens, context) (:func:`fit_context_correction`); importers of
profiles and step logs are in :mod:`mistfast.importers`.
"""
from __future__ import annotations

import csv
import dataclasses
import functools
import math
import re
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from ._numba import jit
from .kernels import steptime as K
from .specs import ClientSpec, make_client
from .stepmodel import client_params
from .calibration_store import (  # noqa: F401  (re-exported: the stored side of calibration)
    CURRENT_ENGINE_FAMILIES, POOLED_ENGINE, DEFAULT_EFFICIENCY, DEVICE_ALIASES, KNOWN_ENGINE_FAMILIES, MODEL_ALIASES, Calibration, CalibrationError, _catalog_name,
    _default_calibration, _DTYPES, _eff_dict, _num, _resolve, calibrated_efficiency,
    calibrated_step_correction, calibration_path, check_engine, client_calibration, client_key, engine_family,
    load_calibration, parse_precision, precision_dict, precision_key, resolve_device, resolve_model, row_parallelism,
    row_precision, with_efficiency, write_calibration_toml)

# ============================================================================ schemas
STEP_CSV_COLUMNS = ("id", "model", "hardware", "tp", "pp", "precision", "engine", "prefill", "decode", "time_ms")
STEP_CSV_OPTIONAL = ("group", "source")
REQUEST_CSV_COLUMNS = ("isl", "osl", "ttft_ms", "tpot_ms", "e2e_ms", "batch")
SPLITWISE_COLUMNS = ("model", "hardware", "tensor_parallel", "prompt_size", "batch_size", "token_size",
                     "prompt_time", "token_time")
EFFICIENCY_PARAMS = ("compute", "memory", "op_overhead_us", "step_overhead_ms", "prefill", "ttft_overhead_ms")
# fitted parameters on a linear scale (>= 0); the η are fitted in log units within ETA_BOUNDS
LINEAR_PARAMS = ("op_overhead_us", "step_overhead_ms", "ttft_overhead_ms")
LINEAR_START = {"op_overhead_us": 0.5, "step_overhead_ms": 0.1, "ttft_overhead_ms": 1.0}   # offset from the start value
LINEAR_SCALE = {"op_overhead_us": 5.0, "step_overhead_ms": 1.0, "ttft_overhead_ms": 5.0}   # least_squares x_scale
# prior units: ``tau_prior_weight`` counts per 10 µs of per-op overhead, ``step_prior_weight`` per
# 0.2 ms of per-step overhead. With one model per group a constant per-step floor cannot be split
# between the two (both add the same time to every step); the stiffer per-step unit gives such a
# floor to τ, as before the per-step overhead was fitted (> 95 % of it for a model of >= 100 ops).
# Data with several layer counts in a group (or the Splitwise 30-45 ms floors) outweigh it by far.
LINEAR_PRIOR_UNIT = {"op_overhead_us": 10.0, "step_overhead_ms": 0.2, "ttft_overhead_ms": 10.0}
STEP_PRIOR_WEIGHT = 1e-3
# the per-request TTFT overhead (client-measured time outside the engine steps) is identified only by
# low-load TTFT rows (RunObservation.prefill_steps); a weak prior (per 10 ms) keeps it at the parent
# entry's value (0 at the root) where a group has none
TTFT_PRIOR_WEIGHT = 0.02
ETA_BOUNDS = (0.05, 1.0)
ROBUST_SCALE = 0.2           # log units: residuals beyond ~20 % count linearly in the efficiency fit (soft L1)
CORRECTION_TOLERANCE = 0.02   # a calibrated client reproduces distinct training steps within this


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


# ============================================================================ fast re-costing
# A "step set" is a CSR description of many steps, each with its own parameter-vector row and a
# weight; efficiencies are changed by rescaling the rate entries of the parameter vectors.
@jit
def _cost_steps(prm, row, pf_off, pf_past, pf_new, pf_done, dec_off, dec_w, dec_s, dec_k, out_t):
    nb = np.zeros(K.N_OUT)
    for i in range(out_t.shape[0]):
        a, b = pf_off[i], pf_off[i + 1]
        c, d = dec_off[i], dec_off[i + 1]
        out_t[i] = K.step_time(prm[row[i]], pf_past[a:b], pf_new[a:b], b - a, pf_done[i],
                               dec_w[c:d], dec_s[c:d], dec_k[c:d], d - c, nb)


class StepSet:
    """Steps to re-cost under trial efficiencies. ``add(client, prefill, decode, weight, owner)``."""

    def __init__(self):
        self._clients: dict[int, int] = {}
        self.client_list: list[ClientSpec] = []
        self.rows: list[int] = []
        self.pf: list[list[tuple[float, float]]] = []
        self.dec: list[list[tuple[float, float]]] = []
        self.done: list[float] = []
        self.weight: list[float] = []
        self.owner: list[int] = []
        self._built = False

    def add(self, client: ClientSpec, prefill, decode, weight: float = 1.0, owner: int = 0, done=None):
        key = id(client)
        if key not in self._clients:
            self._clients[key] = len(self.client_list)
            self.client_list.append(client)
        self.rows.append(self._clients[key])
        self.pf.append([(float(p), float(n)) for p, n in prefill])
        self.dec.append([(float(w), float(k)) for w, k in decode])
        self.done.append(float(len(self.pf[-1]) if done is None else done))
        self.weight.append(float(weight))
        self.owner.append(int(owner))
        self._built = False

    def __len__(self):
        return len(self.rows)

    def build(self):
        n = len(self.rows)
        self.pf_off = np.zeros(n + 1, np.int64)
        self.dec_off = np.zeros(n + 1, np.int64)
        for i in range(n):
            self.pf_off[i + 1] = self.pf_off[i] + len(self.pf[i])
            self.dec_off[i + 1] = self.dec_off[i] + len(self.dec[i])
        pf = np.array([x for l in self.pf for x in l], dtype=np.float64).reshape(-1, 2)
        dec = np.array([x for l in self.dec for x in l], dtype=np.float64).reshape(-1, 2)
        self.pf_past, self.pf_new = pf[:, 0].copy(), pf[:, 1].copy()
        self.dec_w, self.dec_k = dec[:, 0].copy(), dec[:, 1].copy()
        self.dec_s = np.zeros(len(dec))
        self.pf_done = np.asarray(self.done, dtype=np.float64)
        self.row = np.asarray(self.rows, dtype=np.int64)
        self.w = np.asarray(self.weight)
        self.own = np.asarray(self.owner, dtype=np.int64)
        # raw (efficiency-free) rate entries of each client's parameter vector
        P = len(self.client_list)
        self.prm0 = np.zeros((P, K.N_PARAMS))
        self.raw = np.zeros((P, 9))
        self.harness_s = np.zeros(P)
        for j, c in enumerate(self.client_list):
            prm = client_params(c)
            e = c.efficiency
            self.prm0[j] = prm
            self.harness_s[j] = getattr(c, "harness_step_ms", 0.0) * 1e-3
            self.raw[j] = (prm[K.P_FPEAK] / e.compute, prm[K.P_FPEAK_ATTN] / e.compute, prm[K.P_BW] / e.memory,
                           prm[K.P_BW_ONCHIP] / e.memory if prm[K.P_GENZ] > 0 else prm[K.P_BW_ONCHIP],
                           prm[K.P_TP_BETA] / e.network, prm[K.P_PP_BETA] / e.network,
                           prm[K.P_EP_BETA] / e.network if prm[K.P_EP_BETA] > 0 else 0.0,
                           1.0 if prm[K.P_GENZ] > 0 else 0.0,
                           prm[K.P_FPEAK_EXPERT] / e.compute)   # expert GEMM peak (own format), η_c applied
        self._built = True
        return self

    def params(self, eta_c: float, eta_m: float, tau_us: float, eta_n: float = 1.0,
               step_ms: float | None = None, eta_pf: float | None = None) -> np.ndarray:
        """Parameter rows at trial efficiencies; ``step_ms`` (``eta_pf``) None keeps each client's own
        per-step overhead (prefill-step efficiency)."""
        prm = self.prm0.copy()
        r = self.raw
        prm[:, K.P_FPEAK] = r[:, 0] * eta_c
        prm[:, K.P_FPEAK_ATTN] = r[:, 1] * eta_c
        prm[:, K.P_FPEAK_EXPERT] = r[:, 8] * eta_c
        prm[:, K.P_BW] = r[:, 2] * eta_m
        prm[:, K.P_BW_ONCHIP] = np.where(r[:, 7] > 0, r[:, 3] * eta_m, r[:, 3])
        prm[:, K.P_TP_BETA] = r[:, 4] * eta_n
        prm[:, K.P_PP_BETA] = r[:, 5] * eta_n
        prm[:, K.P_EP_BETA] = r[:, 6] * eta_n
        prm[:, K.P_TAU] = tau_us * 1e-6
        if step_ms is not None:   # (+ the client's harness time, which no calibration replaces)
            prm[:, K.P_STEP_OVH] = step_ms * 1e-3 + self.harness_s
        if eta_pf is not None:
            prm[:, K.P_PF_SLOW] = 1.0 / eta_pf - 1.0
        return prm

    def times(self, eta_c: float, eta_m: float, tau_us: float, eta_n: float = 1.0, step_ms: float | None = None,
              eta_pf: float | None = None, prm=None) -> np.ndarray:
        """Unweighted time of every step (s)."""
        if not self._built:
            self.build()
        if prm is None:
            prm = self.params(eta_c, eta_m, tau_us, eta_n, step_ms, eta_pf)
        out = np.zeros(len(self.rows))
        _cost_steps(prm, self.row, self.pf_off, self.pf_past, self.pf_new, self.pf_done,
                    self.dec_off, self.dec_w, self.dec_s, self.dec_k, out)
        return out

    def totals(self, n_owners: int, *args, **kw) -> np.ndarray:
        """Weighted time per owner."""
        t = self.times(*args, **kw)
        return np.bincount(self.own, weights=t * self.w, minlength=n_owners)


# ============================================================================ run observations
@dataclass(eq=False)
class RunObservation:
    """A measured whole-run metric (throughput or latency) fitted through the simulator.

    ``point`` is a :class:`mistfast.lowering.Point` whose client carries the *base* configuration;
    ``value_of(summary)`` extracts the predicted metric from the run summary (a dict of scalars);
    ``rate_like``: the metric scales as 1/(step time) (throughputs) rather than with it.

    Fitting runs the simulator once with the step log on (:func:`prepare_runs`), compresses the
    logged batches (prefill chunk count and tokens, decode count, KV in use) into a step set, and
    predicts the metric at trial efficiencies as ``m_ref · (S_ref/S)`` (rate-like) or
    ``m_ref · S/S_ref`` (time-like), with S the re-costed time of the logged steps and m_ref the
    simulated metric at an anchor efficiency. The batch sequence of an offline or static-batch run
    does not depend on step durations, so only the compression of each batch is approximate, and it
    enters through the ratio S/S_ref only (optionally the fit re-anchors at its result with a plain
    simulation, ``fit_efficiency(refine_runs=True)``). Open-loop and closed-loop runs change their
    batches with the step times; the same scheme is then an approximation.

    ``prefill_steps``: S re-costs only the logged steps that carry prefill tokens. For the TTFT of a
    run without queueing (low concurrency, static batch) the first token waits for its prefill
    step(s), not for the decode steps that dominate the run's total time (which is what ties
    throughput and TPOT rows to decode efficiencies).
    """
    id: str
    device: str
    engine: str
    point: Any
    measured: float
    value_of: Callable[[dict], float]
    rate_like: bool = True
    group: str = ""
    isl: int = 0
    osl: int = 0
    n_steps_hint: int = 0
    steps: list | None = None          # compressed batches: (prefill, decode, weight, n_done)
    ref_value: float = float("nan")    # simulated metric of the base client
    ref_summary: dict | None = None
    share_key: str = ""                # runs with equal keys are the same simulation (several metrics of one run)
    prefill_steps: bool = False        # re-cost only the steps with prefill (low-load TTFT)
    source: str = ""                   # publisher (leave-one-source-out unit), for the factorised fit

    @property
    def client(self) -> ClientSpec:
        return self.point.client


MAX_SURROGATE_STEPS = 3000


def _simulate_points(points, *, log_steps: int = 0, parallel: bool = True) -> dict:
    from .runner import run_points
    return run_points(list(points), log_steps=log_steps, parallel=parallel and len(points) > 1)


def _run_summary(res: dict, q: int) -> dict:
    return {k: float(np.asarray(v)[q]) if np.asarray(v).ndim == 1 else np.asarray(v)[q] for k, v in res["summary"].items()}


LOG_CAP = 65536        # steps logged per run in the batched reference pass
LOG_BATCH_BYTES = 3e8  # memory budget of one batched logged pass


def prepare_runs(runs: Sequence[RunObservation], parallel: bool = True) -> None:
    """Simulate each run (base client) once with the step log on; keep its summary
    (``ref_summary``), reference metric (``ref_value``) and compressed batch sequence (``steps``).
    Runs are simulated in parallel batches with a log of ``min(n_steps_hint or LOG_CAP)`` steps;
    a run with more steps than logged is simulated again alone with an exact log."""
    from .kernels import engine as E
    need = [r for r in runs if r.steps is None]
    if not need:
        return
    # several metrics of one run (throughput, TTFT, TPOT, ...) share one simulation
    followers: dict[str, list[RunObservation]] = {}
    leaders = []
    for r in need:
        if r.share_key and r.share_key in followers:
            followers[r.share_key].append(r)
        else:
            if r.share_key:
                followers[r.share_key] = []
            leaders.append(r)
    need = leaders
    row_bytes = 8.0 * E.N_LOG
    todo = sorted(need, key=lambda r: r.n_steps_hint or LOG_CAP)
    i = 0
    while i < len(todo):
        cap = max(todo[i].n_steps_hint or LOG_CAP, 1)
        j = i + 1
        while j < len(todo) and (j + 1 - i) * max(cap, todo[j].n_steps_hint or LOG_CAP) * row_bytes < LOG_BATCH_BYTES:
            cap = max(cap, todo[j].n_steps_hint or LOG_CAP)
            j += 1
        batch = todo[i:j]
        res = _simulate_points([r.point for r in batch], log_steps=int(cap), parallel=parallel)
        own = np.asarray(res["steplog_points"])
        for q, r in enumerate(batch):
            n = int(res["summary"]["n_steps"][q])
            subs = np.flatnonzero(own == q)
            if n > cap or len(subs) != 1:   # log too short (or data-parallel replicas): redo alone
                r.n_steps_hint = n
                rr = _simulate_points([r.point], log_steps=max(n, 1), parallel=False)
                _set_reference(r, _run_summary(rr, 0), rr["steplog"][0, :int(rr["steps_per_sub"][0])])
            else:
                _set_reference(r, _run_summary(res, q), res["steplog"][subs[0], :int(res["steps_per_sub"][subs[0]])])
        i = j
    for r in leaders:
        for f in followers.get(r.share_key, ()) if r.share_key else ():
            f.ref_summary, f.n_steps_hint, f.steps = r.ref_summary, r.n_steps_hint, r.steps
            f.ref_value = float(f.value_of(r.ref_summary))


# Latency metrics whose value is set by a scheduling policy rather than by step times: a
# latency-constrained benchmark scenario (MLPerf Server / Interactive: the submitter tunes its
# batching to just meet the p99 TTFT/TPOT bound, so the measured TPOT is the bound's batch, not the
# batch a first-come scheduler forms at that rate). Such rows are validated but not fitted, as
# the TTFT of loaded runs: fitting step efficiencies to them moves every other prediction.
POLICY_SET_LATENCY = re.compile(r"\b(server|interactive)\b.*\b(p99|p90|p50)\s*(ttft|tpot)\s*<=", re.I)
LATENCY_METRIC = re.compile(r"^(ttft|tpot|itl|e2e)", re.I)


def latency_set_by_policy(metric: str, workload_text: str) -> bool:
    """True for a latency metric of a latency-constrained benchmark scenario (see POLICY_SET_LATENCY)."""
    return bool(LATENCY_METRIC.match(metric or "")) and bool(POLICY_SET_LATENCY.search(workload_text or ""))


def _set_reference(r: RunObservation, summ: dict, log: np.ndarray) -> None:
    r.ref_summary = summ
    r.ref_value = float(r.value_of(summ))
    r.n_steps_hint = len(log)
    r.steps = _compress_log(r.point.client, log, r)


def run_values(runs: Sequence[RunObservation], eff: Mapping[str, float] | None, parallel: bool = True) -> np.ndarray:
    """Simulated metric of every run with its client's efficiency replaced by ``eff``."""
    pts = [dataclasses.replace(r.point, client=with_efficiency(r.point.client, eff)) if eff else r.point for r in runs]
    res = _simulate_points(pts, parallel=parallel)
    return np.array([float(r.value_of(_run_summary(res, q))) for q, r in enumerate(runs)])


class _SharedRunSteps:
    """The compressed batches of several runs, each distinct batch sequence costed once (runs
    that share a simulation share its ``steps`` list)."""

    def __init__(self, runs: Sequence[RunObservation]):
        self.st = StepSet()
        index: dict[tuple, int] = {}
        self.of_run = np.zeros(len(runs), dtype=np.int64)
        for j, r in enumerate(runs):
            key = (id(r.steps), r.prefill_steps)
            if key not in index:
                index[key] = len(index)
                for pf, dec, w, done in r.steps or ():
                    if r.prefill_steps and not pf:
                        continue
                    self.st.add(r.point.client, pf, dec, weight=w, owner=index[key], done=done)
            self.of_run[j] = index[key]
        self.n_distinct = len(index)
        if len(self.st):
            self.st.build()

    def totals(self, n_runs: int, *args, **kw) -> np.ndarray:
        if not len(self.st):
            return np.zeros(n_runs)
        return self.st.totals(self.n_distinct, *args, **kw)[self.of_run]


def _run_stepset(runs: Sequence[RunObservation]) -> _SharedRunSteps:
    return _SharedRunSteps(runs)


def _compress_log(client: ClientSpec, log: np.ndarray, run: RunObservation) -> list:
    """Group identical (prefills, prefill tokens, decodes, KV-in-use bucket) compositions of a step
    log; keep at most MAX_SURROGATE_STEPS groups (stride sample, reweighted). A decode group becomes
    one entry with ``w`` = number of decodes at the mean context (identical attention sums)."""
    from .kernels import engine as E
    if len(log) == 0:
        return []
    bs = client.scheduler.block_size
    npf = log[:, E.L_NPF].astype(np.int64)
    pft = log[:, E.L_PF_TOKENS].astype(np.int64)
    ndec = log[:, E.L_NDEC].astype(np.int64)
    kv = log[:, E.L_KV_USED] * bs
    kbucket = np.round(np.log2(np.maximum(kv, 1.0)) * 8).astype(np.int64)
    keys = np.stack([npf, pft, ndec, kbucket], axis=1)
    uniq, inv, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    inv = inv.ravel()
    kv_mean = np.bincount(inv, weights=kv) / counts
    order = np.arange(len(uniq))
    scale = 1.0
    if len(uniq) > MAX_SURROGATE_STEPS:
        stride = int(math.ceil(len(uniq) / MAX_SURROGATE_STEPS))
        order = order[::stride]
        scale = counts.sum() / counts[order].sum()
    out = []
    for g in order:
        n_pf, toks, n_dec = int(uniq[g, 0]), int(uniq[g, 1]), int(uniq[g, 2])
        prefill = [(0.0, toks / n_pf)] * n_pf if n_pf > 0 else []
        decode = []
        if n_dec > 0:
            # KV in use minus the prompts being prefilled, shared by the decodes
            k = max(1.0, (kv_mean[g] - (toks if n_pf else 0)) / n_dec - 1.0)
            if run.osl > 0 and run.isl > 0:
                k = min(max(k, float(run.isl)), float(run.isl + run.osl))
            decode = [(float(n_dec), k)]
        if prefill or decode:
            out.append((prefill, decode, float(counts[g]) * scale, float(n_pf)))
    return out


# ============================================================================ efficiency fit
@dataclass
class EfficiencyFit:
    """Result of :func:`fit_efficiency` for one group (errors are |predicted/measured − 1| on the
    fitted rows)."""
    compute: float
    memory: float
    op_overhead_us: float
    network: float = 1.0
    step_overhead_ms: float = 0.0
    prefill: float = 1.0
    ttft_overhead_ms: float = 0.0
    first_wave_ms: float = 0.0      # set after the fit from closed-loop TTFT tails (validate.fit_first_wave)
    n_steps: int = 0
    n_runs: int = 0
    rows: tuple = ()
    params: tuple = ()
    median_abs_rel_err: float = float("nan")
    p90_abs_rel_err: float = float("nan")
    success: bool = True
    message: str = ""

    def as_efficiency(self) -> dict:
        return {"compute": self.compute, "memory": self.memory, "network": self.network,
                "op_overhead_us": self.op_overhead_us, "step_overhead_ms": self.step_overhead_ms,
                "prefill": self.prefill, "ttft_overhead_ms": self.ttft_overhead_ms,
                "first_wave_ms": self.first_wave_ms}

    def __getitem__(self, k):
        return getattr(self, k)


def _group_key(device: str, engine: str, group_by) -> tuple:
    if group_by is None:
        return ("*", "*")
    g = tuple(group_by)
    return (device if "device" in g else "*", engine if "engine" in g else "*")


def fit_efficiency(observations: Sequence[StepObservation],
                   base_client_factory: Callable[[StepObservation], ClientSpec] = default_client, *,
                   runs: Sequence[RunObservation] = (), group_by: Sequence[str] | None = ("device", "engine"),
                   params: Sequence[str] | None = None, x0: Mapping[str, float] | None = None,
                   prior_weight: float = 0.02, tau_prior_weight: float = 1e-3, memory_floor: float = 0.5,
                   floor_weight: float = 1.0, refine_runs: bool = False, step_prior_weight: float = STEP_PRIOR_WEIGHT,
                   prior: Mapping[str, float] | Callable[[tuple], Mapping[str, float] | None] | None = None,
                   equal_model_weights: bool = False):
    """Fit η_c, η_m, τ (and η_net) by minimising the log-ratio error ``log(predicted/measured)``
    over step observations (and run observations) with :func:`scipy.optimize.least_squares`
    (bounds: η in [0.05, 1], τ >= 0 µs).

    ``base_client_factory(obs)`` gives the analytical client of an observation (its efficiency is
    replaced during the fit). ``group_by``: a separate fit per (device, engine) by default; a
    subset such as ``("engine",)`` pools devices; None fits one set for everything and returns a
    single :class:`EfficiencyFit` instead of a dict keyed by (device, engine) (``"*"`` = pooled).

    ``params`` (default: compute, memory, op_overhead_us, step_overhead_ms; add ``"network"`` to fit η_net too) are
    the fitted parameters; the others stay at ``x0`` (default η = 0.75, η_net = 1, τ = 0). η_net
    is off by default: the collective model has bandwidth but no fitted latency, so at one TP
    degree η_net mostly trades off against η_c and does not transfer to other TP degrees.

    A weak prior keeps parameters the data cannot identify near their defaults: ``prior_weight`` per η in log units (towards η_c = η_m = 0.75, η_net = 1) and
    ``tau_prior_weight`` per 10 µs of τ; with exact data it moves the fit by about prior_weight²
    (relative). Memory-bound steps of one configuration cannot tell a slow memory (low η_m) from
    a fixed per-op overhead (τ): both add a constant to every decode step. Streaming weights and
    KV from HBM reaches well over half the datasheet bandwidth in any serving engine, while
    launch, synchronisation and framework overheads differ a lot between engines, so a one-sided
    penalty (``floor_weight`` per log unit below ``memory_floor``) makes the fit explain such
    floors with τ rather than with η_m < ``memory_floor`` unless the data insists.

    Run observations are re-costed through their logged batch sequences (:class:`RunObservation`);
    with ``refine_runs`` the runs are simulated again at the fitted values and the fit is redone
    around that anchor (on the measurements.csv throughput rows this moved the fitted values by
    < 2 % and the errors by < 0.5 %, so it is off by default).
    """
    from scipy.optimize import least_squares

    groups: dict[tuple, tuple[list, list]] = {}
    for o in observations:
        groups.setdefault(_group_key(o.device, o.engine, group_by), ([], []))[0].append(o)
    for r in runs:
        groups.setdefault(_group_key(r.device, r.engine, group_by), ([], []))[1].append(r)
    if params is not None:
        for p in params:
            if p not in ("compute", "memory", "op_overhead_us", "network", "step_overhead_ms", "prefill",
                         "ttft_overhead_ms"):
                raise CalibrationError(f"params: unknown parameter {p!r}")
    start = dict(DEFAULT_EFFICIENCY)
    if x0:
        start.update(x0)
    results = {}
    for key, (obs, rns) in groups.items():
        ps = tuple(params) if params is not None else EFFICIENCY_PARAMS
        centre = prior(key) if callable(prior) else prior
        centre = _eff_dict(centre) if centre is not None else None
        results[key] = _fit_one(obs, rns, base_client_factory, ps, dict(start, **(centre or {})), prior_weight,
                                tau_prior_weight, memory_floor, floor_weight, refine_runs, least_squares,
                                prior_centre=centre, equal_model_weights=equal_model_weights,
                                step_prior_weight=step_prior_weight)
    if group_by is None:
        return results.get(("*", "*")) if results else None
    return results


def _fit_one(obs, runs, factory, params, start, prior_weight, tau_prior_weight, memory_floor, floor_weight,
             refine_runs, least_squares, prior_centre=None, equal_model_weights=False,
             step_prior_weight=STEP_PRIOR_WEIGHT) -> EfficiencyFit:
    steps = StepSet()
    for i, o in enumerate(obs):
        steps.add(factory(o), o.prefill, o.decode, owner=i)
    if len(steps):
        steps.build()
    meas = np.log([o.time_s for o in obs]) if obs else np.zeros(0)
    run_meas = np.log([r.measured for r in runs]) if runs else np.zeros(0)
    lo_eta, hi_eta = ETA_BOUNDS
    names = ("compute", "memory", "network", "op_overhead_us", "step_overhead_ms", "prefill", "ttft_overhead_ms")

    def unpack(x) -> dict:
        v = {k: start.get(k, DEFAULT_EFFICIENCY[k]) for k in names}
        for p, xi in zip(params, x):
            v[p] = float(np.exp(xi)) if p not in LINEAR_PARAMS else float(xi)
        return v

    def clip_eta(v):
        return min(max(v, lo_eta), hi_eta)

    x_start = np.array([math.log(clip_eta(start[p])) if p not in LINEAR_PARAMS
                        else max(start.get(p, 0.0), 0.0) + LINEAR_START[p] for p in params])
    lb = np.array([math.log(lo_eta) if p not in LINEAR_PARAMS else 0.0 for p in params])
    ub = np.array([math.log(hi_eta) if p not in LINEAR_PARAMS else np.inf for p in params])
    x_start = np.clip(x_start, lb, ub)
    pc = {**DEFAULT_EFFICIENCY, **(prior_centre or {})}
    prior_at = {"compute": math.log(min(max(pc["compute"], lo_eta), hi_eta)),
                "memory": math.log(min(max(pc["memory"], lo_eta), hi_eta)),
                "network": math.log(min(max(pc["network"], lo_eta), hi_eta)), "op_overhead_us": float(pc["op_overhead_us"]),
                "prefill": math.log(min(max(pc.get("prefill", 1.0), lo_eta), hi_eta)),
                "step_overhead_ms": float(pc.get("step_overhead_ms", 0.0)),
                "ttft_overhead_ms": float(pc.get("ttft_overhead_ms", 0.0))}
    x_scale = np.array([0.3 if p not in LINEAR_PARAMS else LINEAR_SCALE[p] for p in params])

    run_steps = None
    anchor = {}
    if runs:
        prepare_runs(runs)
        run_steps = _run_stepset(runs)
        # the logged reference simulations ran with each run's base-client efficiency
        for j, r in enumerate(runs):
            e = r.client.efficiency
            anchor.setdefault(j, ((e.compute, e.memory, e.op_overhead_us, e.network, e.step_overhead_ms,
                                   e.prefill), r.ref_value))

    def anchor_totals():
        S0 = np.zeros(len(runs))
        for key in {a[0] for a in anchor.values()}:
            tot = run_steps.totals(len(runs), *key)
            for j, a in anchor.items():
                if a[0] == key:
                    S0[j] = tot[j]
        return S0, np.array([anchor[j][1] for j in range(len(runs))])

    # pooled fits: each (device, engine, model) group carries the weight of ~one group's rows, so
    # one large benchmark sweep of one model cannot set the pooled efficiencies of every other model
    if equal_model_weights:
        keys = [(o.device, o.engine, o.model) for o in obs] + \
            [(r.device, r.engine, r.point.client.model.name) for r in runs]
        sizes: dict[tuple, int] = {}
        for k in keys:
            sizes[k] = sizes.get(k, 0) + 1
        n_mean = len(keys) / max(len(sizes), 1)
        wts = np.sqrt(np.array([n_mean / sizes[k] for k in keys])) if keys else np.zeros(0)
    else:
        wts = np.ones(len(obs) + len(runs))
    w_obs, w_run = wts[:len(obs)], wts[len(obs):]
    ttft_rows = np.array([1.0 if r.prefill_steps else 0.0 for r in runs])

    def residuals(x, S0, m0):
        v = unpack(x)
        res = []
        if len(obs):
            t = steps.times(v["compute"], v["memory"], v["op_overhead_us"], v["network"], v["step_overhead_ms"],
                            v["prefill"])
            res.append(w_obs * (np.log(t) - meas))
        if runs:
            S = run_steps.totals(len(runs), v["compute"], v["memory"], v["op_overhead_us"], v["network"],
                                 v["step_overhead_ms"], v["prefill"])
            ratio = np.where([r.rate_like for r in runs], S0 / S, S / S0)
            # a low-load TTFT row adds the per-request time outside the engine steps (the reference
            # simulations never include it)
            pred = m0 * ratio + v["ttft_overhead_ms"] * ttft_rows
            res.append(w_run * (np.log(np.maximum(pred, 1e-300)) - run_meas))
        linear_weight = {"op_overhead_us": tau_prior_weight, "step_overhead_ms": step_prior_weight,
                         "ttft_overhead_ms": TTFT_PRIOR_WEIGHT}
        pri = [prior_weight * (xi - prior_at[p]) if p not in LINEAR_PARAMS
               else linear_weight[p] * (xi - prior_at[p]) / LINEAR_PRIOR_UNIT[p]
               for p, xi in zip(params, x)]
        if "memory" in params and floor_weight > 0:
            pri.append(floor_weight * max(0.0, math.log(memory_floor) - x[params.index("memory")]))
        res.append(np.asarray(pri, dtype=float))
        return np.concatenate(res)

    S0, m0 = anchor_totals() if runs else (None, None)
    # robust loss: a few rows the step model cannot represent (e.g. scheduling effects) must not
    # drag the efficiencies of every other row; residuals below ROBUST_SCALE count as squares
    kw = dict(bounds=(lb, ub), method="trf", x_scale=x_scale, xtol=1e-10, ftol=1e-12, gtol=1e-12, max_nfev=300,
              loss="soft_l1", f_scale=ROBUST_SCALE)
    sol = least_squares(residuals, x_start, args=(S0, m0), **kw)
    if runs and refine_runs:
        v = unpack(sol.x)
        vals = run_values(runs, v)
        key = (v["compute"], v["memory"], v["op_overhead_us"], v["network"], v["step_overhead_ms"], v["prefill"])
        anchor = {j: (key, vals[j]) for j in range(len(runs))}
        S0, m0 = anchor_totals()
        sol = least_squares(residuals, sol.x, args=(S0, m0), **kw)
    v = unpack(sol.x)
    r = residuals(sol.x, S0, m0)[:len(obs) + len(runs)] / np.maximum(wts, 1e-300)
    err = np.abs(np.expm1(r)) if len(r) else np.array([np.nan])
    return EfficiencyFit(compute=v["compute"], memory=v["memory"], op_overhead_us=v["op_overhead_us"],
                         network=v["network"], step_overhead_ms=v["step_overhead_ms"], prefill=v["prefill"],
                         ttft_overhead_ms=v["ttft_overhead_ms"], n_steps=len(obs), n_runs=len(runs), params=tuple(params),
                         rows=tuple([o.id for o in obs] + [r_.id for r_ in runs]),
                         median_abs_rel_err=float(np.median(err)), p90_abs_rel_err=float(np.percentile(err, 90)),
                         success=bool(sol.success), message=str(sol.message))


# ============================================================================ step correction
def _representative(obs: StepObservation, T: float) -> tuple[list, list]:
    """The observation's batch shape rescaled to ``T`` token rows (for checks between knots)."""
    s = T / obs.tokens
    if obs.prefill:
        return [(p, max(1.0, n * s)) for p, n in obs.prefill], [(w, k) for w, k in obs.decode]
    n = max(1, int(round(len(obs.decode) * s)))
    k = float(np.mean([k for _, k in obs.decode]))
    w = float(np.mean([w for w, _ in obs.decode]))
    return [], [(w, k)] * n


def fit_step_correction(observations: Sequence[StepObservation], client: ClientSpec, *, max_knots: int | None = None,
                        monotone_grid: int = 24, monotone_rtol: float = 1e-3, source: str = "",
                        context: bool = True) -> dict:
    """Residual factor table (a ``StepCorrectionSpec`` dict) that makes ``client`` reproduce the
    measured steps of one configuration.

    For each step kind (with prefill / decode-only) the ratio measured/predicted is computed at
    every observation (geometric mean over observations with the same token count T); the kernel
    interpolates the factor linearly in log T between knots and clamps it at the ends. Knots are
    the union of both kinds' T values (the table shares them); a kind's factor at the other kind's
    knots is its own interpolant, so each kind reproduces its distinct-T training points exactly
    (within :data:`CORRECTION_TOLERANCE` after thinning to ``max_knots``). A kind with no data keeps
    factor 1.

    Monotone-safe: between two neighbouring measured points whose times are ordered, the corrected
    time f(T)·analytical(T) is checked on a grid; where it turns back (possible when the factor
    falls steeply while the analytical time rises), knots are inserted where the curve is furthest
    from the log-linear interpolation of the measured times, with that interpolation as target,
    until it is monotone or the knot budget is used. A turn-back larger than ``monotone_rtol``
    (relative) left at the end is reported with a warning.
    """
    if max_knots is not None and max_knots > K.CORR_MAX:
        raise CalibrationError(f"max_knots = {max_knots}: the kernel table holds at most {K.CORR_MAX}")
    if client.efficiency.step_overhead_ms > 0 and observations:
        return _correction_over_step_overhead(observations, client, max_knots=max_knots, context=context,
                                              source=source, monotone_grid=monotone_grid,
                                              monotone_rtol=monotone_rtol)
    if context and observations and _has_context_info(observations):
        return fit_context_correction(observations, client, max_knots=max_knots or K.CORR_MAX, source=source)
    max_knots = max_knots or 16
    base = client.model_copy(update={"step_correction": None})
    kinds: dict[str, list[StepObservation]] = {"prefill": [], "decode": []}
    for o in observations:
        kinds[o.kind].append(o)
    if not observations:
        raise CalibrationError("fit_step_correction: no observations")

    def analytic(prefill, decode) -> float:
        st = StepSet()
        st.add(base, prefill, decode)
        return float(st.times(base.efficiency.compute, base.efficiency.memory, base.efficiency.op_overhead_us,
                              base.efficiency.network, base.efficiency.step_overhead_ms)[0])

    # per kind: sorted distinct log T, log-ratio, measured log time, representative obs
    data: dict[str, dict] = {}
    for kind, obs in kinds.items():
        if not obs:
            continue
        by_T: dict[int, list] = {}
        for o in obs:
            pred = analytic(o.prefill, o.decode)
            by_T.setdefault(o.tokens, []).append((math.log(o.time_s / pred), math.log(o.time_s), o))
        Ts = sorted(by_T)
        data[kind] = {
            "x": np.log(np.array(Ts, dtype=float)),
            "lr": np.array([np.mean([v[0] for v in by_T[t]]) for t in Ts]),
            "lt": np.array([np.mean([v[1] for v in by_T[t]]) for t in Ts]),
            "obs": [by_T[t][0][2] for t in Ts],
        }
    knots = np.unique(np.concatenate([d["x"] for d in data.values()]))
    knots = _thin_knots(knots, max_knots)

    def factors(kind, xs):
        if kind not in data:
            return np.ones(len(xs))
        d = data[kind]
        return np.exp(np.interp(xs, d["x"], d["lr"]))

    table = {k: factors(k, knots) for k in ("prefill", "decode")}

    # ---- monotone safety between measured neighbours ------------------------------------------
    def corrected(kind, x, obs_lo):
        f = np.interp(x, knots, table[kind])
        pf, dec = _representative(obs_lo, math.exp(x))
        return f * analytic(pf, dec)

    def find_violation(rtol=0.0):
        """First (kind, segment, grid xs, model log-times incl. ends, direction) that is not
        monotone (within ``rtol``) between two measured neighbours, or None."""
        for kind, d in data.items():
            for i in range(len(d["x"]) - 1):
                lo_t, hi_t = d["lt"][i], d["lt"][i + 1]
                if abs(hi_t - lo_t) < 1e-12:
                    continue
                xs = np.linspace(d["x"][i], d["x"][i + 1], monotone_grid + 2)[1:-1]
                if kind == "decode":  # decode rows are whole numbers
                    xs = np.unique(np.log(np.unique(np.round(np.exp(xs)))))
                    xs = xs[(xs > d["x"][i] + 1e-12) & (xs < d["x"][i + 1] - 1e-12)]
                xs = np.unique(np.concatenate([xs, knots[(knots > d["x"][i]) & (knots < d["x"][i + 1])]]))
                if len(xs) == 0:
                    continue
                ys = np.concatenate([[math.log(corrected(kind, d["x"][i], d["obs"][i]))],
                                     np.log([corrected(kind, x, d["obs"][i]) for x in xs]),
                                     [math.log(corrected(kind, d["x"][i + 1], d["obs"][i]))]])
                sgn = 1.0 if hi_t > lo_t else -1.0
                back = np.maximum.accumulate(ys * sgn) - ys * sgn   # how far the curve turned back
                if (back > math.log1p(rtol) + 1e-10).any():
                    return kind, i, np.concatenate([[d["x"][i]], xs, [d["x"][i + 1]]]), ys, sgn
        return None

    # 1) insert knots (targets: log-linear interpolation of the measured times) while the budget lasts
    while len(knots) < max_knots:
        v = find_violation()
        if v is None:
            break
        kind, i, xs, ys, sgn = v
        d = data[kind]
        # new knot where the curve is furthest from the log-linear interpolation of the measured
        # times, away from existing knots
        u_all = (xs - d["x"][i]) / (d["x"][i + 1] - d["x"][i])
        dev = np.abs(ys - (d["lt"][i] + u_all * (d["lt"][i + 1] - d["lt"][i])))
        far = np.array([np.min(np.abs(knots - x)) > 1e-6 for x in xs])
        if not far.any():
            break
        xn = xs[np.flatnonzero(far)[np.argmax(dev[far])]]
        u = (xn - d["x"][i]) / (d["x"][i + 1] - d["x"][i])
        target = math.exp(d["lt"][i] + u * (d["lt"][i + 1] - d["lt"][i]))
        pf, dec = _representative(d["obs"][i], math.exp(xn))
        f_new = target / analytic(pf, dec)
        new_knots = np.sort(np.append(knots, xn))
        new_table = {}
        for k2 in ("prefill", "decode"):
            vals = np.interp(new_knots, knots, table[k2])
            if k2 == kind:
                vals[np.searchsorted(new_knots, xn)] = f_new
            new_table[k2] = vals
        knots, table = new_knots, new_table
    if find_violation(monotone_rtol) is not None:
        warnings.warn(f"fit_step_correction: the corrected step time turns back by more than {monotone_rtol:.1%} "
                      "between measured neighbours whose times are monotone (knot budget used up)", stacklevel=2)

    # reproduction error of the distinct-T training points
    worst = 0.0
    for kind, d in data.items():
        for x, lt, o in zip(d["x"], d["lt"], d["obs"]):
            worst = max(worst, abs(math.log(corrected(kind, x, o)) - lt))
    worst = math.expm1(worst)

    tokens = [float(round(math.exp(x), 6)) for x in knots]
    # strictly increasing after rounding
    keep = [0] + [i for i in range(1, len(tokens)) if tokens[i] > tokens[i - 1]]
    corr = {"tokens": [tokens[i] for i in keep], "prefill": [float(table["prefill"][i]) for i in keep],
            "decode": [float(table["decode"][i]) for i in keep]}
    # the real per-step error over every training step (the distinct-T representatives above are
    # reproduced within `worst`; steps of other batch shapes at the same T can differ)
    diag = step_fit_errors(observations, with_efficiency(base, None, corr))
    _warn_if_poor(diag)
    corr["source"] = ((source or f"fit_step_correction on {len(observations)} measured steps")
                      + f"; distinct-T training steps within {100 * worst:.2g} %; per-step error {diag.summary()}")
    return corr


def _correction_over_step_overhead(observations, client: ClientSpec, **kw) -> dict:
    """The kernel adds the per-step overhead after the correction (``f·analytical + overhead``), so
    the factors are fitted on the measured times less that overhead, against the client without
    it; a step measured faster than the overhead keeps a small positive remainder (2 % of it)."""
    ovh_s = client.efficiency.step_overhead_ms * 1e-3
    core = with_efficiency(client, {"step_overhead_ms": 0.0})
    reduced = [replace(o, time_s=max(o.time_s - ovh_s, 0.02 * o.time_s)) for o in observations]
    corr = fit_step_correction(reduced, core, **kw)
    diag = step_fit_errors(observations, with_efficiency(client.model_copy(update={"step_correction": None}),
                                                        None, {k: v for k, v in corr.items() if k != "source"}))
    corr["source"] = ((kw.get("source") or f"fit_step_correction on {len(observations)} measured steps")
                      + f"; factors on the measured times less the {client.efficiency.step_overhead_ms:.3g} ms "
                      f"per-step overhead; per-step error {diag.summary()}")
    return corr


# ============================================================================ context-aware correction
def _analytic_parts(client: ClientSpec, obs: StepObservation) -> tuple[float, float]:
    """(non-attention s, attention s) of the uncorrected analytical model for one observation."""
    from .stepmodel import step_latency
    st = step_latency(client, prefill=obs.prefill, decode=obs.decode)
    at = st.breakdown["attention_s"]
    return st.total_s - at, at


def _has_context_info(observations: Sequence[StepObservation]) -> bool:
    """True when the observations can separate the attention factor from the rest: they carry
    their attention time, or some token count T was measured at several contexts."""
    if any(o.attention_s is not None for o in observations):
        return True
    seen: dict[tuple, set] = {}
    for o in observations:
        ctx = sum(w * k for w, k in o.decode) + sum(n * p for p, n in o.prefill)
        seen.setdefault((o.kind, o.tokens), set()).add(ctx)
    return any(len(v) > 1 for v in seen.values())


def fit_context_correction(observations: Sequence[StepObservation], client: ClientSpec, *,
                           max_knots: int = K.CORR_MAX, knot_tolerance: float = 0.002, source: str = "") -> dict:
    """Step correction over (tokens, context): per step kind and token count T, one factor f(T) for
    every op but attention and one g(T) for the attention op, so that a corrected step costs
    ``f(T)·A(T) + g(T)·Attn(T, context)`` with A and Attn the analytical parts. Decode steps then
    follow the context length through the attention work instead of taking one factor per T.

    At each T: observations that carry their attention time (:attr:`StepObservation.attention_s`,
    e.g. from a Vidur profile) give f and g directly (geometric means over contexts); otherwise
    steps measured at several contexts give (f, g) by non-negative least squares on relative error;
    a single context gives f = g. The kernel interpolates both factors linearly in log T between
    knots; knots are chosen greedily among the measured T (:func:`_greedy_knots`) until every
    measured factor is reproduced within ``knot_tolerance`` (log units) or ``max_knots`` are used,
    so tile steps of a measured GEMM profile get a knot on each side."""
    from scipy.optimize import nnls
    if not observations:
        raise CalibrationError("fit_context_correction: no observations")
    if max_knots > K.CORR_MAX:
        raise CalibrationError(f"max_knots = {max_knots}: the kernel table holds at most {K.CORR_MAX}")
    base = client.model_copy(update={"step_correction": None})
    per: dict[str, dict[int, list]] = {"prefill": {}, "decode": {}}
    for o in observations:
        a, at = _analytic_parts(base, o)
        per[o.kind].setdefault(o.tokens, []).append((o, a, at))
    fits: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for kind, byT in per.items():
        xs, fs, gs = [], [], []
        for T in sorted(byT):
            rows = byT[T]
            f, g = _factors_at(rows, nnls)
            xs.append(math.log(T))
            fs.append(f)
            gs.append(g)
        if xs:
            fits[kind] = (np.array(xs), np.array(fs), np.array(gs))
    knots = _greedy_knots(fits, max_knots, knot_tolerance)
    table = {}
    for kind in ("prefill", "decode"):
        if kind in fits:
            x, f, g = fits[kind]
            table[kind] = (np.exp(np.interp(knots, x, np.log(f))), np.exp(np.interp(knots, x, np.log(g))))
        else:
            table[kind] = (np.ones(len(knots)), np.ones(len(knots)))
    tokens = [float(round(math.exp(x), 6)) for x in knots]
    keep = [0] + [i for i in range(1, len(tokens)) if tokens[i] > tokens[i - 1]]
    corr = {"tokens": [tokens[i] for i in keep],
            "prefill": [float(table["prefill"][0][i]) for i in keep],
            "decode": [float(table["decode"][0][i]) for i in keep],
            "attention_prefill": [float(table["prefill"][1][i]) for i in keep],
            "attention_decode": [float(table["decode"][1][i]) for i in keep]}
    diag = step_fit_errors(observations, with_efficiency(base, None, corr))
    corr["source"] = ((source or f"fit_context_correction on {len(observations)} measured steps")
                      + f"; per-step error {diag.summary()}")
    _warn_if_poor(diag)
    return corr


def _greedy_knots(fits: Mapping[str, tuple], max_knots: int, tol: float) -> np.ndarray:
    """Knots (log T) among the measured ones: start from the ends of each kind's range, then add
    the measured point whose factor (f or g, any kind) the piecewise-linear table misses most,
    until all are within ``tol`` (log units) or ``max_knots`` are used."""
    curves = []
    for x, f, g in fits.values():
        curves.append((x, np.log(f)))
        curves.append((x, np.log(g)))
    knots = sorted({float(c[0][0]) for c in curves} | {float(c[0][-1]) for c in curves})
    while len(knots) < max_knots:
        kn = np.array(knots)
        worst, at = tol, None
        for x, y in curves:
            err = np.abs(np.interp(x, kn, np.interp(kn, x, y)) - y)
            i = int(np.argmax(err))
            if err[i] > worst:
                worst, at = float(err[i]), float(x[i])
        if at is None:
            break
        knots = sorted(set(knots) | {at})
    if len(knots) > max_knots:  # more kinds' end points than the budget
        knots = list(_thin_knots(np.array(knots), max_knots))
    return np.array(knots)


def _factors_at(rows, nnls) -> tuple[float, float]:
    """(f, g) at one token count from (observation, analytical rest, analytical attention) rows."""
    with_attn = [(o, a, at) for o, a, at in rows if o.attention_s is not None and a > 0]
    if with_attn:
        f = math.exp(np.mean([math.log(max(o.time_s - o.attention_s, 1e-12) / a) for o, a, at in with_attn]))
        gl = [math.log(o.attention_s / at) for o, a, at in with_attn if at > 0 and o.attention_s > 0]
        g = math.exp(np.mean(gl)) if gl else f
        return f, g
    ratios = {round(at / max(a, 1e-300), 9) for _, a, at in rows}
    if len(ratios) > 1:
        # relative least squares: t_i = f a_i + g at_i, each row divided by t_i
        A = np.array([[a / o.time_s, at / o.time_s] for o, a, at in rows])
        sol, _ = nnls(A, np.ones(len(rows)))
        if sol[0] > 0 and sol[1] > 0:
            return float(sol[0]), float(sol[1])
    f = math.exp(np.mean([math.log(o.time_s / (a + at)) for o, a, at in rows]))
    return f, f


@dataclass
class StepFitErrors:
    """Per-step relative errors |corrected/measured − 1| of a calibrated client on the steps it was
    fitted on (every step, not one representative per token count)."""
    n: int
    median: float
    p90: float
    max: float
    worst_id: str = ""

    def summary(self) -> str:
        return (f"median {100 * self.median:.2g} %, p90 {100 * self.p90:.2g} %, max {100 * self.max:.2g} % "
                f"over {self.n} steps" + (f" (worst {self.worst_id})" if self.worst_id else ""))


def step_fit_errors(observations: Sequence[StepObservation], client: ClientSpec) -> StepFitErrors:
    """Relative error of ``client`` on every observation (fit diagnostics)."""
    from .stepmodel import step_latency
    errs = np.array([abs(step_latency(client, prefill=o.prefill, decode=o.decode).total_s / o.time_s - 1.0)
                     for o in observations])
    if len(errs) == 0:
        return StepFitErrors(0, float("nan"), float("nan"), float("nan"))
    i = int(np.argmax(errs))
    return StepFitErrors(len(errs), float(np.median(errs)), float(np.percentile(errs, 90)), float(errs[i]),
                         observations[i].id)


def _warn_if_poor(diag: StepFitErrors) -> None:
    if diag.n and diag.median > CORRECTION_TOLERANCE:
        warnings.warn(f"step correction: calibrated client reproduces its training steps with {diag.summary()} "
                      f"(tolerance on the median {CORRECTION_TOLERANCE:.0%})", stacklevel=3)


def _thin_knots(x: np.ndarray, max_knots: int) -> np.ndarray:
    x = np.asarray(sorted(set(float(v) for v in x)))
    while len(x) > max_knots:
        gaps = np.diff(x)
        j = int(np.argmin(gaps))
        if j == 0:
            x = np.delete(x, 1)           # keep the end points
        elif j == len(gaps) - 1:
            x = np.delete(x, j)
        else:
            x = np.concatenate([x[:j], [(x[j] + x[j + 1]) / 2], x[j + 2:]])
    return x


HIERARCHY_PRIOR_WEIGHT = 0.1   # per log unit of eta (and per 10 us of tau x 0.05) towards the parent fit
# "factored": one joint fit of root + device + engine + pair + publisher terms (fit_factored below);
# "hierarchical": independent per-(device, engine) fits with a prior to a pooled parent
FIT_STRUCTURES = ("factored", "hierarchical")
DEFAULT_FIT_STRUCTURE = "factored"


def calibrate(observations: Sequence[StepObservation], runs: Sequence[RunObservation] = (), *,
              base_client_factory: Callable = default_client, pooled: bool = True,
              corrections: bool = True, hierarchical: bool = True, structure: str | None = None) -> Calibration:
    """Fit efficiencies per (device, engine family) with priors, plus the pooled fallbacks, and a
    step correction per measured configuration (on top of its fitted efficiency).

    Pooled entries (``"*"`` = any): ``("*", "current")`` — one fit over the current engines
    (:data:`CURRENT_ENGINE_FAMILIES`: vLLM, SGLang, TensorRT-LLM 1.x), the default of a client or
    measurement that names no engine; ``("*", engine)`` per family, ``(device, "*")`` per device
    and ``(device, "current")``. With ``hierarchical`` each of these, and each (device, engine)
    fit, is pulled towards its parent (the family's pooled fit, else the current-engine fit) by a
    prior of :data:`HIERARCHY_PRIOR_WEIGHT` per log unit, so parameters its own rows cannot
    identify take the parent's value instead of the roofline default.

    ``structure`` (default :data:`DEFAULT_FIT_STRUCTURE`): ``"factored"`` replaces all of the
    above by one joint fit of root, device, engine, (device, engine) and per-publisher terms
    (:func:`fit_factored`; the publisher terms are fitted but not stored), which
    writes every (device, engine) of the fitted devices and engines and the same pooled keys;
    ``"hierarchical"`` is the per-pair fit described above. ``pooled=False`` or
    ``hierarchical=False`` select the per-pair fit (they describe its variants)."""
    from .calibration_store import CURRENT_ENGINE_FAMILIES, POOLED_ENGINE
    structure = structure or DEFAULT_FIT_STRUCTURE
    if structure not in FIT_STRUCTURES:
        raise CalibrationError(f"structure: {structure!r} is not one of {', '.join(FIT_STRUCTURES)}")
    cal = Calibration()
    if structure == "factored" and pooled and hierarchical and (observations or runs):
        ffit = fit_factored(observations, runs, base_client_factory)
        cal.efficiencies.update(efficiency_entries(ffit))
        cal.terms = ffit.terms_table()
        if corrections:
            _fit_corrections(cal, observations, base_client_factory)
        return cal
    kw = dict(prior_weight=HIERARCHY_PRIOR_WEIGHT, tau_prior_weight=0.05) if hierarchical else {}
    top = None
    if pooled:
        cur_o = [o for o in observations if o.engine in CURRENT_ENGINE_FAMILIES]
        cur_r = [r for r in runs if r.engine in CURRENT_ENGINE_FAMILIES]
        kw["equal_model_weights"] = True
        if cur_o or cur_r:
            top = fit_efficiency(cur_o, base_client_factory, runs=cur_r, group_by=None, equal_model_weights=True)
            cal.efficiencies[("*", POOLED_ENGINE)] = top
        else:  # no current engine measured: pool everything
            top = fit_efficiency(observations, base_client_factory, runs=runs, group_by=None,
                                 equal_model_weights=True)
        parent = (lambda key: top) if hierarchical else None
        for k, v in fit_efficiency(observations, base_client_factory, runs=runs, group_by=("engine",),
                                   prior=parent, **kw).items():
            cal.efficiencies.setdefault(k, v)
        for k, v in fit_efficiency(observations, base_client_factory, runs=runs, group_by=("device",),
                                   prior=parent, **kw).items():
            cal.efficiencies.setdefault(k, v)
        if cur_o or cur_r:
            for (dev, _), v in fit_efficiency(cur_o, base_client_factory, runs=cur_r, group_by=("device",),
                                              prior=parent, **kw).items():
                cal.efficiencies.setdefault((dev, POOLED_ENGINE), v)
        if ("*", "*") not in cal.efficiencies and top is not None:
            cal.efficiencies[("*", "*")] = top

    def family_prior(key):
        return cal.efficiencies.get(("*", key[1])) or top
    kw.pop("equal_model_weights", None)
    main = fit_efficiency(observations, base_client_factory, runs=runs,
                          prior=family_prior if (hierarchical and pooled) else None, **(kw if pooled else {}))
    for k, v in main.items():
        cal.efficiencies[k] = v
    if corrections:
        _fit_corrections(cal, observations, base_client_factory)
    return cal


def _fit_corrections(cal: Calibration, observations, base_client_factory) -> None:
    """A step correction per measured configuration, over its fitted efficiency."""
    by_key: dict[str, list[StepObservation]] = {}
    for o in observations:
        by_key.setdefault(o.client_key, []).append(o)
    for key, obs in by_key.items():
        o0 = obs[0]
        eff, used = cal.efficiency_for(o0.device, o0.engine)
        cl = with_efficiency(base_client_factory(o0), eff)
        cal.corrections[key] = fit_step_correction(
            obs, cl, source=f"fit_step_correction on {len(obs)} steps ({', '.join(o.id for o in obs[:8])}"
                             f"{', ...' if len(obs) > 8 else ''}) over efficiency {used}")

# ============================================================================ factorised fit
# A factorised efficiency fit that transfers to a publisher it has not seen.
#
# Per (device, engine) fits with a prior to a parent carry one publisher's setup (its model family,
# its benchmark client, its engine flags) into every prediction for that pair. Here every fitted
# parameter is one sum over all rows, fitted jointly (in the parameter's own scale: log η for the
# efficiencies, ms or µs for the overheads)::
#
#     x(device, engine, publisher) = μ + device term + engine term + pair term + publisher term
#
# with ridge priors (PRIOR_SD) pulling every term but μ towards 0 (the pair term harder than the device and
# engine terms, so a pair is additive unless several rows insist). The publisher term is a random
# effect: it is fitted, so one publisher's setup offset does not leak into the device and engine
# terms, but it is **not** stored: a new publisher gets ``μ + device + engine + pair``. A pair
# without rows gets ``μ + device + engine``, i.e. what is known about both.
#
# Each residual is the log ratio predicted/measured of one row (steps and whole runs, re-costed
# exactly as :func:`mistfast.calibration.fit_efficiency` does), robust (soft L1 at
# ``ROBUST_SCALE``) and weighted so that every (publisher, device, engine, model) key has the same
# total weight (one measurement with a scatter of KEY_SCATTER): a 1,000-row sweep of one model
# counts like one configuration, not like 1,000 independent facts, so the priors on the terms
# decide what a few configurations cannot.
#
# The Jacobian is exact in structure: a cell's residuals depend only on its six parameter values,
# so one forward difference per parameter and cell (7 re-costings of all rows per iteration) gives
# the derivatives of every term by the chain rule.
FACTOR_PARAMS = ("compute", "memory", "prefill", "op_overhead_us", "step_overhead_ms", "ttft_overhead_ms")
FACTOR_LOG_PARAMS = ("compute", "memory", "prefill")           # fitted as log η (η ≤ 1 by a smooth cap)
# prior standard deviation of each kind of term, in log units for η (the overhead terms in UNITs of
# their own: 10 µs, 3 ms, 30 ms); the ridge weight of a term is 1/sd. The root μ has a weak prior
# (ROOT_WEIGHT) towards the roofline default instead. Data: every (publisher, device, engine,
# model) key is one configuration measured with a scatter of KEY_SCATTER (log units), whatever
# its row count.
FACTOR_UNIT = {"compute": 1.0, "memory": 1.0, "prefill": 1.0,
        "op_overhead_us": 10.0, "step_overhead_ms": 3.0, "ttft_overhead_ms": 30.0}
PRIOR_SD = {"device": 0.3, "engine": 0.3, "pair": 0.15, "publisher": 0.2}
ROOT_WEIGHT = 0.02
KEY_SCATTER = 0.2
FACTOR_ETA_MIN = 0.05
FACTOR_SMOOTH = 0.01          # width of the smooth cap η ≤ 1 (log units) and of the floor at 0 (× FACTOR_UNIT)
FACTOR_MEMORY_FLOOR = 0.5     # one-sided penalty on η_m below this (as in fit_efficiency)
FACTOR_FLOOR_WEIGHT = 1.0
FACTOR_FD_STEP = 1e-6


def factor_value(p: str, x):
    """Parameter value from its fitted coordinate: η = exp(min(x, 0)) smoothly (≥ FACTOR_ETA_MIN), an
    overhead = max(x, 0) smoothly (in its own unit)."""
    x = np.asarray(x, dtype=float)
    if p in FACTOR_LOG_PARAMS:
        return np.maximum(np.exp(-FACTOR_SMOOTH * np.logaddexp(0.0, -x / FACTOR_SMOOTH)), FACTOR_ETA_MIN)
    s = FACTOR_SMOOTH * FACTOR_UNIT[p]
    return s * np.logaddexp(0.0, x / s)


def factor_coordinate(p: str, v: float) -> float:
    """Inverse of :func:`factor_value` away from the caps (start values and prior centres)."""
    if p in FACTOR_LOG_PARAMS:
        return math.log(min(max(v, FACTOR_ETA_MIN), 1.0 - 1e-3))
    s = FACTOR_SMOOTH * FACTOR_UNIT[p]
    v = max(float(v), 1e-3 * s)
    return v + s * math.log(-math.expm1(-v / s))


def _soft_l1_residual(r):
    """Signed square root of the soft-L1 loss (its square is 2c²(√(1+(r/c)²) − 1)) and its slope."""
    c = ROBUST_SCALE
    q = np.sqrt(1.0 + (r / c) ** 2)
    g = np.sign(r) * np.sqrt(2.0 * c * c * (q - 1.0))
    with np.errstate(invalid="ignore", divide="ignore"):
        slope = np.where(np.abs(r) > 1e-12, r / np.where(g == 0, 1.0, g) / q, 1.0)
    return g, slope


@dataclass
class _Cell:
    """The rows of one (device, engine, publisher)."""
    device: str
    engine: str
    publisher: str
    obs: list = field(default_factory=list)
    runs: list = field(default_factory=list)

    def build(self, factory):
        self.steps = None
        if self.obs:
            self.steps = StepSet()
            for i, o in enumerate(self.obs):
                self.steps.add(factory(o), o.prefill, o.decode, owner=i)
            self.steps.build()
        self.meas = np.log([o.time_s for o in self.obs]) if self.obs else np.zeros(0)
        self.run_meas = np.log([r.measured for r in self.runs]) if self.runs else np.zeros(0)
        self.run_steps = None
        if self.runs:
            prepare_runs(self.runs)
            self.run_steps = _run_stepset(self.runs)
            anchors = {}
            for j, r in enumerate(self.runs):
                e = r.client.efficiency
                anchors.setdefault((e.compute, e.memory, e.op_overhead_us, e.network, e.step_overhead_ms,
                                    e.prefill), []).append(j)
            self.S0 = np.zeros(len(self.runs))
            for key, js in anchors.items():
                tot = self.run_steps.totals(len(self.runs), *key)
                self.S0[js] = tot[js]
            self.m0 = np.array([r.ref_value for r in self.runs])
            self.rate_like = np.array([bool(r.rate_like) for r in self.runs])
            self.ttft_rows = np.array([1.0 if r.prefill_steps else 0.0 for r in self.runs])
        return self

    @property
    def n(self) -> int:
        return len(self.obs) + len(self.runs)

    def log_ratio(self, x: np.ndarray) -> np.ndarray:
        """log(predicted / measured) of every row at coordinates ``x`` (in FACTOR_PARAMS order)."""
        v = {p: float(factor_value(p, xi)) for p, xi in zip(FACTOR_PARAMS, x)}
        out = []
        if self.obs:
            t = self.steps.times(v["compute"], v["memory"], v["op_overhead_us"], 1.0, v["step_overhead_ms"],
                                 v["prefill"])
            out.append(np.log(t) - self.meas)
        if self.runs:
            S = self.run_steps.totals(len(self.runs), v["compute"], v["memory"], v["op_overhead_us"], 1.0,
                                      v["step_overhead_ms"], v["prefill"])
            ratio = np.where(self.rate_like, self.S0 / S, S / self.S0)
            pred = self.m0 * ratio + v["ttft_overhead_ms"] * self.ttft_rows
            out.append(np.log(np.maximum(pred, 1e-300)) - self.run_meas)
        return np.concatenate(out) if out else np.zeros(0)


def publisher_of(o) -> str:
    """The publisher (leave-one-source-out unit) of an observation: its ``source`` when set, else
    the first field of its measurement group (validate's groups start with the source)."""
    s = getattr(o, "source", "") or ""
    if s:
        return s
    return (getattr(o, "group", "") or "").split("|")[0].strip()


@dataclass
class FactoredFit:
    """Fitted coordinates of every term (FACTOR_PARAMS order) and the cells they were fitted on."""
    root: np.ndarray
    device: dict
    engine: dict
    pair: dict
    publisher: dict
    cells: list
    success: bool = True
    message: str = ""

    def coordinates(self, device: str = "*", engine: str = "*", publisher: str | None = None) -> np.ndarray:
        """μ + device + engine (+ pair) (+ publisher, only when asked: a new publisher gets none).
        ``engine = "current"``: the mean of the current engines' terms."""
        x = self.root.copy()
        if device != "*":
            x = x + self.device.get(device, 0.0)
        if engine == POOLED_ENGINE:
            cur = [self.engine[e] for e in CURRENT_ENGINE_FAMILIES if e in self.engine]
            if cur:
                x = x + np.mean(cur, axis=0)
        elif engine != "*":
            x = x + self.engine.get(engine, 0.0)
            if device != "*":
                x = x + self.pair.get((device, engine), 0.0)
        if publisher is not None:
            x = x + self.publisher.get(publisher, 0.0)
        return x

    def efficiency(self, device: str = "*", engine: str = "*") -> dict:
        x = self.coordinates(device, engine)
        return {p: float(factor_value(p, xi)) for p, xi in zip(FACTOR_PARAMS, x)}

    def terms_table(self) -> dict:
        """The fitted terms as stored in ``[efficiency_terms]``: η terms as factors exp(term), the
        overhead terms additive in their unit (before the floor at 0)."""
        def row(x):
            return {p: (float(np.exp(xi)) if p in FACTOR_LOG_PARAMS else float(xi)) for p, xi in zip(FACTOR_PARAMS, x)}
        return {"root": {p: float(factor_value(p, xi)) for p, xi in zip(FACTOR_PARAMS, self.root)},
                "device": {d: row(x) for d, x in sorted(self.device.items())},
                "engine": {e: row(x) for e, x in sorted(self.engine.items())},
                "pair": {f"{d}|{e}": row(x) for (d, e), x in sorted(self.pair.items())},
                "publisher": {s: row(x) for s, x in sorted(self.publisher.items())}}


def _cell_weights(cell: _Cell) -> np.ndarray:
    """Every (publisher, device, engine, model) key weighs as one measurement of scatter
    KEY_SCATTER (total squared weight 1/KEY_SCATTER²), whatever its row count."""
    models = [o.model for o in cell.obs] + [r.point.client.model.name for r in cell.runs]
    counts: dict[str, int] = {}
    for m in models:
        counts[m] = counts.get(m, 0) + 1
    return np.array([1.0 / (KEY_SCATTER * math.sqrt(counts[m])) for m in models])


def fit_factored(observations: Sequence, runs: Sequence = (), factory: Callable | None = None, *,
                 prior_sd: Mapping[str, float] | None = None, max_nfev: int = 60) -> FactoredFit:
    """Joint fit of root, device, engine, (device, engine) and publisher terms of every parameter
    in FACTOR_PARAMS over all step and run observations (see the module docstring). ``prior_sd``
    overrides entries of :data:`PRIOR_SD` (a huge value leaves a term free, a tiny one removes
    it)."""
    return fit_cells(build_cells(observations, runs, factory), prior_sd=prior_sd, max_nfev=max_nfev)


def build_cells(observations: Sequence, runs: Sequence = (), factory: Callable | None = None) -> list:
    """The rows grouped by (device, engine, publisher), each with its re-costing step sets."""
    factory = factory or default_client
    cells: dict[tuple, _Cell] = {}
    for o in observations:
        k = (o.device, o.engine, publisher_of(o))
        cells.setdefault(k, _Cell(*k)).obs.append(o)
    for r in runs:
        k = (r.device, r.engine, publisher_of(r))
        cells.setdefault(k, _Cell(*k)).runs.append(r)
    return [c.build(factory) for c in cells.values() if c.n]


def fit_cells(cell_list: Sequence, *, prior_sd: Mapping[str, float] | None = None,
              max_nfev: int = 60) -> FactoredFit:
    """:func:`fit_factored` on cells from :func:`build_cells`."""
    from scipy.optimize import least_squares
    sd = dict(PRIOR_SD, **(prior_sd or {}))
    lam = {k: 1.0 / v for k, v in sd.items()}
    cell_list = list(cell_list)
    P = len(FACTOR_PARAMS)
    devices = sorted({c.device for c in cell_list})
    engines = sorted({c.engine for c in cell_list})
    pairs = sorted({(c.device, c.engine) for c in cell_list})
    pubs = sorted({c.publisher for c in cell_list})
    # coordinate layout: blocks of P (one per term), root first
    blocks = [("root", None)] + [("device", d) for d in devices] + [("engine", e) for e in engines] + \
        [("pair", pe) for pe in pairs] + [("publisher", s) for s in pubs]
    at = {b: i * P for i, b in enumerate(blocks)}
    n_x = len(blocks) * P

    def contributing(c: _Cell) -> list[int]:
        return [at[("root", None)], at[("device", c.device)], at[("engine", c.engine)],
                at[("pair", (c.device, c.engine))], at[("publisher", c.publisher)]]
    contrib = [contributing(c) for c in cell_list]
    weights = [_cell_weights(c) for c in cell_list]
    offsets = np.cumsum([0] + [c.n for c in cell_list])
    n_data = int(offsets[-1])
    root_at = np.array([factor_coordinate(p, DEFAULT_EFFICIENCY.get(p, 1.0)) for p in FACTOR_PARAMS])
    root_w = np.array([ROOT_WEIGHT / FACTOR_UNIT[p] for p in FACTOR_PARAMS])
    ridge_rows = [(b, lam[b[0]]) for b in blocks[1:]]
    floor_pairs = pairs if "memory" in FACTOR_PARAMS else []
    mem = FACTOR_PARAMS.index("memory")
    n_res = n_data + P + len(ridge_rows) * P + len(floor_pairs)

    def cell_x(x, blocks_at):
        return sum(x[b:b + P] for b in blocks_at)

    def residuals(x):
        out = np.empty(n_res)
        for c, bl, w, a, b in zip(cell_list, contrib, weights, offsets[:-1], offsets[1:]):
            out[a:b] = w * _soft_l1_residual(c.log_ratio(cell_x(x, bl)))[0]
        i = n_data
        out[i:i + P] = root_w * (x[0:P] - root_at)
        i += P
        for blk, lw in ridge_rows:
            out[i:i + P] = lw / np.array([FACTOR_UNIT[p] for p in FACTOR_PARAMS]) * x[at[blk]:at[blk] + P]
            i += P
        for d, e in floor_pairs:
            xm = x[at[("root", None)] + mem] + x[at[("device", d)] + mem] + x[at[("engine", e)] + mem] + \
                x[at[("pair", (d, e))] + mem]
            out[i] = FACTOR_FLOOR_WEIGHT * max(0.0, math.log(FACTOR_MEMORY_FLOOR) - xm)
            i += 1
        return out

    def jacobian(x):
        J = np.zeros((n_res, n_x))
        for c, bl, w, a, b in zip(cell_list, contrib, weights, offsets[:-1], offsets[1:]):
            xc = cell_x(x, bl)
            r0 = c.log_ratio(xc)
            _, slope = _soft_l1_residual(r0)
            dc = np.empty((c.n, P))
            for p in range(P):
                xp = xc.copy()
                xp[p] += FACTOR_FD_STEP
                dc[:, p] = (c.log_ratio(xp) - r0) / FACTOR_FD_STEP
            dc *= (w * slope)[:, None]
            for blk in bl:
                J[a:b, blk:blk + P] += dc
        i = n_data
        J[i:i + P, 0:P] = np.diag(root_w)
        i += P
        for blk, lw in ridge_rows:
            J[i:i + P, at[blk]:at[blk] + P] = np.diag(lw / np.array([FACTOR_UNIT[p] for p in FACTOR_PARAMS]))
            i += P
        for d, e in floor_pairs:
            xm = sum(x[at[k] + mem] for k in (("root", None), ("device", d), ("engine", e), ("pair", (d, e))))
            if xm < math.log(FACTOR_MEMORY_FLOOR):
                for k in (("root", None), ("device", d), ("engine", e), ("pair", (d, e))):
                    J[i, at[k] + mem] = -FACTOR_FLOOR_WEIGHT
            i += 1
        return J

    x0 = np.zeros(n_x)
    start = dict(DEFAULT_EFFICIENCY)
    start.update({"op_overhead_us": 0.5, "step_overhead_ms": 0.1, "ttft_overhead_ms": 1.0, "prefill": 0.95})
    x0[0:P] = [factor_coordinate(p, start[p]) for p in FACTOR_PARAMS]
    sol = least_squares(residuals, x0, jac=jacobian, method="trf", x_scale="jac", xtol=1e-8, ftol=1e-10,
                        gtol=1e-10, max_nfev=max_nfev)
    x = sol.x

    def block(k):
        return x[at[k]:at[k] + P].copy()
    return FactoredFit(root=block(("root", None)), device={d: block(("device", d)) for d in devices},
                       engine={e: block(("engine", e)) for e in engines},
                       pair={pe: block(("pair", pe)) for pe in pairs},
                       publisher={s: block(("publisher", s)) for s in pubs}, cells=cell_list,
                       success=bool(sol.success), message=str(sol.message))


def efficiency_entries(fit: FactoredFit) -> dict:
    """``Calibration.efficiencies`` entries (EfficiencyFit) of a factorised fit: every (device,
    engine) of the fitted devices × engines (pairs without rows at device + engine terms), (*,
    engine), (device, *), (device, current), (*, current) and (*, *). Errors are those of the
    stored values (no publisher term) on the entry's own rows."""
    devices, engines = sorted(fit.device), sorted(fit.engine)
    keys = [(d, e) for d in devices for e in engines] + [("*", e) for e in engines] + \
        [(d, "*") for d in devices] + [(d, POOLED_ENGINE) for d in devices] + [("*", POOLED_ENGINE), ("*", "*")]

    def covers(key, c) -> bool:
        d, e = key
        if d != "*" and d != c.device:
            return False
        if e == POOLED_ENGINE:
            return c.engine in CURRENT_ENGINE_FAMILIES
        return e == "*" or e == c.engine

    out = {}
    for key in keys:
        v = fit.efficiency(*key)
        own = [c for c in fit.cells if covers(key, c)]
        errs = []
        if key[0] != "*" and key[1] not in ("*", POOLED_ENGINE):
            x = fit.coordinates(*key)
            errs = [np.abs(np.expm1(c.log_ratio(x))) for c in own]
        err = np.concatenate(errs) if errs else np.array([np.nan])
        out[key] = EfficiencyFit(
            compute=v["compute"], memory=v["memory"], op_overhead_us=v["op_overhead_us"], network=1.0,
            step_overhead_ms=v["step_overhead_ms"], prefill=v["prefill"], ttft_overhead_ms=v["ttft_overhead_ms"],
            n_steps=sum(len(c.obs) for c in own), n_runs=sum(len(c.runs) for c in own), params=FACTOR_PARAMS,
            rows=tuple(o.id for c in own for o in c.obs + c.runs) if key[0] != "*" and key[1] != "*" else (),
            median_abs_rel_err=float(np.median(err)) if np.isfinite(err).any() else float("nan"),
            p90_abs_rel_err=float(np.percentile(err, 90)) if np.isfinite(err).any() else float("nan"),
            success=fit.success, message=fit.message)
    return out


def leave_one_publisher_out(cell_list: Sequence, *, prior_sd: Mapping[str, float] | None = None,
                            publishers: Sequence[str] | None = None, max_nfev: int = 60) -> dict:
    """Surrogate leave-one-publisher-out error of the factorised fit: for each publisher, fit on
    the other publishers' cells and re-cost the held-out rows at the stored (publisher-free)
    efficiency of their (device, engine). Returns {publisher: array of log ratios} (the re-costing
    is the fit's own approximation of a run, not a new simulation: for choosing priors, nested in
    the training sources)."""
    pubs = sorted({c.publisher for c in cell_list}) if publishers is None else list(publishers)
    out = {}
    for s in pubs:
        train = [c for c in cell_list if c.publisher != s]
        test = [c for c in cell_list if c.publisher == s]
        if not train or not test:
            continue
        fit = fit_cells(train, prior_sd=prior_sd, max_nfev=max_nfev)
        out[s] = np.concatenate([c.log_ratio(fit.coordinates(c.device, c.engine)) for c in test])
    return out
