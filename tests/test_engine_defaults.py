"""Engine server settings (mistfast.engine_defaults) against hand arithmetic from the engines' rules."""
import math

import pytest

from mistfast import calibration as C
from mistfast import engine_defaults as ED
from mistfast import validate as V

GiB = 2**30


def _client(model, device, tp=1, prec="bf16/bf16/bf16/bf16"):
    return C._client_cached(C.resolve_model(model), device, tp, 1, prec)


def _with_scheduler(client, fields):
    return client.model_copy(update={"scheduler": client.scheduler.model_copy(update=fields)})


def test_qwen3_32b_vllm_kv_tokens_by_hand():
    # Qwen3-32B (config.json: hidden 5120, 64 layers, 64 q / 8 kv heads of 128, FFN 25600, vocab
    # 151936, untied embeddings): per layer 5120*(64+2*8)*128 + 64*128*5120 + 3*5120*25600
    # = 487,587,840 parameters; x 64 + 2 * 151936 * 5120 = 32,761,446,400 parameters, BF16.
    weights = 32_761_446_400 * 2
    # vLLM: KV = 0.9 * 80 GiB - weights - activation peak; activation = 1 GiB (non-torch) + 8192
    # tokens x (2*25600 + 4*5120) x 2 bytes
    act = 1 * GiB + 8192 * (2 * 25600 + 4 * 5120) * 2
    kv_bytes = 0.9 * 80 * GiB - weights - act
    per_token = 2 * 8 * 128 * 64 * 2            # K and V, 8 heads x 128, 64 layers, 2 bytes
    expected = int(kv_bytes // per_token)
    c = _client("Qwen/Qwen3-32B", "H100")
    s = ED.server_settings("vllm", "v0.11.0", client=c)
    got = _with_scheduler(c, s.scheduler(c.device.memory_GiB)).kv_capacity_tokens()
    assert abs(got - expected) <= 1
    # the old rule 0.95 * (80 GiB - weights - 3.5 GiB) gave 1.65 x as many tokens
    old = int(0.95 * (80 * GiB - weights - 3.5 * GiB) // per_token)
    assert c.kv_capacity_tokens() == pytest.approx(old, abs=1)
    assert 1.6 < old / got < 1.7


@pytest.mark.parametrize("device,version,seqs,tokens", [
    ("H100", "v0.11.2", 1024, 8192),     # >= 70 GiB, not an A100
    ("B200", "v0.13.0", 1024, 8192),
    ("A100", "v0.10.2", 256, 2048),      # the A100 exception
    ("H100", "0.6.0", 256, 8192),        # V0 engine
])
def test_vllm_batch_defaults(device, version, seqs, tokens):
    s = ED.server_settings("vllm", version, device_name=device,
                           device_memory_GiB=C._client_cached("llama-3.1-8b", device, 1, 1,
                                                              "bf16/bf16/bf16/bf16").device.memory_GiB)
    assert (s.max_num_seqs, s.token_budget) == (seqs, tokens)


def test_sglang_mem_fraction_by_hand():
    # H100, tp 1: reserved = 512 + 1.5 * 8192 + 2 * 256 + 1024 * 1/8 = 13,440 MiB of 81,920
    d = ED.sglang_memory_defaults(80.0, tp=1)
    assert d["chunked_prefill_size"] == 8192 and d["cuda_graph_max_bs"] == 256
    assert d["mem_fraction_static"] == round((81920 - 13440) / 81920, 3) == 0.836
    # B200 (180 GiB), tp 8: chunk 16384, graphs 512: 512 + 24576 + 1024 + 1024 = 27,136 MiB
    d = ED.sglang_memory_defaults(180.0, tp=8)
    assert d["chunked_prefill_size"] == 16384
    assert d["mem_fraction_static"] == round((184320 - 27136) / 184320, 3)
    # an 80 GiB device with a 2048 chunk and 8 graphs: 512 + 3072 + 16 + 128 = 3,728 MiB, raised
    # to the 10 GiB floor of GPUs above 60 GiB
    d = ED.sglang_memory_defaults(80.0, tp=1, chunk=2048, cuda_graph_max_bs=8)
    assert d["mem_fraction_static"] == round((81920 - 10240) / 81920, 3)
    # before 0.5: by tp alone
    s = ED.server_settings("sglang", "v0.4.1", device_name="H200", device_memory_GiB=141.0, tp=8)
    assert s.memory_fraction == 0.81 and s.token_budget == 8192


def test_sglang_kv_pool_is_fraction_of_total_minus_weights():
    c = _client("Llama-3.1-8B", "H100")
    s = ED.server_settings("sglang", "v0.5.5", client=c)
    got = _with_scheduler(c, s.scheduler(c.device.memory_GiB)).kv_capacity_tokens()
    expected = int((0.836 * 80 * GiB - c.weight_bytes_device()) // c.kv_bytes_per_token_device())
    assert abs(got - expected) <= 1


def test_trtllm_serve_defaults_and_free_fraction():
    c = _client("Llama-3.1-8B", "H100")
    s = ED.server_settings("trtllm-1", "1.2.0rc1", client=c)
    assert (s.max_num_seqs, s.token_budget, s.memory_fraction) == (2048, 8192, 0.9)
    got = _with_scheduler(c, s.scheduler(c.device.memory_GiB)).kv_capacity_tokens()
    act = 1 * GiB + 8192 * (2 * 14336 + 4 * 4096) * 2     # Llama-3.1-8B: FFN 14336, hidden 4096
    expected = int(0.9 * (80 * GiB - c.weight_bytes_device() - act) // c.kv_bytes_per_token_device())
    assert abs(got - expected) <= 1


def test_parse_flags_spellings():
    f = ED.parse_flags("vllm serve --max-num-seqs 512 --max_num_batched_tokens=4096 "
                       "mem-fraction-static: 0.8 --kv-cache-dtype fp8_e4m3 --max_batch_size 64")
    assert f == {"max_num_seqs": 512, "max_num_batched_tokens": 4096, "mem_fraction_static": 0.8,
                 "kv_dtype": "fp8", "max_batch_size": 64}
    assert ED.parse_flags("--max-model-len 32768 --async-scheduling") == {"schedule_ahead": True}   # (read since session 12: closed_loop_step_wait_ms)


@pytest.mark.parametrize("text,flag", [("--gpu-memory-utilization 1.5", "gpu-memory-utilization"),
                                       ("--max-num-seqs 0", "max-num-seqs")])
def test_bad_flag_is_one_clear_line(text, flag):
    with pytest.raises(ED.EngineSettingsError, match=flag):
        ED.parse_flags(text)
    row = {"id": "x", "source": "test", "engine": f"vLLM (vllm serve; flags: {text})", "engine_version": "v0.11.0",
           "model": "Llama-3.1-8B", "precision": "bf16", "hardware": "H100", "tp": 1, "pp": 1,
           "workload": "fixed concurrency", "isl": 128, "osl": 128, "batch_or_concurrency": 8,
           "request_rate": "inf (closed loop)", "metric": "output_tok_s", "value": 100.0, "notes": ""}
    p = V.plan_row(row)
    assert p.status == "unsupported" and flag in p.reason and "\n" not in p.reason


def _imax_row(**kw):
    row = {"id": "i", "source": "github:gminneci/mantile@72ff84e:reconcile/sources/inferencemax/raw/run_1/agg_bmk.json",
           "engine": "SGLang (sglang.launch_server)", "engine_version": "v0.5.6.post1-rocm700-mi35x",
           "model": "amd/DeepSeek-R1-0528-MXFP4-Preview", "precision": "MXFP4", "hardware": "MI355X",
           "num_accel": 8, "tp": 8, "pp": 1,
           "workload": "closed loop at max concurrency, request rate inf; ~10x concurrency prompts",
           "isl": 8192, "osl": 1024, "batch_or_concurrency": 64, "request_rate": "inf (closed loop)",
           "metric": "output_tok_s", "value": 1000.0, "notes": "InferenceMAX actions run 1; runner mi355x"}
    row.update(kw)
    return row


def test_inferencemax_launcher_flags_reach_the_client():
    p = V.plan_row(_imax_row())
    assert p.status == "ok", p.reason
    sched = p.scenario["clients"][0]["scheduler"]
    # dsr1_fp4_mi355x_docker.sh: 8k/1k above 32 users -> chunk 32768; mem-fraction-static 0.8;
    # 4 continuous decode steps; FP8 KV cache
    assert sched["chunk_size"] == 32768 and sched["kv_memory_fraction"] == 1.0
    assert sched["reserved_memory_GiB"] == pytest.approx(0.2 * 288.0)
    assert p.scheduler_steps == 4
    assert p.precision.split("/")[2] == "fp8"
    p = V.plan_row(_imax_row(batch_or_concurrency=16))
    assert p.scenario["clients"][0]["scheduler"]["chunk_size"] == 196608
    # a flag in the row's own text wins over the launcher's
    p = V.plan_row(_imax_row(notes="InferenceMAX run; --mem-fraction-static 0.7"))
    assert p.scenario["clients"][0]["scheduler"]["reserved_memory_GiB"] == pytest.approx(0.3 * 288.0)


def test_inferencemax_per_run_placeholders():
    src = "github:gminneci/mantile@x:reconcile/sources/inferencemax/raw/run_1/agg_bmk.json"
    flags, where = ED.launcher_flags(src, "vllm", "openai/gpt-oss-120b", "H100", 1024, 8192, 64)
    assert ED.parse_flags(flags)["max_num_seqs"] == 64 and where.endswith("gptoss_fp4_h100_docker.sh")
    flags, _ = ED.launcher_flags(src, "sglang", "deepseek-ai/DeepSeek-R1-0528", "H200", 1024, 1024, 64)
    assert ED.parse_flags(flags)["max_running_requests"] == 512
    flags, _ = ED.launcher_flags(src, "sglang", "deepseek-ai/DeepSeek-R1-0528", "H200", 8192, 1024, 64)
    assert ED.parse_flags(flags)["max_running_requests"] == 256
    assert ED.launcher_flags("github:gpustack/gpustack@x", "vllm", "openai/gpt-oss-120b", "H100") == ("", "")


def test_trtllm_bench_and_mlperf_rows_keep_their_heuristics():
    c = _client("Llama-3.1-8B", "H100")
    row = {"engine": "TensorRT-LLM (trtllm-bench, PyTorch backend)", "engine_version": "v1.0", "notes": ""}
    assert V.served_settings("trtllm-1", c, row, 128, 128) is None
    row = {"engine": "TensorRT-LLM (trtllm-serve; default flags)", "engine_version": "v1.2.0rc1", "notes": ""}
    assert V.served_settings("trtllm-1", c, row, 128, 128).max_num_seqs == 2048
    assert V.served_settings("atom-amd", c, {"engine": "ATOM"}, 128, 128) is None


def test_version_tuple():
    assert ED.version_tuple("v0.11.2 (container vllm/vllm-openai:v0.11.2)") == (0, 11, 2)
    assert ED.version_tuple("v0.5.5.post3-rocm700-mi30x") == (0, 5, 5)
    assert ED.version_tuple("") == ()
    assert math.isfinite(ED.activation_GiB(_client("Llama-3.1-8B", "H100").model, 1, 8192, 1.0))


def test_apply_engine_defaults_to_a_client():
    c = _client("Qwen/Qwen3-32B", "H100")
    v = ED.apply_engine_defaults(c, "vllm", "0.11.0")
    assert v.scheduler.max_batch_size == 1024 and v.scheduler.chunk_size == 8192
    assert v.kv_capacity_tokens() < c.kv_capacity_tokens()
    f = ED.apply_engine_defaults(c, "vllm", "0.11.0", "--kv-cache-dtype fp8")
    assert f.precision.kv == "fp8" and f.kv_capacity_tokens() == pytest.approx(2 * v.kv_capacity_tokens(), abs=2)
    with pytest.raises(ED.EngineSettingsError, match="known: vllm"):
        ED.apply_engine_defaults(c, "tgi")


def test_inferencemax_dsr1_fp8_b200_tp4_runs_with_its_own_flags():
    # InferenceX@1d29967c4 dsr1_fp8_b200_docker.sh: TP4 -> --mem-fraction-static 0.95,
    # --max-running-requests 32, --chunked-prefill-size 8192 (TP8 keeps 0.82 / 128 / 32768).
    # DeepSeek-R1 FP8: ~671e9 parameters x 1 byte / 4 devices = 156 GiB per device > 0.82 x 180 =
    # 147.6 GiB, < 0.95 x 180 = 171 GiB: only the TP4 flags let the server start.
    row = dict(engine="SGLang (sglang.launch_server)", engine_version="v0.5.6-cu129-amd64",
               model="deepseek-ai/DeepSeek-R1-0528", precision="FP8 (block-scaled, native)", hardware="B200",
               num_accel=4, tp=4, batch_or_concurrency=8, osl=1024, isl=8192)
    p = V.plan_row(_imax_row(**row))
    assert p.status == "ok", p.reason
    sched = p.scenario["clients"][0]["scheduler"]
    assert sched["max_batch_size"] == 32 and sched["chunk_size"] == 8192
    assert sched["reserved_memory_GiB"] == pytest.approx(0.05 * 180.0)
    assert p.precision.split("/")[2] == "fp8"
    assert 671e9 / 4 / GiB > 0.82 * 180.0
    p8 = V.plan_row(_imax_row(**{**row, "num_accel": 8, "tp": 8}))
    s8 = p8.scenario["clients"][0]["scheduler"]
    assert p8.status == "ok" and s8["max_batch_size"] == 128 and s8["chunk_size"] == 32768
    assert s8["reserved_memory_GiB"] == pytest.approx(0.18 * 180.0)
    # the TP8 flags on 4 devices: the weights do not fit, and the row says so in one line
    p4 = V.plan_row(_imax_row(**{**row, "notes": "InferenceMAX run; --mem-fraction-static 0.82"}))
    if p4.status == "ok":
        from mistfast.specs import parse_scenario
        with pytest.raises(Exception, match="does not fit"):
            parse_scenario(p4.scenario)
    else:
        assert "fit" in p4.reason


def test_scheduler_recv_interval_flag_and_launchers():
    assert ED.parse_flags("--scheduler-recv-interval 30")["recv_interval"] == 30
    s = ED.server_settings("sglang", "v0.5.6", device_name="B200", device_memory_GiB=180.0, tp=8,
                           flags=ED.parse_flags("--scheduler-recv-interval 10"))
    assert s.recv_interval == 10
    assert ED.server_settings("sglang", "v0.5.6", device_name="B200", device_memory_GiB=180.0, tp=8).recv_interval == 1
    src = "github:gminneci/mantile@x:reconcile/sources/inferencemax/raw/run_1/agg_bmk.json"
    # dsr1_fp{4,8}_b200_docker.sh: 10 below 16 users, 30 from 16 on; the FP8 TP4 branch: 10
    for model in ("deepseek-ai/DeepSeek-R1-0528", "nvidia/DeepSeek-R1-0528-FP4"):
        for conc, k in ((4, 10), (8, 10), (16, 30), (64, 30)):
            flags, _ = ED.launcher_flags(src, "sglang", model, "B200", 1024, 1024, conc, tp=8)
            assert ED.parse_flags(flags)["recv_interval"] == k, (model, conc)
    flags, _ = ED.launcher_flags(src, "sglang", "deepseek-ai/DeepSeek-R1-0528", "B200", 8192, 1024, 32, tp=4)
    assert ED.parse_flags(flags)["recv_interval"] == 10
    flags, _ = ED.launcher_flags(src, "sglang", "deepseek-ai/DeepSeek-R1-0528", "H200", 1024, 1024, 32)
    assert "recv_interval" not in ED.parse_flags(flags)


@pytest.mark.parametrize("metric,kind,k,steps,expected", [
    # mean / median: (K - 1)/2 decode iterations of `steps` decode steps at the run's mean TPOT (20 ms)
    ("ttft_ms", "closed loop", 30, 1, 0.5 * 29 * 20.0),
    ("ttft_p50_ms", "closed loop", 10, 1, 0.5 * 9 * 20.0),
    ("ttft_p99_ms", "closed loop", 30, 1, 0.99 * 29 * 20.0),
    ("e2e_mean_ms", "poisson", 10, 4, 0.5 * 9 * 4 * 20.0),
    ("tpot_ms", "closed loop", 30, 1, 0.0),          # TPOT and throughput: no change
    ("output_tok_s", "closed loop", 30, 1, 0.0),
    ("ttft_ms", "offline", 30, 1, 0.0),              # all requests there at the first poll
    ("ttft_ms", "closed loop", 1, 1, 0.0),           # polling every iteration: what the simulation does
])
def test_recv_poll_wait_by_hand(metric, kind, k, steps, expected):
    p = V.RowPlan(id="x", model_text="", hardware_text="", engine_text="", metric=metric, measured=1.0, group="g")
    p.value_key = V.RUN_METRICS[metric][0]
    p.workload_kind, p.recv_interval, p.scheduler_steps = kind, k, steps
    summary = {"tpot_mean_ms": 20.0}
    assert V.recv_poll_wait_ms(p, summary) == pytest.approx(expected)


def test_b200_sglang_rows_carry_the_recv_interval():
    row = dict(engine="SGLang (sglang.launch_server)", engine_version="v0.5.6-cu129-amd64",
               model="deepseek-ai/DeepSeek-R1-0528", precision="FP8 (block-scaled, native)", hardware="B200",
               num_accel=8, tp=8, osl=1024, isl=1024, metric="ttft_p50_ms")
    assert V.plan_row(_imax_row(**row, batch_or_concurrency=8)).recv_interval == 10
    assert V.plan_row(_imax_row(**row, batch_or_concurrency=32)).recv_interval == 30
    assert V.plan_row(_imax_row()).recv_interval == 1      # MI355X: no recv interval


def _gpustack_fp8_row(**kw):
    row = {"id": "X1", "source": "github:gpustack/gpustack@x:docs/performance-lab/qwen3-32b/h100.md",
           "engine": "vLLM (vllm serve; default flags)", "engine_version": "v0.11.0",
           "model": "Qwen/Qwen3-32B-FP8", "precision": "FP8", "hardware": "H100-SXM-80GB",
           "num_accel": 1, "tp": 1, "pp": 1,
           "workload": "offline: all 1000 prompts sent at t=0 (request rate inf); random tokens, 2000 input "
                       "tokens per prompt (vllm bench serve --backend openai-chat --num-prompts 1000)",
           "isl": 2000, "osl": 100, "batch_or_concurrency": "unbounded (all at once)",
           "request_rate": "inf (offline, all at t=0)", "metric": "output_tok_s", "value": 500.0,
           "notes": "serving command: vllm serve Qwen/Qwen3-32B-FP8", "dataset": "random", "engine_family": "vllm"}
    row.update(kw)
    return row


def test_served_fp8_checkpoint_keeps_a_16bit_kv_cache_by_hand(monkeypatch):
    """`vllm serve Qwen/Qwen3-32B-FP8` with no --kv-cache-dtype: cache_dtype "auto" = the model's
    data type (BF16), not the FP8 cache the free-text rule assumes for ModelOpt checkpoints. KV
    tokens by hand: weights 32,761,446,400 x 1 byte (FP8; the embeddings counted at the weight
    format as for every row), activation peak 1 GiB + 8,192 x (2 x 25,600 + 4 x 5,120) x 2 bytes,
    KV = 0.9 x 80 GiB - weights - activation over 2 x 8 x 128 x 64 x 2 bytes per token."""
    # off by default (docs/calibration.md): the row's free-text precision (FP8 cache) as before
    assert V.KV_AUTO_IN_VALIDATE is False
    assert V.plan_row(_gpustack_fp8_row()).precision.split("/")[2] == "fp8"
    monkeypatch.setattr(V, "KV_AUTO_IN_VALIDATE", True)
    p = V.plan_row(_gpustack_fp8_row())
    assert p.status == "ok", p.reason
    assert p.precision.split("/")[:4] == ["fp8", "fp8", "bf16", "bf16"]
    c = C._client_cached(p.model, p.device, 1, 1, p.precision)
    c = _with_scheduler(c, p.scenario["clients"][0]["scheduler"])
    weights = c.weight_bytes_device()
    act = 1 * GiB + 8192 * (2 * 25600 + 4 * 5120) * 2
    per_token = 2 * 8 * 128 * 64 * 2
    assert abs(c.kv_capacity_tokens() - int((0.9 * 80 * GiB - weights - act) // per_token)) <= 1
    # a stated FP8 cache (flag or precision text) and ModelOpt checkpoints keep FP8
    for kw in ({"notes": "serving command: vllm serve Qwen/Qwen3-32B-FP8 --kv-cache-dtype fp8"},
               {"precision": "FP8 (weights and KV cache FP8)"},
               {"model": "nvidia/Qwen3-32B-FP8"}):
        q = V.plan_row(_gpustack_fp8_row(**kw))
        assert q.precision.split("/")[2] == "fp8", kw


def test_int4_awq_rows_are_weight_only():
    """"INT4 (AWQ weights)": W4A16 -- dequantised in a 16-bit GEMM (compute bf16), BF16 KV cache."""
    assert C.parse_precision("INT4 (AWQ weights)") == {"weights": "int4", "compute": "bf16", "kv": "bf16",
                                                         "activations": "bf16"}
    assert C.parse_precision("INT4 (AWQ weights), FP8 KV")["kv"] == "fp8"


# ============================================================================ closed-loop step waits
def test_schedule_ahead_flags_and_engine_defaults():
    """Which engines form step n + 1 while step n runs (engine_defaults.ServerSettings.schedule_ahead):
    vLLM only with --async-scheduling (off by default through v0.13), SGLang's overlap scheduler on
    since v0.4 unless --disable-overlap-schedule, trtllm-serve's overlap scheduler on unless
    disable_overlap_scheduler: true."""
    P = ED.parse_flags
    assert P("--async-scheduling") == {"schedule_ahead": True}
    assert P("async-scheduling: true") == {"schedule_ahead": True}
    assert P("async_scheduling=false") == {"schedule_ahead": False}
    assert P("--no-async-scheduling") == {"schedule_ahead": False}
    assert P("--disable-overlap-schedule") == {"schedule_ahead": False}
    assert P("disable_overlap_scheduler: true") == {"schedule_ahead": False}
    assert P("disable_overlap_scheduler: false") == {"schedule_ahead": True}
    assert "schedule_ahead" not in P("vllm serve m -tp 8 --max-num-seqs 64")
    kw = dict(device_name="H100", device_memory_GiB=80.0, tp=1)
    assert not ED.server_settings("vllm", "v0.11.2", **kw).schedule_ahead
    assert ED.server_settings("vllm", "v0.11.2", flags=P("--async-scheduling"), **kw).schedule_ahead
    assert ED.server_settings("sglang", "v0.5.6", **kw).schedule_ahead
    assert not ED.server_settings("sglang", "v0.3.6", **kw).schedule_ahead
    assert not ED.server_settings("sglang", "v0.5.6", flags=P("--disable-overlap-schedule"), **kw).schedule_ahead
    assert ED.server_settings("trtllm-1", "1.2.0rc2", **kw).schedule_ahead
    # the InferenceMAX gpt-oss vLLM scripts write "async-scheduling: true" into their config.yaml
    src = "github:gminneci/mantile@x:reconcile/sources/inferencemax/raw/run_1/agg_bmk.json"
    for dev in ("B200", "H100", "H200"):
        flags, _ = ED.launcher_flags(src, "vllm", "openai/gpt-oss-120b", dev, 1024, 1024, 16, tp=1)
        assert P(flags)["schedule_ahead"] is True, dev


@pytest.mark.parametrize("metric,ahead,steps,expected", [
    # one step = the run's mean TPOT, 10 ms; landing at a uniform phase of the step in flight
    ("ttft_p50_ms", False, 1, 0.5 * 10.0),
    ("ttft_ms", False, 1, 0.5 * 10.0),
    ("ttft_p90_ms", False, 1, 0.9 * 10.0),
    # scheduled one step ahead (async / overlap): one whole step more
    ("ttft_p50_ms", True, 1, 1.5 * 10.0),
    ("e2e_mean_ms", True, 1, 1.5 * 10.0),
    ("ttft_p90_ms", True, 1, 1.9 * 10.0),
    # multi-step / continuous decode steps already carry the landing wait: only the step ahead
    ("ttft_p50_ms", True, 4, 1.0 * 10.0),
    ("ttft_p50_ms", False, 4, 0.0),
    ("tpot_ms", True, 1, 0.0),
    ("output_tok_s", True, 1, 0.0),
])
def test_closed_loop_step_wait_by_hand(metric, ahead, steps, expected):
    p = V.RowPlan(id="x", model_text="", hardware_text="", engine_text="", metric=metric, measured=1.0, group="g")
    p.value_key = V.RUN_METRICS[metric][0]
    p.workload_kind, p.schedule_ahead, p.scheduler_steps = "closed loop", ahead, steps
    p.concurrency, p.n_requests_sim = 4, 400      # first wave: 4 of 400 prompts
    summary = {"tpot_mean_ms": 10.0}
    weight = 1.0 - V.first_wave_weight(p)
    # the mean carries the first wave's share (4/400 without a wait); the median none of it
    mean_ttft = p.value_key in ("ttft_mean_ms", "e2e_mean_ms")
    assert weight == pytest.approx(1.0 - 4 / 400 if mean_ttft else 1.0)
    assert V.closed_loop_step_wait_ms(p, summary) == pytest.approx(weight * expected)


def test_closed_loop_step_wait_only_where_it_applies(monkeypatch):
    p = V.RowPlan(id="x", model_text="", hardware_text="", engine_text="", metric="ttft_p50_ms", measured=1.0,
                  group="g")
    p.value_key, p.schedule_ahead, p.concurrency, p.n_requests_sim = "ttft_p50_ms", True, 4, 40
    s = {"tpot_mean_ms": 10.0}
    for kind in ("offline", "poisson", "static batch", "closed loop, disaggregated P/D"):
        p.workload_kind = kind
        assert V.closed_loop_step_wait_ms(p, s) == 0.0, kind
    p.workload_kind = "closed loop"
    assert V.closed_loop_step_wait_ms(p, s) == pytest.approx(15.0)
    p.loadgen = True                     # MLPerf LoadGen: no HTTP client
    assert V.closed_loop_step_wait_ms(p, s) == 0.0
    p.loadgen = False
    p.value_key, p.metric = "ttft_p99_ms", "ttft_p99_ms"   # the p99 of 40 prompts is a first-wave one
    assert V.first_wave_weight(p) == 1.0 and V.closed_loop_step_wait_ms(p, s) == 0.0
    p.value_key, p.metric = "ttft_p50_ms", "ttft_p50_ms"
    # plan_value adds the wait to the run's statistic
    assert V.plan_value(p, {"ttft_p50_ms": 100.0, "tpot_mean_ms": 10.0}) == pytest.approx(115.0)
    monkeypatch.setattr(V, "CLOSED_LOOP_STEP_WAIT_ON", False)
    assert V.plan_value(p, {"ttft_p50_ms": 100.0, "tpot_mean_ms": 10.0}) == pytest.approx(100.0)


class _Eff:
    def __init__(self, ms):
        self.efficiency = type("E", (), {"ttft_overhead_ms": ms})()


def test_closed_loop_landing_in_the_kernel_by_hand(monkeypatch):
    """The closed loop's landing wait simulated (session 13): the TTFT / E2E rows of an HTTP closed
    loop run with the client-side time as think time (23 ms -> 0.023 s), and a run simulated so
    (LANDED_IN_KERNEL in its summary) keeps only the step ahead of the post-hoc wait: 1 step of 10 ms
    (async), 0 (synchronous), where the session-12 wait is 1.5 and 0.5 steps. The switch is off by
    default (held out it did not help): on here."""
    monkeypatch.setattr(V, "CLOSED_LOOP_LANDING_IN_KERNEL", True)
    p = V.RowPlan(id="x", model_text="", hardware_text="", engine_text="", metric="ttft_p50_ms", measured=1.0,
                  group="g")
    p.value_key, p.workload_kind, p.schedule_ahead, p.concurrency, p.n_requests_sim = \
        "ttft_p50_ms", "closed loop", True, 4, 40
    assert V.closed_loop_think_s(p, _Eff(23.0)) == pytest.approx(0.023)
    landed = {"tpot_mean_ms": 10.0, V.LANDED_IN_KERNEL: 1.0}
    assert V.closed_loop_step_wait_ms(p, landed) == pytest.approx(10.0)
    assert V.closed_loop_step_wait_ms(p, {"tpot_mean_ms": 10.0}) == pytest.approx(15.0)
    assert V.plan_value(p, {"ttft_p50_ms": 100.0, **landed}) == pytest.approx(110.0)
    p.schedule_ahead = False
    assert V.closed_loop_step_wait_ms(p, landed) == 0.0
    assert V.closed_loop_step_wait_ms(p, {"tpot_mean_ms": 10.0}) == pytest.approx(5.0)
    # not for: throughput / TPOT rows, multi-step rows (their step-grid wait has the landing),
    # LoadGen, disaggregated and open-loop rows, a client without a client-side time, the switch off
    for change in ({"metric": "tpot_ms"}, {"metric": "output_tok_s"}, {"scheduler_steps": 8}, {"loadgen": True},
                   {"workload_kind": "poisson"}, {"workload_kind": "offline"}):
        q = V.RowPlan(**{f: getattr(p, f) for f in ("id", "model_text", "hardware_text", "engine_text", "metric",
                                                    "measured", "group")})
        q.value_key, q.workload_kind, q.concurrency, q.n_requests_sim = p.value_key, "closed loop", 4, 40
        for k, v in change.items():
            setattr(q, k, v)
        assert V.closed_loop_think_s(q, _Eff(23.0)) == 0.0, change
    assert V.closed_loop_think_s(p, _Eff(0.0)) == 0.0
    monkeypatch.setattr(V, "CLOSED_LOOP_LANDING_IN_KERNEL", False)
    assert V.closed_loop_think_s(p, _Eff(23.0)) == 0.0


def test_closed_loop_think_time_reaches_the_kernel():
    """One user, think time 40 ms: each next prompt reaches the engine exactly 40 ms after the
    previous request's last token; the engine is idle then, so its TTFT is the unloaded prefill:
    the same for every request of equal length as with think time 0."""
    import dataclasses
    import numpy as np
    from mistfast.runner import run_points
    row = _imax_row(engine="vLLM (vllm serve)", engine_version="v0.11.2 (container vllm/vllm-openai:v0.11.2)",
                    model="openai/gpt-oss-120b", precision="MXFP4", hardware="B200", num_accel=1, tp=1,
                    isl=1024, osl=64, batch_or_concurrency=1, metric="ttft_p50_ms")
    p = V.plan_row(row)
    assert p.status == "ok", p.reason
    (p,), (pt,) = V._live_points([p])
    out = {}
    for think in (0.0, 0.04):
        res = run_points([dataclasses.replace(pt, think_s=think)], per_request=True, parallel=False)
        rq = res["requests"]
        order = np.argsort(rq["arrival"])
        arr, fin = rq["arrival"][order], rq["t_finish"][order]
        assert np.allclose(arr[1:] - fin[:-1], think, atol=1e-12)
        out[think] = (rq["t_first_tok"] - rq["arrival"])[order]
    assert len(out[0.0]) >= 10 and np.allclose(out[0.04], out[0.0], rtol=1e-9)


def test_inferencemax_rows_carry_schedule_ahead():
    gptoss = dict(engine="vLLM (vllm serve)", engine_version="v0.11.2 (container vllm/vllm-openai:v0.11.2)",
                  model="openai/gpt-oss-120b", precision="MXFP4", hardware="B200", num_accel=1, tp=1,
                  isl=1024, osl=1024, batch_or_concurrency=16, metric="ttft_p50_ms")
    p = V.plan_row(_imax_row(**gptoss))
    assert p.status == "ok", p.reason
    assert p.schedule_ahead is True and p.workload_kind == "closed loop"
    assert V.plan_row(_imax_row()).schedule_ahead is True          # SGLang v0.5.6: overlap scheduler
