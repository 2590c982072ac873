"""Adaptive sweeps (mode = "refine", mistfast/refine.py): every simulated point equals the same
point of a dense product sweep bit for bit, only intervals whose SLO verdict flips are bisected,
each flip ends bracketed within 1/2^rounds of its coarse interval, integer axes stay integer, and
spec mistakes are reported before any work."""
from __future__ import annotations

import numpy as np
import pytest

from mistfast.specs import SpecError
from mistfast.sweep import run_sweep

from .test_sweep import make_spec

COARSE = [2.0, 8.0, 32.0, 128.0]
CONSTRAINT = "ttft_p99_ms<=200"


def refine_spec(rates=COARSE, rounds=3, constraints=(CONSTRAINT,), **extra):
    return make_spec(axes={"clients[0].device": ["H100", "A100"], "workload.arrival.rate_rps": list(rates)},
                     mode="refine", refine={"axis": "rate_rps", "constraints": list(constraints), "rounds": rounds},
                     **extra)


@pytest.fixture(scope="module")
def refined():
    return run_sweep(refine_spec(), scheduler="serial")


def passes(ds):
    return (ds.status == 0) & (ds.ttft_p99_ms <= 200)


def test_simulated_points_equal_the_dense_sweep(refined):
    rates = [float(r) for r in refined.rate_rps.values]
    dense = run_sweep(make_spec(axes={"clients[0].device": ["H100", "A100"], "workload.arrival.rate_rps": rates}),
                      scheduler="serial")
    sim = refined.refine_round.notnull()
    assert 0 < int(sim.sum()) < dense.status.size  # fewer points than the dense grid
    assert refined.attrs["n_points"] == int(sim.sum()) and refined.attrs["n_points_dense"] == dense.status.size
    for name, v in refined.data_vars.items():
        if v.dtype.kind != "f":
            continue
        a = v.where(sim).values
        b = dense[name].astype(float).where(sim).values
        assert np.array_equal(a, b, equal_nan=True), name  # bit-identical where simulated ...
        assert np.isnan(v.where(~sim).values).all(), name  # ... and NaN elsewhere


def test_only_flipping_intervals_are_bisected_to_the_requested_width(refined):
    ok = passes(refined)
    flips = 0
    for dev in refined.device.values:
        line = refined.sel(device=dev)
        sim = line.refine_round.notnull().values
        rates = line.rate_rps.values[sim]
        verdict = ok.sel(device=dev).values[sim]
        coarse_ok = dict(zip(rates, verdict))
        for lo, hi in zip(COARSE, COARSE[1:]):
            inside = [r for r in rates if lo < r < hi]
            if coarse_ok[lo] == coarse_ok[hi]:
                assert inside == [], f"{dev}: ({lo}, {hi}) does not flip but was refined"
                continue
            flips += 1
            assert len(inside) == 3, f"{dev}: 3 rounds bisect a flipping interval 3 times, got {inside}"
            vals = [lo] + inside + [hi]
            brackets = [(a, b) for a, b in zip(vals, vals[1:]) if coarse_ok.get(a) != coarse_ok.get(b)]
            assert brackets and all(b - a == (hi - lo) / 8 for a, b in brackets), (dev, vals, brackets)
    assert flips >= 1, "the test scenario must cross the SLO somewhere"
    assert set(np.unique(refined.refine_round.values[~np.isnan(refined.refine_round.values)])) <= {0.0, 1.0, 2.0, 3.0}


def test_integer_axis_midpoints_stay_integer_and_stop():
    sp = make_spec(axes={"workload.arrival.rate_rps": [2, 5, 100]}, mode="refine",
                   refine={"axis": "rate_rps", "constraints": ["ttft_p99_ms<=60"], "rounds": 6})
    ds = run_sweep(sp, scheduler="serial")
    rates = ds.rate_rps.values
    assert all(float(r).is_integer() for r in rates)
    assert len(set(rates.tolist())) == len(rates) and int(ds.refine_round.max()) <= 6


@pytest.mark.parametrize("refine, needle", [
    ({"axis": "device", "constraints": [CONSTRAINT]}, "at least 2 numeric values"),
    ({"axis": "rate", "constraints": [CONSTRAINT]}, "sweep.refine.axis = 'rate': must name one of the axes"),
    ({"axis": "rate_rps", "constraints": ["ttft<=3"]}, "'ttft' is not a summary variable"),
    ({"axis": "rate_rps", "constraints": ["ttft_p99_ms=3"]}, "expected VAR<=VALUE"),
    ({"axis": "rate_rps", "constraints": [CONSTRAINT], "rounds": 0}, "sweep.refine.rounds = 0"),
    ({"axis": "rate_rps", "constraints": [CONSTRAINT], "round": 2}, "sweep.refine.round: unknown field"),
])
def test_refine_spec_errors(refine, needle):
    with pytest.raises(SpecError, match=None) as e:
        make_spec(axes={"clients[0].device": ["H100", "A100"], "workload.arrival.rate_rps": COARSE},
                  mode="refine", refine=refine)
    assert needle in str(e.value)


def test_refine_table_without_refine_mode_and_resume_are_refused(tmp_path):
    with pytest.raises(SpecError, match="only used with mode = 'refine'"):
        make_spec(refine={"axis": "rate_rps"})
    with pytest.raises(SpecError, match="--resume: not available for mode = 'refine'"):
        run_sweep(refine_spec(), tmp_path / "r.nc", resume=True)
