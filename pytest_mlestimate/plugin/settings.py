"""The run's options, read once from the command line and the ini file."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pytest_mlestimate.errors import brief
from pytest_mlestimate.plugin.baseline import parse_tolerances
from pytest_mlestimate.plugin.budgets import Budget, BudgetError, parse_assignments, parse_budgets
from pytest_mlestimate.pricing import Price, PriceError, price_from


@dataclass(frozen=True)
class Settings:
    rootdir: Path
    budgets: list[Budget] = field(default_factory=list)
    tolerances: dict[str, float] = field(default_factory=dict)
    cache: bool = True
    refresh: bool = False
    timeout: float | None = None
    compare_dir: Path | None = None
    save_dir: Path | None = None
    baseline_runs: int = 5
    """Fresh-process runs a saved baseline holds: enough to know the noise between processes."""
    strict_baseline: bool = False
    price: Price | None = None
    """The price of scenarios that set none (ini mlestimate_price_per_device_hour, mlestimate_price_per_kwh)."""

    @classmethod
    def from_config(cls, config: pytest.Config) -> Settings:
        option = config.option
        budget_lines = list(config.getini("mlestimate_budgets")) + list(option.mlestimate_budget or [])
        tolerance_lines = list(config.getini("mlestimate_tolerances")) + list(option.mlestimate_tolerance or [])
        try:
            budgets = parse_budgets(parse_assignments(budget_lines, "default budgets"), "default budgets")
            tolerances = parse_tolerances(parse_assignments(tolerance_lines, "tolerances"), "tolerances")
        except BudgetError as exc:
            raise pytest.UsageError("pytest-mlestimate: " + "; ".join(exc.problems)) from None
        timeout_text = option.mlestimate_timeout or config.getini("mlestimate_timeout")
        try:
            timeout = float(timeout_text) if timeout_text else None
        except ValueError:
            timeout = math.nan
        if timeout is not None and not (math.isfinite(timeout) and timeout > 0):
            raise pytest.UsageError(
                f"pytest-mlestimate: timeout {brief(timeout_text)} is not a positive number of seconds"
            )
        try:
            price = price_from(
                config.getini("mlestimate_price_per_device_hour"),
                config.getini("mlestimate_price_per_kwh"),
                ("mlestimate_price_per_device_hour", "mlestimate_price_per_kwh"),
            )
        except PriceError as exc:
            raise pytest.UsageError(f"pytest-mlestimate: {exc}") from None
        runs_text = option.mlestimate_baseline_runs
        if not runs_text.isdigit() or not 1 <= int(runs_text) <= 50:
            raise pytest.UsageError(f"pytest-mlestimate: --mlestimate-baseline-runs {brief(runs_text)} is not 1 to 50")
        return cls(
            rootdir=Path(config.rootpath),
            budgets=budgets,
            tolerances=tolerances,
            cache=not option.mlestimate_no_cache,
            refresh=option.mlestimate_refresh,
            timeout=timeout,
            compare_dir=_directory(config, option.mlestimate_compare),
            save_dir=_directory(config, option.mlestimate_save_baseline),
            baseline_runs=int(runs_text),
            strict_baseline=option.mlestimate_strict_baseline,
            price=price,
        )


def _directory(config: pytest.Config, value: str | None) -> Path | None:
    if not value:
        return None
    path = Path(value)
    return path if path.is_absolute() else Path(config.invocation_params.dir) / path
