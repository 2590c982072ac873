"""Stored calibrations and the names they are keyed by (no fitting here, so specs can read them).

* Free-text names -> catalog presets (:func:`resolve_model`, :func:`resolve_device`), precisions
  (:func:`parse_precision`, :func:`precision_key`) and engine families (:func:`engine_family`,
  :data:`KNOWN_ENGINE_FAMILIES`, :func:`check_engine`).
* ``data/calibration.toml`` (or any file of that format): :class:`Calibration`,
  :func:`load_calibration`, :func:`write_calibration_toml`, and the look-ups a client uses —
  :func:`calibrated_efficiency`, :func:`calibrated_step_correction`, :func:`client_calibration`.

The fitters live in :mod:`mistfast.calibration` (which re-exports everything here).
"""
from __future__ import annotations

import datetime as _dt
import functools
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

DEFAULT_EFFICIENCY = {"compute": 0.75, "memory": 0.75, "network": 1.0, "op_overhead_us": 0.0, "step_overhead_ms": 0.0,
                      "prefill": 1.0, "ttft_overhead_ms": 0.0, "first_wave_ms": 0.0, "seq_overhead_us": 0.0,
                      "collective_us": 5.0, "expert_compute": 1.0, "expert_fp8": 1.0,
                      "dense_fp8": 1.0}
# the efficiency fields a calibration fits and stores (EfficiencySpec names)
EFFICIENCY_FIELDS = ("compute", "memory", "network", "op_overhead_us", "step_overhead_ms", "prefill",
                     "ttft_overhead_ms", "first_wave_ms", "seq_overhead_us", "collective_us", "expert_compute",
                     "expert_fp8", "dense_fp8")


class CalibrationError(ValueError):
    pass


# ============================================================================ names
# Free-text names of the measurement tables -> catalog presets. First match wins.
MODEL_ALIASES: tuple[tuple[str, str], ...] = (
    (r"llama[-_ ]?3\.3[-_ ]?70b", "llama-3.3-70b"),
    (r"llama[-_ ]?3\.1[-_ ]?405b", "llama-3.1-405b"),
    (r"llama[-_ ]?3\.1[-_ ]?70b", "llama-3.1-70b"),
    (r"llama[-_ ]?3\.1[-_ ]?8b", "llama-3.1-8b"),
    (r"llama[-_ ]?2.*?70b", "llama-2-70b"),
    (r"llama[-_ ]?2.*?7b", "llama-2-7b"),
    (r"bloom[-_ ]?176b|^bloom$", "bloom-176b"),
    (r"qwen[-_ ]?3[-_ ]?32b", "qwen3-32b"),
    (r"mixtral[-_ ]?8x7b", "mixtral-8x7b"),
    (r"mistral[-_ ]?7b", "mistral-7b"),
    (r"deepseek[-_ ]?v3", "deepseek-v3"),
    (r"deepseek[-_ ]?r1(?![-_ ]?distill)", "deepseek-v3"),   # R1 = the V3 architecture (671B MoE, MLA)
)
DEVICE_ALIASES: tuple[tuple[str, str], ...] = (
    (r"^gb200", "GB200"), (r"^gb300", "GB300"), (r"^gh200", "GH200"),
    (r"^(nvidia[-_ ]?)?b200", "B200"), (r"^(nvidia[-_ ]?)?h200", "H200"),
    (r"^(nvidia[-_ ]?)?h100", "H100"), (r"^(nvidia[-_ ]?)?a100", "A100"),
    (r"^(amd[-_ ]?)?mi300x", "MI300X"), (r"^(amd[-_ ]?)?mi325x", "MI325X"),
    (r"^(amd[-_ ]?)?mi355x", "MI355X"), (r"^gaudi[-_ ]?3", "Gaudi3"), (r"^gaudi[-_ ]?2", "Gaudi2"),
)


def _catalog_name(kind: str, name: str) -> str | None:
    from .catalog import default_catalog
    cat = default_catalog()
    if cat.has(kind, name):
        return cat.get(kind, name)["name"]
    return None


