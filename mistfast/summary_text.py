"""The readable text summary of one simulated scenario (``mistfast run`` and reports print it)."""
from __future__ import annotations


def _scalar(m, name) -> float:
    import numpy as np
    return float(np.asarray(m[name]).reshape(-1)[0]) if name in m else float("nan")


def _qlabel(q: float) -> str:
    """0.5 -> p50, 0.999 -> p99.9"""
    return "p" + f"{q * 100:.6g}"


def format_summary(ds, quantiles=None) -> str:
    """Readable summary of one simulated scenario: a Dataset, or the summary mapping of
    :func:`mistfast.quickrun.timed_summary` (name -> number)."""
    def g(name, fmt="{:.2f}"):
        v = _scalar(ds, name)
        return fmt.format(v) if v == v else "n/a"

    def n(name):
        v = _scalar(ds, name)
        return int(v) if v == v else 0
    lines = [
        f"requests   arrived {n('n_arrived')}  finished {n('n_finished')}  rejected {n('n_rejected')}  "
        f"unfinished {n('n_unfinished')}  not arrived {n('n_not_arrived')}"
        + (f"  before warmup {n('n_before_warmup')}" if n("n_before_warmup") else ""),
    ]
    if n("n_rejected"):
        import numpy as np

        from .kernels.engine import REASON_NAMES
        counts = np.asarray(ds["n_rejected_by_reason"]).reshape(-1)
        rr = {str(k): int(v) for k, v in zip(REASON_NAMES[1:], counts) if v}
        lines.append(f"           rejected by reason: {rr}")
    import numpy as np
    qs = quantiles if quantiles is not None else (
        [float(q) for q in ds["quantile"].values] if "quantile" in getattr(ds, "coords", {}) else None)
    if qs is not None and "ttft_quantile_ms" in ds:  # the configured quantiles ([metrics] quantiles)
        lines.append(f"{'':11}{'mean':>10}" + "".join(f"{_qlabel(q):>10}" for q in qs))
        for base, label in (("ttft", "TTFT ms"), ("tpot", "TPOT ms"), ("e2e", "E2E ms"), ("queue_delay", "queue ms")):
            vals = np.asarray(ds[f"{base}_quantile_ms"], float).reshape(-1)
            lines.append(f"{label:<11}{g(f'{base}_mean_ms'):>10}"
                         + "".join(f"{v:>10.2f}" if v == v else f"{'n/a':>10}" for v in vals))
    else:
        lines.append(f"{'':11}{'mean':>10}{'p50':>10}{'p90':>10}{'p99':>10}")
        for base, label in (("ttft", "TTFT ms"), ("tpot", "TPOT ms"), ("e2e", "E2E ms"), ("queue_delay", "queue ms")):
            lines.append(f"{label:<11}" + "".join(f"{g(f'{base}_{q}_ms'):>10}" for q in ("mean", "p50", "p90", "p99")))
    lines += [
        f"throughput {g('output_tok_s', '{:.1f}')} output tok/s, {g('total_tok_s', '{:.1f}')} total tok/s, "
        f"{g('request_throughput_rps', '{:.3f}')} req/s",
        f"SLO        goodput {g('goodput_rps', '{:.3f}')} req/s, attainment {g('slo_attainment', '{:.1%}')}",
        f"engine     {n('n_steps')} steps, mean batch {g('mean_batch_size', '{:.1f}')} seqs / "
        f"{g('mean_batch_tokens', '{:.0f}')} tokens, busy {g('busy_fraction', '{:.1%}')}, "
        f"KV mean {g('kv_util_mean', '{:.1%}')} peak {g('kv_util_peak', '{:.1%}')}, preemptions {n('preemptions')}",
        f"cost       {g('energy_J', '{:.3g}')} J ({g('energy_per_output_token_J', '{:.3g}')} J/token), "
        f"${g('cost_usd', '{:.4f}')}, {g('tokens_per_dollar', '{:.3g}')} tokens/$",
    ]
    return "\n".join(lines)
