"""Block-scaled FP8 dense-GEMM efficiency η_d8 (efficiency.dense_fp8, session 12; docs/calibration.md,
"A fitted dense block-scaled FP8 efficiency"): scope, a hand-computed step, the re-costing at a
trial value, the kernel against the independent twin, and the factorised fit recovering a synthetic
truth (the dense analogue of the η_f8 tests in test_moe_physics / test_calibration_factored)."""
import pytest

from mistfast import calibration as C
from mistfast import step_latency
from mistfast import stepmodel as SM

from .builders import check_efficiency_scope, dense_prefill_gemm_flop, model_client as make_client, synthetic_h100_fp8_steps


def test_dense_fp8_scope():
    """η_d8 acts on the dense GEMMs of a block-scaled FP8 family (Qwen3 dense and MoE, DeepSeek-V3/R1)
    whose weights are FP8 and whose device multiplies FP8 natively (H100, H200, B200, MI300X), and on
    nothing else: not FP8 on A100 (W8A16), not BF16 weights, not Llama / Mixtral FP8 (per-tensor
    ModelOpt / Quark scales), not GenZ compat. Where it does not act, a client with η_d8 = 0.2 is
    bit-identical to one without; where it does, an 8,192-token prefill is slower."""
    cases = (("qwen3-32b", "H100", 1, "fp8", True), ("qwen3-8b", "H100", 1, "fp8", True),
             ("qwen3-14b", "H200", 1, "fp8", True), ("deepseek-v3", "H200", 8, "fp8", True),
             ("deepseek-v3", "B200", 8, "fp8", True), ("deepseek-v3", "MI300X", 8, "fp8", True),
             ("qwen3-235b-a22b", "H100", 4, "fp8", True),
             ("qwen3-32b", "A100", 1, "fp8", False), ("qwen3-32b", "H100", 1, "bf16", False),
             ("llama-3.1-8b", "H100", 1, "fp8", False), ("mixtral-8x7b", "H100", 2, "fp8", False),
             ("gpt-oss-120b", "B200", 1, None, False))
    check_efficiency_scope("dense_fp8", 0.2, SM.dense_fp8_applies, cases)
    g = make_client("qwen3-32b", "H100", precision="fp8", reference="genz", efficiency={"dense_fp8": 0.2})
    assert not SM.dense_fp8_applies(g)


def test_dense_fp8_gemm_by_hand():
    """Qwen3-32B FP8 (block-scaled) on one H100, one 8,192-token prefill. Per layer the dense GEMMs
    hold W = QKV D·(hq + 2·hkv)·dh + O hq·dh·D + FFN 3·D·F = 5,120·80·128 + 64·128·5,120 +
    3·5,120·25,600 = 487,587,840 weights; F = 2·T·W·L = 2·8,192·487,587,840·64 = 5.113e14 FLOP. At
    the FP8 peak 1,978.9 TFLOP/s x η_c 0.75 every one is compute-bound (QKV: 0.58 ms of compute
    against 0.07 ms of HBM), so the GEMM time is F / (P·η_c·η_d8): 0.3445 s at η_d8 = 1 and
    0.3445 / 0.3 = 1.148 s at 0.3. Attention (FlashAttention in BF16 at η_c) does not change."""
    T = 8192
    a = make_client("qwen3-32b", "H100", precision="fp8")
    b = make_client("qwen3-32b", "H100", precision="fp8", efficiency={"dense_fp8": 0.3})
    W, F = dense_prefill_gemm_flop(a.model, T, (5120, 64, 64, 8, 128, 25600))
    assert W == 487_587_840
    P = 1978.9e12 * 0.75
    ra, rb = step_latency(a, prefill=[(0, T)]).breakdown, step_latency(b, prefill=[(0, T)]).breakdown
    assert ra["gemm_s"] == pytest.approx(F / P, rel=1e-9)
    assert rb["gemm_s"] == pytest.approx(F / (P * 0.3), rel=1e-9)
    assert rb["attention_s"] == ra["attention_s"]