def _resolve(kind: str, aliases, name: str) -> str | None:
    s = str(name).strip()
    hit = _catalog_name(kind, s)
    if hit:
        return hit
    low = s.lower()
    for pat, preset in aliases:
        if re.search(pat, low):
            return preset
    return None


def resolve_model(name: str) -> str | None:
    """Catalog model preset for a free-text model name (``Llama-2 LLaMA-70B`` -> ``llama-2-70b``),
    or None when no preset matches. Hugging Face ids and catalog spellings go through
    :func:`mistfast.modelnames.resolve_model_name` (the same rules as a scenario's ``model``), so
    every catalog model resolves; the free-text patterns above catch table spellings it does not."""
    from .modelnames import resolve_model_name
    try:
        return resolve_model_name(str(name)).model
    except KeyError:
        return _resolve("models", MODEL_ALIASES, name)


def resolve_device(name: str) -> str | None:
    """Catalog device preset for a free-text hardware name (``H100-SXM-80GB`` -> ``H100``)."""
    return _resolve("devices", DEVICE_ALIASES, name)


_DTYPES = ("fp32", "tf32", "bf16", "fp16", "fp8", "int8", "fp6", "fp4", "int4", "mxfp4", "nvfp4")
FP4_FAMILY = ("fp4", "mxfp4", "nvfp4")
# the parts of a precision key, in order; the two expert parts only when the experts have their own format
PRECISION_PARTS = ("weights", "compute", "kv", "activations", "experts", "experts_compute")


def parse_precision(text: Any) -> dict | None:
    """Precision dict (weights, compute, kv, activations) from a name or free text.

    Accepts a dtype name (``fp8``), the slash form ``weights/compute/kv/activations``
    (``fp4/fp4/fp8/bf16``), a dict, or table text such as ``FP8 (ModelOpt)`` and
    ``FP4 (nvidia/...-FP4)``. Assumptions for free text: an FP8 checkpoint also stores the KV cache
    in FP8 (ModelOpt default); an FP4 (NVFP4) checkpoint computes in FP4 and keeps an FP8 KV
    cache; activations stay 16-bit below 16-bit weights.
    """
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return {"weights": "bf16", "compute": "bf16", "kv": "bf16", "activations": "bf16"}
    if isinstance(text, Mapping):
        return dict(text)
    s = str(text).strip().lower()
    if not s:
        return {"weights": "bf16", "compute": "bf16", "kv": "bf16", "activations": "bf16"}
    if "/" in s and all(p in _DTYPES for p in s.split("/")) and len(s.split("/")) in (4, 6):
        return precision_dict(s)
    s = s.replace("float16", "fp16").replace("bfloat16", "bf16")
    m = re.search(r"\b(fp32|tf32|bf16|fp16|fp8|int8|fp6|fp4|nvfp4|mxfp4|int4)\b", s)
    if m is None:
        return None
    d = m.group(1)   # MXFP4 and NVFP4 stay apart: other scale bytes, other peaks (MI355X: no NVFP4)
    if d in ("fp16", "bf16", "fp32", "tf32"):
        return {"weights": d, "compute": d, "kv": d, "activations": d}
    kv = "fp8" if d in FP4_FAMILY + ("fp6",) else d
    compute = d
    if d == "int4":
        # INT4 checkpoints (AWQ, GPTQ) are weight-only: W4A16, dequantised in a 16-bit GEMM, the KV
        # cache in the model's 16-bit type (as modelnames.WEIGHT_ONLY_INT4 reads such names)
        compute, kv = "bf16", "bf16"
    kvm = KV_TEXT.search(s)
    if kvm:
        kv = kvm.group(1) or kvm.group(2)
    return {"weights": d, "compute": compute, "kv": kv, "activations": "bf16"}


