"""Synthetic batches of a scenario's shape, valid for torchvision's detection training contract."""

from __future__ import annotations

import torch

from pytest_mlestimate.scenarios.architectures import TargetKind


def make_images(count: int, height: int, width: int, generator: torch.Generator) -> list[torch.Tensor]:
    return [torch.rand(3, height, width, generator=generator) for _ in range(count)]


def make_target(
    height: int,
    width: int,
    objects: int,
    num_classes: int,
    kind: TargetKind,
    generator: torch.Generator,
    num_keypoints: int = 17,
) -> dict[str, torch.Tensor]:
    """Boxes x1y1x2y2 with positive size inside the image, labels in [1, num_classes), and masks or
    keypoints inside each box when the architecture trains on them."""
    size = torch.tensor([width, height, width, height], dtype=torch.float32)
    corner = torch.rand(objects, 2, generator=generator) * 0.7
    extent = 0.05 + torch.rand(objects, 2, generator=generator) * 0.25
    boxes = torch.cat([corner, corner + extent], dim=1).clamp(max=1.0) * size
    boxes[:, 2:] = torch.maximum(boxes[:, 2:], boxes[:, :2] + 1.0)
    target = {
        "boxes": boxes,
        "labels": torch.randint(1, max(num_classes, 2), (objects,), generator=generator, dtype=torch.int64),
    }
    if kind == "masks":
        masks = torch.zeros(objects, height, width, dtype=torch.uint8)
        for i, (x1, y1, x2, y2) in enumerate(boxes.round().to(torch.int64).tolist()):
            masks[i, y1:y2, x1:x2] = 1
        target["masks"] = masks
    elif kind == "keypoints":
        low, high = boxes[:, None, :2], boxes[:, None, 2:]
        xy = low + torch.rand(objects, num_keypoints, 2, generator=generator) * (high - low)
        target["keypoints"] = torch.cat([xy, torch.ones(objects, num_keypoints, 1)], dim=2)
    return target


def make_batch(
    batch_size: int,
    image_size: tuple[int, int],
    objects: int,
    num_classes: int,
    kind: TargetKind,
    seed: int = 0,
    num_keypoints: int = 17,
) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    generator = torch.Generator().manual_seed(seed)
    height, width = image_size
    images = make_images(batch_size, height, width, generator)
    targets = [make_target(height, width, objects, num_classes, kind, generator, num_keypoints) for _ in images]
    return images, targets
