"""Budgets: a limit per metric, checked by small pure functions.

A check gives a ``Check`` value that knows whether it passed (None when the machine could not measure
the metric: "not checked", never a silent pass) and how to show itself in a table row and in the reports.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pytest_mlestimate.core.errors import brief
from pytest_mlestimate.core.metrics import METRIC, METRICS
from pytest_mlestimate.core.units import UnitError, format_quantity, parse_money, parse_quantity

if TYPE_CHECKING:
    from pytest_mlestimate.verdicts.regression import Change

Kind = Literal["max", "min", "regression", "against"]
"""An upper limit, a floor, a saved baseline's limit, or the base commit's measured side by side."""
DECISIONS = ("regressed", "no regression", "inconclusive")


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
    interval: tuple[float, float] | None = None
    """A timing regression's relative change bounds at ``confidence``: it fails only beyond the limit
    *and* with the whole interval on the worse side of no change."""
    confidence: float | None = None
    runs: tuple[int, int] | None = None
    """(baseline runs, new runs) of a regression check."""
    decision: str | None = None
    """An ``against`` check's outcome, one of ``DECISIONS``; its ``passed`` follows it (inconclusive: None)."""
    detectable: float | None = None
    """The smallest relative slowdown the check would have found regressed: what it could catch."""
    predicted: bool = False
    """The value was predicted, not measured (peak GPU memory from a run without the GPU)."""

    @classmethod
    def of_change(cls, change: Change) -> Check:
        """The comparison's own decision: a timing over its limit whose bound does not clear the drift margin
        is not a regression, though its interval excludes no change."""
        return cls(
            change.metric,
            "regression",
            change.limit,
            change.value,
            change.baseline,
            change.interval,
            change.confidence,
            change.runs,
            "regressed" if change.regressed else "no regression",
            change.detectable,
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Check:
        """The inverse of ``to_dict``, for reports written from records."""
        interval, runs = data.get("interval"), data.get("runs")
        return cls(
            str(data["metric"]),
            data["kind"],  # type: ignore[arg-type]
            float(data["limit"]),  # type: ignore[arg-type]
            data.get("value"),  # type: ignore[arg-type]
            data.get("baseline"),  # type: ignore[arg-type]
            tuple(interval) if isinstance(interval, list) else None,  # type: ignore[arg-type]
            data.get("confidence"),  # type: ignore[arg-type]
            _run_counts(runs),
            decision if (decision := data.get("decision")) in DECISIONS else None,  # type: ignore[arg-type]
            _number(data.get("detectable")),
            data.get("predicted") is True,
        )

    @property
    def passed(self) -> bool | None:
        if self.decision is not None:
            return {"regressed": False, "no regression": True}.get(self.decision)
        if self.value is None:
            return None
        floor = self.kind == "min" or (self.kind in ("regression", "against") and lower_is_worse(self.metric))
        within = self.value >= self.limit if floor else self.value <= self.limit
        if within or self.interval is None:
            return within
        credible = self.interval[1] < 0 if floor else self.interval[0] > 0
        return not credible

    @property
    def dimension(self) -> str:
        return METRIC[self.metric].unit

    @property
    def change(self) -> float | None:
        """Relative change against the baseline."""
        if self.value is None or not self.baseline:
            return None
        return (self.value - self.baseline) / self.baseline

    def limit_text(self) -> str:
        floor = self.kind == "min" or (self.kind in ("regression", "against") and lower_is_worse(self.metric))
        limit = f"{'>=' if floor else '<='} {format_quantity(self.limit, self.dimension)}"
        side = {"regression": "baseline", "against": "base"}.get(self.kind)
        return f"{limit} ({side})" if side else limit

    @property
    def compares(self) -> bool:
        """Against earlier figures (a baseline, the base commit) rather than a budget's fixed limit."""
        return self.kind in ("regression", "against")

    def verdict_text(self) -> str:
        if self.decision == "inconclusive":
            return "INCONCLUSIVE"
        return {True: "ok", False: "FAILED", None: "not checked: not measurable here"}[self.passed]

    def value_text(self) -> str:
        measured = format_quantity(self.value, self.dimension)
        return f"{measured} (predicted)" if self.predicted else measured

    def row(self) -> tuple[str, str, str, str, str, str]:
        return (
            self.metric,
            self.value_text(),
            self.limit_text(),
            format_quantity(self.baseline, self.dimension),
            self.change_text(),
            self.verdict_text(),
        )

    def change_text(self) -> str:
        """``+21.3 % (98 % CI +12.0..+31.0 %, runs 5:2, catches +9.0 %)`` for a timing regression check: the
        interval's two ends are each a bound at ``confidence``, so together they cover 2 x confidence - 1."""
        change = self.change
        if change is None:
            return "-"
        parts = []
        if self.interval is not None and self.confidence is not None:
            low, high = self.interval
            parts.append(f"{2 * self.confidence - 1:.0%} CI {low:+.1%}..{high:+.1%}")
        if self.runs is not None:
            parts.append(f"pairs {self.runs[1]}" if self.kind == "against" else f"runs {self.runs[0]}:{self.runs[1]}")
        if self.detectable is not None:
            parts.append(f"catches {self.detectable:+.1%}")
        return f"{change:+.1%}" + (f" ({', '.join(parts)})" if parts else "")

    def summary(self) -> str:
        """One line for annotations and JUnit messages."""
        measured = format_quantity(self.value, self.dimension)
        if self.decision == "inconclusive":
            return f"{self.metric} inconclusive against the base: measured {measured}, {self.change_text()}"
        if self.compares:
            return f"{self.metric} regressed: measured {measured}, {self.change_text()}, limit {self.limit_text()}"
        how = "predicted" if self.predicted else "measured"
        return f"{self.metric} broke its limit: {how} {measured}, limit {self.limit_text()}"

    def to_dict(self) -> dict[str, object]:
        return {
            "metric": self.metric,
            "kind": self.kind,
            "limit": self.limit,
            "value": self.value,
            "baseline": self.baseline,
            "interval": list(self.interval) if self.interval else None,
            "confidence": self.confidence,
            "runs": list(self.runs) if self.runs else None,
            "passed": self.passed,
            "decision": self.decision,
            "detectable": self.detectable,
            "predicted": self.predicted,
        }


@dataclass(frozen=True)
class Budget:
    metric: str
    limit: float
    floor: bool = False
    currency: str | None = None
    """The currency a limit on an amount of money was written in; the price's must match it."""

    def check(self, value: float | None, baseline: float | None = None, predicted: bool = False) -> Check:
        return Check(self.metric, "min" if self.floor else "max", self.limit, value, baseline, predicted=predicted)


def lower_is_worse(metric: str) -> bool:
    return METRIC[metric].lower_is_worse


def shown_key(key: object) -> str:
    """A mapping key from a scenario file as a message repeats it: short, and quoted unless it is plain."""
    text = key if isinstance(key, str) else brief(key)
    return text if len(text) <= 60 and text.isprintable() else brief(text)


def unknown_metric(name: object) -> str:
    close = difflib.get_close_matches(name, METRICS, n=1, cutoff=0.5) if isinstance(name, str) else []
    hint = f"did you mean '{close[0]}'? " if close else ""
    return f"unknown metric {brief(name)}: {hint}allowed: {', '.join(METRICS)}"


def _budget(metric: str, text: object, floor: bool = False) -> Budget:
    dimension = METRIC[metric].unit
    currency = parse_money(text)[1] if dimension == "money" else None
    return Budget(metric, parse_quantity(text, dimension), floor=floor, currency=currency)


def _parse_one(metric: str, spec: object) -> list[Budget]:
    if isinstance(spec, Mapping):
        extra = set(spec) - {"max", "min"}
        if extra or not spec:
            raise UnitError(f"{brief(dict(spec))}: a limit mapping takes 'max' and/or 'min'")
        found = [_budget(metric, spec["max"])] if "max" in spec else []
        if "min" in spec:
            found.append(_budget(metric, spec["min"], floor=True))
        return found
    if isinstance(spec, str) and spec.lstrip().startswith((">=", "<=")):
        text = spec.lstrip()
        return [_budget(metric, text[2:], floor=text.startswith(">="))]
    return [_budget(metric, spec)]


def parse_budgets(raw: object, field: str = "budgets") -> list[Budget]:
    """``{"peak_ram_memory": "4 GiB", "peak_gpu_utilization": ">= 40 %"}`` -> budgets.

    A plain limit is an upper one; ``">= X"`` or ``{min: X}`` is a floor. ``field`` begins each problem
    (``budgets.forward_pass: ...``); without one a problem begins with the metric.
    """
    if raw is None:
        return []
    if not isinstance(raw, Mapping):
        raise BudgetError([f"{field or 'budgets'}: expected a mapping of metric -> limit, got {brief(raw)}"])
    budgets, problems = [], []
    prefix = f"{field}." if field else ""
    for metric, spec in raw.items():
        if metric not in METRIC:
            problems.append(f"{prefix}{shown_key(metric)}: {unknown_metric(metric)}")
            continue
        try:
            budgets.extend(_parse_one(metric, spec))
        except UnitError as exc:
            problems.append(f"{prefix}{shown_key(metric)}: {exc}")
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
            problems.append(f"{field}: {brief(line)} is not 'metric = value'")
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
    budgets: list[Budget],
    metrics: Mapping[str, float | None],
    baselines: Mapping[str, float],
    predicted: Mapping[str, float] | None = None,
) -> list[Check]:
    """``predicted``: figures to judge where the measured one is missing (peak GPU memory on a CPU run)."""
    found = []
    for budget in budgets:
        value = metrics.get(budget.metric)
        if value is None and predicted and budget.metric in predicted:
            found.append(budget.check(predicted[budget.metric], baselines.get(budget.metric), predicted=True))
        else:
            found.append(budget.check(value, baselines.get(budget.metric)))
    return found


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _run_counts(value: object) -> tuple[int, int] | None:
    """A report's ``[baseline runs, new runs]``, or None for anything else: a shard's report is anyone's text,
    and these counts are written into a pull-request comment."""
    if (
        isinstance(value, list)
        and len(value) == 2
        and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in value)
    ):
        return (value[0], value[1])
    return None
