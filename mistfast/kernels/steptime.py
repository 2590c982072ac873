"""Analytical roofline step latency of one engine step (MODEL.md §2.1), as a numba kernel.

Inputs are flat arrays: a parameter vector ``prm`` (built once per client by
:func:`mistfast.stepmodel.client_params`, indices below) and the batch descriptor
(prefill chunks ``(past, new)`` and decodes ``(branches, shared, private)``). Times are
float64 seconds, sizes bytes, work FLOP (1 MAC = 2 FLOP).

Every op costs ``max(F/F_peak, Y/BW, t_comm) + tau``; ops do not overlap; the step is the sum
over ops, plus PP point-to-point hops. All transformer layers of one kind are identical, so
each layer's ops are costed once and multiplied by the layer count.
"""
from __future__ import annotations

import numpy as np

from .._numba import jit, jit_inline, jit_noalloc, jit_noalloc_py

# ---- parameter vector layout -------------------------------------------------------------
P_FPEAK = 0          # GEMM FLOP/s, efficiency applied
P_FPEAK_ATTN = 1     # attention FLOP/s, efficiency applied
P_BW = 2             # HBM B/s, efficiency applied
P_BW_ONCHIP = 3      # on-chip B/s (GenZ residency convention only)
P_TAU = 4            # per-op overhead s
P_GENZ = 5           # 1: GenZ conventions (MODEL.md §2.4 compat column)
P_D = 6
P_V = 7
P_V_SHARD = 8        # V / t
P_N_DENSE = 9        # dense-FFN layers
P_N_MOE = 10         # MoE layers
P_PP = 11
P_STAGE_LAYERS = 12  # ceil(L/p)
P_HQ = 13            # query heads per device
P_HKV = 14           # KV heads per device
P_DH = 15
P_QKV_W = 16         # QKV (or MLA down/up) weight elements per device
P_QKV_OUT = 17       # QKV output width per device
P_O_W = 18           # out-proj weight elements per device
P_O_IN = 19          # out-proj input width per device
P_FFN_W = 20         # dense FFN weight elements per device (all matrices)
P_FFN_UP_OUT = 21    # g*Df/t
P_FFN_DOWN_IN = 22   # Df/t
P_BWB = 23           # bytes per weight element
P_BAB = 24           # bytes per activation / collective element
P_BKVB = 25          # bytes per KV element
P_CAUSAL = 26
P_ENCODER = 27
P_MLA = 28
P_MLA_LAT = 29       # r_kv + d_rope latent elements per token per layer
P_MLA_FPAIR = 30     # FLOP per query-key pair per head (absorbed): 2*(2 r_kv + d_rope)
P_SHARED_ONCE = 31   # 1: a shared prefix is read once per decode step, not once per branch
P_TP = 32
P_TP_ALPHA = 33
P_TP_BETA = 34       # per-direction B/s, network efficiency applied
P_S0 = 35            # collective start-up s
P_PP_ALPHA = 36
P_PP_BETA = 37
P_E = 38             # routed experts
P_K = 39             # top-k
P_EP = 40
P_TE = 41            # TP inside an expert
P_EXPERT_W = 42      # weight elements of one routed expert (all matrices, unsharded)
P_EXPERT_MATS = 43   # matrices per expert (3 gated, 2 plain)
P_DE = 44
P_SHARED_W = 45      # shared-expert weight elements per device
P_ROUTER_W = 46      # D*E
P_EP_ALPHA = 47
P_EP_BETA = 48
P_HAS_LMHEAD = 49
P_GENZ_KV_EXTRA = 50  # GenZ decode reads kv_len (0) — we read kv_len+1 (1) incl. the new token
# measured-step correction (MODEL.md §2.2): total *= factor(T), piecewise linear in log(T) between
# knots, clamped at the end knots (outside the measured range: the analytical model scaled by the
# factor of the nearest boundary point). Separate factor rows for decode-only and other steps.
P_CORR_N = 51         # number of knots (0 = no correction)
CORR_MAX = 128       # knots: enough to follow the tile steps of a measured GEMM profile
P_CORR_LOGT = 52      # CORR_MAX knots: log(token rows)
P_CORR_PF = P_CORR_LOGT + CORR_MAX      # factor for steps with any prefill
P_CORR_DEC = P_CORR_PF + CORR_MAX       # factor for decode-only steps
# attention op factors (same knots): the attention op is scaled by its own factor, the other ops by
# the factor above, so a corrected step follows the context length through the attention work
# (a correction over (tokens, context)). Equal to the rows above when a table has no attention rows.
P_CORR_ATTN_PF = P_CORR_DEC + CORR_MAX
P_CORR_ATTN_DEC = P_CORR_ATTN_PF + CORR_MAX
# ---- extensions of 2025-26 models (docs/step-model.md); every default keeps the plain model ----
P_EXT = P_CORR_ATTN_DEC + CORR_MAX
P_N_WIN = P_EXT           # layers with local (windowed) attention; the rest attend to everything
P_WIN = P_EXT + 1         # window W, tokens
P_WIN_CHUNKED = P_EXT + 2  # 1: chunked (aligned blocks of W, Llama-4), 0: sliding (last W)
P_STEP_OVH = P_EXT + 3    # fixed host time per step, s (after the correction)
P_IMBALANCE = P_EXT + 4   # expert load on the busiest EP rank / the mean (EP > 1)
P_FPEAK_EXPERT = P_EXT + 5  # expert GEMM FLOP/s, efficiency applied
P_BWB_EXPERT = P_EXT + 6  # bytes per expert weight element
P_MLA_EXPANDED = P_EXT + 7  # 1: MLA prefill in expanded (per-head K/V) form; decode stays absorbed
P_MLA_FPAIR_PF = P_EXT + 8  # expanded FLOP per query-key pair per head: 2 (2 dh + d_rope)
P_MLA_UP = P_EXT + 9      # FLOP per past token per head to rebuild K and V: 4 r_kv dh
P_MLA_EXP_ELEMS = P_EXT + 10  # rebuilt K/V elements per past token per head: 2 dh + d_rope
P_CG_N = P_EXT + 11       # captured CUDA-graph batch sizes (0: no padding)
CG_MAX = 128
P_CG_SIZES = P_EXT + 12   # CG_MAX slots, increasing
# GenZ compat: emulate MIST's step-time memo (0 = off; else the memo group, one per distinct
# platform: a batch with the same kind, token count and total KV as an earlier one of the group
# reuses that step time, docs/mist_parity.md)
P_MIST_MEMO = P_CG_SIZES + CG_MAX
# data-parallel attention (DP-attention + EP deployments, docs/step-model.md): the attention
# group size a (> 1: on), i.e. each of the a ranks of the TP group runs attention, dense FFN,
# router and shared experts with full (replicated) weights on T/a of the token rows; the experts
# stay split over EP x expert-TP; no per-layer AllReduce, the MoE layer moves tokens instead
P_DP_ATTN = P_MIST_MEMO + 1
# prefill-step slowdown s = 1/eta_prefill - 1 (0: off): a step whose token rows are a share
# t_pf/T prefill takes (1 + s t_pf/T) times its time (calibration: prefill kernels of MoE models
# reach a small share of the roofline the decode-fitted efficiencies give, docs/calibration.md)
P_PF_SLOW = P_DP_ATTN + 1
# kernel-launch host time (docs/step-model.md, "Launch-bound steps"): an eager (non-graph) step with
# prefill rows is launched kernel by kernel from Python, and the host runs ahead of the device, so
# the step takes at least the launch time of its kernels (s, whole model); a graph-replayed
# decode-only step pays a fixed time per kernel on the device instead, added (s, whole model)
P_HOST_PF_FLOOR = P_PF_SLOW + 1
P_HOST_DEC = P_PF_SLOW + 2
# host time per sequence in the step (s; docs/step-model.md, "Host time per sequence"): the Python
# scheduler, sampler, detokeniser and streamer of vLLM and SGLang touch every running sequence every
# step, so a step takes this much longer per decode row and per prefill chunk (not scaled by the
# correction)
P_SEQ_OVH = P_PF_SLOW + 3
# 1: charge an EP dispatch and combine of every token's K copies under TP attention too (the default,
# stepmodel.EP_DISPATCH_UNDER_TP_ATTENTION); 0: under TP attention every rank already holds all T
# tokens, so EP moves no tokens: a rank runs its own experts on the tokens routed to them and the FFN
# AllReduce sums the partial outputs (docs/step-model.md, "MoE expert parallelism"). Under DP
# attention it has no effect.
P_EP_TP_A2A = P_PF_SLOW + 4
# 1: the launch-time floor P_HOST_PF_FLOOR holds for every step, decode-only ones too (an engine that
# replays no CUDA graphs at all: the TensorRT engines of MLPerf harness configs with use_graphs False,
# docs/ttft-under-load.md "MLPerf TTFT, session 11"); 0: only for steps with prefill rows
P_HOST_FLOOR_ALL = P_PF_SLOW + 5
# replicated per-token element-wise traffic (docs/step-model.md, "Replicated element-wise traffic, session 16";
# stepmodel.REPLICATED_ELEMENTWISE): activation elements read + written per token row per layer by
# kernels every TP rank runs on all its rows (fused residual-add + RMSNorm), and per MoE layer (the
# combine of the K expert outputs). 0, 0: off, no op (the step time as before, bit for bit)
P_ELEM_LAYER = P_PF_SLOW + 6
P_ELEM_MOE = P_PF_SLOW + 7
N_PARAMS = P_PF_SLOW + 8

