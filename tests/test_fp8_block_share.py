"""Block-scaled FP8 GEMMs on Hopper: `efficiency.fp8_block_share` scales the FP8 GEMM peak (dense and
expert), and `validate` sets it only for block-scaled FP8 rows on Hopper when its switch is on
(docs/calibration.md, "GPUStack bursts, session 11")."""
import pytest

from mistfast import calibration as C
from mistfast import stepmodel
from mistfast import validate as V
from mistfast.kernels import steptime as K

from .builders import sglang_qwen3_fp8_burst_row


def _client(model, device, precision, share=1.0, tp=1):
    c = C._client_cached(model, device, tp, 1, precision)
    return c.model_copy(update={"efficiency": c.efficiency.model_copy(update={"fp8_block_share": share})})


def test_share_scales_the_fp8_gemm_peak_only():
    base = stepmodel.client_params(_client("qwen3-14b", "H100", "fp8/fp8/fp8/bf16"))
    half = stepmodel.client_params(_client("qwen3-14b", "H100", "fp8/fp8/fp8/bf16", 0.5))
    # H100 FP8 dense peak x compute efficiency, then x 0.5; attention (BF16 activations) unchanged
    assert half[K.P_FPEAK] == pytest.approx(0.5 * base[K.P_FPEAK], rel=1e-12)
    assert half[K.P_FPEAK_ATTN] == base[K.P_FPEAK_ATTN]
    assert half[K.P_BW] == base[K.P_BW]
    # a BF16 client ignores the share
    b16 = stepmodel.client_params(_client("qwen3-14b", "H100", "bf16/bf16/bf16/bf16"))
    b16_half = stepmodel.client_params(_client("qwen3-14b", "H100", "bf16/bf16/bf16/bf16", 0.5))
    assert (b16 == b16_half).all()


def test_share_scales_fp8_expert_gemms():
    base = stepmodel.client_params(_client("qwen3-235b-a22b", "H200", "fp8/fp8/fp8/bf16", tp=4))
    half = stepmodel.client_params(_client("qwen3-235b-a22b", "H200", "fp8/fp8/fp8/bf16", 0.5, tp=4))
    assert half[K.P_FPEAK_EXPERT] == pytest.approx(0.5 * base[K.P_FPEAK_EXPERT], rel=1e-12)
    assert half[K.P_FPEAK] == pytest.approx(0.5 * base[K.P_FPEAK], rel=1e-12)


@pytest.mark.parametrize("model, precision, device, key, expected", [
    ("deepseek-ai/DeepSeek-R1-0528", "FP8 (block-scaled, native)", "H200", "fp8/fp8/fp8/bf16", True),
    ("Qwen/Qwen3-14B-FP8", "FP8", "H100", "fp8/fp8/fp8/bf16", True),
    ("Qwen/Qwen3-14B-FP8", "FP8", "A100", "fp8/bf16/fp8/bf16", False),        # W8A16 on A100: no FP8 MMA
    ("deepseek-ai/DeepSeek-R1-0528", "FP8 (block-scaled, native)", "B200", "fp8/fp8/fp8/bf16", False),  # native block scales
    ("nvidia/Llama-3.1-8B-Instruct-FP8", "FP8 (ModelOpt)", "H100", "fp8/fp8/fp8/bf16", False),  # per-tensor
    ("Qwen/Qwen3-14B", "BF16", "H100", "bf16/bf16/bf16/bf16", False),
])
def test_block_scaled_fp8_rows(model, precision, device, key, expected):
    assert V.block_scaled_fp8({"model": model, "precision": precision}, device, key) is expected


def test_validate_switch_off(monkeypatch):
    monkeypatch.setattr(V, "BLOCK_FP8_SHARE_IN_VALIDATE", 1.0)
    p = V.plan_row(sglang_qwen3_fp8_burst_row())
    assert p.status == "ok" and "fp8_block_share" not in p.scenario["clients"][0]["efficiency"]


def test_validate_sets_the_share_for_block_scaled_hopper_rows(monkeypatch):
    monkeypatch.setattr(V, "BLOCK_FP8_SHARE_IN_VALIDATE", 0.5)
    p = V.plan_row(sglang_qwen3_fp8_burst_row())
    assert p.scenario["clients"][0]["efficiency"]["fp8_block_share"] == 0.5
    # the simulated client carries it (and a stored calibration keeps it: not a fitted field)
    pt = V._points([p])[0]
    assert pt.client.efficiency.fp8_block_share == 0.5
    assert C.with_efficiency(pt.client, {"compute": 0.6}).efficiency.fp8_block_share == 0.5
    a100 = V.plan_row(sglang_qwen3_fp8_burst_row(hardware="A100-SXM-80GB"))
    assert "fp8_block_share" not in a100.scenario["clients"][0]["efficiency"]
