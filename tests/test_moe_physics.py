"""MoE / MLA step physics against hand-computed values (docs/step-model.md, "Kernels per layer" and
"FP4 experts with FP8 activations"): the per-op overhead of the kernels an MLA or MoE layer runs
beyond its costed ops, and the MMA rate of MXFP4 experts multiplied with MXFP8 activations."""
import numpy as np
import pytest

from mistfast import step_latency, stepmodel
from mistfast.calibration_store import row_precision
from mistfast.catalog import default_catalog
from mistfast.kernel_counts import extra_taus
from mistfast.kernels import steptime as K
from mistfast.specs import ModelSpec, make_client as _make_client


def make_client(*args, **kw):
    """MODEL.md's efficiencies (0.75), no calibration, as in the other hand-computed tests."""
    kw.setdefault("efficiency", {})
    return _make_client(*args, **kw)


def model(name):
    return ModelSpec(**default_catalog().get("models", name))


# ---- kernels per layer -------------------------------------------------------------------------
def test_extra_taus_by_hand():
    # a dense GQA layer: 2 norms + 5 attention + 3 FFN = 10 kernels for 4 costed ops: the unit
    assert extra_taus(model("llama-3.1-70b"))[0] == 0.0
    # DeepSeek-V3: dense layers 2 + 11 (MLA) + 3 = 16 kernels, 4 ops -> 16/2.5 - 4 = 2.4;
    # MoE layers 2 + 11 + 7 (routed) + 3 (shared) = 23 kernels, 6 ops -> 23/2.5 - 6 = 3.2
    assert extra_taus(model("deepseek-v3")) == pytest.approx((2.4, 3.2), abs=1e-12)
    # gpt-oss: GQA, no shared expert: 2 + 5 + 7 = 14 kernels, 5 ops -> 0.6
    assert extra_taus(model("gpt-oss-120b"))[1] == pytest.approx(0.6, abs=1e-12)


def _step(prm, prefill=(), decode=()):
    """The kernel's step time for (past, new) prefill chunks and (w, s, k) decodes."""
    pf = np.array(prefill, float).reshape(-1, 2)
    dc = np.array(decode, float).reshape(-1, 3)
    out = np.zeros(K.N_OUT)
    return K.step_time(prm, pf[:, 0].copy(), pf[:, 1].copy(), len(pf), len(pf), dc[:, 0].copy(),
                       dc[:, 1].copy(), dc[:, 2].copy(), len(dc), out)


def test_extra_kernels_cost_tau_each_deepseek():
    c = make_client("deepseek-v3", "H200", tp=8, precision="fp8", efficiency={"op_overhead_us": 10.0})
    prm = stepmodel.client_params(c)
    assert (prm[K.P_TAU_EXTRA_DENSE], prm[K.P_TAU_EXTRA_MOE]) == pytest.approx((2.4, 3.2), abs=1e-12)
    plain = prm.copy()
    plain[K.P_TAU_EXTRA_DENSE] = plain[K.P_TAU_EXTRA_MOE] = 0.0
    dec = [(1, 0, 1000)] * 4
    # 3 dense layers x 2.4 + 58 MoE layers x 3.2 = 192.8 taus of 10 us, on every step
    assert _step(prm, decode=dec) - _step(plain, decode=dec) == pytest.approx(192.8 * 10e-6, rel=1e-9)
    assert _step(prm, prefill=[(0, 512)]) - _step(plain, prefill=[(0, 512)]) == pytest.approx(192.8 * 10e-6, rel=1e-9)
    # reported as "other" time; without tau nothing changes
    zero = stepmodel.client_params(make_client("deepseek-v3", "H200", tp=8, precision="fp8"))
    z0 = zero.copy()
    z0[K.P_TAU_EXTRA_DENSE] = z0[K.P_TAU_EXTRA_MOE] = 0.0
    assert _step(zero, decode=dec) == _step(z0, decode=dec)


def test_dense_gqa_model_unchanged():
    prm = stepmodel.client_params(make_client("llama-3.1-70b", "H100", tp=4, efficiency={"op_overhead_us": 10.0}))
    assert prm[K.P_TAU_EXTRA_DENSE] == 0.0 and prm[K.P_TAU_EXTRA_MOE] == 0.0


def test_genz_compat_has_no_extra_kernels():
    prm = stepmodel.client_params(make_client("deepseek-v3", "H200", tp=8, precision="fp8", reference="genz"))
    assert prm[K.P_TAU_EXTRA_DENSE] == 0.0 and prm[K.P_TAU_EXTRA_MOE] == 0.0


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
