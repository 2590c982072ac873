"""Step-model physics of 2025-26 models against hand-computed values (docs/step-model.md):
sliding and chunked window attention, FP4 formats, MoE expert parallelism with load imbalance,
MLA absorbed decode / expanded prefill, per-step overhead and CUDA-graph padding; plus the
kernel == plain-Python twin on these models, and engine runs with the new options."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import mistfast as mf
from mistfast import step_latency
from tests.reference.step_reference import reference_step_time
from .builders import model_client as make_client


H100_BW = 3350e9 * 0.75       # B/s, default memory efficiency
BIG_H100 = {"preset": "H100", "memory_GiB": 4000}


def tiny(**kw):
    """2 layers, 4 query heads of 64, 2 KV heads: layer 0 windowed, layer 1 full (global_every 2)."""
    m = dict(architecture="decoder", hidden_size=256, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=64,
             ffn_dim=512, gated_ffn=True, vocab_size=1000, sliding_window=128, global_every=2)
    m.update(kw)
    return m


def attn_flops_bytes(client, prefill=(), decode=()):
    """FLOP, HBM bytes and attention time of a step. Two models that differ only in their windows
    differ only in attention, so differences of these isolate the windowed attention work."""
    bd = step_latency(client, prefill=prefill, decode=decode).breakdown
    return bd["flops"], bd["hbm_bytes"], bd["attention_s"]


# ---- sliding window --------------------------------------------------------------------------------
def test_sliding_window_decode_by_hand():
    win = make_client(tiny(), "H100")
    full = make_client(tiny(sliding_window=0, global_every=0), "H100")
    # one decode at context 1000: the new token at position 1000 sees 1001 keys (full layer) or
    # 128 (windowed layer). FLOP per layer 4*H*dh*keys, KV read 2*Hkv*dh*2 B*keys.
    f_full_layer, y_full_layer = 4 * 4 * 64 * 1001, 2 * 2 * 64 * 2 * 1001   # 1,025,024 and 512,512
    f_win_layer, y_win_layer = 4 * 4 * 64 * 128, 2 * 2 * 64 * 2 * 128      # 131,072 and 65,536
    f_w, y_w, t_w = attn_flops_bytes(win, decode=[(1, 1000)])
    f_f, y_f, t_f = attn_flops_bytes(full, decode=[(1, 1000)])
    assert f_f - f_w == f_full_layer - f_win_layer == 893_952
    assert y_f - y_w == y_full_layer - y_win_layer == 446_976
    # both layers' attention is memory bound at batch 1: 512,512 B + 65,536 B at 3350 GB/s x 0.75
    assert t_w == pytest.approx(512_512 / H100_BW + 65_536 / H100_BW, rel=1e-12)


def test_sliding_window_prefill_by_hand():
    win = make_client(tiny(), "H100")
    full = make_client(tiny(sliding_window=0, global_every=0), "H100")
    # chunk (0, 300): causal pairs 300*301/2 = 45,150; windowed sum_i min(i+1, 128) = 8,256 + 172*128 = 30,272
    f_w, y_w, _ = attn_flops_bytes(win, prefill=[(0, 300)])
    f_f, y_f, _ = attn_flops_bytes(full, prefill=[(0, 300)])
    assert f_f - f_w == 4 * 4 * 64 * (45_150 - 30_272)
    assert y_f == y_w          # nothing cached before: both read the chunk's own K/V
    # chunk (500, 100): every query sees 128 keys (12,800 pairs vs 100*500 + 5,050 = 55,050);
    # the windowed layer reads the 127 cached tokens its first query sees instead of all 500
    f_w, y_w, _ = attn_flops_bytes(win, prefill=[(500, 100)])
    f_f, y_f, _ = attn_flops_bytes(full, prefill=[(500, 100)])
    assert f_f - f_w == 4 * 4 * 64 * (55_050 - 12_800)
    assert y_f - y_w == 2 * 2 * 64 * 2 * (500 - 127)


def test_chunked_window_by_hand():
    # Llama-4 style: each query sees its own aligned block of W = 128
    ch = make_client(tiny(window_kind="chunked"), "H100")
    full = make_client(tiny(sliding_window=0, global_every=0), "H100")
    # (0, 300): blocks [0,128) [128,256) [256,300): 8,256 + 8,256 + 44*45/2 = 17,502 pairs
    f_c, _, _ = attn_flops_bytes(ch, prefill=[(0, 300)])
    f_f, _, _ = attn_flops_bytes(full, prefill=[(0, 300)])
    assert f_f - f_c == 4 * 4 * 64 * (45_150 - 17_502)
    # (500, 100): positions 500..511 see 117..128 keys (1,470), 512..599 see 1..88 (3,916);
    # past read = 500 mod 128 = 116 tokens
    f_c, y_c, _ = attn_flops_bytes(ch, prefill=[(500, 100)])
    f_f, y_f, _ = attn_flops_bytes(full, prefill=[(500, 100)])
    assert f_f - f_c == 4 * 4 * 64 * (55_050 - (1_470 + 3_916))
    assert y_f - y_c == 2 * 2 * 64 * 2 * (500 - 116)
    # decode at context 1000 (position 1000 = 7*128 + 104): 105 keys
    f_c, y_c, _ = attn_flops_bytes(ch, decode=[(1, 1000)])
    f_f, y_f, _ = attn_flops_bytes(full, decode=[(1, 1000)])
    assert f_f - f_c == 4 * 4 * 64 * (1001 - 105)
    assert y_f - y_c == 2 * 2 * 64 * 2 * (1001 - 105)


def test_sliding_window_shared_prefix_decode_by_hand():
    win = make_client(tiny(), "H100")
    full = make_client(tiny(sliding_window=0, global_every=0), "H100")
    # 2 branches, shared prefix 100, private 50: position 150, window [23, 150]: 77 shared tokens
    # (read once) + 51 private per branch -> 77 + 2*51 = 179 tokens; full layer: 100 + 2*51 = 202
    _, y_w, _ = attn_flops_bytes(win, decode=[(2, 100, 50)])
    _, y_f, _ = attn_flops_bytes(full, decode=[(2, 100, 50)])
    assert y_f - y_w == 2 * 2 * 64 * 2 * (202 - 179)


# ---- FP4 formats ---------------------------------------------------------------------------------------
def test_fp4_peaks_per_device():
    b200 = make_client("llama-3.1-8b", "B200").device
    assert b200.peak_flops("nvfp4") == b200.peak_flops("mxfp4") == 9000e12     # Blackwell FP4 dense
    b300 = make_client("llama-3.1-8b", "B300").device
    assert b300.peak_flops("nvfp4") == 13500e12 and b300.peak_flops("bf16") == 2250e12  # HGX B300
    mi355 = make_client("llama-3.1-8b", "MI355X").device
    assert mi355.peak_flops("mxfp4") == 10066.3e12                               # CDNA4 MXFP4
    assert mi355.peak_flops("nvfp4") == 5033.2e12                                # no NVFP4: next lower peak (fp8)
    h100 = make_client("llama-3.1-8b", "H100").device
    assert h100.peak_flops("nvfp4") == h100.peak_flops("mxfp4") == 1978.9e12      # Hopper: fp8
    a100 = make_client("llama-3.1-8b", "A100").device
    assert a100.peak_flops("mxfp4") == 312e12                                    # no fp6/fp8 on A100: bf16
    custom = make_client("llama-3.1-8b", {"preset": "H100", "tflops": {"bf16": 1000.0, "fp4": 4000.0}}).device
    assert custom.peak_flops("nvfp4") == 4000e12                                 # a generic fp4 peak serves every format


def test_nvfp4_weights_and_gemm_rate_by_hand():
    m = tiny(sliding_window=0, global_every=0)
    fp8 = make_client(m, "B200", precision="fp8")
    nv = make_client(m, "B200", precision="nvfp4")
    assert (nv.precision.weights, nv.precision.kv) == ("nvfp4", "bf16")
    # decode at batch 1: weight bytes 4.5 bits per element. Per layer QKV 256*(4+4)*64, O 256*256,
    # FFN 3*256*512; LM head 256*1000; embedding gather of 1 row of 256 (in the weight format)
    w_layer = 256 * 8 * 64 + 4 * 64 * 256 + 3 * 256 * 512
    elems = 2 * w_layer + 256 * 1000 + 256
    y8 = step_latency(fp8, decode=[(1, 10)]).breakdown["hbm_bytes"]
    y4 = step_latency(nv, decode=[(1, 10)]).breakdown["hbm_bytes"]
    assert elems == 1_435_904
    # the KV read differs too: 2 layers x 2*2*64*11 = 5,632 elements, fp8 (1 B) vs bf16 (2 B)
    assert y8 - y4 == pytest.approx(elems * (1.0 - 0.5625) - 5_632, rel=1e-12)
    # prefill of 4096 tokens: GEMM FLOPs run at 9000 TF instead of 4500 (efficiency 0.75)
    T = 4096
    gemm_flops = 2 * (2 * T * w_layer) + 2 * 1 * 256 * 1000   # 2 layers of GEMMs + LM head on 1 sampled row
    tc8 = step_latency(fp8, prefill=[(0, T)]).breakdown["ideal_compute_s"]
    tc4 = step_latency(nv, prefill=[(0, T)]).breakdown["ideal_compute_s"]
    assert tc8 - tc4 == pytest.approx(gemm_flops / (4500e12 * 0.75) - gemm_flops / (9000e12 * 0.75), rel=1e-9)


def test_mxfp4_experts_only():
    # gpt-oss: experts in MXFP4 (4.25 bits), everything else bf16
    c = make_client("gpt-oss-20b", "B200")
    bf = make_client("gpt-oss-20b", "B200", precision="bf16")
    # batch-1 decode of a MoE layer reads K = 4 experts of 3*2880^2 elements (E_act(1) = 4)
    y4 = step_latency(c, decode=[(1, 10)]).breakdown["hbm_bytes"]
    y16 = step_latency(bf, decode=[(1, 10)]).breakdown["hbm_bytes"]
    assert y16 - y4 == pytest.approx(24 * 4 * 3 * 2880**2 * (2 - 0.53125), rel=1e-9)


# ---- MoE expert parallelism --------------------------------------------------------------------------
def moe(**kw):
    m = dict(architecture="decoder", hidden_size=256, num_layers=1, num_heads=4, num_kv_heads=4, head_dim=64,
             ffn_dim=512, gated_ffn=True, vocab_size=1000, num_experts=8, top_k=2, expert_ffn_dim=512,
             num_shared_experts=0, first_dense_layers=0)
    m.update(kw)
    return m


@pytest.fixture
def ep_moves_no_tokens(monkeypatch):
    from mistfast import stepmodel
    monkeypatch.setattr(stepmodel, "EP_DISPATCH_UNDER_TP_ATTENTION", False)


@pytest.fixture
def ep_former_dispatch(monkeypatch):
    from mistfast import stepmodel
    monkeypatch.setattr(stepmodel, "EP_DISPATCH_UNDER_TP_ATTENTION", True)


def test_ep_all_to_all_and_imbalance_by_hand_former_model(ep_former_dispatch):
    base = make_client(moe(), "H100", tp=2, ep=2)
    skew = make_client(moe(), "H100", tp=2, ep=2, efficiency={"expert_imbalance": 1.5})
    T = 64
    b0 = step_latency(base, decode=[(1, 100)] * T).breakdown
    b1 = step_latency(skew, decode=[(1, 100)] * T).breakdown
    beta = 900e9 / 2        # NVLink4 per direction
    # dispatch + combine All-to-All: (ep-1)/ep of lam*T*K*D*2 B; lam = 1.5 adds 0.5*64*2*256*2 B
    assert b1["communication_s"] - b0["communication_s"] == pytest.approx(2 * 0.5 * (0.5 * T * 2 * 256 * 2) / beta, rel=1e-9)


def test_ep_imbalance_by_hand(ep_moves_no_tokens):
    base = make_client(moe(), "H100", tp=2, ep=2)
    skew = make_client(moe(), "H100", tp=2, ep=2, efficiency={"expert_imbalance": 1.5})
    T = 64
    b0 = step_latency(base, decode=[(1, 100)] * T).breakdown
    b1 = step_latency(skew, decode=[(1, 100)] * T).breakdown
    # under TP attention EP moves no tokens (every rank holds all T): λ changes no communication
    assert b1["communication_s"] == b0["communication_s"]
    # expert FLOP on the busiest rank: 2*lam*T*K*3*D*De/(ep*te), te = tp/ep = 1
    assert b1["flops"] - b0["flops"] == pytest.approx(0.5 * 2 * T * 2 * 3 * 256 * 512 / 2, rel=1e-12)
    # expert weights read: E(1-(1-K/E)^(lam T))/ep experts of 3*D*De, plus the token traffic
    e0 = 8 * (1 - 0.75**64) / 2
    e1 = 8 * (1 - 0.75**96) / 2
    tokens = 2 * 0.5 * T * 2 * 256 * 2 / 2
    assert b1["hbm_bytes"] - b0["hbm_bytes"] == pytest.approx((e1 - e0) * 3 * 256 * 512 * 2 + tokens, rel=1e-9)


def test_ep_under_tp_attention_moves_no_tokens_by_hand(ep_moves_no_tokens):
    """EP without DP attention (SGLang --ep-size with the default moe_a2a_backend "none", vLLM and
    TensorRT-LLM without attention DP): every rank holds all T tokens after the attention AllReduce;
    it runs its E/ep experts on the rows routed to them and the FFN AllReduce sums the partial
    outputs. So the communication of a step is that of expert TP (ep = 1): 2 AllReduces of T*D*2 B
    per layer and the LM-head AllGather, and EP changes only the expert op."""
    T = 64
    ep2 = make_client(moe(), "H100", tp=2, ep=2)
    tp2 = make_client(moe(), "H100", tp=2)
    alpha, beta = ep2.device.scaleup_latency_us * 1e-6, ep2.device.scaleup_bidir_GBps / 2 * 1e9
    s0 = 5e-6
    ar = s0 + 2 * alpha + 2 * 0.5 * (T * 256 * 2) / beta      # ring AllReduce over 2 ranks
    lm = s0 + alpha + 0.5 * (T * 1000 * 2) / beta             # LM-head AllGather of the 64 sampled rows
    for c in (ep2, tp2):
        assert step_latency(c, decode=[(1, 100)] * T).breakdown["communication_s"] == \
            pytest.approx(2 * ar + lm, rel=1e-12)
    # a prefill of 4,096 tokens at 8 experts, top-2: the former model sent 2 x 4,096 x 2 x 256 x 2 B
    # / 2 on the wire per All-to-All (8.4 MB, 18.6 us on NVLink4 per direction), twice per layer
    pf = step_latency(ep2, prefill=[(0, 4096)]).breakdown["communication_s"]
    assert pf == step_latency(tp2, prefill=[(0, 4096)]).breakdown["communication_s"]


def test_imbalance_needs_ep():
    a = make_client(moe(), "H100", tp=2)
    b = make_client(moe(), "H100", tp=2, efficiency={"expert_imbalance": 2.0})
    assert step_latency(a, decode=[(1, 100)] * 8).total_s == step_latency(b, decode=[(1, 100)] * 8).total_s


# ---- MLA: absorbed decode, expanded prefill ----------------------------------------------------------
DSV3 = dict(model="deepseek-v3", device={"preset": "B200", "memory_GiB": 4000}, tp=8, precision="fp8")


def test_mla_absorbed_decode_by_hand():
    c = make_client(**DSV3)
    # decode attends in the 512-d latent: 2*(2*512 + 64) FLOP per query-key pair per head, 16 heads
    # per device, 61 layers; 1000 more context tokens cost 61 * 16 * 2176 * 1000 FLOP and read
    # 61 * 1000 * 576 latent elements of 1 B
    a = step_latency(c, decode=[(1, 999)]).breakdown
    b = step_latency(c, decode=[(1, 1999)]).breakdown
    assert b["flops"] - a["flops"] == 61 * 16 * 2176 * 1000
    assert b["hbm_bytes"] - a["hbm_bytes"] == 61 * 1000 * 576


def test_mla_expanded_prefill_by_hand():
    ex = make_client(**DSV3)
    ab = make_client(**DSV3, mla_prefill="absorbed")
    # chunk (0, 1000): 500,500 pairs; expanded 2*(2*128 + 64) = 640 FLOP/pair/head, absorbed 2176
    fe = step_latency(ex, prefill=[(0, 1000)]).breakdown["flops"]
    fa = step_latency(ab, prefill=[(0, 1000)]).breakdown["flops"]
    assert fa - fe == 61 * 16 * 500_500 * (2176 - 640)
    # 1000 cached tokens before a chunk of 100: 100,000 more pairs, and their K (128 + 64) and V (128)
    # rebuilt from the latent: 2 * 512 * 2 * 128 FLOP per token per head, 320 elements written + read
    a = step_latency(ex, prefill=[(0, 100)]).breakdown
    b = step_latency(ex, prefill=[(1000, 100)]).breakdown
    assert b["flops"] - a["flops"] == 61 * 16 * (100_000 * 640 + 1000 * 4 * 512 * 128)
    assert b["hbm_bytes"] - a["hbm_bytes"] == 61 * (1000 * 576 + 2 * 1000 * 16 * 320 * 2)


# ---- per-step overhead and CUDA graphs -----------------------------------------------------------------
def test_step_overhead_adds_a_fixed_time():
    c0 = make_client("llama-3.1-8b", "H100")
    c1 = make_client("llama-3.1-8b", "H100", efficiency={"step_overhead_ms": 5.0})
    corr = {"tokens": [1, 4096], "prefill": [2.0, 2.0], "decode": [3.0, 3.0]}
    k0 = make_client("llama-3.1-8b", "H100", step_correction=corr)
    k1 = make_client("llama-3.1-8b", "H100", step_correction=corr, efficiency={"step_overhead_ms": 5.0})
    for pf, dec in (([(0, 512)], []), ([], [(1, 700)] * 9), ([(100, 300)], [(2, 50, 700)])):
        assert step_latency(c1, pf, dec).total_s - step_latency(c0, pf, dec).total_s == pytest.approx(5e-3, abs=1e-15)
        # not scaled by the measured-step correction
        assert step_latency(k1, pf, dec).total_s - step_latency(k0, pf, dec).total_s == pytest.approx(5e-3, abs=1e-15)
        assert step_latency(c1, pf, dec).breakdown["other_s"] - step_latency(c0, pf, dec).breakdown["other_s"] \
            == pytest.approx(5e-3, abs=1e-15)


def test_cuda_graph_padding():
    sizes = [1, 2, 4, 8, 16]
    g = make_client("llama-3.1-8b", "H100", scheduler={"cuda_graph_sizes": sizes})
    e = make_client("llama-3.1-8b", "H100")
    five = step_latency(g, decode=[(1, 500)] * 5).breakdown
    # the GEMMs and collectives of 5 decodes run the captured graph of 8 rows
    assert five["gemm_s"] == step_latency(e, decode=[(1, 500)] * 8).breakdown["gemm_s"]
    # attention and the sampled logit rows are the 5 real ones
    assert five["attention_s"] == step_latency(e, decode=[(1, 500)] * 5).breakdown["attention_s"]
    # beyond the largest graph, and on steps with prefill, nothing is padded
    for pf, dec in (([], [(1, 500)] * 17), ([(0, 3)], [(1, 500)] * 5)):
        assert step_latency(g, pf, dec).total_s == step_latency(e, pf, dec).total_s


def test_vllm_v0_graph_preset():
    c = make_client("llama-3.1-8b", "H100", scheduler={"cuda_graph_sizes": "vllm-v0"})
    assert c.scheduler.cuda_graph_sizes[:5] == (1, 2, 4, 8, 16) and c.scheduler.cuda_graph_sizes[-1] == 256
    e = make_client("llama-3.1-8b", "H100")
    # 100 decodes run the graph of 104
    assert step_latency(c, decode=[(1, 300)] * 100).breakdown["gemm_s"] == \
        step_latency(e, decode=[(1, 300)] * 104).breakdown["gemm_s"]


def test_bad_graph_sizes_are_one_clear_line():
    with pytest.raises(mf.SpecError, match=r"cuda_graph_sizes = \[4, 2\]: .*strictly increasing"):
        mf.parse_scenario({"clients": [{"model": "llama-3.1-8b", "device": "H100",
                                        "scheduler": {"cuda_graph_sizes": [4, 2]}}]})


# ---- kernel == Python twin on the new physics ------------------------------------------------------------
CLIENTS = {
    "gpt-oss-20b": dict(model="gpt-oss-20b", device="H100"),
    "gpt-oss-120b-tp2-ep2": dict(model="openai/gpt-oss-120b", device="B200", tp=2, ep=2,
                                 efficiency={"expert_imbalance": 1.3, "step_overhead_ms": 2.0}),
    "scout-chunked": dict(model="llama-4-scout", device="H200", tp=4, precision="fp8"),
    "maverick-interleaved-pp2": dict(model="llama-4-maverick", device="B200", tp=4, pp=2, precision="nvfp4"),
    "gemma-graphs": dict(model="gemma-3-27b", device="H200", tp=2, scheduler={"cuda_graph_sizes": [1, 2, 4, 8, 16, 32]}),
    "dsv3-expanded": dict(model="deepseek-ai/DeepSeek-R1", device="B200", tp=8),
    "dsv3-fp4-experts": dict(model="nvidia/DeepSeek-R1-FP4", device="B200", tp=8),
    "gpt-oss-120b-dp-attention": dict(model="openai/gpt-oss-120b", device="B200", tp=4, dp_attention=True),
    "dsv3-dp-attention-ep8": dict(model="deepseek-ai/DeepSeek-R1", device="H200", tp=8, ep=8, dp_attention=True),
    "tiny-chunked-unshared": dict(model=tiny(window_kind="chunked", sliding_window=64, global_every=0), device="H100",
                                  shared_prefix_read_once=False),
}


@settings(max_examples=40, deadline=None)
@given(name=st.sampled_from(sorted(CLIENTS)),
       pf=st.lists(st.tuples(st.integers(0, 20000), st.integers(1, 3000)), max_size=3),
       dec=st.lists(st.tuples(st.integers(1, 4), st.integers(0, 3000), st.integers(0, 9000)), max_size=20),
       done=st.integers(0, 3))
def test_kernel_matches_python_twin(name, pf, dec, done):
    c = make_client(**CLIENTS[name])
    done = min(done, len(pf))
    got = step_latency(c, prefill=pf, decode=dec, prompts_done=done).total_s
    want, _ = reference_step_time(c, pf, dec, prompts_done=done)
    assert got == pytest.approx(want, rel=1e-9, abs=1e-15)


# ---- engine runs -----------------------------------------------------------------------------------------
def _scenario(model, **client):
    return {"clients": [{"model": model, "device": "H100", **client}],
            "workload": {"num_requests": 120, "arrival": {"process": "poisson", "rate_rps": 8.0},
                         "input": {"dist": "lognormal", "mean": 900, "std": 600, "max_tokens": 4000},
                         "output": {"dist": "lognormal", "mean": 150, "std": 100, "max_tokens": 800}},
            "simulation": {"seed": 5}}


def test_engine_runs_window_models_and_options_identically_with_and_without_decode_runs():
    doc = _scenario("openai/gpt-oss-20b", efficiency={"step_overhead_ms": 3.0},
                    scheduler={"cuda_graph_sizes": [1, 2, 4, 8, 16, 32, 64]})
    a = mf.simulate(doc)
    b = mf.simulate(doc, decode_runs=False)
    assert a.identical(b)
    assert int(a.n_finished) == 120
    doc = _scenario("llama-3.1-8b", efficiency={"step_overhead_ms": 3.0},
                    scheduler={"cuda_graph_sizes": [1, 2, 4, 8, 16, 32, 64]})
    assert mf.simulate(doc).identical(mf.simulate(doc, decode_runs=False))


def test_step_overhead_sets_a_tpot_floor():
    base = mf.simulate(_scenario("llama-3.1-8b", efficiency={}))
    slow = mf.simulate(_scenario("llama-3.1-8b", efficiency={"step_overhead_ms": 30.0}))
    # every decode step is at least 30 ms longer: the mean time per output token grows by >= 30 ms
    assert float(slow.tpot_mean_ms) >= float(base.tpot_mean_ms) + 30.0 - 1e-6
    assert float(slow.tpot_p50_ms) >= 30.0
