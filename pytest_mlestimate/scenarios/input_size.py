"""The image size a model really computes on, worked out from its scenario without importing torch.

torchvision's detection models resize every image themselves (``GeneralizedRCNNTransform``), so a
scenario's ``image_size`` says little about their cost: Faster R-CNN scales a 64x64 image up to 800x800,
and ``model_kwargs`` such as ``min_size`` move it anywhere. The rules below follow torchvision's code:

* Faster/Mask/Keypoint R-CNN, RetinaNet, FCOS: the scale is ``min(min_size / shorter side, max_size /
  longer side)``; each side becomes ``int(side * scale)``; a ``fixed_size`` (width, height) replaces both.
  Training picks one of several ``min_size`` values at random, inference takes the last one. The batch is
  then padded up to a multiple of ``size_divisible`` (32).
* SSD and SSDlite resize to their fixed size (300x300, 320x320), padded to a multiple of 1; their builders
  refuse size keywords (they set them themselves).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from pytest_mlestimate.core.errors import brief
from pytest_mlestimate.scenarios.architectures import TENSOR_TASKS, TORCHVISION
from pytest_mlestimate.scenarios.scenario import Scenario

SIZE_KWARGS = frozenset({"min_size", "max_size", "fixed_size", "size_divisible"})
"""The model_kwargs that decide the size a torchvision detection model computes on."""


@dataclass(frozen=True)
class Resize:
    """A model's own resize: ``min_size`` choices and ``max_size``, or a ``fixed`` (width, height), then
    padding to a multiple of ``divisible``."""

    min_size: tuple[float, ...] = (800,)
    max_size: float = 1333
    fixed: tuple[int, int] | None = None
    divisible: int = 32


_DEFAULTS: dict[str, Resize] = {
    "fasterrcnn_mobilenet_v3_large_320_fpn": Resize((320,), 640),
    "keypointrcnn_resnet50_fpn": Resize((640, 672, 704, 736, 768, 800), 1333),
    "ssd300_vgg16": Resize(fixed=(300, 300), divisible=1),
    "ssdlite320_mobilenet_v3_large": Resize(fixed=(320, 320), divisible=1),
}
_FIXED_SIZE_FAMILIES = frozenset({"SSD", "SSDlite"})


class InputSizeError(ValueError):
    """A size keyword that cannot be a size: ``field`` names it, ``message`` says its value and what is allowed."""

    def __init__(self, name: str, message: str) -> None:
        self.field = f"model_kwargs.{name}"
        self.message = message
        super().__init__(f"{self.field}: {message}")


def model_resize(scenario: Scenario) -> Resize | None:
    """The resize the scenario's model applies, with its model_kwargs; None for a custom factory (it computes on
    whatever it does with ``image_size``)."""
    known = TORCHVISION.get(scenario.architecture)
    if known is None or known.task_type in TENSOR_TASKS:
        return None  # a classifier, segmenter or video model computes on image_size as given
    default = _DEFAULTS.get(scenario.architecture, Resize())
    kwargs = scenario.model_kwargs
    if known.family in _FIXED_SIZE_FAMILIES:
        given = sorted(SIZE_KWARGS & set(kwargs))
        if given:
            width, height = default.fixed or (0, 0)
            raise InputSizeError(
                given[0],
                f"{scenario.architecture} always resizes to {height}x{width} and takes no {given[0]} (its builder "
                "sets it); allowed: leave it out",
            )
        return default
    min_size = default.min_size
    if "min_size" in kwargs:
        raw = kwargs["min_size"]
        values = raw if isinstance(raw, list) else [raw]
        if not values:
            raise InputSizeError("min_size", "an empty list; allowed: a positive number or a list of them")
        min_size = tuple(_positive("min_size", value) for value in values)
    max_size = _positive("max_size", kwargs["max_size"]) if "max_size" in kwargs else default.max_size
    fixed = default.fixed
    if kwargs.get("fixed_size") is not None:
        raw = kwargs["fixed_size"]
        if not (isinstance(raw, list) and len(raw) == 2):
            raise InputSizeError("fixed_size", f"{brief(raw)}; allowed: [width, height], positive integers")
        fixed = (_positive_int("fixed_size", raw[0]), _positive_int("fixed_size", raw[1]))
    divisible = default.divisible
    if "size_divisible" in kwargs:
        divisible = _positive_int("size_divisible", kwargs["size_divisible"])
    return Resize(min_size, max_size, fixed, divisible)


def resized(image_size: tuple[int, int], resize: Resize) -> tuple[int, int]:
    """(height, width) after the model's resize, before padding: the largest of its ``min_size`` choices."""
    if resize.fixed is not None:
        return resize.fixed[1], resize.fixed[0]
    height, width = image_size
    best = (0, 0)
    for min_size in resize.min_size:
        scale = min(min_size / min(height, width), resize.max_size / max(height, width))
        size = (height * scale, width * scale)
        if not all(math.isfinite(side) for side in size):
            raise InputSizeError(
                "max_size",
                f"{brief(resize.max_size)} with min_size {brief(min_size)} makes an image of unbounded size; allowed: "
                "sizes of a few thousand pixels at most",
            )
        best = max(best, (int(size[0]), int(size[1])))
    return best


def effective_image_size(scenario: Scenario) -> tuple[int, int] | None:
    """(height, width) of the batch the model computes on, after its own resize and padding, as the engine's
    measured ``effective_input_size``; None for a custom factory. Raises InputSizeError for a size keyword that
    is not a size."""
    resize = model_resize(scenario)
    if resize is None:
        return None
    height, width = resized(scenario.image_size, resize)
    step = resize.divisible
    return -(-height // step) * step, -(-width // step) * step


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputSizeError(name, f"{brief(value)} is not a number; allowed: a positive number")
    try:
        return float(value)
    except OverflowError:
        return math.inf


def _positive(name: str, value: Any) -> float:
    number = _number(name, value)
    if not number > 0:
        raise InputSizeError(name, f"{brief(value)}; allowed: a positive number")
    return value if isinstance(value, int) and value < 2**53 else number  # an int divides as torchvision's does


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputSizeError(name, f"{brief(value)}; allowed: a positive integer")
    return value
