"""Validation of sweep files with the same pydantic machinery and error style as scenarios.

:func:`check_sweep_doc` runs before any point is built. It reports every problem at once as
``path = value: what is allowed``: the ``[sweep]`` table's types (``seed = 1.5``, ``axes`` written as
a list, a non-numeric ``chunk_points``), axis paths that name no field or a list item the base
scenario lacks (``clients[3]`` of a one-client base), axis values of the wrong type for their field
(a non-integer for ``tp``), derived expressions that do not parse, name unknown axes, or exceed the
evaluator's limits (``9**9**9``), and sweeps whose memory estimate exceeds the limit
(:mod:`mistfast.limits`).

Derived expressions are evaluated by :func:`safe_eval` (simpleeval, with bounded powers, bounded
intermediate results, a length limit and a time limit).
"""
from __future__ import annotations

import ast
import math
import re
import time
import typing
from typing import Annotated, Any, Literal

from pydantic import Field, TypeAdapter, ValidationError

from .specs import (DEFAULT_SCENARIO, REFERENCE_MARKERS, Spec, SpecError, deep_merge, format_validation_error,
                    parse_scenario, set_path)

# ----------------------------------------------------------------------------- the [sweep] table


class AxisTable(Spec):
    """One ``[[sweep.axis]]`` entry."""
    name: str | None = None
    path: str
    values: list[Any] = []
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False


class SweepTable(Spec):
    """The ``[sweep]`` table."""
    name: str = "sweep"
    seed: int = Field(default=0, ge=0)
    mode: Literal["product", "zip", "sample", "refine"] = "product"
    samples: int = Field(default=0, ge=0)
    method: Literal["lhs", "random"] = "lhs"
    chunk_points: int = Field(default=128, ge=1)
    axes: dict[str, Any] = {}
    axis: list[AxisTable] = []
    derived: dict[str, str] = {}
    refine: dict[str, Any] | None = None   # checked field by field by sweep.parse_sweep (mode = "refine")


# ----------------------------------------------------------------------------- safe expressions
MAX_EXPR_CHARS = 2000
MAX_ABS_RESULT = 2.0 ** 64         # larger than any meaningful spec value; far below a slow bigint
MAX_STR_RESULT = 1000
EXPR_TIME_LIMIT_S = 0.5
FUNCS = {"min": min, "max": max, "round": round, "int": int, "float": float, "abs": abs, "ceil": math.ceil,
         "floor": math.floor, "log2": math.log2}


class ExprLimit(Exception):
    """An expression went past a size or time limit."""


def _bounded(op, deadline):
    def run(*args):
        if time.thread_time() > deadline[0]:
            raise ExprLimit(f"took more than {EXPR_TIME_LIMIT_S} s of CPU time")
        if op is pow and len(args) == 2:
            a, b = args
            if isinstance(a, (int, float)) and isinstance(b, (int, float)) and abs(a) > 1 and b > 0:
                # |a|**b > 2**64 exactly when b*log2|a| > 64: refuse before computing it
                if b * math.log2(abs(a)) > math.log2(MAX_ABS_RESULT):
                    raise ExprLimit(f"{a!r} ** {b!r} is larger than {MAX_ABS_RESULT:.3g}")
        out = op(*args)
        if isinstance(out, (int, float)) and not isinstance(out, bool) and abs(out) > MAX_ABS_RESULT:
            raise ExprLimit(f"an intermediate result is larger than {MAX_ABS_RESULT:.3g}")
        if isinstance(out, str) and len(out) > MAX_STR_RESULT:
            raise ExprLimit(f"a text result is longer than {MAX_STR_RESULT} characters")
        return out
    return run


