"""Batches shaped like a scenario's dataset: its images' sizes and its instances.

From a COCO annotation file, an image's batch entry is its real size (the pixels stay synthetic) with its real
boxes, labels (the category ids, as torchvision's COCO recipes train on them), masks rasterised from its
polygons or RLE, and keypoints; crowd regions and boxes without area are left out, as torchvision's reference
training does, and so are images left with no instance. From a summary (``mlestimate dataset-stats``), which
carries no annotation, an image keeps its real size and instance count, and its boxes are drawn as a synthetic
batch's are.

Time is measured on ``SAMPLE_BATCHES`` batches drawn (seeded) from the images, one after another, as an epoch would
visit them: a stratified sample, one image from each of equal strata of the images ranked by instance count and
size, so that a skewed dataset's few batches still hold its mix of crowded and sparse images (a plain random sample
of 8 batches of 2 from 20 crowded images timed Mask R-CNN 9 % under a full epoch). Peak memory is set by the worst
batch, which a sample rarely holds: the batch of the largest images (the padded input a batch costs is its widest
by its tallest image) and the batch of the most crowded images (masks and the ROI heads' work grow with the
instances) are each trained on once after the measured steps, so the phase's peaks include them, and the result
names their image ids. Before them, untimed steps go on through batches in an epoch's shuffled order until the
memory high-water stops rising (``PassSteps``): an allocator that keeps what it freed grows over a pass of varying
sizes (glibc's heap: a plain Mask R-CNN loop's peak RSS rose from 1,409 to 2,026 MiB over its first 35 steps of
small images before a crowded batch added 960 MiB), and the worst batch of a real epoch lands on that grown heap.
"""

from __future__ import annotations

import bisect
import random
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pytest_mlestimate.core.errors import ModelBuildError
from pytest_mlestimate.profiling.synthetic import make_target
from pytest_mlestimate.scenarios.architectures import TargetKind
from pytest_mlestimate.scenarios.coco import DatasetError, DatasetSummary, dataset_file, training_annotations

SAMPLE_BATCHES = 8
"""Batches the time is measured on, in turn; the measured steps cycle through them."""

DATA_SEED = 0


@dataclass(frozen=True)
class PassSteps:
    """When the untimed pass before the worst batches stops: once the high-water has risen less than ``rise``
    (a fraction) over the last ``patience`` steps, after ``most`` steps, or when the epoch's batches run out.

    The heap grows in steps with pauses between them: a patience of 8 stopped one Mask R-CNN pass after 13 steps
    and another after 30, and the first left the peak 5.4 % under the plain loop's."""

    most: int = 64
    patience: int = 16
    rise: float = 0.01

    def steady(self, high_water: Sequence[int]) -> bool:
        return len(high_water) > self.patience and high_water[-1] <= high_water[-1 - self.patience] * (1 + self.rise)

    def describe_steady(self) -> str:
        return f"the high-water rose under {self.rise * 100:g} % over its last {self.patience} steps"


PASS_STEPS = PassSteps()


@dataclass
class DrawnBatch:
    images: list[torch.Tensor]
    targets: list[dict[str, torch.Tensor]]
    ids: list[int]


@dataclass(frozen=True)
class _Image:
    id: int
    width: int
    height: int
    instances: int


@dataclass
class DatasetBatches:
    summary: DatasetSummary
    annotated: bool
    """True: targets from the annotation file; False: synthetic targets at the summary's sizes and counts."""
    sample: list[DrawnBatch]
    """Held in memory for the whole profile, as a data loader holds the batches it has prepared."""
    worst_images: dict[str, list[_Image]]
    """``largest images`` and ``most instances``: built only when trained on (``worst``), one at a time, so that
    the peak holds one of them, as a training run would."""
    build: Callable[..., DrawnBatch]
    """A batch of the given images (pixels and synthetic targets drawn from the given generator, else the one the
    sample was drawn from)."""
    group_factor: int | None = None
    """Aspect-ratio grouping of the batches (torchvision's ``--aspect-ratio-group-factor``), if any."""
    pass_images: list[list[_Image]] = field(default_factory=list)
    """An epoch's first batches in its shuffled order, built one at a time when trained on (``passing``)."""
    pass_trained: int = 0
    pass_stop: str = ""

    def worst(self) -> Iterator[DrawnBatch]:
        for images in self.worst_images.values():
            yield self.build(images)

    def passing(self) -> Iterator[DrawnBatch]:
        generator = torch.Generator().manual_seed(DATA_SEED + 1)  # the worst batches' draws never follow the pass's
        for images in self.pass_images:
            yield self.build(images, generator)

    def describe(self) -> dict[str, Any]:
        return {
            "source": self.summary.source,
            "sha256": self.summary.sha256,
            "images": self.summary.images,
            "instances": sum(row[3] for row in self.summary.per_image),
            "targets": "the annotation file's" if self.annotated else "synthetic, at the summary's sizes and counts",
            "sample_seed": DATA_SEED,
            "aspect_ratio_group_factor": self.group_factor,
            "sampled_batches": [batch.ids for batch in self.sample],
            "worst_batches": {name: _describe(images) for name, images in self.worst_images.items()},
            "pass_before_worst": {"steps": self.pass_trained, "stopped": self.pass_stop or "not run"},
            "figures": "time: the sampled batches' steps (their mean, with its interval, in timings); peaks: "
            "also untimed steps through an epoch's batches until the memory high-water stopped rising, then one "
            "training step on each worst batch",
        }


