"""Client spec -> flat parameter vector of the step-latency kernel, and the public
``step_latency`` API built on it."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from .specs import DTYPE_BYTES, ClientSpec, LinkSpec
from .kernels import steptime as K
from . import launch_time

GENZ_GB = float(2**30)          # GenZ reads "X GB/s" as X * 2^30 B/s
GENZ_ONCHIP_GBps = 18000.0      # GenZ on-chip (SRAM) bandwidth, GiB/s
GENZ_COMPUTE_MULT = {"fp32": 2.0, "tf32": 2.0, "bf16": 1.0, "fp16": 1.0, "fp8": 0.5, "int8": 0.5,
                     "fp6": 0.5, "fp4": 0.25, "int4": 0.25, "mxfp4": 0.25, "nvfp4": 0.25}
COLLECTIVE_STARTUP_S = 5e-6     # s0 of MODEL.md §2.1 collectives
DEFAULT_INTER_NODE = LinkSpec(name="RDMA-400G (default)", bandwidth_GBps=50.0, latency_us=5.0, efficiency=1.0,
                              source="400 Gb/s NIC = 50 GB/s per direction (MODEL.md §9.2); latency assumed")


# Achieved share of the scale-up link's per-direction bandwidth in the TP group's collectives
# (AllReduce after attention and after the FFN, the LM-head AllGather): docs/step-model.md, "TP
# scaling of short prefills, session 11". None = off (the link's nominal bandwidth x
# efficiency.network, as before, bit for bit). A number in (0, 1] divides the bandwidth term of
# every TP collective by it: small decode messages are latency-bound and barely move, a long
# prefill's 40-MB AllReduces slow down in proportion. Measured held out and shipped OFF: 1/3 (what
# the InferenceMAX gpt-oss TTFT slopes ask for) improved that fold (12.6 -> 11.6 %) but broke the
# MLPerf one (14.1 -> 18.4 %: Llama-3.1-405B TensorRT-LLM decode AllReduces are bandwidth-bound and
# reach the nominal link), and isolated collective benchmarks reach ~0.7 (vLLM PR #42324), so the
# missing TP-proportional per-token cost of gpt-oss is not the all-reduce alone.
TP_BUS_EFFICIENCY: float | None = None


# Per-rank width of TP-split expert GEMMs (docs/step-model.md, "Per-rank GEMM shapes, session 13").
# A GEMM whose per-rank width n is small reaches a smaller share of the peak: every output tile
# carries a fixed prologue / epilogue (and the down projection a K loop of n only) that does not
# shrink with n. Modelled as a half-width efficiency eta_N(n) = n / (n + N0), N0 in columns; the
# expert GEMMs split by TP inside an expert (t_e = tp / ep > 1) run n = De / t_e columns per rank
# (gpt-oss-120b at tp 8: 360 of 2,880), and the factor is taken relative to the whole expert,
# eta_N(De / t_e) / eta_N(De), so experts that are not split (t_e = 1: EP, tp 1) keep their step
# time bit for bit and the fitted eta_c / eta_e keep their meaning (whole experts). It multiplies
# the expert GEMM peak only: decode steps, which read the expert weights, barely move; dense GEMMs
# (Llama-3.1-405B's 13,312-wide FFN slices at tp 4) do not move at all. None = off (as before).
# Measured held out at N0 = 400 and shipped OFF: InferenceMAX fold TTFT 18.0 -> 17.4 %, but all rows
# 11.3 -> 11.4 % (DeepSeek-R1 TPOT / throughput worse), MLPerf fold 11.6 -> 11.6 %.
EXPERT_SPLIT_HALF_WIDTH: float | None = None
# True: leave the block-scaled W8A8 FP8 experts (expert_fp8_applies: DeepSeek-V3/R1, Qwen3 FP8) out
# of the split factor. Their η_f8 was measured equally low on TP-split and EP rows (no width
# dependence in those data), and in the InferenceMAX fold the factor on them (DeepSeek-R1 at tp 8:
# 0.466) made their TPOT and throughput worse while gpt-oss improved (docs/step-model.md, session 13).
# Not measured held out on its own: a switch for the refit.
EXPERT_SPLIT_SKIP_FP8_BLOCK = False

# Replicated element-wise traffic (docs/step-model.md, "Replicated element-wise traffic, session 16").
# Every TP rank runs the residual-add + RMSNorm kernels and the MoE combine on all of its token rows:
# their HBM traffic per prompt token does not shrink with tp, and the step model had no op for them.
# InferenceMAX gpt-oss-120b held out: the 8k prompts are under-predicted more as tp grows (measured
# marginal time per prompt token on B200 vLLM 6.8 / 5.6 / 5.2 / 5.0 us at tp 1 / 2 / 4 / 8). Hand
# physics, elements of width D per token row, values fixed before measuring (not fitted):
#   per layer, two fused residual-add + RMSNorm passes (vLLM fused_add_rms_norm, TRT-LLM's
#   residual + norm): each reads x and the residual and writes the residual and the normed output,
#   4 D each -> 8;
#   per MoE layer, the combine (vLLM moe_sum, TRT-LLM finalize): reads the K expert outputs and writes
#   one row -> K + 1 (the experts' own K-row input gather and output write are in the expert op).
# A pair (elements per layer, elements per MoE layer beyond the K expert rows; both in units of D) or
# None = off (no op: the step time bit for bit). The bytes per element are the client's activation width
# (prec.activations); the residual stream of W8A8 FP8 engines is BF16, so their traffic is costed at half
# (a known simplification, not measured).
# ON since session 16: held out on four folds it took 74 TTFT rows net under 15 % (InferenceMAX
# TTFT 15.8 -> 14.2 %; GPUStack 18.7 -> 19.2 %); the full leave-one-source-out refit with it: all rows
# 12.3 -> 11.7 %, TTFT 17.6 -> 16.6 %, TPOT 11.8 -> 11.5 %, throughput 8.2 -> 7.9 %, requests/s
# 4.9 -> 5.3 % (docs/step-model.md, same section).
REPLICATED_ELEMENTWISE_ON = (8.0, 1.0)   # (8 per layer, K + 1 per MoE layer)
REPLICATED_ELEMENTWISE: tuple[float, float] | None = REPLICATED_ELEMENTWISE_ON


# Sustained matrix peak of CDNA3 (docs/engines.md, "vLLM ROCm at hundreds of sequences: the sustained
# matrix peak, session 14"). The catalog's `tflops` are datasheet peaks at the 2,100 MHz boost clock; a
# dense GEMM on MI300X / MI325X runs at a far lower clock (power management, AMD: "the power management
# system reduces the clock speed when running dense tensor-core logic"). AMD publishes the
# Max-Achievable FLOPs (MAF) of its hipBLASLt GEMMs (rocm.blogs.amd.com "Measuring Max-Achievable FLOPs
# - Part 2", Table 1; github:ROCm/rocm-blogs blogs/software-tools-optimization/
# measuring-max-achievable-flops-part2/README.md): MI300X FP16 654, BF16 708, FP8 1,273 TFLOPS (median
# clocks 1,115 / 1,207 / 1,230 MHz); MI325X 794, 843, 1,519 TFLOPS (1,354 / 1,447 / 1,464 MHz). As a
# share of the datasheet peak (1,307.4 / 2,614.9): MI300X 0.50 / 0.54 / 0.49, MI325X 0.61 / 0.64 / 0.58
# -- where NVIDIA parts sustain most of theirs. A calibration pools the compute efficiency of all
# devices, so without this an MI300X compute-bound step is costed at the pooled share of 2,615 TFLOPS.
# Read from the vendor's document, not from the validation rows. None of the other devices has a
# vendor-published MAF: they keep their datasheet peak (factor 1). MI355X (CDNA4), searched in session 15:
# the ROCm blog's Table 1 has MI300X and MI325X only, and no other rocm.blogs.amd.com / ROCm/rocm-blogs page
# gives an MI355X MAF. AMD's github:AMD-AGI/TraceLens keeps `max_achievable_tflops` per device in
# TraceLens/Agent/Analysis/utils/arch/MI355X.json, without a measurement note and changed between commits
# (c89aa71: bf16 1,686 / fp8 3,567; a895738: bf16 1,613 / fp16 1,518 / fp8 2,905 TFLOPS): not used.
CDNA3_MAF_TFLOPS: dict[str, dict[str, float]] = {
    "MI300X": {"fp16": 654.0, "bf16": 708.0, "fp8": 1273.0},
    "MI325X": {"fp16": 794.0, "bf16": 843.0, "fp8": 1519.0},
}
# Whether the compute peaks of a device in CDNA3_MAF_TFLOPS are its MAF instead of the datasheet peak
# (False: the datasheet peak, bit for bit as before). Measured held out (session 14, docs/engines.md): it
# improves every row set with CDNA3 rows -- MLPerf fold (--cv-only mlcommons) 12.9 -> 11.0 % (MI300X/MI325X
# vLLM Offline throughput +33..+78 % -> -16..+2 %), AMD page fold 6.0 -> 4.5 %, the InferenceMAX MI300X /
# MI325X SGLang rows 11.7 -> 8.5 % -- but through the fits the InferenceMAX NVIDIA rows get worse (3,227 rows
# 9.2 -> 9.6 %, TTFT 14.5 -> 15.4 %), so the InferenceMAX fold goes 10.74 -> 10.88 % and all LOSO TTFT rows
# 19.4 -> 19.8 % (all rows 13.09 -> 13.03 %). OFF: for the lead's refit to decide.
SUSTAINED_PEAK_ON = False


def sustained_peak_factor(device, dtype: str) -> float:
    """MAF / datasheet peak of ``device`` for the MMA format ``dtype`` runs at
    (:data:`CDNA3_MAF_TFLOPS`, :data:`SUSTAINED_PEAK_ON`); 1.0 when the switch is off, the device has
    no published MAF, or none for that format."""
    if not SUSTAINED_PEAK_ON:
        return 1.0
    maf = CDNA3_MAF_TFLOPS.get(getattr(device, "name", "") or "")
    fmt = device.mma_format(dtype) if maf else None
    if not maf or fmt not in maf or fmt not in device.tflops:
        return 1.0
    return min(1.0, maf[fmt] / device.tflops[fmt])


def expert_split_factor(client: ClientSpec) -> float:
    """eta_N(De / t_e) / eta_N(De) of EXPERT_SPLIT_HALF_WIDTH (1.0 when off, for a dense model, for
    experts not split by TP, in GenZ compat, and for block-scaled FP8 experts when
    EXPERT_SPLIT_SKIP_FP8_BLOCK)."""
    n0 = EXPERT_SPLIT_HALF_WIDTH
    if n0 is None:
        return 1.0
    if not (isinstance(n0, (int, float)) and math.isfinite(n0) and n0 >= 0.0):
        raise ValueError(f"stepmodel.EXPERT_SPLIT_HALF_WIDTH = {n0!r}: allowed a number of columns >= 0 or None")
    m = client.model
    te = client.tp // max(client.ep, 1)
    if client.reference == "genz" or not m.is_moe or te <= 1:
        return 1.0
    if EXPERT_SPLIT_SKIP_FP8_BLOCK and expert_fp8_applies(client):
        return 1.0
    de = float(m.expert_ffn_dim)
    n = de / te
    return (n / (n + n0)) / (de / (de + n0))


def tp_bus_efficiency() -> float:
    """The TP collectives' bandwidth share (1.0 when the switch is off)."""
    f = TP_BUS_EFFICIENCY
    if f is None:
        return 1.0
    if not (0.0 < f <= 1.0):
        raise ValueError(f"stepmodel.TP_BUS_EFFICIENCY = {f!r}: allowed a number in (0, 1] or None")
    return float(f)


