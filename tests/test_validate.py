"""`mistfast validate` (mistfast.validate): row mapping, split, report files, known answers.

The synthetic CSV (tests/data/validate_synthetic.csv) describes rows whose values are, by
construction, what the analytical model with default efficiencies gives; the test recomputes them
here from the step model and the engine directly (hand-derived step sums for the static batches),
so the uncalibrated error must vanish, and two rows the simulator cannot represent must be listed
with their reasons."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mistfast import simulate, step_latency
from mistfast import validate as V
from mistfast.specs import make_client

DATA = Path(__file__).parent / "data"
SYNTH = DATA / "validate_synthetic.csv"


def _client(row):
    prec = {"FP16": "fp16", "FP8": "fp8", "FP8 (+FP8 KV)": "fp8"}[row["precision"]]
    model = {"Llama-2-7B": "llama-2-7b", "Llama-2 LLaMA-7B": "llama-2-7b",
             "Llama-3.1-8B-Instruct": "llama-3.1-8b"}[row["model"]]
    dev = row["hardware"].split("-")[0]
    return make_client(model, dev, tp=int(row["tp"]), precision=prec)


def _truth(row) -> float:
    """The analytical model's answer for a synthetic row (independent of mistfast.validate)."""
    m, isl, osl = row["metric"], int(row["isl"]), int(row["osl"])
    c = _client(row)
    if m in ("prefill_ms", "ttft_ms"):
        return step_latency(c, prefill=[(0, isl)] * int(row["batch_or_concurrency"])).total_ms
    if m == "decode_step_ms":   # documented convention: context isl + osl/2
        return step_latency(c, decode=[(1, isl + osl // 2)] * int(row["batch_or_concurrency"])).total_ms
    if "static" in row["workload"]:
        B = int(row["batch_or_concurrency"])
        # one prefill step of B prompts, then osl - 1 decode steps; before the step that emits
        # token g + 1 the KV holds prompt + g - 1 tokens (engine semantics)
        t = step_latency(c, prefill=[(0, isl)] * B).total_s
        t += sum(step_latency(c, decode=[(1, isl + g - 1)] * B).total_s for g in range(1, osl))
        tput = B * osl / t
        return tput / int(row["num_accel"]) if m.endswith("_per_gpu") else tput
    # offline vLLM row: chunked, 8192-token budget, 256 sequences (documented vLLM defaults)
    n = 300
    sc = {"clients": [{"model": c.model.name, "device": c.device.name, "precision": "fp8",
                       "scheduler": {"batching": "chunked", "max_batch_size": 256, "max_batched_tokens": 8192,
                                     "chunk_size": 8192}}],
          "workload": {"num_requests": n, "arrival": {"process": "offline"},
                       "input": {"dist": "fixed", "value": isl}, "output": {"dist": "fixed", "value": osl}},
          "simulation": {"horizon_s": 1e7}}
    return float(simulate(sc).output_tok_s)


@pytest.fixture(scope="module")
def synth_csv(tmp_path_factory):
    df = pd.read_csv(SYNTH, dtype={"batch_or_concurrency": str})
    for i, r in df.iterrows():
        if r["id"] not in ("S010", "S011"):
            df.loc[i, "value"] = _truth(r)
    p = tmp_path_factory.mktemp("synth") / "synthetic.csv"
    df.to_csv(p, index=False)
    return p


@pytest.fixture(scope="module")
def synth_report(synth_csv, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    return V.validate(synth_csv, out, calibrate=True, test_fraction=0.3, seed=0), out


def test_every_row_reported_and_unsupported_listed(synth_report):
    rep, out = synth_report
    assert list(rep.id) == [f"S{i:03d}" for i in range(1, 12)]
    for col in V.REPORT_COLUMNS:
        assert col in rep.columns
    un = rep.set_index("id").loc[["S010", "S011"]]
    assert (un.status == "unsupported").all()
    assert "GPT-J 6B" in un.loc["S010", "reason"] and "catalog" in un.loc["S010", "reason"]
    assert "energy_per_token_j" in un.loc["S011", "reason"]
    assert (rep.set_index("id").drop(["S010", "S011"]).status == "ok").all()
    csv = pd.read_csv(out / "report.csv")
    assert set(csv.id) == set(rep.id)
    md = (out / "report.md").read_text()
    assert "S010" in md and "S011" in md and "Per metric" in md and "Per hardware" in md and "Per engine" in md
    try:
        import matplotlib  # noqa: F401
        assert (out / "predicted_vs_measured.png").stat().st_size > 1000
    except ImportError:
        assert "matplotlib" in md


def test_uncalibrated_error_vanishes_on_analytical_data(synth_report):
    rep, _ = synth_report
    ok = rep[rep.status == "ok"].set_index("id")
    for rid, r in ok.iterrows():
        tol = 1e-9 if r.prediction_kind.endswith("step") else 1e-6
        assert abs(r.rel_error) < tol, (rid, r.rel_error)
    assert ok.loc["S008", "metric"] == "output_tok_s_per_gpu"


def test_calibration_on_analytical_data_recovers_defaults(synth_report):
    rep, out = synth_report
    ok = rep[rep.status == "ok"]
    assert set(ok.split) == {"train", "test"}
    assert ok.rel_error_calibrated.abs().max() < 0.02
    from mistfast.calibration import load_calibration
    cal = load_calibration(out / "calibration.toml")
    for (dev, eng), e in cal.efficiencies.items():
        if e["n_step_rows"] + e["n_run_rows"] >= 2:
            assert e["compute"] == pytest.approx(0.75, rel=0.03), (dev, eng)
            assert e["memory"] == pytest.approx(0.75, rel=0.03), (dev, eng)


def test_split_is_by_group_and_deterministic():
    df = pd.read_csv(SYNTH)
    plans = [V.plan_row(r) for r in df.to_dict("records")]
    a = V.split_groups(plans, 0.3, seed=0)
    b = V.split_groups(plans, 0.3, seed=0)
    assert a == b
    assert set(a.values()) <= {"train", "test"}
    # groups never straddle: the split is a function of the group
    rows = {}
    for p in plans:
        if p.status == "ok":
            rows.setdefault(p.group, set()).add(a[p.group])
    assert all(len(v) == 1 for v in rows.values())
    c = V.split_groups(plans, 0.3, seed=1)
    assert set(c) == set(a)


def test_plan_row_mapping():
    base = dict(id="x", source="s", engine="TensorRT-LLM (trtllm-bench, PyTorch backend)", engine_version="v1.0",
                model="Llama-3.1-8B-Instruct", precision="FP8 (ModelOpt)", hardware="H100-SXM-80GB", num_accel=1,
                tp=1, pp=1, workload="offline max-throughput, all requests queued at once", isl=128, osl=2048,
                batch_or_concurrency="engine-chosen (max load)", request_rate="inf (3000 requests)",
                metric="output_tok_s", value=22714, notes="")
    p = V.plan_row(base)
    assert (p.status, p.kind, p.workload_kind, p.engine) == ("ok", "run", "offline", "trtllm-1")
    assert p.n_requests_sim == 3000
    sch = p.scenario["clients"][0]["scheduler"]
    assert sch["batching"] == "chunked" and sch["max_batch_size"] == 640 and sch["max_batched_tokens"] == 2048
    p = V.plan_row(dict(base, request_rate="inf (30000 requests)", isl=128, osl=128))
    assert p.n_requests_sim == V.MAX_SIM_REQUESTS
    p = V.plan_row(dict(base, workload="fixed concurrency", batch_or_concurrency="64", request_rate="n/a"))
    assert p.workload_kind == "closed loop" and p.scenario["workload"]["arrival"] == {"process": "closed_loop",
                                                                                      "concurrency": 64}
    p = V.plan_row(dict(base, workload="online serving", batch_or_concurrency="", request_rate="4.5",
                        metric="ttft_p90_ms", value=120))
    assert p.workload_kind == "poisson" and p.value_key == "ttft_p90_ms" and not p.rate_like
    assert V.plan_row(dict(base, hardware="TPU-v9z")).status == "unsupported"
    assert V.plan_row(dict(base, value=float("nan"))).status == "unsupported"
    amb = V.plan_row(dict(base, tp=4, num_accel=4, model="Llama-2-70B", precision="FP16", hardware="A100",
                          workload="static batch, fixed ISL/OSL", batch_or_concurrency="1280",
                          notes="whether per-GPU or total is not stated in the doc"))
    assert amb.status == "ambiguous" and "per GPU" in amb.reason


def test_trtllm_bench_settings_by_hand():
    # Llama-3.1-8B FP8 (FP8 KV) on one H100 80 GiB, kv fraction 0.95:
    # weights 8.03e9 B = 7.478 GiB; KV per token 2*32*8*128*1 B = 65536 B = 6.1035e-5 GiB
    c = make_client("llama-3.1-8b", "H100", precision="fp8")
    engine = c.model.param_count() / 2**30
    per_tok = 65536 / 2**30
    reqs = (80 - engine) * 0.95 / (per_tok * (128 + 2048))   # = 518.2
    assert 512 < reqs < 520
    # batch: 128 * ceil(518.2/128) = 640; tokens: 518.2 * (1 + 128/2048) = 550.6 -> max(2048, 768) = 2048
    assert V.trtllm_bench_settings(c, 128, 2048) == (640, 2048)
    # 128/128: requests = 8.3e3 -> min(., 4096) -> 4096 (256-multiple) ; tokens 4096*2 = 8192
    assert V.trtllm_bench_settings(c, 128, 128) == (4096, 8192)


def test_main_prints_summary(synth_csv, tmp_path, capsys):
    assert V.main(synth_csv, tmp_path / "m", calibrate=False) == 0
    out = capsys.readouterr().out
    assert "prefill_ms" in out and "output_tok_s" in out and "2 unsupported" in out
    assert (tmp_path / "m" / "report.csv").exists()


def _shared() -> Path | None:
    import os
    env = os.environ.get("MISTFAST_SHARED")
    cand = Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared"
    p = cand / "calibration" / "measurements.csv"
    return p if p.exists() else None


@pytest.mark.skipif(_shared() is None, reason="../shared/calibration/measurements.csv not available")
def test_real_measurements_every_row_reported(tmp_path, monkeypatch):
    # completeness, not accuracy: fewer simulated requests keep this test fast
    monkeypatch.setattr(V, "MAX_SIM_REQUESTS", 400)
    csv = _shared()
    rep = V.validate(csv, tmp_path, calibrate=True, seed=0)
    src = pd.read_csv(csv)
    assert len(rep) == len(src) and list(rep.id) == list(src.id)
    assert set(rep.status) <= {"ok", "unsupported", "ambiguous"}
    assert rep[rep.status != "ok"].reason.str.len().min() > 0
    ok = rep[rep.status == "ok"]
    assert ok.predicted.notna().all() and ok.predicted_calibrated.notna().all()
    assert {"train", "test"} == set(ok.split)
    for f in ("report.csv", "report.md", "calibration.toml"):
        assert (tmp_path / f).exists()
