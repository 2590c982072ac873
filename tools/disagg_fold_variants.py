"""Run ``mistfast validate`` and record the disaggregated (pipeline) rows' predictions under every
setting of the disaggregated-TTFT switches of mistfast.validate, in one run (docs/ttft-under-load.md,
"Disaggregated P/D rows"). Usage:

    python tools/disagg_fold_variants.py OUT.json validate CSV... -o DIR --cv source --cv-only mantile

Each time the run predicts the pipeline rows with a calibration (each fold), ``_predict_pipelines``
is re-run with every variant below and OUT.json gets {variant: {row id: prediction}}; the report
itself is made with the module's defaults. DISAGG_DP_ATTENTION_ON changes the scenarios (made when
the rows are planned), so it needs a run of its own.
"""
import json
import sys

from mistfast import cli
from mistfast import validate as V

# variant: (DISAGG_FIRST_TOKEN_FROM_DECODE, DISAGG_CLIENT_OVERHEAD_ON, DISAGG_FIRST_WAVE_ON)
VARIANTS = {"all": (True, True, True), "no_fw": (True, True, False), "first_token_only": (True, False, False),
            "overhead_only": (False, True, False), "off": (False, False, False), "ft_fw": (True, False, True)}
NAMES = ("DISAGG_FIRST_TOKEN_FROM_DECODE", "DISAGG_CLIENT_OVERHEAD_ON", "DISAGG_FIRST_WAVE_ON")


def main() -> None:
    out_path, args = sys.argv[1], sys.argv[2:]
    original = V._predict_pipelines
    defaults = tuple(getattr(V, n) for n in NAMES)
    dump: dict = {}

    def recording(plans, cal_client=None):
        if cal_client is not None:
            for name, values in VARIANTS.items():
                for n, v in zip(NAMES, values):
                    setattr(V, n, v)
                pred, _ = original(plans, cal_client)
                dump.setdefault(name, {}).update({k: float(x) for k, x in pred.items()})
            for n, v in zip(NAMES, defaults):
                setattr(V, n, v)
            with open(out_path, "w") as f:
                json.dump(dump, f)
        return original(plans, cal_client)

    V._predict_pipelines = recording
    sys.argv = ["mistfast"] + args
    cli.main()


if __name__ == "__main__":
    main()
