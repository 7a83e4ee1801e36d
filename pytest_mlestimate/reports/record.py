"""One scenario's entry in the reports, as a plain dict that travels on pytest's reports (and so from
xdist workers to the controller) and is written as it is."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from pytest_mlestimate.estimates.estimate import Estimate
    from pytest_mlestimate.planning.capacity import CapacityReport
    from pytest_mlestimate.verdicts.verdict import Verdict

RECORDS = pytest.StashKey[list[dict[str, Any]]]()
ESTIMATE_KEYS = ("resource", "training_time", "inference_time", "energy", "cost", "units", "details")


def new_record(name: str, file: str, line: int, nodeid: str) -> dict[str, Any]:
    return {
        "name": name,
        "file": file,
        "line": line,
        "nodeid": nodeid,
        "outcome": None,
        "message": None,
        "scenario": None,
        **dict.fromkeys(ESTIMATE_KEYS),
        "budgets": [],
        "capacity": None,
        "warnings": [],
        "runs": [],
        "baseline": None,
        "against": None,
        "explanation": [],
        "duration": None,
        "measured": None,
    }


def fill_record(
    record: dict[str, Any], estimate: Estimate, verdict: Verdict, capacity: CapacityReport | None = None
) -> None:
    found = estimate.to_dict()
    record["capacity"] = capacity.to_dict() if capacity is not None else None
    record["scenario"] = estimate.scenario.model_dump(mode="json")
    record.update({key: found[key] for key in ESTIMATE_KEYS})
    record["budgets"] = [check.to_dict() for check in verdict.checks]
    record["runs"] = [run.to_dict() for run in verdict.runs]  # with samples: `mlestimate compare` judges as here
    record["baseline"] = verdict.baseline
    record["against"] = verdict.against
    record["explanation"] = verdict.explanation.to_dicts()
    record["warnings"] = found["warnings"] + verdict.warnings
    if not verdict.passed:
        record["message"] = verdict.summary()


def mark_provenance(records: list[dict[str, Any]]) -> None:
    """Sets each record's ``measured``: "this run", "cache" (an earlier run's measurement) or "shared with
    FILE::NAME" (another scenario's measurement of this run, recalled from the cache); None if not measured."""
    measured_here: dict[str, str] = {}
    for record in records:
        cache = (record.get("details") or {}).get("cache") or {}
        if not cache.get("hit") and cache.get("key"):
            measured_here.setdefault(cache["key"], f"{record['file']}::{record['name']}")
    for record in records:
        details = record.get("details")
        if not details:
            record["measured"] = None
            continue
        cache = details.get("cache") or {}
        sharer = measured_here.get(cache.get("key") or "")
        if not cache.get("hit"):
            record["measured"] = "this run"
        else:
            record["measured"] = f"shared with {sharer}" if sharer else "cache"


def metric_properties(estimate: Estimate) -> list[tuple[str, object]]:
    """Metrics as pytest's own --junitxml test-case properties."""
    return [(f"mlestimate.{name}", value) for name, value in estimate.metrics().items() if value is not None]


def outcome_after(previous: str | None, when: str, outcome: str) -> str | None:
    """Fold one phase's pytest outcome into the scenario's: passed | failed | error | skipped."""
    if outcome == "skipped":
        return previous if previous in ("failed", "error") else "skipped"
    if outcome == "failed":
        return "failed" if when == "call" else "error"
    if when == "call":
        return "passed"
    return previous
