"""Command line: ``mistfast run|sweep|summary|step|catalog|validate``."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from .errors import SpecError


def _fail(msg: str) -> None:
    click.echo(f"error: {msg}", err=True)
    sys.exit(2)


def _check_writable(path, option: str) -> None:
    """Refuse an output path that cannot be written, before any work (one line, no traceback)."""
    import os
    from pathlib import Path
    if not path:
        return
    p = Path(path)
    folder = p.parent if str(p.parent) else Path(".")
    if not folder.is_dir():
        _fail(f"{option} {path}: folder {str(folder)!r} does not exist")
    if p.is_dir():
        _fail(f"{option} {path}: is a folder; give a file name")
    if not os.access(folder, os.W_OK) or (p.exists() and not os.access(p, os.W_OK)):
        _fail(f"{option} {path}: no permission to write there")
    probe = folder / f".mistfast-write-probe-{os.getpid()}"
    try:   # permission bits do not tell everything (root, read-only mounts, /proc)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        _fail(f"{option} {path}: cannot write in {str(folder)!r}: {e.strerror or e}")


def _parse_set(items) -> dict:
    from .catalog import tomllib  # tomllib, or tomli on Python 3.10
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


class _Group(click.Group):
    """Turns a bad catalog file (``MISTFAST_CATALOG``) into one clear line, whatever the command."""

    def invoke(self, ctx):
        from .catalog import CatalogError
        try:
            return super().invoke(ctx)
        except CatalogError as e:
            _fail(str(e))


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mistfast")
def main():
    """mistfast: fast simulator of multi-stage LLM inference serving.

    \b
    Typical use:
      mistfast run scenario.toml                 simulate one scenario, print a summary
      mistfast sweep sweeps/quickstart.toml -o results.nc
      mistfast summary results.nc                what a results file holds, best points
      mistfast step --model llama-3.1-70b --device H100 --tp 8 --prefill 0:2048 --ops
      mistfast export results.nc --csv           tidy table for pandas, R, spreadsheets
      mistfast report results.nc -o report/      figures and an HTML page
      mistfast catalog models                    list presets
      mistfast datasets                          list named benchmark workloads
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
    from .specs import load_scenario
    _check_writable(output, "-o")
    _check_writable(trace_out, "--trace")
    try:
        sc = load_scenario(spec, _parse_set(sets))
    except SpecError as e:
        _fail(str(e))
    from .quickrun import kernel_kind, notice_if_compiling, timed_summary
    notice_if_compiling(kernel_kind(sc), lambda m: click.echo(m, err=True))
    want_ds = bool(output or per_request or trace_out)
    try:
        if want_ds:
            from .quickrun import load_kernels
            from .scenario import simulate
            load_kernels(sc, dataset=True)  # kernels, xarray and pandas set up outside the timing
            t0 = time.perf_counter()
            ds = simulate(sc, per_request=per_request or bool(trace_out), log_steps=200000 if trace_out else 0)
            dt = time.perf_counter() - t0
            summ = ds
        else:  # no Dataset wanted: skip xarray altogether (most of a small run's wall time)
            summ, dt, _ = timed_summary(sc)
    except SpecError as e:
        _fail(str(e))
    click.echo(format_summary(summ, sc.metrics.quantiles or None))
    click.echo(f"\nsimulated in {dt * 1e3:.1f} ms (imports and kernel loading excluded)")
    if trace_out:
        from .trace import write_chrome_trace
        try:
            write_chrome_trace(ds, trace_out)
        except OSError as e:
            _fail(f"--trace {trace_out}: cannot write: {e.strerror or e}")
        click.echo(f"trace written to {trace_out} (open in https://ui.perfetto.dev)")
        ds = ds.drop_vars([v for v in ds.variables if str(v).startswith("step")])
        ds = ds.drop_dims([d for d in ("step",) if d in ds.dims])
    if output:
        from .sweep import write_netcdf
        try:
            write_netcdf(ds, output)
        except SpecError as e:  # parts.SweepOutputError: disk full, no permission
            _fail(str(e))
        except OSError as e:
            _fail(f"-o {output}: cannot write: {e.strerror or e}")
        click.echo(f"written to {output}")


