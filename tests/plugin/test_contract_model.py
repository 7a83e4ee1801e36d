"""A factory following the contract (``MeasuredModel``) for a model the tool has never seen: a text classifier,
measured, budgeted and broken down through ``pytest --mlestimate``; a factory that breaks the contract is told
how, before anything is measured."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import jsonschema
import pytest

from pytest_mlestimate.api import estimate
from pytest_mlestimate.core.errors import EstimateError
from tests.plugin.conftest import RunResult, by_name, scenario_file

SCHEMA = Path(__file__).parents[2] / "pytest_mlestimate" / "report.schema.json"
TEXT = {"task_type": "custom", "architecture": "tests.text_model:build", "image_size": [1, 48],
        "warmup_iterations": 1, "measure_iterations": 3, "breakdown_depth": 1}  # fmt: skip


def test_a_text_model_following_the_contract_is_measured_budgeted_and_broken_down(
    pytester: pytest.Pytester, run_scenarios: Callable[..., RunResult]
) -> None:
    pytester.makefile(
        ".yaml",
        scenarios=scenario_file(
            {"name": "text", **TEXT, "budgets": {"forward_pass": "5 s", "peak_ram_memory": "20 GiB"}},
            {"name": "text-tight", **TEXT, "budgets": {"peak_ram_memory": "1 MiB"}},
        ),
    )
    result, report = run_scenarios("--mlestimate-no-cache")
    result.assert_outcomes(passed=1, failed=1)
    jsonschema.validate(report, json.loads(SCHEMA.read_text()))
    text = by_name(report)["text"]
    assert text["training_time"]["Total Training Time"] > 0
    assert text["inference_time"]["1-Image Inference Time"] > 0
    assert [part["module"] for part in text["details"]["breakdown"]["parts"]] == ["embed", "gru", "head"]
    (broken,) = [c for c in by_name(report)["text-tight"]["budgets"] if c["passed"] is False]
    assert broken["metric"] == "peak_ram_memory"


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (
            {"architecture": "tests.text_model:plain_module"},
            "with task_type 'custom' a factory returns a MeasuredModel",
        ),
        ({"task_type": "detection"}, "returned a MeasuredModel: set task_type 'custom'"),
    ],
)
def test_a_factory_that_breaks_the_contract_is_told_how(change: dict[str, object], words: str) -> None:
    with pytest.raises(EstimateError, match=words):
        estimate({**TEXT, "dataset_size": 100, "batch_size": 2, "device": "cpu", **change}, cache=False)
