"""Row settings that decide the out-of-sample error of the worst sources (issue 10, task G):
vLLM multi-step scheduling (ITL per streamed chunk, admission wait), stated request counts
(SGLang --num-prompts, MLPerf samples_per_query / generated_query_count), and measurements the
step model cannot express (predicted, listed with the reason, neither fitted nor counted)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd
import pytest

from mistfast import validate as V

ROOT = Path(__file__).parents[1]
PUBLIC = ROOT / "data" / "measurements" / "public.csv"

_VLLM060 = dict(
    id="v", source="github:sgl-project/sglang@1:benchmark/benchmark_vllm_060/README.md",
    engine="vLLM (OpenAI api_server, --num-scheduler-steps 10)", engine_version="0.6.0",
    model="meta-llama/Llama-3.1-8B-Instruct", precision="BF16", hardware="A100-80GB", num_accel=1, tp=1, pp=1,
    workload="online serving, Poisson arrivals, ShareGPT prompts (sglang.bench_serving --dataset-name sharegpt "
             "--num-prompts 1200 --request-rate 4)",
    isl="", osl="", batch_or_concurrency="unbounded (open loop)", request_rate="4", metric="itl_p50_ms",
    value=129.32, notes="server flags: --num-scheduler-steps 10 --max_model_len 4096", dataset="sharegpt",
    engine_family="vllm")

# a run summary with round numbers, so every expected value below is hand arithmetic
_SUMMARY = {"tpot_p50_ms": 14.0, "tpot_mean_ms": 15.0, "tpot_p99_ms": 20.0, "ttft_p50_ms": 30.0,
            "ttft_mean_ms": 32.0, "ttft_p99_ms": 60.0, "e2e_p50_ms": 1000.0, "e2e_mean_ms": 1100.0}


def test_multi_step_scheduling_streams_chunks_and_delays_admission():
    """vLLM 0.6 --num-scheduler-steps 10: a chunk of 10 tokens every 10 steps (ITL = 10 x TPOT);
    a new request waits for the running group of 10 steps to end (uniform: mean 5 steps)."""
    expect = {"itl_p50_ms": 10 * 14.0,              # ten tokens per chunk
              "tpot_p50_ms": 14.0,                  # TPOT is per token: unchanged
              "ttft_p50_ms": 30.0 + 0.5 * 10 * 15.0,   # median of a uniform 0..10-step wait
              "ttft_p99_ms": 60.0 + 0.99 * 10 * 15.0,
              "e2e_p50_ms": 1000.0 + 0.5 * 10 * 15.0}
    for metric, value in expect.items():
        p = V.plan_row(dict(_VLLM060, metric=metric))
        assert p.status == "ok", p.reason
        assert V.plan_value(p, _SUMMARY) == pytest.approx(value, rel=1e-12), metric
    single = dict(_VLLM060, engine="SGLang (sglang.launch_server)", notes="server flags: --disable-radix-cache",
                  engine_family="sglang")
    for metric in ("itl_p50_ms", "ttft_p50_ms"):
        p = V.plan_row(dict(single, metric=metric))
        assert (p.tokens_per_chunk, p.scheduler_steps) == (1, 1)
        assert V.plan_value(p, _SUMMARY) == _SUMMARY[p.value_key]


def test_stated_request_counts_are_simulated():
    p = V.plan_row(_VLLM060)   # --num-prompts 1200 at 4 req/s (was max(4 x 120, 500) = 500)
    assert (p.workload_kind, p.n_requests_sim) == ("poisson", 1200)
    mlperf = dict(_VLLM060, engine="TensorRT-LLM (NVIDIA MLPerf harness)", engine_version="1.0",
                  model="deepseek-ai/DeepSeek-R1", precision="NVFP4", hardware="GB200", num_accel=72, tp=8,
                  dataset="mlperf_deepseek_r1_mix", engine_family="trtllm-1", metric="output_tok_s", notes="",
                  batch_or_concurrency="engine-chosen (max load)", request_rate="offline (all queries at t=0)",
                  workload="MLPerf Inference v5.1 Offline: mix, all 26328 queries (samples_per_query) issued at t=0")
    p = V.plan_row(mlperf)
    assert p.status == "ok", p.reason
    # 72 GPUs / tp 8 = 9 replicas; the stated count is the endpoint's, so ceil(26328 / 9) per replica
    assert (p.dp, p.workload_kind) == (9, "offline")
    assert p.scenario["workload"]["num_requests"] == 2926 * 9
    server = dict(mlperf, request_rate="3.8", batch_or_concurrency="open loop (Poisson)",
                  workload="MLPerf Inference v5.1 Server: mix, Poisson arrivals at target_qps, "
                           "26328 queries (generated_query_count), p99 TTFT <= 2000 ms")
    assert V.plan_row(server).n_requests_sim == 26328   # a Poisson count is global
    big = dict(server, workload=server["workload"].replace("26328", "210624"))
    # longer than the cap: one of the 9 replicas at 3.8 / 9 req/s, ceil(210624 / 9) = 23403 requests
    # (loadgen_steady_state; test_loadgen_server_runs_are_simulated_in_steady_state)
    assert V.plan_row(big).n_requests_sim == 23403
    unstated = dict(server, workload="MLPerf Inference v5.1 Server: mix, Poisson arrivals at target_qps")
    assert V.plan_row(unstated).n_requests_sim == 500   # max(3.8 x 120, 500), as before


def test_rows_marked_not_expressible_are_predicted_but_not_counted(tmp_path):
    base = dict(_VLLM060, workload="online serving, closed loop at fixed max concurrency", dataset="",
                engine="vLLM", engine_family="vllm", notes="", isl=512, osl=128, batch_or_concurrency=4,
                request_rate="inf (closed loop)", metric="output_tok_s", value=1000.0)
    rows = [dict(base, id="ok1"),
            dict(base, id="ex1", notes="runs by someone; validate-excluded: a first-release build; other")]
    csv = tmp_path / "m.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    rep = V.validate(csv, tmp_path / "out", calibration="none", plot=False).set_index("id")
    assert rep.loc["ok1", "status"] == "ok"
    assert rep.loc["ex1", "status"] == "excluded"
    assert rep.loc["ex1", "reason"].endswith("excluded from fitting and statistics: a first-release build")
    # same scenario, so the same prediction: it is simulated, only kept out of the statistics
    assert rep.loc["ex1", "predicted"] == rep.loc["ok1", "predicted"] > 0
    md = (tmp_path / "out" / "report.md").read_text()
    assert "1 in the statistics" in md and "1 excluded" in md and "a first-release build" in md


def test_public_rows_carry_the_settings_the_validation_reads():
    d = pd.read_csv(PUBLIC, dtype=str, keep_default_na=False)
    mlperf = d[d.source.str.contains("inference_results_v5.1")]
    counts = mlperf.workload.str.extract(r"(\d+) queries \((samples_per_query|generated_query_count)\)")
    assert counts[0].notna().all()
    offline = mlperf.request_rate.str.startswith("offline")
    assert (counts[1][offline] == "samples_per_query").all() and (counts[1][~offline] == "generated_query_count").all()
    # every exclusion is deliberate: the SGLang v0.4.1 DeepSeek-V3 rows, and the MLPerf latencies
    # measured at >= 90 % of their system's Offline throughput, each with its reason
    excluded = d.notes.str.contains("validate-excluded:")
    dsv3 = d.source.str.endswith("benchmark/benchmark_dsv3/README.md")
    assert (excluded & dsv3).sum() == 40
    # (and the GPUStack engines 3x or more below the fastest engine of their page: tests/test_second_publisher.py)
    outlier = excluded & d.notes.str.contains("immature code path") & d.source.str.startswith("github:gpustack/")
    assert outlier.sum() == 45
    saturated = excluded & ~dsv3 & ~outlier
    assert saturated.sum() == 200 and mlperf.index.isin(d[saturated].index).sum() == 200
    loads = d[saturated].notes.str.extract(r"measured load: \w+ output tokens/s = ([0-9.]+) x")[0].astype(float)
    assert (loads >= 0.9).all() and d[saturated].metric.str.match("ttft|tpot|e2e").all()
    # the vLLM 0.6.0 rows of the SGLang comparison ran multi-step scheduling with 10 steps
    v060 = d[d.engine_version.str.startswith("0.6.0")]
    assert len(v060) == 20 and all(V.num_scheduler_steps(e + " " + n) == 10 for e, n in zip(v060.engine, v060.notes))


def test_build_public_reads_the_query_count():
    spec = importlib.util.spec_from_file_location("build_public", ROOT / "data" / "measurements" / "build_public.py")
    bp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bp)
    text = ("Scenario : Offline\nSamples per second: 8.35339\nTokens per second: 30493.3\nResult is : VALID\n"
            "samples_per_query : 26328\ntarget_qps : 10\n")
    stats = bp.parse_mlperf_summary(text)
    assert stats["samples_per_query"] == 26328 and stats["tokens_s"] == 30493.3 and stats["result"] == "VALID"


def test_mlperf_llama31_8b_rows_use_the_benchmarks_own_lengths():
    """Every MLPerf llama3.1-8b result generates 128 tokens per sample (tokens/s over samples/s in
    the source's own summaries); the GPT-J CNN-DailyMail lengths (mean ~75 new tokens) do not apply."""
    from mistfast import datasets as D
    d = pd.read_csv(PUBLIC)
    rows = d[d.model == "meta-llama/Llama-3.1-8B-Instruct"]
    rows = rows[rows.source.str.contains("inference_results_v5.1")]
    assert set(rows.dataset) == {"mlperf_llama3.1-8b_cnndm"}
    per = rows.pivot_table(index="source", columns="metric", values="value", aggfunc="first")
    per_sample = (per.output_tok_s / per.requests_s).dropna()
    assert len(per_sample) >= 30 and per_sample.between(127.5, 129.5).all()
    assert D.dataset_stats("mlperf_llama3.1-8b_cnndm")["output_mean"] == 128


# NVIDIA's B200 llama2-70b Server result (inference_results_v5.1 closed/NVIDIA/results/
# B200-SXM-180GBx8_TRT/llama2-70b-99/Server): target_qps 364, min_duration 2,400,000 ms,
# 884,736 queries issued (mlperf_log_detail.txt generated_query_count = 36 x 24,576 samples)
_B200_SERVER = dict(
    id="s", source="github:mlcommons/inference_results_v5.1@9:closed/NVIDIA/results/B200/llama2-70b-99/Server",
    engine="TensorRT-LLM (NVIDIA MLPerf harness)", engine_version="1.0-mlpinf", model="meta-llama/Llama-2-70b-chat-hf",
    precision="NVFP4", hardware="B200", num_accel=8, tp=1, pp=1,
    workload="MLPerf Inference v5.1 Server: MLPerf llama2-70b OpenOrca subset (24,576 samples), Poisson arrivals at "
             "target_qps, 884736 queries (generated_query_count), p99 TTFT <= 2000 ms, p99 TPOT <= 200 ms",
    isl="", osl="", batch_or_concurrency="open loop (Poisson)", request_rate="364", metric="tpot_ms", value=123.32,
    notes="replicas = 8 / (tp x pp) = 8; engine limits from that config: max batch 2048, max num tokens 3584",
    dataset="openorca", engine_family="trtllm-1")


def test_loadgen_server_runs_are_simulated_in_steady_state():
    """LoadGen issued 884,736 queries over 2,430 s; 30,000 at 364 req/s would cover 82 s, most of it
    the ramp from an empty engine. One of the 8 replicas at 364 / 8 = 45.5 req/s: min(884736 / 8 =
    110592, 30000) = 30000 requests over 30000 / 45.5 = 659.3 s, the first 10 % (65.93 s) left out;
    rates x 8."""
    assert V.loadgen_steady_state(30_000, 364.0, 8) is None        # the whole run fits: simulated as issued
    st = V.loadgen_steady_state(884_736, 364.0, 8)
    assert (st.replicas_simulated, st.rate_rps, st.num_requests) == (1, 45.5, 30_000)
    assert st.warmup_s == pytest.approx(0.1 * 30_000 / 45.5)
    p = V.plan_row(_B200_SERVER)
    assert p.status == "ok", p.reason
    assert (p.workload_kind, p.dp, p.replica_scale, p.n_requests_sim) == ("poisson, steady state", 8, 8, 30_000)
    wl, client = p.scenario["workload"], p.scenario["clients"][0]
    assert wl["arrival"] == {"process": "poisson", "rate_rps": 45.5} and wl["num_requests"] == 30_000
    assert client["dp"] == 1 and client["scheduler"]["max_batch_size"] == 2048
    assert p.scenario["simulation"]["warmup_s"] == pytest.approx(65.934, abs=1e-3)
    # the replica's rates are the system's / 8; latencies are per request, unscaled
    summ = {"output_tok_s": 12_000.0, "request_throughput_rps": 45.0, "tpot_mean_ms": 120.0}
    tok = V.plan_row(dict(_B200_SERVER, metric="output_tok_s", value=99123.04))
    rps = V.plan_row(dict(_B200_SERVER, metric="requests_s", value=361.3))
    assert V.plan_value(tok, summ) == 96_000.0 and V.plan_value(rps, summ) == 360.0
    assert V.plan_value(p, summ) == 120.0
    # a single-replica system (tp 8 on 8 GPUs) keeps its rate; only the warm-up is added
    one = V.plan_row(dict(_B200_SERVER, tp=8))
    assert (one.replica_scale, one.n_requests_sim, one.scenario["clients"][0]["dp"]) == (1, 30_000, 1)
    assert one.scenario["workload"]["arrival"]["rate_rps"] == 364.0
    assert one.scenario["simulation"]["warmup_s"] == pytest.approx(0.1 * 30_000 / 364.0)


def _build_public():
    spec = importlib.util.spec_from_file_location("build_public", ROOT / "data" / "measurements" / "build_public.py")
    bp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bp)
    return bp


