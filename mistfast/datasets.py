"""Named benchmark workloads: the (input, output) token-length distributions of public datasets.

The raw datasets cannot be downloaded at run time, so each one ships as a small TOML file in
``data/datasets/`` holding an empirical quantile table or a fitted distribution per side, a rank
correlation between the two sides, the filters the benchmark tool applies, and the published
statistics it reproduces (each with its source). ``docs/datasets.md`` lists them.

Public API
----------
``dataset_names()``                 canonical names of the shipped datasets.
``dataset_in_text(text)``           the dataset a workload description names, or None.
``resolve_dataset(name)``           canonical name for a name or common spelling (case and
                                    punctuation ignored); :class:`DatasetError` lists the known ones.
``dataset_stats(name, **options)``  mean and percentiles of both sides (dict of floats).
``sample_pairs(name, n, rng, **options)``  ``n`` (input, output) int64 token-length pairs.
``table_from_lengths(tokens)``      a quantile table from observed lengths (to build a dataset).

A **mixture** (``[[components]]`` in its file) is a weighted mix of other datasets, e.g. an MLPerf
benchmark whose prompts are 5,000 OpenOrca + 5,000 GSM8K + 5,000 MBXP samples: ``n`` draws give
each component its share of ``n`` (largest remainders), drawn from that component's own
distribution, then shuffled into one random order.

Options: ``input_len``, ``output_len``, ``range_ratio`` for the parametric datasets (``random``,
``sonnet``), e.g. ``sample_pairs("random", 100, rng, input_len=2048, range_ratio=0.1)``.

Joint sampling is a Gaussian copula: two standard normals with correlation
``2·sin(π·ρ_s/6)`` (which gives Spearman rank correlation ``ρ_s``) are mapped through the normal
CDF to uniforms, and each uniform through its side's quantile function. A ``max_total_tokens``
filter (vLLM's ``prompt + output <= 2048``) redraws offending pairs, like the benchmark dropping them.
"""
from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .catalog import data_dir, tomllib

__all__ = ["DatasetError", "Dataset", "Marginal", "Component", "component_stats", "dataset_names", "resolve_dataset", "get_dataset", "dataset_in_text",
           "dataset_stats", "sample_pairs", "sample_side", "table_from_lengths", "TABLE_PROBS"]

MARGINAL_KINDS = ("quantiles", "lognormal", "fixed", "uniform")
_KIND_FIELDS = {"quantiles": ("probs", "tokens"), "lognormal": ("mu", "sigma"), "fixed": ("value",),
                "uniform": ("low", "high")}
TRUNCATIONS = ("filter", "clip")
OPTION_NAMES = ("input_len", "output_len", "range_ratio")
STATS_SAMPLE = 200_000          # draws behind dataset_stats (fixed seed: deterministic)
STATS_SEED = 20240601
MAX_REDRAW_ROUNDS = 200
# sonnet prompts end up to this many tokens below --sonnet-input-len: 2 x the 9-token mean shortfall
# measured by vLLM (10 requests, 5,409 input tokens at input_len 550; vllm-project/vllm PR #14036)
SONNET_SPREAD_TOKENS = 18

# percentiles of the shipped empirical tables (0..100 in steps of 1, plus the far tail)
TABLE_PROBS = tuple([i / 100 for i in range(100)] + [0.995, 0.999, 1.0])


class DatasetError(ValueError):
    """Unknown dataset name, bad option or malformed dataset file (one line, names the field)."""