def tp_link(client: ClientSpec, group: int) -> tuple[float, float]:
    """(alpha s, beta B/s per direction) of the slowest link of a ring over ``group`` devices."""
    dev = client.device
    genz = client.reference == "genz"
    unit = GENZ_GB if genz else 1e9
    eff = client.efficiency.network
    if group <= dev.scaleup_domain:
        link = client.intra_node_link
        if link is None:
            bw = dev.scaleup_bidir_GBps / 2.0
            if bw <= 0:
                link = client.inter_node_link or DEFAULT_INTER_NODE
            else:
                return dev.scaleup_latency_us * 1e-6, bw * unit * eff
    else:
        link = client.inter_node_link or DEFAULT_INTER_NODE
    return link.latency_us * 1e-6, link.bandwidth_GBps * unit * link.efficiency * eff


# Which expert GEMMs efficiency.expert_compute (η_e) slows (docs/step-model.md, "Expert GEMM
# efficiency"): "all" of them; only "weight_only" ones, whose narrow weights are dequantised
# inside a 16-bit GEMM (W4A16 / W8A16: gpt-oss MXFP4 experts on Hopper, A100 and MI300X); or
# "gemm16": every expert GEMM whose multiply runs at 16 bits on the device -- the weight-only ones,
# BF16/FP16 experts (vLLM's Triton fused_moe, the same grouped GEMM over T·K/E tokens per expert)
# and a format the device has no MMA for (an FP8 checkpoint on A100 runs W8A16, Marlin). Never
# native low-precision MMAs (FP8 x FP8 on Hopper, MXFP4 x MXFP8 on Blackwell: DeepGEMM / CUTLASS
# grouped GEMMs), whose η_e learned on Hopper's 16-bit kernels made Blackwell's TTFT far worse.
# "weight_only+tp_split" (measured, off): the weight-only ones and every expert split by TP inside
# the expert (docs/moe-fidelity.md, session 10).
EXPERT_ETA_SCOPE = "gemm16"
EXPERT_ETA_SCOPES = ("all", "weight_only", "gemm16", "weight_only+tp_split")


