"""MoE step physics against hand-computed values (docs/step-model.md, "FP4 experts with FP8
activations"): the MMA rate of MXFP4 experts multiplied with MXFP8 activations."""
import pytest

from mistfast import step_latency
from mistfast.calibration_store import row_precision

from .builders import check_efficiency_scope
from .builders import model_client as make_client


# ---- FP4 experts with FP8 activations ---------------------------------------------------------
def test_row_precision_gpt_oss_w4a8_on_fp4_devices():
    native = "MXFP4 (native gpt-oss MoE weights)"
    # Blackwell / CDNA4: MXFP4 weights x MXFP8 activations -> the FP8 MMA rate
    assert row_precision(native, "openai/gpt-oss-120b", "B200")["experts_compute"] == "fp8"
    assert row_precision(native, "openai/gpt-oss-120b", "MI355X")["experts_compute"] == "fp8"
    # Hopper: W4A16, dequantised in the GEMM
    assert row_precision(native, "openai/gpt-oss-120b", "H200")["experts_compute"] == "bf16"
    # NVFP4 / MXFP4 DeepSeek-R1 quantise the activations too (W4A4): the FP4 rate stays
    assert row_precision("NVFP4", "nvidia/DeepSeek-R1-FP4", "B200")["experts_compute"] == "nvfp4"
    assert row_precision("MXFP4", "amd/DeepSeek-R1-MXFP4-Preview", "MI355X")["experts_compute"] == "mxfp4"


def test_gpt_oss_expert_gemm_at_fp8_rate_by_hand():
    w4a8 = make_client("gpt-oss-120b", "B200")      # native precision: experts_compute fp8
    assert w4a8.precision.experts_compute == "fp8"
    w4a4 = make_client("gpt-oss-120b", "B200", precision={
        "weights": "bf16", "compute": "bf16", "kv": "bf16", "activations": "bf16",
        "experts": "mxfp4", "experts_compute": "mxfp4"})
    T, K_, D, E, L = 8192, 4, 2880, 128, 36
    W = 3 * D * 2880                                  # one expert: gate, up, down
    F = 2.0 * T * K_ * W                              # expert FLOP per layer
    e_hit = E * (1 - (1 - K_ / E) ** T)               # experts the 8,192 tokens touch (all 128)
    Y = e_hit * W * 0.53125 + 2.0 * T * K_ * D * 2    # MXFP4 weights + token rows in and out
    bw = 8000e9 * 0.75
    t8 = max(F / (4500e12 * 0.75), Y / bw)            # compute-bound at the FP8 rate
    t4 = max(F / (9000e12 * 0.75), Y / bw)            # memory-bound at the FP4 rate
    assert t8 > Y / bw > F / (9000e12 * 0.75)
    g8 = step_latency(w4a8, prefill=[(0, T)]).breakdown["gemm_s"]
    g4 = step_latency(w4a4, prefill=[(0, T)]).breakdown["gemm_s"]
    assert g8 - g4 == pytest.approx(L * (t8 - t4), rel=1e-9)


# ---- expert-GEMM efficiency η_e (efficiency.expert_compute) ----------------------------------
def test_expert_compute_slows_compute_bound_expert_gemms_by_hand(monkeypatch):
    """η_e multiplies the expert GEMMs' peak on top of η_c (docs/step-model.md, "Expert GEMM
    efficiency"). gpt-oss-120b on one B200, one 8,192-token prefill: the expert op of each of the
    36 layers is max(F / (4,500 TFLOP/s · 0.75 · η_e), Y / (8 TB/s · 0.75)) with F = 2·T·K·W; at
    η_e = 0.5 it is compute-bound, so the step's GEMM time grows by 36 · (F/(P·0.5) − F/P)."""
    from mistfast import stepmodel as SM
    monkeypatch.setattr(SM, "EXPERT_ETA_SCOPE", "all")   # the arithmetic on every expert format
    T, K_, D, E, L = 8192, 4, 2880, 128, 36
    W = 3 * D * 2880
    F = 2.0 * T * K_ * W
    Y = E * (1 - (1 - K_ / E) ** T) * W * 0.53125 + 2.0 * T * K_ * D * 2
    P, bw = 4500e12 * 0.75, 8000e9 * 0.75
    t1, t_half = max(F / P, Y / bw), max(F / (P * 0.5), Y / bw)
    assert t_half == F / (P * 0.5) and t1 == F / P          # compute-bound either way
    base = make_client("gpt-oss-120b", "B200")
    slow = make_client("gpt-oss-120b", "B200", efficiency={"expert_compute": 0.5})
    g1 = step_latency(base, prefill=[(0, T)]).breakdown["gemm_s"]
    g_half = step_latency(slow, prefill=[(0, T)]).breakdown["gemm_s"]
    assert g_half - g1 == pytest.approx(L * (t_half - t1), rel=1e-9)
    assert L * (t_half - t1) == pytest.approx(L * F / P, rel=1e-12)   # the expert GEMMs take twice as long


