"""Multi-client, multi-stage serving simulation: one global event loop over LLM clients (each a
scheduler + step-latency model), CPU slot servers, batched retrieval servers, memory tiers and
links with processor-sharing bandwidth (MODEL.md §1.2, §3, §4, §5, §6, §7).

This module is the entry: ``simulate_cluster`` (one point), ``simulate_single`` (one LLM client,
one stage per request: the single-client engine) and ``simulate_points`` /
``simulate_points_serial`` (many single-client points in one call); it also re-exports the codes
and layouts of ``layout`` that the Python lowering reads as ``cluster.*``. The work is done by:

- ``state``: the bundles the state travels in, and their factories;
- ``loop``: the event loop, phase by phase; ``stages``: arrivals, routing, stage transitions;
  ``routing``: pool policies; ``flows``: transfers and link sharing; ``tiers``: hash-mode KV stores;
- ``llm_step``: an LLM step's end and start; ``batching``: batch formation; ``decode_run``: decode
  runs; ``servers``: slot and retrieval servers; ``mist``: MIST compatibility; ``queues``: waiting
  queues.

The LLM scheduler semantics are in ``mistfast/ENGINE_SEMANTICS.md``.
"""
from __future__ import annotations

import types

import numpy as np

from .._numba import jit_entry, jit_inline, lazy_numba, njit
from .layout import *  # noqa: F401,F403  (the codes and layouts, re-exported for the Python lowering)
from .layout import F_COUNT, F_TTFT, MAX_HOPS, N_SRV
from .loop import _event_loop
from .mist import _mist_memo  # noqa: F401  (re-exported: tests call it)
from .state import Routes, new_batches, new_clients, new_flows, new_kv_stores, new_loop, new_requests, new_stages

numba = lazy_numba()  # numba.prange below; importing this module does not import numba


@jit_entry
def simulate_cluster(cli_kind, cli_prm, cli_sch, cli_srv, pool_off, pool_cli, pool_policy, pool_thresh,
                     res_cap, route_lat, route_res, route_nres, g,
                     arrival_in, branches, hash_off, hash_ids, n_hash,
                     st_off, st_kind, st_pool, st_prompt, st_output, st_bytes, st_tier, st_flags,
                     status, reason, arrival, t_first_sched, t_first_tok, t_last_tok, t_finish,
                     generated, preempts, hit_first, computed_pf,
                     st_client, st_t_ready, st_t_arrive, st_t_sched, st_t_exit,
                     cstats, res_bytes, runstats, steplog, tcap, chain_off, chain_tier):
    """Simulate one configuration point; all outputs are filled in place. Returns steps logged.
    tcap[k]: capacity of tier k in hash blocks (hash-mode KV stores); chain_off/chain_tier: CSR
    lists of the tiers a hash-mode kv_fetch stage searches, first to last."""
    n = arrival_in.shape[0]
    lp = new_loop(g, n, steplog, runstats)
    req = new_requests(lp, arrival_in, branches, hash_off, hash_ids, status, reason, arrival, t_first_sched,
                       t_first_tok, t_last_tok, t_finish, generated, preempts, hit_first, computed_pf)
    stg = new_stages(st_off, st_kind, st_pool, st_prompt, st_output, st_bytes, st_tier, st_flags, st_client,
                     st_t_ready, st_t_arrive, st_t_sched, st_t_exit)
    cli = new_clients(cli_kind, cli_prm, cli_sch, cli_srv, cstats)
    rte = Routes(pool_off, pool_cli, pool_policy, pool_thresh, route_lat, route_res, route_nres)
    return _run_point(lp, req, stg, cli, rte, n_hash, tcap, chain_off, chain_tier, res_cap, res_bytes)


@jit_inline
def _run_point(lp, req, stg, cli, rte, n_hash, tcap, chain_off, chain_tier, res_cap, res_bytes):
    """The rest of a point's state (flows, KV stores, batches), then the event loop over it."""
    n = req.arrival.shape[0]
    fl = new_flows(n, cli.kind.shape[0], res_cap, res_bytes)
    kv = new_kv_stores(cli, n_hash, tcap, chain_off, chain_tier)
    bat = new_batches(cli, n)
    return _event_loop(req, stg, cli, rte, fl, kv, bat, lp)


