"""``mistfast report results.nc -o report/``: the figures people draw from a sweep or a run, and an
HTML page that shows them.

Figures (PNG): latency–throughput curves per batching policy, TTFT and TPOT CDFs, utilisation
and KV-use timelines, the per-stage latency breakdown and the Pareto front of throughput per
price against p99 TTFT. Distributions and timelines need per-request data and the step log,
which a sweep does not store: the best point of each policy (under the SLO the sweep was run
with) is simulated again, with the seed the sweep gave it, so its numbers are the sweep's.
"""
from __future__ import annotations

import html
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

LOG_STEPS = 200_000
_POLICY_DIMS = ("batching", "policy")


@dataclass
class Representative:
    label: str              # e.g. "chunked: H100, tp=8, rate_rps=8"
    req: dict               # per-request arrays: ttft_ms, tpot_ms, e2e_ms, queue_ms, status
    steplog: np.ndarray | None
    kv_blocks: float        # KV blocks of one engine (for KV use); nan when unknown


# ----------------------------------------------------------------------------- selection
def _policy_dim(ds) -> str | None:
    return next((d for d in _POLICY_DIMS if d in ds.dims or (d in ds.coords and "point" in ds.dims)), None)


def _valid_table(ds):
    from .analysis import to_table
    names = [k for k in ("status", "output_tok_s", "ttft_p99_ms", "tpot_p99_ms", "output_tok_s_per_usd_per_hour",
                         "n_rejected", "n_unfinished", "queue_delay_mean_ms", "ttft_mean_ms", "e2e_mean_ms") if k in ds]
    df = to_table(ds, names)
    return df[(df["status"] == 0) & df["output_tok_s"].notna()] if "status" in df else df


def representatives_rows(ds):
    """The best valid point per policy under the Dataset's SLO (the highest-throughput one when
    none meets it), as rows of the points table."""
    from .analysis import _CMP, parse_constraints
    from .variables import default_constraints
    df = _valid_table(ds)
    if df.empty:
        return df
    pol = _policy_dim(ds)
    ok = np.ones(len(df), bool)
    for var, op, v in parse_constraints(default_constraints(ds)):
        if var in df:
            ok &= _CMP[op](df[var], v).to_numpy()
    obj = "output_tok_s_per_usd_per_hour" if "output_tok_s_per_usd_per_hour" in df else "output_tok_s"
    rows = []
    for _, g in (df.groupby(pol, sort=False) if pol else [(None, df)]):
        good = g[ok[df.index.get_indexer(g.index)]]
        pick = (good if len(good) else g).sort_values(obj if len(good) else "output_tok_s", ascending=False,
                                                      kind="mergesort")
        row = pick.iloc[0].copy()
        row["meets_slo"] = bool(len(good))
        rows.append(row)
    import pandas as pd
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- re-simulation
def _per_request(res_req: dict) -> dict:
    from .kernels.engine import FINISHED
    r = res_req
    with np.errstate(invalid="ignore", divide="ignore"):
        gen = r["generated"].astype(float)
        return {"ttft_ms": (r["t_first_tok"] - r["arrival"]) * 1e3,
                "tpot_ms": np.where(gen >= 2, (r["t_last_tok"] - r["t_first_tok"]) / np.maximum(gen - 1, 1), np.nan) * 1e3,
                "e2e_ms": np.where(r["status"] == FINISHED, r["t_finish"] - r["arrival"], np.nan) * 1e3,
                "queue_ms": (r["t_first_sched"] - r["arrival"]) * 1e3, "status": r["status"]}


def _rerun_point(point, label: str) -> Representative | None:
    from .lowering import Point, scheduler_vector
    from .runner import run_points
    from .kernels import engine as E
    if isinstance(point, Point):
        res = run_points([point], per_request=True, log_steps=LOG_STEPS)
        n = int(min(res["steps_per_sub"][0], LOG_STEPS))
        kvb = float(scheduler_vector(point.client)[E.S_TOTAL_BLOCKS])
        return Representative(label, _per_request(res["requests"]), res["steplog"][0, :n], kvb)
    from .runner import run_pipeline
    run = run_pipeline(point.scenario, point.requests, point.seed_seq, per_request=True)
    return Representative(label, _per_request(run["requests"]), None, float("nan"))


