"""Rows of public.csv from the GPUStack "performance lab" pages (github:gpustack/gpustack,
docs/performance-lab/<model>/<gpu>.md).

Each page benchmarks one model on one GPU type with vLLM, SGLang and TensorRT-LLM (versions listed
under "Engine Version"), then tunes the best engine step by step. Every step gives its serving
command ("Serving script") and the full ``vllm bench serve`` summary ("Benchmark result": request
and token totals, output throughput, mean/median/p99 TTFT, TPOT and ITL). The benchmark commands are
under "Benchmark Script": ShareGPT (``--num-prompts 1000``) and the random dataset at fixed lengths
(32000/100, 4000/200, 2000/100, 128/4; ``--num-prompts 500 --seed 42`` in the template), sent all at
once (no ``--request-rate``: vLLM's default inf), or at ``--max-concurrency N`` on the latency pages.

    python data/measurements/import_gpustack.py GIT_DIR COMMIT    # writes rows_gpustack.csv.gz

How a result becomes rows (one per metric):

* the random case of a result is read off its totals: ``Total input tokens`` = prompts x the
  case's input length (vLLM's random dataset at range ratio 0 gives every prompt exactly that
  length); otherwise the result is a ShareGPT run (dataset ``sharegpt``). ``isl`` is the case's
  input length, ``osl`` the realised mean output (``Total generated tokens`` / prompts: the engine
  may stop a random prompt at EOS before the requested length), stated in ``notes``.
* a result with ``Maximum request concurrency: N`` is a closed loop of N users, otherwise an
  offline run (every prompt at t = 0). The prompt count is ``Successful requests``.
* engine, TP/DP (``-tp``, ``--tp-size``, ``--tensor-parallel-size``, ``--dp``...), the token and
  sequence budgets (``--max-num-batched-tokens``, ``--max-num-seqs``, ``--max-running-requests``,
  ``--chunked-prefill-size``, TensorRT-LLM ``--max_batch_size``/``--max_num_tokens``) and the
  precision (an FP8 checkpoint or ``--quantization fp8``; gpt-oss: MXFP4 experts) come from the
  serving command, which is kept whole in ``notes``.
* left out: pages whose model or GPU mistfast does not model (GLM, Qwen3.5, DeepSeek-V3.2 with
  its sparse attention, Ascend 910B; GLM-5.2 is a guidellm run in another format), and every
  result with speculative decoding (EAGLE/MTP: the step model has no draft model).
* metrics: output tok/s, requests/s, mean/median/p99 TTFT, mean/median/p99 TPOT, median ITL.
* the same command measured twice on one page: the run with the upper median output throughput
  is kept, every value seen is in ``notes`` (the rule of build_public.py).

This is a data-preparation tool, not part of the mistfast package.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pandas as pd

HERE = os.path.dirname(os.path.abspath(__file__))
OUT_NAME = "rows_gpustack.csv.gz"
REPO = "github:gpustack/gpustack"
PAGES = (
    "docs/performance-lab/deepseek-r1/h200.md",
    "docs/performance-lab/gpt-oss-120b/a100.md", "docs/performance-lab/gpt-oss-120b/h100.md",
    "docs/performance-lab/gpt-oss-20b/a100.md", "docs/performance-lab/gpt-oss-20b/h100.md",
    "docs/performance-lab/qwen3-14b/a100.md", "docs/performance-lab/qwen3-14b/h100.md",
    "docs/performance-lab/qwen3-32b/a100.md", "docs/performance-lab/qwen3-32b/h100.md",
    "docs/performance-lab/qwen3-235b-a22b/a100.md", "docs/performance-lab/qwen3-235b-a22b/h100.md",
    "docs/performance-lab/qwen3-8b/h100-latency.md",
)
# the pages' hardware sentences -> the device spelling of public.csv
HARDWARE = (("H200 SXM", "H200-SXM-141GB"), ("H100 SXM", "H100-SXM-80GB"), ("A100 SXM", "A100-SXM-80GB"))
ENGINES = (  # (serving-command marker, engine column, name in "Engine Version", family)
    ("trtllm-serve", "TensorRT-LLM (trtllm-serve)", "TensorRT-LLM", "trtllm-1"),
    ("sglang.launch_server", "SGLang (sglang.launch_server)", "SGLang", "sglang"),
    ("vllm serve", "vLLM (vllm serve)", "vLLM", "vllm"),
)
CASE_LABEL = re.compile(r"^(random|sharegpt)\b", re.I)   # a label that only names the benchmark case
SPECULATIVE = re.compile(r"speculative|eagle|mtp|draft", re.I)
RESULT_FIELDS = {
    "Successful requests": "n", "Maximum request concurrency": "concurrency",
    "Benchmark duration (s)": "duration_s", "Total input tokens": "input_tokens",
    "Total generated tokens": "output_tokens", "Request throughput (req/s)": "requests_s",
    "Output token throughput (tok/s)": "output_tok_s", "Mean TTFT (ms)": "ttft_ms",
    "Median TTFT (ms)": "ttft_p50_ms", "P99 TTFT (ms)": "ttft_p99_ms", "Mean TPOT (ms)": "tpot_ms",
    "Median TPOT (ms)": "tpot_p50_ms", "P99 TPOT (ms)": "tpot_p99_ms", "Median ITL (ms)": "itl_p50_ms",
}
METRICS = ("output_tok_s", "requests_s", "ttft_ms", "ttft_p50_ms", "ttft_p99_ms", "tpot_ms", "tpot_p50_ms",
           "tpot_p99_ms", "itl_p50_ms")
COLUMNS = ["source", "engine", "engine_version", "model", "precision", "hardware", "num_accel", "tp", "pp",
           "workload", "isl", "osl", "batch_or_concurrency", "request_rate", "metric", "value", "notes",
           "dataset", "engine_family"]


def parse_result(text: str) -> dict:
    """The numbers of one ``vllm bench serve`` summary block."""
    out = {}
    for line in text.splitlines():
        if ":" not in line:
            continue
        key, _, val = line.strip().rpartition(":")
        key = key.strip()
        if key in RESULT_FIELDS:
            out[RESULT_FIELDS[key]] = float(val.strip().replace(",", ""))
    return out


def _section(text: str, heading: str) -> str:
    m = re.search(rf"^### {re.escape(heading)}\s*\n(.*?)(?=^##)", text, re.S | re.M)
    return m.group(1) if m else ""


def page_setup(text: str) -> dict:
    """Model, hardware, engine versions and the random cases of a page's "Experimental Setup"."""
    hw_text = _section(text, "Hardware")
    hardware = next((name for key, name in HARDWARE if key in hw_text), "")
    versions = dict(re.findall(r"^-\s*(vLLM|SGLang|TensorRT-LLM):\s*(\S+)", _section(text, "Engine Version"), re.M))
    cases = [(int(i), int(o)) for i, o in re.findall(r"(\d+) input tokens, (\d+) output tokens",
                                                     _section(text, "Benchmark Dataset"))]
    bench = _section(text, "Benchmark Script")
    commands = [ln.strip() for ln in bench.splitlines() if ln.strip().startswith("vllm bench serve")]
    model = next((ln.strip() for ln in _section(text, "Model").splitlines() if ln.strip()), "")
    return {"model": model, "hardware": hardware, "hardware_text": " ".join(hw_text.split()), "versions": versions,
            "cases": cases, "commands": commands}


