"""The tiny model's scenario that most engine tests start from, spelt once."""

from typing import Any

TINY: dict[str, Any] = {
    "task_type": "detection",
    "architecture": "pytest_mlestimate.tiny:tiny_detector",
    "dataset_size": 1000,
    "batch_size": 2,
    "image_size": [64, 64],
}
