"""Baselines: the runs of an earlier measurement, kept as one small JSON file per scenario.

A baseline holds several fresh-process runs of a scenario, each with its figures and raw samples, so that
a comparison knows the noise between processes (``regression.py`` judges), and its figures per module of the
model (``breakdown``), so that a failed verdict can say which modules grew (``explain.py``).

It is only comparable on the environment it was measured on (GPU model, driver, CUDA, torch, torchvision,
CPU model, usable CPUs and threads) and for the same scenario; otherwise the comparison is skipped with a
warning that says what differs.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pytest_mlestimate.core.errors import brief
from pytest_mlestimate.core.metrics import METRIC
from pytest_mlestimate.stores.baseline_folder import (
    BaselineError,
    baseline_path,
    load_document,
)
from pytest_mlestimate.stores.interfaces import baseline_store_at
from pytest_mlestimate.verdicts.budgets import Check
from pytest_mlestimate.verdicts.regression import DRIFT_FLOOR, Change, Run, compare_runs
from pytest_mlestimate.verdicts.run_environment import described_differences, device_kind

NOT_COMPARED = frozenset({"breakdown_depth"})
"""Scenario fields that change no documented figure (how deep the breakdown looks): two measurements that differ
only in them compare, and a baseline saved before such a field existed still does."""
PROJECT_MARKERS = (".git", "pyproject.toml", "pytest.ini", "tox.ini", "setup.cfg", "setup.py")


def anchored(scenario_file: Path) -> str:
    """The scenario file's path from its project's root (the nearest folder above it with a ``.git`` or a
    Python project file), so that neither the folder pytest runs from nor the paths it is given move it."""
    path = scenario_file.resolve()
    for folder in path.parents:
        if any((folder / marker).exists() for marker in PROJECT_MARKERS):
            return path.relative_to(folder).as_posix()
    return path.name


def baseline_key(file: str, name: str) -> str:
    """Where a scenario's baseline lies inside any baseline folder: ``scenarios/gpu/frcnn-b4.json``."""
    return baseline_path(Path(), file, name).as_posix()


def save_baseline(
    root: Path, file: str, name: str, scenario: Mapping[str, Any], environment: Mapping[str, Any], runs: Sequence[Run]
) -> Path:
    document = {
        "name": name,
        "file": file,
        "scenario": dict(scenario),
        "environment": dict(environment),
        "runs": [run.to_dict() for run in runs],
    }
    return baseline_store_at(root).save(file, name, document)


@dataclass(frozen=True)
class SavedBaselines:
    """What ``--mlestimate-save-baseline`` wrote in a run, read from the scenarios' records, for the terminal."""

    folder: Path | None
    """The folder asked for; None without --mlestimate-save-baseline (then there is nothing to say)."""
    files: tuple[Path, ...] = ()
    runs: tuple[int, ...] = ()
    unsaved: tuple[str, ...] = ()
    """Scenarios with nothing saved: skipped, not measurable, or did not fit."""

    SHOWN = 6

    @classmethod
    def of(cls, records: Iterable[Mapping[str, Any]], folder: Path | None) -> SavedBaselines:
        files, runs, unsaved = [], [], []
        for record in records:
            baseline = record.get("baseline") or {}
            if baseline.get("status") == "saved":
                files.append(Path(baseline["path"]))
                runs.append(int(baseline.get("runs") or 0))
            else:
                unsaved.append(str(record.get("name")))
        return cls(folder, tuple(files), tuple(runs), tuple(unsaved))

    def lines(self, start: Path | None = None) -> list[str]:
        """``baseline saved: 3 scenarios, 5 runs each, in baseline/scenarios/ (cpu/a.json, gpu/b.json, ...)``;
        folders are shown from ``start`` (where pytest was run) when they lie under it."""
        if self.folder is None:
            return []
        found = []
        if self.files:
            common = Path(os.path.commonpath([f.parent for f in self.files]))
            names = [f.relative_to(common).as_posix() for f in sorted(self.files)]
            found.append(
                f"baseline saved: {_count(len(self.files), 'scenario')}, {self._runs_text()}, "
                f"in {_shown(common, start)}/ ({_listed(names, self.SHOWN)})"
            )
        else:
            found.append(f"baseline saved: nothing, in {_shown(self.folder, start)}/")
        if self.unsaved:
            found.append(
                f"baseline not saved for {_count(len(self.unsaved), 'scenario')} (skipped, not measured or did not "
                f"fit): {_listed(list(self.unsaved), self.SHOWN)}"
            )
        return found

    def _runs_text(self) -> str:
        low, high = min(self.runs), max(self.runs)
        if low != high:
            return f"{low} to {high} runs each"
        return _count(low, "run") + (" each" if len(self.runs) > 1 else "")


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")


