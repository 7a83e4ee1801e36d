"""Measure what a PyTorch model needs before booking GPUs or merging.

Heavy modules (pydantic, torch) load on first use of a name below, so that pytest, which imports every
installed plugin in every run, pays nothing for this package unless ``--mlestimate`` is given.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_mlestimate.api import estimate, estimate_model
    from pytest_mlestimate.core.errors import EstimateError
    from pytest_mlestimate.estimates.estimate import Estimate
    from pytest_mlestimate.planning.capacity import capacity
    from pytest_mlestimate.planning.search import max_batch_size
    from pytest_mlestimate.planning.sweep import fit_sizes
    from pytest_mlestimate.profiling.contract import MeasuredModel
    from pytest_mlestimate.reports.html import render_html
    from pytest_mlestimate.scenarios.scenario import Scenario, ScenarioError
    from pytest_mlestimate.verdicts.against import against_commit

__all__ = [
    "Estimate",
    "EstimateError",
    "MeasuredModel",
    "Scenario",
    "ScenarioError",
    "against_commit",
    "capacity",
    "estimate",
    "estimate_model",
    "fit_sizes",
    "max_batch_size",
    "render_html",
]

_HOMES = {
    "against_commit": "pytest_mlestimate.verdicts.against",
    "estimate": "pytest_mlestimate.api",
    "estimate_model": "pytest_mlestimate.api",
    "capacity": "pytest_mlestimate.planning.capacity",
    "fit_sizes": "pytest_mlestimate.planning.sweep",
    "max_batch_size": "pytest_mlestimate.planning.search",
    "render_html": "pytest_mlestimate.reports.html",
    "Estimate": "pytest_mlestimate.estimates.estimate",
    "EstimateError": "pytest_mlestimate.core.errors",
    "MeasuredModel": "pytest_mlestimate.profiling.contract",
    "Scenario": "pytest_mlestimate.scenarios.scenario",
    "ScenarioError": "pytest_mlestimate.scenarios.scenario",
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'pytest_mlestimate' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_HOMES[name]), name)
