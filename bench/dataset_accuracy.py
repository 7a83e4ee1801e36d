"""How close an estimate with a ``dataset`` comes to a plain training loop over that dataset.

Mask R-CNN (random weights, ``min_size``/``max_size`` small enough for this CPU, torchvision's recipe: SGD with
its linear warm-up), batch 2, on generated COCO files (seeded, polygon masks):

- time: ``sparse`` (images of four sizes, both orientations, 1-3 small objects each) and ``crowded`` (mixed
  aspect ratios, 20-60 large objects each). For each, the estimate given the file (``estimate({...,
  "dataset": FILE})`` in a fresh process: Total Training Time) against a plain loop written here without the
  estimator (pycocotools reads the file and rasterises the masks; one epoch, images shuffled with a seed, random
  pixels at each image's size; the sum of its steps' wall time), alternating, each in a fresh process,
  ``--repeats`` times, medians compared. Then the estimate without the file, as a user would state the data
  without it (the file's median image size, the default 5 synthetic boxes an image), once.
- the worst batch: a ``--worst-images`` file (200) of sparse images with four crowded, larger ones (ids 101, 102,
  151, 152: 80-100 instances each), batched in the file's order so that a pass meets two crowded batches. The
  plain loop's peak RSS over the full pass against the estimate's Peak RAM Memory, and the image ids of the
  estimate's named worst batches.

    .venv/bin/python bench/dataset_accuracy.py [--repeats 2] [--images 40] [--worst-images 200] [--only time]
        [--kinds sparse] [--device cuda]

On a GPU (``--device cuda``, the worst batch only) the peaks compared are the allocator's: the estimate's peak
allocated bytes (``details.gpu_memory.peak_allocated``) against the loop's ``max_memory_allocated`` over the pass.
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
SIZES = {"sparse": [(480, 640), (640, 480), (427, 640), (512, 512)], "crowded": [(640, 640), (480, 960), (960, 540)]}
CROWDED_IDS = (101, 102, 151, 152)


def polygon_instance(draw: random.Random, image_id: int, width: int, height: int, scale: tuple[float, float],
                     number: int) -> dict[str, Any]:  # fmt: skip
    w, h = draw.uniform(*scale) * width, draw.uniform(*scale) * height
    x, y = draw.uniform(0, width - w), draw.uniform(0, height - h)
    polygon = [x, y, x + w, y, x + w * 0.8, y + h, x + w * 0.1, y + h * 0.7]
    return {"id": number, "image_id": image_id, "category_id": draw.randint(1, 10), "bbox": [x, y, w, h],
            "segmentation": [polygon], "area": w * h, "iscrowd": 0}  # fmt: skip


def generate(kind: str, images: int, seed: int) -> dict[str, Any]:
    """``sparse``, ``crowded`` or ``worst`` (sparse images with the four crowded ones of ``CROWDED_IDS``)."""
    draw = random.Random(seed)
    document: dict[str, Any] = {"images": [], "annotations": []}
    document["categories"] = [{"id": c, "name": f"c{c}"} for c in range(1, 11)]
    for image_id in range(1, images + 1):
        crowded = kind == "crowded" or (kind == "worst" and image_id in CROWDED_IDS)
        if kind == "worst" and crowded:
            height, width, count, scale = 800, 1066, 100 - 5 * CROWDED_IDS.index(image_id), (0.2, 0.5)
        elif crowded:
            (height, width), count, scale = draw.choice(SIZES["crowded"]), draw.randint(20, 60), (0.2, 0.6)
        else:
            (height, width), count, scale = draw.choice(SIZES["sparse"]), draw.randint(1, 3), (0.05, 0.15)
        document["images"].append({"id": image_id, "width": width, "height": height})
        for _ in range(count):
            number = len(document["annotations"]) + 1
            document["annotations"].append(polygon_instance(draw, image_id, width, height, scale, number))
    return document


def scenario(path: Path, images: int, with_file: bool = True, device: str = "cpu") -> dict[str, Any]:
    found = {
        "task_type": "instance", "architecture": "maskrcnn_resnet50_fpn", "batch_size": BATCH, "device": device,
        "dataset_size": images, "model_kwargs": MODEL_KWARGS, "breakdown_depth": 0, "num_classes": 11,
    }  # fmt: skip
    if with_file:
        return found | {"dataset": str(path)}
    document = json.loads(path.read_text())
    heights = sorted(image["height"] for image in document["images"])
    widths = sorted(image["width"] for image in document["images"])
    return found | {"image_size": [heights[len(heights) // 2], widths[len(widths) // 2]]}


def estimated(path: Path, images: int, with_file: bool, device: str = "cpu") -> dict[str, Any]:
    from pytest_mlestimate.api import estimate

    found = estimate(scenario(path, images, with_file, device), cache=False).to_dict()
    dataset = found["details"].get("dataset") or {}
    on_gpu = device.startswith("cuda")
    peak = found["details"]["gpu_memory"]["peak_allocated"] if on_gpu else found["resource"]["Peak RAM Memory"]
    return {
        "seconds": found["training_time"]["Total Training Time"],
        "peak_rss": peak,
        "rss_before_steps": found["resource"]["RAM before training"],
        "worst_batches": {name: batch["image_ids"] for name, batch in (dataset.get("worst_batches") or {}).items()},
        "pass_before_worst": dataset.get("pass_before_worst"),
    }


def plain_loop(path: Path, shuffle: bool, device: str = "cpu") -> dict[str, float]:
    """One epoch of Mask R-CNN over the file, as a user's training script would run it (shuffled with a seed, or
    in the file's order). On a GPU, its peak is the allocator's peak allocated bytes, and the peak rises too."""
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
    model.to(device).train()
    on_gpu = device.startswith("cuda")

    def peak_now() -> int:
        if on_gpu:
            return torch.cuda.max_memory_allocated(device)
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=1e-4)  # the scenario default
    warmup = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.001, total_iters=1000)
    before_steps = _rss_now()
    ids = sorted(coco.getImgIds())
    if shuffle:
        random.Random(0).shuffle(ids)
    seconds = 0.0  # the steps' own time: data loading is not what the estimate counts
    high_water: list[tuple[int, list[int], int]] = []  # (step, its image ids, the peak RSS after it) when it rose
    for first in range(0, len(ids), BATCH):
        batch = [sample(image_id) for image_id in ids[first : first + BATCH]]
        batch = [(image.to(device), {k: v.to(device) for k, v in target.items()}) for image, target in batch]
        started = time.perf_counter()
        losses = model([image for image, _ in batch], [target for _, target in batch])
        loss = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[union-attr]
        optimizer.step()
        warmup.step()
        float(loss)  # waits for the device, as a user's logging does
        seconds += time.perf_counter() - started
        reached = peak_now()
        if not high_water or reached > high_water[-1][2]:
            high_water.append((first // BATCH + 1, ids[first : first + BATCH], reached))
    peak = peak_now()
    rises = [(step, batch_ids, round(rss / 2**20)) for step, batch_ids, rss in high_water]
    return {
        "seconds": seconds,
        "peak_rss": peak,
        "rss_before_steps": before_steps,
        "peak rises (step, ids, MiB)": rises,
    }


def _rss_now() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))


def in_fresh_process(
    arm: str, path: Path, environment: dict[str, str] | None = None, device: str = "cpu"
) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, "--arm", arm, "--file", str(path), "--device", device],
        capture_output=True, text=True, check=False, timeout=3600, env=os.environ | (environment or {}),
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"{arm} on {path.name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def error(estimate: float, loop: float) -> str:
    return f"{estimate / loop - 1:+.1%}"


def time_arms(folder: Path, repeats: int, images: int, kinds: str = "sparse,crowded") -> dict[str, Any]:
    results: dict[str, Any] = {}
    for seed, kind in enumerate(("sparse", "crowded")):
        if kind not in kinds.split(","):
            continue
        path = folder / f"{kind}.json"
        document = generate(kind, images, seed)
        path.write_text(json.dumps(document))
        runs: dict[str, list[dict[str, Any]]] = {"estimate": [], "loop": []}
        for repeat in range(repeats):
            for arm in ("estimate", "loop") if repeat % 2 == 0 else ("loop", "estimate"):
                runs[arm].append(in_fresh_process(arm, path))
                print(kind, arm, runs[arm][-1], flush=True)
        without = in_fresh_process("estimate-without-file", path)
        print(kind, "estimate without the file", without, flush=True)
        median = {arm: statistics.median(r["seconds"] for r in found) for arm, found in runs.items()}
        results[kind] = {
            "images": len(document["images"]),
            "instances": len(document["annotations"]),
            "estimate s": [round(r["seconds"], 1) for r in runs["estimate"]],
            "loop s": [round(r["seconds"], 1) for r in runs["loop"]],
            "estimate error (bar: within 5 %)": error(median["estimate"], median["loop"]),
            "without the file s": round(without["seconds"], 1),
            "without the file against the loop": error(without["seconds"], median["loop"]),
        }
    return results


def worst_arm(folder: Path, images: int, device: str = "cpu") -> dict[str, Any]:
    path = folder / "worst.json"
    path.write_text(json.dumps(generate("worst", images, 7)))
    estimate = in_fresh_process("estimate", path, device=device)
    print("worst estimate", estimate, flush=True)
    loop = in_fresh_process("loop-in-order", path, device=device)
    print("worst loop", loop, flush=True)
    named = sorted({i for ids in estimate["worst_batches"].values() for i in ids})
    on_gpu = device.startswith("cuda")
    estimate_peak, loop_peak = ("peak allocated GPU", "max_memory_allocated") if on_gpu else ("Peak RAM", "peak RSS")
    found = {
        "images": images,
        "device": device,
        "crowded image ids": list(CROWDED_IDS),
        f"estimate {estimate_peak} Memory MiB": round(estimate["peak_rss"] / 2**20),
        f"loop {loop_peak} over the pass MiB": round(loop["peak_rss"] / 2**20),
        f"peak error (bar: within {3 if on_gpu else 5} %)": error(estimate["peak_rss"], loop["peak_rss"]),
        "RSS before the steps MiB (estimate, loop)": [
            round(estimate["rss_before_steps"] / 2**20),
            round(loop["rss_before_steps"] / 2**20),
        ],
        "loop's peak rises (step, image ids, MiB)": loop["peak rises (step, ids, MiB)"],
        "worst batches named": estimate["worst_batches"],
        "estimate's pass before them": estimate["pass_before_worst"],
        "named images all crowded": set(named) <= set(CROWDED_IDS),
    }
    if not on_gpu:  # the heap's growth is glibc's: with its mmap threshold fixed, the loop's peak falls
        fixed = in_fresh_process("loop-in-order", path, {"MALLOC_MMAP_THRESHOLD_": str(128 * 1024)})
        print("worst loop, glibc's mmap threshold fixed at 128 KiB", fixed, flush=True)
        found["loop peak RSS, glibc's mmap threshold fixed at 128 KiB, MiB"] = round(fixed["peak_rss"] / 2**20)
        found["its peak rises"] = fixed["peak rises (step, ids, MiB)"]
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--images", type=int, default=40, help="images of each time file")
    parser.add_argument("--worst-images", type=int, default=200, help="images of the worst-batch file")
    parser.add_argument("--only", choices=["time", "worst"], help="run one part")
    parser.add_argument("--kinds", default="sparse,crowded", help="the time part's files (default sparse,crowded)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda: on a GPU, the worst batch only")
    parser.add_argument("--arm", help=argparse.SUPPRESS)
    parser.add_argument("--file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.arm:
        count = len(json.loads(args.file.read_text())["images"])
        if args.arm.startswith("estimate"):
            found: dict[str, Any] = estimated(args.file, count, args.arm == "estimate", args.device)
        else:
            found = plain_loop(args.file, args.arm == "loop", args.device)
        print(json.dumps(found))
        return
    print("load average before:", os.getloadavg(), flush=True)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as folder:
        if args.only != "worst" and args.device == "cpu":
            results["time"] = time_arms(Path(folder), args.repeats, args.images, args.kinds)
        if args.only != "time":
            results["worst batch"] = worst_arm(Path(folder), args.worst_images, args.device)
    print(json.dumps(results, indent=2))
    print("load average after:", os.getloadavg())


if __name__ == "__main__":
    main()
