"""How close an estimate with a ``dataset`` comes to a plain training loop over that dataset.

Two COCO annotation files are generated (seeded): ``mixed`` (images of four sizes and both orientations, 1-12
instances) and ``crowded`` (fewer, larger images, up to 60 instances, one of 90), polygon masks throughout. For
each, Mask R-CNN (random weights, ``min_size``/``max_size`` small enough for this CPU, torchvision's recipe:
SGD with its linear warm-up) is

- estimated: ``estimate({..., "dataset": FILE})`` in a fresh process, its Total Training Time and Peak RAM
  Memory (which includes the worst batches);
- trained for one epoch by a plain loop written here without the estimator (pycocotools' ``COCO`` reads the
  file and rasterises the masks; images in the file's order, random pixels at each image's size), its wall time
  over all steps and the peak RSS of its process.

The two arms alternate, each in a fresh process, ``--repeats`` times; the medians are compared.

    .venv/bin/python bench/dataset_accuracy.py [--repeats 3] [--images 40]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BATCH = 2
MODEL_KWARGS = {"min_size": 160, "max_size": 256}
SIZES = {"mixed": [(480, 640), (640, 480), (427, 640), (512, 512)], "crowded": [(640, 640), (720, 960)]}


def generate(kind: str, images: int, seed: int) -> dict[str, Any]:
    draw = random.Random(seed)
    document: dict[str, Any] = {"images": [], "annotations": [], "categories": []}
    document["categories"] = [{"id": c, "name": f"c{c}"} for c in range(1, 11)]
    count = images if kind == "mixed" else images // 2
    for image_id in range(1, count + 1):
        height, width = draw.choice(SIZES[kind])
        document["images"].append({"id": image_id, "width": width, "height": height})
        instances = draw.randint(1, 12) if kind == "mixed" else (90 if image_id == 3 else draw.randint(5, 60))
        for _ in range(instances):
            w, h = draw.uniform(0.05, 0.4) * width, draw.uniform(0.05, 0.4) * height
            x, y = draw.uniform(0, width - w), draw.uniform(0, height - h)
            polygon = [x, y, x + w, y, x + w * 0.8, y + h, x + w * 0.1, y + h * 0.7]
            document["annotations"].append(
                {"id": len(document["annotations"]) + 1, "image_id": image_id, "category_id": draw.randint(1, 10),
                 "bbox": [x, y, w, h], "segmentation": [polygon], "area": w * h, "iscrowd": 0}
            )  # fmt: skip
    return document


def scenario(path: Path, images: int) -> dict[str, Any]:
    return {
        "task_type": "instance", "architecture": "maskrcnn_resnet50_fpn", "batch_size": BATCH, "device": "cpu",
        "dataset": str(path), "dataset_size": images, "model_kwargs": MODEL_KWARGS, "breakdown_depth": 0,
    }  # fmt: skip


def estimated(path: Path, images: int) -> dict[str, float]:
    from pytest_mlestimate.api import estimate

    found = estimate(scenario(path, images), cache=False).to_dict()
    return {"seconds": found["training_time"]["Total Training Time"], "peak_rss": found["resource"]["Peak RAM Memory"]}


def plain_loop(path: Path) -> dict[str, float]:
    """One epoch of Mask R-CNN over the file, as a user's training script would run it."""
    import torch
    from pycocotools.coco import COCO
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    coco = COCO(str(path))
    generator = torch.Generator().manual_seed(1)

    def sample(image_id: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """What a dataset's __getitem__ would return: made when its batch comes, as a data loader does."""
        info = coco.loadImgs(image_id)[0]
        annotations = [a for a in coco.loadAnns(coco.getAnnIds(imgIds=image_id)) if not a["iscrowd"]]
        boxes = torch.tensor([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                              for a in annotations], dtype=torch.float32)  # fmt: skip
        masks = torch.stack([torch.from_numpy(coco.annToMask(a)) for a in annotations])
        labels = torch.tensor([a["category_id"] for a in annotations], dtype=torch.int64)
        image = torch.rand(3, info["height"], info["width"], generator=generator)
        return image, {"boxes": boxes, "labels": labels, "masks": masks}

    torch.manual_seed(0)
    model = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=11, **MODEL_KWARGS)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.02, momentum=0.9, weight_decay=1e-4)
    warmup = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.001, total_iters=1000)
    ids = sorted(coco.getImgIds())
    seconds = 0.0  # the steps' own time: data loading is not what the estimate counts
    for first in range(0, len(ids), BATCH):
        batch = [sample(image_id) for image_id in ids[first : first + BATCH]]
        started = time.perf_counter()
        losses = model([image for image, _ in batch], [target for _, target in batch])
        loss = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[union-attr]
        optimizer.step()
        warmup.step()
        float(loss)
        seconds += time.perf_counter() - started
    return {"seconds": seconds, "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def in_fresh_process(arm: str, path: Path, images: int) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, __file__, "--arm", arm, "--file", str(path), "--images", str(images)],
        capture_output=True, text=True, check=False, timeout=3600,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"{arm} on {path.name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--images", type=int, default=40, help="images of the mixed file (the crowded has half)")
    parser.add_argument("--arm", choices=["estimate", "loop"], help=argparse.SUPPRESS)
    parser.add_argument("--file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.arm:
        count = len(json.loads(args.file.read_text())["images"])
        found = estimated(args.file, count) if args.arm == "estimate" else plain_loop(args.file)
        print(json.dumps(found))
        return
    print("load average before:", os.getloadavg(), flush=True)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as folder:
        for seed, kind in enumerate(("mixed", "crowded")):
            path = Path(folder) / f"{kind}.json"
            document = generate(kind, args.images, seed)
            path.write_text(json.dumps(document))
            runs: dict[str, list[dict[str, float]]] = {"estimate": [], "loop": []}
            for repeat in range(args.repeats):
                for arm in ("estimate", "loop") if repeat % 2 == 0 else ("loop", "estimate"):
                    runs[arm].append(in_fresh_process(arm, path, args.images))
                    print(kind, arm, runs[arm][-1], flush=True)
            median = {arm: {k: statistics.median(r[k] for r in found) for k in found[0]} for arm, found in runs.items()}
            results[kind] = {
                "images": len(document["images"]),
                "instances": len(document["annotations"]),
                "estimate": median["estimate"],
                "loop": median["loop"],
                "time error": f"{median['estimate']['seconds'] / median['loop']['seconds'] - 1:+.1%}",
                "peak RSS error": f"{median['estimate']['peak_rss'] / median['loop']['peak_rss'] - 1:+.1%}",
            }
    print(json.dumps(results, indent=2))
    print("load average after:", os.getloadavg())


if __name__ == "__main__":
    main()