from .summary_text import format_summary  # noqa: E402 (report.py and `run` print it)


@main.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="netCDF results file")
@click.option("--dry-run", is_flag=True, help="print the number of points and an estimated time, run nothing")
@click.option("--scheduler", default="auto", show_default=True,
              help="auto | serial | threads | processes | a dask.distributed address (tcp://host:8786); "
                   "auto runs small sweeps serially (worker start-up would cost more than it saves)")
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
    _check_writable(output, "-o")
    try:
        sw = load_sweep(spec)
    except SpecError as e:
        _fail(str(e))
    from .quickrun import notice_if_compiling
    notice_if_compiling("single", lambda m: click.echo(m, err=True))
    if dry_run:
        est = _dry(sw)
        shape = " x ".join(f"{k}={v}" for k, v in est["shape"].items())
        click.echo(f"{est['n_points']} points ({shape}) in {est['chunks']} chunks")
        click.echo(f"estimated {est['seconds_per_point_est'] * 1e3:.1f} ms per point: "
                   f"{est['serial_seconds_est']:.1f} s on one core (kernel compilation and loading excluded); "
                   f"--scheduler auto would run it {_auto_scheduler(sw)}")
        return
    if scheduler == "auto":
        scheduler = _auto_scheduler(sw)
    t0 = time.perf_counter()
    try:
        ds = run_sweep(sw, output, scheduler=scheduler, workers=workers, resume=resume, progress=progress,
                       chunk_points=chunk_points)
    except SpecError as e:
        _fail(str(e))
    except KeyboardInterrupt:  # sweep.SweepInterrupted too: finished parts are kept
        _interrupted(output)
    except PermissionError as e:
        _fail(f"-o {output}: cannot write {e.filename or ''}: {e.strerror or e}")
    if output:  # the results file holds everything: the chunk files of --resume are not needed now
        import shutil
        shutil.rmtree(str(output) + ".parts", ignore_errors=True)
    dt = time.perf_counter() - t0
    n = ds.attrs["n_points"]
    click.echo(f"{n} points in {dt:.1f} s ({n / dt:.0f} points/s); {ds.attrs['n_invalid']} invalid")
    if output:
        click.echo(f"results: {output}")
    click.echo(_best_text(ds, objective, constraints, not minimize))


# simulated requests below which a sweep runs serially under --scheduler auto: starting worker
# processes and loading the kernels in each costs about 2-3 s, which a serial run of this many
# requests (about 200 k requests/s on one core) does not reach
AUTO_SERIAL_REQUESTS = 1_000_000


def _auto_scheduler(sw) -> str:
    """serial for small sweeps (one chunk, or few simulated requests), processes otherwise."""
    import math

    from .specs import DEFAULT_SCENARIO, deep_merge
    if sw.n_points <= sw.chunk_points or (os_cpus() or 1) < 2:
        return "serial"
    n_req = deep_merge(DEFAULT_SCENARIO, sw.base).get("workload", {}).get("num_requests", 1000)
    for a in sw.axes:  # the largest value when the request count itself is swept
        if a.path.endswith("workload.num_requests") and a.values:
            n_req = max(a.values)
    n_req = n_req if isinstance(n_req, (int, float)) and math.isfinite(n_req) else 1000
    return "serial" if sw.n_points * n_req < AUTO_SERIAL_REQUESTS else "processes"


def os_cpus() -> int | None:
    import os
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def _interrupted(output) -> None:
    """Ctrl-C during a sweep: finished chunks are on disk (with -o); say how to go on."""
    if output:
        click.echo(f"\ninterrupted — rerun with --resume (same command) to compute only the missing chunks of {output}",
                   err=True)
    else:
        click.echo("\ninterrupted — nothing was saved; give -o results.nc to make a sweep resumable", err=True)
    sys.exit(130)


