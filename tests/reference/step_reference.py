"""Plain-Python twin of ``mistfast.kernels.steptime.step_time``, written from MODEL.md §2.1
directly off the ClientSpec: an explicit list of ops, one per layer, per-request attention
terms, no precomputed parameter vector. Slow and obvious on purpose."""
from __future__ import annotations

import math

from mistfast import stepmodel
from mistfast.specs import DTYPE_BYTES

GiB = 2.0**30


def _ring(client, n):
    dev = client.device
    unit = GiB if client.reference == "genz" else 1e9
    eta = client.efficiency.network
    domain = dev.scaleup_domain_size or dev.devices_per_node  # one scale-up fabric
    if n <= domain and client.intra_node_link is None and dev.scaleup_bidir_GBps > 0:
        return dev.scaleup_latency_us * 1e-6, dev.scaleup_bidir_GBps / 2 * unit * eta
    link = client.intra_node_link if n <= domain and client.intra_node_link else client.inter_node_link
    if link is None:
        return 5e-6, 50.0 * unit * eta
    return link.latency_us * 1e-6, link.bandwidth_GBps * unit * link.efficiency * eta


def reference_step_time(client, prefill, decode, prompts_done=None):
    """Return (total_s, ops) where ops is a list of (name, time_s)."""
    m, dev, eff, prec = client.model, client.device, client.efficiency, client.precision
    genz = client.reference == "genz"
    t, p, e = client.tp, client.pp, client.ep
    if genz:
        b = DTYPE_BYTES[prec.weights]
        bw = ba = bkv = b
        mult = {"fp32": 2, "tf32": 2, "bf16": 1, "fp16": 1, "fp8": .5, "int8": .5, "fp6": .5, "fp4": .25, "int4": .25,
                "mxfp4": .25, "nvfp4": .25}
        peak = peak_attn = peak_exp = dev.peak_flops("bf16") / mult[prec.weights] * eff.compute
        bx = b
        hbm = dev.memory_bandwidth_GBps * GiB * eff.memory
        onchip = 18000 * GiB * eff.memory
    else:
        bw, ba, bkv = DTYPE_BYTES[prec.weights], DTYPE_BYTES[prec.activations], DTYPE_BYTES[prec.kv]
        # η_e (efficiency.expert_compute) where its scope puts it: which GEMMs it covers is
        # stepmodel's rule (hand-tested in test_moe_physics); the arithmetic below is the twin's own
        eta_e = eff.expert_compute if stepmodel.expert_eta_applies(client) else 1.0
        eta_dense = eff.expert_compute if stepmodel.dense_eta_applies(client) else 1.0
        # η_f8 (efficiency.expert_fp8) on W8A8 FP8 experts, likewise stepmodel's rule
        eta_e = eta_e * (eff.expert_fp8 if stepmodel.expert_fp8_applies(client) else 1.0)
        # η_d8 (efficiency.dense_fp8) on the dense GEMMs of block-scaled FP8 checkpoints, stepmodel's rule
        eta_dense = eta_dense * (eff.dense_fp8 if stepmodel.dense_fp8_applies(client) else 1.0)
        peak = dev.peak_flops(prec.compute) * eff.compute * eta_dense
        peak_attn = dev.peak_flops(prec.activations) * eff.compute
        peak_exp = dev.peak_flops(prec.experts_compute or prec.compute) * eff.compute * eta_e
        bx = DTYPE_BYTES[prec.experts or prec.weights]
        hbm = dev.memory_bandwidth_GBps * 1e9 * eff.memory
        onchip = None
    tau = eff.op_overhead_us * 1e-6
    alpha, beta = _ring(client, t)
    s0 = 5e-6 if genz else eff.collective_us / 1e6   # per collective call (GenZ: MODEL.md's fixed s0)

    def op(name, flops=0.0, off=0.0, on=0.0, comm=0.0, attn=False, fpeak=None):
        tc = flops / (fpeak or (peak_attn if attn else peak))
        tm = off / hbm + (on / onchip if on else 0.0)
        if genz and flops == 0 and comm == 0:
            tm = 0.0
        x = max(tc, tm, comm)
        ops.append((name, x + tau if x > 0 else 0.0))

    def allreduce(n, size):
        return 0.0 if n == 1 or size == 0 else s0 + 2 * (n - 1) * alpha + 2 * (n - 1) / n * size / beta

    def allgather(n, size):
        return 0.0 if n == 1 or size == 0 else s0 + (n - 1) * alpha + (n - 1) / n * size / beta

    prefill = [tuple(map(float, x)) for x in prefill]
    decode = [tuple(map(float, x)) if len(x) == 3 else (float(x[0]), 0.0, float(x[1])) for x in decode]
    T_pf = sum(c for _, c in prefill)
    T = T_pf + sum(w for w, _, _ in decode)
    R = sum(w for w, _, _ in decode) + (len(prefill) if prompts_done is None else prompts_done)
    ops: list = []
    if T == 0:
        return 0.0, ops
    sizes = client.scheduler.cuda_graph_sizes
    if sizes and T_pf == 0 and T <= sizes[-1]:
        T = min(x for x in sizes if x >= T)  # decode-only step padded to a captured CUDA graph
    D, dh, V = m.hidden_size, m.head_dim, m.vocab_size
    H1, Hkv1 = math.ceil(m.num_heads / t), math.ceil(m.num_kv_heads / t)
    # data-parallel attention: one rank holds all heads and the dense/shared weights, runs them on
    # its T/t rows, and attends over its own sequences, on average 1/t of the batch's work
    dpa = client.dp_attention
    share = 1.0 / t if dpa else 1.0
    if dpa:
        H1, Hkv1 = m.num_heads, m.num_kv_heads
    T_all = T
    causal = client.causal_attention if client.causal_attention is not None else not genz
    encoder = m.architecture == "encoder"
    mla = m.kv_lora_rank > 0
    lat = m.kv_lora_rank + m.rope_head_dim
    expanded = mla and not genz and client.mla_prefill == "expanded"
    W = m.sliding_window
    lam = eff.expert_imbalance if (e > 1 and not genz) else 1.0

    def keys(i):  # keys the query at position i sees in a windowed layer
        if m.window_kind == "chunked":
            return i - (i // W) * W + 1
        return min(i + 1, W)

    T = T_all * share   # rows through the replicated part (all of them under TP)
    for layer in range(m.num_layers):
        # QKV (column-parallel) and O-proj (row-parallel)
        if mla:
            ql = m.q_lora_rank
            w_in = (D * ql + ql * H1 * (dh + m.rope_head_dim)) if ql else D * H1 * (dh + m.rope_head_dim)
            w_in += D * lat + m.kv_lora_rank * H1 * 2 * dh
            n_out = H1 * (dh + m.rope_head_dim) + lat
        else:
            n_out = (H1 + 2 * Hkv1) * dh
            w_in = D * n_out
        if genz:
            op("qkv", 2 * T * w_in, w_in * bw, T * (D + n_out) * ba)
            op("o", 2 * T * H1 * dh * D, H1 * dh * D * bw, T * (H1 * dh + D) * ba)
        else:
            op("qkv", 2 * T * w_in, w_in * bw + T * (D + n_out) * ba)
            op("o", 2 * T * H1 * dh * D, H1 * dh * D * bw + T * (H1 * dh + D) * ba)
        # attention, summed over the requests of the batch (one varlen kernel)
        F = off = on = 0.0
        if m.is_window_layer(layer) and not genz:
            for past, c in prefill:
                pairs = sum(keys(i) for i in range(int(past), int(past + c)))
                lo = int(past) + 1 - keys(int(past))  # first position the chunk's first query sees
                F += 4 * H1 * dh * pairs
                off += 2 * Hkv1 * dh * (past - lo + c) * bkv + 2 * Hkv1 * dh * c * bkv + 2 * H1 * c * dh * ba
            for w, s, k in decode:
                n = int(s + k)
                lo = n + 1 - keys(n)
                visible_shared = max(0, int(s) - lo)
                visible_private = n + 1 - max(lo, int(s))
                F += 4 * w * H1 * dh * keys(n)
                off += 2 * Hkv1 * dh * bkv * (visible_shared * (1 if client.shared_prefix_read_once else w)
                                              + w * visible_private)
            op("attention_window", F * share, off * share, attn=True)
            prefill_iter = []
            decode_iter = []
        else:
            prefill_iter, decode_iter = prefill, decode
        for past, c in prefill_iter:
            if encoder:
                pairs = c * c
            elif causal:
                pairs = sum(past + i for i in range(1, int(c) + 1))  # query i sees past + i keys
            else:
                pairs = c * (past + c)
            if mla and genz:
                f1 = 2 * (2 * m.kv_lora_rank + m.rope_head_dim) * H1 * pairs
                off1 = lat * (past + c) * bkv + lat * c * bkv + 2 * H1 * c * dh * ba
                op("logit", f1 / 2, off1 / 2, attn=True)
                op("attend", f1 / 2, off1 / 2, attn=True)
            elif expanded:
                # K (dh + d_rope) and V (dh) per head, rebuilt from the latent of the past tokens
                F += 2 * (2 * dh + m.rope_head_dim) * H1 * pairs + 2 * past * m.kv_lora_rank * H1 * 2 * dh
                off += lat * (past + c) * bkv + lat * c * bkv + 2 * H1 * c * dh * ba
                off += 2 * past * H1 * (2 * dh + m.rope_head_dim) * ba  # written, then read
            elif mla:
                F += 2 * (2 * m.kv_lora_rank + m.rope_head_dim) * H1 * pairs
                off += lat * (past + c) * bkv + lat * c * bkv + 2 * H1 * c * dh * ba
            elif genz:
                # one Logit and one Attend op per request, each with its own max (MODEL.md §2.4)
                f1 = 4 * H1 * dh * pairs
                off1 = c * H1 * dh * ba + (past + c) * Hkv1 * dh * bkv   # Logit: Q, K
                off1 += (past + c) * Hkv1 * dh * bkv + c * H1 * dh * ba  # Attend: V, O
                on1 = 2 * H1 * pairs * ba                                # scores, both ops
                op("logit", f1 / 2, off1 / 2, on1 / 2, attn=True)
                op("attend", f1 / 2, off1 / 2, on1 / 2, attn=True)
            elif encoder:
                F += 4 * H1 * dh * pairs
                off += 4 * H1 * c * dh * ba
            else:
                F += 4 * H1 * dh * pairs
                off += 2 * Hkv1 * dh * (past + c) * bkv + 2 * Hkv1 * dh * c * bkv + 2 * H1 * c * dh * ba
        for w, s, k in decode_iter:
            reads = s * (1 if client.shared_prefix_read_once else w)
            if mla and genz:
                f1 = 2 * (2 * m.kv_lora_rank + m.rope_head_dim) * H1 * w * (s + k + 1)
                off1 = lat * bkv * (reads + w * (k + 1))
                op("logit", f1 / 2, off1 / 2, attn=True)
                op("attend", f1 / 2, off1 / 2, attn=True)
            elif mla:
                F += 2 * (2 * m.kv_lora_rank + m.rope_head_dim) * H1 * w * (s + k + 1)
                off += lat * bkv * (reads + w * (k + 1))
            elif genz:
                # MIST: KV = prompt + generated = s + k + 1; one Logit and one Attend op per request
                f1 = 4 * w * H1 * dh * (s + k + 1)
                off1 = 2 * Hkv1 * dh * bkv * (reads + w * (k + 1))
                on1 = 2 * w * H1 * dh * ba + 2 * w * H1 * (s + k + 1) * ba
                op("logit", f1 / 2, off1 / 2, on1 / 2, attn=True)
                op("attend", f1 / 2, off1 / 2, on1 / 2, attn=True)
            else:
                F += 4 * w * H1 * dh * (s + k + 1)
                off += 2 * Hkv1 * dh * bkv * (reads + w * (k + 1))
        if not genz and (prefill_iter or decode_iter):
            op("attention", F * share, off * share, attn=True)
        if not dpa:
            op("allreduce_attn", comm=allreduce(t, T * D * ba))
        # FFN: dense or MoE
        dense = not m.is_moe_layer(layer)
        tf = 1 if dpa else t   # dense FFN: replicated under DP attention
        if dense:
            up = (2 if m.gated_ffn else 1) * m.ffn_dim / tf
            w = m.ffn_mats * D * m.ffn_dim / tf
            op("ffn", 2 * T * w, w * bw + T * (D + up + m.ffn_dim / tf + D) * ba)
        else:
            E, Kk = m.num_experts, m.top_k
            op("router", 2 * T * D * E, D * E * bw + T * (D + E) * ba)
            ep_alpha, ep_beta = _ring(client, t)
            te = t // e
            if e > 1 and (dpa or genz or stepmodel.EP_DISPATCH_UNDER_TP_ATTENTION):
                # a rank sends the K copies of its own tokens: T/t under DP attention (all T under TP
                # attention in the former model; now every rank holds them already and none move)
                sent = lam * T_all * Kk / e if dpa else lam * T_all * Kk
                a2a = s0 + (e - 1) * ep_alpha + (e - 1) / e * sent * D * ba / ep_beta
                op("dispatch", comm=a2a)
                op("combine", comm=a2a)
            if dpa and te > 1:
                # the te ranks sharing an expert slice gather their tokens, then reduce-scatter
                ag = s0 + (te - 1) * ep_alpha + (te - 1) / te * (T_all / e) * D * ba / ep_beta
                op("token_allgather", comm=ag)
                op("token_reducescatter", comm=ag)
            T, T_rep = T_all, T   # the experts see every token of the step
            one = m.ffn_mats * D * m.expert_ffn_dim
            if genz:
                active = max(1, math.ceil(Kk / e)) if T_pf == 0 else E / e
            else:
                active = E * (1 - (1 - Kk / E) ** (lam * T)) / e  # the busiest rank serves lam T tokens
            op("experts", 2 * lam * T * Kk * one / (e * te), active * one / te * bx + 2 * lam * T * Kk * D * ba / e,
               fpeak=peak_exp)
            T = T_rep
            if m.num_shared_experts:
                w = m.num_shared_experts * one / tf
                op("shared_expert", 2 * T * w, w * bx + 2 * T * D * ba, fpeak=peak_exp)
        if not dpa:
            op("allreduce_ffn", comm=allreduce(t, T * D * ba))
    T = T_all
    # replicated element-wise kernels (stepmodel.REPLICATED_ELEMENTWISE; off: no op): residual-add +
    # RMSNorm on every layer, the combine of the K expert outputs on every MoE layer, rows not split by TP
    if stepmodel.REPLICATED_ELEMENTWISE is not None and not genz:
        a, b = stepmodel.REPLICATED_ELEMENTWISE
        n_moe = sum(1 for i in range(m.num_layers) if m.is_moe_layer(i))
        elems = m.num_layers * a * D + n_moe * (m.top_k + b) * D
        op("elementwise", 0.0, T * share * elems * ba)
    # embedding
    if genz:
        op("embedding", 2 * T_pf * D * V / t, (V / t * D + T_pf * V / t + T_pf * D) * bw)  # V/t shard
        if T_pf:
            op("embedding_allreduce", comm=allreduce(t, T_pf * D * ba))
    else:
        op("embedding", 0.0, T * share * D * bw)
    if not encoder:
        rows = T if genz else R
        if rows:
            op("lm_head", 2 * rows * D * V / t, D * V / t * bw + rows * (D + V / t) * ba)
            op("lm_head_allgather", comm=allgather(t, rows * V * ba))
    if p > 1:
        pa, pb = _ring(client, t * p)
        for _ in range(p - 1):
            op("pp_send", comm=pa + T * share * D * ba / pb)
    # prefill-step efficiency (docs/step-model.md): every op of the step slows down in proportion
    # to the share of prefill token rows, t_pf / T; the per-step overhead does not
    t_new = float(sum(c for _, c in prefill))
    rows_all = t_new + float(sum(d[0] for d in decode))
    slow = (1.0 / eff.prefill - 1.0) * t_new / rows_all if rows_all > 0 else 0.0
    if slow:
        ops[:] = [(name, x * (1.0 + slow)) for name, x in ops]
    # kernel launches (docs/step-model.md, "Launch-bound steps"): an eager prefill step lasts at least
    # its kernels' launch time; a graph-replayed decode-only step adds a time per kernel
    if not genz and (eff.prefill_launch_us or eff.decode_launch_us):
        kernels = _kernels_per_step(m, t)
        device_s = sum(x for _, x in ops)
        # an engine without any CUDA graphs (client.harness_no_graphs) has the floor on decode-only
        # steps too; there a graph time per kernel, if set, counts towards the floor
        add = kernels * eff.decode_launch_us * 1e-6 if t_new == 0 else 0.0
        if t_new > 0 or getattr(client, "harness_no_graphs", False):
            if kernels * eff.prefill_launch_us * 1e-6 > device_s + add:
                ops.append(("launch_wait", kernels * eff.prefill_launch_us * 1e-6 - device_s))
            elif add:
                ops.append(("graph_kernels", add))
        elif eff.decode_launch_us:
            ops.append(("graph_kernels", kernels * eff.decode_launch_us * 1e-6))
    if eff.step_overhead_ms:
        ops.append(("step_overhead", eff.step_overhead_ms * 1e-3))
    # host time per sequence (docs/step-model.md): every decode branch and every prefill chunk is one
    # sequence the engine's Python loop handles this step
    n_seqs = len(prefill) + sum(d[0] for d in decode)
    if eff.seq_overhead_us and n_seqs:
        ops.append(("seq_overhead", n_seqs * eff.seq_overhead_us * 1e-6))
    return sum(x for _, x in ops), ops


def _kernels_per_step(m, t):
    """Kernels per forward (docs/step-model.md): per layer 2 norms, attention (MLA 11, else 5), FFN
    (dense 3; routed experts 7, shared experts 3 more), 2 AllReduces under TP."""
    n = 0
    for i in range(m.num_layers):
        k = 2 + (11 if m.is_mla else 5) + (2 if t > 1 else 0)
        if m.is_moe_layer(i):
            k += 7 + (3 if m.num_shared_experts else 0)
        else:
            k += 3
        n += k
    return n
