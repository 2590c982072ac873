"""Run ``mistfast validate`` with the session-10 model switches set, for A/B runs of one fold
(docs/moe-fidelity.md, session 10). Usage:

    python tools/validate_variant.py VARIANT validate CSV... -o OUT --cv source --cv-only mantile

VARIANT is any of these words joined by '+': ``ep_no_a2a`` (stepmodel.EP_DISPATCH_UNDER_TP_ATTENTION =
False: EP under TP attention moves no tokens), ``split`` (stepmodel.EXPERT_ETA_SCOPE =
"weight_only+tp_split"), ``launch40`` (SGLang eager prefill at 40 us per kernel), ``fp8eta`` (fit the W8A8 FP8 expert efficiency
η_f8 as a factorised parameter: calibration_factored.fit_param, docs/moe-fidelity.md session 11;
the default since session 11), ``no_fp8eta`` (leave it out: the fit as before session 11), ``kvreserve`` (SGLang rows with PrefillAdder's
admission reserve, engine_defaults.SGLANG["kv_reserve_default"] = "sglang"), ``lengths``
(validate.STATED_LENGTHS_IN_VALIDATE = True), ``fp8block`` (validate.BLOCK_FP8_SHARE_IN_VALIDATE = 0.5:
block-scaled FP8 GEMMs on Hopper at the BF16 rate; measured, off), ``nofp8block`` (= 1.0, off, the default), ``tpbusNN``
(stepmodel.TP_BUS_EFFICIENCY = NN / 100: TP collectives at NN % of the link bandwidth), ``pubttftN``
(calibration_factored.PUBLISHER_PARAM_SD_SCALE = {"ttft_overhead_ms": N}: the publisher terms of the
TTFT overhead N times looser; both docs/step-model.md, "TP scaling of short prefills, session 11"),
``mlpfloor`` (validate.MLPERF_LAUNCH_FLOOR_AT_PREDICT = True: the MLPerf TensorRT-LLM launch-time floor
when predicting only, session 12), ``mlpfloorfit`` (validate.MLPERF_LAUNCH_FLOOR_IN_VALIDATE = True: the floor
in the fit's training runs too, session 11), ``nomlpfloor`` (both off),
``fp8dense`` (fit the block-scaled FP8 dense-GEMM efficiency η_d8: calibration_factored.fit_param; measured, off,
docs/calibration.md session 12), ``no_fp8dense`` (leave it out: the default),
``splitwN`` (stepmodel.EXPERT_SPLIT_HALF_WIDTH = N columns: TP-split expert GEMMs at the half-width
efficiency of their per-rank width, docs/step-model.md "Per-rank GEMM shapes, session 13"), ``nosplitw`` (None, off), ``splitnofp8``
(stepmodel.EXPERT_SPLIT_SKIP_FP8_BLOCK = True: not on block-scaled FP8 experts),
``nocloopwait`` (validate.CLOSED_LOOP_STEP_WAIT_ON = False: closed-loop rows without the step-synchronous
wait), ``noahead`` (validate.SCHEDULE_AHEAD_STEPS = 0: the landing wait only, no step for async /
overlap scheduling; both docs/ttft-under-load.md, "Closed loops: the re-issued request waits"), ``cdna3graph``
(launch_time.GRAPH_DECODE_DEFAULT_ON = True: SGLang decode on CDNA3 without torch.compile at the per-kernel
graph-replay time, docs/step-model.md, "Graph-replayed decode on CDNA3"), ``landkernel``
(validate.CLOSED_LOOP_LANDING_IN_KERNEL = True: the closed loop's landing wait simulated with the client-side
time as think time instead of the session-12 post-hoc 1/2 step; ``nolandkernel``: off, the default;
docs/ttft-under-load.md, "Closed loops in continuous time, session 13"), ``waitfixed``
(calibration_runs.WAIT_OUT_OF_PREFILL_RATIO = True: the fit keeps a low-load TTFT row's closed-loop wait out
of its prefill-step ratio; ``waitscaled``: scaled with the prefill steps, the default), ``default``."""
import sys

from mistfast import calibration_factored, calibration_runs, engine_defaults, launch_time, stepmodel, validate