def _describe(images: Sequence[_Image]) -> dict[str, Any]:
    return {
        "image_ids": [i.id for i in images],
        "padded": [max(i.height for i in images), max(i.width for i in images)],
        "instances": sum(i.instances for i in images),
    }


def draw_batches(
    dataset: str | DatasetSummary,
    batch_size: int,
    kind: TargetKind,
    num_classes: int,
    group_factor: int | None = None,
) -> DatasetBatches:
    """The sample and the worst batches of a scenario's dataset: a file's path, or a summary carried inline
    (``group_factor``: batches from one aspect-ratio group; a ``ModelBuildError`` names what is wrong)."""
    if isinstance(dataset, DatasetSummary):
        summary, annotated, name = dataset, False, f"summary of {dataset.source}"
    else:
        try:
            summary, annotated = dataset_file(dataset)
        except DatasetError as exc:
            raise ModelBuildError(f"dataset '{dataset}': {exc}") from None
        name = dataset
    images = [_Image(*row) for row in summary.per_image if row[3] > 0]
    if not images:
        raise ModelBuildError(
            f"dataset '{name}': no image has an instance to train on (crowd regions and boxes under a pixel excluded)"
        )
    if annotated and summary.num_classes > num_classes:
        raise ModelBuildError(
            f"dataset '{name}': its category ids reach {summary.num_classes - 1}, and the model has "
            f"{num_classes} classes; num_classes must be at least {summary.num_classes} (the largest id plus one)"
        )
    if kind == "masks" and annotated and summary.masks is None:
        raise ModelBuildError(f"dataset '{name}': the model trains on masks, and the annotations carry none")
    if kind == "keypoints" and annotated and summary.keypoints is None:
        raise ModelBuildError(f"dataset '{name}': the model trains on keypoints, and the annotations carry none")
    generator = torch.Generator().manual_seed(DATA_SEED)
    draw = random.Random(DATA_SEED)
    size = min(batch_size, len(images))

    groups = aspect_ratio_groups(images, group_factor) if group_factor is not None else [images]
    if len(groups) == 1 and len(images) >= SAMPLE_BATCHES * size:
        spread = _stratified(draw, images, SAMPLE_BATCHES * size)
        chosen = [spread[k * size : (k + 1) * size] for k in range(SAMPLE_BATCHES)]
    elif len(groups) > 1 and len(images) >= SAMPLE_BATCHES:
        chosen = [_drawn(draw, images, groups, size, first) for first in _stratified(draw, images, SAMPLE_BATCHES)]
    else:  # fewer images than the sample would take: batches at random
        chosen = [_drawn(draw, images, groups, size) for _ in range(SAMPLE_BATCHES)]
    worst = {
        "largest images": max(
            (_first(group, size, lambda i: (-i.width * i.height, -i.instances, i.id)) for group in groups),
            key=lambda chosen: (_padded_area(chosen), -chosen[0].id),
        ),
        "most instances": max(
            (_first(group, size, lambda i: (-i.instances, -i.width * i.height, i.id)) for group in groups),
            key=lambda chosen: (sum(i.instances for i in chosen), -chosen[0].id),
        ),
    }
    passing = _epoch_order(random.Random(DATA_SEED + 1), groups, size)[: PASS_STEPS.most]
    wanted = {image.id for images_of in [*chosen, *worst.values(), *passing] for image in images_of}
    annotations = None
    if isinstance(dataset, str) and annotated:
        try:
            annotations = training_annotations(Path(dataset), summary, wanted)
        except DatasetError as exc:
            raise ModelBuildError(f"dataset '{dataset}': {exc}") from None

    def batch(chosen: Sequence[_Image], generator: torch.Generator = generator) -> DrawnBatch:
        found = DrawnBatch([], [], [])
        for image in chosen:
            found.images.append(torch.rand(3, image.height, image.width, generator=generator))
            if annotations is not None:
                found.targets.append(_target(annotations[image.id], image, kind))
            else:
                found.targets.append(
                    make_target(image.height, image.width, image.instances, num_classes, kind, generator)
                )
            found.ids.append(image.id)
        return found

    sample = [batch(images_of) for images_of in chosen]
    return DatasetBatches(summary, annotated, sample, worst, batch, group_factor, passing)