def test_expert_compute_leaves_decode_dense_models_and_genz_unchanged(monkeypatch):
    """A decode step of 64 sequences reads the weights of ~110 of 128 experts per layer: by hand
    Y/BW ≥ 111·W·0.53125 / 6 TB/s = 19·F/(P·η_e), F = 2·64·4·W, P·η_e = 3,375 TFLOP/s · 0.3, so the step is
    bit-identical at η_e = 0.3; a dense model has no expert op; GenZ compat has one precision and
    no η_e. Only the diagnostic ideal_compute_s (Σ F / peak) moves."""
    from mistfast import stepmodel as SM
    monkeypatch.setattr(SM, "EXPERT_ETA_SCOPE", "all")   # the arithmetic on every expert format
    T, K_, E, W = 64, 4, 128, 3 * 2880 * 2880
    e_hit = E * (1 - (1 - K_ / E) ** T)
    assert e_hit * W * 0.53125 / 6000e9 > 19 * 2.0 * T * K_ * W / (4500e12 * 0.75 * 0.3)
    dec = [(1, 2000)] * T
    for model, dev, extra in (("gpt-oss-120b", "B200", {}), ("llama-3.1-8b", "H100", {}),
                              ("mixtral-8x7b", "H100", {"reference": "genz", "tp": 2})):
        a = make_client(model, dev, **extra)
        b = make_client(model, dev, efficiency={"expert_compute": 0.3}, **extra)
        pf = [] if model == "gpt-oss-120b" else [(0, 4096)]
        la, lb = step_latency(a, prefill=pf, decode=dec), step_latency(b, prefill=pf, decode=dec)
        assert la.total_s == lb.total_s, model
        # (ideal_compute_s, the sum of F / peak over all ops, is a diagnostic that does follow η_e)
        drop = ("ideal_compute_s",)
        assert {k: v for k, v in la.breakdown.items() if k not in drop} == \
            {k: v for k, v in lb.breakdown.items() if k not in drop}, model


def test_recosting_at_trial_expert_compute_matches_the_client(monkeypatch):
    """The fit's re-costing (StepSet.times with eta_e) equals a client built with that η_e, and
    eta_e=None keeps each client's own."""
    from mistfast import stepmodel as SM
    monkeypatch.setattr(SM, "EXPERT_ETA_SCOPE", "all")   # the arithmetic on every expert format
    from mistfast.calibration_recost import StepSet
    base = make_client("gpt-oss-20b", "H100", efficiency={"compute": 0.6, "memory": 0.7})
    own = make_client("gpt-oss-20b", "H100", efficiency={"compute": 0.6, "memory": 0.7, "expert_compute": 0.45})
    st = StepSet()
    st.add(base, [(0, 4096)], [])
    st.add(own, [(0, 4096)], [])
    st.build()
    t = st.times(0.6, 0.7, 0.0, eta_e=0.45)
    ref = step_latency(own, prefill=[(0, 4096)]).total_s
    assert t[0] == pytest.approx(ref, rel=1e-12) and t[1] == pytest.approx(ref, rel=1e-12)
    t_own = st.times(0.6, 0.7, 0.0)
    assert t_own[0] == pytest.approx(step_latency(base, prefill=[(0, 4096)]).total_s, rel=1e-12)
    assert t_own[1] == pytest.approx(ref, rel=1e-12)
    assert t_own[1] > 1.2 * t_own[0]                       # the expert GEMMs are a real share


