"""Measurement rows of MoE models in an FP4 format: only the experts are FP4 (gpt-oss native MXFP4,
NVIDIA/AMD FP4 DeepSeek-R1); the rest keeps the checkpoint's format. The precision key carries the
expert format through validate and calibration to the step model (docs/calibration.md)."""
import pytest

from mistfast import step_latency
from mistfast import calibration as C
from mistfast.specs import make_client
from mistfast.validate import plan_row

GPT_OSS_TEXT = "MXFP4 (native gpt-oss MoE weights)"


def test_gpt_oss_row_keeps_attention_bf16():
    p = C.row_precision(GPT_OSS_TEXT, "openai/gpt-oss-120b", "B200")
    assert p == {"weights": "bf16", "compute": "bf16", "kv": "bf16", "activations": "bf16",
                 "experts": "mxfp4", "experts_compute": "fp8"}   # MXFP4 x MXFP8: the FP8 MMA rate (data/models.toml)
    assert C.precision_key(p) == "bf16/bf16/bf16/bf16/mxfp4/fp8"
    assert C.precision_dict(C.precision_key(p)) == p
    # Hopper has no FP4 tensor cores: the MXFP4 experts are multiplied at 16 bits (W4A16)
    assert C.row_precision(GPT_OSS_TEXT, "openai/gpt-oss-120b", "H100-SXM-80GB")["experts_compute"] == "bf16"


@pytest.mark.parametrize("text,model,want", [
    ("NVFP4", "nvidia/DeepSeek-R1-0528-FP4-V2", "fp8/fp8/fp8/bf16/nvfp4/nvfp4"),
    ("NVFP4 (per-block scaled FP4)", "deepseek-ai/DeepSeek-R1", "fp8/fp8/fp8/bf16/nvfp4/nvfp4"),
    ("NVFP4 (per-block scaled FP4)", "meta-llama/Llama-2-70b-chat-hf", "nvfp4/nvfp4/fp8/bf16"),   # dense: all FP4
    ("FP8 (block-scaled, native)", "deepseek-ai/DeepSeek-R1-0528", "fp8/fp8/fp8/bf16"),
])
def test_row_precision_keys(text, model, want):
    assert C.precision_key(C.row_precision(text, model, "B200")) == want


def test_expert_only_format_by_hand():
    """Batch-1 decode at context 0 of gpt-oss-120b on B200: the whole-model MXFP4 reading (the old
    key fp4/fp4/fp8/bf16) against experts-only MXFP4. Only the non-expert weights (2 - 0.53125 B
    per element) and the KV of the one token (bf16 against fp8) differ."""
    whole = make_client("gpt-oss-120b", "B200",
                        precision={"weights": "mxfp4", "compute": "mxfp4", "kv": "fp8", "activations": "bf16"})
    experts = make_client("gpt-oss-120b", "B200", precision=C.row_precision(GPT_OSS_TEXT, "openai/gpt-oss-120b", "B200"))
    d_byte = 2 - 0.53125
    qkv = 2880 * (64 + 2 * 8) * 64        # 14,745,600 elements per layer
    o = 64 * 64 * 2880                    # 11,796,480
    router = 2880 * 128                   # 368,640
    layers = 36 * (qkv + o + router) * d_byte
    emb_and_head = (2880 + 2880 * 201_088) * d_byte   # one gathered row, the LM head
    kv = 36 * 2 * 8 * 64 * (2 - 1)        # K and V of one token in every layer
    y_whole = step_latency(whole, decode=[(1, 0)]).breakdown["hbm_bytes"]
    y_experts = step_latency(experts, decode=[(1, 0)]).breakdown["hbm_bytes"]
    assert y_experts - y_whole == pytest.approx(layers + emb_and_head + kv, rel=1e-12)


def _row(**kw):
    r = {"id": "x1", "source": "github:example/repo@abc:file", "engine": "TensorRT-LLM", "engine_version": "1.2.0rc2",
         "model": "openai/gpt-oss-120b", "precision": GPT_OSS_TEXT, "hardware": "B200", "num_accel": 4, "tp": 4,
         "pp": 1, "workload": "random, fixed concurrency", "isl": 1024, "osl": 1024, "batch_or_concurrency": 16,
         "request_rate": "", "metric": "output_tok_s", "value": 5000.0,
         "notes": "ep 1; dp_attention true"}
    r.update(kw)
    return r


def test_validate_row_carries_expert_format_and_layout():
    plan = plan_row(_row())
    assert plan.status == "ok", plan.reason
    assert plan.precision == "bf16/bf16/bf16/bf16/mxfp4/fp8"
    client = plan.scenario["clients"][0]
    assert client["precision"]["experts"] == "mxfp4" and client["dp_attention"] is True and "ep" not in client
    plan = plan_row(_row(model="nvidia/DeepSeek-R1-0528-FP4-V2", precision="NVFP4", tp=8, num_accel=8,
                         notes="ep 8; dp_attention false"))
    assert plan.status == "ok", plan.reason
    client = plan.scenario["clients"][0]
    assert client["ep"] == 8 and "dp_attention" not in client


def test_impossible_layout_is_a_reason_not_a_crash():
    plan = plan_row(_row(notes="ep 3; dp_attention false"))
    assert plan.status != "ok"
    assert "ep = 3" in plan.reason and "tp = 4" in plan.reason
