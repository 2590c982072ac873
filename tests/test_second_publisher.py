"""Measurements of publishers other than InferenceMAX with low- and medium-load latency (issue 10,
calibration breadth): the SGLang H200 runs of github:datacrunch-research/h200-benchmarks (importer
data/measurements/import_datacrunch.py) and the NVIDIA NIM benchmarking page (hand-typed,
rows_nim_docs.csv). Expected values are read off the sources by hand."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pandas as pd
import pytest

from mistfast import validate as V

ROOT = Path(__file__).parents[1]
PUBLIC = ROOT / "data" / "measurements" / "public.csv"
DATACRUNCH = "github:datacrunch-research/h200-benchmarks"
NIM = "https://docs.nvidia.com/nim/benchmarking/llm/1.0.0/performance.md"


def _importer():
    spec = importlib.util.spec_from_file_location(
        "import_datacrunch", ROOT / "data" / "measurements" / "import_datacrunch.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def public():
    return pd.read_csv(PUBLIC, dtype=str, keep_default_na=False)


def _result(rate, n, dataset="random", isl=1024, osl=1024, tput=100.0, duration=200.0):
    return {"backend": "sglang", "dataset_name": dataset, "request_rate": rate, "max_concurrency": None,
            "total_input_tokens": 500 * n, "total_output_tokens": 520 * n, "mean_e2e_latency_ms": 9000.0,
            "median_e2e_latency_ms": 8000.0, "median_ttft_ms": 80.0, "median_itl_ms": 14.0,
            "output_throughput": tput, "random_input_len": isl, "random_output_len": osl,
            "random_range_ratio": 0.0, "duration": duration, "completed": n}


def _texts(results, commands, set_index=0):
    mod = _importer()
    result_file, script, *_ = mod.RUN_SETS[set_index]
    texts = {p: "" for r in mod.RUN_SETS for p in r[:2]}
    texts[result_file] = "\n".join(json.dumps(r) for r in results)
    texts[script] = "\n".join(f"python3 -m sglang.bench_serving --backend sglang {c} --output-file "
                              f"{Path(result_file).name}" for c in commands)
    return mod, texts


def test_importer_pairs_results_with_commands_and_derives_by_hand():
    mod, texts = _texts([_result(1.0, 300, duration=300.0), _result(4.0, 1200, dataset="sharegpt", duration=240.0)],
                        ["--dataset-name random --num-prompt 300 --request-rate 1 --random-input 1024 --random-output 1024",
                         "--dataset-name sharegpt --num-prompts 1200 --request-rate 4"])
    rows = mod.rows_from_texts(texts, "c0ffee")
    assert len(rows) == 2 * len(mod.METRICS)
    first = rows[rows.request_rate == "1"].set_index("metric")
    assert first.loc["requests_s", "value"] == pytest.approx(300 / 300.0)      # completed / duration
    assert first.loc["ttft_p50_ms", "value"] == 80.0 and first.loc["itl_p50_ms", "value"] == 14.0
    assert (first.loc["output_tok_s", "isl"], first.loc["output_tok_s", "osl"]) == (500, 520)   # realised means
    assert "--num-prompt 300" in first.loc["output_tok_s", "workload"]
    share = rows[rows.request_rate == "4"].set_index("metric")
    assert share.loc["requests_s", "value"] == pytest.approx(1200 / 240.0)
    assert share.loc["output_tok_s", "dataset"] == "sharegpt" and share.loc["output_tok_s", "isl"] == ""
    assert set(rows.source) == {f"{DATACRUNCH}@c0ffee:{mod.RUN_SETS[0][0]}"}


def test_importer_keeps_the_upper_median_of_a_repeated_command():
    inf = float("inf")
    cmd = "--dataset-name random --num-prompt 1500 --random-input 4096 --random-output 1024"
    mod, texts = _texts([_result(inf, 1500, isl=4096, tput=1654.99), _result(inf, 1500, isl=4096, tput=1652.86)],
                        [cmd], set_index=1)
    rows = mod.rows_from_texts(texts, "c")
    assert len(rows) == len(mod.METRICS)
    tput = rows.set_index("metric").loc["output_tok_s"]
    assert tput.value == 1654.99 and "1652.9/1655.0" in tput.notes


def test_importer_refuses_a_result_that_does_not_match_its_command():
    mod, texts = _texts([_result(2.0, 300)], ["--dataset-name random --num-prompt 300 --request-rate 1 "
                                              "--random-input 1024 --random-output 1024"])
    with pytest.raises(ValueError, match="rate 1 vs 2.0"):
        mod.rows_from_texts(texts, "c")


def test_public_file_holds_the_datacrunch_runs_as_published(public):
    dc = public[public.source.str.startswith(DATACRUNCH)]
    # 7 online + 6 distinct offline 70B runs (one command ran twice), 6 online 405B runs; 6 metrics each
    assert len(dc) == (7 + 6 + 6) * 6
    def value(model, rate, metric, workload_has=""):
        hit = dc[(dc.model == model) & (dc.request_rate == rate) & (dc.metric == metric)
                 & dc.workload.str.contains(workload_has, regex=False)]
        assert len(hit) == 1, (model, rate, metric, len(hit))
        return float(hit.value.iloc[0])
    m70, m405 = "meta-llama/Llama-3.3-70B-Instruct", "meta-llama/Llama-3.1-405B-Instruct"
    # sglang/outputs/llama_3_3_70b_online_output.jsonl, first line (request_rate 1.0)
    assert value(m70, "1", "output_tok_s", "random") == pytest.approx(537.4142851849319, abs=1e-4)
    assert value(m70, "1", "ttft_p50_ms", "random") == pytest.approx(85.74514742940664, abs=1e-4)
    assert value(m70, "1", "requests_s", "random") == pytest.approx(300 / 298.3675805060193, abs=1e-4)
    # llama_405b_online_output.jsonl, request_rate 8.0 random: median TTFT 123,718.63 ms (overloaded)
    assert value(m405, "8", "ttft_p50_ms", "random") == pytest.approx(123718.63, abs=0.01)
    # the ShareGPT run at 4 req/s on 70B: median ITL 13.84 ms
    assert value(m70, "4", "itl_p50_ms", "ShareGPT") == pytest.approx(13.84, abs=0.01)
    assert set(dc.hardware) == {"H200-141GB"} and set(dc.engine_family) == {"sglang"}


def test_public_file_holds_the_nim_table_as_published(public):
    nim = public[public.source == NIM]
    assert len(nim) == 8 * 3 + 3 + 1
    t = nim[nim.isl == "5000"].pivot(index="batch_or_concurrency", columns="metric", values="value").astype(float)
    # 'Version: 1.8.0', '2 x H100 80G', 'fp8 TP2', '5000 Input Tokens / 500 Output Tokens'
    assert t.loc["1"].to_dict() == {"ttft_ms": 406.77, "itl_ms": 18.58, "output_tok_s": 51.67}
    assert t.loc["250"].to_dict() == {"ttft_ms": 88605.32, "itl_ms": 93.2, "output_tok_s": 920.12}
    # an invariant of a closed loop at concurrency 1: output tok/s = OSL / (TTFT + (OSL - 1) x ITL)
    assert 500 / (0.40677 + 499 * 0.01858) == pytest.approx(t.loc["1", "output_tok_s"], rel=0.01)
    assert set(nim.engine_family) == {"trtllm-0"} and set(nim.tp) == {"2"}


def test_new_publishers_are_their_own_leave_one_source_out_folds(public):
    old = public[public.id.str[1:].astype(int) <= 5552]
    old_folds = {V.source_document(s) for s in old.source}
    assert V.source_document(f"{DATACRUNCH}@c:sglang/outputs/x.jsonl") == DATACRUNCH
    assert V.source_document(NIM) == "https://docs.nvidia.com"
    assert DATACRUNCH not in old_folds and "https://docs.nvidia.com" not in old_folds


def test_every_new_row_is_representable(public):
    new = public[public.source.str.startswith(DATACRUNCH) | (public.source == NIM)]
    plans = [V.plan_row(r) for r in new.to_dict("records")]
    bad = [(p.id, p.reason) for p in plans if p.status != "ok"]
    assert not bad, bad[:3]
    kinds = {p.workload_kind for p in plans}
    assert kinds == {"poisson", "offline", "closed loop"}
    # the NIM rows at concurrency 1 and 5 are low-load TTFT rows the efficiency fit re-costs
    low = [p for p in plans if V.low_load_ttft(p)]
    assert sorted(p.concurrency for p in low) == [1, 1, 5, 5]


# ---- GPUStack performance lab (github:gpustack/gpustack, docs/performance-lab) ------------------------
GPUSTACK = "github:gpustack/gpustack"


def _gpustack():
    spec = importlib.util.spec_from_file_location(
        "import_gpustack", ROOT / "data" / "measurements" / "import_gpustack.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _summary(n, inp, out, tput, ttft, conc=None):
    lines = ["============ Serving Benchmark Result ============", f"Successful requests:    {n}"]
    if conc:
        lines.append(f"Maximum request concurrency:   {conc}")
    lines += [f"Benchmark duration (s):   10.00", f"Total input tokens:   {inp}", f"Total generated tokens:   {out}",
              f"Request throughput (req/s):   {n / 10:.2f}", f"Output token throughput (tok/s):   {tput}",
              f"Mean TTFT (ms):   {ttft}", f"Median TTFT (ms):   {ttft - 1}", f"P99 TTFT (ms):   {ttft + 50}",
              f"Mean TPOT (ms):   7.5", f"Median TPOT (ms):   7.4", f"P99 TPOT (ms):   9.0",
              f"Median ITL (ms):   7.3", "=================================================="]
    return "\n".join("    " + ln for ln in lines)


_PAGE = """# Optimizing X
## Experimental Setup
### Model
Qwen/Qwen3-8B
### Hardware
A single NVIDIA H100 SXM GPU.
### Engine Version
- vLLM: v0.11.0
- SGLang: v0.5.3.post3
### Benchmark Dataset
1. ShareGPT
2. Random dataset with varying sequence lengths:
    - Long prompt: 4000 input tokens, 200 output tokens
