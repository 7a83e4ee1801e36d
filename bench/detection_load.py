"""Does each torchvision family really yield the stated detections per image with random weights?

For each detection builder (min_size=max_size=128 where the model resizes): detections per image of a
batch of 2 synthetic images as the random weights give, at detection_load 'max' and at 7, with the time
of one batch inference at each.

    python bench/detection_load.py
    python bench/detection_load.py --only ssd
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from typing import Any

import torch

from pytest_mlestimate.profiling.models import apply_detection_load, build_model
from pytest_mlestimate.profiling.synthetic import make_images
from pytest_mlestimate.scenarios.scenario import Scenario

SMALL = {"min_size": 128, "max_size": 128}
FAMILIES: list[tuple[str, dict[str, Any]]] = [
    ("fasterrcnn_mobilenet_v3_large_320_fpn", SMALL),
    ("fasterrcnn_resnet50_fpn", SMALL),
    ("maskrcnn_resnet50_fpn", SMALL),
    ("keypointrcnn_resnet50_fpn", SMALL),
    ("retinanet_resnet50_fpn", SMALL),
    ("fcos_resnet50_fpn", SMALL),
    ("ssd300_vgg16", {}),
    ("ssdlite320_mobilenet_v3_large", {}),
]


def count(model: torch.nn.Module, images: list[torch.Tensor]) -> tuple[list[int], float]:
    start = time.perf_counter()
    with torch.inference_mode():
        outputs = model(images)
    return [len(o["boxes"]) for o in outputs], time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", default="")
    args = parser.parse_args()
    warnings.simplefilter("ignore", UserWarning)
    images = make_images(2, 128, 128, torch.Generator().manual_seed(0))
    failures = 0
    print(f"{'architecture':40} {'weights':>14} {'load max':>18} {'load 7':>14}")
    for arch, kwargs in [f for f in FAMILIES if args.only in f[0]]:
        task = "instance" if arch.startswith("mask") else "detection"
        base = Scenario(
            task_type=task, architecture=arch, dataset_size=2, batch_size=2, image_size=(128, 128), model_kwargs=kwargs
        )
        torch.manual_seed(0)
        model = build_model(base).eval()
        count(model, images)  # the first call in a process is slower
        natural, natural_s = count(model, images)
        load = apply_detection_load(model, base)
        at_max, max_s = count(model, images)
        apply_detection_load(model, base.model_copy(update={"detection_load": 7}))
        at_seven, seven_s = count(model, images)
        ok = at_max == [load.per_image] * 2 and at_seven == [7, 7]
        failures += not ok
        print(
            f"{arch:40} {natural!s:>9} {natural_s:3.1f}s {str(at_max) + ' of ' + str(load.per_image):>13} "
            f"{max_s:3.1f}s {at_seven!s:>9} {seven_s:3.1f}s  {'ok' if ok else 'SHORT'}",
            flush=True,
        )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
