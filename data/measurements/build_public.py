"""Assemble data/measurements/public.csv from per-source row files.

Each ``rows_*.csv`` (hand-typed) or ``rows_*.csv.gz`` (generated) file next to this
script holds rows of one source family,
with every column of public.csv except ``id``.  This script concatenates them
in file-name order, assigns ids P0001, P0002, ... and checks that every row has
a source, a metric and a finite value.

``python build_public.py inferencemax RAW_DIR SOURCE_PREFIX`` regenerates
rows_inferencemax*.csv.gz from the InferenceMAX ``agg_bmk.json`` artifacts (one
folder ``run_<github-actions-run-id>`` per workflow run), e.g. the copies kept
in github:gminneci/mantile under reconcile/sources/inferencemax/raw/.

This is a data-preparation tool, not part of the mistfast package.
"""
from __future__ import annotations

import glob
import json
import math
import os
import re
import sys

import pandas as pd

HERE = os.path.dirname(os.path.abspath(__file__))
COLUMNS = [
    "id", "source", "engine", "engine_version", "model", "precision", "hardware",
    "num_accel", "tp", "pp", "workload", "isl", "osl", "batch_or_concurrency",
    "request_rate", "metric", "value", "notes", "dataset", "engine_family",
]

# InferenceMAX runner names -> hardware spelling used in ../shared/calibration
IMX_HARDWARE = {
    "h100": "H100-SXM-80GB", "h200": "H200-SXM-141GB", "b200": "B200", "b200-trt": "B200",
    "gb200": "GB200", "mi300x": "MI300X", "mi325x": "MI325X", "mi355x": "MI355X",
}
IMX_ENGINE = {  # framework -> (engine column, engine_family)
    "vllm": ("vLLM (vllm serve)", "vllm"),
    "sglang": ("SGLang (sglang.launch_server)", "sglang"),
    "trt": ("TensorRT-LLM (trtllm-serve, PyTorch backend)", "trtllm-1"),
    "atom": ("ATOM (AMD ROCm inference engine)", "other"),
}
# (model, InferenceMAX precision) -> precision spelling
IMX_PRECISION = {
    ("openai/gpt-oss-120b", "fp4"): "MXFP4 (native gpt-oss MoE weights)",
    ("amd/DeepSeek-R1-0528-MXFP4-Preview", "fp4"): "MXFP4",
    ("nvidia/DeepSeek-R1-0528-FP4-V2", "fp4"): "NVFP4",
    ("deepseek-ai/DeepSeek-R1-0528", "fp8"): "FP8 (block-scaled, native)",
}
# one row per metric; (metric name, json field, scale to the metric unit)
IMX_METRICS = [
    ("ttft_ms", "mean_ttft", 1000.0),
    ("tpot_ms", "mean_tpot", 1000.0),
    ("e2e_mean_ms", "mean_e2el", 1000.0),
    ("ttft_p99_ms", "p99_ttft", 1000.0),
    ("tpot_p99_ms", "p99_tpot", 1000.0),
    # the median is robust to the first wave and cold-start outliers that dominate the mean and the
    # p99 over the ~10 x concurrency prompts of a run (docs/calibration.md, "Fitting TTFT")
    ("ttft_p50_ms", "median_ttft", 1000.0),
]
# lengths: kimbochen/bench_serving@2ddd364 sample_uniform, integers uniform in [0.8 L, L]
IMX_WORKLOAD = (
    "closed loop at max concurrency, request rate inf; random tokens, per-request lengths "
    "uniform in [0.8*isl, isl] and [0.8*osl, osl] (--random-range-ratio 0.8), --ignore-eos, "
    "~10x concurrency prompts"
)
IMX_KEY = ["hw", "framework", "image", "model", "precision", "isl", "osl", "tp", "ep",
           "dp_attention", "conc"]


def _image_version(image: str) -> str:
    return f"{image.rsplit(':', 1)[-1]} (container {image.replace('#', '/')})"


def _load_inferencemax_runs(raw_dir: str) -> pd.DataFrame:
    records = []
    for path in sorted(glob.glob(os.path.join(raw_dir, "run_*", "agg_bmk.json"))):
        run_id = os.path.basename(os.path.dirname(path))[len("run_"):]
        with open(path) as fh:
            for rec in json.load(fh):
                rec["run"] = run_id
                records.append(rec)
    return pd.DataFrame.from_records(records)