def safe_eval(expr: str, names: dict[str, Any]) -> Any:
    """Evaluate a derived-quantity expression over axis values, within size and time limits.
    Raises SpecError (one line) on any problem."""
    import operator

    from simpleeval import FeatureNotAvailable, InvalidExpression, SimpleEval
    if len(expr) > MAX_EXPR_CHARS:
        raise SpecError([f"{expr[:40]!r}...: expression longer than {MAX_EXPR_CHARS} characters"])
    _check_expr(expr, list(names))   # only numbers, names, operators and the listed functions
    deadline = [time.thread_time() + EXPR_TIME_LIMIT_S]   # this thread's CPU time: neither a loaded machine nor
    # the other threads of this process (dask workers, numba) trip it
    ops = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: pow, ast.USub: operator.neg,
           ast.UAdd: operator.pos, ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt,
           ast.GtE: operator.ge, ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Not: operator.not_}
    ev = SimpleEval(operators={k: _bounded(v, deadline) for k, v in ops.items()},
                    functions={k: _bounded(f, deadline) for k, f in FUNCS.items()}, names=dict(names))
    try:
        return ev.eval(expr)
    except ExprLimit as exc:
        raise SpecError([f"{expr!r}: over the expression limits: {exc}"]) from None
    except ZeroDivisionError:
        raise SpecError([f"{expr!r}: divided by zero"]) from None
    except SyntaxError as exc:
        raise SpecError([f"{expr!r}: not a valid expression ({exc.msg})"]) from None
    except (InvalidExpression, FeatureNotAvailable) as exc:
        raise SpecError([f"{expr!r}: {exc}"]) from None
    except (TypeError, ValueError, OverflowError, ArithmeticError) as exc:
        raise SpecError([f"{expr!r}: cannot be evaluated: {exc}"]) from None



# the operator nodes a derived expression may use (checked before it is evaluated)
_CHECKED_OPS = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow, ast.USub,
                ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.Eq, ast.NotEq)


def _check_expr(expr: str, names: list[str]) -> None:
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError as exc:
        raise SpecError([f"{expr!r}: not a valid expression ({exc.msg})"]) from None
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id not in names and node.id not in FUNCS:
            raise SpecError([f"{expr!r}: unknown name {node.id!r}; axis names: {', '.join(names)}"])
        # reject what _eval cannot evaluate now, not at run time in every point
        ok = (isinstance(node, (ast.Expression, ast.Name, ast.Load, ast.BinOp, ast.UnaryOp, ast.IfExp))
              or type(node) in _CHECKED_OPS
              or (isinstance(node, ast.Compare) and len(node.ops) == 1)
              or (isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str)))
              or (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FUNCS
                  and not node.keywords))
        if not ok:
            what = type(node).__name__ if not isinstance(node, ast.Call) else "call with keywords or of an unknown function"
            raise SpecError([f"{expr!r}: unsupported expression element ({what}); use numbers, axis names, "
                             f"+ - * / // % **, comparisons, 'a if c else b' and {', '.join(FUNCS)}"])


def check_path(path: str) -> None:
    """Raise SpecError if ``path`` does not name a field of the scenario schema (typo check)."""
    from .specs import ScenarioSpec
    parts = [p for p in re.split(r"\.|\[(\d+)\]", path) if p]
    cur: Any = ScenarioSpec
    walked = []
    for p in parts:
        if p.isdigit():
            walked.append(f"[{p}]")
            continue
        if p == "preset":
            cur = None
            walked.append(".preset")
            continue
        models = _models_in(cur)
        if not models:
            if cur is dict or typing.get_origin(cur) is dict:
                cur = typing.get_args(cur)[1] if typing.get_args(cur) else Any
                walked.append(f".{p}")
                continue
            raise SpecError([f"{path}: {''.join(walked).lstrip('.') or 'field'} has no sub-field {p!r}"])
        found = None
        for m in models:
            if p in m.model_fields:
                found = m.model_fields[p].annotation
                break
        if found is None:
            allowed = sorted({k for m in models for k in m.model_fields})
            raise SpecError([f"{path}: unknown field {p!r} in {''.join(walked).lstrip('.') or 'scenario'}; "
                             f"allowed: {', '.join(allowed)}"])
        cur = found
        walked.append(f".{p}")


# ----------------------------------------------------------------------------- field lookup
_PARTS = re.compile(r"\.|\[(\d+)\]")


def _models_in(ann) -> list:
    from pydantic import BaseModel
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return [ann]
    out = []
    for a in typing.get_args(ann):
        out.extend(_models_in(a))
    return out


def leaf_field(path: str):
    """The pydantic FieldInfo a dotted path ends at, or None when it ends inside a preset table,
    a dict, or a field whose value is a whole table (those are checked when points are built)."""
    from .specs import ScenarioSpec
    parts = [p for p in _PARTS.split(path) if p]
    models = [ScenarioSpec]
    info = None
    for p in parts:
        if p.isdigit():
            continue
        found = None
        for m in models:
            if p in m.model_fields:
                found = m.model_fields[p]
                break
        if found is None:
            return None
        info = found
        models = _models_in(found.annotation)
    if info is None or models:
        return None
    return info


