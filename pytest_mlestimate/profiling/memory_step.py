"""The breakdown's memory step: what each part saves for backward, and a memory timeline of one training step."""

from __future__ import annotations

import ctypes
import gc
import os
import time
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import nn

from pytest_mlestimate.core.devices import is_gpu
from pytest_mlestimate.profiling.breakdown import Breakdown, Mark, Timeline
from pytest_mlestimate.profiling.part_hooks import (
    Clock,
    PartHooks,
    SavedTensors,
    TrainingCalls,
    output_tensors,
    tensor_bytes,
)

TIMELINE_POINTS = 2000
"""The most points a timeline keeps; longer ones keep each bucket's largest value."""


class _Resident:
    """This process's resident bytes, read cheaply enough to sample at every module boundary."""

    def __init__(self) -> None:
        self.page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        try:
            self.fd: int | None = os.open("/proc/self/statm", os.O_RDONLY)
        except OSError:
            self.fd = None

    def __call__(self) -> int:
        if self.fd is None:
            import psutil

            return int(psutil.Process().memory_info().rss)
        return int(os.pread(self.fd, 128, 0).split()[1]) * self.page

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class _MallocInfo(ctypes.Structure):
    _fields_: ClassVar = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks")
    ] + [("keepcost", ctypes.c_size_t)]


def _heap_in_use() -> Callable[[], int] | None:
    """Bytes malloc has handed out and not taken back (glibc's ``mallinfo2``: in-use chunks of every arena plus
    mmapped blocks), in under a microsecond; None where the C library has none. CPU tensors live there, so it
    rises and falls with them, where RSS stays at its high-water mark: freed memory stays resident in malloc's
    arenas for the next step."""
    try:
        libc = ctypes.CDLL(None)
        info = libc.mallinfo2
    except (OSError, AttributeError):
        return None
    info.restype = _MallocInfo

    def in_use() -> int:
        found = info()
        return int(found.uordblks + found.hblkhd)

    return in_use


class _Sampler:
    """Memory samples at every module's forward boundaries and at the moment the backward reaches it."""

    def __init__(self, model: nn.Module, device: torch.device) -> None:
        self.device = device
        self.on_gpu = is_gpu(device)
        self.resident = None if self.on_gpu else _Resident()
        self.heap = None if self.on_gpu else _heap_in_use()
        self.start = time.perf_counter()
        self.t: list[float] = []
        self.values: list[tuple[int, ...]] = []
        self._handles = []
        for module in model.modules():
            self._handles.append(module.register_forward_pre_hook(lambda *_: self.sample()))
            self._handles.append(module.register_forward_hook(self._after))

    def _after(self, _module: nn.Module, _args: Any, output: Any) -> None:
        self.sample()
        if torch.is_grad_enabled():
            for tensor in output_tensors(output):
                if tensor.requires_grad:
                    tensor.register_hook(lambda _grad: self.sample())

    def sample(self) -> None:
        self.t.append(time.perf_counter() - self.start)
        if self.on_gpu:
            self.values.append((torch.cuda.memory_allocated(self.device), torch.cuda.memory_reserved(self.device)))
        else:
            assert self.resident is not None
            self.values.append((self.heap(), self.resident()) if self.heap else (self.resident(),))

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        if self.resident is not None:
            self.resident.close()

    def series(self) -> tuple[list[float], dict[str, list[int]]]:
        names = ("allocated", "reserved") if self.on_gpu else ("heap", "rss") if self.heap else ("rss",)
        t, values = _thin(self.t, self.values, TIMELINE_POINTS)
        return [round(x, 6) for x in t], {name: [v[i] for v in values] for i, name in enumerate(names)}