def _sweep_spec(ds):
    from .catalog import tomllib
    from .sweep import parse_sweep
    text = ds.attrs.get("sweep_spec_toml")
    if not text:
        return None
    try:
        return parse_sweep(tomllib.loads(text), text, ds.attrs.get("sweep_name", "sweep"))
    except Exception:  # a spec written by another version: no re-simulation, summary figures only
        return None


def representatives(ds, rows) -> list[Representative]:
    """Per-request data and step logs of the representative points (re-simulated)."""
    from .sweep import build_point, point_values
    out = []
    if "spec_json" in ds.attrs and "status" not in ds:  # one run written by `mistfast run -o`
        from .scenario import any_point
        from .specs import parse_scenario
        spec = parse_scenario(json.loads(ds.attrs["spec_json"]), base={})
        point = any_point(spec)
        rep = _rerun_point(point, "this run")
        return [rep] if rep else []
    spec = _sweep_spec(ds)
    if spec is None or rows is None or rows.empty:
        return out
    allv = point_values(spec) if spec.mode != "product" else None
    for _, row in rows.iterrows():
        if spec.mode == "product":
            values = tuple(_native(row[a.name]) for a in spec.axes)
        else:
            values = allv[int(row["point"])]
        point, why, _ = build_point(spec, values)
        if point is None:
            continue
        label = _label(spec, values, _policy_dim(ds)) + ("" if row.get("meets_slo", True) else " (misses the SLO)")
        rep = _rerun_point(point, label)
        if rep:
            out.append(rep)
    return out


def _native(x):
    return x.item() if hasattr(x, "item") else x


def _label(spec, values, pol) -> str:
    parts = {a.name: v for a, v in zip(spec.axes, values)}
    head = str(parts.pop(pol)) + ": " if pol in parts else ""
    return head + ", ".join(f"{k}={v}" for k, v in parts.items())


