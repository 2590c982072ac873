"""Inputs several test modules build alike: a GPUStack-style offline burst row for ``validate``, the
synthetic step observations a factorised-fit identification test fits, the scope check of an
efficiency field that acts on some clients only, and the client of the hand-computed step tests."""
from mistfast import calibration as C
from mistfast import step_latency
from mistfast.specs import make_client


def model_client(*args, **kw):
    """A client at MODEL.md's efficiencies (0.75; tau = 0, eta_net = 1), no calibration: the
    hand-computed step tests' client (one that sets no efficiency gets the pooled calibration
    instead). Arguments as :func:`mistfast.specs.make_client`."""
    kw.setdefault("efficiency", {})
    return make_client(*args, **kw)


def gpustack_burst_row(prompt_tokens: int, output_tokens: int, **kw) -> dict:
    """A measurement row of a GPUStack-style burst: 50 random-token prompts of ``prompt_tokens``
    sent at t = 0 to one H100 through ``vllm bench serve`` (openai-chat), ``output_tokens`` each;
    ``kw`` replaces any field (isl, osl, engine, model, metric, value, workload, notes ...)."""
    isl, osl = prompt_tokens, output_tokens
    row = dict(id="t1", source="github:gpustack/gpustack@abc:docs/x.md", engine="vLLM (vllm serve; default flags)",
               engine_version="v0.11.0", model="Qwen/Qwen3-8B", precision="BF16", hardware="H100-SXM-80GB",
               num_accel=1, tp=1, pp=1, isl=isl, osl=osl,
               workload=f"offline: all 50 prompts sent at t=0 (request rate inf); random tokens, {isl} input tokens "
                        f"per prompt (vLLM random dataset, range ratio 0), --random-output-len {osl} (vllm bench serve "
                        "--backend openai-chat --endpoint /v1/chat/completions --num-prompts 50)",
               batch_or_concurrency="unbounded (all at once)", request_rate="inf (offline, all at t=0)",
               metric="requests_s", value=10.0, notes="")
    row.update(kw)
    return row



def sglang_qwen3_fp8_burst_row(**kw) -> dict:
    """:func:`gpustack_burst_row` (2,000-token prompts, 100 outputs) of SGLang v0.5.5.post1 serving the
    official block-scaled FP8 checkpoint Qwen/Qwen3-14B-FP8 on one H100: a row in the scope of the
    Hopper block-scaled FP8 terms; ``kw`` replaces any field."""
    return gpustack_burst_row(2000, 100, **{**dict(engine="SGLang (sglang.launch_server; default flags)",
                                                   engine_version="v0.5.5.post1", model="Qwen/Qwen3-14B-FP8",
                                                   precision="FP8", value=7.0), **kw})


def synthetic_h100_fp8_steps(truth: dict, models_tp) -> list:
    """Step observations of (H100, sglang), FP8 weights and compute, published by "pub": for each
    (model, tp) five prefills (256-8k tokens) and six decode batches (1, 16, 128 sequences at 512
    and 8,192 tokens of context), timed by the step model at the efficiencies ``truth`` -- the
    synthetic truth a fit must recover."""
    obs = []
    for model, tp in models_tp:
        o0 = C.StepObservation(model=model, device="H100", time_s=1.0, decode=((1, 1),), tp=tp,
                               precision="fp8/fp8/fp8/bf16")
        c = C.with_efficiency(C.default_client(o0), truth)
        shapes = [(((0, P),), ()) for P in (256, 1024, 2048, 4096, 8192)]
        shapes += [((), ((1, kv),) * B) for B in (1, 16, 128) for kv in (512, 8192)]
        for pf, dec in shapes:
            t = step_latency(c, prefill=list(pf), decode=list(dec)).total_s
            obs.append(C.StepObservation(model=model, device="H100", time_s=t, prefill=pf, decode=dec, tp=tp,
                                         precision="fp8/fp8/fp8/bf16", engine="sglang",
                                         id=f"{model}-{len(obs)}", source="pub"))
    return obs


def check_efficiency_scope(field: str, value: float, applies, cases) -> None:
    """For each (model, device, tp, precision or None, acts) case: ``applies`` (a stepmodel scope
    function) says whether efficiency ``field`` acts on the client, and an 8,192-token prefill at
    ``field = value`` is slower than at MODEL.md's efficiencies where it acts, bit for bit the same
    where it does not."""
    for model, dev, tp, prec, acts in cases:
        kw = {"efficiency": {}} if prec is None else {"efficiency": {}, "precision": prec}
        a = make_client(model, dev, tp=tp, **kw)
        b = make_client(model, dev, tp=tp, **{**kw, "efficiency": {field: value}})
        assert applies(b) is acts, (model, dev, prec)
        ta = step_latency(a, prefill=[(0, 8192)]).total_s
        tb = step_latency(b, prefill=[(0, 8192)]).total_s
        assert (tb > ta) if acts else (tb == ta), (model, dev, prec)


def dense_prefill_gemm_flop(model, tokens: int, dims: tuple) -> tuple[int, float]:
    """(W, F) of a dense GQA model's prefill, by hand: per layer the GEMMs hold W = QKV D·(hq + 2·hkv)·dh
    + O hq·dh·D + FFN 3·D·F weights, and a T-token prefill costs F = 2·T·W·L FLOP. ``dims`` =
    (D, L, hq, hkv, dh, F) as written in the test's docstring; checked against the catalog model first,
    so a changed catalog entry fails here instead of silently moving the expected value."""
    D, L, hq, hkv, dh, Fd = dims
    m = model
    assert (m.hidden_size, m.num_layers, m.num_heads, m.num_kv_heads, m.head_dim, m.ffn_dim) == dims
    W = D * (hq + 2 * hkv) * dh + hq * dh * D + 3 * D * Fd
    return W, 2.0 * tokens * W * L
