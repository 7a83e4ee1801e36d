"""The contract a custom factory can follow for a model of any family: it returns the module with how to make
its batch and how to turn its output into the loss, and the engine needs to know nothing else of it.

    from pytest_mlestimate import MeasuredModel

    def build(num_classes: int = 10) -> MeasuredModel:
        model = MyTextClassifier(num_classes)

        def make_batch(batch_size: int, input_size: tuple[int, int]) -> tuple[Any, Any]:
            tokens = torch.randint(0, 30000, (batch_size, input_size[1]))
            return tokens, torch.randint(0, num_classes, (batch_size,))

        return MeasuredModel(model, make_batch, lambda logits, labels: F.cross_entropy(logits, labels))

A scenario names it with ``task_type: custom`` and ``architecture: package.module:build``; ``image_size`` is the
``input_size`` its ``make_batch`` reads as it needs (``[1, sequence_length]`` for text, say).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

Batch = tuple[Any, Any]
"""(inputs, targets): tensors, or tuples, lists and dicts of them."""


@dataclass(frozen=True)
class MeasuredModel:
    module: nn.Module
    make_batch: Callable[[int, tuple[int, int]], Batch]
    """(batch_size, input_size) -> (inputs, targets), on the CPU; the engine moves them to the device."""
    loss: Callable[[Any, Any], torch.Tensor]
    """(the module's output, targets) -> the scalar loss the backward pass starts from."""

    def __call__(self, inputs: Any) -> Any:
        """The module called on ``inputs``: a tuple or list as positional arguments, a mapping as keywords."""
        if isinstance(inputs, Mapping):
            return self.module(**inputs)
        if isinstance(inputs, tuple | list):
            return self.module(*inputs)
        return self.module(inputs)
