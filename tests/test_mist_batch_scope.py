"""MIST's per-step max_batch_size (`scheduler.max_batch_size_scope = "step"`, docs/mist_parity.md):
hand-built timelines from MIST's scheduler rules (mist/Scheduler/scheduler.py, v0.1.0), each step
costed on its own with the public step model, against the engine."""
import numpy as np
import pytest

import mistfast as mf
from mistfast.specs import SpecError, make_client, parse_scenario
from mistfast.stepmodel import step_latency

P, O = 100, 3          # prompt and output tokens of every request
B = 2                  # max_batch_size


def run(batching, scope, n=3):
    doc = {"clients": [{"name": "llm", "model": "llama-3.1-8b", "device": "H100",
                        "scheduler": {"batching": batching, "max_batch_size": B, "max_batch_size_scope": scope}}],
           "workload": {"num_requests": n, "arrival": {"process": "offline"},
                        "input": {"dist": "fixed", "value": P}, "output": {"dist": "fixed", "value": O}}}
    return mf.simulate(doc, per_request=True, log_steps=100)


def timeline(steps):
    """Ends of consecutive steps from t = 0, each step a (prefills, decodes) pair for step_latency."""
    c = make_client("llama-3.1-8b", "H100")
    t, ends = 0.0, []
    for pf, dec in steps:
        t += step_latency(c, prefill=pf, decode=dec).total_s
        ends.append(t)
    return ends


def pf(n):
    return [(0, P)] * n


def test_continuous_step_scope_prefills_a_third_request_while_two_run():
    # MIST CONTINUOUS: up to B prompts per step, however many run; a decode step takes the first B
    # running requests by arrival. Three requests at t = 0:
    #   1: prefill 0, 1 (B reached)          2: prefill 2 (running 0, 1 do not block it)
    #   3: decode 0, 1 (KV 100)              4: decode 0, 1 (KV 101): both finish (3 tokens)
    #   5: decode 2 (KV 100)                 6: decode 2 (KV 101): finishes
    # A decode entry (1, k) has k tokens of KV before the step: prompt + generated - 1.
    t = timeline([(pf(2), []), (pf(1), []), ([], [(1, 100)] * 2), ([], [(1, 101)] * 2),
                  ([], [(1, 100)]), ([], [(1, 101)])])
    ds = run("continuous", "step")
    np.testing.assert_allclose(ds.req_first_token_s.values, [t[0], t[0], t[1]], rtol=1e-12)
    np.testing.assert_allclose(ds.req_finish_s.values, [t[3], t[3], t[5]], rtol=1e-12)
    assert int(ds.step_duration_s.count()) == 6
    # vLLM's scope (the default): request 2 waits for a free slot, prefilled after 0 and 1 finish
    v = timeline([(pf(2), []), ([], [(1, 100)] * 2), ([], [(1, 101)] * 2), (pf(1), []),
                  ([], [(1, 100)]), ([], [(1, 101)])])
    ds = run("continuous", "running")
    np.testing.assert_allclose(ds.req_first_token_s.values, [v[0], v[0], v[3]], rtol=1e-12)
    np.testing.assert_allclose(ds.req_finish_s.values, [v[2], v[2], v[5]], rtol=1e-12)


def test_mixed_step_scope_shares_the_limit_between_prompts_and_decodes():
    # MIST MIXED: prompts first, then decodes by arrival while the step holds fewer than B requests.
    #   1: prefill 0, 1                      2: prefill 2 + decode 0 (KV 100)
    #   3: decode 0 (KV 101), 1 (KV 100): 0 finishes
    #   4: decode 1 (KV 101), 2 (KV 100): 1 finishes
    #   5: decode 2 (KV 101): finishes
    t = timeline([(pf(2), []), (pf(1), [(1, 100)]), ([], [(1, 101), (1, 100)]), ([], [(1, 101), (1, 100)]),
                  ([], [(1, 101)])])
    ds = run("mixed", "step")
    np.testing.assert_allclose(ds.req_first_token_s.values, [t[0], t[0], t[1]], rtol=1e-12)
    np.testing.assert_allclose(ds.req_finish_s.values, [t[2], t[3], t[4]], rtol=1e-12)
    assert list(ds.step_prefills.values) == [2, 1, 0, 0, 0]
    assert list(ds.step_decodes.values) == [0, 1, 2, 2, 1]


def test_step_scope_lets_more_than_max_batch_size_run_and_caps_each_step():
    # 40 requests at t = 0 with B = 2: every step holds at most 2 requests, while up to all 40 run
    doc = {"clients": [{"name": "llm", "model": "llama-3.1-8b", "device": "H100",
                        "scheduler": {"batching": "chunked", "max_batch_size": B, "max_batch_size_scope": "step",
                                      "chunk_size": 512}}],
           "workload": {"num_requests": 40, "arrival": {"process": "offline"},
                        "input": {"dist": "uniform", "low": 50, "high": 900},
                        "output": {"dist": "uniform", "low": 1, "high": 30}}}
    ds = mf.simulate(doc, per_request=True, log_steps=10_000)
    assert int(ds.n_finished) == 40
    seqs = ds.step_prefills.values + ds.step_decodes.values
    assert seqs.max() == B
    # deterministic: same spec and seed, bit-identical
    again = mf.simulate(doc, per_request=True, log_steps=10_000)
    np.testing.assert_array_equal(ds.req_finish_s.values, again.req_finish_s.values)


def test_scope_is_running_or_step():
    with pytest.raises((SpecError, ValueError), match="max_batch_size_scope"):
        parse_scenario({"clients": [{"name": "llm", "model": "llama-3.1-8b", "device": "H100",
                                     "scheduler": {"max_batch_size_scope": "iteration"}}]})
