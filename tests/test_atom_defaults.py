"""ATOM's scheduler defaults (validate.ATOM_DEFAULTS_IN_VALIDATE, docs/ttft-under-load.md "InferenceMAX's
first wave from outside its rows, session 16"). Expected values are ATOM's published source
(ROCm/ATOM at f969215aa, 2026-01-14: max_num_batched_tokens 16,384, max_num_seqs 512, whole prompts
in prefill-only batches) and a first wave computed by hand from them."""
import numpy as np
import pytest

from mistfast import validate as V
from mistfast.runner import run_points


def atom_row(concurrency: int = 16, isl: int = 1024) -> dict:
    """An InferenceMAX ATOM closed-loop row (MI355X, DeepSeek-R1 FP8, TP 8) as public.csv words it."""
    return {
        "id": "tatom", "source": "github:gminneci/mantile@72ff84e:reconcile/sources/inferencemax/raw/run_1/agg_bmk.json",
        "engine": "ATOM (AMD ROCm inference engine)",
        "engine_version": "rocm7.1.1-ubuntu24.04-pytorch2.9-atom0.1.1-MI350x (container rocm/atom:rocm7.1.1-ubuntu24.04-pytorch2.9-atom0.1.1-MI350x)",
        "model": "deepseek-ai/DeepSeek-R1-0528", "precision": "FP8 (block-scaled, native)", "hardware": "MI355X",
        "num_accel": 8, "tp": 8, "pp": 1,
        "workload": "closed loop at max concurrency, request rate inf; random tokens, per-request lengths uniform in "
                    "[0.8*isl, isl] and [0.8*osl, osl] (--random-range-ratio 0.8), --ignore-eos, ~10x concurrency prompts",
        "isl": float(isl), "osl": 256.0, "batch_or_concurrency": str(concurrency), "request_rate": "inf (closed loop)",
        "metric": "ttft_ms", "value": 100.0, "notes": "InferenceMAX actions run 1; runner mi355x; ep 1; dp_attention false",
        "dataset": "random", "engine_family": "other"}


def first_wave_ttft_s(row: dict) -> np.ndarray:
    p = V.plan_row(row)
    res = run_points([V.row_point(p)], per_request=True)
    q = res["requests"]
    first = np.argsort(q["arrival"], kind="stable")[:p.concurrency]
    return q["t_first_tok"][first] - q["arrival"][first]


def test_atom_scheduler_is_atoms_published_defaults(monkeypatch):
    monkeypatch.setattr(V, "ATOM_DEFAULTS_IN_VALIDATE", True)
    sched = V.plan_row(atom_row()).scenario["clients"][0]["scheduler"]
    assert sched["max_batched_tokens"] == 16384
    assert sched["max_batch_size"] == 512
    assert sched["mix_prefill"] is False


def test_off_keeps_the_fallback(monkeypatch):
    monkeypatch.setattr(V, "ATOM_DEFAULTS_IN_VALIDATE", False)
    sched = V.plan_row(atom_row()).scenario["clients"][0]["scheduler"]
    assert (sched["max_batched_tokens"], sched["max_batch_size"]) == (8192, 256)
    assert "mix_prefill" not in sched


def test_first_wave_of_16_one_kilotoken_prompts_is_one_prefill(monkeypatch):
    # 16 prompts of at most 1,024 tokens are at most 16,384 tokens: ATOM admits all of them into
    # one prefill-only batch, so the 16 first tokens come together at its end.
    monkeypatch.setattr(V, "ATOM_DEFAULTS_IN_VALIDATE", True)
    t = first_wave_ttft_s(atom_row(16))
    assert t.max() - t.min() == pytest.approx(0.0, abs=1e-9)
    # the fallback's 8,192-token budget needs two steps for the same ~14,700 tokens
    monkeypatch.setattr(V, "ATOM_DEFAULTS_IN_VALIDATE", False)
    t_off = first_wave_ttft_s(atom_row(16))
    assert t_off.max() > t_off.min() * 1.5
