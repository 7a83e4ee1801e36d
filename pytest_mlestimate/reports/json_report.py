"""The JSON report; its shape is described by ``pytest_mlestimate/report.schema.json``."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_mlestimate.core.files import InputFileError, read_text_bounded, write_atomically

SCHEMA_VERSION = 1
SCHEMA_FILE = Path(__file__).resolve().parents[1] / "report.schema.json"


MAX_DEPTH = 64
"""Nesting a report never reaches (its deepest is about 8 levels): deeper, every reader would recurse for it."""


def _depth(document: object) -> int:
    """How deeply lists and objects nest in ``document``, counted without recursion."""
    deepest, stack = 0, [(document, 1)]
    while stack:
        value, level = stack.pop()
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else None
        if children is not None:
            deepest = max(deepest, level)
            if deepest > MAX_DEPTH:
                return deepest
            stack.extend((child, level + 1) for child in children)
    return deepest


class ReportError(ValueError):
    """A file that cannot be read as a JSON report; the message names the path and what would do."""


def read_report(path: Path, wanted: str) -> dict[str, Any]:
    """The JSON report at ``path``, its scenarios each with a name and a file; ``wanted`` says in the errors what
    would do instead (``a JSON report written by --mlestimate-json``)."""
    from pytest_mlestimate.core.errors import brief

    try:
        document = json.loads(read_text_bounded(path))
    except InputFileError as exc:
        raise ReportError(f"{exc}: give {wanted}") from None
    except ValueError as exc:  # not JSON
        raise ReportError(f"{path} is not JSON ({exc}): give {wanted}") from None
    except RecursionError:
        raise ReportError(f"{path} is nested too deeply for a report: give {wanted}") from None
    if _depth(document) > MAX_DEPTH:
        raise ReportError(f"{path} is nested deeper than {MAX_DEPTH} levels, which no report is: give {wanted}")
    if isinstance(document, dict) and "format" in document and "runs" in document:
        raise ReportError(
            f"{path} is one scenario's baseline file: give the whole folder --mlestimate-save-baseline wrote"
        )
    if not isinstance(document, dict) or not isinstance(document.get("scenarios"), list):
        raise ReportError(f"{path} is not a JSON report (it has no 'scenarios' list): give {wanted}")
    version = document.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ReportError(f"{path} is a report of schema version {brief(version)}; this version reads {SCHEMA_VERSION}")
    for number, record in enumerate(document["scenarios"], 1):
        if not isinstance(record, dict) or not all(isinstance(record.get(k), str) for k in ("name", "file")):
            raise ReportError(f"{path}: scenario {number} is not a scenario record (it needs a 'name' and a 'file')")
        for field, value in record.items():
            shape = _RECORD_FIELDS.get(field)
            if shape is not None and not shape.holds(value):
                raise ReportError(
                    f"{path}: scenario {number} ({brief(record['name'])}): {field} is {brief(value)}; allowed: "
                    f"{shape.allowed} (the schema in {SCHEMA_FILE.name})"
                )
    return document


@dataclass(frozen=True)
class _Shape:
    kinds: tuple[type, ...]
    allowed: str
    items: type | None = None
    """What each element of a list must be."""

    def holds(self, value: object) -> bool:
        if value is None:
            return True
        if isinstance(value, bool) or not isinstance(value, self.kinds):
            return False
        return self.items is None or all(isinstance(item, self.items) for item in value)  # type: ignore[attr-defined]


_OBJECT = _Shape((dict,), "an object or null")
_RECORD_FIELDS: dict[str, _Shape] = {
    "line": _Shape((int,), "a whole number or null"),
    "outcome": _Shape((str,), "'passed', 'failed', 'error', 'skipped' or null"),
    "message": _Shape((str,), "text or null"),
    "measured": _Shape((str,), "text or null"),
    "duration": _Shape((int, float), "a number of seconds or null"),
    "budgets": _Shape((list,), "a list of budget checks (objects) or null", dict),
    "runs": _Shape((list,), "a list of runs (objects) or null", dict),
    "explanation": _Shape((list,), "a list of objects or null", dict),
    "warnings": _Shape((list,), "a list of text or null", str),
    **{
        name: _OBJECT
        for name in ("scenario", "details", "resource", "training_time", "inference_time", "energy", "cost", "units")
    },
}
"""The fields of a scenario record that the readers of reports dereference, and what each may hold."""


def environment_of(records: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The fingerprint of the first measured scenario, else the host's (no torch needed)."""
    for record in records:
        details = record.get("details") or {}
        if details.get("environment"):
            return details["environment"]
    from pytest_mlestimate.core.environment import host_fingerprint

    return host_fingerprint()


def build_document(records: list[dict[str, Any]]) -> dict[str, Any]:
    return {"schema_version": SCHEMA_VERSION, "environment": environment_of(records), "scenarios": records}


def write_json(path: Path, records: list[dict[str, Any]]) -> None:
    write_atomically(path, json.dumps(build_document(records), indent=2, default=str) + "\n")