# a KV-cache format stated in a precision text ("FP8 KV", "KV cache FP8", "BF16 KV cache")
KV_TEXT = re.compile(r"(fp8|int8|fp16|bf16|fp4)\s*kv|kv\s*(?:cache)?\s*(fp8|int8|fp16|bf16|fp4)")


def precision_key(prec: Any) -> str:
    """Canonical ``weights/compute/kv/activations`` string of a precision (name, text or dict),
    followed by ``/experts/experts_compute`` when the MoE experts have their own format
    (gpt-oss: ``bf16/bf16/bf16/bf16/mxfp4/fp8``)."""
    p = parse_precision(prec) if not isinstance(prec, Mapping) else dict(prec)
    if p is None:
        raise CalibrationError(f"precision {prec!r}: not recognised")
    full = {"weights": "bf16", "compute": "bf16", "kv": "bf16", "activations": "bf16"}
    if isinstance(prec, str) and prec in _DTYPES:  # same rule as PrecisionSpec for one name
        fp4 = prec in FP4_FAMILY and prec != "fp4"   # block-scaled FP4 names keep a 16-bit KV (PrecisionSpec)
        full = {"weights": prec, "compute": prec, "kv": "bf16" if fp4 else prec,
                "activations": "bf16" if prec in ("fp8", "int8", "fp6", "int4") + FP4_FAMILY else prec}
    else:
        full.update({k: v for k, v in p.items() if v is not None})
    key = "/".join(full[k] for k in PRECISION_PARTS[:4])
    experts = full.get("experts")
    if experts and (experts, full.get("experts_compute") or full["compute"]) != (full["weights"], full["compute"]):
        key += f"/{experts}/{full.get('experts_compute') or full['compute']}"
    return key


def precision_dict(key: str) -> dict:
    """The precision dict (PrecisionSpec fields) of a precision key (see precision_key)."""
    parts = key.split("/")
    if len(parts) not in (4, 6):
        raise CalibrationError(f"precision key {key!r}: expected weights/compute/kv/activations[/experts/experts_compute]")
    return dict(zip(PRECISION_PARTS, parts))


def _native_precision(model: str, model_text: str) -> dict:
    """The format the named checkpoint ships in: the name's own (data/model_names.toml or a
    quantisation tag), else the catalog's native_precision, else bf16 (as a precision dict)."""
    from .catalog import default_catalog
    from .modelnames import resolve_model_name
    try:
        named = resolve_model_name(model_text).precision
    except KeyError:
        named = None
    if named is None:
        named = default_catalog().get("models", model).get("native_precision", "bf16")
    if isinstance(named, Mapping):
        return dict(named)
    return {**parse_precision(named), **({"kv": "bf16"} if named in FP4_FAMILY else {})}


def _device_has_fp4(device: str) -> bool:
    from .catalog import default_catalog
    cat = default_catalog()
    return cat.has("devices", device) and any(f in (cat.get("devices", device).get("tflops") or {}) for f in FP4_FAMILY)


def row_precision(text: Any, model_text: str = "", device_text: str = "") -> dict | None:
    """Precision dict of a measurement row: its ``precision`` text, read together with its model
    (and device). A row that names an FP4 format for a MoE model means the *expert* weights are in
    that format (gpt-oss ships MXFP4 experts with BF16 attention, embeddings and router; NVIDIA's
    and AMD's FP4 DeepSeek-R1 quantise the MoE layers): the rest keeps the checkpoint's native
    format. On a device without FP4 tensor cores (Hopper, MI300X/MI325X) engines dequantise FP4
    experts in the GEMM and multiply at 16 bits (W4A16: Marlin / Triton MoE kernels), so the
    experts compute at the activation precision there. Other rows: :func:`parse_precision`."""
    p = parse_precision(text)
    if p is None or p.get("weights") not in FP4_FAMILY or not model_text:
        return p
    model = resolve_model(model_text)
    from .catalog import default_catalog
    cat = default_catalog()
    if model is None or not cat.has("models", model) or not (cat.get("models", model).get("num_experts") or 0):
        return p
    base = _native_precision(model, model_text)
    fmt = p["weights"]
    if fmt == "fp4":   # "FP4" without a family: the checkpoint's own expert format, else NVFP4
        fmt = base.get("experts") if base.get("experts") in FP4_FAMILY else "nvfp4"
    out = {k: base.get(k, "bf16") for k in PRECISION_PARTS[:4]}
    if out["weights"] in FP4_FAMILY:   # a whole-model FP4 name: the non-expert part stays 16-bit
        out.update(weights="bf16", compute="bf16")
    device = resolve_device(device_text) if device_text else None
    native_fp4 = device is None or _device_has_fp4(device)
    out["experts"] = fmt
    out["experts_compute"] = fmt if native_fp4 else out["activations"]
    if native_fp4 and base.get("experts") == fmt and base.get("experts_compute"):
        # the checkpoint's own expert format runs its own MMA: gpt-oss MXFP4 x MXFP8 at the FP8 rate
        # (data/models.toml); other FP4 rows (NVFP4 / MXFP4 DeepSeek-R1) quantise activations too (W4A4)
        out["experts_compute"] = base["experts_compute"]
    return out


