"""A non-finite number in a scenario file (YAML's .inf, .nan) is the scenario's error, named at validation: it used
to pass, then fail the measurement with pydantic's own words."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_inf_and_nan_are_invalid_scenarios(pytester: pytest.Pytester, cached: Path) -> None:
    pytester.makefile(
        ".yaml",
        scenarios="""
defaults: {task_type: detection, architecture: "pytest_mlestimate.tiny:tiny_detector", dataset_size: 10,
           batch_size: 2, image_size: [64, 64], device: cpu}
scenarios:
  - {name: infinite-lr, optimizer: {lr: .inf}}
  - {name: nan-precision, precision: .nan}
""",
    )
    result = pytester.runpytest_inprocess("--mlestimate", "-p", "no:cacheprovider")

    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(
        [
            "*scenarios.yaml:4: scenario 'infinite-lr' is invalid:",
            "  - optimizer.lr: not a finite number; allowed: a finite number (got inf)",
        ]
    )
    result.stdout.fnmatch_lines(["  - precision: not a finite number; allowed: a finite number (got nan)"])
    assert "could not be measured" not in result.stdout.str()
    assert "pydantic" not in result.stdout.str()
