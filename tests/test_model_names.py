"""Models of 2025-26: name resolution (Hugging Face ids, spellings, quantisation tags), catalog
shapes against published parameter counts, and the KV memory of sliding-window models."""
import math

import pytest

from mistfast.catalog import Catalog
from mistfast.modelnames import resolve_model_name
from mistfast.specs import ModelSpec, SpecError, make_client, parse_scenario

GiB = 2**30


# ---- name resolution ----------------------------------------------------------------------------
@pytest.mark.parametrize("name,model,precision", [
    ("openai/gpt-oss-120b", "gpt-oss-120b", None),
    ("openai/gpt-oss-20b", "gpt-oss-20b", None),
    ("deepseek-ai/DeepSeek-R1", "deepseek-v3", "fp8"),
    ("deepseek-ai/DeepSeek-R1-0528", "deepseek-v3", "fp8"),
    ("DeepSeek-R1", "deepseek-v3", "fp8"),
    ("DeepSeek-R1-FP4", "deepseek-v3", "nvfp4"),           # a tag on a spelling wins over the table
    ("nvidia/Llama-3.1-70B-Instruct-FP8", "llama-3.1-70b", "fp8"),
    ("nvidia/Llama-3.3-70B-Instruct-FP4", "llama-3.3-70b", "nvfp4"),
    ("meta-llama/Meta-Llama-3.1-8B-Instruct", "llama-3.1-8b", None),
    ("meta-llama/Llama-2-70b-chat-hf", "llama-2-70b", None),
    ("RedHatAI/Llama-4-Scout-17B-16E-Instruct-FP8-dynamic", "llama-4-scout", "fp8"),
    ("meta-llama/Llama-4-Maverick-17B-128E-Instruct", "llama-4-maverick", None),
    ("Qwen/Qwen3-30B-A3B-Instruct-2507-FP8", "qwen3-30b-a3b", "fp8"),
    ("Qwen/Qwen3-235B-A22B-Thinking-2507", "qwen3-235b-a22b", None),
    ("mistralai/Mixtral-8x7B-Instruct-v0.1", "mixtral-8x7b", None),
    ("mistralai/Mistral-Small-3.1-24B-Instruct-2503", "mistral-small-24b", None),
    ("google/gemma-3-27b-it", "gemma-3-27b", None),
    ("EleutherAI/gpt-j-6b", "gpt-j-6b", None),
    ("gptj-99", "gpt-j-6b", None),                           # MLPerf benchmark name
    ("llama2-70b-99.9", "llama-2-70b", None),
    ("deepseek-ai/DeepSeek-R1-Distill-Llama-70B", "llama-3.3-70b", None),
    ("LLAMA-3.1-70B", "llama-3.1-70b", None),              # catalog keys are case-insensitive
    ("GPT-J 6B", "gpt-j-6b", None),                          # blanks spell dashes
])
def test_names_resolve_to_model_and_precision(name, model, precision):
    r = resolve_model_name(name)
    assert (r.model, r.precision) == (model, precision)


def test_weight_only_tags_keep_16_bit_compute():
    r = resolve_model_name("Qwen/Qwen2.5-7B-Instruct-AWQ")
    assert r.model == "qwen2.5-7b"
    assert r.precision == {"weights": "int4", "compute": "bf16", "kv": "bf16", "activations": "bf16"}
    r = resolve_model_name("neuralmagic/Meta-Llama-3.1-70B-Instruct-quantized.w4a16")
    assert r.model == "llama-3.1-70b" and r.precision["weights"] == "int4"


def test_unknown_name_lists_the_closest():
    with pytest.raises(KeyError, match=r"unknown model preset 'llama-3.1-7b'.*closest: llama-3.1-70b, llama-3.1-8b"):
        resolve_model_name("llama-3.1-7b")
    with pytest.raises(SpecError, match=r"clients\[0\]\.model = 'openai/gpt-oss-12b': unknown model preset .*closest: gpt-oss-120b"):
        parse_scenario({"clients": [{"model": "openai/gpt-oss-12b", "device": "H100"}]})


def test_client_gets_the_checkpoint_precision_unless_it_sets_one():
    c = make_client("deepseek-ai/DeepSeek-R1", "H200", tp=8)
    assert c.model.name == "deepseek-v3"
    assert (c.precision.weights, c.precision.compute, c.precision.kv) == ("fp8", "fp8", "fp8")
    c = make_client("deepseek-ai/DeepSeek-R1", {"preset": "B200", "memory_GiB": 4000}, tp=8, precision="bf16")
    assert c.precision.weights == "bf16"
    # gpt-oss ships MXFP4 experts, BF16 elsewhere (config.json quantization_config)
    c = make_client("openai/gpt-oss-120b", "H100")
    # (experts multiplied with MXFP8 activations: the FP8 MMA rate, data/models.toml)
    assert (c.precision.weights, c.precision.experts, c.precision.experts_compute) == ("bf16", "mxfp4", "fp8")
    # a plain catalog key of an older model keeps the old default (bf16)
    assert make_client("deepseek-v3", {"preset": "B200", "memory_GiB": 4000}, tp=8).precision.weights == "bf16"
    # a table with preset = HF id and overrides
    c = make_client({"preset": "nvidia/Llama-3.1-70B-Instruct-FP8", "num_layers": 40}, "H100", tp=2)
    assert c.model.num_layers == 40 and c.precision.weights == "fp8"


# ---- catalog shapes against published totals -----------------------------------------------------
def _spec(name):
    return ModelSpec.model_validate(Catalog().get("models", name))


