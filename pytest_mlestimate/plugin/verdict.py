"""Judging one estimate: budgets, baseline regressions and fit, turned into a verdict that renders
itself as the compact table a failed test shows."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pytest_mlestimate.plugin.baseline import compare, save_baseline
from pytest_mlestimate.plugin.budgets import Budget, Check, check_budgets
from pytest_mlestimate.result import METRICS

if TYPE_CHECKING:
    from pytest_mlestimate.plugin.settings import Settings
    from pytest_mlestimate.result import Estimate

PLUGIN_WARNINGS = ("budget on ", "baseline ", "no baseline ")
"""How the warnings this module adds begin: the terminal shows these always, the engine's only with -v."""
HEADER = ("metric", "measured", "limit", "baseline", "change", "result")
GPU_METRICS = ("peak_gpu_memory", "peak_gpu_utilization", "vram_before_training")


@dataclass
class Verdict:
    name: str
    where: str
    checks: list[Check] = field(default_factory=list)
    failure: str | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.passed is False]

    @property
    def passed(self) -> bool:
        return self.failure is None and not self.failed

    def summary(self) -> str:
        reasons = ([self.failure] if self.failure else []) + [c.summary() for c in self.failed]
        return f"scenario '{self.name}' ({self.where}): " + "; ".join(reasons)

    def table(self) -> str:
        rows = [HEADER, *(c.row() for c in self.checks)]
        widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
        return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)

    def render(self) -> str:
        parts = [self.summary()]
        if self.checks:
            parts.append(self.table())
        return "\n".join(parts)


def measured_figures(estimate: Estimate) -> dict[str, Any]:
    """What a baseline keeps: the scenario, the environment, the metrics and their measured noise."""
    return {
        "scenario": estimate.scenario.model_dump(mode="json"),
        "environment": estimate.profile.environment,
        "metrics": estimate.metrics(),
        "spread": {m: estimate.spread(m) for m in METRICS},
    }


def _not_measurable(metric: str, estimate: Estimate) -> str:
    reason = estimate.profile.gpu_unavailable if metric in GPU_METRICS else None
    return f"budget on {metric} not checked: not measurable here" + (f" ({reason})" if reason else "")


def judge(
    estimate: Estimate,
    budgets: list[Budget],
    tolerances: dict[str, float],
    settings: Settings,
    file: str,
    name: str,
    where: str,
) -> Verdict:
    figures = measured_figures(estimate)
    verdict = Verdict(name, where, failure=estimate.failure)
    baselines: dict[str, float] = {}
    if settings.compare_dir is not None and estimate.fits:
        comparison = compare(settings.compare_dir, file, name, figures, {**settings.tolerances, **tolerances})
        baselines = comparison.baselines
        verdict.warnings.extend(comparison.warnings)
        regressions = comparison.checks
    else:
        regressions = []
    verdict.checks = check_budgets(budgets, figures["metrics"], baselines) + regressions
    verdict.warnings.extend(_not_measurable(c.metric, estimate) for c in verdict.checks if c.passed is None)
    if settings.save_dir is not None and estimate.fits:
        save_baseline(settings.save_dir, file, name, figures)
    return verdict