def row_parallelism(notes: Any, tp: int, model: str = "") -> dict:
    """Expert parallelism and data-parallel attention a measurement row states in its notes
    (``ep 8``, ``moe ep=8``, ``dp_attention true``, ``--enable-dp-attention``), as client fields;
    {} when it states neither. A layout the client cannot take raises ValueError naming it."""
    t = "" if notes is None or (isinstance(notes, float) and math.isnan(notes)) else str(notes).lower()
    out: dict[str, Any] = {}
    m = re.search(r"\bep\s*[= ]\s*(\d+)", t)
    if m and int(m.group(1)) > 1:
        ep = int(m.group(1))
        if tp % ep:
            raise ValueError(f"notes give ep = {ep}, which does not divide tp = {tp}")
        out["ep"] = ep
    if re.search(r"dp_attention\s*[=:]?\s*true|enable[-_]dp[-_]attention|attention[-_ ]dp\b(?!\s*false)", t) and tp > 1:
        from .catalog import default_catalog
        cat = default_catalog()
        if model and cat.has("models", model) and (cat.get("models", model).get("num_experts") or 0):
            out["dp_attention"] = True
    return out


def engine_family(engine: Any, version: Any = "") -> str:
    """Engine family used to group efficiencies: ``trtllm-1`` (TensorRT-LLM 1.x, PyTorch backend),
    ``trtllm-0`` (0.x TensorRT engines), ``vllm``, ``sglang``, ``splitwise`` (splitwise-sim
    characterisation runs, engine not named), or a slug of the text."""
    e = "" if engine is None or (isinstance(engine, float) and math.isnan(engine)) else str(engine).strip().lower()
    v = "" if version is None or (isinstance(version, float) and math.isnan(version)) else str(version).strip().lower()
    if not e:
        return ""
    if re.fullmatch(r"[a-z0-9][a-z0-9.\-_]*", e) and ("-" in e or e in ("vllm", "sglang", "splitwise")) \
            and not e.startswith("tensorrt"):
        return e  # already a family name
    if "tensorrt" in e or "trt-llm" in e or "trtllm" in e:
        m = re.search(r"v?(\d+)\.\d", v) or re.search(r"v(\d+)\.\d", e)
        if m:
            major = m.group(1)
        else:
            major = "1" if ("trtllm-bench" in e or "pytorch" in e) else "0"
        return f"trtllm-{major}"
    for name in ("vllm", "sglang", "splitwise", "lmdeploy", "deepspeed", "tgi"):
        if name in e:
            return name
    return re.sub(r"[^a-z0-9]+", "-", e).strip("-")[:40] or "unknown"

def client_key(model: str, device: str, tp: int = 1, pp: int = 1, precision: Any = "bf16", engine: str = "") -> str:
    """Identity of one measured configuration (a step correction applies to exactly one)."""
    return f"{model}|{device}|tp{int(tp)}|pp{int(pp)}|{precision_key(precision)}|{engine}"

