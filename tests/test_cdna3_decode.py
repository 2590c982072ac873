"""Graph-replayed decode on CDNA3 (docs/step-model.md, "Graph-replayed decode on CDNA3"): SGLang without
torch.compile on MI300X / MI325X pays a device time per kernel of every decode-only step. Checked
against hand-computed values and the InferenceMAX launch scripts' flags."""
import pytest

from mistfast import engine_defaults as ED
from mistfast import launch_time, step_latency
from mistfast.specs import make_client


def test_default_by_engine_device_and_torch_compile():
    assert launch_time.GRAPH_DECODE_KERNEL_US[("sglang", "cdna3")] == 11.0
    assert launch_time.decode_launch_default("sglang", "MI300X") == 11.0
    assert launch_time.decode_launch_default("sglang", "MI325X") == 11.0
    # torch.compile's fused kernels: no default (the MI355X script runs it)
    assert launch_time.decode_launch_default("sglang", "MI300X", torch_compile=True) == 0.0
    # other generations and engines: none
    for eng, dev in (("sglang", "MI355X"), ("sglang", "H200"), ("sglang", "B200"), ("vllm", "MI300X"),
                     ("trtllm-1", "MI325X"), ("", "MI300X")):
        assert launch_time.decode_launch_default(eng, dev) == 0.0, (eng, dev)
    assert launch_time.device_generation("MI300X") == launch_time.device_generation("MI325X") == "cdna3"
    assert launch_time.device_generation("MI355X") == ""


def test_the_default_is_the_per_kernel_reading_of_the_docstring():
    # (27.0 - 5.7 + 27.5 - 5.3) / 2 = 21.75 ms above the roofline on CDNA3, 5.1 ms on NVIDIA (mean of
    # 4.1 and 6.1): 16.65 ms over 1,504 kernels = 11.07 us, rounded to 11
    ds = make_client("deepseek-ai/DeepSeek-R1", "MI300X", tp=8, efficiency={}).model
    assert launch_time.kernels_per_step(ds, 8) == 1504
    assert round(((27.0 - 5.7 + 27.5 - 5.3) / 2 - (4.1 + 6.1) / 2) / 1504 * 1e3) == 11


def test_a_decode_step_is_longer_by_kernels_times_the_default():
    g = make_client("deepseek-ai/DeepSeek-R1", "MI300X", tp=8, efficiency={"decode_launch_us": 11.0})
    e = make_client("deepseek-ai/DeepSeek-R1", "MI300X", tp=8, efficiency={})
    # 1,504 kernels x 11 us = 16.544 ms, the same at 4 and at 64 users (not bytes: batch-independent)
    for dec in ([(1, 1024)] * 4, [(1, 1500)] * 64):
        assert step_latency(g, decode=dec).total_s - step_latency(e, decode=dec).total_s == \
            pytest.approx(1504 * 11e-6, abs=1e-12)
    # a prefill step runs eagerly, not from the decode graphs: unchanged
    assert step_latency(g, prefill=[(0, 1024)]).total_s == step_latency(e, prefill=[(0, 1024)]).total_s


def test_torch_compile_flag_is_parsed():
    assert ED.parse_flags("--enable-torch-compile --cuda-graph-max-bs 128").get("torch_compile") is True
    assert ED.parse_flags("enable_torch_compile: true").get("torch_compile") is True
    assert "torch_compile" not in ED.parse_flags("enable_torch_compile: false")
    assert "torch_compile" not in ED.parse_flags("--torch-compile-max-bs 8 --cuda-graph-max-bs 128")


def _imax_row(device: str, version: str) -> dict:
    return dict(id="x", source="github:gminneci/mantile@72ff84ebfd56ee0b15bd17d7d49a70fbb4e50256:reconcile/x.json",
                engine="SGLang (sglang.launch_server)", engine_version=version,
                model="deepseek-ai/DeepSeek-R1-0528", precision="FP8 (block-scaled, native)", hardware=device,
                num_accel=8, tp=8, pp=1,
                workload="closed loop at max concurrency, request rate inf; random tokens (--random-range-ratio 0.8)",
                isl=1024, osl=1024, batch_or_concurrency="4", request_rate="inf (closed loop)",
                metric="tpot_ms", value=27.0, notes="ep 1; dp_attention false", dataset="random",
                engine_family="sglang")


