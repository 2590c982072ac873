"""The engine step each MLPerf Server/Interactive run measured, against the step a calibration costs.

For every run (rows sharing a source and a target QPS) with mean TTFT, TPOT and E2E rows: per
data-parallel replica, running requests B = rate/replicas x (E2E - TTFT) (Little's law), one
decode step = the mean TPOT, prefill tokens per step = rate/replicas x mean input x TPOT (the
dataset's mean lengths). The step of B decodes at context mean input + mean output / 2 plus one
prefill chunk of that size is costed with the calibration a user gets (data/calibration.toml, or
--calibration FILE) *without* any harness time; gap = measured TPOT - costed step.

    python tools/mlperf_step_gap.py data/measurements/public.csv [-o gap.csv] [--calibration FILE]
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np
import pandas as pd

from mistfast import calibration as C
from mistfast import datasets as D
from mistfast import validate as V
from mistfast.scenario import scenario_point
from mistfast.specs import parse_scenario
from mistfast.stepmodel import step_latency


def run_gaps(csv: str, cal_path: Path) -> pd.DataFrame:
    pub = pd.read_csv(csv, dtype=str, keep_default_na=False)
    pub = pub[pub.workload.str.contains(r"MLPerf Inference v5\.\d (?:open division )?(?:Server|Interactive):")]
    rows = []
    for _, g in pub.groupby(pub.source + "|" + pub.request_rate):
        met = dict(zip(g.metric, g.value.astype(float)))
        if not {"tpot_ms", "e2e_mean_ms", "ttft_ms"} <= met.keys():
            continue
        r = g[g.metric == "tpot_ms"].iloc[0].to_dict()
        p = V.plan_row(r)
        if p.status not in ("ok", "excluded") or p.kind != "run" or not p.dataset:
            continue
        base = scenario_point(parse_scenario(p.scenario)).client.model_copy(update={"harness_step_ms": 0.0})
        client, _ = V._stored_client(base, p, cal_path)
        st = D.dataset_stats(p.dataset)
        rate = float(r["request_rate"]) / p.dp
        tpot = met["tpot_ms"]
        running = max(int(round(rate * (met["e2e_mean_ms"] - met["ttft_ms"]) / 1e3)), 1)
        prefill = int(round(rate * st["input_mean"] * tpot / 1e3))
        ctx = int(st["input_mean"] + st["output_mean"] / 2)
        step = step_latency(client, prefill=((0, prefill),) if prefill else (), decode=((1, ctx),) * running).total_ms
        load = re.search(r"= ([\d.]+) x the same", r["notes"])
        rows.append(dict(source=r["source"], request_rate=r["request_rate"], model=p.model, engine=p.engine,
                         device=p.device, tp=p.tp, layers=client.model.num_layers,
                         scenario=re.search(r"v5\.\d (?:open division )?(\w+):", r["workload"]).group(1),
                         status=p.status, load=float(load.group(1)) if load else np.nan, running=running,
                         prefill_tokens=prefill, tpot_ms=tpot, costed_step_ms=step, gap_ms=tpot - step,
                         gap_us_per_layer=(tpot - step) / client.model.num_layers * 1e3))
    return pd.DataFrame(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv")
    ap.add_argument("-o", "--out")
    ap.add_argument("--calibration", default=None)
    a = ap.parse_args(argv)
    df = run_gaps(a.csv, Path(a.calibration) if a.calibration else C.calibration_path())
    if a.out:
        df.to_csv(a.out, index=False)
    pd.set_option("display.width", 200)
    print(df.groupby(["model", "engine", "scenario"]).agg(
        runs=("gap_ms", "size"), load=("load", "median"), running=("running", "median"), tpot_ms=("tpot_ms", "median"),
        costed_step_ms=("costed_step_ms", "median"), gap_ms=("gap_ms", "median"),
        gap_us_per_layer=("gap_us_per_layer", "median")).round(1).to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
