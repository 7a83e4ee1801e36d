"""The families trained on one batch tensor: torchvision's classifiers, segmenters and video classifiers, each
with its recipe's optimizer and loss, measured as a detector is."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from pytest_mlestimate.api import estimate
from pytest_mlestimate.profiling.tensor_batches import classification_loss, segmentation_loss
from pytest_mlestimate.scenarios.architectures import CLASSIFIERS, SEGMENTERS, VIDEO_CLASSIFIERS
from pytest_mlestimate.scenarios.scenario import ScenarioError, parse_scenario
from tests.family_scenarios import SEGMENT, SMALL, VIDEO


def test_the_families_builders_are_torchvisions() -> None:
    import torchvision
    from torchvision import models

    assert sorted(CLASSIFIERS) == sorted(torchvision.models.list_models(module=models))
    assert sorted(SEGMENTERS) == sorted(torchvision.models.list_models(module=models.segmentation))
    assert sorted(VIDEO_CLASSIFIERS) == sorted(torchvision.models.list_models(module=models.video))


def test_each_classifier_trains_with_its_recipes_optimizer_unless_the_scenario_names_one() -> None:
    resnet = parse_scenario(SMALL).optimizer
    assert (resnet.name, resnet.lr, resnet.momentum, resnet.warmup_steps) == ("sgd", 0.1, 0.9, 0)
    vit = parse_scenario({**SMALL, "architecture": "vit_b_16", "image_size": [32, 32]}).optimizer
    assert (vit.name, vit.lr, vit.weight_decay) == ("adamw", 1e-3, 0.05)
    own = parse_scenario({**SMALL, "optimizer": {"name": "adamw", "lr": 3e-4}}).optimizer
    assert (own.name, own.lr) == ("adamw", 3e-4)
    segmenter = parse_scenario({**SEGMENT, "architecture": "fcn_resnet50"}).optimizer
    assert (segmenter.name, segmenter.lr) == ("sgd", 0.02)
    assert parse_scenario(VIDEO).optimizer.lr == 0.01
    assert parse_scenario({**VIDEO, "architecture": "swin3d_t"}).optimizer.name == "adamw"


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"architecture": "vit_b_16", "image_size": [40, 40]}, "image_size: vit_b_16 computes on square images"),
        ({"architecture": "vit_b_32", "image_size": [64, 32]}, "allowed, for example, [64, 64]"),
        ({"task_type": "detection"}, "it is a classification model, so task_type must be 'classification'"),
        ({"architecture": "fasterrcnn_resnet50_fpn"}, "it is a detection model, so task_type must be 'detection'"),
        ({"dataset": "instances.json", "num_classes": 10}, "a classification scenario takes none"),
        ({"clip_length": 8}, "clip_length: frames per clip, only for task_type 'video-classification'"),
        (
            {**VIDEO, "architecture": "mvit_v1_b"},
            "mvit_v1_b is built for clips of 16 frames of 224x224; got clip_length 4, image_size [16, 16]",
        ),
    ],
)
def test_what_a_classifier_cannot_take_is_named_before_anything_runs(change: dict[str, Any], words: str) -> None:
    with pytest.raises(ScenarioError, match=words.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")):
        parse_scenario({**SMALL, **change})


def test_auxiliary_heads_count_as_their_papers_weight_them() -> None:
    from torchvision.models import GoogLeNetOutputs, InceptionOutputs

    logits, aux = torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 2.0]])
    labels = torch.tensor([0])
    main = torch.nn.functional.cross_entropy(logits, labels)
    other = torch.nn.functional.cross_entropy(aux, labels)
    assert torch.isclose(classification_loss(logits, labels), main)
    assert torch.isclose(classification_loss(InceptionOutputs(logits, aux), labels), main + 0.4 * other)
    assert torch.isclose(classification_loss(GoogLeNetOutputs(logits, aux, aux), labels), main + 0.6 * other)


def test_a_segmenters_auxiliary_head_counts_half_and_ignored_pixels_not_at_all() -> None:
    labels = torch.tensor([[[0, 255]]])
    out, aux = torch.tensor([[[[3.0, 0.0]], [[0.0, 9.0]]]]), torch.tensor([[[[0.0, 0.0]], [[1.0, 1.0]]]])
    main = torch.nn.functional.cross_entropy(out[..., :1], labels[..., :1])
    other = torch.nn.functional.cross_entropy(aux[..., :1], labels[..., :1])
    assert torch.isclose(segmentation_loss({"out": out}, labels), main)
    assert torch.isclose(segmentation_loss({"out": out, "aux": aux}, labels), main + 0.5 * other)


def test_a_classifier_is_measured_and_broken_down_like_a_detector() -> None:
    found = estimate({**SMALL, "breakdown_depth": 1}, cache=False)
    result = found.to_dict()
    assert result["training_time"]["Total Training Time"] > 0
    assert result["resource"]["Batch Time"]["forward_pass"] > 0 and result["resource"]["Peak RAM Memory"] > 0
    assert result["inference_time"]["Batch of 4 Inference Time"] > 0
    parts = {part["module"] for part in result["details"]["breakdown"]["parts"]}
    assert {"conv1", "layer1", "layer4", "fc"} <= parts
    assert "SGD" in result["details"]["measurement"]["optimizer"]