def _scalar_adapter(info):
    ann = info.annotation
    args = set(typing.get_args(ann)) - {type(None)}
    scalar = ann in (int, float, bool, str) or typing.get_origin(ann) is Literal \
        or (args and all(a in (int, float, bool, str) or typing.get_origin(a) is Literal for a in args))
    if not scalar:
        return None
    return TypeAdapter(Annotated[ann, info])


def check_axis_values(label: str, path: str, values, problems: list[str]) -> None:
    info = leaf_field(path)
    if info is None:
        return
    ta = _scalar_adapter(info)
    if ta is None:
        return
    for v in values:
        try:
            ta.validate_python(v)
        except ValidationError as err:
            e = err.errors(include_url=False)[0]
            problems.append(f"{label} = {v!r}: {e['msg']} (field {path})")


def _is_int_field(path: str) -> bool:
    info = leaf_field(path)
    if info is None:
        return False
    ann = info.annotation
    return ann is int or set(typing.get_args(ann)) - {type(None)} == {int}


# ----------------------------------------------------------------------------- the whole document
def _axis_name(path: str) -> str:
    return [p for p in _PARTS.split(path) if p and not p.isdigit()][-1]


def check_sweep_doc(doc: dict) -> None:
    """Refuse a sweep document with every problem listed, before any work."""
    if not isinstance(doc.get("sweep"), dict):
        if "sweep" not in doc:
            raise SpecError(["sweep: missing [sweep] table (a sweep file needs [sweep] plus [scenario])"])
        raise SpecError([f"sweep = {doc['sweep']!r}: must be a table ([sweep])"])
    problems: list[str] = []
    table = _validate_table(doc["sweep"], problems)
    base = doc.get("scenario", {k: v for k, v in doc.items() if k != "sweep"})
    if not isinstance(base, dict):
        raise SpecError(problems + [f"scenario = {base!r}: must be a table ([scenario])"])
    # axes: (label, path, values, axis table or None), in the order points apply them
    axes = [(f'sweep.axes."{path}"', path, v if isinstance(v, list) else [v], None) for path, v in table.axes.items()]
    axes += [(f"sweep.axis[{i}]", a.path, a.values, a) for i, a in enumerate(table.axis)]
    doc_now = _check_axes(table, axes, base, problems)
    _check_derived(table, axes, doc_now, problems)
    if not problems:
        _check_size(table, axes, base, problems)
    if problems:
        raise SpecError(problems)


def _validate_table(sweep: dict, problems: list[str]) -> SweepTable:
    """The [sweep] table through pydantic; the fields in error are left out so that the other
    problems are still found and reported in the same message."""
    problems += _unknown_keys("sweep", sweep, SweepTable)
    for i, a in enumerate(sweep.get("axis") if isinstance(sweep.get("axis"), list) else []):
        if isinstance(a, dict):
            problems += _unknown_keys(f"sweep.axis[{i}]", a, AxisTable)
    raw = {k: v for k, v in sweep.items() if k in SweepTable.model_fields}
    try:
        return SweepTable.model_validate(raw)
    except ValidationError as err:
        problems += [_plain(p) for p in format_validation_error(err, prefix="sweep.").problems]
        bad = {e["loc"][0] for e in err.errors() if e["loc"]}
        try:
            return SweepTable.model_validate({k: v for k, v in raw.items() if k not in bad})
        except ValidationError:
            raise SpecError(problems) from None


def _axis_names(axes) -> list[str]:
    return [(a.name if a is not None and a.name else _axis_name(path)) for _, path, _, a in axes]


