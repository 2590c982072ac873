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
    return make_client(model, dev, tp=int(row["tp"]), precision=prec, efficiency={})   # analytical: 0.75


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
    sc = {"clients": [{"model": c.model.name, "device": c.device.name, "precision": "fp8", "efficiency": {},
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
    assert "Falcon-180B" in un.loc["S010", "reason"] and "catalog" in un.loc["S010", "reason"]
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


# ---------------------------------------------------------------- calibration modes (issue 10 item 4)
_ROW = dict(engine="vLLM", engine_version="0.8", model="Llama-3.1-8B-Instruct", precision="FP8",
            hardware="H100-SXM-80GB", num_accel=1, tp=1, pp=1, osl=128, request_rate="", notes="", group="")


def _step_rows(source, eff, prefix):
    """prefill and decode step rows whose values are the analytical model at efficiency ``eff``."""
    c = make_client("llama-3.1-8b", "H100", precision="fp8", efficiency=eff)
    rows = []
    for i, isl in enumerate((256, 1024, 4096)):
        rows.append(dict(_ROW, id=f"{prefix}p{i}", source=source, workload="single request, prefill", isl=isl,
                         batch_or_concurrency=1, metric="prefill_ms",
                         value=step_latency(c, prefill=[(0, isl)]).total_ms))
    for i, b in enumerate((1, 16, 64)):
        rows.append(dict(_ROW, id=f"{prefix}d{i}", source=source, workload="decode step", isl=1024,
                         batch_or_concurrency=b, metric="decode_step_ms",
                         value=step_latency(c, decode=[(1, 1024 + 64)] * b).total_ms))
    return rows


EFF_A = {"compute": 0.4, "memory": 0.55, "op_overhead_us": 20.0}
EFF_B = {"compute": 0.6, "memory": 0.8, "op_overhead_us": 5.0}


def test_shipped_file_mode_is_what_a_client_gets(tmp_path):
    """--calibration FILE: each row is predicted by the client a user gets from that file — the
    (device, engine) efficiency; a row naming no engine gets the pooled current-engine entry."""
    from mistfast import calibration as C
    cal = C.Calibration(efficiencies={("H100", "vllm"): dict(EFF_A, network=1.0),
                                      ("*", "current"): dict(EFF_B, network=1.0)})
    f = C.write_calibration_toml(cal, tmp_path / "cal.toml")
    rows = _step_rows("doc-a", EFF_A, "a") + [dict(r, engine="", engine_version="", id="n" + r["id"])
                                               for r in _step_rows("doc-a", EFF_B, "b")]
    csv = tmp_path / "m.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    rep = V.validate(csv, tmp_path / "out", calibration=str(f), plot=False)
    ok = rep[rep.status == "ok"]
    assert len(ok) == 12 and set(ok.split) == {"file"}
    # values were made with exactly these efficiencies: the calibrated error vanishes
    assert ok.rel_error_calibrated.abs().max() < 1e-9
    assert set(ok[ok.id.str.startswith("n")].calibration_used) == {"*/current"}
    assert set(ok[~ok.id.str.startswith("n")].calibration_used) == {"H100/vllm"}


def test_leave_one_source_out_never_sees_the_held_out_source(tmp_path):
    """Two sources measured the same configuration with different efficiencies. Under --cv source
    each source is predicted by a fit on the other one only, so its calibrated predictions are the
    other source's values (same batch shapes), and its error is their ratio."""
    rows_a, rows_b = _step_rows("github:x/a@1:f.md", EFF_A, "a"), _step_rows("https://b.example/r.html#t", EFF_B, "b")
    csv = tmp_path / "m.csv"
    pd.DataFrame(rows_a + rows_b).to_csv(csv, index=False)
    rep = V.validate(csv, tmp_path / "out", calibration="shipped", cv="source", plot=False)
    ok = rep.set_index("id")
    assert set(ok.split) == {"cv"} and set(ok.source_document) == {"github:x/a", "https://b.example"}
    for ra, rb in zip(rows_a, rows_b):
        assert ok.loc[ra["id"], "predicted_calibrated"] == pytest.approx(rb["value"], rel=0.01)
        assert ok.loc[rb["id"], "predicted_calibrated"] == pytest.approx(ra["value"], rel=0.01)
    md = (tmp_path / "out" / "report.md").read_text()
    assert "leave-one-source-out" in md and "Per held-out source" in md


def test_cv_only_holds_out_one_fold_with_the_same_predictions(tmp_path):
    """--cv-only TEXT runs only the matching fold: its rows get exactly the predictions of the full
    leave-one-source-out run (same fit on the other sources), the other rows none; text that names
    no source is one clear error listing the sources."""
    rows_a, rows_b = _step_rows("github:x/a@1:f.md", EFF_A, "a"), _step_rows("https://b.example/r.html#t", EFF_B, "b")
    csv = tmp_path / "m.csv"
    pd.DataFrame(rows_a + rows_b).to_csv(csv, index=False)
    full = V.validate(csv, tmp_path / "full", calibration="shipped", cv="source", plot=False).set_index("id")
    one = V.validate(csv, tmp_path / "one", calibration="shipped", cv="source", cv_only="B.EXAMPLE",
                     plot=False).set_index("id")
    for rb in rows_b:
        assert one.loc[rb["id"], "predicted_calibrated"] == full.loc[rb["id"], "predicted_calibrated"]
    assert one.loc[[r["id"] for r in rows_a], "predicted_calibrated"].isna().all()
    assert not (tmp_path / "one" / "calibration.toml").exists()
    with pytest.raises(V.C.CalibrationError, match="no source contains it; sources: github:x/a, https://b.example"):
        V.validate(csv, tmp_path / "bad", calibration="shipped", cv="source", cv_only="nowhere", plot=False)


def test_source_document():
    assert V.source_document("github:NVIDIA/TensorRT-LLM@00f3:docs/perf.md") == "github:NVIDIA/TensorRT-LLM"
    assert V.source_document("https://a.com/x/y.html?q=1#t (stored snapshot)") == "https://a.com"
    assert V.source_document("https://a.com/x/y.html?q=1#t (stored snapshot)", "document") == "https://a.com/x/y.html"
    assert V.source_document("") == ""
    assert V.source_document("github:NVIDIA/TensorRT-LLM@00f3:docs/perf.md (table 2)", "document") == \
        "github:NVIDIA/TensorRT-LLM:docs/perf.md"


def test_unrepresentable_rows_say_why_and_the_run_continues(tmp_path):
    base = dict(_ROW, source="s", workload="online serving, closed loop at fixed max concurrency",
                isl=512, batch_or_concurrency=4, request_rate="inf (closed loop)")
    rows = [dict(base, id="ok1", metric="output_tok_s", value=1000.0),
            dict(base, id="cost", metric="usd_per_1m_output_tokens", value=1.0),
            dict(base, id="m1", model="gpt-zz-999b", metric="output_tok_s", value=1.0),
            dict(base, id="d1", isl="", osl="", dataset="nonesuch", metric="output_tok_s", value=1.0),
            dict(base, id="x1", metric="joules_per_haiku", value=1.0),
            dict(base, id="h1", hardware="TPU-v99", metric="output_tok_s", value=1.0)]
    csv = tmp_path / "m.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    rep = V.validate(csv, tmp_path / "out", calibration="none", plot=False).set_index("id")
    assert list(rep.index) == [r["id"] for r in rows]
    assert rep.loc["ok1", "status"] == "ok" and rep.loc["ok1", "prediction_kind"] == "closed loop"
    assert "not in the model catalog" in rep.loc["m1", "reason"]
    assert "nonesuch" in rep.loc["d1", "reason"] or "isl" in rep.loc["d1", "reason"]
    assert "metric 'joules_per_haiku' cannot be predicted" in rep.loc["x1", "reason"]
    assert "not in the device catalog" in rep.loc["h1", "reason"]
    # $ per 1M output tokens = price per device-hour / (3600 x predicted output tokens/s) x 1e6
    price = make_client("llama-3.1-8b", "H100").device.price_usd_per_hour
    assert rep.loc["cost", "predicted"] == pytest.approx(price / (3600 * rep.loc["ok1", "predicted"]) * 1e6, rel=1e-12)


def test_cli_validate_modes(tmp_path):
    from click.testing import CliRunner

    from mistfast.cli import main as cli
    rows = _step_rows("s", EFF_A, "a")
    csv = tmp_path / "m.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    r = CliRunner().invoke(cli, ["validate", str(csv), "-o", str(tmp_path / "o"), "--calibration", "shipped"])
    assert r.exit_code == 0, r.output
    assert "coverage 100.0 %" in r.output and (tmp_path / "o" / "report.csv").exists()
    r = CliRunner().invoke(cli, ["validate", str(csv), "-o", str(tmp_path / "o"), "--calibration", "nope.toml"])
    assert r.exit_code == 2 and "nope.toml" in r.output and "Traceback" not in r.output
    # the historical form: python -m mistfast.validate CSV OUT_DIR
    r = CliRunner().invoke(cli, ["validate", str(csv), str(tmp_path / "old"), "--no-calibrate"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "old" / "report.md").exists()


def test_plan_row_resolves_hugging_face_ids_and_datasets():
    """Rows name models by Hugging Face id and workloads by dataset, as public results do: the
    model goes through mistfast.modelnames, the dataset through mistfast.datasets."""
    base = dict(id="hf", source="s", engine="vLLM", engine_version="0.10.1", model="openai/gpt-oss-120b",
                precision="MXFP4", hardware="H200", num_accel=8, tp=8, pp=1, dataset="ShareGPT",
                workload="online serving", isl="", osl="", batch_or_concurrency="", request_rate="4",
                metric="tpot_ms", value=20.0, notes="")
    p = V.plan_row(base)
    assert p.status == "ok", p.reason
    assert (p.model, p.dataset, p.engine) == ("gpt-oss-120b", "sharegpt", "vllm")
    assert p.scenario["workload"]["dataset"]["name"] == "sharegpt"
    r1 = V.plan_row(dict(base, model="deepseek-ai/DeepSeek-R1-0528", precision="FP8", dataset=""))
    assert r1.model == "deepseek-v3"
    gone = V.plan_row(dict(base, model="tiiuae/falcon-180B"))
    assert gone.status == "unsupported" and "falcon-180B" in gone.reason
    odd = V.plan_row(dict(base, dataset="no-such-benchmark-set"))
    assert odd.status == "unsupported" and "no-such-benchmark-set" in odd.reason


# ---------------------------------------------------------------------------- disaggregated P/D rows
_DISAGG = dict(id="pd", source="github:x/y@1:agg.json", engine="Dynamo + TensorRT-LLM", engine_version="1.2.0",
               model="llama-3.1-8b", precision="FP8", hardware="H100", num_accel=5, tp=4, pp=1,
               workload="disaggregated prefill/decode serving; closed loop at max concurrency, ~10x concurrency prompts",
               isl=256, osl=16, batch_or_concurrency="4", request_rate="inf (closed loop)", metric="output_tok_s",
               value=100.0, engine_family="trtllm-1", dataset="",
               notes="1 prefill worker(s) x tp 1 (ep 1, dp_attention false) = 1 GPUs; "
                     "1 decode worker(s) x tp 4 (ep 1, dp_attention false) = 4 GPUs; tp = decode tp")


def test_disagg_layout_from_notes():
    lay = V.disagg_layout(_DISAGG)
    assert lay == V.DisaggLayout(1, 1, 1, 1, 4, 1) and lay.n_devices == 5
    lay = V.disagg_layout(dict(_DISAGG, notes="2 prefill worker(s) x tp 1 (ep 1, dp_attention false) = 2 GPUs; "
                                              "3 decode worker(s) x tp 4 (ep 4, dp_attention true) = 12 GPUs"))
    assert lay == V.DisaggLayout(2, 1, 1, 3, 4, 4, False, True) and lay.n_devices == 14
    assert V.disagg_layout(dict(_DISAGG, workload="closed loop at max concurrency")) is None
    assert V.kv_transfer_link("GB200", 13) == "NVLink5"
    assert V.kv_transfer_link("MI355X", 24) == "RDMA-400G"


def test_pd_pool_with_attention_dp_runs_it(monkeypatch):
    """With DISAGG_DP_ATTENTION_ON (measured, off by default) a pool the notes give "dp_attention
    true" is a client with data-parallel attention when the model has experts (as for an
    aggregated row: C.row_parallelism); dense models and pools with "dp_attention false" keep
    tensor-parallel attention; the switch off (the default) drops it."""
    monkeypatch.setattr(V, "DISAGG_DP_ATTENTION_ON", True)
    notes = ("1 prefill worker(s) x tp 1 (ep 1, dp_attention false) = 1 GPUs; "
             "1 decode worker(s) x tp 4 (ep 4, dp_attention true) = 4 GPUs; tp = decode tp")
    moe = dict(_DISAGG, model="gpt-oss-120b", precision="MXFP4", hardware="B200", notes=notes)
    p = V.plan_row(moe)
    assert p.status == "ok", p.reason
    cl = {c["name"]: c for c in p.scenario["clients"]}
    assert cl["decode"].get("dp_attention") is True and cl["decode"]["ep"] == 4
    assert "dp_attention" not in cl["prefill"]
    dense = {c["name"]: c for c in V.plan_row(dict(_DISAGG, notes=notes)).scenario["clients"]}
    assert "dp_attention" not in dense["decode"]
    monkeypatch.setattr(V, "DISAGG_DP_ATTENTION_ON", False)
    off = {c["name"]: c for c in V.plan_row(moe).scenario["clients"]}
    assert "dp_attention" not in off["decode"]


def test_unequal_pd_row_is_a_two_pool_pipeline():
    p = V.plan_row(_DISAGG)
    assert p.status == "ok", p.reason
    assert p.kind == "pipeline" and p.n_devices == 5
    pools = {c["name"]: (c["tp"], c["dp"]) for c in p.scenario["clients"]}
    assert pools == {"prefill": (1, 1), "decode": (4, 1)}
    assert [s["kind"] for s in p.scenario["pipelines"][0]["stages"]] == ["prefill", "decode"]
    assert p.scenario["workload"]["arrival"] == {"process": "closed_loop", "concurrency": 4}
    bad = V.plan_row(dict(_DISAGG, num_accel=8))
    assert bad.status == "unsupported" and "adds up to 5" in bad.reason


def test_disagg_row_prediction_is_the_pipeline_simulation(tmp_path):
    """The analytical prediction of a P/D row is the simulation of a prefill pool (1 x TP1) feeding
    a decode pool (1 x TP4) over the node's link, built here by hand (analytical efficiency: {})."""
    rows = [dict(_DISAGG, id="tput"), dict(_DISAGG, id="tpot", metric="tpot_ms", value=5.0),
            dict(_DISAGG, id="per_gpu", metric="output_tok_s_per_gpu", value=20.0)]
    csv = tmp_path / "m.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    rep = V.validate(csv, tmp_path / "out", calibration="none", plot=False).set_index("id")
    assert set(rep.status) == {"ok"} and set(rep.prediction_kind) == {"closed loop, disaggregated P/D"}
    ds = _disagg_reference_run(num_requests=100)
    assert rep.loc["tput", "predicted"] == pytest.approx(float(ds.output_tok_s), rel=1e-9)
    assert rep.loc["tpot", "predicted"] == pytest.approx(float(ds.tpot_mean_ms), rel=1e-9)
    assert rep.loc["per_gpu", "predicted"] == pytest.approx(float(ds.output_tok_s) / 5, rel=1e-9)


def _disagg_reference_run(num_requests: int = 40):
    """A prefill pool (1 x TP1) feeding a decode pool (1 x TP4) over NVLink4, built by hand as
    validate should build a P/D row of _DISAGG (analytical efficiency: {})."""
    sched = V.offline_scheduler("trtllm-1", make_client("llama-3.1-8b", "H100", tp=1, precision="fp8"), 256, 16)
    sched_d = V.offline_scheduler("trtllm-1", make_client("llama-3.1-8b", "H100", tp=4, precision="fp8"), 256, 16)
    sc = {"clients": [{"name": "P", "model": "llama-3.1-8b", "device": "H100", "tp": 1, "precision": "fp8",
                       "efficiency": {}, "scheduler": sched},
                      {"name": "D", "model": "llama-3.1-8b", "device": "H100", "tp": 4, "precision": "fp8",
                       "efficiency": {}, "scheduler": sched_d}],
          "network": {"default_link": "NVLink4"},
          "pipelines": [{"stages": [{"kind": "prefill", "pool": "P", "routing": "least_prefill_tokens"},
                                    {"kind": "decode", "pool": "D", "routing": "least_kv"}]}],
          "workload": {"num_requests": num_requests, "input": 256, "output": 16,
                       "arrival": {"process": "closed_loop", "concurrency": 4}},
          "simulation": {"horizon_s": 1e7, "seed": 0}}
    return simulate(sc)


def test_disagg_ttft_is_prefill_plus_transfer_plus_decode_admission(tmp_path, monkeypatch):
    """A disaggregated row's TTFT is the pipeline's (its prefill's) TTFT + the KV transfer + the
    wait for the decode client's step boundary + its first decode step: llama-3.1-8b holds
    2 x 32 layers x 8 KV heads x 128 = 65,536 FP8 bytes per token, so 256 tokens cross NVLink4
    (450 GB/s, 1 us) in 256 x 65,536 / 450e9 s + 1 us = 0.0382827 ms; the admission waits half a
    step for the mean and the median (0.99 of one for the p99), then one step (the run's mean
    TPOT). The E2E row and the non-TTFT rows are the simulation's as before."""
    rows = [dict(_DISAGG, id="ttft", metric="ttft_ms", value=50.0),
            dict(_DISAGG, id="p50", metric="ttft_p50_ms", value=50.0),
            dict(_DISAGG, id="p99", metric="ttft_p99_ms", value=50.0),
            dict(_DISAGG, id="e2e", metric="e2e_mean_ms", value=90.0),
            dict(_DISAGG, id="tpot", metric="tpot_ms", value=5.0)]
    csv = tmp_path / "m.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    rep = V.validate(csv, tmp_path / "out", calibration="none", plot=False).set_index("id")
    ds = _disagg_reference_run()
    kv_ms = 256 * 65536 / 450e9 * 1e3 + 1e-3
    assert kv_ms == pytest.approx(0.0382827, rel=1e-5)
    step = float(ds.tpot_mean_ms)
    assert rep.loc["ttft", "predicted"] == pytest.approx(float(ds.ttft_mean_ms) + kv_ms + 1.5 * step, rel=1e-9)
    assert rep.loc["p50", "predicted"] == pytest.approx(float(ds.ttft_p50_ms) + kv_ms + 1.5 * step, rel=1e-9)
    assert rep.loc["p99", "predicted"] == pytest.approx(float(ds.ttft_p99_ms) + kv_ms + 1.99 * step, rel=1e-9)
    assert rep.loc["e2e", "predicted"] == pytest.approx(float(ds.e2e_mean_ms), rel=1e-9)
    assert rep.loc["tpot", "predicted"] == pytest.approx(step, rel=1e-9)
    # switched off: the pipeline's own TTFT (the sessions 1-11 model)
    monkeypatch.setattr(V, "DISAGG_FIRST_TOKEN_FROM_DECODE", False)
    off = V.validate(csv, tmp_path / "off", calibration="none", plot=False).set_index("id")
    assert off.loc["ttft", "predicted"] == pytest.approx(float(ds.ttft_mean_ms), rel=1e-9)


def test_disagg_client_terms_come_from_the_decode_client(monkeypatch):
    """TTFT / E2E rows of a disaggregated closed loop get the decode client's fitted per-request
    overhead (every statistic) and its first-wave delay weighted as for an aggregated closed loop
    of C = 4 users and N = 40 prompts: C/N = 0.1 of it for the mean, all of it for the p99
    (0.99 x 39 = 38.61 lies above the N - C - 1 = 35 requests of the later waves), none for the
    median; other metrics get neither, and a row without a P/D layout gets nothing."""
    from types import SimpleNamespace
    monkeypatch.setattr(V, "DISAGG_FIRST_WAVE_ON", True)
    dec = SimpleNamespace(efficiency=SimpleNamespace(ttft_overhead_ms=7.0, first_wave_ms=100.0))
    mean = V.plan_row(dict(_DISAGG, metric="ttft_ms"))
    assert (mean.n_requests_sim, mean.concurrency) == (40, 4)
    assert V.disagg_client_terms_ms(mean, dec) == pytest.approx(7.0 + 10.0)
    assert V.disagg_client_terms_ms(V.plan_row(dict(_DISAGG, metric="ttft_p99_ms")), dec) == pytest.approx(107.0)
    assert V.disagg_client_terms_ms(V.plan_row(dict(_DISAGG, metric="ttft_p50_ms")), dec) == pytest.approx(7.0)
    assert V.disagg_client_terms_ms(V.plan_row(dict(_DISAGG, metric="e2e_mean_ms")), dec) == pytest.approx(17.0)
    assert V.disagg_client_terms_ms(V.plan_row(dict(_DISAGG, metric="tpot_ms")), dec) == 0.0
    agg = V.plan_row(dict(_DISAGG, workload="closed loop at max concurrency", metric="ttft_ms", num_accel=4))
    assert agg.status == "ok" and agg.disagg is None
    assert V.disagg_client_terms_ms(agg, dec) == 0.0
    # the default: the per-request overhead only (the first-wave delay measured, off)
    monkeypatch.setattr(V, "DISAGG_FIRST_WAVE_ON", False)
    assert V.disagg_client_terms_ms(V.plan_row(dict(_DISAGG, metric="ttft_p99_ms")), dec) == pytest.approx(7.0)


def test_disagg_switches_leave_aggregated_rows_bit_identical(tmp_path, monkeypatch):
    """The disaggregated-TTFT terms touch pipeline rows only: an aggregated row's predictions are
    the same bits with every switch on or off."""
    rows = [dict(_DISAGG, id=m, metric=m, value=10.0, workload="closed loop at max concurrency", num_accel=4,
                 notes="") for m in ("ttft_ms", "ttft_p99_ms", "e2e_mean_ms", "tpot_ms")]
    csv = tmp_path / "m.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    on = V.validate(csv, tmp_path / "on", calibration="none", plot=False).set_index("id")
    for name in ("DISAGG_FIRST_TOKEN_FROM_DECODE", "DISAGG_CLIENT_OVERHEAD_ON", "DISAGG_FIRST_WAVE_ON"):
        monkeypatch.setattr(V, name, False)
    off = V.validate(csv, tmp_path / "off", calibration="none", plot=False).set_index("id")
    assert set(on.status) == {"ok"}
    assert list(on.predicted) == list(off.predicted)


def test_mlperf_mixture_row_is_planned_with_the_mixture():
    row = dict(id="mx", source="github:mlcommons/inference_results_v5.1@9:x", engine="vLLM", engine_version="0.9",
               model="mistralai/Mixtral-8x7B-Instruct-v0.1", precision="FP8", hardware="MI300X", num_accel=8, tp=1,
               pp=1, workload="MLPerf Inference v5.1 Offline: mix of OpenOrca, GSM8K and MBXP", isl="", osl="",
               batch_or_concurrency="engine-chosen (max load)", request_rate="offline (all queries at t=0)",
               metric="output_tok_s", value=50000.0, notes="", dataset="mlperf_mixtral_mix", engine_family="vllm")
    p = V.plan_row(row)
    assert p.status == "ok", p.reason
    assert p.dataset == "mlperf-mixtral-8x7b" and p.dp == 8
    from mistfast import datasets as D
    st = D.dataset_stats("mlperf-mixtral-8x7b")
    assert (p.isl, p.osl) == (round(st["input_mean"]), round(st["output_mean"]))
    assert p.scenario["workload"]["dataset"] == {"name": "mlperf-mixtral-8x7b"}


def test_engine_limits_from_the_submitters_config():
    """MLPerf rows carry the engine's own batch limits (from the submitter's config) in notes;
    attention DP multiplies the per-rank limits by the ranks; a token budget caps the batch."""
    n = "x; engine limits from that config: max batch 600, max num tokens 40960; summary"
    assert V.engine_limits_from_notes(n, 8) == {"max_batch_size": 600, "max_batched_tokens": 40960, "chunk_size": 40960}
    n = "engine limits from that config: max batch 512, max num tokens 3456 per rank (attention DP over the tp ranks)"
    assert V.engine_limits_from_notes(n, 8) == {"max_batch_size": 4096, "max_batched_tokens": 27648,
                                                "chunk_size": 27648}
    n = "engine limits from that config: max batch 2048, max num tokens 1536"
    assert V.engine_limits_from_notes(n, 1)["max_batch_size"] == 1536
    assert V.engine_limits_from_notes("no limits here", 8) == {}


def test_build_public_reads_engine_limits_from_configs():
    import importlib.util
    spec = importlib.util.spec_from_file_location("build_public", Path(__file__).parents[1] / "data" / "measurements"
                                                  / "build_public.py")
    bp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bp)
    trt = ("llm_fields.trtllm_runtime_flags: {\n 'max_num_tokens': 4608,\n 'enable_attention_dp': True,\n},\n"
           "llm_fields.trtllm_build_flags: {'max_num_tokens': 4608},\n"
           "model_fields.gpu_batch_size: {\n    'deepseek-r1': 512,\n},\n")
    assert bp.mlperf_engine_limits(trt, "trtllm-1") == ("engine limits from that config: max batch 512, max num "
                                                         "tokens 4608 per rank (attention DP over the tp ranks)")
    amd = "model: x\nvllm_engine_config:\n  tensor_parallel_size: 1\n  max_num_seqs: 1792\n  max_num_batched_tokens: 40960\n"
    assert bp.mlperf_engine_limits(amd, "vllm") == "engine limits from that config: max batch 1792, max num tokens 40960"
    two = "gpu_batch_size: {'a': 1, 'b': 2}"   # ambiguous: left out
    assert bp.mlperf_engine_limits(two, "trtllm-1") == ""


def test_rows_on_estimated_length_datasets_are_not_fitted():
    """MLPerf deepseek-r1 / llama3.1-405b / mixtral rows rest on estimated input lengths: predicted,
    never used to fit efficiencies; published-length datasets are fitted as before."""
    base = dict(id="e", source="s", engine="vLLM", engine_version="0.9", model="meta-llama/Llama-3.1-8B-Instruct",
                precision="FP8", hardware="H100", num_accel=1, tp=1, pp=1, workload="offline", isl="", osl="",
                batch_or_concurrency="", request_rate="offline", metric="output_tok_s", value=1000.0, notes="")
    for name, estimated in (("mlperf_llama3.1-405b_mix", True), ("mlperf_deepseek_r1_mix", True),
                            ("mlperf_mixtral_mix", True), ("cnn_dailymail", False), ("sharegpt", False)):
        p = V.plan_row(dict(base, dataset=name))
        assert p.status == "ok", p.reason
        assert V._estimated_lengths(p) is estimated, name
    assert V._estimated_lengths(V.plan_row(dict(base, isl=128, osl=128))) is False
