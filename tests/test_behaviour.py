"""Behaviour users expect of a serving simulator, on the public API (mistfast.simulate)."""
import json

import numpy as np
import pytest

import mistfast as mf
from mistfast.specs import SpecError


def scen(batching="chunked", rate=10.0, n=600, **kw):
    doc = {"clients": [{"model": "llama-3.1-8b", "device": "H100",
                        "scheduler": {"batching": batching, "chunk_size": 512, "max_batched_tokens": 8192,
                                      **kw.pop("scheduler", {})}}],
           "workload": {"num_requests": n, "arrival": {"process": "poisson", "rate_rps": rate},
                        "input": {"dist": "lognormal", "mean": 1155, "std": 1109, "max_tokens": 8000},
                        "output": {"dist": "lognormal", "mean": 211, "std": 230, "max_tokens": 2000}},
           "simulation": {"seed": 11}}
    for k, v in kw.items():
        doc[k] = v
    return doc


def test_chunked_prefill_lowers_p99_tpot_under_load():
    cont = mf.simulate(scen("continuous", rate=15.0))
    chunk = mf.simulate(scen("chunked", rate=15.0))
    assert float(chunk.tpot_p99_ms) < 0.8 * float(cont.tpot_p99_ms)


def test_latency_explodes_past_saturation():
    ttft = [float(mf.simulate(scen(rate=r)).ttft_p99_ms) for r in (5.0, 15.0, 40.0)]
    assert ttft[0] < ttft[1] < ttft[2]
    assert ttft[2] > 20 * ttft[0]


def test_prefix_cache_hits_cut_ttft():
    base = scen(rate=8.0, n=400)
    base["workload"].update(prefix_tokens=4096, prefix_groups=2)
    off = mf.simulate(base)
    base["clients"][0]["scheduler"]["prefix_caching"] = True
    on = mf.simulate(base)
    assert float(on.prefix_hit_rate) > 0.5
    assert float(on.ttft_mean_ms) < 0.7 * float(off.ttft_mean_ms)
    assert float(on.computed_prompt_tok_s) < float(off.computed_prompt_tok_s)


def test_preemption_happens_when_kv_is_scarce():
    # 8B on an H100 with most of the memory reserved: few KV blocks, long outputs
    doc = scen(rate=30.0, n=300, scheduler={"reserved_memory_GiB": 60.0})
    ds = mf.simulate(doc)
    assert int(ds.preemptions) > 0 and int(ds.recomputed_tokens) > 0
    assert int(ds.n_finished) + int(ds.n_rejected) + int(ds.n_unfinished) == int(ds.n_arrived)
    doc["clients"][0]["scheduler"]["preemption"] = False
    ds2 = mf.simulate(doc)
    assert int(ds2.preemptions) == 0
    assert int(ds2.n_finished) + int(ds2.n_rejected) + int(ds2.n_unfinished) == int(ds2.n_arrived)


def test_every_request_is_accounted_for_and_results_are_reproducible():
    doc = scen(rate=20.0, n=500)
    doc["simulation"].update(horizon_s=15.0, drain=False)
    a = mf.simulate(doc, per_request=True)
    b = mf.simulate(doc, per_request=True)
    assert a.identical(b)
    total = int(a.n_finished + a.n_rejected + a.n_unfinished + a.n_not_arrived)
    assert total == 500
    assert int(a.n_unfinished) > 0 and int(a.n_not_arrived) > 0
    st = a.req_status.values
    assert set(np.unique(st)) <= {0, 3, 4, 5}
    fin = st == 3
    arr, first, fin_t = a.req_arrival_s.values, a.req_first_token_s.values, a.req_finish_s.values
    sched = a.req_first_scheduled_s.values
    assert np.all(arr[fin] <= sched[fin]) and np.all(sched[fin] <= first[fin]) and np.all(first[fin] <= fin_t[fin])
    assert np.all(a.req_generated_tokens.values[fin] == a.req_output_tokens.values[fin])


def test_a_request_that_cannot_fit_is_rejected_with_its_reason():
    doc = scen(n=50, scheduler={"reserved_memory_GiB": 64.5})
    doc["workload"]["input"] = {"dist": "fixed", "value": 6000}
    doc["workload"]["output"] = {"dist": "fixed", "value": 10}
    ds = mf.simulate(doc)
    by = dict(zip(ds.reject_reason.values, ds.n_rejected_by_reason.values))
    assert by["kv_exceeds_capacity"] == 50 and int(ds.n_finished) == 0


@pytest.mark.parametrize("bad, msg", [
    ({"workload": {"arrival": {"process": "poisson", "rate_rps": -1}}}, r"workload.arrival.rate_rps = -1"),
    ({"workload": {"num_requests": 0}}, r"workload.num_requests = 0"),
    ({"workload": {"arrival": {"process": "closed_loop"}}}, r"concurrency = None: required"),
    ({"clients": [{"model": "llama-3.1-70b", "device": "H100", "tp": 3}]}, r"clients\[0\].tp = 3"),
    ({"clients": [{"model": "llama-3.1-8b", "device": "H100", "tpp": 2}]}, r"clients\[0\].tpp"),
    ({"clients": [{"model": "llama-9", "device": "H100"}]}, r"unknown model preset 'llama-9'"),
    ({"workload": {"trace": {"path": "/nonexistent.csv", "format": "azure"}}}, r"nonexistent"),
])
def test_bad_input_gets_a_clear_error(bad, msg):
    with pytest.raises(SpecError, match=msg):
        mf.simulate(bad)


def test_empty_trace_window_is_an_error(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.68,374,44\n")
    with pytest.raises(SpecError, match="no requests"):
        mf.simulate({"workload": {"trace": {"path": str(p), "format": "azure", "start_s": 100.0, "end_s": 200.0}}})


def test_malformed_trace_row_is_an_error(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.68,374,44\n2023-11-16 18:15:47.00,abc,3\n")
    with pytest.raises(SpecError, match="ContextTokens"):
        mf.simulate({"workload": {"trace": {"path": str(p), "format": "azure"}}})


def test_sample_trace_runs_end_to_end():
    ds = mf.simulate({"workload": {"trace": {"path": "samples:mooncake_sample.jsonl", "format": "mooncake"}},
                      "clients": [{"model": "llama-3.1-8b", "device": "H100",
                                   "scheduler": {"prefix_caching": True}}]})
    assert int(ds.n_finished) == 20 and float(ds.prefix_hit_rate) > 0


def test_chrome_trace_export(tmp_path):
    from mistfast.trace import write_chrome_trace
    ds = mf.simulate(scen(n=20), per_request=True, log_steps=10000)
    path = tmp_path / "trace.json"
    write_chrome_trace(ds, path)
    ev = json.loads(path.read_text())["traceEvents"]
    steps = [e for e in ev if e.get("pid") == 1 and e.get("ph") == "X"]
    assert len(steps) == int(ds.n_steps)
    assert sum(e["args"]["decode_tokens"] + e["args"]["prefill_tokens"] for e in steps) == pytest.approx(
        float(ds.mean_batch_tokens) * int(ds.n_steps))


def test_data_parallel_replicas_split_the_load():
    one = mf.simulate(scen(rate=30.0, n=600))
    four = mf.simulate({**scen(rate=30.0, n=600), "clients": [{"model": "llama-3.1-8b", "device": "H100", "dp": 4,
                                                                "scheduler": {"batching": "chunked", "chunk_size": 512}}]})
    assert float(four.ttft_p99_ms) < float(one.ttft_p99_ms)
    assert float(four.cost_usd) > float(one.cost_usd) * 0.9  # four times the devices, shorter run