# disaggregated runs kept only when the container names the engine version and the
# layout fields add up (workers x tp == GPUs of that stage)
IMX_DISAGG_IMAGES = {
    "jwillthomson/dynamo-trtllm-1.2.0rc2-min-tokens-fix-v2":
        ("NVIDIA Dynamo + TensorRT-LLM (disaggregated prefill/decode)", "trtllm-1",
         "TensorRT-LLM 1.2.0rc2 (per container name; custom Dynamo image jwillthomson/dynamo-trtllm-1.2.0rc2-min-tokens-fix-v2)"),
    "rocm/sgl-dev:sglang-0.5.6.post1-rocm700-mi35x-mori-1224":
        ("SGLang PD disaggregation (MoRI transfer)", "sglang",
         "0.5.6.post1 (container rocm/sgl-dev:sglang-0.5.6.post1-rocm700-mi35x-mori-1224)"),
}
IMX_DISAGG_KEY = ["hw", "framework", "image", "model", "precision", "isl", "osl", "conc",
                  "prefill_tp", "prefill_ep", "prefill_dp_attention", "prefill_num_workers",
                  "decode_tp", "decode_ep", "decode_dp_attention", "decode_num_workers"]
IMX_DISAGG_HARDWARE = {"gb200": "GB200", "mi355x-amd_0": "MI355X"}
IMX_DISAGG_MODELS = {"/mnt/lustre01/models/gpt-oss-120b": "openai/gpt-oss-120b",
                     "/models/DeepSeek-R1": "deepseek-ai/DeepSeek-R1"}


def _disaggregated_pinned(runs: pd.DataFrame) -> pd.DataFrame:
    keep = runs["disagg"].astype(bool) & (runs["spec_decoding"] == "none")
    keep &= runs["image"].isin(list(IMX_DISAGG_IMAGES))
    runs = runs[keep]
    adds_up = ((runs["prefill_tp"] * runs["prefill_num_workers"] == runs["num_prefill_gpu"])
               & (runs["decode_tp"] * runs["decode_num_workers"] == runs["num_decode_gpu"]))
    return runs[adds_up]


def inferencemax_disagg_rows(raw_dir: str, source_prefix: str) -> pd.DataFrame:
    runs = _disaggregated_pinned(_load_inferencemax_runs(raw_dir))
    rows = []
    for _, group in runs.groupby(IMX_DISAGG_KEY, sort=True):
        rows.extend(_inferencemax_disagg_config_rows(_median_run(group), group, source_prefix))
    return pd.DataFrame(rows, columns=COLUMNS[1:])


def _inferencemax_disagg_config_rows(rec, group, source_prefix):
    engine, family, version = IMX_DISAGG_IMAGES[rec["image"]]
    prefill_gpus, decode_gpus = int(rec["num_prefill_gpu"]), int(rec["num_decode_gpu"])
    # multi-node: InferenceMAX divides output throughput by the decode GPUs only
    output_tok_s = float(rec["output_tput_per_gpu"]) * decode_gpus
    layout = (f"{int(rec['prefill_num_workers'])} prefill worker(s) x tp {int(rec['prefill_tp'])} "
              f"(ep {int(rec['prefill_ep'])}, dp_attention {rec['prefill_dp_attention']}) = {prefill_gpus} GPUs; "
              f"{int(rec['decode_num_workers'])} decode worker(s) x tp {int(rec['decode_tp'])} "
              f"(ep {int(rec['decode_ep'])}, dp_attention {rec['decode_dp_attention']}) = {decode_gpus} GPUs")
    notes = (f"InferenceMAX actions run {rec['run']}; runner {rec['hw']}; {layout}; "
             f"model path as run: {rec['model']}; {group['run'].nunique()} run(s)")
    precision = "MXFP4 (native gpt-oss MoE weights)" if "gpt-oss" in rec["model"] else "FP8 (block-scaled, native)"
    common = {
        "source": f"{source_prefix}/run_{rec['run']}/agg_bmk.json", "engine": engine,
        "engine_version": version, "model": IMX_DISAGG_MODELS[rec["model"]], "precision": precision,
        "hardware": IMX_DISAGG_HARDWARE[rec["hw"]], "num_accel": prefill_gpus + decode_gpus,
        "tp": int(rec["decode_tp"]), "pp": 1,
        "workload": "disaggregated prefill/decode serving; " + IMX_WORKLOAD,
        "isl": int(rec["isl"]), "osl": int(rec["osl"]), "batch_or_concurrency": int(rec["conc"]),
        "request_rate": "inf (closed loop)", "dataset": "random", "engine_family": family,
    }
    out = [dict(common, metric="output_tok_s", value=round(output_tok_s, 2),
                notes=notes + "; tp = decode tp; value = output_tput_per_gpu x decode GPUs")]
    for metric, field, scale in IMX_METRICS:
        out.append(dict(common, metric=metric, value=round(float(rec[field]) * scale, 3),
                        notes=notes + f"; tp = decode tp; value = {field} x {scale:g}"))
    return out


def _aggregated_single_node(runs: pd.DataFrame) -> pd.DataFrame:
    # disaggregated multi-node rows and speculative (MTP) decoding are left out:
    # their layout does not fit one tp column and mistfast does not model MTP
    keep = (~runs["disagg"].astype(bool)) & (runs["spec_decoding"] == "none")
    return runs[keep]