def _check_axes(table: SweepTable, axes, base: dict, problems: list[str]) -> dict:
    """Paths name fields and list items the base has; values fit their field. Returns the base with
    every axis set to its first value (what derived expressions see first)."""
    doc_now = deep_merge(DEFAULT_SCENARIO, {k: v for k, v in base.items() if k != "catalog"})
    for label, path, values, a in axes:
        try:
            check_path(path)
        except SpecError as e:
            problems.extend(f"{label}: {p}" for p in e.problems)
            continue
        try:
            # a list item the base does not have cannot be set by any point (clients[3] of one client)
            doc_now = set_path(doc_now, path, values[0] if values else 0)
        except SpecError as e:
            problems.extend(f"{label}: {p} in the base scenario" for p in e.problems)
            continue
        if path in table.derived:
            continue  # a derived quantity overwrites this field: the axis is only a named variable
        check_axis_values(f"{label}.values" if a is not None else label, path, values, problems)
        if a is not None and table.mode == "sample" and not a.values and _is_int_field(path) and not a.integer:
            problems.append(f"{label}.integer = false: the field {path} takes integers; set integer = true")
    return doc_now


def _check_derived(table: SweepTable, axes, doc_now: dict, problems: list[str]) -> None:
    """Each expression parses, names known axes, and evaluates within the limits on the first point."""
    names = _axis_names(axes)
    env = {nm: (vals[0] if vals else (a.low if a is not None else 0)) for (_, _, vals, a), nm in zip(axes, names)}
    for path, expr in table.derived.items():
        label = f'sweep.derived."{path}"'
        try:
            check_path(path)
        except SpecError as e:
            problems.extend(f"{label}: {p}" for p in e.problems)
            continue
        try:
            _check_expr(str(expr), names + [_axis_name(d) for d in table.derived if d != path])
            v = safe_eval(expr, env)
        except SpecError as e:
            # the first point's values may divide by zero where others do not: those become invalid
            # points; a limit, a syntax error or an unknown name is wrong for every point
            if not any("divided by zero" in p or "cannot be evaluated" in p for p in e.problems):
                problems.extend(f"{label} = {p}" for p in e.problems)
            continue
        env[_axis_name(path)] = v
        try:
            doc_now = set_path(doc_now, path, v)
        except SpecError as e:
            problems.extend(f"{label}: {p} in the base scenario" for p in e.problems)


_BOUNDS = (("Input should be greater than or equal to", ">="), ("Input should be greater than", ">"),
           ("Input should be less than or equal to", "<="), ("Input should be less than", "<"))


def _plain(problem: str) -> str:
    """pydantic's bound messages in the short form the sweep messages always used (``must be >= 1``)."""
    for long, op in _BOUNDS:
        if long in problem:
            return problem.replace(long, f"must be {op}")
    return problem


def _unknown_keys(where: str, table: dict, model) -> list[str]:
    allowed = sorted(model.model_fields)
    return [f"{where}.{k} = {v!r}: unknown field; allowed: {', '.join(allowed)}" for k, v in table.items()
            if k not in model.model_fields]


def _n_points(table: SweepTable, axes) -> int:
    if not axes:
        return 1
    if table.mode == "sample":
        return table.samples
    if table.mode == "zip":
        return len(axes[0][2])
    return math.prod(len(v) for _, _, v, _ in axes)


def _check_size(table, axes, base, problems) -> None:
    """Memory of the sweep: its points' results, and the largest point (base with one axis value
    changed at a time) times the points of one task."""
    from .limits import check_sweep, scenario_bytes
    worst, worst_field, worst_value = 0.0, "", None
    base_ok = True
    tries = [(None, None)] + [(path, v) for _, path, vals, _ in axes for v in vals[:64]]
    for path, v in tries:
        try:
            doc = base if path is None else set_path(deep_merge(DEFAULT_SCENARIO, base), path, v)
            b = scenario_bytes(parse_scenario(doc, base=None if path is None else {}))
        except SpecError as e:
            # a point that alone exceeds the memory limit, or whose value names a client of the wrong
            # kind or none at all, is wrong in every combination: refused here. Other problems
            # (tp = 3 for 32 heads) make invalid points, as a sweep over a design space expects.
            for p in e.problems:
                if "MISTFAST_MAX_MEMORY_GB" in p:
                    problems.append("scenario." + p if path is None else
                                    f"sweep axis {path} = {v!r}: " + p.split(": ", 1)[-1])
                elif path is not None and base_ok and any(m in p for m in REFERENCE_MARKERS):
                    problems.append(f"sweep axis {path} = {v!r}: {p}")
            if path is None:
                base_ok = False
            continue
        if b > worst:
            worst, worst_field, worst_value = b, path or "", v
    problems.extend(check_sweep(_n_points(table, axes), table.chunk_points, worst, worst_field, worst_value))
