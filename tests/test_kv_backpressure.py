"""KV backpressure of a decode pool on its prefill pool (issue 12, ENGINE_SEMANTICS.md): hand-checked
timelines, the plain-Python P/D twin (tests/reference/pd_reference.py) against the kernel, and the
feature off = results unchanged."""
import numpy as np
import pytest

from mistfast.kernels import cluster as CL
from mistfast.kernels import engine as E
from mistfast.kernels import steptime as ST
from mistfast.lowering import lower_pipeline as build_cluster_inputs
from mistfast.scenario import build_requests, point_seed
from mistfast.specs import SpecError, parse_scenario
from tests.reference.pd_reference import reference_pd

LLM = {"name": "llm", "model": "llama-3.1-8b", "device": "H100"}
KVB = 131072          # Llama-3.1-8B bf16 KV bytes per token
BW = 50e9             # link bytes/s (efficiency 1)
LAT = 20e-6           # link latency, s
CONT = {"batching": "continuous", "max_batched_tokens": 8192, "max_batch_size": 8}


def spec(bp, n, prompt, output, rate=None, d_sched=None):
    arr = {"process": "offline"} if rate is None else {"process": "poisson", "rate_rps": rate}
    wl = {"num_requests": n, "arrival": arr, "input": prompt, "output": output}
    return parse_scenario({
        "clients": [{**LLM, "name": "P", "scheduler": CONT}, {**LLM, "name": "D", "scheduler": d_sched or CONT}],
        "links": [{"between": ["P", "D"], "link": {"preset": "RDMA-400G", "bandwidth_GBps": BW / 1e9,
                                                    "efficiency": 1.0, "latency_us": LAT * 1e6}}],
        "workload": wl, "simulation": {"seed": 5},
        "pipelines": [{"stages": [{"kind": "prefill", "pool": "P"},
                                  {"kind": "decode", "pool": "D", "kv_backpressure": bp}]}]})


def inputs(sc, blocks=None, watermark=None):
    """Kernel inputs of a scenario, with the KV blocks (P, D) and watermarks set by hand."""
    ss = point_seed(sc.simulation.seed)
    reqs = build_requests(sc.workload, sc.simulation.horizon_s, ss)
    ins = build_cluster_inputs(sc, reqs, ss)
    for c, v in enumerate(blocks or ()):
        ins["cli_sch"][c, E.S_TOTAL_BLOCKS] = v
    for c, v in enumerate(watermark or ()):
        ins["cli_sch"][c, E.S_WATERMARK] = v
    ins["prompt"] = reqs.input_tokens.astype(np.int64)
    ins["output"] = reqs.output_tokens.astype(np.int64)
    return ins


def run_kernel(ins, decode_runs=True):
    """One point through the cluster kernel: per-request outputs, stage exits, client statistics, end."""
    r, st, cs, _, end = run_cluster(ins, decode_runs)
    return r, st, cs, end


def run_cluster(ins, decode_runs=True):
    """One point through the cluster kernel: per-request outputs, stage times, client statistics,
    bytes per resource and the end time."""
    n = ins["arrival_in"].size
    S = ins["st_kind"].size
    C = ins["cli_kind"].size
    ins["g"][CL.G_DECODE_RUNS] = 1.0 if decode_runs else 0.0
    f = lambda k=n: np.empty(k)  # noqa: E731
    r = dict(status=np.empty(n, np.int8), reason=np.empty(n, np.int8), arrival=f(), t_first_sched=f(),
             t_first_tok=f(), t_last_tok=f(), t_finish=f(), generated=np.empty(n, np.int64),
             preempts=np.empty(n, np.int32), hit_first=np.empty(n, np.int64), computed_pf=np.empty(n, np.int64))
    st = dict(client=np.empty(S, np.int64), ready=f(S), arrive=f(S), sched=f(S), exit=f(S))
    cs = np.zeros((C, CL.N_CS))
    res_bytes = np.zeros(len(ins["res_cap"]))
    rs = np.zeros(4)
    CL.simulate_cluster(
        ins["cli_kind"], ins["cli_prm"], ins["cli_sch"], ins["cli_srv"], ins["pool_off"], ins["pool_cli"],
        ins["pool_policy"], ins["pool_thresh"], ins["res_cap"], ins["route_lat"], ins["route_res"],
        ins["route_nres"], ins["g"], ins["arrival_in"], ins["branches"], ins["hash_off"], ins["hash_ids"],
        ins["n_hash"], ins["st_off"], ins["st_kind"], ins["st_pool"], ins["st_prompt"], ins["st_output"],
        ins["st_bytes"], ins["st_tier"], ins["st_flags"], r["status"], r["reason"], r["arrival"], r["t_first_sched"],
        r["t_first_tok"], r["t_last_tok"], r["t_finish"], r["generated"], r["preempts"], r["hit_first"],
        r["computed_pf"], st["client"], st["ready"], st["arrive"], st["sched"], st["exit"], cs, res_bytes, rs,
        np.zeros((1, CL.LOG_COLS)), ins["tcap"], ins["chain_off"], ins["chain_tier"])
    return r, st, cs, res_bytes, rs[0]


