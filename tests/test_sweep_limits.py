"""The memory budget of a streamed sweep's points (limits.BYTES_PER_STREAMED_POINT): 16 B per point
now that ``reason`` is an int32 code, so a sweep of 5,000 points fits in 100 kB and one of 10,000
is still refused before any work, with its size estimate."""
from __future__ import annotations

import pytest

from mistfast import limits
from mistfast.errors import SpecError
from mistfast.sweep import parse_sweep

LLM = {"name": "llm", "model": "llama-3.1-8b", "device": "H100"}


def _sweep(n_rates: int) -> dict:
    # 100 x n_rates points of 10 requests each: one point (~20 kB) fits the 100 kB limit below
    return {"sweep": {"name": "big", "chunk_points": 1, "axes": {
                "simulation.seed": list(range(100)), "workload.arrival.rate_rps": list(range(1, n_rates + 1))}},
            "scenario": {"clients": [LLM], "workload": {"num_requests": 10}}}


@pytest.fixture
def limit_100kB():
    limits.set_max_memory_GB(1e-4)
    yield 1e5
    limits.set_max_memory_GB(None)


def test_points_within_the_budget_are_accepted(limit_100kB):
    spec = parse_sweep(_sweep(50))                    # 5,000 points x 16 B = 80 kB (128 B each was 640 kB)
    assert spec.n_points == 5000
    assert spec.n_points * limits.BYTES_PER_STREAMED_POINT < limit_100kB


def test_a_sweep_over_the_budget_is_refused_with_its_size(limit_100kB):
    with pytest.raises(SpecError) as ei:
        parse_sweep(_sweep(100))                      # 10,000 points x 16 B = 160 kB
    msg = str(ei.value)
    assert "sweep axes: 10000 points need about 0.00016 GB for their results" in msg, msg
    assert "more than the limit of 0.0001 GB" in msg and "MISTFAST_MAX_MEMORY_GB" in msg
    assert "chunk_points" not in msg                  # one task's point fits: only the results are too big
