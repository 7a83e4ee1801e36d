"""The JSON report; its shape is described by ``pytest_mlestimate/report.schema.json``."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pytest_mlestimate.core.files import InputFileError, read_text_bounded, write_atomically

SCHEMA_VERSION = 1
SCHEMA_FILE = Path(__file__).resolve().parents[1] / "report.schema.json"


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
    return document


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
