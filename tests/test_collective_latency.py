"""Per-collective latency (efficiency.collective_us; docs/step-model.md, "Collective latency"):
hand-counted collectives per step, the plain-Python twin, validation, the calibration file round
trip and synthetic recovery by the factorised fit."""
import pytest

import mistfast as mf
from mistfast import calibration as C
from mistfast import step_latency
from mistfast.specs import EfficiencySpec
from mistfast.stepmodel import COLLECTIVE_STARTUP_S
from tests.reference.step_reference import reference_step_time
from .builders import model_client as make_client


def _delta_per_us(spec: dict, prefill, decode, lo=5.0, hi=30.0) -> float:
    """Step time added per µs of collective_us between ``lo`` and ``hi``, in units of 1 µs, i.e. the
    number of collective calls in the step."""
    a = make_client(**spec, efficiency={"collective_us": lo})
    b = make_client(**spec, efficiency={"collective_us": hi})
    ta = step_latency(a, prefill=prefill, decode=decode).total_s
    tb = step_latency(b, prefill=prefill, decode=decode).total_s
    return (tb - ta) / ((hi - lo) * 1e-6)


def test_default_is_the_fixed_start_up_of_before():
    assert EfficiencySpec().collective_us == pytest.approx(COLLECTIVE_STARTUP_S * 1e6)
    assert C.DEFAULT_EFFICIENCY["collective_us"] == EfficiencySpec().collective_us
    # bit for bit: the default gives exactly the constant of before (5 x 1e-6 would not: 4.9999...e-6)
    from mistfast.kernels import steptime as K
    from mistfast.stepmodel import client_params
    assert client_params(make_client("llama-2-70b", "A100", tp=4))[K.P_S0] == COLLECTIVE_STARTUP_S == 5e-6
    unset = make_client("llama-2-70b", "A100", tp=4)
    five = make_client("llama-2-70b", "A100", tp=4, efficiency={"collective_us": 5.0})
    for pf, dec in (([(0, 300)], []), ([], [(1, 900)] * 12)):
        assert step_latency(unset, pf, dec).total_s == step_latency(five, pf, dec).total_s


# Collectives per step, counted from the formulas of docs/step-model.md:
# * dense, TP t > 1: 2 AllReduces per layer (after the O-projection and after the FFN) + 1 AllGather
#   of the LM-head logits (only when the step samples a row: R > 0);
# * MoE with EP > 1 under TP attention: nothing more (every rank holds all tokens; the FFN AllReduce
#   sums the experts' partial outputs, docs/step-model.md "MoE expert parallelism");
# * data-parallel attention: no AllReduce; dispatch/combine per MoE layer, AllGather/ReduceScatter
#   per MoE layer when the experts are split over te = t/ep > 1 ranks, LM-head AllGather.
@pytest.mark.parametrize("spec, calls", [
    (dict(model="llama-2-70b", device="A100", tp=4), 2 * 80 + 1),                   # 80 layers
    (dict(model="llama-2-70b", device="A100", tp=8), 2 * 80 + 1),
    (dict(model="llama-3.1-8b", device="H100", tp=2), 2 * 32 + 1),
    (dict(model="mixtral-8x7b", device="H100", tp=4, ep=4), 2 * 32 + 1),            # EP under TP: no all-to-all
    (dict(model="mixtral-8x7b", device="H100", tp=4, ep=1), 2 * 32 + 1),            # expert TP: no all-to-all
    # DeepSeek-R1 (V3 architecture, MLA): 3 dense + 58 MoE layers
    (dict(model="deepseek-ai/DeepSeek-R1", device="H200", tp=8, ep=8), 2 * 61 + 1),
    (dict(model="deepseek-ai/DeepSeek-R1", device="H200", tp=8, ep=8, dp_attention=True), 2 * 58 + 1),
    (dict(model="deepseek-ai/DeepSeek-R1", device="H200", tp=8, ep=4, dp_attention=True), 2 * 58 + 2 * 58 + 1),
    (dict(model="llama-3.1-8b", device="H100", tp=1), 0),
])
def test_collectives_per_step_by_hand(spec, calls, monkeypatch):
    from mistfast import stepmodel
    monkeypatch.setattr(stepmodel, "EP_DISPATCH_UNDER_TP_ATTENTION", False)   # EP under TP attention moves no tokens
    for pf, dec in (([(0, 512)], []), ([], [(1, 700)] * 8), ([(100, 64)], [(1, 300)] * 3)):
        assert _delta_per_us(spec, pf, dec) == pytest.approx(calls, rel=1e-9, abs=1e-6), (spec, pf, dec)


