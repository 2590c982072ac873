"""Replicated element-wise traffic (stepmodel.REPLICATED_ELEMENTWISE; docs/step-model.md, "Replicated
element-wise traffic, session 16"): the residual-add + RMSNorm passes (8 D elements per token per layer)
and the MoE combine ((K + 1) D per token per MoE layer) as one memory-bound op whose rows are not split by
TP. Off is bit-identical; on, by hand."""
import pytest

from mistfast import step_latency, stepmodel
from mistfast.kernels import steptime as K
from mistfast.stepmodel import client_params
from .builders import model_client as make_client


@pytest.fixture
def elem(monkeypatch):
    """Set the switch for one test (monkeypatch puts it back)."""
    return lambda v: monkeypatch.setattr(stepmodel, "REPLICATED_ELEMENTWISE", v)


def test_params_by_hand(elem):
    # gpt-oss-120b: D = 2,880, top-4 of 128 experts, every one of the 36 layers MoE.
    #   per layer 8 x 2,880 = 23,040 elements, per MoE layer (4 + 1) x 2,880 = 14,400
    elem((8.0, 1.0))
    p = client_params(make_client("gpt-oss-120b", "B200", tp=8))
    assert p[K.P_ELEM_LAYER] == 23040.0
    assert p[K.P_ELEM_MOE] == 14400.0
    # Llama-3.1-8B (dense, D = 4,096): norms only
    p = client_params(make_client("llama-3.1-8b", "H100"))
    assert p[K.P_ELEM_LAYER] == 8 * 4096
    assert p[K.P_ELEM_MOE] == 0.0


def test_off_is_bit_identical(elem):
    dec = [(1, 2000)] * 16
    for model, dev, kw in (("gpt-oss-120b", "B200", {"tp": 8}), ("llama-3.1-70b", "H100", {"tp": 4}),
                           ("mixtral-8x7b", "H100", {"reference": "genz", "tp": 2})):
        c = make_client(model, dev, **kw)
        elem(None)
        p0 = client_params(c)
        assert p0[K.P_ELEM_LAYER] == 0.0 and p0[K.P_ELEM_MOE] == 0.0
        if kw.get("reference") == "genz":   # GenZ compat has no such op, on or off
            a = step_latency(c, prefill=[(0, 4096)], decode=dec).total_s
            elem((8.0, 1.0))
            assert (client_params(c) == p0).all()
            assert step_latency(c, prefill=[(0, 4096)], decode=dec).total_s == a


@pytest.mark.parametrize("tp", [1, 2, 8])
def test_prefill_time_added_by_hand_and_tp_invariant(elem, tp):
    """gpt-oss-120b on B200, one 8,192-token prefill. The op moves T x 36 x (23,040 + 14,400) BF16
    elements = 8,192 x 36 x 37,440 x 2 B = 22,083,010,560 B at 8 TB/s x 0.75 = 6 TB/s: 3.680502 ms
    (tau = 0 for this client), on every rank whatever tp, all of it in the "other" part."""
    c = make_client("gpt-oss-120b", "B200", tp=tp)
    elem(None)
    s0 = step_latency(c, prefill=[(0, 8192)])
    elem((8.0, 1.0))
    s1 = step_latency(c, prefill=[(0, 8192)])
    by_hand = 8192 * 36 * 37440 * 2 / (8000e9 * 0.75)
    assert by_hand == pytest.approx(3.680502e-3, rel=1e-6)
    assert s1.breakdown["other_s"] - s0.breakdown["other_s"] == pytest.approx(by_hand, rel=1e-9)
    assert s1.total_s - s0.total_s == pytest.approx(by_hand, rel=1e-9)


@pytest.mark.parametrize("kw", [dict(model="gpt-oss-120b", device="B200", tp=8),
                                dict(model="llama-3.1-70b", device="H100", tp=4, pp=2),
                                dict(model="mixtral-8x7b", device="H100", tp=2, ep=2)])
def test_kernel_matches_the_python_twin_when_on(elem, kw):
    """tests/reference/step_reference.py costs the op on its own (layer by layer); on, the kernel agrees."""
    from tests.reference.step_reference import reference_step_time
    elem((8.0, 1.0))
    c = make_client(**kw)
    pf, dec = [(0, 3000), (500, 700)], [(1, 0, 2000)] * 12
    assert step_latency(c, prefill=pf, decode=dec).total_s == pytest.approx(reference_step_time(c, pf, dec)[0], rel=1e-9)