def _num(v, default=None):
    if v is None:
        return default
    if isinstance(v, str):
        v = v.strip()
        if not v:
            return default
        try:
            return float(v)
        except ValueError:
            return default
    if isinstance(v, float) and math.isnan(v):
        return default
    return float(v)

def with_efficiency(client, eff: Mapping[str, Any] | None, correction: Mapping | None = None,
                    source: str | None = None):
    """Copy of ``client`` (a ClientSpec) with efficiency fields (and optionally a step correction) replaced.
    The new values are validated against the client's own field types (specs.py imports this
    module, so it does not import specs)."""
    upd: dict[str, Any] = {}
    if eff:
        e = client.efficiency.model_dump()
        e.update({k: float(v) for k, v in eff.items() if k in EFFICIENCY_FIELDS})
        e["compute"] = min(max(e["compute"], 1e-6), 1.0)
        e["memory"] = min(max(e["memory"], 1e-6), 1.0)
        e["network"] = min(max(e["network"], 1e-6), 1.0)
        e["op_overhead_us"] = max(e["op_overhead_us"], 0.0)
        e["step_overhead_ms"] = max(e.get("step_overhead_ms", 0.0), 0.0)
        e["prefill"] = min(max(e.get("prefill", 1.0), 1e-6), 1.0)
        e["ttft_overhead_ms"] = max(e.get("ttft_overhead_ms", 0.0), 0.0)
        e["first_wave_ms"] = max(e.get("first_wave_ms", 0.0), 0.0)
        e["seq_overhead_us"] = max(e.get("seq_overhead_us", 0.0), 0.0)
        e["collective_us"] = max(e.get("collective_us", DEFAULT_EFFICIENCY["collective_us"]), 0.0)
        e["expert_compute"] = min(max(e.get("expert_compute", 1.0), 1e-6), 1.0)
        e["expert_fp8"] = min(max(e.get("expert_fp8", 1.0), 1e-6), 1.0)
        e["dense_fp8"] = min(max(e.get("dense_fp8", 1.0), 1e-6), 1.0)
        if source or eff.get("source"):
            e["source"] = str(source or eff.get("source"))
        upd["efficiency"] = _field_value(client, "efficiency", e)
    if correction is not None:
        upd["step_correction"] = _field_value(client, "step_correction", dict(correction))
    return client.model_copy(update=upd) if upd else client

def _field_value(model, name: str, value):
    """``value`` validated as field ``name`` of ``model``'s class."""
    from pydantic import TypeAdapter
    return TypeAdapter(type(model).model_fields[name].annotation).validate_python(value)


# ============================================================================ calibration set
@dataclass
class Calibration:
    """Fitted efficiencies per (device, engine) (``"*"`` = pooled) and step corrections per
    :func:`client_key`."""
    efficiencies: dict = field(default_factory=dict)
    corrections: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)
    terms: dict = field(default_factory=dict)   # factorised fit: its terms, for reading only ([efficiency_terms])

    def efficiency_for(self, device: str, engine: str) -> tuple[dict | None, str]:
        """(efficiency dict, key used): (device, engine), (*, engine), (device, current engines),
        (*, current engines), (device, *), (*, *); a row without engine asks for the current engines."""
        engine = engine or POOLED_ENGINE
        for key in dict.fromkeys(((device, engine), ("*", engine), (device, POOLED_ENGINE), ("*", POOLED_ENGINE),
                                  (device, "*"), ("*", "*"))):
            e = self.efficiencies.get(key)
            if e is not None:
                return _eff_dict(e), f"{key[0]}/{key[1]}"
        return None, "default"

    def client(self, base, device: str, engine: str, key: str | None = None) -> tuple[Any, str]:
        eff, used = self.efficiency_for(device, engine)
        corr = self.corrections.get(key) if key else None
        if eff is None and corr is None:
            return base, "default"
        c = with_efficiency(base, eff, corr, source=f"calibrated ({used})")
        return c, used + ("+correction" if corr is not None else "")


