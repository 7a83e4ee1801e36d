"""The run's options, read once from the command line and the ini file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pytest_mlestimate.core.errors import brief
from pytest_mlestimate.core.pricing import PriceError, price_from
from pytest_mlestimate.core.units import UnitError, parse_timeout
from pytest_mlestimate.stores.postgres import is_database_url, shown
from pytest_mlestimate.verdicts.baseline import parse_tolerances
from pytest_mlestimate.verdicts.budgets import BudgetError, parse_assignments, parse_budgets
from pytest_mlestimate.verdicts.settings import Settings


def settings_from_config(config: pytest.Config) -> Settings:
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
        timeout = parse_timeout(timeout_text) if timeout_text else None
    except UnitError as exc:
        raise pytest.UsageError(f"pytest-mlestimate: --mlestimate-timeout / mlestimate_timeout: {exc}") from None
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
    return Settings(
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
        strict=option.mlestimate_strict,
        price=price,
    )


def _directory(config: pytest.Config, value: str | None) -> Path | None:
    if not value:
        return None
    path = Path(value)
    return path if path.is_absolute() else Path(config.invocation_params.dir) / path


@dataclass(frozen=True)
class Placement:
    """Where the run measures its scenarios and keeps their profiles (``--mlestimate-ray``,
    ``--mlestimate-cache``)."""

    ray: str | None = None
    """The Ray cluster's address; None: measured on this machine."""
    cache_path: Path | str | None = None
    """The profile cache's sqlite file or database URL; None: the default cache."""

    def options(self, beside_base: bool) -> dict[str, Any]:
        """``estimate``'s options for a scenario; measured ``beside_base`` (against another commit, in turns with
        its profiles), it is measured on this machine, where the base commit is."""
        return {"ray": None if beside_base else self.ray, "cache_path": self.cache_path}

    @property
    def cache_shown(self) -> str:
        """The cache as the terminal names it: a database without its password."""
        if self.cache_path is None:
            from pytest_mlestimate.stores.profile_cache import default_cache_path

            return str(default_cache_path())
        return shown(self.cache_path) if is_database_url(self.cache_path) else str(self.cache_path)


PLACEMENT = pytest.StashKey[Placement]()


def placement_from_config(config: pytest.Config) -> Placement:
    option = config.option
    location = option.mlestimate_cache
    if location and option.mlestimate_no_cache:
        raise pytest.UsageError(
            "pytest-mlestimate: --mlestimate-cache names a profile cache and --mlestimate-no-cache keeps none: "
            "give one of them"
        )
    if is_database_url(location):
        return Placement(option.mlestimate_ray or None, location)
    folder = _directory(config, location)
    if folder is None:
        return Placement(option.mlestimate_ray or None, None)
    from pytest_mlestimate.stores.profile_cache import CACHE_FILE

    return Placement(option.mlestimate_ray or None, folder / CACHE_FILE)


def placement_of(config: pytest.Config) -> Placement:
    return config.stash.get(PLACEMENT, Placement())
