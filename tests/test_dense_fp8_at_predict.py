"""Dense block-scaled FP8 GEMMs on Hopper at the BF16 rate, at prediction only
(validate.DENSE_BLOCK_FP8_AT_PREDICT, session 14; docs/calibration.md "Dense block-scaled FP8 on Hopper at
prediction only"): which rows get it, that the fit's client never carries it, and what it does to the
predicting client's step (by hand)."""
import pytest

from mistfast import step_latency
from mistfast import validate as V

from .builders import dense_prefill_gemm_flop, model_client, sglang_qwen3_fp8_burst_row


def test_off_by_switch(monkeypatch):
    monkeypatch.setattr(V, "DENSE_BLOCK_FP8_AT_PREDICT", 1.0)
    p = V.plan_row(sglang_qwen3_fp8_burst_row())
    assert p.status == "ok" and p.predict_floor == ({}, False)


_DSR1 = {"model": "deepseek-ai/DeepSeek-R1-0528", "precision": "FP8 (block-scaled, native)",
         "hardware": "H200-SXM-141GB", "tp": 8, "num_accel": 8}


@pytest.mark.parametrize("kw, moe, expected", [
    ({}, False, True),                                                       # Qwen3-14B-FP8, H100, SGLang
    ({"engine": "TensorRT-LLM (trtllm-serve; default flags)", "engine_version": "v1.2.0rc1"}, False, True),
    (_DSR1, False, False),                                                   # MoE: only with the MoE switch
    (_DSR1, True, True),
    ({"hardware": "A100-SXM-80GB"}, True, False),                            # W8A16 (Marlin): no FP8 MMA
    ({"hardware": "B200-SXM-180GB"}, True, False),                           # native block-scaled MMAs
    ({"model": "Qwen/Qwen3-14B", "precision": "BF16"}, True, False),
    ({"model": "nvidia/Llama-3.1-8B-Instruct-FP8", "precision": "FP8 (ModelOpt)"}, True, False),  # per-tensor
])
def test_rows_in_scope_and_the_fit_client_without_it(monkeypatch, kw, moe, expected):
    """The share reaches the predicting client (predict_floor) of block-scaled FP8 rows on Hopper only
    (of dense models unless DENSE_BLOCK_FP8_AT_PREDICT_MOE); the scenario's client, which the fit
    re-costs, never carries it."""
    monkeypatch.setattr(V, "DENSE_BLOCK_FP8_AT_PREDICT", 0.5)
    monkeypatch.setattr(V, "DENSE_BLOCK_FP8_AT_PREDICT_MOE", moe)
    p = V.plan_row(sglang_qwen3_fp8_burst_row(**kw))
    assert p.status == "ok", p.reason
    assert (p.predict_floor == ({"dense_fp8": 0.5}, False)) is expected
    if not expected:
        assert p.predict_floor == ({}, False)
    assert "dense_fp8" not in p.scenario["clients"][0]["efficiency"]


def test_predicting_client_gemm_time_by_hand(monkeypatch):
    """Qwen3-14B FP8 on one H100, one 8,192-token prefill. Per layer the dense GEMMs hold W = QKV
    D·(hq + 2·hkv)·dh + O hq·dh·D + FFN 3·D·F = 5,120·56·128 + 40·128·5,120 + 3·5,120·17,408 =
    36,700,160 + 26,214,400 + 267,386,880 = 330,301,440 weights; F = 2·T·W·L = 2·8,192·330,301,440·40
    = 2.1647e14 FLOP. At the FP8 peak 1,978.9 TFLOP/s x η_c 0.75 every GEMM is compute-bound, so
    gemm_s = F / (P·η_c) = 0.14585 s without the share and F / (P·η_c·0.5) = 0.29171 s with it — the
    BF16 rate (989.4 TFLOP/s): the same GEMMs of a BF16 client take that time too. Attention does not
    change. A fitted η_d8 below the share stays (min); one above it gives way to it."""
    monkeypatch.setattr(V, "DENSE_BLOCK_FP8_AT_PREDICT", 0.5)
    T = 8192
    base = model_client("qwen3-14b", "H100", precision="fp8")
    W, F = dense_prefill_gemm_flop(base.model, T, (5120, 40, 40, 8, 128, 17408))
    assert W == 330_301_440
    P = 1978.9e12 * 0.75
    p = V.plan_row(sglang_qwen3_fp8_burst_row())
    pred = V.with_predict_floor(base, p)
    assert pred.efficiency.dense_fp8 == 0.5 and base.efficiency.dense_fp8 == 1.0
    ra, rb = step_latency(base, prefill=[(0, T)]).breakdown, step_latency(pred, prefill=[(0, T)]).breakdown
    assert ra["gemm_s"] == pytest.approx(F / P, rel=1e-9)
    assert rb["gemm_s"] == pytest.approx(F / (P * 0.5), rel=1e-9)
    assert rb["gemm_s"] == pytest.approx(0.29171, rel=1e-4)
    assert rb["attention_s"] == ra["attention_s"]
    bf16 = model_client("qwen3-14b", "H100", precision="bf16")
    assert step_latency(bf16, prefill=[(0, T)]).breakdown["gemm_s"] == pytest.approx(rb["gemm_s"], rel=1e-3)
    low = model_client("qwen3-14b", "H100", precision="fp8", efficiency={"dense_fp8": 0.3})
    high = model_client("qwen3-14b", "H100", precision="fp8", efficiency={"dense_fp8": 0.8})
    assert V.with_predict_floor(low, p).efficiency.dense_fp8 == 0.3
    assert V.with_predict_floor(high, p).efficiency.dense_fp8 == 0.5
