"""The sustained (max-achievable) matrix peak of CDNA3 (stepmodel.SUSTAINED_PEAK_ON, session 14;
docs/engines.md, "vLLM ROCm at hundreds of sequences: the sustained matrix peak"): AMD's published MAF
figures, a hand-computed compute-bound prefill, and what the switch leaves alone."""
import pytest

from mistfast import step_latency
from mistfast import stepmodel as SM

from .builders import dense_prefill_gemm_flop, model_client as make_client


@pytest.fixture
def maf_on(monkeypatch):
    monkeypatch.setattr(SM, "SUSTAINED_PEAK_ON", True)


def test_published_maf_shares_of_the_datasheet_peak(maf_on):
    """AMD's Table 1 (rocm.blogs.amd.com, "Measuring Max-Achievable FLOPs - Part 2"): MI300X FP8
    1,273 / BF16 708 / FP16 654 TFLOPS, MI325X 1,519 / 843 / 794, against the catalog's datasheet peaks
    2,614.9 (FP8) and 1,307.4 (BF16, FP16) of both parts. INT8 has no published MAF: factor 1. A
    device without a published MAF (H100, MI355X) keeps its peak."""
    mi300, mi325 = make_client("llama-2-70b", "MI300X", precision="fp8").device, \
        make_client("llama-2-70b", "MI325X", precision="fp8").device
    assert SM.sustained_peak_factor(mi300, "fp8") == pytest.approx(1273 / 2614.9)     # 0.487
    assert SM.sustained_peak_factor(mi300, "bf16") == pytest.approx(708 / 1307.4)     # 0.542
    assert SM.sustained_peak_factor(mi300, "fp16") == pytest.approx(654 / 1307.4)
    assert SM.sustained_peak_factor(mi325, "fp8") == pytest.approx(1519 / 2614.9)     # 0.581
    assert SM.sustained_peak_factor(mi325, "bf16") == pytest.approx(843 / 1307.4)     # 0.645
    assert SM.sustained_peak_factor(mi300, "int8") == 1.0
    for dev in ("H100", "MI355X"):
        d = make_client("llama-3.1-8b", dev).device
        assert SM.sustained_peak_factor(d, "fp8") == 1.0 and SM.sustained_peak_factor(d, "bf16") == 1.0


def test_switch_off_is_the_datasheet_peak(monkeypatch):
    monkeypatch.setattr(SM, "SUSTAINED_PEAK_ON", False)
    d = make_client("llama-2-70b", "MI300X", precision="fp8").device
    assert SM.sustained_peak_factor(d, "fp8") == 1.0


def test_compute_bound_prefill_by_hand(monkeypatch):
    """Llama-2-70B FP8 on one MI300X, one 8,192-token prefill. Per layer the GEMMs hold W = QKV
    D·(hq + 2·hkv)·dh + O hq·dh·D + FFN 3·D·F = 8,192·80·128 + 64·128·8,192 + 3·8,192·28,672 =
    855,638,016 weights; F = 2·T·W·L = 2·8,192·855,638,016·80 = 1.1215e15 FLOP. At η_c = 0.75 on the
    datasheet FP8 peak 2,614.9 TFLOP/s the GEMMs take F / (2,614.9e12·0.75) = 0.5719 s; at the
    sustained 1,273 TFLOP/s, F / (1,273e12·0.75) = 1.1747 s (each GEMM is compute-bound either way:
    the FFN's 704.6 M FP8 weights take 0.18 ms of HBM at 5.3 TB/s·0.75 against 23 ms of compute)."""
    T = 8192
    c = make_client("llama-2-70b", "MI300X", precision="fp8")
    W, F = dense_prefill_gemm_flop(c.model, T, (8192, 80, 64, 8, 128, 28672))
    assert W == 855_638_016
    monkeypatch.setattr(SM, "SUSTAINED_PEAK_ON", False)
    off = step_latency(c, prefill=[(0, T)]).breakdown
    assert off["gemm_s"] == pytest.approx(F / (2614.9e12 * 0.75), rel=1e-9)
    monkeypatch.setattr(SM, "SUSTAINED_PEAK_ON", True)
    on = step_latency(c, prefill=[(0, T)]).breakdown
    assert on["gemm_s"] == pytest.approx(F / (1273e12 * 0.75), rel=1e-9)
    # attention matmuls run in BF16: their compute term scales by 1,307.4 / 708 at most
    assert off["attention_s"] <= on["attention_s"] <= off["attention_s"] * 1307.4 / 708 * (1 + 1e-9)


