"""Hash-mode KV stores (MODEL.md §4.2): tiers chained first to last, each an LRU over the dense
prefix-block hash ids; evictions move down the chain and fall off the last tier."""
from __future__ import annotations

from .._numba import jit_noalloc
from .engine import _lru_push_mru, _lru_unlink


@jit_noalloc
def _tier_lookup(r, ch, req, kv):
    """Leading blocks of r found in the chain's tiers, and the deepest tier among them."""
    m = 0
    deepest = -1
    depth = -1
    for j in range(req.hash_off[r], req.hash_off[r + 1]):
        h = req.hash_ids[j]
        found = -1
        for q in range(kv.chain_off[ch], kv.chain_off[ch + 1]):
            if kv.tier_state[kv.chain_tier[q], 2, h] != 0:
                found = q - kv.chain_off[ch]
                break
        if found < 0:
            break
        m += 1
        if found > depth:
            depth = found
            deepest = kv.chain_tier[kv.chain_off[ch] + found]
    return m, deepest


@jit_noalloc
def _tier_insert(r, nblocks, ch, req, kv):
    """Write r's first nblocks full blocks to the chain's first tier (hits are promoted there);
    each tier is an LRU whose evictions move down the chain and fall off the last tier."""
    a = kv.chain_off[ch]
    z = kv.chain_off[ch + 1]
    nb = min(nblocks, req.hash_off[r + 1] - req.hash_off[r])
    for j in range(req.hash_off[r], req.hash_off[r] + nb):
        h = req.hash_ids[j]
        for q in range(a, z):
            k = kv.chain_tier[q]
            if kv.tier_state[k, 2, h] != 0:
                _lru_unlink(kv.tier_state[k, 0], kv.tier_state[k, 1], kv.tier_ends[k], h)
                kv.tier_state[k, 2, h] = 0
                kv.tier_ends[k, 2] -= 1
                break
        cur = h
        for q in range(a, z):
            k = kv.chain_tier[q]
            victim = -1
            if kv.tier_ends[k, 2] >= kv.tier_cap[k]:
                victim = kv.tier_ends[k, 0]
                _lru_unlink(kv.tier_state[k, 0], kv.tier_state[k, 1], kv.tier_ends[k], victim)
                kv.tier_state[k, 2, victim] = 0
                kv.tier_ends[k, 2] -= 1
            if kv.tier_cap[k] > 0:
                _lru_push_mru(kv.tier_state[k, 0], kv.tier_state[k, 1], kv.tier_ends[k], cur)
                kv.tier_state[k, 2, cur] = 1
                kv.tier_ends[k, 2] += 1
            else:
                victim = cur
            if victim < 0:
                break
            cur = victim
