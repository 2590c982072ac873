"""Chrome / Perfetto trace export of a small run: one track of engine steps, one track per
request (queue, prefill-to-first-token, decode)."""
from __future__ import annotations

import json

import numpy as np


def chrome_trace_events(ds) -> list[dict]:
    ev = [{"name": "process_name", "ph": "M", "pid": 1, "args": {"name": "engine"}},
          {"name": "process_name", "ph": "M", "pid": 2, "args": {"name": "requests"}}]
    if "step_start_s" in ds:
        for t, dt, npf, pft, nd, dtok in zip(ds.step_start_s.values, ds.step_duration_s.values,
                                             ds.step_prefills.values, ds.step_prefill_tokens.values,
                                             ds.step_decodes.values, ds.step_decode_tokens.values):
            ev.append({"name": f"step pf={int(npf)}/{int(pft)}t dec={int(nd)}", "ph": "X", "pid": 1, "tid": 1,
                       "ts": t * 1e6, "dur": dt * 1e6,
                       "args": {"prefills": int(npf), "prefill_tokens": int(pft), "decodes": int(nd),
                                "decode_tokens": int(dtok)}})
    if "req_arrival_s" in ds:
        arr = ds.req_arrival_s.values
        sched = ds.req_first_scheduled_s.values
        first = ds.req_first_token_s.values
        fin = ds.req_finish_s.values
        for i in range(arr.size):
            spans = (("queued", arr[i], sched[i]), ("prefill", sched[i], first[i]), ("decode", first[i], fin[i]))
            for name, a, b in spans:
                if np.isfinite(a) and np.isfinite(b) and b >= a:
                    ev.append({"name": name, "ph": "X", "pid": 2, "tid": i + 1, "ts": a * 1e6, "dur": (b - a) * 1e6,
                               "args": {"request": i}})
    return ev


def write_chrome_trace(ds, path) -> None:
    with open(path, "w") as f:
        json.dump({"traceEvents": chrome_trace_events(ds), "displayTimeUnit": "ms"}, f)
