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

COMMON: dict[str, Any] = {"dataset_size": 100, "batch_size": 2, "device": "cpu", "warmup_iterations": 1,
                          "measure_iterations": 2, "breakdown_depth": 0}  # fmt: skip
TIMM = {**COMMON, "task_type": "classification", "architecture": "timm:resnet10t", "image_size": [32, 32],
        "num_classes": 10}  # fmt: skip
TINY_VIT = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
            "image_size": 32, "patch_size": 8}  # fmt: skip
HF_VISION = {**COMMON, "task_type": "classification", "architecture": "hf:vit", "image_size": [32, 32],
             "num_classes": 10, "model_kwargs": TINY_VIT}  # fmt: skip
TINY_GPT2 = {"n_embd": 32, "n_layer": 2, "n_head": 2, "vocab_size": 1000, "n_positions": 128}
HF_TEXT = {**COMMON, "task_type": "causal-lm", "architecture": "hf:gpt2", "sequence_length": 64,
           "model_kwargs": TINY_GPT2}  # fmt: skip


@pytest.mark.parametrize("scenario", [TIMM, HF_VISION, HF_TEXT], ids=["timm", "hf-vision", "hf-causal-lm"])
def test_a_library_model_is_measured_with_its_recipe(scenario: dict[str, Any]) -> None:
    parsed = parse_scenario(scenario)
    assert parsed.optimizer.name == "adamw"
    found = estimate(scenario, cache=False).to_dict()
    assert found["training_time"]["Total Training Time"] > 0 and found["resource"]["Peak RAM Memory"] > 0
    assert found["inference_time"]["Batch of 2 Inference Time"] > 0


def test_a_language_models_input_is_its_sequence() -> None:
    parsed = parse_scenario(HF_TEXT)
    assert parsed.image_size == (1, 64) and parsed.sequence_length == 64
    assert parse_scenario({k: v for k, v in HF_TEXT.items() if k != "sequence_length"}).image_size == (1, 512)


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