def stage(ins, st, req, j, col):
    return st[col][ins["st_off"][req] + j]


def twin(ins, bp, overflow_tokens=None, decode_overflow=False, layerwise=False):
    def step_fn(c):
        prm = ins["cli_prm"][c]

        def fn(pf, dec, n_done):
            pf = np.asarray(pf, float).reshape(-1, 2)
            dec = np.asarray(dec, float).reshape(-1, 3)
            out = np.zeros(ST.N_OUT)
            return ST.step_time(prm, pf[:, 0].copy(), pf[:, 1].copy(), len(pf), float(n_done), dec[:, 0].copy(),
                                dec[:, 1].copy(), dec[:, 2].copy(), len(dec), out)
        return fn

    def sched(c):
        s = ins["cli_sch"][c]
        return dict(max_batched_tokens=s[E.S_MAX_TOKENS], max_batch_size=s[E.S_MAX_SEQS], block_size=s[E.S_BLOCK],
                    total_blocks=s[E.S_TOTAL_BLOCKS], watermark_blocks=s[E.S_WATERMARK],
                    max_model_len=s[E.S_MAX_MODEL_LEN])

    req = dict(arrival_s=ins["arrival_in"], prompt=ins["prompt"], output=ins["output"])
    mixed = {}
    if ins["cli_kind"].size == 3:
        mixed = dict(m_sched=sched(2), m_step_fn=step_fn(2), overflow_tokens=overflow_tokens,
                     decode_overflow=decode_overflow)
    prm = ins["cli_prm"][0]
    bw = float(ins["res_cap"][0]) if layerwise else BW   # (one link in the layer-wise cases)
    return reference_pd(req, sched(0), sched(1), step_fn(0), step_fn(1),
                        dict(latency_s=LAT, bandwidth_Bps=bw), KVB, bp, **mixed, layerwise=layerwise,
                        n_layers=prm[ST.P_N_DENSE] + prm[ST.P_N_MOE])


def assert_agree(ins, ref, n):
    for runs in (True, False):
        r, st, cs, end = run_kernel(ins, decode_runs=runs)
        np.testing.assert_array_equal(r["status"], ref["status"])
        np.testing.assert_array_equal(r["reason"], ref["reason"])
        np.testing.assert_array_equal(r["generated"], ref["generated"])
        for k, kk in (("t_first_tok", "t_first_token"), ("t_last_tok", "t_last_token"), ("t_finish", "t_finish")):
            np.testing.assert_array_equal(r[k], np.array(ref[kk]), err_msg=k)
        dec_arrive = st["arrive"][ins["st_off"][:-1] + 1]
        np.testing.assert_array_equal(dec_arrive, np.array(ref["t_decode_arrive"]))
        names = ins["topo"].names
        for j, key in ((0, "prefill_client"), (1, "decode_client")):
            got = [names[c] if c >= 0 else None for c in st["client"][ins["st_off"][:-1] + j]]
            assert got == ref[key], key
        assert list(cs[:, CL.CS_STEPS]) == ref["steps"]
        assert list(cs[:, CL.CS_BUSY]) == ref["busy_s"]
        assert list(cs[:, CL.CS_KV_BLOCKED_S]) == ref["kv_blocked_s"]
        assert end == ref["end_s"]