def _epoch_order(draw: random.Random, groups: Sequence[Sequence[_Image]], size: int) -> list[list[_Image]]:
    """An epoch's full batches in a shuffled order: each group's images shuffled and cut into batches (a short
    last one left out, as ``drop_last`` does), the batches then shuffled together."""
    batches: list[list[_Image]] = []
    for group in groups:
        shuffled = list(group)
        draw.shuffle(shuffled)
        batches.extend(shuffled[first : first + size] for first in range(0, len(shuffled) - size + 1, size))
    draw.shuffle(batches)
    return batches


def aspect_ratio_groups(images: Sequence[_Image], factor: int) -> list[list[_Image]]:
    """The images split as torchvision's reference training groups them (``GroupedBatchSampler`` over
    ``_quantize``): width over height against the bin edges ``2 ** linspace(-1, 1, 2 * factor + 1)``."""
    edges = [2 ** (step / factor - 1) for step in range(2 * factor + 1)] if factor else [1.0]
    found: dict[int, list[_Image]] = defaultdict(list)
    for image in images:
        found[bisect.bisect_right(edges, image.width / image.height)].append(image)
    return [found[key] for key in sorted(found)]


def _stratified(draw: random.Random, images: Sequence[_Image], count: int) -> list[_Image]:
    """``count`` distinct images (``count`` at most the images'), one drawn from each of ``count`` equal strata of
    the images ranked by instance count, then area, in a random order."""
    ranked = sorted(images, key=lambda i: (i.instances, i.width * i.height, i.id))
    chosen = [ranked[draw.randrange(k * len(ranked) // count, (k + 1) * len(ranked) // count)] for k in range(count)]
    draw.shuffle(chosen)
    return chosen


def _drawn(
    draw: random.Random,
    images: Sequence[_Image],
    groups: Sequence[Sequence[_Image]],
    size: int,
    first: _Image | None = None,
) -> list[_Image]:
    """One batch as a shuffled epoch meets it: any images; grouped, an image's group-mates (``first``'s, else a
    random image's; repeated where the group is smaller than a batch, as the grouped sampler completes its last
    batches)."""
    if len(groups) == 1:
        return draw.sample(list(images), size)
    first = first or draw.choice(list(images))
    group = next(g for g in groups if first in g)
    others = [image for image in group if image is not first]
    chosen = [first, *draw.sample(others, min(size - 1, len(others)))]
    while len(chosen) < size:
        chosen.append(draw.choice(group))
    return chosen


def _first(images: Sequence[_Image], size: int, order: Callable[[_Image], Any]) -> list[_Image]:
    return sorted(images, key=order)[:size]


def _padded_area(images: Sequence[_Image]) -> int:
    return max(i.height for i in images) * max(i.width for i in images)


def _target(annotations: Sequence[Mapping[str, Any]], image: _Image, kind: TargetKind) -> dict[str, torch.Tensor]:
    boxes = torch.tensor([a["bbox"] for a in annotations], dtype=torch.float32)
    boxes[:, 2:] += boxes[:, :2]
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, image.width)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, image.height)
    boxes[:, 2:] = torch.maximum(boxes[:, 2:], boxes[:, :2] + 1.0)
    target = {"boxes": boxes, "labels": torch.tensor([a["category_id"] for a in annotations], dtype=torch.int64)}
    if kind == "masks":
        target["masks"] = torch.stack([_mask(a.get("segmentation"), a["bbox"], image) for a in annotations])
    elif kind == "keypoints":
        rows = [a.get("keypoints") or [] for a in annotations]
        count = max(len(row) for row in rows) // 3
        target["keypoints"] = torch.tensor(
            [row if len(row) == 3 * count else [0.0] * (3 * count) for row in rows], dtype=torch.float32
        ).reshape(len(rows), count, 3)
    return target


def _mask(segmentation: Any, bbox: Sequence[float], image: _Image) -> torch.Tensor:
    """The instance's mask at its image's size: its polygons or RLE, rasterised by pycocotools; its box where
    the annotation has no segmentation."""
    height, width = image.height, image.width
    if not segmentation:
        mask = torch.zeros(height, width, dtype=torch.uint8)
        x, y, w, h = (round(v) for v in bbox)
        mask[y : y + max(h, 1), x : x + max(w, 1)] = 1
        return mask
    from pycocotools import mask as coco_mask  # the summary read the masks already, so it is installed

    if isinstance(segmentation, list):
        rle = coco_mask.merge(coco_mask.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation.get("counts"), list):
        rle = coco_mask.frPyObjects(dict(segmentation), height, width)
    else:
        rle = {"size": [height, width], "counts": segmentation["counts"].encode("ascii")}
    return torch.from_numpy(coco_mask.decode(rle)).to(torch.uint8)