def _thin(t: list[float], values: list[tuple[int, ...]], most: int) -> tuple[list[float], list[tuple[int, ...]]]:
    """At most ``most`` points, each bucket's largest sample kept, so that no peak is thinned away."""
    if len(t) <= most:
        return t, values
    size = -(-len(t) // most)
    kept_t, kept = [], []
    for start in range(0, len(t), size):
        bucket = range(start, min(start + size, len(t)))
        best = max(bucket, key=lambda i: values[i][0])
        kept_t.append(t[best])
        kept.append(values[best])
    return kept_t, kept


def memory_step(
    model: nn.Module,
    device: torch.device,
    calls: TrainingCalls,
    parts: list[tuple[str, nn.Module]],
    breakdown: Breakdown,
) -> Timeline:
    """Two more steps: one counts what each part saves for backward and what the peak holds (saved-tensor
    hooks slow a backward pass several times over), the other samples memory at every module for the timeline."""
    parameters = calls.parameters()
    counting = PartHooks(parts, Clock(torch.device("cpu")), peaks_of=device)
    saved = SavedTensors(counting, parameters)
    try:
        with torch.autograd.graph.saved_tensors_hooks(saved.pack, saved.unpack):
            loss = calls.forward()
        calls.backward(loss)
        gradients = tensor_bytes(p.grad for p in parameters)
        calls.optimizer_step(loss)
    finally:
        counting.remove()
    activations = saved.by_part()
    for name, _module in parts:
        part = breakdown.part(name)
        part.activations_bytes = activations.get(name, 0)
        if is_gpu(device):
            part.forward_peak_bytes = counting.marks.peaks.get(name)
    breakdown._shares = {
        "parameters": tensor_bytes(parameters) + tensor_bytes(model.buffers()),
        "gradients": gradients,
        "optimizer_state": calls.optimizer_state(),
        "activations": sum(activations.values()),
    }

    hooks = PartHooks(parts, Clock(torch.device("cpu")))
    sampler = _Sampler(model, device)
    gc.collect()  # a collection of unrelated garbage mid-step would show as a drop in the heap
    collecting = gc.isenabled()
    gc.disable()
    try:
        if is_gpu(device):
            torch.cuda.synchronize(device)
        sampler.start = time.perf_counter()
        sampler.sample()
        loss = calls.forward()
        forward_end = time.perf_counter()
        sampler.sample()
        calls.backward(loss)
        backward_end = time.perf_counter()
        sampler.sample()
        calls.optimizer_step(loss)
        end = time.perf_counter()
        sampler.sample()
    finally:
        if collecting:
            gc.enable()
        hooks.remove()
        sampler.remove()
    origin = sampler.start
    marks = [
        Mark(module=name, phase="forward", start_s=round(a - origin, 6), end_s=round(b - origin, 6))
        for name, spans in hooks.marks.forward.items()
        for a, b in spans
    ]
    reached = sorted(hooks.marks.reached.items(), key=lambda item: item[1])
    for i, (name, moment) in enumerate(reached):
        until = reached[i + 1][1] if i + 1 < len(reached) else backward_end
        marks.append(
            Mark(module=name, phase="backward", start_s=round(moment - origin, 6), end_s=round(until - origin, 6))
        )
    first = {name: min(a for a, _ in spans) for name, spans in hooks.marks.forward.items()}
    breakdown.parts.sort(key=lambda part: first.get(part.module, float("inf")))
    t, series = sampler.series()
    return Timeline(
        device=str(device),
        t_s=t,
        series=series,
        marks=marks,
        phases={
            "forward_end_s": round(forward_end - origin, 6),
            "backward_end_s": round(backward_end - origin, 6),
            "end_s": round(end - origin, 6),
        },
        method=(
            "allocated and reserved bytes of the CUDA caching allocator"
            if is_gpu(device)
            else "heap: the bytes malloc has handed out and not taken back (glibc's mallinfo2; CPU tensors "
            "live there); "
            "rss: the process's resident memory, which stays near its high-water mark because malloc keeps freed "
            "memory for the next step"
        )
        + "; sampled at every module's forward pre- and post-hook and when the gradient reached its outputs, "
        "through one more training step, in host time",
    )
