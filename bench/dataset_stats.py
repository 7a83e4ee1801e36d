"""How long ``mlestimate dataset-stats`` takes, and how much memory, on an annotation file the size of COCO val2017.

Generates (seeded) a COCO instances file of 5,000 images and about 37,000 annotations: polygons of 8 to 60
points (about 30 on average, as val2017's), 1 % crowd regions as uncompressed RLE, 80 categories, images of
val2017's sizes (mostly 640 px on the long side). Then runs the command in a fresh process and prints the
file's size, the wall time and the process's peak RSS.

    .venv/bin/python bench/dataset_stats.py [--images 5000] [--annotations 37000]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def polygon(rng: random.Random, width: int, height: int) -> tuple[list[float], list[float]]:
    """A star-shaped polygon inside the image, and its box."""
    w, h = rng.uniform(8, width / 2), rng.uniform(8, height / 2)
    cx, cy = rng.uniform(w / 2, width - w / 2), rng.uniform(h / 2, height - h / 2)
    points = rng.randint(8, 60)
    coords: list[float] = []
    for k in range(points):
        angle, reach = 2 * math.pi * k / points, rng.uniform(0.5, 1.0)
        coords += [round(cx + reach * w / 2 * math.cos(angle), 2), round(cy + reach * h / 2 * math.sin(angle), 2)]
    xs, ys = coords[0::2], coords[1::2]
    return coords, [round(min(xs), 2), round(min(ys), 2), round(max(xs) - min(xs), 2), round(max(ys) - min(ys), 2)]


def generate(images: int, annotations: int, seed: int = 0) -> dict[str, Any]:
    rng = random.Random(seed)
    sizes = [(640, 480), (480, 640), (640, 427), (427, 640), (640, 640), (500, 375)]
    found: dict[str, Any] = {"images": [], "annotations": [], "categories": []}
    found["categories"] = [{"id": i, "name": f"class{i}", "supercategory": "thing"} for i in range(1, 91) if i % 9]
    categories = [c["id"] for c in found["categories"]]
    for image_id in range(1, images + 1):
        width, height = rng.choice(sizes)
        found["images"].append({"id": image_id, "width": width, "height": height, "file_name": f"{image_id:012}.jpg"})
    weights = [rng.paretovariate(1.5) for _ in found["images"]]  # most images hold a few, some many
    for annotation_id, image in enumerate(rng.choices(found["images"], weights, k=annotations), start=1):
        width, height = image["width"], image["height"]
        entry: dict[str, Any] = {"id": annotation_id, "image_id": image["id"], "category_id": rng.choice(categories)}
        if rng.random() < 0.01:
            on = rng.randrange(width * height // 4)
            entry |= {"iscrowd": 1, "bbox": [0, 0, width, height],
                      "segmentation": {"size": [height, width], "counts": [0, on, width * height - on]}}  # fmt: skip
        else:
            coords, box = polygon(rng, width, height)
            entry |= {"iscrowd": 0, "bbox": box, "segmentation": [coords], "area": box[2] * box[3] * 0.7}
        found["annotations"].append(entry)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--annotations", type=int, default=37000)
    args = parser.parse_args()
    print("load average before:", os.getloadavg(), flush=True)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "instances.json"
        path.write_text(json.dumps(generate(args.images, args.annotations)))
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "pytest_mlestimate.commands.cli", "dataset-stats", str(path)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        seconds = time.monotonic() - started
        peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        summary = Path(folder) / "instances.stats.json"
        print(done.stdout.strip() or done.stderr.strip())
        print(
            f"{args.images:,} images, {args.annotations:,} annotations, {path.stat().st_size / 2**20:.1f} MiB file: "
            f"summarised in {seconds:.1f} s (a fresh process, start-up included), peak RSS {peak_mib:.0f} MiB; "
            f"summary {summary.stat().st_size / 2**10:.0f} KiB"
            if done.returncode == 0
            else f"exit {done.returncode}"
        )
    print("load average after:", os.getloadavg())


if __name__ == "__main__":
    main()
