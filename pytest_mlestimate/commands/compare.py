"""``mlestimate compare OLD NEW``: the regression verdicts between two earlier runs, without measuring again.

OLD and NEW are each a JSON report (``--mlestimate-json``) or a baseline folder (``--mlestimate-save-baseline``).
Scenarios are paired by file and name, as a baseline folder lays them out, and each pair is judged by the
plugin's own comparison (``baseline.compare_measured``) and shown as the plugin shows a verdict. A report keeps
each run's figures but not the samples behind them: its timings are judged on the runs' figures and the spread
between them, never below the drift floor, and a within-run error is taken only from runs that kept their
samples (a baseline's), never assumed to be zero (``regression.compare_timing``).

Importing this module loads neither torch nor the engine.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_mlestimate.reports.json_report import ReportError, read_report
from pytest_mlestimate.stores.interfaces import baseline_store_at
from pytest_mlestimate.verdicts.baseline import (
    BaselineError,
    Measured,
    baseline_key,
    baseline_path,
    compare_measured,
    measured_of,
    parse_tolerances,
)
from pytest_mlestimate.verdicts.budgets import parse_assignments
from pytest_mlestimate.verdicts.regression import Run
from pytest_mlestimate.verdicts.verdict import Verdict

ALLOWED = "a JSON report written by --mlestimate-json or a folder written by --mlestimate-save-baseline"


class InputError(ValueError):
    """OLD or NEW cannot be read as a report or a baseline folder; the message names the path."""


@dataclass(frozen=True)
class Entry:
    """One scenario as one side recorded it."""

    key: str
    """Its baseline file inside a baseline folder (``scenarios/gpu/frcnn-b4.json``): what pairs OLD and NEW."""
    name: str
    where: str
    path: Path
    measured: Measured | None = None
    failure: str | None = None
    """The model did not fit: measured, and failed."""
    problem: str | None = None
    """Why there is nothing to compare: not measured, or an unreadable baseline."""

    def __str__(self) -> str:
        return f"scenario '{self.name}' ({self.where})"


@dataclass(frozen=True)
class Side:
    path: Path
    kind: str
    entries: dict[str, Entry]

    def describe(self) -> str:
        count = len(self.entries)
        return f"{self.kind} {self.path} ({count} scenario{'' if count == 1 else 's'})"


def read_side(path: Path, label: str) -> Side:
    """``label`` (OLD or NEW) begins every message about ``path``."""
    try:
        if path.is_dir():
            return _baseline_folder(path)
        if not path.exists():
            raise InputError(f"{path} does not exist: give {ALLOWED}")
        return _report(path)
    except InputError as exc:
        raise InputError(f"{label} {exc}") from None


def _baseline_folder(root: Path) -> Side:
    store = baseline_store_at(root)
    files = list(store.saved())
    if not files:
        raise InputError(f"{root} holds no baseline files (*.json): give {ALLOWED}")
    entries = {}
    for path in files:
        key = path.relative_to(root).as_posix()
        try:
            measured = measured_of(store.load(path), path)
        except BaselineError as exc:
            entries[key] = Entry(key, path.stem, path.parent.relative_to(root).as_posix(), path, problem=str(exc))
            continue
        where = measured.file or path.parent.relative_to(root).as_posix()
        if measured.name:  # a file saved before names were encoded still meets its scenario
            key = (Path(key).parent / baseline_path(Path(), "_.yaml", measured.name).name).as_posix()
        entries[key] = Entry(key, measured.name or path.stem, where, path, measured)
    if all(entry.problem for entry in entries.values()):
        first = next(iter(entries.values())).problem
        raise InputError(f"{root} holds no baselines, only other JSON files ({first}): give {ALLOWED}")
    return Side(root, "baseline folder", entries)


def _report(path: Path) -> Side:
    try:
        document = read_report(path, ALLOWED)
    except ReportError as exc:
        raise InputError(str(exc)) from None
    environment = document.get("environment") or {}
    entries = {}
    for record in document["scenarios"]:
        entry = _entry_of(record, environment, path)
        entries[entry.key] = entry
    return Side(path, "report", entries)


def _entry_of(record: Mapping[str, Any], environment: Mapping[str, Any], path: Path) -> Entry:
    name, file = record["name"], record["file"]
    where = f"{file}:{record['line']}" if record.get("line") else file
    key = baseline_key(file, name)
    details = record.get("details") or {}
    try:
        runs = [Run.from_dict(run) for run in record.get("runs") or []]
    except (TypeError, ValueError, AttributeError) as exc:
        return Entry(key, name, where, path, problem=f"its runs in {path} are unreadable ({exc})")
    if not runs:
        lines = str(record.get("message") or "").strip().splitlines()
        why = ": ".join([record.get("outcome") or "not run", *lines[:1]])
        return Entry(key, name, where, path, problem=f"was not measured ({why})")
    measured = Measured(
        record.get("scenario") or {}, details.get("environment") or environment, runs, f"report {path}", name, file
    )
    failure = (details.get("failure") or "did not fit") if details.get("fits") is False else None
    return Entry(key, name, where, path, measured, failure=failure)


def pair(old: Side, new: Side) -> tuple[list[tuple[Entry, Entry]], list[Entry], list[Entry]]:
    """(pairs, only in OLD, only in NEW). A report's files are relative to pytest's rootdir, a baseline's to the
    project root: ``cpu/a.json`` and ``scenarios/cpu/a.json`` pair when nothing else could."""
    pairs = [(entry, new.entries[key]) for key, entry in old.entries.items() if key in new.entries]
    only_old = [entry for key, entry in old.entries.items() if key not in new.entries]
    only_new = [entry for key, entry in new.entries.items() if key not in old.entries]
    for entry in list(only_old):
        candidates = [other for other in only_new if _same_tail(entry.key, other.key)]
        if len(candidates) == 1:
            pairs.append((entry, candidates[0]))
            only_old.remove(entry)
            only_new.remove(candidates[0])
    return sorted(pairs, key=lambda p: p[1].key), only_old, only_new


def _same_tail(one: str, other: str) -> bool:
    a, b = one.split("/"), other.split("/")
    shorter = min(len(a), len(b))
    return shorter >= 2 and a[-shorter:] == b[-shorter:]


def judge_pair(old: Entry, new: Entry, tolerances: Mapping[str, float]) -> Verdict:
    """The verdict the plugin would give NEW against OLD as its baseline (budgets aside)."""
    verdict = Verdict(new.name, new.where, failure=new.failure)
    if new.problem or old.problem:
        side, problem = ("NEW", new.problem) if new.problem else ("OLD", old.problem)
        verdict.warnings.append(f"not compared: {side} {problem}")
    elif old.failure:
        verdict.warnings.append(f"not compared: OLD did not fit ({old.failure})")
    elif new.failure is None:
        assert old.measured is not None and new.measured is not None
        comparison = compare_measured(old.measured, new.measured, tolerances, old.path)
        verdict.runs = list(new.measured.runs)
        verdict.checks = comparison.checks
        verdict.warnings.extend(comparison.warnings)
        verdict.explain(comparison.baseline_runs, new.measured.scenario.get("application_type") != "inference")
    return verdict


@dataclass(frozen=True)
class Outcome:
    """Every scenario of OLD and NEW, judged: renders itself as the command prints it."""

    old: Side
    new: Side
    verdicts: list[Verdict] = field(default_factory=list)
    only_old: list[Entry] = field(default_factory=list)
    only_new: list[Entry] = field(default_factory=list)
    strict: bool = False
    """Scenarios only in NEW fail, as --mlestimate-strict-baseline fails a scenario with no baseline."""

    @property
    def failed(self) -> list[Verdict]:
        return [v for v in self.verdicts if not v.passed]

    @property
    def exit_code(self) -> int:
        return 1 if self.failed or (self.strict and self.only_new) else 0

    def render(self) -> str:
        parts = [f"OLD: {self.old.describe()}\nNEW: {self.new.describe()}"]
        for verdict in self.verdicts:
            parts.append("\n".join([verdict.render(), *(f"warning: {w}" for w in verdict.warnings)]))
        only = [f"only in OLD: {entry}" for entry in self.only_old]
        failing = " (fails: --strict)" if self.strict else ""
        only += [f"only in NEW: {entry}{failing}" for entry in self.only_new]
        if only:
            parts.append("\n".join(only))
        parts.append(self.tally())
        return "\n\n".join(parts)

    def tally(self) -> str:
        compared = [v for v in self.verdicts if v.checks or v.failure]
        counts = {
            "failed": len(self.failed),
            "passed": len(compared) - len(self.failed),
            "not compared": len(self.verdicts) - len(compared),
            "only in OLD": len(self.only_old),
            "only in NEW": len(self.only_new),
        }
        return ", ".join(f"{count} {label}" for label, count in counts.items() if count) or "no scenarios"


def compare_paths(old: Path, new: Path, tolerance_lines: Sequence[str] = (), strict: bool = False) -> Outcome:
    """Raises ``InputError`` for input that cannot be compared, and ``BudgetError`` for bad tolerances."""
    tolerances = parse_tolerances(parse_assignments(tolerance_lines, "tolerances"), "tolerances")
    old_side, new_side = read_side(old, "OLD"), read_side(new, "NEW")
    pairs, only_old, only_new = pair(old_side, new_side)
    verdicts = [judge_pair(before, after, tolerances) for before, after in pairs]
    return Outcome(old_side, new_side, verdicts, only_old, only_new, strict)
