"""Models for bench/regression_power.py: a base model and the same model made slower by real extra compute.

The extra compute is a convolution stack of ``POWER_CHANNELS`` hidden channels (read from the environment,
so that the scenario itself stays the same, as it does across a pull request that slows a model down).
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from pytest_mlestimate.tiny import TinyDetector


def extra_channels() -> int:
    return int(os.environ.get("POWER_CHANNELS", "0"))


class ExtraCompute(nn.Module):
    """Costs forward and backward time in proportion to ``channels``; leaves its input unchanged."""

    def __init__(self, width: int, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(width, channels, 3, padding=1), nn.ReLU(), nn.Conv2d(channels, width, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.0 * self.body(x)


class Blocks(nn.Module):
    def __init__(self, width: int = 16, hidden: int = 64, count: int = 4) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for _ in range(count):
            layers += [nn.Conv2d(width, hidden, 3, padding=1), nn.ReLU(), nn.Conv2d(hidden, width, 1), nn.ReLU()]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class BlocksDetector(TinyDetector):
    """The tiny detector with four 16->64->16 convolution blocks after its backbone, plus the extra compute."""

    def __init__(self, num_classes: int = 91, channels: int = 16) -> None:
        super().__init__(num_classes, channels)
        extra = extra_channels()
        tail: list[nn.Module] = [Blocks(channels)]
        if extra:
            tail.append(ExtraCompute(channels, extra))
        self.backbone = nn.Sequential(*self.backbone, *tail)


def blocks_detector(num_classes: int = 91, channels: int = 16) -> BlocksDetector:
    return BlocksDetector(num_classes, channels)


class SlowedDetector(nn.Module):
    """A torchvision detector behind an image-level extra compute stack."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        extra = extra_channels()
        self.extra = ExtraCompute(3, extra) if extra else None
        self.transform = model.transform  # where the profiler looks for the input size the model computes on

    def forward(self, images: list[torch.Tensor], targets: Any = None) -> Any:
        if self.extra is not None:
            images = list(self.extra(torch.stack(images)).unbind(0))
        return self.model(images, targets)


def ssdlite(num_classes: int = 91) -> SlowedDetector:
    from torchvision.models.detection import ssdlite320_mobilenet_v3_large

    return SlowedDetector(ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=num_classes))
