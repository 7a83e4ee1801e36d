"""Judging one estimate: budgets, baseline regressions and fit, turned into a verdict that renders
itself as the compact table a failed test shows, with the modules that grew (``explain.py``) under it."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pytest_mlestimate.verdicts.against import BaseSide
from pytest_mlestimate.verdicts.baseline import Comparison, compare, save_baseline
from pytest_mlestimate.verdicts.budgets import Budget, Check, check_budgets
from pytest_mlestimate.verdicts.explain import Explanation, explain
from pytest_mlestimate.verdicts.regression import Run, run_of

if TYPE_CHECKING:
    from pytest_mlestimate.estimates.estimate import Estimate
    from pytest_mlestimate.verdicts.settings import Settings

PLUGIN_WARNINGS = ("budget on ", "baseline ", "no baseline ")
"""How the warnings this module adds begin: the terminal shows these always, the engine's only with -v."""
CONFIRMATIONS = 3
"""Runs measured at most to confirm a suspected regression: the first that no other process contended decides."""
HEADER = ("metric", "measured", "limit", "baseline", "change", "result")


@dataclass
class Verdict:
    name: str
    where: str
    checks: list[Check] = field(default_factory=list)
    failure: str | None = None
    warnings: list[str] = field(default_factory=list)
    runs: list[Run] = field(default_factory=list)
    """Every measurement the verdict rests on: the first, then any taken again to confirm a regression."""
    baseline: dict[str, Any] | None = None
    """Where the baseline is and what became of it: compared, missing, not compared or saved."""
    explanation: Explanation = field(default_factory=Explanation)
    """The modules behind the failed figures; empty when nothing failed or no part explains what did."""
    against: dict[str, Any] | None = None
    """How the scenario compared with the base commit (``against.Against.to_dict``), with --mlestimate-against."""

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.passed is False]

    @property
    def passed(self) -> bool:
        return self.failure is None and not self.failed

    def summary(self) -> str:
        reasons = ([self.failure] if self.failure else []) + [c.summary() for c in self.failed]
        outcome = "; ".join(reasons) or ("passed" if self.checks else "nothing checked")
        return f"scenario '{self.name}' ({self.where}): {outcome}"

    def table(self) -> str:
        rows = [HEADER, *(c.row() for c in self.checks)]
        widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
        return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)

    def render(self) -> str:
        parts = [self.summary()]
        if self.checks:
            parts.append(self.table())
        if len(self.runs) > 1:
            parts.append(f"measured {len(self.runs)} times in fresh processes before this verdict")
        parts.extend(self.explanation.lines())
        return "\n".join(parts)

    def explain(self, baseline: Sequence[Run], training: bool) -> None:
        """Name the modules behind each failed figure: those that grew most against ``baseline``'s runs, or
        without one the largest."""
        failed = [check.metric for check in self.failed]
        if failed:
            self.explanation = explain(
                failed, [run.breakdown for run in self.runs], [run.breakdown for run in baseline], training=training
            )


def _not_measurable(metric: str, estimate: Estimate) -> str:
    reason = estimate.null_reason(metric)
    return f"budget on {metric} not checked: not measurable here" + (f" ({reason})" if reason else "")


