"""calibration.py was split into modules with one job each (issue 13); every public name of the
old module stays importable from ``mistfast.calibration`` and is the very object of the module
that now defines it (no copies that could drift apart)."""
import importlib

import pytest

# the public names of calibration.py before the split, by the module that defines them now
MOVED = {
    "calibration_observations": ("REQUEST_CSV_COLUMNS", "SPLITWISE_COLUMNS", "STEP_CSV_COLUMNS", "STEP_CSV_OPTIONAL",
                                 "STEP_METRICS", "StepObservation", "default_client", "format_batch",
                                 "import_request_benchmark", "import_splitwise_profile", "load_step_csv",
                                 "observations_from_measurements", "parse_batch", "write_step_csv"),
    "calibration_recost": ("StepSet",),
    "calibration_runs": ("LATENCY_METRIC", "LOG_BATCH_BYTES", "LOG_CAP", "MAX_SURROGATE_STEPS", "POLICY_SET_LATENCY",
                         "RunObservation", "latency_set_by_policy", "prepare_runs", "run_values"),
    "calibration_efficiency": ("EFFICIENCY_PARAMS", "ETA_BOUNDS", "LINEAR_PARAMS", "LINEAR_PRIOR_UNIT", "LINEAR_SCALE",
                               "LINEAR_START", "ROBUST_SCALE", "STEP_PRIOR_WEIGHT", "TTFT_PRIOR_WEIGHT",
                               "EfficiencyFit", "fit_efficiency"),
    "calibration_correction": ("CORRECTION_TOLERANCE", "StepFitErrors", "fit_context_correction",
                               "fit_step_correction", "step_fit_errors"),
    "calibration_factored": ("FACTOR_ETA_MIN", "FACTOR_FD_STEP", "FACTOR_FLOOR_WEIGHT", "FACTOR_LOG_PARAMS",
                             "FACTOR_MEMORY_FLOOR", "FACTOR_PARAMS", "FACTOR_SMOOTH", "FACTOR_UNIT", "KEY_SCATTER",
                             "PRIOR_SD", "ROOT_WEIGHT", "FactoredFit", "build_cells", "efficiency_entries",
                             "factor_coordinate", "factor_value", "fit_cells", "fit_factored",
                             "leave_one_publisher_out", "publisher_of"),
    "calibration_store": ("CURRENT_ENGINE_FAMILIES", "Calibration", "CalibrationError", "DEFAULT_EFFICIENCY",
                          "DEVICE_ALIASES", "KNOWN_ENGINE_FAMILIES", "MODEL_ALIASES", "POOLED_ENGINE",
                          "calibrated_efficiency", "calibrated_step_correction", "calibration_path", "check_engine",
                          "client_calibration", "client_key", "engine_family", "load_calibration", "parse_precision",
                          "precision_dict", "precision_key", "resolve_device", "resolve_model", "row_parallelism",
                          "row_precision", "with_efficiency", "write_calibration_toml"),
    "calibration": ("DEFAULT_FIT_STRUCTURE", "FIT_STRUCTURES", "HIERARCHY_PRIOR_WEIGHT", "calibrate"),
}


@pytest.mark.parametrize("module", sorted(MOVED))
def test_every_old_name_is_reexported_as_the_same_object(module):
    C = importlib.import_module("mistfast.calibration")
    home = importlib.import_module(f"mistfast.{module}")
    for name in MOVED[module]:
        assert getattr(C, name) is getattr(home, name), name


def test_classes_and_functions_live_where_they_are_defined():
    """A pickled StepObservation or fitted result names its new module (module paths are part of
    what a pickle stores)."""
    from mistfast import calibration as C
    assert C.StepObservation.__module__ == "mistfast.calibration_observations"
    assert C.FactoredFit.__module__ == "mistfast.calibration_factored"
    assert C.fit_efficiency.__module__ == "mistfast.calibration_efficiency"
    assert C.calibrate.__module__ == "mistfast.calibration"
