"""Building a sweep's points without validating a whole scenario per point.

A point of a sweep is the base scenario with a few fields changed. Validating the whole scenario
(pydantic, catalog look-ups, calibration files) for every point costs more Python time than the
simulation of a small point. :class:`PointBuilder` validates each *section* of the scenario (one
client ``clients[i]``, ``workload``, ``simulation``, ``slo``, ...) once per distinct combination
of the axis and derived values that touch it, keeps the validated objects, and puts a point
together from them (``ScenarioSpec.model_construct`` plus the checks that span sections: names and
kinds across clients, ``check_fits`` per client, the memory estimate).

The result is the same ``ScenarioSpec`` (``==``) that ``parse_scenario`` gives for the point's
document. Whenever anything is not valid, or the sweep is of a shape the section split does not
cover (an axis on ``catalog``, on the top-level ``calibration`` or on a whole list such as
``clients``), the point takes the full path (``sweep._build_point_full``) so that its message is
exactly the one a scenario file gives.

Caches are per process and per sweep (``builder_for``), bounded per section: a sample-mode sweep
whose every point has its own value does not grow them without bound.
"""
from __future__ import annotations

import ast
import re
from typing import Any

import numpy as np

from .specs import DEFAULT_SCENARIO, ScenarioSpec, SpecError, check_fits, deep_merge, scenario_reference_problems, set_path

_PARTS = re.compile(r"\.|\[(\d+)\]")
# sections: a top-level field, or one item of a list field (clients[0])
_LIST_FIELDS = ("clients", "servers", "tiers", "links", "pipelines")
# fields the cross-section checks (names, kinds, pools, tiers) read
_REFERENCE_FIELDS = ("clients", "servers", "tiers", "links", "pipelines")
SECTION_CACHE_MAX = 4096     # validated objects kept per section (then the cache starts afresh)
_FAILED = object()           # a section the split cannot build: its points take the full path


class _Invalid:
    """A section whose values do not validate: its problems, as parse_scenario words them."""

    def __init__(self, problems: list[str]):
        self.problems = problems


class _PrefixedErrors:
    """A section's ValidationError as if raised inside the whole scenario (locations prefixed),
    for specs.format_validation_error."""

    def __init__(self, err, loc: tuple):
        self.err, self.loc = err, loc

    def errors(self, **kw):
        return [{**e, "loc": self.loc + tuple(e["loc"])} for e in self.err.errors(**kw)]


def _section_of(path: str) -> tuple | None:
    """(field, list index or None) that ``path`` sets, or None for paths the split cannot handle."""
    parts = [p for p in _PARTS.split(path) if p]
    top = parts[0]
    if top not in ScenarioSpec.model_fields or top == "calibration":
        return None
    if top in _LIST_FIELDS:
        if len(parts) < 2 or not parts[1].isdigit():
            return None   # the whole list (or a field of it by name): full path
        return (top, int(parts[1]))
    return (top, None)


def _typed(v: Any) -> tuple:
    """A cache key for a value: 1, 1.0 and True are equal in Python but not as spec values."""
    return (type(v).__name__, repr(v))