def test_expert_compute_scope_weight_only(monkeypatch):
    """stepmodel.EXPERT_ETA_SCOPE = "weight_only": η_e acts on W4A16 experts (MXFP4 weights in a
    BF16 GEMM, gpt-oss on Hopper) and not on native low-precision MMAs (MXFP4 x MXFP8 on B200),
    nor on FP8 x FP8 experts; with the default "all" it acts on every one (test above)."""
    from mistfast import stepmodel as SM
    monkeypatch.setattr(SM, "EXPERT_ETA_SCOPE", "weight_only")
    w4a16 = {"weights": "bf16", "compute": "bf16", "kv": "bf16", "activations": "bf16",
             "experts": "mxfp4", "experts_compute": "bf16"}
    for dev, prec, acts in (("H100", w4a16, True), ("B200", None, False), ("H200", "fp8", False)):
        kw = {} if prec is None else {"precision": prec}
        a = make_client("gpt-oss-120b", dev, **kw)
        b = make_client("gpt-oss-120b", dev, efficiency={"expert_compute": 0.5}, **kw)
        assert SM.expert_eta_applies(b) is acts, dev
        ta = step_latency(a, prefill=[(0, 8192)]).total_s
        tb = step_latency(b, prefill=[(0, 8192)]).total_s
        assert (tb > 1.2 * ta) if acts else (tb == ta), (dev, prec)


def test_expert_compute_scope_with_tp_split_experts(monkeypatch):
    """stepmodel.EXPERT_ETA_SCOPE = "weight_only+tp_split" (measured, not the default): η_e also acts
    on native FP8 experts when TP splits each expert (t_e = tp/ep > 1), not when EP holds whole
    experts (t_e = 1). DeepSeek-V3 FP8 on B200, one 8,192-token prefill at tp 8, ep 1: at η_e = 0.1
    and 0.05 the routed and shared expert ops are compute-bound (at η_e = 1 the routed op is bound by
    reading every expert's slice), so halving η_e adds exactly 10x their FLOP time:
    58 MoE layers x (2·T·K·3·D·De + 2·T·3·D·De)/8 FLOP at 4,500 TFLOP/s x 0.75."""
    from mistfast import stepmodel as SM
    monkeypatch.setattr(SM, "EXPERT_ETA_SCOPE", "weight_only+tp_split")
    dev = {"preset": "B200", "memory_GiB": 4000}
    eff = {"compute": 0.75, "memory": 0.75}

    def ds(eta, **kw):
        return make_client("deepseek-v3", dev, tp=8, precision="fp8", efficiency={**eff, "expert_compute": eta}, **kw)
    assert SM.expert_eta_applies(ds(0.5)) and not SM.expert_eta_applies(ds(0.5, ep=8))
    assert not SM.expert_eta_applies(make_client("llama-3.1-70b", "B200", tp=8, precision="fp8"))
    T, K, D, De = 8192, 8, 7168, 2048
    flop_time = 58 * (2 * T * K * 3 * D * De + 2 * T * 3 * D * De) / 8 / (4500e12 * 0.75)
    t10 = step_latency(ds(0.1), prefill=[(0, T)]).breakdown["gemm_s"]
    t05 = step_latency(ds(0.05), prefill=[(0, T)]).breakdown["gemm_s"]
    assert t05 - t10 == pytest.approx(10 * flop_time, rel=1e-9)
    # EP holds whole experts: η_e does not act
    assert step_latency(ds(0.1, ep=8), prefill=[(0, T)]).total_s == step_latency(ds(1.0, ep=8), prefill=[(0, T)]).total_s


