"""Append the MLPerf harness settings that shape Server/Interactive latencies to the notes of the
MLPerf rows of a measurement CSV (in place; other rows and the column order stay byte-identical).

Each MLPerf row's notes already name its harness config ("parallelism from <path>;"). This reads
that file from a local clone of mlcommons/inference_results_v5.1 and appends one segment::

    harness settings from that config: use_graphs False, enable_chunked_context True
    harness settings from that config: enforce_eager True, enable_chunked_prefill False, num_scheduler_steps 8

NVIDIA's TensorRT-LLM harness configs (``configs/<system>/<scenario>/<benchmark>.py``):
``harness_fields.use_graphs`` and the runtime flag ``enable_chunked_context``; AMD's vLLM
``harness_llm`` YAML files: ``enforce_eager``, ``enable_chunked_prefill``, ``num_scheduler_steps``.
A value that differs between the config's accuracy-target blocks is left out. Idempotent: a row
that already has the segment is left alone.

Usage::

    python tools/mlperf_harness_settings.py data/measurements/public.csv /path/to/inference_results_v5.1
(the second argument: a work tree, or a bare/mirror git directory read at HEAD)
"""
from __future__ import annotations

import csv
import io
import re
import subprocess
import sys
from pathlib import Path

SEGMENT = "harness settings from that config:"
NVIDIA_KEYS = (("use_graphs", r"harness_fields\.use_graphs\s*:\s*(True|False)"),
               ("enable_chunked_context", r"'enable_chunked_context'\s*:\s*(True|False)"),
               # attention-DP balancing of the DeepSeek-R1 configs: context requests wait for the other
               # ranks (TensorRT-LLM PyExecutor._balance_adp_requests; validate.adp_balance_wait_ms)
               ("adp_balancing_enable", r"[\"']adp_balancing_enable[\"']\s*:\s*(True|False)"),
               ("adp_balancing_batching_wait_iters", r"[\"']adp_balancing_batching_wait_iters[\"']\s*:\s*(\d+)"),
               ("adp_balancing_timeout_iters", r"[\"']adp_balancing_timeout_iters[\"']\s*:\s*(\d+)"))
AMD_KEYS = (("enforce_eager", r"^\s*enforce_eager\s*:\s*(True|False|true|false)"),
            ("enable_chunked_prefill", r"^\s*enable_chunked_prefill\s*:\s*(True|False|true|false)"),
            ("num_scheduler_steps", r"^\s*num_scheduler_steps\s*:\s*(\d+)"))


def read_config(repo: Path, path: str) -> str | None:
    """Text of ``path`` in the results repository (work tree, else git HEAD), None if absent."""
    f = repo / path
    if f.is_file():
        return f.read_text(errors="replace")
    out = subprocess.run(["git", "--git-dir", str(repo if (repo / "HEAD").exists() else repo / ".git"),
                          "show", f"HEAD:{path}"], capture_output=True, text=True)
    return out.stdout if out.returncode == 0 else None


def harness_settings(path: str, text: str) -> list[str]:
    """``key value`` strings of the latency-shaping settings in one harness config."""
    keys = AMD_KEYS if path.endswith((".yaml", ".yml")) else NVIDIA_KEYS
    found = []
    for name, pattern in keys:
        values = {v.capitalize() if not v.isdigit() else v for v in re.findall(pattern, text, flags=re.M)}
        if len(values) == 1:
            found.append(f"{name} {values.pop()}")
    return found


def annotated_notes(notes: str, repo: Path, cache: dict | None = None) -> str:
    """``notes`` with the harness-settings segment after "parallelism from <path>;" (unchanged when
    the notes name no config, already have the segment, or the config sets none of the keys)."""
    cache = {} if cache is None else cache
    m = re.search(r"parallelism from (\S+?);", notes)
    if not m:
        return notes
    path = m.group(1)
    if path not in cache:
        text = read_config(repo, path)
        cache[path] = harness_settings(path, text) if text else []
    if not cache[path]:
        return notes
    seg = re.search(re.escape(SEGMENT) + r"([^;]*);", notes)
    if seg:   # settings added to the tool since the segment was written go to its end
        have = {item.split()[0] for item in seg.group(1).split(",") if item.split()}
        extra = [s for s in cache[path] if s.split()[0] not in have]
        if not extra:
            return notes
        return notes[:seg.end() - 1] + ", " + ", ".join(extra) + notes[seg.end() - 1:]
    return notes.replace(m.group(0), f"{m.group(0)} {SEGMENT} {', '.join(cache[path])};", 1)


def annotate(csv_path: Path, repo: Path) -> int:
    with open(csv_path, newline="") as fh:
        raw = fh.read()
    rows = list(csv.reader(io.StringIO(raw)))
    col = rows[0].index("notes")
    changed = 0
    cache: dict[str, list[str]] = {}
    for row in rows[1:]:
        new = annotated_notes(row[col], repo, cache)
        if new != row[col]:
            row[col] = new
            changed += 1
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n" if "\r\n" in raw[:4096] else "\n").writerows(rows)
    with open(csv_path, "w", newline="") as fh:
        fh.write(out.getvalue())
    return changed


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python tools/mlperf_harness_settings.py MEASUREMENTS.csv RESULTS_REPO")
    n = annotate(Path(sys.argv[1]), Path(sys.argv[2]))
    print(f"{n} rows annotated")
