"""MoE step physics against hand-computed values (docs/step-model.md, "FP4 experts with FP8
activations"): the MMA rate of MXFP4 experts multiplied with MXFP8 activations."""
import pytest

from mistfast import step_latency
from mistfast.calibration_store import row_precision
from mistfast.specs import make_client as _make_client


def make_client(*args, **kw):
    """MODEL.md's efficiencies (0.75), no calibration, as in the other hand-computed tests."""
    kw.setdefault("efficiency", {})
    return _make_client(*args, **kw)


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
