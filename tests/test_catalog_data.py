"""Sanity checks of the catalog TOML files in data/ (devices, memory tiers, links, models).

Reads the files with tomllib only (no mistfast imports) and compares them against numbers
written here by hand from MODEL.md §9 (not computed from the files).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - pyproject pins tomli for <3.11
    import tomli as tomllib

DATA = Path(__file__).resolve().parents[1] / "data"


def _load(name: str) -> dict:
    with open(DATA / name, "rb") as f:
        return tomllib.load(f)


@pytest.fixture(scope="module")
def devices() -> dict:
    return _load("devices.toml")


@pytest.fixture(scope="module")
def tiers() -> dict:
    return _load("memory_tiers.toml")


@pytest.fixture(scope="module")
def links() -> dict:
    return _load("links.toml")


@pytest.fixture(scope="module")
def models() -> dict:
    return _load("models.toml")


def _is_pos(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0 and math.isfinite(x)


def _has_source(entry: dict) -> bool:
    return isinstance(entry.get("source"), str) and entry["source"].strip() != ""


# ---------------------------------------------------------------------------------------------
# (a) schema: required names, keys, positive numbers, source strings
# ---------------------------------------------------------------------------------------------

REQUIRED_DEVICES = {
    "A100", "H100", "H200", "B200", "GB200", "GH200", "MI300X", "MI325X", "MI350X", "MI355X",
    "TPU-v5e", "TPU-v5p", "TPU-v6e", "TPU-v7", "Gaudi2", "Gaudi3", "GB300",
    "SPR", "Genoa", "Grace", "Xeon-8480+", "Xeon-6980P", "EPYC-9654", "EPYC-9005",
    "H100-genz", "A100-genz", "MI300X-genz", "B200-genz", "TPU-v5e-genz", "TPU-v5p-genz",
    "TPU-v6e-genz", "Gaudi3-genz",
}
DEVICE_NUM_KEYS = (
    "memory_GiB", "memory_bandwidth_GBps", "scaleup_bidir_GBps", "scaleup_latency_us",
    "devices_per_node",
)
DEVICE_KINDS = {"gpu", "tpu", "asic", "cpu"}
DTYPES = {"fp32", "tf32", "bf16", "fp16", "fp8", "int8", "fp4", "mxfp4", "nvfp4"}


def test_devices_schema(devices):
    assert REQUIRED_DEVICES <= set(devices), REQUIRED_DEVICES - set(devices)
    for name, d in devices.items():
        assert _has_source(d), name
        assert d.get("kind") in DEVICE_KINDS, name
        assert isinstance(d.get("vendor"), str) and d["vendor"], name
        assert isinstance(d.get("description"), str) and d["description"], name
        for key in DEVICE_NUM_KEYS:
            assert _is_pos(d.get(key)), (name, key, d.get(key))
        assert isinstance(d["devices_per_node"], int), name
        tf = d.get("tflops")
        assert isinstance(tf, dict) and tf, name
        assert "bf16" in tf, name
        for dtype, value in tf.items():
            assert dtype in DTYPES, (name, dtype)
            assert _is_pos(value), (name, dtype, value)
        if "tdp_W" in d:
            assert _is_pos(d["tdp_W"]), name
        if d["kind"] == "cpu":
            assert d["devices_per_node"] == 1, name
            assert {"bf16", "fp32"} <= set(tf), name


def test_device_reference_values(devices):
    # MODEL §9.1 / §12.6: datasheet vs GenZ H100
    assert devices["H100"]["memory_bandwidth_GBps"] == 3350.0
    assert devices["H100"]["tflops"]["bf16"] == 989.4
    assert devices["H100-genz"]["memory_bandwidth_GBps"] == 3400.0
    assert devices["H100-genz"]["tflops"]["bf16"] == 989.0
    assert devices["H100-genz"]["scaleup_bidir_GBps"] == 900.0  # 2 x ICN 450
    assert devices["A100-genz"]["scaleup_bidir_GBps"] == 300.0  # 2 x ICN 150
    # B200 real preset uses the datasheet dense bf16, not the reference's FP8 number
    assert devices["B200"]["tflops"]["bf16"] == 2250.0
    assert devices["B200-genz"]["tflops"]["bf16"] == 4500.0
    # MODEL §3.4 reference CPUs
    assert devices["SPR"]["tflops"]["bf16"] == 6.27
    assert devices["SPR"]["memory_bandwidth_GBps"] == 308.0
    assert devices["Genoa"]["memory_bandwidth_GBps"] == 460.8
    assert devices["Grace"]["memory_GiB"] == 960.0
    for cpu in ("SPR", "Genoa", "Grace"):
        assert devices[cpu]["scaleup_bidir_GBps"] == 32.0


TIER_KINDS = {"dram", "lpddr", "cxl", "ssd", "hbm"}
REQUIRED_TIERS = {
    "DDR5-4800-8ch", "DDR5-5600-8ch", "DDR5-6400-8ch", "DDR5-4800-12ch", "DDR5-5600-12ch",
    "DDR5-6400-12ch", "MRDIMM-8800-12ch", "CXL-2.0-x8", "CXL-pooled", "NVMe-Gen4",
    "NVMe-Gen5", "NVMe-Gen6", "kvstore-A-lpddr", "kvstore-B-dram", "kvstore-C-ssd",
    "kvstore-D-ssd-dcn", "ref-DRAM", "ref-SSD", "ref-DDR4", "ref-NVMe",
}


def test_tiers_schema(tiers):
    assert REQUIRED_TIERS <= set(tiers), REQUIRED_TIERS - set(tiers)
    for name, t in tiers.items():
        assert _has_source(t), name
        assert t.get("kind") in TIER_KINDS, name
        for key in ("capacity_GB", "bandwidth_GBps", "latency_us"):
            assert _is_pos(t.get(key)), (name, key)


def test_tier_reference_values(tiers):
    # MODEL §9.2 DDR5: channels x MT/s x 8 B
    expected_bw = {
        "DDR5-4800-8ch": 307.2, "DDR5-5600-8ch": 358.4, "DDR5-6400-8ch": 409.6,
        "DDR5-4800-12ch": 460.8, "DDR5-5600-12ch": 537.6, "DDR5-6400-12ch": 614.4,
        "MRDIMM-8800-12ch": 844.8, "CXL-2.0-x8": 36.0, "CXL-pooled": 60.0,
        "NVMe-Gen4": 6.8, "NVMe-Gen5": 13.0, "NVMe-Gen6": 28.0,
    }
    for name, bw in expected_bw.items():
        assert tiers[name]["bandwidth_GBps"] == pytest.approx(bw), name
    # MODEL §4.5 storage cases: (capacity GB, BW GB/s, lookup µs)
    cases = {
        "kvstore-A-lpddr": (1000.0, 128.0, 100.0),
        "kvstore-B-dram": (4000.0, 32.0, 100.0),
        "kvstore-C-ssd": (32000.0, 2.0, 2000.0),
        "kvstore-D-ssd-dcn": (32000.0, 2.0, 2000.0),
        "ref-DRAM": (1500.0, 256.0, 20.0),
        "ref-SSD": (6000.0, 32.0, 100.0),
    }
    for name, (cap, bw, lat) in cases.items():
        t = tiers[name]
        assert (t["capacity_GB"], t["bandwidth_GBps"], t["latency_us"]) == (cap, bw, lat), name
    assert (tiers["ref-DDR4"]["latency_us"], tiers["ref-DDR4"]["bandwidth_GBps"]) == (0.08, 200.0)
    assert (tiers["ref-NVMe"]["latency_us"], tiers["ref-NVMe"]["bandwidth_GBps"]) == (40.0, 8.0)


REQUIRED_LINKS = {
    "NVLink3", "NVLink4", "NVLink5", "InfinityFabric", "ICI-v5e", "ICI-v5p", "ICI-v6e",
    "PCIe4-x16", "PCIe4-x4", "PCIe5-x16", "RDMA-200G", "RDMA-400G", "DCN", "mist-default",
    "kvlink-A", "kvlink-B", "kvlink-C", "kvlink-D", "kvlink-D-notebook", "embed-to-retrieval",
}


def test_links_schema(links):
    assert set(links) == {"links", "topologies"}
    assert REQUIRED_LINKS <= set(links["links"]), REQUIRED_LINKS - set(links["links"])
    for name, link in links["links"].items():
        assert _has_source(link), name
        for key in ("bandwidth_GBps", "latency_us", "efficiency"):
            assert _is_pos(link.get(key)), (name, key)
        assert link["efficiency"] <= 1.0, name
    assert {"H100_nvl8", "A100_nvl8"} <= set(links["topologies"])
    for name, topo in links["topologies"].items():
        assert _has_source(topo), name
        assert isinstance(topo["gpus_per_node"], int) and topo["gpus_per_node"] > 0
        assert isinstance(topo["nodes_per_rack"], int) and topo["nodes_per_rack"] > 0
        assert [lvl["name"] for lvl in topo["levels"]] == ["node", "rack", "pod"], name
        for lvl in topo["levels"]:
            for key in ("bandwidth_GBps", "efficiency", "latency_us"):
                assert _is_pos(lvl.get(key)), (name, lvl.get("name"), key)


def test_link_reference_values(links):
    ln = links["links"]
    # (per-direction GB/s, latency µs) from MODEL §7, §9.2, §4.5
    expected = {
        "NVLink4": (450.0, None), "NVLink5": (900.0, None), "InfinityFabric": (64.0, None),
        "PCIe4-x4": (7.9, None), "RDMA-200G": (25.0, None), "RDMA-400G": (50.0, None),
        "DCN": (None, 20000.0), "mist-default": (10.0, 5000.0),
        "kvlink-A": (128.0, 500.0), "kvlink-B": (16.0, 1000.0), "kvlink-C": (8.0, 5000.0),
        "kvlink-D": (128.0, 20000.0), "kvlink-D-notebook": (1.0, 20000.0),
        "embed-to-retrieval": (10.0, None),
    }
    for name, (bw, lat) in expected.items():
        if bw is not None:
            assert ln[name]["bandwidth_GBps"] == bw, name
        if lat is not None:
            assert ln[name]["latency_us"] == lat, name
    h100 = links["topologies"]["H100_nvl8"]["levels"]
    assert [(l["bandwidth_GBps"], l["efficiency"], l["latency_us"]) for l in h100] == [
        (450.0, 0.65, 10.0), (50.0, 0.9, 20.0), (12.5, 0.6, 200.0)]
    a100 = links["topologies"]["A100_nvl8"]["levels"]
    assert [(l["bandwidth_GBps"], l["efficiency"], l["latency_us"]) for l in a100] == [
        (300.0, 0.65, 10.0), (25.0, 0.9, 20.0), (6.25, 0.6, 200.0)]


REQUIRED_MODELS = {
    "llama-3.1-8b", "llama-3.1-70b", "llama-3.1-405b", "llama-3.3-70b", "llama-2-7b",
    "llama-2-70b", "qwen3-32b", "mistral-7b", "e5-mistral-7b", "mixtral-8x7b", "deepseek-v3",
    "e5-small", "e5-base", "e5-large", "bloom-176b", "llama-3.1-70b-genz",
}
MODEL_INT_KEYS = (
    "hidden_size", "num_layers", "num_heads", "num_kv_heads", "head_dim", "ffn_dim",
    "vocab_size", "max_model_len",
)
MOE_KEYS = ("num_experts", "top_k", "expert_ffn_dim", "num_shared_experts", "first_dense_layers")
MLA_KEYS = ("kv_lora_rank", "rope_head_dim", "q_lora_rank")


def test_models_schema(models):
    assert REQUIRED_MODELS <= set(models), REQUIRED_MODELS - set(models)
    for name, m in models.items():
        assert name == name.lower(), name
        assert _has_source(m), name
        assert m.get("architecture") in {"decoder", "encoder"}, name
        for key in MODEL_INT_KEYS:
            assert isinstance(m.get(key), int) and m[key] > 0, (name, key)
        assert isinstance(m.get("gated_ffn"), bool), name
        assert isinstance(m.get("tied_embeddings"), bool), name
        assert m["num_heads"] % m["num_kv_heads"] == 0, name
        if "num_experts" in m:
            for key in MOE_KEYS:
                assert isinstance(m.get(key), int) and m[key] >= 0, (name, key)
            assert 0 < m["top_k"] <= m["num_experts"], name
            assert m["first_dense_layers"] < m["num_layers"], name
        if "kv_lora_rank" in m:
            for key in MLA_KEYS:
                assert isinstance(m.get(key), int) and m[key] > 0, (name, key)
        if m["architecture"] == "encoder":
            assert m["max_model_len"] == 512, name


def test_model_aliases(models):
    base = dict(models["llama-3.1-70b"])
    for alias in ("llama-3.1-70b-genz", "llama-3.3-70b"):
        other = dict(models[alias])
        base.pop("source", None), other.pop("source", None)
        assert other == base, alias
    e5m, m7 = dict(models["e5-mistral-7b"]), dict(models["mistral-7b"])
    e5m.pop("source"), m7.pop("source")
    assert e5m == m7
    assert models["qwen3-32b"]["num_heads"] * models["qwen3-32b"]["head_dim"] == 8192


# ---------------------------------------------------------------------------------------------
# (b) parameter counts from the shapes (untied embeddings, norms ignored, gated = 3 matrices,
#     MoE counts all experts); (c) KV elements per token
# ---------------------------------------------------------------------------------------------


def _param_count(m: dict) -> float:
    D, L, H, Hkv, dh = (m[k] for k in ("hidden_size", "num_layers", "num_heads", "num_kv_heads", "head_dim"))
    V = m["vocab_size"]
    g = 3 if m["gated_ffn"] else 2
    if "kv_lora_rank" in m:  # MLA (DeepSeek-V3): q_a, q_b, kv_a, kv_b, o
        r_kv, d_rope, r_q = m["kv_lora_rank"], m["rope_head_dim"], m["q_lora_rank"]
        attn = D * r_q + r_q * H * (dh + d_rope) + D * (r_kv + d_rope) + r_kv * H * 2 * dh + H * dh * D
    else:
        attn = D * (H + 2 * Hkv) * dh + H * dh * D
    dense_ffn = g * D * m["ffn_dim"]
    if "num_experts" in m:
        k = m["first_dense_layers"]
        moe_ffn = (m["num_experts"] + m["num_shared_experts"]) * g * D * m["expert_ffn_dim"]
        moe_ffn += D * m["num_experts"]  # router
        ffn_total = k * dense_ffn + (L - k) * moe_ffn
    else:
        ffn_total = L * dense_ffn
    return L * attn + ffn_total + 2 * V * D  # untied: embedding + LM head


# Hand-written expectations from MODEL.md §9.4 (B = 1e9).
EXPECTED_PARAMS = {
    "llama-3.1-8b": 8.03e9,
    "llama-3.1-70b": 70.6e9,
    "llama-3.1-70b-genz": 70.6e9,
    "llama-3.3-70b": 70.6e9,
    "llama-3.1-405b": 405.9e9,
    "llama-2-70b": 69.0e9,
    "qwen3-32b": 32.8e9,
    "mistral-7b": 7.24e9,
    "mixtral-8x7b": 46.7e9,
    "deepseek-v3": 671e9,
}


@pytest.mark.parametrize("name,expected", sorted(EXPECTED_PARAMS.items()))
def test_param_counts(models, name, expected):
    assert _param_count(models[name]) == pytest.approx(expected, rel=0.01)


def test_encoder_body_params(models):
    # MODEL §9.4: e5-base ≈ 85 M body, e5-large ≈ 302 M body (4·D² attention + 2·D·Df FFN per layer)
    for name, expected in (("e5-base", 85e6), ("e5-large", 302e6)):
        m = models[name]
        D, L, Df = m["hidden_size"], m["num_layers"], m["ffn_dim"]
        assert L * (4 * D * D + 2 * D * Df) == pytest.approx(expected, rel=0.01), name


@pytest.mark.parametrize("name,expected", [
    ("llama-3.1-8b", 65_536),
    ("llama-3.1-70b", 163_840),
    ("llama-3.1-405b", 258_048),
    ("llama-2-70b", 163_840),
    ("qwen3-32b", 131_072),
    ("mixtral-8x7b", 65_536),
])
def test_kv_elements_per_token(models, name, expected):
    m = models[name]
    assert 2 * m["num_layers"] * m["num_kv_heads"] * m["head_dim"] == expected


def test_mla_kv_elements(models):
    m = models["deepseek-v3"]
    assert m["num_layers"] * (m["kv_lora_rank"] + m["rope_head_dim"]) == 35_136  # MODEL §9.4


# ---------------------------------------------------------------------------------------------
# (d) dtype ordering, (e) prices
# ---------------------------------------------------------------------------------------------


def test_gpu_bf16_not_above_fp8(devices):
    for name, d in devices.items():
        if d["kind"] == "gpu" and "fp8" in d["tflops"]:
            assert d["tflops"]["bf16"] <= d["tflops"]["fp8"], name


def test_prices_positive(devices, tiers):
    for table in (devices, tiers):
        for name, entry in table.items():
            if "price_usd_per_hour" in entry:
                assert _is_pos(entry["price_usd_per_hour"]), name