# ----------------------------------------------------------------------------- figures
def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def fig_latency_throughput(ds, path: Path) -> bool:
    """p99 TTFT and TPOT against output throughput: every valid point, and per policy the curve of
    the lowest latency reached at each throughput (its Pareto front)."""
    if "status" not in ds:  # one run: a single point, no curve
        return False
    df = _valid_table(ds)
    if len(df) < 2:
        return False
    plt = _plt()
    pol = _policy_dim(ds)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    slo = _slo(ds)
    for ax, y, lim in zip(axes, ("ttft_p99_ms", "tpot_p99_ms"), (slo.get("ttft_ms"), slo.get("tpot_ms"))):
        for i, (name, g) in enumerate(df.groupby(pol, sort=False) if pol else [("all points", df)]):
            color = f"C{i}"
            ax.scatter(g["output_tok_s"], g[y], s=6, alpha=0.25, color=color)
            front = _front(g["output_tok_s"].to_numpy(), g[y].to_numpy())
            ax.plot(*front, "-o", ms=3, color=color, label=str(name))
        if lim:
            ax.axhline(lim, color="k", ls="--", lw=0.8, label=f"SLO {lim:g} ms")
        _log(ax, "y")
        ax.set_xlabel("output throughput (tokens/s)")
        ax.set_ylabel(f"{ds[y].attrs.get('long_name', y)} (ms)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(title=pol or None, fontsize=8)
    fig.suptitle("Latency against throughput (line: lowest latency at each throughput)")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _front(x, y):
    """Points not beaten by one with more throughput and less latency, by throughput."""
    order = np.argsort(-x, kind="mergesort")
    xs, ys, best = [], [], np.inf
    for i in order:
        if y[i] < best:
            xs.append(x[i])
            ys.append(y[i])
            best = y[i]
    return np.array(xs[::-1]), np.array(ys[::-1])


def fig_cdfs(ds, reps: list[Representative], path: Path) -> bool:
    if not reps:
        return False
    plt = _plt()
    slo = _slo(ds)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    for ax, key, lim, lab in zip(axes, ("ttft_ms", "tpot_ms"), (slo.get("ttft_ms"), slo.get("tpot_ms")),
                                 ("TTFT (ms)", "TPOT (ms)")):
        for i, r in enumerate(reps):
            x = np.sort(r.req[key][np.isfinite(r.req[key])])
            if x.size:
                ax.step(x, np.arange(1, x.size + 1) / x.size, where="post", color=f"C{i}", label=r.label)
        if lim:
            ax.axvline(lim, color="k", ls="--", lw=0.8, label=f"SLO {lim:g} ms")
        _log(ax, "x")
        ax.set_xlabel(lab)
        ax.set_ylabel("fraction of requests")
        ax.grid(True, which="both", alpha=0.3)
    axes[1].legend(fontsize=7, loc="lower right")  # the TPOT panel's lower right is empty
    fig.suptitle("Latency distributions" + (" of the best point per policy" if len(reps) > 1 else ""))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def timeline(steplog: np.ndarray, kv_blocks: float, n_bins: int = 200) -> tuple[np.ndarray, ...]:
    """(bin centres s, busy fraction, KV blocks in use / KV blocks) over the run: busy = step time
    overlapping each bin / bin width; KV use = the last step's value in each bin (held between)."""
    t0, dt, kv = steplog[:, 0], steplog[:, 1], steplog[:, 6]
    end = float((t0 + dt).max())
    edges = np.linspace(0.0, end, n_bins + 1)
    busy = np.zeros(n_bins)
    for a, b in zip(t0, t0 + dt):
        i0 = min(int(np.searchsorted(edges, a, "right")) - 1, n_bins - 1)
        i1 = min(int(np.searchsorted(edges, b, "right")) - 1, n_bins - 1)
        for i in range(max(i0, 0), i1 + 1):
            busy[i] += min(b, edges[i + 1]) - max(a, edges[i])
    busy /= np.diff(edges)
    idx = np.searchsorted(t0, edges[1:], "left") - 1  # last step starting before the bin ends
    kv_use = np.where(idx >= 0, kv[np.maximum(idx, 0)], 0.0) / (kv_blocks if kv_blocks > 0 else np.nan)
    return 0.5 * (edges[1:] + edges[:-1]), busy, kv_use


def batch_timeline(steplog: np.ndarray, n_bins: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """(bin centres s, mean sequences per step: prefill chunks + decodes) over the run."""
    t0, seqs = steplog[:, 0], steplog[:, 2] + steplog[:, 4]
    edges = np.linspace(0.0, float((steplog[:, 0] + steplog[:, 1]).max()), n_bins + 1)
    k = np.clip(np.searchsorted(edges, t0, "right") - 1, 0, n_bins - 1)
    with np.errstate(invalid="ignore"):
        mean = np.bincount(k, weights=seqs, minlength=n_bins) / np.bincount(k, minlength=n_bins)
    return 0.5 * (edges[1:] + edges[:-1]), mean


def fig_timelines(reps: list[Representative], path: Path) -> bool:
    reps = [r for r in reps if r.steplog is not None and len(r.steplog)]
    if not reps:
        return False
    plt = _plt()
    fig, axes = plt.subplots(3, 1, figsize=(11, 7.5), sharex=True, constrained_layout=True)
    for i, r in enumerate(reps):
        t, busy, kv = timeline(r.steplog, r.kv_blocks)
        axes[0].plot(t, busy, color=f"C{i}", lw=1, label=r.label)
        tb, seqs = batch_timeline(r.steplog)
        axes[1].plot(tb, seqs, color=f"C{i}", lw=1)
        axes[2].plot(t, kv, color=f"C{i}", lw=1)
    axes[0].set_ylabel("busy fraction")
    axes[1].set_ylabel("sequences per step")
    axes[2].set_ylabel("KV blocks in use / KV blocks")
    axes[2].set_xlabel("simulated time (s)")
    for ax in axes:
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("Utilisation and KV use over time (replica 0)")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def stage_breakdown(ds, rows) -> tuple[list[str], dict[str, list[float]]]:
    """(bar labels, {segment: mean ms per bar}): the stages of a pipeline run, or for single-client
    points queueing, prefill (TTFT after queueing) and decode (E2E after TTFT)."""
    if "stage_service_ms" in ds and "stage_kind" in ds.dims and "status" not in ds:
        keep = [i for i, c in enumerate(np.asarray(ds["stage_count"]).reshape(-1)) if c > 0]
        labels = [str(ds.stage_kind.values[i]) for i in keep]
        return labels, {seg: [float(np.asarray(ds[f"stage_{seg}_ms"]).reshape(-1)[i]) for i in keep]
                        for seg in ("transfer", "queue", "service")}
    if "status" not in ds and "e2e_mean_ms" in ds:  # one single-client run
        import pandas as pd
        rows = pd.DataFrame([{k: float(ds[k]) for k in ("queue_delay_mean_ms", "ttft_mean_ms", "e2e_mean_ms")}])
    if rows is None or rows.empty or "e2e_mean_ms" not in rows:
        return [], {}
    pol = _policy_dim(ds)
    labels = [str(r[pol]) if pol else ("best point" if "status" in ds else "this run") for _, r in rows.iterrows()]
    q = rows["queue_delay_mean_ms"].to_numpy(float)
    ttft = rows["ttft_mean_ms"].to_numpy(float)
    e2e = rows["e2e_mean_ms"].to_numpy(float)
    return labels, {"queueing": list(q), "prefill (TTFT after queueing)": list(ttft - q),
                    "decode (E2E after TTFT)": list(e2e - ttft)}


def fig_stage_breakdown(ds, rows, path: Path) -> bool:
    labels, segs = stage_breakdown(ds, rows)
    if not labels:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 0.6 * len(labels) + 2), constrained_layout=True)
    left = np.zeros(len(labels))
    for i, (name, vals) in enumerate(segs.items()):
        v = np.nan_to_num(np.asarray(vals, float))
        ax.barh(labels, v, left=left, color=f"C{i}", label=name)
        left += v
    ax.set_xlabel("mean time per request (ms)")
    ax.legend(fontsize=8)
    ax.grid(True, axis="x", alpha=0.3)
    ax.set_title("Where the time goes" + (" (best point per policy)" if "status" in ds else ""))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def fig_pareto(ds, path: Path) -> bool:
    from .analysis import pareto_front
    obj = "output_tok_s_per_usd_per_hour"
    if obj not in ds or "status" not in ds:
        return False
    df = _valid_table(ds)
    if len(df) < 2:
        return False
    front = pareto_front(ds, x=obj, y="ttft_p99_ms")
    plt = _plt()
    pol = _policy_dim(ds)
    fig, ax = plt.subplots(figsize=(8, 5), constrained_layout=True)
    for i, (name, g) in enumerate(df.groupby(pol, sort=False) if pol else [("points", df)]):
        ax.scatter(g[obj], g["ttft_p99_ms"], s=8, alpha=0.4, color=f"C{i}", label=str(name))
    ax.plot(front[obj], front["ttft_p99_ms"], "k-o", ms=4, label="Pareto front")
    lim = _slo(ds).get("ttft_ms")
    if lim:
        ax.axhline(lim, color="k", ls="--", lw=0.8, label=f"SLO {lim:g} ms")
    _log(ax, "y")
    ax.set_xlabel("output tokens/s per USD/h")
    ax.set_ylabel("TTFT p99 (ms)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Throughput per price against p99 TTFT")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _log(ax, axis: str) -> None:
    """A log axis with plain numbers on the decades and no minor-tick labels (they collide)."""
    from matplotlib.ticker import FuncFormatter, NullFormatter
    target = ax.xaxis if axis == "x" else ax.yaxis
    (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
    target.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    lo, hi = (ax.get_xlim() if axis == "x" else ax.get_ylim())
    if lo > 0 and hi / lo < 100:  # under two decades: label the 2x and 5x minor ticks too
        target.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "25" else ""))
    else:
        target.set_minor_formatter(NullFormatter())


