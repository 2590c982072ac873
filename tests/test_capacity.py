"""Capacity search (mistfast.capacity_search): against closed-form queues, against a brute-force rate
sweep, over a sweep's configuration points, and the goodput-over-SLO-grid derived result."""
from __future__ import annotations

import copy

import numpy as np
import pytest

import mistfast as mf
from mistfast.capacity_search import capacity, goodput_grid, slo_constraints
from mistfast.specs import SpecError, parse_scenario

IN_TOK, OUT_TOK = 512, 32
# small runs on purpose: the transient warning is tested on its own below
pytestmark = pytest.mark.filterwarnings("ignore:capacity. at:UserWarning")


def one_at_a_time(process="poisson", rate=1.0, n=2000, seed=7) -> dict:
    """A server that holds one request at a time with fixed lengths: deterministic service D per
    request, so Poisson arrivals make an M/D/1 queue and uniform arrivals a D/D/1 queue."""
    return {
        "clients": [{"name": "llm", "model": "llama-3.1-8b", "device": "H100",
                     "scheduler": {"batching": "continuous", "max_batch_size": 1, "preemption": False}}],
        "workload": {"num_requests": n, "arrival": {"process": process, "rate_rps": rate},
                     "input": {"dist": "fixed", "value": IN_TOK}, "output": {"dist": "fixed", "value": OUT_TOK}},
        "simulation": {"seed": seed},
    }


def service_times_s():
    """(prefill step T_p, service D) of one request alone, from the step model's own API:
    D = T_p + sum of the OUT_TOK - 1 decode steps at context IN_TOK + k (k = 1 .. OUT_TOK - 1)."""
    c = parse_scenario(one_at_a_time()).client
    t_p = mf.step_latency(c, prefill=[(0, IN_TOK)]).total_s
    t_d = sum(mf.step_latency(c, decode=[(1, IN_TOK + k)]).total_s for k in range(OUT_TOK - 1))
    return t_p, t_p + t_d


@pytest.fixture(scope="module")
def times():
    return service_times_s()


def test_service_time_matches_a_lone_request(times):
    """The D used below is what the engine serves one request in (else the closed forms are moot)."""
    t_p, d = times
    ds = mf.simulate(one_at_a_time(process="uniform", rate=0.01, n=3), per_request=True)
    np.testing.assert_allclose(ds["req_ttft_ms"].values, t_p * 1e3, rtol=1e-9)
    np.testing.assert_allclose(ds["req_e2e_ms"].values, d * 1e3, rtol=1e-9)


def test_dd1_capacity_is_the_service_rate(times):
    """Uniform arrivals, deterministic service: no queue below 1/D, a queue growing without bound
    above. With p99 TTFT <= T_p + D/2 over N requests the exact capacity is
    1 / (D (1 - 0.5 / (0.99 (N-1)))) (linear-interpolated p99 of TTFT_k = T_p + k (D - 1/r))."""
    t_p, d = times
    n = 1000
    spec = one_at_a_time("uniform", rate=5.0, n=n)
    exact = 1.0 / (d * (1.0 - 0.5 / (0.99 * (n - 1))))
    ds = capacity(spec, [f"ttft_p99_ms<={(t_p + 0.5 * d) * 1e3}"], rel_tol=0.01)
    lo, hi = float(ds.max_rate_rps), float(ds.rate_fail_rps)
    assert lo <= exact * (1 + 1e-9) <= hi * (1 + 1e-9)
    assert hi / lo <= 1.01 + 1e-12
    assert str(ds.binding_slo.item()).startswith("ttft_p99_ms")
    assert int(ds.converged) == 1


@pytest.mark.parametrize("k", [0.5, 1.0])
def test_md1_capacity_matches_pollaczek_khinchine(times, k):
    """Poisson arrivals, deterministic service D: the mean wait is W = λD² / (2(1-λD))
    (Pollaczek–Khinchine). Requiring mean TTFT <= T_p + k·D gives λ* = 2k / ((1 + 2k) D).
    A finite sample (20,000 requests) estimates the mean wait within a few per cent."""
    t_p, d = times
    spec = one_at_a_time("poisson", rate=0.5 / d, n=20000, seed=11)
    ds = capacity(spec, [f"ttft_mean_ms<={(t_p + k * d) * 1e3}"], rel_tol=0.01)
    exact = 2 * k / ((1 + 2 * k) * d)
    assert float(ds.max_rate_rps) == pytest.approx(exact, rel=0.04)


