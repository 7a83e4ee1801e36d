"""What a classifier trains on and how its loss is computed: a batch tensor of images of the scenario's size
with one class label each, and torchvision's classification recipe's cross-entropy."""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional

from pytest_mlestimate.core.errors import ModelRunError


def labelled_batch(
    batch_size: int, image_size: tuple[int, int], num_classes: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(batch_size, 3, *image_size, generator=generator)
    return images, torch.randint(0, num_classes, (batch_size,), generator=generator)


def classification_loss(output: Any, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the logits; in training, GoogLeNet's two auxiliary heads count 0.3 each and Inception
    v3's one 0.4, as their papers train them."""
    if isinstance(output, torch.Tensor):
        return functional.cross_entropy(output, labels)
    logits = getattr(output, "logits", None)
    if not isinstance(logits, torch.Tensor):
        raise ModelRunError(
            f"the classifier returned {type(output).__name__}; a classifier's forward returns its logits"
        )
    loss = functional.cross_entropy(logits, labels)
    weight = 0.4 if hasattr(output, "aux_logits") else 0.3
    for name in ("aux_logits", "aux_logits1", "aux_logits2"):
        aux = getattr(output, name, None)
        if isinstance(aux, torch.Tensor):
            loss = loss + weight * functional.cross_entropy(aux, labels)
    return loss