def _slo(ds) -> dict:
    from .variables import slo_of
    return slo_of(ds)


# ----------------------------------------------------------------------------- page
_CAPTIONS = {
    "latency_throughput.png": "p99 TTFT and TPOT against output throughput, every valid point; the line is each "
                              "policy's lowest latency at each throughput.",
    "latency_cdf.png": "Distribution of TTFT and TPOT over requests (re-simulated with the sweep's seed).",
    "timeline.png": "Busy fraction and KV-cache use over simulated time.",
    "stage_breakdown.png": "Mean time per request in each phase or pipeline stage.",
    "pareto.png": "Output tokens/s per USD/h against p99 TTFT; black: configurations no other beats on both.",
}


def write_report(path: str | Path, out_dir: str | Path) -> Path:
    """Write the figures and ``index.html`` of a results file into ``out_dir``; returns the page."""
    import xarray as xr
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    from .sweep import decode_reasons
    with xr.open_dataset(path, engine="netcdf4") as ds:
        ds = decode_reasons(ds.load())
    rows = representatives_rows(ds) if "status" in ds else None
    reps = representatives(ds, rows)
    made = []
    for name, ok in (("latency_throughput.png", lambda p: fig_latency_throughput(ds, p)),
                     ("latency_cdf.png", lambda p: fig_cdfs(ds, reps, p)),
                     ("timeline.png", lambda p: fig_timelines(reps, p)),
                     ("stage_breakdown.png", lambda p: fig_stage_breakdown(ds, rows, p)),
                     ("pareto.png", lambda p: fig_pareto(ds, p))):
        if ok(out / name):
            made.append(name)
    page = out / "index.html"
    page.write_text(_html(ds, Path(path).name, rows, made))
    return page


