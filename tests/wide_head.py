"""The tiny detector with a classification head that can be made wider: a hidden layer of ``width`` channels
between the backbone's features and the class scores, at the features' full resolution. Widening it grows
that head's saved activations, its time and the whole model's parameters, gradients and optimizer state;
nothing else changes."""

from __future__ import annotations

import torch
from torch import nn

from pytest_mlestimate.tiny import TinyDetector

NARROW, WIDE = 8, 8192
"""A wide head at 128x128, batch 2, saves 2 x 8192 x 32 x 32 x 4 B = 64 MiB for backward: far past the 5 %
tolerance of a Peak RAM Memory near 800 MB on its own, and more with the gradients that backward adds."""


class HeadedDetector(TinyDetector):
    def __init__(self, width: int, num_classes: int = 2, channels: int = 16) -> None:
        super().__init__(num_classes=num_classes, channels=channels)
        del self.classifier
        self.cls_head = nn.Sequential(nn.Conv2d(channels, width, 1), nn.ReLU(), nn.Conv2d(width, num_classes, 1))

    def classifier(self, features: torch.Tensor) -> torch.Tensor:
        """What the tiny detector's one-layer classifier did, through the head."""
        return self.cls_head(features)


def headed_detector(width: int = NARROW, num_classes: int = 2) -> HeadedDetector:
    return HeadedDetector(width, num_classes)


def model_source(width: int) -> str:
    """A module that builds the detector at ``width``: a test rewrites it to change the model, not the scenario
    (a changed scenario is not compared with its baseline)."""
    return (
        "from tests.wide_head import headed_detector\n\n\n"
        f"def detector(**kwargs):\n    return headed_detector({width}, **kwargs)\n"
    )
