"""KV write-back of new blocks to a tier (`write_back = true`, ENGINE_SEMANTICS.md): the kernel against
the plain-Python twin of a hash-mode KV store in front of one client
(tests/reference/pd_reference.py: reference_kv_store), bit for bit, on random cases with reads and
writes sharing a slow tier port and LRU evictions; with the feature off as a control."""
import numpy as np
import pytest

from mistfast.kernels import cluster as CL
from mistfast.kernels import engine as E
from mistfast.kernels import steptime as ST
from mistfast.specs import parse_scenario
from tests.reference.pd_reference import reference_kv_store
from tests.test_kv_backpressure import KVB, LLM, inputs
from tests.test_kv_backpressure import run_cluster as run_kernel

HB = 512   # hash block tokens


def store_scenario(write_back, n, rate, port_GBps, capacity_GB, prefix_groups, seed):
    tier = {"name": "dram", "tier": {"preset": "ref-DRAM", "capacity_GB": capacity_GB, "bandwidth_GBps": port_GBps,
                                     "latency_us": 10.0},
            "link": {"preset": "PCIe5-x16", "bandwidth_GBps": 4.0 * port_GBps, "latency_us": 2.0}}
    return parse_scenario({
        "clients": [{**LLM, "scheduler": {"batching": "continuous", "max_batched_tokens": 8192, "max_batch_size": 8}}],
        "tiers": [tier], "simulation": {"seed": seed},
        "workload": {"num_requests": n, "arrival": {"process": "poisson", "rate_rps": rate},
                     "input": {"dist": "uniform", "low": 700, "high": 4000},
                     "output": {"dist": "uniform", "low": 1, "high": 24},
                     "prefix_tokens": 2048, "prefix_groups": prefix_groups},
        "pipelines": [{"stages": [{"kind": "kv_fetch", "use_hashes": True, "write_back": write_back,
                                   "tiers": [{"tier": "dram", "hit": 0.0}]},
                                  {"kind": "llm", "pool": "llm"}]}]})


def twin(ins, write_back):
    prm = ins["cli_prm"][0]

    def step_fn(pf, dec, n_done):
        pf = np.asarray(pf, float).reshape(-1, 2)
        dec = np.asarray(dec, float).reshape(-1, 3)
        out = np.zeros(ST.N_OUT)
        return ST.step_time(prm, pf[:, 0].copy(), pf[:, 1].copy(), len(pf), float(n_done), dec[:, 0].copy(),
                            dec[:, 1].copy(), dec[:, 2].copy(), len(dec), out)

    s = ins["cli_sch"][0]
    sched = dict(max_batched_tokens=s[E.S_MAX_TOKENS], max_batch_size=s[E.S_MAX_SEQS], block_size=s[E.S_BLOCK],
                 total_blocks=s[E.S_TOTAL_BLOCKS], watermark_blocks=s[E.S_WATERMARK],
                 max_model_len=s[E.S_MAX_MODEL_LEN])
    n = ins["arrival_in"].size
    off = ins["st_off"]
    hid = [list(ins["hash_ids"][ins["hash_off"][i]:ins["hash_off"][i + 1]]) for i in range(n)]
    C = ins["cli_kind"].size
    tier = int(ins["chain_tier"][ins["chain_off"][0]])
    nres = int(ins["route_nres"][C + tier, 0])
    route = dict(latency_s=float(ins["route_lat"][C + tier, 0]), resources=list(ins["route_res"][C + tier, 0, :nres]))
    req = dict(arrival_s=ins["arrival_in"], prompt=ins["st_prompt"][off[:-1] + 1], output=ins["st_output"][off[:-1] + 1])
    return reference_kv_store(req, sched, step_fn, hid, HB, int(ins["tcap"][tier]), route, list(ins["res_cap"]),
                              float(ins["st_bytes"][off[0]]), write_back)


CASES = [  # (n, rate req/s, tier port GB/s, tier capacity GB, prefix groups, seed)
    (40, 6.0, 1.0, 100.0, 2, 1),     # reads and writes overlap on a slow port, nothing evicted
    (40, 10.0, 2.0, 1.0, 3, 2),      # a 15-block tier: LRU evictions, misses after eviction
    (30, 3.0, 0.5, 2.0, 1, 3),
]


@pytest.mark.parametrize("write_back", [True, False])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_kernel_agrees_with_the_kv_store_twin(case, write_back):
    n, rate, port, cap, groups, seed = CASES[case]
    ins = inputs(store_scenario(write_back, n, rate, port, cap, groups, seed))
    assert int(ins["tcap"][0]) > 0
    ref = twin(ins, write_back)
    off = ins["st_off"]
    for runs in (True, False):
        r, st, cs, res_bytes, end = run_kernel(ins, decode_runs=runs)
        np.testing.assert_array_equal(r["status"], ref["status"])
        np.testing.assert_array_equal(r["reason"], ref["reason"])
        np.testing.assert_array_equal(r["generated"], ref["generated"])
        np.testing.assert_array_equal(r["computed_pf"], ref["computed_pf"])
        np.testing.assert_array_equal(r["hit_first"], ref["hit_first"])
        for k, kk in (("t_first_tok", "t_first_token"), ("t_last_tok", "t_last_token"), ("t_finish", "t_finish")):
            np.testing.assert_array_equal(r[k], np.array(ref[kk]), err_msg=k)
        np.testing.assert_array_equal(st["exit"][off[:-1]], np.array(ref["t_read_end"]), err_msg="read end")
        assert cs[0, CL.CS_BUSY] == ref["busy_s"] and cs[0, CL.CS_STEPS] == ref["steps"]
        np.testing.assert_array_equal(res_bytes, np.array(ref["res_bytes"]))
        assert end == ref["end_s"]
    # the cases exercise what they claim: hits (reads), and with write-back bytes written
    assert sum(h > 0 for h in ref["hit_first"]) >= 3
    assert int(np.sum(np.array(ref["status"]) == 3)) == n
    reads = sum(ref["hit_first"]) * KVB
    if write_back:
        assert ref["res_bytes"][0] > reads * (1 + 1e-9)       # the port carried the writes too
    else:
        assert ref["res_bytes"][0] == pytest.approx(reads, rel=1e-12)


def test_the_random_cases_really_overlap_writes_with_reads():
    # with write-back on, some read takes longer than alone (latency + bytes / port): it shared
    # the port with a write. Same spec without write-back: every read is alone or shares with reads.
    n, rate, port, cap, groups, seed = CASES[0]
    ins = inputs(store_scenario(True, n, rate, port, cap, groups, seed))
    ref_on = twin(ins, True)
    ref_off = twin(inputs(store_scenario(False, n, rate, port, cap, groups, seed)), False)
    slower = [i for i in range(n) if ref_on["t_read_end"][i] - ins["arrival_in"][i]
              > ref_off["t_read_end"][i] - ins["arrival_in"][i] + 1e-9 and ref_on["hit_first"][i] > 0]
    assert slower