def _passes(spec: dict, rate: float, cons) -> bool:
    """Pass/fail at one rate through the ordinary simulate() path (horizon lifted, as capacity does)."""
    doc = copy.deepcopy(spec)
    doc["workload"]["arrival"]["rate_rps"] = rate
    doc["simulation"]["horizon_s"] = 1e12
    doc["simulation"]["max_sim_time_s"] = 1e13
    ds = mf.simulate(doc)
    vals = {v: float(ds[v]) for v, _, _ in cons if v in ds}
    vals["finished_fraction"] = float(ds.n_finished) / float(ds.n_arrived)
    ops = {"<=": lambda a, b: a <= b, ">=": lambda a, b: a >= b}
    return all(ops[op](vals[v], lim) for v, op, lim in cons)


def test_matches_brute_force_rate_sweep():
    """A batching server (continuous batching, lognormal lengths): the bisection's bracket holds
    the highest passing rate of a fine brute-force grid, and its ends pass and fail when simulated
    independently through simulate()."""
    spec = {
        "clients": [{"name": "llm", "model": "llama-3.1-8b", "device": "H100",
                     "scheduler": {"batching": "chunked", "max_batch_size": 64}}],
        "workload": {"num_requests": 600, "arrival": {"process": "poisson", "rate_rps": 10.0}},
        "simulation": {"seed": 5},
        "slo": {"ttft_ms": 300, "tpot_ms": 30},
    }
    ds = capacity(spec, rel_tol=0.02)
    lo, hi = float(ds.max_rate_rps), float(ds.rate_fail_rps)
    cons = slo_constraints(None, parse_scenario(spec))
    assert _passes(spec, lo, cons) and not _passes(spec, hi, cons)
    grid = np.geomspace(lo / 1.5, hi * 1.5, 17)
    ok = np.array([_passes(spec, r, cons) for r in grid])
    # pass/fail is monotone over the grid (common random numbers) ...
    assert (np.diff(ok.astype(int)) <= 0).all()
    best = grid[ok].max()
    first_fail = grid[~ok].min()
    # ... and the brute-force boundary lies within the bisection's bracket
    assert best < hi and first_fail > lo


def test_sweep_points_searched_at_once_equal_single_scenarios(tmp_path):
    """Every point of a sweep is searched in one vectorised run; each equals capacity() of its own
    scenario, the rate axis is dropped, and a faster device sustains a higher rate."""
    sweep = tmp_path / "cap.toml"
    sweep.write_text("""
[sweep]
seed = 3
[sweep.axes]
"clients[0].device" = ["A100", "H100"]
"workload.arrival.rate_rps" = [1, 2, 3]
[scenario]
clients = [{ name = "llm", model = "llama-3.1-8b", device = "H100", efficiency = {} }]
workload = { num_requests = 300, arrival = { process = "poisson", rate_rps = 4 } }
slo = { ttft_ms = 400, tpot_ms = 40 }
""")
    ds = capacity(str(sweep))
    assert ds.max_rate_rps.dims == ("device",)
    assert "rate_rps" not in ds.dims
    for dev in ("A100", "H100"):
        one = capacity({"clients": [{"name": "llm", "model": "llama-3.1-8b", "device": dev, "efficiency": {}}],
                        "workload": {"num_requests": 300, "arrival": {"process": "poisson", "rate_rps": 4}},
                        "slo": {"ttft_ms": 400, "tpot_ms": 40}})
        assert float(ds.max_rate_rps.sel(device=dev)) == float(one.max_rate_rps)
    assert float(ds.max_rate_rps.sel(device="H100")) > float(ds.max_rate_rps.sel(device="A100"))


def test_replicas_scale_capacity():
    """Two round-robin replicas of the same engine carry about twice the rate; per replica about
    the same as one engine."""
    base = {"clients": [{"name": "llm", "model": "llama-3.1-8b", "device": "H100", "efficiency": {}}],
            "workload": {"num_requests": 800, "arrival": {"process": "poisson", "rate_rps": 5}},
            "slo": {"ttft_ms": 400, "tpot_ms": 40}}
    one = capacity(base)
    two_doc = copy.deepcopy(base)
    two_doc["clients"][0]["dp"] = 2
    two = capacity(two_doc)
    assert float(two.max_rate_per_replica_rps) == pytest.approx(float(one.max_rate_rps), rel=0.15)
    assert float(two.max_rate_rps) == pytest.approx(2 * float(one.max_rate_per_replica_rps), rel=0.15)


