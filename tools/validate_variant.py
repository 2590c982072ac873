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
of its prefill-step ratio; ``waitscaled``: scaled with the prefill steps, the default), ``intakeN``
(validate.PROMPT_INTAKE_US_PER_TOKEN = N / 10 us: the front-end's time per prompt token in the TTFT and E2E
of HTTP-served closed and open loops, ``intake12`` = 1.2 us, the default since session 14; ``nointake``: None, off;
docs/ttft-under-load.md, "InferenceMAX TTFT versus TP, session 14"), ``d8pred``
(validate.DENSE_BLOCK_FP8_AT_PREDICT = 0.5: the dense GEMMs of block-scaled FP8 checkpoints on Hopper at the
BF16 rate, at prediction only, the default since session 14; ``nod8pred``: 1.0, off; docs/calibration.md, "Dense block-scaled FP8 on
Hopper at prediction only, session 14"), ``d8predNN`` (the share at NN / 100), ``d8predmoe``
(validate.DENSE_BLOCK_FP8_AT_PREDICT_MOE = True: the share for the dense GEMMs of MoE checkpoints too; off),
``cdna3maf`` (stepmodel.SUSTAINED_PEAK_ON = True: MI300X / MI325X matrix peaks at AMD's published
max-achievable FLOPs; ``nocdna3maf``: off, the default), ``amdeager`` (validate.MLPERF_EAGER_FLOOR_VLLM_AT_PREDICT =
True: the eager launch floor of AMD harness rows with enforce_eager, at prediction only, the default since
session 14; ``noamdeager``: off; both docs/engines.md, "vLLM ROCm at hundreds of sequences"), ``sinkattn``
(validate.SINK_ATTENTION_TRITON_SHARE = 0.5: gpt-oss under vLLM on A100 with the Triton attention kernel at half
the modelled attention FLOP rate, at prediction only; ``sinkattnNN``: the share at NN / 100; the default since
session 15; ``nosinkattn``: 1.0, off; docs/calibration.md, "gpt-oss on A100: vLLM's Triton attention, session 15"), ``chatfixed``
(validate.CHAT_PREPROCESS_FIXED_IN_VALIDATE = True: vLLM's published 13.5 ms per-request pre-processing as a
fixed, unfitted part of chat-endpoint closed-loop and Poisson TTFT / E2E rows, the default since session 15; ``nochatfixed``: off; docs/ttft-under-load.md,
"The chat endpoint's fixed pre-processing, session 15"), ``vendor``
(calibration_factored.VENDOR_TERMS_ON = True: a vendor term of the compute efficiency for non-NVIDIA devices;
``novendor``: off, the default; docs/calibration.md, "A vendor level of the compute efficiency, session 15"),
``cdna3pred`` (validate.SUSTAINED_PEAK_AT_PREDICT = True: the CDNA3 sustained peak at prediction only, the fit on
datasheet peaks; ``nocdna3pred``: off, the default; same section),
``elemwise`` (stepmodel.REPLICATED_ELEMENTWISE = (8, 1): the residual-add + RMSNorm passes and the MoE
combine as one memory-bound op whose rows are not split by TP, docs/step-model.md, "Replicated element-wise
traffic, session 16"; the default since session 16; ``noelemwise``: None, off), ``mxfp4pad``
(validate.MXFP4_PAD_AT_PREDICT = True: vLLM's MXFP4 expert weights on Hopper padded to a multiple of 256 in
their intermediate size, out of the predicting client's KV pool, at prediction only; ``nomxfp4pad``: off, the
default; docs/ttft-under-load.md, "vLLM's padded MXFP4 experts on Hopper, session 16"),
``atomdef``
(validate.ATOM_DEFAULTS_IN_VALIDATE = True: ATOM rows at ATOM's own scheduler defaults, 16,384 tokens,
512 sequences, prefill-only batches, instead of the vLLM-like fallback; off, the default; docs/ttft-under-load.md,
"InferenceMAX's first wave from outside its rows, session 16"),
``default``."""
import sys

from mistfast import calibration_factored, calibration_runs, engine_defaults, launch_time, stepmodel, validate


def _set(obj, name: str, value):
    """A switch: set ``obj.name`` (a module attribute) or ``obj[name]`` (a dict item) to ``value``."""
    if isinstance(obj, dict):
        return lambda: obj.__setitem__(name, value)
    return lambda: setattr(obj, name, value)


def _both_floors_off():
    validate.MLPERF_LAUNCH_FLOOR_AT_PREDICT = validate.MLPERF_LAUNCH_FLOOR_IN_VALIDATE = False


# word -> what it switches, applied in this order (a later word wins: ``nomlpfloor`` after ``mlpfloor``)
SWITCHES = {
    "atomdef": _set(validate, "ATOM_DEFAULTS_IN_VALIDATE", True),
    "ep_no_a2a": _set(stepmodel, "EP_DISPATCH_UNDER_TP_ATTENTION", False),
    "split": _set(stepmodel, "EXPERT_ETA_SCOPE", "weight_only+tp_split"),
    "launch40": _set(launch_time.EAGER_PREFILL_ENGINES, "sglang", launch_time.EAGER_KERNEL_US),
    "fp8eta": lambda: calibration_factored.fit_param(calibration_factored.EXPERT_FP8_PARAM, True),
    "no_fp8eta": lambda: calibration_factored.fit_param(calibration_factored.EXPERT_FP8_PARAM, False),
    "fp8dense": lambda: calibration_factored.fit_param(calibration_factored.DENSE_FP8_PARAM, True),
    "no_fp8dense": lambda: calibration_factored.fit_param(calibration_factored.DENSE_FP8_PARAM, False),
    "kvreserve": _set(engine_defaults.SGLANG, "kv_reserve_default", "sglang"),
    "fp8block": _set(validate, "BLOCK_FP8_SHARE_IN_VALIDATE", 0.5),
    "nofp8block": _set(validate, "BLOCK_FP8_SHARE_IN_VALIDATE", 1.0),
    "nocloopwait": _set(validate, "CLOSED_LOOP_STEP_WAIT_ON", False),
    "nolandkernel": _set(validate, "CLOSED_LOOP_LANDING_IN_KERNEL", False),
    "waitscaled": _set(calibration_runs, "WAIT_OUT_OF_PREFILL_RATIO", False),
    "waitfixed": _set(calibration_runs, "WAIT_OUT_OF_PREFILL_RATIO", True),
    "landkernel": _set(validate, "CLOSED_LOOP_LANDING_IN_KERNEL", True),
    "noahead": _set(validate, "SCHEDULE_AHEAD_STEPS", 0.0),
    "cdna3graph": _set(launch_time, "GRAPH_DECODE_DEFAULT_ON", True),
    "lengths": _set(validate, "STATED_LENGTHS_IN_VALIDATE", True),
    "mlpfloor": _set(validate, "MLPERF_LAUNCH_FLOOR_AT_PREDICT", True),
    "mlpfloorfit": _set(validate, "MLPERF_LAUNCH_FLOOR_IN_VALIDATE", True),
    "nomlpfloor": _both_floors_off,
    "nosplitw": _set(stepmodel, "EXPERT_SPLIT_HALF_WIDTH", None),
    "elemwise": _set(stepmodel, "REPLICATED_ELEMENTWISE", stepmodel.REPLICATED_ELEMENTWISE_ON),
    "noelemwise": _set(stepmodel, "REPLICATED_ELEMENTWISE", None),
    "splitnofp8": _set(stepmodel, "EXPERT_SPLIT_SKIP_FP8_BLOCK", True),
    "nointake": _set(validate, "PROMPT_INTAKE_US_PER_TOKEN", None),
    "d8pred": _set(validate, "DENSE_BLOCK_FP8_AT_PREDICT", 0.5),
    "nod8pred": _set(validate, "DENSE_BLOCK_FP8_AT_PREDICT", 1.0),
    "d8predmoe": _set(validate, "DENSE_BLOCK_FP8_AT_PREDICT_MOE", True),
    "cdna3maf": _set(stepmodel, "SUSTAINED_PEAK_ON", True),
    "nocdna3maf": _set(stepmodel, "SUSTAINED_PEAK_ON", False),
    "amdeager": _set(validate, "MLPERF_EAGER_FLOOR_VLLM_AT_PREDICT", True),
    "vendor": _set(calibration_factored, "VENDOR_TERMS_ON", True),
    "cdna3pred": _set(validate, "SUSTAINED_PEAK_AT_PREDICT", True),
    "nocdna3pred": _set(validate, "SUSTAINED_PEAK_AT_PREDICT", False),
    "novendor": _set(calibration_factored, "VENDOR_TERMS_ON", False),
    "noamdeager": _set(validate, "MLPERF_EAGER_FLOOR_VLLM_AT_PREDICT", False),
    "sinkattn": _set(validate, "SINK_ATTENTION_TRITON_SHARE", 0.5),
    "nosinkattn": _set(validate, "SINK_ATTENTION_TRITON_SHARE", 1.0),
    "chatfixed": _set(validate, "CHAT_PREPROCESS_FIXED_IN_VALIDATE", True),
    "nochatfixed": _set(validate, "CHAT_PREPROCESS_FIXED_IN_VALIDATE", False),
    "mxfp4pad": _set(validate, "MXFP4_PAD_AT_PREDICT", True),
    "nomxfp4pad": _set(validate, "MXFP4_PAD_AT_PREDICT", False),
    "default": lambda: None,
}
# words with a number: prefix -> (range check, what the number sets)
NUMBERED = {
    "tpbus": (lambda n: 0 < n <= 100, lambda n: setattr(stepmodel, "TP_BUS_EFFICIENCY", n / 100.0)),
    "pubttft": (lambda n: n > 0, lambda n: setattr(calibration_factored, "PUBLISHER_PARAM_SD_SCALE",
                                                   {"ttft_overhead_ms": float(n)})),
    "splitw": (lambda n: True, lambda n: setattr(stepmodel, "EXPERT_SPLIT_HALF_WIDTH", float(n))),
    "intake": (lambda n: n > 0, lambda n: setattr(validate, "PROMPT_INTAKE_US_PER_TOKEN", n / 10.0)),
    "d8pred": (lambda n: 0 < n <= 100, lambda n: setattr(validate, "DENSE_BLOCK_FP8_AT_PREDICT", n / 100.0)),
    "sinkattn": (lambda n: 0 < n <= 100, lambda n: setattr(validate, "SINK_ATTENTION_TRITON_SHARE", n / 100.0)),
}


def _numbered(word: str):
    """(prefix, number) of a numbered word in range, else None."""
    for prefix, (ok, _) in NUMBERED.items():
        tail = word[len(prefix):]
        if word.startswith(prefix) and tail.isdigit() and ok(int(tail)):
            return prefix, int(tail)
    return None


def main() -> None:
    words = set(sys.argv[1].split("+"))
    unknown = sorted(w for w in words if w not in SWITCHES and _numbered(w) is None)
    if unknown:
        sys.exit(f"variant {sys.argv[1]!r}: unknown word(s) {unknown}; allowed: {', '.join(SWITCHES)}, "
                 "tpbusNN (NN in 1..100), pubttftN, splitwN, intakeN, d8predNN, sinkattnNN (NN in 1..100)")
    for w in words:
        if _numbered(w) is not None:
            prefix, n = _numbered(w)
            NUMBERED[prefix][1](n)
    for word, switch in SWITCHES.items():
        if word in words:
            switch()
    from mistfast.cli import main as cli
    sys.argv = ["mistfast"] + sys.argv[2:]
    cli()


if __name__ == "__main__":
    main()
