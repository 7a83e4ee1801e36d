"""A tiny detection model with torchvision's train/eval contract: for trying the tool on a laptop and for
fast tests. Use it as ``architecture: pytest_mlestimate.tiny:tiny_detector`` (or ``tiny_segmenter`` for
instance segmentation)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TinyDetector(nn.Module):
    """Two strided convolutions and one box per cell; losses and outputs shaped like torchvision's, and
    post-processing with torchvision's knobs (``score_thresh``, ``nms_thresh``, ``detections_per_img``)."""

    def __init__(
        self,
        num_classes: int = 91,
        channels: int = 16,
        detections_per_img: int = 10,
        masks: bool = False,
        score_thresh: float = 0.05,
        nms_thresh: float = 0.5,
    ):
        super().__init__()
        self.num_classes = num_classes
        self.detections_per_img = detections_per_img
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.backbone = nn.Sequential(
            nn.Conv2d(3, channels, 3, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, stride=2, padding=1),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Conv2d(channels, num_classes, 1)
        self.box_regressor = nn.Conv2d(channels, 4, 1)
        self.mask_head = nn.Conv2d(channels, 1, 1) if masks else None

    def forward(
        self, images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]] | None = None
    ) -> dict[str, torch.Tensor] | list[dict[str, torch.Tensor]]:
        batch = _padded(images)
        height, width = batch.shape[-2:]
        scale = torch.tensor([width, height, width, height], dtype=batch.dtype, device=batch.device)
        features = self.backbone(batch)
        logits = self.classifier(features)
        boxes = self.box_regressor(features).sigmoid()
        if self.training:
            if targets is None:
                raise ValueError("targets are required in training mode")
            return self._losses(features, logits, boxes, targets, scale)
        return self._detections(features, logits, boxes, scale)

    def _losses(
        self,
        features: torch.Tensor,
        logits: torch.Tensor,
        boxes: torch.Tensor,
        targets: list[dict[str, torch.Tensor]],
        scale: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        labels = torch.stack([t["labels"][0] for t in targets])
        wanted = torch.stack([t["boxes"][0] for t in targets]) / scale
        losses = {
            "loss_classifier": F.cross_entropy(logits.mean(dim=(2, 3)), labels),
            "loss_box_reg": F.smooth_l1_loss(boxes.mean(dim=(2, 3)), wanted),
        }
        if self.mask_head is not None:
            masks = _padded([t["masks"][0][None].float() for t in targets])[:, 0]
            predicted = F.interpolate(self.mask_head(features), size=masks.shape[-2:], mode="bilinear")
            losses["loss_mask"] = F.binary_cross_entropy_with_logits(predicted[:, 0], masks)
        return losses

    def _detections(
        self, features: torch.Tensor, logits: torch.Tensor, boxes: torch.Tensor, scale: torch.Tensor
    ) -> list[dict[str, torch.Tensor]]:
        from torchvision.ops import batched_nms

        outputs = []
        scores, labels = logits.softmax(dim=1).flatten(2).max(dim=1)
        cells = boxes.flatten(2)
        for i in range(logits.shape[0]):
            candidates = torch.where(scores[i] > self.score_thresh)[0]
            centre = cells[i][:2, candidates].T
            size = cells[i][2:, candidates].T * 0.5 + 0.01
            xyxy = torch.cat([centre, (centre + size).clamp(max=1.0)], dim=1) * scale
            keep = batched_nms(xyxy, scores[i][candidates], labels[i][candidates], self.nms_thresh)
            keep = keep[: self.detections_per_img]
            result = {"boxes": xyxy[keep], "labels": labels[i][candidates[keep]], "scores": scores[i][candidates[keep]]}
            if self.mask_head is not None:
                mask = F.interpolate(self.mask_head(features[i : i + 1]), size=tuple(int(s) for s in scale[[1, 0]]))
                result["masks"] = mask.sigmoid().expand(len(keep), -1, -1, -1)
            outputs.append(result)
        return outputs


def _padded(images: list[torch.Tensor]) -> torch.Tensor:
    """The batch as one tensor, each image padded with zeros to the largest height and width, as torchvision's
    detection models batch images of mixed sizes."""
    height, width = max(i.shape[-2] for i in images), max(i.shape[-1] for i in images)
    batch = images[0].new_zeros(len(images), images[0].shape[0], height, width)
    for slot, image in zip(batch, images, strict=True):
        slot[:, : image.shape[-2], : image.shape[-1]].copy_(image)
    return batch


def tiny_detector(
    num_classes: int = 91,
    channels: int = 16,
    detections_per_img: int = 10,
    score_thresh: float = 0.05,
    nms_thresh: float = 0.5,
) -> TinyDetector:
    return TinyDetector(num_classes, channels, detections_per_img, False, score_thresh, nms_thresh)


def tiny_segmenter(
    num_classes: int = 91,
    channels: int = 16,
    detections_per_img: int = 10,
    score_thresh: float = 0.05,
    nms_thresh: float = 0.5,
) -> TinyDetector:
    return TinyDetector(num_classes, channels, detections_per_img, True, score_thresh, nms_thresh)