def _listed(names: list[str], shown: int) -> str:
    more = len(names) - shown
    return ", ".join(names[:shown]) + (f" and {more} more" if more > 0 else "")


def _shown(path: Path, start: Path | None) -> str:
    if start is not None and path.is_relative_to(start):
        return path.relative_to(start).as_posix()
    return path.as_posix()


@dataclass(frozen=True)
class Measured:
    """One side of a comparison: a scenario's runs, the scenario and the environment they were measured on."""

    scenario: Mapping[str, Any]
    environment: Mapping[str, Any]
    runs: Sequence[Run]
    source: str = "this run"
    """What the runs come from, as warnings name it: ``baseline PATH``, ``report PATH``, ``this run``."""
    name: str | None = None
    file: str | None = None
    """The scenario's name and file, where the source keeps them (older baseline files do not)."""

    @property
    def has_samples(self) -> bool:
        return any(run.samples for run in self.runs)


def read_baseline(path: Path) -> Measured:
    """The saved runs of one baseline file; ``FileNotFoundError`` when there is none."""
    return measured_of(load_document(path), path)


def measured_of(saved: Mapping[str, Any], path: Path) -> Measured:
    """A saved baseline document as the runs it holds; ``BaselineError`` for runs that cannot be read."""
    try:
        runs = [Run.from_dict(run) for run in saved.get("runs") or []]
    except (TypeError, ValueError, AttributeError) as exc:
        raise BaselineError(f"baseline {path} has unreadable runs ({exc}): not compared") from None
    name, file = saved.get("name"), saved.get("file")
    return Measured(
        saved.get("scenario") or {},
        saved.get("environment") or {},
        runs,
        f"baseline {path}",
        name if isinstance(name, str) else None,
        file if isinstance(file, str) else None,
    )


@dataclass
class Comparison:
    path: Path
    changes: list[Change] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    missing: bool = False
    """No baseline file for this scenario: nothing was compared."""
    baseline_runs: Sequence[Run] = ()
    """The baseline's runs, where they were compared."""
    undecided: dict[str, str] = field(default_factory=dict)
    """Timings this comparison cannot decide, and why: a one-run baseline, or new runs all contended. Unless
    found regressed, their checks are inconclusive, never passed."""

    @property
    def checks(self) -> list[Check]:
        found = []
        for change in self.changes:
            check = Check.of_change(change)
            if change.metric in self.undecided and not change.regressed:
                check = replace(check, decision="inconclusive")
            found.append(check)
        return found

    def leave_undecided(self, metrics: Iterable[str], why: str) -> None:
        regressed = {c.metric for c in self.changes if c.regressed}
        for metric in metrics:
            if metric not in self.undecided and metric not in regressed:
                self.undecided[metric] = why
                self.warnings.append(f"baseline check of {metric} inconclusive: {why}")

    @property
    def baselines(self) -> dict[str, float]:
        return {change.metric: change.baseline for change in self.changes}

    def wants_another_run(self, runs: Sequence[Run]) -> bool:
        """A suspected timing regression, or any change on a contended run: judge it on one more run."""
        return bool(self.suspects or (self.changes and runs and runs[0].contended))

    @property
    def suspects(self) -> list[Change]:
        return [c for c in self.changes if c.suspect and METRIC[c.metric].noise == "timing"]


def comparable(scenario: Mapping[str, Any]) -> dict[str, Any]:
    """The scenario fields that decide whether two measurements compare."""
    return {key: value for key, value in scenario.items() if key not in NOT_COMPARED}


