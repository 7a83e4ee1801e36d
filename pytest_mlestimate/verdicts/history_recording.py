"""What a JSON report adds to the run history: each measured scenario's fingerprint, figures and runs, handed to
the store (``stores.run_history``) as rows; and how a stored run is read back."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from pytest_mlestimate.core.errors import brief
from pytest_mlestimate.core.metrics import METRIC
from pytest_mlestimate.stores.interfaces import run_history_at
from pytest_mlestimate.stores.run_history import HistoryError, Recorded, ScenarioRow
from pytest_mlestimate.verdicts.regression import Run
from pytest_mlestimate.verdicts.run_environment import fingerprint


def record_report(
    path: Path | str,
    document: Mapping[str, Any],
    commit: str | None = None,
    branch: str | None = None,
    recorded_at: datetime | None = None,
) -> Recorded:
    """Add a JSON report's document (``--mlestimate-json``; ``build_document``) to the history at ``path`` (a file,
    or a ``postgresql://`` URL) as one run, in one transaction. Scenarios with no runs (skipped, invalid, not
    measured) are left out; a report that measured nothing adds nothing (and creates no file)."""
    scenarios = document.get("scenarios") if isinstance(document, Mapping) else None
    if not isinstance(scenarios, list):
        raise HistoryError(f"not a JSON report: it has no 'scenarios' list (got {brief(document)}), nothing recorded")
    environment = document.get("environment") or {}
    measured = [r for r in scenarios if isinstance(r, Mapping) and r.get("runs") and isinstance(r.get("name"), str)]
    rows = [_row(record, environment) for record in measured]
    return run_history_at(path).record(rows, environment, commit, branch, recorded_at)


def _row(record: Mapping[str, Any], environment: Mapping[str, Any]) -> ScenarioRow:
    details = record.get("details") or {}
    own = details.get("environment") or environment
    return ScenarioRow(
        file=str(record.get("file") or ""),
        name=record["name"],
        outcome=record.get("outcome"),
        measured=record.get("measured"),
        fingerprint=fingerprint(own),
        environment=own,
        scenario=record.get("scenario") or {},
        figures={name: value for name, metric in METRIC.items() if (value := metric.read(record)) is not None},
        runs=[Run.from_dict(run).to_dict() for run in record["runs"]],
    )


def stored_run(text: object) -> Run | None:
    """A measurement column as ``Run``; None for one that cannot be read."""
    try:
        return Run.from_dict(json.loads(text))  # type: ignore[arg-type]
    except (TypeError, ValueError, AttributeError, KeyError, RecursionError):
        return None
