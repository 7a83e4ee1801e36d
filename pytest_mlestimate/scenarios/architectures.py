"""The detection architectures the engine knows, described without importing torchvision.

Validation and the pytest plugin's collection read this table; only the profiler imports the
builders themselves.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Literal

from pytest_mlestimate.core.errors import brief

TaskType = Literal["detection", "instance"]
TargetKind = Literal["boxes", "masks", "keypoints"]


@dataclass(frozen=True)
class Architecture:
    name: str
    task_type: TaskType
    targets: TargetKind
    family: str
    default_num_classes: int = 91


_TABLE = [
    Architecture("fasterrcnn_resnet50_fpn", "detection", "boxes", "Faster R-CNN"),
    Architecture("fasterrcnn_resnet50_fpn_v2", "detection", "boxes", "Faster R-CNN"),
    Architecture("fasterrcnn_mobilenet_v3_large_fpn", "detection", "boxes", "Faster R-CNN"),
    Architecture("fasterrcnn_mobilenet_v3_large_320_fpn", "detection", "boxes", "Faster R-CNN"),
    Architecture("maskrcnn_resnet50_fpn", "instance", "masks", "Mask R-CNN"),
    Architecture("maskrcnn_resnet50_fpn_v2", "instance", "masks", "Mask R-CNN"),
    Architecture("keypointrcnn_resnet50_fpn", "detection", "keypoints", "Keypoint R-CNN", 2),
    Architecture("retinanet_resnet50_fpn", "detection", "boxes", "RetinaNet"),
    Architecture("retinanet_resnet50_fpn_v2", "detection", "boxes", "RetinaNet"),
    Architecture("fcos_resnet50_fpn", "detection", "boxes", "FCOS"),
    Architecture("ssd300_vgg16", "detection", "boxes", "SSD"),
    Architecture("ssdlite320_mobilenet_v3_large", "detection", "boxes", "SSDlite"),
]
TORCHVISION: dict[str, Architecture] = {a.name: a for a in _TABLE}


def is_custom_factory(name: str) -> bool:
    """A custom model is named ``package.module:factory``."""
    module, sep, attr = name.partition(":")
    return bool(sep) and all(part.isidentifier() for part in module.split(".")) and attr.isidentifier()


def closest_name(name: str) -> str | None:
    if len(name) > 100:  # difflib is quadratic, and no builder's name is that long
        return None
    matches = difflib.get_close_matches(name, list(TORCHVISION), n=1, cutoff=0.5)
    return matches[0] if matches else None


def unknown_architecture_message(name: str) -> str:
    hint = closest_name(name)
    did_you_mean = f"did you mean '{hint}'? " if hint else ""
    return (
        f"unknown architecture {brief(name)}: {did_you_mean}allowed: {', '.join(TORCHVISION)}, "
        "or a custom factory 'package.module:function' (scenario files and the Python API only)"
    )
