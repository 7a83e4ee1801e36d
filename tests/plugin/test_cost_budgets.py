"""Prices from the ini file and budgets on cost and energy, end to end through pytest (profiles from the shared
cache)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import jsonschema
import pytest

from tests.plugin.conftest import RunResult, by_name, scenario_file

SCHEMA = json.loads((Path(__file__).parents[2] / "pytest_mlestimate" / "report.schema.json").read_text())


def test_the_ini_price_prices_scenarios_that_set_none(
    pytester: pytest.Pytester, run_scenarios: Callable[..., RunResult]
) -> None:
    pytester.makeini("[pytest]\nmlestimate_price_per_device_hour = 3600 USD\n")
    pytester.makefile(
        ".yaml",
        scenarios=scenario_file(
            {"name": "default", "budgets": {"cost_per_training": "1000000 USD"}},
            {"name": "tight", "budgets": {"cost_per_training": "0.000001 USD"}},
            {"name": "own", "price": {"device_hour": "1 EUR"}},
            {"name": "mismatch", "budgets": {"cost_per_training": "5 EUR"}},
        ),
    )
    result, report = run_scenarios()

    result.assert_outcomes(passed=2, failed=2)
    result.stdout.fnmatch_lines(["*tight*cost_per_training broke its limit*", "*mismatch*is in EUR but the price*"])
    # the summary table gains a cost column, in each scenario's currency; no energy column without a counter
    result.stdout.fnmatch_lines(["scenario*result*training*cost*budgets", "default*passed*USD*", "own*passed*EUR*"])
    assert not any(line.startswith("scenario ") and " energy " in line for line in result.stdout.lines)
    jsonschema.validate(report, SCHEMA)
    entries = by_name(report)
    default = entries["default"]
    # 3600 USD per hour: one USD per second of training
    assert default["cost"]["Cost per Training"] == pytest.approx(default["training_time"]["Total Training Time"])
    assert default["cost"]["Currency"] == "USD"
    assert default["energy"]["Reasons"]["GPU Energy per Step"].startswith("no GPU")
    assert entries["own"]["cost"]["Currency"] == "EUR"
    assert entries["tight"]["budgets"][0]["passed"] is False


def test_a_price_without_a_currency_is_a_usage_error(pytester: pytest.Pytester, cached: Path) -> None:
    pytester.makeini("[pytest]\nmlestimate_price_per_kwh = 0.30\n")
    pytester.makefile(".yaml", scenarios=scenario_file({"name": "any"}))
    result = pytester.runpytest_inprocess("--mlestimate")

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*mlestimate_price_per_kwh: '0.30' has no currency; write an amount and a 3-letter*"])
