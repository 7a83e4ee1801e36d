"""Models from timm and from Hugging Face transformers, named ``timm:NAME`` and ``hf:MODEL_TYPE``, built without
any download (``pretrained=False``; a configuration's defaults with ``model_kwargs`` over them) and measured with
their recipe's optimizer; a missing library says which extra installs it."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from pytest_mlestimate.api import estimate
from pytest_mlestimate.core.errors import EstimateError, ModelBuildError
from pytest_mlestimate.profiling.models import build_model
from pytest_mlestimate.scenarios.scenario import ScenarioError, parse_scenario
from tests.family_scenarios import HF_TEXT, HF_VISION, TIMM


@pytest.mark.parametrize("scenario", [TIMM, HF_VISION, HF_TEXT], ids=["timm", "hf-vision", "hf-causal-lm"])
def test_a_library_model_trains_with_its_recipe(scenario: dict[str, Any]) -> None:
    """Measured end to end in tests/plugin/test_families.py."""
    optimizer = parse_scenario(scenario).optimizer
    assert optimizer.name == "adamw" and optimizer.lr == (1e-3 if scenario is TIMM else 5e-5)


def test_a_language_models_input_is_its_sequence() -> None:
    parsed = parse_scenario(HF_TEXT)
    assert parsed.image_size == (1, 64) and parsed.sequence_length == 64
    assert parse_scenario({k: v for k, v in HF_TEXT.items() if k != "sequence_length"}).image_size == (1, 512)
    assert parse_scenario({**HF_TEXT, "image_size": [64, 64]}).image_size == (1, 64)  # a file's defaults, say


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({**TIMM, "task_type": "detection"}, "timm models are measured as 'classification'"),
        ({**TIMM, "task_type": "causal-lm"}, "timm models are measured as 'classification'"),
        ({**TIMM, "sequence_length": 64}, "sequence_length: tokens per sequence, only for task_type 'causal-lm'"),
        ({**HF_TEXT, "architecture": "resnet18"}, "task_type 'causal-lm' is measured on a Hugging Face model"),
    ],
)
def test_what_a_library_model_cannot_take_is_named_before_anything_runs(change: dict[str, Any], words: str) -> None:
    with pytest.raises(ScenarioError, match=words):
        parse_scenario(change)


def test_an_unknown_timm_name_is_told_the_closest() -> None:
    with pytest.raises(EstimateError, match=r"timm has no such model; did you mean 'timm:resnet10t'\?"):
        estimate({**TIMM, "architecture": "timm:resnet10tt"}, cache=False)


def test_a_missing_library_names_the_extra_that_installs_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "timm", None)
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ModelBuildError, match=r"needs timm: pip install 'pytest-mlestimate\[timm\]'"):
        build_model(parse_scenario(TIMM))
    with pytest.raises(ModelBuildError, match=r"needs transformers: pip install 'pytest-mlestimate\[transformers\]'"):
        build_model(parse_scenario(HF_TEXT))
