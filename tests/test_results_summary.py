"""``results.summary_vars``: the one function behind every summary variable of single-client
points and pipeline runs. Two points worked by hand (MODEL.md §8 power split 30/40/20/10 % of
TDP): point 0 has two LLM groups (a client entry of 2 replicas and one of 1) and a host; point 1
one group on a device without a power figure (NaN energy, never 0 J)."""
from __future__ import annotations

import warnings
from pathlib import Path
from types import SimpleNamespace as NS

import numpy as np
import pytest

from mistfast.kernels import cluster as CL
from mistfast.kernels import metrics as M
from mistfast.results import SummaryInputs, summary_vars

GiB = 2**30


def _device(name, tdp_W, idle_W=100.0):
    return NS(name=name, tdp_W=tdp_W, idle_W=idle_W, idle_power_W=idle_W, memory_bandwidth_GBps=1000.0,
              price_usd_per_hour=2.0, peak_flops=lambda dtype: 1e15)


def _client(device, tp, kv_blocks, weights_GiB):
    return NS(device=device, tp=tp, pp=1, num_devices=tp, precision=NS(compute="bf16"),
              kv_capacity_blocks=lambda: kv_blocks, kv_capacity_tokens=lambda: 16 * kv_blocks,
              weight_bytes_device=lambda: weights_GiB * GiB)


def _stats(busy, kv_block_s, kv_peak, flops, tc, tm, steps):
    row = np.zeros(CL.N_CS)
    row[[CL.CS_BUSY, CL.CS_KV_BLOCK_S, CL.CS_KV_PEAK, CL.CS_FLOPS, CL.CS_BYTES, CL.CS_TC, CL.CS_TM, CL.CS_STEPS]] = \
        [busy, kv_block_s, kv_peak, flops, 0.0, tc, tm, steps]
    return row


def _inputs():
    a, b = _device("A", 1000.0), _device("B", 0.0)          # B: no TDP, no power figure
    x, y, z = _client(a, 1, 100, 10), _client(a, 2, 200, 5), _client(b, 1, 100, 10)
    groups = np.array([_stats(8.0, 400.0, 50.0, 4e15, 4.0, 2.0, 30),     # x, 2 replicas, point 0
                       _stats(6.0, 1200.0, 150.0, 6e15, 3.0, 1.0, 10),   # y, 1 replica, point 0
                       _stats(5.0, 100.0, 10.0, 1e15, 1.0, 1.0, 7)])     # z, 1 replica, point 1
    out = np.zeros((2, M.N_OUT))
    out[:, M.O_OUT_TOKENS] = [100.0, 50.0]
    out[:, M.O_WINDOW] = [10.0, 20.0]
    totals = np.array([groups[0] + groups[1], groups[2]])
    return SummaryInputs(out=out, end_s=np.array([10.0, 20.0]), totals=totals, group_point=np.array([0, 0, 1]),
                         group_stats=groups, group_replicas=np.array([2.0, 1.0, 1.0]), group_clients=[x, y, z],
                         devices=[[a, a, None], [b]], host_energy_J=np.array([50.0, 0.0]),
                         price_usd_per_hour=np.array([10.0, 2.0]), warmup_s=np.zeros(2), mist=np.zeros(2, bool),
                         quantiles=[(), ()])


def test_groups_of_a_point_combine_by_hand():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = summary_vars(_inputs())
    # busy per replica: x 8 s / 2 / 10 s = 0.4, y 0.6; mean over the 3 replicas
    assert s["busy_fraction"][0] == pytest.approx((0.4 * 2 + 0.6) / 3)
    assert s["busy_fraction"][1] == pytest.approx(5.0 / 20.0)
    # KV over busy time: x 400/8/100 = 0.5, y 1200/6/200 = 1.0, weighted by busy seconds 8 and 6
    assert s["kv_util_mean"][0] == pytest.approx((0.5 * 8 + 1.0 * 6) / 14)
    assert s["kv_util_peak"][0] == pytest.approx(max(50 / 100, 150 / 200))
    # FLOP per replica over 1e15 FLOP/s x 10 s: x 4e15/2 -> 0.2, y 0.6; mean over replicas
    assert s["mfu"][0] == pytest.approx((0.2 * 2 + 0.6) / 3)
    # energy: busy 30 % + compute 40 % + memory 20 % of TDP for their seconds, idle 100 W otherwise
    x_J = 1 * (8 * 300 + 4 * 400 + 2 * 200) + 1 * 100 * (2 * 10 - 8)
    y_J = 2 * (6 * 300 + 3 * 400 + 1 * 200) + 2 * 100 * (10 - 6)
    assert s["energy_J"][0] == pytest.approx(x_J + y_J + 50.0)
    assert s["energy_per_output_token_J"][0] == pytest.approx((x_J + y_J + 50.0) / 100)
    assert s["idle_power_estimated"][0] == 0.0
    assert s["kv_capacity_tokens"][0] == 1600 and s["weights_GiB_per_device"][0] == 10
    assert s["n_steps"][0] == 40 and s["mean_batch_tokens"][0] == 0.0
    assert s["cost_usd"][0] == pytest.approx(10.0 * 10 / 3600)
    assert s["output_tok_s"][0] == pytest.approx(10.0)
    # a device without a power figure: its point's energy is unknown, not 0 J
    assert np.isnan(s["energy_J"][1]) and np.isnan(s["energy_per_output_token_J"][1])
    assert np.isnan(s["idle_power_estimated"][1])
    assert s["cost_usd"][1] == pytest.approx(2.0 * 20 / 3600)


