"""The ``mlestimate`` fixture: estimate a model defined in Python code inside an ordinary test and hold
it to budgets, reported like a YAML scenario."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytest

from pytest_mlestimate.api import estimate_model
from pytest_mlestimate.core.errors import DeviceUnavailableError, EstimateError, brief
from pytest_mlestimate.estimates.estimate import Estimate
from pytest_mlestimate.plugin.items import SETTINGS, relative_file
from pytest_mlestimate.plugin.settings import settings_from_config
from pytest_mlestimate.reports.record import RECORDS, fill_record, metric_properties, new_record
from pytest_mlestimate.scenarios.scenario import ScenarioError
from pytest_mlestimate.verdicts.baseline import anchored, parse_tolerances
from pytest_mlestimate.verdicts.budgets import Budget, BudgetError, merge_budgets, parse_budgets
from pytest_mlestimate.verdicts.verdict import judge

MARKER = "mlestimate"
MARKER_EXAMPLE = '@pytest.mark.mlestimate(peak_gpu_memory="14 GiB", forward_pass="200 ms")'


def _where(item: pytest.Item) -> str:
    return f"{relative_file(item.config, item.path)}:{(item.location[1] or 0) + 1}"


def marker_budgets(item: pytest.Item) -> list[Budget]:
    """The budgets of ``@pytest.mark.mlestimate`` on the test, its class and its module: per metric, the
    marker closest to the test wins."""
    limits: dict[str, Any] = {}
    budgets: list[Budget] = []
    problems = []
    for marker in reversed(list(item.iter_markers(MARKER))):
        if marker.args:
            problems.append(f"positional argument(s) {brief(marker.args)}: budgets are keywords, e.g. {MARKER_EXAMPLE}")
        limits.update(marker.kwargs)
    try:
        budgets = parse_budgets(limits, field="")
    except BudgetError as exc:
        problems.extend(exc.problems)
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        pytest.fail(f"{_where(item)}: {item.name}: invalid budgets in @pytest.mark.{MARKER}:\n{lines}", False)
    return budgets


class ModelEstimator:
    """``mlestimate(factory, scenario, budgets={...})`` -> ``Estimate``; fails the test over budget.

    The test's ``@pytest.mark.mlestimate(metric=limit, ...)`` budgets apply to every estimate; a budget passed
    to the call replaces the marker's on the same metric and direction.
    """

    def __init__(self, item: pytest.Item) -> None:
        self.item = item
        config = item.config
        if SETTINGS not in config.stash:
            config.stash[SETTINGS] = settings_from_config(config)
        self.settings = config.stash[SETTINGS]
        self.marked = marker_budgets(item)

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
        where = _where(item)
        try:
            own = parse_budgets(dict(budgets or {}))
            own_tolerances = parse_tolerances(dict(tolerances or {}))
        except BudgetError as exc:
            pytest.fail(f"{where}: {name}: invalid budgets:\n" + "\n".join(f"  - {p}" for p in exc.problems), False)
        try:
            estimate = estimate_model(model_factory, scenario, self.settings.price)
        except ScenarioError as exc:
            pytest.fail(f"{where}: {name}: invalid scenario:\n" + "\n".join(f"  - {p}" for p in exc.problems), False)
        except DeviceUnavailableError as exc:
            pytest.skip(str(exc))
        except EstimateError as exc:
            pytest.fail(f"{where}: {name} could not be measured: {exc}", False)
        verdict = judge(
            estimate,
            merge_budgets(merge_budgets(self.settings.budgets, self.marked), own),
            own_tolerances,
            self.settings,
            anchored(item.path),
            name,
            where,
            lambda: estimate_model(model_factory, scenario, self.settings.price),
        )
        record = new_record(name, file, line, item.nodeid)
        fill_record(record, estimate, verdict)
        item.stash.setdefault(RECORDS, []).append(record)
        item.user_properties.extend(metric_properties(estimate))
        if not verdict.passed:
            pytest.fail(verdict.render(), pytrace=False)
        return estimate
