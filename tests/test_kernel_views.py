"""Slim views of the state bundles (kernels/views.py) and the linear IR copy of numba's inliner
(_numba._copy_inlined_scopes_once): see docs/kernels.md, "Compile time and per-call cost"."""
import ast
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from mistfast.kernels import state, views

VIEWS = [name for name, obj in vars(views).items()
         if isinstance(obj, type) and issubclass(obj, tuple) and hasattr(obj, "_fields")]
BUNDLES = [getattr(state, n) for n in ("Requests", "Stages", "Clients", "Routes", "Flows", "KVStores", "Batches",
                                       "Loop")]


def test_views_exist_for_the_hot_helpers():
    assert len(VIEWS) >= 10


@pytest.mark.parametrize("name", VIEWS)
def test_a_view_is_a_strict_subset_of_one_bundle(name):
    # a view holds the same arrays under the same names as its bundle, only fewer of them
    fields = set(getattr(views, name)._fields)
    owners = [b.__name__ for b in BUNDLES if fields < set(b._fields)]
    assert owners, f"{name}: fields {sorted(fields)} are not a strict subset of any bundle"


@pytest.mark.parametrize("name", VIEWS)
def test_each_view_has_one_factory_that_fills_every_field_by_name(name):
    # the factory passes bundle.<field> for every field, in the field order (no mixed-up members)
    tree = ast.parse(Path(views.__file__).read_text())
    calls = [node for node in ast.walk(tree)
             if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == name]
    assert len(calls) == 1, f"{name} is built in {len(calls)} places"
    got = [a.attr for a in calls[0].args if isinstance(a, ast.Attribute)]
    assert got == list(getattr(views, name)._fields)


@pytest.mark.parametrize("name", VIEWS)
def test_views_are_module_level_namedtuples_of_arrays(name):
    cls = getattr(views, name)
    assert cls.__module__ == views.__name__ and cls.__qualname__ == name
    hints = typing.get_type_hints(cls)
    assert all(h.__name__ == "ndarray" for h in hints.values())


_PROBE = r"""
import os, sys
sys.path.insert(0, sys.argv[1])
import mistfast._numba as M
M._import_numba()
import numba, numpy as np

@numba.njit(inline="always")
def leaf(a, i):
    s = 0.0
    for j in range(i):
        if a[j] > 0:
            s += a[j]
        else:
            s -= 1.0
    return s

@numba.njit(inline="always")
def middle(a, k):
    t = 0.0
    while k > 0:
        t += leaf(a, k) * k
        k -= 1
    return t

@numba.njit
def top(a, n):
    return middle(a, n) - leaf(a, n) + middle(a, 2)

print(repr(top(np.linspace(-3.0, 4.0, 9), 7)))
print("patched", getattr(numba.core.ir.Scope, "_mistfast_linear_copy", False))
ir = top.inspect_llvm(top.signatures[0])
print(len(ir.splitlines()))
"""


def _probe(flag):
    import os
    env = dict(os.environ, MISTFAST_NUMBA_LINEAR_INLINE_COPY=flag, MISTFAST_NUMBA_CACHE="0", NUMBA_DISABLE_JIT="0")
    root = str(Path(views.__file__).parents[2])
    out = subprocess.run([sys.executable, "-c", _PROBE, root], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.split("\n")


def test_linear_inline_copy_gives_the_same_result_and_code():
    on, off = _probe("1"), _probe("0")
    assert on[1] == "patched True" and off[1] == "patched False"
    # hand value: a = linspace(-3, 4, 9) = -3 + 0.875 j; leaf(a, k) sums positives, -1 per other
    a = [-3.0 + 0.875 * j for j in range(9)]

    def leaf(i):
        return sum(x if x > 0 else -1.0 for x in a[:i])

    def middle(k):
        return sum(leaf(m) * m for m in range(k, 0, -1))

    assert float(on[0]) == middle(7) - leaf(7) + middle(2)
    assert on[0] == off[0]
    assert on[2] == off[2]   # same optimized LLVM IR length
