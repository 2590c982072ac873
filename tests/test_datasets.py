"""Named benchmark datasets (mistfast.datasets): each dataset's statistics against its source,
name resolution, use in scenarios and validate rows, determinism.

Expected values are the published numbers (written out here with their sources, and the
``[[published]]`` blocks of data/datasets/*.toml), closed-form moments of the fitted
distributions, or the raw Azure 2023 traces in ../shared (skipped without them).
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest

from mistfast import datasets as D
from mistfast import workload as W
from mistfast.scenario import build_requests, point_seed
from mistfast.specs import SpecError, parse_scenario


def _shared_traces() -> Path | None:
    env = os.environ.get("MISTFAST_SHARED")
    cand = Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared"
    p = cand / "traces"
    return p if (p / "AzureLLMInferenceTrace_conv.csv").exists() else None


# ---------------------------------------------------------------------------- published numbers
# (dataset, statistic, published value, relative tolerance, source)
PUBLISHED = [
    ("sharegpt", "input_mean", 215.196, 0.02, "vLLM bench sharegpt, 1000 prompts, Llama-3.1 tokenizer: 215,196 input tokens"),
    ("sharegpt", "output_mean", 223.7, 0.03, "281.35 x 215.196 / 270.64 (ignore-eos V3 run, Llama-2 -> Llama-3 tokens)"),
    ("sharegpt-vllm-paper", "input_mean", 161.31, 0.03, "arXiv:2309.06180 Fig. 11a"),
    ("sharegpt-vllm-paper", "output_mean", 337.99, 0.03, "arXiv:2309.06180 Fig. 11a"),
    ("sharegpt", "input_max", 1024, 0.0, "vLLM is_valid_sequence max_prompt_len"),
    ("openorca", "output_mean", 294.45, 0.02, "MLPerf llama2-70b README: tokens per sample 294.45"),
    ("openorca", "input_max", 1024, 0.0, "processorca.py --seqlen_limit=1024"),
    ("cnn-dailymail", "input_max", 1919, 0.0, "MLPerf gpt-j dataset.py max_length=1919"),
    ("cnn-dailymail", "output_min", 30, 0.0, "MLPerf gpt-j min_new_tokens"),
    ("cnn-dailymail", "output_max", 128, 0.0, "MLPerf gpt-j max_new_tokens"),
    ("lmsys-chat-1m", "input_mean", 69.5, 0.03, "arXiv:2309.11998 Table 1"),
    ("lmsys-chat-1m", "output_mean", 214.5, 0.03, "arXiv:2309.11998 Table 1"),
    ("burstgpt", "input_p50", 340, 0.02, "BurstGPT_3 request tokens p50"),
    ("burstgpt", "input_p90", 884, 0.02, "BurstGPT_3 request tokens p90"),
    ("burstgpt", "input_p99", 3482, 0.03, "BurstGPT_3 request tokens p99"),
    ("azure-code-2023", "input_mean", 2048, 0.03, "shared/traces/SOURCES.md"),
    ("azure-code-2023", "input_p50", 1469, 0.03, "shared/traces/SOURCES.md"),
    ("azure-code-2023", "input_p99", 7436, 0.03, "shared/traces/SOURCES.md"),
    ("azure-code-2023", "output_mean", 27.9, 0.05, "shared/traces/SOURCES.md"),
    ("azure-code-2023", "output_p50", 13, 0.08, "shared/traces/SOURCES.md"),
    ("azure-code-2023", "output_p99", 252, 0.05, "shared/traces/SOURCES.md"),
    ("azure-conv-2023", "input_mean", 1155, 0.03, "shared/traces/SOURCES.md"),
    ("azure-conv-2023", "input_p50", 1020, 0.03, "shared/traces/SOURCES.md"),
    ("azure-conv-2023", "input_p99", 4142, 0.03, "shared/traces/SOURCES.md"),
    ("azure-conv-2023", "output_mean", 211, 0.03, "shared/traces/SOURCES.md"),
    ("azure-conv-2023", "output_p50", 129, 0.03, "shared/traces/SOURCES.md"),
    ("azure-conv-2023", "output_p99", 601, 0.03, "shared/traces/SOURCES.md"),
    ("azure-2024", "input_p50", 1487, 0.02, "Azure 2024 week: prompt p50"),
    ("azure-2024", "input_p95", 6138, 0.02, "prompt p95"),
    ("azure-2024", "input_p99", 7683, 0.02, "prompt p99"),
    ("azure-2024", "input_max", 7999, 0.0, "prompt max"),
    ("azure-2024", "output_p50", 20, 0.05, "output p50"),
    ("azure-2024", "output_p95", 386, 0.03, "output p95"),
    ("azure-2024", "output_p99", 632, 0.03, "output p99"),
    ("random", "input_mean", 1024, 0.0, "vLLM RandomDataset.DEFAULT_INPUT_LEN"),
    ("random", "output_mean", 128, 0.0, "vLLM RandomDataset.DEFAULT_OUTPUT_LEN"),
    ("sonnet", "input_max", 550, 0.0, "vLLM --sonnet-input-len default"),
    ("sonnet", "input_mean", 540.9, 0.01, "vLLM PR #14036: 5,409 input tokens for 10 sonnet requests"),
    ("sonnet", "output_mean", 150, 0.0, "vLLM --sonnet-output-len default"),
    ("mlperf-mixtral-8x7b", "output_mean", 144.84, 0.02, "MLPerf mixtral-8x7b README: tokens_per_sample 144.84"),
    ("mlperf-deepseek-r1", "output_mean", 4043.45, 0.02, "MLPerf deepseek-r1 README: mean-output-tok-len 4043.45"),
    ("mlperf-deepseek-r1", "input_max", 3140, 0.0, "NVIDIA v5.1 deepseek-r1 preprocess_data.py G_MAX_TOK_LEN"),
    ("mlperf-llama3.1-405b", "output_mean", 684.68, 0.02, "MLPerf llama3.1-405b README: tokens_per_sample 684.68"),
    ("mlperf-llama3.1-405b", "input_max", 20000, 0.0, "NVIDIA v5.1 llama3.1-405b preprocess_data.py G_MAX_TOK_LEN"),
    ("mlperf-llama3.1-405b", "output_max", 2000, 0.0, "NVIDIA v5.1 llama3.1-405b generation_config max_output_len"),
    ("mlperf-llama3.1-8b", "output_mean", 128, 0.0, "NVIDIA v5.1 llama3_1-8b generation_config max_output_len 128; "
                                                    "every v5.1 result: 128.0-129.0 tokens per sample"),
    ("mlperf-llama3.1-8b", "input_max", 2540, 0.0, "NVIDIA v5.1 llama3_1-8b preprocess_data.py max input 2540"),
]


@pytest.mark.parametrize("name,stat,value,tol,source", PUBLISHED, ids=[f"{p[0]}-{p[1]}" for p in PUBLISHED])
def test_statistic_matches_its_source(name, stat, value, tol, source):
    got = D.dataset_stats(name)[stat]
    assert abs(got - value) <= tol * value + 1e-9, f"{name} {stat}: {got} vs published {value} ({source})"


def test_every_shipped_dataset_is_checked_against_its_file_published_block():
    names = D.dataset_names()
    assert set(names) >= {"sharegpt", "sharegpt-vllm-paper", "openorca", "cnn-dailymail", "sonnet", "random", "lmsys-chat-1m",
                          "burstgpt", "azure-code-2023", "azure-conv-2023", "azure-2024"}
    tested = {p[0] for p in PUBLISHED}
    for name in names:
        ds = D.get_dataset(name)
        assert ds.published and ds.source, name
        assert name in tested, f"{name} has no published statistic in this test"
        stats = D.dataset_stats(name)
        for row in ds.published:
            got = stats[row["stat"]]
            assert abs(got - row["value"]) <= row["rel_tol"] * row["value"] + 1e-9, (name, row)


# ---------------------------------------------------------------------------- fitted distributions
def test_lognormal_fits_have_the_published_mean_in_closed_form():
    # untruncated lognormal mean exp(mu + sigma^2/2), independent of the sampler
    lm = D.get_dataset("lmsys-chat-1m")
    assert math.exp(lm.input.mu + lm.input.sigma ** 2 / 2) == pytest.approx(69.5, rel=2e-3)
    assert math.exp(lm.output.mu + lm.output.sigma ** 2 / 2) == pytest.approx(214.5, rel=2e-3)
    cnn = D.get_dataset("cnn-dailymail")
    # 781 article words x 4/3 tokens per word + 50 template tokens; 56 highlight words x 4/3
    assert math.exp(cnn.input.mu + cnn.input.sigma ** 2 / 2) == pytest.approx(781 * 4 / 3 + 50, rel=2e-3)
    assert math.exp(cnn.output.mu + cnn.output.sigma ** 2 / 2) == pytest.approx(56 * 4 / 3, rel=2e-3)


def _clipped_lognormal_mean(mu, sigma, hi):
    """E[min(X, hi)] for ln X ~ N(mu, sigma^2), in closed form."""
    from scipy.stats import norm
    z = (math.log(hi) - mu) / sigma
    return math.exp(mu + sigma ** 2 / 2) * norm.cdf(z - sigma) + hi * norm.sf(z)


def test_clip_truncation_matches_closed_form():
    cnn = D.get_dataset("cnn-dailymail")
    expect = _clipped_lognormal_mean(cnn.input.mu, cnn.input.sigma, 1919)
    assert D.dataset_stats("cnn-dailymail")["input_mean"] == pytest.approx(expect, rel=0.01)
    st = D.dataset_stats("cnn-dailymail")
    assert st["output_min"] == 30 and st["output_max"] == 128


def test_sharegpt_output_is_above_what_vllm_runs_generate():
    # vLLM runs stop at EOS or the dataset length, so their mean generated length (198.5) is a lower bound
    assert D.dataset_stats("sharegpt")["output_mean"] > 198.5


def test_sharegpt_shape_matches_real_first_round_pairs():
    # sd of ln(tokens) of the real ShareGPT first-round pairs under the vLLM filters (84,226 pairs of
    # sosp-ae-39/sosp-ae-astra@3180d2f:datasets/sharegpt_opt_text_completion_length.pkl, 74,704 kept):
    # input 1.350, output 1.012; Spearman of the kept pairs 0.211
    from scipy.stats import spearmanr
    inp, out = D.sample_pairs("sharegpt", 100_000, np.random.default_rng(4))
    assert np.log(inp).std() == pytest.approx(1.350, rel=0.03)
    assert np.log(out).std() == pytest.approx(1.012, rel=0.03)
    assert spearmanr(inp, out).correlation == pytest.approx(0.211, abs=0.03)


def test_sharegpt_respects_the_vllm_filters():
    inp, out = D.sample_pairs("sharegpt", 50_000, np.random.default_rng(1))
    assert inp.min() >= 4 and out.min() >= 4 and inp.max() <= 1024
    assert (inp + out).max() <= 2048
    # the total filter binds: some pairs reach close to it
    assert (inp + out).max() > 1800


def test_rank_correlation_is_reproduced():
    from scipy.stats import spearmanr
    inp, out = D.sample_pairs("burstgpt", 100_000, np.random.default_rng(2))
    assert spearmanr(inp, out).correlation == pytest.approx(0.5, abs=0.02)
    inp, out = D.sample_pairs("azure-conv-2023", 100_000, np.random.default_rng(2))
    assert spearmanr(inp, out).correlation == pytest.approx(0.0728, abs=0.02)


@pytest.mark.skipif(_shared_traces() is None, reason="../shared/traces not available")
@pytest.mark.parametrize("kind", ["code", "conv"])
def test_azure_2023_tables_match_the_raw_trace(kind):
    import pandas as pd
    from scipy.stats import spearmanr
    df = pd.read_csv(_shared_traces() / f"AzureLLMInferenceTrace_{kind}.csv")
    st = D.dataset_stats(f"azure-{kind}-2023")
    for side, col in (("input", "ContextTokens"), ("output", "GeneratedTokens")):
        x = df[col].to_numpy()
        assert st[f"{side}_mean"] == pytest.approx(x.mean(), rel=0.03)
        for q in (10, 50, 90, 99):
            assert st[f"{side}_p{q}"] == pytest.approx(np.percentile(x, q), rel=0.04, abs=1.0), (side, q)
    rho = spearmanr(df["ContextTokens"], df["GeneratedTokens"]).correlation
    assert st["rank_correlation"] == pytest.approx(rho, abs=0.02)


# ---------------------------------------------------------------------------- parametric datasets
def test_random_range_ratio_follows_vllm():
    inp, out = D.sample_pairs("random", 40_000, np.random.default_rng(3), input_len=1000, output_len=100,
                              range_ratio=0.1)
    # vLLM: uniform integers in [floor(L(1-r)), ceil(L(1+r))], in floating point as vLLM computes it
    # (100 * 1.1 = 110.00000000000001, so vLLM's output range ends at 111)
    lo_i, hi_i = math.floor(1000 * (1 - 0.1)), math.ceil(1000 * (1 + 0.1))
    lo_o, hi_o = math.floor(100 * (1 - 0.1)), math.ceil(100 * (1 + 0.1))
    assert (lo_o, hi_o) == (90, 111)
    assert (inp.min(), inp.max(), out.min(), out.max()) == (lo_i, hi_i, lo_o, hi_o)
    assert inp.mean() == pytest.approx((lo_i + hi_i) / 2, rel=0.005) and out.mean() == pytest.approx((lo_o + hi_o) / 2, rel=0.01)
    counts = np.bincount(out - lo_o)
    assert counts.size == hi_o - lo_o + 1 and counts.min() > 0.8 * counts.mean()   # every integer equally likely
    _, out = D.sample_pairs("random", 1000, np.random.default_rng(3), output_len=1, range_ratio=0.9)
    assert out.min() >= 1   # output lower bound floored at 1


def test_parametric_options_are_checked():
    with pytest.raises(D.DatasetError, match="range_ratio"):
        D.get_dataset("random", range_ratio=1.5)
    with pytest.raises(D.DatasetError, match="fixed length distributions"):
        D.get_dataset("sharegpt", input_len=100)
    with pytest.raises(D.DatasetError, match="unknown option"):
        D.get_dataset("random", prefix_len=3)
    st = D.dataset_stats("sonnet", input_len=1024)
    assert st["input_max"] == 1024 and st["input_min"] == 1024 - 18 and st["input_mean"] == pytest.approx(1015, abs=0.5)


# ---------------------------------------------------------------------------- name resolution
@pytest.mark.parametrize("spelling,name", [
    ("ShareGPT", "sharegpt"), ("ShareGPT_V3", "sharegpt"), ("sharegpt-v3", "sharegpt"),
    ("OpenOrca", "openorca"), ("open-orca", "openorca"), ("Open-Orca/OpenOrca", "openorca"),
    ("cnn_dailymail", "cnn-dailymail"), ("CNN-DailyMail", "cnn-dailymail"), ("CNNDM", "cnn-dailymail"),
    ("Sonnet", "sonnet"), ("RANDOM", "random"), ("LMSYS-Chat-1M", "lmsys-chat-1m"), ("BurstGPT", "burstgpt"),
    ("azure_conv", "azure-conv-2023"), ("Azure-Code-2023", "azure-code-2023"), ("Azure 2024", "azure-2024"),
])
def test_spellings_resolve(spelling, name):
    assert D.resolve_dataset(spelling) == name


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(D.DatasetError) as err:
        D.resolve_dataset("sharegtp")
    msg = str(err.value)
    assert "\n" not in msg and "sharegtp" in msg
    assert all(n in msg for n in D.dataset_names())
    with pytest.raises(D.DatasetError):
        D.resolve_dataset(None)


def test_dataset_named_in_free_text():
    assert D.dataset_in_text("Offline, ShareGPT V3 prompts") == "sharegpt"
    assert D.dataset_in_text("MLPerf llama2-70b server, OpenOrca") == "openorca"
    assert D.dataset_in_text("summarization on CNN/DailyMail") == "cnn-dailymail"
    # words that are also dataset spellings of parametric ones must not match
    assert D.dataset_in_text("offline, fixed ISL/OSL (synthetic, random lengths)") is None
    assert D.dataset_in_text("") is None


# ---------------------------------------------------------------------------- scenarios
def _requests(doc, seed=1):
    spec = parse_scenario(doc)
    return spec, build_requests(spec.workload, spec.simulation.horizon_s, point_seed(seed))


def test_workload_preset_sets_both_sides_and_samples_jointly():
    spec, reqs = _requests({"workload": {"dataset": "ShareGPT", "num_requests": 4000}})
    assert spec.workload.input.dataset == spec.workload.output.dataset == "sharegpt"
    total = reqs.input_tokens + reqs.output_tokens
    assert total.max() <= 2048 and reqs.input_tokens.max() <= 1024
    st = D.dataset_stats("sharegpt")
    assert reqs.input_tokens.mean() == pytest.approx(st["input_mean"], rel=0.06)
    assert reqs.output_tokens.mean() == pytest.approx(st["output_mean"], rel=0.08)


def test_sides_from_different_sources():
    spec, reqs = _requests({"workload": {"input": {"dataset": "open-orca"}, "output": 64, "num_requests": 500}})
    assert spec.workload.input.dataset == "openorca"
    assert reqs.input_tokens.max() <= 1024 and np.all(reqs.output_tokens == 64)


def test_parametric_preset_options_and_max_tokens():
    _, reqs = _requests({"workload": {"dataset": {"name": "random", "input_len": 2000, "output_len": 200,
                                                  "range_ratio": 0.5}, "num_requests": 2000}})
    assert reqs.input_tokens.min() >= 1000 and reqs.input_tokens.max() <= 3000
    assert reqs.output_tokens.min() >= 100 and reqs.output_tokens.max() <= 300
    _, reqs = _requests({"workload": {"input": {"dataset": "azure-code-2023", "max_tokens": 2000},
                                      "output": {"dataset": "azure-code-2023"}, "num_requests": 500}})
    assert reqs.input_tokens.max() == 2000


def test_dataset_specs_survive_a_dump_and_reload():
    spec = parse_scenario({"workload": {"dataset": "sharegpt", "output": 128}})
    again = parse_scenario(spec.model_dump(mode="json"))
    assert again.workload == spec.workload
    assert again.workload.input.dataset == "sharegpt" and again.workload.output.value == 128
    assert spec.replace().workload == spec.workload


def test_scenario_lengths_are_deterministic():
    doc = {"workload": {"dataset": "burstgpt", "num_requests": 300}}
    _, a = _requests(doc, seed=7)
    _, b = _requests(doc, seed=7)
    _, c = _requests(doc, seed=8)
    assert a.equals(b)
    assert not np.array_equal(a.input_tokens, c.input_tokens)


@pytest.mark.parametrize("doc,fragment", [
    ({"workload": {"dataset": "sharegtp"}}, "workload.dataset = 'sharegtp': unknown dataset; known: "),
    ({"workload": {"input": {"dataset": "nope"}}}, "workload.input.dataset = 'nope': unknown dataset"),
    ({"workload": {"input": {"dataset": "sharegpt", "value": 100}}}, "workload.input.value = 100"),
    ({"workload": {"input": {"dataset": "sharegpt", "mean": 100}}}, "workload.input.mean"),
    ({"workload": {"input": {"dataset": "sonnet", "range_ratio": 0.2}}}, "workload.input.range_ratio"),
    ({"workload": {"input": {"dist": "lognormal", "mean": 10, "std": 1, "range_ratio": 0.2}}},
     "workload.input.range_ratio"),
])
def test_bad_dataset_specs_give_one_clear_line(doc, fragment):
    with pytest.raises(SpecError) as err:
        parse_scenario(doc)
    msg = str(err.value)
    assert fragment in msg and "\n" not in msg and "Traceback" not in msg


def test_sample_lengths_dataset_branch():
    x = W.sample_lengths("dataset", 1000, np.random.default_rng(0), dataset="lmsys-chat-1m", side="output",
                         max_tokens=500)
    assert x.dtype == np.int64 and x.min() >= 1 and x.max() == 500
    with pytest.raises(W.WorkloadError, match="unknown dataset"):
        W.sample_lengths("dataset", 10, np.random.default_rng(0), dataset="bogus")


def test_simulate_a_dataset_scenario_end_to_end():
    import mistfast as mf
    doc = {"workload": {"dataset": "sonnet", "num_requests": 60, "arrival": {"process": "poisson", "rate_rps": 2.0}}}
    a = mf.simulate(doc, per_request=True)
    assert int(a.n_finished) == 60
    assert np.all((a.req_prompt_tokens.values >= 532) & (a.req_prompt_tokens.values <= 550))
    assert np.all(a.req_output_tokens.values == 150)
    b = mf.simulate(doc)
    assert float(a.ttft_p99_ms) == float(b.ttft_p99_ms)


# ---------------------------------------------------------------------------- validate rows
_ROW = dict(id="D1", source="test", engine="vLLM", engine_version="0.8", model="Llama-3.1-8B", precision="FP16",
            hardware="H100", num_accel=1, tp=1, pp=1, batch_or_concurrency="", request_rate="inf",
            metric="output_tok_s", value=1000.0, isl="", osl="")


def test_validate_row_naming_a_dataset_is_simulated_with_it():
    from mistfast.validate import plan_row
    p = plan_row({**_ROW, "workload": "offline, ShareGPT"})
    assert p.status == "ok" and p.dataset == "sharegpt"
    assert p.scenario["workload"]["dataset"] == {"name": "sharegpt"}
    st = D.dataset_stats("sharegpt")
    assert (p.isl, p.osl) == (round(st["input_mean"]), round(st["output_mean"]))
    p = plan_row({**_ROW, "workload": "offline", "dataset": "CNN-DailyMail"})
    assert p.status == "ok" and p.dataset == "cnn-dailymail"
    spec = parse_scenario(p.scenario)
    assert spec.workload.input.dataset == "cnn-dailymail"


def test_validate_row_with_unusable_dataset_says_why():
    from mistfast.validate import plan_row
    p = plan_row({**_ROW, "workload": "offline", "dataset": "bogus"})
    assert p.status == "unsupported" and "unknown dataset 'bogus'" in p.reason
    p = plan_row({**_ROW, "workload": "offline", "dataset": "random"})
    assert p.status == "unsupported" and "isl and osl" in p.reason
    p = plan_row({**_ROW, "workload": "offline", "dataset": "random", "isl": 1000, "osl": 100})
    assert p.status == "ok" and p.scenario["workload"]["dataset"] == {"name": "random", "input_len": 1000,
                                                                       "output_len": 100}


# ---------------------------------------------------------------------------- dataset files
def test_malformed_dataset_file_names_the_field(tmp_path):
    doc = {"name": "x", "title": "x", "source": "s", "input": {"kind": "lognormal", "mu": 1.0, "sigma": -1},
           "output": {"kind": "fixed", "value": 3}}
    with pytest.raises(D.DatasetError, match=r"x.toml: input: lognormal needs .* sigma > 0"):
        D._dataset_from_toml(doc, tmp_path / "x.toml")
    doc["input"] = {"kind": "quantiles", "probs": [0, 0.5, 1], "tokens": [5, 3, 9]}
    with pytest.raises(D.DatasetError, match="tokens .* must not fall"):
        D._dataset_from_toml(doc, tmp_path / "x.toml")
    doc["input"] = {"kind": "fixed", "value": 3, "mu": 2}
    with pytest.raises(D.DatasetError, match="mu do not belong"):
        D._dataset_from_toml(doc, tmp_path / "x.toml")


def test_table_from_lengths_round_trip():
    x = np.random.default_rng(5).lognormal(5, 0.7, 20_000).round() + 1
    t = D.table_from_lengths(x)
    m = D.Marginal("quantiles", probs=tuple(t["probs"]), tokens=tuple(t["tokens"]))
    y = m.quantile(np.random.default_rng(6).random(100_000))
    assert y.mean() == pytest.approx(x.mean(), rel=0.02)
    assert np.percentile(y, 90) == pytest.approx(np.percentile(x, 90), rel=0.02)


def test_cli_lists_the_datasets():
    from click.testing import CliRunner
    from mistfast.cli import main
    res = CliRunner().invoke(main, ["datasets"])
    assert res.exit_code == 0
    for name in D.dataset_names():
        assert name in res.output
    assert "294/" in res.output   # openorca output mean


# ---------------------------------------------------------------------------- mixtures
def _fixed(name, i, o):
    return D.Dataset(name=name, title=name, aliases=(), source="test", input=D.Marginal("fixed", value=i),
                     output=D.Marginal("fixed", value=o))


def _mix(*parts):
    comps = tuple(D.Component(label=n, weight=w, inline=_fixed(n, i, o)) for n, w, i, o in parts)
    return D.Dataset(name="mix", title="mix", aliases=(), source="test", input=None, output=None, components=comps)


def test_mixture_gives_each_component_its_share_in_random_order():
    mix = _mix(("a", 2, 10, 1), ("b", 1, 20, 2))
    inp, out = D._sample_dataset(mix, 3000, np.random.default_rng(0))
    assert (inp == 10).sum() == 2000 and (inp == 20).sum() == 1000
    assert np.array_equal(out, np.where(inp == 10, 1, 2))          # pairs stay together
    assert 0 < (inp[:60] == 20).sum() < 60                          # shuffled, not 2000 a's then 1000 b's
    again = D._sample_dataset(mix, 3000, np.random.default_rng(0))
    assert np.array_equal(inp, again[0]) and np.array_equal(out, again[1])


def test_component_counts_are_largest_remainders():
    assert D._component_counts(np.array([1.0, 1.0, 1.0]), 10).tolist() == [4, 3, 3]
    assert D._component_counts(np.array([5000.0, 5000.0, 5000.0]), 15000).tolist() == [5000] * 3
    assert D._component_counts(np.array([1.0, 3.0]), 0).tolist() == [0, 0]
    assert D._component_counts(np.array([0.1, 0.9]), 7).sum() == 7


def test_mixture_of_shipped_datasets_has_the_weighted_mean(tmp_path):
    doc = {"name": "m", "title": "m", "source": "test",
           "components": [{"dataset": "sharegpt", "weight": 1}, {"dataset": "lmsys-chat-1m", "weight": 3}]}
    mix = D._dataset_from_toml(doc, tmp_path / "m.toml")
    inp, out = D._sample_dataset(mix, 100_000, np.random.default_rng(3))
    sg, lm = D.dataset_stats("sharegpt"), D.dataset_stats("lmsys-chat-1m")
    assert inp.mean() == pytest.approx((sg["input_mean"] + 3 * lm["input_mean"]) / 4, rel=0.02)
    assert out.mean() == pytest.approx((sg["output_mean"] + 3 * lm["output_mean"]) / 4, rel=0.02)


def test_mlperf_mixtral_is_the_published_five_thousand_each():
    """mlcommons/inference language/mixtral-8x7b/README.md: 5K samples each of OpenOrca, GSM8K, MBXP;
    the whole mix generates 144.84 tokens per sample."""
    rows = D.component_stats("mlperf_mixtral_mix")
    assert [r["label"] for r in rows] == ["OpenOrca", "GSM8K", "MBXP"]
    assert all(r["share"] == pytest.approx(1 / 3) for r in rows)
    assert sum(r["share"] * r["output_mean"] for r in rows) == pytest.approx(144.84, rel=0.01)
    # the one sample row each of NVIDIA's code prints, which the estimates follow
    got = {r["label"]: r for r in rows}
    assert got["GSM8K"]["input_mean"] == pytest.approx(657, rel=0.05)
    assert got["MBXP"]["input_mean"] == pytest.approx(139, rel=0.1)
    st = D.dataset_stats("mlperf-mixtral-8x7b")
    assert st["input_max"] <= 2048 and st["output_max"] <= 1024


def test_bad_mixture_files_name_the_field(tmp_path):
    base = {"name": "m", "title": "m", "source": "s"}
    with pytest.raises(D.DatasetError, match=r"components\[0\]\.weight = -1: must be a number > 0"):
        D._dataset_from_toml({**base, "components": [{"dataset": "sharegpt", "weight": -1}]}, tmp_path / "m.toml")
    with pytest.raises(D.DatasetError, match=r"components\[0\]: give either dataset = NAME or inline .* not both"):
        D._dataset_from_toml({**base, "components": [{"dataset": "sharegpt", "weight": 1,
                                                      "input": {"kind": "fixed", "value": 3}}]}, tmp_path / "m.toml")
    with pytest.raises(D.DatasetError, match="do not belong to a mixture"):
        D._dataset_from_toml({**base, "input": {"kind": "fixed", "value": 3},
                              "components": [{"dataset": "sharegpt", "weight": 1}]}, tmp_path / "m.toml")
    with pytest.raises(D.DatasetError, match="not a mixture"):
        D.component_stats("sharegpt")


def test_mixture_in_a_scenario_workload():
    spec = parse_scenario({"clients": [{"model": "llama-3.1-8b", "device": "H100"}],
                           "workload": {"dataset": "mlperf_mixtral_mix", "num_requests": 3000}})
    reqs = build_requests(spec.workload, spec.simulation.horizon_s, point_seed(0))
    gsm = (reqs.input_tokens > 400).mean()          # only the GSM8K third has few-shot prompts that long
    assert gsm == pytest.approx(1 / 3, abs=0.03)
    with pytest.raises(SpecError, match="fixed length distributions"):
        parse_scenario({"clients": [{"model": "llama-3.1-8b", "device": "H100"}],
                        "workload": {"input": {"dataset": "mlperf-mixtral-8x7b", "value": 100}}})
