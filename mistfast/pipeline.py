"""Multi-stage pipelines on several clients: the names callers used before the lowering and the
results were each put in one module (lowering.py, results.py, runner.py). New code imports from
those; nothing is defined here."""
from __future__ import annotations

from .lowering import ROUTING, Topology, default_pipeline, lower_pipeline  # noqa: F401
from .results import (client_vars, pipeline_dataset, pipeline_summary, prefix_hit_rate,  # noqa: F401
                      requested_output_tokens, resource_vars, stage_vars)
from .runner import run_pipeline  # noqa: F401
