"""Cold compile time (issue 13, docs/kernels.md "Compile time"): the structure that keeps it down.

numba compiles a jitted callee once per distinct tuple of argument types, and an integer literal
(or a module-level integer constant, which numba freezes into a literal) is a type of its own:
``_enter_stage(r, s, -1, ...)`` next to ``_enter_stage(r, s, c_from, ...)`` compiled the helper,
and everything below it, twice. Each dispatcher level also re-optimises and re-emits the machine
code of every callee linked into it, so thin wrappers above the event loop are not free.
These checks read the source (no compile)."""
import ast
from pathlib import Path

import pytest

from mistfast.kernels import cluster as CL

KERNELS = Path(CL.__file__).parent
ALLOWED: set = set()   # (file, kernel) pairs allowed a literal argument: none


def _module_int_constants() -> set[str]:
    names = set()
    for path in KERNELS.glob("*.py"):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Assign) and isinstance(node.value, (ast.Constant, ast.BinOp, ast.UnaryOp, ast.Tuple)):
                for target in node.targets:
                    for t in ast.walk(target):
                        if isinstance(t, ast.Name):
                            names.add(t.id)
    return names


def _compiled_kernels() -> dict[str, str]:
    """name -> decorator of every kernel that numba compiles on its own (not IR-inlined)."""
    kinds = {}
    for path in KERNELS.glob("*.py"):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef):
                for d in node.decorator_list:
                    text = ast.unparse(d)
                    if text.startswith(("jit", "njit")) and text != "jit_inline":
                        kinds[node.name] = text
    return kinds


def _is_literal(arg, constants) -> bool:
    if isinstance(arg, ast.UnaryOp) and isinstance(arg.operand, ast.Constant):
        arg = arg.operand
    if isinstance(arg, ast.Constant):
        return isinstance(arg.value, (bool, int))   # numba has no float literal type
    return isinstance(arg, ast.Name) and arg.id in constants


def test_no_compiled_kernel_is_called_with_an_integer_literal():
    constants = _module_int_constants()
    kernels = _compiled_kernels()
    found = set()
    for path in sorted(KERNELS.glob("*.py")):
        for call in ast.walk(ast.parse(path.read_text())):
            if not isinstance(call, ast.Call):
                continue
            f = call.func
            name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
            if name in kernels and (path.name, name) not in ALLOWED:
                for arg in call.args:
                    if _is_literal(arg, constants):
                        found.add(f"{path.name}:{call.lineno} {name}({ast.unparse(arg)}, ...)")
    assert found == set(), "pass np.int64(value), not a literal: " + "; ".join(sorted(found))


def test_the_check_sees_a_literal_argument():
    # the check above must be able to fail
    call = ast.parse("_enter_stage(r, s, -1, t)").body[0].value
    assert _is_literal(call.args[2], set()) and not _is_literal(call.args[0], set())
    assert _is_literal(ast.parse("f(G_CONC)").body[0].value.args[0], _module_int_constants())
    assert "_enter_stage" in _compiled_kernels() and "_event_loop" in _compiled_kernels()



# ---- link_only entry kernels (_numba.py, docs/kernels.md "Compile time") --------------------------
# A probe in a fresh process without the kernel cache: a small callee and an entry point above it,
# with and without link_only. Cheap: two small functions, no kernel.
_LINK_PROBE = r"""
import re, sys
sys.path.insert(0, sys.argv[1])
import mistfast._numba as M
M._import_numba()
import numba, numpy as np
SRC = (
    "def callee(x):\n"
    "    s = 0\n"
    "    for i in range(x.shape[0]):\n"
    "        s += x[i] * 3\n"
    "    return s\n"
    "\n"
    "def entry(x):\n"
    "    return callee(x) + 1\n"
)

def body(text, name):
    m = re.search(r"define [^\n]*" + re.escape(name) + r"\(.*?\{\n(.*?\n)}\n", text, re.S)
    return None if m is None else m.group(1)

for link_only in (True, False):
    ns = {"__name__": "mistfast.kernels.probe"}
    exec(SRC, ns)
    ns["callee"] = numba.njit(ns["callee"])
    entry = M._dispatcher(ns["entry"], dict(link_only=link_only))
    value = entry(np.arange(10, dtype=np.int64))
    own = ns["callee"].inspect_llvm(ns["callee"].signatures[0])
    linked = entry.inspect_llvm(entry.signatures[0])
    name = re.search(r"define [^@]*(@_ZN\S*callee\S*)\(", own).group(1)
    # the callee's own optimised code (its vectorised loop; -O0 would not vectorise), not inlined
    vector = re.compile(r"<\d+ x i64>")
    kept = body(linked, name) is not None and bool(vector.search(body(linked, name))) == bool(vector.search(own))
    wrapper = any("cpython" in d and "callee" in d for d in re.findall(r"define [^\n]*", linked))
    print(link_only, int(value), kept, wrapper)
print("compiling", M._COMPILING)
"""


