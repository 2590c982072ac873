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
    monkeypatch.setattr(launch_time, "GRAPH_DECODE_DEFAULT_ON", True)   # shipped off (docs)
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