def _eff_dict(e) -> dict:
    if hasattr(e, "as_efficiency"):   # a fitted result (calibration.EfficiencyFit)
        return e.as_efficiency()
    return {k: float(e[k]) for k in EFFICIENCY_FIELDS if k in e}

# ============================================================================ TOML store
def calibration_path() -> Path:
    from .catalog import data_dir
    return data_dir() / "calibration.toml"


def _plain(v):
    """A value as the calibration file stores it: numpy scalars as Python numbers, floats to 6
    decimals (smaller ones to 6 significant digits), lists element by element, the rest as text."""
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        v = float(v)
        if not math.isfinite(v):
            return v
        return round(v, 6) if abs(v) >= 1e-4 or v == 0 else float(f"{v:.6g}")
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return str(v)


def write_calibration_toml(cal: Calibration, path: str | Path, *, header: str = "",
                           errors: Mapping[tuple, Mapping[str, Any]] | None = None) -> Path:
    """Write ``cal`` as TOML (tomli-w): ``[meta]``, ``[efficiency.DEVICE.ENGINE]`` entries with
    provenance (rows, date, split, errors: ``errors[(device, engine)]`` adds/overrides fields) and
    ``[step_correction."CLIENT-KEY"]`` tables, after ``header`` as comment lines."""
    import tomli_w
    meta = dict(cal.provenance)
    meta.setdefault("date", _dt.date.today().isoformat())
    efficiency: dict[str, dict] = {}
    for (dev, eng), fit in sorted(cal.efficiencies.items(), key=lambda kv: (kv[0][0] == "*", kv[0])):
        d = _eff_dict(fit)
        entry = {k: d.get(k, DEFAULT_EFFICIENCY[k]) for k in EFFICIENCY_FIELDS}
        if hasattr(fit, "as_efficiency"):
            entry.update({"n_step_rows": fit.n_steps, "n_run_rows": fit.n_runs, "train_rows": list(fit.rows),
                          "train_median_abs_rel_err": fit.median_abs_rel_err,
                          "train_p90_abs_rel_err": fit.p90_abs_rel_err, "date": meta["date"],
                          "split": meta.get("split", "")})
        else:
            entry.update({k: v for k, v in fit.items() if k not in EFFICIENCY_FIELDS})
        entry.update((errors or {}).get((dev, eng), {}))
        # an entry with no training rows of its own (a pooled or factorised pair) has no error
        # figure: the key is left out rather than written as nan
        efficiency.setdefault(dev, {})[eng] = {k: _plain(v) for k, v in entry.items()
                                               if not (isinstance(v, float) and math.isnan(v))}
    corrections = {key: {k: _plain(corr[k]) for k in ("tokens", "prefill", "decode", "attention_prefill",
                                                      "attention_decode", "source") if corr.get(k) is not None}
                   for key, corr in sorted(cal.corrections.items())}
    doc = {"meta": {k: _plain(v) for k, v in meta.items()}}
    if efficiency:
        doc["efficiency"] = efficiency
    if corrections:
        doc["step_correction"] = corrections
    if cal.terms:   # documentation of a factorised fit; clients read [efficiency] only
        doc["efficiency_terms"] = {kind: ({k: _plain(v) for k, v in tbl.items()} if kind == "root" else
                                          {name: {k: _plain(v) for k, v in row.items()} for name, row in tbl.items()})
                                   for kind, tbl in cal.terms.items()}
    comments = "".join(f"# {h}\n" if h else "#\n" for h in (header or "").splitlines())
    p = Path(path)
    p.write_text(comments + ("\n" if comments else "") + tomli_w.dumps(doc))
    return p