def expert_gemm_bits16(client: ClientSpec) -> bool:
    """True when this client's expert GEMMs multiply at 16 bits on its device: the expert compute
    format as the device runs it (``DeviceSpec.mma_format``: FP8 on A100 -> bf16) is 2 bytes."""
    fmt = client.device.mma_format(client.precision.expert_compute) or client.precision.expert_compute
    return DTYPE_BYTES[fmt] >= 2


# Dense GEMMs of a weight-only model (W8A16 / W4A16: an FP8 checkpoint on A100, which has no FP8
# MMA, or an AWQ / GPTQ INT4 one) run the same dequantising kernels (Marlin) as weight-only expert
# GEMMs, so η_e (efficiency.expert_compute, "the weight-only GEMM's share of the peak") slows them
# too. GPUStack's vLLM bursts on A100: Qwen3-14B BF16 1,887 output tok/s, FP8 (W8A16) 1,605, AWQ
# 1,802; Qwen3-32B 832 / 751 / 851 -- no gain from the narrower weights where the GEMMs are
# compute-bound. docs/step-model.md, "Expert GEMM efficiency".
DENSE_WEIGHT_ONLY_ETA = False


def dense_eta_applies(client: ClientSpec) -> bool:
    """True when η_e acts on this client's dense GEMMs (QKV, O, dense FFN, LM head): weights
    narrower than the 16-bit format the device multiplies them in (DENSE_WEIGHT_ONLY_ETA)."""
    if client.reference == "genz" or not DENSE_WEIGHT_ONLY_ETA:
        return False
    prec = client.precision
    mma = client.device.mma_format(prec.compute) or prec.compute
    return DTYPE_BYTES[mma] >= 2 and DTYPE_BYTES[prec.weights] < DTYPE_BYTES[mma]