def results_with_commands(text: str):
    """(serving command, result label, result text) for every benchmark summary of the
    "Experiment Results" part, in page order; a summary belongs to the last serving command above it."""
    body = text.split("## Experiment Results", 1)[-1]
    serving, out = "", []
    for m in re.finditer(r'\?\?\?\+? info "((?:\w+ )?[Ss]erving script|(?:\w+ )?[Bb]enchmark results?)"\s*\n\s*```[a-z]*\n(.*?)```',
                         body, re.S):
        kind, block = m.group(1), m.group(2)
        if kind.lower().endswith("serving script"):
            serving = " ".join(ln.strip().rstrip("\\").strip() for ln in block.splitlines() if ln.strip())
            continue
        label = ""
        for chunk in re.split(r"(?m)^\s*(?====+ Serving Benchmark Result)", block):
            labels = [ln.strip()[1:].strip() for ln in chunk.splitlines() if ln.strip().startswith("#")]
            if "Serving Benchmark Result" not in chunk:
                label = labels[-1] if labels else label
                continue
            out.append((serving, label, chunk))
            label = labels[-1] if labels else ""   # a label after this summary names the next one
    return out


def _flag(cmd: str, *names: str) -> str | None:
    for n in names:
        m = re.search(rf"(?:^|\s){re.escape(n)}[ =](\S+)", cmd)
        if m:
            return m.group(1)
    return None


def engine_of(cmd: str):
    return next((e for e in ENGINES if e[0] in cmd), None)


def _model_of(cmd: str) -> str:
    m = re.search(r"(?:vllm serve|trtllm-serve)\s+(\S+)", cmd) or re.search(r"--model(?:-path)?[ =](\S+)", cmd)
    return m.group(1) if m else ""


def precision_of(model: str, cmd: str) -> str:
    if "gpt-oss" in model.lower():
        return "MXFP4 (native gpt-oss MoE weights)"
    if "deepseek-r1" in model.lower() or "deepseek-v3" in model.lower():
        return "FP8 (block-scaled, native)"
    if re.search(r"awq", model, re.I):
        return "INT4 (AWQ weights)"
    if re.search(r"fp8", model, re.I) or (_flag(cmd, "--quantization") or "").lower() == "fp8":
        return "FP8"
    return "BF16"


