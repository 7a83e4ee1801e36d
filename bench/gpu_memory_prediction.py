"""Peak GPU memory predicted on this CPU against figures measured on an H100.

The reference rows (torch 2.11, CUDA 13.0, torchvision 0.26 on an H100): a plain training loop, SGD (lr 0.005,
momentum 0.9, weight decay 5e-4), ``zero_grad(set_to_none=True)``, 91 classes, 5 boxes per image, models built
with ``weights=None, weights_backbone=None``, peak statistics reset before the model was built, peaks read after
3 warm-up and 10 measured steps. Here the same loop runs on the CPU, its storages traced from the model's
parameters on, for ``--steps`` steps (the peaks of steady steps repeat), and replayed through the model of the
CUDA caching allocator, with the two 32 MiB cuBLAS workspaces an H100 run holds (``core.gpu_cards``); the
errors of the tensors alone are printed too. Each row runs in a fresh process. The cost: the traced steps' mean
time (the first left out) against the same loop's untraced steps, half before the traced ones and half after.

The cost the engine adds (``--cost-repeats``): ``estimate()`` of SSDlite320 at batch 4 on this CPU with and
without ``predict_gpu``, each in a fresh process without the cache, alternating; the profiles' own measuring
seconds compared.

    .venv/bin/python bench/gpu_memory_prediction.py [--steps 4] [--cost-repeats 2]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROWS: dict[str, dict[str, Any]] = {
    "fasterrcnn_resnet50_fpn batch 4 512x512": {
        "builder": "fasterrcnn_resnet50_fpn", "batch": 4, "size": (512, 512),
        "kwargs": {"min_size": 512, "max_size": 512}, "allocated": 2_807_559_168, "reserved": 3_139_436_544,
    },
    "ssdlite320_mobilenet_v3_large batch 16 320x320": {
        "builder": "ssdlite320_mobilenet_v3_large", "batch": 16, "size": (320, 320), "kwargs": {},
        "allocated": 1_740_670_976, "reserved": 2_264_924_160,
    },
}  # fmt: skip


def measured_on_gpu(name: str) -> dict[str, Any]:
    """The reference loop run on this machine's GPU: the allocator's peaks, reset before the model is built."""
    import torch
    import torchvision

    from pytest_mlestimate.profiling.synthetic import make_batch

    row = ROWS[name]
    torch.cuda.reset_peak_memory_stats()
    torch.manual_seed(0)
    build = getattr(torchvision.models.detection, row["builder"])
    model = build(weights=None, weights_backbone=None, num_classes=91, **row["kwargs"]).cuda().train()
    images, targets = make_batch(row["batch"], row["size"], 5, 91, "boxes")
    images = [i.cuda() for i in images]
    targets = [{k: v.cuda() for k, v in t.items()} for t in targets]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.005, momentum=0.9, weight_decay=5e-4)
    for _ in range(13):  # 3 warm-up and 10 measured steps, as the reference
        optimizer.zero_grad(set_to_none=True)
        sum(model(images, targets).values()).backward()  # type: ignore[union-attr]
        optimizer.step()
    torch.cuda.synchronize()
    return {
        "allocated": torch.cuda.max_memory_allocated(),
        "reserved": torch.cuda.max_memory_reserved(),
        "device_name": torch.cuda.get_device_name(),
    }


def one_row(name: str, steps: int) -> dict[str, Any]:
    import torch
    import torchvision

    from pytest_mlestimate.core.gpu_cards import card_named
    from pytest_mlestimate.profiling.gpu_memory.predict import replay, traced, training_state
    from pytest_mlestimate.profiling.synthetic import make_batch

    row = ROWS[name]
    torch.manual_seed(0)
    build = getattr(torchvision.models.detection, row["builder"])
    model = build(weights=None, weights_backbone=None, num_classes=91, **row["kwargs"]).train()
    images, targets = make_batch(row["batch"], row["size"], 5, 91, "boxes")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.005, momentum=0.9, weight_decay=5e-4)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss = sum(model(images, targets).values())
        loss.backward()  # type: ignore[union-attr]
        optimizer.step()

    traced_times: list[float] = []

    def run(trace: Any) -> None:
        for number in range(steps):
            started = time.perf_counter()
            step()
            traced_times.append(time.perf_counter() - started)
            trace.mark(f"step {number + 1}")

    plain: list[float] = []

    def untraced(count: int) -> None:
        for _ in range(count):
            started = time.perf_counter()
            step()
            plain.append(time.perf_counter() - started)

    untraced(steps // 2)
    optimizer.zero_grad(set_to_none=True)  # the trace starts from the weights alone, as a run does
    optimizer.state.clear()
    held = [*training_state(model), *images, *(v for t in targets for v in t.values())]
    trace = traced(held, run)
    untraced(steps - steps // 2)
    tensors = replay(trace)
    h100 = card_named("H100")
    assert h100 is not None
    found = replay(trace, [h100.blas_workspace] * 2)  # what the engine predicts for an H100
    if torch.cuda.is_available():  # this machine's own GPU is the reference, not the table's H100
        gpu = measured_on_gpu(name)
        card = card_named(gpu["device_name"].removeprefix("NVIDIA ").split(" ")[0])
        found = replay(trace, [card.blas_workspace if card else h100.blas_workspace] * 2)
        row = {**row, "allocated": gpu["allocated"], "reserved": gpu["reserved"], "source": gpu["device_name"]}
    # the traced steps after the first (which creates gradients and momentum) against the untraced ones
    cost = (sum(traced_times[1:]) / max(len(traced_times) - 1, 1)) / (sum(plain[1:]) / max(len(plain) - 1, 1))
    return {
        "tensors only: allocated error": f"{tensors.allocated / row['allocated'] - 1:+.1%}",
        "tensors only: reserved error": f"{tensors.reserved / row['reserved'] - 1:+.1%}",
        "predicted allocated": found.allocated,
        "reference allocated": row["allocated"],
        "allocated error (bar: within 5 %)": f"{found.allocated / row['allocated'] - 1:+.1%}",
        "predicted reserved": found.reserved,
        "reference reserved": row["reserved"],
        "reserved error (bar: within 10 %)": f"{found.reserved / row['reserved'] - 1:+.1%}",
        "reference": row.get("source", "H100, torch 2.11, CUDA 13.0 (the issue's table)"),
        "traced storages": found.traced_storages,
        "segments": found.segments,
        "traced step s": [round(t, 2) for t in traced_times],
        "plain step s": [round(t, 2) for t in plain],
        "cost (traced / plain steady step)": round(cost, 2),
    }


COST_SCENARIO = {
    "task_type": "detection", "architecture": "ssdlite320_mobilenet_v3_large", "batch_size": 4,
    "image_size": [320, 320], "dataset_size": 1000, "device": "cpu", "breakdown_depth": 0,
}  # fmt: skip


def estimate_seconds(predicted: bool) -> dict[str, Any]:
    from pytest_mlestimate.api import estimate

    scenario = COST_SCENARIO | ({"predict_gpu": "H100"} if predicted else {})
    started = time.perf_counter()
    found = estimate(scenario, cache=False)
    seconds = time.perf_counter() - started
    section = found.to_dict()["resource"].get("Predicted Peak GPU Memory")
    return {"seconds": seconds, "allocated": section["allocated"] if section else None}


def cost(repeats: int) -> dict[str, Any]:
    runs: dict[str, list[float]] = {"with": [], "without": []}
    for repeat in range(repeats):
        for arm in ("with", "without") if repeat % 2 == 0 else ("without", "with"):
            done = subprocess.run(
                [sys.executable, __file__, "--cost-arm", arm], capture_output=True, text=True, check=False,
                timeout=3600,
            )  # fmt: skip
            if done.returncode != 0:
                raise SystemExit(f"cost arm {arm} failed:\n{done.stderr[-3000:]}")
            found = json.loads(done.stdout.strip().splitlines()[-1])
            runs[arm].append(found["seconds"])
            print("cost", arm, found, flush=True)
    mean = {arm: sum(v) / len(v) for arm, v in runs.items()}
    return {
        "estimate s with predict_gpu": [round(v, 1) for v in runs["with"]],
        "estimate s without": [round(v, 1) for v in runs["without"]],
        "ratio (bar: at most 2x)": round(mean["with"] / mean["without"], 2),
    }


ERRORS = Path(__file__).parent / "results" / "gpu-memory-errors.csv"
"""Every run's predicted-against-reference rows, appended: the prediction's error as it accumulates."""


def record(results: dict[str, Any]) -> None:
    import torch

    new = not ERRORS.exists()
    with ERRORS.open("a", newline="") as handle:
        writer = csv.writer(handle)
        if new:
            writer.writerow(["date", "configuration", "reference", "predicted on", "torch", "predicted allocated",
                             "reference allocated", "allocated error", "predicted reserved", "reference reserved",
                             "reserved error"])  # fmt: skip
        for name, found in results.items():
            writer.writerow([
                time.strftime("%Y-%m-%d"), name, found["reference"], "this machine's CPU trace", torch.__version__,
                found["predicted allocated"], found["reference allocated"], found["allocated error (bar: within 5 %)"],
                found["predicted reserved"], found["reference reserved"], found["reserved error (bar: within 10 %)"],
            ])  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--cost-repeats", type=int, default=2, help="estimates with and without; 0 skips")
    parser.add_argument("--row", choices=sorted(ROWS), help=argparse.SUPPRESS)
    parser.add_argument("--cost-arm", choices=["with", "without"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.row:
        print(json.dumps(one_row(args.row, args.steps)))
        return
    if args.cost_arm:
        print(json.dumps(estimate_seconds(args.cost_arm == "with")))
        return
    print("load average before:", os.getloadavg(), flush=True)
    results = {}
    for name in ROWS:
        done = subprocess.run(
            [sys.executable, __file__, "--row", name, "--steps", str(args.steps)],
            capture_output=True, text=True, check=False, timeout=3600,
        )  # fmt: skip
        if done.returncode != 0:
            raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
        results[name] = json.loads(done.stdout.strip().splitlines()[-1])
        print(name, results[name], flush=True)
    record(results)
    if args.cost_repeats:
        results["cost"] = cost(args.cost_repeats)
    print(json.dumps(results, indent=2))
    print("load average after:", os.getloadavg())


if __name__ == "__main__":
    main()
