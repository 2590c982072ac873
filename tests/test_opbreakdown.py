"""``mistfast step --ops``: the per-operator rows come from the kernel's own source, so they must
sum to the compiled kernel's step latency; FLOP counts are checked against hand formulas."""
from __future__ import annotations

import numpy as np
import pytest

from mistfast.opbreakdown import format_ops, op_breakdown, step_latency_python
from mistfast.specs import make_client
from mistfast.stepmodel import step_latency

CLIENTS = [
    dict(model="llama-3.1-8b", device="H100"),
    dict(model="llama-3.1-70b", device="H100", tp=8),
    dict(model="mixtral-8x7b", device="H100", tp=2, ep=2),
    dict(model="deepseek-v3", device="H200", tp=8, pp=2, precision="fp8"),
    dict(model="llama-3.1-8b", device="H100-genz", reference="genz"),
    dict(model="e5-base", device="Grace"),
]


@pytest.mark.parametrize("kw", CLIENTS, ids=lambda kw: f"{kw['model']}-{kw['device']}")
def test_ops_sum_to_the_kernel_step_time(kw):
    c = make_client(**kw)
    rng = np.random.default_rng(len(str(kw)))
    for _ in range(5):
        pf = [(int(rng.integers(0, 4000)), int(rng.integers(1, 2048))) for _ in range(rng.integers(0, 3))]
        dec = [(1, int(rng.integers(1, 8000))) for _ in range(rng.integers(0 if pf else 1, 40))]
        if c.model.architecture == "encoder":
            dec = []
            pf = pf or [(0, 128)]
        ops, total = op_breakdown(c, prefill=pf, decode=dec)
        ref = step_latency(c, prefill=pf, decode=dec)
        py = step_latency_python(c, prefill=pf, decode=dec)  # what `mistfast step` prints
        assert py.total_s == pytest.approx(ref.total_s, rel=1e-12)
        for k, v in ref.breakdown.items():
            assert py.breakdown[k] == pytest.approx(v, rel=1e-12, abs=1e-300), k
        assert total == pytest.approx(ref.total_s, rel=1e-12)
        assert sum(o.time_s for o in ops) == pytest.approx(ref.total_s, rel=1e-9)
        assert sum(o.flops for o in ops) == pytest.approx(ref.breakdown["flops"], rel=1e-9)
        assert sum(o.hbm_bytes for o in ops) == pytest.approx(ref.breakdown["hbm_bytes"], rel=1e-9)
        assert all(not o.name.startswith("op_line_") for o in ops), [o.name for o in ops]
        assert {o.bound for o in ops} <= {"compute", "memory", "communication", "host"}


def test_the_fixed_host_time_per_step_is_its_own_row():
    """A calibrated step_overhead_ms is added after the ops (no device work): one 'host' row of
    exactly that time, and the rows still sum to the step time."""
    c = make_client("llama-3.1-8b", "H100", efficiency={"compute": 0.6, "memory": 0.7, "step_overhead_ms": 1.5})
    ops, total = op_breakdown(c, decode=[(1, 1024)] * 8)
    host = [o for o in ops if o.bound == "host"]
    assert len(host) == 1 and host[0].time_s == pytest.approx(1.5e-3, rel=1e-12)
    assert host[0].flops == 0.0 and host[0].hbm_bytes == 0.0
    assert sum(o.time_s for o in ops) == pytest.approx(total, rel=1e-9)
    bare = make_client("llama-3.1-8b", "H100", efficiency={"compute": 0.6, "memory": 0.7})
    assert total == pytest.approx(step_latency(bare, decode=[(1, 1024)] * 8).total_s + 1.5e-3, rel=1e-9)


def test_dense_op_flops_by_hand():
    # Llama-3.1-8B: D = 4096, 32 query / 8 KV heads of 128, FFN 14336 (gated: 3 matrices), 32 layers
    c = make_client("llama-3.1-8b", "H100")
    T = 512
    ops = {o.name: o for o in op_breakdown(c, prefill=[(0, T)])[0]}
    D, dh, L, F = 4096, 128, 32, 14336
    assert ops["qkv_proj"].flops == pytest.approx(2 * T * D * (32 + 2 * 8) * dh * L)
    assert ops["out_proj"].flops == pytest.approx(2 * T * 32 * dh * D * L)
    assert ops["ffn"].flops == pytest.approx(2 * T * 3 * D * F * L)
    assert ops["ffn"].count == L and ops["ffn"].bound == "compute"
    # causal attention of one 512-token prompt: 4 * heads * dh * T(T+1)/2 per layer
    assert ops["attention"].flops == pytest.approx(4 * 32 * dh * T * (T + 1) / 2 * L)
    assert "tp_allreduce" not in ops  # tp = 1


def test_decode_step_is_memory_bound_and_table_totals():
    c = make_client("llama-3.1-8b", "H100")
    ops, total = op_breakdown(c, decode=[(1, 1024)] * 8)
    assert {o.name: o.bound for o in ops}["ffn"] == "memory"
    text = format_ops(ops, total)
    assert text.splitlines()[0].split()[:2] == ["operator", "count"]
    assert f"{total * 1e3:.4f}" in text.splitlines()[-1] and "100.0%" in text.splitlines()[-1]


def test_cli_step_ops():
    from click.testing import CliRunner

    from mistfast.cli import main
    res = CliRunner().invoke(main, ["step", "--model", "llama-3.1-70b", "--tp", "8", "--prefill", "0:2048", "--ops"])
    assert res.exit_code == 0, res.output
    for word in ("qkv_proj", "tp_allreduce", "ffn", "attention", "lm_head", "bound", "total"):
        assert word in res.output