def _best_text(ds, objective, constraints, maximize=True) -> str:
    from .analysis import best_configs
    from .variables import default_constraints
    if not constraints:
        constraints = default_constraints(ds)  # from the SLO the points were simulated with
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
    from .sweep import decode_reasons
    ds = decode_reasons(xr.load_dataset(path, engine="netcdf4"))
    click.echo(f"{path}: mistfast {ds.attrs.get('mistfast_version', '?')}, {ds.attrs.get('n_points', 1)} points")
    click.echo("dims: " + ", ".join(f"{k}={v}" for k, v in ds.sizes.items()))
    from .variables import slo_of
    slo = slo_of(ds)
    click.echo(f"SLO (goodput, attainment, default constraints): TTFT {slo['ttft_ms']:g} ms, TPOT {slo['tpot_ms']:g} ms"
               + (f", E2E {slo['e2e_ms']:g} ms" if slo.get("e2e_ms") else ""))
    for k, v in ds.coords.items():
        if v.ndim == 1 and v.size <= 12:
            click.echo(f"  {k}: {v.values.tolist()}")
    click.echo(f"{len(ds.data_vars)} variables: " + ", ".join(list(ds.data_vars)[:12]) + ", ...")
    if "status" in ds and int((ds.status != 0).sum()):
        click.echo(f"invalid points: {int((ds.status != 0).sum())}; first reason: "
                   f"{ds.reason.values.ravel()[(ds.status.values.ravel() != 0)][0]}")
    if "status" in ds and ds.sizes:
        click.echo(_best_text(ds, objective, constraints, not minimize))
    elif "status" not in ds and "n_arrived" in ds and ds["n_arrived"].ndim == 0:  # one simulated scenario
        click.echo(format_summary(ds))


@main.command()
@click.option("--model", default="llama-3.1-8b", show_default=True)
@click.option("--device", default="H100", show_default=True)
@click.option("--tp", default=1, show_default=True)
@click.option("--pp", default=1, show_default=True)
@click.option("--ep", default=1, show_default=True)
@click.option("--precision", default=None, help="default: the checkpoint's format (e.g. gpt-oss: MXFP4 experts), else bf16")
@click.option("--reference", type=click.Choice(["correct", "genz"]), default="correct", show_default=True)
@click.option("--prefill", "prefill", multiple=True, metavar="PAST:NEW", help="prefill chunk (repeatable)")
@click.option("--decode", "decode", multiple=True, metavar="BRANCHES:KV[xCOUNT]",
              help="decode entry, e.g. 1:1024x64 for 64 decodes at KV 1024 (repeatable)")
@click.option("--ops", is_flag=True, help="per-operator table: count, FLOP, HBM bytes, bound, time")
def step(model, device, tp, pp, ep, precision, reference, prefill, decode, ops):
    """Print the analytical latency of one engine step and its breakdown."""
    from .opbreakdown import step_latency_python as step_latency  # same numbers, no kernel loading
    from .specs import make_client
    try:
        c = make_client(model, device, tp=tp, pp=pp, ep=ep, reference=reference,
                        **({"precision": precision} if precision else {}))
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
    click.echo(f"{c.model.name} on {c.num_devices} x {c.device.name} (tp={tp}, pp={pp}, {precision or c.precision.weights + (f'+{c.precision.experts} experts' if c.precision.experts else '')}, {reference}); "
               f"{len(pf)} prefill chunks, {len(dec)} decodes")
    click.echo(str(step_latency(c, prefill=pf, decode=dec)))
    if ops:
        from .opbreakdown import format_ops, op_breakdown
        rows, total = op_breakdown(c, prefill=pf, decode=dec)
        click.echo("\nper operator (per device; count = times the op runs in the step):")
        click.echo(format_ops(rows, total))
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
            if e.get("num_experts"):
                extra += f" E={e['num_experts']}/top{e.get('top_k')}"
            if e.get("sliding_window"):
                extra += f" {e.get('window_kind', 'sliding')} window {e['sliding_window']}"
        else:
            extra = _entry_fields(e)
        click.echo(f"{name:<22} {desc:<30} {extra}".rstrip())