def test_former_ep_dispatch_under_tp_attention_counts_two_more_per_moe_layer(monkeypatch):
    """stepmodel.EP_DISPATCH_UNDER_TP_ATTENTION = True restores the model before session 10: a dispatch
    and a combine per MoE layer on top of the AllReduces."""
    from mistfast import stepmodel
    monkeypatch.setattr(stepmodel, "EP_DISPATCH_UNDER_TP_ATTENTION", True)
    for spec, calls in ((dict(model="mixtral-8x7b", device="H100", tp=4, ep=4), 2 * 32 + 2 * 32 + 1),
                        (dict(model="deepseek-ai/DeepSeek-R1", device="H200", tp=8, ep=8), 2 * 61 + 2 * 58 + 1)):
        assert _delta_per_us(spec, [(0, 512)], []) == pytest.approx(calls, rel=1e-9), spec


def test_tp4_step_adds_2_L_values_without_a_sampled_row():
    """A prefill chunk that does not finish its prompt samples no row (R = 0): no LM-head AllGather,
    so a TP4 step of L = 80 layers adds exactly 2 L x collective_us."""
    c0 = make_client("llama-2-70b", "A100", tp=4, efficiency={"collective_us": 0.0})
    c40 = make_client("llama-2-70b", "A100", tp=4, efficiency={"collective_us": 40.0})
    t0 = step_latency(c0, prefill=[(0, 256)], prompts_done=0).total_s
    t40 = step_latency(c40, prefill=[(0, 256)], prompts_done=0).total_s
    assert t40 - t0 == pytest.approx(2 * 80 * 40e-6, rel=1e-9)


def test_genz_compat_keeps_the_fixed_start_up():
    spec = dict(model="llama-2-70b", device="A100", tp=4, reference="genz")
    a = make_client(**spec, efficiency={"collective_us": 5.0})
    b = make_client(**spec, efficiency={"collective_us": 80.0})
    assert step_latency(a, [], [(1, 500)] * 4).total_s == step_latency(b, [], [(1, 500)] * 4).total_s


@pytest.mark.parametrize("spec", [
    dict(model="llama-2-70b", device="A100", tp=8),
    dict(model="mixtral-8x7b", device="H100", tp=4, ep=4),
    dict(model="deepseek-ai/DeepSeek-R1", device="H200", tp=8, ep=8, dp_attention=True),
])
def test_kernel_matches_python_twin(spec):
    c = make_client(**spec, efficiency={"collective_us": 35.0, "op_overhead_us": 2.0})
    for pf, dec in (([(0, 700)], []), ([], [(1, 1500)] * 20), ([(64, 128)], [(2, 400)] * 5)):
        want, _ = reference_step_time(c, pf, dec)
        assert step_latency(c, prefill=pf, decode=dec).total_s == pytest.approx(want, rel=1e-9, abs=1e-15)


def test_negative_value_is_one_clear_error():
    with pytest.raises(mf.SpecError, match=r"collective_us.*-3"):
        mf.parse_scenario({"clients": [{"model": "llama-3.1-8b", "device": "H100",
                                        "efficiency": {"collective_us": -3.0}}]})


def test_calibration_file_round_trip(tmp_path):
    fit = C.EfficiencyFit(compute=0.6, memory=0.7, op_overhead_us=1.0, collective_us=37.5)
    cal = C.Calibration(efficiencies={("A100", "vllm"): fit})
    path = C.write_calibration_toml(cal, tmp_path / "cal.toml")
    assert "collective_us = 37.5" in path.read_text()
    e = C.calibrated_efficiency("A100", "vllm", path=path)
    assert e["collective_us"] == pytest.approx(37.5)
    c = C.with_efficiency(make_client("llama-2-70b", "A100", tp=4), e)
    assert c.efficiency.collective_us == pytest.approx(37.5)