def test_expert_compute_scope_gemm16(monkeypatch):
    """stepmodel.EXPERT_ETA_SCOPE = "gemm16": η_e acts on every expert GEMM that multiplies at 16
    bits on its device -- BF16 experts (Qwen3-235B-A22B BF16 on A100 / H100: vLLM's Triton
    fused_moe), W4A16 (gpt-oss on Hopper) and an FP8 checkpoint on A100, which has no FP8 MMA
    (engines run it W8A16) -- and not on native FP8 x FP8 (H100) or MXFP4 x MXFP8 (B200) MMAs.
    Where it acts, a long prefill's expert op is compute-bound, so at η_e = 0.5 its expert GEMM
    time doubles: the step grows by exactly the expert FLOPs F over P·η_c (hand count below)."""
    from mistfast import stepmodel as SM
    monkeypatch.setattr(SM, "EXPERT_ETA_SCOPE", "gemm16")
    # the device's MMA format: FP8 on A100 falls back to its bf16 rate, on H100 it is native
    from mistfast.specs import make_client as mk
    assert mk("qwen3-235b-a22b", "A100", tp=8, precision="fp8").device.mma_format("fp8") == "bf16"
    assert mk("qwen3-235b-a22b", "H100", tp=4, precision="fp8").device.mma_format("fp8") == "fp8"
    cases = (("qwen3-235b-a22b", "A100", 8, "bf16", True), ("qwen3-235b-a22b", "H100", 8, "bf16", True),
             ("qwen3-235b-a22b", "A100", 8, "fp8", True), ("qwen3-235b-a22b", "H100", 4, "fp8", False),
             ("gpt-oss-120b", "H100", 1, {"weights": "bf16", "compute": "bf16", "kv": "bf16", "activations": "bf16",
                                          "experts": "mxfp4", "experts_compute": "bf16"}, True),
             ("gpt-oss-120b", "B200", 1, None, False))
    check_efficiency_scope("expert_compute", 0.5, SM.expert_eta_applies, cases)
    # hand count, Qwen3-235B-A22B BF16 on 8 x A100, one 8,192-token prefill: the routed experts
    # are F = 2·T·K·3·D·De/t FLOP per layer per device (T 8,192, K 8, D 4,096, De 1,536, t 8),
    # compute-bound at 8,192·8/128 = 512 tokens per expert (intensity 512 FLOP/B > the A100 ridge
    # 312/2.04·0.75/0.75 ≈ 153), so halving η_e adds F/(P·η_c) per layer: 94 layers, P = 312 TFLOP/s, η_c 0.75
    a = make_client("qwen3-235b-a22b", "A100", tp=8, precision="bf16")
    b = make_client("qwen3-235b-a22b", "A100", tp=8, precision="bf16", efficiency={"expert_compute": 0.5})
    m = a.model
    assert (m.num_experts, m.top_k, m.hidden_size, m.num_layers) == (128, 8, 4096, 94)
    F = 2 * 8192 * 8 * 3 * 4096 * 1536 / 8
    extra = 94 * F / (312e12 * 0.75)
    ta = step_latency(a, prefill=[(0, 8192)]).total_s
    tb = step_latency(b, prefill=[(0, 8192)]).total_s
    assert tb - ta == pytest.approx(extra, rel=1e-6)


def test_dense_weight_only_gemms_at_expert_compute_by_hand(monkeypatch):
    """stepmodel.dense_eta_applies: the dense GEMMs of a weight-only model (FP8 weights on A100,
    which multiplies them at its bf16 rate: W8A16; AWQ INT4: W4A16) run at η_c·η_e of the peak.
    Qwen3-14B FP8 on A100, one 8,192-token prefill at η_c 0.75: the linear layers are compute-bound
    (8,192 tokens on 1-byte weights: 16,384 FLOP/B against a ridge near 150), so halving η_e adds
    exactly their FLOPs over P·η_c: F = 2·T·40 layers x (5,120·(40 + 2·8)·128 + 40·128·5,120 +
    3·5,120·17,408) (QKV, O, gated FFN; the LM head on the one sampled row is weight-read-bound;
    config.json of Qwen/Qwen3-14B);
    BF16 weights, native FP8 (H100) and the switch off are unchanged; the fit's re-costing matches."""
    from mistfast import stepmodel as SM
    from mistfast.calibration_recost import StepSet
    w8a16 = {"weights": "fp8", "compute": "fp8", "kv": "bf16", "activations": "bf16"}
    a = make_client("qwen3-14b", "A100", precision=w8a16)
    b = make_client("qwen3-14b", "A100", precision=w8a16, efficiency={"expert_compute": 0.5})
    # off by default (held out it traded TTFT/TPOT for throughput): η_e leaves a dense model alone
    assert SM.DENSE_WEIGHT_ONLY_ETA is False and not SM.dense_eta_applies(b)
    assert step_latency(a, prefill=[(0, 8192)]).total_s == step_latency(b, prefill=[(0, 8192)]).total_s
    monkeypatch.setattr(SM, "DENSE_WEIGHT_ONLY_ETA", True)
    m = a.model
    assert (m.hidden_size, m.num_layers, m.num_heads, m.num_kv_heads, m.head_dim, m.ffn_dim, m.vocab_size) == \
        (5120, 40, 40, 8, 128, 17408, 151936)
    assert SM.dense_eta_applies(b)
    T = 8192
    per_layer = 5120 * (40 + 2 * 8) * 128 + 40 * 128 * 5120 + 3 * 5120 * 17408
    F = 2 * T * 40 * per_layer   # (the LM head runs on the one sampled row: weight-read-bound, unchanged)
    ta = step_latency(a, prefill=[(0, T)]).total_s
    tb = step_latency(b, prefill=[(0, T)]).total_s
    assert tb - ta == pytest.approx(F / (312e12 * 0.75), rel=1e-6)
    # not weight-only: BF16 weights; FP8 on H100 multiplies natively (W8A8)
    for dev, prec in (("A100", "bf16"), ("H100", "fp8")):
        c1 = make_client("qwen3-14b", dev, precision=prec)
        c2 = make_client("qwen3-14b", dev, precision=prec, efficiency={"expert_compute": 0.5})
        assert not SM.dense_eta_applies(c2)
        assert step_latency(c1, prefill=[(0, T)]).total_s == step_latency(c2, prefill=[(0, T)]).total_s
    # the re-costing at a trial η_e equals the client built with it
    st = StepSet()
    st.add(a, [(0, T)], [])
    st.add(b, [(0, T)], [])
    st.build()
    t = st.times(0.75, 0.75, 0.0, eta_e=0.5)
    assert t[0] == pytest.approx(tb, rel=1e-12) and t[1] == pytest.approx(tb, rel=1e-12)
    t_own = st.times(0.75, 0.75, 0.0)
    assert t_own[0] == pytest.approx(ta, rel=1e-12) and t_own[1] == pytest.approx(tb, rel=1e-12)


