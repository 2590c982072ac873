"""Kernel-launch time of engine steps (docs/step-model.md, "Launch-bound steps").

Serving engines replay CUDA graphs for decode-only batches but run most prefill steps eagerly: the
Python model code launches every kernel of every layer one by one. The host runs ahead of the
device, so an eager step takes at least the time the host needs to launch its kernels; for a short
prompt of a model with many small kernels per layer (MLA + MoE) that launch time, not the roofline,
sets the step. This module counts the kernels a step launches and holds each engine family's
default host time per launched kernel.

Kernels per layer (one eager forward, from the engines' model code; counted as launched kernels,
fused ones once):

* normalisation: 2 (input and post-attention RMSNorm with the residual add fused in);
* GQA attention: 5 (QKV GEMM, rotary embedding, KV-cache write, attention, O projection);
* MLA attention: 11 (q down / norm / up, kv down / norm, rotary, latent cache write, K/V up
  projection, attention, O projection, and the split of the q/kv heads);
* dense FFN: 3 (gate-up GEMM, activation, down GEMM);
* routed experts: 7 (router GEMM, top-k, token sort/align, two grouped GEMMs, activation,
  weighted combine); shared experts: 3 more (as a dense FFN);
* tensor parallelism: 2 AllReduces (after attention and after the FFN) when tp > 1.

A dense GQA layer is 10 kernels and a DeepSeek-V3 MoE layer 23 (+ 2 AllReduces under TP).
"""
from __future__ import annotations

# kernels per layer, by part (module docstring)
NORM_KERNELS = 2
GQA_ATTENTION_KERNELS = 5
MLA_ATTENTION_KERNELS = 11
DENSE_FFN_KERNELS = 3
ROUTED_EXPERT_KERNELS = 7
SHARED_EXPERT_KERNELS = 3
TP_ALLREDUCE_KERNELS = 2

# Host time per kernel of an eager (Python-launched) step, µs. Readings outside the validation data:
# * sfllm (wejoncy/sfllm pull request #46, "full prefill CUDA graphs"): Qwen3-4B (36 layers, about
#   12 kernels each with its q/k norms), a 129-token prefill took 16.6 ms eager against 5.7 ms as a
#   graph replay: the eager step is launch-bound at 16.6 / (36 x 12) = 38 us per kernel;
# * tokenspeed (lightseekorg/tokenspeed pull request #597, "breakable CUDA graph for prefill"):
#   Kimi-K2.6 (the DeepSeek-V3 architecture, 61 layers of about 25 kernels under TP), a
#   2,048-token prefill took 123 ms eager and 55 ms (about the device floor) with graphs: at least
#   123 / (61 x 25) = 81 us per kernel;
# * the PyTorch dispatch path alone (Python binding, dispatcher, backend choice, cudaLaunchKernel)
#   costs 5-25 us per op before module and engine code around it
#   (https://jiahuanglin.xyz/all_lessons/gpu_kernel_serving/18_pytorch_to_kernel.html).
# The reading to start from is the lower, dense-model one: 40 us per launched kernel.
EAGER_KERNEL_US = 40.0

# Engine families whose validation rows and named clients get a default host time per kernel. Which
# engines launch their prefill steps eagerly (engine design):
# * SGLang captures CUDA graphs for decode batches only (`cuda_graph_max_bs`); prefill graphs are
#   opt-in (`--enable-piecewise-cuda-graph`, sgl-project/sglang pull request #13377);
# * TensorRT-LLM 1.x's PyTorch backend replays CUDA graphs for generation-only batches
#   (`cuda_graph_config` batch sizes); context (prefill) and mixed batches run eagerly;
# * vLLM V1 compiles the model (torch.compile) and replays piecewise CUDA graphs around attention
#   for batches up to its largest capture size; larger prefills run the compiled (fused) code.
# Measured on the InferenceMAX fold (docs/moe-fidelity.md, session 7): EAGER_KERNEL_US for SGLang and
# TensorRT-LLM 1.x made the leave-one-source-out errors worse (all rows 14.3 -> 24.2 %), for SGLang
# alone TTFT p50 worse (23.8 -> 26.6 %) with the SGLang groups no better; so no engine has a default
# yet, and a client sets `efficiency.prefill_launch_us` itself.
EAGER_PREFILL_ENGINES: dict[str, float] = {}


