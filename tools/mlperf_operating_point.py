"""Split each MLPerf v5.1 Server/Interactive run's TPOT error into the engine's capacity and its
fixed time per step (docs/ttft-under-load.md, "MLPerf TTFT, session 11").

An in-flight-batching engine whose step costs ``t(B) = a + b B`` (a: the part of a step that does
not grow with the tokens in it -- weights read, launches, host work; b: time per running sequence,
prefill of its share of prompt tokens included) settles, at an output-token rate ``x``, where
``B = x t(B)`` (Little's law, one step = one output token per running sequence). With the
capacity ``c = 1/b`` (the Offline rate, B large) and the load ``rho = x / c``:

    B* = x a / (1 - rho),   t* = TPOT = a / (1 - rho),   so   a = TPOT (1 - rho).

So a run's TPOT is its fixed step time amplified by 1/(1 - rho). Measured: rho from the row notes
("measured load: Server output tokens/s = R x the same system's Offline output tokens/s"), a_meas
= TPOT_meas (1 - rho_meas). Predicted: rho_pred = predicted Server output tokens/s / predicted
Offline output tokens/s of the same system (the Offline row of the same results folder), a_pred =
TPOT_pred (1 - rho_pred). TPOT_pred / TPOT_meas = (a_pred / a_meas) x ((1 - rho_meas) / (1 - rho_pred)):
the first factor is the fixed step, the second the capacity.

    python tools/mlperf_operating_point.py REPORT_DIR [REPORT_DIR ...]
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

PUBLIC = Path(__file__).resolve().parents[1] / "data" / "measurements" / "public.csv"
_LOAD = re.compile(r"measured load: \w+ output tokens/s = ([0-9.]+) x")


def fixed_step_ms(tpot_ms: float, load: float) -> float:
    """a = TPOT (1 - rho): the per-step time a linear step model needs to give ``tpot_ms`` at load
    ``load`` (0 <= load < 1); NaN outside that range."""
    if not (0.0 <= load < 1.0) or not np.isfinite(tpot_ms):
        return float("nan")
    return tpot_ms * (1.0 - load)


def runs(report: Path, public: Path = PUBLIC) -> pd.DataFrame:
    rep = pd.read_csv(report / "report.csv")
    pub = pd.read_csv(public, dtype=str, keep_default_na=False)[["id", "source", "workload", "notes"]]
    m = rep.merge(pub, on="id")
    m = m[m.source.str.contains("mlcommons/inference_results_v5")]
    m["folder"] = m.source.str.replace(r"/(Server|Interactive|Offline)/performance/.*$", "", regex=True)
    m["scenario"] = m.source.str.extract(r"/(Server|Interactive|Offline)/performance/")[0]
    pred = "predicted_calibrated"
    off = m[(m.scenario == "Offline") & (m.metric == "output_tok_s")].drop_duplicates("folder")
    off = off.set_index("folder")[pred].astype(float)
    out = []
    for src, g in m[m.scenario.isin(["Server", "Interactive"])].groupby("source"):
        met = {k: v for k, v in zip(g.metric, zip(g.measured.astype(float), g[pred].astype(float), g.status))}
        if "tpot_ms" not in met or "output_tok_s" not in met:
            continue
        lm = _LOAD.search(g.notes.iloc[0])
        folder = g.folder.iloc[0]
        if not lm or folder not in off.index:
            continue
        rho_m = float(lm.group(1))
        rho_p = met["output_tok_s"][1] / off[folder]
        tm, tp = met["tpot_ms"][0], met["tpot_ms"][1]
        out.append(dict(model=g.model.iloc[0].split("/")[-1][:16], hw=g.hardware.iloc[0][:8], scenario=g.scenario.iloc[0],
                        status=met["tpot_ms"][2], rho_meas=rho_m, rho_pred=rho_p, tpot_meas=tm, tpot_pred=tp,
                        a_meas=fixed_step_ms(tm, rho_m), a_pred=fixed_step_ms(tp, rho_p),
                        ttft_err=(met["ttft_ms"][1] / met["ttft_ms"][0] - 1) if "ttft_ms" in met else np.nan))
    df = pd.DataFrame(out)
    df["tpot_err"] = df.tpot_pred / df.tpot_meas - 1
    df["a_ratio"] = df.a_pred / df.a_meas
    df["cap_ratio"] = (1 - df.rho_meas) / (1 - df.rho_pred)
    return df


def main(argv: list[str]) -> None:
    pd.set_option("display.width", 200)
    for d in argv:
        df = runs(Path(d))
        ok = df[df.status == "ok"]
        print(f"== {d}: {len(ok)} runs with TPOT rows ok (of {len(df)})")
        agg = ok.groupby(["model", "hw", "scenario"]).agg(
            n=("tpot_err", "size"), rho_meas=("rho_meas", "median"), rho_pred=("rho_pred", "median"),
            a_meas_ms=("a_meas", "median"), a_pred_ms=("a_pred", "median"), tpot_err=("tpot_err", "median"),
            a_ratio=("a_ratio", "median"), cap_ratio=("cap_ratio", "median"), ttft_err=("ttft_err", "median"))
        print(agg.round(2).to_string())


if __name__ == "__main__":
    main(sys.argv[1:] or ["/work/bench/s11/loso", "/work/bench/s11/ship"])
