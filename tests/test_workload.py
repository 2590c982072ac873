"""Tests for mistfast.workload.

Expected values come from the sample files (values written by hand into data/samples/), from
closed-form statistics of the distributions, or from hand calculation — never from re-running
the code under test.
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mistfast import workload as wl
from mistfast.workload import Requests, ServeGenClient, WorkloadError

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "data" / "samples"
SHARED = Path(os.environ.get("MISTFAST_SHARED") or Path(__file__).resolve().parents[2] / "shared")
TRACES = SHARED / "traces"
needs_traces = pytest.mark.skipif(not TRACES.is_dir(), reason=f"real traces not found at {TRACES}")


def rng(seed: int = 259) -> np.random.Generator:
    return np.random.default_rng(seed)


def gaps_of(t: np.ndarray) -> np.ndarray:
    return np.diff(np.concatenate([[0.0], t]))


def cv_of(x: np.ndarray) -> float:
    return float(np.std(x) / np.mean(x))


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


# ================================================================================================
# arrival processes
# ================================================================================================
N_BIG = 200_000


@pytest.mark.parametrize("process", ["poisson", "gamma", "weibull", "normal", "uniform"])
def test_arrival_mean_rate(process):
    rate = 5.0
    t = wl.arrival_times(process, N_BIG, rng(), rate_rps=rate, cv=1.7)
    assert t.dtype == np.float64 and t.shape == (N_BIG,)
    assert np.all(np.diff(t) >= 0)
    assert np.all(t >= 0)
    # n arrivals (n gaps for renewal processes, n-1 for uniform) over t[-1]
    n_gaps = N_BIG - 1 if process == "uniform" else N_BIG
    assert n_gaps / t[-1] == pytest.approx(rate, rel=0.02)


@pytest.mark.parametrize("process", ["poisson", "gamma", "weibull", "normal"])
def test_arrival_first_gap_included(process):
    t = wl.arrival_times(process, 1000, rng(), rate_rps=2.0, cv=0.8)
    assert t[0] > 0.0


def test_uniform_and_offline_exact():
    # hand: gaps exactly 1/rate = 0.25 s from 0
    np.testing.assert_allclose(wl.arrival_times("uniform", 5, rng(), rate_rps=4.0), [0, 0.25, 0.5, 0.75, 1.0])
    off = wl.arrival_times("offline", 7, rng())
    assert off.dtype == np.float64 and off.shape == (7,) and np.all(off == 0.0)
    assert wl.arrival_times("poisson", 0, rng(), rate_rps=1.0).shape == (0,)


@pytest.mark.parametrize("process", ["gamma", "weibull"])
@pytest.mark.parametrize("cv", [0.5, 1.0, 2.0])
def test_renewal_cv(process, cv):
    rate = 3.0
    g = gaps_of(wl.arrival_times(process, N_BIG, rng(7), rate_rps=rate, cv=cv))
    assert g.mean() == pytest.approx(1.0 / rate, rel=0.03)
    assert cv_of(g) == pytest.approx(cv, rel=0.05)


def test_weibull_cv1_is_exponential():
    # Weibull with CV 1 has shape exactly 1 (exponential): P(gap > mean) = e^-1
    rate = 2.0
    g = gaps_of(wl.arrival_times("weibull", N_BIG, rng(3), rate_rps=rate, cv=1.0))
    assert np.mean(g > 1.0 / rate) == pytest.approx(math.exp(-1), abs=0.005)


def test_poisson_gaps_exponential():
    g = gaps_of(wl.arrival_times("poisson", N_BIG, rng(4), rate_rps=10.0))
    assert cv_of(g) == pytest.approx(1.0, rel=0.02)
    assert np.mean(g > 0.1) == pytest.approx(math.exp(-1), abs=0.005)


def test_normal_gaps_cv_quarter():
    # N(1/λ, 1/(4λ)): CV 0.25; clipping at 0 is a 4-sigma event (negligible)
    g = gaps_of(wl.arrival_times("normal", N_BIG, rng(5), rate_rps=8.0))
    assert g.min() >= 0.0
    assert cv_of(g) == pytest.approx(0.25, rel=0.02)


def test_bursty_rates():
    rate, f, nu, w = 2.0, 3.0, 0.1, 4.0
    n = 100_000
    t = wl.arrival_times("bursty", n, rng(11), rate_rps=rate, burst_factor=f, burst_freq=nu, burst_power=w)
    assert np.all(np.diff(t) >= 0) and t[0] > 0
    # long-run mean: rate·(1 + (f−1)·(1/2π)∫₀^π sin⁴) = rate·(1 + 2·3/16) = 1.375·rate
    assert n / t[-1] == pytest.approx(1.375 * rate, rel=0.02)
    phase = np.mod(t * nu, 1.0)
    T = t[-1]
    # base phase (sin <= 0, phase in [0.5, 1)): exactly the base rate
    base = np.sum(phase >= 0.5) / (0.5 * T)
    assert base == pytest.approx(rate, rel=0.03)
    # burst peak (phase in [0.2, 0.3): sin >= sin(0.4π) = 0.951, sin⁴ >= 0.818): rate >= 2·(1+2·0.818) = 5.27
    peak = np.sum((phase >= 0.2) & (phase < 0.3)) / (0.1 * T)
    assert 5.1 < peak <= 6.0 * 1.03
    assert peak > 2.5 * base


def test_arrivals_deterministic():
    for p in wl.ARRIVAL_PROCESSES:
        a = wl.arrival_times(p, 500, rng(1), rate_rps=3.0, cv=1.5)
        b = wl.arrival_times(p, 500, rng(1), rate_rps=3.0, cv=1.5)
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf"), None])
def test_arrival_bad_rate(bad):
    with pytest.raises(WorkloadError, match="rate_rps"):
        wl.arrival_times("poisson", 10, rng(), rate_rps=bad)


@pytest.mark.parametrize("process", ["gamma", "weibull"])
@pytest.mark.parametrize("bad", [0.0, -0.5, float("nan")])
def test_arrival_bad_cv(process, bad):
    with pytest.raises(WorkloadError, match="cv"):
        wl.arrival_times(process, 10, rng(), rate_rps=1.0, cv=bad)


def test_arrival_unknown_process_lists_allowed():
    with pytest.raises(WorkloadError) as e:
        wl.arrival_times("posson", 10, rng(), rate_rps=1.0)
    msg = str(e.value)
    assert "posson" in msg and all(p in msg for p in wl.ARRIVAL_PROCESSES)


def test_arrival_bad_n_and_burst_params():
    with pytest.raises(WorkloadError, match="n must be"):
        wl.arrival_times("poisson", -1, rng(), rate_rps=1.0)
    with pytest.raises(WorkloadError, match="burst_freq"):
        wl.arrival_times("bursty", 10, rng(), rate_rps=1.0, burst_freq=0.0)


@settings(max_examples=60, deadline=None)
@given(process=st.sampled_from(wl.ARRIVAL_PROCESSES), n=st.integers(0, 300),
       rate=st.floats(1e-3, 1e3), cv=st.floats(0.1, 5.0), seed=st.integers(0, 2**32 - 1))
def test_arrival_properties(process, n, rate, cv, seed):
    t = wl.arrival_times(process, n, rng(seed), rate_rps=rate, cv=cv)
    assert t.shape == (n,) and t.dtype == np.float64
    assert np.all(np.isfinite(t)) and np.all(t >= 0) and np.all(np.diff(t) >= 0)


# ================================================================================================
# lengths
# ================================================================================================
def test_lengths_fixed():
    x = wl.sample_lengths("fixed", 10, rng(), value=128)
    assert x.dtype == np.int64 and np.all(x == 128)


def test_lengths_normal_mean_and_clamp():
    x = wl.sample_lengths("normal", N_BIG, rng(), mean=500, std=50)
    assert x.mean() == pytest.approx(500, rel=0.005)
    assert x.std() == pytest.approx(50, rel=0.03)
    y = wl.sample_lengths("normal", 10_000, rng(), mean=2, std=10)
    assert y.min() == 1  # |int(Normal)| could give 0 in the reference; here clamped to >= 1
    assert np.mean(y == 1) > 0.4  # P(N(2,10) < 1.5) = Φ(-0.05) ≈ 0.48


def test_lengths_lognormal_from_mean_std():
    # σ² = ln(1 + (2000/1000)²) = ln 5; median = mean / sqrt(1 + cv²) = 1000/√5 = 447.2
    x = wl.sample_lengths("lognormal", 400_000, rng(), mean=1000, std=2000)
    assert x.mean() == pytest.approx(1000, rel=0.03)
    assert np.median(x) == pytest.approx(1000 / math.sqrt(5), rel=0.02)


def test_lengths_lognormal_from_sigma():
    # median = mean·exp(-σ²/2) = 100·e^(-0.125) = 88.25
    x = wl.sample_lengths("lognormal", N_BIG, rng(), mean=100, sigma=0.5)
    assert x.mean() == pytest.approx(100, rel=0.01)
    assert np.median(x) == pytest.approx(88.25, rel=0.02)


def test_lengths_uniform_inclusive():
    x = wl.sample_lengths("uniform", 50_000, rng(), low=10, high=20)
    assert set(np.unique(x)) == set(range(10, 21))
    assert x.mean() == pytest.approx(15, rel=0.01)


def test_lengths_empirical():
    x = wl.sample_lengths("empirical", 100_000, rng(), values=[1, 2, 3], probs=[0.5, 0.25, 0.25])
    assert set(np.unique(x)) <= {1, 2, 3}
    assert x.mean() == pytest.approx(1.75, rel=0.01)  # 0.5 + 0.5 + 0.75
    y = wl.sample_lengths("empirical", 100_000, rng(), values={10: 1.0, 30: 3.0})  # unnormalised dict
    assert set(np.unique(y)) == {10, 30}
    assert y.mean() == pytest.approx(25, rel=0.01)  # 0.25·10 + 0.75·30
    z = wl.sample_lengths("empirical", 30_000, rng(), values=[4, 6])  # uniform over values
    assert z.mean() == pytest.approx(5, rel=0.01)


def test_lengths_min_max_clamp():
    x = wl.sample_lengths("uniform", 10_000, rng(), low=0, high=100, min_tokens=20, max_tokens=50)
    assert x.min() == 20 and x.max() == 50
    z = wl.sample_lengths("empirical", 100, rng(), values=[0, 0.2])
    assert np.all(z == 1)  # rounded to 0 → clamped to 1, never 0


def test_lengths_errors():
    with pytest.raises(WorkloadError) as e:
        wl.sample_lengths("zipf", 3, rng(), value=1)
    assert "zipf" in str(e.value) and all(d in str(e.value) for d in wl.LENGTH_DISTS)
    with pytest.raises(WorkloadError, match="std"):
        wl.sample_lengths("normal", 3, rng(), mean=1)
    with pytest.raises(WorkloadError, match="does not take std"):
        wl.sample_lengths("fixed", 3, rng(), value=1, std=2)
    with pytest.raises(WorkloadError, match="exactly one"):
        wl.sample_lengths("lognormal", 3, rng(), mean=10, std=1, sigma=1)
    with pytest.raises(WorkloadError, match="min_tokens"):
        wl.sample_lengths("fixed", 3, rng(), value=5, min_tokens=0)
    with pytest.raises(WorkloadError, match="max_tokens"):
        wl.sample_lengths("fixed", 3, rng(), value=5, min_tokens=10, max_tokens=5)
    with pytest.raises(WorkloadError, match="probs"):
        wl.sample_lengths("empirical", 3, rng(), values=[1, 2], probs=[1.0])
    with pytest.raises(WorkloadError, match="low <= high"):
        wl.sample_lengths("uniform", 3, rng(), low=5, high=2)


@settings(max_examples=60, deadline=None)
@given(dist=st.sampled_from(["fixed", "normal", "lognormal", "uniform"]), n=st.integers(0, 200),
       a=st.floats(0.1, 1e5), b=st.floats(0.0, 1e5), lo=st.integers(1, 50), span=st.integers(0, 1000),
       seed=st.integers(0, 2**32 - 1))
def test_length_properties(dist, n, a, b, lo, span, seed):
    kw = {"fixed": dict(value=a), "normal": dict(mean=a, std=b), "lognormal": dict(mean=a, std=b),
          "uniform": dict(low=0, high=int(a))}[dist]
    x = wl.sample_lengths(dist, n, rng(seed), min_tokens=lo, max_tokens=lo + span, **kw)
    assert x.dtype == np.int64 and x.shape == (n,)
    assert np.all(x >= lo) and np.all(x <= lo + span)


# ================================================================================================
# Requests
# ================================================================================================
def small_requests() -> Requests:
    return Requests.from_arrays([3.0, 1.0, 2.0, 1.0], [10, 20, 30, 40], [1, 2, 3, 4],
                                hash_ids=[[7], [1, 2], [], [3, 4, 5]])


def test_requests_sorted_stably_with_hashes():
    r = small_requests()
    np.testing.assert_array_equal(r.arrival_s, [1.0, 1.0, 2.0, 3.0])
    np.testing.assert_array_equal(r.input_tokens, [20, 40, 30, 10])  # tie at 1.0 keeps input order
    np.testing.assert_array_equal(r.output_tokens, [2, 4, 3, 1])
    np.testing.assert_array_equal(r.hash_offsets, [0, 2, 5, 5, 6])
    np.testing.assert_array_equal(r.hash_ids, [1, 2, 3, 4, 5, 7])
    assert r.hash_ids.dtype == np.int64 and r.input_tokens.dtype == np.int64
    assert len(r) == 4 and r.hash_block_tokens == 512


def test_requests_no_hashes_layout():
    r = Requests.from_arrays([0.5, 0.1], [5, 6], [7, 8])
    np.testing.assert_array_equal(r.hash_offsets, [0, 0, 0])
    assert r.hash_ids.size == 0 and not r.has_hashes


def test_requests_validation():
    with pytest.raises(WorkloadError, match="input_tokens"):
        Requests.from_arrays([0.0], [0], [1])
    with pytest.raises(WorkloadError, match="arrival_s"):
        Requests.from_arrays([-1.0], [1], [1])
    with pytest.raises(WorkloadError, match="equal lengths"):
        Requests.from_arrays([0.0, 1.0], [1], [1])
    with pytest.raises(WorkloadError, match="hash_offsets"):
        Requests(np.zeros(2), [1, 1], [1, 1], [0, 1, 3], [5, 6])


def test_window():
    r = small_requests()
    w = r.window(1.0, 3.0)  # [1, 3): excludes the arrival at 3.0
    np.testing.assert_array_equal(w.arrival_s, [0.0, 0.0, 1.0])
    np.testing.assert_array_equal(w.input_tokens, [20, 40, 30])
    np.testing.assert_array_equal(w.hash_offsets, [0, 2, 5, 5])
    np.testing.assert_array_equal(w.hash_ids, [1, 2, 3, 4, 5])
    w2 = r.window(2.5, 10.0)
    np.testing.assert_array_equal(w2.arrival_s, [0.5])
    np.testing.assert_array_equal(w2.hashes(0), [7])
    assert len(r.window(5.0, 6.0)) == 0
    with pytest.raises(WorkloadError, match="end_s"):
        r.window(3.0, 1.0)


def test_scale_rate():
    r = small_requests().scale_rate(2.0)
    np.testing.assert_array_equal(r.arrival_s, [0.5, 0.5, 1.0, 1.5])
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(WorkloadError, match="factor"):
            small_requests().scale_rate(bad)


def test_head_and_with_arrivals():
    r = small_requests()
    h = r.head(2)
    np.testing.assert_array_equal(h.input_tokens, [20, 40])
    np.testing.assert_array_equal(h.hash_ids, [1, 2, 3, 4, 5])
    assert len(r.head(100)) == 4 and len(r.head(0)) == 0
    a = r.with_arrivals([9.0, 8.0, 7.0, 6.0])  # reverses the order; hashes follow
    np.testing.assert_array_equal(a.arrival_s, [6.0, 7.0, 8.0, 9.0])
    np.testing.assert_array_equal(a.input_tokens, [10, 30, 40, 20])
    np.testing.assert_array_equal(a.hash_offsets, [0, 1, 1, 4, 6])
    np.testing.assert_array_equal(a.hash_ids, [7, 3, 4, 5, 1, 2])
    with pytest.raises(WorkloadError, match="4 arrival times"):
        r.with_arrivals([1.0])


def test_subsample():
    r = wl.load_mooncake_trace(SAMPLES / "mooncake_sample.jsonl")
    s = r.subsample(5, rng())
    assert len(s) == 5 and np.all(np.diff(s.arrival_s) >= 0)
    rows = {(float(r.arrival_s[i]), int(r.input_tokens[i]), int(r.output_tokens[i]), tuple(r.hashes(i)))
            for i in range(len(r))}
    got = [(float(s.arrival_s[i]), int(s.input_tokens[i]), int(s.output_tokens[i]), tuple(s.hashes(i)))
           for i in range(len(s))]
    assert set(got) <= rows and len(set(got)) == 5
    assert len(r.subsample(0.5, rng())) == 10  # 20 rows × 0.5
    assert r.subsample(1.0, rng()).equals(r)
    assert len(r.subsample(0, rng())) == 0
    a, b = r.subsample(7, rng(3)), r.subsample(7, rng(3))
    assert a.equals(b)
    for bad in (21, -1, 1.5, "3"):
        with pytest.raises(WorkloadError, match="subsample"):
            r.subsample(bad, rng())


@settings(max_examples=40, deadline=None)
@given(data=st.lists(st.tuples(st.integers(0, 20), st.integers(1, 5000), st.integers(1, 500),
                               st.lists(st.integers(0, 1000), max_size=6)), max_size=40),
       seed=st.integers(0, 2**32 - 1))
def test_requests_pairing_invariant(data, seed):
    """Sorting, subsetting and re-timing never separate a request from its lengths and hashes."""
    arr = [float(d[0]) for d in data]
    r = Requests.from_arrays(arr, [d[1] for d in data], [d[2] for d in data], hash_ids=[d[3] for d in data])
    recs = sorted(((d[0], d[1], d[2], tuple(d[3])) for d in data), key=lambda x: x[0])  # stable
    got = [(r.arrival_s[i], r.input_tokens[i], r.output_tokens[i], tuple(r.hashes(i))) for i in range(len(r))]
    assert got == recs
    s = r.subsample(len(r) // 2, rng(seed))
    keys = {(x[1], x[2], x[3]) for x in recs}
    assert all((s.input_tokens[i], s.output_tokens[i], tuple(s.hashes(i))) in keys for i in range(len(s)))
    w = r.window(5.0, 15.0)
    assert len(w) == sum(5 <= x[0] < 15 for x in recs)


# ================================================================================================
# loaders on the sample files
# ================================================================================================
def test_azure_sample():
    r = wl.load_azure_trace(SAMPLES / "azure_sample.csv")
    assert len(r) == 20
    # row 1 at 18:59:50.1 → 0; row 3 at 18:59:51.35 → 1.25 s; row 20 at 19:00:12.6 → 22.5 s
    assert r.arrival_s[0] == 0.0
    assert r.arrival_s[2] == pytest.approx(1.25, abs=1e-6)
    assert r.arrival_s[-1] == pytest.approx(22.5, abs=1e-6)
    assert (r.input_tokens[2], r.output_tokens[2]) == (2048, 17)
    # rows 4 and 5 share 2.0 s: order kept
    assert r.arrival_s[3] == r.arrival_s[4] == pytest.approx(2.0, abs=1e-6)
    assert (r.input_tokens[3], r.input_tokens[4]) == (96, 512)
    assert r.input_tokens.sum() == 23618 and r.output_tokens.sum() == 2175  # hand sums
    assert r.hash_ids.size == 0 and np.all(r.hash_offsets == 0)


def test_mooncake_sample():
    r = wl.load_mooncake_trace(SAMPLES / "mooncake_sample.jsonl")
    assert len(r) == 20 and r.hash_block_tokens == 512
    assert r.arrival_s[2] == pytest.approx(0.25)  # 250 ms
    assert r.arrival_s[-1] == pytest.approx(10.0)
    assert (r.input_tokens[3], r.output_tokens[3]) == (1600, 90)
    np.testing.assert_array_equal(r.hash_offsets[:6], [0, 3, 6, 7, 11, 12])
    assert r.hash_offsets[-1] == 63 and r.hash_ids.size == 63
    np.testing.assert_array_equal(r.hashes(3), [0, 1, 2, 5])
    np.testing.assert_array_equal(r.hashes(19), np.arange(26, 36))
    # one id per 512-token block: ceil(input/512)
    np.testing.assert_array_equal(np.diff(r.hash_offsets), -(-r.input_tokens // 512))
    assert r.hash_ids.dtype == np.int64


def test_length_trace_sample():
    r = wl.load_length_trace(SAMPLES / "vidur_lengths_sample.csv")
    assert len(r) == 20 and np.all(r.arrival_s == 0)
    assert (r.input_tokens[2], r.output_tokens[2]) == (3500, 120)
    assert (r.input_tokens[-1], r.output_tokens[-1]) == (3700, 100)
    t = wl.arrival_times("uniform", len(r), rng(), rate_rps=2.0)
    r2 = r.with_arrivals(t)
    assert r2.arrival_s[-1] == pytest.approx(9.5) and r2.input_tokens[2] == 3500


def test_length_trace_arrived_at(tmp_path):
    p = write(tmp_path, "v.csv", "arrived_at,num_prefill_tokens,num_decode_tokens\n2.5,10,3\n0.5,20,4\n")
    r = wl.load_length_trace(p)
    np.testing.assert_array_equal(r.arrival_s, [0.5, 2.5])
    np.testing.assert_array_equal(r.input_tokens, [20, 10])


def test_load_trace_dispatch(tmp_path):
    assert len(wl.load_trace(SAMPLES / "azure_sample.csv")) == 20
    assert wl.load_trace(SAMPLES / "mooncake_sample.jsonl").hash_ids.size == 63
    assert wl.load_trace(SAMPLES / "vidur_lengths_sample.csv").input_tokens[0] == 3000
    assert wl.load_trace(SAMPLES / "azure_sample.csv", format="azure").input_tokens[0] == 374
    with pytest.raises(WorkloadError) as e:
        wl.load_trace(SAMPLES / "azure_sample.csv", format="csv")
    assert all(f in str(e.value) for f in wl.TRACE_FORMATS)
    p = write(tmp_path, "odd.csv", "a,b\n1,2\n")
    with pytest.raises(WorkloadError, match="format"):
        wl.load_trace(p)


# ================================================================================================
# loader errors
# ================================================================================================
AZ_HEAD = "TIMESTAMP,ContextTokens,GeneratedTokens\n"
AZ_ROW = "2023-11-16 18:15:46.6805900,374,44\n"


def test_missing_file(tmp_path):
    for fn in (wl.load_azure_trace, wl.load_mooncake_trace, wl.load_length_trace, wl.load_trace):
        with pytest.raises(WorkloadError, match="not found.*nope"):
            fn(tmp_path / "nope.csv")


def test_azure_missing_column(tmp_path):
    p = write(tmp_path, "a.csv", "TIMESTAMP,ContextTokens\n2023-11-16 18:15:46.6805900,374\n")
    with pytest.raises(WorkloadError) as e:
        wl.load_azure_trace(p)
    msg = str(e.value)
    assert "GeneratedTokens" in msg and "found columns: TIMESTAMP, ContextTokens" in msg and "a.csv" in msg


def test_azure_bad_timestamp(tmp_path):
    p = write(tmp_path, "a.csv", AZ_HEAD + AZ_ROW + "yesterday,10,10\n")
    with pytest.raises(WorkloadError, match=r"line 3: column TIMESTAMP value 'yesterday'"):
        wl.load_azure_trace(p)


def test_azure_non_integer_tokens(tmp_path):
    p = write(tmp_path, "a.csv", AZ_HEAD + AZ_ROW * 2 + "2023-11-16 18:15:47.0,abc,10\n")
    with pytest.raises(WorkloadError, match=r"line 4: column ContextTokens value 'abc'"):
        wl.load_azure_trace(p)
    p = write(tmp_path, "b.csv", AZ_HEAD + AZ_ROW + "2023-11-16 18:15:47.0,12.5,10\n")
    with pytest.raises(WorkloadError, match=r"line 3: column ContextTokens value"):
        wl.load_azure_trace(p)


def test_azure_negative_and_zero_tokens(tmp_path):
    p = write(tmp_path, "a.csv", AZ_HEAD + AZ_ROW + "2023-11-16 18:15:47.0,10,-3\n")
    with pytest.raises(WorkloadError, match=r"line 3: column GeneratedTokens value -3 is negative"):
        wl.load_azure_trace(p)
    p = write(tmp_path, "b.csv", AZ_HEAD + AZ_ROW + "2023-11-16 18:15:47.0,0,3\n")
    with pytest.raises(WorkloadError, match=r"line 3: column ContextTokens value 0 is zero"):
        wl.load_azure_trace(p)
    # 0 generated tokens: clamped to 1
    p = write(tmp_path, "c.csv", AZ_HEAD + AZ_ROW + "2023-11-16 18:15:47.1805900,10,0\n")
    r = wl.load_azure_trace(p)
    np.testing.assert_array_equal(r.output_tokens, [44, 1])
    assert r.arrival_s[1] == pytest.approx(0.5, abs=1e-6)


def test_azure_blank_line_keeps_line_numbers(tmp_path):
    p = write(tmp_path, "a.csv", AZ_HEAD + AZ_ROW + "\n" + "2023-11-16 18:15:47.0,x,1\n")
    with pytest.raises(WorkloadError, match="line 4"):
        wl.load_azure_trace(p)


def test_empty_traces(tmp_path):
    for name, text, fn in [("a.csv", "", wl.load_azure_trace), ("b.csv", AZ_HEAD, wl.load_azure_trace),
                           ("c.jsonl", "", wl.load_mooncake_trace), ("d.jsonl", "\n\n", wl.load_mooncake_trace),
                           ("e.csv", "num_prefill_tokens,num_decode_tokens\n", wl.load_length_trace)]:
        with pytest.raises(WorkloadError, match="empty"):
            fn(write(tmp_path, name, text))


def test_length_trace_errors(tmp_path):
    p = write(tmp_path, "v.csv", "num_prefill_tokens,decode\n1,2\n")
    with pytest.raises(WorkloadError, match="num_decode_tokens.*found columns: num_prefill_tokens, decode"):
        wl.load_length_trace(p)
    p = write(tmp_path, "w.csv", "num_prefill_tokens,num_decode_tokens\n1,2\n-4,2\n")
    with pytest.raises(WorkloadError, match="line 3: column num_prefill_tokens value -4 is negative"):
        wl.load_length_trace(p)


MC = '{"timestamp": 0, "input_length": 600, "output_length": 5, "hash_ids": [1, 2]}\n'


def test_mooncake_errors(tmp_path):
    cases = [
        ('{"timestamp": 1, "input_length": 600\n', r"line 2: not valid JSON"),
        ('{"timestamp": 1, "output_length": 3, "hash_ids": []}\n', r"line 2: missing field input_length; found fields: timestamp, output_length, hash_ids"),
        ('{"timestamp": 1, "input_length": 600, "output_length": -2, "hash_ids": [1]}\n', r"line 2: field output_length value -2.*negative"),
        ('{"timestamp": 1, "input_length": 0, "output_length": 2, "hash_ids": [1]}\n', r"line 2: field input_length value 0"),
        ('{"timestamp": -5, "input_length": 10, "output_length": 2, "hash_ids": [1]}\n', r"line 2: field timestamp value -5"),
        ('{"timestamp": 1, "input_length": 10, "output_length": 2, "hash_ids": [1.5]}\n', r"line 2: field hash_ids"),
        ('{"timestamp": 1, "input_length": "10", "output_length": 2}\n', r"line 2: field input_length value '10'"),
        ('[1, 2]\n', r"line 2: expected a JSON object"),
    ]
    for i, (line, pat) in enumerate(cases):
        p = write(tmp_path, f"m{i}.jsonl", MC + line)
        with pytest.raises(WorkloadError, match=pat):
            wl.load_mooncake_trace(p)


def test_mooncake_clamp_sort_and_missing_hashes(tmp_path):
    p = write(tmp_path, "m.jsonl",
              '{"timestamp": 2000, "input_length": 600, "output_length": 0, "hash_ids": [1, 2]}\n'
              '\n'
              '{"timestamp": 500.5, "input_length": 30, "output_length": 7}\n')
    r = wl.load_mooncake_trace(p)
    np.testing.assert_allclose(r.arrival_s, [0.5005, 2.0])
    np.testing.assert_array_equal(r.output_tokens, [7, 1])  # 0 clamped to 1
    np.testing.assert_array_equal(r.hash_offsets, [0, 0, 2])
    np.testing.assert_array_equal(r.hash_ids, [1, 2])


# ================================================================================================
# ServeGen
# ================================================================================================
SG = SAMPLES / "servegen_sample"


def test_servegen_parse():
    c = wl.load_servegen(SG, 0)
    np.testing.assert_array_equal(c.window_start_s, [0, 600, 1200, 1800, 2400, 3000])
    np.testing.assert_array_equal(c.rate_rps, [0.5, 0, 1.0, 0.2, 0, 2.0])
    np.testing.assert_array_equal(c.cv, [1.0, 0, 0.5, 1.18, 0, 1.0])
    assert c.dist == ("Gamma", "", "Gamma", "Weibull", "", "Exponential")
    np.testing.assert_array_equal(c.p1, [1.0, 0, 4.0, 0.85, 0, 0])
    np.testing.assert_array_equal(c.p2, [2.0, 0, 0.25, 4.6, 0, 0])
    assert c.window_s == 600 and c.period_s == 3600
    assert sorted(c.pmfs) == [0, 21600, 43200, 64800]
    v, p = c.pmfs[0]["input_tokens"]
    assert v.dtype == np.int64 and p.dtype == np.float64
    np.testing.assert_array_equal(v, [100, 200, 300])
    np.testing.assert_allclose(p, [0.5, 0.25, 0.25])
    v, p = c.pmfs[0]["reason_ratio"]
    assert v.dtype == np.float64
    np.testing.assert_allclose(v, [0.0, 0.5, 0.9])
    np.testing.assert_allclose(p, [0.1, 0.3, 0.6])
    np.testing.assert_allclose(c.pmfs[43200]["output_tokens"][1], [0.5, 0.5])
    assert c.pmfs[21600]["input_tokens"][0].size == 0


def test_servegen_requests_windows_and_support():
    c = wl.load_servegen(SG, 0)
    req, rr = wl.servegen_requests(c, rng(), duration_s=3600)
    t = req.arrival_s
    assert len(rr) == len(req) and np.all(np.diff(t) >= 0)
    counts = np.histogram(t, bins=np.arange(0, 3601, 600))[0]
    # expected rate × 600 s: 300, 0, 600, ≈120 (Weibull mean gap 4.6·Γ(1+1/0.85) ≈ 5.0), 0, 1200
    assert counts[1] == 0 and counts[4] == 0
    assert 225 <= counts[0] <= 375
    assert 540 <= counts[2] <= 660
    assert 60 <= counts[3] <= 180
    assert 1080 <= counts[5] <= 1320
    assert set(np.unique(req.input_tokens)) <= {100, 200, 300}
    assert set(np.unique(req.output_tokens)) <= {50, 400}
    assert set(np.unique(rr)) <= {0.0, 0.5, 0.9}
    assert np.mean(req.input_tokens == 100) == pytest.approx(0.5, abs=0.05)
    assert np.mean(req.output_tokens == 400) == pytest.approx(0.8, abs=0.05)
    assert np.mean(rr == 0.9) == pytest.approx(0.6, abs=0.05)


def test_servegen_start_duration_cap():
    c = wl.load_servegen(SG, 0)
    req, _ = wl.servegen_requests(c, rng(), start_s=1200, duration_s=600)  # Gamma(4, 0.25) window only
    assert 540 <= len(req) <= 660
    assert req.arrival_s[0] >= 0 and req.arrival_s[-1] < 600
    g = np.diff(req.arrival_s)
    assert cv_of(g) == pytest.approx(0.5, abs=0.1)  # Gamma shape 4: CV 1/√4
    full, _ = wl.servegen_requests(c, rng(5), duration_s=3600)
    capped, rr = wl.servegen_requests(c, rng(5), duration_s=3600, max_requests=10)
    assert len(capped) == 10 and len(rr) == 10
    np.testing.assert_array_equal(capped.arrival_s, full.arrival_s[:10])
    empty, rr0 = wl.servegen_requests(c, rng(), start_s=600, duration_s=600)
    assert len(empty) == 0 and rr0.size == 0


def _six_hour_client(rates=(0.01, 0.0, 0.01, 0.01)) -> ServeGenClient:
    pmfs = wl.load_servegen(SG, 0).pmfs
    k = len(rates)
    return ServeGenClient(window_start_s=np.arange(k) * 21600.0, rate_rps=np.array(rates, float),
                          cv=np.ones(k), dist=tuple("Exponential" if r > 0 else "" for r in rates),
                          p1=np.zeros(k), p2=np.zeros(k), pmfs=pmfs)


def test_servegen_pmf_window_selection_and_wrap():
    c = _six_hour_client()
    req, rr = wl.servegen_requests(c, rng(), duration_s=2 * 86400)  # second day wraps
    tod = np.mod(req.arrival_s, 86400)
    w0, w1 = tod < 21600, (tod >= 21600) & (tod < 43200)
    w2, w3 = (tod >= 43200) & (tod < 64800), tod >= 64800
    assert w1.sum() == 0 and w0.sum() > 300 and w2.sum() > 300 and w3.sum() > 300
    assert (req.arrival_s >= 86400).sum() > 600
    assert set(np.unique(req.input_tokens[w0])) <= {100, 200, 300}
    assert np.all(req.input_tokens[w2] == 1000) and set(np.unique(req.output_tokens[w2])) == {7, 9}
    assert np.all(rr[w2] == 0.25)
    assert set(np.unique(req.input_tokens[w3])) == {4, 8} and np.all(req.output_tokens[w3] == 2000)
    assert np.all(rr[w3] == 1.0)  # value 0.0 has probability 0


def test_servegen_empty_pmf_with_arrivals():
    c = _six_hour_client(rates=(0.0, 0.01, 0.0, 0.0))
    with pytest.raises(WorkloadError, match="length window 21600 has an empty input_tokens PMF"):
        wl.servegen_requests(c, rng(), duration_s=86400)


def _sg_dir(tmp_path, trace: str, dataset) -> Path:
    d = tmp_path / "sg"
    d.mkdir(exist_ok=True)
    (d / "chunk-3-trace.csv").write_text(trace)
    (d / "chunk-3-dataset.json").write_text(dataset if isinstance(dataset, str) else json.dumps(dataset))
    return d


GOOD_DS = {"0": {"input_tokens": "{10: 1.0}", "output_tokens": "{5: 1.0}", "reason_ratio": "{0.5: 1.0}"}}


def test_servegen_errors(tmp_path):
    with pytest.raises(WorkloadError, match="chunk-9-trace.csv.*chunks available.*: 0"):
        wl.load_servegen(SG, 9)
    with pytest.raises(WorkloadError, match="directory not found"):
        wl.load_servegen(tmp_path / "nope", 0)
    d = _sg_dir(tmp_path, "0,1,1,Gamma,1,1\n600,1,1,Lognormal,1,1\n", GOOD_DS)
    with pytest.raises(WorkloadError, match=r"line 2: dist value 'Lognormal'.*Gamma, Weibull, Exponential"):
        wl.load_servegen(d, 3)
    d = _sg_dir(tmp_path, "0,1,1,Gamma,1,1\n600,1,1,Gamma,1\n", GOOD_DS)
    with pytest.raises(WorkloadError, match="line 2: expected 6 fields"):
        wl.load_servegen(d, 3)
    d = _sg_dir(tmp_path, "0,fast,1,Gamma,1,1\n", GOOD_DS)
    with pytest.raises(WorkloadError, match="line 1: non-numeric"):
        wl.load_servegen(d, 3)
    d = _sg_dir(tmp_path, "0,-1,1,Gamma,1,1\n", GOOD_DS)
    with pytest.raises(WorkloadError, match="line 1: rate_rps value '-1' is negative"):
        wl.load_servegen(d, 3)
    d = _sg_dir(tmp_path, "0,1,1,Gamma,0,1\n", GOOD_DS)
    with pytest.raises(WorkloadError, match="line 1: Gamma needs shape p1 > 0"):
        wl.load_servegen(d, 3)
    d = _sg_dir(tmp_path, "", GOOD_DS)
    with pytest.raises(WorkloadError, match="empty ServeGen trace"):
        wl.load_servegen(d, 3)
    bad = {"0": dict(GOOD_DS["0"], input_tokens="{10: __import__('os').getpid()}")}
    d = _sg_dir(tmp_path, "0,1,1,Gamma,1,1\n", bad)
    with pytest.raises(WorkloadError, match="window 0: field input_tokens: not a dict literal"):
        wl.load_servegen(d, 3)
    bad = {"0": dict(GOOD_DS["0"], output_tokens="{5.5: 1.0}")}
    with pytest.raises(WorkloadError, match="window 0: field output_tokens.*integers"):
        wl.load_servegen(_sg_dir(tmp_path, "0,1,1,Gamma,1,1\n", bad), 3)
    bad = {"0": {"input_tokens": "{10: 1.0}", "output_tokens": "{5: 1.0}"}}
    with pytest.raises(WorkloadError, match="missing field.*reason_ratio"):
        wl.load_servegen(_sg_dir(tmp_path, "0,1,1,Gamma,1,1\n", bad), 3)
    with pytest.raises(WorkloadError, match="not valid JSON"):
        wl.load_servegen(_sg_dir(tmp_path, "0,1,1,Gamma,1,1\n", "{"), 3)
    c = wl.load_servegen(_sg_dir(tmp_path, "0,1,1,Gamma,1,1\n", GOOD_DS), 3)
    with pytest.raises(WorkloadError, match="duration_s"):
        wl.servegen_requests(c, rng(), duration_s=0)


# ================================================================================================
# real traces (only when /work/shared/traces is present)
# ================================================================================================
@needs_traces
def test_real_azure_conv():
    t0 = time.perf_counter()
    r = wl.load_azure_trace(TRACES / "AzureLLMInferenceTrace_conv.csv")
    assert time.perf_counter() - t0 < 1.0
    assert len(r) == 19_366
    assert r.input_tokens.mean() == pytest.approx(1155, abs=1)
    assert r.output_tokens.mean() == pytest.approx(211, abs=1)
    assert r.arrival_s[0] == 0.0
    assert 57 * 60 < r.arrival_s[-1] < 59 * 60  # 18:15 → 19:14


@needs_traces
def test_real_azure_code():
    r = wl.load_trace(TRACES / "AzureLLMInferenceTrace_code.csv")
    assert len(r) == 8_819
    assert r.input_tokens.mean() == pytest.approx(2048, abs=1)
    assert r.output_tokens.mean() == pytest.approx(27.9, abs=0.1)


@needs_traces
def test_real_mooncake_conversation():
    r = wl.load_trace(TRACES / "mooncake_conversation_trace.jsonl")
    assert len(r) == 12_031
    assert r.input_tokens.mean() == pytest.approx(12_035, abs=1)
    np.testing.assert_array_equal(np.diff(r.hash_offsets), -(-r.input_tokens // 512))
    # SOURCES.md: 36.6 % of block references repeat an earlier block
    first = np.unique(r.hash_ids).size
    assert 1 - first / r.hash_ids.size == pytest.approx(0.366, abs=0.001)


@needs_traces
def test_real_servegen_chunk():
    d = TRACES / "servegen_deepseek_r1"
    c = wl.load_servegen(d, 1)
    assert c.period_s == 86400 and len(c.window_start_s) == 144
    assert c.rate_rps[0] > 0
    req, rr = wl.servegen_requests(c, rng(), duration_s=3600)
    expected = c.rate_rps[:6].sum() * 600
    assert len(req) > 0
    assert len(req) == pytest.approx(expected, rel=0.3)
    v_in = c.pmfs[0]["input_tokens"][0]
    assert np.all(np.isin(req.input_tokens, v_in))
    assert np.all((rr >= 0) & (rr <= 1))
