"""Command line: ``mistfast run|sweep|summary|step|catalog|validate``."""
from __future__ import annotations

import sys
import time

import click

from .specs import SpecError


def _fail(msg: str) -> None:
    click.echo(f"error: {msg}", err=True)
    sys.exit(2)


def _parse_set(items) -> dict:
    import tomllib
    out = {}
    for it in items:
        if "=" not in it:
            _fail(f"--set {it!r}: expected PATH=VALUE, e.g. clients[0].tp=2")
        k, v = it.split("=", 1)
        try:
            out[k.strip()] = tomllib.loads(f"x = {v}")["x"]
        except Exception:
            out[k.strip()] = v
    return out


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mistfast")
def main():
    """mistfast: fast simulator of multi-stage LLM inference serving.

    \b
    Typical use:
      mistfast run scenario.toml                 simulate one scenario, print a summary
      mistfast sweep sweeps/quickstart.toml -o results.nc
      mistfast summary results.nc                what a results file holds, best points
      mistfast step --model llama-3.1-70b --device H100 --tp 8 --prefill 0:2048
      mistfast catalog models                    list presets
    """


@main.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--set", "sets", multiple=True, metavar="PATH=VALUE", help="override a spec field (repeatable)")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="write the Dataset to netCDF")
@click.option("--per-request", is_flag=True, help="include per-request variables")
@click.option("--trace", "trace_out", type=click.Path(dir_okay=False),
              help="write a Chrome/Perfetto trace (JSON) of steps and requests")
def run(spec, sets, output, per_request, trace_out):
    """Simulate one scenario TOML and print a readable summary."""
    from .scenario import simulate
    from .specs import load_scenario
    try:
        sc = load_scenario(spec, _parse_set(sets))
        t0 = time.perf_counter()
        ds = simulate(sc, per_request=per_request or bool(trace_out), log_steps=200000 if trace_out else 0)
        dt = time.perf_counter() - t0
    except SpecError as e:
        _fail(str(e))
    click.echo(format_summary(ds))
    click.echo(f"\nsimulated in {dt * 1e3:.1f} ms")
    if trace_out:
        from .trace import write_chrome_trace
        write_chrome_trace(ds, trace_out)
        click.echo(f"trace written to {trace_out} (open in https://ui.perfetto.dev)")
        ds = ds.drop_vars([v for v in ds.variables if str(v).startswith("step")])
        ds = ds.drop_dims([d for d in ("step",) if d in ds.dims])
    if output:
        from .sweep import write_netcdf
        try:
            write_netcdf(ds, output)
        except SpecError as e:  # parts.SweepOutputError: disk full, no permission
            _fail(str(e))
        click.echo(f"written to {output}")


def format_summary(ds) -> str:
    def g(name, fmt="{:.2f}"):
        v = ds[name].values
        return fmt.format(float(v)) if v == v else "n/a"
    lines = [
        f"requests   arrived {int(ds.n_arrived)}  finished {int(ds.n_finished)}  rejected {int(ds.n_rejected)}  "
        f"unfinished {int(ds.n_unfinished)}  not arrived {int(ds.n_not_arrived)}",
    ]
    if int(ds.n_rejected):
        rr = {str(k): int(v) for k, v in zip(ds.reject_reason.values, ds.n_rejected_by_reason.values) if v}
        lines.append(f"           rejected by reason: {rr}")
    lines += [
        f"{'':11}{'mean':>10}{'p50':>10}{'p90':>10}{'p99':>10}",
    ]
    for base, label in (("ttft", "TTFT ms"), ("tpot", "TPOT ms"), ("e2e", "E2E ms"), ("queue_delay", "queue ms")):
        lines.append(f"{label:<11}" + "".join(f"{g(f'{base}_{q}_ms'):>10}" for q in ("mean", "p50", "p90", "p99")))
    lines += [
        f"throughput {g('output_tok_s', '{:.1f}')} output tok/s, {g('total_tok_s', '{:.1f}')} total tok/s, "
        f"{g('request_throughput_rps', '{:.3f}')} req/s",
        f"SLO        goodput {g('goodput_rps', '{:.3f}')} req/s, attainment {g('slo_attainment', '{:.1%}')}",
        f"engine     {int(ds.n_steps)} steps, mean batch {g('mean_batch_size', '{:.1f}')} seqs / "
        f"{g('mean_batch_tokens', '{:.0f}')} tokens, busy {g('busy_fraction', '{:.1%}')}, "
        f"KV mean {g('kv_util_mean', '{:.1%}')} peak {g('kv_util_peak', '{:.1%}')}, preemptions {int(ds.preemptions)}",
        f"cost       {g('energy_J', '{:.3g}')} J ({g('energy_per_output_token_J', '{:.3g}')} J/token), "
        f"${g('cost_usd', '{:.4f}')}, {g('tokens_per_dollar', '{:.3g}')} tokens/$",
    ]
    return "\n".join(lines)


