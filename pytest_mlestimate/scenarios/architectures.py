"""The torchvision architectures the engine knows (detection, instance segmentation and classification),
described without importing torchvision.

Validation and the pytest plugin's collection read this table; only the profiler imports the
builders themselves.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Literal

from pytest_mlestimate.core.errors import brief

TaskType = Literal[
    "detection",
    "instance",
    "classification",
    "semantic-segmentation",
    "video-classification",
    "causal-lm",
    "custom",
]
"""``custom``: a factory returning a ``MeasuredModel`` (``profiling.contract``), for a model of any family."""
TargetKind = Literal["boxes", "masks", "keypoints", "labels", "pixels", "tokens", "custom"]
TENSOR_TASKS = ("classification", "semantic-segmentation", "video-classification", "causal-lm")
"""Task types trained on one batch tensor (``profiling.tensor_batches``)."""


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
CLASSIFIERS = (
    "alexnet", "convnext_base", "convnext_large", "convnext_small", "convnext_tiny", "densenet121", "densenet161",
    "densenet169", "densenet201", "efficientnet_b0", "efficientnet_b1", "efficientnet_b2", "efficientnet_b3",
    "efficientnet_b4", "efficientnet_b5", "efficientnet_b6", "efficientnet_b7", "efficientnet_v2_l",
    "efficientnet_v2_m", "efficientnet_v2_s", "googlenet", "inception_v3", "maxvit_t", "mnasnet0_5", "mnasnet0_75",
    "mnasnet1_0", "mnasnet1_3", "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small", "regnet_x_16gf",
    "regnet_x_1_6gf", "regnet_x_32gf", "regnet_x_3_2gf", "regnet_x_400mf", "regnet_x_800mf", "regnet_x_8gf",
    "regnet_y_128gf", "regnet_y_16gf", "regnet_y_1_6gf", "regnet_y_32gf", "regnet_y_3_2gf", "regnet_y_400mf",
    "regnet_y_800mf", "regnet_y_8gf", "resnet101", "resnet152", "resnet18", "resnet34", "resnet50",
    "resnext101_32x8d", "resnext101_64x4d", "resnext50_32x4d", "shufflenet_v2_x0_5", "shufflenet_v2_x1_0",
    "shufflenet_v2_x1_5", "shufflenet_v2_x2_0", "squeezenet1_0", "squeezenet1_1", "swin_b", "swin_s", "swin_t",
    "swin_v2_b", "swin_v2_s", "swin_v2_t", "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19",
    "vgg19_bn", "vit_b_16", "vit_b_32", "vit_h_14", "vit_l_16", "vit_l_32", "wide_resnet101_2", "wide_resnet50_2",
)  # fmt: skip
"""torchvision's classification builders (``torchvision.models.list_models(module=torchvision.models)``)."""

TRANSFORMER_CLASSIFIERS = ("vit_", "swin_", "maxvit_", "convnext_")
"""Prefixes of the classifiers torchvision's recipes train with AdamW; the others with SGD."""

SEGMENTERS = (
    "deeplabv3_mobilenet_v3_large", "deeplabv3_resnet101", "deeplabv3_resnet50", "fcn_resnet101", "fcn_resnet50",
    "lraspp_mobilenet_v3_large",
)  # fmt: skip
"""``torchvision.models.list_models(module=torchvision.models.segmentation)``."""
VIDEO_CLASSIFIERS = (
    "mc3_18", "mvit_v1_b", "mvit_v2_s", "r2plus1d_18", "r3d_18", "s3d", "swin3d_b", "swin3d_s", "swin3d_t",
)  # fmt: skip
"""``torchvision.models.list_models(module=torchvision.models.video)``."""
FIXED_CLIPS = {"mvit_v1_b": (16, 224), "mvit_v2_s": (16, 224)}
"""Video models built for one clip: (frames, side)."""

_TABLE += [Architecture(name, "classification", "labels", "classifier", 1000) for name in CLASSIFIERS]
_TABLE += [Architecture(name, "semantic-segmentation", "pixels", "segmenter", 21) for name in SEGMENTERS]
_TABLE += [Architecture(name, "video-classification", "labels", "video classifier", 400) for name in VIDEO_CLASSIFIERS]
TORCHVISION: dict[str, Architecture] = {a.name: a for a in _TABLE}


def vit_patch(architecture: str) -> int | None:
    """A torchvision ViT's patch side (``vit_b_16``: 16); None for any other architecture."""
    if architecture in TORCHVISION and architecture.startswith("vit_"):
        return int(architecture.rsplit("_", 1)[1])
    return None


LIBRARIES = {"timm": ("classification",), "hf": ("classification", "causal-lm", "detection", "instance")}
"""Model sources named ``library:name``, and the task types each builds: timm's image models, and Hugging Face
transformers built from a configuration (``hf:vit``, ``hf:gpt2``, ``hf:detr``, ``hf:mask2former``: a model
type; its detectors as ``detection``, its universal segmenters as ``instance``)."""
LIBRARY_EXTRAS = {"timm": "timm", "hf": "transformers"}
_LIBRARY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}")


def library_model(architecture: str) -> tuple[str, str] | None:
    """``("timm", "convnext_tiny")`` for ``timm:convnext_tiny``; None for any other architecture."""
    library, sep, name = architecture.partition(":")
    if sep and library in LIBRARIES and _LIBRARY_NAME.fullmatch(name):
        return library, name
    return None


def recipe(architecture: str, task_type: str | None = None) -> dict[str, float | int | str] | None:
    """The optimizer a model's reference recipe trains it with, without the learning-rate schedule's warm-up (it
    changes no step's cost). torchvision's: AdamW (lr 1e-3, weight decay 0.05) for the transformers and
    ConvNeXt; SGD with momentum 0.9 and weight decay 1e-4 otherwise, at lr 0.1 (classification, the ResNet
    recipe), 0.02 (segmentation) or 0.01 (video). timm's models: AdamW (lr 1e-3, weight decay 0.05); Hugging
    Face's: AdamW at the Trainer's lr 5e-5 (weight decay 0.01). None: detection's own default."""
    library = library_model(architecture)
    if library is not None:
        if library[0] == "timm":
            return {"name": "adamw", "lr": 1e-3, "weight_decay": 0.05, "warmup_steps": 0}
        return {"name": "adamw", "lr": 5e-5, "weight_decay": 0.01, "warmup_steps": 0}
    known = TORCHVISION.get(architecture)
    if known is None or known.task_type not in TENSOR_TASKS or task_type not in (None, known.task_type):
        return None
    if architecture.startswith((*TRANSFORMER_CLASSIFIERS, "mvit_", "swin3d_")):
        return {"name": "adamw", "lr": 1e-3, "weight_decay": 0.05, "warmup_steps": 0}
    lr = {"classification": 0.1, "semantic-segmentation": 0.02, "video-classification": 0.01}[known.task_type]
    return {"name": "sgd", "lr": lr, "momentum": 0.9, "weight_decay": 1e-4, "warmup_steps": 0}


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
        f"unknown architecture {brief(name)}: {did_you_mean}allowed: torchvision's detection builders "
        f"({', '.join(a.name for a in _TABLE if a.task_type in ('detection', 'instance'))}), its classification "
        f"builders (resnet50, vit_b_16, ...: {len(CLASSIFIERS)} in all), segmentation builders "
        f"({', '.join(SEGMENTERS)}), video builders ({', '.join(VIDEO_CLASSIFIERS)}), "
        "or a custom factory 'package.module:function' (scenario files and the Python API only)"
    )
