"""Importers (Vidur profiles, per-step logs), the (tokens, context) step correction, client-level
calibration files, direct KV capacity, and the Vidur match (TTFT/TPOT/E2E within 5 % of Vidur's
own run, through the public importer and API only)."""
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import mistfast as mf
from mistfast import calibration as C
from mistfast import importers as I
from mistfast.specs import SpecError, make_client, parse_scenario
from mistfast.stepmodel import step_latency

SHARED = Path(os.environ.get("MISTFAST_SHARED") or Path(__file__).resolve().parents[2] / "shared")
VIDUR = SHARED / "peer-data" / "vidur"
PROFILE = VIDUR / "llama2-70b_a100_tp2"
RUN = VIDUR / "run_vllm_n10000"
needs_vidur = pytest.mark.skipif(not (PROFILE / "mlp.csv").exists() or not (RUN / "vidur_summary.json").exists(),
                                 reason="../shared/peer-data/vidur not available")


@pytest.fixture(scope="module")
def profile():
    return I.load_vidur_profile(PROFILE, model="llama-2-70b", device="A100", tp=2)


# ---------------------------------------------------------------- Vidur's formula, by hand from the CSVs
def _hand_linear_ms(T):
    mlp = pd.read_csv(PROFILE / "mlp.csv")
    row = mlp[(mlp.num_tensor_parallel_workers == 2) & (mlp.num_tokens == T)]
    ops = ["attn_pre_proj", "attn_post_proj", "attn_rope", "mlp_up_proj", "mlp_act", "mlp_down_proj",
           "input_layernorm", "post_attention_layernorm", "add"]
    lin = sum(row[f"time_stats.{o}.median"].mean() for o in ops)
    ar = pd.read_csv(PROFILE / "all_reduce.csv")
    ar = ar[(ar.num_workers == 2) & (ar.devices_per_node == 2) & (ar.collective == "all_reduce")]
    tok = ar["size"] / (8192 * 2)          # bytes -> fp16 tokens of width 8192
    if (tok == T).any():
        t_ar = ar[tok == T]["time_stats.all_reduce.median"].mean()
    else:                                   # profiled sizes sit between token counts: linear between neighbours
        lo, hi = tok[tok < T].max(), tok[tok > T].min()
        y0 = ar[tok == lo]["time_stats.all_reduce.median"].mean()
        y1 = ar[tok == hi]["time_stats.all_reduce.median"].mean()
        t_ar = y0 + (y1 - y0) * (T - lo) / (hi - lo)
    return lin + 2 * (t_ar + 0.02)


@needs_vidur
def test_vidur_prefill_step_by_hand(profile):
    # one 4096-token prompt: T = 4096 is profiled exactly, as is (chunk 4096, kv 0) of attention
    att = pd.read_csv(PROFILE / "attention.csv")
    pf = att[(att.prefill_chunk_size == 4096) & (att.kv_cache_size == 0)]["time_stats.attn_prefill.median"].mean()
    want = 80 * (_hand_linear_ms(4096) + pf) / 1e3
    assert profile.step_time_s(prefill=[(0, 4096)]) == pytest.approx(want, rel=1e-12)


@needs_vidur
def test_vidur_decode_step_by_hand(profile):
    # 16 decodes holding 1000 and 1046 tokens: Vidur counts 1001 and 1047 processed tokens, takes
    # int(mean) = 1024, rounds it up to a multiple of 64 (1024, profiled at batch 16); x1.1
    # batching overhead; T = 16 tokens is a profiled token count
    att = pd.read_csv(PROFILE / "attention.csv")
    d = att[(att.prefill_chunk_size == 0) & (att.batch_size == 16)]
    a = d[d.kv_cache_size == 1024]["time_stats.attn_decode.median"].mean()
    want = 80 * (_hand_linear_ms(16) + 1.1 * a) / 1e3
    assert profile.step_time_s(decode=[(1, 1000)] * 8 + [(1, 1046)] * 8) == pytest.approx(want, rel=1e-12)


@needs_vidur
def test_vidur_profile_errors_name_the_problem(tmp_path):
    with pytest.raises(C.CalibrationError, match="missing attention.csv"):
        I.load_vidur_profile(tmp_path, model="llama-2-70b", device="A100", tp=2)
    with pytest.raises(C.CalibrationError, match="no rows for tp = 3"):
        I.load_vidur_profile(PROFILE, model="llama-2-70b", device="A100", tp=3)