def inferencemax_rows(raw_dir: str, source_prefix: str) -> pd.DataFrame:
    """One row per (configuration, metric) from the median run of each configuration."""
    runs = _aggregated_single_node(_load_inferencemax_runs(raw_dir))
    rows = []
    for _, group in runs.groupby(IMX_KEY, sort=True):
        rows.extend(_inferencemax_config_rows(_median_run(group), group, source_prefix))
    return pd.DataFrame(rows, columns=COLUMNS[1:])


def _median_run(group: pd.DataFrame):
    """The run with the median output throughput (upper median for an even count).

    Repeated runs of one configuration use the same container; when they disagree the
    outlier is usually a slow, disturbed run, so the median is kept rather than the newest.
    """
    ordered = group.sort_values(["output_tput_per_gpu", "run"], kind="stable")
    return ordered.iloc[len(ordered) // 2]


def _inferencemax_config_rows(rec, group, source_prefix):
    engine, family = IMX_ENGINE[rec["framework"]]
    gpus = int(rec["tp"])  # single node: InferenceMAX divides by tp to get per-GPU numbers
    output_tok_s = float(rec["output_tput_per_gpu"]) * gpus
    repeats = sorted({round(float(v) * gpus, 1) for v in group["output_tput_per_gpu"]})
    base_notes = (
        f"InferenceMAX actions run {rec['run']}; runner {rec['hw']}"
        + (" (SXM assumed)" if rec["hw"] in ("h100", "h200") else "")
        + f"; ep {int(rec['ep'])}; dp_attention {rec['dp_attention']}; "
        f"{group['run'].nunique()} run(s), output tok/s {'/'.join(str(v) for v in repeats)} "
        f"(spread {100 * (max(repeats) / min(repeats) - 1):.1f}%)"
        + ("; CAUTION runs disagree >10%" if max(repeats) > 1.1 * min(repeats) else "")
    )
    common = {
        "source": f"{source_prefix}/run_{rec['run']}/agg_bmk.json",
        "engine": engine,
        "engine_version": _image_version(rec["image"]),
        "model": rec["model"],
        "precision": IMX_PRECISION[(rec["model"], rec["precision"])],
        "hardware": IMX_HARDWARE[rec["hw"]],
        "num_accel": gpus,
        "tp": int(rec["tp"]),
        "pp": 1,
        "workload": IMX_WORKLOAD,
        "isl": int(rec["isl"]),
        "osl": int(rec["osl"]),
        "batch_or_concurrency": int(rec["conc"]),
        "request_rate": "inf (closed loop)",
        "dataset": "random",
        "engine_family": family,
    }
    out = [dict(common, metric="output_tok_s", value=round(output_tok_s, 2),
                notes=base_notes + "; value = output_tput_per_gpu x tp")]
    for metric, field, scale in IMX_METRICS:
        out.append(dict(common, metric=metric, value=round(float(rec[field]) * scale, 3),
                        notes=base_notes + f"; value = {field} x {scale:g}"))
    return out


# ---------------------------------------------------------------- MLPerf Inference v5.1
MLPERF_MODELS = {  # MLPerf benchmark -> (HF model id, dataset, config file stem)
    "llama2-70b-99": ("meta-llama/Llama-2-70b-chat-hf", "openorca", "llama2-70b"),
    "llama2-70b-99.9": ("meta-llama/Llama-2-70b-chat-hf", "openorca", "llama2-70b"),
    "llama3.1-8b": ("meta-llama/Llama-3.1-8B-Instruct", "mlperf_llama3.1-8b_cnndm", "llama3_1-8b"),
    "llama3.1-405b": ("meta-llama/Llama-3.1-405B-Instruct", "mlperf_llama3.1-405b_mix", "llama3_1-405b"),
    "mixtral-8x7b": ("mistralai/Mixtral-8x7B-Instruct-v0.1", "mlperf_mixtral_mix", "mixtral-8x7b"),
    "deepseek-r1": ("deepseek-ai/DeepSeek-R1", "mlperf_deepseek_r1_mix", "deepseek-r1"),
}
MLPERF_DATASET_NOTE = {
    "openorca": "MLPerf llama2-70b OpenOrca subset (24,576 samples)",
    "mlperf_llama3.1-8b_cnndm": "MLPerf llama3.1-8b CNN-DailyMail validation set (13,368 samples, 128 output tokens)",
    "mlperf_llama3.1-405b_mix": "MLPerf llama3.1-405b long-context mix (8,313 samples)",
    "mlperf_mixtral_mix": "MLPerf mixtral-8x7b mix of OpenOrca, GSM8K and MBXP (15,000 samples)",
    "mlperf_deepseek_r1_mix": "MLPerf deepseek-r1 reasoning mix (4,388 samples)",
}
MLPERF_HARDWARE = {
    "NVIDIA B200-SXM-180GB": "B200", "NVIDIA H200-SXM-141GB": "H200-SXM-141GB",
    "NVIDIA H100-SXM-80GB": "H100-SXM-80GB", "NVIDIA GB200": "GB200", "NVIDIA GB300": "GB300",
    "NVIDIA H200-NVL-141GB": "H200-NVL-141GB", "Virtualized NVIDIA H200-SXM-141GB": "H200-SXM-141GB",
    "AMD Instinct MI300X 192GB HBM3": "MI300X", "AMD Instinct MI325X 256GB HBM3e": "MI325X",
    "AMD Instinct MI355X 288GB HBM3e": "MI355X",
}
# TensorRT-LLM commit pinned in NVIDIA's v5.1 Makefile.build: "7/24/25 1.0-mlpinf side branch"
MLPERF_TRTLLM_1 = "18c0333e96ea7a2c37caded8a310d05c5f095e88"
SUMMARY_FIELDS = {  # mlperf_log_summary.txt line -> key
    "Completed samples per second": "samples_s", "Completed tokens per second": "tokens_s",
    "Mean latency (ns)": "e2e_mean_ns", "99.00 percentile latency (ns)": "e2e_p99_ns",
    "Mean First Token latency (ns)": "ttft_mean_ns", "99.00 percentile first token latency (ns)": "ttft_p99_ns",
    "Mean Time to Output Token (ns)": "tpot_mean_ns", "99.00 percentile time to output token (ns)": "tpot_p99_ns",
    "target_qps": "target_qps", "ttft_latency (ns)": "ttft_limit_ns", "tpot_latency (ns)": "tpot_limit_ns",
    "Samples per second": "samples_s", "Tokens per second": "tokens_s",  # Offline wording
    "Result is": "result",
    "samples_per_query": "samples_per_query",  # Offline: queries issued at t=0 (the run's length)
}


def _git_show(repo: str, commit: str, path: str) -> str | None:
    import subprocess
    out = subprocess.run(["git", "-C", repo, "show", f"{commit}:{path}"], capture_output=True, text=True)
    return out.stdout if out.returncode == 0 else None


def parse_mlperf_summary(text: str) -> dict:
    values = {}
    for line in text.splitlines():
        if ":" not in line:
            continue
        label, _, raw = line.partition(":")
        key = SUMMARY_FIELDS.get(label.strip())
        if key and key not in values:
            raw = raw.strip()
            values[key] = raw if key == "result" else float(raw)
    return values


def _single_int(pattern: str, text: str | None) -> int | None:
    found = {int(v) for v in re.findall(pattern, text or "")}
    return found.pop() if len(found) == 1 else None


def _mlperf_parallelism(repo, commit, rec, family):
    """(tp, pp, ep, config path) from the submitter's own config, or None when ambiguous."""
    submitter, platform, scenario = rec["Submitter"], rec["Platform"], rec["Scenario"]
    stem = MLPERF_MODELS[rec["Model"]][2]
    if family == "vllm-single":
        return 1, 1, None, "single accelerator", ""
    if family == "trtllm-1":
        # config folders are named after the system, with or without the _TRT suffix
        for system in (platform.split("_TRT")[0], platform):
            path = f"closed/{submitter}/configs/{system}/{scenario}/{stem}.py"
            text = _git_show(repo, commit, path)
            if text is not None:
                break
        tp = _single_int(r"tensor_parallelism:\s*(\d+)", text)
        pp = _single_int(r"pipeline_parallelism:\s*(\d+)", text)
        ep = _single_int(r"moe_expert_parallelism:\s*(\d+)", text)
    else:  # AMD harness_llm with vLLM
        device = MLPERF_HARDWARE[rec["Accelerator"]].lower()
        path = (f"{rec['Category']}/{submitter}/code/{rec['Model']}/harness_llm/models/{stem}/"
                f"{scenario.lower()}_{device}.yaml")
        text = _git_show(repo, commit, path)
        section = (text or "").split("vllm_engine_config:", 1)[-1] if text else None
        tp = _single_int(r"\n\s*tensor_parallel_size:\s*(\d+)", section)
        pp, ep = (1 if tp else None), None
    if tp is None or pp is None:
        return None
    harness = _harness_tool().harness_settings(path, text or "")
    limits = mlperf_engine_limits(text, family)
    if harness:   # settings that shape the step sequence (mistfast/mlperf.py)
        limits = f"harness settings from that config: {', '.join(harness)}" + (f"; {limits}" if limits else "")
    return tp, pp, ep, path, limits


def mlperf_engine_limits(text: str | None, family: str) -> str:
    """The engine's batch limits as the submitter's config sets them, as a notes fragment ("" when
    not set unambiguously): TensorRT-LLM ``gpu_batch_size`` and ``max_num_tokens`` (per rank with
    attention data parallelism), AMD vLLM ``max_num_seqs`` and ``max_num_batched_tokens``."""
    if not text:
        return ""
    if family == "trtllm-1":
        m = re.search(r"gpu_batch_size:\s*\{([^}]*)\}", text)
        bs = {int(v) for v in re.findall(r":\s*(\d+)", m.group(1))} if m else set()
        bs = bs.pop() if len(bs) == 1 else None
        # the runtime flag is what the executor runs with (NVIDIA llmlib/config.py
        # TrtllmHarnessConfig.__post_init__: runtime max_num_tokens = runtime flag or else the build
        # flag; cores/trtllm_executor_core.py passes the runtime one to ExecutorConfig): the B200
        # llama3.1-405b configs build 2048 (Interactive) / 5120 (Offline) and run 1536
        runtime = re.findall(r"trtllm_runtime_flags\s*:\s*\{([^}]*)\}", text)
        tok = _single_int(r"'max_num_tokens':\s*(\d+)", "\n".join(runtime)) if runtime else None
        if tok is None and not re.search(r"'max_num_tokens'", "\n".join(runtime)):
            tok = _single_int(r"'max_num_tokens':\s*(\d+)", text)
        adp = re.search(r"'enable_attention_dp':\s*True", text) is not None
    else:
        section = text.split("vllm_engine_config:", 1)[-1]
        bs = _single_int(r"\n\s*max_num_seqs:\s*(\d+)", section)
        tok = _single_int(r"\n\s*max_num_batched_tokens:\s*(\d+)", section)
        adp = False
    parts = ([f"max batch {bs}"] if bs else []) + ([f"max num tokens {tok}"] if tok else [])
    if not parts:
        return ""
    return "engine limits from that config: " + ", ".join(parts) + (" per rank (attention DP over the tp ranks)"
                                                                   if adp else "")


_LIMITS = re.compile(r"engine limits from that config:[^;]*")


def mlperf_notes_with_limits(notes: str, family: str, repo: str, commit: str = "HEAD") -> str:
    """A stored MLPerf row's notes with its "engine limits from that config" segment re-read from
    the config its notes name (``parallelism from <path>;``) by :func:`mlperf_engine_limits`;
    other notes unchanged."""
    m = re.search(r"parallelism from (\S+);", notes)
    if not m or family not in ("trtllm-1", "vllm"):
        return notes
    limits = mlperf_engine_limits(_git_show(repo, commit, m.group(1)), family)
    if _LIMITS.search(notes):
        return _LIMITS.sub(lambda _: limits, notes).replace("; ; ", "; ") if limits else \
            re.sub(r"; engine limits from that config:[^;]*", "", notes)
    if not limits:
        return notes
    anchor = re.search(r"harness settings from that config:[^;]*;|parallelism from \S+;", notes)
    return notes[:anchor.end()] + f" {limits};" + notes[anchor.end():]


def relimit_csv(path: str, repo: str) -> int:
    """Apply :func:`mlperf_notes_with_limits` to the notes of every row of a CSV (``.gz`` too), in
    place; other cells and rows byte-identical. Returns the number of rows changed."""
    import csv
    import gzip
    import io
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", newline="") as fh:
        raw = fh.read()
    rows = list(csv.reader(io.StringIO(raw)))
    col, fam = rows[0].index("notes"), rows[0].index("engine_family")
    changed = 0
    for row in rows[1:]:
        new = mlperf_notes_with_limits(row[col], row[fam], repo)
        changed += new != row[col]
        row[col] = new
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n" if "\r\n" in raw[:4096] else "\n").writerows(rows)
    if path.endswith(".gz"):
        with open(path, "wb") as fh:
            fh.write(gzip.compress(out.getvalue().encode(), mtime=0))
    else:
        with open(path, "w", newline="") as fh:
            fh.write(out.getvalue())
    return changed


def _mlperf_family(repo, commit, rec):
    software = rec["Software"]
    if software.startswith("TensorRT"):
        makefile = _git_show(repo, commit, f"closed/{rec['Submitter']}/Makefile.build") or ""
        return "trtllm-1" if re.search(rf"^TRTLLM_HASH\s*\??=\s*{MLPERF_TRTLLM_1}", makefile, re.M) else None
    if software.startswith("vLLM") and rec["Accelerator"].startswith("AMD"):
        return "vllm"
    if software.startswith("vLLM") and int(rec["a#"]) * int(rec["Nodes"]) == 1:
        return "vllm-single"  # one GPU: no parallelism to look up
    return None


def mlperf51_rows(repo: str, commit: str) -> pd.DataFrame:
    import json as _json
    results = _json.loads(_git_show(repo, commit, "summary_results.json"))
    rows, seen = [], set()
    for rec in results:
        if rec["Suite"] != "datacenter" or rec["Model"] not in MLPERF_MODELS:
            continue
        # open division lets submitters change the model; only AMD's MI355X llama2-70b
        # run is kept (same benchmark id, its harness config is in the repository)
        open_mi355x = (rec["Category"] == "open" and rec["Submitter"] == "AMD"
                       and "MI355X" in rec["Accelerator"] and rec["Model"].startswith("llama2-70b"))
        if rec["Category"] != "closed" and not open_mi355x:
            continue
        if rec["Accelerator"] not in MLPERF_HARDWARE:
            continue
        family = _mlperf_family(repo, commit, rec)
        if family is None:
            continue
        layout = _mlperf_parallelism(repo, commit, rec, family)
        if layout is None:
            continue
        summary_path = f"{rec['Location']}/performance/run_1/mlperf_log_summary.txt"
        text = _git_show(repo, commit, summary_path)
        if text is None:
            continue
        stats = parse_mlperf_summary(text)
        if stats.get("result") != "VALID":
            continue
        detail = _git_show(repo, commit, summary_path.replace("_summary.txt", "_detail.txt")) or ""
        generated = re.search(r'"generated_query_count", "value": (\d+)', detail)
        if generated:  # queries loadgen issued in the run (Server: max(min_query_count, qps x duration))
            stats["generated_query_count"] = int(generated.group(1))
        # llama2-70b-99 and -99.9 are often the very same run submitted twice
        fingerprint = (rec["Submitter"], rec["Platform"], MLPERF_MODELS[rec["Model"]][0],
                       rec["Scenario"], stats.get("tokens_s"), stats.get("samples_s"))
        if fingerprint in seen:
            continue
        seen.add(fingerprint)
        rows.extend(_mlperf_result_rows(rec, family, layout, stats, commit, summary_path))
    return mlperf_measured_load(pd.DataFrame(rows, columns=COLUMNS[1:]))


# A Server / Interactive latency measured this close to the system's whole capacity is a statement
# about the last few per cent of it: with a mean step time a + b x batch, the batch that serves a
# rate at load rho = rate / capacity is ~ rho a / (b (1 - rho)), so latency ~ 1 / (1 - rho) and a
# relative capacity error e moves it by ~ e rho / (1 - rho) — at rho >= 0.9, >= 9 e (a 5 % error in
# capacity: +-45 % or more in latency; at rho = 0.976, NVIDIA B200 llama2-70b Server, 40 e).
SATURATED_LOAD = 0.9
LATENCY_METRIC_PREFIXES = ("ttft", "tpot", "itl", "e2e")


def _mlperf_system_key(source: str) -> tuple:
    """(division, submitter, system) of an MLPerf result's source path."""
    m = re.search(r":(closed|open)/([^/]+)/results/([^/]+)/", source)
    return m.groups() if m else (source,)


def mlperf_measured_load(rows: pd.DataFrame) -> pd.DataFrame:
    """Each Server / Interactive row's measured load — its output tokens/s over the Offline output
    tokens/s of the same system and model (same division, submitter, system directory) — in
    ``notes``; latency rows at ``SATURATED_LOAD`` or more are marked ``validate-excluded`` with the
    reason. Rows without an Offline result of their system are left as they are. Idempotent."""
    rows = rows.copy()
    key = [(_mlperf_system_key(s), m) for s, m in zip(rows.source, rows.model)]
    scen = rows.workload.str.extract(r"MLPerf Inference v5\.1 (?:\w+ division )?(Offline|Server|Interactive):")[0]
    tok = rows.metric == "output_tok_s"
    value = rows.value.astype(float)
    offline = {k: v for k, v, o, t in zip(key, value, scen == "Offline", tok) if o and t}
    online = {(k, sc): v for k, v, sc, t in zip(key, value, scen, tok) if t and sc in ("Server", "Interactive")}
    notes = []
    for k, sc, metric, note in zip(key, scen, rows.metric, rows.notes):
        if sc not in ("Server", "Interactive") or k not in offline or (k, sc) not in online \
                or "measured load:" in note:
            notes.append(note)
            continue
        load = online[(k, sc)] / offline[k]
        note += (f"; measured load: {sc} output tokens/s = {load:.3f} x the same system's Offline output tokens/s "
                 f"({online[(k, sc)]:g} / {offline[k]:g})")
        if metric.startswith(LATENCY_METRIC_PREFIXES) and load >= SATURATED_LOAD:
            note += (f"; validate-excluded: latency at {100 * load:.1f} % of the system's measured Offline "
                     f"throughput (the submitter's target_qps sits at capacity): latency ~ 1/(1 - load), so a "
                     f"capacity error e moves it by ~{load / (1 - load):.0f} e when load < 1 — a statement about "
                     f"the last few per cent of capacity, which the throughput rows of the same run test directly")
        notes.append(note)
    rows["notes"] = notes
    return rows


def _mlperf_precision(rec, engine):
    weights = str(rec["weight_data_types"]).lower()
    if engine.startswith("TensorRT-LLM") and weights == "fp4":
        # NVIDIA's documentation/calibration.md: FP4 with per-block scales, i.e. NVFP4
        return "NVFP4 (per-block scaled FP4; NVIDIA MLPerf calibration.md)"
    return weights.upper()


def _mlperf_result_rows(rec, family, layout, stats, commit, summary_path):
    tp, pp, ep, config_path, engine_limits = layout
    model, dataset, _ = MLPERF_MODELS[rec["Model"]]
    gpus = int(rec["a#"]) * int(rec["Nodes"])
    scenario = rec["Scenario"]
    offline = scenario == "Offline"
    division = "" if rec["Category"] == "closed" else f"{rec['Category']} division "
    if family == "trtllm-1":
        engine = "TensorRT-LLM (NVIDIA MLPerf harness)"
        version = f"1.0-mlpinf branch @{MLPERF_TRTLLM_1[:12]} ({rec['Software']})"
    elif family == "vllm-single":
        engine = f"vLLM ({rec['Submitter']} MLPerf harness)"
        version = rec["Software"].split(",")[0].replace("vLLM ", "")
        family = "vllm"
    else:
        engine = "vLLM ROCm (AMD MLPerf harness_llm)"
        version = rec["Software"].split(",")[0].replace("vLLM ", "")
    if offline:
        issued = (f"all {int(stats['samples_per_query'])} queries (samples_per_query) issued at t=0"
                  if stats.get("samples_per_query") else "all queries issued at t=0")
        workload = f"MLPerf Inference v5.1 {division}Offline: {MLPERF_DATASET_NOTE[dataset]}, {issued}"
        rate = "offline (all queries at t=0)"
    else:
        limits = (f"p99 TTFT <= {stats['ttft_limit_ns'] / 1e6:g} ms, "
                  f"p99 TPOT <= {stats['tpot_limit_ns'] / 1e6:g} ms")
        workload = (f"MLPerf Inference v5.1 {division}{scenario}: {MLPERF_DATASET_NOTE[dataset]}, "
                    f"Poisson arrivals at target_qps"
                    + (f", {stats['generated_query_count']} queries (generated_query_count)"
                       if stats.get("generated_query_count") else "") + f", {limits}")
        rate = f"{stats['target_qps']:g}"
    notes = (f"submitter {rec['Submitter']}; result id {rec['ID']}; system {rec['System']}; "
             f"{rec['a#']} accelerators x {rec['Nodes']} node(s); replicas = {gpus} / (tp x pp) = "
             f"{gpus / (tp * pp):g}; "
             + (f"moe ep={ep}; " if ep else "")
             + f"weights {rec['weight_data_types']}; benchmark {rec['Model']}; "
             f"parallelism from {config_path}; " + (f"{engine_limits}; " if engine_limits else "")
             + f"summary_results.json Performance_Result "
             f"{rec['Performance_Result']} {rec['Performance_Units']}")
    common = {
        "source": f"github:mlcommons/inference_results_v5.1@{commit}:{summary_path}",
        "engine": engine, "engine_version": version, "model": model,
        "precision": _mlperf_precision(rec, engine), "hardware": MLPERF_HARDWARE[rec["Accelerator"]],
        "num_accel": gpus, "tp": tp, "pp": pp, "workload": workload, "isl": "", "osl": "",
        "batch_or_concurrency": "engine-chosen (max load)" if offline else "open loop (Poisson)",
        "request_rate": rate, "dataset": dataset, "engine_family": family,
    }
    wanted = [("output_tok_s", "tokens_s", 1.0), ("requests_s", "samples_s", 1.0)]
    if not offline:
        wanted += [("ttft_ms", "ttft_mean_ns", 1e-6), ("ttft_p99_ms", "ttft_p99_ns", 1e-6),
                   ("tpot_ms", "tpot_mean_ns", 1e-6), ("tpot_p99_ms", "tpot_p99_ns", 1e-6),
                   ("e2e_mean_ms", "e2e_mean_ns", 1e-6)]
    out = []
    for metric, key, scale in wanted:
        if key in stats:
            out.append(dict(common, metric=metric, value=round(stats[key] * scale, 3),
                            notes=notes + f"; value from summary line {key}"))
    return out


# what makes a row the same measurement across rebuilds (notes, the workload text and the dataset
# name describing it may be reworded or corrected without changing the id)
IDENTITY = [c for c in COLUMNS if c not in ("notes", "workload", "dataset")]


def assemble(previous_path: str | None = None) -> pd.DataFrame:
    """Concatenate rows_*.csv; a measurement already in the previous public.csv keeps its id
    (so ids stay stable for anyone who cites them), new rows get the next free ids."""
    paths = glob.glob(os.path.join(HERE, "rows_*.csv")) + glob.glob(os.path.join(HERE, "rows_*.csv.gz"))
    parts = [pd.read_csv(p, dtype=str, keep_default_na=False) for p in sorted(paths)]
    table = pd.concat(parts, ignore_index=True)
    previous_ids = {}
    if previous_path and os.path.exists(previous_path):
        previous = pd.read_csv(previous_path, dtype=str, keep_default_na=False)
        previous_ids = {tuple(r[1:]): r[0] for r in previous[IDENTITY].itertuples(index=False)}
    next_number = 1 + max((int(i[1:]) for i in previous_ids.values()), default=0)
    ids = []
    for row in table[IDENTITY[1:]].itertuples(index=False):
        known = previous_ids.get(tuple(row))
        if known is None:
            known, next_number = f"P{next_number:04d}", next_number + 1
        ids.append(known)
    table.insert(0, "id", ids)
    table = table.sort_values("id", key=lambda s: s.str[1:].astype(int), kind="stable")
    return table[COLUMNS].reset_index(drop=True)


# sources reserved for independent validation must never appear here
RESERVED_SOURCE_MARKERS = ("dstack", "blog.vllm.ai", "inference_results_v4.0", "inference_results_v4.1")


def check(table: pd.DataFrame) -> list[str]:
    problems = []
    if list(table.columns) != COLUMNS:
        problems.append(f"columns {list(table.columns)} differ from {COLUMNS}")
    if table["id"].duplicated().any():
        problems.append("duplicate ids")
    if table[IDENTITY[1:]].duplicated().any():
        problems.append("two rows share every identity column (ids would be ambiguous)")
    for marker in RESERVED_SOURCE_MARKERS:
        hits = table["source"].str.contains(marker, regex=False)
        if hits.any():
            problems.append(f"{hits.sum()} rows cite a reserved source ({marker})")
    for _, row in table.iterrows():
        for field in ("source", "metric", "value", "engine_version", "hardware", "model"):
            if not str(row[field]).strip():
                problems.append(f"{row['id']}: empty {field}")
        try:
            if not math.isfinite(float(row["value"])) or float(row["value"]) <= 0:
                problems.append(f"{row['id']}: value {row['value']!r} is not a positive number")
        except ValueError:
            problems.append(f"{row['id']}: value {row['value']!r} is not a number")
        if row["engine_family"] not in {"vllm", "sglang", "trtllm-1", "trtllm-0", "tgi", "lmdeploy", "other"}:
            problems.append(f"{row['id']}: engine_family {row['engine_family']!r}")
    return problems


def _harness_tool():
    """tools/mlperf_harness_settings.py (the harness settings of an MLPerf row, from its config)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        "mlperf_harness_settings", os.path.join(HERE, "..", "..", "tools", "mlperf_harness_settings.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _write_generated(rows: pd.DataFrame, name: str) -> None:
    """Generated row files are kept gzip-compressed (mtime 0, so rebuilds are byte-identical)."""
    rows.to_csv(os.path.join(HERE, name), index=False,
                compression={"method": "gzip", "mtime": 0})
    print(f"{name}: {len(rows)} rows")


def main(argv):
    if argv[:1] == ["inferencemax"]:
        rows = inferencemax_rows(argv[1], argv[2])
        _write_generated(rows, "rows_inferencemax.csv.gz")
        disagg = inferencemax_disagg_rows(argv[1], argv[2])
        _write_generated(disagg, "rows_inferencemax_disagg.csv.gz")
        return 0
    if argv[:1] == ["mlperf51-load"]:   # add the measured load to the stored rows (mlperf_measured_load)
        path = os.path.join(HERE, "rows_mlperf51.csv.gz")
        _write_generated(mlperf_measured_load(pd.read_csv(path, dtype=str, keep_default_na=False)),
                         "rows_mlperf51.csv.gz")
        return 0
    if argv[:1] == ["mlperf51-harness"]:   # add the harness settings to the stored rows (tools/mlperf_harness_settings.py)
        path = os.path.join(HERE, "rows_mlperf51.csv.gz")
        rows = pd.read_csv(path, dtype=str, keep_default_na=False)
        tool, cache = _harness_tool(), {}
        rows["notes"] = [tool.annotated_notes(n, tool.Path(argv[1]), cache) for n in rows.notes]
        _write_generated(rows, "rows_mlperf51.csv.gz")
        return 0
    if argv[:1] == ["mlperf51-limits"]:   # re-read the engine limits of MLPerf rows from their configs, in place
        # (public.csv carries later per-row edits the rows file lacks: both are edited in place)
        for name in ("public.csv", "rows_mlperf51.csv.gz"):
            print(f"{name}: {relimit_csv(os.path.join(HERE, name), argv[1])} rows changed")
        return 0
    if argv[:1] == ["mlperf51"]:
        rows = mlperf51_rows(argv[1], argv[2])
        _write_generated(rows, "rows_mlperf51.csv.gz")
        return 0
    table = assemble(os.path.join(HERE, "public.csv"))
    problems = check(table)
    for p in problems:
        print(p)
    table.to_csv(os.path.join(HERE, "public.csv"), index=False)
    print(f"public.csv: {len(table)} rows, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