@jit_entry
def simulate_single(prm, sch, g, arrival_in, prompt, output, branches, hash_off, hash_ids, n_hash,
                    status, reason, arrival, t_first_sched, t_first_tok, t_last_tok, t_finish, generated, preempts,
                    hit_first, computed_pf, cstats, runstats, steplog):
    """One LLM client, one stage per request: the single-client engine."""
    n = prompt.shape[0]
    cli_kind = np.zeros(1, np.int64)
    cli_prm = prm.reshape(1, prm.shape[0])
    cli_sch = sch.reshape(1, sch.shape[0])
    cli_srv = np.zeros((1, N_SRV))
    pool_off = np.array([0, 1], np.int64)
    pool_cli = np.zeros(1, np.int64)
    pool_policy = np.zeros(1, np.int64)
    pool_thresh = np.zeros(1)
    res_cap = np.zeros(0)
    route_lat = np.zeros((1, 1))
    route_res = np.full((1, 1, MAX_HOPS), -1, np.int64)
    route_nres = np.zeros((1, 1), np.int64)
    st_off = np.arange(n + 1).astype(np.int64)
    st_kind = np.zeros(n, np.int64)
    st_pool = np.zeros(n, np.int64)
    st_bytes = np.zeros(n)
    st_tier = np.full(n, -1, np.int64)
    st_flags = np.full(n, F_TTFT | F_COUNT, np.int64)
    st_client = np.zeros(n, np.int64)
    st_a = np.zeros(n)
    st_b = np.zeros(n)
    st_c = np.zeros(n)
    st_d = np.zeros(n)
    res_bytes = np.zeros(0)
    # simulate_cluster's body, not a call to it: one dispatcher level fewer above the event loop
    # (each level emits the loop's machine code once more: docs/kernels.md "Compile time")
    lp = new_loop(g, n, steplog, runstats)
    req = new_requests(lp, arrival_in, branches, hash_off, hash_ids, status, reason, arrival, t_first_sched,
                       t_first_tok, t_last_tok, t_finish, generated, preempts, hit_first, computed_pf)
    stg = new_stages(st_off, st_kind, st_pool, prompt, output, st_bytes, st_tier, st_flags, st_client,
                     st_a, st_b, st_c, st_d)
    cli = new_clients(cli_kind, cli_prm, cli_sch, cli_srv, cstats)
    rte = Routes(pool_off, pool_cli, pool_policy, pool_thresh, route_lat, route_res, route_nres)
    return _run_point(lp, req, stg, cli, rte, n_hash, np.zeros(0, np.int64), np.zeros(1, np.int64),
                      np.zeros(0, np.int64), res_cap, res_bytes)


def _simulate_single_points_impl(prm, sch, g, offsets, arrival_in, prompt, output, branches, hash_off, hash_ids,
                                 n_hash, status, reason, arrival, t_first_sched, t_first_tok, t_last_tok, t_finish,
                                 generated, preempts, hit_first, computed_pf, cstats, runstats, steplog):
    """Many single-client points in one call: point q owns requests offsets[q]:offsets[q+1] and the
    hash CSR slice hash_off[offsets[q] + q : offsets[q+1] + q + 1] (absolute offsets)."""
    for q in numba.prange(prm.shape[0]):
        a = offsets[q]
        z = offsets[q + 1]
        simulate_single(prm[q], sch[q], g[q], arrival_in[a:z], prompt[a:z], output[a:z], branches[a:z],
                        hash_off[a + q:z + q + 1], hash_ids, n_hash[q], status[a:z], reason[a:z], arrival[a:z],
                        t_first_sched[a:z], t_first_tok[a:z], t_last_tok[a:z], t_finish[a:z], generated[a:z],
                        preempts[a:z], hit_first[a:z], computed_pf[a:z], cstats[q], runstats[q], steplog[q])


def _renamed(fn, name):
    """The same function under another name. numba keys its on-disk cache by a function's qualified
    name and first line, not by options such as ``parallel``: two kernels made from one function
    share one cache entry, and whichever compiled first would be served to the other (a parallel
    sweep silently running the serial code, or the reverse)."""
    copy = types.FunctionType(fn.__code__.replace(co_name=name, co_qualname=name), fn.__globals__, name,
                              fn.__defaults__, fn.__closure__)
    copy.__qualname__ = name
    copy.__doc__ = fn.__doc__
    return copy


# The serial point kernel runs simulate_single's body inlined (numba's IR inlining), not as a
# dispatcher of its own: every dispatcher level links the event loop's code and emits its machine
# code once more (a few CPU s of cold compile each: docs/kernels.md "Compile time"). The code that
# runs for the loop is the same: simulate_cluster's, linked as it is. (simulate_cluster itself
# cannot be inlined so: a call with more than 30 arguments is a *args call to numba's inliner.)
_single_point = jit_inline(_renamed(simulate_single.py_func, "_single_point"))


def _serial_points(prm, sch, g, offsets, arrival_in, prompt, output, branches, hash_off, hash_ids, n_hash, status,
                   reason, arrival, t_first_sched, t_first_tok, t_last_tok, t_finish, generated, preempts, hit_first,
                   computed_pf, cstats, runstats, steplog):
    """_simulate_single_points_impl's loop for the serial kernel, each point simulate_single's body
    inlined (the parallel kernel keeps its prange over simulate_single calls)."""
    for q in range(prm.shape[0]):
        a = offsets[q]
        z = offsets[q + 1]
        _single_point(prm[q], sch[q], g[q], arrival_in[a:z], prompt[a:z], output[a:z], branches[a:z],
                      hash_off[a + q:z + q + 1], hash_ids, n_hash[q], status[a:z], reason[a:z], arrival[a:z],
                      t_first_sched[a:z], t_first_tok[a:z], t_last_tok[a:z], t_finish[a:z], generated[a:z],
                      preempts[a:z], hit_first[a:z], computed_pf[a:z], cstats[q], runstats[q], steplog[q])


simulate_points = njit(parallel=True, nogil=True)(_simulate_single_points_impl)
simulate_points_serial = njit(parallel=False, nogil=True, link_only=True)(_renamed(_serial_points,
                                                                   "_simulate_single_points_serial"))