class PointBuilder:
    """Validated sections of one sweep, and the points put together from them."""

    def __init__(self, spec):
        from .catalog import default_catalog
        self.spec = spec
        self.base_doc = deep_merge(DEFAULT_SCENARIO, spec.base)
        self.catalog = default_catalog()
        self.ok = "catalog" not in self.base_doc
        setters = [(i, a.path) for i, a in enumerate(spec.axes)] + \
                  [(len(spec.axes) + j, path) for j, (_, path, _) in enumerate(spec.derived)]
        self.touch: dict[tuple, list] = {}      # section -> [(value slot, path)] in the order points apply them
        for slot, path in setters:
            sec = _section_of(path)
            if sec is None:
                self.ok = False
                continue
            self.touch.setdefault(sec, []).append((slot, path))
        # _trace_runs_whole: a trace in the workload changes the simulation's default horizon
        sim_slots = self._slots(("simulation", None)) + self._slots(("workload", None))
        self.key_slots = {sec: self._slots(sec) for sec in self.touch}
        self.key_slots[("simulation", None)] = sim_slots
        self.sections = self._all_sections() if self.ok else []
        self.cache: dict[tuple, dict] = {sec: {} for sec in self.sections}
        self.refs: dict = {}
        self.fits: dict = {}
        self.derived_cache: dict = {}
        self.derived_names = [_names_in(expr) for _, _, expr in spec.derived]
        self.seeds: dict = {}
        self.estimates: dict = {}   # memory estimate by the section objects it reads (kept alive with it)
        self.fields_set = set(self.base_doc) & set(ScenarioSpec.model_fields)
        self.ref_slots = tuple(s for sec in self.sections if sec[0] in _REFERENCE_FIELDS
                               for s in self.key_slots.get(sec, ()))
        self.limit: float | None = None

    def _slots(self, sec) -> tuple:
        return tuple(slot for slot, _ in self.touch.get(sec, ()))

    def _all_sections(self) -> list[tuple]:
        out = []
        for name in ScenarioSpec.model_fields:
            if name == "calibration":
                continue
            if name in _LIST_FIELDS:
                items = self.base_doc.get(name) or []
                if not isinstance(items, list):
                    self.ok = False
                    return []
                out += [(name, i) for i in range(len(items))]
            else:
                out.append((name, None))
        if any(sec not in out for sec in self.touch):
            self.ok = False   # an item the base does not have: set_path reports it on the full path
        return out

    # ---- derived quantities (memoised per distinct inputs of their expression)
    def derived_values(self, values: tuple) -> tuple[dict, list] | None:
        """The point's derived values by name (as sweep.point_doc gives them: a later quantity of
        the same name wins) and in spec order, or None when one cannot be evaluated."""
        from .sweepspec import safe_eval
        spec = self.spec
        env = {a.name: v for a, v in zip(spec.axes, values)}
        out, in_order = {}, []
        for (name, _, expr), names in zip(spec.derived, self.derived_names):
            key = (expr,) + tuple(_typed(env.get(n)) for n in names)
            v = self.derived_cache.get(key, _FAILED)
            if v is _FAILED:
                try:
                    v = safe_eval(expr, env)
                except (SpecError, ZeroDivisionError):
                    return None
                if len(self.derived_cache) > SECTION_CACHE_MAX:
                    self.derived_cache.clear()
                self.derived_cache[key] = v
            env[name] = v
            out[name] = v
            in_order.append(v)
        return out, in_order

    # ---- sections
    def _section(self, sec: tuple, slots: tuple, typed: tuple):
        key = tuple([typed[s] for s in self.key_slots.get(sec, ())])
        cache = self.cache[sec]
        obj = cache.get(key)
        if obj is None:
            obj = self._validate_section(sec, slots)
            if len(cache) >= SECTION_CACHE_MAX:
                cache.clear()
            cache[key] = obj
        return obj

    def _section_doc(self, sec: tuple, slots: tuple, doc: dict) -> Any:
        for slot, path in self.touch.get(sec, ()):
            doc = set_path(doc, path, slots[slot])
        name, idx = sec
        return doc, (doc.get(name) if idx is None else doc[name][idx])

    def _validate_section(self, sec: tuple, slots: tuple):
        """The validated object of one section for these values: an _Invalid with its problems if
        it does not validate, _FAILED if the split cannot build it (the full path then reports)."""
        from pydantic import ValidationError

        from .specs import format_validation_error
        name, idx = sec
        try:
            doc, sub = self._section_doc(sec, slots, self.base_doc)
            if name == "simulation":   # the horizon default of a trace workload (ScenarioSpec._trace_runs_whole)
                _, wl = self._section_doc(("workload", None), slots, doc)
                sub = ScenarioSpec._trace_runs_whole({"workload": wl, "simulation": sub}).get("simulation")
            if name == "clients" and self.base_doc.get("calibration"):
                sub = ScenarioSpec._scenario_calibration({"calibration": self.base_doc["calibration"],
                                                          "clients": [sub]})["clients"][0]
            field = ScenarioSpec.model_fields[name]
            if sub is None and name not in self.base_doc and idx is None:
                return field.get_default(call_default_factory=True)
            model = field.annotation.__args__[0] if idx is not None else field.annotation
        except (SpecError, TypeError, AttributeError, KeyError, IndexError):
            return _FAILED
        try:
            return model.model_validate(sub, context={"catalog": self.catalog})
        except ValidationError as err:
            loc = (name,) if idx is None else (name, idx)
            return _Invalid(format_validation_error(_PrefixedErrors(err, loc)).problems)
        except (SpecError, TypeError, AttributeError, KeyError, IndexError):
            return _FAILED

    # ---- a point
    def scenario(self, values: tuple, derived: list) -> tuple[ScenarioSpec | None, str]:
        """(the point's validated scenario, "") or (None, why it is invalid, as parse_scenario
        words it); (None, "") when the point must take the full path."""
        if not self.ok:
            return None, ""
        slots = tuple(values) + tuple(derived)
        typed = tuple(map(_typed, slots))
        fields: dict[str, Any] = {}
        problems: list[str] = []
        for sec in self.sections:
            obj = self._section(sec, slots, typed)
            if obj is _FAILED:
                return None, ""
            if isinstance(obj, _Invalid):
                problems += obj.problems   # pydantic reports every field's problems, in field order
                continue
            name, idx = sec
            if idx is None:
                fields[name] = obj
            else:
                fields.setdefault(name, []).append(obj)
        for name in _LIST_FIELDS:
            fields.setdefault(name, [])
        fields["calibration"] = self.base_doc.get("calibration")
        if problems:
            return None, "; ".join(problems)
        scen = ScenarioSpec.model_construct(_fields_set=self.fields_set, **fields)
        return (scen, "") if not (why := self._cross_checks(scen, typed)) else (None, why)

    def _cross_checks(self, scen: ScenarioSpec, typed: tuple) -> str:
        """What parse_scenario checks across sections, in its order (names and kinds, then each
        decoder client's fit, then the memory estimate), each cached by what it reads; "" if
        the point passes, else its message."""
        from .limits import check_scenario
        rkey = tuple([typed[s] for s in self.ref_slots])
        why = self.refs.get(rkey)
        if why is None:
            # ScenarioSpec._references raises these as field_errors at the scenario's top level
            why = "; ".join(f"{f} = {v!r}: {m}" for f, v, m in scenario_reference_problems(scen))
            if len(self.refs) >= SECTION_CACHE_MAX:
                self.refs.clear()
            self.refs[rkey] = why
        if why:
            return why
        for i, c in enumerate(scen.clients):
            if c.model.architecture != "decoder":
                continue
            fit = self.fits.get((id(c), i))
            if fit is None:
                try:
                    check_fits(c, f"clients[{i}]")
                    fit = ("", c)   # the client is kept alive with its id
                except SpecError as e:
                    fit = ("; ".join(e.problems), c)
                if len(self.fits) >= SECTION_CACHE_MAX:
                    self.fits.clear()
                self.fits[(id(c), i)] = fit
            if fit[0]:
                return fit[0]
        if self.limit is not None and self._estimate(scen) <= self.limit:
            return ""   # check_scenario's test, with the limit read once per chunk (start_chunk)
        try:
            check_scenario(scen)
        except SpecError as e:
            return "; ".join(e.problems)
        return ""

    def _estimate(self, scen: ScenarioSpec) -> float:
        """limits.scenario_bytes of the point, once per distinct set of the section objects it reads."""
        from .limits import scenario_bytes
        reads = (scen.workload, scen.simulation, *scen.clients, None, *scen.servers, None, *scen.pipelines, None,
                 *scen.tiers)
        key = tuple(map(id, reads))
        hit = self.estimates.get(key)
        if hit is None:
            if len(self.estimates) >= SECTION_CACHE_MAX:
                self.estimates.clear()
            hit = self.estimates[key] = (scenario_bytes(scen), reads)
        return hit[0]

    def start_chunk(self) -> "PointBuilder":
        """Read the memory limit (it may change between chunks, never within one)."""
        from .limits import max_memory_bytes
        try:
            self.limit = max_memory_bytes()
        except SpecError:
            self.limit = None   # every point reports it through check_scenario
        return self

    def seed_sequence(self, base_seed: int, sweep_seed: int, key: int) -> np.random.SeedSequence:
        """SeedSequence objects are used read-only (seeds.seed_child): one per distinct key."""
        k = (base_seed, sweep_seed, key)
        ss = self.seeds.get(k)
        if ss is None:
            if len(self.seeds) >= SECTION_CACHE_MAX:
                self.seeds.clear()
            ss = self.seeds[k] = np.random.SeedSequence([base_seed, sweep_seed, key])
        return ss


def _names_in(expr: str) -> list[str]:
    """The names an expression reads (its memo key)."""
    try:
        return sorted({n.id for n in ast.walk(ast.parse(expr, mode="eval")) if isinstance(n, ast.Name)})
    except SyntaxError:
        return []


_BUILDERS: dict[str, PointBuilder] = {}


def builder_for(spec, spec_hash: str) -> PointBuilder:
    """The process's builder of a sweep (kept for the few most recent sweeps)."""
    b = _BUILDERS.get(spec_hash)
    if b is None:
        while len(_BUILDERS) >= 4:
            _BUILDERS.pop(next(iter(_BUILDERS)))
        b = _BUILDERS[spec_hash] = PointBuilder(spec)
    return b
