"""Host time per sequence per step (efficiency.seq_overhead_us; docs/step-model.md, "Host time per
sequence"): hand-computed step and run times, the plain-Python twin, the engine's fast paths, bad
input, the calibration store and the factorised fit's recovery of a known value."""
import math

import pytest

import mistfast as mf
from mistfast import calibration as C
from mistfast import step_latency
from mistfast.specs import make_client as _make_client
from tests.reference.step_reference import reference_step_time
from .builders import model_client as make_client


def test_three_decodes_and_one_chunk_add_four_times_the_value():
    base = make_client("llama-3.1-8b", "H100")
    host = make_client("llama-3.1-8b", "H100", efficiency={"seq_overhead_us": 25.0})
    pf, dec = [(0, 300)], [(1, 900), (1, 1200), (1, 40)]
    a = step_latency(base, prefill=pf, decode=dec)
    b = step_latency(host, prefill=pf, decode=dec)
    assert b.total_s - a.total_s == pytest.approx(4 * 25e-6, rel=1e-9)
    # reported as host time ("other") and in the PP interval (= the step when pp = 1)
    assert b.breakdown["other_s"] - a.breakdown["other_s"] == pytest.approx(4 * 25e-6, rel=1e-9)
    assert b.breakdown["pp_interval_s"] == b.total_s
    # the device work is unchanged
    for k in ("gemm_s", "attention_s", "communication_s", "flops", "hbm_bytes"):
        assert b.breakdown[k] == a.breakdown[k]


def test_each_branch_is_a_sequence_and_decode_only_steps_count_rows():
    base = make_client("llama-3.1-8b", "H100")
    host = make_client("llama-3.1-8b", "H100", efficiency={"seq_overhead_us": 10.0})
    # one request sampling 4 branches over a shared prefix + 2 single decodes = 6 sequences
    dec = [(4, 500, 20), (1, 0, 700), (1, 0, 800)]
    assert step_latency(host, decode=dec).total_s - step_latency(base, decode=dec).total_s == \
        pytest.approx(6 * 10e-6, rel=1e-9)
    # two prefill chunks alone: 2 sequences
    pf = [(0, 2000), (512, 512)]
    assert step_latency(host, prefill=pf).total_s - step_latency(base, prefill=pf).total_s == \
        pytest.approx(2 * 10e-6, rel=1e-9)


def test_not_scaled_by_the_correction_and_added_to_the_step_overhead():
    corr = {"tokens": [1, 4096], "prefill": [2.0, 2.0], "decode": [3.0, 3.0]}
    eff = {"step_overhead_ms": 1.5, "seq_overhead_us": 40.0}
    k0 = make_client("llama-3.1-8b", "H100", step_correction=corr, efficiency={"step_overhead_ms": 1.5})
    k1 = make_client("llama-3.1-8b", "H100", step_correction=corr, efficiency=eff)
    dec = [(1, 1000)] * 64
    assert step_latency(k1, decode=dec).total_s - step_latency(k0, decode=dec).total_s == \
        pytest.approx(64 * 40e-6, rel=1e-9)


def test_zero_changes_nothing():
    a = make_client("llama-3.1-8b", "H100")
    b = make_client("llama-3.1-8b", "H100", efficiency={"seq_overhead_us": 0.0})
    for pf, dec in (([(0, 700)], [(1, 300)] * 5), ([], [(1, 900)] * 33)):
        assert step_latency(a, prefill=pf, decode=dec) == step_latency(b, prefill=pf, decode=dec)


@pytest.mark.parametrize("spec", [
    dict(model="llama-3.1-8b", device="H100", efficiency={"seq_overhead_us": 30.0, "step_overhead_ms": 2.0}),
    dict(model="deepseek-ai/DeepSeek-R1", device="B200", tp=8, efficiency={"seq_overhead_us": 12.5}),
    dict(model="llama-3.1-70b", device="H100", tp=4, pp=2, efficiency={"seq_overhead_us": 50.0,
                                                                       "decode_launch_us": 4.0}),
    dict(model="llama-2-7b", device="A100", reference="genz", efficiency={"seq_overhead_us": 20.0}),
])
@pytest.mark.parametrize("shape", [([(0, 100)], []), ([], [(1, 3000)] * 32), ([(500, 256)], [(1, 800)] * 10),
                                   ([(0, 64), (0, 64), (10, 7)], [(2, 40, 5)])])