def test_validate_rows_take_the_default_from_their_launch_script(monkeypatch):
    from mistfast import validate as V
    monkeypatch.setattr(launch_time, "GRAPH_DECODE_DEFAULT_ON", True)   # the default since session 13
    # MI300X / MI325X scripts (InferenceX@e264c0e): no --enable-torch-compile
    for dev in ("MI300X", "MI325X"):
        p = V.plan_row(_imax_row(dev, "v0.5.5.post3-rocm700-mi30x (container lmsysorg/sglang:v0.5.5.post3-rocm700-mi30x)"))
        assert p.status == "ok", p.reason
        assert p.scenario["clients"][0]["efficiency"] == {"decode_launch_us": 11.0}
    # MI355X FP8 script: --attention-backend aiter --enable-torch-compile, and another generation anyway
    q = V.plan_row(_imax_row("MI355X", "v0.5.5.post3-rocm700-mi35x (container lmsysorg/sglang:v0.5.5.post3-rocm700-mi35x)"))
    assert q.status == "ok", q.reason
    assert q.scenario["clients"][0]["efficiency"] == {}
    flags, _ = ED.launcher_flags("github:gminneci/mantile", "sglang", "deepseek-ai/DeepSeek-R1-0528", "MI355X")
    assert "--enable-torch-compile" in flags
    # a row that states torch.compile itself gets no default
    r = V.plan_row(dict(_imax_row("MI300X", "v0.5.5.post3-rocm700-mi30x"), notes="--enable-torch-compile"))
    assert r.scenario["clients"][0]["efficiency"] == {}


def test_switch_off_leaves_rows_as_before(monkeypatch):
    from mistfast import validate as V
    monkeypatch.setattr(launch_time, "GRAPH_DECODE_DEFAULT_ON", False)
    p = V.plan_row(_imax_row("MI300X", "v0.5.5.post3-rocm700-mi30x"))
    assert p.scenario["clients"][0]["efficiency"] == {}


def test_a_second_publisher_bounds_the_per_kernel_time_of_a_compiled_engine_on_cdna3():
    """AMD's "Performance results with AMD ROCm software" page (rows P0003 of data/measurements/public.csv):
    vLLM 0.10.1 (torch.compile + HIP graphs), Llama-3.1-70B FP8 TP8 on MI300X, batch 1, 128 in / 2,048 out,
    15.254 s end to end, i.e. at most 15,254 / 2,048 = 7.448 ms per decode step. A step reads the FP8
    weights, by hand 80 x (2 x 8192^2 + 2 x 8192 x 1024 + 3 x 8192 x 28672) + 128256 x 8192 (LM head)
    = 69.5e9 bytes over 8 devices at 5.3 TB/s = 1.64 ms, and launches 80 x (2 + 5 + 3 + 2) = 960 kernels.
    Even with the whole excess put on the kernels, a kernel costs at most (7.448 - 1.64) / 960 = 6.05 us:
    the 11 us of the SGLang default cannot be a property of every HIP-graph node on gfx942 (it would
    make this step >= 1.64 + 10.56 = 12.2 ms), so it stays scoped to the uncompiled engine, and the
    compiled vLLM gets none (test_default_by_engine_device_and_torch_compile)."""
    llama = make_client("llama-3.1-70b", "MI300X", tp=8, efficiency={}).model
    kernels = launch_time.kernels_per_step(llama, 8)
    assert kernels == 80 * (2 + 5 + 3 + 2) == 960
    layer_bytes = 2 * 8192 ** 2 + 2 * 8192 * 1024 + 3 * 8192 * 28672
    weight_read_s = (80 * layer_bytes + 128256 * 8192) / 8 / 5300e9
    assert weight_read_s == pytest.approx(1.64e-3, rel=0.01)
    step_s = 15.254 / 2048
    bound_us = (step_s - weight_read_s) / kernels * 1e6
    assert bound_us == pytest.approx(6.05, abs=0.05)
    sglang_us = launch_time.GRAPH_DECODE_KERNEL_US[("sglang", "cdna3")]
    assert sglang_us > bound_us
    assert weight_read_s + kernels * sglang_us * 1e-6 > 1.6 * step_s    # 12.2 ms against 7.45 ms measured
    assert launch_time.decode_launch_default("vllm", "MI300X") == 0.0
