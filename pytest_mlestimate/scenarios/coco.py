"""A dataset's shape from its COCO-format annotation file: checked entry by entry, then summarised.

The summary (``DatasetSummary``) is what an estimate needs of the data and no more: how many images and
instances, their sizes, the categories, the masks' and boxes' extents, and one row per image (its id, size
and instance count), with the file's SHA-256. It is small enough to travel in a scenario or a service request
instead of the annotation file. Mask areas are read with pycocotools (the ``coco`` extra).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from pytest_mlestimate.core.files import InputFileError, read_text_bounded
from pytest_mlestimate.scenarios.coco_file import MISSING, AnnotationFile, DatasetError, kind_of, require_list

MAX_ANNOTATION_BYTES = 1 << 30
"""The largest annotation file read (COCO's train2017 instances file is about 450 MB)."""

EDGE_PX = 1.0
"""How far outside its image a box or polygon point may reach (annotation tools round outwards)."""


class Spread(BaseModel):
    """Quantiles of one figure over the dataset."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min: float
    p50: float
    p90: float
    p99: float
    max: float
    mean: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread | None:
        if not values:
            return None
        import numpy as np

        found = np.asarray(values, dtype=float)
        p50, p90, p99 = np.percentile(found, [50, 90, 99])
        return cls(
            min=float(found.min()), p50=float(p50), p90=float(p90), p99=float(p99), max=float(found.max()),
            mean=float(found.mean()),
        )  # fmt: skip


class DatasetSummary(BaseModel):
    """What an estimate needs of a COCO dataset (``mlestimate dataset-stats`` writes it as JSON)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal[1] = 1
    source: str
    """The annotation file's name."""
    sha256: str
    """Of the annotation file's bytes: what a cache key or a baseline compares."""
    images: int
    annotations: int
    crowd: int
    """Annotations marked ``iscrowd`` (a crowd region, not an instance torchvision's recipes train on)."""
    categories: dict[str, str]
    """Category id (as text) to name."""
    num_classes: int
    """The largest category id plus one, as torchvision's detection models count classes (background is 0)."""
    masks: Literal["polygon", "rle", "mixed"] | None
    keypoints: int | None
    """Keypoints per instance, where the annotations carry them."""
    instances_per_image: Spread
    image_width: Spread
    image_height: Spread
    aspect_ratio: Spread
    """Width over height."""
    box_area_fraction: Spread | None
    """A box's area over its image's."""
    mask_area_fraction: Spread | None
    """A mask's area (pycocotools) over its image's."""
    per_image: list[tuple[int, int, int, int]]
    """(image id, width, height, instances), in the file's order; instances as training counts them
    (``trains_on``): no crowd region, no box under a pixel wide or high."""

    def digest(self) -> str:
        """SHA-256 of the summary's own content: what a cache key holds of a summary carried inline."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()

    def most_crowded(self, count: int = 5) -> list[tuple[int, int]]:
        """(image id, instances) of the images with the most instances, most first."""
        ranked = sorted(self.per_image, key=lambda row: (-row[3], row[0]))
        return [(row[0], row[3]) for row in ranked[:count]]

    def describe(self) -> str:
        crowded = ", ".join(f"{image} ({n})" for image, n in self.most_crowded(3))
        return (
            f"{self.source}: {self.images:,} images, {self.annotations:,} annotations ({self.crowd:,} crowd), "
            f"{len(self.categories)} categories (num_classes {self.num_classes}), masks: {self.masks or 'none'}, "
            f"keypoints: {self.keypoints or 'none'}; instances per image: median {self.instances_per_image.p50:g}, "
            f"max {self.instances_per_image.max:g}; images {self.image_width.min:g}-{self.image_width.max:g} px "
            f"wide, {self.image_height.min:g}-{self.image_height.max:g} px high; most crowded: {crowded}"
        )


def summarise_file(path: Path, max_bytes: int = MAX_ANNOTATION_BYTES) -> DatasetSummary:
    """Read, check and summarise a COCO annotation file; ``DatasetError`` names what is wrong and where."""
    summary, annotated = read_dataset(path, max_bytes)
    if not annotated:
        raise DatasetError(f"{path}: a summary already, not a COCO annotation file")
    return summary


def dataset_summary(path: str) -> DatasetSummary:
    """The summary of a scenario's ``dataset`` (relative paths from the working directory)."""
    return dataset_file(path)[0]


def dataset_file(path: str) -> tuple[DatasetSummary, bool]:
    """``read_dataset`` of a scenario's ``dataset``, read once per version of the file."""
    try:
        found = os.stat(path)
    except OSError as exc:
        raise DatasetError(f"{path}: cannot be read: {exc.strerror or exc}") from None
    return _read_once(os.path.abspath(path), found.st_mtime_ns, found.st_size)


@functools.lru_cache(maxsize=16)
def _read_once(path: str, _mtime_ns: int, _size: int) -> tuple[DatasetSummary, bool]:
    return read_dataset(Path(path))


def read_dataset(path: Path, max_bytes: int = MAX_ANNOTATION_BYTES) -> tuple[DatasetSummary, bool]:
    """A scenario's ``dataset``: the summary of a COCO annotation file (and True: batches can be drawn from its
    annotations, ``training_annotations``), or a summary ``mlestimate dataset-stats`` wrote (and False)."""
    file = AnnotationFile(path, max_bytes)
    if file.kind() != "start_map":
        raise DatasetError(f"{path}: a COCO annotation file is a JSON object with images, annotations, categories")
    images = file.value("images")
    if not isinstance(images, list) and file.kind("per_image") is not None:
        return _written_summary(path, max_bytes), False
    categories, sha256 = file.value("categories"), file.sha256()
    with contextlib.closing(file.entries("annotations")) as annotations:  # an error leaves no file open
        return summarise_entries(images, categories, annotations, path.name, sha256, str(path)), True


def _written_summary(path: Path, max_bytes: int) -> DatasetSummary:
    try:
        return DatasetSummary.model_validate_json(read_text_bounded(path, max_bytes))
    except InputFileError as exc:
        raise DatasetError(str(exc)) from None
    except ValueError as exc:
        first = str(exc).splitlines()[1:3]
        raise DatasetError(f"{path}: not a summary mlestimate dataset-stats wrote: {' '.join(first)}") from None


def trains_on(annotation: Mapping[str, Any]) -> bool:
    """An instance torchvision's reference training keeps: not a crowd region, a box at least a pixel each way."""
    _, _, w, h = annotation["bbox"]
    return not annotation.get("iscrowd", 0) and w >= 1 and h >= 1


def training_annotations(path: Path, summary: DatasetSummary, image_ids: Iterable[int]) -> dict[int, list[Any]]:
    """The instances training uses (``trains_on``) of the given images, from the file ``summary`` was read from:
    a file that changed since is an error, not batches from another dataset."""
    ids = set(image_ids)
    wanted = {row[0]: row[3] for row in summary.per_image if row[0] in ids}
    found: dict[int, list[Any]] = {image: [] for image in wanted}
    file = AnnotationFile(path, MAX_ANNOTATION_BYTES)
    changed = DatasetError(f"{path}: changed since it was read; estimate again")
    if file.sha256() != summary.sha256:
        raise changed
    with contextlib.closing(file.entries("annotations")) as annotations:
        for annotation in annotations:
            try:
                if annotation["image_id"] in found and trains_on(annotation):
                    found[annotation["image_id"]].append(annotation)
            except (KeyError, TypeError, ValueError):
                raise changed from None
    if any(len(found[image]) != count for image, count in wanted.items()):
        raise changed
    return found


def summarise(document: Any, source: str, sha256: str, where: str | None = None) -> DatasetSummary:
    """The summary of a parsed COCO document (``where`` names it in errors; ``source`` by default)."""
    where = where or source
    if not isinstance(document, Mapping):
        raise DatasetError(f"{where}: a COCO annotation file is a JSON object with images, annotations, categories")

    def annotations() -> Iterator[Any]:  # checked when the first is wanted, after the images and categories
        yield from require_list(document.get("annotations", MISSING), "annotations", where)

    images, categories = document.get("images", MISSING), document.get("categories", MISSING)
    return summarise_entries(images, categories, annotations(), source, sha256, where)


def summarise_entries(
    images_value: Any, categories_value: Any, annotations: Iterable[Any], source: str, sha256: str, where: str
) -> DatasetSummary:
    """The summary of a COCO file's three parts, the annotations taken one at a time. A value nested thousands
    deep (where a box belongs) is told as such, not as Python's recursion limit."""
    try:
        return _summarise_entries(images_value, categories_value, annotations, source, sha256, where)
    except RecursionError:
        raise DatasetError(f"{where}: nested too deep to be a COCO annotation file") from None


def _summarise_entries(
    images_value: Any, categories_value: Any, annotations: Iterable[Any], source: str, sha256: str, where: str
) -> DatasetSummary:
    images = _images(images_value, where)
    categories, keypoint_counts = _categories(categories_value, where)
    counts = dict.fromkeys(images, 0)
    box_fractions: list[float] = []
    mask_fractions: list[float] = []
    kinds: set[str] = set()
    keypoints: set[int] = set()
    crowd = total = 0
    for index, annotation in enumerate(annotations):
        total += 1
        at = f"{where}: annotations[{index}]"
        if not isinstance(annotation, Mapping):
            raise DatasetError(f"{at}: an annotation is an object, not {kind_of(annotation)}")
        image_id = _integer(annotation, "image_id", at)
        if image_id not in images:
            raise DatasetError(f"{at}.image_id: {image_id} is not the id of an image of the file")
        category = _integer(annotation, "category_id", at)
        if category not in categories:
            raise DatasetError(f"{at}.category_id: {category} is not one of the categories' ids")
        width, height = images[image_id]
        _, _, w, h = _box(annotation.get("bbox"), f"{at}.bbox", width, height)
        is_crowd = annotation.get("iscrowd", 0)
        if is_crowd not in (0, 1):
            raise DatasetError(f"{at}.iscrowd: {is_crowd!r} is not 0 or 1")
        crowd += is_crowd
        counts[image_id] += trains_on(annotation)
        box_fractions.append(w * h / (width * height))
        if "segmentation" in annotation and annotation["segmentation"] not in (None, []):
            kind, area = _mask_area(annotation["segmentation"], f"{at}.segmentation", width, height)
            kinds.add(kind)
            mask_fractions.append(area / (width * height))
        if annotation.get("keypoints") is not None:
            keypoints.add(_keypoints(annotation["keypoints"], f"{at}.keypoints", keypoint_counts.get(category)))
    if len(keypoints) > 1:
        raise DatasetError(f"{where}: annotations carry {sorted(keypoints)} keypoints: one count for all is allowed")
    per_image = [(image_id, size[0], size[1], counts[image_id]) for image_id, size in images.items()]
    return DatasetSummary(
        source=source,
        sha256=sha256,
        images=len(images),
        annotations=total,
        crowd=crowd,
        categories={str(c): name for c, name in sorted(categories.items())},
        num_classes=max(categories) + 1,
        masks=("mixed" if len(kinds) > 1 else next(iter(kinds))) if kinds else None,  # type: ignore[arg-type]
        keypoints=next(iter(keypoints)) if keypoints else None,
        instances_per_image=_spread([row[3] for row in per_image]),
        image_width=_spread([row[1] for row in per_image]),
        image_height=_spread([row[2] for row in per_image]),
        aspect_ratio=_spread([row[1] / row[2] for row in per_image]),
        box_area_fraction=Spread.of(box_fractions),
        mask_area_fraction=Spread.of(mask_fractions),
        per_image=per_image,
    )


def _spread(values: Sequence[float]) -> Spread:
    found = Spread.of(values)
    assert found is not None  # a file has at least one image
    return found


def _integer(entry: Mapping[str, Any], key: str, at: str) -> int:
    value = entry.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        shown = "missing" if key not in entry else repr(value)[:60]
        raise DatasetError(f"{at}.{key}: an integer is required, found {shown}")
    return value


def _images(value: Any, where: str) -> dict[int, tuple[int, int]]:
    images: dict[int, tuple[int, int]] = {}
    for index, image in enumerate(require_list(value, "images", where)):
        at = f"{where}: images[{index}]"
        if not isinstance(image, Mapping):
            raise DatasetError(f"{at}: an image is an object, not {kind_of(image)}")
        image_id = _integer(image, "id", at)
        width, height = _integer(image, "width", at), _integer(image, "height", at)
        if width <= 0 or height <= 0:
            raise DatasetError(f"{at}: width and height must be positive, found {width}x{height}")
        if image_id in images:
            raise DatasetError(f"{at}.id: {image_id} is the id of an earlier image too")
        images[image_id] = (width, height)
    if not images:
        raise DatasetError(f"{where}: images: the file has no image")
    return images


def _categories(value: Any, where: str) -> tuple[dict[int, str], dict[int, int]]:
    names: dict[int, str] = {}
    keypoints: dict[int, int] = {}
    for index, category in enumerate(require_list(value, "categories", where)):
        at = f"{where}: categories[{index}]"
        if not isinstance(category, Mapping):
            raise DatasetError(f"{at}: a category is an object, not {kind_of(category)}")
        category_id = _integer(category, "id", at)
        if category_id < 0 or category_id in names:
            raise DatasetError(f"{at}.id: {category_id} is negative or the id of an earlier category")
        name = category.get("name")
        if not isinstance(name, str):
            raise DatasetError(f"{at}.name: text is required, found {kind_of(name)}")
        names[category_id] = name
        if isinstance(category.get("keypoints"), list):
            keypoints[category_id] = len(category["keypoints"])
    if not names:
        raise DatasetError(f"{where}: categories: the file has no category")
    return names, keypoints


def _finite(values: Iterable[Any]) -> bool:
    return all(not isinstance(v, bool) and isinstance(v, int | float) and math.isfinite(v) for v in values)


def _box(value: Any, at: str, width: int, height: int) -> tuple[float, float, float, float]:
    if not isinstance(value, list) or len(value) != 4 or not _finite(value):
        raise DatasetError(f"{at}: [x, y, width, height] of finite numbers is required, found {repr(value)[:60]}")
    x, y, w, h = (float(v) for v in value)
    if w <= 0 or h <= 0:
        raise DatasetError(f"{at}: the box {value} has no area (width and height must be positive)")
    if x < -EDGE_PX or y < -EDGE_PX or x + w > width + EDGE_PX or y + h > height + EDGE_PX:
        raise DatasetError(f"{at}: the box {value} reaches outside its {width}x{height} image")
    return x, y, w, h


def _mask_area(value: Any, at: str, width: int, height: int) -> tuple[str, float]:
    """The mask's kind (polygon or rle) and its area in pixels."""
    mask = _coco_mask()
    if isinstance(value, list):
        for index, polygon in enumerate(value):
            if not isinstance(polygon, list) or len(polygon) < 6 or len(polygon) % 2 or not _finite(polygon):
                raise DatasetError(
                    f"{at}[{index}]: a polygon is a list of at least 3 x, y pairs of finite numbers, found "
                    f"{repr(polygon)[:60]}"
                )
            xs, ys = polygon[0::2], polygon[1::2]
            if min(xs) < -EDGE_PX or min(ys) < -EDGE_PX or max(xs) > width + EDGE_PX or max(ys) > height + EDGE_PX:
                raise DatasetError(f"{at}[{index}]: the polygon reaches outside its {width}x{height} image")
        rles = mask.frPyObjects(value, height, width)
        return "polygon", float(mask.area(mask.merge(rles)))
    if isinstance(value, Mapping):
        size, counts = value.get("size"), value.get("counts")
        if size != [height, width]:
            raise DatasetError(f"{at}.size: {size!r} is not its image's [height, width], [{height}, {width}]")
        if isinstance(counts, list) and _finite(counts) and all(isinstance(c, int) and c >= 0 for c in counts):
            if sum(counts) != width * height:
                raise DatasetError(f"{at}.counts: the runs cover {sum(counts)} pixels, the image {width * height}")
            return "rle", float(mask.area(mask.frPyObjects(dict(value), height, width)))
        if isinstance(counts, str):
            try:
                return "rle", float(mask.area({"size": [height, width], "counts": counts.encode("ascii")}))
            except (UnicodeEncodeError, ValueError) as exc:
                raise DatasetError(f"{at}.counts: not a compressed RLE ({exc})") from None
        raise DatasetError(f"{at}.counts: run lengths (a list of counts or compressed text) are required")
    raise DatasetError(f"{at}: polygons (a list) or an RLE (an object) are required, found {kind_of(value)}")


def _keypoints(value: Any, at: str, expected: int | None) -> int:
    if not isinstance(value, list) or len(value) % 3 or not _finite(value):
        raise DatasetError(f"{at}: x, y, visibility triples of numbers are required, found {repr(value)[:60]}")
    count = len(value) // 3
    if expected is not None and count != expected:
        raise DatasetError(f"{at}: {count} keypoints, where its category names {expected}")
    return count


def _coco_mask() -> Any:
    try:
        from pycocotools import mask
    except ImportError:
        raise DatasetError("reading masks needs pycocotools: pip install 'pytest-mlestimate[coco]'") from None
    return mask