# Expert parallelism under TP attention (docs/step-model.md, "MoE expert parallelism"). False = EP
# moves no tokens, because after the attention AllReduce every rank of the TP group holds all T
# tokens; a rank keeps the rows routed to its own experts and the FFN AllReduce sums the partial
# outputs. That is what the engines run without DP attention: SGLang's StandardDispatcher
# (moe_a2a_backend "none", the default) only remaps the top-k ids to local experts (-1 elsewhere) and
# its combine returns the rank's partial output for the TP AllReduce
# (sgl-project/sglang@008b79d2:python/sglang/srt/layers/moe/token_dispatcher/standard.py); vLLM and
# TensorRT-LLM use all-to-all kernels only with DP attention. True = the model as it was: a dispatch
# and a combine of every token's K copies per MoE layer on top of the AllReduces (GenZ compat always).
# Ships True (the former cost, OFF): held out, the InferenceMAX fold got worse with False (all rows
# 13.2 -> 13.8 %, the 294 EP rows 13.5 -> 24.0 %: the phantom All-to-All stood in for costs the
# B200/MI355X SGLang rows miss at ep 1 too), although the in-source fit of the B200 SGLang DeepSeek
# rows improves (test rows 14.9 -> 9.8 %); numbers in docs/moe-fidelity.md, session 10.
EP_DISPATCH_UNDER_TP_ATTENTION = True