def judge(
    estimate: Estimate,
    budgets: list[Budget],
    tolerances: dict[str, float],
    settings: Settings,
    baseline_file: str,
    name: str,
    where: str,
    measure_again: Callable[[], Estimate],
    more_metrics: Mapping[str, float | None] | None = None,
    base: BaseSide | None = None,
) -> Verdict:
    """Budgets, then the baseline: a suspected timing regression is measured once more in a fresh
    process (``measure_again``) and judged on both measurements, so that one noisy run fails nothing.
    ``more_metrics`` are figures answered beside the estimate (a capacity search's), checked by budgets only.
    ``base``: the scenario at the base commit, measured in pairs with this one (``against``)."""
    verdict = Verdict(name, where, failure=estimate.failure, runs=[run_of(estimate)])
    scenario = estimate.scenario.model_dump(mode="json")
    environment = estimate.profile.environment
    comparison: Comparison | None = None
    if settings.compare_dir is not None and estimate.fits:
        allowed = {**settings.tolerances, **tolerances}

        def against_baseline() -> Comparison:
            assert settings.compare_dir is not None
            return compare(settings.compare_dir, baseline_file, name, scenario, environment, verdict.runs, allowed)

        comparison = against_baseline()
        if comparison.wants_another_run(verdict.runs):
            suspects = [c.metric for c in comparison.suspects]
            for _ in range(CONFIRMATIONS):  # a contended run confirms nothing: measured again, a few times
                verdict.runs.append(run_of(measure_again()))
                if not verdict.runs[-1].contended:
                    break
            comparison = against_baseline()
            if verdict.runs[-1].contended:
                comparison.leave_undecided(suspects, "its confirmation runs were all contended")
        verdict.warnings.extend(comparison.warnings)
        verdict.baseline = _baseline_record(comparison)
        if comparison.missing and settings.strict_baseline:
            verdict.failure = f"no baseline at {comparison.path} (--mlestimate-strict-baseline)"
    baselines = comparison.baselines if comparison else {}
    from pytest_mlestimate.core.pricing import currency_mismatch  # pydantic: `mlestimate compare` never gets here

    mismatch = currency_mismatch(budgets, estimate.price)
    if mismatch:  # an amount in another currency cannot be judged: the scenario fails and says why
        verdict.failure = "; ".join(filter(None, (verdict.failure, mismatch)))
        budgets = [b for b in budgets if b.currency in (None, estimate.price.currency if estimate.price else None)]
    figures = {**estimate.metrics(), **(more_metrics or {})}
    verdict.checks = check_budgets(budgets, figures, baselines, estimate.predicted_metrics()) + (
        comparison.checks if comparison else []
    )
    if base is not None and estimate.fits:
        against = base.compare({**settings.tolerances, **tolerances})
        verdict.against = against.to_dict()
        verdict.checks += against.checks
        verdict.warnings.extend(against.warnings())
    undecided = [c.metric for c in verdict.checks if c.decision == "inconclusive"]
    if undecided and settings.strict:
        reason = f"not decided: {', '.join(dict.fromkeys(undecided))} inconclusive (--mlestimate-strict)"
        verdict.failure = "; ".join(filter(None, (verdict.failure, reason)))
    unmeasured = [c for c in verdict.checks if c.passed is None and c.decision is None]
    verdict.warnings.extend(_not_measurable(c.metric, estimate) for c in unmeasured)
    verdict.explain(comparison.baseline_runs if comparison else (), estimate.scenario.application_type == "training")
    if settings.save_dir is not None and estimate.fits:
        runs = [run for run in verdict.runs if not run.contended]  # a contended run describes the neighbours
        tries = 2 * settings.baseline_runs
        while len(runs) < settings.baseline_runs and tries > 0:
            tries -= 1
            run = run_of(measure_again())
            if not run.contended:
                runs.append(run)
        if runs:
            path = save_baseline(settings.save_dir, baseline_file, name, scenario, environment, runs)
            verdict.baseline = {"status": "saved", "path": str(path), "runs": len(runs)}
            if len(runs) < settings.baseline_runs:
                verdict.warnings.append(
                    f"baseline saved with {len(runs)} of {settings.baseline_runs} runs: the others were measured "
                    "while other processes took the CPU"
                )
        else:
            verdict.warnings.append("baseline not saved: every measurement was contended (other processes took CPU)")
    return verdict


def _baseline_record(comparison: Comparison) -> dict[str, Any]:
    if comparison.missing:
        status = "missing"
    elif comparison.changes:
        status = "compared"
    else:
        status = "not compared"
    runs = comparison.changes[0].runs[0] if comparison.changes else None
    return {"status": status, "path": str(comparison.path), "runs": runs}
