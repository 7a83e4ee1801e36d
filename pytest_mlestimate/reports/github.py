"""GitHub Actions: a Markdown table for the job summary and ``::error`` annotations for failures."""

from __future__ import annotations

from typing import Any

from pytest_mlestimate.reports.terminal import headline_metrics, rows
from pytest_mlestimate.verdicts.explain import Explanation

ICONS = {"passed": "✅ passed", "failed": "❌ failed", "error": "💥 error", "skipped": "⏭️ skipped"}


def _escape(text: str, *, in_property: bool = False) -> str:
    escaped = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return escaped.replace(":", "%3A").replace(",", "%2C") if in_property else escaped


def annotations(records: list[dict[str, Any]]) -> list[str]:
    found = []
    for record in records:
        if record.get("outcome") not in ("failed", "error"):
            continue
        file, line = _escape(record["file"], in_property=True), record["line"]
        title = _escape(f"scenario {record['name']} {record['outcome']}", in_property=True)
        explained = Explanation.from_dicts(record.get("explanation")).brief()
        message = "; ".join(filter(None, [record.get("message"), explained]))
        found.append(f"::error file={file},line={line},title={title}::{_escape(message)}")
    return found


def step_summary(records: list[dict[str, Any]]) -> str:
    header = ["scenario", "result", *headline_metrics(), "budgets"]
    lines = ["## pytest-mlestimate", "", "| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for record, row in zip(records, rows(records), strict=True):
        cells = [f"`{record['file']}:{record['line']}` {record['name']}", ICONS.get(row[1], row[1]), *row[2:]]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    from pytest_mlestimate.reports.html.mermaid import breakdown_charts

    lines += breakdown_charts(records)
    failures = [r for r in records if r.get("outcome") in ("failed", "error") and r.get("message")]
    for record in failures:
        lines += ["", f"<details><summary>{record['name']}: {record['outcome']}</summary>", "", "```"]
        lines += [record["message"], *Explanation.from_dicts(record.get("explanation")).lines(), "```", "</details>"]
    return "\n".join(lines) + "\n"