def _link_probe(flag):
    import os
    import subprocess
    import sys
    env = dict(os.environ, MISTFAST_NUMBA_LINK_ONLY=flag, MISTFAST_NUMBA_CACHE="0", NUMBA_DISABLE_JIT="0")
    root = str(KERNELS.parents[1])
    out = subprocess.run([sys.executable, "-c", _LINK_PROBE, root], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = [line.split() for line in out.stdout.strip().split("\n")]
    return {row[0]: row[1:] for row in lines[:-1]}, " ".join(lines[-1])


def test_a_link_only_entry_keeps_its_callees_code_as_compiled():
    from mistfast import _numba
    if not _numba.LINK_ONLY:
        pytest.skip("link_only is off (another numba version, or MISTFAST_NUMBA_LINK_ONLY=0)")
    rows, last = _link_probe("1")
    hand = 3 * sum(range(10)) + 1          # entry(arange(10)) = 3 * 45 + 1
    assert rows["True"][0] == rows["False"][0] == str(hand)
    # link_only: the callee's code as the callee's own module optimised it, called, not inlined,
    # without its Python wrapper; re-optimising (numba's way) inlines the small callee instead
    assert rows["True"][1:] == ["True", "False"]
    assert rows["False"][1:] == ["False", "False"]
    assert last == "compiling []"
    off, _ = _link_probe("0")
    assert off["True"] == off["False"] == rows["False"]


def test_every_wrapper_above_the_loop_is_link_only():
    # the point kernels, simulate_single and simulate_cluster only allocate state and call the level
    # below: none re-optimises the event loop's code (docs/kernels.md, "Compile time")
    kinds = _compiled_kernels()
    assert kinds["simulate_single"] == "jit_entry" and kinds["simulate_cluster"] == "jit_entry"
    assert kinds["_event_loop"] == "jit_noalloc"
    from mistfast.kernels import cluster as CL
    assert "link_only=True" in ast.unparse(next(
        n for n in ast.parse(Path(CL.__file__).read_text()).body
        if isinstance(n, ast.Assign) and ast.unparse(n.targets[0]) == "simulate_points_serial"))


# ---- what a link_only entry links: the callee's optimised IR, not the code generator's rewrite ----
# Emitting machine code rewrites a module's IR in place (LLVM's CodeGenPrepare: a 64-bit division
# gets a 32-bit fast path, large constants are hoisted); numba then links that rewritten IR into
# the callers. A re-optimising caller cleans it up with its -O3 round; a link_only one would emit
# code for it as it is, and each level would add its rewrites again (docs/kernels.md).
_CLEAN_PROBE = r"""
import re, sys
sys.path.insert(0, sys.argv[1])
import mistfast._numba as M
M._import_numba()
import numpy as np
SRC = (
    "def callee(x, d):\n"
    "    s = 0\n"
    "    for i in range(x.shape[0]):\n"
    "        s += (x[i] * 0x123456789AB) // d + (x[i] ^ 0x7FFF0000FFFF)\n"
    "    return s\n"
    "\n"
    "def entry(x, d):\n"
    "    return callee(x, d) + 1\n"
)

def body(text, name):
    m = re.search(r"define [^\n]*" + re.escape(name) + r"\(.*?\{\n(.*?\n)}\n", text, re.S)
    return None if m is None else re.sub(r"![\w.]+ !\d+", "", m.group(1))   # metadata numbers differ

ns = {"__name__": "mistfast.kernels.probe"}
exec(SRC, ns)
ns["callee"] = M._dispatcher(ns["callee"], {})
entry = M._dispatcher(ns["entry"], dict(link_only=True))
x = np.arange(10, dtype=np.int64)
value = entry(x, np.int64(7))
lib = ns["callee"].overloads[ns["callee"].signatures[0]].library
emitted = lib.get_llvm_str()    # the callee's module after its machine code was made
name = re.search(r"define [^@]*(@_ZN\S*callee\S*)\(", emitted).group(1)
clean = body(str(lib._mistfast_ir_for_linking), name)
top = entry.overloads[entry.signatures[0]].library
linked = body(str(top._mistfast_ir_for_linking), name)   # the entry's module as linked, before its machine code
print(int(value), clean is not None, linked == clean, body(emitted, name) == clean)
"""


def test_a_link_only_entry_links_its_callees_ir_from_before_machine_code():
    import os
    import subprocess
    import sys
    from mistfast import _numba
    if not _numba.LINK_ONLY:
        pytest.skip("link_only is off (another numba version, or MISTFAST_NUMBA_LINK_ONLY=0)")
    env = dict(os.environ, MISTFAST_NUMBA_CACHE="0", NUMBA_DISABLE_JIT="0")
    out = subprocess.run([sys.executable, "-c", _CLEAN_PROBE, str(KERNELS.parents[1])], env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    value, has_clean, linked_is_clean, _emitted_is_clean = out.stdout.split()
    hand = sum((i * 0x123456789AB) // 7 + (i ^ 0x7FFF0000FFFF) for i in range(10)) + 1
    assert int(value) == hand
    # the entry's module holds the callee exactly as its own -O3 round left it, not as the code
    # generator rewrote it (on x86-64 it does: the last field is False there)
    assert has_clean == "True" and linked_is_clean == "True"


# ---- rare phases out of line; no dispatcher level between the point kernel and the loop ---------
# Each is compiled once as its own function instead of its body being inlined into the event loop
# or batch formation (numba types, lowers and LLVM optimises an inlined body at every call site and
# as part of the loop's one big function): flows/transfers, the end of a run, slot and retrieval
# servers, PP micro-batching, KV growth with preemption, rejections, static padding, sorted
# admission, the lazy members' settle and one op's cost (docs/kernels.md "Compile time").
RARE_OUT_OF_LINE = {"_advance_transfers", "_close_books", "_lazy_decodes_ok", "_slots_release", "_slots_start",
                    "_retrieval_phase_end", "_retrieval_start", "_pp_launch", "_pp_restore_oldest",
                    "_pp_busy_after", "_pp_set_next", "_add_decode", "_reject_to_unblock", "_pad_static_batch",
                    "_sort_waiting", "_lazy_settle", "_op_cost"}


def test_rare_phases_are_compiled_out_of_line():
    kinds = _compiled_kernels()
    inlined = {name for name in RARE_OUT_OF_LINE if kinds.get(name) != "jit_noalloc"}
    assert inlined == set(), f"inlined again (cold compile time): {sorted(inlined)}"


def _function(tree, name):
    return next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name)


def _called_names(node):
    return {n.func.id for n in ast.walk(node) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}


def test_the_single_client_path_has_one_dispatcher_above_the_loop():
    # the serial point kernel inlines simulate_single, which builds the state itself (no
    # simulate_cluster call): every dispatcher level emits the whole loop's machine code again
    tree = ast.parse(Path(CL.__file__).read_text())
    assert "simulate_cluster" not in _called_names(_function(tree, "simulate_single"))
    assert "_run_point" in _called_names(_function(tree, "simulate_single"))
    assert "_single_point" in _called_names(_function(tree, "_serial_points"))
    assigned = {ast.unparse(n.targets[0]): ast.unparse(n.value) for n in tree.body if isinstance(n, ast.Assign)}
    assert assigned["_single_point"].startswith("jit_inline(")
    assert "_serial_points" in assigned["simulate_points_serial"]
    assert ast.unparse(_function(tree, "_run_point").decorator_list[0]) == "jit_inline"


def test_no_cached_kernel_was_compiled_for_a_literal_argument():
    """numba compiles a callee once per argument types; a variable first assigned a literal (``nw = 0``)
    can type as ``Literal[int](0)`` while the loop around it is typed, which compiles the callee a
    second time for nothing (the AST check above sees only literal arguments written in the call).
    Read from the kernel cache's indexes: every signature compiled so far with these sources."""
    from mistfast import _numba
    if not _numba._CACHE_DIR:
        pytest.skip("no kernel cache")
    _numba.ensure_compiled_kernels()
    import importlib

    from numba.core import types
    from numba.core.dispatcher import Dispatcher
    seen = 0
    found = []
    for path in sorted(KERNELS.glob("*.py")):
        mod = importlib.import_module(f"mistfast.kernels.{path.stem}")
        for name, obj in vars(mod).items():
            cache = getattr(obj, "_cache", None) if isinstance(obj, Dispatcher) else None
            if cache is None or obj.py_func.__module__ != mod.__name__ or not hasattr(cache, "_cache_file"):
                continue
            for key in cache._cache_file._load_index():
                seen += 1
                sig = key[0]
                if any(isinstance(t, types.Literal) for t in getattr(sig, "args", sig)):
                    found.append(f"{path.name}::{name}{sig}")
    if seen == 0:
        pytest.skip("nothing compiled into the kernel cache yet")
    assert found == []


# ---- internal kernels: no Python entry, no machine code of their own (_numba.py, docs/kernels.md) --
# A jit_noalloc helper is only ever called from jitted code, which links its IR: its CPython
# wrapper (unboxing every argument bundle) and its own machine code were compile time for nothing.
# The probe is a real module file (numba caches only functions with a source file), compiled in a
# fresh cache, then loaded from it, then linked from the cache into a new caller.
_INTERNAL_MODULE = '''
import numpy as np
from mistfast._numba import jit_noalloc, jit_noalloc_py, njit

@jit_noalloc
def callee(x, d):
    s = 0
    for i in range(x.shape[0]):
        s += (x[i] * 0x123456789AB) // d + (x[i] ^ 0x7FFF0000FFFF)
    return s

@jit_noalloc_py
def entry(x, d):
    return callee(x, d) + 1

@jit_noalloc_py
def later_entry(x, d):
    return callee(x, d) + 2
'''

_INTERNAL_PROBE = r"""
import sys
sys.path.insert(0, sys.argv[1]); sys.path.insert(0, sys.argv[2])
import numpy as np
import internal_probe as P
import mistfast._numba as M
x = np.arange(10, dtype=np.int64)
try:
    P.callee(x, np.int64(7))      # before numba is set up (a deferred kernel)
    deferred = "called"
except TypeError as e:
    deferred = "TypeError" if "jitted callers only" in str(e) and "internal_probe.callee" in str(e) else str(e)
value = P.entry(x, np.int64(7)) if sys.argv[3] == "entry" else P.later_entry(x, np.int64(7))
callee = sys.modules["internal_probe"].callee
try:
    callee(x, np.int64(7))        # the dispatcher itself
    direct = "called"
except TypeError as e:
    direct = "TypeError" if "jitted callers only" in str(e) else str(e)
if callee.signatures:   # (an entry loaded from the cache does not load its callees)
    lib = callee.overloads[callee.signatures[0]].library
    code = "no-machine-code" if getattr(lib, "_mistfast_no_machine_code", False) or lib._compiled_object == b"" else "machine-code"
    how = "compiled" if callee._cache_hits.total() == 0 else "loaded"
else:
    code, how = "-", "not-needed"
print(int(value), deferred, direct, code, len(callee.signatures), how)
"""


def _internal_probe(tmp_path, cache, which, extra_env=None):
    import os
    import subprocess
    import sys
    (tmp_path / "internal_probe.py").write_text(_INTERNAL_MODULE)
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache), NUMBA_DISABLE_JIT="0", MISTFAST_NUMBA_CACHE="1", **(extra_env or {}))
    out = subprocess.run([sys.executable, "-c", _INTERNAL_PROBE, str(KERNELS.parents[1]), str(tmp_path), which],
                         env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.split()


def test_an_internal_kernel_keeps_its_python_entry_when_asked(tmp_path):
    # MISTFAST_NUMBA_INTERNAL=0: wrappers kept, a Python call simply runs
    hand = sum((i * 0x123456789AB) // 7 + (i ^ 0x7FFF0000FFFF) for i in range(10))
    out = _internal_probe(tmp_path, tmp_path / "cache", "entry", {"MISTFAST_NUMBA_INTERNAL": "0"})
    assert out[:4] == [str(hand + 1), "called", "called", "machine-code"]


def test_an_internal_kernel_has_no_python_entry(tmp_path):
    # the default (session 9) and MISTFAST_NUMBA_INTERNAL=1: no wrappers, machine code kept; a
    # Python call raises instead of crashing
    hand = sum((i * 0x123456789AB) // 7 + (i ^ 0x7FFF0000FFFF) for i in range(10))
    default = {k: v for k, v in {"MISTFAST_NUMBA_INTERNAL_NO_CODE": "0"}.items()}
    assert _internal_probe(tmp_path, tmp_path / "cache0", "entry", default) == [
        str(hand + 1), "TypeError", "TypeError", "machine-code", "1", "compiled"]
    on = {"MISTFAST_NUMBA_INTERNAL": "1", "MISTFAST_NUMBA_INTERNAL_NO_CODE": "0"}
    assert _internal_probe(tmp_path, tmp_path / "cache", "entry", on) == [str(hand + 1), "TypeError", "TypeError",
                                                                          "machine-code", "1", "compiled"]
    assert _internal_probe(tmp_path, tmp_path / "cache", "later", on) == [str(hand + 2), "TypeError", "TypeError",
                                                                          "machine-code", "1", "loaded"]


def test_an_internal_kernel_without_machine_code_links_from_the_cache(tmp_path):
    # MISTFAST_NUMBA_INTERNAL_NO_CODE=1 (off by default: slower per point, docs/kernels.md)
    from mistfast import _numba
    if not _numba.LINK_ONLY:
        pytest.skip("numba internals not verified for this numba version, or switched off")
    hand = sum((i * 0x123456789AB) // 7 + (i ^ 0x7FFF0000FFFF) for i in range(10))
    cache = tmp_path / "cache"
    on = {"MISTFAST_NUMBA_INTERNAL": "1", "MISTFAST_NUMBA_INTERNAL_NO_CODE": "1"}
    # fresh cache: compiled; a Python call raises one clear error (not a crash); no machine code
    assert _internal_probe(tmp_path, cache, "entry", on) == [str(hand + 1), "TypeError", "TypeError",
                                                             "no-machine-code", "1", "compiled"]
    # second process: the entry loads from the cache (the callee is not even needed)
    assert _internal_probe(tmp_path, cache, "entry", on) == [str(hand + 1), "TypeError", "TypeError", "-", "0",
                                                             "not-needed"]
    # a new caller links the callee as cached (its IR, no machine code)
    assert _internal_probe(tmp_path, cache, "later", on) == [str(hand + 2), "TypeError", "TypeError",
                                                             "no-machine-code", "1", "loaded"]
    # numba's own cache loading (light loading off) links it too
    off_light = dict(on, MISTFAST_NUMBA_LIGHT_LOAD="0")
    assert _internal_probe(tmp_path, tmp_path / "cache2", "entry", off_light)[:3] == [str(hand + 1), "TypeError",
                                                                                     "TypeError"]
    assert _internal_probe(tmp_path, tmp_path / "cache2", "later", off_light)[0] == str(hand + 2)


def test_the_helpers_of_the_loop_are_internal():
    # every out-of-line helper is jit_noalloc (internal): only the point kernels, the entries and
    # the kernels called from Python (step_time, summarize_points, ...) keep a Python entry
    kinds = _compiled_kernels()
    for name in ("_event_loop", "_form_batch", "_decode_run", "_enter_stage", "_leave_stage", "step_fixed",
                 "_slots_release", "_advance_transfers"):
        assert kinds[name] == "jit_noalloc", name
    assert kinds["step_time"] == "jit_noalloc_py"
    assert {kinds[n] for n in ("_percentile", "_order_statistics", "_stats")} == {"jit_internal"}


_TYPING_MODULE = '''
import numpy as np
from mistfast._numba import jit

def make():   # one function object each: numba's and mistfast's dispatchers key on it
    def body(n, x):
        a = np.empty(n)
        b = np.zeros((n, 2), dtype=np.int64)
        for i in range(n):
            a[i] = min(x[i % x.shape[0]], 3.5) * 2.0
            b[i, 0] = i // 3
        return a.sum() + b[:, 0].sum() + np.max(a)
    return body

body = make()
kernel = jit(make())
'''

_TYPING_PROBE = r"""
import sys
sys.path.insert(0, sys.argv[1]); sys.path.insert(0, sys.argv[2])
import numpy as np
import mistfast._numba as M
import typing_probe as P
M.ensure_compiled_kernels()
import numba
from numba.core import errors, targetconfig
calls = {"values": 0, "colorama": 0, "ours": 0}
values = targetconfig.TargetConfig.values
def counted_values(self):
    calls["values"] += 1
    calls["ours"] = max(calls["ours"], M._OURS[0])   # mistfast kernels on numba's compile stack
    return values(self)
targetconfig.TargetConfig.values = counted_values
if hasattr(errors, "init"):
    init = errors.init
    def counted_init(*a, **k):
        calls["colorama"] += 1
        return init(*a, **k)
    errors.init = counted_init
x = np.array([1.0, 7.0, 2.5])
user = numba.njit(P.body)(9, x)          # a user's own numba function: numba's defaults
user_calls = dict(calls)
calls.update(values=0, colorama=0, ours=0)
ours = P.kernel(9, x)                     # the same body as a mistfast kernel
print(repr(float(user)), repr(float(ours)), user_calls["values"], user_calls["colorama"], calls["values"],
      calls["colorama"], user_calls["ours"], calls["ours"])
"""


def _typing_probe(tmp_path, fast):
    import os
    import subprocess
    import sys
    (tmp_path / "typing_probe.py").write_text(_TYPING_MODULE)
    env = dict(os.environ, MISTFAST_NUMBA_CACHE="0", NUMBA_DISABLE_JIT="0", MISTFAST_NUMBA_FAST_TYPING=fast)
    out = subprocess.run([sys.executable, "-c", _TYPING_PROBE, str(KERNELS.parents[1]), str(tmp_path)],
                         env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.split()


def test_fast_typing_is_scoped_to_mistfast_kernels_and_changes_no_result(tmp_path):
    # the probe compiles one body as a user's numba function, then as a mistfast kernel, counting
    # numba's TargetConfig.values() (what Flags.__hash__/__eq__ rebuild per overload lookup) and
    # colorama's init() (entered per error-message piece)
    from mistfast import _numba
    if not _numba.FAST_TYPING:
        pytest.skip("numba internals not verified for this numba version, or switched off")
    n = 9
    x = [1.0, 7.0, 2.5]
    a = [min(x[i % 3], 3.5) * 2.0 for i in range(n)]
    hand = sum(a) + sum(i // 3 for i in range(n)) + max(a)
    on = _typing_probe(tmp_path, "1")
    off = _typing_probe(tmp_path, "0")
    assert float(on[0]) == float(on[1]) == float(off[0]) == float(off[1]) == hand
    user_on, user_off = int(on[2]), int(off[2])
    # a user's function: no mistfast kernel on the compile stack, so numba's own methods (the
    # counts vary by up to ~15 % from run to run: numba's typing order is not fixed)
    assert on[6] == off[6] == "0" and on[7] == off[7] == "1", (on, off)
    assert user_off > 0 and user_on > 0.7 * user_off, (on, off)
    assert int(on[3]) > 0 and int(off[3]) > 0
    ours_on, ours_off = int(on[4]), int(off[4])
    assert ours_off > 0 and ours_on < ours_off / 2, (on, off)   # a mistfast kernel: the fast comparison
    assert int(on[5]) == 0 and int(off[5]) >= 0


def test_fast_flags_comparison_answers_as_numba_does():
    # the fast Flags hash and equality (active while a mistfast kernel compiles) against numba's
    # definitions, values() compared as dicts: options left unset, set to their default, set
    # to other values, in either object
    from mistfast import _numba
    if not _numba.FAST_TYPING:
        pytest.skip("numba internals not verified for this numba version, or switched off")
    _numba.ensure_compiled_kernels()
    from numba.core.compiler import Flags
    from numba.core.targetconfig import TargetConfig
    assert getattr(TargetConfig, "_mistfast_fast_typing", False)

    def flags(**kv):
        f = Flags()
        for k, v in kv.items():
            setattr(f, k, v)
        return f

    variants = [flags(), flags(nrt=False), flags(nrt=True), flags(no_cpython_wrapper=True),
                flags(no_cpython_wrapper=False), flags(nrt=True, no_cpython_wrapper=True),
                flags(boundscheck=False), flags(boundscheck=True), flags(error_model="numpy"),
                flags(error_model="python"), flags(nrt=True, error_model="numpy")]
    saved = _numba._OURS[0]
    try:
        _numba._OURS[0] = 1   # as during a mistfast compile
        fast = [[a == b for b in variants] for a in variants]
        fast_hash = [hash(a) for a in variants]
    finally:
        _numba._OURS[0] = saved
    assert fast == [[a.values() == b.values() for b in variants] for a in variants]
    assert fast_hash == [hash(tuple(sorted(a.values()))) for a in variants]
    assert any(not row[i] for row in fast for i in range(len(variants)))   # some pairs differ
    assert flags(nrt=False) == flags() or Flags().nrt is not False        # set-to-default: equal
