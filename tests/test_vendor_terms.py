"""The vendor level of the compute efficiency (calibration_factored.VENDOR_TERMS_ON, session 15):
synthetic rows from the analytical step model with known efficiencies.

Truth: NVIDIA devices (H100, A100) at one compute η per device; the AMD device (MI300X) at a compute
η that is `amd` times the reference level. Changing how AMD's rows are costed (`amd` 0.5 against 1.0,
as stepmodel.SUSTAINED_PEAK_ON's constant part does) must not move the fitted NVIDIA efficiencies
when the vendor term is on; without it the root (the compromise of all devices, device terms
ridge-pulled to 0) carries part of the AMD level into the NVIDIA fits."""
import math

import pytest

from mistfast import calibration as C
from mistfast import calibration_factored as CF
from mistfast import step_latency
from mistfast.specs import make_client

NV = {"H100": 0.55, "A100": 0.6}
MEMORY = 0.7
MODELS = ("llama-3.1-8b", "qwen2.5-7b")


def _rows(dev, compute, publisher="pub"):
    """Compute-bound prefills at three lengths, memory-bound decodes (batch 1, 32) and a compute-bound
    one (batch 512, which separates the compute η from the prefill η), per model, on vLLM."""
    out = []
    for model in MODELS:
        truth = make_client(model, dev, efficiency={"compute": compute, "memory": MEMORY})
        shapes = [(((0, P),), ()) for P in (1024, 4096, 8192)] + [((), ((1, 512),) * B) for B in (1, 32, 512)]
        for pf, dec in shapes:
            t = step_latency(truth, prefill=list(pf), decode=list(dec)).total_s
            out.append(C.StepObservation(model=model, device=dev, time_s=t, prefill=pf, decode=dec, engine="vllm",
                                         id=f"{publisher}-{model}-{dev}-{len(out)}", source=publisher))
    return out


@pytest.fixture(scope="module")
def nvidia_rows():
    return _rows("H100", NV["H100"]) + _rows("A100", NV["A100"])


def _nv_compute(fit):
    return {d: fit.efficiency(d, "vllm")["compute"] for d in NV}


def test_vendor_of_reads_the_catalog():
    assert CF.vendor_of("MI300X") == "AMD" and CF.vendor_of("H100") == "NVIDIA"
    assert CF.vendor_of("no-such-device") == ""


def test_without_amd_rows_the_switch_changes_nothing(nvidia_rows, monkeypatch):
    """NVIDIA-only rows: no vendor blocks, so the fit is bit for bit the one without the switch."""
    off = CF.fit_factored(nvidia_rows)
    monkeypatch.setattr(CF, "VENDOR_TERMS_ON", True)
    on = CF.fit_factored(nvidia_rows)
    assert not on.vendor
    assert all((off.device[d] == on.device[d]).all() for d in off.device)
    assert (off.root == on.root).all()


def test_amd_level_moves_nvidia_fits_only_without_vendor_terms(nvidia_rows, monkeypatch):
    fits = {}
    for vendor_on in (False, True):
        monkeypatch.setattr(CF, "VENDOR_TERMS_ON", vendor_on)
        for amd in (1.0, 0.5):
            fits[vendor_on, amd] = CF.fit_factored(nvidia_rows + _rows("MI300X", 0.6 * amd))
    # off: halving AMD's compute η drags the NVIDIA compute fits down by more than 3 %
    moved = [fits[False, 0.5].efficiency(d, "vllm")["compute"] / fits[False, 1.0].efficiency(d, "vllm")["compute"]
             for d in NV]
    assert max(abs(m - 1.0) for m in moved) > 0.03, moved
    # on: the vendor term takes it; NVIDIA fits within 0.5 %, and near their truth
    for d in NV:
        a, b = fits[True, 1.0].efficiency(d, "vllm")["compute"], fits[True, 0.5].efficiency(d, "vllm")["compute"]
        assert b == pytest.approx(a, rel=0.005), d
        assert a == pytest.approx(NV[d], rel=0.05), d
    # the AMD vendor term's change is the factor 0.5 (the MI300X device term barely moves), only on
    # the compute parameter (the others are masked to exactly 0)
    i_c = CF.FACTOR_PARAMS.index("compute")
    dv = fits[True, 0.5].vendor["AMD"] - fits[True, 1.0].vendor["AMD"]
    assert dv[i_c] == pytest.approx(math.log(0.5), abs=0.05)
    assert all(fits[True, 0.5].vendor["AMD"][i] == 0.0 for i in range(len(CF.FACTOR_PARAMS)) if i != i_c)
    # the stored MI300X efficiency reproduces its truth with the vendor term in the coordinates
    assert fits[True, 0.5].efficiency("MI300X", "vllm")["compute"] == pytest.approx(0.3, rel=0.05)
    assert "vendor" in fits[True, 0.5].terms_table() and "vendor" not in fits[False, 0.5].terms_table()


def test_unknown_vendor_parameter_is_named(monkeypatch):
    monkeypatch.setattr(CF, "VENDOR_PRIOR_SD", {"bogus": 1.0})
    with pytest.raises(C.CalibrationError, match="VENDOR_PRIOR_SD.*bogus"):
        CF.vendor_mask()


def test_sustained_peak_devices_get_a_group_of_their_own(monkeypatch):
    from mistfast import stepmodel
    monkeypatch.setattr(CF, "VENDOR_TERMS_ON", True)
    assert CF.vendor_term_of("MI300X") == "AMD" and CF.vendor_term_of("H100") is None
    monkeypatch.setattr(stepmodel, "SUSTAINED_PEAK_ON", True)
    assert CF.vendor_term_of("MI300X") == "AMD/sustained" == CF.vendor_term_of("MI325X")
    assert CF.vendor_term_of("MI355X") == "AMD"   # no published MAF: its datasheet peak
    monkeypatch.setattr(CF, "VENDOR_SPLIT_SUSTAINED", False)
    assert CF.vendor_term_of("MI300X") == "AMD"
    monkeypatch.setattr(CF, "VENDOR_TERMS_ON", False)
    assert CF.vendor_term_of("MI300X") is None


def test_sustained_peak_at_prediction_only(monkeypatch):
    """validate.SUSTAINED_PEAK_AT_PREDICT: the rows to predict see stepmodel.SUSTAINED_PEAK_ON, the fit's
    own predictions (predict_floor=False) do not, and the switch is back off afterwards."""
    from mistfast import stepmodel, validate
    seen = []
    monkeypatch.setattr(validate, "_predict_runs", lambda runs, points, cr: (seen.append(stepmodel.SUSTAINED_PEAK_ON) or [], []))
    monkeypatch.setattr(validate, "_predict_pipelines", lambda pipes, cal_client: ({}, {}))
    monkeypatch.setattr(validate, "SUSTAINED_PEAK_AT_PREDICT", True)
    validate._predict_with(None, [], [], [], [])
    validate._predict_with(None, [], [], [], [], predict_floor=False)
    monkeypatch.setattr(validate, "SUSTAINED_PEAK_AT_PREDICT", False)
    validate._predict_with(None, [], [], [], [])
    assert seen == [True, False, False] and stepmodel.SUSTAINED_PEAK_ON is False