def load_calibration(path: str | Path | None = None) -> Calibration:
    """Read a calibration TOML (default ``data/calibration.toml``); missing file -> empty."""
    p = Path(path) if path is not None else calibration_path()
    if not p.exists():
        return Calibration()
    from .tomlcache import load_toml  # a parsed copy when the file is unchanged
    doc = load_toml(p)
    cal = Calibration(provenance=dict(doc.get("meta", {})))
    for dev, engines in doc.get("efficiency", {}).items():
        for eng, entry in engines.items():
            cal.efficiencies[(dev, eng)] = dict(entry)
    for key, entry in doc.get("step_correction", {}).items():
        cal.corrections[key] = dict(entry)
    cal.terms = dict(doc.get("efficiency_terms", {}))
    return cal


@functools.lru_cache(maxsize=4)
def _default_calibration(path: str) -> Calibration:
    return load_calibration(path)


# ============================================================================ engines
# Families the fitter and the catalog know; a calibration file may add more (its [efficiency] keys).
BUILTIN_ENGINE_FAMILIES = ("vllm", "sglang", "trtllm-1", "trtllm-0", "splitwise", "vidur", "lmdeploy", "deepspeed",
                           "tgi")
# The engines people run today: their pooled fit is the default of a client that names no engine
# in `mistfast validate`, and of `engine = "current"` on a client.
CURRENT_ENGINE_FAMILIES = ("vllm", "sglang", "trtllm-1")
POOLED_ENGINE = "current"
POOLED_ALIASES = ("current", "pooled", "auto", "default")
KNOWN_ENGINE_FAMILIES = BUILTIN_ENGINE_FAMILIES + (POOLED_ENGINE,)


def _family(engine: Any) -> str:
    fam = engine_family(engine)
    if fam == "trtllm-0" and not re.search(r"\d", str(engine)) and str(engine).strip().lower() in ("trtllm", "tensorrt-llm"):
        fam = "trtllm-1"  # a bare "TensorRT-LLM" means the current release
    if str(engine).strip().lower() in POOLED_ALIASES:
        fam = POOLED_ENGINE
    return fam


def known_engine_families(path: str | Path | None = None) -> tuple[str, ...]:
    """Built-in engine families plus every family named in the calibration file."""
    cal = _default_calibration(str(Path(path) if path is not None else calibration_path()))
    extra = sorted({e for (_, e) in cal.efficiencies if e != "*"} - set(KNOWN_ENGINE_FAMILIES))
    return KNOWN_ENGINE_FAMILIES + tuple(extra)


def check_engine(engine: Any, path: str | Path | None = None) -> str:
    """Engine family of ``engine`` (free text such as ``"vLLM 0.8"`` or ``"TensorRT-LLM"``), or a
    CalibrationError naming the known families (an unknown name must not silently fall back)."""
    fam = _family(engine)
    known = known_engine_families(path)
    if fam not in known:
        raise CalibrationError(f"engine {engine!r} is not a known engine family; known: {', '.join(known)} "
                               f"(or add [efficiency.DEVICE.{fam}] to a calibration file)")
    return fam


def calibrated_efficiency(device: str, engine: str | None = None, *, path: str | Path | None = None) -> dict | None:
    """Fitted efficiency of ``device`` (a preset name or free text) for ``engine`` (a family name
    such as ``trtllm-1`` or free text; ``"current"`` = the pooled fit of current engines; None =
    the device's entry pooled over engines) from ``data/calibration.toml`` (or ``path``), as a
    dict for ``ClientSpec.efficiency`` (compute, memory, network, op_overhead_us, step_overhead_ms,
    source), or None
    when nothing was fitted for it.

    Fallbacks, in order: (device, engine), (all devices, engine), (device, current engines), (all
    devices, current engines), (device, all engines)."""
    dev = resolve_device(device) or device
    pth = Path(path) if path is not None else calibration_path()
    cal = _default_calibration(str(pth))
    candidates = [(dev, "*")]
    if engine:
        fam = _family(engine)
        candidates = [(dev, fam), ("*", fam), (dev, POOLED_ENGINE), ("*", POOLED_ENGINE), (dev, "*"), ("*", "*")]
    for key in dict.fromkeys(candidates):
        e = cal.efficiencies.get(key)
        if e is not None:
            out = _eff_dict(e)
            when = e.get("date", cal.provenance.get("date", "")) if isinstance(e, dict) else ""
            out["source"] = f"{pth.name} [{key[0]}.{key[1]}] fitted {when}".strip()
            return out
    return None


