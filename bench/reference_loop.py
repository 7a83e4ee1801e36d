"""A plain PyTorch training loop, written without the estimator, to check its figures against.

Usage: python bench/reference_loop.py SCENARIO_JSON STEPS
Prints one JSON line: wall time of all steps, peak RSS of the process, and on CUDA the peak GPU memory
the process held (NVML, sampled every 20 ms) and PyTorch's reserved peak.

Usage: python bench/reference_loop.py SCENARIO_JSON --inference REPEATS
A plain inference loop at the scenario's detection_load, its knobs set here by hand: prints one JSON line
with the mean time of one 1-image call and of one batch call, and the detections per image.
"""

from __future__ import annotations

import json
import resource
import sys
import threading
import time

import torch
from torchvision.models import detection

from pytest_mlestimate.models import num_classes, target_kind
from pytest_mlestimate.scenario import Scenario
from pytest_mlestimate.synthetic import make_batch, make_images


def nvml_sampler(device_index: int, stop: threading.Event, peak: list[int]) -> None:
    """Peak of NVML's per-process figure (the device's used memory where per-process is hidden).

    PyTorch's caching allocator keeps what it reserves, so the figure only grows during a run: a 20 ms
    poll plus a last read after the loop sees its peak without competing with the loop for the GIL.
    """
    import os

    import pynvml

    pynvml.nvmlInit()
    uuid = str(torch.cuda.get_device_properties(device_index).uuid)
    try:
        handle = pynvml.nvmlDeviceGetHandleByUUID((uuid if uuid.startswith("GPU-") else f"GPU-{uuid}").encode())
    except Exception:
        handle = pynvml.nvmlDeviceGetHandleByIndex(device_index)

    def used() -> int:
        for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
            if proc.pid == os.getpid() and proc.usedGpuMemory:
                return int(proc.usedGpuMemory)
        return int(pynvml.nvmlDeviceGetMemoryInfo(handle).used)

    while True:
        peak[0] = max(peak[0], used())
        if stop.wait(0.02):
            peak[0] = max(peak[0], used())
            return


def open_post_processing(model: torch.nn.Module, load: str | int) -> int:
    """Score threshold 0 and an NMS IoU threshold of 1 (keeps every candidate): detections_per_img decides."""
    head = getattr(model, "roi_heads", model)
    if load != "max":
        head.detections_per_img = load
    head.score_thresh = 0.0
    head.nms_thresh = 1.0
    if hasattr(head, "topk_candidates"):
        head.topk_candidates = max(head.topk_candidates, head.detections_per_img)
    return head.detections_per_img


def infer(scenario: Scenario, repeats: int) -> None:
    device = torch.device("cuda:0" if scenario.device != "cpu" and torch.cuda.is_available() else "cpu")
    builder = getattr(detection, scenario.architecture)
    torch.manual_seed(0)  # the weights the estimate measured
    model = builder(weights=None, weights_backbone=None, num_classes=num_classes(scenario), **scenario.model_kwargs)
    stated = open_post_processing(model, scenario.detection_load)
    model.to(device).eval()
    images = [
        i.to(device) for i in make_images(scenario.batch_size, *scenario.image_size, torch.Generator().manual_seed(0))
    ]

    def timed(batch: list[torch.Tensor], count: int) -> tuple[float, list[int]]:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(count):
            outputs = model(batch)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - start) / count, [len(o["boxes"]) for o in outputs]

    with torch.inference_mode():
        timed(images[:1], 2)
        timed(images, 1)
        one, _ = timed(images[:1], repeats)
        batch, found = timed(images, max(repeats // 2, 2))
    print(json.dumps({"one_image": one, "batch": batch, "stated": stated, "detections": sum(found) / len(found)}))


def main() -> None:
    scenario = Scenario.model_validate_json(sys.argv[1])
    if sys.argv[2] == "--inference":
        infer(scenario, int(sys.argv[3]))
        return
    steps = int(sys.argv[2])
    device = torch.device("cuda:0" if scenario.device != "cpu" and torch.cuda.is_available() else "cpu")
    builder = getattr(detection, scenario.architecture)
    torch.manual_seed(0)  # the weights the estimate measured
    model = builder(weights=None, weights_backbone=None, num_classes=num_classes(scenario), **scenario.model_kwargs)
    model.to(device).train()
    images, targets = make_batch(
        scenario.batch_size,
        scenario.image_size,
        scenario.objects_per_image,
        num_classes(scenario),
        target_kind(scenario),
    )
    images = [i.to(device) for i in images]
    targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
    params = [p for p in model.parameters() if p.requires_grad]
    spec = scenario.optimizer  # the recipe the estimate trained with: torchvision's, linear lr warm-up included
    optimizer = torch.optim.SGD(params, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay)
    warmup = (
        torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=spec.warmup_factor, total_iters=spec.warmup_steps)
        if spec.warmup_steps and spec.warmup_factor < 1
        else None
    )

    stop, peak = threading.Event(), [0]
    sampler = None
    if device.type == "cuda":
        sampler = threading.Thread(target=nvml_sampler, args=(0, stop, peak), daemon=True)
        sampler.start()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        loss = sum(model(images, targets).values())
        loss.backward()
        optimizer.step()
        if warmup is not None:
            warmup.step()
        loss.item()
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    stop.set()
    if sampler is not None:
        sampler.join()
    result = {
        "seconds": elapsed,
        "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "peak_gpu_process": peak[0] or None,
        "peak_gpu_reserved": int(torch.cuda.max_memory_reserved()) if device.type == "cuda" else None,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