def test_mlperf_latency_at_capacity_is_excluded_with_its_load():
    """Server 95 / Offline 100 tok/s: load 0.95, latency rows excluded (a capacity error e moves the
    latency by ~0.95 / 0.05 = 19 e); Interactive 50 / 100 = 0.5 stays counted; throughput rows stay."""
    bp = _build_public()
    src = "github:mlcommons/inference_results_v5.1@c:closed/Sub/results/SYS/llama2-70b-99/{}/performance/run_1/s.txt"
    other = "github:mlcommons/inference_results_v5.1@c:closed/Sub/results/OTHER/llama2-70b-99/Server/p/s.txt"

    def row(scen, metric, value, source=None):
        return dict(source=source or src.format(scen), model="m", metric=metric, value=str(value), notes="n",
                    workload=f"MLPerf Inference v5.1 {scen}: x")
    rows = pd.DataFrame([row("Offline", "output_tok_s", 100), row("Server", "output_tok_s", 95),
                         row("Server", "tpot_ms", 120), row("Interactive", "output_tok_s", 50),
                         row("Interactive", "ttft_ms", 60), row("Server", "tpot_ms", 5, source=other)])
    out = bp.mlperf_measured_load(rows)
    n = list(out.notes)
    assert "measured load: Server output tokens/s = 0.950 x the same system's Offline output tokens/s (95 / 100)" in n[1]
    assert "validate-excluded:" not in n[1]            # the throughput of the run is counted
    assert "validate-excluded: latency at 95.0 % of" in n[2] and "by ~19 e" in n[2]
    assert "= 0.500 x" in n[4] and "validate-excluded" not in n[4]
    assert n[0] == "n" and n[5] == "n"                 # no Offline result of its own system: unchanged
    assert list(bp.mlperf_measured_load(out).notes) == n   # idempotent
