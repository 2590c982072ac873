"""Analysis of the MIST paper's case studies (docs/case-studies.md) from their sweep Datasets.

:func:`pipeline_table` is study 3's Table III: the colocated and disaggregated sweeps of
``sweeps/pipelines_*.toml`` joined along a ``strategy`` dimension, every point checked against
the six limits of Table II (``slo="table2"``; RAG and KV-retrieval pipelines against
``"table2-rag"``), throughput and throughput per joule normalised to continuous batching at the
lowest rate, and the winning strategy per pipeline and rate.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

from .analysis import _CMP
from .capacity_search import _TABLE2

RAG_APPS = ("rag", "kv_retrieval")   # pipelines judged against the 1,000 ms TTFT baseline
TABLE_VARS = ("ttft_p50_ms", "ttft_p90_ms", "ttft_p99_ms", "tpot_p50_ms", "tpot_p90_ms", "tpot_p99_ms",
              "output_tok_s", "energy_per_output_token_J", "n_arrived", "n_finished", "status")


def table2_limits(rag: bool = False) -> dict[str, float]:
    """The six Table II limits (ms): TTFT baseline 250 ms (1,000 ms for RAG / KV retrieval), TPOT 25 ms."""
    base = {"ttft": 1000.0 if rag else 250.0, "tpot": 25.0}
    return {f"{m}_{q}_ms": base[m] * k for m, q, k in _TABLE2}


def _open(src) -> xr.Dataset:
    from .sweep import open_sweep
    return src if isinstance(src, xr.Dataset) else open_sweep(Path(src))


def _as_strategies(ds: xr.Dataset) -> xr.Dataset:
    """Rename a sweep's strategy axis to ``strategy``: batching names for the colocated sweep,
    ``"<P>P/<D>D"`` for the disaggregated one (D from the derived ``in_dp``)."""
    ds = ds[[v for v in TABLE_VARS if v in ds.data_vars] + (["in_dp"] if "in_dp" in ds else [])]
    if "batching" in ds.dims:
        ds = ds.rename(batching="strategy")
        return ds.assign_coords(strategy=[str(s) for s in ds.strategy.values])
    if "num_prefill" in ds.dims:
        d = ds["in_dp"].max([k for k in ds["in_dp"].dims if k != "num_prefill"]).values
        labels = [f"{int(p)}P/{int(q)}D" for p, q in zip(ds.num_prefill.values, d)]
        return ds.drop_vars("in_dp").rename(num_prefill="strategy").assign_coords(strategy=labels)
    raise ValueError("a study-3 Dataset needs a 'batching' or 'num_prefill' axis "
                     f"(this one has {', '.join(map(str, ds.dims)) or 'none'})")


def pipeline_table(sources, *, baseline: str = "continuous", min_finished: float = 0.99) -> xr.Dataset:
    """Study 3's table over (app, strategy, rate) from the colocated and disaggregated sweeps.

    ``sources``: Datasets or netCDF paths of ``sweeps/pipelines_colocated.toml`` and
    ``sweeps/pipelines_disaggregated.toml`` (axes ``app``, ``batching`` or ``num_prefill``,
    ``rate_per_client_rps``). Returns ``passes`` (all six limits and ``n_finished / n_arrived >=
    min_finished``), ``norm_output_tok_s`` and ``norm_tok_per_J`` (relative to ``baseline`` at the
    lowest rate, per app), and per (app, rate) the passing strategy with the lowest TTFT p99
    (``best_ttft``), the highest output rate (``best_throughput``) and the most output tokens per
    joule (``best_efficiency``) — ``""`` where no strategy passes.
    """
    parts = [_as_strategies(_open(s)) for s in sources]
    ds = xr.concat(parts, dim="strategy", data_vars="all", join="exact")
    if baseline not in ds.strategy.values:
        raise ValueError(f"baseline = {baseline!r}: not a strategy of these sweeps; have {list(ds.strategy.values)}")
    rate = "rate_per_client_rps"
    ok = (ds["status"] == 0) & (ds["n_finished"] >= min_finished * ds["n_arrived"])
    apps = [str(a) for a in ds.app.values]
    per_app = []
    for a in apps:
        lim = table2_limits(rag=a in RAG_APPS)
        sel = ok.sel(app=a)
        for var, limit in lim.items():
            sel = sel & _CMP["<="](ds[var].sel(app=a), limit)
        per_app.append(sel)
    passes = xr.concat(per_app, dim="app").assign_coords(app=ds.app)
    tok_per_J = 1.0 / ds["energy_per_output_token_J"]
    base = {k: v.sel(strategy=baseline).isel({rate: 0}) for k, v in (("tok", ds["output_tok_s"]), ("eff", tok_per_J))}
    out = xr.Dataset({
        "passes": passes.transpose("app", "strategy", rate),
        "norm_output_tok_s": (ds["output_tok_s"] / base["tok"]).transpose("app", "strategy", rate),
        "norm_tok_per_J": (tok_per_J / base["eff"]).transpose("app", "strategy", rate),
        "ttft_p99_ms": ds["ttft_p99_ms"].transpose("app", "strategy", rate),
        "tpot_p99_ms": ds["tpot_p99_ms"].transpose("app", "strategy", rate),
    })
    out["norm_output_tok_s"].attrs.update(units="1", description=f"output tokens/s / {baseline} at the lowest rate")
    out["norm_tok_per_J"].attrs.update(units="1", description=f"output tokens per joule / {baseline} at the lowest rate")
    out["passes"].attrs.update(units="1", description="all six Table II limits hold and the requests finished")
    for name, var, sign in (("best_ttft", "ttft_p99_ms", -1.0), ("best_throughput", "norm_output_tok_s", 1.0),
                            ("best_efficiency", "norm_tok_per_J", 1.0)):
        out[name] = _winner(out[var] * sign, out["passes"])
        out[name].attrs.update(units="", description=f"passing strategy with the best {var} ('' if none passes)")
    return out


def _winner(score: xr.DataArray, passes: xr.DataArray) -> xr.DataArray:
    """Strategy label with the highest score among passing strategies, per (app, rate)."""
    s = score.where(passes).transpose(..., "strategy")
    labels = np.asarray(s.strategy.values, dtype=object)
    arr = s.values
    anyok = np.isfinite(arr).any(-1)
    idx = np.argmax(np.where(np.isfinite(arr), arr, -np.inf), axis=-1)
    win = np.where(anyok, labels[idx], "").astype(str)
    dims = [d for d in s.dims if d != "strategy"]
    return xr.DataArray(win, dims=dims, coords={d: s[d] for d in dims})
