"""Codes, parameter layouts and KV/prefix-cache helpers of the LLM serving engine.

The event loop itself is ``cluster.simulate_cluster`` (``cluster.simulate_single`` for one
client). Semantics: ``mistfast/ENGINE_SEMANTICS.md``, shared with the pure-Python reference twin
in ``tests/reference/engine_reference.py``. Times are float64 seconds throughout.
"""
from __future__ import annotations

from .._numba import jit_inline, jit_noalloc

# ---- integer codes ------------------------------------------------------------------------
STATIC, CONTINUOUS, MIXED, CHUNKED = 0, 1, 2, 3
FCFS, SPF, LWL = 0, 1, 2
PENDING, WAITING, RUNNING, FINISHED, REJECTED, UNFINISHED = 0, 1, 2, 3, 4, 5
R_NONE, R_TOKEN_BUDGET, R_MAX_MODEL_LEN, R_KV_CAPACITY, R_KV_EXHAUSTED = 0, 1, 2, 3, 4
REASON_NAMES = ("none", "prompt_exceeds_token_budget", "exceeds_max_model_len", "kv_exceeds_capacity",
                "kv_exhausted")

# ---- scheduler parameter vector --------------------------------------------------------------
S_BATCHING = 0
S_POLICY = 1
S_MAX_TOKENS = 2
S_MAX_SEQS = 3
S_CHUNK = 4
S_BLOCK = 5
S_TOTAL_BLOCKS = 6
S_WATERMARK = 7
S_PREEMPTION = 8
S_PREFIX_BLOCKS = 9
S_STATIC_PAD = 10
S_AGING = 11
S_MAX_MODEL_LEN = 12
# 1: max_batch_size limits the requests scheduled in one step, not the running set (MIST,
# docs/mist_parity.md); 0: it limits the running set (vLLM)
S_SEQS_PER_STEP = 13
# PP micro-batch pipelining (ENGINE_SEMANTICS.md): 1 = up to pp batches in flight (kernels/ppipe.py)
S_PP_MB = 14
# CHUNKED only: 1 = a step that admits or continues any prefill carries no decodes; decodes run in
# steps without prefill (SGLang's default scheduler; 0 = mixed chunks, vLLM and SGLang
# --enable-mixed-chunk). ENGINE_SEMANTICS.md "Batch formation per strategy"
S_PREFILL_APART = 15
# 1: SGLang's admission reserve (scheduler.kv_reserve = "sglang", ENGINE_SEMANTICS.md "Admission
# reserve"): a prompt is admitted only while the free KV tokens, less new_token_ratio x the running
# requests' remaining outputs, hold it and its whole output
S_KV_RESERVE = 16
N_SCHED = 17
# SGLang's new_token_ratio (python/sglang/srt/environ.py: SGLANG_INIT_NEW_TOKEN_RATIO 0.7,
# SGLANG_MIN_NEW_TOKEN_RATIO_FACTOR 0.14, SGLANG_NEW_TOKEN_RATIO_DECAY_STEPS 600,
# SGLANG_CLIP_MAX_NEW_TOKENS_ESTIMATION 4096): after n decode batches since the last reset the
# ratio is max(0.7 - n (0.7 - 0.098)/600, 0.098); a request's remaining output counts up to 4096
RESERVE_INIT_RATIO = 0.7
RESERVE_MIN_RATIO = 0.7 * 0.14
RESERVE_DECAY = (RESERVE_INIT_RATIO - RESERVE_MIN_RATIO) / 600.0
RESERVE_CLIP_TOKENS = 4096

# ---- step log columns -----------------------------------------------------------------------------
L_T, L_DT, L_NPF, L_PF_TOKENS, L_NDEC, L_DEC_TOKENS, L_KV_USED = 0, 1, 2, 3, 4, 5, 6
N_LOG = 7


@jit_inline
def _reserve_ratio(n_decays):
    """SGLang's new_token_ratio after n_decays decode batches since its last reset."""
    ratio = RESERVE_INIT_RATIO - n_decays * RESERVE_DECAY
    return ratio if ratio > RESERVE_MIN_RATIO else RESERVE_MIN_RATIO


@jit_inline
def _cdiv(a, b):
    return (a + b - 1) // b


@jit_inline
def _blocks_for(prompt_uncached, g, w, b):
    if w == 1:
        return _cdiv(prompt_uncached + g, b)
    return _cdiv(prompt_uncached, b) + w * _cdiv(g, b)


# ---- prefix cache: LRU doubly linked list over dense hash ids -----------------------------------
@jit_noalloc
def _lru_unlink(prev, nxt, ends, h):
    p = prev[h]
    q = nxt[h]
    if p >= 0:
        nxt[p] = q
    else:
        ends[0] = q
    if q >= 0:
        prev[q] = p
    else:
        ends[1] = p
    prev[h] = -1
    nxt[h] = -1


@jit_noalloc
def _lru_push_mru(prev, nxt, ends, h):
    tail = ends[1]
    prev[h] = tail
    nxt[h] = -1
    if tail >= 0:
        nxt[tail] = h
    else:
        ends[0] = h
    ends[1] = h


@jit_noalloc
def _cache_lookup(r, prompt, hash_off, hash_ids, in_cache, hb):
    m = 0
    for j in range(hash_off[r], hash_off[r + 1]):
        if in_cache[hash_ids[j]]:
            m += 1
        else:
            break
    hit = hb * m
    if hit > prompt - 1:
        hit = prompt - 1
    return m, hit


@jit_noalloc
def _cache_touch(r, m, hash_off, hash_ids, prev, nxt, ends):
    for j in range(hash_off[r], hash_off[r] + m):
        h = hash_ids[j]
        _lru_unlink(prev, nxt, ends, h)
        _lru_push_mru(prev, nxt, ends, h)


@jit_noalloc
def _cache_insert(r, prompt, hash_off, hash_ids, in_cache, prev, nxt, ends, cap, hb):
    full = prompt // hb
    n = hash_off[r + 1] - hash_off[r]
    if full > n:
        full = n
    for j in range(hash_off[r], hash_off[r] + full):
        h = hash_ids[j]
        if in_cache[h]:
            _lru_unlink(prev, nxt, ends, h)
            _lru_push_mru(prev, nxt, ends, h)
        else:
            if ends[2] >= cap:
                old = ends[0]
                _lru_unlink(prev, nxt, ends, old)
                in_cache[old] = False
                ends[2] -= 1
            in_cache[h] = True
            _lru_push_mru(prev, nxt, ends, h)
            ends[2] += 1