def test_recosting_at_trial_dense_fp8_matches_the_client():
    """StepSet.times with eta_d8 equals a client built with that η_d8; None keeps each client's own;
    it leaves clients outside the scope (Llama-3.1-8B FP8, per-tensor) alone; η_f8 and η_d8 together
    (DeepSeek-R1: MLA projections and dense layers at η_d8, experts at η_f8) match the client too."""
    from mistfast.calibration_recost import StepSet
    e0 = {"compute": 0.6, "memory": 0.7}
    base = make_client("qwen3-32b", "H100", precision="fp8", efficiency=e0)
    own = make_client("qwen3-32b", "H100", precision="fp8", efficiency={**e0, "dense_fp8": 0.35})
    llama = make_client("llama-3.1-8b", "H100", precision="fp8", efficiency=e0)
    ds = make_client("deepseek-v3", "H200", tp=8, precision="fp8", efficiency=e0)
    ds_own = make_client("deepseek-v3", "H200", tp=8, precision="fp8",
                         efficiency={**e0, "dense_fp8": 0.35, "expert_fp8": 0.15})
    st = StepSet()
    for c in (base, own, llama, ds):
        st.add(c, [(0, 8192)], [])
    st.build()
    t = st.times(0.6, 0.7, 0.0, eta_d8=0.35, eta_f8=0.15)
    ref = step_latency(own, prefill=[(0, 8192)]).total_s
    assert t[0] == pytest.approx(ref, rel=1e-12) and t[1] == pytest.approx(ref, rel=1e-12)
    assert t[2] == pytest.approx(step_latency(llama, prefill=[(0, 8192)]).total_s, rel=1e-12)
    assert t[3] == pytest.approx(step_latency(ds_own, prefill=[(0, 8192)]).total_s, rel=1e-12)
    t_own = st.times(0.6, 0.7, 0.0)
    assert t_own[0] == pytest.approx(step_latency(base, prefill=[(0, 8192)]).total_s, rel=1e-12)
    assert t_own[1] == pytest.approx(ref, rel=1e-12)
    assert t_own[1] > 2.0 * t_own[0]


def test_dense_fp8_kernel_matches_the_twin():
    """The kernel with η_d8 = 0.35 equals the independent Python twin (tests/reference) on mixed
    prefill + decode steps of Qwen3-32B FP8 (tp 1, 2) and DeepSeek-R1 FP8 with η_f8 as well."""
    from tests.reference.step_reference import reference_step_time
    cases = (("qwen3-32b", "H100", {"tp": 1}, {}), ("qwen3-32b", "H100", {"tp": 2}, {}),
             ("deepseek-v3", "H200", {"tp": 8}, {"expert_fp8": 0.15}))
    for model, dev, kw, extra in cases:
        c = make_client(model, dev, precision="fp8",
                        efficiency={"compute": 0.7, "memory": 0.8, "dense_fp8": 0.35, **extra}, **kw)
        for pf, dec in [([(0, 8192)], []), ([(0, 3000), (500, 700)], [(1, 0, 900)] * 17), ([], [(1, 0, 2000)] * 64)]:
            got = step_latency(c, prefill=pf, decode=dec).total_s
            want, _ = reference_step_time(c, pf, dec)
            assert got == pytest.approx(want, rel=1e-9), (model, kw, pf)


def test_dense_fp8_is_identified_by_block_scaled_rows_against_per_tensor_rows(monkeypatch):
    """η_d8 is seen only by the block-scaled FP8 rows. Truth on (H100, sglang): η_c 0.5, η_m 0.6 for
    every GEMM and η_d8 0.4 on the dense GEMMs of Qwen3-8B FP8. Llama-3.1-8B FP8 rows (per-tensor,
    outside the scope) fix η_c and η_m; the Qwen3-8B prefills (256-8k tokens, compute-bound from a
    few hundred tokens) fix η_d8: recovered within 3 %. On the Llama rows alone no row sees it and
    the weak root prior takes it from its start (DENSE_FP8_START) back to its centre 1 (off)."""
    from mistfast import calibration_factored as CF
    if CF.DENSE_FP8_PARAM not in CF.FACTOR_PARAMS:   # FIT_DENSE_FP8 turned off: switch it on
        monkeypatch.setattr(CF, "FACTOR_PARAMS", CF.FACTOR_PARAMS + (CF.DENSE_FP8_PARAM,))
    truth = {"compute": 0.5, "memory": 0.6, "dense_fp8": 0.4}
    for model in ("llama-3.1-8b", "qwen3-8b"):
        o0 = C.StepObservation(model=model, device="H100", time_s=1.0, decode=((1, 1),), tp=1,
                               precision="fp8/fp8/fp8/bf16")
        assert SM.dense_fp8_applies(C.with_efficiency(C.default_client(o0), truth)) is (model == "qwen3-8b")
    obs = synthetic_h100_fp8_steps(truth, (("llama-3.1-8b", 1), ("qwen3-8b", 1)))
    sd = {"device": 10.0, "engine": 10.0, "pair": 1e-4, "publisher": 1e-4}
    e = C.fit_factored(obs, prior_sd=sd).efficiency("H100", "sglang")
    assert e["dense_fp8"] == pytest.approx(0.4, rel=0.03)
    assert e["compute"] == pytest.approx(0.5, rel=0.02) and e["memory"] == pytest.approx(0.6, rel=0.02)
    per_tensor = C.fit_factored([o for o in obs if o.model == "llama-3.1-8b"], prior_sd=sd).efficiency("H100", "sglang")
    assert per_tensor["dense_fp8"] > 0.97 and CF.DENSE_FP8_START < 0.7