@main.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="netCDF results file")
@click.option("--dry-run", is_flag=True, help="print the number of points and an estimated time, run nothing")
@click.option("--scheduler", default="processes", show_default=True,
              help="serial | threads | processes | a dask.distributed address (tcp://host:8786)")
@click.option("--workers", type=int, default=None, help="worker count for threads/processes (default: cores)")
@click.option("--chunk-points", type=int, default=None, help="points per task (default: the spec's)")
@click.option("--resume", is_flag=True, help="reuse finished chunks of an interrupted run with the same output")
@click.option("--progress/--no-progress", default=True, show_default=True)
@click.option("--objective", default="output_tok_s_per_usd_per_hour", show_default=True,
              help="variable to maximise when printing the best configurations")
@click.option("--minimize", is_flag=True, help="the objective is a cost or latency: smaller is better")
@click.option("--constraint", "constraints", multiple=True, metavar="VAR<=VALUE",
              help="constraint for the best configurations (default: the scenario's SLOs as p99 limits)")
def sweep(spec, output, dry_run, scheduler, workers, chunk_points, resume, progress, objective, minimize, constraints):
    """Run a sweep TOML: many configuration points, one Dataset, optionally written to netCDF."""
    from .sweep import dry_run as _dry, load_sweep, run_sweep
    try:
        sw = load_sweep(spec)
    except SpecError as e:
        _fail(str(e))
    if dry_run:
        est = _dry(sw)
        shape = " x ".join(f"{k}={v}" for k, v in est["shape"].items())
        click.echo(f"{est['n_points']} points ({shape}) in {est['chunks']} chunks")
        click.echo(f"estimated {est['seconds_per_point_est'] * 1e3:.1f} ms per point: "
                   f"{est['serial_seconds_est']:.1f} s on one core")
        return
    t0 = time.perf_counter()
    try:
        ds = run_sweep(sw, output, scheduler=scheduler, workers=workers, resume=resume, progress=progress,
                       chunk_points=chunk_points)
    except SpecError as e:
        _fail(str(e))
    except KeyboardInterrupt as e:  # sweep.SweepInterrupted: finished parts are kept
        click.echo(getattr(e, "message", "interrupted — rerun with --resume"), err=True)
        sys.exit(130)
    dt = time.perf_counter() - t0
    n = ds.attrs["n_points"]
    click.echo(f"{n} points in {dt:.1f} s ({n / dt:.0f} points/s); {ds.attrs['n_invalid']} invalid")
    if output:
        click.echo(f"results: {output}")
    click.echo(_best_text(ds, objective, constraints, not minimize))


def _best_text(ds, objective, constraints, maximize=True) -> str:
    import json

    from .analysis import best_configs
    if not constraints:
        try:
            slo = json.loads(ds.attrs.get("slo_json", "{}"))
        except ValueError:
            slo = {}
        constraints = [f"ttft_p99_ms<={slo.get('ttft_ms', 1000.0)}", f"tpot_p99_ms<={slo.get('tpot_ms', 50.0)}",
                       "n_rejected<=0", "n_unfinished<=0"]
    by = "batching" if "batching" in ds.dims or "batching" in ds.coords else None
    try:
        best = best_configs(ds, objective, maximize=maximize, constraints=constraints, by=by, n=1)
    except KeyError as e:
        return f"(no best configurations: {e})"
    if best.empty:
        return f"no configuration meets {', '.join(constraints)}"
    import pandas as pd
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        return (f"best configurations by {objective} ({'max' if maximize else 'min'}) subject to {', '.join(constraints)}"
                + (f", per {by}" if by else "") + ":\n" + best.to_string(index=False))


