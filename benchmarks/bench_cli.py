"""Fresh-process wall time of the instant commands: ``mistfast run`` of a small scenario and
``mistfast step``, each run 5 times in a new Python process once the kernels are cached (a first,
untimed run compiles or loads them); prints the median and the spread.

    python benchmarks/bench_cli.py                 # this checkout
    python benchmarks/bench_cli.py --root /path    # another checkout (e.g. before a change)
    python benchmarks/bench_cli.py --no-pyc        # keep PYTHONDONTWRITEBYTECODE=1: writes nothing
                                                   # into the checkout, compiles modules on each start
    python benchmarks/bench_cli.py --compare /path # before/after: the other checkout's run of each
                                                   # command alternates with this one's (same load)
    python benchmarks/bench_cli.py --only run      # some commands only (repeatable)

Prints wall time and CPU time (user + system of the child): on a machine shared with other jobs
the wall time grows with the load while the CPU time stays close to the quiet-machine wall time.
Byte-code caching is on (``PYTHONDONTWRITEBYTECODE`` is dropped), as in a normal install; without
it every mistfast module is compiled from source on each start. Where the time goes inside one
process: ``python -X importtime -m mistfast.cli step ...`` (see docs/instant_commands.md).
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SCENARIO = """
[simulation]
horizon_s = 60
seed = 259
[workload]
num_requests = 200
arrival = { process = "poisson", rate_rps = 4 }
[[clients]]
name = "llm"
model = "llama-3.1-8b"
device = "H100"
"""

COMMANDS = {
    "run": ["run", "{scenario}"],
    "run -o (Dataset)": ["run", "{scenario}", "-o", "{tmp}/small.nc"],
    "--help": ["--help"],
    "catalog models": ["catalog", "models"],
    "step": ["step", "--model", "llama-3.1-70b", "--device", "H100", "--tp", "8", "--prefill", "0:2048",
             "--decode", "1:1024x32"],
    "step --ops": ["step", "--model", "llama-3.1-70b", "--device", "H100", "--tp", "8", "--prefill", "0:2048",
                   "--decode", "1:1024x32", "--ops"],
}


def wall(cmd: list[str], env: dict) -> tuple[float, float]:
    """(wall s, CPU s) of one fresh process running ``cmd``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=env["PYTHONPATH"])
    dt = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stderr}")
    return dt, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def _row(name: str, runs: list[tuple[float, float]]) -> str:
    w = [x[0] for x in runs]
    c = [x[1] for x in runs]
    return f"{name:<25}{statistics.median(w):>10.3f}{min(w):>9.3f}{max(w):>9.3f}{statistics.median(c):>14.3f}"


def _env(root: str, no_pyc: bool) -> dict:
    env = {**os.environ, "PYTHONPATH": root, "NUMBA_NUM_THREADS": os.environ.get("NUMBA_NUM_THREADS", "1")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # as installed: modules load from cached byte-code
    if no_pyc:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=str(Path(__file__).resolve().parents[1]), help="checkout to measure")
    ap.add_argument("--compare", default=None, metavar="ROOT",
                    help="another checkout (before): its runs alternate with --root's, one row each")
    ap.add_argument("--only", action="append", choices=list(COMMANDS), help="measure only these commands")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--no-pyc", action="store_true", help="set PYTHONDONTWRITEBYTECODE=1 (no byte-code cache)")
    args = ap.parse_args()
    roots = {"": args.root} if not args.compare else {"before ": args.compare, "after ": args.root}
    envs = {label: _env(root, args.no_pyc) for label, root in roots.items()}
    with tempfile.TemporaryDirectory() as tmp:
        scen = Path(tmp) / "small.toml"
        scen.write_text(SCENARIO)
        base = [sys.executable, "-m", "mistfast.cli"]
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        print(f"checkout {' vs '.join(f'{k}{v}' for k, v in roots.items())}; python {sys.version.split()[0]}; "
              f"{os.cpu_count()} cpus; load {load:.1f}; byte-code cache {'off' if args.no_pyc else 'on'}")
        print(f"{'command':<25}{'median s':>10}{'min s':>9}{'max s':>9}{'median cpu s':>14}  (wall; cpu = user+sys)")
        for env in envs.values():
            wall(base + ["--help"], env)
        for name, tail in COMMANDS.items():
            if args.only and name not in args.only:
                continue
            cmd = base + [a.format(scenario=scen, tmp=tmp) for a in tail]
            ready = {}
            for label, env in envs.items():
                try:
                    wall(cmd, env)  # untimed: compile or load the kernels, warm the file cache
                    ready[label] = []
                except SystemExit as e:
                    print(f"{label + name:<25} not available in this checkout ({str(e).splitlines()[-1][:60]})")
            for _ in range(args.repeat):  # interleaved: both checkouts see the same load
                for label in ready:
                    ready[label].append(wall(cmd, envs[label]))
            for label, runs in ready.items():
                print(_row(label + name, runs))
        env = next(iter(envs.values()))
        for name, code in (("(python -c pass)", "pass"), ("(import numba)", "import numba"),
                           ("(import xarray)", "import xarray")):
            if not args.only:
                print(_row(name, [wall([sys.executable, "-c", code], env) for _ in range(args.repeat)]))


if __name__ == "__main__":
    main()
