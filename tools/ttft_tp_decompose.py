"""Split the predicted median TTFT of InferenceMAX gpt-oss-120b closed-loop rows into its parts, per TP
degree and prompt length (docs/ttft-under-load.md, "InferenceMAX TTFT versus TP, session 14"):

    PYTHONPATH=. python tools/ttft_tp_decompose.py CALIBRATION.toml [DEVICE [ENGINE [USERS]]] [-v]

e.g. ``/work/bench/s14/loso/calibration.toml B200 vllm 4``. Per row: measured, predicted = simulated TTFT
(one closed-loop simulation of the row's point with the stored calibration's client, as
``mistfast validate`` builds them) + closed-loop step wait + front-end per-token intake +
``ttft_overhead_ms`` + first-wave term, and the op breakdown of one prefill of 0.9 x ISL tokens
(``-v``: every op)."""
import dataclasses
import sys
from pathlib import Path

import pandas as pd

from mistfast import calibration as C
from mistfast import validate as V
from mistfast.opbreakdown import op_breakdown
from mistfast.runner import run_points


def main(argv):
    flags = [a for a in argv if a.startswith("-")]
    args = [a for a in argv if not a.startswith("-")]
    if not args:
        sys.exit(__doc__)
    cal = Path(args[0])
    hw, eng, users = (args[1:] + ["B200", "vllm", "4"][len(args) - 1:])[:3]
    d = pd.read_csv(Path(__file__).resolve().parents[1] / "data/measurements/public.csv")
    m = d[d.source.str.contains("mantile", na=False) & d.model.str.contains("gpt-oss-120b", case=False)
          & (d.metric == "ttft_p50_ms") & (d.engine_family == eng) & (d.hardware == hw)
          & (d.osl == 1024) & (d.batch_or_concurrency.astype(str) == users)]
    m = m.sort_values(["isl", "tp", "engine_version"]).drop_duplicates(["isl", "tp"])
    for _, r in m.iterrows():
        p = V.plan_row(r.to_dict())
        pt = V.row_point(p)
        c, used = V._stored_client(pt.client, p, cal)
        c = V.with_predict_floor(c, p)
        pts = [dataclasses.replace(pt, client=c, think_s=V.closed_loop_think_s(p, c) or pt.think_s)]
        s = C._run_summary(run_points(pts, parallel=False), 0)
        sim = float(s[p.value_key])
        wait, intake = V.closed_loop_step_wait_ms(p, s), V.prompt_intake_term_ms(p)
        fw, ovh = V.first_wave_ms_term(p, c), V.client_side_ms(p, c)
        total = V.plan_value(p, s) + ovh + fw
        ops, t_pf = op_breakdown(c, prefill=[(0, int(0.9 * r.isl))])
        cats = {}
        for o in ops:
            cats[o.category] = cats.get(o.category, 0.0) + o.time_s * 1e3
        print(f"{hw} {eng} isl {int(r.isl)} tp {r.tp}: measured {r.value:.1f} predicted {total:.1f} = simulated {sim:.1f}"
              f" + wait {wait:.1f} + intake {intake:.1f} + ttft_overhead {ovh:.1f} + first wave {fw:.1f} |"
              f" TPOT {s.get('tpot_mean_ms', 0.0):.2f} | prefill step {t_pf * 1e3:.2f} ms ("
              + ", ".join(f"{k} {v:.2f}" for k, v in cats.items()) + f") [{used}]")
        if "-v" in flags:
            for o in ops:
                print(f"     {o.name:40s} {o.category:14s} {o.bound:13s} {o.time_s * 1e3:8.3f}")


if __name__ == "__main__":
    main(sys.argv[1:])
