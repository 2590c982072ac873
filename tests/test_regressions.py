"""Regression tests of bugs found in use. Decode runs in a prefill/decode pipeline once gave a
request with no token left (a one-token output after a remote prefill) a last-token time of
20,532 s instead of 6.11 s (found by hypothesis in test_random_pipeline_invariants, seed=475709,
n=8, 'pd'); the fast path must match stepping one step at a time."""
from __future__ import annotations

import numpy as np

from mistfast.pipeline import run_pipeline
from mistfast.scenario import build_requests, point_seed
from mistfast.specs import parse_scenario


def test_decode_runs_in_a_pd_pipeline_match_stepwise():
    llm = {"model": "llama-3.1-8b", "device": "H100"}
    spec = parse_scenario({
        "clients": [{**llm, "name": "a"}, {**llm, "name": "b", "device": "H200"}],
        "workload": {"num_requests": 8, "arrival": {"process": "poisson", "rate_rps": 1.0},
                     "input": {"dist": "uniform", "low": 10, "high": 3000},
                     "output": {"dist": "uniform", "low": 1, "high": 60}},
        "simulation": {"seed": 475709},
        "pipelines": [{"stages": [{"kind": "prefill", "pool": "a"}, {"kind": "decode", "pool": "b"}]}]})

    def run(decode_runs):
        ss = point_seed(spec.simulation.seed)
        reqs = build_requests(spec.workload, spec.simulation.horizon_s, ss)
        return run_pipeline(spec, reqs, ss, decode_runs=decode_runs)["requests"]
    fast, stepwise = run(True), run(False)
    np.testing.assert_array_equal(fast["t_last_tok"], stepwise["t_last_tok"])
