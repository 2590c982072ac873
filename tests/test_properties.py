"""Nothing lost, nothing wrong: hand-checked cases of results that used to be wrong, and property
tests over random valid specs (hypothesis) that every run must satisfy.

The number of random examples is ``MISTFAST_PROPERTY_EXAMPLES`` (default 60 per property test,
a few hundred in all; set it to 2000 for the long run reported in docs/robustness.md)."""
import math
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import mistfast as mf
from mistfast.specs import SpecError

LLM = {"name": "llm", "model": "llama-3.1-8b", "device": "H100"}
COUNTS = ("n_finished", "n_rejected", "n_unfinished", "n_not_arrived", "n_before_warmup")
RATES = ("output_tok_s", "total_tok_s", "computed_prompt_tok_s", "request_throughput_rps", "goodput_rps",
         "goodput_tok_s")
FRACTIONS = ("slo_attainment", "prefix_hit_rate", "busy_fraction", "kv_util_mean", "kv_util_peak", "mfu", "mbu")


def fixed(n, prompt, output, arrival=None):
    return {"num_requests": n, "arrival": arrival or {"process": "offline"},
            "input": {"dist": "fixed", "value": prompt}, "output": {"dist": "fixed", "value": output}}


def pd_doc(n, prompt, output, **sim):
    return {"clients": [{**LLM, "name": "P"}, {**LLM, "name": "D"}], "workload": fixed(n, prompt, output),
            "simulation": {"seed": 3, **sim},
            "pipelines": [{"stages": [{"kind": "prefill", "pool": "P"}, {"kind": "decode", "pool": "D"}]}]}


# ---- the "wrong results" list of issue 16 -----------------------------------------------------------
@pytest.mark.parametrize("decode_runs", [True, False])
def test_one_token_output_through_prefill_decode_finishes_at_the_prefill(decode_runs):
    ds = mf.simulate(pd_doc(3, 100, 1), per_request=True, decode_runs=decode_runs)
    # the prefill client emits the only token: nothing is left for the decode client
    assert list(ds.req_generated_tokens.values) == [1, 1, 1]
    assert list(ds.client_steps.values) == [1, 0]
    # all three prompts go in one prefill step at t = 0 and finish at its end
    one_step = mf.step_latency(mf.make_client("llama-3.1-8b", "H100"), prefill=[(0, 100)] * 3).total_s
    np.testing.assert_allclose(ds.req_finish_s.values, one_step, rtol=1e-12)
    assert int(ds.n_finished) == 3


def test_two_token_output_through_prefill_decode_takes_one_decode_step():
    ds = mf.simulate(pd_doc(1, 100, 2), per_request=True)
    assert int(ds.req_generated_tokens[0]) == 2
    assert list(ds.client_steps.values) == [1, 1]


def test_rejections_by_reason_are_counted_in_the_same_window_as_n_rejected():
    # every prompt (2,000 tokens) exceeds the 1,000-token budget: all rejected on arrival
    doc = {"clients": [{**LLM, "scheduler": {"batching": "continuous", "max_batched_tokens": 1000}}],
           "workload": fixed(50, 2000, 10, {"process": "uniform", "rate_rps": 10.0}),
           "simulation": {"seed": 1, "warmup_s": 2.05}}
    ds = mf.simulate(doc)
    # uniform arrivals 0.1 s apart from 0 s: 21 of them (0 .. 2.0 s) come before the warmup
    assert int(ds.n_before_warmup) == 21
    assert int(ds.n_rejected) == 29
    assert int(ds.n_rejected_by_reason.sel(reject_reason="prompt_exceeds_token_budget")) == 29
    assert int(ds.n_rejected_by_reason.sum()) == int(ds.n_rejected)


def test_counts_add_up_with_warmup_and_requests_before_it_are_reported():
    doc = {"clients": [LLM], "workload": fixed(200, 300, 20, {"process": "poisson", "rate_rps": 20.0}),
           "simulation": {"seed": 1, "warmup_s": 3.0}}
    ds = mf.simulate(doc, per_request=True)
    before = int((ds.req_arrival_s < 3.0).sum())
    assert before > 0 and int(ds.n_before_warmup) == before
    assert sum(int(ds[k]) for k in COUNTS) == 200
    assert int(ds.n_arrived) == int(ds.n_finished) + int(ds.n_rejected) + int(ds.n_unfinished)


def test_a_run_that_ends_before_warmup_has_an_empty_window_and_no_rates():
    # 20 requests at 20 req/s finish in about a second; the warmup is at 100 s
    doc = {"clients": [LLM], "workload": fixed(20, 300, 20, {"process": "poisson", "rate_rps": 20.0}),
           "simulation": {"seed": 1, "warmup_s": 100.0, "horizon_s": 200.0}}
    ds = mf.simulate(doc)
    assert float(ds.window_s) == 0.0
    for name in RATES:
        assert math.isnan(float(ds[name])), name
    assert int(ds.n_before_warmup) == 20


@pytest.mark.parametrize("warmup", [600.0, 3600.0])
def test_warmup_at_or_after_the_horizon_is_refused(warmup):
    with pytest.raises(SpecError, match=r"simulation\.warmup_s = .*must be < horizon_s \(600"):
        mf.simulate({"clients": [LLM], "simulation": {"horizon_s": 600.0, "warmup_s": warmup}})


@pytest.mark.parametrize("max_sim", [0.5, 1.0, 3.3])
def test_busy_fraction_stays_at_most_one_when_cut_at_max_sim_time(max_sim):
    # a one-core CPU stage with a 300 ms service and a backlog: it is busy when the run is cut
    doc = {"clients": [{**LLM, "name": "P"}, {**LLM, "name": "D"}],
           "servers": [{"name": "cpu", "kind": "cpu", "slots": 1, "base_ms": 300}],
           "simulation": {"seed": 3, "max_sim_time_s": max_sim, "horizon_s": 100},
           "workload": fixed(500, 3000, 50, {"process": "poisson", "rate_rps": 200}),
           "pipelines": [{"stages": [{"kind": "pre", "pool": "cpu"}, {"kind": "prefill", "pool": "P"},
                                     {"kind": "decode", "pool": "D"}]}]}
    ds = mf.simulate(doc)
    busy = ds.client_busy_fraction.values
    assert np.all((busy >= 0) & (busy <= 1.0)), busy
    # the CPU is saturated from its first arrival on: busy all but that first gap
    assert busy[2] > 0.99