def _entry_fields(e: dict) -> str:
    """The numeric and short fields of a links / memory_tiers / topologies entry, as k=v."""
    parts = []
    for k, v in e.items():
        if k in ("name", "description", "kind", "source", "sources", "notes"):
            continue
        if k == "levels" and isinstance(v, list):
            lv = [f"{x.get('name', '?')}: {x.get('bandwidth_GBps', '?')} GB/s x {x.get('efficiency', 1.0)}, "
                  f"{x.get('latency_us', '?')} us" for x in v if isinstance(x, dict)]
            parts.append("levels=[" + "; ".join(lv) + "]")
        elif isinstance(v, (int, float, bool)) or (isinstance(v, str) and len(v) <= 24):
            parts.append(f"{k}={v}")
    return " ".join(parts)


@main.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--csv", "fmt", flag_value="csv", default=True, help="write CSV (the default)")
@click.option("--parquet", "fmt", flag_value="parquet", help="write Parquet (needs pyarrow)")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="output file (default: next to PATH)")
@click.option("--per-request", is_flag=True, help="one row per request (runs simulated with --per-request)")
def export(path, fmt, output, per_request):
    """Write a results file as a tidy table: one row per configuration point (or per request)."""
    from .export import export as _export
    try:
        out = _export(path, fmt, output, per_request=per_request)
    except (ValueError, OSError) as e:
        _fail(f"{path}: {e}")
    click.echo(f"written to {out}")


@main.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--output", "out_dir", default="report", show_default=True, type=click.Path(file_okay=False))
def report(path, out_dir):
    """Figures (latency-throughput, CDFs, timelines, stage breakdown, Pareto front) and an HTML page."""
    from .quickrun import notice_if_compiling
    from .report import write_report
    notice_if_compiling("single", lambda m: click.echo(m, err=True))
    try:
        page = write_report(path, out_dir)
    except (ValueError, OSError, KeyError) as e:
        _fail(f"{path}: {e}")
    figs = sorted(p.name for p in page.parent.glob("*.png"))
    click.echo(f"{len(figs)} figures ({', '.join(figs)}) and {page}")


@main.command("datasets")
def datasets_cmd():
    """List the named benchmark datasets (workload.dataset = NAME) with their length statistics."""
    from . import datasets as D
    click.echo(f"{'name':<17} {'input mean/p50/p99':>20} {'output mean/p50/p99':>20}  title")
    for name in D.dataset_names():
        s = D.dataset_stats(name)
        ins = f"{s['input_mean']:.0f}/{s['input_p50']:.0f}/{s['input_p99']:.0f}"
        outs = f"{s['output_mean']:.0f}/{s['output_p50']:.0f}/{s['output_p99']:.0f}"
        click.echo(f"{name:<17} {ins:>20} {outs:>20}  {D.get_dataset(name).title}")


@main.command()
@click.argument("csv_paths", nargs=-1, required=True)
@click.option("-o", "--output", "out_dir", default=None, type=click.Path(file_okay=False),
              help="folder for report.csv, report.md, the plot and calibration.toml  [default: validation]")
@click.option("--calibration", default=None,
              help="shipped (data/calibration.toml as a client gets it) | fit (train/test split) | none | FILE.toml  "
                   "[default: fit]")
@click.option("--cv", type=click.Choice(["source", "document"]), default=None,
              help="leave-one-source-out cross-validation: hold out each publisher, a GitHub repository or a web "
                   "site (source), or each file or page (document)")
@click.option("--cv-only", default=None, metavar="TEXT",
              help="with --cv: hold out only the sources containing TEXT (one fold, for iterating)")