@main.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--objective", default="output_tok_s_per_usd_per_hour", show_default=True)
@click.option("--minimize", is_flag=True, help="smaller objective is better")
@click.option("--constraint", "constraints", multiple=True, metavar="VAR<=VALUE")
def summary(path, objective, minimize, constraints):
    """Describe a results file (dims, variables, invalid points) and its best configurations."""
    import xarray as xr
    ds = xr.load_dataset(path, engine="netcdf4")
    click.echo(f"{path}: mistfast {ds.attrs.get('mistfast_version', '?')}, {ds.attrs.get('n_points', 1)} points")
    click.echo("dims: " + ", ".join(f"{k}={v}" for k, v in ds.sizes.items()))
    for k, v in ds.coords.items():
        if v.ndim == 1 and v.size <= 12:
            click.echo(f"  {k}: {v.values.tolist()}")
    click.echo(f"{len(ds.data_vars)} variables: " + ", ".join(list(ds.data_vars)[:12]) + ", ...")
    if "status" in ds and int((ds.status != 0).sum()):
        click.echo(f"invalid points: {int((ds.status != 0).sum())}; first reason: "
                   f"{ds.reason.values.ravel()[(ds.status.values.ravel() != 0)][0]}")
    if "status" in ds and ds.sizes:
        click.echo(_best_text(ds, objective, constraints, not minimize))


@main.command()
@click.option("--model", default="llama-3.1-8b", show_default=True)
@click.option("--device", default="H100", show_default=True)
@click.option("--tp", default=1, show_default=True)
@click.option("--pp", default=1, show_default=True)
@click.option("--ep", default=1, show_default=True)
@click.option("--precision", default="bf16", show_default=True)
@click.option("--reference", type=click.Choice(["correct", "genz"]), default="correct", show_default=True)
@click.option("--prefill", "prefill", multiple=True, metavar="PAST:NEW", help="prefill chunk (repeatable)")
@click.option("--decode", "decode", multiple=True, metavar="BRANCHES:KV[xCOUNT]",
              help="decode entry, e.g. 1:1024x64 for 64 decodes at KV 1024 (repeatable)")
def step(model, device, tp, pp, ep, precision, reference, prefill, decode):
    """Print the analytical latency of one engine step and its breakdown."""
    from .specs import make_client
    from .stepmodel import step_latency
    try:
        c = make_client(model, device, tp=tp, pp=pp, ep=ep, precision=precision, reference=reference)
        pf = []
        for p in prefill:
            parts = p.split(":")
            if len(parts) != 2:
                raise ValueError(p)
            pf.append((int(parts[0]), int(parts[1])))
        dec = []
        for d in decode:
            body, _, count = d.partition("x")
            parts = body.split(":")
            if len(parts) != 2:
                raise ValueError(d)
            w, kv = int(parts[0]), int(parts[1])
            dec += [(w, kv)] * int(count or 1)
    except SpecError as e:
        _fail(str(e))
    except ValueError:
        _fail("--prefill takes PAST:NEW and --decode BRANCHES:KV[xCOUNT], all integers")
    if not pf and not dec:
        pf = [(0, 512)]
    click.echo(f"{c.model.name} on {c.num_devices} x {c.device.name} (tp={tp}, pp={pp}, {precision}, {reference}); "
               f"{len(pf)} prefill chunks, {len(dec)} decodes")
    click.echo(str(step_latency(c, prefill=pf, decode=dec)))
    click.echo(f"weights per device {c.weight_bytes_device() / 2**30:.2f} GiB, KV capacity {c.kv_capacity_tokens()} tokens")


@main.command()
@click.argument("kind", type=click.Choice(["devices", "models", "memory_tiers", "links", "topologies"]),
                default="devices")
def catalog(kind):
    """List the presets of a catalog (data/*.toml)."""
    from .catalog import default_catalog
    cat = default_catalog()
    for name in cat.names(kind):
        e = cat.get(kind, name)
        desc = e.get("description") or e.get("architecture") or e.get("kind") or ""
        extra = ""
        if kind == "devices":
            extra = f"{e.get('memory_GiB', '?')} GiB, {e.get('memory_bandwidth_GBps', '?')} GB/s, bf16 {e.get('tflops', {}).get('bf16', '?')} TF"
        elif kind == "models":
            extra = f"D={e.get('hidden_size')} L={e.get('num_layers')} H={e.get('num_heads')}/{e.get('num_kv_heads')}"
        click.echo(f"{name:<22} {desc:<30} {extra}")


@main.command()
@click.argument("csv_path", type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--output", "out_dir", default="validation", show_default=True, type=click.Path(file_okay=False))
@click.option("--no-calibrate", is_flag=True, help="only the uncalibrated analytical model")
@click.option("--seed", default=0, show_default=True)
def validate(csv_path, out_dir, no_calibrate, seed):
    """Simulate measured data points and report predicted vs measured."""
    from . import validate as V
    sys.exit(V.main(csv_path, out_dir, calibrate=not no_calibrate, seed=seed))


if __name__ == "__main__":  # pragma: no cover
    main()
