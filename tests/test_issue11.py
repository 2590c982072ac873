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


# ---- item 8: a device never slower than a strictly weaker one ------------------------------------
def _catalog_accelerators():
    from mistfast.catalog import default_catalog
    cat = default_catalog()
    return [n for n in cat.names("devices")
            if cat.get("devices", n).get("kind") != "cpu" and not n.endswith("-genz")]


PERF_DTYPES = ("fp32", "tf32", "bf16", "fp16", "fp8", "int8", "fp4")


def _perf_numbers(dev):
    """Every number that can only make a device faster when larger (link latency: when smaller)."""
    nums = [dev.peak_flops(d) for d in PERF_DTYPES]
    nums += [dev.memory_bandwidth_GBps, dev.scaleup_bidir_GBps, -dev.scaleup_latency_us, dev.scaleup_domain]
    return np.array(nums, dtype=float)


def test_no_device_slower_than_a_strictly_weaker_one():
    from mistfast import make_client, step_latency
    names = sorted(_catalog_accelerators())
    batches = {"prefill": dict(prefill=[(0, 2048)]), "decode": dict(decode=[(1, 1024)] * 32)}
    times, nums = {}, {}
    for name in names:
        dev = {"preset": name, "memory_GiB": 4000.0}   # capacity is irrelevant to step latency
        for tp in (1, 2, 4, 8):
            c = make_client("llama-3.1-70b", dev, tp=tp)
            nums[name] = _perf_numbers(c.device)
            for b, kw in batches.items():
                times[name, tp, b] = step_latency(c, **kw).total_s
    bad = []
    for weak in names:
        for strong in names:
            w, s = nums[weak], nums[strong]
            if weak == strong or not (np.all(w <= s) and np.any(w < s)):
                continue
            for tp in (1, 2, 4, 8):
                for b in batches:
                    if times[strong, tp, b] > times[weak, tp, b] * (1 + 1e-12):
                        bad.append(f"{strong} slower than the weaker {weak} at TP {tp} ({b}): "
                                   f"{times[strong, tp, b] * 1e3:.3f} > {times[weak, tp, b] * 1e3:.3f} ms")
    assert not bad, "\n".join(bad)


def test_gb200_tp8_uses_its_nvlink_domain():
    from mistfast import make_client, step_latency
    t = {d: step_latency(make_client("llama-3.1-70b", d, tp=8), prefill=[(0, 2048)]).total_ms
         for d in ("B200", "GB200")}
    assert t["GB200"] < t["B200"]  # same NVLink5, faster chip


# ---- item 11: idle power is a catalog field -----------------------------------------------------------
def test_idle_power_from_catalog_by_hand():
    # one 1,000-token request at t = 0 on an H200, horizon far away: the device is busy for the
    # prefill and decode steps, idle for nothing. Two requests 100 s apart: idle in between, at
    # the catalog's measured idle_W (80.3 W), not 0.3 x 700 W
    from mistfast.specs import make_client
    dev = make_client("llama-3.1-8b", "H200").device
    assert dev.idle_W == 80.3 and dev.idle_power_W == 80.3
    assert make_client("llama-3.1-8b", "Grace").device.idle_power_W == pytest.approx(0.3 * make_client("llama-3.1-8b", "Grace").device.tdp_W)
    doc = {"clients": [{**LLM, "device": "H200"}],
           "workload": {"num_requests": 2, "arrival": {"process": "uniform", "rate_rps": 0.01},
                        "input": {"dist": "fixed", "value": 1000}, "output": {"dist": "fixed", "value": 2}}}
    ds = mf.simulate(doc, log_steps=100)
    busy = float(ds.step_duration_s.sum())
    end = float(ds.step_start_s[-1] + ds.step_duration_s[-1])
    low = mf.simulate({**doc, "clients": [{**LLM, "device": {"preset": "H200", "idle_W": 0.0}}]})
    # the energies differ by exactly the idle time at 80.3 W
    assert float(ds.energy_J) - float(low.energy_J) == pytest.approx(80.3 * (end - busy), rel=1e-9)
    assert end - busy > 90.0



DEVICES_TOML = __import__("pathlib").Path(__file__).resolve().parents[1] / "data" / "devices.toml"


