"""Assemble data/measurements/public.csv from per-source row files.

Each ``rows_*.csv`` file next to this script holds rows of one source family,
with every column of public.csv except ``id``.  This script concatenates them
in file-name order, assigns ids P0001, P0002, ... and checks that every row has
a source, a metric and a finite value.

``python build_public.py inferencemax RAW_DIR SOURCE_PREFIX`` regenerates
rows_inferencemax.csv from the InferenceMAX ``agg_bmk.json`` artifacts (one
folder ``run_<github-actions-run-id>`` per workflow run), e.g. the copies kept
in github:gminneci/mantile under reconcile/sources/inferencemax/raw/.

This is a data-preparation tool, not part of the mistfast package.
"""
from __future__ import annotations

import glob
import json
import math
import os
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
]
IMX_WORKLOAD = (
    "online serving, closed loop at fixed max concurrency, request rate inf; "
    "random token prompts (--dataset-name random --random-range-ratio 0.8, --ignore-eos), "
    "num-prompts 10x concurrency on most runners"
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


def _aggregated_single_node(runs: pd.DataFrame) -> pd.DataFrame:
    # disaggregated multi-node rows and speculative (MTP) decoding are left out:
    # their layout does not fit one tp column and mistfast does not model MTP
    keep = (~runs["disagg"].astype(bool)) & (runs["spec_decoding"] == "none")
    return runs[keep]


def inferencemax_rows(raw_dir: str, source_prefix: str) -> pd.DataFrame:
    """One row per (configuration, metric) from the newest run of each configuration."""
    runs = _aggregated_single_node(_load_inferencemax_runs(raw_dir))
    rows = []
    for _, group in runs.groupby(IMX_KEY, sort=True):
        group = group.sort_values("run")
        newest = group.iloc[-1]
        rows.extend(_inferencemax_config_rows(newest, group, source_prefix))
    return pd.DataFrame(rows, columns=COLUMNS[1:])


def _inferencemax_config_rows(rec, group, source_prefix):
    engine, family = IMX_ENGINE[rec["framework"]]
    gpus = int(rec["tp"])  # single node: InferenceMAX divides by tp to get per-GPU numbers
    output_tok_s = float(rec["output_tput_per_gpu"]) * gpus
    repeats = sorted({round(float(v) * gpus, 1) for v in group["output_tput_per_gpu"]})
    base_notes = (
        f"InferenceMAX (SemiAnalysis) GitHub Actions run {rec['run']} "
        f"(https://github.com/InferenceMAX/InferenceMAX/actions/runs/{rec['run']}); "
        f"runner {rec['hw']}; ep={int(rec['ep'])}; dp_attention={rec['dp_attention']}; "
        f"model id as run: {rec['model']}; "
        f"runs of this config in the collection: {group['run'].nunique()} "
        f"(output tok/s seen: {'/'.join(str(v) for v in repeats)})"
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
                notes=base_notes + "; value = output_tput_per_gpu x tp (whole server)")]
    for metric, field, scale in IMX_METRICS:
        out.append(dict(common, metric=metric, value=round(float(rec[field]) * scale, 3),
                        notes=base_notes + f"; value = {field} x {scale:g} (mean over requests)"))
    return out


def assemble() -> pd.DataFrame:
    parts = [pd.read_csv(p, dtype=str, keep_default_na=False)
             for p in sorted(glob.glob(os.path.join(HERE, "rows_*.csv")))]
    table = pd.concat(parts, ignore_index=True)
    table.insert(0, "id", [f"P{i:04d}" for i in range(1, len(table) + 1)])
    return table[COLUMNS]


def check(table: pd.DataFrame) -> list[str]:
    problems = []
    for _, row in table.iterrows():
        for field in ("source", "metric", "value", "engine_version", "hardware", "model"):
            if not str(row[field]).strip():
                problems.append(f"{row['id']}: empty {field}")
        try:
            if not math.isfinite(float(row["value"])) or float(row["value"]) <= 0:
                problems.append(f"{row['id']}: value {row['value']!r} is not a positive number")
        except ValueError:
            problems.append(f"{row['id']}: value {row['value']!r} is not a number")
        if row["engine_family"] not in {"vllm", "sglang", "trtllm-1", "tgi", "lmdeploy", "other"}:
            problems.append(f"{row['id']}: engine_family {row['engine_family']!r}")
    return problems


def main(argv):
    if argv[:1] == ["inferencemax"]:
        rows = inferencemax_rows(argv[1], argv[2])
        rows.to_csv(os.path.join(HERE, "rows_inferencemax.csv"), index=False)
        print(f"rows_inferencemax.csv: {len(rows)} rows")
        return 0
    table = assemble()
    problems = check(table)
    for p in problems:
        print(p)
    table.to_csv(os.path.join(HERE, "public.csv"), index=False)
    print(f"public.csv: {len(table)} rows, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
