"""Kernels per transformer layer, by architecture (docs/step-model.md, "Kernels per layer").

The step model charges the per-op overhead tau (``efficiency.op_overhead_us``: launch, ramp-up and
drain of a kernel, plus its host share) once per costed op: QKV, attention, O-projection, FFN (or
router + experts + shared experts), and the collectives. A decode step of a small batch is mostly
these fixed costs, and how many kernels an engine really runs per layer depends on the
architecture:

* a dense GQA layer runs about 10 kernels outside its collectives for its 4 costed ops;
* an MLA + MoE layer (DeepSeek-V3) runs about 23 kernels for its 6 costed ops.

tau is fitted per (device, engine) mostly on dense models, so tau is the overhead of one costed op of
a dense GQA layer, i.e. of ``DENSE_LAYER_KERNELS / DENSE_LAYER_OPS`` = 2.5 kernels. A layer with
``k`` kernels and ``n`` costed ops pays ``k / 2.5 - n`` more taus. Dense GQA models are unchanged
(0 extra); a DeepSeek-V3 MoE layer pays 3.2 extra, a gpt-oss MoE layer 0.6.

Counts (decode step, fused kernels as vLLM / SGLang / TensorRT-LLM run them; quantisation kernels
of block-FP8 activations are left out because engines fuse them differently):

==================  =======  =====================================================================
piece               kernels  what
==================  =======  =====================================================================
norms               2        input and post-attention RMSNorm (residual add fused)
GQA attention       5        QKV GEMM, RoPE, KV-cache write, attention, O GEMM
MLA attention       11       fused q_a/kv_a GEMM, q_a and kv_a norms, q_b GEMM, W_UK bmm, RoPE,
                             latent-cache write, split-KV attention and its combine, W_UV bmm, O GEMM
dense FFN           3        gate/up GEMM, activation, down GEMM
routed experts      7        router GEMM, top-k, token sort/align, grouped GEMM 1, activation,
                             grouped GEMM 2, combine
shared experts      3        gate/up GEMM, activation, down GEMM
==================  =======  =====================================================================

Sources for the structure: DeepSeek-V3's MLA and MoE layer (Hugging Face deepseek-ai/DeepSeek-V3
modeling_deepseek.py), vLLM's fused-MoE path (vllm-project/vllm:
vllm/model_executor/layers/fused_moe/fused_moe.py: topk, moe_align_block_size, two
fused_moe_kernel launches, activation, moe_sum).
"""
from __future__ import annotations

NORMS = 2
GQA_ATTENTION = 5
MLA_ATTENTION = 11
DENSE_FFN = 3
ROUTED_EXPERTS = 7
SHARED_EXPERTS = 3

DENSE_LAYER_KERNELS = NORMS + GQA_ATTENTION + DENSE_FFN      # 10
DENSE_LAYER_OPS = 4                                          # QKV, attention, O, FFN
KERNELS_PER_TAU = DENSE_LAYER_KERNELS / DENSE_LAYER_OPS      # 2.5


def _attention(model) -> tuple[int, int]:
    """Kernels and costed ops of a layer's attention block (collectives aside)."""
    return (MLA_ATTENTION if model.is_mla else GQA_ATTENTION), 3


def layer_kernels(model, moe: bool) -> tuple[int, int]:
    """(kernels, costed ops) of one layer, collectives aside; ``moe`` = a MoE-FFN layer."""
    k, n = _attention(model)
    k += NORMS
    if moe:
        k += ROUTED_EXPERTS
        n += 2                      # router, experts
        if model.num_shared_experts:
            k += SHARED_EXPERTS
            n += 1
    else:
        k += DENSE_FFN
        n += 1
    return k, n


def extra_taus(model) -> tuple[float, float]:
    """Extra per-op overheads (in taus) of one dense-FFN layer and of one MoE layer of ``model``
    beyond its costed ops: kernels / KERNELS_PER_TAU - costed ops (0 for a dense GQA layer)."""
    out = []
    for moe in (False, True):
        if moe and not model.is_moe:
            out.append(0.0)
            continue
        k, n = layer_kernels(model, moe)
        out.append(max(0.0, (k * DENSE_LAYER_OPS - n * DENSE_LAYER_KERNELS) / DENSE_LAYER_KERNELS))
    return out[0], out[1]