@needs_vidur
def test_vidur_match_ttft_tpot_e2e_within_5_percent(profile, tmp_path):
    """Calibrate to Vidur's profile through the importer, store the calibration in a file, point a
    client at it and replay Vidur's 10,000 requests: medians and p99 within 5 % of Vidur's."""
    cal = C.calibrate(profile.observations())
    path = C.write_calibration_toml(cal, tmp_path / "vidur.toml")
    spec = parse_scenario({
        "calibration": str(path),
        "clients": [{"model": "llama-2-70b", "device": "A100", "tp": 2, "precision": "fp16", "engine": "vidur",
                     "scheduler": {"batching": "continuous", "max_batch_size": 128, "max_batched_tokens": 4096,
                                   "block_size": 16, "kv_capacity_tokens": 3328 * 16, "watermark": 0.01}}],
        "workload": {"num_requests": 10000, "trace": {"path": str(RUN / "workload.csv.gz"), "format": "lengths"}},
        "simulation": {"horizon_s": 1e6},
    })
    c = spec.clients[0]
    assert c.step_correction is not None and c.step_correction.attention_decode is not None
    assert "vidur.toml" in c.efficiency.source
    ds = mf.simulate(spec)
    assert int(ds["n_finished"]) == 10000
    ref = json.loads((RUN / "vidur_summary.json").read_text())
    pairs = {"ttft": "prefill_e2e_time", "tpot": "tpot_derived_s", "e2e": "request_e2e_time"}
    for ours, theirs in pairs.items():
        for q in ("p50", "p99"):
            got, want = float(ds[f"{ours}_{q}_ms"]), ref[theirs][q] * 1e3
            assert abs(got / want - 1) < 0.05, (ours, q, got, want)


# ---------------------------------------------------------------- (tokens, context) correction
def test_context_correction_recovers_separate_attention_factor():
    """Measurements made by a 'true' engine that is 1.3x the analytical model on every op but
    attention and 0.6x on attention: the fit finds both factors, so a context it never saw is
    predicted exactly, where a single factor per token count cannot be right at both contexts."""
    # no fixed host time per step in the base (the correction scales the step before it)
    base = make_client("llama-3.1-8b", "H100", precision="fp8", efficiency={"compute": 0.75, "memory": 0.75})

    def truth(decode):
        st = step_latency(base, decode=decode)
        at = st.breakdown["attention_s"]
        return 1.3 * (st.total_s - at) + 0.6 * at

    obs = [C.StepObservation(model="llama-3.1-8b", device="H100", precision="fp8", engine="vllm",
                             decode=((1, k),) * b, time_s=truth([(1, k)] * b), id=f"{b}x{k}")
           for b in (1, 8, 32, 128) for k in (512, 8192)]
    corr = C.fit_step_correction(obs, base)
    assert corr["decode"] == pytest.approx([1.3] * len(corr["tokens"]), rel=1e-6)
    assert corr["attention_decode"] == pytest.approx([0.6] * len(corr["tokens"]), rel=1e-6)
    cc = C.with_efficiency(base, None, corr)
    for b, k in ((32, 2048), (8, 30000)):
        assert step_latency(cc, decode=[(1, k)] * b).total_s == pytest.approx(truth([(1, k)] * b), rel=1e-9)
    # the diagnostics report the per-step error over every step
    import re
    m = re.search(r"per-step error median ([0-9.e+-]+) %, p90 ([0-9.e+-]+) %, max ([0-9.e+-]+) % over 8 steps",
                  corr["source"])
    assert m and float(m.group(3)) < 1e-6


def test_step_correction_without_attention_rows_is_unchanged():
    base = make_client("llama-3.1-8b", "H100", efficiency={"compute": 0.75, "memory": 0.75})
    corr = {"tokens": [1.0, 1024.0], "prefill": [1.2, 1.5], "decode": [0.9, 1.1]}
    cc = C.with_efficiency(base, None, corr)
    both = C.with_efficiency(base, None, {**corr, "attention_prefill": [1.2, 1.5], "attention_decode": [0.9, 1.1]})
    for pf, dec in (([(0, 300)], []), ([], [(1, 700)] * 12)):
        a = step_latency(cc, prefill=pf, decode=dec).total_s
        assert a == step_latency(both, prefill=pf, decode=dec).total_s
        T = sum(n for _, n in pf) + len(dec)
        f = np.interp(np.log(T), np.log(corr["tokens"]), corr["prefill"] if pf else corr["decode"])
        assert a == pytest.approx(f * step_latency(base, prefill=pf, decode=dec).total_s, rel=1e-12)


