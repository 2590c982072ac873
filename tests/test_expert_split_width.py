"""Per-rank width of TP-split expert GEMMs (stepmodel.EXPERT_SPLIT_HALF_WIDTH; docs/step-model.md,
"Per-rank GEMM shapes, session 13"): a half-width efficiency n / (n + N0) of the per-rank expert
width n = De / t_e, relative to the whole expert. Off is bit-identical; on, by hand."""
import pytest

from mistfast import step_latency, stepmodel
from mistfast.kernels import steptime as K
from mistfast.stepmodel import client_params, expert_split_factor
from .builders import model_client as make_client


@pytest.fixture
def n0():
    """Set the switch for one test and put it back."""
    old = stepmodel.EXPERT_SPLIT_HALF_WIDTH
    yield lambda v: setattr(stepmodel, "EXPERT_SPLIT_HALF_WIDTH", v)
    stepmodel.EXPERT_SPLIT_HALF_WIDTH = old


def test_factor_by_hand(n0):
    # gpt-oss-120b: De = 2,880. tp 8, ep 1 -> t_e = 8, n = 360 columns per rank. N0 = 400:
    #   eta_N(360) = 360 / 760 = 0.473684..., eta_N(2880) = 2880 / 3280 = 0.878048...
    #   factor = 0.473684 / 0.878048 = 0.539474 (= 360 * 3280 / (760 * 2880))
    n0(400.0)
    c8 = make_client("gpt-oss-120b", "B200", tp=8)
    assert expert_split_factor(c8) == pytest.approx(360 * 3280 / (760 * 2880), rel=1e-15)
    # tp 2: n = 1,440 -> 1440 * 3280 / (1840 * 2880) = 0.891304
    c2 = make_client("gpt-oss-120b", "B200", tp=2)
    assert expert_split_factor(c2) == pytest.approx(1440 * 3280 / (1840 * 2880), rel=1e-15)
    # N0 = 0: every GEMM at its full share, no change
    n0(0.0)
    assert expert_split_factor(c8) == 1.0


def test_off_and_unsplit_experts_are_bit_identical(n0):
    dec = [(1, 2000)] * 16
    cases = (("gpt-oss-120b", "B200", {"tp": 1}),             # one GPU: nothing is split
             ("gpt-oss-120b", "B200", {"tp": 8, "ep": 8}),    # EP: whole experts on every rank
             ("llama-3.1-70b", "H100", {"tp": 8}),            # dense: no expert op
             ("mixtral-8x7b", "H100", {"reference": "genz", "tp": 2}))   # GenZ compat: one precision
    for model, dev, kw in cases:
        c = make_client(model, dev, **kw)
        n0(None)
        p0 = client_params(c)
        a = step_latency(c, prefill=[(0, 4096)], decode=dec).total_s
        n0(400.0)
        assert expert_split_factor(c) == 1.0, model
        assert (client_params(c) == p0).all(), model
        assert step_latency(c, prefill=[(0, 4096)], decode=dec).total_s == a, model


def test_split_expert_peak_and_compute_bound_prefill_by_hand(n0):
    """gpt-oss-120b on 8 x B200 (tp 8, ep 1), one 8,192-token prefill. The expert op of each of the
    36 MoE layers on one rank is max(F / P, Y / BW) with F = 2 T K W / t_e (W = 3 D De), P = 4,500
    TFLOP/s (MXFP4 x MXFP8 at the FP8 rate) x 0.75, Y = 128 W / t_e x 0.53125 B + 2 T K D x 2 B,
    BW = 8 TB/s x 0.75. Before, the op is bound by its token rows (the 2 T K D activations in and out
    are not split by TP: 98 us against 60 us of compute); at N0 = 400 the peak is P x 0.539474 and
    the compute term (112 us) wins, so the step's GEMM time grows by 36 (F / (P f) - Y / BW)."""
    T, K_, D, De, E, L, te = 8192, 4, 2880, 2880, 128, 36, 8
    W = 3 * D * De
    F = 2.0 * T * K_ * W / te
    Y = E * (1 - (1 - K_ / E) ** T) * W / te * 0.53125 + 2.0 * T * K_ * D * 2
    P, bw = 4500e12 * 0.75, 8000e9 * 0.75
    f = 360 * 3280 / (760 * 2880)
    assert F / P < Y / bw < F / (P * f)                          # memory-bound before, compute-bound after
    c = make_client("gpt-oss-120b", "B200", tp=8)
    n0(None)
    assert client_params(c)[K.P_FPEAK_EXPERT] == pytest.approx(P, rel=1e-12)
    g0 = step_latency(c, prefill=[(0, T)]).breakdown["gemm_s"]
    n0(400.0)
    assert client_params(c)[K.P_FPEAK_EXPERT] == pytest.approx(P * f, rel=1e-12)
    assert client_params(c)[K.P_FPEAK] == pytest.approx(4500e12 / 2 * 0.75, rel=1e-12)   # dense GEMMs unchanged (bf16)
    g1 = step_latency(c, prefill=[(0, T)]).breakdown["gemm_s"]
    assert g1 - g0 == pytest.approx(L * (F / (P * f) - Y / bw), rel=1e-9)