# ---- W8A8 FP8 expert-GEMM efficiency η_f8 (efficiency.expert_fp8, session 11) -------------------
def test_expert_fp8_scope():
    """η_f8 acts on MoE experts of a block-scaled FP8 family stored in FP8 and multiplied at the device's
    native FP8 rate (DeepSeek-R1 FP8 on H200 / B200 / MI300X, Qwen3-235B FP8 on H100) and on nothing
    else: not Mixtral FP8 (per-tensor scales), not an
    FP8 checkpoint on A100 (W8A16, η_e's scope), not FP4 experts (gpt-oss MXFP4, DeepSeek NVFP4),
    not BF16 experts, not a dense FP8 model, not GenZ compat. Where it does not act, a client with
    η_f8 = 0.2 is bit-identical to one without."""
    from mistfast import stepmodel as SM
    cases = (("deepseek-v3", "H200", 8, "fp8", True), ("deepseek-v3", "B200", 8, "fp8", True),
             ("deepseek-v3", "MI300X", 8, "fp8", True), ("qwen3-235b-a22b", "H100", 4, "fp8", True),
             ("qwen3-235b-a22b", "A100", 8, "fp8", False), ("qwen3-235b-a22b", "H100", 8, "bf16", False),
             ("gpt-oss-120b", "B200", 1, None, False), ("llama-3.1-8b", "H100", 1, "fp8", False),
             ("mixtral-8x7b", "H100", 2, "fp8", False),   # per-tensor FP8 checkpoints: not block-scaled
             ("deepseek-v3", "B200", 4, {"weights": "fp8", "compute": "fp8", "kv": "fp8", "activations": "bf16",
                                         "experts": "nvfp4", "experts_compute": "nvfp4"}, False))
    for model, dev, tp, prec, acts in cases:
        kw = {} if prec is None else {"precision": prec}
        a = make_client(model, dev, tp=tp, **kw)
        b = make_client(model, dev, tp=tp, efficiency={"expert_fp8": 0.2}, **kw)
        assert SM.expert_fp8_applies(b) is acts, (model, dev, prec)
        ta = step_latency(a, prefill=[(0, 8192)]).total_s
        tb = step_latency(b, prefill=[(0, 8192)]).total_s
        assert (tb > ta) if acts else (tb == ta), (model, dev, prec)
    g = make_client("mixtral-8x7b", "H100", tp=2, precision="fp8", reference="genz",
                    efficiency={"expert_fp8": 0.2})
    assert not SM.expert_fp8_applies(g)