def _normalise(name: str) -> str:
    """Spelling-insensitive key: lower case, letters and digits only ("ShareGPT_V3" → "sharegptv3")."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


# ----------------------------------------------------------------------------------------------
# one side's length distribution
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Marginal:
    """The length distribution of one side (input or output), as a quantile function of u ∈ [0, 1].

    kinds: ``quantiles`` (``probs``/``tokens`` knots, linear in between), ``lognormal`` (``mu``,
    ``sigma`` of ln tokens), ``fixed`` (``value``), ``uniform`` (integers ``low``..``high``).
    ``min_tokens``/``max_tokens`` bound the result: ``truncation = "filter"`` samples the
    distribution conditioned on the bounds (a benchmark that drops out-of-range samples),
    ``"clip"`` moves the out-of-range mass onto the bound (a tokenizer truncating long prompts).
    """

    kind: str
    probs: tuple[float, ...] = ()
    tokens: tuple[float, ...] = ()
    mu: float = 0.0
    sigma: float = 0.0
    value: int = 0
    low: int = 0
    high: int = 0
    min_tokens: int = 1
    max_tokens: int | None = None
    truncation: str = "clip"

    def quantile(self, u: np.ndarray) -> np.ndarray:
        """Token lengths (int64, >= 1) at uniforms ``u``."""
        if self.kind == "quantiles":
            if self.truncation == "filter":
                # conditional on [min, max]: map u onto the table's probability interval of the bounds
                lo = np.interp(self.min_tokens - 0.5, self.tokens, self.probs)
                hi = 1.0 if self.max_tokens is None else np.interp(self.max_tokens + 0.5, self.tokens, self.probs)
                u = lo + u * (hi - lo)
            x = np.interp(u, self.probs, self.tokens)
        elif self.kind == "lognormal":
            x = self._lognormal_quantile(u)
        elif self.kind == "fixed":
            x = np.full(u.shape, float(self.value))
        else:  # uniform integers low..high
            x = self.low + np.minimum(np.floor(u * (self.high - self.low + 1)), self.high - self.low)
        hi = np.inf if self.max_tokens is None else float(self.max_tokens)
        return np.clip(np.rint(x), max(1.0, float(self.min_tokens)), hi).astype(np.int64)

    def _lognormal_quantile(self, u: np.ndarray) -> np.ndarray:
        from scipy.special import ndtr, ndtri

        if self.truncation == "filter":
            # conditional on [min, max]: map u onto the CDF interval of the bounds
            lo = ndtr((math.log(max(self.min_tokens - 0.5, 1e-9)) - self.mu) / self.sigma)
            hi = 1.0 if self.max_tokens is None else \
                ndtr((math.log(self.max_tokens + 0.5) - self.mu) / self.sigma)
            u = lo + u * (hi - lo)
        return np.exp(self.mu + self.sigma * ndtri(np.clip(u, 1e-15, 1 - 1e-15)))


def _marginal_from_toml(doc: Any, where: str) -> Marginal:
    if not isinstance(doc, Mapping):
        raise DatasetError(f"{where}: expected a table with kind = one of {', '.join(MARGINAL_KINDS)}")
    kind = doc.get("kind")
    if kind not in MARGINAL_KINDS:
        raise DatasetError(f"{where}.kind = {kind!r}: allowed: {', '.join(MARGINAL_KINDS)}")
    allowed = {"kind", "min_tokens", "max_tokens", "truncation", "note",
               *_KIND_FIELDS[kind]}
    extra = sorted(set(doc) - set(allowed))
    if extra:
        raise DatasetError(f"{where}: field(s) {', '.join(extra)} do not belong to kind = {kind!r} "
                           f"(allowed: {', '.join(sorted(allowed))})")
    kw: dict[str, Any] = {"kind": kind, "min_tokens": int(doc.get("min_tokens", 1)),
                          "max_tokens": None if doc.get("max_tokens") is None else int(doc["max_tokens"]),
                          "truncation": doc.get("truncation", "clip")}
    if kw["truncation"] not in TRUNCATIONS:
        raise DatasetError(f"{where}.truncation = {kw['truncation']!r}: allowed: {', '.join(TRUNCATIONS)}")
    if kind == "quantiles":
        p = np.asarray(doc.get("probs", []), float)
        t = np.asarray(doc.get("tokens", []), float)
        if p.size < 2 or p.size != t.size or p[0] != 0.0 or p[-1] != 1.0 or np.any(np.diff(p) <= 0) \
                or np.any(np.diff(t) < 0) or t[0] < 1:
            raise DatasetError(f"{where}: probs must rise strictly from 0 to 1 and tokens (>= 1) must not "
                               f"fall, one token per prob (got {p.size} probs, {t.size} tokens)")
        kw.update(probs=tuple(p), tokens=tuple(t))
    elif kind == "lognormal":
        mu, sigma = float(doc.get("mu", float("nan"))), float(doc.get("sigma", float("nan")))
        if not (math.isfinite(mu) and math.isfinite(sigma) and sigma > 0):
            raise DatasetError(f"{where}: lognormal needs finite mu and sigma > 0, got mu={doc.get('mu')!r}, "
                               f"sigma={doc.get('sigma')!r}")
        kw.update(mu=mu, sigma=sigma)
    elif kind == "fixed":
        kw["value"] = _positive_int(doc.get("value"), f"{where}.value")
    else:
        kw["low"] = _positive_int(doc.get("low"), f"{where}.low")
        kw["high"] = _positive_int(doc.get("high"), f"{where}.high")
        if kw["high"] < kw["low"]:
            raise DatasetError(f"{where}.high = {kw['high']}: must be >= low ({kw['low']})")
    return Marginal(**kw)


def _positive_int(x: Any, where: str) -> int:
    if isinstance(x, bool) or not isinstance(x, (int, np.integer)) or x < 1:
        raise DatasetError(f"{where} = {x!r}: must be an integer >= 1")
    return int(x)


# ----------------------------------------------------------------------------------------------
# a dataset: two sides, their dependence, filters, provenance
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Dataset:
    """One named workload. ``generator`` is "table" for the shipped distributions, or
    "vllm_random" / "sonnet" for the parametric ones (their sides are built from ``options``)."""

    name: str
    title: str
    aliases: tuple[str, ...]
    source: str
    input: Marginal | None          # None for a mixture (its components hold the sides)
    output: Marginal | None
    rank_correlation: float = 0.0
    max_total_tokens: int | None = None
    generator: str = "table"
    options: Mapping[str, float] = field(default_factory=dict)
    published: tuple[Mapping[str, Any], ...] = ()
    notes: str = ""
    components: tuple["Component", ...] = ()   # a mixture: weighted components, sides of its own unused
    # the lengths that dominate a run (here: the input side) are estimates, not published: rows on
    # this dataset are worth validating but not fitting efficiencies to (mistfast.validate)
    estimated_lengths: bool = False

    @property
    def is_mixture(self) -> bool:
        return bool(self.components)

    def with_options(self, **options: Any) -> "Dataset":
        """The dataset with ``input_len``/``output_len``/``range_ratio`` set (parametric ones only)."""
        given = {k: v for k, v in options.items() if v is not None}
        if not given:
            return self
        unknown = sorted(set(given) - set(OPTION_NAMES))
        if unknown:
            raise DatasetError(f"dataset {self.name!r}: unknown option(s) {', '.join(unknown)}; "
                               f"allowed: {', '.join(OPTION_NAMES)}")
        if self.generator == "table":
            raise DatasetError(f"dataset {self.name!r} has fixed length distributions; options "
                               f"{', '.join(sorted(given))} apply only to: random, sonnet")
        opts = {**self.options, **given}
        return replace(self, options=opts, **_parametric_sides(self.generator, opts, self.name))


def _parametric_sides(generator: str, opts: Mapping[str, Any], name: str) -> dict[str, Marginal]:
    """vLLM's random dataset: integers uniform in [⌊L(1−r)⌋, ⌈L(1+r)⌉] per side (output >= 1);
    sonnet: prompts built up to ``input_len`` tokens, ``output_len`` tokens generated."""
    i_len = opts.get("input_len")
    o_len = opts.get("output_len")
    for key, v in (("input_len", i_len), ("output_len", o_len)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise DatasetError(f"dataset {name!r}: option {key} = {v!r}: must be an integer >= 1")
    if generator == "sonnet":
        # whole poem lines are added up to input_len and longer prompts rejected: each prompt falls
        # within about one line below it; uniform over SONNET_SPREAD_TOKENS + 1 lengths (mean L - 9)
        lo = max(int(i_len) - SONNET_SPREAD_TOKENS, 1)
        side_in = Marginal("uniform", low=lo, high=int(i_len)) if lo < int(i_len) else Marginal("fixed", value=lo)
        return {"input": side_in, "output": Marginal("fixed", value=int(o_len))}
    r = opts.get("range_ratio", 0.0)
    if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0.0 <= float(r) < 1.0:
        raise DatasetError(f"dataset {name!r}: option range_ratio = {r!r}: must be a number in [0, 1)")
    r = float(r)

    def side(length: int) -> Marginal:
        lo, hi = max(math.floor(length * (1 - r)), 1), max(math.ceil(length * (1 + r)), 1)
        return Marginal("uniform", low=lo, high=hi) if hi > lo else Marginal("fixed", value=lo)

    return {"input": side(int(i_len)), "output": side(int(o_len))}


@dataclass(frozen=True)
class Component:
    """One part of a mixture: ``weight`` (a sample count or share; only ratios matter) of either a
    shipped dataset (``dataset``, by name) or a distribution given inline (``inline``)."""

    label: str
    weight: float
    dataset: str = ""
    inline: Dataset | None = None
    source: str = ""

    def resolve(self) -> Dataset:
        return self.inline if self.inline is not None else get_dataset(self.dataset)


MIXTURE_FIELDS = ("name", "title", "aliases", "source", "notes", "published", "components", "estimated_lengths")
MAX_MIXTURE_DEPTH = 4


def _component_from_toml(doc: Any, where: str, mixture: str) -> Component:
    if not isinstance(doc, Mapping):
        raise DatasetError(f"{where}: expected a table with weight and dataset (or input and output)")
    w = doc.get("weight")
    if isinstance(w, bool) or not isinstance(w, (int, float)) or not (math.isfinite(w) and w > 0):
        raise DatasetError(f"{where}.weight = {w!r}: must be a number > 0")
    label = doc.get("label", doc.get("dataset", ""))
    if not isinstance(label, str) or not label:
        raise DatasetError(f"{where}: needs a label (or a dataset name)")
    ref = doc.get("dataset")
    inline_keys = {"input", "output", "rank_correlation", "max_total_tokens"} & set(doc)
    if (ref is None) == (not inline_keys):
        raise DatasetError(f"{where}: give either dataset = NAME or inline input and output tables, not "
                           f"{'both' if ref is not None else 'neither'}")
    extra = sorted(set(doc) - {"weight", "label", "dataset", "source", "note", *inline_keys})
    if extra:
        raise DatasetError(f"{where}: unknown field(s) {', '.join(extra)} (allowed: weight, label, source, "
                           "dataset, or input, output, rank_correlation, max_total_tokens)")
    if ref is not None:
        if not isinstance(ref, str) or not ref:
            raise DatasetError(f"{where}.dataset = {ref!r}: must be a dataset name")
        return Component(label=label, weight=float(w), dataset=ref, source=str(doc.get("source", "")))
    sub = {"name": f"{mixture}/{label}", "title": label, "source": str(doc.get("source", "")),
           **{k: doc[k] for k in inline_keys}}
    inline = _dataset_from_toml(sub, Path(where))
    return Component(label=label, weight=float(w), inline=inline, source=sub["source"])


def _mixture_from_toml(doc: Mapping[str, Any], path: Path, common: dict) -> Dataset:
    where = path.name
    extra = sorted(set(doc) - set(MIXTURE_FIELDS))
    if extra:
        raise DatasetError(f"{where}: field(s) {', '.join(extra)} do not belong to a mixture "
                           f"(allowed: {', '.join(MIXTURE_FIELDS)}; the sides belong in its components)")
    comps = doc["components"]
    if not isinstance(comps, list) or not comps:
        raise DatasetError(f"{where}: components must be a non-empty list of tables")
    parts = tuple(_component_from_toml(c, f"{where}: components[{i}]", doc["name"]) for i, c in enumerate(comps))
    return Dataset(input=None, output=None, components=parts, **common)


def _component_counts(weights: np.ndarray, n: int) -> np.ndarray:
    """Integer shares of ``n`` in proportion to ``weights`` (largest remainders, ties to the first)."""
    exact = n * weights / weights.sum()
    counts = np.floor(exact).astype(np.int64)
    short = n - int(counts.sum())
    if short:
        order = np.argsort(-(exact - counts), kind="stable")
        counts[order[:short]] += 1
    return counts


def _dataset_from_toml(doc: Mapping[str, Any], path: Path) -> Dataset:
    where = path.name
    missing = [k for k in ("name", "title", "source") if not isinstance(doc.get(k), str)]
    if missing:
        raise DatasetError(f"{where}: missing text field(s) {', '.join(missing)}")
    generator = doc.get("generator", "table")
    rho = float(doc.get("rank_correlation", 0.0))
    if not -1.0 < rho < 1.0:
        raise DatasetError(f"{where}: rank_correlation = {rho!r}: must be in (-1, 1)")
    mt = doc.get("max_total_tokens")
    common = dict(name=doc["name"], title=doc["title"], aliases=tuple(doc.get("aliases", ())),
                  source=doc["source"], rank_correlation=rho,
                  max_total_tokens=None if mt is None else _positive_int(mt, f"{where}: max_total_tokens"),
                  generator=generator, published=tuple(doc.get("published", ())),
                  notes=doc.get("notes", ""), estimated_lengths=bool(doc.get("estimated_lengths", False)))
    if "components" in doc:   # a mixture of other datasets: fixed length distributions, like a table
        if generator != "table":
            raise DatasetError(f"{where}: generator = {generator!r} cannot have components")
        return _mixture_from_toml(doc, path, common)
    if generator == "table":
        return Dataset(input=_marginal_from_toml(doc.get("input"), f"{where}: input"),
                       output=_marginal_from_toml(doc.get("output"), f"{where}: output"), **common)
    if generator not in ("vllm_random", "sonnet"):
        raise DatasetError(f"{where}: generator = {generator!r}: allowed: table, vllm_random, sonnet")
    opts = dict(doc.get("options", {}))
    return Dataset(options=opts, **_parametric_sides(generator, opts, doc["name"]), **common)


@functools.lru_cache(maxsize=1)
def _catalog() -> dict[str, Dataset]:
    out: dict[str, Dataset] = {}
    for path in sorted((data_dir() / "datasets").glob("*.toml")):
        with open(path, "rb") as fh:
            ds = _dataset_from_toml(tomllib.load(fh), path)
        out[ds.name] = ds
    return out


@functools.lru_cache(maxsize=1)
def _alias_index() -> dict[str, str]:
    index: dict[str, str] = {}
    for ds in _catalog().values():
        for spelling in (ds.name, *ds.aliases):
            key = _normalise(spelling)
            if index.get(key, ds.name) != ds.name:
                raise DatasetError(f"dataset spelling {spelling!r} is claimed by both "
                                   f"{index[key]!r} and {ds.name!r}")
            index[key] = ds.name
    return index


def dataset_names() -> list[str]:
    """Canonical names of the shipped datasets, sorted."""
    return sorted(_catalog())


def resolve_dataset(name: Any) -> str:
    """The canonical name for ``name`` (any case, ``-``/``_``/spaces ignored: "ShareGPT_V3",
    "open-orca", "CNN-DailyMail"). Raises :class:`DatasetError` listing the known names."""
    if isinstance(name, str):
        hit = _alias_index().get(_normalise(name))
        if hit is not None:
            return hit
    raise DatasetError(f"unknown dataset {name!r}; known datasets: {', '.join(dataset_names())}")


def dataset_in_text(text: Any) -> str | None:
    """The dataset a free-text workload description names ("offline, ShareGPT prompts" → "sharegpt"),
    or None. Only the empirical/fitted datasets are looked for (not random or sonnet, whose names are
    ordinary words), by canonical name or any spelling of at least 6 letters; the longest match wins."""
    if not isinstance(text, str) or not text.strip():
        return None
    hay = _normalise(text)
    best: tuple[int, str] | None = None
    for ds in _catalog().values():
        if ds.generator != "table":
            continue
        for spelling in (ds.name, *ds.aliases):
            key = _normalise(spelling)
            if (len(key) >= 6 or spelling == ds.name) and key in hay and (best is None or len(key) > best[0]):
                best = (len(key), ds.name)
    return None if best is None else best[1]


def get_dataset(name: str, **options: Any) -> Dataset:
    """The :class:`Dataset` for a name or spelling, with parametric options applied."""
    return _catalog()[resolve_dataset(name)].with_options(**options)


# ----------------------------------------------------------------------------------------------
# sampling
# ----------------------------------------------------------------------------------------------
def _copula_uniforms(n: int, rho_spearman: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    from scipy.special import ndtr

    z = rng.standard_normal((2, n))
    if rho_spearman:
        r = 2.0 * math.sin(math.pi * rho_spearman / 6.0)   # Pearson of the normals giving Spearman ρ_s
        z[1] = r * z[0] + math.sqrt(1.0 - r * r) * z[1]
    return ndtr(z[0]), ndtr(z[1])


def _draw(ds: Dataset, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    u_in, u_out = _copula_uniforms(n, ds.rank_correlation, rng)
    return ds.input.quantile(u_in), ds.output.quantile(u_out)


def sample_pairs(name: str, n: int, rng: np.random.Generator, **options: Any) -> tuple[np.ndarray, np.ndarray]:
    """``n`` (input, output) token-length pairs (int64 arrays) drawn jointly from dataset ``name``.

    Pairs violating the dataset's ``max_total_tokens`` are redrawn (the benchmark filter), so the
    result is the filtered distribution. A mixture gives each component its share of ``n`` and
    shuffles the pairs. Deterministic given the generator's state.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise DatasetError(f"number of samples must be an integer >= 0, got {n!r}")
    return _sample_dataset(get_dataset(name, **options), int(n), rng)