def engine_limits(cmd: str) -> str:
    bs = _flag(cmd, "--max-num-seqs", "--max-running-requests", "--max_batch_size", "--max-batch-size")
    tok = _flag(cmd, "--max-num-batched-tokens", "--chunked-prefill-size", "--max_num_tokens", "--max-num-tokens")
    parts = ([f"max batch {int(bs)}"] if bs and bs.isdigit() else []) + \
            ([f"max num tokens {int(tok)}"] if tok and tok.isdigit() and int(tok) > 0 else [])
    return ("engine limits from that config: " + ", ".join(parts)) if parts else ""


def apply_flag_label(cmd: str, label: str) -> str:
    """A result labelled with a flag (``--max-num-batched-tokens 8192``) ran the serving command of its
    step with that flag's value instead: the command with the flag replaced (or added)."""
    m = re.fullmatch(r"(--[\w-]+)(?:[ =](\S+))?", label.strip())
    if not m:
        return cmd
    name, value = m.group(1), m.group(2)
    base = re.sub(rf"\s{re.escape(name)}(?:[ =](?!-)\S+)?(?=\s|$)", "", cmd)
    return f"{base} {name}{'=' + value if value and '=' in label else (' ' + value if value else '')}"


def _case(res: dict, cases: list[tuple[int, int]], label: str = "") -> tuple[int, int] | None:
    """The random case of a result: the one its label names (``random 4K input``), else the one
    whose input length times the prompt count gives the result's input tokens (within 2 %: a
    tokenizer may round-trip a random prompt a token or two short); None for a ShareGPT result."""
    m = re.match(r"random\s+(\d+)(k?)\b", label.strip(), re.I)
    if m:
        named = int(m.group(1)) * (1000 if m.group(2) else 1)
        hit = [c for c in cases if c[0] == named]
        if hit:
            return hit[0]
    n = res["n"]
    for isl, osl in cases:
        if abs(res["input_tokens"] - n * isl) <= 0.02 * n * isl:
            return isl, osl
    return None


def rows_of_page(text: str, path: str, commit: str) -> list[dict]:
    setup = page_setup(text)
    source = f"{REPO}@{commit}:{path}"
    runs: dict[tuple, list[tuple[dict, str, str]]] = {}
    seen = set()
    for serving, label, chunk in results_with_commands(text):
        eng = engine_of(serving)
        if eng is None or SPECULATIVE.search(serving) or SPECULATIVE.search(label):
            continue
        res = parse_result(chunk)
        if not {"n", "input_tokens", "output_tokens", "output_tok_s"} <= set(res):
            continue
        same = (serving, tuple(sorted(res.items())))
        if same in seen:   # the page repeats a result it showed before (e.g. the baseline again as 'BS=4')
            continue
        seen.add(same)
        key = (serving, label, _case(res, setup["cases"], label), res.get("concurrency"), res["n"])
        runs.setdefault(key, []).append((res, serving, label))
    rows = []
    for (serving, label, case, conc, n), group in runs.items():
        rows += _rows_of_run(group, serving, label, case, conc, int(n), setup, source)
    return mark_engine_outliers(rows)


# An engine whose best ShareGPT offline throughput on a page is below 1 / OUTLIER_RATIO of another
# engine's on the same model, GPU and workload measures an immature code path (gpt-oss on SGLang
# 0.5.3-0.5.4 and TensorRT-LLM 1.0-1.2rc: 3.4-19.5x below vLLM), not a device or an engine family.
OUTLIER_RATIO = 3.0


def mark_engine_outliers(rows: list[dict]) -> list[dict]:
    """Mark ``validate-excluded`` every row of an engine that is OUTLIER_RATIO times slower than the
    fastest engine of the page on the page's own ShareGPT offline runs (the reason goes in notes)."""
    best: dict[str, float] = {}
    for r in rows:
        if r["metric"] == "output_tok_s" and r["dataset"] == "sharegpt" and r["workload"].startswith("offline"):
            best[r["engine_family"]] = max(best.get(r["engine_family"], 0.0), float(r["value"]))
    if not best:
        return rows
    top_family, top = max(best.items(), key=lambda kv: kv[1])
    slow = {fam: v for fam, v in best.items() if v * OUTLIER_RATIO < top}
    for r in rows:
        v = slow.get(r["engine_family"])
        if v is not None:
            r["notes"] += (f"; validate-excluded: on this page {r['engine_family']} reached at best {v:.0f} output tok/s "
                           f"on the ShareGPT offline run where {top_family} reached {top:.0f} on the same model, GPU "
                           f"and workload ({top / v:.1f}x): an immature code path of that engine version that no "
                           f"efficiency learned from another source can predict")
    return rows


