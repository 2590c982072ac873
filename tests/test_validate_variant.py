"""tools/validate_variant.py: each word sets the module switch its docstring names, numbered words
their number, later table words win, and an unknown word stops with one line naming it."""
import importlib.util
import sys
from pathlib import Path

import pytest

from mistfast import calibration_factored, calibration_runs, launch_time, stepmodel, validate

TOOL = Path(__file__).resolve().parents[1] / "tools" / "validate_variant.py"
TOUCHED = [(stepmodel, "EXPERT_SPLIT_HALF_WIDTH"), (stepmodel, "EXPERT_SPLIT_SKIP_FP8_BLOCK"),
           (stepmodel, "TP_BUS_EFFICIENCY"), (validate, "CLOSED_LOOP_LANDING_IN_KERNEL"),
           (validate, "MLPERF_LAUNCH_FLOOR_AT_PREDICT"), (validate, "MLPERF_LAUNCH_FLOOR_IN_VALIDATE"),
           (launch_time, "GRAPH_DECODE_DEFAULT_ON"), (calibration_runs, "WAIT_OUT_OF_PREFILL_RATIO"),
           (calibration_factored, "PUBLISHER_PARAM_SD_SCALE"), (stepmodel, "SUSTAINED_PEAK_ON"),
           (validate, "MLPERF_EAGER_FLOOR_VLLM_AT_PREDICT")]


@pytest.fixture
def tool(monkeypatch):
    """The tool as a module, with the switches it may touch restored after the test and the CLI
    it hands over to replaced by a recorder of its arguments."""
    for mod, name in TOUCHED:
        monkeypatch.setattr(mod, name, getattr(mod, name))
    spec = importlib.util.spec_from_file_location("validate_variant", TOOL)
    vv = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(vv)
    handed = []
    import mistfast.cli
    monkeypatch.setattr(mistfast.cli, "main", lambda: handed.append(list(sys.argv)))
    return vv, handed


def run(monkeypatch, vv, variant, *rest):
    monkeypatch.setattr(sys, "argv", ["validate_variant.py", variant, *rest])
    vv.main()


def test_words_set_their_switches(tool, monkeypatch):
    vv, handed = tool
    run(monkeypatch, vv, "splitw400+splitnofp8+landkernel+cdna3graph+tpbus33+pubttft5+waitfixed",
        "validate", "x.csv", "-o", "out")
    assert stepmodel.EXPERT_SPLIT_HALF_WIDTH == 400.0 and stepmodel.EXPERT_SPLIT_SKIP_FP8_BLOCK is True
    assert validate.CLOSED_LOOP_LANDING_IN_KERNEL is True and launch_time.GRAPH_DECODE_DEFAULT_ON is True
    assert stepmodel.TP_BUS_EFFICIENCY == 0.33 and calibration_runs.WAIT_OUT_OF_PREFILL_RATIO is True
    assert calibration_factored.PUBLISHER_PARAM_SD_SCALE == {"ttft_overhead_ms": 5.0}
    assert handed == [["mistfast", "validate", "x.csv", "-o", "out"]]


def test_later_table_word_wins(tool, monkeypatch):
    vv, _ = tool
    run(monkeypatch, vv, "mlpfloorfit+nomlpfloor+mlpfloor")   # table order: mlpfloor, mlpfloorfit, nomlpfloor
    assert validate.MLPERF_LAUNCH_FLOOR_AT_PREDICT is False and validate.MLPERF_LAUNCH_FLOOR_IN_VALIDATE is False
    run(monkeypatch, vv, "splitw250+nosplitw")
    assert stepmodel.EXPERT_SPLIT_HALF_WIDTH is None


@pytest.mark.parametrize("variant", ["bogus", "tpbus0", "tpbus101", "splitw", "default+landkernels"])
def test_unknown_word_stops_with_one_line(tool, monkeypatch, variant):
    vv, handed = tool
    with pytest.raises(SystemExit) as e:
        run(monkeypatch, vv, variant)
    msg = str(e.value)
    assert "unknown word(s)" in msg and "\n" not in msg and handed == []


def test_session14_words(tool, monkeypatch):
    vv, _ = tool
    run(monkeypatch, vv, "nocdna3maf+amdeager")
    assert stepmodel.SUSTAINED_PEAK_ON is False and validate.MLPERF_EAGER_FLOOR_VLLM_AT_PREDICT is True
    run(monkeypatch, vv, "cdna3maf+noamdeager")
    assert stepmodel.SUSTAINED_PEAK_ON is True and validate.MLPERF_EAGER_FLOOR_VLLM_AT_PREDICT is False