def test_kernel_matches_python_twin(spec, shape):
    c = make_client(**spec)
    pf, dec = shape
    want, ops = reference_step_time(c, pf, dec)
    n_seqs = len(pf) + sum(d[0] for d in dec)
    assert dict(ops)["seq_overhead"] == pytest.approx(n_seqs * spec["efficiency"]["seq_overhead_us"] * 1e-6)
    assert step_latency(c, prefill=pf, decode=dec).total_s == pytest.approx(want, rel=1e-9, abs=1e-15)


def test_op_breakdown_has_a_sequence_row_and_sums_to_the_step():
    from mistfast.opbreakdown import op_breakdown
    c = make_client("llama-3.1-8b", "H100", efficiency={"seq_overhead_us": 30.0, "step_overhead_ms": 1.0})
    ops, total = op_breakdown(c, prefill=[(0, 200)], decode=[(1, 900)] * 7)
    rows = {o.name: o for o in ops}
    assert rows["seq_overhead (host)"].time_s == pytest.approx(8 * 30e-6, rel=1e-12)
    assert rows["seq_overhead (host)"].count == 8
    assert sum(o.time_s for o in ops) == pytest.approx(total, rel=1e-12)


def _offline(eff, n=8, prompt=100, out=5):
    return {"clients": [{"model": "llama-3.1-8b", "device": "H100", "efficiency": eff,
                         "scheduler": {"batching": "continuous"}}],
            "workload": {"num_requests": n, "arrival": {"process": "offline"},
                         "input": {"dist": "fixed", "value": prompt}, "output": {"dist": "fixed", "value": out}},
            "simulation": {"horizon_s": 100.0}}


def test_an_offline_batch_by_hand():
    """8 prompts of 100 tokens at t = 0, 5 output tokens each: one prefill step of 8 chunks, then 4
    decode steps of 8 rows; every request ends with the last one. Each of the 5 steps holds 8
    sequences, so E2E grows by 5 x 8 x 20 us = 0.8 ms, and TPOT (the 4 decode steps) by 8 x 20 us."""
    eff = {"step_overhead_ms": 1.0}
    a = mf.simulate(_offline(eff))
    b = mf.simulate(_offline({**eff, "seq_overhead_us": 20.0}))
    assert int(b.n_finished) == 8
    assert float(b.e2e_mean_ms) - float(a.e2e_mean_ms) == pytest.approx(5 * 8 * 20e-3, rel=1e-6)
    assert float(b.tpot_mean_ms) - float(a.tpot_mean_ms) == pytest.approx(8 * 20e-3, rel=1e-6)
    # the absolute value from the step model: prefill of 8 chunks, decodes at KV 100 + g - 1
    c = make_client("llama-3.1-8b", "H100", efficiency={**eff, "seq_overhead_us": 20.0})
    want = step_latency(c, prefill=[(0, 100)] * 8).total_s + sum(
        step_latency(c, decode=[(1, 100 + g - 1)] * 8).total_s for g in range(1, 5))
    assert float(b.e2e_mean_ms) / 1e3 == pytest.approx(want, rel=1e-9)


def test_engine_runs_identically_with_and_without_decode_runs():
    doc = {"clients": [{"model": "llama-3.1-8b", "device": "H100", "efficiency": {"seq_overhead_us": 35.0}}],
           "workload": {"num_requests": 120, "arrival": {"process": "poisson", "rate_rps": 10.0},
                        "input": {"dist": "lognormal", "mean": 600, "std": 400, "max_tokens": 3000},
                        "output": {"dist": "lognormal", "mean": 150, "std": 80, "max_tokens": 600}},
           "simulation": {"seed": 5}}
    a = mf.simulate(doc)
    assert a.identical(mf.simulate(doc, decode_runs=False))
    assert int(a.n_finished) == 120
    assert a.identical(mf.simulate(doc))   # deterministic


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf"), "fast"])
def test_bad_value_is_one_clear_line(bad):
    with pytest.raises(mf.SpecError) as e:
        mf.parse_scenario({"clients": [{"model": "llama-3.1-8b", "device": "H100",
                                        "efficiency": {"seq_overhead_us": bad}}]})
    msg = str(e.value)
    assert "seq_overhead_us" in msg and "\n" not in msg.strip()


