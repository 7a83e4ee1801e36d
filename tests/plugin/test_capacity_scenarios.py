"""Scenarios that ask for their capacity: ``capacity:`` and budgets on ``max_batch_size``, with real profiles."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import jsonschema
import pytest

from tests.plugin.conftest import RunResult, by_name, scenario_file

SCHEMA = json.loads((Path(__file__).parents[2] / "pytest_mlestimate" / "report.schema.json").read_text())
SEARCH = {"limit": "64 GiB", "batch_sizes": [1, 2], "up_to": 4}
"""64 GiB holds any batch up to 4 of the tiny model: the search must end at 4, confirmed by a profile."""


def test_a_budget_on_the_largest_batch_passes_or_fails_with_its_row(
    pytester: pytest.Pytester, run_scenarios: Callable[..., RunResult]
) -> None:
    pytester.makefile(
        ".yaml",
        scenarios=scenario_file(
            {"name": "roomy", "capacity": SEARCH, "budgets": {"max_batch_size": ">= 4"}},
            {"name": "greedy", "capacity": SEARCH, "budgets": {"max_batch_size": ">= 8"}},
        ),
    )
    result, report = run_scenarios()

    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*scenario 'greedy' (scenarios.yaml:4): max_batch_size broke its limit: measured 4, limit >= 8",
            "max_batch_size*4*>= 8*FAILED",
        ]
    )
    result.stdout.fnmatch_lines(["scenario*result*max batch*budgets", "roomy*passed*4*1/1 ok"])
    jsonschema.validate(report, SCHEMA)
    roomy = by_name(report)["roomy"]
    assert roomy["capacity"]["Max Batch Size"] == 4
    assert roomy["capacity"]["search"]["confirmed"] is True
    assert [p["batch_size"] for p in roomy["capacity"]["fit"]["points"]] == [1, 2, 4]
    assert all(p["fits"] for p in roomy["capacity"]["fit"]["points"])
    (check,) = roomy["budgets"]
    assert (check["metric"], check["kind"], check["value"], check["passed"]) == ("max_batch_size", "min", 4, True)
    # the second scenario has the same profiles: it recalled every one of them
    assert by_name(report)["greedy"]["capacity"]["search"]["profiles"] == 0


def test_bad_capacity_requests_are_errors_at_their_line_and_the_others_run(
    pytester: pytest.Pytester, run_scenarios: Callable[..., RunResult]
) -> None:
    pytester.makefile(
        ".yaml",
        scenarios=scenario_file(
            {"name": "fine"},
            {"name": "wrong-unit", "capacity": {"limit": "16 ms"}},
            {"name": "zero", "capacity": {"batch_sizes": [0, 2]}},
            {"name": "typo", "capacity": {"limt": "1 GiB"}},
            {"name": "budget-text", "budgets": {"max_batch_size": ">= many"}},
        ),
    )
    result, report = run_scenarios()

    result.assert_outcomes(passed=1, errors=4)
    result.stdout.fnmatch_lines_random(
        [
            "*scenarios.yaml:4: capacity.limit: '16 ms': 'ms' is a unit of seconds, not bytes*",
            "*scenarios.yaml:5: capacity.batch_sizes: 0 is not a batch size; allowed: a list of 2 to 8*",
            "*scenarios.yaml:6: capacity.'limt': unknown field; allowed: limit, headroom, batch_sizes*",
            "*budgets.max_batch_size: 'many' is not a count; write a whole number*",
        ]
    )
    jsonschema.validate(report, SCHEMA)
    assert by_name(report)["fine"]["capacity"] is None