def _sample_dataset(ds: Dataset, n: int, rng: np.random.Generator, depth: int = 0) -> tuple[np.ndarray, np.ndarray]:
    if ds.is_mixture:
        return _sample_mixture(ds, n, rng, depth)
    inp, out = _draw(ds, n, rng)
    if ds.max_total_tokens is not None:
        for _ in range(MAX_REDRAW_ROUNDS):
            bad = np.flatnonzero(inp + out > ds.max_total_tokens)
            if bad.size == 0:
                break
            inp[bad], out[bad] = _draw(ds, bad.size, rng)
        else:
            raise DatasetError(f"dataset {ds.name!r}: could not draw pairs with input + output <= "
                               f"{ds.max_total_tokens} (filter rejects almost everything)")
    return inp, out


def _sample_mixture(ds: Dataset, n: int, rng: np.random.Generator, depth: int) -> tuple[np.ndarray, np.ndarray]:
    if depth >= MAX_MIXTURE_DEPTH:
        raise DatasetError(f"dataset {ds.name!r}: mixtures nested deeper than {MAX_MIXTURE_DEPTH} "
                           "(a component refers back to its own mixture?)")
    counts = _component_counts(np.array([c.weight for c in ds.components]), n)
    ins, outs = [], []
    for comp, k in zip(ds.components, counts):
        i, o = _sample_dataset(comp.resolve(), int(k), rng, depth + 1)
        ins.append(i)
        outs.append(o)
    order = rng.permutation(n)   # the benchmark issues its samples in random order
    return np.concatenate(ins)[order], np.concatenate(outs)[order]


