"""Per-operator breakdown of one engine step (``mistfast step --ops``): FLOP, bytes, bound and
time of every operator the step-latency kernel costs.

No second copy of the cost model: the kernel's own Python source (``step_time`` and the helpers
it calls, taken from the numba dispatchers' ``py_func``) runs as plain Python with its op-costing
function ``_op`` wrapped by a recorder. Every op the kernel costs is therefore listed with exactly
the kernel's numbers, and the rows sum to the step latency (tested against the compiled kernel).
An op is named after the source line that costs it.
"""
from __future__ import annotations

import math
import re
import sys
import types
from dataclasses import dataclass

import numpy as np

# names of the ops, by a word of the kernel line that costs them (first match wins)
_OP_NAMES = (("wf, woff", "attention_windowed"), ("prm[P_N_WIN], f, off", "attention_windowed"),
             ("w_qkv", "qkv_proj"), ("w_o,", "out_proj"), ("w_o)", "out_proj"), ("ar)", "tp_allreduce"),
             ("w_ffn", "ffn"), ("w_router", "moe_router"), ("a2a", "moe_all_to_all"), ("f_exp", "moe_experts"),
             ("w_sh", "moe_shared_expert"), ("CAT_ATTN", "attention"), ("emb_t += _op(prm, bdx, CAT_OTHER", "embedding"),
             ("emb_t += _op(prm, bdx, CAT_COMM", "embedding_allreduce"), ("_allgather(tp, rows", "lm_head_allgather"),
             ("head_t += _op", "lm_head"), ("p2p", "pp_send"), ("e_elem", "norm_residual_combine"))
_CATEGORY = {0: "gemm", 1: "attention", 2: "communication", 3: "other"}


@dataclass(frozen=True)
class OpCost:
    name: str
    category: str
    count: float        # how many times the op runs in the step (layers, collectives per layer)
    flops: float        # per device, all counts
    hbm_bytes: float    # off-chip bytes per device, all counts
    bound: str          # compute | memory | communication | host (the fixed per-step host time)
    time_s: float       # all counts, measured-step correction applied


def _op_name(line: str, lineno: int) -> str:
    for key, name in _OP_NAMES:
        if key in line:
            return name
    return f"op_line_{lineno}"


def _plain(module) -> dict:
    """The module's globals with every numba dispatcher replaced by its Python function."""
    g = dict(vars(module))
    for k, v in list(g.items()):
        if hasattr(v, "py_func") and callable(getattr(v, "py_func")):
            g[k] = v.py_func
    # rebuild the functions so that they look their callees up in the new globals
    for k, v in list(g.items()):
        if isinstance(v, types.FunctionType) and v.__module__ == module.__name__:
            g[k] = types.FunctionType(v.__code__, g, v.__name__, v.__defaults__, v.__closure__)
    return g


def step_latency_python(client, prefill=(), decode=(), *, prompts_done=None):
    """:func:`mistfast.stepmodel.step_latency` computed by the kernel's source as plain Python: the
    same numbers (tested) without loading the compiled kernels, which is most of the wall time of
    a one-off ``mistfast step`` (numba's target initialisation imports scipy)."""
    from .kernels import steptime as K
    from .stepmodel import step_latency_with
    return step_latency_with(_plain(K)["step_time"], client, prefill, decode, prompts_done)


