"""One lowering path, one results path: a single client is a one-stage pipeline (both kernel
entry points give the same bits), the shared formulas by hand, pydantic custom errors carrying
field, value and what is allowed, and the calibration TOML written by tomli-w."""
from __future__ import annotations

import math
import tomllib
import warnings
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from mistfast.results import cost_vars, device_energy_J, host_energy_J
from mistfast.scenario import simulate

ROOT = Path(__file__).resolve().parents[1]


def _single(dp: int) -> dict:
    doc = tomllib.loads((ROOT / "examples" / "single_client.toml").read_text())
    doc["workload"]["num_requests"] = 150
    doc["clients"][0]["dp"] = dp
    return doc


def _as_pipeline(doc: dict) -> dict:
    return dict(doc, pipelines=[{"name": "one", "stages": [{"kind": "llm", "pool": "llm", "routing": "round_robin"}]}])


def _run(doc):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return simulate(doc, per_request=True)


def test_one_client_is_a_one_stage_pipeline_bit_for_bit():
    """The batched single-client path (simulate_points) and the explicit one-stage pipeline
    (simulate_cluster) agree on every variable they share, to the bit."""
    a, b = _run(_single(1)), _run(_as_pipeline(_single(1)))
    shared = [k for k in a.data_vars if k in b]
    assert len(shared) > 60
    for k in shared:
        np.testing.assert_array_equal(a[k].values, b[k].values, err_msg=k)


def test_replicas_split_up_front_equal_round_robin_routing():
    """dp = 2: splitting requests round robin before the kernel equals routing them round robin
    in it, request by request; engine totals agree (busy, MFU: the same sum divided in another
    order, so to rounding)."""
    a, b = _run(_single(2)), _run(_as_pipeline(_single(2)))
    for k in ("req_ttft_ms", "req_e2e_ms", "req_finish_s", "n_finished", "ttft_p99_ms", "output_tok_s", "energy_J",
              "cost_usd", "n_steps", "preemptions"):
        np.testing.assert_array_equal(a[k].values, b[k].values, err_msg=k)
    for k in ("busy_fraction", "mfu", "mbu"):
        assert float(a[k]) == pytest.approx(float(b[k]), rel=1e-12), k
    assert list(b.client.values) == ["llm[0]", "llm[1]"]
    assert float(b.client_energy_J.sum()) == pytest.approx(float(a.energy_J), rel=1e-12)


def test_device_energy_by_hand():
    # TDP 700 W split 30/40/20/10 %: static 210, compute 280, memory 140, network 70 W; two devices
    # busy 10 s (compute 4 s, memory 3 s, network 1 s) and idle 5 s at 100 W
    e = device_energy_J(700.0, 100.0, 2, 10.0, 4.0, 3.0, 1.0, 5.0)
    assert e == pytest.approx(2 * (10 * 210 + 4 * 280 + 3 * 140 + 1 * 70) + 2 * 100 * 5)
    # a host at 30 % busy for 100 s: 50 W idle all the time, 150 W more while busy
    assert host_energy_J(200.0, 50.0, 0.3, 100.0) == pytest.approx(50 * 100 + 150 * 30)


def test_cost_by_hand_and_free_devices():
    s = {"output_tok_s": np.array([100.0, 100.0])}
    cost_vars(s, np.array([8.0, 0.0]), np.array([1800.0, 1800.0]), np.array([180000.0, 180000.0]))
    assert s["cost_usd"].tolist() == [4.0, 0.0]                  # $8/h for half an hour
    assert s["tokens_per_dollar"][0] == pytest.approx(45000.0)
    assert s["output_tok_s_per_usd_per_hour"][0] == pytest.approx(12.5)
    assert math.isnan(s["tokens_per_dollar"][1]) and math.isnan(s["output_tok_s_per_usd_per_hour"][1])


def test_cross_field_errors_carry_field_value_and_allowed():
    """field_error is a pydantic custom error: its context holds (field, value, allowed); the
    message users see is still one line ``path = value: allowed``."""
    from mistfast.specs import FIELD_ERROR, ClientSpec, SpecError, parse_scenario
    with pytest.raises(ValidationError) as ei:
        ClientSpec.model_validate({"name": "c", "model": "llama-3.1-8b", "device": "H100", "tp": 3})
    err = [e for e in ei.value.errors() if e["type"] == FIELD_ERROR][0]
    field, value, allowed = err["ctx"]["problems"][0]
    assert (field, value) == ("tp", "3") and "must divide num_heads" in allowed
    doc = _single(1)
    doc["clients"][0]["tp"] = 3
    with pytest.raises(SpecError) as si:
        parse_scenario(doc)
    assert si.value.problems[0].startswith("clients[0].tp = 3: tp must divide num_heads")


def test_calibration_toml_written_by_tomli_w_reads_back(tmp_path):
    from mistfast.calibration_store import Calibration, load_calibration, write_calibration_toml
    cal = Calibration(efficiencies={("H100", "vLLM"): {"compute": np.float64(0.61234567), "memory": 0.8,
                                                       "source": "fit", "train_rows": ["a", "b"]},
                                    ("*", "*"): {"compute": 0.5}},
                      corrections={"llama/H100 tp=1": {"tokens": [np.int64(1), 512], "prefill": [1.0, 0.00001234567],
                                                       "decode": [1.1, float("nan")]}},
                      provenance={"split": "all", "n": np.int64(3)})
    p = write_calibration_toml(cal, tmp_path / "c.toml", header="fitted\nby a test")
    text = p.read_text()
    assert text.startswith("# fitted\n# by a test\n")
    back = load_calibration(p)
    e = back.efficiencies[("H100", "vLLM")]
    assert e["compute"] == 0.612346 and e["memory"] == 0.8 and e["train_rows"] == ["a", "b"]
    assert back.efficiencies[("*", "*")]["compute"] == 0.5
    c = back.corrections["llama/H100 tp=1"]
    assert c["tokens"] == [1, 512] and c["prefill"] == [1.0, 1.23457e-05] and math.isnan(c["decode"][1])
    assert back.provenance["n"] == 3 and back.provenance["split"] == "all"
