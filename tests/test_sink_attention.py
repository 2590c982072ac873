"""gpt-oss under vLLM on A100: the Triton attention kernel at a share of the modelled attention FLOP rate,
at prediction only (validate.SINK_ATTENTION_TRITON_SHARE, session 15; docs/calibration.md "gpt-oss on
A100: vLLM's Triton attention"): which rows get it, that the fit's client never carries it, and what
it does to a step (by hand)."""
import pytest

from mistfast import step_latency
from mistfast import stepmodel as S
from mistfast import validate as V
from mistfast.kernels import steptime as K

from .builders import gpustack_burst_row, model_client


def _row(**kw):
    return gpustack_burst_row(32000, 100, **{**dict(model="openai/gpt-oss-20b", hardware="A100-SXM-80GB",
                                                    precision="MXFP4 (native gpt-oss MoE weights)", value=0.1), **kw})


def test_on_by_default_off_by_switch(monkeypatch):
    assert V.SINK_ATTENTION_TRITON_SHARE == 0.5   # measured held out, shipped on (docs/calibration.md)
    assert V.plan_row(_row()).attention_share == 0.5
    monkeypatch.setattr(V, "SINK_ATTENTION_TRITON_SHARE", 1.0)
    p = V.plan_row(_row())
    assert p.status == "ok", p.reason
    assert p.attention_share == 1.0
    c = model_client("gpt-oss-20b", "A100")
    assert V.with_predict_floor(c, p) is c   # nothing to add: the very client


@pytest.mark.parametrize("kw, expected", [
    ({}, True),                                                                   # gpt-oss-20b, A100, vLLM 0.11
    ({"model": "openai/gpt-oss-120b"}, True),
    ({"hardware": "H100-SXM-80GB"}, False),                                        # FlashAttention 3 takes sinks
    ({"engine": "SGLang (sglang.launch_server; default flags)", "engine_version": "v0.5.3"}, False),
    ({"model": "Qwen/Qwen3-14B", "precision": "BF16"}, False),                     # no attention sinks
])
def test_rows_in_scope_and_the_fit_client_without_it(monkeypatch, kw, expected):
    """The share reaches the predicting client of vLLM gpt-oss rows on pre-Hopper parts only; the
    scenario's client, which the fit re-costs, never carries it."""
    monkeypatch.setattr(V, "SINK_ATTENTION_TRITON_SHARE", 0.5)
    p = V.plan_row(_row(**kw))
    assert p.status == "ok", p.reason
    assert p.attention_share == (0.5 if expected else 1.0)
    assert "attention_kernel_share" not in p.scenario["clients"][0]


def test_scope_rules():
    m20 = model_client("gpt-oss-20b", "A100").model
    q14 = model_client("qwen3-14b", "A100", precision="bf16").model
    assert V.triton_sink_attention("vllm", "v0.11.0", "A100", m20)
    assert V.triton_sink_attention("vllm", "", "A100", m20)             # no version stated: current
    assert not V.triton_sink_attention("vllm", "v0.10.0", "A100", m20)  # before gpt-oss support
    assert not V.triton_sink_attention("vllm", "v0.11.0", "H100", m20)
    assert not V.triton_sink_attention("vllm", "v0.11.0", "B200", m20)
    assert not V.triton_sink_attention("trtllm-1", "v1.2.0rc1", "A100", m20)
    assert not V.triton_sink_attention("vllm", "v0.11.0", "A100", q14)


def test_attention_time_by_hand(monkeypatch):
    """Qwen3-14B BF16 on one A100 at MODEL.md's η_c 0.75 (the share is a client field, so any model
    shows its arithmetic), one 8,192-token prefill from an empty cache. Causal attention: T(T+1)/2 =
    33,558,528 query-key pairs per head, 4 FLOP per pair and head dimension: 4 · 40 heads · 128 ·
    33,558,528 · 40 layers = 2.7489e13 FLOP at 312 TFLOP/s · 0.75 = 0.117484 s; at the share 0.5 the
    rate halves: 0.234967 s. The GEMMs (and bandwidth) do not change; the kernel's attention peak is
    the only parameter that moves."""
    T = 8192
    base = model_client("qwen3-14b", "A100", precision="bf16")
    m = base.model
    assert (m.num_heads, m.head_dim, m.num_layers) == (40, 128, 40) and not m.sliding_window
    flop = 4.0 * 40 * 128 * (T * (T + 1) / 2) * 40
    rate = 312e12 * 0.75
    shared = base.model_copy(update={"attention_kernel_share": 0.5})
    ra = step_latency(base, prefill=[(0, T)]).breakdown
    rb = step_latency(shared, prefill=[(0, T)]).breakdown
    assert ra["attention_s"] == pytest.approx(flop / rate, rel=1e-9)
    assert rb["attention_s"] == pytest.approx(flop / (rate * 0.5), rel=1e-9)
    assert rb["attention_s"] == pytest.approx(0.234967, rel=1e-5)
    assert rb["gemm_s"] == ra["gemm_s"]
    pa, pb = S.client_params(base), S.client_params(shared)
    assert pb[K.P_FPEAK_ATTN] == pytest.approx(0.5 * pa[K.P_FPEAK_ATTN], rel=1e-15)
    assert (pa[K.P_FPEAK], pa[K.P_BW]) == (pb[K.P_FPEAK], pb[K.P_BW])


def test_predicting_client_gets_the_share(monkeypatch):
    """with_predict_floor hands the row's share to the predicting client (and keeps the launch-floor
    fields of rows that have them)."""
    monkeypatch.setattr(V, "SINK_ATTENTION_TRITON_SHARE", 0.5)
    p = V.plan_row(_row())
    c = model_client("gpt-oss-20b", "A100")
    pred = V.with_predict_floor(c, p)
    assert pred.attention_kernel_share == 0.5 and c.attention_kernel_share == 1.0
    assert pred.efficiency == c.efficiency
