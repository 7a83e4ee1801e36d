"""The ``mlestimate`` fixture: a model defined in Python, held to budgets inside an ordinary test."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.plugin.conftest import TINY, RunResult, by_name

TEST_FILE = f"""
from pytest_mlestimate.tiny import tiny_detector

SCENARIO = {{k: v for k, v in {TINY!r}.items() if k != "architecture"}}


def test_fits(mlestimate):
    estimate = mlestimate(tiny_detector, SCENARIO, budgets={{"peak_ram_memory": "64 GiB"}})
    assert estimate.metrics()["forward_pass"] > 0


def test_too_slow(mlestimate):
    mlestimate(lambda: tiny_detector(channels=8), SCENARIO, budgets={{"forward_pass": "1 us"}}, name="slow model")


def test_bad_budget(mlestimate):
    mlestimate(tiny_detector, SCENARIO, budgets={{"forward_pass": "quick"}})
"""


def test_fixture_checks_budgets_and_reports_like_a_scenario(
    pytester: pytest.Pytester, run_scenarios: Callable[..., RunResult]
) -> None:
    pytester.makepyfile(test_models=TEST_FILE)
    result, report = run_scenarios("-p", "no:randomly")
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines_random(
        [
            "scenario 'slow model' (test_models.py:*): forward_pass broke its limit: measured *, limit <= 1 us",
            "forward_pass*<= 1 us*FAILED",
            "test_models.py:*: test_bad_budget: invalid budgets:",
            "  - budgets.forward_pass: 'quick' is not a quantity; *",
        ]
    )
    assert "Traceback" not in result.stdout.str()
    entries = by_name(report)
    assert entries["test_fits"]["outcome"] == "passed"
    assert entries["slow model"]["outcome"] == "failed"
    assert entries["slow model"]["budgets"][0]["metric"] == "forward_pass"


def test_fixture_works_without_the_flag(pytester: pytest.Pytester, cached: object) -> None:
    pytester.makepyfile(test_models=TEST_FILE)
    result = pytester.runpytest_inprocess("-k", "fits", "-W", "ignore::pytest.PytestAssertRewriteWarning")
    result.assert_outcomes(passed=1, deselected=2)
