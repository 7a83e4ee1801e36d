"""Baselines: the runs of an earlier measurement, kept as one small JSON file per scenario.

A baseline holds several fresh-process runs of a scenario, each with its figures and raw samples, so that
a comparison knows the noise between processes (``regression.py`` judges). It is only comparable on the
environment it was measured on (GPU model, driver, CUDA, torch, torchvision, CPU model, usable CPUs and
threads) and for the same scenario; otherwise the comparison is skipped with a warning that says what
differs.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_mlestimate.errors import brief
from pytest_mlestimate.metrics import METRIC
from pytest_mlestimate.plugin.budgets import Check
from pytest_mlestimate.regression import DRIFT_FLOOR, Change, Run, compare_runs

BASELINE_FORMAT = 2
FINGERPRINT_KEYS = ("gpu", "driver", "cuda", "torch", "torchvision", "cpu", "cpus", "threads")
PROJECT_MARKERS = (".git", "pyproject.toml", "pytest.ini", "tox.ini", "setup.cfg", "setup.py")


def anchored(scenario_file: Path) -> str:
    """The scenario file's path from its project's root (the nearest folder above it with a ``.git`` or a
    Python project file), so that neither the folder pytest runs from nor the paths it is given move it."""
    path = scenario_file.resolve()
    for folder in path.parents:
        if any((folder / marker).exists() for marker in PROJECT_MARKERS):
            return path.relative_to(folder).as_posix()
    return path.name


def baseline_path(root: Path, file: str, name: str) -> Path:
    """``scenarios/gpu.yaml`` + ``frcnn-b4`` -> ``ROOT/scenarios/gpu/frcnn-b4.json``."""
    stem = Path(file).with_suffix("")
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name)
    return root / stem / f"{safe}.json"


def save_baseline(
    root: Path, file: str, name: str, scenario: Mapping[str, Any], environment: Mapping[str, Any], runs: Sequence[Run]
) -> Path:
    path = baseline_path(root, file, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "format": BASELINE_FORMAT,
        "scenario": dict(scenario),
        "environment": dict(environment),
        "runs": [run.to_dict() for run in runs],
    }
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
    return path


@dataclass
class Comparison:
    path: Path
    changes: list[Change] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    missing: bool = False
    """No baseline file for this scenario: nothing was compared."""

    @property
    def checks(self) -> list[Check]:
        return [Check.of_change(change) for change in self.changes]

    @property
    def baselines(self) -> dict[str, float]:
        return {change.metric: change.baseline for change in self.changes}

    @property
    def suspects(self) -> list[Change]:
        return [c for c in self.changes if c.suspect and METRIC[c.metric].noise == "timing"]


def _differences(old: Mapping[str, Any], new: Mapping[str, Any], keys: tuple[str, ...] | None = None) -> list[str]:
    names = keys or tuple(sorted(set(old) | set(new)))
    return [f"{k} {brief(old.get(k))} -> {brief(new.get(k))}" for k in names if old.get(k) != new.get(k)]


def compare(
    root: Path,
    file: str,
    name: str,
    scenario: Mapping[str, Any],
    environment: Mapping[str, Any],
    runs: Sequence[Run],
    tolerances: Mapping[str, float],
) -> Comparison:
    """Regression checks of the new ``runs`` against the baseline's runs."""
    path = baseline_path(root, file, name)
    result = Comparison(path)
    try:
        saved = json.loads(path.read_text())
    except FileNotFoundError:
        result.missing = True
        result.warnings.append(f"no baseline for this scenario at {path}: not compared")
        return result
    except (OSError, ValueError) as exc:
        result.warnings.append(f"baseline {path} is unreadable ({exc}): not compared")
        return result
    if not isinstance(saved, dict) or saved.get("format") != BASELINE_FORMAT:
        found = saved.get("format") if isinstance(saved, dict) else None
        result.warnings.append(
            f"baseline {path} has format {brief(found)}, this version reads format {BASELINE_FORMAT}: not compared "
            "(save it again with --mlestimate-save-baseline)"
        )
        return result
    changed_env = _differences(saved.get("environment", {}), environment, FINGERPRINT_KEYS)
    if changed_env:
        result.warnings.append(f"baseline not compared: the environment differs ({'; '.join(changed_env)})")
        return result
    changed_scenario = _differences(saved.get("scenario", {}), scenario)
    if changed_scenario:
        result.warnings.append(f"baseline not compared: the scenario changed ({'; '.join(changed_scenario)})")
        return result
    try:
        old_runs = [Run.from_dict(run) for run in saved.get("runs") or []]
    except (TypeError, ValueError, AttributeError) as exc:
        result.warnings.append(f"baseline {path} has unreadable runs ({exc}): not compared")
        return result
    kind = "cuda" if str(environment.get("device") or "").startswith("cuda") else "cpu"
    result.changes = compare_runs(old_runs, runs, tolerances, floor=DRIFT_FLOOR[kind])
    if len(old_runs) < 2:
        result.warnings.append(
            f"baseline {path} holds {len(old_runs)} run: the noise between processes is unknown, so timing "
            "verdicts rest on one run's own spread; save it with --mlestimate-baseline-runs 5"
        )
    if runs and all(run.contended for run in runs):
        result.warnings.append("baseline timings not judged: every measurement of this run was contended")
    return result


def parse_tolerances(raw: object, field: str = "tolerances") -> dict[str, float]:
    """``{"forward_pass": "20 %"}`` -> ``{"forward_pass": 0.2}``."""
    from pytest_mlestimate.plugin.budgets import BudgetError, shown_key, unknown_metric
    from pytest_mlestimate.units import UnitError, parse_fraction

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