def expert_eta_applies(client: ClientSpec) -> bool:
    """True when η_e acts on this client's expert GEMMs (EXPERT_ETA_SCOPE; never in GenZ compat)."""
    if client.reference == "genz":
        return False
    if EXPERT_ETA_SCOPE == "all":
        return True
    if EXPERT_ETA_SCOPE == "gemm16":
        return expert_gemm_bits16(client)
    if EXPERT_ETA_SCOPE not in ("weight_only", "weight_only+tp_split"):
        raise ValueError(f"stepmodel.EXPERT_ETA_SCOPE = {EXPERT_ETA_SCOPE!r}: allowed {', '.join(EXPERT_ETA_SCOPES)}")
    prec = client.precision
    weight_only = DTYPE_BYTES[prec.expert_compute] >= 2 and DTYPE_BYTES[prec.expert_weights] < DTYPE_BYTES[prec.expert_compute]
    if EXPERT_ETA_SCOPE == "weight_only+tp_split":
        # also the experts split by TP inside an expert (t_e = tp/ep > 1): every rank runs a thin
        # De/t_e slice of each expert (DeepSeek-R1 at tp 8, ep 1: 256 of 2,048 columns), measured
        # 2-4x slower per prompt token than EP's whole experts on the InferenceMAX rows (session 10)
        return weight_only or (client.model.is_moe and client.tp // max(client.ep, 1) > 1)
    return weight_only


# W8A8 FP8 expert GEMMs (docs/moe-fidelity.md, "Session 11"): efficiency.expert_fp8 (η_f8) is their
# share of the device's FP8 peak, on top of η_c, for MoE checkpoints whose experts are stored in FP8 and
# multiplied at the native FP8 rate (DeepSeek-V3/R1 and Qwen3-FP8: 128x128 weight blocks and 1x128
# activation groups, each K block's partial sums rescaled in FP32 outside the MMA: SGLang's
# fused_moe_triton w8a8 block kernel, DeepGEMM, FlashInfer's TRT-LLM FP8 block-scale MoE, AITER on
# MI300X). Not the 16-bit expert GEMMs (η_e, EXPERT_ETA_SCOPE), not FP4 experts (gpt-oss MXFP4,
# DeepSeek NVFP4), not an FP8 checkpoint on a device without FP8 MMAs (A100: W8A16, η_e). It is a
# separate fitted parameter because these rows run at a few per cent of the FP8 peak in prefill
# (the InferenceMAX and GPUStack DeepSeek-R1 rows, TP-split and EP alike), far below what η_e learns on
# the 16-bit kernels. 1 (the default of every client and of a calibration without it) leaves the model
# as it was; calibration_factored.FIT_EXPERT_FP8 fits it.
# Model families whose FP8 checkpoints are block-scaled (128 x 128 weight blocks, 1 x 128 activation
# groups): DeepSeek-V3/R1 (native FP8, and Kimi-K2 on its architecture), Qwen3's official FP8 releases
# ("fine-grained fp8 quantization with block size of 128"). Not Mixtral's FP8 checkpoints (per-tensor
# scales, ModelOpt / Quark: the MLPerf rows), whose GEMMs accumulate inside the MMA: with them in the
# scope the MLPerf fold's Mixtral TTFT went from −37 % to +40,000 % held out (docs/moe-fidelity.md,
# session 11). Prefixes of ModelSpec.name.
FP8_BLOCK_SCALED_MODELS = ("deepseek-", "qwen3-", "kimi-")


def expert_fp8_applies(client: ClientSpec) -> bool:
    """True when η_f8 (efficiency.expert_fp8) acts on this client's expert GEMMs: a MoE model of a
    block-scaled FP8 family (FP8_BLOCK_SCALED_MODELS) whose expert weights are FP8 and whose device
    multiplies FP8 natively (never in GenZ compat)."""
    if client.reference == "genz" or not client.model.is_moe:
        return False
    if not client.model.name.lower().startswith(FP8_BLOCK_SCALED_MODELS):
        return False
    prec = client.precision
    return prec.expert_weights == "fp8" and client.device.mma_format(prec.expert_compute) == "fp8"


def dense_fp8_applies(client: ClientSpec) -> bool:
    """True when η_d8 (efficiency.dense_fp8) acts on this client's dense GEMMs (QKV or MLA
    projections, O, dense FFN, LM head: every GEMM costed at the dense peak; the shared experts run at
    the expert peak, η_f8's): a model of a block-scaled FP8 family (FP8_BLOCK_SCALED_MODELS), dense or
    MoE, whose weights are FP8 and whose device multiplies FP8 natively (never in GenZ compat). The dense analogue of
    expert_fp8_applies (session 12): not the FP8 checkpoints of other families (per-tensor scales),
    not FP8 on A100 (W8A16: dense_eta_applies)."""
    if client.reference == "genz":
        return False
    if not client.model.name.lower().startswith(FP8_BLOCK_SCALED_MODELS):
        return False
    prec = client.precision
    return prec.weights == "fp8" and client.device.mma_format(prec.compute) == "fp8"


def fp8_block_factor(client: ClientSpec, compute_fmt: str) -> float:
    """efficiency.fp8_block_share for GEMMs that multiply in FP8 (block-scaled FP8 checkpoints on a
    part without block-scaled MMAs; 1 = off), 1 for any other format: one factor for the dense and
    the expert FP8 peaks (x 1.0 is exact, so the default leaves both bit for bit)."""
    return client.efficiency.fp8_block_share if compute_fmt == "fp8" else 1.0


def client_params(client: ClientSpec) -> np.ndarray:
    """The kernel's parameter vector for one client (one TP x PP x EP engine)."""
    m, dev, prec, eff = client.model, client.device, client.precision, client.efficiency
    genz = client.reference == "genz"
    t, p, e = client.tp, client.pp, client.ep
    prm = np.zeros(K.N_PARAMS)
    if genz:
        # one `bits` value scales everything (MODEL.md §2.3 compat)
        b = DTYPE_BYTES[prec.weights]
        bw_b = ba_b = bkv_b = b
        fpeak = dev.peak_flops("bf16") / GENZ_COMPUTE_MULT[prec.weights]
        fpeak_attn = fpeak
        unit = GENZ_GB
        prm[K.P_BW_ONCHIP] = GENZ_ONCHIP_GBps * GENZ_GB * eff.memory
        prm[K.P_GENZ] = 1.0
        prm[K.P_GENZ_KV_EXTRA] = 1.0  # MIST: decode KV = prompt + generated (MODEL.md §2.4)
    else:
        bw_b, ba_b, bkv_b = DTYPE_BYTES[prec.weights], DTYPE_BYTES[prec.activations], DTYPE_BYTES[prec.kv]
        fpeak = dev.peak_flops(prec.compute)
        # attention matmuls run in the activation precision (FlashAttention is bf16/fp16 unless
        # the engine enables fp8 attention): assumption
        fpeak_attn = dev.peak_flops(prec.activations)
        if SUSTAINED_PEAK_ON:   # CDNA3 at its published max-achievable GEMM rate (off: bit for bit)
            fpeak *= sustained_peak_factor(dev, prec.compute)
            fpeak_attn *= sustained_peak_factor(dev, prec.activations)
        unit = 1e9
        prm[K.P_BW_ONCHIP] = 1.0  # unused
        prm[K.P_GENZ_KV_EXTRA] = 1.0
    prm[K.P_FPEAK] = fpeak * eff.compute * (eff.expert_compute if dense_eta_applies(client) else 1.0)
    if eff.dense_fp8 != 1.0 and dense_fp8_applies(client):   # η_d8 (session 12); x 1.0 skipped: bit for bit
        prm[K.P_FPEAK] *= eff.dense_fp8
    if not genz:
        prm[K.P_FPEAK] *= fp8_block_factor(client, prec.compute)
    prm[K.P_FPEAK_ATTN] = fpeak_attn * eff.compute
    if client.attention_kernel_share != 1.0:   # a slower attention kernel (x 1.0 skipped: bit for bit)
        prm[K.P_FPEAK_ATTN] *= client.attention_kernel_share
    prm[K.P_BW] = dev.memory_bandwidth_GBps * unit * eff.memory
    prm[K.P_TAU] = eff.op_overhead_us * 1e-6
    D, dh = m.hidden_size, m.head_dim
    hq, hkv = math.ceil(m.num_heads / t), math.ceil(m.num_kv_heads / t)
    prm[K.P_D] = D
    prm[K.P_V] = m.vocab_size
    prm[K.P_V_SHARD] = m.vocab_size / t
    if m.is_moe:
        prm[K.P_N_MOE] = m.num_moe_layers
        prm[K.P_N_DENSE] = m.num_layers - prm[K.P_N_MOE]
    else:
        prm[K.P_N_DENSE] = m.num_layers
    prm[K.P_PP] = p
    prm[K.P_STAGE_LAYERS] = math.ceil(m.num_layers / p)
    prm[K.P_HQ] = hq
    prm[K.P_HKV] = hkv
    prm[K.P_DH] = dh
    _attention_block(m, hq, hkv, prm)
    if m.is_mla:
        prm[K.P_MLA] = 1.0
        prm[K.P_MLA_LAT] = m.kv_lora_rank + m.rope_head_dim
        prm[K.P_MLA_FPAIR] = 2.0 * (2 * m.kv_lora_rank + m.rope_head_dim)
    g = 2 if m.gated_ffn else 1
    prm[K.P_FFN_W] = m.ffn_mats * D * m.ffn_dim / t
    prm[K.P_FFN_UP_OUT] = g * m.ffn_dim / t
    prm[K.P_FFN_DOWN_IN] = m.ffn_dim / t
    prm[K.P_BWB], prm[K.P_BAB], prm[K.P_BKVB] = bw_b, ba_b, bkv_b
    causal = client.causal_attention if client.causal_attention is not None else not genz
    prm[K.P_CAUSAL] = 1.0 if causal else 0.0
    prm[K.P_ENCODER] = 1.0 if m.architecture == "encoder" else 0.0
    prm[K.P_SHARED_ONCE] = 1.0 if client.shared_prefix_read_once else 0.0
    prm[K.P_TP] = t
    prm[K.P_TP_ALPHA], prm[K.P_TP_BETA] = tp_link(client, t)
    if TP_BUS_EFFICIENCY is not None and not genz:   # off: the nominal bandwidth, bit for bit
        prm[K.P_TP_BETA] *= tp_bus_efficiency()
    # per-call collective latency: the fitted efficiency field (GenZ compat keeps MODEL.md's s0)
    prm[K.P_S0] = COLLECTIVE_STARTUP_S if genz else eff.collective_us / 1e6   # / 1e6: 5 µs is exactly 5e-6
    prm[K.P_PP_ALPHA], prm[K.P_PP_BETA] = tp_link(client, t * p)
    if m.is_moe:
        prm[K.P_E] = m.num_experts
        prm[K.P_K] = m.top_k
        prm[K.P_EP] = e
        prm[K.P_TE] = t // e
        prm[K.P_EXPERT_W] = m.ffn_mats * D * m.expert_ffn_dim
        prm[K.P_EXPERT_MATS] = m.ffn_mats
        prm[K.P_DE] = m.expert_ffn_dim
        prm[K.P_SHARED_W] = m.num_shared_experts * m.ffn_mats * D * m.expert_ffn_dim / t
        prm[K.P_ROUTER_W] = D * m.num_experts
        prm[K.P_EP_ALPHA], prm[K.P_EP_BETA] = tp_link(client, t)
    prm[K.P_HAS_LMHEAD] = 0.0 if m.architecture == "encoder" else 1.0
    _extension_params(client, prm, genz, fpeak)
    prm[K.P_MIST_MEMO] = 1.0 if client.mist_memo else 0.0  # memo group (pipelines renumber per platform)
    if client.dp_attention:
        _dp_attention_params(client, prm)
    corr = client.step_correction
    if corr is not None:
        nk = len(corr.tokens)
        prm[K.P_CORR_N] = nk
        prm[K.P_CORR_LOGT:K.P_CORR_LOGT + nk] = np.log(corr.tokens)
        prm[K.P_CORR_PF:K.P_CORR_PF + nk] = corr.prefill
        prm[K.P_CORR_DEC:K.P_CORR_DEC + nk] = corr.decode
        prm[K.P_CORR_ATTN_PF:K.P_CORR_ATTN_PF + nk] = corr.attention_prefill or corr.prefill
        prm[K.P_CORR_ATTN_DEC:K.P_CORR_ATTN_DEC + nk] = corr.attention_decode or corr.decode
    return prm


def _attention_block(m, hq: float, hkv: float, prm: np.ndarray) -> None:
    """QKV (or MLA down/up projections) and O-projection sizes of one device holding hq query and
    hkv KV heads."""
    D, dh = m.hidden_size, m.head_dim
    if m.is_mla:
        ql = m.q_lora_rank
        qkv_w = (D * ql + ql * hq * (dh + m.rope_head_dim)) if ql else D * hq * (dh + m.rope_head_dim)
        qkv_w += D * (m.kv_lora_rank + m.rope_head_dim) + m.kv_lora_rank * hq * 2 * dh
        prm[K.P_QKV_OUT] = hq * (dh + m.rope_head_dim) + m.kv_lora_rank + m.rope_head_dim
    else:
        qkv_w = D * (hq + 2 * hkv) * dh
        prm[K.P_QKV_OUT] = (hq + 2 * hkv) * dh
    prm[K.P_QKV_W] = qkv_w
    prm[K.P_O_W] = hq * dh * D
    prm[K.P_O_IN] = hq * dh


def _extension_params(client: ClientSpec, prm: np.ndarray, genz: bool, fpeak: float) -> None:
    """Parameters of the 2025-26 physics (docs/step-model.md); their defaults leave the step
    time of every earlier model unchanged."""
    m, prec, eff = client.model, client.precision, client.efficiency
    # experts in their own format (gpt-oss MXFP4); GenZ compat keeps one precision for everything
    if genz:
        prm[K.P_FPEAK_EXPERT] = prm[K.P_FPEAK]
        prm[K.P_BWB_EXPERT] = prm[K.P_BWB]
    else:
        # η_e (efficiency.expert_compute) on top of η_c: the expert GEMMs' own share of the peak
        eta_e = eff.expert_compute if expert_eta_applies(client) else 1.0
        eta_f8 = eff.expert_fp8 if expert_fp8_applies(client) else 1.0   # W8A8 FP8 experts (session 11)
        prm[K.P_FPEAK_EXPERT] = (client.device.peak_flops(prec.expert_compute) * eff.compute * eta_e * eta_f8
                                 * fp8_block_factor(client, prec.expert_compute))
        if SUSTAINED_PEAK_ON:
            prm[K.P_FPEAK_EXPERT] *= sustained_peak_factor(client.device, prec.expert_compute)
        prm[K.P_BWB_EXPERT] = DTYPE_BYTES[prec.expert_weights]
        if EXPERT_SPLIT_HALF_WIDTH is not None:   # off: the peak as before, bit for bit
            prm[K.P_FPEAK_EXPERT] *= expert_split_factor(client)
    if REPLICATED_ELEMENTWISE is not None and not genz:   # off: no op, bit for bit
        per_layer, moe_extra = REPLICATED_ELEMENTWISE
        prm[K.P_ELEM_LAYER] = per_layer * m.hidden_size
        if m.is_moe:
            prm[K.P_ELEM_MOE] = (m.top_k + moe_extra) * m.hidden_size
    prm[K.P_IMBALANCE] = eff.expert_imbalance
    prm[K.P_EP_TP_A2A] = 1.0 if (genz or EP_DISPATCH_UNDER_TP_ATTENTION) else 0.0
    prm[K.P_STEP_OVH] = (eff.step_overhead_ms + getattr(client, "harness_step_ms", 0.0)) * 1e-3
    prm[K.P_PF_SLOW] = 1.0 / eff.prefill - 1.0
    prm[K.P_SEQ_OVH] = eff.seq_overhead_us * 1e-6   # host time per sequence per step
    if (eff.prefill_launch_us > 0.0 or eff.decode_launch_us > 0.0) and not genz:
        kernels = launch_time.kernels_per_step(m, client.tp)
        prm[K.P_HOST_PF_FLOOR] = kernels * eff.prefill_launch_us * 1e-6
        prm[K.P_HOST_DEC] = kernels * eff.decode_launch_us * 1e-6
        prm[K.P_HOST_FLOOR_ALL] = 1.0 if client.harness_no_graphs else 0.0
    # local attention: correct mode only (GenZ has no windows); MLA and encoders have none
    if m.sliding_window and not genz and m.architecture == "decoder" and not m.is_mla:
        prm[K.P_N_WIN] = m.num_window_layers
        prm[K.P_WIN] = m.sliding_window
        prm[K.P_WIN_CHUNKED] = 1.0 if m.window_kind == "chunked" else 0.0
    if m.is_mla and not genz and client.mla_prefill == "expanded":
        dh, dr = m.head_dim, m.rope_head_dim
        prm[K.P_MLA_EXPANDED] = 1.0
        prm[K.P_MLA_FPAIR_PF] = 2.0 * (2 * dh + dr)
        prm[K.P_MLA_UP] = 4.0 * m.kv_lora_rank * dh
        prm[K.P_MLA_EXP_ELEMS] = 2 * dh + dr
    sizes = client.scheduler.cuda_graph_sizes
    prm[K.P_CG_N] = len(sizes)
    prm[K.P_CG_SIZES:K.P_CG_SIZES + len(sizes)] = sizes


def _dp_attention_params(client: ClientSpec, prm: np.ndarray) -> None:
    """Data-parallel attention over the TP group of a = tp ranks (docs/step-model.md): each rank
    holds the whole attention block, dense FFN and shared experts and runs them on its own T/a
    token rows; its attention reads only its own sequences' KV, i.e. on average 1/a of the batch
    with all heads. The kernel takes the per-rank attention work as heads/a (an average, so a
    fraction) and the rows as T/a."""
    m, t = client.model, client.tp
    D = m.hidden_size
    prm[K.P_DP_ATTN] = t
    prm[K.P_HQ] = m.num_heads / t
    prm[K.P_HKV] = m.num_kv_heads / t
    _attention_block(m, m.num_heads, m.num_kv_heads, prm)   # all heads on every rank
    if m.is_mla:
        prm[K.P_MLA_LAT] = (m.kv_lora_rank + m.rope_head_dim) / t   # each rank reads its own sequences' latent
    g = 2 if m.gated_ffn else 1
    prm[K.P_FFN_W] = m.ffn_mats * D * m.ffn_dim
    prm[K.P_FFN_UP_OUT] = g * m.ffn_dim
    prm[K.P_FFN_DOWN_IN] = m.ffn_dim
    if m.is_moe:
        prm[K.P_SHARED_W] = m.num_shared_experts * m.ffn_mats * D * m.expert_ffn_dim


BREAKDOWN_NAMES = ("gemm_s", "attention_s", "communication_s", "other_s", "compute_bound_s",
                   "memory_bound_s", "flops", "hbm_bytes", "ideal_compute_s", "ideal_memory_s",
                   "communication_busy_s", "pp_interval_s", "outside_calibrated_range")


@dataclass(frozen=True)
class StepLatency:
    """Result of :func:`step_latency`: total time and a per-category breakdown (per device)."""
    total_s: float
    breakdown: dict

    @property
    def total_ms(self) -> float:
        return self.total_s * 1e3

    def __str__(self) -> str:
        b = self.breakdown
        lines = [f"step latency       {self.total_ms:10.4f} ms"]
        for k in ("gemm_s", "attention_s", "communication_s", "other_s", "compute_bound_s", "memory_bound_s"):
            lines.append(f"  {k[:-2]:<17}{b[k] * 1e3:10.4f} ms  ({b[k] / self.total_s * 100 if self.total_s else 0:5.1f} %)")
        lines.append(f"  FLOP per device  {b['flops']:10.4g}")
        lines.append(f"  HBM bytes/device {b['hbm_bytes']:10.4g}")
        return "\n".join(lines)


def _as_arrays(prefill: Iterable[Sequence[int]], decode: Iterable[Sequence[int]]):
    pf = np.asarray([tuple(x) for x in prefill], dtype=np.float64).reshape(-1, 2)
    dec_rows = []
    for x in decode:
        x = tuple(x)
        if len(x) == 2:      # (branches, kv)
            dec_rows.append((x[0], 0, x[1]))
        elif len(x) == 3:    # (branches, shared, private)
            dec_rows.append(x)
        else:
            raise ValueError(f"decode entry {x!r}: expected (branches, kv) or (branches, shared, private)")
    dec = np.asarray(dec_rows, dtype=np.float64).reshape(-1, 3)
    if (pf < 0).any() or (dec < 0).any():
        raise ValueError("prefill/decode entries must be >= 0")
    if len(pf) and (pf[:, 1] < 1).any():
        raise ValueError("prefill chunk tokens must be >= 1")
    if len(dec) and (dec[:, 0] < 1).any():
        raise ValueError("decode branches must be >= 1")
    return pf, dec


def step_latency(client: ClientSpec, prefill=(), decode=(), *, prompts_done: int | None = None) -> StepLatency:
    """Latency of one engine step.

    prefill: ``[(kv_before_chunk, chunk_tokens), ...]``; decode: ``[(branches, kv), ...]`` or
    ``[(branches, shared_prefix, private_kv), ...]``. ``prompts_done`` = prefills finishing this
    step (default: all of them).
    """
    return step_latency_with(K.step_time, client, prefill, decode, prompts_done)


def step_latency_with(step_time, client: ClientSpec, prefill=(), decode=(), prompts_done: int | None = None
                      ) -> StepLatency:
    """:func:`step_latency` through a given ``kernels.steptime.step_time`` (the compiled one, or
    its plain-Python twin: ``opbreakdown.step_latency_python``)."""
    pf, dec = _as_arrays(prefill, decode)
    prm = client_params(client)
    out = np.zeros(K.N_OUT)
    done = len(pf) if prompts_done is None else prompts_done
    t = step_time(prm, pf[:, 0].copy(), pf[:, 1].copy(), len(pf), float(done),
                  dec[:, 0].copy(), dec[:, 1].copy(), dec[:, 2].copy(), len(dec), out)
    return StepLatency(float(t), dict(zip(BREAKDOWN_NAMES, map(float, out))))
