"""Data-parallel attention + expert parallelism (docs/step-model.md) against hand-computed values:
each of the tp ranks holds the whole attention block and runs it on its own T/tp token rows and
its own sequences' KV; the experts stay split over ep; no per-layer AllReduce."""
import pytest

from mistfast import step_latency
from mistfast.specs import SpecError, make_client
from tests.reference.step_reference import reference_step_time

EFF = {"compute": 0.75, "memory": 0.75}   # explicit, so the hand values do not follow a calibration


def moe(**kw):
    """One MoE layer: D 256, 4 query heads of 64, E = 8 experts of De = 512, top-2, bf16."""
    m = dict(architecture="decoder", hidden_size=256, num_layers=1, num_heads=4, num_kv_heads=4, head_dim=64,
             ffn_dim=512, gated_ffn=True, vocab_size=1000, num_experts=8, top_k=2, expert_ffn_dim=512,
             num_shared_experts=0, first_dense_layers=0)
    m.update(kw)
    return m


def client(model=None, **kw):
    return make_client(model or moe(), "H100", efficiency=EFF, **kw)


def link(c):
    """(alpha s, beta B/s per direction) of the H100 NVLink domain, from the device data."""
    return c.device.scaleup_latency_us * 1e-6, c.device.scaleup_bidir_GBps / 2 * 1e9


def test_no_allreduce_and_a_smaller_all_to_all(monkeypatch):
    from mistfast import stepmodel
    monkeypatch.setattr(stepmodel, "EP_DISPATCH_UNDER_TP_ATTENTION", False)
    T = 64
    dpa = client(tp=2, ep=2, dp_attention=True)
    alpha, beta = link(dpa)
    s0 = 5e-6
    # a rank holds T/2 tokens and sends their K = 2 copies: all-to-all of T*K*D*2 B / ep = 32,768 B,
    # (ep-1)/ep of it on the wire; dispatch and combine; no AllReduce
    a2a = s0 + alpha + 0.5 * (T * 2 * 256 * 2 / 2) / beta
    got = step_latency(dpa, decode=[(1, 100)] * T).breakdown["communication_s"]
    # the LM head's AllGather of the sampled rows is the same in both layouts: 64 x 1000 x 2 B
    lm = s0 + alpha + 0.5 * (T * 1000 * 2) / beta
    assert got == pytest.approx(2 * a2a + lm, rel=1e-12)
    # TP attention with EP: every rank holds all T tokens, so EP moves none; the two AllReduces only
    tp = client(tp=2, ep=2)
    ar = s0 + 2 * alpha + 2 * 0.5 * (T * 256 * 2) / beta
    assert step_latency(tp, decode=[(1, 100)] * T).breakdown["communication_s"] == \
        pytest.approx(2 * ar + lm, rel=1e-12)


def test_former_tp_attention_dispatch_on_request(monkeypatch):
    # stepmodel.EP_DISPATCH_UNDER_TP_ATTENTION = True: the former model, a dispatch and a combine of
    # all T tokens' K copies, (ep-1)/ep of T*K*D*2 B on the wire, on top of the AllReduces
    from mistfast import stepmodel
    monkeypatch.setattr(stepmodel, "EP_DISPATCH_UNDER_TP_ATTENTION", True)
    T = 64
    tp = client(tp=2, ep=2)
    alpha, beta = link(tp)
    s0 = 5e-6
    ar = s0 + 2 * alpha + 2 * 0.5 * (T * 256 * 2) / beta
    a2a_tp = s0 + alpha + 0.5 * (T * 2 * 256 * 2) / beta
    lm = s0 + alpha + 0.5 * (T * 1000 * 2) / beta
    assert step_latency(tp, decode=[(1, 100)] * T).breakdown["communication_s"] == \
        pytest.approx(2 * ar + 2 * a2a_tp + lm, rel=1e-12)
    assert step_latency(tp, decode=[(1, 100)] * T).total_s == \
        pytest.approx(reference_step_time(tp, [], [(1, 100)] * T)[0], rel=1e-9)


def test_expert_tp_gathers_tokens():
    # ep = 1 (TensorRT-LLM attention DP with TP experts): AllGather T*D*2 B before the experts and
    # ReduceScatter after, each (t-1)/t on the wire
    T = 64
    c = client(tp=2, dp_attention=True)
    alpha, beta = link(c)
    s0 = 5e-6
    ag = s0 + alpha + 0.5 * (T * 256 * 2) / beta
    lm = s0 + alpha + 0.5 * (T * 1000 * 2) / beta
    assert step_latency(c, decode=[(1, 100)] * T).breakdown["communication_s"] == pytest.approx(2 * ag + lm, rel=1e-12)