# ---- synthetic recovery by the factorised fit -----------------------------------------------------
TRUTH = {"compute": 0.6, "memory": 0.7, "op_overhead_us": 2.0, "step_overhead_ms": 1.5, "prefill": 0.9,
         "collective_us": 40.0}


def _rows(tps, truth=TRUTH, model="llama-3.1-8b", dev="H100", eng="vllm", pub="pub"):
    out = []
    for tp in tps:
        c = make_client(model, dev, tp=tp, efficiency=truth)
        shapes = [([(0, P)], []) for P in (256, 1024, 4096)]
        shapes += [([], [(1, kv)] * B) for B in (1, 16, 128) for kv in (512, 8192)]
        for pf, dec in shapes:
            t = step_latency(c, prefill=pf, decode=dec).total_s
            out.append(C.StepObservation(model=model, device=dev, time_s=t, prefill=tuple(pf), decode=tuple(dec),
                                         engine=eng, tp=tp, id=f"{pub}-{tp}-{len(out)}", source=pub))
    return out


SD = {"device": 10.0, "engine": 10.0, "pair": 1e-4, "publisher": 1e-4}


@pytest.fixture
def fit_collective(monkeypatch):
    """The factorised fit with collective_us switched on (off by default: docs/calibration.md)."""
    from mistfast import calibration_factored as F
    assert "collective_us" in F.FACTOR_OPTIONAL_PARAMS and "collective_us" not in F.FACTOR_PARAMS
    monkeypatch.setattr(F, "FACTOR_PARAMS", F.FACTOR_PARAMS + ("collective_us",))


def test_default_fit_leaves_collective_latency_at_its_default():
    """Off by default: the fitted entries carry 5 µs whatever the rows say."""
    fit = C.fit_factored(_rows((1, 2)), prior_sd=SD, max_nfev=30)
    assert C.efficiency_entries(fit)[("H100", "vllm")].collective_us == 5.0


def test_fit_recovers_collective_latency_next_to_the_overheads(fit_collective):
    """Steps at TP 1, 2 and 4 of one (device, engine). A collective is an op, so it pays
    op_overhead_us too: TP > 1 rows add 65 calls x (collective_us + op_overhead_us) = 65 x 42 µs
    per step, seen only there; the per-step fixed time (131 ops x 2 µs + 1.5 ms on Llama-3.1-8B:
    4 per layer x 32, embedding, LM head, the replicated element-wise op) is seen at every TP. Both sums are recovered; the split of
    the fixed time between op_overhead_us and step_overhead_ms is not identified by a fixed op count
    (as before this field), and the fitted steps reproduce the truth."""
    fit = C.fit_factored(_rows((1, 2, 4)), prior_sd=SD, max_nfev=100)
    e = fit.efficiency("H100", "vllm")
    assert e["collective_us"] + e["op_overhead_us"] == pytest.approx(40.0 + 2.0, rel=0.03)
    assert C.efficiency_entries(fit)[("H100", "vllm")].collective_us == pytest.approx(e["collective_us"])
    assert 131 * e["op_overhead_us"] * 1e-3 + e["step_overhead_ms"] == pytest.approx(0.262 + 1.5, rel=0.03)
    assert e["compute"] == pytest.approx(0.6, rel=0.03)
    assert e["memory"] == pytest.approx(0.7, rel=0.03)
    worst = max(float(abs(c.log_ratio(fit.coordinates("H100", "vllm"))).max()) for c in fit.cells)
    assert worst < 0.01


def test_op_count_at_tp1_by_the_twin():
    """The 131 ops per step used above, counted by the plain-Python twin (ops of non-zero time, the
    step overhead entry excluded): 4 per layer x 32, embedding, LM head, and the one replicated
    element-wise op of the step (stepmodel.REPLICATED_ELEMENTWISE, on since session 16)."""
    c = make_client("llama-3.1-8b", "H100", efficiency=TRUTH)
    _, ops = reference_step_time(c, [], [(1, 512)] * 16)
    assert sum(1 for name, t in ops if t > 0 and name != "step_overhead") == 4 * 32 + 2 + 1


def test_tp1_rows_leave_the_collective_latency_at_its_prior(fit_collective):
    fit = C.fit_factored(_rows((1,)), prior_sd=SD, max_nfev=100)
    assert fit.efficiency("H100", "vllm")["collective_us"] == pytest.approx(5.0, abs=0.5)
