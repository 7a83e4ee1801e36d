"""The ``mlestimate`` fixture: estimate a model defined in Python code inside an ordinary test and hold
it to budgets, reported like a YAML scenario."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytest

from pytest_mlestimate.api import estimate_model
from pytest_mlestimate.errors import DeviceUnavailableError, EstimateError
from pytest_mlestimate.plugin.baseline import anchored, parse_tolerances
from pytest_mlestimate.plugin.budgets import BudgetError, merge_budgets, parse_budgets
from pytest_mlestimate.plugin.items import SETTINGS, relative_file
from pytest_mlestimate.plugin.record import RECORDS, fill_record, metric_properties, new_record
from pytest_mlestimate.plugin.settings import Settings
from pytest_mlestimate.plugin.verdict import judge
from pytest_mlestimate.result import Estimate
from pytest_mlestimate.scenario import ScenarioError


class ModelEstimator:
    """``mlestimate(factory, scenario, budgets={...})`` -> ``Estimate``; fails the test over budget."""

    def __init__(self, item: pytest.Item) -> None:
        self.item = item
        config = item.config
        if SETTINGS not in config.stash:
            config.stash[SETTINGS] = Settings.from_config(config)
        self.settings = config.stash[SETTINGS]

    def __call__(
        self,
        model_factory: Callable[[], Any],
        scenario: Mapping[str, Any],
        *,
        budgets: Mapping[str, Any] | None = None,
        tolerances: Mapping[str, str] | None = None,
        name: str | None = None,
    ) -> Estimate:
        item = self.item
        file = relative_file(item.config, item.path)
        line = (item.location[1] or 0) + 1
        name = name or item.name
        where = f"{file}:{line}"
        try:
            own = parse_budgets(dict(budgets or {}))
            own_tolerances = parse_tolerances(dict(tolerances or {}))
        except BudgetError as exc:
            pytest.fail(f"{where}: {name}: invalid budgets:\n" + "\n".join(f"  - {p}" for p in exc.problems), False)
        try:
            estimate = estimate_model(model_factory, scenario)
        except ScenarioError as exc:
            pytest.fail(f"{where}: {name}: invalid scenario:\n" + "\n".join(f"  - {p}" for p in exc.problems), False)
        except DeviceUnavailableError as exc:
            pytest.skip(str(exc))
        except EstimateError as exc:
            pytest.fail(f"{where}: {name} could not be measured: {exc}", False)
        verdict = judge(
            estimate,
            merge_budgets(self.settings.budgets, own),
            own_tolerances,
            self.settings,
            anchored(item.path),
            name,
            where,
            lambda: estimate_model(model_factory, scenario),
        )
        record = new_record(name, file, line, item.nodeid)
        fill_record(record, estimate, verdict)
        item.stash.setdefault(RECORDS, []).append(record)
        item.user_properties.extend(metric_properties(estimate))
        if not verdict.passed:
            pytest.fail(verdict.render(), pytrace=False)
        return estimate