def test_mqa_kv_read_is_not_replicated():
    # one KV head over tp = 2: TP replicates it (ceil(1/2) = 1 head per rank), DP attention reads
    # each sequence's head on one rank only: half the bytes per rank
    T, ctx = 64, 1000
    tp = client(moe(num_kv_heads=1), tp=2, ep=2)
    dpa = client(moe(num_kv_heads=1), tp=2, ep=2, dp_attention=True)
    kv_tp = T * 2 * 1 * 64 * 2 * (ctx + 1)     # K and V, 1 head of 64, bf16, ctx + 1 keys
    a_tp = step_latency(tp, decode=[(1, ctx)] * T).breakdown["attention_s"]
    a_dp = step_latency(dpa, decode=[(1, ctx)] * T).breakdown["attention_s"]
    bw = 3350e9 * 0.75
    assert a_tp == pytest.approx(kv_tp / bw, rel=1e-12)      # memory bound
    assert a_dp == pytest.approx(kv_tp / 2 / bw, rel=1e-12)
    assert tp.kv_bytes_per_token_device() == 2 * 1 * 64 * 2 == 2 * dpa.kv_bytes_per_token_device()


def test_attention_weights_are_replicated():
    tp = client(tp=2, ep=2)
    dpa = client(tp=2, ep=2, dp_attention=True)
    # attention per rank: QKV D*(H+2Hkv)*dh + O H*dh*D = 196,608 + 65,536 elements whole, half under TP
    assert dpa.weight_bytes_device() - tp.weight_bytes_device() == (196_608 + 65_536) // 2 * 2
    # the QKV GEMM of 64 rows: same FLOP (32 rows x all heads vs 64 rows x half), weights read twice over
    T = 64
    b_tp = step_latency(tp, decode=[(1, 0)] * T).breakdown
    b_dp = step_latency(dpa, decode=[(1, 0)] * T).breakdown
    qkv_o_tp = 98_304 * 2 + T * (256 + 384) * 2 + 32_768 * 2 + T * (128 + 256) * 2
    qkv_o_dp = 196_608 * 2 + T / 2 * (256 + 768) * 2 + 65_536 * 2 + T / 2 * (256 + 256) * 2
    emb = T * 256 * 2 - T / 2 * 256 * 2          # embedding gather: the rank's own rows
    router = T / 2 * (256 + 8) * 2               # router activations: the rank's own rows (weights alike)
    # replicated element-wise traffic (residual-add + RMSNorm 8 D per layer, MoE combine (K + 1) D with
    # K = 2): a TP rank runs it on all 64 rows, a DP-attention rank on its own 32
    elem = (64 - T / 2) * (8 + 2 + 1) * 256 * 2
    assert b_dp["hbm_bytes"] - b_tp["hbm_bytes"] == pytest.approx(qkv_o_dp - qkv_o_tp - emb - router - elem,
                                                                  rel=1e-12)


def test_mla_latent_read_split_over_ranks():
    dev = {"preset": "B200", "memory_GiB": 4000}
    tp = make_client("deepseek-v3", dev, tp=8, ep=8, precision="fp8", efficiency=EFF)
    dpa = make_client("deepseek-v3", dev, tp=8, ep=8, precision="fp8", efficiency=EFF, dp_attention=True)
    # latent of 576 fp8 elements per token per layer: every TP rank reads all of it; under DP
    # attention each rank its own 1/8 of the sequences
    assert tp.kv_bytes_per_token_device() == 576 * 61 == 8 * dpa.kv_bytes_per_token_device()
    T, ctx = 256, 4000
    a_tp = step_latency(tp, decode=[(1, ctx)] * T).breakdown["attention_s"]
    a_dp = step_latency(dpa, decode=[(1, ctx)] * T).breakdown["attention_s"]
    pairs = T * (ctx + 1)
    flop = 2 * (2 * 512 + 64) * 16 * pairs          # absorbed decode, 128/8 heads per rank either way
    latent = 576 * pairs                             # fp8 latent bytes per layer
    bf16_peak, hbm = 2250e12 * 0.75, 8000e9 * 0.75   # B200 dense BF16 (attention runs in bf16), HBM
    assert a_tp == pytest.approx(61 * max(flop / bf16_peak, latent / hbm), rel=1e-12)
    assert a_dp == pytest.approx(61 * max(flop / bf16_peak, latent / 8 / hbm), rel=1e-12)
    assert a_dp < a_tp / 4                           # from memory bound to compute bound


@pytest.mark.parametrize("kw", [dict(model="deepseek-v3", tp=8, ep=8, precision="fp8"),
                                dict(model="gpt-oss-120b", tp=4),
                                dict(model="gpt-oss-120b", tp=4, ep=2, pp=2)])
def test_kernel_matches_twin(kw):
    c = make_client(device={"preset": "B200", "memory_GiB": 4000}, dp_attention=True,
                    efficiency={"expert_imbalance": 1.2, **EFF}, **kw)
    for pf, dec in [([(0, 3000), (500, 700)], [(1, 0, 900)] * 17), ([], [(2, 300, 5000)] * 40), ([(0, 1)], [])]:
        got = step_latency(c, prefill=pf, decode=dec).total_s
        want, _ = reference_step_time(c, pf, dec)
        assert got == pytest.approx(want, rel=1e-9)


@pytest.mark.parametrize("kw,needle", [(dict(model="llama-3.1-8b", tp=2), "MoE model"),
                                       (dict(model=moe(), tp=1), "tp >= 2")])
def test_bad_dp_attention_is_one_clear_line(kw, needle):
    with pytest.raises(SpecError) as e:
        make_client(device="H100", dp_attention=True, **kw)
    msg = str(e.value)
    assert "dp_attention" in msg and needle in msg and "Traceback" not in msg
