"""TensorRT-LLM attention-DP balancing in closed loops (validate.adp_balance_chain_waits): the exact
chain against hand-computed cases, an independent Monte Carlo twin of PyExecutor's counters, and the
InferenceMAX gpt-oss B200 rows that run with ``attention_dp_config: enable_balance: true``."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mistfast import engine_defaults as ED
from mistfast import validate as V

PUBLIC = Path(__file__).resolve().parents[1] / "data" / "measurements" / "public.csv"


def test_chain_limits_by_hand():
    # almost no arrivals: every request waits out the free-running timeout count; it arrives in
    # iteration s = 1..T of the cycle with equal chance and waits T - s: mean (T - 1)/2, any rank count
    for ranks in (2, 4, 8):
        assert V.adp_chain_wait_iters(1e-7, ranks, 50, 10) == pytest.approx(24.5, abs=1e-3)
    # a flood: every rank holds one in the first iteration of each cycle, released at 1 + B; the
    # arrivals of iterations 1 .. B+1 (equal numbers) wait B .. 0: mean B/2, at most B
    assert V.adp_chain_wait_iters(80.0, 2, 50, 10) == pytest.approx(5.0, abs=1e-9)
    assert V.adp_chain_wait_iters(80.0, 2, 50, 10, 0.999) == 10.0
    # one rank: a context request is never held
    assert V.adp_chain_wait_iters(0.3, 1, 50, 10) == 0.0


def test_chain_small_case_by_hand():
    # a = 2, T = 1, B = 2, lambda = 2 ln 2: each rank gets Poisson(ln 2) per iteration, so it is
    # covered with p = 1/2, and a covered rank brings ln 2 / p = 2 ln 2 requests on average. A cycle is
    # one iteration unless both ranks are covered (p^2 = 1/4): then its 2 x 2 ln 2 requests wait
    # B = 2 and the lambda arrivals of each of the next two iterations wait 1 and 0.
    # mean = p^2 (2 mu1 B + lam B(B-1)/2) / (lam (1 + p^2 B)), 2 mu1 = lam / p, so
    # = (p B + p^2 B(B-1)/2) / (1 + p^2 B) = (1 + 1/4) / (3/2) = 5/6
    lam = 2.0 * math.log(2.0)
    p, B = 0.5, 2
    expected = (p * B + p * p * B * (B - 1) / 2.0) / (1.0 + p * p * B)   # = 1.25 / 1.5
    assert expected == pytest.approx(5.0 / 6.0)
    assert V.adp_chain_wait_iters(lam, 2, 1, 2) == pytest.approx(expected, rel=1e-12)
    w = V.adp_balance_chain_waits(lam, 2, 1, 2)
    # expected arrivals per cycle: lam in the first iteration, lam x B more when both are covered
    assert w.sum() == pytest.approx(lam * (1.0 + p * p * B), rel=1e-12)


def _monte_carlo_twin(lam, ranks, timeout, batching, n_iter=300_000, seed=1):
    """The counters of PyExecutor._balance_adp_requests as written there, one iteration at a time,
    with Poisson arrivals to random ranks."""
    rng = np.random.default_rng(seed)
    held = [[] for _ in range(ranks)]
    waiting = batching_count = 0
    waits = []
    arrivals = rng.poisson(lam, n_iter)
    rank_of = rng.integers(0, ranks, size=int(arrivals.sum()))
    j = 0
    for it in range(n_iter):
        for _ in range(arrivals[it]):
            held[rank_of[j]].append(it)
            j += 1
        release = False
        if all(held):                       # every rank has a context request (and free slots)
            waiting = 0
            if batching_count < batching:   # every rank also decodes in the steady state
                batching_count += 1
            else:
                batching_count = 0
                release = True
        else:
            waiting += 1
            if waiting >= timeout:
                waiting = 0
                release = True
        if release:
            for h in held:
                waits.extend(it - x for x in h)
                h.clear()
    return np.array(waits)


@pytest.mark.parametrize("lam, ranks", [(0.035, 2), (0.14, 2), (0.07, 4)])
def test_chain_matches_monte_carlo_twin(lam, ranks):
    waits = _monte_carlo_twin(lam, ranks, 50, 10)
    assert V.adp_chain_wait_iters(lam, ranks, 50, 10) == pytest.approx(waits.mean(), rel=0.04)
    assert abs(V.adp_chain_wait_iters(lam, ranks, 50, 10, 0.5) - np.median(waits)) <= 1.0


def test_enable_balance_flags():
    assert ED.parse_flags("attention_dp_config: enable_balance: true")["adp_balance"] == (50, 10)
    assert ED.parse_flags("attention_dp_config: {enable_balance: true, timeout_iters: 9, "
                          "batching_wait_iters: 3}")["adp_balance"] == (9, 3)
    assert "adp_balance" not in ED.parse_flags("attention_dp_config: enable_balance: false")
    with pytest.raises(ED.EngineSettingsError, match="attention_dp_config.timeout_iters = -1"):
        ED.parse_flags("enable_balance: true timeout_iters: -1")


def _row(ident):
    d = pd.read_csv(PUBLIC)
    return d[d.id == ident].iloc[0].to_dict()


def test_inferencemax_attention_dp_rows_wait_in_the_chain():
    # P1030: TensorRT-LLM 1.2.0rc2 trtllm-serve, gpt-oss-120b on 2 x B200, dp_attention true,
    # closed loop at 32 users, 1k/1k, ~10 x C prompts; the launcher's YAML enables the balancing
    ttft = V.plan_row(_row("P1030"))
    assert ttft.status == "ok" and ttft.workload_kind == "closed loop"
    assert ttft.adp_balance == (2, 50, 10, "chain")
    summary = {"tpot_mean_ms": 4.0, "request_throughput_rps": 8.0}   # 8 req/s x 4 ms = 0.032 per iteration
    n, c = ttft.n_requests_sim, 32
    mean_wait = V.adp_chain_wait_iters(0.032, 2, 50, 10) * 4.0
    assert V.adp_balance_wait_ms(ttft, summary) == pytest.approx((1.0 - c / n) * mean_wait)
    # the median request is a later one: the whole median wait; the p99 one is of the first wave
    p50 = V.plan_row(_row("P5083"))
    assert p50.metric == "ttft_p50_ms" and p50.adp_balance == (2, 50, 10, "chain")
    assert V.adp_balance_wait_ms(p50, summary) == pytest.approx(V.adp_chain_wait_iters(0.032, 2, 50, 10, 0.5) * 4.0)
    assert V.adp_balance_wait_ms(V.plan_row(_row("P1033")), summary) == 0.0
    e2e = V.plan_row(_row("P1032"))
    assert V.adp_balance_wait_ms(e2e, summary) == pytest.approx((1.0 - c / n) * mean_wait)
    tpot = V.plan_row(_row("P1031"))
    assert V.adp_balance_wait_ms(tpot, summary) == 0.0
    # the same launcher without attention DP: no balancing (it acts only under enable_attention_dp)
    assert V.plan_row(_row("P0994")).adp_balance == ()
    # disaggregated Dynamo runs: the decode workers' attention DP gets no context requests
    assert V.plan_row(_row("P3640")).adp_balance == ()
