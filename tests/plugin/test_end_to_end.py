"""The real path: scenarios measured in child processes (no cache), one of them crashing."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import jsonschema
import pytest

from tests.plugin.conftest import TINY, RunResult, by_name, scenario_file

SCHEMA = Path(__file__).parents[2] / "pytest_mlestimate" / "report.schema.json"
CRASHING_MODEL = """
def broken_model(**kwargs):
    raise RuntimeError("checkpoint format not understood")
"""


def test_scenarios_run_in_child_processes_and_a_crash_is_an_error(
    pytester: pytest.Pytester, run_scenarios: Callable[..., RunResult]
) -> None:
    pytester.makepyfile(crashing=CRASHING_MODEL)
    pytester.syspathinsert()
    pytester.makefile(
        ".yaml",
        scenarios=scenario_file(
            {"name": "crashes", "architecture": "crashing:broken_model"},
            {"name": "measured", "budgets": {"peak_ram_memory": "64 GiB"}},
        ),
    )
    result, report = run_scenarios("--mlestimate-no-cache")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        ["scenarios.yaml:3: scenario 'crashes' could not be measured: *checkpoint format not understood*"]
    )
    assert "Traceback" not in result.stdout.str()
    entries = by_name(report)
    assert entries["crashes"]["outcome"] == "error"
    measured = entries["measured"]
    assert measured["outcome"] == "passed"
    assert measured["details"]["cache"] == {"hit": False}
    assert measured["resource"]["Peak RAM Memory"] > 0
    assert measured["scenario"]["batch_size"] == TINY["batch_size"]


def test_a_scenario_trains_on_its_datasets_shape_and_names_the_worst_batch(
    pytester: pytest.Pytester, run_scenarios: Callable[..., RunResult]
) -> None:
    images = [{"id": i, "width": 64 + 16 * i, "height": 48} for i in range(1, 7)]
    annotations = [
        {"id": 10 * i + k, "image_id": i, "category_id": 2, "bbox": [2.0 + k, 3.0, 10.0, 12.0]}
        for i in range(1, 7)
        for k in range(i)
    ]
    coco = {"images": images, "annotations": annotations, "categories": [{"id": 2, "name": "part"}]}
    pytester.makefile(".json", instances=json.dumps(coco))
    pytester.makefile(".yaml", scenarios=scenario_file({"name": "ours", "dataset": "instances.json"}))
    result, report = run_scenarios("--mlestimate-no-cache")
    result.assert_outcomes(passed=1)
    jsonschema.validate(report, json.loads(SCHEMA.read_text()))
    ours = by_name(report)["ours"]
    assert ours["scenario"]["dataset_size"] == TINY["dataset_size"]  # the scenario's own, kept
    assert ours["scenario"]["num_classes"] == 3  # the largest category id plus one, from the file
    dataset = ours["details"]["dataset"]
    assert dataset["images"] == 6 and dataset["targets"] == "the annotation file's"
    assert dataset["worst_batches"]["largest images"] == {"image_ids": [6, 5], "padded": [48, 160], "instances": 11}


def test_a_classifier_runs_end_to_end_with_its_budgets(
    pytester: pytest.Pytester, run_scenarios: Callable[..., RunResult]
) -> None:
    classifier = {"task_type": "classification", "architecture": "mobilenet_v3_small", "image_size": [32, 32],
                  "num_classes": 10, "warmup_iterations": 1, "measure_iterations": 3}  # fmt: skip
    pytester.makefile(
        ".yaml",
        scenarios=scenario_file(
            {"name": "within", **classifier, "budgets": {"forward_pass": "10 s", "peak_ram_memory": "20 GiB"}},
            {"name": "over", **classifier, "budgets": {"peak_ram_memory": "1 MiB"}},
        ),
    )
    result, report = run_scenarios("--mlestimate-no-cache")
    result.assert_outcomes(passed=1, failed=1)
    jsonschema.validate(report, json.loads(SCHEMA.read_text()))
    scenarios = by_name(report)
    assert scenarios["within"]["scenario"]["optimizer"]["name"] == "sgd"  # torchvision's recipe for it
    assert scenarios["within"]["training_time"]["Total Training Time"] > 0
    (broken,) = [c for c in scenarios["over"]["budgets"] if c["passed"] is False]
    assert broken["metric"] == "peak_ram_memory"
