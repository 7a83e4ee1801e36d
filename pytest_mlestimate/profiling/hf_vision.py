"""Hugging Face detectors (the DETR family: ``detr``, ``conditional_detr``, ``deformable_detr``, ``rt_detr``,
``yolos``, ...) and universal segmenters (``mask2former``, ``maskformer``) measured as torchvision's detectors
are: the wrapper takes a list of images of any sizes and torchvision's targets (boxes as corners in pixels,
labels, masks), so synthetic batches, a dataset's batches, capacity and the breakdown need nothing new.

What the model computes on is what its image processor would hand it: the images padded to the batch's largest
(``pixel_mask`` marks the real pixels, where the model takes one), boxes as centre and size over the padded size,
one binary mask per instance padded with the image. A model whose forward takes other inputs (an OCR detector
without labels, OneFormer's task inputs) is refused when it is built. The processor's resize and normalisation
belong to the data pipeline, so the scenario's ``image_size`` is the size after them (DETR's processor: shortest
side 800, longest at most 1333). Inference is the model's forward pass, one prediction per query; the
processor's post-processing is not measured.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from pytest_mlestimate.core.errors import ModelBuildError


class HuggingFaceDetector(nn.Module):
    """A Hugging Face object-detection (``masks`` False) or universal-segmentation model (``masks`` True) in
    torchvision's detection contract: in training ``forward(images, targets)`` returns ``{"loss": ...}``, the
    model's own weighted loss; in evaluation ``forward(images)`` returns the model's output."""

    def __init__(self, model: nn.Module, masks: bool, architecture: str) -> None:
        super().__init__()
        self.model = model
        self.masks = masks
        self.queries: int | None = getattr(getattr(model, "config", None), "num_queries", None)
        parameters = inspect.signature(model.forward).parameters
        needs = {"pixel_values", "mask_labels", "class_labels"} if masks else {"pixel_values", "labels"}
        required = {
            name
            for name, parameter in parameters.items()
            if parameter.default is inspect.Parameter.empty
            and parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)
        }
        if not needs <= parameters.keys() or required - needs:
            task = "instance" if masks else "detection"
            missing = sorted(needs - parameters.keys()) or sorted(required - needs)
            raise ModelBuildError(
                f"architecture '{architecture}' builds {type(model).__name__}, which task_type '{task}' cannot "
                f"train: its forward {'takes no' if needs - parameters.keys() else 'also needs'} "
                f"{', '.join(missing)}; measured: detectors that take labels (the DETR family: detr, "
                "conditional_detr, deformable_detr, rt_detr, ...) as 'detection', universal segmenters that take "
                "mask_labels and class_labels (mask2former, maskformer) as 'instance'"
            )
        self.pixel_mask = "pixel_mask" in parameters

    @property
    def breakdown_root(self) -> nn.Module:
        """The breakdown shows the model's own parts, not this wrapper's one child."""
        return self.model

    def forward(self, images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]] | None = None) -> Any:
        pixel_values, pixel_mask = _padded(images)
        inputs = {"pixel_values": pixel_values, **({"pixel_mask": pixel_mask} if self.pixel_mask else {})}
        if targets is None:
            return self.model(**inputs)
        height, width = pixel_values.shape[-2:]
        if self.masks:
            masks = [_pad(t["masks"].to(pixel_values.dtype), height, width) for t in targets]
            found = self.model(**inputs, mask_labels=masks, class_labels=[t["labels"] for t in targets])
        else:
            labels = [{"class_labels": t["labels"], "boxes": _centre_size(t["boxes"], height, width)} for t in targets]
            found = self.model(**inputs, labels=labels)
        if getattr(found, "loss", None) is None:
            raise ModelBuildError(f"{type(self.model).__name__} computed no loss from its labels")
        return {"loss": found.loss}


def predictions_per_image(output: Any) -> int | None:
    """The queries a detector's or segmenter's output holds per image (its class logits' second dimension)."""
    for name in ("logits", "class_queries_logits"):
        logits = getattr(output, name, None)
        if isinstance(logits, torch.Tensor) and logits.dim() == 3:
            return int(logits.shape[1])
    return None


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


def _centre_size(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Corners in pixels to (centre x, centre y, width, height) over the padded batch's width and height, as
    DETR's image processor normalises them once it has padded the batch."""
    x0, y0, x1, y1 = boxes.unbind(-1)
    found = torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], dim=-1)
    return found / found.new_tensor([width, height, width, height])