# ---- breakdown layout (per device, whole step) ---------------------------------------------
B_GEMM = 0
B_ATTN = 1
B_COMM = 2
B_OTHER = 3          # embedding, LM head, router
B_COMPUTE_BOUND = 4  # time of ops whose compute term is the max
B_MEMORY_BOUND = 5   # time of ops whose memory term is the max
B_FLOPS = 6
B_BYTES = 7          # HBM (off-chip) bytes
B_TC = 8             # sum of ideal compute times (energy model)
B_TM = 9             # sum of ideal memory times
B_TN = 10            # sum of communication times
B_INTERVAL = 11      # PP: time between batch starts (slowest stage); = latency when pp = 1
B_OUT_OF_RANGE = 12  # 1 when a correction table exists and T is outside its knots
N_BREAKDOWN = 13

CAT_GEMM, CAT_ATTN, CAT_COMM, CAT_OTHER = B_GEMM, B_ATTN, B_COMM, B_OTHER


@jit_inline
def _op(prm, out, cat, mult, flops, off_bytes, on_bytes, comm_s):
    """Cost one op ``mult`` times; returns the total time added."""
    peak = prm[P_FPEAK_ATTN] if cat == CAT_ATTN else prm[P_FPEAK]
    return _op_at(prm, out, cat, mult, flops, off_bytes, on_bytes, comm_s, peak)


@jit_inline
def _op_at(prm, out, cat, mult, flops, off_bytes, on_bytes, comm_s, peak):
    """Cost one op ``mult`` times at the compute peak ``peak`` FLOP/s; returns the time added."""
    # one compiled function called from every op (step_fixed has 17), not its body inlined into
    # each: numba types and inlines an ``inline="always"`` body once per call site (cold compile
    # time); np.int64: a category constant would type as a literal and compile once per category
    return _op_cost(prm, out, np.int64(cat), mult, flops, off_bytes, on_bytes, comm_s, peak)


@jit_noalloc
def _op_cost(prm, out, cat, mult, flops, off_bytes, on_bytes, comm_s, peak):
    """_op_at's cost, compiled on its own."""
    tc = flops / peak
    tm = off_bytes / prm[P_BW]
    if on_bytes > 0.0:
        tm += on_bytes / prm[P_BW_ONCHIP]
    if prm[P_GENZ] > 0.0 and flops == 0.0 and cat != CAT_COMM:
        tm = 0.0  # GenZ: zero-MAC ops cost nothing (drops the embedding on decode-only steps)
    t = tc
    if tm > t:
        t = tm
    if comm_s > t:
        t = comm_s
    if t == 0.0:
        return 0.0
    t += prm[P_TAU]
    t *= mult
    out[cat] += t
    if comm_s >= tc and comm_s >= tm:
        pass
    elif tc >= tm:
        out[B_COMPUTE_BOUND] += t
    else:
        out[B_MEMORY_BOUND] += t
    out[B_FLOPS] += flops * mult
    out[B_BYTES] += off_bytes * mult
    out[B_TC] += tc * mult
    out[B_TM] += tm * mult
    out[B_TN] += comm_s * mult
    return t


@jit
def _allreduce(n, size, alpha, beta, s0):
    if n <= 1 or size <= 0.0:
        return 0.0
    return s0 + 2.0 * (n - 1) * alpha + 2.0 * (n - 1) / n * size / beta


@jit
def _allgather(n, size, alpha, beta, s0):
    if n <= 1 or size <= 0.0:
        return 0.0
    return s0 + (n - 1) * alpha + (n - 1) / n * size / beta


