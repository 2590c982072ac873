"""Split the TTFT error of MLPerf Server/Interactive runs into a step part and a queue part.

For each LoadGen run with TTFT mean and TPOT mean rows in a ``mistfast validate`` report,

    TTFT_pred / TTFT_meas = (TPOT_pred / TPOT_meas) x (k_pred / k_meas),   k = TTFT / TPOT,

exactly: ``k`` is the time to first token counted in decode steps of that run (one TPOT = one
step of the running batch). The first factor is the *step* error (the simulated engine steps too
fast or too slow at that load); the second is the *steps-to-first-token* error (queueing, prefill
scheduling, dispatch: everything that decides how many steps a new query waits). A TTFT error that
sits in the first factor cannot be fixed by the scheduler or the dispatch; docs/ttft-under-load.md
("MLPerf Server/Interactive TTFT") has the table this prints for the baseline reports.

    python tools/mlperf_ttft_split.py REPORT.csv [data/measurements/public.csv] [--column predicted_calibrated]
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
TTFT_KEYS = ("ttft_ms", "ttft_mean_ms")
TPOT_KEYS = ("tpot_ms", "tpot_mean_ms")


def run_table(report: pd.DataFrame, public: pd.DataFrame, column: str = "predicted_calibrated") -> pd.DataFrame:
    """One row per MLPerf Server/Interactive run (rows of one run share the ``source`` cell) with
    measured and predicted TTFT and TPOT means, k = TTFT/TPOT and the three signed errors:
    ``err_ttft`` = (1 + ``err_step``) x (1 + ``err_k``) - 1. Runs without both metrics, or with a
    row outside the statistics (status other than ok), are left out."""
    rep = report.merge(public[["id", "source", "workload", "notes"]], on="id", how="inner")
    rep = rep[rep.workload.astype(str).str.contains(r"MLPerf Inference v\d.*(?:Server|Interactive)", regex=True)]
    out = []
    for source, g in rep.groupby("source", sort=True):
        by = {m: r for m, r in zip(g.metric, g.itertuples())}
        t = next((by[k] for k in TTFT_KEYS if k in by), None)
        s = next((by[k] for k in TPOT_KEYS if k in by), None)
        if t is None or s is None or t.status != "ok" or s.status != "ok":
            continue
        tp, sp = getattr(t, column), getattr(s, column)
        if not (np.isfinite(tp) and np.isfinite(sp) and t.measured > 0 and s.measured > 0 and sp > 0):
            continue
        k_meas, k_pred = t.measured / s.measured, tp / sp
        wl = str(t.workload)
        out.append({
            "source": source,
            "benchmark": (re.search(r": MLPerf (\S+)", wl) or [None, ""])[1],
            "scenario": "Interactive" if "Interactive" in wl else "Server",
            "device": t.device, "engine": t.engine_family, "tp": t.tp,
            "ttft_meas_ms": t.measured, "ttft_pred_ms": tp, "tpot_meas_ms": s.measured, "tpot_pred_ms": sp,
            "k_meas": k_meas, "k_pred": k_pred,
            "err_ttft": tp / t.measured - 1.0, "err_step": sp / s.measured - 1.0, "err_k": k_pred / k_meas - 1.0,
        })
    return pd.DataFrame(out)


def group_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Medians per (benchmark, scenario, device, engine, tp)."""
    keys = ["benchmark", "scenario", "device", "engine", "tp"]
    return (runs.groupby(keys).agg(runs=("source", "size"), k_meas=("k_meas", "median"), k_pred=("k_pred", "median"),
                                   err_ttft=("err_ttft", "median"), err_step=("err_step", "median"),
                                   err_k=("err_k", "median"))
            .reset_index())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report")
    ap.add_argument("public", nargs="?", default=str(ROOT / "data" / "measurements" / "public.csv"))
    ap.add_argument("--column", default="predicted_calibrated", help="prediction column of the report")
    a = ap.parse_args(argv)
    runs = run_table(pd.read_csv(a.report), pd.read_csv(a.public), a.column)
    if runs.empty:
        print("no MLPerf Server/Interactive run with TTFT and TPOT rows in the report")
        return 1
    pd.set_option("display.width", 200)
    print(group_table(runs).round(2).to_string(index=False))
    print(f"\nruns {len(runs)}: median |err| TTFT {runs.err_ttft.abs().median():.1%}, "
          f"step (TPOT) {runs.err_step.abs().median():.1%}, steps to first token (k) {runs.err_k.abs().median():.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