# ---------------------------------------------------------------- per-step logs
def test_step_log_import(tmp_path):
    p = tmp_path / "log.csv"
    p.write_text("time_ms,num_prefill_tokens,num_prefills,num_decodes,decode_context_tokens\n"
                 "30.5,1024,2,0,0\n"
                 "9.0,0,0,16,700\n"
                 "x,0,0,4,100\n"
                 "12.0,256,1,8,2000\n")
    obs, skipped = I.load_step_log(p, model="llama-3.1-8b", device="H100", precision="fp8", engine="vllm")
    assert [o.time_s for o in obs] == pytest.approx([0.0305, 0.009, 0.012])
    assert obs[0].prefill == ((0, 512), (0, 512)) and obs[0].decode == ()
    assert obs[1].decode == ((1, 700),) * 16 and obs[2].prefill == ((0, 256),)
    assert obs[2].engine == "vllm" and obs[2].precision == "fp8/fp8/fp8/bf16"
    assert len(skipped) == 1 and skipped[0][0] == 4 and "line 4" in skipped[0][1]
    with pytest.raises(C.CalibrationError, match="duration column"):
        (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
        I.load_step_log(tmp_path / "bad.csv", model="llama-3.1-8b", device="H100")


# ---------------------------------------------------------------- clients
def test_kv_capacity_set_directly():
    c = make_client("llama-2-70b", "A100", tp=2, precision="fp16", scheduler={"kv_capacity_tokens": 53248})
    assert c.kv_capacity_tokens() == 53248 and c.kv_capacity_blocks() == 3328
    # 10 GiB per device / (2 * 4 KV heads * 128 * 80 layers * 2 B) = 65,536 tokens
    g = make_client("llama-2-70b", "A100", tp=2, precision="fp16", scheduler={"kv_capacity_GiB": 10})
    assert g.kv_capacity_tokens() == 10 * 2**30 // (2 * 4 * 128 * 80 * 2) == 65536
    with pytest.raises(SpecError, match="kv_capacity_GiB"):
        make_client("llama-2-70b", "A100", tp=2, scheduler={"kv_capacity_tokens": 1000, "kv_capacity_GiB": 1})


def test_unknown_engine_lists_known_families():
    with pytest.raises(SpecError) as e:
        make_client("llama-3.1-8b", "H100", engine="fastllm-9000")
    msg = str(e.value)
    assert "engine" in msg and "fastllm-9000" in msg
    for fam in ("vllm", "sglang", "trtllm-1"):
        assert fam in msg
    assert make_client("llama-3.1-8b", "H100", engine="vLLM 0.8.5").engine == "vLLM 0.8.5"


def test_calibration_file_on_client_and_scenario(tmp_path):
    cal = C.Calibration(efficiencies={("H100", "myeng"): {"compute": 0.5, "memory": 0.6, "network": 1.0,
                                                           "op_overhead_us": 7.0}},
                        corrections={"llama-3.1-8b|H100|tp1|pp1|fp8/fp8/fp8/bf16|myeng": {
                            "tokens": [1.0, 100.0], "prefill": [1.1, 1.2], "decode": [0.9, 0.8]}})
    path = C.write_calibration_toml(cal, tmp_path / "mine.toml")
    c = make_client("llama-3.1-8b", "H100", precision="fp8", engine="myeng", calibration=str(path))
    assert (c.efficiency.compute, c.efficiency.memory, c.efficiency.op_overhead_us) == (0.5, 0.6, 7.0)
    assert c.step_correction.decode == [0.9, 0.8]
    # scenario-level file, relative to the scenario file
    (tmp_path / "s.toml").write_text('calibration = "mine.toml"\n[[clients]]\nmodel = "llama-3.1-8b"\n'
                                     'device = "H100"\nprecision = "fp8"\nengine = "myeng"\n')
    s = mf.load_scenario(tmp_path / "s.toml") if hasattr(mf, "load_scenario") else None
    if s is None:
        from mistfast.specs import load_scenario
        s = load_scenario(tmp_path / "s.toml")
    assert s.clients[0].efficiency.compute == 0.5
    with pytest.raises(SpecError, match="not found"):
        make_client("llama-3.1-8b", "H100", calibration=str(tmp_path / "nope.toml"))
    # an explicit efficiency is never replaced
    e = make_client("llama-3.1-8b", "H100", precision="fp8", engine="myeng", calibration=str(path),
                    efficiency={"compute": 0.9})
    assert e.efficiency.compute == 0.9
