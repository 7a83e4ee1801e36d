"""GitHub Actions: a Markdown table for the job summary and ``::error`` annotations for failures."""

from __future__ import annotations

import html
import re
from typing import Any

from pytest_mlestimate.reports.markdown import code
from pytest_mlestimate.reports.terminal import columns, rows
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
    header = ["scenario", "result", *(metric.column for metric in columns(records)), "budgets"]
    lines = ["## pytest-mlestimate", "", "| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for record, row in zip(records, rows(records), strict=True):
        # names and files are anyone's text: as code spans they make no link, image, mention or new row
        where = code(f"{record['file']}:{record['line']}")
        figures = [cell.replace("|", "\\|") for cell in (ICONS.get(row[1], row[1]), *row[2:])]
        lines.append("| " + " | ".join([f"{where} {code(record['name'])}", *figures]) + " |")
    from pytest_mlestimate.reports.html.mermaid import breakdown_charts

    lines += breakdown_charts(records)
    failures = [r for r in records if r.get("outcome") in ("failed", "error") and r.get("message")]
    for record in failures:
        body = [str(record["message"]), *Explanation.from_dicts(record.get("explanation")).lines()]
        fence = "`" * max(3, 1 + max((len(run) for run in re.findall("`+", "\n".join(body))), default=0))
        name, outcome = html.escape(" ".join(str(record["name"]).split())), html.escape(str(record["outcome"]))
        summary = f"<code>{name}</code>: {outcome}"
        lines += ["", f"<details><summary>{summary}</summary>", "", fence, *body, fence, "</details>"]
    return "\n".join(lines) + "\n"