@pytest.mark.parametrize("name,total_B,tol", [
    # OpenAI model card: 116.83 B / 20.91 B total (biases, norms and sinks ignored here)
    ("gpt-oss-120b", 116.83, 0.002),
    ("gpt-oss-20b", 20.91, 0.002),
    # Qwen3 model cards: 8.2 B, 14.8 B, 30.5 B, 235 B
    ("qwen3-8b", 8.2, 0.01), ("qwen3-14b", 14.8, 0.01), ("qwen3-30b-a3b", 30.5, 0.01), ("qwen3-235b-a22b", 235.0, 0.01),
    # Qwen2.5 model cards: 7.61 B, 32.5 B, 72.7 B (QKV biases ignored)
    ("qwen2.5-7b", 7.61, 0.01), ("qwen2.5-32b", 32.5, 0.01), ("qwen2.5-72b", 72.7, 0.01),
    # Llama-4 text decoders: 109 B and 400 B (Meta; Scout's 109 B includes its vision encoder)
    ("llama-4-scout", 109.0, 0.02), ("llama-4-maverick", 400.0, 0.01),
    ("gemma-3-27b", 27.0, 0.01), ("mistral-small-24b", 23.57, 0.002), ("gpt-j-6b", 6.05, 0.01),
    # MLA models: DeepSeek-V3 671 B (MODEL.md §9.4); Kimi-K2 1.03 T by the MLA count of tests/test_catalog_data.py
    # (model card: "1 T total, 32 B active")
    ("deepseek-v3", 671.0, 0.01), ("kimi-k2", 1026.4, 0.01),
])
def test_param_counts_match_published_totals(name, total_B, tol):
    assert _spec(name).param_count() / 1e9 == pytest.approx(total_B, rel=tol)


def test_layer_patterns_by_hand():
    oss = _spec("gpt-oss-120b")   # layer_types: even sliding, odd full
    assert [oss.is_window_layer(i) for i in range(4)] == [True, False, True, False]
    assert oss.num_window_layers == 18
    gem = _spec("gemma-3-27b")    # sliding_window_pattern 6: layers 5, 11, ..., 59 global
    assert [i for i in range(62) if not gem.is_window_layer(i)] == [5, 11, 17, 23, 29, 35, 41, 47, 53, 59]
    mav = _spec("llama-4-maverick")  # interleave_moe_layer_step 2: moe_layers 1, 3, ..., 47
    assert [i for i in range(6) if mav.is_moe_layer(i)] == [1, 3, 5] and mav.num_moe_layers == 24
    scout = _spec("llama-4-scout")   # no_rope_layers 1,1,1,0: every 4th layer global
    assert scout.num_window_layers == 36 and scout.num_moe_layers == 48


# ---- weights and KV memory with MXFP4 experts and sliding windows -----------------------------------
def test_gpt_oss_120b_weights_and_kv_by_hand():
    c = make_client("openai/gpt-oss-120b", "H100")
    # attention (bf16): 36 x (2880*(64+16)*64 + 64*64*2880) = 955,514,880 elements
    # router (bf16): 36 x 2880*128 = 13,271,040; embedding + LM head (bf16): 2 x 201088*2880
    # experts (MXFP4, 4.25 bits): 36 x 128 x 3 x 2880^2 = 114,661,785,600 elements x 0.53125 B
    want = 2 * (955_514_880 + 13_271_040 + 2 * 579_133_440) + 114_661_785_600 * 0.53125
    assert want == 65_168_179_200
    assert c.weight_bytes_device() == pytest.approx(want, rel=1e-12)
    # KV: a token costs the 18 full-attention layers, 2*8*64*2 B each = 36,864 B
    assert c.kv_bytes_per_token_device() == 18 * 2048
    # the 18 sliding layers hold at most W + block = 144 tokens for each of 128 sequences
    assert c.window_kv_reserve_bytes_device() == 128 * 144 * 18 * 2048
    pool = 0.95 * (80 * GiB - want - 3.5 * GiB)
    assert c.kv_capacity_tokens() == math.floor((pool - 128 * 144 * 18 * 2048) / 36_864)


def test_window_reserve_never_oversubscribes():
    # Gemma-3-27B bf16 on one H100: 128 sequences x 1040 window tokens x 52 layers would exceed the
    # pool; the reserve is capped at pool*w/(w+f), i.e. every token charged over all 62 layers
    c = make_client("gemma-3-27b", "H100")
    per_layer = 2 * 16 * 128 * 2
    pool = c._kv_pool_bytes()
    assert c.window_kv_reserve_bytes_device() == pytest.approx(pool * 52 / 62, rel=1e-12)
    assert abs(c.kv_capacity_tokens() - pool / (62 * per_layer)) < 1.0   # floor of (pool - reserve)/f
    # with 16 sequences the reserve is 16 x 1040 x 52 layers and the rest is full-layer tokens
    c16 = make_client("gemma-3-27b", "H100", scheduler={"max_batch_size": 16})
    assert c16.window_kv_reserve_bytes_device() == 16 * 1040 * 52 * per_layer
    assert c16.kv_capacity_tokens() == math.floor((pool - 16 * 1040 * 52 * per_layer) / (10 * per_layer))


def test_models_without_windows_keep_their_capacity():
    c = make_client("llama-3.1-8b", "H100")
    # 0.95 (80 GiB - 16.06 GB weights - 3.5 GiB) / 131,072 B (MODEL.md §4.4)
    w = 2 * (32 * (4096 * 48 * 128 + 32 * 128 * 4096 + 3 * 4096 * 14336) + 2 * 128256 * 4096)
    assert c.weight_bytes_device() == w
    assert c.kv_capacity_tokens() == int(0.95 * (80 * GiB - w - 3.5 * GiB) // 131_072)