def test_table2_constraints_and_errors():
    scen = parse_scenario(one_at_a_time())
    t2 = dict((v, lim) for v, _, lim in slo_constraints("table2", scen))
    assert t2["ttft_p50_ms"] == 500 and t2["ttft_p99_ms"] == 1500 and t2["tpot_p90_ms"] == 37.5
    assert dict((v, lim) for v, _, lim in slo_constraints("table2-rag", scen))["ttft_p90_ms"] == 3000
    with pytest.raises(SpecError, match="table2"):
        slo_constraints("tabel2", scen)
    closed = one_at_a_time()
    closed["workload"]["arrival"] = {"process": "closed_loop", "concurrency": 4}
    with pytest.raises(SpecError, match="open-loop"):
        capacity(closed)
    with pytest.raises(SpecError, match="not a summary variable"):
        capacity(one_at_a_time(n=50), ["ttft_p42_ms<=5"])


def test_goodput_grid_is_monotone_and_matches_the_kernel_goodput():
    spec = {"clients": [{"name": "llm", "model": "llama-3.1-8b", "device": "H100"}],
            "workload": {"num_requests": 500, "arrival": {"process": "poisson", "rate_rps": 20}},
            "slo": {"ttft_ms": 300, "tpot_ms": 30}}
    g = goodput_grid(spec, ttft_ms=[100, 300, 1000, 1e9], tpot_ms=[10, 30, 1e9])
    gp = g.goodput_rps.values
    assert (np.diff(gp, axis=0) >= 0).all() and (np.diff(gp, axis=1) >= 0).all()
    ds = mf.simulate(spec)
    # at the scenario's own SLO the grid equals the metrics kernel's goodput (independent path)
    assert float(g.goodput_rps.sel(slo_ttft_ms=300, slo_tpot_ms=30)) == pytest.approx(float(ds.goodput_rps), rel=1e-12)
    # with no limit it is the finished-request throughput
    assert gp[-1, -1] == pytest.approx(float(ds.request_throughput_rps), rel=1e-12)
    assert 0 <= g.slo_attainment.min() and g.slo_attainment.max() <= 1


def test_cli_capacity(tmp_path):
    from click.testing import CliRunner

    from mistfast.cli import main
    spec = tmp_path / "s.toml"
    spec.write_text("""
clients = [{ name = "llm", model = "llama-3.1-8b", device = "H100", efficiency = {} }]
workload = { num_requests = 200, arrival = { process = "poisson", rate_rps = 4 } }
""")
    out = tmp_path / "cap.nc"
    r = CliRunner().invoke(main, ["capacity", str(spec), "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert "max rate:" in r.output and out.exists()
    r = CliRunner().invoke(main, ["capacity", str(spec), "--slo", "bogus"])
    assert r.exit_code == 2 and "bogus" in r.output


def test_short_runs_are_flagged_as_transient():
    """400 requests at a rate a cluster drains in seconds: the search sees a burst, not a steady
    state, and says so (steady_state_ratio < 10 and a warning); 20x the requests lift the ratio."""
    base = {"clients": [{"name": "llm", "model": "llama-3.1-8b", "device": "H100",
                         "scheduler": {"max_batch_size": 256}}],
            "workload": {"num_requests": 60, "arrival": {"process": "poisson", "rate_rps": 5},
                         "output": {"dist": "fixed", "value": 1000}}}
    with pytest.warns(UserWarning, match="transient"):
        short = capacity(base)
    assert float(short.steady_state_ratio) < 10
    base["workload"]["num_requests"] = 3000
    long = capacity(base)
    assert float(long.steady_state_ratio) > float(short.steady_state_ratio)
    assert float(long.max_rate_rps) < float(short.max_rate_rps)


def test_a_limit_no_load_can_meet_stops_early(times):
    """A TPOT limit below the decode step time of a lone request fails at every rate: the search
    says so after a couple of halvings instead of walking down to the rate floor."""
    t_p, d = times
    step_ms = (d - t_p) / (OUT_TOK - 1) * 1e3
    ds = capacity(one_at_a_time("poisson", rate=2.0, n=200), [f"tpot_p99_ms<={0.5 * step_ms}"])
    assert np.isnan(float(ds.max_rate_rps))
    assert int(ds.fails_at_any_rate) == 1 and int(ds.n_evaluations) <= 4
    assert str(ds.binding_slo.item()).startswith("tpot_p99_ms")


def test_public_name_stays_the_function():
    """Importing the search module must not shadow ``mistfast.capacity`` (a submodule of the same
    name would replace the lazily exported function)."""
    import mistfast.capacity_search  # noqa: F401
    assert callable(mf.capacity) and mf.capacity is mistfast.capacity_search.capacity