def test_expert_fp8_by_hand():
    """DeepSeek-R1 FP8 on 8 x H200 (TP-split experts: De/t = 2,048/8 = 256 columns per rank), one
    8,192-token prefill. Routed experts per layer and rank: F = 2·T·K·3·D·De/t FLOP (T 8,192, K 8,
    D 7,168, De 2,048, t 8) = 7.2e11; Y = all 256 experts' slices (3·D·De/t bytes each, FP8) plus the
    token rows in and out (2·T·K·D·2 bytes) = 3.29 GB. At η_f8 = 1 the op is memory-bound
    (Y / (4.8 TB/s · 0.75) = 0.91 ms > F / (1,978.9 TFLOP/s · 0.75) = 0.49 ms); at η_f8 = 0.1 it is
    compute-bound (4.9 ms). The shared expert (one, 3·D·De/t weights per rank) is its own op at the
    same expert peak: max(F_sh/(P·η_f8), Y_sh/BW) with F_sh = 2·T·3·D·De/t. 58 MoE layers."""
    T, K_, D, De, t, E, L = 8192, 8, 7168, 2048, 8, 256, 58
    a = make_client("deepseek-v3", "H200", tp=t, precision="fp8")
    b = make_client("deepseek-v3", "H200", tp=t, precision="fp8", efficiency={"expert_fp8": 0.1})
    m = a.model
    assert (m.num_experts, m.top_k, m.hidden_size, m.expert_ffn_dim, m.num_shared_experts) == (E, K_, D, De, 1)
    P, bw = 1978.9e12 * 0.75, 4800e9 * 0.75
    F = 2.0 * T * K_ * 3 * D * De / t
    Y = E * (1 - (1 - K_ / E) ** T) * 3 * D * De / t * 1.0 + 2.0 * T * K_ * D * 2
    assert Y / bw > F / P and F / (P * 0.1) > Y / bw
    w_sh = 3 * D * De * m.num_shared_experts / t
    F_sh = 2.0 * T * w_sh
    Y_sh = w_sh * 1.0 + 2.0 * T * D * 2
    t_sh1, t_sh = max(F_sh / P, Y_sh / bw), max(F_sh / (P * 0.1), Y_sh / bw)
    extra = L * ((F / (P * 0.1) - Y / bw) + (t_sh - t_sh1))
    ga = step_latency(a, prefill=[(0, T)]).breakdown["gemm_s"]
    gb = step_latency(b, prefill=[(0, T)]).breakdown["gemm_s"]
    assert gb - ga == pytest.approx(extra, rel=1e-6)


def test_recosting_at_trial_expert_fp8_matches_the_client():
    """StepSet.times with eta_f8 equals a client built with that η_f8; None keeps each client's own;
    it leaves clients outside the scope (gpt-oss MXFP4 on B200) alone."""
    from mistfast.calibration_recost import StepSet
    base = make_client("deepseek-v3", "H200", tp=8, precision="fp8", efficiency={"compute": 0.6, "memory": 0.7})
    own = make_client("deepseek-v3", "H200", tp=8, precision="fp8",
                      efficiency={"compute": 0.6, "memory": 0.7, "expert_fp8": 0.15})
    oss = make_client("gpt-oss-120b", "B200", efficiency={"compute": 0.6, "memory": 0.7})
    st = StepSet()
    st.add(base, [(0, 8192)], [])
    st.add(own, [(0, 8192)], [])
    st.add(oss, [(0, 8192)], [])
    st.build()
    t = st.times(0.6, 0.7, 0.0, eta_f8=0.15)
    ref = step_latency(own, prefill=[(0, 8192)]).total_s
    ref_oss = step_latency(oss, prefill=[(0, 8192)]).total_s
    assert t[0] == pytest.approx(ref, rel=1e-12) and t[1] == pytest.approx(ref, rel=1e-12)
    assert t[2] == pytest.approx(ref_oss, rel=1e-12)
    t_own = st.times(0.6, 0.7, 0.0)
    assert t_own[0] == pytest.approx(step_latency(base, prefill=[(0, 8192)]).total_s, rel=1e-12)
    assert t_own[1] == pytest.approx(ref, rel=1e-12)
    # the slow FP8 experts dominate the 8k prefill (the step's memory-bound ops, among them the
    # replicated element-wise traffic on since session 16, do not change with η_f8)
    assert t_own[1] > 1.8 * t_own[0]


def test_expert_fp8_kernel_matches_the_twin():
    """The kernel with η_f8 = 0.15 equals the independent Python twin (tests/reference) on mixed
    prefill + decode steps of DeepSeek-R1 FP8 at tp 8 (TP-split experts) and tp 8 / ep 8."""
    from tests.reference.step_reference import reference_step_time
    for kw in ({"tp": 8}, {"tp": 8, "ep": 8}):
        c = make_client("deepseek-v3", "H200", precision="fp8",
                        efficiency={"compute": 0.7, "memory": 0.8, "expert_fp8": 0.15}, **kw)
        for pf, dec in [([(0, 8192)], []), ([(0, 3000), (500, 700)], [(1, 0, 900)] * 17), ([], [(1, 0, 2000)] * 64)]:
            got = step_latency(c, prefill=pf, decode=dec).total_s
            want, _ = reference_step_time(c, pf, dec)
            assert got == pytest.approx(want, rel=1e-9), (kw, pf)
