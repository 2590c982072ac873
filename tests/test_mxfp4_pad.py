"""vLLM's padded MXFP4 experts on Hopper (validate.MXFP4_PAD_AT_PREDICT, session 16; docs/ttft-under-load.md
"vLLM's padded MXFP4 experts on Hopper, session 16"). Expected values by hand from gpt-oss-120b's config
(36 MoE layers, 128 experts, hidden 2,880, expert width 2,880, gated: 3 matrices; MXFP4 = 4.25 bits) and
the published vLLM log of gpt-oss-120b on one H100 (github:vllm-project/vllm#33155: 64.38 GiB loaded)."""
import pytest

import mistfast.engine_defaults as E
import mistfast.specs as S
import mistfast.validate as V

GiB = 2**30
# one expert matrix set per device at TP 1: 36 x 128 x 3 x 2,880 x 2,880 x 4.25/8 bytes
EXPERT_BYTES_TP1 = 36 * 128 * 3 * 2880 * 2880 * 0.53125          # 60,914,073,600 B = 56.73 GiB


def _vllm_client(model="gpt-oss-120b", device="H100", tp=1):
    return E.apply_engine_defaults(S.ClientSpec(model=model, device=device, tp=tp), "vllm", "v0.11.0", "")


def _plan(device="H100", engine="vllm", tp=1):
    return V.RowPlan(id="x", model_text="", hardware_text="", engine_text="", metric="ttft_ms", measured=1.0,
                     group="g", engine=engine, device=device, tp=tp)


@pytest.fixture
def pad_on(monkeypatch):
    monkeypatch.setattr(V, "MXFP4_PAD_AT_PREDICT", True)


@pytest.mark.parametrize("tp, expected_bytes", [
    (1, EXPERT_BYTES_TP1 * (3072 / 2880 - 1)),        # 2,880 -> 3,072: 4,060,938,240 B = 3.782 GiB
    (2, EXPERT_BYTES_TP1 / 2 * (1536 / 1440 - 1)),    # 1,440 -> 1,536: 1.891 GiB
    (8, EXPERT_BYTES_TP1 / 8 * (512 / 360 - 1)),      # 360 -> 512: 3,214,909,440 B = 2.994 GiB
])
def test_pad_by_hand(pad_on, tp, expected_bytes):
    c = _vllm_client(tp=tp)
    assert V.mxfp4_pad_GiB(c, _plan(tp=tp)) == pytest.approx(expected_bytes / GiB, rel=1e-9)


def test_tp1_h100_weights_match_vllm_log(pad_on):
    # vLLM's own log: "Model loading took 64.38 GiB" for gpt-oss-120b on one H100 (vllm#33155)
    c = _vllm_client()
    padded = c.weight_bytes_device() / GiB + V.mxfp4_pad_GiB(c, _plan())
    assert padded == pytest.approx(64.38, abs=0.15)
    assert c.weight_bytes_device() / GiB < 64.38 - 3.0   # without the padding the catalog is > 3 GiB short


def test_pad_comes_out_of_kv_pool(pad_on):
    c = _vllm_client()
    c2 = V.with_mxfp4_pad(c, _plan())
    assert c2.scheduler.reserved_memory_GiB - c.scheduler.reserved_memory_GiB == pytest.approx(4060938240 / GiB)
    assert (c._kv_pool_bytes() - c2._kv_pool_bytes()) == pytest.approx(4060938240, rel=1e-9)
    assert c2.weight_bytes_device() == c.weight_bytes_device()


@pytest.mark.parametrize("device, engine, model", [
    ("A100", "vllm", "gpt-oss-120b"),      # not Hopper
    ("B200", "vllm", "gpt-oss-120b"),      # not Hopper
    ("H100", "sglang", "gpt-oss-120b"),    # not vLLM
    ("H100", "vllm", "qwen3-235b-a22b"),   # not MXFP4 experts
])
def test_other_rows_untouched(pad_on, device, engine, model):
    c = _vllm_client(model=model, device=device)
    p = _plan(device=device, engine=engine)
    assert V.mxfp4_pad_GiB(c, p) == 0.0
    assert V.with_mxfp4_pad(c, p) is c


def test_off_by_default():
    assert V.MXFP4_PAD_AT_PREDICT is False
    c = _vllm_client()
    assert V.with_mxfp4_pad(c, _plan()) is c
