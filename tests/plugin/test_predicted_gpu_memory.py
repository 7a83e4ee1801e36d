"""A GPU memory budget on a runner without a GPU: judged on the figure predicted for the scenario's
``predict_gpu`` card, and said to be predicted in the terminal, the JSON report, JUnit, the comment and the HTML
page."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import jsonschema
import pytest

from pytest_mlestimate.core.gpu_cards import HOPPER_BLAS_WORKSPACE, OUTSIDE_ALLOCATOR
from tests.plugin.conftest import RunResult, by_name, scenario_file

SCHEMA = Path(__file__).parents[2] / "pytest_mlestimate" / "report.schema.json"


def test_a_gpu_memory_budget_fails_on_a_cpu_runner_when_the_prediction_breaks_it(
    pytester: pytest.Pytester, run_scenarios: Callable[..., RunResult]
) -> None:
    pytester.makefile(
        ".yaml",
        scenarios=scenario_file(
            {"name": "fits", "predict_gpu": "h100", "budgets": {"peak_gpu_memory": "8 GB"}},
            {"name": "too-big", "predict_gpu": "H100", "budgets": {"peak_gpu_memory": "1 GB"}},
        ),
    )
    junit, comment, page = pytester.path / "junit.xml", pytester.path / "comment.md", pytester.path / "report.html"
    result, report = run_scenarios(
        "--mlestimate-no-cache", "--mlestimate-junitxml", str(junit), "--mlestimate-markdown", str(comment),
        "--mlestimate-html", str(page),
    )  # fmt: skip
    result.assert_outcomes(passed=1, failed=1)
    jsonschema.validate(report, json.loads(SCHEMA.read_text()))
    scenarios = by_name(report)
    predicted = scenarios["too-big"]["resource"]["Predicted Peak GPU Memory"]
    assert scenarios["too-big"]["resource"]["Peak GPU Memory"] is None  # nothing measured it here
    assert predicted["gpu"] == "H100"
    # two cuBLAS workspaces and the tiny model's weights, gradients, momentum and activations
    assert 2 * HOPPER_BLAS_WORKSPACE < predicted["allocated"] <= predicted["reserved"]
    assert predicted["device"] == predicted["reserved"] + OUTSIDE_ALLOCATOR
    (check,) = [c for c in scenarios["too-big"]["budgets"] if c["metric"] == "peak_gpu_memory"]
    assert check["predicted"] is True and check["passed"] is False and check["value"] == predicted["device"]
    (kept,) = [c for c in scenarios["fits"]["budgets"] if c["metric"] == "peak_gpu_memory"]
    assert kept["predicted"] is True and kept["passed"] is True
    table = "\n".join(line for line in result.outlines if "peak_gpu_memory" in line)
    assert "(predicted)" in table and "FAILED" in table
    assert "peak_gpu_memory broke its limit: predicted" in junit.read_text()
    assert "(predicted)" in comment.read_text()
    assert "peak GPU memory on H100 (predicted)" in page.read_text()
