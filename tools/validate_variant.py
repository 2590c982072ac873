"""Run ``mistfast validate`` with the session-10 model switches set, for A/B runs of one fold
(docs/moe-fidelity.md, session 10). Usage:

    python tools/validate_variant.py VARIANT validate CSV... -o OUT --cv source --cv-only mantile

VARIANT is any of these words joined by '+': ``ep_no_a2a`` (stepmodel.EP_DISPATCH_UNDER_TP_ATTENTION =
False: EP under TP attention moves no tokens), ``split`` (stepmodel.EXPERT_ETA_SCOPE =
"weight_only+tp_split"), ``launch40`` (SGLang eager prefill at 40 us per kernel), ``tpbusNN``
(stepmodel.TP_BUS_EFFICIENCY = NN / 100: TP collectives at NN % of the link bandwidth), ``pubttftN``
(calibration_factored.PUBLISHER_PARAM_SD_SCALE = {"ttft_overhead_ms": N}: the publisher terms of the
TTFT overhead N times looser; both docs/step-model.md, "TP scaling of short prefills, session 11"),
``default``."""
import sys

from mistfast import launch_time, stepmodel


def main() -> None:
    words = set(sys.argv[1].split("+"))
    tpbus = [w for w in words if w.startswith("tpbus") and w[5:].isdigit() and 0 < int(w[5:]) <= 100]
    pubttft = [w for w in words if w.startswith("pubttft") and w[7:].isdigit() and int(w[7:]) > 0]
    unknown = words - {"ep_no_a2a", "split", "launch40", "default"} - set(tpbus) - set(pubttft)
    if unknown:
        sys.exit(f"variant {sys.argv[1]!r}: unknown word(s) {sorted(unknown)}; allowed: ep_no_a2a, split, launch40, tpbusNN (NN in 1..100), pubttftN, default")
    if "ep_no_a2a" in words:
        stepmodel.EP_DISPATCH_UNDER_TP_ATTENTION = False
    if "split" in words:
        stepmodel.EXPERT_ETA_SCOPE = "weight_only+tp_split"
    if "launch40" in words:
        launch_time.EAGER_PREFILL_ENGINES["sglang"] = launch_time.EAGER_KERNEL_US
    if tpbus:
        stepmodel.TP_BUS_EFFICIENCY = int(tpbus[0][5:]) / 100.0
    if pubttft:
        from mistfast import calibration_factored
        calibration_factored.PUBLISHER_PARAM_SD_SCALE = {"ttft_overhead_ms": float(pubttft[0][7:])}
    from mistfast.cli import main as cli
    sys.argv = ["mistfast"] + sys.argv[2:]
    cli()


if __name__ == "__main__":
    main()
