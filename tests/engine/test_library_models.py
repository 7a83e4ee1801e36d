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
from tests.family_scenarios import HF_DETR, HF_MASK2FORMER, HF_TEXT, HF_VISION, TIMM, TINY_DETR


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
        ({**HF_DETR, "task_type": "semantic-segmentation"}, "hf models are measured as 'classification' or "),
        (
            {**HF_DETR, "model_kwargs": {"backbone_config": {"depths": {"a": 1}}}},
            r"'backbone_config\.depths' is \{'a': 1\}; allowed",
        ),
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


def test_a_hugging_face_detector_trains_on_torchvisions_targets_with_its_own_loss() -> None:
    import torch

    model = build_model(parse_scenario(HF_DETR))
    assert isinstance(model, torch.nn.Module) and type(model.model).__name__ == "DetrForObjectDetection"
    model.eval()  # no dropout: the same inputs give the same loss
    images = [torch.rand(3, 64, 80), torch.rand(3, 64, 80)]
    targets = [
        {"boxes": torch.tensor([[8.0, 16.0, 40.0, 48.0]]), "labels": torch.tensor([3])},
        {"boxes": torch.tensor([[0.0, 0.0, 80.0, 64.0], [20.0, 8.0, 60.0, 24.0]]), "labels": torch.tensor([1, 10])},
    ]
    with torch.no_grad():
        wrapped = model(images, targets)["loss"]
        own = model.model(
            pixel_values=torch.stack(images),
            labels=[  # what DETR's image processor hands it: centre and size over the image's size
                {"class_labels": torch.tensor([3]), "boxes": torch.tensor([[0.3, 0.5, 0.4, 0.5]])},
                {"class_labels": torch.tensor([1, 10]),
                 "boxes": torch.tensor([[0.5, 0.5, 1.0, 1.0], [0.5, 0.25, 0.5, 0.25]])},
            ],
        ).loss  # fmt: skip
    assert wrapped.item() == pytest.approx(own.item(), rel=1e-5)
    assert type(model(images)).__name__ == "DetrObjectDetectionOutput"  # inference: the model's forward


def test_a_universal_segmenter_trains_on_instance_masks_and_breaks_down_into_its_own_parts() -> None:
    import torch

    from pytest_mlestimate.profiling.part_hooks import parts_of

    model = build_model(parse_scenario(HF_MASK2FORMER))
    assert isinstance(model, torch.nn.Module) and type(model.model).__name__ == "Mask2FormerForUniversalSegmentation"
    model.eval()
    images = [torch.rand(3, 64, 64), torch.rand(3, 48, 64)]  # padded to the batch's largest, as its processor does
    masks = [torch.zeros(1, 64, 64, dtype=torch.uint8), torch.zeros(2, 48, 64, dtype=torch.uint8)]
    masks[0][0, 10:30, 10:40] = 1
    masks[1][0, :, :32] = 1
    masks[1][1, 20:, 40:] = 1
    targets = [
        {"boxes": torch.tensor([[10.0, 10.0, 40.0, 30.0]]), "labels": torch.tensor([2]), "masks": masks[0]},
        {"boxes": torch.tensor([[0.0, 0.0, 32.0, 48.0], [40.0, 20.0, 64.0, 48.0]]), "labels": torch.tensor([1, 7]),
         "masks": masks[1]},
    ]  # fmt: skip
    padded = torch.zeros(2, 3, 64, 64)
    padded[0], padded[1, :, :48] = images
    pixel_mask = torch.ones(2, 64, 64, dtype=torch.long)
    pixel_mask[1, 48:] = 0
    second = torch.zeros(2, 64, 64)
    second[:, :48] = masks[1].float()
    with torch.no_grad():
        torch.manual_seed(0)  # its loss samples points of the masks
        wrapped = model(images, targets)["loss"]
        torch.manual_seed(0)
        own = model.model(
            pixel_values=padded, pixel_mask=pixel_mask, mask_labels=[masks[0].float(), second],
            class_labels=[torch.tensor([2]), torch.tensor([1, 7])],
        ).loss  # fmt: skip
    assert wrapped.item() == pytest.approx(own.item(), rel=1e-5)
    assert [name for name, _ in parts_of(model)] == ["model", "class_predictor", "criterion"]
    assert [name for name, _ in parts_of(model, 2)][:2] == ["model.pixel_level_module", "model.transformer_module"]


def test_a_model_type_transformers_does_not_build_for_the_task_is_named_with_those_it_does() -> None:
    with pytest.raises(
        ModelBuildError,
        match=r"transformers builds no object detector of model type 'gpt2', which "
        r"task_type 'detection' measures; model types it builds as an object detector: .*detr",
    ):
        build_model(parse_scenario({**HF_DETR, "architecture": "hf:gpt2", "model_kwargs": {}}))


def test_a_model_transformers_builds_for_the_task_but_that_cannot_train_on_its_targets_is_refused_when_built() -> None:
    with pytest.raises(
        ModelBuildError,
        match=r"builds DetrForSegmentation, which task_type 'instance' cannot train: "
        r"its forward takes no class_labels, mask_labels",
    ):
        wide = {"d_model": 64, "encoder_attention_heads": 8, "decoder_attention_heads": 8}  # its mask head's norm
        build_model(parse_scenario({**HF_DETR, "task_type": "instance", "model_kwargs": {**TINY_DETR, **wide}}))


def test_a_detectors_backbone_is_never_pretrained_whatever_model_kwargs_say(monkeypatch: pytest.MonkeyPatch) -> None:
    """transformers 4 downloads a backbone's weights for use_pretrained_backbone=True; 5 ignores it at the top."""
    import transformers

    asked: list[dict[str, Any]] = []
    for_model = transformers.AutoConfig.for_model
    monkeypatch.setattr(
        transformers.AutoConfig, "for_model", lambda name, **kw: asked.append(kw) or for_model(name, **kw)
    )
    wanting = {**HF_MASK2FORMER["model_kwargs"], "use_pretrained_backbone": True}
    wanting["backbone_config"] = {**wanting["backbone_config"], "use_pretrained_backbone": True}
    build_model(parse_scenario({**HF_MASK2FORMER, "model_kwargs": wanting}))
    assert asked[-1]["use_pretrained_backbone"] is False
    assert asked[-1]["backbone_config"]["use_pretrained_backbone"] is False
