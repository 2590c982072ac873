"""The floors of ARCHITECTURE.md hold: every import of every mistfast module (lazy ones inside
functions included) goes to a module on its own floor or below, and no modules import each other
round a loop. The table in ARCHITECTURE.md is the one copy of the rules: this test reads it."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "mistfast"


def floors() -> dict[str, int]:
    """Module (dotted, under ``mistfast``) -> floor, from the table of ARCHITECTURE.md."""
    out: dict[str, int] = {}
    for line in (ROOT / "ARCHITECTURE.md").read_text().splitlines():
        m = re.match(r"\|\s*(\d+)\s[^|]*\|([^|]*)\|", line)
        if not m:
            continue
        for path in re.findall(r"`([\w/]+\.py)`", m.group(2)):
            out[_dotted(path)] = int(m.group(1))
    return out


def _dotted(path: str) -> str:
    parts = path[:-3].split("/")
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(["mistfast", *parts])


def _main_guard(node) -> bool:
    """``if __name__ == "__main__":`` (the block that runs when the module is the program)."""
    t = node.test
    return (isinstance(node, ast.If) and isinstance(t, ast.Compare) and isinstance(t.left, ast.Name)
            and t.left.id == "__name__" and any(isinstance(c, ast.Constant) and c.value == "__main__"
                                                for c in t.comparators))


def imports_of(path: Path, pkg: Path = PKG) -> set[str]:
    """The mistfast modules a source file of package folder ``pkg`` imports anywhere (outside a
    __main__ block)."""
    name = _dotted(str(path.relative_to(pkg)).replace("\\", "/"))
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()

    def visit(node):
        if isinstance(node, ast.If) and _main_guard(node):
            return
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] == "mistfast":
                for alias in node.names:   # `from . import x` may name a module
                    sub = f"{target}.{alias.name}"
                    found.add(sub if _exists(sub, pkg) else target)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "mistfast")
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    found.discard(name)
    return found


def _exists(dotted: str, pkg: Path) -> bool:
    rel = Path(*dotted.split(".")[1:])
    return (pkg / rel).with_suffix(".py").exists() or (pkg / rel / "__init__.py").exists()


def graph() -> dict[str, set[str]]:
    return {_dotted(str(p.relative_to(PKG)).replace("\\", "/")): imports_of(p) for p in sorted(PKG.rglob("*.py"))}


def test_every_module_has_a_floor():
    fl = floors()
    missing = sorted(set(graph()) - set(fl))
    assert not missing, f"modules on no floor of ARCHITECTURE.md: {missing}"
    stale = sorted(set(fl) - set(graph()))
    assert not stale, f"ARCHITECTURE.md names modules that do not exist: {stale}"


def test_no_import_goes_up_a_floor():
    fl = floors()
    up = [f"{m} (floor {fl[m]}) imports {d} (floor {fl[d]})"
          for m, deps in graph().items() for d in sorted(deps) if m in fl and d in fl and fl[d] > fl[m]]
    assert not up, "upward imports:\n  " + "\n  ".join(up)


def test_no_import_cycles():
    g = graph()
    state: dict[str, int] = {}
    cycles = []

    def walk(m, stack):
        state[m] = 1
        for d in sorted(g.get(m, ())):
            if state.get(d) == 1:
                cycles.append(" -> ".join(stack[stack.index(d):] + [d]))
            elif d not in state:
                walk(d, stack + [d])
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            walk(m, [m])
    assert not cycles, "import cycles:\n  " + "\n  ".join(cycles)


@pytest.mark.parametrize("src, bad", [
    ("from ..cli import main\n", "mistfast.cli"),
    ("def f():\n    from ..sweep import run_sweep\n", "mistfast.sweep"),
    ("import mistfast.report as R\n", "mistfast.report"),
    ("from .. import scenario\n", "mistfast.scenario"),
])
def test_the_checker_sees_lazy_and_absolute_imports(tmp_path, src, bad):
    """The parser finds module-level, lazy (inside a function), relative and absolute imports of a
    kernel module; it skips the ``__main__`` block."""
    pkg = tmp_path / "mistfast"
    (pkg / "kernels").mkdir(parents=True)
    for mod in ("cli", "sweep", "report", "scenario"):
        (pkg / f"{mod}.py").write_text("")
    fake = pkg / "kernels" / "engine.py"
    fake.write_text(src + 'if __name__ == "__main__":\n    from mistfast.cli import main\n')
    assert imports_of(fake, pkg) == {bad}


def allowed_packages() -> dict[int, set[str]]:
    """Floor -> the outside packages its "may import" column of ARCHITECTURE.md lists (floors
    whose column is empty are not limited beyond the floors)."""
    out: dict[int, set[str]] = {}
    for line in (ROOT / "ARCHITECTURE.md").read_text().splitlines():
        m = re.match(r"\|\s*(\d+)\s[^|]*\|[^|]*\|[^|]*\|([^|]*)\|", line)
        if m and m.group(2).strip():
            # "a, b, c and d (why)": the names before any parenthesis
            names = re.sub(r"\(.*?\)", "", m.group(2)).replace(" and ", ",")
            out[int(m.group(1))] = {p.strip() for p in names.split(",") if p.strip()}
    return out


def outside_imports(path: Path) -> set[str]:
    """Top-level names of the packages a source file imports anywhere that are neither mistfast
    nor the standard library."""
    import sys
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.add(node.module.split(".")[0])
    return {n for n in found if n != "mistfast" and n not in sys.stdlib_module_names}


def test_floors_import_only_the_packages_they_list():
    """The kernels' floor lists numpy and numba (and numba's own backend and BLAS for the kernel
    loaders): no xarray, pandas or pydantic reaches a kernel."""
    fl, allowed = floors(), allowed_packages()
    assert allowed.get(0) == {"numpy", "numba", "llvmlite", "scipy"}, allowed   # the table is read as written
    bad = [f"{_dotted(str(p.relative_to(PKG)))} (floor {fl[m]}) imports {sorted(extra)}"
           for p in sorted(PKG.rglob("*.py"))
           for m in [_dotted(str(p.relative_to(PKG)).replace("\\", "/"))]
           if m in fl and fl[m] in allowed
           for extra in [outside_imports(p) - allowed[fl[m]]] if extra]
    assert not bad, "imports outside the floor's list:\n  " + "\n  ".join(bad)


def test_the_package_checker_sees_outside_packages(tmp_path):
    f = tmp_path / "k.py"
    f.write_text("import os\nimport numpy as np\ndef g():\n    import xarray\nfrom pydantic import BaseModel\n"
                 "from . import layout\n")
    assert outside_imports(f) == {"numpy", "xarray", "pydantic"}