def test_catalog_idle_power_is_sourced_and_below_tdp():
    # every catalog idle_W lies strictly between 0 and the device's TDP and carries a source
    # comment on its own line; the *-genz presets keep the reference's 0.3 x TDP (no idle_W)
    import tomllib
    text = DEVICES_TOML.read_text()
    devices = tomllib.loads(text)
    sourced = {name: d for name, d in devices.items() if "idle_W" in d}
    for name, d in sourced.items():
        assert 0.0 < d["idle_W"] < d.get("tdp_W", 0.0), (name, d["idle_W"], d.get("tdp_W"))
        assert not name.endswith("-genz"), name
    idle_lines = [line for line in text.splitlines() if line.startswith("idle_W")]
    assert len(idle_lines) == len(sourced)
    for line in idle_lines:
        comment = line.partition("#")[2]
        assert ("github.com" in comment or "api.serialalice.pt" in comment), line
    # the devices sourced in issue 11 item 11 (a regression guard against losing them in a merge)
    assert {"H100", "H200", "B200", "GB200", "MI300X", "MI325X", "MI350X", "MI355X"} <= set(sourced)
    assert {"GH200", "L40S", "Gaudi2", "Gaudi3", "B300", "GB300"} <= set(sourced)   # issue 11 follow-up (docs/idle-power.md)


def test_idle_energy_mi355x_by_hand():
    # MI355X, TP 2: two 1,000-token requests 100 s apart. Between them both devices idle at the
    # catalog's 238 W (ROCm issue 5219), so idle energy = devices x idle_W x idle time:
    # 2 x 238 W x (end - busy). Setting idle_W = 0 removes exactly that.
    from mistfast.specs import make_client
    dev = make_client("llama-3.1-8b", "MI355X").device
    assert dev.idle_W == 238.0 and dev.idle_power_W == 238.0
    assert dev.idle_power_W != pytest.approx(0.3 * dev.tdp_W)  # not the 420 W fallback
    client = {**LLM, "device": "MI355X", "tp": 2}
    doc = {"clients": [client],
           "workload": {"num_requests": 2, "arrival": {"process": "uniform", "rate_rps": 0.01},
                        "input": {"dist": "fixed", "value": 1000}, "output": {"dist": "fixed", "value": 2}}}
    ds = mf.simulate(doc, log_steps=100)
    busy = float(ds.step_duration_s.sum())
    end = float(ds.step_start_s[-1] + ds.step_duration_s[-1])
    zero = mf.simulate({**doc, "clients": [{**client, "device": {"preset": "MI355X", "idle_W": 0.0}}]})
    idle_s = end - busy
    assert idle_s > 90.0
    assert float(ds.energy_J) - float(zero.energy_J) == pytest.approx(2 * 238.0 * idle_s, rel=1e-9)


# ---- item 9: every rate and fraction of every shipped sweep lies in [0, 1] -----------------------------
SWEEPS = sorted((__import__("pathlib").Path(__file__).resolve().parents[1] / "sweeps").glob("*.toml"))
FRACTION_WORDS = ("fraction", "util", "_rate", "attainment", "mfu", "mbu")


def fraction_variables(ds):
    from mistfast.variables import REGISTRY
    return [k for k in ds.data_vars if k in REGISTRY and REGISTRY[k].units == "1"
            and any(w in k for w in FRACTION_WORDS)]


@pytest.mark.parametrize("path", SWEEPS, ids=[p.stem for p in SWEEPS])
def test_rates_and_fractions_in_unit_interval(path):
    from mistfast.sweep import SweepSpec, load_sweep, run_sweep
    spec = load_sweep(path)
    base = {**spec.base, "workload": {**spec.base.get("workload", {}), "num_requests": 40}}
    tr = base["workload"].get("trace")
    if tr and tr.get("sample") and tr["sample"] > 40:
        base["workload"]["trace"] = {**tr, "sample": 40}
    ds = run_sweep(SweepSpec(**{**spec.__dict__, "base": base}))
    names = fraction_variables(ds)
    assert "prefix_hit_rate" in names and "busy_fraction" in names
    bad = []
    for k in names:
        v = ds[k].values.astype(float)
        v = v[~np.isnan(v)]
        if v.size and (v.min() < 0 or v.max() > 1 + 1e-12):
            bad.append(f"{k}: [{v.min():.4g}, {v.max():.4g}]")
    assert not bad, f"{path.name}: " + "; ".join(bad)