def op_breakdown(client, prefill=(), decode=(), *, prompts_done=None) -> tuple[list[OpCost], float]:
    """(ops, step latency s) of one step, with the arguments of :func:`mistfast.stepmodel.step_latency`."""
    from .kernels import steptime as K
    from .stepmodel import _as_arrays, client_params
    pf, dec = _as_arrays(prefill, decode)
    prm = client_params(client)
    g = _plain(K)
    src = sys.modules[K.__name__].__file__
    lines = open(src).read().splitlines()
    calls: list[tuple] = []
    depth = [0]  # an op function may call another (_op -> _op_at): record the outermost call only

    def recorder(real):
        def recording_op(prm_, out, cat, mult, flops, off_bytes, on_bytes, comm_s, *rest):
            before_c, before_m = out[K.B_COMPUTE_BOUND], out[K.B_MEMORY_BOUND]
            depth[0] += 1
            try:
                t = real(prm_, out, cat, mult, flops, off_bytes, on_bytes, comm_s, *rest)
            finally:
                depth[0] -= 1
            if t and depth[0] == 0:
                bound = ("compute" if out[K.B_COMPUTE_BOUND] > before_c else
                         "memory" if out[K.B_MEMORY_BOUND] > before_m else "communication")
                lineno = sys._getframe(1).f_lineno
                calls.append((lineno, int(cat), float(mult), float(flops) * mult, float(off_bytes) * mult, bound,
                              float(t)))
            return t
        return recording_op
    # every op-costing function of the kernel: _op and its variants (_op_at, ...)
    for name in [k for k in g if k.startswith("_op") and isinstance(g[k], types.FunctionType)]:
        g[name] = recorder(g[name])
    # GenZ compat costs each request's attention on its own (compute- or memory-bound) and adds the
    # two sums in step_finish_genz without _op: record them as two rows with the same arithmetic
    real_finish_genz = g["step_finish_genz"]

    def recording_finish_genz(prm_, f_c, off_c, on_c, n_c, f_m, off_m, on_m, n_m, out_):
        n_layers = prm_[K.P_N_DENSE] + prm_[K.P_N_MOE]
        tau = prm_[K.P_TAU]
        t_c = (f_c / prm_[K.P_FPEAK_ATTN] + 2.0 * tau * n_c) * n_layers
        t_m = (off_m / prm_[K.P_BW] + on_m / prm_[K.P_BW_ONCHIP] + 2.0 * tau * n_m) * n_layers
        if n_c:
            calls.append(("attention (compute-bound requests)", K.CAT_ATTN, 2.0 * n_c * n_layers,
                          f_c * n_layers, off_c * n_layers, "compute", t_c))
        if n_m:
            calls.append(("attention (memory-bound requests)", K.CAT_ATTN, 2.0 * n_m * n_layers,
                          f_m * n_layers, off_m * n_layers, "memory", t_m))
        return real_finish_genz(prm_, f_c, off_c, on_c, n_c, f_m, off_m, on_m, n_m, out_)
    g["step_finish_genz"] = recording_finish_genz
    out = np.zeros(K.N_OUT)
    done = len(pf) if prompts_done is None else prompts_done
    total = g["step_time"](prm, pf[:, 0].copy(), pf[:, 1].copy(), len(pf), float(done),
                           dec[:, 0].copy(), dec[:, 1].copy(), dec[:, 2].copy(), len(dec), out)
    # the measured-step correction scales the whole step (and so every op) by one factor
    factor = out[K.X_FACTOR] if int(prm[K.P_CORR_N]) > 0 else 1.0
    # and so does the prefill-step efficiency, in proportion to the step's prefill rows
    factor *= 1.0 + out[K.X_PF_SLOW]
    ops = []
    for lineno, cat, mult, flops, byts, bound, t in calls:
        name = lineno if isinstance(lineno, str) else _op_name(_call_text(lines, lineno), lineno)
        ops.append(OpCost(name, _CATEGORY.get(cat, str(cat)), mult, flops, byts, bound, t * factor))
    # kernel launches (docs/step-model.md, "Launch-bound steps"): the wait for an eager step's
    # launches beyond its device time, or the per-kernel time of a graph-replayed decode step
    device_s = sum(op.time_s for op in ops)
    launch = float(out[K.X_HOST_ADD])
    if out[K.X_HOST_FLOOR] > device_s + launch:
        launch = float(out[K.X_HOST_FLOOR]) - device_s
    if launch > 0.0:
        ops.append(OpCost("kernel launches", "other", 1.0, 0.0, 0.0, "host", launch))
    # the fixed host time per step (scheduler, launches; calibrated step_overhead_ms) is added after
    # the correction and costs no device work: its own row, so that the rows sum to the step time
    host = float(prm[K.P_STEP_OVH])
    if host > 0.0:
        ops.append(OpCost("step_overhead (host)", "other", 1.0, 0.0, 0.0, "host", host))
    # host time per sequence (decode rows + prefill chunks): one row, as the per-step time
    n_seqs = float(len(pf) + dec[:, 0].sum())
    if prm[K.P_SEQ_OVH] * n_seqs > 0.0:
        ops.append(OpCost("seq_overhead (host)", "other", n_seqs, 0.0, 0.0, "host", float(prm[K.P_SEQ_OVH] * n_seqs)))
    return ops, float(total)


def _call_text(lines: list[str], lineno: int) -> str:
    """The source of the op call at line ``lineno``, from the line that opens it (``_op(``) to the
    next line (a call may span lines)."""
    i = lineno - 1
    while i > 0 and not re.search(r"\b_op\w*\(", lines[i]):
        i -= 1
    code = [ln.split("#")[0].rstrip() for ln in lines[i:i + 2]]
    return code[0] if code[0].endswith(")") else " ".join(code)


def format_ops(ops: list[OpCost], total_s: float) -> str:
    """The per-operator table printed by ``mistfast step --ops``."""
    head = f"{'operator':<22}{'count':>7}{'GFLOP':>12}{'MB':>12}{'bound':>15}{'time ms':>12}{'share':>8}"
    rows = [head, "-" * len(head)]
    for o in ops:
        share = o.time_s / total_s * 100 if total_s else 0.0
        rows.append(f"{o.name:<22}{_count(o.count):>7}{o.flops / 1e9:>12.4g}{o.hbm_bytes / 1e6:>12.4g}"
                    f"{o.bound:>15}{o.time_s * 1e3:>12.4f}{share:>7.1f}%")
    rows.append("-" * len(head))
    rows.append(f"{'total':<22}{'':>7}{sum(o.flops for o in ops) / 1e9:>12.4g}"
                f"{sum(o.hbm_bytes for o in ops) / 1e6:>12.4g}{'':>15}{sum(o.time_s for o in ops) * 1e3:>12.4f}"
                f"{100.0 if total_s else 0.0:>7.1f}%")
    return "\n".join(rows)


def _count(x: float) -> str:
    return str(int(x)) if math.isclose(x, round(x)) else f"{x:.3g}"
