"""The size a torchvision model computes on, worked out without torch, is the size its own transform makes."""

from __future__ import annotations

import random

import pytest
import torch
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from pytest_mlestimate.scenarios.input_size import InputSizeError, effective_image_size
from pytest_mlestimate.scenarios.scenario import Scenario
from tests.service.fakes import TINY


def scenario(architecture: str = "fasterrcnn_resnet50_fpn", size=(64, 64), **kwargs) -> Scenario:
    task = "instance" if architecture.startswith("maskrcnn") else "detection"
    return Scenario(
        task_type=task, architecture=architecture, dataset_size=1, batch_size=1, image_size=size, model_kwargs=kwargs
    )


def test_the_arithmetic_is_torchvisions_transform():
    rng = random.Random(7)
    for _ in range(200):
        height, width = rng.randint(1, 600), rng.randint(1, 600)
        kwargs = {
            "min_size": rng.choice([rng.randint(1, 900), rng.uniform(1, 900)]),
            "max_size": rng.choice([rng.randint(1, 1400), rng.uniform(1, 1400)]),
            "size_divisible": rng.randint(1, 64),
        }
        if rng.random() < 0.2:
            kwargs["fixed_size"] = [rng.randint(1, 500), rng.randint(1, 500)]
        fixed = tuple(kwargs["fixed_size"]) if "fixed_size" in kwargs else None
        transform = GeneralizedRCNNTransform(
            kwargs["min_size"], kwargs["max_size"], [0.5] * 3, [0.5] * 3, kwargs["size_divisible"], fixed
        ).eval()
        with torch.inference_mode():
            batch, _ = transform([torch.zeros(3, height, width)])

        assert effective_image_size(scenario(size=(height, width), **kwargs)) == tuple(batch.tensors.shape[-2:])


@pytest.mark.parametrize(
    ("architecture", "size", "kwargs", "expected"),
    [
        ("fasterrcnn_resnet50_fpn", (100, 150), {}, (800, 1216)),
        ("fasterrcnn_resnet50_fpn", (64, 64), {"min_size": 8192, "max_size": 8192}, (8192, 8192)),
        ("fasterrcnn_mobilenet_v3_large_320_fpn", (100, 150), {}, (320, 480)),
        ("maskrcnn_resnet50_fpn", (333, 97), {"min_size": 64, "max_size": 96}, (96, 32)),
        ("keypointrcnn_resnet50_fpn", (100, 150), {}, (800, 1216)),
        ("keypointrcnn_resnet50_fpn", (100, 100), {"min_size": [64, 512]}, (512, 512)),  # training's largest pick
        ("retinanet_resnet50_fpn", (640, 480), {}, (1088, 800)),
        ("fcos_resnet50_fpn", (64, 64), {"fixed_size": [96, 64]}, (64, 96)),
        ("ssd300_vgg16", (64, 64), {}, (300, 300)),
        ("ssdlite320_mobilenet_v3_large", (1000, 20), {}, (320, 320)),
        (TINY, (64, 48), {"min_size": 9999}, None),
    ],
)
def test_each_family_and_its_defaults(architecture, size, kwargs, expected):
    assert effective_image_size(scenario(architecture, size, **kwargs)) == expected


@pytest.mark.parametrize(
    ("architecture", "kwargs", "words"),
    [
        ("fasterrcnn_resnet50_fpn", {"min_size": "800"}, "model_kwargs.min_size: '800' is not a number"),
        ("fasterrcnn_resnet50_fpn", {"max_size": -1}, "model_kwargs.max_size: -1; allowed: a positive number"),
        ("fasterrcnn_resnet50_fpn", {"min_size": []}, "model_kwargs.min_size: an empty list"),
        ("fasterrcnn_resnet50_fpn", {"fixed_size": [1]}, "allowed: [width, height]"),
        ("fasterrcnn_resnet50_fpn", {"size_divisible": 0}, "allowed: a positive integer"),
        ("fasterrcnn_resnet50_fpn", {"min_size": 10**400, "max_size": 10**400}, "unbounded size"),
        ("ssd300_vgg16", {"min_size": 64}, "always resizes to 300x300 and takes no min_size"),
    ],
)
def test_a_size_keyword_that_is_not_a_size_is_named(architecture, kwargs, words):
    with pytest.raises(InputSizeError) as raised:
        effective_image_size(scenario(architecture, **kwargs))

    assert words in str(raised.value)
