from __future__ import annotations

from typing import Any

import pytest

from pytest_mlestimate.scenarios.scenario import Scenario, ScenarioError, parse_scenario

BASE: dict[str, Any] = {
    "task_type": "detection",
    "architecture": "fasterrcnn_resnet50_fpn",
    "dataset_size": 1000,
    "batch_size": 4,
    "image_size": [512, 512],
}


def problems(**changes: Any) -> str:
    with pytest.raises(ScenarioError) as caught:
        parse_scenario({**BASE, **changes}, where="scenarios/a.yaml::big")
    return str(caught.value)


def test_the_original_request_fields_are_accepted_with_defaults_for_the_rest() -> None:
    scenario = parse_scenario({**BASE, "parameters": 41_000_000, "application_type": "training", "threading": True})
    assert scenario.epochs == 1
    assert scenario.device == "auto"
    assert scenario.optimizer.name == "sgd" and scenario.optimizer.momentum == 0.9
    assert scenario.num_batches == 250


def test_negative_batch_size_names_field_value_and_allowed_range() -> None:
    message = problems(batch_size=-3)
    assert "scenarios/a.yaml::big" in message
    assert "batch_size" in message and "-3" in message and "must be at least 1" in message


def test_sanity_limits_are_stated() -> None:
    assert "must be at most 8192" in problems(image_size=[512, 100_000])
    assert "must be at most 4096" in problems(batch_size=100_000)


def test_misspelt_architecture_lists_allowed_names_and_the_closest() -> None:
    message = problems(architecture="fasterrcnn_resnet50_fnp")
    assert "did you mean 'fasterrcnn_resnet50_fpn'" in message
    assert "ssdlite320_mobilenet_v3_large" in message


def test_task_type_must_suit_the_architecture() -> None:
    assert "instance segmentation model, so task_type must be 'instance'" in problems(
        architecture="maskrcnn_resnet50_fpn"
    )
    assert "detection model, so task_type must be 'detection'" in problems(task_type="instance")


def test_unknown_field_is_named_with_the_allowed_ones() -> None:
    message = problems(batchsize=4)
    assert "batchsize: unknown field" in message and "batch_size" in message


def test_bad_device_and_enum_values() -> None:
    assert "allowed: auto, cpu, cuda, cuda:N" in problems(device="gpu0")
    assert "'training' or 'inference'" in problems(application_type="serving")


def test_custom_factories_follow_the_allow_list_of_the_caller() -> None:
    data = {**BASE, "architecture": "mypkg.models:build"}
    assert parse_scenario(data).architecture == "mypkg.models:build"
    with pytest.raises(ScenarioError, match="custom factory 'os:system' is not allowed"):
        parse_scenario({**data, "architecture": "os:system"}, context={"allowed_factories": set()})


def test_profile_fields_leave_out_what_only_scales_the_result() -> None:
    small = Scenario.model_validate(BASE)
    large = Scenario.model_validate({**BASE, "dataset_size": 10**6, "epochs": 100})
    assert small.profile_fields() == large.profile_fields()
    assert small.profile_fields() != Scenario.model_validate({**BASE, "batch_size": 8}).profile_fields()


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"image_size": 320}, "image_size: expected [height, width], two whole numbers of pixels (got 320)"),
        ({"image_size": [320]}, "image_size: expected [height, width], two whole numbers of pixels (got [320])"),
        ({"batch_size": 2.5}, "batch_size: expected a whole number (got 2.5)"),
        ({"batch_size": -2}, "batch_size: must be at least 1 (got -2)"),
        ({"threading": "maybe"}, "threading: expected true or false (got 'maybe')"),
        ({"optimizer": 3}, "optimizer: expected a mapping of settings (got 3)"),
        ({"model_kwargs": [1]}, "model_kwargs: expected a mapping of names to values (got [1])"),
        ({"application_type": "train"}, "application_type: allowed: 'training' or 'inference' (got 'train')"),
    ],
)
def test_messages_speak_of_what_a_scenario_file_can_hold(changes: dict[str, Any], expected: str) -> None:
    """YAML and JSON have no tuples, models or 'valid integers': pydantic's words never reach the user."""
    with pytest.raises(ScenarioError) as caught:
        parse_scenario({**BASE, **changes})
    assert caught.value.problems == [expected]
    assert "Input should" not in str(caught.value) and "tuple" not in str(caught.value)