def test_memory_bound_decode_and_other_devices_unchanged(monkeypatch):
    """A batch-1 decode step on MI300X is bound by the weight read: the sustained peak does not move
    it. An H100 client is bit-identical with the switch on (no published MAF)."""
    mi = make_client("llama-2-70b", "MI300X", precision="fp8")
    h = make_client("llama-3.1-70b", "H100", tp=4, precision="fp8")
    monkeypatch.setattr(SM, "SUSTAINED_PEAK_ON", False)
    before = (step_latency(mi, decode=[(1, 512)]).total_s, step_latency(h, prefill=[(0, 4096)]).total_s,
              step_latency(h, decode=[(1, 512)] * 256).total_s)
    monkeypatch.setattr(SM, "SUSTAINED_PEAK_ON", True)
    after = (step_latency(mi, decode=[(1, 512)]).total_s, step_latency(h, prefill=[(0, 4096)]).total_s,
             step_latency(h, decode=[(1, 512)] * 256).total_s)
    assert after == before


def test_moe_expert_gemms_use_the_sustained_peak(maf_on, monkeypatch):
    """Mixtral-8x7B FP8 on one MI325X, a 16,384-token prefill: the expert GEMMs are compute-bound and
    slow down by the FP8 factor 2,614.9 / 1,519 = 1.72 exactly."""
    c = make_client("mixtral-8x7b", "MI325X", precision="fp8")
    on = step_latency(c, prefill=[(0, 16384)]).breakdown
    monkeypatch.setattr(SM, "SUSTAINED_PEAK_ON", False)
    off = step_latency(c, prefill=[(0, 16384)]).breakdown
    assert on["gemm_s"] / off["gemm_s"] == pytest.approx(2614.9 / 1519, rel=1e-6)


# ---- the AMD vLLM harness's eager launch floor (validate.MLPERF_EAGER_FLOOR_VLLM_AT_PREDICT) ----------

def _plan(row_id: str):
    import pandas as pd
    from pathlib import Path
    from mistfast import validate as V
    pub = pd.read_csv(Path(__file__).parents[1] / "data" / "measurements" / "public.csv", dtype=str,
                      keep_default_na=False)
    r = pub[pub.id == row_id].iloc[0].to_dict()
    return r, V.plan_row(r)


def test_eager_floor_only_for_enforce_eager_vllm_harness_rows(monkeypatch):
    """P3849 (AMD MI300X Llama-2-70B Interactive, `enforce_eager True`) gets the every-step floor at
    prediction with the switch on, nothing with it off; P3865 (Mixtral Offline, `enforce_eager False`)
    never; a TensorRT-LLM harness row (P3926, Dell B200, `use_graphs False`) keeps its own floor."""
    from mistfast import validate as V
    monkeypatch.setattr(V, "MLPERF_EAGER_FLOOR_VLLM_AT_PREDICT", False)
    r, p = _plan("P3849")
    assert "enforce_eager True" in r["notes"] and p.predict_floor == ({}, False)
    monkeypatch.setattr(V, "MLPERF_EAGER_FLOOR_VLLM_AT_PREDICT", True)
    assert _plan("P3849")[1].predict_floor == ({"prefill_launch_us": 40.0}, True)
    r, p = _plan("P3865")
    assert "enforce_eager False" in r["notes"] and p.predict_floor == ({}, False)
    assert _plan("P3926")[1].predict_floor == ({"prefill_launch_us": 40.0}, True)


def test_eager_floor_step_by_hand():
    """Llama-2-70B at tp 1 launches 80 x (2 norms + 5 attention + 3 FFN) = 800 kernels per step: with
    40 us each and no graphs, a batch-8 decode step (about 19 ms of HBM at the client's efficiencies)
    lasts the 32.0 ms of launches; a 576-sequence step, longer than its launches, does not move."""
    from mistfast import launch_time
    c = make_client("llama-2-70b", "MI300X", precision="fp8")   # (either peak: a memory-bound step)
    assert launch_time.kernels_per_step(c.model, 1) == 800
    f = c.model_copy(update={"efficiency": c.efficiency.model_copy(update={"prefill_launch_us": 40.0}),
                             "harness_no_graphs": True})
    small, big = [(1, 400)] * 8, [(1, 400)] * 576
    assert step_latency(c, decode=small).total_s < 0.032
    assert step_latency(f, decode=small).total_s == pytest.approx(0.032, rel=1e-9)
    assert step_latency(f, decode=big).total_s == step_latency(c, decode=big).total_s
