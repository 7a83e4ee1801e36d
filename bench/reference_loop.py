"""A plain PyTorch training loop, written without the estimator, to check its figures against.

Usage: python bench/reference_loop.py SCENARIO_JSON STEPS
Prints one JSON line: wall time of all steps, peak RSS of the process, and on CUDA the peak GPU memory
the process held (NVML, sampled every 20 ms) and PyTorch's reserved peak.
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
from pytest_mlestimate.synthetic import make_batch


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


def main() -> None:
    scenario = Scenario.model_validate_json(sys.argv[1])
    steps = int(sys.argv[2])
    device = torch.device("cuda:0" if scenario.device != "cpu" and torch.cuda.is_available() else "cpu")
    builder = getattr(detection, scenario.architecture)
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
    optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=1e-4)

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