def component_stats(name: str) -> list[dict[str, Any]]:
    """A mixture's components: label, share of the requests, and each side's mean (from
    :func:`dataset_stats` draws of that component alone)."""
    ds = get_dataset(name)
    if not ds.is_mixture:
        raise DatasetError(f"dataset {ds.name!r} is not a mixture")
    w = np.array([c.weight for c in ds.components])
    rows = []
    for c, share in zip(ds.components, w / w.sum()):
        inp, out = _sample_dataset(c.resolve(), STATS_SAMPLE // 4, np.random.default_rng(STATS_SEED))
        rows.append({"label": c.label, "share": float(share), "input_mean": float(inp.mean()),
                     "output_mean": float(out.mean()), "dataset": c.dataset or f"{ds.name}/{c.label}"})
    return rows


def sample_side(name: str, side: str, n: int, rng: np.random.Generator, **options: Any) -> np.ndarray:
    """``n`` lengths of one side (``"input"`` or ``"output"``) of dataset ``name``: that side of
    jointly drawn pairs, so the total-length filter shapes it exactly as in :func:`sample_pairs`."""
    if side not in ("input", "output"):
        raise DatasetError(f"side = {side!r}: allowed: input, output")
    inp, out = sample_pairs(name, n, rng, **options)
    return inp if side == "input" else out


def _options_key(options: Mapping[str, Any]) -> tuple:
    return tuple(sorted((k, v) for k, v in options.items() if v is not None))


@functools.lru_cache(maxsize=64)
def _stats_cached(name: str, options_key: tuple) -> dict[str, float]:
    ds = get_dataset(name, **dict(options_key))
    inp, out = sample_pairs(name, STATS_SAMPLE, np.random.default_rng(STATS_SEED), **dict(options_key))
    from scipy.stats import spearmanr

    stats: dict[str, float] = {}
    for side, x in (("input", inp), ("output", out)):
        stats[f"{side}_mean"] = float(x.mean())
        stats[f"{side}_std"] = float(x.std())
        for q in (5, 10, 25, 50, 75, 90, 95, 99):
            stats[f"{side}_p{q}"] = float(np.percentile(x, q))
        stats[f"{side}_min"], stats[f"{side}_max"] = float(x.min()), float(x.max())
    const = inp.min() == inp.max() or out.min() == out.max()
    stats["rank_correlation"] = 0.0 if const else float(spearmanr(inp, out).correlation)
    stats["rank_correlation_target"] = ds.rank_correlation
    return stats


def dataset_stats(name: str, **options: Any) -> dict[str, float]:
    """Mean, std, min, max and 5/10/25/50/75/90/95/99th percentiles of both sides (keys
    ``input_mean``, ``output_p99``, ...) and the rank correlation, from 200,000 pairs drawn with a
    fixed seed (so it includes the filters and rounding; deterministic)."""
    canonical = resolve_dataset(name)
    get_dataset(canonical, **options)  # validate the options before caching
    return dict(_stats_cached(canonical, _options_key(options)))


# ----------------------------------------------------------------------------------------------
# building tables from observed lengths
# ----------------------------------------------------------------------------------------------
def table_from_lengths(tokens: Any, probs: tuple[float, ...] = TABLE_PROBS) -> dict[str, list]:
    """A ``kind = "quantiles"`` table (``probs``, integer ``tokens``) from observed lengths, in
    the form of the ``[input]``/``[output]`` tables of ``data/datasets/*.toml``."""
    x = np.asarray(tokens, dtype=float).ravel()
    if x.size == 0 or not np.all(np.isfinite(x)) or x.min() < 1:
        raise DatasetError("table_from_lengths needs a non-empty array of finite lengths >= 1")
    q = np.quantile(x, probs)
    return {"kind": "quantiles", "probs": [float(p) for p in probs],
            "tokens": [int(round(v)) for v in np.maximum.accumulate(q)]}