def _rows_of_run(group, serving, label, case, conc, n, setup, source) -> list[dict]:
    extra = ""
    if len(group) > 1:
        tput = sorted(r[0]["output_tok_s"] for r in group)
        keep = tput[len(tput) // 2]
        extra = (f"; {len(tput)} results of this command on the page, output tok/s "
                 + "/".join(f"{t:.2f}" for t in tput) + ", the upper-median one is kept")
        group = [g for g in group if g[0]["output_tok_s"] == keep][:1]
    res = group[0][0]
    serving = apply_flag_label(serving, label)
    marker, engine, vname, family = engine_of(serving)
    model = _model_of(serving)
    # the serving flags (and a page label that names a variant) are part of what was measured
    flags = serving.split(model, 1)[-1].strip() if model else ""
    engine_text = engine[:-1] + (f"; flags: {flags}" if flags else "; default flags") + \
        (f"; result labelled '{label}'" if label and not CASE_LABEL.match(label) else "") + ")"
    if model.startswith("/"):   # a local path: the page's "### Model" names the checkpoint
        model = setup["model"]
    tp = int(_flag(serving, "-tp", "--tp", "--tp-size", "--tensor-parallel-size", "--tp_size") or 1)
    dp = int(_flag(serving, "-dp", "--dp", "--dp-size", "--data-parallel-size") or 1)
    pp = int(_flag(serving, "-pp", "--pp", "--pp-size", "--pipeline-parallel-size", "--pp_size") or 1)
    osl_mean = res["output_tokens"] / n
    if case:
        isl, osl, dataset = case[0], round(osl_mean), ""
        lengths = (f"random tokens, {case[0]} input tokens per prompt (vLLM random dataset, range ratio 0), "
                   f"--random-output-len {case[1]}")
    else:
        isl, osl, dataset = "", "", "sharegpt"
        lengths = "ShareGPT prompts with their ShareGPT output lengths"
    bench = (f"vllm bench serve --backend openai-chat --endpoint /v1/chat/completions --num-prompts {n}"
             + (f" --max-concurrency {int(conc)}" if conc else ""))
    if conc:
        workload = f"closed loop at max concurrency {int(conc)}; {lengths}; {n} prompts ({bench})"
    else:
        workload = f"offline: all {n} prompts sent at t=0 (request rate inf); {lengths} ({bench})"
    notes = (f"serving command: {serving}" + (f"; result labelled '{label}' on the page" if label else "")
             + f"; hardware: {setup['hardware_text']}; client result: {n} successful requests, "
             f"{int(res['input_tokens'])} input / {int(res['output_tokens'])} generated tokens, duration "
             f"{res.get('duration_s', float('nan')):.2f} s")
    if case:
        notes += (f"; osl = realised mean output (generated tokens / requests), requested {case[1]}; realised "
                  f"mean input {res['input_tokens'] / n:.1f} tokens")
    limits = engine_limits(serving)
    if limits:
        notes += f"; {limits}"
    notes += extra
    rows = []
    for metric in METRICS:
        if metric not in res or not res[metric] > 0:
            continue
        rows.append({
            "source": source, "engine": engine_text, "engine_version": f"{setup['versions'].get(vname, '?')}",
            "model": model, "precision": precision_of(model, serving), "hardware": setup["hardware"],
            "num_accel": tp * dp * pp, "tp": tp, "pp": pp, "workload": workload, "isl": isl, "osl": osl,
            "batch_or_concurrency": int(conc) if conc else "unbounded (all at once)",
            "request_rate": "inf (closed loop)" if conc else "inf (offline, all at t=0)",
            "metric": metric, "value": round(res[metric], 4), "notes": notes, "dataset": dataset,
            "engine_family": family,
        })
    return rows


def rows_from_pages(pages: dict[str, str], commit: str) -> pd.DataFrame:
    out = []
    for path in sorted(pages):
        out += rows_of_page(pages[path], path, commit)
    table = pd.DataFrame(out, columns=COLUMNS)
    return table[table.engine_version != "?"].reset_index(drop=True)


def _git_show(git_dir: str, commit: str, path: str) -> str:
    return subprocess.run(["git", "--git-dir", git_dir, "show", f"{commit}:{path}"], check=True,
                          capture_output=True, text=True).stdout


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: import_gpustack.py GIT_DIR COMMIT", file=sys.stderr)
        return 2
    git_dir, commit = argv
    rows = rows_from_pages({p: _git_show(git_dir, commit, p) for p in PAGES}, commit)
    rows.to_csv(os.path.join(HERE, OUT_NAME), index=False, compression={"method": "gzip", "mtime": 0})
    print(f"{len(rows)} rows -> {OUT_NAME}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