def main() -> None:
    words = set(sys.argv[1].split("+"))
    tpbus = [w for w in words if w.startswith("tpbus") and w[5:].isdigit() and 0 < int(w[5:]) <= 100]
    pubttft = [w for w in words if w.startswith("pubttft") and w[7:].isdigit() and int(w[7:]) > 0]
    splitw = [w for w in words if w.startswith("splitw") and w[6:].isdigit()]
    allowed = ("ep_no_a2a", "split", "launch40", "fp8eta", "no_fp8eta", "kvreserve", "lengths", "fp8block", "nofp8block",
               "mlpfloor", "mlpfloorfit", "nomlpfloor", "fp8dense", "no_fp8dense", "nocloopwait", "noahead", "cdna3graph",
               "nosplitw", "splitnofp8", "landkernel", "nolandkernel", "waitfixed", "waitscaled", "default")
    unknown = words - set(allowed) - set(tpbus) - set(pubttft) - set(splitw)
    if unknown:
        sys.exit(f"variant {sys.argv[1]!r}: unknown word(s) {sorted(unknown)}; allowed: {', '.join(allowed)}, tpbusNN (NN in 1..100), pubttftN, splitwN")
    if "ep_no_a2a" in words:
        stepmodel.EP_DISPATCH_UNDER_TP_ATTENTION = False
    if "split" in words:
        stepmodel.EXPERT_ETA_SCOPE = "weight_only+tp_split"
    if "launch40" in words:
        launch_time.EAGER_PREFILL_ENGINES["sglang"] = launch_time.EAGER_KERNEL_US
    if "fp8eta" in words:
        calibration_factored.fit_param(calibration_factored.EXPERT_FP8_PARAM, True)
    if "no_fp8eta" in words:
        calibration_factored.fit_param(calibration_factored.EXPERT_FP8_PARAM, False)
    if "fp8dense" in words:
        calibration_factored.fit_param(calibration_factored.DENSE_FP8_PARAM, True)
    if "no_fp8dense" in words:
        calibration_factored.fit_param(calibration_factored.DENSE_FP8_PARAM, False)
    if "kvreserve" in words:
        engine_defaults.SGLANG["kv_reserve_default"] = "sglang"
    if "fp8block" in words:
        validate.BLOCK_FP8_SHARE_IN_VALIDATE = 0.5
    if "nofp8block" in words:
        validate.BLOCK_FP8_SHARE_IN_VALIDATE = 1.0
    if "nocloopwait" in words:
        validate.CLOSED_LOOP_STEP_WAIT_ON = False
    if "nolandkernel" in words:
        validate.CLOSED_LOOP_LANDING_IN_KERNEL = False
    if "waitscaled" in words:
        calibration_runs.WAIT_OUT_OF_PREFILL_RATIO = False
    if "waitfixed" in words:
        calibration_runs.WAIT_OUT_OF_PREFILL_RATIO = True
    if "landkernel" in words:
        validate.CLOSED_LOOP_LANDING_IN_KERNEL = True
    if "noahead" in words:
        validate.SCHEDULE_AHEAD_STEPS = 0.0
    if "cdna3graph" in words:
        launch_time.GRAPH_DECODE_DEFAULT_ON = True
    if "lengths" in words:
        validate.STATED_LENGTHS_IN_VALIDATE = True
    if "mlpfloor" in words:
        validate.MLPERF_LAUNCH_FLOOR_AT_PREDICT = True
    if "mlpfloorfit" in words:
        validate.MLPERF_LAUNCH_FLOOR_IN_VALIDATE = True
    if "nomlpfloor" in words:
        validate.MLPERF_LAUNCH_FLOOR_AT_PREDICT = validate.MLPERF_LAUNCH_FLOOR_IN_VALIDATE = False
    if tpbus:
        stepmodel.TP_BUS_EFFICIENCY = int(tpbus[0][5:]) / 100.0
    if splitw:
        stepmodel.EXPERT_SPLIT_HALF_WIDTH = float(splitw[0][6:])
    if "nosplitw" in words:
        stepmodel.EXPERT_SPLIT_HALF_WIDTH = None
    if "splitnofp8" in words:
        stepmodel.EXPERT_SPLIT_SKIP_FP8_BLOCK = True
    if pubttft:
        calibration_factored.PUBLISHER_PARAM_SD_SCALE = {"ttft_overhead_ms": float(pubttft[0][7:])}
    from mistfast.cli import main as cli
    sys.argv = ["mistfast"] + sys.argv[2:]
    cli()


if __name__ == "__main__":
    main()