# ---- item 10: computed prompt tokens per client ----------------------------------------------------------
def test_computed_prompt_tokens_per_client():
    doc = {"clients": [LLM, {"name": "embed", "model": "e5-base", "device": "A100",
                             "scheduler": {"batching": "continuous", "max_batched_tokens": 8192}}],
           "servers": [{"name": "ret", "kind": "retrieval", "device": "Grace"}],
           "links": [{"between": ["ret", "llm"], "link": "PCIe4-x4"}],
           "workload": fixed(5, 300, 4),
           "pipelines": [{"stages": [{"kind": "embed", "pool": "embed"},
                                     {"kind": "retrieve", "pool": "ret", "docs": 20, "doc_tokens": 512},
                                     {"kind": "llm", "pool": "llm"}]}]}
    ds = mf.simulate(doc)
    win = float(ds.window_s)
    per_client = dict(zip(ds.client.values.tolist(), ds.client_computed_prompt_tok_s.values * win))
    # the embedder encodes the 300-token queries; the LLM prefills query + 20 x 512 retrieved tokens
    assert per_client["embed"] == pytest.approx(5 * 300, rel=1e-9)
    assert per_client["llm"] == pytest.approx(5 * (300 + 20 * 512), rel=1e-9)
    assert per_client["ret"] == 0
    # the scalar sums both clients (the split is the per-client variable)
    assert float(ds.computed_prompt_tok_s) * win == pytest.approx(5 * (300 + 300 + 20 * 512), rel=1e-9)


# ---- item 12: a trace runs whole; every request left out is counted with its reason --------------
def _azure_trace(path, n, gap_s):
    import pandas as pd
    t0 = pd.Timestamp("2023-11-16 18:00:00")
    ts = [(t0 + pd.Timedelta(seconds=gap_s * i)).strftime("%Y-%m-%d %H:%M:%S.%f") for i in range(n)]
    pd.DataFrame({"TIMESTAMP": ts, "ContextTokens": 100 + (np.arange(n) % 50),
                  "GeneratedTokens": 5 + (np.arange(n) % 7)}).to_csv(path, index=False)
    return str(path)


def test_trace_of_10000_runs_whole_by_default(tmp_path, recwarn):
    # 10,000 requests over 5,000 s: past the synthetic default horizon (3,600 s) and the default
    # num_requests (1,000); with default settings every one is simulated
    path = _azure_trace(tmp_path / "t.csv", 10_000, 0.5)
    ds = mf.simulate({"clients": [LLM], "workload": {"trace": {"path": path, "format": "azure"}}})
    assert int(ds.n_arrived) == 10_000 and int(ds.n_finished) == 10_000
    assert int(ds.n_not_arrived) == 0 and int(ds.n_left_out.sum()) == 0
    assert not [w for w in recwarn if "not simulated" in str(w.message)]


def test_trace_requests_left_out_are_counted_with_reasons(tmp_path):
    path = _azure_trace(tmp_path / "t.csv", 2_000, 1.0)   # arrivals 0 .. 1,999 s
    doc = {"clients": [LLM], "simulation": {"horizon_s": 1000.0},
           "workload": {"num_requests": 1500,
                        "trace": {"path": path, "format": "azure", "start_s": 100.0, "sample": 0.9}}}
    with pytest.warns(UserWarning, match="not simulated") as rec:
        ds = mf.simulate(doc)
    left = dict(zip(ds.left_out_reason.values.tolist(), ds.n_left_out.values.tolist()))
    # window [100, inf): 100 out; sample 0.9 of 1,900 = 1,710 kept (190 out); the first 1,500 kept
    # (210 out); window arrivals are shifted by start_s, so those at >= 1,100 s (trace time)
    # arrive after the 1,000 s horizon
    assert left == {"outside_trace_window": 100, "trace_sample": 190, "num_requests": 210}
    assert int(ds.n_arrived) + int(ds.n_not_arrived) == 1500
    assert int(ds.n_not_arrived) > 0
    msg = str(rec[0].message)
    for k in ("100 outside", "190 not drawn", "210 beyond workload.num_requests = 1500",
              f"{int(ds.n_not_arrived)} arriving after simulation.horizon_s = 1000 s"):
        assert k in msg


def test_trace_arrivals_kept_unless_shift_requested(tmp_path):
    import pandas as pd
    p = tmp_path / "m.csv"
    pd.DataFrame({"num_prefill_tokens": [100, 120], "num_decode_tokens": [3, 4],
                  "arrived_at": [5.0, 6.0]}).to_csv(p, index=False)
    base = {"clients": [LLM]}
    kept = mf.simulate({**base, "workload": {"trace": {"path": str(p), "format": "lengths"}}}, per_request=True)
    assert list(kept.req_arrival_s.values) == [5.0, 6.0]
    shifted = mf.simulate({**base, "workload": {"trace": {"path": str(p), "format": "lengths",
                                                          "shift_arrivals": True}}}, per_request=True)
    assert list(shifted.req_arrival_s.values) == [0.0, 1.0]