def compare(
    root: Path,
    file: str,
    name: str,
    scenario: Mapping[str, Any],
    environment: Mapping[str, Any],
    runs: Sequence[Run],
    tolerances: Mapping[str, float],
) -> Comparison:
    """Regression checks of the new ``runs`` against the scenario's baseline under ``root``."""
    store = baseline_store_at(root)
    path = store.path_of(file, name)
    try:
        saved = measured_of(store.load(path), path)
    except FileNotFoundError:
        return Comparison(path, warnings=[f"no baseline for this scenario at {path}: not compared"], missing=True)
    except BaselineError as exc:
        return Comparison(path, warnings=[str(exc)])
    return compare_measured(saved, Measured(scenario, environment, runs), tolerances, path)


def compare_measured(old: Measured, new: Measured, tolerances: Mapping[str, float], path: Path) -> Comparison:
    """The one comparison of two sets of runs, for the plugin and ``mlestimate compare`` alike: only on the
    same environment and scenario, then ``regression.compare_runs``."""
    result = Comparison(path)
    changed_env = described_differences(old.environment, new.environment)
    if changed_env:
        result.warnings.append(f"baseline not compared: the environment differs ({'; '.join(changed_env)})")
        return result
    fields_old, fields_new = comparable(old.scenario), comparable(new.scenario)
    changed_scenario = described_differences(fields_old, fields_new, sorted(set(fields_old) | set(fields_new)))
    if changed_scenario:
        result.warnings.append(f"baseline not compared: the scenario changed ({'; '.join(changed_scenario)})")
        return result
    floor = DRIFT_FLOOR[device_kind(new.environment)]
    result.changes = compare_runs(old.runs, new.runs, tolerances, floor=floor)
    result.baseline_runs = old.runs
    timings = [c.metric for c in result.changes if METRIC[c.metric].noise == "timing"]
    if len(old.runs) < 2:
        result.warnings.append(_noise_unknown(old, new, floor))
        result.leave_undecided(timings, f"{old.source} holds one run")
    if new.runs and all(run.contended for run in new.runs):
        result.warnings.append(f"baseline timings not judged: every measurement of {new.source} was contended")
        shown = contended_timings(old.runs, new.runs, tolerances)
        result.changes += shown
        result.leave_undecided((c.metric for c in shown), "every new measurement was contended")
    return result


def contended_timings(old: Sequence[Run], new: Sequence[Run], tolerances: Mapping[str, float]) -> list[Change]:
    """The timings of contended runs as changes to show (their figures describe the neighbours, not the model):
    each is inconclusive, never a pass."""
    found = []
    for name, metric in METRIC.items():
        before = [v for r in old if (v := r.metrics.get(name))]
        after = [v for r in new if (v := r.metrics.get(name))]
        if metric.noise == "timing" and before and after:
            base = sum(before) / len(before)
            limit = base * (1 + tolerances.get(name, metric.tolerance))
            found.append(Change(name, base, sum(after) / len(after), limit, regressed=False, runs=(len(old), len(new))))
    return found


def _noise_unknown(old: Measured, new: Measured, floor: float) -> str:
    if old.has_samples or new.has_samples:
        rests_on = "one run's own spread"
    elif len(new.runs) > 1:
        rests_on = f"the spread of the {len(new.runs)} new runs, never below {floor:.0%}"
    else:
        rests_on = f"an assumed {floor:.0%} spread between runs (neither side kept samples)"
    advice = "save it" if old.has_samples else "compare against a baseline saved"
    return (
        f"{old.source} holds {len(old.runs)} run: the noise between processes is unknown, so timing verdicts rest "
        f"on {rests_on}; {advice} with --mlestimate-baseline-runs 5"
    )


def parse_tolerances(raw: object, field: str = "tolerances") -> dict[str, float]:
    """``{"forward_pass": "20 %"}`` -> ``{"forward_pass": 0.2}``."""
    from pytest_mlestimate.core.units import UnitError, parse_fraction
    from pytest_mlestimate.verdicts.budgets import BudgetError, shown_key, unknown_metric

    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise BudgetError([f"{field}: expected a mapping of metric -> percentage, got {brief(raw)}"])
    found, problems = {}, []
    for metric, text in raw.items():
        if metric not in METRIC:
            problems.append(f"{field}.{shown_key(metric)}: {unknown_metric(metric)}")
            continue
        try:
            found[metric] = parse_fraction(text)
        except UnitError as exc:
            problems.append(f"{field}.{shown_key(metric)}: {exc}")
    if problems:
        raise BudgetError(problems)
    return found
