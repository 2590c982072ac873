"""mistfast.analysis on small hand-built Datasets whose answers are known by inspection."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from mistfast.analysis import best_configs, parse_constraints, pareto_front, to_table

NAN = np.nan


@pytest.fixture
def ds() -> xr.Dataset:
    """batching x rate = 2 x 3 points; static @ rate 2 is invalid (status 1, NaN metrics).

    ============  =====  =========  ====  ====  ============
    batching      rate   objective  ttft  tpot  output_tok_s
    ============  =====  =========  ====  ====  ============
    static        1      10         100   20    100
    static        2      (invalid)
    static        4      30         900   20    300
    chunked       1      15         120   20    150
    chunked       2      25         300   60    250
    chunked       4      35         800   20    350
    ============  =====  =========  ====  ====  ============
    """
    dims = ("batching", "rate")
    return xr.Dataset(
        {
            "output_tok_s_per_usd_per_hour": (dims, [[10, NAN, 30], [15, 25, 35]]),
            "ttft_p99_ms": (dims, [[100, NAN, 900], [120, 300, 800]]),
            "tpot_p99_ms": (dims, [[20, NAN, 20], [20, 60, 20]]),
            "output_tok_s": (dims, [[100, NAN, 300], [150, 250, 350]]),
            "status": (dims, np.array([[0, 1, 0], [0, 0, 0]], np.int8)),
            "reason": (dims, np.array([["", "does not fit", ""], ["", "", ""]], dtype=object)),
            "n_rejected_by_reason": (dims + ("reject_reason",), np.zeros((2, 3, 2))),
        },
        coords={"batching": ["static", "chunked"], "rate": [1, 2, 4], "reject_reason": ["a", "b"]},
    )


def rows(df: pd.DataFrame, *cols) -> list[tuple]:
    return [tuple(r) for r in df[list(cols)].itertuples(index=False)]


# ----------------------------------------------------------------------------- best_configs
def test_best_per_group_under_slo(ds):
    best = best_configs(ds, constraints=["ttft_p99_ms<=500", "tpot_p99_ms<=50"], by="batching")
    # static: rate 4 breaks TTFT; chunked: rate 2 breaks TPOT, rate 4 breaks TTFT -> both at rate 1
    assert rows(best, "batching", "rate", "output_tok_s_per_usd_per_hour") == [("chunked", 1, 15.0), ("static", 1, 10.0)]


def test_best_without_constraints_skips_invalid(ds):
    best = best_configs(ds, by=["batching"])
    assert rows(best, "batching", "rate") == [("chunked", 4), ("static", 4)]
    assert (best.status == 0).all()
    overall = best_configs(ds)
    assert len(overall) == 1 and rows(overall, "batching", "rate") == [("chunked", 4)]


def test_best_top_n_and_minimize(ds):
    top2 = best_configs(ds, by="batching", n=2)
    assert rows(top2, "batching", "rate") == [("chunked", 4), ("chunked", 2), ("static", 4), ("static", 1)]
    cheapest = best_configs(ds, by="batching", maximize=False)
    assert rows(cheapest, "batching", "rate") == [("chunked", 1), ("static", 1)]
    # the invalid point (NaN objective, status 1) never wins, even when minimising
    assert not ((cheapest.batching == "static") & (cheapest.rate == 2)).any()


def test_constraint_forms_and_groups_without_a_feasible_point(ds):
    a = best_configs(ds, constraints=["ttft_p99_ms <= 850"], by="batching")
    b = best_configs(ds, constraints={"ttft_p99_ms": ("<=", 850)}, by="batching")
    pd.testing.assert_frame_equal(a, b)
    assert rows(a, "batching", "rate") == [("chunked", 4), ("static", 1)]
    # no static point has TTFT < 110: the group is simply absent
    c = best_configs(ds, constraints=["ttft_p99_ms<110"], by="batching")
    assert rows(c, "batching", "rate") == [("static", 1)]
    assert best_configs(ds, constraints=["ttft_p99_ms<1"]).empty
    assert parse_constraints(["x>=1e3", "y==2"]) == [("x", ">=", 1000.0), ("y", "==", 2.0)]


def test_best_configs_errors(ds):
    with pytest.raises(KeyError, match="ttft_p90_ms"):
        best_configs(ds, constraints=["ttft_p90_ms<=1"])
    with pytest.raises(KeyError, match="nope"):
        best_configs(ds, "nope")
    with pytest.raises(ValueError, match="expected VAR<=VALUE"):
        best_configs(ds, constraints=["ttft_p99_ms=<1"])


def test_best_on_point_dimension(ds):
    flat = ds.drop_vars("n_rejected_by_reason").stack(point=("batching", "rate")).reset_index("point")
    best = best_configs(flat, constraints=["ttft_p99_ms<=500", "tpot_p99_ms<=50"], by="batching")
    assert rows(best, "batching", "rate", "output_tok_s_per_usd_per_hour") == [("chunked", 1, 15.0), ("static", 1, 10.0)]


# ----------------------------------------------------------------------------- pareto_front
def test_pareto_front(ds):
    # (x = tok/s up, y = TTFT down): static@4 (300, 900) is dominated by chunked@4 (350, 800)
    front = pareto_front(ds, "output_tok_s", "ttft_p99_ms")
    assert rows(front, "batching", "rate") == [("static", 1), ("chunked", 1), ("chunked", 2), ("chunked", 4)]
    assert front.output_tok_s.is_monotonic_increasing and front.ttft_p99_ms.is_monotonic_increasing
    limited = pareto_front(ds, "output_tok_s", "ttft_p99_ms", constraints=["ttft_p99_ms<=500"])
    assert rows(limited, "batching", "rate") == [("static", 1), ("chunked", 1), ("chunked", 2)]
    # both maximised: only the point with the largest tok/s and the largest TTFT survive
    both = pareto_front(ds, "output_tok_s", "ttft_p99_ms", maximize_y=True)
    assert rows(both, "batching", "rate") == [("static", 4), ("chunked", 4)]


def test_pareto_ties():
    d = xr.Dataset({"x": ("point", [1.0, 1.0, 2.0, 2.0, 0.5]), "y": ("point", [5.0, 3.0, 4.0, 4.0, 1.0]),
                    "status": ("point", np.zeros(5, np.int8))}, coords={"point": np.arange(5)})
    front = pareto_front(d, "x", "y")
    # equal x: only the better y; exact duplicates appear once
    assert front.point.tolist() == [4, 1, 2]


# ----------------------------------------------------------------------------- to_table
def test_to_table_shape(ds):
    t = to_table(ds)
    assert t.shape == (6, 2 + 6)
    assert list(t.columns[:2]) == ["batching", "rate"]
    assert "n_rejected_by_reason" not in t.columns and "reject_reason" not in t.columns
    assert t.loc[(t.batching == "chunked") & (t.rate == 2), "ttft_p99_ms"].item() == 300
    sub = to_table(ds, ["ttft_p99_ms"])
    assert list(sub.columns) == ["batching", "rate", "ttft_p99_ms"] and len(sub) == 6
    flat = ds.drop_vars("n_rejected_by_reason").stack(point=("batching", "rate")).reset_index("point")
    tf = to_table(flat, ["ttft_p99_ms", "status"])
    assert len(tf) == 6 and {"batching", "rate", "ttft_p99_ms", "status"} <= set(tf.columns)
