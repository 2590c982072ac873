"""Derive the empirical tables of data/datasets/azure-*-2023.toml from the Azure 2023 traces.

Usage: python tools/derive_dataset_tables.py ../shared/traces  (prints the [input]/[output] tables)

The traces are Azure/AzurePublicDataset@790921015d50dd6aae7f7e47f39ba0e235ad6b08:
data/AzureLLMInferenceTrace_{code,conv}.csv (CC-BY-4.0); only their percentiles and the rank
correlation are shipped, not the rows.
"""
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from mistfast.datasets import table_from_lengths


def _fmt(values, per_line=12):
    rows = [", ".join(str(v) for v in values[i:i + per_line]) for i in range(0, len(values), per_line)]
    return "[\n  " + ",\n  ".join(rows) + ",\n]"


def main(folder: str) -> None:
    for kind in ("code", "conv"):
        df = pd.read_csv(Path(folder) / f"AzureLLMInferenceTrace_{kind}.csv")
        inp, out = df["ContextTokens"].to_numpy(), df["GeneratedTokens"].to_numpy()
        print(f"# ---- {kind}: {len(df)} rows; input mean {inp.mean():.1f}, output mean {out.mean():.1f}; "
              f"Spearman {spearmanr(inp, out).correlation:.4f}")
        for side, x in (("input", inp), ("output", out)):
            t = table_from_lengths(x)
            print(f"[{side}]\nkind = \"quantiles\"")
            print("probs = " + _fmt([f"{p:g}" for p in t["probs"]]))
            print("tokens = " + _fmt(t["tokens"]))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/traces")