# Device time per kernel of a graph-replayed decode step (``decode_launch_us``), by engine family and
# device generation, for engines that run without torch.compile. Reading (docs/step-model.md,
# "Graph-replayed decode on CDNA3"): the InferenceMAX SGLang v0.5.5.post3 DeepSeek-R1 FP8 rows at TP8
# (lmsysorg/sglang:v0.5.5.post3-rocm700-mi30x; launch scripts benchmarks/dsr1_fp8_mi3{00,25}x_docker.sh of
# github:SemiAnalysisAI/InferenceX@e264c0e: SGLANG_USE_AITER=1, HIP graphs up to 128, no --enable-torch-compile)
# decode 4 users in 27.0 ms (MI300X) and 27.5 ms (MI325X) per token. MI325X has 13 % more HBM bandwidth
# (6.0 against 5.3 TB/s) and the same CUs and clocks, so the ~21 ms above the roofline (5.7 / 5.3 ms at
# eta 0.75) is not bytes: it is a fixed time per step that does not shrink with bandwidth. On NVIDIA parts
# the same engine and model leave 4.1 ms (B200) and 6.1 ms (H200) above the roofline, which the fitted
# efficiencies already carry; the CDNA3 excess, (21.3 + 22.2)/2 - 5.1 = 16.7 ms over the 1,504 kernels of a
# DeepSeek-V3 forward at tp 8 (kernels_per_step), is 11 us per kernel. The MI355X script of the same
# image runs --enable-torch-compile (fused elementwise kernels) and its rows leave 10.0 ms (FP8) above
# the roofline: that engine setting switches the default off. Read off four held-out rows, so the
# InferenceMAX fold measures it in sample for those rows (docs/step-model.md).
GRAPH_DECODE_KERNEL_US: dict[tuple[str, str], float] = {("sglang", "cdna3"): 11.0}
CDNA3_DEVICES = ("MI300X", "MI325X", "MI300A", "MI308X")
# Whether `mistfast validate` gives the rows of such an engine/device pair the default. ON since session 13:
# two full leave-one-source-out refits of the merged session-13 code, with and without it (/work/bench/s13/refitA,
# refitB): all rows 13.8 -> 13.1 %, TTFT 20.0 -> 19.4 %, TPOT 13.0 -> 12.2 %, throughput 9.0 -> 8.2 %; the folds
# other than InferenceMAX (whose four rows gave the 11 us) 20.4 -> 19.9 %; the AMD page fold 14.8 -> 6.0 %, the
# MLPerf fold 11.6 -> 12.9 % (its MI300X/MI325X vLLM rows, already too fast, lose the slowness the SGLang rows had
# pushed into the shared device term). Session 9 measured it off (docs/step-model.md, "Graph-replayed decode on
# CDNA3"); docs/engines.md, "SGLang DeepSeek-R1 on MI300X / MI325X ... (session 13)".
GRAPH_DECODE_DEFAULT_ON = True


def device_generation(device_name: str) -> str:
    """"cdna3" for the MI300-series devices (gfx942), else ""."""
    name = (device_name or "").upper()
    return "cdna3" if any(name.startswith(d) for d in CDNA3_DEVICES) else ""


def decode_launch_default(engine: str, device_name: str, torch_compile: bool = False) -> float:
    """Default ``decode_launch_us`` (device time per kernel of a graph-replayed decode step) of an
    engine family on a device, 0 when none applies: only engines run without torch.compile, on a
    device generation in :data:`GRAPH_DECODE_KERNEL_US`."""
    if torch_compile:
        return 0.0
    return float(GRAPH_DECODE_KERNEL_US.get((engine or "", device_generation(device_name)), 0.0))


def kernels_per_step(model, tp: int) -> int:
    """Kernels one forward of ``model`` launches per device across all its layers (module
    docstring); embedding, final norm, LM head and sampling are left to the per-step overhead."""
    attn = MLA_ATTENTION_KERNELS if model.is_mla else GQA_ATTENTION_KERNELS
    comm = TP_ALLREDUCE_KERNELS if tp > 1 else 0
    n_moe = model.num_moe_layers if model.is_moe else 0
    n_dense = model.num_layers - n_moe
    moe_ffn = ROUTED_EXPERT_KERNELS + (SHARED_EXPERT_KERNELS if model.num_shared_experts else 0)
    per_dense = NORM_KERNELS + attn + DENSE_FFN_KERNELS + comm
    per_moe = NORM_KERNELS + attn + moe_ffn + comm
    return n_dense * per_dense + n_moe * per_moe


def engine_launch_efficiency(engine: str) -> dict:
    """Efficiency fields of an engine family's launch model (``prefill_launch_us``), {} for
    engines without an eager prefill default."""
    us = EAGER_PREFILL_ENGINES.get(engine or "")
    return {"prefill_launch_us": us} if us else {}
