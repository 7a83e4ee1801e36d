"""Synthetic data of the scenario's shape trains every torchvision family for one step."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from pytest_mlestimate.profiling.models import build_model, num_classes, target_kind
from pytest_mlestimate.profiling.synthetic import make_batch, make_target
from pytest_mlestimate.scenarios.scenario import Scenario

SMALL = {"min_size": 128, "max_size": 128}


@pytest.mark.parametrize("kind", ["boxes", "masks", "keypoints"])
def test_targets_are_valid_for_the_training_contract(kind: Any) -> None:
    target = make_target(90, 120, 7, 91, kind, torch.Generator().manual_seed(3))
    boxes = target["boxes"]
    assert boxes.dtype == torch.float32 and boxes.shape == (7, 4)
    assert bool(((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])).all())
    assert bool((boxes[:, [0, 2]] <= 120).all() and (boxes[:, [1, 3]] <= 90).all() and (boxes >= 0).all())
    assert target["labels"].dtype == torch.int64 and bool((target["labels"] >= 1).all())
    if kind == "masks":
        assert target["masks"].dtype == torch.uint8 and target["masks"].shape == (7, 90, 120)
        assert bool((target["masks"].flatten(1).sum(1) > 0).all())
    if kind == "keypoints":
        assert target["keypoints"].shape == (7, 17, 3)


def test_images_are_floats_in_the_unit_range_of_the_requested_size() -> None:
    images, targets = make_batch(3, (64, 48), 2, 5, "boxes")
    assert len(images) == len(targets) == 3
    assert all(i.shape == (3, 64, 48) and i.dtype == torch.float32 for i in images)
    assert all(float(i.min()) >= 0 and float(i.max()) <= 1 for i in images)


@pytest.mark.parametrize(
    ("architecture", "task", "batch", "kwargs"),
    [
        ("fasterrcnn_mobilenet_v3_large_320_fpn", "detection", 1, {}),
        ("maskrcnn_resnet50_fpn", "instance", 1, SMALL),
        ("keypointrcnn_resnet50_fpn", "detection", 1, SMALL),
        ("retinanet_resnet50_fpn", "detection", 1, SMALL),
        ("fcos_resnet50_fpn", "detection", 1, SMALL),
        ("ssd300_vgg16", "detection", 1, {}),
        ("ssdlite320_mobilenet_v3_large", "detection", 2, {}),  # its BatchNorm cannot train on one image
    ],
)
def test_every_family_trains_one_step(architecture: str, task: str, batch: int, kwargs: dict) -> None:
    scenario = Scenario(
        task_type=task,
        architecture=architecture,
        dataset_size=1,
        batch_size=batch,
        image_size=(96, 96),
        model_kwargs=kwargs,
    )
    model = build_model(scenario).train()
    images, targets = make_batch(batch, (96, 96), 2, num_classes(scenario), target_kind(scenario))
    losses = model(images, targets)
    loss = sum(losses.values())
    loss.backward()
    assert math.isfinite(loss.item())
    expected = {"masks": "loss_mask", "keypoints": "loss_keypoint"}.get(target_kind(scenario))
    if expected:
        assert expected in losses
    assert any(p.grad is not None for p in model.parameters())
