"""Hugging Face detectors (the DETR family: ``detr``, ``conditional_detr``, ``deformable_detr``, ``rt_detr``,
``yolos``, ...) and universal segmenters (``mask2former``, ``maskformer``) measured as torchvision's detectors
are: the wrapper takes a list of images of any sizes and torchvision's targets (boxes as corners in pixels,
labels, masks), so synthetic batches, a dataset's batches, capacity and the breakdown need nothing new.

What the model computes on is what its image processor would hand it: the images padded to the batch's largest
(``pixel_mask`` marks the real pixels), boxes as centre and size over their image's size, one binary mask per
instance padded with the image. The processor's resize and normalisation belong to the data pipeline, so the
scenario's ``image_size`` is the size after them (DETR's processor: shortest side 800, longest at most 1333).
Inference is the model's forward pass; the processor's post-processing is not measured.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class HuggingFaceDetector(nn.Module):
    """A Hugging Face object-detection (``masks`` False) or universal-segmentation model (``masks`` True) in
    torchvision's detection contract: in training ``forward(images, targets)`` returns ``{"loss": ...}``, the
    model's own weighted loss; in evaluation ``forward(images)`` returns the model's output."""

    def __init__(self, model: nn.Module, masks: bool) -> None:
        super().__init__()
        self.model = model
        self.masks = masks

    def forward(self, images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]] | None = None) -> Any:
        pixel_values, pixel_mask = _padded(images)
        if targets is None:
            return self.model(pixel_values=pixel_values, pixel_mask=pixel_mask)
        if self.masks:
            height, width = pixel_values.shape[-2:]
            masks = [_pad(t["masks"].to(pixel_values.dtype), height, width) for t in targets]
            classes = [t["labels"] for t in targets]
            found = self.model(
                pixel_values=pixel_values, pixel_mask=pixel_mask, mask_labels=masks, class_labels=classes
            )
        else:
            labels = [
                {"class_labels": t["labels"], "boxes": _centre_size(t["boxes"], image)}
                for t, image in zip(targets, images, strict=True)
            ]
            found = self.model(pixel_values=pixel_values, pixel_mask=pixel_mask, labels=labels)
        return {"loss": found.loss}


def _padded(images: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    height = max(image.shape[-2] for image in images)
    width = max(image.shape[-1] for image in images)
    pixel_values = images[0].new_zeros((len(images), images[0].shape[0], height, width))
    pixel_mask = torch.zeros((len(images), height, width), dtype=torch.long, device=images[0].device)
    for index, image in enumerate(images):
        pixel_values[index, :, : image.shape[-2], : image.shape[-1]].copy_(image)
        pixel_mask[index, : image.shape[-2], : image.shape[-1]] = 1
    return pixel_values, pixel_mask


def _pad(masks: torch.Tensor, height: int, width: int) -> torch.Tensor:
    return nn.functional.pad(masks, (0, width - masks.shape[-1], 0, height - masks.shape[-2]))


def _centre_size(boxes: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """Corners in pixels to (centre x, centre y, width, height) over the image's width and height."""
    height, width = image.shape[-2:]
    x0, y0, x1, y1 = boxes.unbind(-1)
    found = torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], dim=-1)
    return found / found.new_tensor([width, height, width, height])