# ---- hand-checked timelines -------------------------------------------------------------------------
def test_decode_room_gates_the_transfer_and_the_prefill_client_holds_the_kv():
    # D has room for one request (188 blocks for 3,000 + 1 tokens; 200 in total, no watermark);
    # P has room for two. Three requests at t = 0, 16 output tokens each.
    need = -(-3001 // 16)
    ins = inputs(spec(True, 3, 3000, 16), blocks=(2 * need + 1, need + 12), watermark=(0, 0))
    r, st, cs, _ = run_kernel(ins)
    assert list(r["status"]) == [3, 3, 3] and list(r["generated"]) == [16, 16, 16]
    xfer = LAT + 3000 * KVB / BW
    pend = [stage(ins, st, i, 0, "exit") for i in range(3)]
    darr = [stage(ins, st, i, 1, "arrive") for i in range(3)]
    # request 0: D is empty, the transfer starts at its prefill end
    assert darr[0] == pytest.approx(pend[0] + xfer, rel=1e-12)
    # requests 1, 2: D reserves only when the previous request finished decoding (freed its blocks)
    for i in (1, 2):
        assert darr[i] == pytest.approx(max(pend[i], r["t_finish"][i - 1]) + xfer, rel=1e-12)
        assert r["t_finish"][i - 1] > pend[i]   # really blocked
    # P holds two requests' KV: request 2's prefill is admitted only once request 0's KV left P
    assert stage(ins, st, 2, 0, "sched") == darr[0]
    # blocked time, counted on the prefill client: from prefill end to reservation
    blocked = sum(max(r["t_finish"][i - 1] - pend[i], 0.0) for i in (1, 2))
    assert cs[0, CL.CS_KV_BLOCKED_S] == pytest.approx(blocked, rel=1e-12)
    assert cs[1, CL.CS_KV_BLOCKED_S] == 0.0


def test_without_backpressure_the_kv_moves_at_once_and_waits_on_the_decode_side():
    need = -(-3001 // 16)
    ins = inputs(spec(False, 3, 3000, 16), blocks=(2 * need + 1, need + 12), watermark=(0, 0))
    r, st, cs, _ = run_kernel(ins)
    # requests 0 and 1 are prefilled in one step (6,000 <= 8,192 tokens; P holds two): both transfers
    # start at its end and share the link equally, each taking twice the time of one alone
    assert stage(ins, st, 0, 0, "exit") == stage(ins, st, 1, 0, "exit")
    for i in (0, 1):
        assert stage(ins, st, i, 1, "arrive") == pytest.approx(stage(ins, st, i, 0, "exit") + LAT + 2 * 3000 * KVB / BW,
                                                               rel=1e-12)
    assert stage(ins, st, 1, 1, "arrive") < r["t_finish"][0]      # arrived before D had room
    assert stage(ins, st, 1, 1, "sched") >= r["t_finish"][0]      # admitted once request 0 left
    assert cs[0, CL.CS_KV_BLOCKED_S] == 0.0


def test_a_request_that_can_never_fit_the_decode_client_is_rejected_at_prefill_end():
    # D's 150 blocks hold neither the prompt nor prompt + output: kv_exceeds_capacity, held KV freed
    ins = inputs(spec(True, 2, 3000, 16), blocks=(400, 150), watermark=(0, 0))
    r, st, cs, _ = run_kernel(ins)
    assert list(r["status"]) == [4, 4] and list(r["reason"]) == [3, 3]
    assert r["t_finish"][0] == stage(ins, st, 0, 0, "exit")
    # with the watermark the reservation itself can never fit: rejected when D holds nothing
    ins = inputs(spec(True, 2, 3000, 16), blocks=(400, 200), watermark=(0, 20))
    r, st, cs, _ = run_kernel(ins)
    assert list(r["status"]) == [4, 4] and list(r["reason"]) == [3, 3]


def test_kv_backpressure_is_a_decode_stage_field():
    with pytest.raises((SpecError, ValueError), match=r"kv_backpressure.*decode stage only"):
        parse_scenario({"clients": [{**LLM, "name": "P"}, {**LLM, "name": "D"}],
                        "pipelines": [{"stages": [{"kind": "prefill", "pool": "P", "kv_backpressure": True},
                                                  {"kind": "decode", "pool": "D"}]}]})


# ---- the twin ----------------------------------------------------------------------------------------------
CASES = [  # (backpressure, n, prompt dist, output dist, rate, (P blocks, D blocks), (P wm, D wm))
    (True, 30, {"dist": "uniform", "low": 200, "high": 2500}, {"dist": "uniform", "low": 1, "high": 40}, 40.0,
     (600, 500), (0, 40)),
    (False, 30, {"dist": "uniform", "low": 200, "high": 2500}, {"dist": "uniform", "low": 1, "high": 40}, 40.0,
     (600, 500), (0, 40)),
    (True, 40, {"dist": "uniform", "low": 50, "high": 900}, {"dist": "uniform", "low": 2, "high": 64}, 200.0,
     (200, 260), (2, 40)),
    (True, 25, {"dist": "fixed", "value": 1500}, {"dist": "fixed", "value": 20}, 100.0, (400, 300), (0, 10)),
    # long prompts that never fit D (P + O > 2,400 tokens): rejected at prefill end / at arrival on D
    (True, 30, {"dist": "uniform", "low": 200, "high": 2600}, {"dist": "uniform", "low": 1, "high": 40}, 40.0,
     (600, 150), (0, 4)),
    (False, 30, {"dist": "uniform", "low": 200, "high": 2600}, {"dist": "uniform", "low": 1, "high": 40}, 40.0,
     (600, 150), (0, 4)),
]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_kernel_agrees_with_the_pd_twin(case):
    bp, n, pr, out, rate, blocks, wm = CASES[case]
    ins = inputs(spec(bp, n, pr, out, rate=rate), blocks=blocks, watermark=wm)
    ref = twin(ins, bp)
    assert_agree(ins, ref, n)
    if bp and case == 0:
        assert ref["kv_blocked_s"][0] > 0   # the case exercises the feature
    if case >= 4:
        assert 0 < sum(s == 4 for s in ref["status"]) < n   # and rejections on the decode side


def test_blocked_time_reaches_the_dataset():
    from mistfast.results import pipeline_dataset
    from mistfast.runner import run_pipeline
    # a decode client with little KV memory (5 % of what is left after the weights) behind a fast prefill
    d_sched = {**CONT, "kv_memory_fraction": 0.05}
    out = []
    for bp in (False, True):
        sc = spec(bp, 40, 3000, 200, rate=50.0, d_sched=d_sched)
        ss = point_seed(sc.simulation.seed)
        run = run_pipeline(sc, build_requests(sc.workload, sc.simulation.horizon_s, ss), ss)
        out.append(pipeline_dataset(sc, run, per_request=False))
    off, on = out
    assert float(off["client_kv_blocked_s"].sum()) == 0.0
    blocked = on["client_kv_blocked_s"]
    assert float(blocked.sel(client="P")) > 0 and float(blocked.sel(client="D")) == 0
    assert blocked.attrs["units"] == "s"


# ---- Splitwise overflow pool ----------------------------------------------------------------------------
def splitwise(n, prompt, output, overflow_tokens=2000, d_overflow=True, bp=False, rate=None):
    arr = {"process": "offline"} if rate is None else {"process": "poisson", "rate_rps": rate}
    wl = {"num_requests": n, "arrival": arr, "input": prompt, "output": output}
    link = {"preset": "RDMA-400G", "bandwidth_GBps": BW / 1e9, "efficiency": 1.0, "latency_us": LAT * 1e6}
    dec = {"kind": "decode", "pool": "D", "routing": "least_kv", "kv_backpressure": bp}
    if d_overflow:
        dec["overflow_pool"] = "M"
    return parse_scenario({
        "clients": [{**LLM, "name": "P", "scheduler": CONT}, {**LLM, "name": "D", "scheduler": CONT},
                    {**LLM, "name": "M", "scheduler": {**CONT, "batching": "mixed"}}],
        "links": [{"between": ["P", "D"], "link": link}, {"between": ["M", "D"], "link": link},
                  {"between": ["P", "M"], "link": link}],
        "workload": wl, "simulation": {"seed": 5},
        "pipelines": [{"stages": [{"kind": "prefill", "pool": "P", "routing": "least_prefill_tokens",
                                   "overflow_pool": "M", "overflow_tokens": overflow_tokens}, dec]}]})


def test_overloaded_prefill_pick_goes_to_the_mixed_pool():
    # four 1,500-token prompts at t = 0 (routed in order, before any step): request 0 finds P idle;
    # from request 1 on, P has a waiting request and 1,500 + 1,500 > 2,000 pending tokens: overflow to M
    ins = inputs(splitwise(4, 1500, 8))
    r, st, cs, _ = run_kernel(ins)
    names = ins["topo"].names
    assert [names[stage(ins, st, i, 0, "client")] for i in range(4)] == ["P", "M", "M", "M"]
    # D has room for all: every decode runs on D; the KV moves from the prefill client (P or M)
    assert [names[stage(ins, st, i, 1, "client")] for i in range(4)] == ["D"] * 4
    for i in range(4):
        assert stage(ins, st, i, 1, "arrive") > stage(ins, st, i, 0, "exit")
    assert list(r["generated"]) == [8] * 4 and list(r["status"]) == [3] * 4
    # a threshold above 4 x 1,500 pending tokens: nothing overflows
    ins = inputs(splitwise(4, 1500, 8, overflow_tokens=6000))
    r, st, cs, _ = run_kernel(ins)
    assert {names[stage(ins, st, i, 0, "client")] for i in range(4)} == {"P"}


def test_overloaded_decode_pick_goes_to_the_mixed_pool():
    # D holds one request (1,500 + 1 tokens = 94 blocks of 16; 100 in total): the second decode routed
    # while the first holds its blocks overflows to M
    need = -(-1501 // 16)
    ins = inputs(splitwise(2, 1500, 64, overflow_tokens=10**6), blocks=(1000, need + 6, 1000), watermark=(0, 0, 0))
    r, st, cs, _ = run_kernel(ins)
    names = ins["topo"].names
    assert [names[stage(ins, st, i, 0, "client")] for i in range(2)] == ["P", "P"]
    # both prefills end in one step and both decodes are routed at that instant, before request 0's
    # KV landed and took D's blocks: D looks free to both (the load is read at routing time)
    assert [names[stage(ins, st, i, 1, "client")] for i in range(2)] == ["D", "D"]
    ins = inputs(splitwise(2, 1500, 64, overflow_tokens=10**6, bp=False), blocks=(1000, need + 6, 1000),
                 watermark=(0, 0, 0))
    ins["cli_sch"][0, E.S_MAX_SEQS] = 1     # P prefills one prompt per step: the decodes route apart
    r, st, cs, _ = run_kernel(ins)
    assert [names[stage(ins, st, i, 1, "client")] for i in range(2)] == ["D", "M"]
    # request 1's KV moved P -> M; M decodes it (mixed batching) and D's request is unaffected
    assert stage(ins, st, 1, 1, "arrive") > stage(ins, st, 1, 0, "exit")
    assert list(r["generated"]) == [64, 64] and list(r["status"]) == [3, 3]


def test_overflow_pool_is_for_prefill_and_decode_stages_only():
    with pytest.raises((SpecError, ValueError), match=r"overflow_pool.*prefill or decode stage only"):
        parse_scenario({"clients": [{**LLM, "name": "P"}, {**LLM, "name": "M"}],
                        "pipelines": [{"stages": [{"kind": "llm", "pool": "P", "overflow_pool": "M"}]}]})
    with pytest.raises((SpecError, ValueError), match=r"routing.*with overflow_pool"):
        parse_scenario({"clients": [{**LLM, "name": "P"}, {**LLM, "name": "D"}, {**LLM, "name": "M"}],
                        "pipelines": [{"stages": [{"kind": "prefill", "pool": "P", "routing": "heavy_light",
                                                   "overflow_pool": "M"}, {"kind": "decode", "pool": "D"}]}]})


OVERFLOW_CASES = [  # (backpressure, decode overflow, n, prompt, output, rate, blocks P/D/M, watermarks, threshold)
    (False, True, 30, {"dist": "uniform", "low": 200, "high": 2500}, {"dist": "uniform", "low": 2, "high": 40}, 60.0,
     (400, 400, 700), (0, 10, 10), 3000),
    (True, True, 30, {"dist": "uniform", "low": 200, "high": 2500}, {"dist": "uniform", "low": 2, "high": 40}, 60.0,
     (400, 400, 700), (0, 10, 10), 3000),
    (True, False, 40, {"dist": "uniform", "low": 50, "high": 1500}, {"dist": "uniform", "low": 1, "high": 64}, 150.0,
     (300, 300, 600), (0, 30, 40), 2000),
]


@pytest.mark.parametrize("case", range(len(OVERFLOW_CASES)))
def test_kernel_agrees_with_the_twin_on_splitwise_overflow(case):
    bp, dov, n, pr, out, rate, blocks, wm, thr = OVERFLOW_CASES[case]
    ins = inputs(splitwise(n, pr, out, overflow_tokens=thr, d_overflow=dov, bp=bp, rate=rate), blocks=blocks,
                 watermark=wm)
    ref = twin(ins, bp, overflow_tokens=thr, decode_overflow=dov)
    assert_agree(ins, ref, n)
    # the cases exercise the mixed pool for prefills (and for decodes where it is on)
    assert "M" in ref["prefill_client"] and "P" in ref["prefill_client"]
    if dov:
        assert "M" in ref["decode_client"]


# ---- layer-wise KV transfer --------------------------------------------------------------------------------
def pd_spec(transfer, bw_GBps, n=1, prompt=3000, output=8, rate=None, bp=False):
    arr = {"process": "offline"} if rate is None else {"process": "poisson", "rate_rps": rate}
    return parse_scenario({
        "clients": [{**LLM, "name": "P", "scheduler": CONT}, {**LLM, "name": "D", "scheduler": CONT}],
        "links": [{"between": ["P", "D"], "link": {"preset": "RDMA-400G", "bandwidth_GBps": bw_GBps,
                                                    "efficiency": 1.0, "latency_us": LAT * 1e6}}],
        "workload": {"num_requests": n, "arrival": arr, "input": prompt, "output": output},
        "simulation": {"seed": 5},
        "pipelines": [{"stages": [{"kind": "prefill", "pool": "P"},
                                  {"kind": "decode", "pool": "D", "kv_transfer": transfer, "kv_backpressure": bp}]}]})


@pytest.mark.parametrize("bw_GBps", [0.5, 5.0, 500.0])
def test_layerwise_transfer_exposes_max_of_last_layer_and_what_the_prefill_cannot_hide(bw_GBps):
    L = 32                   # Llama-3.1-8B layers
    S = 3000 * KVB
    X = S / (bw_GBps * 1e9)
    ins = inputs(pd_spec("layerwise", bw_GBps))
    r, st, cs, _ = run_kernel(ins)
    t_pf = stage(ins, st, 0, 0, "exit") - stage(ins, st, 0, 0, "sched")   # the one prefill step
    exposed = stage(ins, st, 0, 1, "arrive") - stage(ins, st, 0, 0, "exit")
    assert exposed == pytest.approx(LAT + max(X / L, X - t_pf * (L - 1) / L), rel=1e-9)
    whole = inputs(pd_spec("whole", bw_GBps))
    r2, st2, _, _ = run_kernel(whole)
    assert stage(whole, st2, 0, 1, "arrive") - stage(whole, st2, 0, 0, "exit") == pytest.approx(LAT + X, rel=1e-9)
    assert r["generated"][0] == 8


def test_kv_transfer_is_a_decode_stage_field():
    with pytest.raises((SpecError, ValueError), match=r"kv_transfer.*decode stage only"):
        parse_scenario({"clients": [{**LLM, "name": "P"}, {**LLM, "name": "D"}],
                        "pipelines": [{"stages": [{"kind": "prefill", "pool": "P", "kv_transfer": "layerwise"},
                                                  {"kind": "decode", "pool": "D"}]}]})


@pytest.mark.parametrize("bp", [False, True])
def test_kernel_agrees_with_the_twin_on_layerwise_transfers(bp):
    ins = inputs(pd_spec("layerwise", 2.0, n=30, prompt={"dist": "uniform", "low": 200, "high": 2500},
                         output={"dist": "uniform", "low": 1, "high": 40}, rate=40.0, bp=bp),
                 blocks=(600, 500), watermark=(0, 40))
    ref = twin(ins, bp, layerwise=True)
    assert_agree(ins, ref, 30)


# ---- KV write-back to a tier -------------------------------------------------------------------------------
def write_back_scenario(on, bw_GBps=1.0, rate=4.0):
    # one shared 2,048-token prefix (4 hash blocks of 512) + 52 own tokens; a slow tier port
    tier = {"name": "dram", "tier": {"preset": "ref-DRAM", "capacity_GB": 100.0, "bandwidth_GBps": bw_GBps,
                                     "latency_us": 10.0},
            "link": {"preset": "PCIe5-x16", "bandwidth_GBps": 1000.0, "latency_us": 2.0}}
    return parse_scenario({
        "clients": [LLM], "tiers": [tier], "simulation": {"seed": 3},
        "workload": {"num_requests": 2, "arrival": {"process": "uniform", "rate_rps": rate},
                     "input": {"dist": "fixed", "value": 2100}, "output": {"dist": "fixed", "value": 4},
                     "prefix_tokens": 2048, "prefix_groups": 1},
        "pipelines": [{"stages": [{"kind": "kv_fetch", "use_hashes": True, "write_back": on,
                                   "tiers": [{"tier": "dram", "hit": 0.0}]},
                                  {"kind": "llm", "pool": "llm"}]}]})


def test_write_back_of_new_blocks_slows_a_read_that_overlaps_it():
    B = 1e9                   # tier port, B/s (the link is 1,000 GB/s)
    L = 12e-6                 # lookup 10 us + link 2 us, on reads and writes alike
    W = 4 * 512 * KVB         # request 0 misses: its 4 full blocks are new and are written back
    R = 4 * 512 * KVB         # request 1 hits those 4 blocks and reads them
    off = inputs(write_back_scenario(False))
    on = inputs(write_back_scenario(True))
    r_off, st_off, _, _ = run_kernel(off)
    r_on, st_on, _, _ = run_kernel(on)
    # request 0 is not slowed by its own write; request 1's read alone takes L + R/B
    assert r_on["t_finish"][0] == r_off["t_finish"][0]
    read_off = stage(off, st_off, 1, 0, "exit") - stage(off, st_off, 1, 0, "ready")
    assert read_off == pytest.approx(L + R / B, rel=1e-9)
    # the write starts at request 0's prefill end (its first token) and moves after latency L;
    # request 1's read starts moving at arrival + L, while W_left bytes of the write remain: both get
    # B/2 until the write ends, then the read has the port: its read ends (R + W_left)/B after it
    # started moving
    w_move = r_on["t_first_tok"][0] + L
    rd_move = stage(on, st_on, 1, 0, "ready") + L
    w_left = W - B * (rd_move - w_move)
    assert 0 < w_left < R                                 # the case really overlaps
    read_on = stage(on, st_on, 1, 0, "exit") - stage(on, st_on, 1, 0, "ready")
    assert read_on == pytest.approx(L + (R + w_left) / B, rel=1e-9)
    assert list(r_on["computed_pf"]) == [2100, 52]        # the blocks were there for request 1


def test_write_back_needs_a_hash_mode_kv_fetch():
    with pytest.raises((SpecError, ValueError), match=r"write_back.*use_hashes"):
        parse_scenario({"clients": [LLM], "tiers": [{"name": "d", "tier": "ref-DRAM", "link": "PCIe5-x16"}],
                        "pipelines": [{"stages": [{"kind": "kv_fetch", "write_back": True, "past_tokens": 100,
                                                   "tiers": [{"tier": "d", "hit": 1.0}]},
                                                  {"kind": "llm", "pool": "llm"}]}]})
