"""TP collectives' achieved link bandwidth (stepmodel.TP_BUS_EFFICIENCY; docs/step-model.md, "TP
scaling of short prefills, session 11"): off is bit-identical, on divides the bandwidth term of
every TP collective by the share, by hand."""
import pytest

from mistfast import step_latency, stepmodel
from mistfast.kernels import steptime as K
from mistfast.opbreakdown import op_breakdown
from mistfast.stepmodel import client_params
from .builders import model_client as make_client


@pytest.fixture
def bus():
    """Set the switch for one test and put it back."""
    old = stepmodel.TP_BUS_EFFICIENCY
    yield lambda v: setattr(stepmodel, "TP_BUS_EFFICIENCY", v)
    stepmodel.TP_BUS_EFFICIENCY = old


def _allreduce_ms(c, tokens):
    ops, _ = op_breakdown(c, prefill=[(0, tokens)])
    return 1e3 * sum(o.time_s for o in ops if o.name == "tp_allreduce"), [o for o in ops if o.name == "tp_allreduce"]


def test_off_is_the_nominal_link(bus):
    bus(None)
    c = make_client("llama-3.1-8b", "H100", tp=8)
    # H100 NVLink4: 900 GB/s bidirectional = 450e9 B/s per direction, η_net 1
    assert client_params(c)[K.P_TP_BETA] == 450e9
    bus(1.0)
    assert client_params(c)[K.P_TP_BETA] == 450e9


def test_half_bandwidth_by_hand(bus):
    # Llama-3.1-8B (D 4096, 32 layers, bf16 activations) on 2 x H100, one 1,000-token prefill:
    # an AllReduce of 1000 x 4096 x 2 B = 8.192 MB per call costs
    #   s0 + 2 (n-1) α + 2 (n-1)/n × size / β = 5 µs + 2 µs + 8.192e6 / 450e9 s = 25.204 µs (nominal)
    #   and with half the bandwidth 5 + 2 + 36.409 = 43.409 µs; 2 calls per layer x 32 layers.
    c = make_client("llama-3.1-8b", "H100", tp=2)
    bus(None)
    off, ops = _allreduce_ms(c, 1000)
    assert ops[0].count == 64
    assert off == pytest.approx(64 * (5 + 2 + 8.192e6 / 450e9 * 1e6) / 1e3, rel=1e-9)
    bus(0.5)
    on, _ = _allreduce_ms(c, 1000)
    assert on == pytest.approx(64 * (5 + 2 + 8.192e6 / 225e9 * 1e6) / 1e3, rel=1e-9)
    assert client_params(c)[K.P_TP_BETA] == 225e9


def test_only_the_tp_group_and_only_tp_steps(bus):
    bus(0.25)
    c = make_client("mixtral-8x7b", "H100", tp=4, ep=4)
    prm = client_params(c)
    assert prm[K.P_TP_BETA] == pytest.approx(450e9 * 0.25)
    assert prm[K.P_PP_BETA] == 450e9 and prm[K.P_EP_BETA] == 450e9
    one = make_client("llama-3.1-8b", "H100", tp=1)
    t_on = step_latency(one, prefill=[(0, 2000)]).total_s
    bus(None)
    assert step_latency(one, prefill=[(0, 2000)]).total_s == t_on   # no collective at tp 1


def test_decode_barely_moves_a_long_prefill_does(bus):
    # the point of the term: a batch-8 decode's 64 kB messages are latency-bound, an 8k prefill's
    # 67 MB ones bandwidth-bound
    c = make_client("llama-3.1-70b", "H100", tp=8)
    bus(None)
    d0 = step_latency(c, decode=[(1, 1024)] * 8).total_s
    p0 = step_latency(c, prefill=[(0, 8192)]).total_s
    bus(1 / 3)
    d1 = step_latency(c, decode=[(1, 1024)] * 8).total_s
    p1 = step_latency(c, prefill=[(0, 8192)]).total_s
    # the bandwidth term of each call takes (3 - 1) times its nominal value more:
    # decode: 160 layer AllReduces of 8 x 8192 x 2 B (2 x 7/8 of it on the wire) and the LM-head
    # AllGather of 8 rows x 128,256 logits x 2 B (7/8 of it): 0.163 + 0.008 = 0.171 ms more
    ar_dec = 160 * 2 * 7 / 8 * 8 * 8192 * 2 / 450e9
    ag_dec = 7 / 8 * 8 * 128256 * 2 / 450e9
    assert (d1 - d0) * 1e3 == pytest.approx((ar_dec + ag_dec) * 2 * 1e3, rel=1e-9)
    # prefill: 160 layer AllReduces of 8192 x 8192 x 2 B (the embedding is a gather of the rank's
    # rows, no AllReduce outside GenZ compat), the AllGather of one sampled row: 167 ms more
    ar_pf = 160 * 2 * 7 / 8 * 8192 * 8192 * 2 / 450e9
    ag_pf = 7 / 8 * 1 * 128256 * 2 / 450e9
    assert (p1 - p0) * 1e3 == pytest.approx((ar_pf + ag_pf) * 2 * 1e3, rel=1e-9)
    assert (d1 - d0) / d0 < 0.02 < 0.3 < (p1 - p0) / p0


@pytest.mark.parametrize("bad", [0.0, -0.5, 1.5])
def test_bad_value_names_the_switch(bus, bad):
    bus(bad)
    with pytest.raises(ValueError, match=r"stepmodel.TP_BUS_EFFICIENCY = .*: allowed a number in \(0, 1\] or None"):
        client_params(make_client("llama-3.1-8b", "H100", tp=2))
