"""The table of all scenarios printed after the run."""

from __future__ import annotations

from typing import Any

from pytest_mlestimate.core.metrics import METRIC
from pytest_mlestimate.core.units import format_quantity
from pytest_mlestimate.verdicts.explain import Explanation

_HEADLINE = tuple(
    (label, METRIC[name].path, METRIC[name].unit)
    for label, name in (
        ("peak GPU mem", "peak_gpu_memory"),
        ("peak RAM", "peak_ram_memory"),
        ("forward", "forward_pass"),
        ("backward", "backward_pass"),
        ("training", "total_training_time"),
        ("1-image inference", "inference_1_image"),
    )
)


def headline_metrics() -> list[str]:
    return [label for label, _, _ in _HEADLINE]


def _dig(record: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = record
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def budget_counts(record: dict[str, Any]) -> str:
    """``3/4 ok, 1 failed``: the scenario's checks in one cell."""
    checks = [c for c in record.get("budgets") or [] if isinstance(c, dict)]
    if not checks:
        return "-"
    failed = sum(1 for c in checks if c.get("passed") is False)
    unchecked = sum(1 for c in checks if c.get("passed") is None)
    text = f"{len(checks) - failed - unchecked}/{len(checks)} ok"
    if failed:
        text += f", {failed} failed"
    if unchecked:
        text += f", {unchecked} not checked"
    return text


_OPTIONAL = tuple(
    (label, METRIC[name].path, METRIC[name].unit)
    for label, name in (
        ("energy", "energy_per_training"),
        ("cost", "cost_per_training"),
        ("max batch", "max_batch_size"),
    )
)
"""Columns shown only when some scenario has the figure: energy where a counter was readable, cost where a
price was set, the largest batch where a scenario asked for its capacity."""


def _columns(records: list[dict[str, Any]]) -> tuple[tuple[str, tuple[str, ...], str], ...]:
    shown = tuple(column for column in _OPTIONAL if any(_dig(r, column[1]) is not None for r in records))
    return (*_HEADLINE, *shown)


def _shown(record: dict[str, Any], path: tuple[str, ...], unit: str) -> str:
    value = _dig(record, path)
    if unit == "money" and value is not None:
        return f"{value:.2f} {_dig(record, ('cost', 'Currency')) or ''}".rstrip()
    return format_quantity(value, unit)


def rows(records: list[dict[str, Any]]) -> list[list[str]]:
    columns = _columns(records)
    return [
        [
            record["name"],
            record.get("outcome") or "not run",
            *(_shown(record, path, unit) for _, path, unit in columns),
            budget_counts(record),
        ]
        for record in records
    ]


def table(records: list[dict[str, Any]]) -> list[str]:
    header = ["scenario", "result", *(label for label, _, _ in _columns(records)), "budgets"]
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
