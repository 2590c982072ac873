"""The factorised efficiency fit: one joint fit of root, device, engine, (device, engine) and
publisher terms, so a fit transfers to a publisher it has not seen; its leave-one-publisher-out
surrogate for choosing the priors."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np

from .calibration_store import CURRENT_ENGINE_FAMILIES, POOLED_ENGINE, DEFAULT_EFFICIENCY, CalibrationError
from .calibration_observations import default_client
from .calibration_recost import StepSet
from .calibration_runs import _run_stepset, prepare_runs, recosted, ref_waits
from .calibration_efficiency import ROBUST_SCALE, EfficiencyFit, one_blas_thread

# ============================================================================ factorised fit
# A factorised efficiency fit that transfers to a publisher it has not seen.
#
# Per (device, engine) fits with a prior to a parent carry one publisher's setup (its model family,
# its benchmark client, its engine flags) into every prediction for that pair. Here every fitted
# parameter is one sum over all rows, fitted jointly (in the parameter's own scale: log η for the
# efficiencies, ms or µs for the overheads)::
#
#     x(device, engine, publisher) = μ + device term + engine term + pair term + publisher term
#
# with ridge priors (PRIOR_SD) pulling every term but μ towards 0 (the pair term harder than the device and
# engine terms, so a pair is additive unless several rows insist). The publisher term is a random
# effect: it is fitted, so one publisher's setup offset does not leak into the device and engine
# terms, but it is **not** stored: a new publisher gets ``μ + device + engine + pair``. A pair
# without rows gets ``μ + device + engine``, i.e. what is known about both.
#
# Each residual is the log ratio predicted/measured of one row (steps and whole runs, re-costed
# exactly as :func:`mistfast.calibration.fit_efficiency` does), robust (soft L1 at
# ``ROBUST_SCALE``) and weighted so that every (publisher, device, engine, model) key has the same
# total weight (one measurement with a scatter of KEY_SCATTER): a 1,000-row sweep of one model
# counts like one configuration, not like 1,000 independent facts, so the priors on the terms
# decide what a few configurations cannot.
#
# The Jacobian is exact in structure: a cell's residuals depend only on its six parameter values,
# so one forward difference per parameter and cell (7 re-costings of all rows per iteration) gives
# the derivatives of every term by the chain rule.
FACTOR_PARAMS = ("compute", "memory", "prefill", "op_overhead_us", "step_overhead_ms", "ttft_overhead_ms")
# fields the fit can take as well, off by default (add to FACTOR_PARAMS to fit them): the latency per
# collective call held out worse than the fixed 5 µs (docs/calibration.md, "Collective latency")
FACTOR_OPTIONAL_PARAMS = ("collective_us",)
FACTOR_LOG_PARAMS = ("compute", "memory", "prefill", "expert_compute", "expert_fp8", "dense_fp8")   # fitted as log η (η ≤ 1 by a smooth cap)
# prior standard deviation of each kind of term, in log units for η (the overhead terms in UNITs of
# their own: 10 µs, 3 ms, 30 ms); the ridge weight of a term is 1/sd. The root μ has a weak prior
# (ROOT_WEIGHT) towards the roofline default instead. Data: every (publisher, device, engine,
# model) key is one configuration measured with a scatter of KEY_SCATTER (log units), whatever
# its row count.
# host time per sequence per step (docs/step-model.md): the unit of its terms, µs (a device or engine
# term of one sd = 0.3 x 20 = 6 µs: vLLM and SGLang spend tens of µs of Python per running request
# per step, a C++ scheduler a few), and its start value
SEQ_UNIT_US = 20.0
SEQ_START_US = 1.0
FACTOR_UNIT = {"compute": 1.0, "memory": 1.0, "prefill": 1.0,
        "op_overhead_us": 10.0, "step_overhead_ms": 3.0, "ttft_overhead_ms": 30.0, "seq_overhead_us": SEQ_UNIT_US,
        "collective_us": 20.0, "expert_compute": 1.0, "expert_fp8": 1.0, "dense_fp8": 1.0}
PRIOR_SD = {"device": 0.3, "engine": 0.3, "pair": 0.15, "publisher": 0.2}
# per-parameter multiplier of every term's prior sd (1: PRIOR_SD in the parameter's UNIT)
PARAM_PRIOR_SCALE = {p: 1.0 for p in FACTOR_PARAMS + FACTOR_OPTIONAL_PARAMS}
# per-parameter multiplier of the publisher terms' prior sd only (a publisher's setup offset of that
# parameter allowed to be larger than PRIOR_SD["publisher"] units); empty = as before, bit for bit.
# docs/step-model.md, "TP scaling of short prefills, session 11": {"ttft_overhead_ms": 3.0} lets
# one publisher's front-end (GPUStack's ~50 ms at 215-token prompts) stay in its own term
PUBLISHER_PARAM_SD_SCALE: dict = {}
# the host time per sequence per step (docs/step-model.md) is a factorised parameter only when
# FIT_SEQ_OVERHEAD: out of sample it helped the MLPerf fold's throughput and TTFT but not its
# requests/s and E2E, and left GPUStack's offline bursts where they were (docs/ttft-under-load.md,
# "Host time per sequence"), so the default fit leaves every client's own value (0)
FIT_SEQ_OVERHEAD = False
SEQ_PARAM = "seq_overhead_us"
PARAM_PRIOR_SCALE[SEQ_PARAM] = 1.0
if FIT_SEQ_OVERHEAD:
    FACTOR_PARAMS = FACTOR_PARAMS + (SEQ_PARAM,)
# the expert-GEMM efficiency η_e (efficiency.expert_compute, docs/step-model.md "Expert GEMM
# efficiency"): a log parameter seen only by MoE rows whose expert op is compute-bound (prefill), so
# the MoE rows of a (device, engine) against its dense rows identify it (the dense rows fix η_c and
# η_prefill); dense-only cells leave its terms at their priors. Fitted since the ninth refit, with
# stepmodel.EXPERT_ETA_SCOPE = "weight_only" (W4A16 experts only): held out, all rows 18.3 -> 16.1 %,
# TTFT 32.2 -> 24.2 %, throughput / TPOT +0.4 / +0.5 points through the refit of the other terms; on
# every expert format it made Blackwell's TTFT far worse (docs/calibration.md, "Expert GEMM efficiency").
# Since session 10 the scope is "gemm16" (every expert GEMM multiplied at 16 bits: BF16 experts and
# FP8 on A100 too): held out, all rows GPUStack 30.7 -> 27.8 %, InferenceMAX 13.2 -> 12.6 %, MLPerf
# 17.1 -> 15.6 % (docs/calibration.md, "GPUStack bursts: 16-bit expert GEMMs ...")
FIT_EXPERT_COMPUTE = True
EXPERT_PARAM = "expert_compute"
PARAM_PRIOR_SCALE[EXPERT_PARAM] = 1.0
if FIT_EXPERT_COMPUTE:
    FACTOR_PARAMS = FACTOR_PARAMS + (EXPERT_PARAM,)
# the W8A8 FP8 expert-GEMM efficiency η_f8 (efficiency.expert_fp8, stepmodel.expert_fp8_applies;
# docs/moe-fidelity.md, "Session 11"): a log parameter seen only by the MoE rows whose experts are FP8
# on an FP8 device and block-scaled (DeepSeek-V3/R1, Qwen3-235B-FP8; not Mixtral), where the expert op is compute-bound
# (prefill). Its root and engine terms are learned from every publisher's such rows (GPUStack H200,
# InferenceMAX on five devices, SGLang docs), so a held-out publisher gets their level.
# FIT_EXPERT_FP8 = False leaves every client's own value (1: off); fit_param() switches it at run time.
# On since session 11: held out (InferenceMAX + GPUStack + MLPerf folds pooled, 6,758 rows) all
# 15.1 -> 14.7 %, TTFT 24.0 -> 23.3 %, TPOT 13.2 -> 13.1 %, throughput 9.2 -> 8.7 %; the MLPerf fold
# alone got worse (14.1 -> 15.5 %: its MI300X / MI325X vLLM rows lose the slowdown the DeepSeek FP8
# rows had pushed into those devices' terms); docs/moe-fidelity.md, "Session 11"
FIT_EXPERT_FP8 = True
EXPERT_FP8_START = 0.3
EXPERT_FP8_PARAM = "expert_fp8"
PARAM_PRIOR_SCALE[EXPERT_FP8_PARAM] = 1.0


def fit_param(param: str, on: bool) -> None:
    """Put an optional factorised parameter (η_f8 ``expert_fp8``, η_d8 ``dense_fp8``) in the fit, or
    leave it out so every client keeps its own value (1 = off): the switches FIT_EXPERT_FP8 and
    FIT_DENSE_FP8 at import time, and tools/validate_variant.py's ``fp8eta`` / ``no_fp8eta`` and
    ``fp8dense`` / ``no_fp8dense`` for A/B runs."""
    global FACTOR_PARAMS
    FACTOR_PARAMS = tuple(p for p in FACTOR_PARAMS if p != param) + ((param,) if on else ())


fit_param(EXPERT_FP8_PARAM, FIT_EXPERT_FP8)
# the block-scaled FP8 dense-GEMM efficiency η_d8 (efficiency.dense_fp8, stepmodel.dense_fp8_applies;
# docs/calibration.md, "A fitted dense block-scaled FP8 efficiency, session 12"): the dense analogue of
# η_f8, a log parameter seen only by rows of a block-scaled FP8 family (DeepSeek-V3/R1, Qwen3-FP8 dense
# and MoE) on a device with FP8 MMAs, where the dense GEMMs are compute-bound (prefill). It replaces
# the fixed Hopper share (validate.BLOCK_FP8_SHARE_IN_VALIDATE = 0.5) by a factorised fit, so a held-out
# publisher gets the root + device + engine + pair level the others measured.
# FIT_DENSE_FP8 = False leaves every client's own value (1: off); fit_param() switches it at run time.
# Measured by its developer (session 12): held out, the four folds it touches (GPUStack, InferenceMAX, SGLang docs, MLPerf;
# the other folds' refit not rerun) give leave-one-source-out all 14.8 -> 14.7 %, TTFT 23.3 -> 23.3 %,
# throughput 9.1 -> 8.9 %, E2E 10.1 -> 9.9 %, TPOT 13.2 -> 13.5 % (worse); MLPerf 15.5 -> 13.8 %, SGLang
# docs 10.2 -> 9.7 %, InferenceMAX 12.0 -> 12.0 %, GPUStack 25.9 -> 25.9 % (unchanged: the only
# publisher of dense block-scaled FP8 rows, so without it the fit leaves η_d8 at ~1). With GPUStack in
# the fit η_d8 is ~0.54 (H100 0.53-0.60, H200 0.51-0.52). docs/calibration.md, session 12.
# OFF since the twelfth refit: two full leave-one-source-out runs of the merged code, with and without
# it (/work/bench/s12/refitA, refitB): all 14.2 vs 14.0 %, TPOT 13.2 vs 13.0 %, requests/s 6.7 vs 6.3 %,
# TTFT 20.4 % both, throughput 8.5 vs 8.8 % (docs/calibration.md, "Twelfth refit").
FIT_DENSE_FP8 = False
DENSE_FP8_START = 0.5
DENSE_FP8_PARAM = "dense_fp8"
PARAM_PRIOR_SCALE[DENSE_FP8_PARAM] = 1.0


fit_param(DENSE_FP8_PARAM, FIT_DENSE_FP8)
# A vendor level of the compute efficiency (session 15, docs/calibration.md "A vendor level of the
# compute efficiency"). Without it every device's compute η is root + device term, and the root is the
# compromise of all devices (the device terms are ridge-pulled to 0): CDNA3's low share of its datasheet
# peak (stepmodel.CDNA3_MAF_TFLOPS) is partly carried by the root, so whatever changes how the AMD rows
# are costed (stepmodel.SUSTAINED_PEAK_ON) moves the root and with it every NVIDIA prediction. With
# VENDOR_TERMS_ON a device whose catalog vendor is not VENDOR_REFERENCE gets one more term, shared by
# that vendor's devices, on the parameters of VENDOR_PRIOR_SD only (the others are masked: exactly 0);
# its prior sd (in the parameter's UNIT) is loose, so the root stays the reference vendor's level and a
# constant factor on one vendor's peaks is absorbed by its vendor term instead of the root. False: no
# vendor blocks, bit for bit as before.
VENDOR_TERMS_ON = False
VENDOR_REFERENCE = "NVIDIA"
VENDOR_PRIOR_SD = {"compute": 3.0}
# Measured (session 15): with one AMD group, MI355X (datasheet peak) shares the term of MI300X / MI325X
# (sustained peak), so the MAF's step moved the vLLM engine term and the root instead (NVIDIA rows of the
# InferenceMAX fold 8.96 -> 9.23 %); True: the sustained-peak devices in a group of their own
VENDOR_SPLIT_SUSTAINED = True


def vendor_of(device: str) -> str:
    """The catalog vendor of a device preset name ("" when the name is not a preset)."""
    from .catalog import default_catalog
    hit = default_catalog().entry("devices", device)
    return str(hit[1].get("vendor", "")) if hit else ""


def vendor_term_of(device: str) -> str | None:
    """The vendor group whose term a device's cells carry: None for the reference vendor, for a device
    of unknown vendor, and when VENDOR_TERMS_ON is False. With VENDOR_SPLIT_SUSTAINED a device whose
    peaks are its sustained ones (stepmodel.SUSTAINED_PEAK_ON and a CDNA3_MAF_TFLOPS entry) is in a
    group of its own vendor's sustained-peak devices ("AMD/sustained"): its η is a share of another
    peak than its vendor's other devices'."""
    if not VENDOR_TERMS_ON or device == "*":
        return None
    v = vendor_of(device)
    if not v or v == VENDOR_REFERENCE:
        return None
    from . import stepmodel
    if VENDOR_SPLIT_SUSTAINED and stepmodel.SUSTAINED_PEAK_ON and device in stepmodel.CDNA3_MAF_TFLOPS:
        return v + "/sustained"
    return v


def vendor_mask() -> np.ndarray:
    """1 for the parameters (FACTOR_PARAMS order) that have a vendor term, else 0."""
    bad = sorted(set(VENDOR_PRIOR_SD) - set(FACTOR_PARAMS))
    if bad:
        raise CalibrationError(f"calibration_factored.VENDOR_PRIOR_SD: unknown parameters {bad}; "
                               f"allowed: {', '.join(FACTOR_PARAMS)}")
    return np.array([1.0 if p in VENDOR_PRIOR_SD else 0.0 for p in FACTOR_PARAMS])


ROOT_WEIGHT = 0.02
KEY_SCATTER = 0.2
FACTOR_ETA_MIN = 0.05
FACTOR_SMOOTH = 0.01          # width of the smooth cap η ≤ 1 (log units) and of the floor at 0 (× FACTOR_UNIT)
FACTOR_MEMORY_FLOOR = 0.5     # one-sided penalty on η_m below this (as in fit_efficiency)
FACTOR_FLOOR_WEIGHT = 1.0
FACTOR_FD_STEP = 1e-6


def factor_value(p: str, x):
    """Parameter value from its fitted coordinate: η = exp(min(x, 0)) smoothly (≥ FACTOR_ETA_MIN), an
    overhead = max(x, 0) smoothly (in its own unit)."""
    x = np.asarray(x, dtype=float)
    if p in FACTOR_LOG_PARAMS:
        return np.maximum(np.exp(-FACTOR_SMOOTH * np.logaddexp(0.0, -x / FACTOR_SMOOTH)), FACTOR_ETA_MIN)
    s = FACTOR_SMOOTH * FACTOR_UNIT[p]
    return s * np.logaddexp(0.0, x / s)


def factor_coordinate(p: str, v: float) -> float:
    """Inverse of :func:`factor_value` away from the caps (start values and prior centres)."""
    if p in FACTOR_LOG_PARAMS:
        return math.log(min(max(v, FACTOR_ETA_MIN), 1.0 - 1e-3))
    s = FACTOR_SMOOTH * FACTOR_UNIT[p]
    v = max(float(v), 1e-3 * s)
    return v + s * math.log(-math.expm1(-v / s))


def _soft_l1_residual(r):
    """Signed square root of the soft-L1 loss (its square is 2c²(√(1+(r/c)²) − 1)) and its slope."""
    c = ROBUST_SCALE
    q = np.sqrt(1.0 + (r / c) ** 2)
    g = np.sign(r) * np.sqrt(2.0 * c * c * (q - 1.0))
    with np.errstate(invalid="ignore", divide="ignore"):
        slope = np.where(np.abs(r) > 1e-12, r / np.where(g == 0, 1.0, g) / q, 1.0)
    return g, slope


@dataclass
class _Cell:
    """The rows of one (device, engine, publisher)."""
    device: str
    engine: str
    publisher: str
    obs: list = field(default_factory=list)
    runs: list = field(default_factory=list)

    def build(self, factory):
        self.steps = None
        if self.obs:
            self.steps = StepSet()
            for i, o in enumerate(self.obs):
                self.steps.add(factory(o), o.prefill, o.decode, owner=i)
            self.steps.build()
        self.meas = np.log([o.time_s for o in self.obs]) if self.obs else np.zeros(0)
        self.run_meas = np.log([r.measured for r in self.runs]) if self.runs else np.zeros(0)
        self.run_steps = None
        if self.runs:
            prepare_runs(self.runs)
            self.run_steps = _run_stepset(self.runs)
            anchors = {}
            for j, r in enumerate(self.runs):
                e = r.client.efficiency
                anchors.setdefault((e.compute, e.memory, e.op_overhead_us, e.network, e.step_overhead_ms,
                                    e.prefill), []).append(j)
            self.S0 = np.zeros(len(self.runs))
            for key, js in anchors.items():
                tot = self.run_steps.totals(len(self.runs), *key)
                self.S0[js] = tot[js]
            self.m0 = np.array([r.ref_value for r in self.runs])
            self.rate_like = np.array([bool(r.rate_like) for r in self.runs])
            self.ttft_rows = np.array([1.0 if r.prefill_steps else 0.0 for r in self.runs])
            self.w0 = ref_waits(self.runs)   # decode-step waits kept out of the prefill ratio
        return self

    @property
    def n(self) -> int:
        return len(self.obs) + len(self.runs)

    def log_ratio(self, x: np.ndarray) -> np.ndarray:
        """log(predicted / measured) of every row at coordinates ``x`` (in FACTOR_PARAMS order)."""
        v = {p: float(factor_value(p, xi)) for p, xi in zip(FACTOR_PARAMS, x)}
        out = []
        if self.obs:
            t = self.steps.times(v["compute"], v["memory"], v["op_overhead_us"], 1.0, v["step_overhead_ms"],
                                 v["prefill"], seq_us=v.get(SEQ_PARAM), coll_us=v.get("collective_us"),
                                 eta_e=v.get(EXPERT_PARAM), eta_f8=v.get(EXPERT_FP8_PARAM),
                                 eta_d8=v.get(DENSE_FP8_PARAM))
            out.append(np.log(t) - self.meas)
        if self.runs:
            S = self.run_steps.totals(len(self.runs), v["compute"], v["memory"], v["op_overhead_us"], 1.0,
                                      v["step_overhead_ms"], v["prefill"], seq_us=v.get(SEQ_PARAM),
                                      coll_us=v.get("collective_us"), eta_e=v.get(EXPERT_PARAM),
                                      eta_f8=v.get(EXPERT_FP8_PARAM), eta_d8=v.get(DENSE_FP8_PARAM))
            ratio = np.where(self.rate_like, self.S0 / S, S / self.S0)
            pred = recosted(self.m0, ratio, self.w0) + v["ttft_overhead_ms"] * self.ttft_rows
            out.append(np.log(np.maximum(pred, 1e-300)) - self.run_meas)
        return np.concatenate(out) if out else np.zeros(0)


def publisher_of(o) -> str:
    """The publisher (leave-one-source-out unit) of an observation: its ``source`` when set, else
    the first field of its measurement group (validate's groups start with the source)."""
    s = getattr(o, "source", "") or ""
    if s:
        return s
    return (getattr(o, "group", "") or "").split("|")[0].strip()


@dataclass
class FactoredFit:
    """Fitted coordinates of every term (FACTOR_PARAMS order) and the cells they were fitted on."""
    root: np.ndarray
    device: dict
    engine: dict
    pair: dict
    publisher: dict
    cells: list
    success: bool = True
    message: str = ""
    vendor: dict = field(default_factory=dict)   # VENDOR_TERMS_ON: {vendor: coordinates (masked)}

    def coordinates(self, device: str = "*", engine: str = "*", publisher: str | None = None) -> np.ndarray:
        """μ + device + engine (+ pair) (+ publisher, only when asked: a new publisher gets none).
        ``engine = "current"``: the mean of the current engines' terms."""
        x = self.root.copy()
        if device != "*":
            x = x + self.device.get(device, 0.0)
            if self.vendor:
                x = x + self.vendor.get(vendor_term_of(device), 0.0)
        if engine == POOLED_ENGINE:
            cur = [self.engine[e] for e in CURRENT_ENGINE_FAMILIES if e in self.engine]
            if cur:
                x = x + np.mean(cur, axis=0)
        elif engine != "*":
            x = x + self.engine.get(engine, 0.0)
            if device != "*":
                x = x + self.pair.get((device, engine), 0.0)
        if publisher is not None:
            x = x + self.publisher.get(publisher, 0.0)
        return x

    def efficiency(self, device: str = "*", engine: str = "*") -> dict:
        x = self.coordinates(device, engine)
        return {p: float(factor_value(p, xi)) for p, xi in zip(FACTOR_PARAMS, x)}

    def terms_table(self) -> dict:
        """The fitted terms as stored in ``[efficiency_terms]``: η terms as factors exp(term), the
        overhead terms additive in their unit (before the floor at 0)."""
        def row(x):
            return {p: (float(np.exp(xi)) if p in FACTOR_LOG_PARAMS else float(xi)) for p, xi in zip(FACTOR_PARAMS, x)}
        out = {"root": {p: float(factor_value(p, xi)) for p, xi in zip(FACTOR_PARAMS, self.root)},
               "device": {d: row(x) for d, x in sorted(self.device.items())},
               "engine": {e: row(x) for e, x in sorted(self.engine.items())},
               "pair": {f"{d}|{e}": row(x) for (d, e), x in sorted(self.pair.items())},
               "publisher": {s: row(x) for s, x in sorted(self.publisher.items())}}
        if self.vendor:   # only with VENDOR_TERMS_ON: the table as before otherwise
            out["vendor"] = {v: row(x) for v, x in sorted(self.vendor.items())}
        return out


def _cell_weights(cell: _Cell) -> np.ndarray:
    """Every (publisher, device, engine, model) key weighs as one measurement of scatter
    KEY_SCATTER (total squared weight 1/KEY_SCATTER²), whatever its row count."""
    models = [o.model for o in cell.obs] + [r.point.client.model.name for r in cell.runs]
    counts: dict[str, int] = {}
    for m in models:
        counts[m] = counts.get(m, 0) + 1
    return np.array([1.0 / (KEY_SCATTER * math.sqrt(counts[m])) for m in models])


def fit_factored(observations: Sequence, runs: Sequence = (), factory: Callable | None = None, *,
                 prior_sd: Mapping[str, float] | None = None, param_scale: Mapping[str, float] | None = None,
                 max_nfev: int = 60) -> FactoredFit:
    """Joint fit of root, device, engine, (device, engine) and publisher terms of every parameter
    in FACTOR_PARAMS over all step and run observations (see the module docstring). ``prior_sd``
    overrides entries of :data:`PRIOR_SD` (a huge value leaves a term free, a tiny one removes
    it); ``param_scale`` overrides entries of :data:`PARAM_PRIOR_SCALE` (every term of that parameter)."""
    return fit_cells(build_cells(observations, runs, factory), prior_sd=prior_sd, param_scale=param_scale,
                     max_nfev=max_nfev)


def build_cells(observations: Sequence, runs: Sequence = (), factory: Callable | None = None) -> list:
    """The rows grouped by (device, engine, publisher), each with its re-costing step sets."""
    factory = factory or default_client
    cells: dict[tuple, _Cell] = {}
    for o in observations:
        k = (o.device, o.engine, publisher_of(o))
        cells.setdefault(k, _Cell(*k)).obs.append(o)
    for r in runs:
        k = (r.device, r.engine, publisher_of(r))
        cells.setdefault(k, _Cell(*k)).runs.append(r)
    return [c.build(factory) for c in cells.values() if c.n]


def fit_cells(cell_list: Sequence, *, prior_sd: Mapping[str, float] | None = None,
              param_scale: Mapping[str, float] | None = None, max_nfev: int = 60,
              start: FactoredFit | None = None) -> FactoredFit:
    """:func:`fit_factored` on cells from :func:`build_cells`. ``start``: a previous fit whose
    terms (where this fit has them) are the starting point (nested cross-validation refits the
    same rows less one publisher: a warm start needs a few iterations instead of dozens)."""
    from scipy.optimize import least_squares
    warm = start
    sd = dict(PRIOR_SD, **(prior_sd or {}))
    unknown = sorted(set(sd) - set(PRIOR_SD)) + sorted(set(param_scale or {}) - set(FACTOR_PARAMS))
    if unknown:
        raise CalibrationError(f"prior_sd / param_scale: unknown entries {unknown}; allowed: "
                               f"{', '.join(PRIOR_SD)} / {', '.join(FACTOR_PARAMS)}")
    lam = {k: 1.0 / v for k, v in sd.items()}
    scale = dict(PARAM_PRIOR_SCALE, **(param_scale or {}))
    term_unit = np.array([FACTOR_UNIT[p] * scale[p] for p in FACTOR_PARAMS])   # one sd of a term, per parameter
    bad = sorted(set(PUBLISHER_PARAM_SD_SCALE) - set(FACTOR_PARAMS))
    if bad:
        raise CalibrationError(f"calibration_factored.PUBLISHER_PARAM_SD_SCALE: unknown parameters {bad}; "
                               f"allowed: {', '.join(FACTOR_PARAMS)}")
    pub_unit = term_unit * np.array([float(PUBLISHER_PARAM_SD_SCALE.get(p, 1.0)) for p in FACTOR_PARAMS])
    cell_list = list(cell_list)
    P = len(FACTOR_PARAMS)
    devices = sorted({c.device for c in cell_list})
    engines = sorted({c.engine for c in cell_list})
    pairs = sorted({(c.device, c.engine) for c in cell_list})
    pubs = sorted({c.publisher for c in cell_list})
    vendors = sorted({v for v in (vendor_term_of(c.device) for c in cell_list) if v is not None})
    vmask = vendor_mask() if vendors else None
    # coordinate layout: blocks of P (one per term), root first (vendor blocks last: none when off)
    blocks = [("root", None)] + [("device", d) for d in devices] + [("engine", e) for e in engines] + \
        [("pair", pe) for pe in pairs] + [("publisher", s) for s in pubs] + [("vendor", v) for v in vendors]
    at = {b: i * P for i, b in enumerate(blocks)}
    n_x = len(blocks) * P

    def contributing(c: _Cell) -> list[int]:
        return [at[("root", None)], at[("device", c.device)], at[("engine", c.engine)],
                at[("pair", (c.device, c.engine))], at[("publisher", c.publisher)]]
    contrib = [contributing(c) for c in cell_list]
    vend = [at[("vendor", vendor_term_of(c.device))] if vendor_term_of(c.device) is not None else None
            for c in cell_list]
    weights = [_cell_weights(c) for c in cell_list]
    offsets = np.cumsum([0] + [c.n for c in cell_list])
    n_data = int(offsets[-1])
    root_at = np.array([factor_coordinate(p, DEFAULT_EFFICIENCY.get(p, 1.0)) for p in FACTOR_PARAMS])
    root_w = np.array([ROOT_WEIGHT / FACTOR_UNIT[p] for p in FACTOR_PARAMS])
    ridge_rows = [(b, lam.get(b[0], 1.0)) for b in blocks[1:]]
    ridge_unit = {b: (pub_unit if b[0] == "publisher" else term_unit) for b, _ in ridge_rows}
    if vendors:   # vendor terms: their own loose sd (VENDOR_PRIOR_SD) on the unmasked parameters
        vendor_unit = np.array([FACTOR_UNIT[p] * VENDOR_PRIOR_SD.get(p, 1.0) for p in FACTOR_PARAMS])
        ridge_unit.update({b: vendor_unit for b, _ in ridge_rows if b[0] == "vendor"})
    floor_pairs = pairs if "memory" in FACTOR_PARAMS else []
    mem = FACTOR_PARAMS.index("memory")
    n_res = n_data + P + len(ridge_rows) * P + len(floor_pairs)

    def cell_x(x, blocks_at, vb=None):
        xc = sum(x[b:b + P] for b in blocks_at)
        return xc if vb is None else xc + vmask * x[vb:vb + P]

    def residuals(x):
        out = np.empty(n_res)
        for c, bl, vb, w, a, b in zip(cell_list, contrib, vend, weights, offsets[:-1], offsets[1:]):
            out[a:b] = w * _soft_l1_residual(c.log_ratio(cell_x(x, bl, vb)))[0]
        i = n_data
        out[i:i + P] = root_w * (x[0:P] - root_at)
        i += P
        for blk, lw in ridge_rows:
            out[i:i + P] = lw / ridge_unit[blk] * x[at[blk]:at[blk] + P]
            i += P
        for d, e in floor_pairs:
            xm = x[at[("root", None)] + mem] + x[at[("device", d)] + mem] + x[at[("engine", e)] + mem] + \
                x[at[("pair", (d, e))] + mem]
            out[i] = FACTOR_FLOOR_WEIGHT * max(0.0, math.log(FACTOR_MEMORY_FLOOR) - xm)
            i += 1
        return out

    def jacobian(x):
        J = np.zeros((n_res, n_x))
        for c, bl, vb, w, a, b in zip(cell_list, contrib, vend, weights, offsets[:-1], offsets[1:]):
            xc = cell_x(x, bl, vb)
            r0 = c.log_ratio(xc)
            _, slope = _soft_l1_residual(r0)
            dc = np.empty((c.n, P))
            for p in range(P):
                xp = xc.copy()
                xp[p] += FACTOR_FD_STEP
                dc[:, p] = (c.log_ratio(xp) - r0) / FACTOR_FD_STEP
            dc *= (w * slope)[:, None]
            for blk in bl:
                J[a:b, blk:blk + P] += dc
            if vb is not None:
                J[a:b, vb:vb + P] += dc * vmask
        i = n_data
        J[i:i + P, 0:P] = np.diag(root_w)
        i += P
        for blk, lw in ridge_rows:
            J[i:i + P, at[blk]:at[blk] + P] = np.diag(lw / ridge_unit[blk])
            i += P
        for d, e in floor_pairs:
            xm = sum(x[at[k] + mem] for k in (("root", None), ("device", d), ("engine", e), ("pair", (d, e))))
            if xm < math.log(FACTOR_MEMORY_FLOOR):
                for k in (("root", None), ("device", d), ("engine", e), ("pair", (d, e))):
                    J[i, at[k] + mem] = -FACTOR_FLOOR_WEIGHT
            i += 1
        return J

    x0 = np.zeros(n_x)
    start = dict(DEFAULT_EFFICIENCY)
    start.update({"op_overhead_us": 0.5, "step_overhead_ms": 0.1, "ttft_overhead_ms": 1.0, "prefill": 0.95})
    start["seq_overhead_us"] = SEQ_START_US
    # η_f8 starts inside its range: at 1 the TP-split FP8 expert op of a prefill is bound by reading the
    # expert slices, so no row would move with it (a zero gradient that would keep it at 1)
    start[EXPERT_FP8_PARAM] = EXPERT_FP8_START
    start[DENSE_FP8_PARAM] = DENSE_FP8_START   # inside its range, like η_f8 (a zero gradient at the cap 1)
    x0[0:P] = [factor_coordinate(p, start[p]) for p in FACTOR_PARAMS]
    if warm is not None:
        x0[0:P] = warm.root
        for kind, terms in (("device", warm.device), ("engine", warm.engine), ("pair", warm.pair),
                            ("publisher", warm.publisher), ("vendor", warm.vendor)):
            for name, xs in terms.items():
                if (kind, name) in at:
                    x0[at[(kind, name)]:at[(kind, name)] + P] = xs
    with one_blas_thread():
        sol = least_squares(residuals, x0, jac=jacobian, method="trf", x_scale="jac", xtol=1e-8, ftol=1e-10,
                            gtol=1e-10, max_nfev=max_nfev)
    x = sol.x

    def block(k):
        return x[at[k]:at[k] + P].copy()
    return FactoredFit(root=block(("root", None)), device={d: block(("device", d)) for d in devices},
                       engine={e: block(("engine", e)) for e in engines},
                       pair={pe: block(("pair", pe)) for pe in pairs},
                       publisher={s: block(("publisher", s)) for s in pubs}, cells=cell_list,
                       success=bool(sol.success), message=str(sol.message),
                       vendor={v: block(("vendor", v)) * vmask for v in vendors})


def efficiency_entries(fit: FactoredFit) -> dict:
    """``Calibration.efficiencies`` entries (EfficiencyFit) of a factorised fit: every (device,
    engine) of the fitted devices × engines (pairs without rows at device + engine terms), (*,
    engine), (device, *), (device, current), (*, current) and (*, *). Errors are those of the
    stored values (no publisher term) on the entry's own rows."""
    devices, engines = sorted(fit.device), sorted(fit.engine)
    keys = [(d, e) for d in devices for e in engines] + [("*", e) for e in engines] + \
        [(d, "*") for d in devices] + [(d, POOLED_ENGINE) for d in devices] + [("*", POOLED_ENGINE), ("*", "*")]

    def covers(key, c) -> bool:
        d, e = key
        if d != "*" and d != c.device:
            return False
        if e == POOLED_ENGINE:
            return c.engine in CURRENT_ENGINE_FAMILIES
        return e == "*" or e == c.engine

    out = {}
    for key in keys:
        v = fit.efficiency(*key)
        own = [c for c in fit.cells if covers(key, c)]
        errs = []
        if key[0] != "*" and key[1] not in ("*", POOLED_ENGINE):
            x = fit.coordinates(*key)
            errs = [np.abs(np.expm1(c.log_ratio(x))) for c in own]
        err = np.concatenate(errs) if errs else np.array([np.nan])
        out[key] = EfficiencyFit(
            compute=v["compute"], memory=v["memory"], op_overhead_us=v["op_overhead_us"], network=1.0,
            step_overhead_ms=v["step_overhead_ms"], prefill=v["prefill"], ttft_overhead_ms=v["ttft_overhead_ms"],
            seq_overhead_us=v.get(SEQ_PARAM, 0.0),
            collective_us=v.get("collective_us", DEFAULT_EFFICIENCY["collective_us"]),
            expert_compute=v.get(EXPERT_PARAM, 1.0), expert_fp8=v.get(EXPERT_FP8_PARAM, 1.0),
            dense_fp8=v.get(DENSE_FP8_PARAM, 1.0),
            n_steps=sum(len(c.obs) for c in own), n_runs=sum(len(c.runs) for c in own), params=FACTOR_PARAMS,
            rows=tuple(o.id for c in own for o in c.obs + c.runs) if key[0] != "*" and key[1] != "*" else (),
            median_abs_rel_err=float(np.median(err)) if np.isfinite(err).any() else float("nan"),
            p90_abs_rel_err=float(np.percentile(err, 90)) if np.isfinite(err).any() else float("nan"),
            success=fit.success, message=fit.message)
    return out


def leave_one_publisher_out(cell_list: Sequence, *, prior_sd: Mapping[str, float] | None = None,
                            param_scale: Mapping[str, float] | None = None,
                            publishers: Sequence[str] | None = None, max_nfev: int = 60) -> dict:
    """Surrogate leave-one-publisher-out error of the factorised fit: for each publisher, fit on
    the other publishers' cells and re-cost the held-out rows at the stored (publisher-free)
    efficiency of their (device, engine). Returns {publisher: array of log ratios} (the re-costing
    is the fit's own approximation of a run, not a new simulation: for choosing priors, nested in
    the training sources)."""
    pubs = sorted({c.publisher for c in cell_list}) if publishers is None else list(publishers)
    out = {}
    for s in pubs:
        train = [c for c in cell_list if c.publisher != s]
        test = [c for c in cell_list if c.publisher == s]
        if not train or not test:
            continue
        fit = fit_cells(train, prior_sd=prior_sd, param_scale=param_scale, max_nfev=max_nfev)
        out[s] = np.concatenate([c.log_ratio(fit.coordinates(c.device, c.engine)) for c in test])
    return out