@click.option("--no-calibrate", is_flag=True, help="same as --calibration none")
@click.option("--seed", default=0, show_default=True, help="train/test split seed (--calibration fit)")
@click.option("--test-fraction", default=0.3, show_default=True, help="held-out share of measurement groups (fit)")
@click.option("--write-catalog", default=None, help="also write the fitted calibration TOML here (e.g. data/calibration.toml)")
def validate(csv_paths, out_dir, calibration, cv, cv_only, no_calibrate, seed, test_fraction, write_catalog):
    """Simulate measured data points and report predicted vs measured (one or more CSV files)."""
    from . import validate as V
    paths = list(csv_paths)
    if out_dir is None and len(paths) > 1 and not paths[-1].lower().endswith((".csv", ".gz")):
        out_dir = paths.pop()  # historical form: CSV OUT_DIR
    for p in paths:
        if not Path(p).is_file():
            _fail(f"measurements file {p!r} not found")
    if no_calibrate:
        calibration = "none"
    sys.exit(V.main(paths if len(paths) > 1 else paths[0], out_dir or "validation", calibrate=True,
                    seed=seed, write_catalog=write_catalog, test_fraction=test_fraction,
                    calibration=calibration, cv=cv, cv_only=cv_only))


@main.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--slo", "slo_name", default="spec", show_default=True,
              help="constraint set: spec (the scenario's [slo] as p99 limits), table2, table2-rag")
@click.option("--constraint", "constraints", multiple=True, metavar="'VAR<=VALUE'",
              help="explicit constraint over summary variables (repeatable; replaces --slo)")
@click.option("--rel-tol", default=0.02, show_default=True, help="stop when fail rate / pass rate <= 1 + rel-tol")
@click.option("--min-finished", default=0.99, show_default=True, help="required finished fraction of requests")
@click.option("--set", "sets", multiple=True, metavar="PATH=VALUE", help="override a scenario field (repeatable)")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="write the result Dataset to netCDF")
def capacity(spec, slo_name, constraints, rel_tol, min_finished, sets, output):
    """Highest request rate at which every SLO holds, for a scenario or every point of a sweep."""
    from .capacity_search import capacity as run_capacity
    from .specs import load_scenario, load_toml
    try:
        target = spec
        if sets:
            if "sweep" in load_toml(spec):
                _fail("--set applies to scenario files; edit the sweep's [scenario] table instead")
            target = load_scenario(spec, _parse_set(sets))
        t0 = time.perf_counter()
        ds = run_capacity(target, list(constraints) if constraints else slo_name, rel_tol=rel_tol,
                          min_finished=min_finished)
    except SpecError as e:
        _fail("\n".join(e.problems))
    except (FileNotFoundError, ValueError) as e:
        _fail(str(e))
    click.echo(f"constraints: {ds.attrs['constraints']}  (searched in {time.perf_counter() - t0:.1f} s)")
    table = ds[["max_rate_rps", "rate_fail_rps", "binding_slo", "max_rate_per_replica_rps"]]
    if ds["max_rate_rps"].ndim == 0:
        r = float(ds["max_rate_rps"])
        click.echo(f"max rate: {r:.4g} req/s (fails at {float(ds['rate_fail_rps']):.4g}: {ds['binding_slo'].item()}); "
                   f"per replica {float(ds['max_rate_per_replica_rps']):.4g} req/s")
        if not ds["max_rate_rps"].notnull():
            why = ds["invalid_reason"].item() or ("the limit is missed at any load" if int(ds["fails_at_any_rate"])
                                                  else "fails even at the lowest rate searched")
            click.echo(f"no passing rate: {why}")
    else:
        click.echo(table.to_dataframe().to_string())
    if output:
        from .sweep import write_netcdf
        write_netcdf(ds, output)
        click.echo(f"wrote {output}")


if __name__ == "__main__":  # pragma: no cover
    main()