### Benchmark Script
```bash
vllm bench serve --model Qwen/Qwen3-8B --dataset-name sharegpt --num-prompts 100 --max-concurrency 4
```
## Experiment Results
### 1. Engines
??? info "Serving script"
    ```bash
    vllm serve Qwen/Qwen3-8B
    ```
??? info "Benchmark result"
    ```
{a}
    ```
??? info "Serving script"
    ```bash
    python3 -m sglang.launch_server --model-path Qwen/Qwen3-8B --max-running-requests 64 --chunked-prefill-size 4096
    ```
??? info "Benchmark result"
    ```
    # --chunked-prefill-size 8192
{b}
    ```
??? info "Serving script"
    ```bash
    python3 -m sglang.launch_server --model-path Qwen/Qwen3-8B --speculative-algorithm EAGLE3
    ```
??? info "Benchmark result"
    ```
{c}
    ```
### Other Benchmark Cases
??? info "Baseline serving script"
    ```bash
    vllm serve Qwen/Qwen3-8B
    ```
??? info "Baseline benchmark results"
    ```
    # random 4K input
{d}
    # BS=4
{a}
    ```
"""


def test_gpustack_page_is_read_by_hand():
    g = _gpustack()
    page = _PAGE.format(a=_summary(100, 23260, 22061, 496.88, 64.0, conc=4),
                        b=_summary(100, 23260, 22061, 525.59, 27.7, conc=4),
                        c=_summary(100, 23260, 22061, 979.24, 50.7, conc=4),
                        d=_summary(500, 1999249, 99000, 3000.0, 900.0))
    rows = g.rows_from_pages({"docs/performance-lab/x/h100.md": page}, "abc")
    runs = rows.drop_duplicates(["engine", "workload"])
    # vLLM baseline at 4 users, SGLang with the labelled chunk budget, the random 4K case; the EAGLE3
    # run is speculative (left out) and the repeated 'BS=4' summary is the baseline again
    assert len(runs) == 3 and len(rows) == 3 * len(g.METRICS)
    base = rows[(rows.engine == "vLLM (vllm serve; default flags)") & (rows.batch_or_concurrency == 4)]
    assert base.set_index("metric").value.to_dict()["ttft_ms"] == 64.0
    assert set(base.dataset) == {"sharegpt"} and set(base.hardware) == {"H100-SXM-80GB"}
    assert set(base.engine_version) == {"v0.11.0"} and set(base.engine_family) == {"vllm"}
    sg = rows[rows.engine_family == "sglang"].iloc[0]
    assert "--chunked-prefill-size 8192" in sg.engine and "4096" not in sg.engine   # the label wins
    assert "engine limits from that config: max batch 64, max num tokens 8192" in sg.notes
    rnd = rows[rows.isl == 4000].set_index("metric")
    # 1,999,249 input tokens / 500 prompts = 3998.5: the 4000-token case; osl = 99,000 / 500 = 198
    assert (rnd.loc["ttft_ms", "osl"], rnd.loc["ttft_ms", "batch_or_concurrency"]) == (198, "unbounded (all at once)")
    assert "offline: all 500 prompts" in rnd.loc["ttft_ms", "workload"]


def test_public_file_holds_the_gpustack_results_as_published(public):
    gs = public[public.source.str.startswith(GPUSTACK)]
    assert len(gs) == 1539
    lat = gs[gs.source.str.endswith("qwen3-8b/h100-latency.md") & (gs.engine == "vLLM (vllm serve; default flags)")
             & (gs.batch_or_concurrency == "4")].set_index("metric").value.astype(float)
    # the page's first vLLM summary: 100 requests at max concurrency 4, mean TTFT 64.00 ms, median 60.26,
    # mean TPOT 7.38 ms, 496.88 output tok/s
    assert lat.to_dict() == {"output_tok_s": 496.88, "requests_s": 2.25, "ttft_ms": 64.0, "ttft_p50_ms": 60.26,
                             "ttft_p99_ms": 98.59, "tpot_ms": 7.38, "tpot_p50_ms": 7.4, "tpot_p99_ms": 7.96,
                             "itl_p50_ms": 7.37}
    off = gs[gs.source.str.endswith("gpt-oss-20b/h100.md") & (gs.engine == "vLLM (vllm serve; default flags)")
             & (gs.dataset == "sharegpt")].set_index("metric").value.astype(float)
    assert (off["output_tok_s"], off["ttft_ms"], off["tpot_ms"]) == (7817.03, 4881.62, 91.0)
    assert V.source_document(gs.source.iloc[0]) == GPUSTACK
    assert set(gs.engine_family) == {"vllm", "sglang", "trtllm-1"}
    # DeepSeek-R1 'random 128 input': 126,882 input tokens for 1,000 prompts (the tokenizer loses a
    # token or two of a random prompt) is the 128/4 case by its label, not a ShareGPT run
    ds = gs[gs.source.str.endswith("deepseek-r1/h200.md") & gs.workload.str.contains("1000 prompts")
            & gs.notes.str.contains("126882 input")]
    assert len(ds) and set(ds.isl) == {"128"} and set(ds.dataset) == {""} and set(ds.osl) == {"4"}
    assert (gs[gs.dataset == "sharegpt"].workload.str.contains("ShareGPT")).all()


def test_an_engine_three_times_slower_than_its_page_neighbours_is_excluded_with_the_ratio():
    g = _gpustack()
    def row(fam, v, metric="output_tok_s", dataset="sharegpt", workload="offline: all 1000 prompts"):
        return {"engine_family": fam, "value": v, "metric": metric, "dataset": dataset, "workload": workload,
                "notes": "n"}
    rows = g.mark_engine_outliers([row("vllm", 3765.0), row("sglang", 330.0), row("sglang", 50.0, "ttft_ms"),
                                   row("trtllm-1", 1300.0)])
    # 3765 / 330 = 11.4 > 3: every SGLang row of the page; 3765 / 1300 = 2.9 < 3: TensorRT-LLM kept
    assert "validate-excluded" in rows[1]["notes"] and "(11.4x)" in rows[1]["notes"]
    assert "validate-excluded" in rows[2]["notes"]
    assert rows[0]["notes"] == "n" and rows[3]["notes"] == "n"
    p = V.plan_row({**dict(zip(g.COLUMNS, [""] * len(g.COLUMNS))), "id": "x", "notes": rows[1]["notes"],
                    "source": "github:gpustack/gpustack@c:p.md", "engine": "SGLang (sglang.launch_server)",
                    "engine_version": "v0.5.3", "model": "openai/gpt-oss-120b", "precision": "MXFP4",
                    "hardware": "A100-SXM-80GB", "num_accel": 1, "tp": 1, "pp": 1, "dataset": "sharegpt",
                    "workload": "offline: all 1000 prompts sent at t=0 (--num-prompts 1000)",
                    "batch_or_concurrency": "unbounded (all at once)", "request_rate": "inf (offline, all at t=0)",
                    "metric": "output_tok_s", "value": 330.0, "engine_family": "sglang"})
    assert p.status == "excluded" and "immature code path" in p.reason
