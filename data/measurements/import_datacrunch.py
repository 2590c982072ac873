"""Rows of public.csv from the SGLang runs of github:datacrunch-research/h200-benchmarks.

The repository keeps ``sglang.bench_serving`` result files (one JSON object per run, in the order
the commands of the matching ``experiments/*.sh`` script ran them) for Llama-3.3-70B-Instruct on
4 x H200 and Llama-3.1-405B-Instruct on 8 x H200, both BF16, SGLang from the ``lmsysorg/sglang``
container, launched with ``--disable-radix-cache --enable-torch-compile``.

    python data/measurements/import_datacrunch.py GIT_DIR COMMIT     # writes rows_datacrunch_h200.csv

One row per run and metric. What the result files say and how it becomes a row:

* lengths: ``--dataset-name random`` with the default ``random_range_ratio`` 0.0 of that SGLang
  (written in each result), i.e. per request an integer input and output length uniform in
  [1, L]; the result's totals confirm it (300 prompts at L = 1024: 152,612 input tokens, mean
  509). ``isl``/``osl`` are the run's **realised mean** lengths, total tokens / completed requests
  (an exact rescaling of the file's totals, stated in ``notes``), because mistfast simulates a row
  without a dataset at fixed lengths; ``--dataset-name sharegpt`` runs name the ``sharegpt`` dataset.
* ``request_rate`` inf is SGLang's offline mode (every prompt sent at t = 0); a finite rate is a
  Poisson stream. ``--num-prompt(s)`` of the command is in ``workload``.
* metrics: ``output_throughput`` -> ``output_tok_s``; ``completed / duration`` -> ``requests_s``
  (derived, stated); ``median_ttft_ms``, ``median_itl_ms``, ``mean_e2e_latency_ms``,
  ``median_e2e_latency_ms`` as they are. sglang.bench_serving streams one token per chunk, so the
  median ITL is the median time per output token (``itl_p50_ms``).
* repeated runs of one command (the 70B offline 4096/1024 run twice): the run with the upper
  median output throughput is kept, every value seen is in ``notes`` (the rule of build_public.py).

This is a data-preparation tool, not part of the mistfast package.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pandas as pd

HERE = os.path.dirname(os.path.abspath(__file__))
OUT_NAME = "rows_datacrunch_h200.csv"
REPO = "github:datacrunch-research/h200-benchmarks"
ENGINE = "SGLang (sglang.launch_server)"
# The scripts run `docker pull lmsysorg/sglang:dev` / `lmsysorg/sglang:latest` without a tag; the
# results were committed on 2024-12-12 (README numbers on 2024-12-02).
ENGINE_VERSION = ("lmsysorg/sglang:latest container as pulled 2024-12-02..12 (tag not pinned by the "
                  "source; SGLang v0.3.6-v0.4.0.post1 by date)")
SERVER_FLAGS = "--disable-radix-cache --enable-torch-compile"

# (result file, script, model, tp, launch flags beyond SERVER_FLAGS)
RUN_SETS = (
    ("sglang/outputs/llama_3_3_70b_online_output.jsonl", "sglang/experiments/llama_3_3_70b_sglang.sh",
     "meta-llama/Llama-3.3-70B-Instruct", 4, "", "online"),
    ("sglang/outputs/llama_3_3_70b_offline_output.jsonl", "sglang/experiments/llama_3_3_70b_sglang.sh",
     "meta-llama/Llama-3.3-70B-Instruct", 4, "", "offline"),
    ("sglang/outputs/llama_405b_online_output.jsonl", "sglang/experiments/llama_405b_sglang.sh",
     "meta-llama/Llama-3.1-405B-Instruct", 8, "", "online"),
)
METRICS = (  # (metric, how to read it from a result, derived note or "")
    ("output_tok_s", lambda d: d["output_throughput"], ""),
    ("requests_s", lambda d: d["completed"] / d["duration"], "requests_s = completed / duration"),
    ("ttft_p50_ms", lambda d: d["median_ttft_ms"], ""),
    ("itl_p50_ms", lambda d: d["median_itl_ms"], ""),
    ("e2e_mean_ms", lambda d: d["mean_e2e_latency_ms"], ""),
    ("e2e_p50_ms", lambda d: d["median_e2e_latency_ms"], ""),
)
COLUMNS = ["source", "engine", "engine_version", "model", "precision", "hardware", "num_accel", "tp", "pp",
           "workload", "isl", "osl", "batch_or_concurrency", "request_rate", "metric", "value", "notes",
           "dataset", "engine_family"]


def bench_commands(script: str, result_file: str) -> list[str]:
    """The ``sglang.bench_serving`` commands of a script that write ``result_file``, in order."""
    name = os.path.basename(result_file)
    return [ln.strip() for ln in script.splitlines()
            if "sglang.bench_serving" in ln and not ln.lstrip().startswith("#") and name in ln]


def _flag(cmd: str, *names: str) -> str | None:
    for n in names:
        m = re.search(rf"--{n}[ =](\S+)", cmd)
        if m:
            return m.group(1)
    return None


def check_command(cmd: str, res: dict) -> None:
    """A result must match the command it is paired with (dataset, rate, lengths, prompt count)."""
    want = {"dataset_name": _flag(cmd, "dataset-name"), "completed": _flag(cmd, "num-prompts", "num-prompt")}
    rate = _flag(cmd, "request-rate")
    problems = []
    if want["dataset_name"] != res["dataset_name"]:
        problems.append(f"dataset {want['dataset_name']} vs {res['dataset_name']}")
    if int(want["completed"]) != int(res["completed"]):
        problems.append(f"prompts {want['completed']} vs completed {res['completed']}")
    if (float(rate) if rate else float("inf")) != float(res["request_rate"]):
        problems.append(f"rate {rate} vs {res['request_rate']}")
    if res["dataset_name"] == "random":
        for flag, key in (("random-input", "random_input_len"), ("random-output", "random_output_len")):
            if int(_flag(cmd, flag)) != int(res[key]):
                problems.append(f"{flag} {_flag(cmd, flag)} vs {res[key]}")
    if problems:
        raise ValueError(f"result does not match command {cmd!r}: {'; '.join(problems)}")


def _workload(cmd: str, res: dict) -> str:
    n = int(res["completed"])
    arrival = ("offline: all prompts sent at t=0 (request rate inf)" if res["request_rate"] == float("inf")
               else f"online serving, Poisson arrivals at {res['request_rate']:g} req/s")
    if res["dataset_name"] == "random":
        lens = (f"random tokens, per-request input and output lengths uniform integers in [1, "
                f"{res['random_input_len']}] and [1, {res['random_output_len']}] (random_range_ratio "
                f"{res['random_range_ratio']:g}), ignore_eos")
    else:
        lens = "ShareGPT prompts with their ShareGPT output lengths"
    return f"{arrival}; {lens}; {n} prompts ({cmd.split('python3 -m ', 1)[-1].split(' --output-file')[0]})"


def _run_rows(res: dict, cmd: str, model: str, tp: int, source: str, extra_note: str) -> list[dict]:
    n = int(res["completed"])
    random_lengths = res["dataset_name"] == "random"
    isl = round(res["total_input_tokens"] / n) if random_lengths else ""
    osl = round(res["total_output_tokens"] / n) if random_lengths else ""
    offline = res["request_rate"] == float("inf")
    base_note = (f"server: sglang.launch_server --tp-size {tp} {SERVER_FLAGS}; client result: duration "
                 f"{res['duration']:.2f} s, {n} completed, {res['total_input_tokens']} input / "
                 f"{res['total_output_tokens']} output tokens")
    if random_lengths:
        base_note += (f"; isl/osl = realised mean lengths (total tokens / completed), the command asked for "
                      f"--random-input {res['random_input_len']} --random-output {res['random_output_len']}")
    base_note += "; README: 'H200 141GB' (form factor not stated)"
    rows = []
    for metric, read, derived in METRICS:
        note = base_note + (f"; {derived}" if derived else "") + (f"; {extra_note}" if extra_note else "")
        rows.append({
            "source": source, "engine": ENGINE, "engine_version": ENGINE_VERSION, "model": model,
            "precision": "BF16", "hardware": "H200-141GB", "num_accel": tp, "tp": tp, "pp": 1,
            "workload": _workload(cmd, res), "isl": isl, "osl": osl,
            "batch_or_concurrency": "unbounded (open loop)",
            "request_rate": "inf (offline, all at t=0)" if offline else f"{res['request_rate']:g}",
            "metric": metric, "value": round(float(read(res)), 4), "notes": note,
            "dataset": "sharegpt" if res["dataset_name"] == "sharegpt" else "", "engine_family": "sglang",
        })
    return rows


def rows_from_texts(texts: dict[str, str], commit: str) -> pd.DataFrame:
    """Rows from the repository's files (path -> text) at ``commit``."""
    out = []
    for result_file, script_path, model, tp, _, _ in RUN_SETS:
        results = [json.loads(ln) for ln in texts[result_file].splitlines() if ln.strip()]
        cmds = bench_commands(texts[script_path], result_file)
        if len(cmds) == len(results) - 1:
            # one command ran twice (the 70B offline 4096/1024): pair by matching settings
            cmds = _pair_repeated(cmds, results)
        if len(cmds) != len(results):
            raise ValueError(f"{result_file}: {len(results)} results but {len(cmds)} commands in {script_path}")
        source = f"{REPO}@{commit}:{result_file}"
        groups: dict[str, list[tuple[str, dict]]] = {}
        for cmd, res in zip(cmds, results):
            check_command(cmd, res)
            groups.setdefault(cmd, []).append((cmd, res))
        for cmd, runs in groups.items():
            extra = ""
            if len(runs) > 1:
                tput = sorted(r["output_throughput"] for _, r in runs)
                keep = tput[len(tput) // 2]   # upper median of an even count
                runs = [next(x for x in runs if x[1]["output_throughput"] == keep)]
                extra = (f"{len(tput)} run(s) of this command, output tok/s "
                         + "/".join(f"{t:.1f}" for t in tput) + "; the upper-median run is kept")
            out += _run_rows(runs[0][1], cmd, model, tp, source, extra)
    return pd.DataFrame(out, columns=COLUMNS)


def _pair_repeated(cmds: list[str], results: list[dict]) -> list[str]:
    paired, i = [], 0
    for res in results:
        if i < len(cmds):
            try:
                check_command(cmds[i], res)
                paired.append(cmds[i])
                i += 1
                continue
            except ValueError:
                pass
        check_command(paired[-1], res)   # the same command again
        paired.append(paired[-1])
    return paired


def _git_show(git_dir: str, commit: str, path: str) -> str:
    return subprocess.run(["git", "--git-dir", git_dir, "show", f"{commit}:{path}"], check=True,
                          capture_output=True, text=True).stdout


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: import_datacrunch.py GIT_DIR COMMIT", file=sys.stderr)
        return 2
    git_dir, commit = argv
    paths = {p for r in RUN_SETS for p in r[:2]}
    rows = rows_from_texts({p: _git_show(git_dir, commit, p) for p in paths}, commit)
    rows.to_csv(os.path.join(HERE, OUT_NAME), index=False)
    print(f"{len(rows)} rows -> {OUT_NAME}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