def test_calibration_file_round_trip(tmp_path):
    from mistfast.calibration_store import Calibration, load_calibration, write_calibration_toml
    fit = C.EfficiencyFit(compute=0.6, memory=0.7, op_overhead_us=3.0, step_overhead_ms=0.4,
                          seq_overhead_us=27.5, n_steps=3)
    cal = Calibration(efficiencies={("H100", "vllm"): fit})
    p = write_calibration_toml(cal, tmp_path / "cal.toml")
    assert "seq_overhead_us = 27.5" in p.read_text()
    back = load_calibration(p)
    assert back.efficiency_for("H100", "vllm")[0]["seq_overhead_us"] == 27.5
    c = _make_client("llama-3.1-8b", "H100", engine="vllm", calibration=str(p))
    assert c.efficiency.seq_overhead_us == 27.5
    # a file written before the field existed reads as 0
    old = tmp_path / "old.toml"
    old.write_text(p.read_text().replace("seq_overhead_us = 27.5\n", ""))
    assert _make_client("llama-3.1-8b", "H100", engine="vllm", calibration=str(old)).efficiency.seq_overhead_us == 0.0


# ---- the factorised fit: low-load rows pin the per-step time, high-batch rows the per-sequence slope
def _steps(truth_eff, device, engine, publisher, batches=(1, 2, 4, 64, 256)):
    out = []
    for model in ("llama-3.1-8b", "qwen2.5-7b"):
        truth = make_client(model, device, efficiency=truth_eff)
        shapes = [((0, P),) for P in (256, 2048)]
        shapes += [(None, ((1, kv),) * B) for B in batches for kv in (512, 4096)]
        for sh in shapes:
            pf, dec = (sh, ()) if sh[0] is not None else ((), sh[1])
            t = step_latency(truth, prefill=list(pf), decode=list(dec)).total_s
            out.append(C.StepObservation(model=model, device=device, time_s=t, prefill=pf, decode=dec, engine=engine,
                                         id=f"{publisher}-{model}-{device}-{engine}-{len(out)}", source=publisher))
    return out


def test_fit_recovers_a_known_host_time_per_sequence(monkeypatch):
    """Steps generated with η = (0.55, 0.7), 2 ms per step and 40 µs per sequence on (H100, vllm),
    8 µs per sequence on (H100, trtllm-1): the fit (engine terms free, pair and publisher terms
    held at 0) recovers both per-sequence times within 1.5 µs (0.4 ms on a 256-sequence step of
    ~10 ms; η, τ and the per-step time are free too and trade a little against the slope at the
    weak priors) and the per-step time within 5 %: the batch-1 to batch-4 steps pin the per-step
    time, the 64- and 256-sequence steps the slope."""
    from mistfast import calibration_factored as CF
    monkeypatch.setattr(CF, "FACTOR_PARAMS", CF.FACTOR_PARAMS + (CF.SEQ_PARAM,))   # FIT_SEQ_OVERHEAD on
    common = {"compute": 0.55, "memory": 0.7, "step_overhead_ms": 2.0}
    obs = _steps({**common, "seq_overhead_us": 40.0}, "H100", "vllm", "pub") + \
        _steps({**common, "seq_overhead_us": 8.0}, "H100", "trtllm-1", "pub")
    loose = {"device": 10.0, "engine": 10.0, "pair": 1e-4, "publisher": 1e-4}
    fit = CF.fit_factored(obs, prior_sd=loose)
    v, t = fit.efficiency("H100", "vllm"), fit.efficiency("H100", "trtllm-1")
    assert v["seq_overhead_us"] == pytest.approx(40.0, abs=1.5)
    assert t["seq_overhead_us"] == pytest.approx(8.0, abs=1.5)
    assert v["step_overhead_ms"] == pytest.approx(2.0, rel=0.05)
    assert v["memory"] == pytest.approx(0.7, rel=0.05)
    # the stored entries carry it (as calibrate() writes them)
    ent = CF.efficiency_entries(fit)
    assert ent[("H100", "vllm")].as_efficiency()["seq_overhead_us"] == pytest.approx(40.0, abs=1.5)
    # and the steps are reproduced (exact data: what is left is the priors' pull)
    assert _median_error(fit, obs) < 0.01


def _median_error(fit, obs):
    import numpy as np
    errs = [np.abs(np.expm1(c.log_ratio(fit.coordinates(c.device, c.engine)))) for c in fit.cells]
    return float(np.median(np.concatenate(errs)))


def test_default_fit_leaves_the_clients_own_value():
    """Off by default (calibration_factored.FIT_SEQ_OVERHEAD): the fit does not re-cost or store it."""
    from mistfast import calibration_factored as CF
    assert CF.SEQ_PARAM not in CF.FACTOR_PARAMS
    obs = _steps({"compute": 0.55, "memory": 0.7, "seq_overhead_us": 40.0}, "H100", "vllm", "pub", batches=(1, 64))
    fit = CF.fit_factored(obs, max_nfev=5)
    assert CF.efficiency_entries(fit)[("H100", "vllm")].seq_overhead_us == 0.0
