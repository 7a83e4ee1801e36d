"""A plain PyTorch training loop, written without the estimator, to check its figures against.

Usage: python bench/reference_loop.py SCENARIO_JSON STEPS
Prints one JSON line: wall time of all steps and of each, peak RSS of the process, and on CUDA the peak GPU
memory the process held (NVML, sampled every 20 ms), PyTorch's allocated and reserved peaks, and the energy
NVML's counter saw beside the mean of its power readings.

Usage: python bench/reference_loop.py SCENARIO_JSON --inference REPEATS
A plain inference loop at the scenario's detection_load, its knobs set here by hand: prints one JSON line
with the mean time of one 1-image call and of one batch call, and the detections per image.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import sys
import threading
import time

import torch
from torchvision.models import detection

from pytest_mlestimate.profiling.models import num_classes, target_kind
from pytest_mlestimate.profiling.synthetic import make_batch, make_images
from pytest_mlestimate.scenarios.scenario import Scenario


class NvmlSampler:
    """Peaks of NVML's per-process memory figure (the device's used memory where per-process is hidden) and the
    board power, polled every 20 ms from a thread, with the energy counter read at start and stop.

    PyTorch's caching allocator keeps what it reserves, so the memory figure only grows during a run: a 20 ms
    poll plus a last read after the loop sees its peak without competing with the loop for the GIL.
    """

    def __init__(self, device_index: int) -> None:
        import pynvml

        self.nvml = pynvml
        pynvml.nvmlInit()
        uuid = str(torch.cuda.get_device_properties(device_index).uuid)
        uuid = uuid if uuid.startswith("GPU-") else f"GPU-{uuid}"
        try:
            self.handle = pynvml.nvmlDeviceGetHandleByUUID(uuid.encode())
        except Exception:
            self.handle = pynvml.nvmlDeviceGetHandleByIndex(device_index)
        self.peak = 0
        self.power: list[float] = []
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.energy_start = self._energy()

    def _energy(self) -> float | None:
        try:
            return float(self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)) / 1000  # mJ -> J
        except Exception:
            return None

    def _used(self) -> int:
        for proc in self.nvml.nvmlDeviceGetComputeRunningProcesses(self.handle):
            if proc.pid == os.getpid() and proc.usedGpuMemory:
                return int(proc.usedGpuMemory)
        return int(self.nvml.nvmlDeviceGetMemoryInfo(self.handle).used)

    def _poll(self) -> None:
        while True:
            self.peak = max(self.peak, self._used())
            with contextlib.suppress(Exception):
                self.power.append(self.nvml.nvmlDeviceGetPowerUsage(self.handle) / 1000)  # mW -> W
            if self.stop_event.wait(0.02):
                self.peak = max(self.peak, self._used())
                return

    def start(self) -> None:
        self.energy_start = self._energy()
        self.thread.start()

    def stop(self) -> dict[str, float | None]:
        end = self._energy()
        self.stop_event.set()
        self.thread.join()
        return {
            "energy_joules": end - self.energy_start if end is not None and self.energy_start is not None else None,
            "mean_power_watts": sum(self.power) / len(self.power) if self.power else None,
            "power_samples": len(self.power),
        }


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

    sampler = NvmlSampler(0) if device.type == "cuda" else None
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    if sampler is not None:
        sampler.start()
    steps_seconds: list[float] = []
    start = last = time.perf_counter()
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        loss = sum(model(images, targets).values())
        loss.backward()
        optimizer.step()
        if warmup is not None:
            warmup.step()
        loss.item()  # waits for the step, as a training loop that logs its loss does
        now = time.perf_counter()
        steps_seconds.append(now - last)
        last = now
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    power = sampler.stop() if sampler is not None else {}
    result = {
        "seconds": elapsed,
        "steps": steps,
        "step_seconds": steps_seconds,
        "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "peak_gpu_process": (sampler.peak or None) if sampler is not None else None,
        "peak_gpu_allocated": int(torch.cuda.max_memory_allocated()) if device.type == "cuda" else None,
        "peak_gpu_reserved": int(torch.cuda.max_memory_reserved()) if device.type == "cuda" else None,
        **power,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