# ---- scratch after the breakdown in ``out``: the part of a step that does not depend on the
# attention work (every op but attention, the correction factor). A run of decode-only steps over
# one batch changes only the attention work, so the engine computes this part once per run
# (step_fixed) and finishes each step with step_finish; step_time does exactly the same two
# calls, so both paths give bit-identical results.
X_BD = N_BREAKDOWN                 # N_BREAKDOWN entries: breakdown of the non-attention ops
X_LAYER = X_BD + N_BREAKDOWN       # one layer of every kind, attention excluded (times layer count)
X_EMB = X_LAYER + 1
X_HEAD = X_EMB + 1
X_P2P = X_HEAD + 1
X_FACTOR = X_P2P + 1               # measured-step correction factor (1 without a table)
X_OOR = X_FACTOR + 1
X_FACTOR_ATTN = X_OOR + 1          # attention-op correction factor (= X_FACTOR without attention rows)
X_PF_SLOW = X_FACTOR_ATTN + 1      # prefill-step slowdown of this step: P_PF_SLOW x t_pf / T
# step_fixed's memo (the engine's buffer only: 1 in X_MEMO). Consecutive steps of one client often
# have the same shape (a decode run starts from the decode-only step just formed; a full batch keeps
# its size), so the fixed part is kept with its key and not computed again: the same numbers, as
# step_fixed is a pure function of (prm, T, R, t_pf). The caller names its client in X_CALLER;
# whatever changes the scratch after step_fixed (windowed attention) clears X_KEY_CLIENT.
X_MEMO = X_PF_SLOW + 1         # 1: keep the fixed part for reuse (callers' own buffers: 0)
X_CALLER = X_MEMO + 1              # client whose step is being costed
X_KEY_CLIENT = X_CALLER + 1        # client whose fixed part the scratch holds (-1: none)
X_KEY_T = X_KEY_CLIENT + 1         # its T, R and t_pf
X_KEY_R = X_KEY_T + 1
X_KEY_TPF = X_KEY_R + 1
X_HOST_FLOOR = X_KEY_TPF + 1       # launch-time floor of this step (s; 0 unless it has prefill rows)
X_HOST_ADD = X_HOST_FLOOR + 1      # per-kernel time added to this step (s; decode-only steps)
N_OUT = X_HOST_ADD + 1                      # length of the ``out`` buffer every caller passes


@jit_inline
def decode_attention(prm, w_sum, a_ctx, a_read):
    """Attention FLOP, off-chip bytes and on-chip bytes of a batch's decodes, from integer sums:
    w_sum = sum w, a_ctx = sum w (s + k + 1) (query-key pairs per head), a_read = sum (s sig +
    w (k + 1)) (KV tokens read; sig = 1 when a shared prefix is read once, else w). Exact integer
    sums make the result independent of the order of the decodes."""
    hq = prm[P_HQ]
    hkv = prm[P_HKV]
    dh = prm[P_DH]
    bkv = prm[P_BKVB]
    ba = prm[P_BAB]
    if prm[P_MLA] > 0.0:
        return prm[P_MLA_FPAIR] * hq * a_ctx, prm[P_MLA_LAT] * bkv * a_read, 0.0
    if prm[P_GENZ] > 0.0:
        # GenZ reads kv_len (+extra) per decode: shift both sums by (extra - 1) per branch. MIST
        # costs a decode of a request with p prompt and g generated tokens at kv_len = p + g, i.e.
        # k + 1 (extra = 1, MODEL.md §2.4)
        shift = (prm[P_GENZ_KV_EXTRA] - 1.0) * w_sum
        ctx = a_ctx + shift
        return (4.0 * hq * dh * ctx, 2.0 * hkv * dh * bkv * (a_read + shift),
                2.0 * hq * dh * ba * w_sum + 2.0 * hq * ba * ctx)
    return 4.0 * hq * dh * a_ctx, 2.0 * hkv * dh * bkv * a_read, 0.0


@jit_inline
def window_keys(n, W, chunked):
    """Keys a query at 0-based position n attends to in a windowed layer (itself included)."""
    if chunked:
        return n % W + 1
    return min(n + 1, W)


