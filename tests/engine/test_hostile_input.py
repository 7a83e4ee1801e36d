"""Hostile values in a scenario: refused at validation with a short message, never measured, never a crash."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from pytest_mlestimate import estimate
from pytest_mlestimate.core.errors import ECHO_LIMIT, ModelBuildError, brief
from pytest_mlestimate.profiling.models import load_weights
from pytest_mlestimate.scenarios.scenario import Scenario, ScenarioError, parse_scenario
from pytest_mlestimate.tiny import tiny_detector
from tests.tiny_scenario import TINY


def problems(**changes: Any) -> list[str]:
    with pytest.raises(ScenarioError) as caught:
        parse_scenario({**TINY, **changes})
    return caught.value.problems


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"optimizer": {"lr": math.inf}}, "optimizer.lr"),
        ({"optimizer": {"weight_decay": math.nan}}, "optimizer.weight_decay"),
        ({"precision": math.nan}, "precision"),
        ({"image_size": [math.inf, 64]}, "image_size.0"),
        ({"model_kwargs": {"score_thresh": -math.inf}}, "model_kwargs"),
        ({"model_kwargs": {"sizes": [1.0, math.nan]}}, "model_kwargs"),
    ],
)
def test_non_finite_numbers_are_refused_with_one_line(changes: dict[str, Any], field: str) -> None:
    found = problems(**changes)
    assert len(found) == 1
    assert found[0].startswith(f"{field}: ") and "finite" in found[0]


def test_non_finite_numbers_in_json_are_refused() -> None:
    body = '{"task_type": "detection", "architecture": "fcos_resnet50_fpn", "dataset_size": 1, "batch_size": 1, '
    for value in ("Infinity", "NaN", "1e999"):
        with pytest.raises(ValueError, match="finite"):
            Scenario.model_validate_json(body + f'"image_size": [64, 64], "optimizer": {{"lr": {value}}}}}')


def test_a_nul_byte_in_the_weights_path_is_refused() -> None:
    [found] = problems(weights_path="weights\x00.pt")
    assert found.startswith("weights_path: ") and "NUL" in found


@pytest.mark.parametrize(
    "changes",
    [
        {"architecture": "x" * 1_000_000},
        {"device": "cuda:" + "9" * 100_000},
        {"model_kwargs": {"k": "v" * 100_000}},
        {"model_kwargs": {f"k{i}": i for i in range(10_000)}},
        {"weights_path": "/" + "w" * 100_000},
        {"task_type": ["deep"] * 100_000},
        {"parameters": 10**4000},
    ],
)
def test_huge_values_are_refused_without_being_repeated(changes: dict[str, Any]) -> None:
    found = problems(**changes)
    assert found and all(len(line) < 3 * ECHO_LIMIT + 400 for line in found), [len(line) for line in found]


def test_brief_bounds_nested_and_enormous_values() -> None:
    bomb: Any = ["lol"] * 9
    for _ in range(9):
        bomb = [bomb] * 9  # 9**10 leaves: what an expanded YAML alias bomb is
    assert len(brief(bomb)) <= ECHO_LIMIT + 3
    assert len(brief(10**5000)) < 60


@pytest.fixture
def model() -> torch.nn.Module:
    return tiny_detector(num_classes=3)


def test_a_pickled_model_is_refused_without_advice_to_unpickle_it(tmp_path: Path, model: torch.nn.Module) -> None:
    path = tmp_path / "whole_model.pt"
    torch.save(model, path)
    with pytest.raises(ModelBuildError) as caught:
        load_weights(model, str(path))
    message = str(caught.value)
    assert "holds Python objects besides tensors" in message and "model.state_dict()" in message
    assert "weights_only set to False" not in message and "arbitrary code" not in message


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ([1, 2, 3], "holds list, not a state dict"),
        ({"layer": "not a tensor"}, "not all tensors"),
    ],
)
def test_a_file_that_is_not_a_state_dict_is_named_as_such(
    tmp_path: Path, model: torch.nn.Module, content: Any, expected: str
) -> None:
    path = tmp_path / "odd.pt"
    torch.save(content, path)
    with pytest.raises(ModelBuildError, match=expected):
        load_weights(model, str(path))


def test_a_file_that_is_not_torch_at_all_is_named_as_such(tmp_path: Path, model: torch.nn.Module) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("not weights\n" * 100)
    with pytest.raises(ModelBuildError, match="is not a file of tensors"):
        load_weights(model, str(path))


def test_a_bad_weights_file_is_a_build_error_of_the_estimate(tmp_path: Path) -> None:
    """Through the API, in a child process: reported as the weights' fault, not as a training failure."""
    path = tmp_path / "whole_model.pt"
    torch.save(tiny_detector(), path)
    with pytest.raises(ModelBuildError, match="state_dict"):
        estimate({**TINY, "weights_path": str(path), "device": "cpu"}, cache=False, timeout=120)


def test_one_device_has_one_spelling() -> None:
    assert parse_scenario({**TINY, "device": "cuda:007"}).device == "cuda:7"
    assert parse_scenario({**TINY, "device": "cuda:0"}) == parse_scenario({**TINY, "device": "cuda:00"})
