"""The MLPerf TensorRT-LLM launch-time floor applied at prediction only (validate.MLPERF_LAUNCH_FLOOR_AT_PREDICT,
docs/ttft-under-load.md "MLPerf launch-time floor at prediction only, session 12"): the fit is bit for bit
the one of the switch off, so no other source's prediction moves; the MLPerf rows' predictions do."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mistfast import validate as V

ROOT = Path(__file__).parents[1]
PUBLIC = ROOT / "data" / "measurements" / "public.csv"
# InferenceMAX gpt-oss-120b trtllm-serve on B200 (2 runs, 12 rows) and one Dell B200 Llama-2-70B MLPerf system
# (Interactive and Offline: 9 rows; its harness config sets use_graphs False)
IMAX = [f"P{i:04d}" for i in (*range(993, 999), *range(1005, 1011))]
MLPERF = [f"P{i:04d}" for i in range(3926, 3935)]


def _run(tmp_path: Path, name: str, monkeypatch, on: bool):
    monkeypatch.setattr(V, "MLPERF_LAUNCH_FLOOR_AT_PREDICT", on)
    out = tmp_path / name
    rep = V.validate(str(tmp_path / "rows.csv"), out, cv="source", plot=False, write_catalog=out / "catalog.toml")
    # the fitted catalogue without its run facts and the held-out error statistics it records per pair
    # (those of the MLPerf rows are meant to move)
    toml = [ln for ln in (out / "catalog.toml").read_text().splitlines()
            if not ln.startswith(("date", "fit_seconds", "command", "#")) and "_calibrated_median_abs_rel_err" not in ln]
    return rep.set_index("id"), toml


def test_predict_only_floor_keeps_the_fit_bit_for_bit(tmp_path, monkeypatch):
    d = pd.read_csv(PUBLIC, dtype=str, keep_default_na=False)
    d = d[d.id.isin(IMAX + MLPERF)]
    assert len(d) == len(IMAX) + len(MLPERF)
    assert d[d.id.isin(MLPERF)].notes.str.contains("use_graphs False").all()
    d.to_csv(tmp_path / "rows.csv", index=False)
    off, toml_off = _run(tmp_path, "off", monkeypatch, False)
    on, toml_on = _run(tmp_path, "on", monkeypatch, True)
    # the fit on every row (MLPerf Offline/Server throughput rows among its training rows): identical
    assert toml_on == toml_off
    # held-out predictions of the other source (fitted on the MLPerf rows): identical to the last bit
    a = off.loc[IMAX, "predicted_calibrated"].to_numpy(float)
    b = on.loc[IMAX, "predicted_calibrated"].to_numpy(float)
    assert np.isfinite(a).all() and np.array_equal(a, b)
    # and the uncalibrated predictions of every row come from the same simulations
    assert np.array_equal(off.predicted.to_numpy(float), on.predicted.to_numpy(float), equal_nan=True)
    # the MLPerf rows' held-out predictions do move (the floor reaches the predicting clients); a fit on
    # gpt-oss rows alone overloads the 70B Interactive run, so no direction is asserted
    lo = off.loc[MLPERF, "predicted_calibrated"].to_numpy(float)
    hi = on.loc[MLPERF, "predicted_calibrated"].to_numpy(float)
    assert np.isfinite(lo).all() and np.isfinite(hi).all() and not np.array_equal(lo, hi)
