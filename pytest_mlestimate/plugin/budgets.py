"""Budgets: a limit per metric, checked by small pure functions.

A check gives a ``Check`` value that knows whether it passed (None when the machine could not measure
the metric: "not checked", never a silent pass) and how to show itself in a table row and in the reports.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from pytest_mlestimate.plugin.units import UnitError, format_quantity, parse_quantity
from pytest_mlestimate.result import METRIC_UNITS, METRICS

Kind = Literal["max", "min", "regression"]


class BudgetError(ValueError):
    """Budgets that cannot be read; ``problems`` holds one line per bad entry."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


@dataclass(frozen=True)
class Check:
    metric: str
    kind: Kind
    limit: float
    value: float | None
    baseline: float | None = None

    @property
    def passed(self) -> bool | None:
        if self.value is None:
            return None
        if self.kind == "min" or (self.kind == "regression" and lower_is_worse(self.metric)):
            return self.value >= self.limit
        return self.value <= self.limit

    @property
    def dimension(self) -> str:
        return METRIC_UNITS[self.metric]

    @property
    def change(self) -> float | None:
        """Relative change against the baseline."""
        if self.value is None or not self.baseline:
            return None
        return (self.value - self.baseline) / self.baseline

    def limit_text(self) -> str:
        sign = ">=" if self.kind == "min" or (self.kind == "regression" and lower_is_worse(self.metric)) else "<="
        limit = f"{sign} {format_quantity(self.limit, self.dimension)}"
        return f"{limit} (baseline)" if self.kind == "regression" else limit

    def verdict_text(self) -> str:
        return {True: "ok", False: "FAILED", None: "not checked: not measurable here"}[self.passed]

    def row(self) -> tuple[str, str, str, str, str, str]:
        change = self.change
        return (
            self.metric,
            format_quantity(self.value, self.dimension),
            self.limit_text(),
            format_quantity(self.baseline, self.dimension),
            "-" if change is None else f"{change:+.1%}",
            self.verdict_text(),
        )

    def summary(self) -> str:
        """One line for annotations and JUnit messages."""
        measured = format_quantity(self.value, self.dimension)
        what = "regressed past" if self.kind == "regression" else "broke its limit"
        return f"{self.metric} {what}: measured {measured}, limit {self.limit_text()}"

    def to_dict(self) -> dict[str, object]:
        return {
            "metric": self.metric,
            "kind": self.kind,
            "limit": self.limit,
            "value": self.value,
            "baseline": self.baseline,
            "passed": self.passed,
        }


@dataclass(frozen=True)
class Budget:
    metric: str
    limit: float
    floor: bool = False

    def check(self, value: float | None, baseline: float | None = None) -> Check:
        return Check(self.metric, "min" if self.floor else "max", self.limit, value, baseline)


def lower_is_worse(metric: str) -> bool:
    """A GPU left idle is a regression too: utilisation falling is the bad direction."""
    return metric == "peak_gpu_utilization"


def unknown_metric(name: str) -> str:
    close = difflib.get_close_matches(name, METRICS, n=1, cutoff=0.5)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return f"unknown metric '{name}': {hint}allowed: {', '.join(METRICS)}"


def _parse_one(metric: str, spec: object) -> list[Budget]:
    dimension = METRIC_UNITS[metric]
    if isinstance(spec, Mapping):
        extra = set(spec) - {"max", "min"}
        if extra or not spec:
            raise UnitError(f"{dict(spec)!r}: a limit mapping takes 'max' and/or 'min'")
        found = [Budget(metric, parse_quantity(spec["max"], dimension))] if "max" in spec else []
        if "min" in spec:
            found.append(Budget(metric, parse_quantity(spec["min"], dimension), floor=True))
        return found
    if isinstance(spec, str) and spec.lstrip().startswith((">=", "<=")):
        text = spec.lstrip()
        return [Budget(metric, parse_quantity(text[2:], dimension), floor=text.startswith(">="))]
    return [Budget(metric, parse_quantity(spec, dimension))]


def parse_budgets(raw: object, field: str = "budgets") -> list[Budget]:
    """``{"peak_ram_memory": "4 GiB", "peak_gpu_utilization": ">= 40 %"}`` -> budgets.

    A plain limit is an upper one; ``">= X"`` or ``{min: X}`` is a floor.
    """
    if raw is None:
        return []
    if not isinstance(raw, Mapping):
        raise BudgetError([f"{field}: expected a mapping of metric -> limit, got {raw!r}"])
    budgets, problems = [], []
    for metric, spec in raw.items():
        if metric not in METRIC_UNITS:
            problems.append(f"{field}.{metric}: {unknown_metric(str(metric))}")
            continue
        try:
            budgets.extend(_parse_one(metric, spec))
        except UnitError as exc:
            problems.append(f"{field}.{metric}: {exc}")
    if problems:
        raise BudgetError(problems)
    return budgets


def parse_assignments(lines: Iterable[str], field: str) -> dict[str, str]:
    """``["peak_ram_memory = 4 GiB"]`` (ini lines or command-line values) -> a mapping."""
    found, problems = {}, []
    for line in lines:
        if not line.strip():
            continue
        name, sep, value = line.partition("=")
        if not sep:
            problems.append(f"{field}: '{line}' is not 'metric = value'")
            continue
        found[name.strip()] = value.strip()
    if problems:
        raise BudgetError(problems)
    return found


def merge_budgets(defaults: list[Budget], own: list[Budget]) -> list[Budget]:
    """A scenario's own budget replaces a default on the same metric and direction."""
    mine = {(b.metric, b.floor) for b in own}
    return [b for b in defaults if (b.metric, b.floor) not in mine] + own


def check_budgets(
    budgets: list[Budget], metrics: Mapping[str, float | None], baselines: Mapping[str, float]
) -> list[Check]:
    return [b.check(metrics.get(b.metric), baselines.get(b.metric)) for b in budgets]
