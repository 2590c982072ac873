"""Case-study helpers (mistfast.studies) on hand-built sweep Datasets, and the study sweeps'
specs (they parse and name what they claim)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from mistfast import studies

ROOT = Path(__file__).resolve().parents[1]
RATE = "rate_per_client_rps"
OK_LAT = dict(ttft_p50_ms=100.0, ttft_p90_ms=200.0, ttft_p99_ms=300.0, tpot_p50_ms=20.0, tpot_p90_ms=30.0,
              tpot_p99_ms=40.0)


def _sweep(axis, labels, apps, rates, cells, dp=None):
    """A Dataset shaped like a study-3 sweep; ``cells[(label, app, rate)]`` overrides variables."""
    shape = (len(apps), len(labels), len(rates))
    dims = ("app", axis, RATE)
    data = {}
    names = list(OK_LAT) + ["output_tok_s", "energy_per_output_token_J", "n_arrived", "n_finished", "status"]
    for v in names:
        arr = np.zeros(shape)
        for i, a in enumerate(apps):
            for j, lab in enumerate(labels):
                for k, r in enumerate(rates):
                    base = dict(OK_LAT, output_tok_s=100.0 * r, energy_per_output_token_J=1.0, n_arrived=100,
                                n_finished=100, status=0)
                    base.update(cells.get((lab, a, r), {}))
                    arr[i, j, k] = base[v]
        data[v] = (dims, arr)
    if dp is not None:
        data["in_dp"] = (dims, np.broadcast_to(np.asarray(dp, float)[None, :, None], shape).copy())
    return xr.Dataset(data, coords={"app": apps, axis: labels, RATE: rates})


def test_table2_limits_are_the_papers_six():
    assert studies.table2_limits() == {"ttft_p50_ms": 500.0, "ttft_p90_ms": 750.0, "ttft_p99_ms": 1500.0,
                                       "tpot_p50_ms": 31.25, "tpot_p90_ms": 37.5, "tpot_p99_ms": 125.0}
    assert studies.table2_limits(rag=True)["ttft_p99_ms"] == 6000.0


def test_pipeline_table_passes_normalises_and_picks_winners():
    rates = [1.0, 2.0]
    colo = _sweep("batching", ["continuous", "chunked"], ["chat", "rag"], rates, {
        # chat at rate 2: continuous misses the TPOT p50 limit (31.25 ms), chunked has a worse TTFT
        ("continuous", "chat", 2.0): dict(tpot_p50_ms=32.0, output_tok_s=210.0),
        ("chunked", "chat", 2.0): dict(ttft_p99_ms=900.0, output_tok_s=205.0, energy_per_output_token_J=0.5),
        # rag: a 2,000 ms TTFT p50 passes the RAG baseline (limit 2,000) ...
        ("continuous", "rag", 1.0): dict(ttft_p50_ms=2000.0),
        # ... a chunked point that did not finish its requests fails whatever its latencies
        ("chunked", "rag", 2.0): dict(n_finished=98),
    })
    dis = _sweep("num_prefill", [1, 3], ["chat", "rag"], rates, {
        (1, "chat", 2.0): dict(ttft_p99_ms=1501.0),          # just over the p99 limit
        (3, "chat", 2.0): dict(ttft_p99_ms=250.0, output_tok_s=190.0, energy_per_output_token_J=0.8),
        (1, "rag", 1.0): dict(ttft_p50_ms=501.0, status=1),  # invalid point
    }, dp=[3, 1])
    t = studies.pipeline_table([colo, dis])
    assert list(t.strategy.values) == ["continuous", "chunked", "1P/3D", "3P/1D"]
    p = t["passes"].sel(rate_per_client_rps=2.0)
    assert p.sel(app="chat").values.tolist() == [False, True, False, True]
    assert p.sel(app="rag").values.tolist() == [True, False, True, True]
    assert t["passes"].sel(app="rag", rate_per_client_rps=1.0).values.tolist() == [True, True, False, True]
    # normalised to continuous at the lowest rate (100 tok/s, 1 token/J)
    n = t["norm_output_tok_s"].sel(app="chat", rate_per_client_rps=2.0).values
    np.testing.assert_allclose(n, [2.1, 2.05, 2.0, 1.9])
    e = t["norm_tok_per_J"].sel(app="chat", rate_per_client_rps=2.0).values
    np.testing.assert_allclose(e, [1.0, 2.0, 1.0, 1.25])
    w = t.sel(app="chat", rate_per_client_rps=2.0)
    assert str(w.best_ttft.values) == "3P/1D"            # 250 < 900 among passing
    assert str(w.best_throughput.values) == "chunked"    # 205 > 190 (continuous fails)
    assert str(w.best_efficiency.values) == "chunked"    # 2.0 tokens/J beats 1.25


def test_pipeline_table_no_passing_strategy_gives_empty_label():
    colo = _sweep("batching", ["continuous"], ["code"], [1.0], {("continuous", "code", 1.0): dict(tpot_p99_ms=200.0)})
    t = studies.pipeline_table([colo])
    assert str(t.best_ttft.values.item()) == ""


def test_pipeline_table_refuses_unknown_axis_and_baseline():
    bad = _sweep("batching", ["chunked"], ["chat"], [1.0], {}).rename(batching="device")
    with pytest.raises(ValueError, match="'batching' or 'num_prefill'"):
        studies.pipeline_table([bad])
    with pytest.raises(ValueError, match="baseline = 'continuous'"):
        studies.pipeline_table([_sweep("batching", ["chunked"], ["chat"], [1.0], {})])


@pytest.mark.parametrize("name", ["pipelines_colocated", "pipelines_disaggregated"])
def test_study3_sweeps_parse_with_five_pipelines(name):
    from mistfast.sweep import build_point, load_sweep, point_values
    sw = load_sweep(ROOT / "sweeps" / f"{name}.toml")
    assert [str(v) for v in sw.axes[0].values] == ["chat", "code", "rag", "kv_retrieval", "reasoning"]
    assert sw.n_points in (70, 105)
    for vals in point_values(sw)[::7]:
        point, reason, derived = build_point(sw, vals)
        assert point is not None, reason
        assert derived["rate_rps"] == 4 * vals[-1]


def test_devices_the_studies_name():
    """L40S and B300 entries match their datasheets (dense = sparse / 2 for NVIDIA's '*' figures)."""
    from mistfast.catalog import default_catalog
    from mistfast.specs import make_client
    cat = default_catalog()
    l40s, b300 = cat.get("devices", "L40S"), cat.get("devices", "B300")
    assert (l40s["memory_GiB"], l40s["memory_bandwidth_GBps"], l40s["tdp_W"]) == (48.0, 864.0, 350.0)
    assert l40s["tflops"]["fp8"] == 1466.0 / 2                    # datasheet 1,466* (sparse)
    assert l40s["tflops"]["bf16"] == 362.05                       # datasheet dense (733* sparse, rounded)
    assert b300["memory_GiB"] * 8 == 2304.0                       # HGX B300: 2.3 TB over 8 GPUs
    assert b300["tflops"]["fp4"] == 108_000 / 8                   # 108 PF dense FP4 per 8 GPUs
    assert b300["tflops"]["fp8"] == 72_000 / 2 / 8 and b300["tflops"]["bf16"] == 36_000 / 2 / 8
    assert "L40S" in l40s["source"] or "l40s" in l40s["source"]
    # the model sizes the studies use fit: 8B bf16 on one L40S, 70B fp8 on one B300
    assert make_client("llama-3.1-8b", "L40S").kv_capacity_tokens() > 0
    assert make_client("llama-3.1-70b", "B300", precision="fp8").kv_capacity_tokens() > 0


@pytest.mark.parametrize("name", ["output_scaling", "scaling_clients_pd", "validation_offline", "remote_kv",
                                  "validation_splitwise"])
def test_study_sweeps_build_every_point(name):
    """Each case-study sweep parses and every point builds (or is invalid only for want of ../shared)."""
    from mistfast.sweep import build_point, load_sweep, point_values
    sw = load_sweep(ROOT / "sweeps" / f"{name}.toml")
    for vals in point_values(sw):
        point, reason, derived = build_point(sw, vals)
        if point is None and "shared folder was not found" in reason:
            pytest.skip(f"{name}: ../shared is not available")
        assert point is not None, reason
        if name == "scaling_clients_pd":
            clients, share = vals
            p = max(1, min(clients - 1, round(share * clients)))
            assert derived["dp"] == clients - p                   # decode clients; prefill = clients - in_dp
        if name == "remote_kv":
            assert point.scenario.tiers[0].group_size == vals[1]


# ---- study 3 at the paper's large size (32 clients) and study 6's code-generation case -----------------
def _reduced(name, requests, drop_derived=(), **axes):
    """sweeps/NAME.toml with fewer requests and only the given axis values (a fast test size)."""
    import tomllib

    from mistfast.sweep import parse_sweep
    doc = tomllib.loads((ROOT / "sweeps" / f"{name}.toml").read_text())
    doc["scenario"]["workload"]["num_requests"] = requests
    for path in drop_derived:
        del doc["sweep"]["derived"][path]
    for ax in doc["sweep"]["axis"]:
        if ax["name"] in axes:
            ax["values"] = axes[ax["name"]]
    return parse_sweep(doc, name=name)


@pytest.mark.parametrize("name,strategies", [("pipelines_colocated_large", ["continuous", "chunked"]),
                                             ("pipelines_disaggregated_large", [12, 16, 20])])
def test_study3_large_sweeps_are_32_clients(name, strategies):
    from mistfast.sweep import build_point, load_sweep, point_values
    sw = load_sweep(ROOT / "sweeps" / f"{name}.toml")
    assert [str(v) for v in sw.axes[0].values] == ["chat", "code", "rag", "kv_retrieval", "reasoning"]
    assert list(sw.axes[1].values) == strategies and sw.n_points == 5 * len(strategies) * 4
    for vals in point_values(sw)[::5]:
        point, reason, derived = build_point(sw, vals)
        scen = point.scenario
        assert reason == ""
        assert derived["rate_rps"] == 32 * vals[-1]       # the axis is the per-client rate
        assert sum(c.dp for c in scen.clients) == 32       # 32 clients of TP 2, however split
        assert all(c.tp == 2 for c in scen.clients)


def test_study3_large_matches_small_per_client_at_low_load():
    # the same per-client rate and requests per client on 32 instead of 4 clients: at 0.5 req/s per
    # client both are far from saturation, so every request finishes and a request's time to first
    # token is one unloaded prefill in both (within 15 %); the output rate grows with the rate
    import mistfast as mf
    kw = dict(app=["chat"], batching=["chunked"], rate_per_client_rps=[0.5, 2.5])
    small = mf.run_sweep(_reduced("pipelines_colocated", 200, **kw))
    large = mf.run_sweep(_reduced("pipelines_colocated_large", 1600, **kw))
    assert (small.n_finished == 200).all() and (large.n_finished == 1600).all()
    low = {RATE: 0.5}
    assert float(large.ttft_p50_ms.sel(**low).squeeze()) == pytest.approx(float(small.ttft_p50_ms.sel(**low).squeeze()),
                                                                          rel=0.15)
    assert (large.output_tok_s.diff(RATE) > 0).all() and (small.output_tok_s.diff(RATE) > 0).all()
    # 8x the offered load gives more than 4x the output rate (the rest is the longer drain of the
    # longest of 8x as many requests, which the window includes)
    assert (large.output_tok_s / small.output_tok_s > 4.0).all()


def test_study3_large_table_names_the_papers_splits():
    import mistfast as mf
    kw = dict(app=["chat"], rate_per_client_rps=[0.5])
    colo = mf.run_sweep(_reduced("pipelines_colocated_large", 800, batching=["continuous"], **kw))
    dis = mf.run_sweep(_reduced("pipelines_disaggregated_large", 800, num_prefill=[12, 20], **kw))
    tab = studies.pipeline_table([colo, dis])
    assert [str(s) for s in tab.strategy.values] == ["continuous", "12P/20D", "20P/12D"]
    # at 0.5 req/s per client nothing is loaded: every strategy passes all six limits
    assert bool(tab.passes.all())
    assert float(tab.norm_output_tok_s.sel(strategy="continuous", app="chat", **{RATE: 0.5})) == pytest.approx(1.0)


def test_study6_codegen_reuses_its_prefixes_and_has_its_own_slo():
    import mistfast as mf
    kw = dict(prefill_sku=["H200"], decode_sku=["H200"], tp=[1, 2], num_prefill=[4])
    het = mf.run_sweep(_reduced("hetero_pd", 120, **kw))
    het = het.squeeze(["prefill_sku", "decode_sku"])
    chat, code = het.sel(app="chat", tp=1, num_prefill=4), het.sel(app="codegen", tp=1, num_prefill=4)
    assert float(chat.prefix_hit_rate) == 0.0
    assert 0.0 < float(code.prefix_hit_rate) <= 1.0
    assert float(code.in_ttft_ms) == 1500.0 and float(chat.in_ttft_ms) == 200.0
    # 4 prefill engines at TP 2 fill all 8 accelerators: no decode engine, recorded invalid
    assert int(het.status.sel(app="codegen", tp=2, num_prefill=4)) == 1
    # the same code-gen point without the prefill engines' prefix cache computes every prompt token
    # again: the cache can only lower the prompt work and the time to first token
    sw = _reduced("hetero_pd", 120, drop_derived=["clients[0].scheduler.prefix_caching"], app=["codegen"],
                  prefill_sku=["H200"], decode_sku=["H200"], tp=[1], num_prefill=[4])
    nocache = mf.run_sweep(sw).squeeze()
    assert float(nocache.prefix_hit_rate) == 0.0
    assert float(code.computed_prompt_tok_s) * float(code.window_s) < \
        float(nocache.computed_prompt_tok_s) * float(nocache.window_s)
    assert float(code.ttft_p99_ms) < float(nocache.ttft_p99_ms)
