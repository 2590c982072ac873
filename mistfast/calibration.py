"""Calibration of the analytical step model from measurements (MODEL.md §2.2, §11.2).

Two layers, both fitted by minimising relative (log-ratio) error:

1. **Efficiencies** η_c, η_m (and optionally η_net) and the per-op overhead τ of the roofline
   (MODEL §2.1), per (device, engine family): :func:`fit_efficiency`. The physical form
   extrapolates safely, so this is what other configurations of the same device and engine use.
2. **Step correction**: a residual factor over log(token rows) for one exact client (model,
   device, TP/PP, precision, engine), separately for steps with prefill and decode-only steps:
   :func:`fit_step_correction`. It makes the client reproduce its measured steps; outside the
   measured token range the kernel uses the factor of the nearest measured point and flags the
   step (``outside_calibrated_range``; ``simulate`` warns).


Inputs and importers are in :mod:`mistfast.calibration_observations` (step observations: CSV,
Splitwise profiles, per-request benchmarks, the shared measurements table) and
:mod:`mistfast.importers` (Vidur profiles, step logs); whole-run observations in
:mod:`mistfast.calibration_runs` over the step re-costing of :mod:`mistfast.calibration_recost`;
the per-group efficiency fit in :mod:`mistfast.calibration_efficiency`; step corrections in
:mod:`mistfast.calibration_correction`; the factorised fit in :mod:`mistfast.calibration_factored`.
This module joins them (:func:`calibrate`) and re-exports their public names.


Stored results
--------------
``data/calibration.toml`` (written by :func:`write_calibration_toml`, read by
:func:`load_calibration`, :func:`calibrated_efficiency`, :func:`calibrated_step_correction`)
holds the fitted efficiencies per ``[efficiency.DEVICE.ENGINE]`` (``"*"`` = pooled over devices
or engines, ``current`` = pooled over current engines) with their provenance: rows used, date,
split, train and test errors. Reading it, names, engine families and precisions live in
:mod:`mistfast.calibration_store` (re-exported here), so specs need not import the fitter.
:func:`calibrate` fits per (device, engine family) with priors towards pooled fits; step
corrections may follow (tokens, context) (:func:`fit_context_correction`); importers of
profiles and step logs are in :mod:`mistfast.importers`.
"""
from __future__ import annotations

from typing import Callable, Sequence

from .calibration_store import (  # noqa: F401  (re-exported: the stored side of calibration)
    CURRENT_ENGINE_FAMILIES, POOLED_ENGINE, DEFAULT_EFFICIENCY, DEVICE_ALIASES, KNOWN_ENGINE_FAMILIES, MODEL_ALIASES, Calibration, CalibrationError, _catalog_name,
    _default_calibration, _DTYPES, _eff_dict, _num, _resolve, calibrated_efficiency,
    calibrated_step_correction, calibration_path, check_engine, client_calibration, client_key, engine_family,
    load_calibration, parse_precision, precision_dict, precision_key, resolve_device, resolve_model, row_parallelism,
    row_precision, with_efficiency, write_calibration_toml)
from .calibration_observations import (  # noqa: F401  (re-exported)
    REQUEST_CSV_COLUMNS, SPLITWISE_COLUMNS, STEP_CSV_COLUMNS, STEP_CSV_OPTIONAL, STEP_METRICS, StepObservation,
    _batch_of, _client_cached, _read_rows, default_client, format_batch, import_request_benchmark,
    import_splitwise_profile, load_step_csv, observations_from_measurements, parse_batch, write_step_csv)
from .calibration_recost import StepSet, _cost_steps  # noqa: F401  (re-exported)
from .calibration_runs import (  # noqa: F401  (re-exported)
    LATENCY_METRIC, LOG_BATCH_BYTES, LOG_CAP, MAX_SURROGATE_STEPS, POLICY_SET_LATENCY, RunObservation,
    _compress_log, _run_stepset, _run_summary, _set_reference, _SharedRunSteps, _simulate_points,
    latency_set_by_policy, prepare_runs, run_values)
from .calibration_efficiency import (  # noqa: F401  (re-exported)
    EFFICIENCY_PARAMS, ETA_BOUNDS, LINEAR_PARAMS, LINEAR_PRIOR_UNIT, LINEAR_SCALE, LINEAR_START, ROBUST_SCALE,
    STEP_PRIOR_WEIGHT, TTFT_PRIOR_WEIGHT, EfficiencyFit, _fit_one, _group_key, fit_efficiency)
from .calibration_correction import (  # noqa: F401  (re-exported)
    CORRECTION_TOLERANCE, StepFitErrors, _analytic_parts, _correction_over_step_overhead, _factors_at,
    _greedy_knots, _has_context_info, _representative, _thin_knots, _warn_if_poor, fit_context_correction,
    fit_step_correction, step_fit_errors)
from .calibration_factored import (  # noqa: F401  (re-exported)
    FACTOR_ETA_MIN, FACTOR_FD_STEP, FACTOR_FLOOR_WEIGHT, FACTOR_LOG_PARAMS, FACTOR_MEMORY_FLOOR, FACTOR_PARAMS,
    FACTOR_SMOOTH, FACTOR_UNIT, KEY_SCATTER, PRIOR_SD, ROOT_WEIGHT, FactoredFit, _Cell, _cell_weights,
    PARAM_PRIOR_SCALE, _soft_l1_residual, build_cells, efficiency_entries, factor_coordinate, factor_value, fit_cells, fit_factored,
    leave_one_publisher_out, publisher_of)