# ---- item 5: MIST's routing for disaggregated pools ---------------------------------------------------
def _pd_mist(n, prompt=1000, output=4, arrival=None):
    from mistfast.scenario import build_requests, point_seed
    from mistfast.pipeline import run_pipeline
    wl = fixed(n, prompt, output)
    if arrival is not None:
        wl["arrival"] = arrival
    spec = parse_scenario({
        "clients": [{**LLM, "name": f"{k}{i}"} for k in "PD" for i in range(2)],
        "links": [{"between": ["P0", "D0"], "link": "RDMA-400G"}],
        "workload": wl, "simulation": {"seed": 1},
        "pipelines": [{"stages": [{"kind": "prefill", "pool": ["P0", "P1"], "routing": "mist_jsq"},
                                  {"kind": "decode", "pool": ["D0", "D1"], "routing": "mist_jsq"}]}]})
    ss = point_seed(1)
    r = run_pipeline(spec, build_requests(spec.workload, spec.simulation.horizon_s, ss), ss)
    names = r["inputs"]["topo"].names
    off = r["inputs"]["st_off"]
    return [(names[r["stages"]["client"][off[q]]], names[r["stages"]["client"][off[q] + 1]]) for q in range(n)], r


def test_mist_jsq_by_hand():
    # three requests at t = 0. Request 0: every load is 0 -> round robin: P0, and (chosen at the
    # same moment) D0. Request 1: P0 holds request 0's 1,000 queued tokens, P1 none -> P1; the
    # decode clients have nothing yet (request 0's KV has not arrived) -> round robin: D1.
    # Request 2: both prefill clients hold 1,000 -> round robin, whose list was rotated once: P1;
    # decode clients still equal -> rotated twice: D0
    got, r = _pd_mist(3)
    assert got == [("P0", "D0"), ("P1", "D1"), ("P1", "D0")]
    assert all(r["requests"]["status"] == 3)


def test_mist_jsq_spaced_arrivals_alternate():
    # requests far apart find every client idle (load 0): plain round robin on both pools
    got, _ = _pd_mist(4, arrival={"process": "uniform", "rate_rps": 0.1})
    assert got == [("P0", "D0"), ("P1", "D1"), ("P0", "D0"), ("P1", "D1")]


def test_mist_metrics_disaggregated_by_hand():
    # one request, P/D: P prefills (token 1), D decodes tokens 2..4 in three steps. MIST TPOT = mean
    # duration of those decode steps; throughput over [0, start of D's last step]
    doc = {"clients": [{**LLM, "name": "P"}, {**LLM, "name": "D"}],
           "links": [{"between": ["P", "D"], "link": "RDMA-400G"}],
           "workload": fixed(1, 1000, 4), "simulation": {"metrics": "mist"},
           "pipelines": [{"stages": [{"kind": "prefill", "pool": "P"}, {"kind": "decode", "pool": "D"}]}]}
    ds = mf.simulate(doc, log_steps=100)
    d = ds.step_client.values == "D"
    dur, start = ds.step_duration_s.values[d], ds.step_start_s.values[d]
    assert len(dur) == 3
    assert float(ds.tpot_mean_ms) == pytest.approx(dur.mean() * 1e3, rel=1e-12)
    assert float(ds.request_throughput_rps) == pytest.approx(1 / start[-1], rel=1e-12)


def test_genz_kv_transfer_moves_one_byte_per_element():
    # MODEL.md §2.4 compat: KV bytes in transfers are 1 B per element (Llama-3.1-8B: 2 x 32 x 8 x 128
    # = 65,536 elements per token), not b_kv = 2 B
    from mistfast.scenario import build_requests, point_seed
    from mistfast.pipeline import run_pipeline
    def transfer_s(reference):
        genz = {"device": "H100-genz", "reference": reference}
        spec = parse_scenario({
            "clients": [{**LLM, **genz, "name": "P"}, {**LLM, **genz, "name": "D"}],
            "links": [{"between": ["P", "D"], "link": {"preset": "RDMA-400G", "bandwidth_GBps": 10.0,
                                                      "efficiency": 1.0, "latency_us": 0.0}}],
            "workload": fixed(1, 3000, 4),
            "pipelines": [{"stages": [{"kind": "prefill", "pool": "P"}, {"kind": "decode", "pool": "D"}]}]})
        ss = point_seed(0)
        r = run_pipeline(spec, build_requests(spec.workload, spec.simulation.horizon_s, ss), ss)
        st, off = r["stages"], r["inputs"]["st_off"]
        return st["arrive"][off[0] + 1] - st["exit"][off[0]]
    assert transfer_s("genz") == pytest.approx(3000 * 65536 / 10e9, rel=1e-9)
    assert transfer_s("correct") == pytest.approx(3000 * 131072 / 10e9, rel=1e-9)


