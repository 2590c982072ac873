"""Model name resolution: Hugging Face ids and common spellings -> catalog model + precision.

Order of the rules (first hit wins):

1. a catalog key (``llama-3.1-70b``), case-insensitive;
2. an explicit Hugging Face id of ``data/model_names.toml`` (``deepseek-ai/DeepSeek-R1`` ->
   ``deepseek-v3`` in fp8), each with the source that says which architecture and weight format
   the checkpoint has;
3. a spelling: the organisation is dropped, then suffixes that do not change the architecture
   (``-Instruct``, ``-it``, ``-hf``, a release date such as ``-2507``) and quantisation tags
   (``-FP8``, ``-FP4``, ``-AWQ``, ...) are peeled off, and what is left is matched against the
   catalog keys and each model's ``aliases``. A quantisation tag sets the precision
   (``nvidia/Llama-3.1-70B-Instruct-FP8`` -> ``llama-3.1-70b`` + fp8).

Nothing found -> an error naming the closest known names (difflib).

The precision found is only a default: a client that sets ``precision`` keeps it. A model whose
checkpoint ships in one format (gpt-oss: MXFP4 experts) has ``native_precision`` in the catalog,
used when the name carries no tag.
"""
from __future__ import annotations

import difflib
import functools
import re
from dataclasses import dataclass
from typing import Any

from .catalog import Catalog, data_dir, default_catalog

# quantisation tags in checkpoint names -> precision. Weight-only formats (AWQ, GPTQ, W4A16)
# multiply at 16 bits; "FP4" in NVIDIA ModelOpt checkpoint names is NVFP4.
WEIGHT_ONLY_INT4 = {"weights": "int4", "compute": "bf16", "kv": "bf16", "activations": "bf16"}
WEIGHT_ONLY_INT8 = {"weights": "int8", "compute": "bf16", "kv": "bf16", "activations": "bf16"}
QUANT_TAGS: dict[str, Any] = {
    "fp8": "fp8", "fp8-dynamic": "fp8", "fp8-static": "fp8", "fp8-block": "fp8", "w8a8-fp8": "fp8", "fp8-kv": "fp8",
    "nvfp4": "nvfp4", "fp4": "nvfp4", "mxfp4": "mxfp4",
    "awq": WEIGHT_ONLY_INT4, "gptq": WEIGHT_ONLY_INT4, "int4": WEIGHT_ONLY_INT4, "w4a16": WEIGHT_ONLY_INT4,
    "gptq-int4": WEIGHT_ONLY_INT4, "awq-int4": WEIGHT_ONLY_INT4, "bnb-4bit": WEIGHT_ONLY_INT4,
    "gptq-int8": WEIGHT_ONLY_INT8, "w8a16": WEIGHT_ONLY_INT8,
    "int8": "int8", "w8a8": "int8", "bf16": "bf16", "fp16": "fp16",
}
# suffixes that name a fine-tune or packaging of the same architecture
PLAIN_SUFFIXES = ("instruct", "chat", "it", "hf", "base", "dynamic", "quantized", "thinking", "reasoning")
DATE_SUFFIX = re.compile(r"-(\d{4}|\d{6}|\d{8})$")
VERSION_SUFFIX = re.compile(r"-v\d+(\.\d+)*$")
SEPARATORS = ("-", ".", "_")


@dataclass(frozen=True)
class ResolvedModel:
    """What a name means: the catalog key, the precision it implies (None: none) and why."""
    model: str
    precision: Any
    rule: str


@functools.lru_cache(maxsize=1)
def explicit_names() -> dict[str, dict[str, Any]]:
    """Hugging Face ids with a known architecture and format, lower-cased (data/model_names.toml)."""
    path = data_dir() / "model_names.toml"
    if not path.exists():
        return {}
    from .tomlcache import load_toml  # a parsed copy when the file is unchanged
    doc = load_toml(path)
    return {k.lower(): v for k, v in doc.get("names", {}).items()}


