"""Run tools/validate_variant.py with every factorised fit's terms written out, one JSON line per fit, to
the file named by $DUMPFIT (docs/calibration.md, "A vendor level of the compute efficiency, session 15"):
``terms_table()`` of each fit (root as values, the other terms as factors exp(term) for the η parameters),
plus "vendor" (raw coordinates) and "params". Usage:

    DUMPFIT=fit.jsonl python tools/validate_dump_terms.py VARIANT validate CSV... -o OUT --cv source --cv-only FOLD

A fold's fit (--cv-only) is the first line; compare two runs' lines term by term to see which terms a switch moves."""
import json
import os
import runpy
import sys
from pathlib import Path

from mistfast import calibration_factored as cf

_fit_cells = cf.fit_cells


def fit_cells(*args, **kwargs):
    fit = _fit_cells(*args, **kwargs)
    table = fit.terms_table()
    table["vendor"] = {v: dict(zip(cf.FACTOR_PARAMS, map(float, x))) for v, x in fit.vendor.items()}
    table["params"] = list(cf.FACTOR_PARAMS)
    with open(os.environ["DUMPFIT"], "a") as fh:
        fh.write(json.dumps(table) + "\n")
    return fit


if __name__ == "__main__":
    if "DUMPFIT" not in os.environ:
        sys.exit("DUMPFIT: set it to the file the fits' terms are appended to")
    cf.fit_cells = fit_cells
    runpy.run_path(str(Path(__file__).with_name("validate_variant.py")), run_name="__main__")
