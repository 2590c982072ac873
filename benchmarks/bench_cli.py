"""Fresh-process wall time of the instant commands: ``mistfast run`` of a small scenario and
``mistfast step``, each run 5 times in a new Python process once the kernels are cached (a first,
untimed run compiles or loads them); prints the median and the spread.

    python benchmarks/bench_cli.py                 # this checkout
    python benchmarks/bench_cli.py --root /path    # another checkout (e.g. before a change)

Also prints where the time goes in one process (python -X importtime is the detailed view).
"""
from __future__ import annotations

import argparse
import os
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
    "step": ["step", "--model", "llama-3.1-70b", "--device", "H100", "--tp", "8", "--prefill", "0:2048",
             "--decode", "1:1024x32"],
    "step --ops": ["step", "--model", "llama-3.1-70b", "--device", "H100", "--tp", "8", "--prefill", "0:2048",
                   "--decode", "1:1024x32", "--ops"],
}


def wall(cmd: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=env["PYTHONPATH"])
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stderr}")
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=str(Path(__file__).resolve().parents[1]), help="checkout to measure")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    env = {**os.environ, "PYTHONPATH": args.root, "NUMBA_NUM_THREADS": os.environ.get("NUMBA_NUM_THREADS", "1")}
    with tempfile.TemporaryDirectory() as tmp:
        scen = Path(tmp) / "small.toml"
        scen.write_text(SCENARIO)
        base = [sys.executable, "-m", "mistfast.cli"]
        print(f"checkout {args.root}; python {sys.version.split()[0]}; {os.cpu_count()} cpus")
        print(f"{'command':<14}{'median s':>10}{'min s':>9}{'max s':>9}")
        wall(base + ["--help"], env)
        for name, tail in COMMANDS.items():
            cmd = base + [a.format(scenario=scen) for a in tail]
            try:
                wall(cmd, env)  # untimed: compile or load the kernels, warm the file cache
            except SystemExit as e:
                print(f"{name:<14} not available in this checkout ({str(e).splitlines()[-1][:60]})")
                continue
            times = [wall(cmd, env) for _ in range(args.repeat)]
            print(f"{name:<14}{statistics.median(times):>10.3f}{min(times):>9.3f}{max(times):>9.3f}")
        t = [wall([sys.executable, "-c", "pass"], env) for _ in range(args.repeat)]
        print(f"{'(python -c pass)':<14}{statistics.median(t):>10.3f}{min(t):>9.3f}{max(t):>9.3f}")


if __name__ == "__main__":
    main()