HIERARCHY_PRIOR_WEIGHT = 0.1   # per log unit of eta (and per 10 us of tau x 0.05) towards the parent fit
# "factored": one joint fit of root + device + engine + pair + publisher terms (fit_factored below);
# "hierarchical": independent per-(device, engine) fits with a prior to a pooled parent
FIT_STRUCTURES = ("factored", "hierarchical")
DEFAULT_FIT_STRUCTURE = "factored"


def calibrate(observations: Sequence[StepObservation], runs: Sequence[RunObservation] = (), *,
              base_client_factory: Callable = default_client, pooled: bool = True,
              corrections: bool = True, hierarchical: bool = True, structure: str | None = None) -> Calibration:
    """Fit efficiencies per (device, engine family) with priors, plus the pooled fallbacks, and a
    step correction per measured configuration (on top of its fitted efficiency).

    Pooled entries (``"*"`` = any): ``("*", "current")`` — one fit over the current engines
    (:data:`CURRENT_ENGINE_FAMILIES`: vLLM, SGLang, TensorRT-LLM 1.x), the default of a client or
    measurement that names no engine; ``("*", engine)`` per family, ``(device, "*")`` per device
    and ``(device, "current")``. With ``hierarchical`` each of these, and each (device, engine)
    fit, is pulled towards its parent (the family's pooled fit, else the current-engine fit) by a
    prior of :data:`HIERARCHY_PRIOR_WEIGHT` per log unit, so parameters its own rows cannot
    identify take the parent's value instead of the roofline default.

    ``structure`` (default :data:`DEFAULT_FIT_STRUCTURE`): ``"factored"`` replaces all of the
    above by one joint fit of root, device, engine, (device, engine) and per-publisher terms
    (:func:`fit_factored`; the publisher terms are fitted but not stored), which
    writes every (device, engine) of the fitted devices and engines and the same pooled keys;
    ``"hierarchical"`` is the per-pair fit described above. ``pooled=False`` or
    ``hierarchical=False`` select the per-pair fit (they describe its variants)."""
    structure = structure or DEFAULT_FIT_STRUCTURE
    if structure not in FIT_STRUCTURES:
        raise CalibrationError(f"structure: {structure!r} is not one of {', '.join(FIT_STRUCTURES)}")
    cal = Calibration()
    if structure == "factored" and pooled and hierarchical and (observations or runs):
        ffit = fit_factored(observations, runs, base_client_factory)
        cal.efficiencies.update(efficiency_entries(ffit))
        cal.terms = ffit.terms_table()
        if corrections:
            _fit_corrections(cal, observations, base_client_factory)
        return cal
    kw = dict(prior_weight=HIERARCHY_PRIOR_WEIGHT, tau_prior_weight=0.05) if hierarchical else {}
    top = None
    if pooled:
        cur_o = [o for o in observations if o.engine in CURRENT_ENGINE_FAMILIES]
        cur_r = [r for r in runs if r.engine in CURRENT_ENGINE_FAMILIES]
        kw["equal_model_weights"] = True
        if cur_o or cur_r:
            top = fit_efficiency(cur_o, base_client_factory, runs=cur_r, group_by=None, equal_model_weights=True)
            cal.efficiencies[("*", POOLED_ENGINE)] = top
        else:  # no current engine measured: pool everything
            top = fit_efficiency(observations, base_client_factory, runs=runs, group_by=None,
                                 equal_model_weights=True)
        parent = (lambda key: top) if hierarchical else None
        for k, v in fit_efficiency(observations, base_client_factory, runs=runs, group_by=("engine",),
                                   prior=parent, **kw).items():
            cal.efficiencies.setdefault(k, v)
        for k, v in fit_efficiency(observations, base_client_factory, runs=runs, group_by=("device",),
                                   prior=parent, **kw).items():
            cal.efficiencies.setdefault(k, v)
        if cur_o or cur_r:
            for (dev, _), v in fit_efficiency(cur_o, base_client_factory, runs=cur_r, group_by=("device",),
                                              prior=parent, **kw).items():
                cal.efficiencies.setdefault((dev, POOLED_ENGINE), v)
        if ("*", "*") not in cal.efficiencies and top is not None:
            cal.efficiencies[("*", "*")] = top

    def family_prior(key):
        return cal.efficiencies.get(("*", key[1])) or top
    kw.pop("equal_model_weights", None)
    main = fit_efficiency(observations, base_client_factory, runs=runs,
                          prior=family_prior if (hierarchical and pooled) else None, **(kw if pooled else {}))
    for k, v in main.items():
        cal.efficiencies[k] = v
    if corrections:
        _fit_corrections(cal, observations, base_client_factory)
    return cal


def _fit_corrections(cal: Calibration, observations, base_client_factory) -> None:
    """A step correction per measured configuration, over its fitted efficiency."""
    by_key: dict[str, list[StepObservation]] = {}
    for o in observations:
        by_key.setdefault(o.client_key, []).append(o)
    for key, obs in by_key.items():
        o0 = obs[0]
        eff, used = cal.efficiency_for(o0.device, o0.engine)
        cl = with_efficiency(base_client_factory(o0), eff)
        cal.corrections[key] = fit_step_correction(
            obs, cl, source=f"fit_step_correction on {len(obs)} steps ({', '.join(o.id for o in obs[:8])}"
                             f"{', ...' if len(obs) > 8 else ''}) over efficiency {used}")
