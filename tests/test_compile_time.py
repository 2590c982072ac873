"""Cold compile time (issue 13, docs/kernels.md "Compile time"): the structure that keeps it down.

numba compiles a jitted callee once per distinct tuple of argument types, and an integer literal
(or a module-level integer constant, which numba freezes into a literal) is a type of its own:
``_enter_stage(r, s, -1, ...)`` next to ``_enter_stage(r, s, c_from, ...)`` compiled the helper,
and everything below it, twice. Each dispatcher level also re-optimises and re-emits the machine
code of every callee linked into it, so thin wrappers above the event loop are not free.
These checks read the source (no compile)."""
import ast
from pathlib import Path

from mistfast.kernels import cluster as CL

KERNELS = Path(CL.__file__).parent
# known: metrics._stats is called with its output columns (O_TTFT, O_QUANT, ...) and compiles once
# per column; metrics.py is another work item's file (docs/kernels.md, "Compile time")
ALLOWED = {("metrics.py", "_stats")}


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

