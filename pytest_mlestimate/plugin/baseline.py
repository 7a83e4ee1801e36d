"""Baselines: the figures of an earlier run, kept as one small JSON file per scenario, and the regression
checks against them.

A baseline is only comparable on the environment it was measured on (GPU model, driver, CUDA, torch,
torchvision, CPU) and for the same scenario; otherwise the comparison is skipped with a warning that
says what differs.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_mlestimate.plugin.budgets import Check, lower_is_worse
from pytest_mlestimate.result import METRIC_UNITS

BASELINE_FORMAT = 1
FINGERPRINT_KEYS = ("gpu", "driver", "cuda", "torch", "torchvision", "cpu")
DEFAULT_TOLERANCES = {"bytes": 0.05, "percent": 0.25, "seconds": 0.15}
"""Relative change allowed before a regression: tight for memory, which is deterministic for a given
scenario and environment, looser for time and utilisation, which move with the machine's load."""


def baseline_path(root: Path, file: str, name: str) -> Path:
    """``scenarios/gpu.yaml`` + ``frcnn-b4`` -> ``ROOT/scenarios/gpu/frcnn-b4.json``."""
    stem = Path(file).with_suffix("")
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name)
    return root / stem / f"{safe}.json"


def save_baseline(root: Path, file: str, name: str, measured: Mapping[str, Any]) -> Path:
    path = baseline_path(root, file, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"format": BASELINE_FORMAT, **measured}
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
    return path


@dataclass
class Comparison:
    checks: list[Check] = field(default_factory=list)
    baselines: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def _differences(old: Mapping[str, Any], new: Mapping[str, Any], keys: tuple[str, ...] | None = None) -> list[str]:
    names = keys or tuple(sorted(set(old) | set(new)))
    return [f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in names if old.get(k) != new.get(k)]


def compare(
    root: Path,
    file: str,
    name: str,
    measured: Mapping[str, Any],
    tolerances: Mapping[str, float],
) -> Comparison:
    """Regression checks of ``measured`` (scenario, environment, metrics, spread) against the baseline."""
    path = baseline_path(root, file, name)
    result = Comparison()
    try:
        saved = json.loads(path.read_text())
    except FileNotFoundError:
        result.warnings.append(f"no baseline for this scenario at {path}: not compared")
        return result
    except (OSError, ValueError) as exc:
        result.warnings.append(f"baseline {path} is unreadable ({exc}): not compared")
        return result
    if not isinstance(saved, dict) or saved.get("format") != BASELINE_FORMAT:
        result.warnings.append(f"baseline {path} has an unknown format: not compared")
        return result
    changed_env = _differences(saved.get("environment", {}), measured["environment"], FINGERPRINT_KEYS)
    if changed_env:
        result.warnings.append(f"baseline not compared: the environment differs ({'; '.join(changed_env)})")
        return result
    changed_scenario = _differences(saved.get("scenario", {}), measured["scenario"])
    if changed_scenario:
        result.warnings.append(f"baseline not compared: the scenario changed ({'; '.join(changed_scenario)})")
        return result
    old_metrics, old_spread = saved.get("metrics", {}), saved.get("spread", {})
    for metric, value in measured["metrics"].items():
        base = old_metrics.get(metric)
        if base is None or value is None or metric not in METRIC_UNITS:
            continue
        result.baselines[metric] = base
        tolerance = tolerances.get(metric, DEFAULT_TOLERANCES[METRIC_UNITS[metric]])
        noise = (measured["spread"].get(metric) or 0.0) + (old_spread.get(metric) or 0.0)
        allowance = max(tolerance * abs(base), noise)
        threshold = base - allowance if lower_is_worse(metric) else base + allowance
        result.checks.append(Check(metric, "regression", threshold, value, base))
    return result


def parse_tolerances(raw: object, field: str = "tolerances") -> dict[str, float]:
    """``{"forward_pass": "20 %"}`` -> ``{"forward_pass": 0.2}``."""
    from pytest_mlestimate.plugin.budgets import BudgetError, unknown_metric
    from pytest_mlestimate.plugin.units import UnitError, parse_fraction

    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise BudgetError([f"{field}: expected a mapping of metric -> percentage, got {raw!r}"])
    found, problems = {}, []
    for metric, text in raw.items():
        if metric not in METRIC_UNITS:
            problems.append(f"{field}.{metric}: {unknown_metric(str(metric))}")
            continue
        try:
            found[metric] = parse_fraction(text)
        except UnitError as exc:
            problems.append(f"{field}.{metric}: {exc}")
    if problems:
        raise BudgetError(problems)
    return found