def test_one_group_per_point_is_taken_as_it_is():
    """Points of one group each (single clients) get the group's values, bit for bit, whether
    they are computed together or each alone."""
    inp = _inputs()
    one = SummaryInputs(**{**inp.__dict__, "out": inp.out[[0, 1]], "end_s": np.array([10.0, 20.0]),
                           "totals": inp.group_stats[[0, 2]], "group_point": np.array([0, 1]),
                           "group_stats": inp.group_stats[[0, 2]], "group_replicas": np.array([2.0, 1.0]),
                           "group_clients": [inp.group_clients[0], inp.group_clients[2]],
                           "host_energy_J": np.zeros(2)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        both = summary_vars(one)
        alone = summary_vars(SummaryInputs(**{**one.__dict__, "out": one.out[:1], "end_s": one.end_s[:1],
                                              "totals": one.totals[:1], "group_point": np.array([0]),
                                              "group_stats": one.group_stats[:1], "group_replicas": np.array([2.0]),
                                              "group_clients": one.group_clients[:1], "devices": one.devices[:1],
                                              "host_energy_J": np.zeros(1), "price_usd_per_hour": np.array([10.0]),
                                              "warmup_s": np.zeros(1), "mist": np.zeros(1, bool),
                                              "quantiles": [()]}))
    assert both["busy_fraction"][0] == pytest.approx(0.4)
    for k, v in alone.items():
        np.testing.assert_array_equal(both[k][:1], v, err_msg=k)


EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize("example", ["rag.toml", "pd_disaggregation.toml"])
def test_pipeline_summary_agrees_with_its_client_table(example):
    """A pipeline's summary engine variables from its groups (client entries, replicas summed)
    equal what its per-instance client table gives: sums and maxima exactly, means over LLM
    replicas (KV: weighted by busy time) to rounding. RAG: an LLM entry of 2 replicas, a second
    LLM, two hosts; P/D: a prefill entry of 2 replicas and a decode entry."""
    from mistfast.scenario import simulate
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = simulate(EXAMPLES / example)
    mfu = ds.client_mfu.values
    llm = np.isfinite(mfu)                      # hosts have no FLOP utilisation
    assert llm.sum() >= 3 and (ds.client_steps.values[llm] > 0).all()
    busy = ds.client_busy_fraction.values[llm]
    assert float(ds.n_steps) == ds.client_steps.values[llm].sum()
    assert float(ds.kv_util_peak) == ds.client_kv_util_peak.values[llm].max()
    assert float(ds.busy_fraction) == pytest.approx(busy.mean(), rel=1e-12)
    assert float(ds.mfu) == pytest.approx(mfu[llm].mean(), rel=1e-12)
    assert float(ds.mbu) == pytest.approx(ds.client_mbu.values[llm].mean(), rel=1e-12)
    assert float(ds.kv_util_mean) == pytest.approx(
        (ds.client_kv_util_mean.values[llm] * busy).sum() / busy.sum(), rel=1e-12)
    assert float(ds.energy_J) == pytest.approx(ds.client_energy_J.values.sum(), rel=1e-12)   # hosts included
    price = ds.client_price_usd_per_hour.values.sum()
    assert float(ds.output_tok_s_per_usd_per_hour) == pytest.approx(float(ds.output_tok_s) / price, rel=1e-12)


def test_segment_means_are_numpys_nanmean_bit_for_bit():
    """The stage means of pipelines and of single-client tables: np.nanmean of each segment, to
    the last bit (empty and all-NaN segments: NaN)."""
    from mistfast.results import _segment_nanmeans
    rng = np.random.default_rng(3)
    x = rng.lognormal(-3.0, 2.0, 5000)
    x[rng.random(x.size) < 0.2] = np.nan
    x[100:110] = np.nan                                   # an all-NaN segment
    at = np.concatenate([[0, 0], np.sort(rng.choice(np.arange(1, 5000), 40, replace=False)), [100, 110, 110], [5000]])
    at = np.sort(at)
    got = _segment_nanmeans(x, at)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = np.array([np.nanmean(x[a:z]) if z > a else np.nan for a, z in zip(at[:-1], at[1:])])
    np.testing.assert_array_equal(got.view(np.int64), want.view(np.int64))