def _strip_tags(name: str) -> tuple[str, Any]:
    """Peel quantisation tags, fine-tune suffixes and release dates off a lower-case name."""
    precision = None
    changed = True
    while changed:
        changed = False
        for tag in sorted(QUANT_TAGS, key=len, reverse=True):
            if any(name.endswith(sep + tag) for sep in SEPARATORS):
                name = name[: -len(tag) - 1]
                precision = QUANT_TAGS[tag] if precision is None else precision
                changed = True
                break
        for suf in PLAIN_SUFFIXES:
            if any(name.endswith(sep + suf) for sep in SEPARATORS):
                name = name[: -len(suf) - 1]
                changed = True
        for pattern in (DATE_SUFFIX, VERSION_SUFFIX):
            m = pattern.search(name)
            if m:
                name = name[: m.start()]
                changed = True
    return name, precision


def _spellings(catalog: Catalog) -> dict[str, str]:
    """Every lower-case spelling (key or alias) -> catalog key."""
    out: dict[str, str] = {}
    for key in catalog.names("models"):
        out[key.lower()] = key
        for alias in catalog.get("models", key).get("aliases", []) or []:
            out.setdefault(alias.lower(), key)
    return out


def resolve_model_name(name: str, catalog: Catalog | None = None) -> ResolvedModel:
    """Resolve a model name (see the module docstring); KeyError with the closest names if none."""
    cat = catalog or default_catalog()
    raw = str(name).strip()
    low = raw.lower()
    hit_key = cat.entry("models", low)
    if hit_key is not None:
        return ResolvedModel(hit_key[0], None, "catalog key")
    explicit = explicit_names()
    base = re.sub(r"[\s_]+", "-", low.rsplit("/", 1)[-1])   # "GPT-J 6B" is spelled gpt-j-6b
    for key in (low, base):
        hit = explicit.get(key)
        if hit is not None and cat.has("models", hit["model"]):
            return ResolvedModel(cat.get("models", hit["model"])["name"], hit.get("precision"), "named checkpoint")
    spellings = _spellings(cat)
    for cand in (base, base.removeprefix("meta-")):
        stem, tag_precision = _strip_tags(cand)
        for s in (cand, stem, stem.removeprefix("meta-")):
            precision = tag_precision if s != cand else None
            hit = explicit.get(s)
            if hit is not None and cat.has("models", hit["model"]):
                return ResolvedModel(cat.get("models", hit["model"])["name"],
                                     precision if precision is not None else hit.get("precision"), "spelling")
            if s in spellings:
                return ResolvedModel(spellings[s], precision, "spelling")
    known = sorted(set(spellings) | set(explicit))
    close = difflib.get_close_matches(base, known, n=5, cutoff=0.5) or difflib.get_close_matches(low, known, n=5, cutoff=0.4)
    hint = f"closest: {', '.join(close)}" if close else f"known: {', '.join(cat.names('models'))}"
    raise KeyError(f"unknown model preset {raw!r} (not a catalog key, Hugging Face id or alias); {hint}; "
                   f"or define it under [catalog.models.NAME]")


def resolve_client_model(data: dict, catalog: Catalog) -> dict:
    """A client document with its ``model`` resolved to a catalog key, and ``precision`` set from
    the name (or the model's native format) when the client does not set it."""
    value = data.get("model")
    if isinstance(value, str):
        name, table = value, None
    elif isinstance(value, dict) and isinstance(value.get("preset"), str):
        name, table = value["preset"], value
    else:
        return data
    r = resolve_model_name(name, catalog)
    if r.rule == "catalog key" and r.model == name and "native_precision" not in catalog.entry("models", name)[1]:
        return data  # the common case: nothing to change
    out = dict(data)
    out["model"] = r.model if table is None else {**table, "preset": r.model}
    precision = r.precision
    if precision is None:
        precision = (table or {}).get("native_precision", catalog.entry("models", r.model)[1].get("native_precision"))
    if precision is not None and "precision" not in data:
        out["precision"] = precision
    return out
