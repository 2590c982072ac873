"""mistfast: fast simulator of multi-stage LLM inference serving on heterogeneous hardware.

Public API (imported lazily so ``import mistfast`` stays cheap and kernels compile on first use):
``load_scenario``, ``parse_scenario``, ``make_client``, ``step_latency``, ``simulate``,
``run_sweep``, ``load_sweep``.
"""
from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {
    "load_scenario": ("mistfast.specs", "load_scenario"),
    "parse_scenario": ("mistfast.specs", "parse_scenario"),
    "make_client": ("mistfast.specs", "make_client"),
    "SpecError": ("mistfast.specs", "SpecError"),
    "step_latency": ("mistfast.stepmodel", "step_latency"),
    "simulate": ("mistfast.scenario", "simulate"),
    "run_sweep": ("mistfast.sweep", "run_sweep"),
    "load_sweep": ("mistfast.sweep", "load_sweep"),
    "best_configs": ("mistfast.analysis", "best_configs"),
    "pareto_front": ("mistfast.analysis", "pareto_front"),
    "capacity": ("mistfast.capacity_search", "capacity"),
    "goodput_grid": ("mistfast.capacity_search", "goodput_grid"),
}


def __getattr__(name):
    if name in _LAZY:
        import importlib
        mod, attr = _LAZY[name]
        return getattr(importlib.import_module(mod), attr)
    raise AttributeError(f"module 'mistfast' has no attribute {name!r}")


__all__ = ["__version__", *_LAZY]
