"""The JSON report; its shape is described by ``pytest_mlestimate/report.schema.json``."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
SCHEMA_FILE = Path(__file__).resolve().parents[2] / "report.schema.json"


def environment_of(records: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The fingerprint of the first measured scenario, else the host's (no torch needed)."""
    for record in records:
        details = record.get("details") or {}
        if details.get("environment"):
            return details["environment"]
    from pytest_mlestimate.environment import host_fingerprint

    return host_fingerprint()


def build_document(records: list[dict[str, Any]]) -> dict[str, Any]:
    return {"schema_version": SCHEMA_VERSION, "environment": environment_of(records), "scenarios": records}


def write_atomically(path: Path, text: str) -> None:
    """Write beside the target and rename, so a reader (or an interrupted run) never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def write_json(path: Path, records: list[dict[str, Any]]) -> None:
    write_atomically(path, json.dumps(build_document(records), indent=2, default=str) + "\n")
