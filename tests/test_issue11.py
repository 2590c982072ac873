"""Modelling fixes found in use (issue 11): scheduler budget check, step log for multi-client runs,
MIST metric definitions."""
import numpy as np
import pytest

import mistfast as mf
from mistfast.specs import SpecError, parse_scenario

LLM = {"name": "llm", "model": "llama-3.1-8b", "device": "H100"}


def fixed(n, prompt, output, rate=None):
    arr = {"process": "offline"} if rate is None else {"process": "uniform", "rate_rps": rate}
    return {"num_requests": n, "arrival": arr, "input": {"dist": "fixed", "value": prompt},
            "output": {"dist": "fixed", "value": output}}


# ---- item 7: per-step token budget vs max batch size (vLLM rejects it too) ------------------------
@pytest.mark.parametrize("sched,field,value", [
    ({"batching": "chunked", "chunk_size": 64, "max_batch_size": 128}, "chunk_size", 64),
    ({"batching": "continuous", "max_batched_tokens": 100, "max_batch_size": 256}, "max_batched_tokens", 100),
])
def test_token_budget_below_max_batch_is_rejected(sched, field, value):
    with pytest.raises(SpecError) as e:
        parse_scenario({"clients": [{**LLM, "scheduler": sched}]})
    msg = str(e.value)
    assert f"clients[0].scheduler.{field} = {value}" in msg and "max_batch_size" in msg
    assert "\n" not in msg.strip()


def test_token_budget_equal_to_max_batch_is_fine():
    parse_scenario({"clients": [{**LLM, "scheduler": {"chunk_size": 128, "max_batch_size": 128}}]})


# ---- item 6: the step log of a multi-client run through the public API -----------------------------
def test_log_steps_multi_client():
    doc = {"clients": [{**LLM, "name": "P"}, {**LLM, "name": "D"}],
           "links": [{"between": ["P", "D"], "link": "RDMA-400G"}],
           "workload": fixed(3, 1000, 5),
           "pipelines": [{"stages": [{"kind": "prefill", "pool": "P"}, {"kind": "decode", "pool": "D"}]}]}
    ds = mf.simulate(doc, log_steps=1000)
    assert ds.sizes["step"] == int(ds.n_steps)
    clients = set(ds.step_client.values.tolist())
    assert clients == {"P", "D"}
    p = ds.step_client.values == "P"
    # P prefills 3 x 1000 tokens and decodes nothing; D decodes 4 tokens per request (token 1 came
    # from P)
    assert ds.step_prefill_tokens.values[p].sum() == 3000 and ds.step_decode_tokens.values[p].sum() == 0
    assert ds.step_decode_tokens.values[~p].sum() == 3 * 4 and ds.step_prefill_tokens.values[~p].sum() == 0
    for name in ("P", "D"):
        assert (ds.step_client.values == name).sum() == int(ds.client_steps.sel(client=name))


# ---- item 4: MIST metric definitions -----------------------------------------------------------------
def test_mist_metrics_by_hand():
    # two requests arriving together, 1,000-token prompts, 3 output tokens, continuous batching:
    # step 1 prefills both (token 1), steps 2 and 3 decode both. MIST TPOT = mean over every decode
    # of its step's duration = (d2 + d3) / 2; throughput over [0, start of step 3]
    doc = {"clients": [{**LLM, "scheduler": {"batching": "continuous"}}], "workload": fixed(2, 1000, 3),
           "simulation": {"metrics": "mist"}}
    ds = mf.simulate(doc, log_steps=100)
    d = ds.step_duration_s.values
    assert len(d) == 3 and list(ds.step_decodes.values) == [0, 2, 2]
    assert float(ds.tpot_mean_ms) == pytest.approx((d[1] + d[2]) / 2 * 1e3, rel=1e-12)
    start3 = d[0] + d[1]
    assert float(ds.request_throughput_rps) == pytest.approx(2 / start3, rel=1e-12)
    assert float(ds.output_tok_s) == pytest.approx(6 / start3, rel=1e-12)
    default = mf.simulate({**doc, "simulation": {}})
    assert float(default.request_throughput_rps) == pytest.approx(2 / d.sum(), rel=1e-12)


def test_mist_percentiles_take_element_int_qn():
    doc = {"clients": [{**LLM, "scheduler": {"batching": "continuous", "max_batch_size": 1,
                                              "max_batched_tokens": 4096}}],
           "workload": fixed(10, 500, 2), "simulation": {"metrics": "mist"}}
    ds = mf.simulate(doc, per_request=True)
    e2e = np.sort(ds.req_e2e_ms.values)
    assert float(ds.e2e_p50_ms) == e2e[5] and float(ds.e2e_p90_ms) == e2e[9]