def _html(ds, name: str, rows, figures: list[str]) -> str:
    e = html.escape
    slo = _slo(ds)
    head = (f"<h1>mistfast report: {e(name)}</h1>"
            f"<p>{e(str(ds.attrs.get('source', 'mistfast')))}; {e(str(ds.attrs.get('n_points', 1)))} points"
            f"{'; ' + e(str(ds.attrs.get('n_invalid'))) + ' invalid' if 'n_invalid' in ds.attrs else ''}. "
            f"SLO: TTFT {slo.get('ttft_ms')} ms, TPOT {slo.get('tpot_ms')} ms"
            f"{', E2E ' + str(slo['e2e_ms']) + ' ms' if slo.get('e2e_ms') else ''}.</p>")
    table = ""
    if rows is not None and not rows.empty:
        table = ('<h2>Best point per policy</h2><div style="overflow-x:auto">'
                 + rows.to_html(index=False, float_format=lambda x: f"{x:.4g}", classes="best", border=0) + "</div>")
    elif "n_arrived" in ds and "status" not in ds:
        from .summary_text import format_summary
        table = "<h2>Summary</h2><pre>" + e(format_summary(ds)) + "</pre>"
    figs = "".join(f'<figure><img src="{e(f)}" alt="{e(f[:-4])}"><figcaption>{e(_CAPTIONS[f])}</figcaption></figure>'
                   for f in figures)
    style = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;color:#222}"
             "figure{margin:2em 0}img{max-width:100%;border:1px solid #ddd}"
             "table.best{border-collapse:collapse;font-size:0.85em}table.best td,table.best th"
             "{padding:3px 8px;border-bottom:1px solid #ddd;text-align:right}")
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>mistfast report: {e(name)}</title>"
            f"<style>{style}</style></head><body>{head}{table}{figs}</body></html>\n")
