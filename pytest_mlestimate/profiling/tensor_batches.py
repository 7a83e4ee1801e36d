"""The families that train on one batch tensor, and their losses as their reference recipes compute them:
classification (images, a label each), video classification (clips, a label each), semantic segmentation
(images, a label per pixel) and causal language models (token ids, the same ids as labels: the model shifts
them and computes its own loss)."""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional

from pytest_mlestimate.core.errors import ModelRunError

DEFAULT_CLIP_LENGTH = 16
"""Frames per clip unless a scenario sets ``clip_length`` (torchvision's video recipe's ``--clip-len``)."""
IGNORED_PIXEL = 255
"""The label torchvision's segmentation recipe leaves out of the loss (VOC's object borders)."""


def tensor_batch(
    task_type: str,
    batch_size: int,
    image_size: tuple[int, int],
    num_classes: int,
    clip_length: int = DEFAULT_CLIP_LENGTH,
    seed: int = 0,
    vocabulary: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets): images [B, 3, H, W] or clips [B, 3, T, H, W]; a label per image or clip, or per pixel;
    or token ids [B, sequence length] (``image_size`` is [1, length]) drawn from ``vocabulary``."""
    generator = torch.Generator().manual_seed(seed)
    height, width = image_size
    if task_type == "causal-lm":
        tokens = torch.randint(0, vocabulary or 32_000, (batch_size, width), generator=generator)
        return tokens, tokens
    if task_type == "video-classification":
        inputs = torch.rand(batch_size, 3, clip_length, height, width, generator=generator)
    else:
        inputs = torch.rand(batch_size, 3, height, width, generator=generator)
    shape = (batch_size, height, width) if task_type == "semantic-segmentation" else (batch_size,)
    return inputs, torch.randint(0, num_classes, shape, generator=generator)


def tensor_loss(task_type: str, model: Any, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The model's forward pass on ``inputs`` and its loss against ``targets``."""
    if task_type == "causal-lm":
        return model(input_ids=inputs, labels=targets).loss
    if task_type == "semantic-segmentation":
        return segmentation_loss(model(inputs), targets)
    return classification_loss(model(inputs), targets)


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


def segmentation_loss(output: Any, labels: torch.Tensor) -> torch.Tensor:
    """Pixel-wise cross-entropy of ``out``, plus half of the auxiliary head's (``aux``) where the model has one."""
    if not isinstance(output, dict) or "out" not in output:
        raise ModelRunError(
            f"the segmenter returned {type(output).__name__}; torchvision's segmenters return a dict with 'out'"
        )
    loss = functional.cross_entropy(output["out"], labels, ignore_index=IGNORED_PIXEL)
    if "aux" in output:
        loss = loss + 0.5 * functional.cross_entropy(output["aux"], labels, ignore_index=IGNORED_PIXEL)
    return loss
