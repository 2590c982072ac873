"""Plain-Python twin of ``mistfast.kernels.steptime.step_time``, written from MODEL.md §2.1
directly off the ClientSpec: an explicit list of ops, one per layer, per-request attention
terms, no precomputed parameter vector. Slow and obvious on purpose."""
from __future__ import annotations

import math

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
        mult = {"fp32": 2, "tf32": 2, "bf16": 1, "fp16": 1, "fp8": .5, "int8": .5, "fp6": .5, "fp4": .25, "int4": .25}
        peak = peak_attn = dev.peak_flops("bf16") / mult[prec.weights] * eff.compute
        hbm = dev.memory_bandwidth_GBps * GiB * eff.memory
        onchip = 18000 * GiB * eff.memory
    else:
        bw, ba, bkv = DTYPE_BYTES[prec.weights], DTYPE_BYTES[prec.activations], DTYPE_BYTES[prec.kv]
        peak = dev.peak_flops(prec.compute) * eff.compute
        peak_attn = dev.peak_flops(prec.activations) * eff.compute
        hbm = dev.memory_bandwidth_GBps * 1e9 * eff.memory
        onchip = None
    tau = eff.op_overhead_us * 1e-6
    alpha, beta = _ring(client, t)
    s0 = 5e-6

    def op(name, flops=0.0, off=0.0, on=0.0, comm=0.0, attn=False):
        tc = flops / (peak_attn if attn else peak)
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
    D, dh, V = m.hidden_size, m.head_dim, m.vocab_size
    H1, Hkv1 = math.ceil(m.num_heads / t), math.ceil(m.num_kv_heads / t)
    causal = client.causal_attention if client.causal_attention is not None else not genz
    encoder = m.architecture == "encoder"
    mla = m.kv_lora_rank > 0
    lat = m.kv_lora_rank + m.rope_head_dim

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
        for past, c in prefill:
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
        for w, s, k in decode:
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
        if not genz:
            op("attention", F, off, attn=True)
        op("allreduce_attn", comm=allreduce(t, T * D * ba))
        # FFN: dense or MoE
        dense = not (m.num_experts and layer >= m.first_dense_layers)
        if dense:
            up = (2 if m.gated_ffn else 1) * m.ffn_dim / t
            w = m.ffn_mats * D * m.ffn_dim / t
            op("ffn", 2 * T * w, w * bw + T * (D + up + m.ffn_dim / t + D) * ba)
        else:
            E, Kk = m.num_experts, m.top_k
            op("router", 2 * T * D * E, D * E * bw + T * (D + E) * ba)
            ep_alpha, ep_beta = _ring(client, t)
            if e > 1:
                a2a = s0 + (e - 1) * ep_alpha + (e - 1) / e * T * Kk * D * ba / ep_beta
                op("dispatch", comm=a2a)
                op("combine", comm=a2a)
            te = t // e
            one = m.ffn_mats * D * m.expert_ffn_dim
            if genz:
                active = max(1, math.ceil(Kk / e)) if T_pf == 0 else E / e
            else:
                active = E * (1 - (1 - Kk / E) ** T) / e
            op("experts", 2 * T * Kk * one / (e * te), active * one / te * bw + 2 * T * Kk * D * ba / e)
            if m.num_shared_experts:
                w = m.num_shared_experts * one / t
                op("shared_expert", 2 * T * w, w * bw + 2 * T * D * ba)
        op("allreduce_ffn", comm=allreduce(t, T * D * ba))
    # embedding
    if genz:
        op("embedding", 2 * T_pf * D * V / t, (V / t * D + T_pf * V / t + T_pf * D) * bw)  # V/t shard
        if T_pf:
            op("embedding_allreduce", comm=allreduce(t, T_pf * D * ba))
    else:
        op("embedding", 0.0, T * D * bw)
    if not encoder:
        rows = T if genz else R
        if rows:
            op("lm_head", 2 * rows * D * V / t, D * V / t * bw + rows * (D + V / t) * ba)
            op("lm_head_allgather", comm=allgather(t, rows * V * ba))
    if p > 1:
        pa, pb = _ring(client, t * p)
        for _ in range(p - 1):
            op("pp_send", comm=pa + T * D * ba / pb)
    return sum(x for _, x in ops), ops
