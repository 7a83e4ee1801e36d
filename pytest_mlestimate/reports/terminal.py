"""The table of all scenarios printed after the run."""

from __future__ import annotations

from typing import Any

from pytest_mlestimate.core.metrics import METRIC, OPTIONAL_SUMMARY_METRICS, SUMMARY_METRICS, Metric
from pytest_mlestimate.core.units import format_quantity
from pytest_mlestimate.verdicts.explain import Explanation


def headline_metrics() -> list[str]:
    """The headings of the columns every table has."""
    return [METRIC[name].column for name in SUMMARY_METRICS]


def budget_counts(record: dict[str, Any]) -> str:
    """``3/4 ok, 1 failed``: the scenario's checks in one cell."""
    checks = [c for c in record.get("budgets") or [] if isinstance(c, dict)]
    if not checks:
        return "-"
    failed = sum(1 for c in checks if c.get("passed") is False)
    undecided = sum(1 for c in checks if c.get("decision") == "inconclusive")
    unchecked = sum(1 for c in checks if c.get("passed") is None) - undecided
    text = f"{len(checks) - failed - unchecked - undecided}/{len(checks)} ok"
    if failed:
        text += f", {failed} failed"
    if undecided:
        text += f", {undecided} inconclusive"
    if unchecked:
        text += f", {unchecked} not checked"
    return text


def columns(records: list[dict[str, Any]]) -> list[Metric]:
    """The metrics a table of ``records`` shows: the summary's, then each optional one some scenario has."""
    shown = [name for name in OPTIONAL_SUMMARY_METRICS if any(METRIC[name].read(r) is not None for r in records)]
    return [METRIC[name] for name in (*SUMMARY_METRICS, *shown)]


def shown(record: dict[str, Any], metric: Metric) -> str:
    """The figure as a table cell; money with the currency of its price."""
    value = metric.read(record)
    if metric.unit == "money" and value is not None:
        cost = record.get("cost")
        currency = cost.get("Currency") if isinstance(cost, dict) else None
        return f"{value:.2f} {currency or ''}".rstrip()
    return format_quantity(value, metric.unit)


def rows(records: list[dict[str, Any]]) -> list[list[str]]:
    metrics = columns(records)
    return [
        [
            record["name"],
            record.get("outcome") or "not run",
            *(shown(record, metric) for metric in metrics),
            budget_counts(record),
        ]
        for record in records
    ]


def table(records: list[dict[str, Any]]) -> list[str]:
    header = ["scenario", "result", *(metric.column for metric in columns(records)), "budgets"]
    body = rows(records)
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [header, *body]]


def skip_reasons(records: list[dict[str, Any]], limit: int = 160) -> list[str]:
    """Why each skipped scenario was skipped, a line each under the table (pytest says it only with -rs)."""
    found = []
    for record in records:
        if record.get("outcome") == "skipped":
            reason = (record.get("message") or "no reason given").strip().splitlines()[0]
            reason = reason if len(reason) <= limit else reason[: limit - 3] + "..."
            found.append(f"skipped {record['name']}: {reason}")
    return found


def explanations(records: list[dict[str, Any]]) -> list[str]:
    """The module that grew most (or is largest) behind each failed figure, a line per failed scenario under the
    table: ``failed headed: peak_ram_memory grew most in: cls_head activations +63.94 MiB (...)``."""
    found = []
    for record in records:
        explained = Explanation.from_dicts(record.get("explanation"))
        if record.get("outcome") == "failed" and explained:
            found.append(f"failed {record['name']}: {explained.brief()}")
    return found


def hidden_warnings(count: int, *, after_others: bool) -> str:
    """The footer for warnings not shown; "more" only when some were shown above it."""
    noun = "warning" if count == 1 else "warnings"
    more = "more " if after_others else ""
    return f"{count} {more}{noun} from the measurements not shown: run with -v or read the report"


def error_rate(records: list[dict[str, Any]], per_scenario: float) -> list[str]:
    """What the run's timing comparisons risk: each scenario's share, and the whole run's bound (Bonferroni)."""
    judged = sum(
        any(c.get("kind") in ("regression", "against") and c.get("detectable") is not None for c in r["budgets"])
        for r in records
        if r.get("budgets")
    )
    if not judged:
        return []
    run = min(1.0, judged * per_scenario)
    return [
        f"timing comparisons: {judged} scenario(s) judged; an unchanged scenario fails at most {per_scenario:.0%} "
        f"of runs, so this run fails by chance at most {run:.0%} of the time"
    ]
