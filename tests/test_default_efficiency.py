"""A client that names no engine runs at the pooled fit of the current engines (over all devices),
not at MODEL.md's 0.75 (docs/calibration.md, "Defaults")."""
import pytest

from mistfast.calibration import calibrated_efficiency, load_calibration, calibration_path
from mistfast.specs import make_client


def test_no_engine_gets_the_pooled_current_fit():
    stored = load_calibration(calibration_path()).efficiencies.get(("*", "current"))
    if stored is None:
        pytest.skip("data/calibration.toml has no [efficiency.\"*\".current] entry")
    c = make_client("llama-3.1-70b", "H100", tp=8)
    assert c.efficiency.compute == pytest.approx(stored["compute"])
    assert c.efficiency.memory == pytest.approx(stored["memory"])
    assert c.efficiency.op_overhead_us == pytest.approx(stored.get("op_overhead_us", 0.0))
    assert '[*.current]' in c.efficiency.source
    # the same entry on every device: comparisons between devices follow their datasheets
    assert make_client("llama-3.1-8b", "MI300X").efficiency == make_client("llama-3.1-8b", "B200").efficiency
    # no step correction without an engine
    assert c.step_correction is None


def test_explicit_and_compat_clients_keep_their_efficiency():
    assert make_client("llama-3.1-8b", "H100", efficiency={}).efficiency.compute == 0.75
    assert make_client("llama-3.1-8b", "H100", efficiency={"memory": 0.5}).efficiency.compute == 0.75
    assert make_client("llama-3.1-8b", "H100", reference="genz").efficiency.compute == 0.75


def test_engine_current_is_the_devices_own_entry():
    want = calibrated_efficiency("H100", "current")
    if want is None:
        pytest.skip("no H100 entry")
    assert make_client("llama-3.1-8b", "H100", engine="current").efficiency.compute == pytest.approx(want["compute"])