@jit_inline
def window_pairs_upto(n, W, chunked):
    """Sum of window_keys(i) for i < n, closed form."""
    if chunked:
        q = n // W
        r = n % W
        return q * (W * (W + 1) // 2) + r * (r + 1) // 2
    if n <= W:
        return n * (n + 1) // 2
    return W * (W + 1) // 2 + (n - W) * W


@jit_noalloc
def window_attention(prm, pf_past, pf_new, n_pf, dec_w, dec_s, dec_k, n_dec):
    """Attention FLOP and off-chip bytes of ONE windowed layer for the whole batch (correct
    mode, GQA): as the full-attention terms, with each query seeing window_keys keys and each
    chunk or decode reading only the KV inside its window."""
    W = int(prm[P_WIN])
    chunked = prm[P_WIN_CHUNKED] > 0.0
    hq = prm[P_HQ]
    hkv = prm[P_HKV]
    dh = prm[P_DH]
    bkv = prm[P_BKVB]
    ba = prm[P_BAB]
    shared_once = prm[P_SHARED_ONCE] > 0.0
    f = 0.0
    off = 0.0
    for i in range(n_pf):
        p = int(pf_past[i])
        c = int(pf_new[i])
        pairs = window_pairs_upto(p + c, W, chunked) - window_pairs_upto(p, W, chunked)
        past_read = p % W if chunked else min(p, W - 1)   # keys before the chunk its first query sees
        f += 4.0 * hq * dh * pairs
        off += 2.0 * hkv * dh * (past_read + c) * bkv + 2.0 * hkv * dh * c * bkv + 2.0 * hq * c * dh * ba
    pairs_d = 0
    read_d = 0
    for j in range(n_dec):
        w = int(dec_w[j])
        s = int(dec_s[j])
        n = s + int(dec_k[j])          # position of the new token
        keys = window_keys(n, W, chunked)
        lo = n + 1 - keys              # first position inside the window
        pairs_d += w * keys
        shared_seen = s - lo if s > lo else 0
        sig = 1 if shared_once else w
        read_d += sig * shared_seen + w * (n + 1 - (lo if lo > s else s))
    f += 4.0 * hq * dh * pairs_d
    off += 2.0 * hkv * dh * bkv * read_d
    return f, off


@jit_noalloc
def window_run_ok(prm, dec_k, n_dec):
    """True when the windowed attention of these decodes stays the same step after step: a
    sliding window that every decode's private context already fills (k + 1 >= W). Each branch
    then sees W keys, all of them private, so the windowed-layer work is W per branch."""
    if prm[P_WIN_CHUNKED] > 0.0:
        return False
    W = prm[P_WIN]
    for j in range(n_dec):
        if dec_k[j] + 1.0 < W:
            return False
    return True


@jit_noalloc
def add_window_attention_full(prm, w_sum, out):
    """Add the windowed layers' attention of w_sum decode branches whose windows are full of
    private tokens (window_run_ok) to the fixed part in ``out``; the same arithmetic as
    window_attention + step_time, so a decode run gives bit-identical steps."""
    pairs_d = int(prm[P_WIN]) * w_sum
    f = 0.0
    off = 0.0
    f += 4.0 * prm[P_HQ] * prm[P_DH] * pairs_d
    off += 2.0 * prm[P_HKV] * prm[P_DH] * prm[P_BKVB] * pairs_d
    out[X_LAYER] += _op(prm, out[X_BD:X_BD + N_BREAKDOWN], CAT_ATTN, prm[P_N_WIN], f, off, 0.0, 0.0)
    out[X_KEY_CLIENT] = -1.0   # the scratch is no longer step_fixed's alone


@jit_inline
def attention_compute_bound(prm, flops, off_bytes, on_bytes):
    """GenZ compat (MODEL.md §2.4): is one request's attention op compute-bound? (Same terms as
    _op; the ops of a request are costed separately, so a step's attention is the sum of the
    compute-bound requests' compute times and the memory-bound requests' memory times.)"""
    tc = flops / prm[P_FPEAK_ATTN]
    tm = off_bytes / prm[P_BW]
    if on_bytes > 0.0:
        tm += on_bytes / prm[P_BW_ONCHIP]
    return tc >= tm


@jit_inline
def decode_terms(shared_once, w, s, k):
    """Query-key pairs per head and KV tokens read of one decode (w branches, s shared, k private
    tokens), as exact integers: pairs = w (s + k + 1); read = s sig + w (k + 1) with sig = 1 when
    a shared prefix is read once, else w."""
    return w * (s + k + 1), (s if shared_once else s * w) + w * (k + 1)


@jit_inline
def genz_decode_compute_bound(prm, w, s, k):
    """GenZ compat: is the attention of one decode (w branches, s shared, k private tokens)
    compute-bound? Evaluated on that decode's own integer sums, as step_time does."""
    a_ctx, a_read = decode_terms(prm[P_SHARED_ONCE] > 0.0, w, s, k)
    f, off, on = decode_attention(prm, float(w), float(a_ctx), float(a_read))
    return attention_compute_bound(prm, f, off, on)


@jit_inline
def prefill_pairs(prm, p, c):
    """Query-key pairs per head of a prefill chunk of c tokens after p cached ones."""
    if prm[P_ENCODER] > 0.0:
        return c * c  # bidirectional encoder
    if prm[P_CAUSAL] > 0.0:
        return c * p + c * (c + 1.0) / 2.0
    return c * (p + c)


@jit_inline
def mla_absorbed_prefill(prm, p, c, pairs):
    """MLA prefill in the absorbed form: FLOP and off-chip bytes (the latent of p + c tokens read,
    the c new latents written, per-head queries in and outputs out)."""
    hq = prm[P_HQ]
    return (prm[P_MLA_FPAIR] * hq * pairs,
            prm[P_MLA_LAT] * (p + 2.0 * c) * prm[P_BKVB] + 2.0 * hq * c * prm[P_DH] * prm[P_BAB])


@jit_inline
def prefill_tokens(pf_new, n_pf):
    t_pf = 0.0
    for i in range(n_pf):
        t_pf += pf_new[i]
    return t_pf


@jit_inline
def zero_breakdown(out):
    """An empty step: no breakdown, zero latency."""
    for i in range(N_BREAKDOWN):
        out[i] = 0.0
    return 0.0


@jit_noalloc_py
def step_time(prm, pf_past, pf_new, n_pf, n_pf_done, dec_w, dec_s, dec_k, n_dec, out):
    """Latency (s) of one step; fills ``out`` (length N_OUT: the breakdown, then scratch).

    pf_past[i], pf_new[i] for i < n_pf: KV tokens before the chunk and chunk tokens.
    n_pf_done: prompts whose prefill completes this step (they sample a logit row).
    dec_w[j], dec_s[j], dec_k[j] for j < n_dec: branches, shared-prefix tokens, private
    context before this token (single branch: s = 0, k = full context).
    """
    if prm[P_GENZ] > 0.0:
        return _step_time_genz(prm, pf_past, pf_new, n_pf, dec_w, dec_s, dec_k, n_dec, out)

    # ---- decodes: integer sums (token rows, query-key pairs, KV tokens read) ------------------
    shared_once = prm[P_SHARED_ONCE] > 0.0
    w_sum = np.int64(0)   # (not a literal 0: step_time_sums would compile a second time for it)
    a_ctx = np.int64(0)
    a_read = np.int64(0)
    for j in range(n_dec):
        w = int(dec_w[j])
        ctx, rd = decode_terms(shared_once, w, int(dec_s[j]), int(dec_k[j]))
        w_sum += w
        a_ctx += ctx
        a_read += rd
    wf = 0.0
    woff = 0.0
    if prm[P_N_WIN] > 0.0:
        wf, woff = window_attention(prm, pf_past, pf_new, n_pf, dec_w, dec_s, dec_k, n_dec)
    return step_time_sums(prm, pf_past, pf_new, n_pf, n_pf_done, w_sum, a_ctx, a_read, n_dec, wf, woff, out)


@jit_noalloc
def step_time_sums(prm, pf_past, pf_new, n_pf, n_pf_done, w_sum, a_ctx, a_read, n_dec, win_f, win_off, out):
    """step_time (not GenZ compat) from the decodes' exact integer sums: token rows w_sum, query-key
    pairs per head a_ctx, KV tokens read a_read (decode_terms summed), and the windowed layers'
    attention FLOP and bytes (window_attention; used when P_N_WIN > 0). The engine's lazy decodes
    keep those sums as the batch changes (kernels/lazy.py); integer sums do not depend on the
    order, so the step is the same."""
    dh = prm[P_DH]
    hq = prm[P_HQ]
    hkv = prm[P_HKV]
    ba = prm[P_BAB]
    bkv = prm[P_BKVB]
    mla = prm[P_MLA] > 0.0
    t_pf = prefill_tokens(pf_new, n_pf)
    T = t_pf + w_sum
    if T <= 0.0:
        return zero_breakdown(out)

    # ---- prefill attention work summed over the chunks (one varlen kernel per layer) ----------
    attn_f = 0.0
    attn_off = 0.0
    attn_on = 0.0
    for i in range(n_pf):
        p = pf_past[i]
        c = pf_new[i]
        pairs = prefill_pairs(prm, p, c)
        if mla and prm[P_MLA_EXPANDED] > 0.0:
            # expanded prefill: per-head K/V rebuilt from the cached latent of the p past tokens
            # (the c new ones go through the up-projection GEMM with the step's token rows)
            attn_f += prm[P_MLA_FPAIR_PF] * hq * pairs + prm[P_MLA_UP] * hq * p
            attn_off += prm[P_MLA_LAT] * (p + 2.0 * c) * bkv + 2.0 * hq * c * dh * ba \
                + 2.0 * prm[P_MLA_EXP_ELEMS] * hq * p * ba
        elif mla:
            f, off = mla_absorbed_prefill(prm, p, c, pairs)
            attn_f += f
            attn_off += off
        elif prm[P_ENCODER] > 0.0:
            attn_f += 4.0 * hq * dh * pairs
            attn_off += 4.0 * hq * c * dh * ba  # Q, K, V in, O out; nothing cached
        else:
            attn_f += 4.0 * hq * dh * pairs
            attn_off += 2.0 * hkv * dh * (p + c) * bkv + 2.0 * hkv * dh * c * bkv + 2.0 * hq * c * dh * ba
    if n_dec > 0:
        df, doff, don = decode_attention(prm, float(w_sum), float(a_ctx), float(a_read))
        attn_f += df
        attn_off += doff
        attn_on += don
    step_fixed(prm, T, w_sum + n_pf_done, t_pf, out)
    n_win = prm[P_N_WIN]
    if n_win > 0.0:
        out[X_LAYER] += _op(prm, out[X_BD:X_BD + N_BREAKDOWN], CAT_ATTN, n_win, win_f, win_off, 0.0, 0.0)
        out[X_KEY_CLIENT] = -1.0   # the scratch is no longer step_fixed's alone
    return add_seq_overhead(prm, float(w_sum + n_pf), step_finish(prm, attn_f, attn_off, attn_on, out), out)


@jit_noalloc
def _step_time_genz(prm, pf_past, pf_new, n_pf, dec_w, dec_s, dec_k, n_dec, out):
    """step_time under GenZ conventions (MODEL.md §2.4 compat column): every prefill chunk and
    every decode is its own Logit and Attend op with its own max(compute, memory). Requests are
    grouped by which term wins; each group's work is summed (decodes as exact integer sums, so
    the order of the decodes does not matter)."""
    dh = prm[P_DH]
    hq = prm[P_HQ]
    hkv = prm[P_HKV]
    ba = prm[P_BAB]
    bkv = prm[P_BKVB]
    shared_once = prm[P_SHARED_ONCE] > 0.0
    # decodes: integer sums per group (c = compute-bound, m = memory-bound)
    w_c = 0
    ctx_c = 0
    read_c = 0
    n_c_dec = 0
    w_m = 0
    ctx_m = 0
    read_m = 0
    for j in range(n_dec):
        w = int(dec_w[j])
        ctx, rd = decode_terms(shared_once, w, int(dec_s[j]), int(dec_k[j]))
        if genz_decode_compute_bound(prm, w, int(dec_s[j]), int(dec_k[j])):
            w_c += w
            ctx_c += ctx
            read_c += rd
            n_c_dec += 1
        else:
            w_m += w
            ctx_m += ctx
            read_m += rd
    w_sum = w_c + w_m
    t_pf = prefill_tokens(pf_new, n_pf)
    T = t_pf + w_sum
    if T <= 0.0:
        return zero_breakdown(out)
    # prefill chunks: Logit reads Q, K off chip and writes scores on chip; Attend reads the scores
    # on chip, V and writes O off chip
    f_c = 0.0
    off_c = 0.0
    on_c = 0.0
    n_c = 0
    f_m = 0.0
    off_m = 0.0
    on_m = 0.0
    n_m = 0
    for i in range(n_pf):
        p = pf_past[i]
        c = pf_new[i]
        pairs = prefill_pairs(prm, p, c)
        if prm[P_MLA] > 0.0:
            f, off = mla_absorbed_prefill(prm, p, c, pairs)
            on = 0.0
        else:
            f = 4.0 * hq * dh * pairs
            off = 2.0 * (c * hq * dh * ba + (p + c) * hkv * dh * bkv)
            on = 2.0 * hq * pairs * ba
        if attention_compute_bound(prm, f, off, on):
            f_c += f
            off_c += off
            on_c += on
            n_c += 1
        else:
            f_m += f
            off_m += off
            on_m += on
            n_m += 1
    if w_c > 0:
        df, doff, don = decode_attention(prm, float(w_c), float(ctx_c), float(read_c))
        f_c += df
        off_c += doff
        on_c += don
    if w_m > 0:
        df, doff, don = decode_attention(prm, float(w_m), float(ctx_m), float(read_m))
        f_m += df
        off_m += doff
        on_m += don
    step_fixed(prm, T, T, t_pf, out)  # GenZ: the LM head runs over all T rows
    t = step_finish_genz(prm, f_c, off_c, on_c, float(n_c + n_c_dec), f_m, off_m, on_m,
                         float(n_m + n_dec - n_c_dec), out)
    return add_seq_overhead(prm, float(w_sum + n_pf), t, out)


# ---- step_fixed's memo table (the engine's buffer only: it is N_OUT_MEMO long). The one-entry memo
# in the scratch misses whenever consecutive steps differ (the mixed step between decode runs,
# chunked steps whose decode count changed, the decode step after an admission), yet the same keys
# come back: the fixed parts of recent keys are kept in FIX_SLOTS direct-mapped entries after the
# scratch, each [client, T, R, t_pf, then the scratch X_BD .. N_OUT as step_fixed left it]. A
# client's fixed part is a pure function of (T, R, t_pf) (its prm does not change during a run),
# so a recalled part holds the very floats step_fixed would compute.
FIX_SLOTS = 64                          # a power of two
FIX_W = 4 + N_OUT - X_BD                # one entry: its key, then the scratch
N_OUT_MEMO = N_OUT + FIX_SLOTS * FIX_W  # length of the engine's buffer (callers' own: N_OUT, memo off)


@jit_inline
def _fix_entry(client, T, R, t_pf):
    """Offset of the table entry for a key. Weights chosen so that the keys of a chunked step of
    fixed T (R up, t_pf down by a decode each) and of decode-only steps (T = R, t_pf = 0) fill
    consecutive entries."""
    h = int(R) + 8 * int(t_pf) + 2 * int(T) + 16 * int(client)
    return N_OUT + (h & (FIX_SLOTS - 1)) * FIX_W


@jit_inline
def _fix_keep(out):
    """The scratch's fixed part (while it is step_fixed's alone: X_KEY_CLIENT >= 0) into its entry."""
    client = out[X_KEY_CLIENT]
    if client < 0.0:
        return
    T = out[X_KEY_T]
    R = out[X_KEY_R]
    t_pf = out[X_KEY_TPF]
    e = _fix_entry(client, T, R, t_pf)
    if out[e] == client and out[e + 1] == T and out[e + 2] == R and out[e + 3] == t_pf:
        return
    out[e] = client
    out[e + 1] = T
    out[e + 2] = R
    out[e + 3] = t_pf
    for i in range(X_BD, N_OUT):
        out[e + 4 + i - X_BD] = out[i]


@jit_inline
def _fix_recall(T, R, t_pf, out):
    """The fixed part for (X_CALLER, T, R, t_pf) from the table into the scratch, with its key (True),
    after keeping the scratch's own; False when the table does not hold it."""
    _fix_keep(out)
    client = out[X_CALLER]
    e = _fix_entry(client, T, R, t_pf)
    if not (out[e] == client and out[e + 1] == T and out[e + 2] == R and out[e + 3] == t_pf):
        return False
    for i in range(X_BD, N_OUT):
        out[i] = out[e + 4 + i - X_BD]
    out[X_MEMO] = 1.0
    out[X_CALLER] = client
    out[X_KEY_CLIENT] = client
    out[X_KEY_T] = T
    out[X_KEY_R] = R
    out[X_KEY_TPF] = t_pf
    return True


@jit_noalloc
def step_fixed(prm, T, R, t_pf, out):
    """Every op but attention for a step of T token rows, R sampled logit rows and t_pf prefill
    tokens; written to the scratch part of ``out`` (X_*). With the memo on (X_MEMO), a call with
    the key of the fixed part already there returns at once, and the engine's buffer recalls the
    parts of recent keys (FIX_SLOTS)."""
    if out[X_MEMO] == 1.0:
        if (out[X_KEY_CLIENT] == out[X_CALLER] and out[X_KEY_T] == T and out[X_KEY_R] == R
                and out[X_KEY_TPF] == t_pf):
            return
        if out.shape[0] >= N_OUT_MEMO and _fix_recall(T, R, t_pf, out):
            return
        out[X_KEY_CLIENT] = out[X_CALLER]
        out[X_KEY_T] = T
        out[X_KEY_R] = R
        out[X_KEY_TPF] = t_pf
    for i in range(N_BREAKDOWN):
        out[X_BD + i] = 0.0
    bdx = out[X_BD:X_BD + N_BREAKDOWN]
    T_real = T
    T = cuda_graph_rows(prm, T, t_pf)
    genz = prm[P_GENZ] > 0.0
    D = prm[P_D]
    ba = prm[P_BAB]
    bw = prm[P_BWB]
    tp = prm[P_TP]
    n_dense = prm[P_N_DENSE]
    n_moe = prm[P_N_MOE]
    n_layers = n_dense + n_moe
    alpha = prm[P_TP_ALPHA]
    beta = prm[P_TP_BETA]
    s0 = prm[P_S0]

    # ---- one block of every layer kind (all layers alike), attention excluded ------------------
    layer_t = 0.0
    w_qkv = prm[P_QKV_W]
    w_o = prm[P_O_W]
    # token rows one rank runs through the replicated part (attention block, dense FFN, router,
    # shared experts, embedding): all T under TP, T/a under data-parallel attention
    dp_attn = prm[P_DP_ATTN] > 1.0
    Ta = T / prm[P_DP_ATTN] if dp_attn else T
    if genz:  # weights off chip, I/O on chip
        layer_t += _op(prm, bdx, CAT_GEMM, n_layers, 2.0 * T * w_qkv, w_qkv * bw,
                       T * (D + prm[P_QKV_OUT]) * ba, 0.0)
        layer_t += _op(prm, bdx, CAT_GEMM, n_layers, 2.0 * T * w_o, w_o * bw,
                       T * (prm[P_O_IN] + D) * ba, 0.0)
    else:
        layer_t += _op(prm, bdx, CAT_GEMM, n_layers, 2.0 * Ta * w_qkv,
                       w_qkv * bw + Ta * (D + prm[P_QKV_OUT]) * ba, 0.0, 0.0)
        layer_t += _op(prm, bdx, CAT_GEMM, n_layers, 2.0 * Ta * w_o,
                       w_o * bw + Ta * (prm[P_O_IN] + D) * ba, 0.0, 0.0)
    if not dp_attn:
        # two AllReduces per layer (after O-proj and after the FFN)
        ar = _allreduce(tp, T * D * ba, alpha, beta, s0)
        layer_t += _op(prm, bdx, CAT_COMM, 2.0 * n_layers, 0.0, 0.0, 0.0, ar)

    # ---- dense FFN layers --------------------------------------------------------------------
    if n_dense > 0.0:
        w_ffn = prm[P_FFN_W]
        layer_t += _op(prm, bdx, CAT_GEMM, n_dense, 2.0 * Ta * w_ffn,
                       w_ffn * bw + Ta * (D + prm[P_FFN_UP_OUT] + prm[P_FFN_DOWN_IN] + D) * ba, 0.0, 0.0)

    # ---- MoE layers ----------------------------------------------------------------------------
    if n_moe > 0.0:
        E = prm[P_E]
        K = prm[P_K]
        ep = prm[P_EP]
        te = prm[P_TE]
        w_router = prm[P_ROUTER_W]
        layer_t += _op(prm, bdx, CAT_OTHER, n_moe, 2.0 * Ta * w_router, w_router * bw + Ta * (D + E) * ba, 0.0, 0.0)
        # EP: the busiest rank receives lam times the mean tokens (MODEL.md §2.1 imbalance λ)
        lam = prm[P_IMBALANCE] if (ep > 1.0 and not genz) else 1.0
        if ep > 1.0 and (dp_attn or prm[P_EP_TP_A2A] > 0.0):
            # dispatch and combine (same cost form as All-to-All): under DP attention a rank holds T/a
            # of the tokens and sends their K copies. Under TP attention every rank holds all T
            # tokens already and EP moves none (P_EP_TP_A2A = 0; the default 1 keeps the former
            # cost): each rank keeps the rows routed to its own experts and the FFN AllReduce above
            # sums the partial outputs
            a2a_tokens = lam * T * K / ep if dp_attn else lam * T * K
            a2a = _allgather(ep, a2a_tokens * D * ba, prm[P_EP_ALPHA], prm[P_EP_BETA], s0)
            layer_t += _op(prm, bdx, CAT_COMM, 2.0 * n_moe, 0.0, 0.0, 0.0, a2a)
        if dp_attn and te > 1.0:
            # expert-TP inside an EP rank needs the tokens of its te ranks: AllGather before the
            # experts and ReduceScatter after (same cost)
            ag = _allgather(te, T / ep * D * ba, prm[P_EP_ALPHA], prm[P_EP_BETA], s0)
            layer_t += _op(prm, bdx, CAT_COMM, 2.0 * n_moe, 0.0, 0.0, 0.0, ag)
        if genz:
            # GenZ: a decode-only step reads max(1, ceil(K/EP)) experts per chip; prefill touches all
            if t_pf == 0.0:
                e_dev = max(1.0, np.ceil(K / ep))
            else:
                e_dev = E / ep
        else:
            # distinct experts hit by T tokens under uniform routing: E (1 - (1 - K/E)^T);
            # the busiest rank draws for lam T tokens
            e_dev = E * (1.0 - (1.0 - K / E) ** (lam * T)) / ep
        bx = prm[P_BWB_EXPERT]
        w_exp = prm[P_EXPERT_W] / te
        f_exp = 2.0 * lam * T * K * prm[P_EXPERT_W] / (ep * te)
        y_exp = e_dev * w_exp * bx + 2.0 * lam * T * K * D * ba / ep
        layer_t += _op_at(prm, bdx, CAT_GEMM, n_moe, f_exp, y_exp, 0.0, 0.0, prm[P_FPEAK_EXPERT])
        w_sh = prm[P_SHARED_W]
        if w_sh > 0.0:
            layer_t += _op_at(prm, bdx, CAT_GEMM, n_moe, 2.0 * Ta * w_sh, w_sh * bx + 2.0 * Ta * D * ba, 0.0, 0.0,
                              prm[P_FPEAK_EXPERT])

    # ---- replicated element-wise kernels (off: 0, 0) -------------------------------------------
    e_elem = n_layers * prm[P_ELEM_LAYER] + n_moe * prm[P_ELEM_MOE]
    if e_elem > 0.0:
        # one memory-bound op for the whole step: the rows are not split by TP (every rank norms and
        # combines all its Ta rows), so the time per prompt token does not shrink with tp
        layer_t += _op(prm, bdx, CAT_OTHER, 1.0, 0.0, Ta * e_elem * ba, 0.0, 0.0)

    # ---- embedding and LM head ---------------------------------------------------------------
    V = prm[P_V]
    vs = prm[P_V_SHARD]
    emb_t = 0.0
    head_t = 0.0
    if genz:
        # a GEMM over the prefill tokens reading this device's V/t shard of the table (and a
        # T x V/t input, the T x D output); nothing on decode-only steps
        emb_t += _op(prm, bdx, CAT_OTHER, 1.0, 2.0 * t_pf * D * vs, (vs * D + t_pf * vs + t_pf * D) * bw, 0.0, 0.0)
        if t_pf > 0.0:
            emb_t += _op(prm, bdx, CAT_COMM, 1.0, 0.0, 0.0, 0.0, _allreduce(tp, t_pf * D * ba, alpha, beta, s0))
    else:
        emb_t += _op(prm, bdx, CAT_OTHER, 1.0, 0.0, Ta * D * bw, 0.0, 0.0)  # gather of the rank's rows
    if prm[P_HAS_LMHEAD] > 0.0:
        rows = T if genz else R
        if rows > 0.0:
            head_t += _op(prm, bdx, CAT_OTHER, 1.0, 2.0 * rows * D * vs,
                          D * vs * bw + rows * (D + vs) * ba, 0.0, 0.0)
            head_t += _op(prm, bdx, CAT_COMM, 1.0, 0.0, 0.0, 0.0, _allgather(tp, rows * V * ba, alpha, beta, s0))

    # ---- pipeline parallelism ---------------------------------------------------------------
    pp = prm[P_PP]
    p2p_t = 0.0
    if pp > 1.0:
        p2p = prm[P_PP_ALPHA] + Ta * D * ba / prm[P_PP_BETA]
        p2p_t = _op(prm, bdx, CAT_COMM, pp - 1.0, 0.0, 0.0, 0.0, p2p)
    out[X_LAYER] = layer_t
    out[X_EMB] = emb_t
    out[X_HEAD] = head_t
    out[X_P2P] = p2p_t

    # ---- measured-step correction factor --------------------------------------------------------
    f = 1.0
    fa = 1.0
    oor = 0.0
    nk = int(prm[P_CORR_N])
    if nk > 0:
        row = P_CORR_DEC if t_pf == 0.0 else P_CORR_PF
        arow = P_CORR_ATTN_DEC if t_pf == 0.0 else P_CORR_ATTN_PF
        x = np.log(T_real)
        if x <= prm[P_CORR_LOGT]:
            f = prm[row]
            fa = prm[arow]
            oor = 1.0 if x < prm[P_CORR_LOGT] else 0.0
        elif x >= prm[P_CORR_LOGT + nk - 1]:
            f = prm[row + nk - 1]
            fa = prm[arow + nk - 1]
            oor = 1.0 if x > prm[P_CORR_LOGT + nk - 1] else 0.0
        else:
            # binary search: knot[lo] < x <= knot[hi]; j = first knot >= x
            lo = 0
            hi = nk - 1
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if prm[P_CORR_LOGT + mid] < x:
                    lo = mid
                else:
                    hi = mid
            j = hi
            x0 = prm[P_CORR_LOGT + j - 1]
            x1 = prm[P_CORR_LOGT + j]
            u = (x - x0) / (x1 - x0)
            f = prm[row + j - 1] + (prm[row + j] - prm[row + j - 1]) * u
            fa = prm[arow + j - 1] + (prm[arow + j] - prm[arow + j - 1]) * u
    out[X_FACTOR] = f
    out[X_FACTOR_ATTN] = fa
    out[X_OOR] = oor
    out[X_PF_SLOW] = prm[P_PF_SLOW] * t_pf / T_real if T_real > 0.0 else 0.0
    out[X_HOST_FLOOR] = prm[P_HOST_PF_FLOOR] if (t_pf > 0.0 or prm[P_HOST_FLOOR_ALL] > 0.0) else 0.0
    out[X_HOST_ADD] = prm[P_HOST_DEC] if t_pf == 0.0 else 0.0


@jit_inline
def step_finish(prm, attn_f, attn_off, attn_on, out):
    """Add the attention op to the fixed part in ``out`` (from step_fixed); fills the breakdown
    out[:N_BREAKDOWN] and returns the step latency. (Not GenZ compat: see step_finish_genz.)"""
    for i in range(N_BREAKDOWN):
        out[i] = out[X_BD + i]
    n_layers = prm[P_N_DENSE] + prm[P_N_MOE]
    # full-attention layers; windowed ones (P_N_WIN) were costed by step_time
    attn_t = _op(prm, out, CAT_ATTN, n_layers - prm[P_N_WIN], attn_f, attn_off, 0.0, 0.0)
    if int(prm[P_CORR_N]) > 0 and out[X_FACTOR_ATTN] != out[X_FACTOR] and attn_t > 0.0:
        # the attention op has its own factor: pre-scale it so that the common factor below gives fa
        extra = attn_t * (out[X_FACTOR_ATTN] / out[X_FACTOR] - 1.0)
        out[CAT_ATTN] += extra
        if attn_off * prm[P_FPEAK_ATTN] > attn_f * prm[P_BW]:  # as _op: memory term the larger
            out[B_MEMORY_BOUND] += extra
        else:
            out[B_COMPUTE_BOUND] += extra
        attn_t += extra
    return _step_total(prm, out[X_LAYER] + attn_t, out)


@jit_inline
def step_finish_genz(prm, f_c, off_c, on_c, n_c, f_m, off_m, on_m, n_m, out):
    """GenZ compat: add the per-request attention ops to the fixed part in ``out``. (f, off, on)_c
    is the summed work of the n_c compute-bound requests, (f, off, on)_m that of the n_m
    memory-bound ones; each request is a Logit and an Attend op of equal halves, each paying tau."""
    for i in range(N_BREAKDOWN):
        out[i] = out[X_BD + i]
    n_layers = prm[P_N_DENSE] + prm[P_N_MOE]
    tau = prm[P_TAU]
    tc_c = f_c / prm[P_FPEAK_ATTN]
    tm_c = off_c / prm[P_BW] + on_c / prm[P_BW_ONCHIP]
    tc_m = f_m / prm[P_FPEAK_ATTN]
    tm_m = off_m / prm[P_BW] + on_m / prm[P_BW_ONCHIP]
    t_c = (tc_c + 2.0 * tau * n_c) * n_layers
    t_m = (tm_m + 2.0 * tau * n_m) * n_layers
    attn_t = t_c + t_m
    out[B_ATTN] += attn_t
    out[B_COMPUTE_BOUND] += t_c
    out[B_MEMORY_BOUND] += t_m
    out[B_FLOPS] += (f_c + f_m) * n_layers
    out[B_BYTES] += (off_c + off_m) * n_layers
    out[B_TC] += (tc_c + tc_m) * n_layers
    out[B_TM] += (tm_c + tm_m) * n_layers
    return _step_total(prm, out[X_LAYER] + attn_t, out)


@jit_inline
def decode_step_finish(prm, w_sum, a_ctx, a_read, n_dec, out):
    """Finish a decode-only step from its integer sums (the engine's decode runs). Under GenZ
    compat the caller guarantees every decode is memory-bound (genz_decode_compute_bound false),
    which is what _step_time_genz then finds too."""
    af, aoff, aon = decode_attention(prm, w_sum, a_ctx, a_read)
    if prm[P_GENZ] > 0.0:
        t = step_finish_genz(prm, 0.0, 0.0, 0.0, 0.0, af, aoff, aon, float(n_dec), out)
    else:
        t = step_finish(prm, af, aoff, aon, out)
    return add_seq_overhead(prm, w_sum, t, out)   # one sequence per decode row (w_sum rows)


@jit_inline
def add_seq_overhead(prm, n_seqs, total, out):
    """Add the host time of ``n_seqs`` sequences (decode rows + prefill chunks) to a finished step
    of latency ``total``: to the latency, the breakdown's ``other`` and the PP interval (host work
    between two steps delays the next batch whatever the stage). Nothing changes when it is 0."""
    x = prm[P_SEQ_OVH] * n_seqs
    if x > 0.0:
        total += x
        out[B_OTHER] += x
        out[B_INTERVAL] += x
    return total


@jit_inline
def _step_total(prm, layer_t, out):
    """Sum the layers, embedding, LM head and PP hops; apply the measured-step correction; fill
    the PP interval. Returns the step latency."""
    n_layers = prm[P_N_DENSE] + prm[P_N_MOE]
    emb_t = out[X_EMB]
    head_t = out[X_HEAD]
    p2p_t = out[X_P2P]
    total = layer_t + emb_t + head_t + p2p_t
    corrected = int(prm[P_CORR_N]) > 0
    if corrected:
        out[B_OUT_OF_RANGE] = out[X_OOR]
    # the measured-step correction, then the prefill-step efficiency (in proportion to the prefill
    # rows), each scaling the whole step and its breakdown (a factor of 1 changes nothing)
    for f in (out[X_FACTOR] if corrected else 1.0, 1.0 + out[X_PF_SLOW]):
        if f != 1.0:
            total *= f
            layer_t *= f
            emb_t *= f
            head_t *= f
            p2p_t *= f
            for i in range(B_COMPUTE_BOUND + 1):
                out[i] *= f
            out[B_MEMORY_BOUND] *= f
    # kernel launches (not scaled by the correction): an eager prefill step cannot end before its
    # kernels are launched (the host runs ahead, so the two overlap); graph replays add a fixed time
    # per kernel. Both belong to the layers, so PP stages split them with the layer time
    launch = out[X_HOST_ADD]
    floor = out[X_HOST_FLOOR]
    if floor > total + launch:
        launch = floor - total
    if launch > 0.0:
        total += launch
        layer_t += launch
        out[B_OTHER] += launch
    # fixed host time per step (scheduler, launches): not scaled by the correction
    ovh = prm[P_STEP_OVH]
    if ovh > 0.0:
        total += ovh
        out[B_OTHER] += ovh
    pp = prm[P_PP]
    if pp > 1.0:
        # slowest stage: ceil(L/p) layers (+ embedding or LM head) + one hop
        per_layer = layer_t / n_layers
        stage = prm[P_STAGE_LAYERS] * per_layer + max(emb_t, head_t) + p2p_t / (pp - 1.0)
        if ovh > 0.0:
            stage += ovh
        out[B_INTERVAL] = min(stage, total)
    else:
        out[B_INTERVAL] = total
    return total


@jit_inline
def cuda_graph_rows(prm, T, t_pf):
    """Token rows a step is costed at: a decode-only step of T rows up to the largest captured
    CUDA-graph size runs the graph of the smallest captured size >= T (padding rows); mixed,
    prefill and larger steps run eagerly at T."""
    n = int(prm[P_CG_N])
    if n == 0 or t_pf > 0.0 or T > prm[P_CG_SIZES + n - 1]:
        return T
    j = 0
    while prm[P_CG_SIZES + j] < T:
        j += 1
    return prm[P_CG_SIZES + j]