def test_weight_read_bound_decode_does_not_move(n0):
    """A 64-sequence decode step of gpt-oss-120b at tp 8 reads ~110 of 128 experts' slices: by hand
    Y / BW = 110.8 x W / 8 x 0.53125 B / 6 TB/s is > 10 x F / (P f) with F = 2 x 64 x 4 x W / 8,
    so the step is bit-identical with the switch on."""
    T, K_, E, W = 64, 4, 128, 3 * 2880 * 2880
    e_hit = E * (1 - (1 - K_ / E) ** T)
    f = 360 * 3280 / (760 * 2880)
    assert e_hit * W / 8 * 0.53125 / 6000e9 > 10 * 2.0 * T * K_ * W / 8 / (4500e12 * 0.75 * f)
    c = make_client("gpt-oss-120b", "B200", tp=8)
    dec = [(1, 2000)] * T
    n0(None)
    a = step_latency(c, decode=dec).total_s
    n0(400.0)
    assert step_latency(c, decode=dec).total_s == a


def test_recosting_keeps_the_factor(n0):
    """The fit's re-costing (StepSet) rebuilds the expert peak from each client's raw rate, which
    keeps the split factor: at the client's own efficiencies, and at a trial η_c, it equals
    step_latency of the client built with them."""
    from mistfast.calibration_recost import StepSet
    n0(400.0)
    c = make_client("gpt-oss-120b", "B200", tp=8, efficiency={"compute": 0.6, "memory": 0.7})
    c5 = make_client("gpt-oss-120b", "B200", tp=8, efficiency={"compute": 0.5, "memory": 0.7})
    st = StepSet()
    st.add(c, [(0, 8192)], [])
    st.build()
    ref = step_latency(c, prefill=[(0, 8192)]).total_s
    assert st.times(0.6, 0.7, 0.0)[0] == pytest.approx(ref, rel=1e-12)
    assert st.times(0.5, 0.7, 0.0)[0] == pytest.approx(step_latency(c5, prefill=[(0, 8192)]).total_s, rel=1e-12)
    n0(None)
    assert step_latency(c, prefill=[(0, 8192)]).total_s < 0.95 * ref     # and the factor is a real share


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf"), "400"])
def test_bad_value_names_the_switch(n0, bad):
    n0(bad)
    with pytest.raises(ValueError, match=r"stepmodel.EXPERT_SPLIT_HALF_WIDTH = .*: allowed a number of columns >= 0 or None"):
        client_params(make_client("gpt-oss-120b", "B200", tp=8))


def test_skip_block_scaled_fp8_experts(n0):
    """EXPERT_SPLIT_SKIP_FP8_BLOCK leaves block-scaled W8A8 FP8 experts (η_f8's scope) at 1 and
    nothing else: DeepSeek-V3 (De 2,048) at tp 8, n = 256: 256 x 2448 / (656 x 2048) = 0.466463
    without it; gpt-oss-120b keeps its factor."""
    fp8 = {"weights": "fp8", "compute": "fp8", "kv": "fp8", "activations": "bf16", "experts": "fp8",
           "experts_compute": "fp8"}
    ds = make_client("deepseek-v3", "H200", tp=8, precision=fp8)
    oss = make_client("gpt-oss-120b", "B200", tp=8)
    assert stepmodel.expert_fp8_applies(ds) and not stepmodel.expert_fp8_applies(oss)
    n0(400.0)
    assert expert_split_factor(ds) == pytest.approx(256 * 2448 / (656 * 2048), rel=1e-15)
    old = stepmodel.EXPERT_SPLIT_SKIP_FP8_BLOCK
    try:
        stepmodel.EXPERT_SPLIT_SKIP_FP8_BLOCK = True
        assert expert_split_factor(ds) == 1.0
        assert expert_split_factor(oss) == pytest.approx(360 * 3280 / (760 * 2880), rel=1e-15)
    finally:
        stepmodel.EXPERT_SPLIT_SKIP_FP8_BLOCK = old