# ---- MIST step-time memo (GenZ compat option) against the engine twin ---------------------------------
def _memo_step_fn(prm):
    """The twin's step function with MIST's memo written from its definition: decode-only batches
    keyed by (decodes, sum of prompt + branches x generated), others by (chunk tokens + branches,
    sum of chunk pasts + decode KV lengths); the first time a key is seen its step time is kept."""
    from mistfast.kernels import steptime as ST
    memo = {}

    def step_fn(pf, dec, n_done):
        pf2 = np.asarray(pf, float).reshape(-1, 2)
        dec2 = np.asarray(dec, float).reshape(-1, 3)
        out = np.zeros(ST.N_OUT)
        dt = ST.step_time(prm, pf2[:, 0].copy(), pf2[:, 1].copy(), len(pf2), float(n_done),
                          dec2[:, 0].copy(), dec2[:, 1].copy(), dec2[:, 2].copy(), len(dec2), out)
        kv = sum(int(s) + int(w) * (int(k) + 1) for w, s, k in dec2)
        if len(pf2) == 0:
            key = (0, len(dec2), kv)
        else:
            key = (1, int(pf2[:, 1].sum()) + int(dec2[:, 0].sum()), kv + int(pf2[:, 0].sum()))
        return memo.setdefault(key, dt)
    return step_fn


@pytest.mark.parametrize("batching,seed", [(3, 1), (3, 2), (1, 3), (2, 4)])
def test_mist_memo_kernel_matches_twin(monkeypatch, batching, seed):
    import tests.test_engine as TE
    from mistfast import stepmodel
    from mistfast.kernels import cluster as CL
    from mistfast.kernels import steptime as ST
    from mistfast.specs import make_client
    from tests.reference.engine_reference import reference_simulate
    prm = stepmodel.client_params(make_client("llama-3.1-8b", "H100-genz", reference="genz", mist_memo=True))
    assert prm[ST.P_MIST_MEMO] == 1.0
    monkeypatch.setattr(TE, "PRM", prm)
    req, sch = TE.make_case(np.random.default_rng(seed), batching, 80, preemption=0, total_blocks=100000)
    # fixed lengths make equal keys (and so reused step times) common
    req["prompt"][:] = np.where(np.arange(80) % 2, 600, 900)
    req["output"][:] = 30
    got, cs, log = TE.run_kernel(req, sch)
    want = reference_simulate(req, sch, _memo_step_fn(prm))
    assert len(log) == want["n_steps"]
    np.testing.assert_array_equal(log[:, 1], [s_["dt"] for s_ in want["steps"]])
    for k_got, k_want in TE.PER_REQUEST:
        np.testing.assert_array_equal(np.asarray(got[k_got], float), np.asarray(want[k_want], float), err_msg=k_got)
    # the MIST-metric statistics, from the twin's steps
    assert cs[CL.CS_DEC_SEQS] == sum(len(s_["decode"]) for s_ in want["steps"])
    assert cs[CL.CS_DEC_SEQ_S] == pytest.approx(sum(len(s_["decode"]) * s_["dt"] for s_ in want["steps"]), rel=1e-12)


def test_mist_memo_reuses_by_token_count_and_total_kv():
    from mistfast.kernels import cluster as CL
    key = np.full((1 << 4, 4), -1, np.int64)
    val = np.zeros(1 << 4)
    f = lambda g, past, new, dec, dt: CL._mist_memo(  # noqa: E731
        float(g), len(past), np.array(past, float), np.array(new, float), len(dec),
        np.array([d[0] for d in dec], float), np.array([d[1] for d in dec], float),
        np.array([d[2] for d in dec], float), dt, key, val)
    # mixed: chunk (100, 400) + decode (1, 0, 99): tokens 401, KV 100 + 100 = 200
    assert f(1, [100], [400], [(1, 0, 99)], 1.0) == 1.0
    # another batch with the same tokens (400 + 1) and total KV (150 + 50): the stored time
    assert f(1, [150], [400], [(1, 0, 49)], 2.0) == 1.0
    # decode-only with 1 decode at KV 200 is another kind; another memo group is another table
    assert f(1, [], [], [(1, 0, 199)], 3.0) == 3.0
    assert f(2, [150], [400], [(1, 0, 49)], 4.0) == 4.0
    # decode-only: (2 decodes, KV 300) either way
    assert f(1, [], [], [(1, 0, 99), (1, 0, 199)], 5.0) == 5.0
    assert f(1, [], [], [(1, 0, 149), (1, 0, 149)], 6.0) == 5.0
