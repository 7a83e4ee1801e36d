"""The JUnit XML report: one test case per scenario; a failure names each broken metric with its measured
value and limit, and the modules behind it (``explain.py``)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from junit_xml import TestCase, TestSuite, to_xml_report_string

from pytest_mlestimate.core.files import write_atomically
from pytest_mlestimate.reports.json_report import environment_of
from pytest_mlestimate.verdicts.budgets import Check
from pytest_mlestimate.verdicts.explain import Explanation

_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_text(text: str) -> str:
    """``text`` with the characters XML 1.0 cannot hold (NUL, most control characters, lone surrogates)
    written as escapes."""
    return _NOT_XML.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def failed_checks(record: dict[str, Any]) -> list[Check]:
    return [Check.from_dict(b) for b in record.get("budgets") or [] if b.get("passed") is False]


def _one_line(text: str, limit: int = 500) -> str:
    joined = " ".join(part.strip() for part in text.splitlines() if part.strip())
    return joined if len(joined) <= limit else joined[: limit - 3] + "..."


def provenance(record: dict[str, Any]) -> str | None:
    """Where the scenario's figures came from, for the test case's output: its time is what it cost in this
    run, so a cache hit or a shared measurement costs next to nothing there."""
    measured = record.get("measured")
    if measured is None:
        return None
    seconds = (record.get("details") or {}).get("profile_seconds")
    took = f"{seconds:.1f} s" if isinstance(seconds, int | float) else "an unknown time"
    if measured == "this run":
        return f"measured: this run (the profile took {took})"
    if measured == "cache":
        return f"measured: cache (measured in an earlier run, where the profile took {took})"
    return f"measured: {measured} (its profile took {took}, charged to that scenario)"


def comparisons(record: dict[str, Any]) -> list[str]:
    """Each timing comparison's outcome and what it could catch (its power), for the test case's output: an
    inconclusive check is said, never left to read as a pass."""
    lines = []
    for data in record.get("budgets") or []:
        if isinstance(data, dict) and data.get("detectable") is not None:
            check = Check.from_dict(data)
            lines.append(f"{check.metric} against the {check.limit_text().rpartition('(')[2].rstrip(')')}: "
                         f"{check.verdict_text()}, {check.change_text()}")  # fmt: skip
    return lines


def _case(record: dict[str, Any]) -> TestCase:
    output = "\n".join(filter(None, [provenance(record), *comparisons(record)])) or None
    case = TestCase(
        xml_text(record["name"]),
        classname=xml_text(record["file"].replace("/", ".").rsplit(".", 1)[0]),
        elapsed_sec=record.get("duration"),
        stdout=xml_text(output) if output else None,
        file=xml_text(record["file"]),
        line=record["line"],
    )
    message = xml_text(record.get("message") or "")
    outcome = record.get("outcome")
    if outcome == "failed":
        checks = failed_checks(record)
        headline = "; ".join(c.summary() for c in checks) or _one_line(message) or "failed"
        explanation = Explanation.from_dicts(record.get("explanation"))
        if explanation:
            headline += f"; {explanation.brief()}"
            message = "\n".join([message, *(xml_text(line) for line in explanation.lines())])
        case.add_failure_info(message=xml_text(headline), output=message, failure_type="budget")
    elif outcome == "error":
        case.add_error_info(message=_one_line(message) or "error", output=message)
    elif outcome == "skipped":
        case.add_skipped_info(message=message or "skipped")
    return case


def write_junit(path: Path, records: list[dict[str, Any]]) -> None:
    properties = {k: xml_text(str(v)) for k, v in environment_of(records).items() if v is not None}
    suite = TestSuite("mlestimate", [_case(r) for r in records], properties=properties)
    write_atomically(path, to_xml_report_string([suite], prettyprint=True, encoding="utf-8"))
