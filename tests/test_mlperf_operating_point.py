"""tools/mlperf_operating_point.py: the fixed step time a = TPOT (1 - rho) of a linear step model
t(B) = a + b B at output-token rate x (B = x t, capacity c = 1/b, rho = x / c). Expected values by
hand and by iterating the fixed point independently of the tool's closed form."""
import importlib.util
import math
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "mlperf_operating_point", Path(__file__).resolve().parents[1] / "tools" / "mlperf_operating_point.py")
OP = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(OP)


def test_fixed_step_by_hand():
    # llama2-70b B200 Interactive (Dell XE9680L): TPOT 32.34 ms at 0.594 of Offline -> 32.34 x 0.406
    assert OP.fixed_step_ms(32.34, 0.594) == pytest.approx(13.130, abs=1e-3)
    assert OP.fixed_step_ms(10.0, 0.0) == 10.0          # no load: the step is its fixed part
    assert math.isnan(OP.fixed_step_ms(10.0, 1.0))      # at or over capacity no steady state
    assert math.isnan(OP.fixed_step_ms(10.0, -0.1))


def test_fixed_point_iteration_agrees():
    # independent twin: iterate B <- x (a + b B) from B = 0 for a = 4 ms, b = 0.1 ms/seq, x = 8 seq/ms
    # (rho = x b = 0.8): t* = a / (1 - rho) = 20 ms, B* = 160; the tool recovers a from (t*, rho)
    a, b, x = 4.0, 0.1, 8.0
    B = 0.0
    for _ in range(500):
        B = x * (a + b * B)
    t = a + b * B
    assert B == pytest.approx(160.0, rel=1e-9)
    assert t == pytest.approx(20.0, rel=1e-9)
    assert OP.fixed_step_ms(t, x * b) == pytest.approx(a, rel=1e-9)