def calibrated_step_correction(model: str, device: str, tp: int = 1, pp: int = 1, precision: Any = "bf16",
                               engine: str = "", *, path: str | Path | None = None) -> dict | None:
    """Stored step correction of one exact configuration, or None."""
    cal = _default_calibration(str(Path(path) if path is not None else calibration_path()))
    key = client_key(resolve_model(model) or model, resolve_device(device) or device, tp, pp, precision,
                     _family(engine) if engine else "")
    c = cal.corrections.get(key)
    return dict(c) if c is not None else None


def _preset_name(v: Any) -> str | None:
    if isinstance(v, str):
        return v
    if isinstance(v, Mapping):
        return v.get("preset") or v.get("name")
    return getattr(v, "name", None)


def _pooled_default(data: Mapping[str, Any]) -> dict:
    """A client that names no engine and no calibration file and sets no ``efficiency`` runs at
    the pooled fit of the current engines (CURRENT_ENGINE_FAMILIES) over all devices, the
    ``[efficiency."*".current]`` entry, not at the textbook 0.75; no step correction (that belongs
    to one engine). Pooled over devices on purpose: one efficiency set for every device keeps
    device comparisons to their datasheets (a per-device fit can make a strictly stronger device
    slower, tests/test_issue11.py); ``engine = "current"`` takes the device's own entry.
    GenZ-compat clients keep MODEL.md's 0.75: their conventions are another tool's, reproduced as
    published."""
    if "efficiency" in data or data.get("reference") == "genz":
        return {}
    eff = calibrated_efficiency("*", POOLED_ENGINE)
    return {"efficiency": eff} if eff is not None else {}


def client_calibration(data: Mapping[str, Any]) -> dict:
    """Fields a client dict gets from its calibration (``ClientSpec`` calls this before validation).

    No engine, no calibration file and no ``efficiency``: the pooled fit of the current engines
    (:func:`_pooled_default`).
    ``engine`` selects the (device, engine family) efficiencies; ``calibration = "path.toml"``
    reads another calibration file than ``data/calibration.toml`` (and, with no engine, its
    pooled entries). An explicit ``efficiency`` or ``step_correction`` is never replaced. An
    unknown engine name raises a CalibrationError listing the known families. A stored step
    correction of exactly this (model, device, tp, pp, precision, engine) is applied too."""
    engine, path = data.get("engine"), data.get("calibration")
    if not engine and not path:
        return _pooled_default(data)
    if path is not None:
        p = Path(str(path)).expanduser()
        if not p.exists():
            raise CalibrationError(f"calibration file {str(path)!r} not found")
        path = p
    out: dict[str, Any] = {}
    fam = check_engine(engine, path) if engine else ""
    dev = _preset_name(data.get("device"))
    if "efficiency" not in data and dev:
        eff = calibrated_efficiency(dev, fam or None, path=path)
        if eff is not None:
            # the engine family's kernel-launch defaults (mistfast.launch_time), unless the file has its own
            from .launch_time import engine_launch_efficiency
            out["efficiency"] = {**engine_launch_efficiency(fam), **eff}
    model = _preset_name(data.get("model"))
    if "step_correction" not in data and model and dev:
        prec = data.get("precision", "bf16")
        if not isinstance(prec, (str, Mapping)):
            prec = getattr(prec, "model_dump", lambda: "bf16")()
        try:
            corr = calibrated_step_correction(model, dev, int(data.get("tp", 1)), int(data.get("pp", 1)), prec,
                                              fam, path=path)
        except (CalibrationError, TypeError, ValueError):
            corr = None   # the client's own validation reports bad fields
        if corr is not None:
            out["step_correction"] = corr
    return out
