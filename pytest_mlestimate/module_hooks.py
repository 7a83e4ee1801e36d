"""Measures a ``Breakdown`` through PyTorch module hooks.

Hooks cost time, so they run in extra steps after the headline measurement, never in it. A part's forward is
the time between its forward pre- and post-hooks. Its backward runs from the moment the gradient reaches the
part's outputs (a hook on each output tensor) until it reaches the next part's: autograd runs the work a
forward created last first, so these moments order the parts in reverse and split the backward pass between
them, with what runs between two parts (loss terms, glue code) counted in the part before it. On a GPU every
moment is a CUDA event on the stream doing the work, read after a synchronisation.

Memory a part adds to the peak: the tensor bytes it saves for backward (``saved_tensors_hooks``, each
storage counted once, parameters left out), the activations a training step holds at the end of its
forward pass; on a GPU also the allocator's peak during its forward above what was allocated when it began.
"""

from __future__ import annotations

import ctypes
import gc
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from pytest_mlestimate.breakdown import Breakdown, InferenceTimes, Mark, Timeline, TrainingTimes

TRAINING_STEPS = {"cpu": 3, "cuda": 5}
"""Instrumented training steps timed per part (a memory step comes on top)."""
INFERENCE_CALLS = {"cpu": 3, "cuda": 10}
TIMELINE_POINTS = 2000
"""The most points a timeline keeps; longer ones keep each bucket's largest value."""


def parts_of(model: nn.Module, depth: int = 1) -> list[tuple[str, nn.Module]]:
    """The parts a breakdown names: the modules ``depth`` levels down (leaves above that depth stand for
    themselves). At depth 1 a torchvision backbone with an FPN shows as its body and its FPN."""
    found: list[tuple[str, nn.Module]] = []

    def walk(prefix: str, module: nn.Module, level: int) -> None:
        for name, child in module.named_children():
            path = f"{prefix}{name}"
            children = dict(child.named_children())
            split_fpn = level == depth and depth == 1 and {"body", "fpn"} <= children.keys()
            if (level < depth and children) or split_fpn:
                walk(f"{path}.", child, level + 1)
            else:
                found.append((path, child))

    walk("", model, 1)
    return found or [("model", model)]


def _tensors(value: Any) -> Iterator[torch.Tensor]:
    """Tensors inside a module's output: tensors, sequences, mappings, and objects holding ``tensors`` (an
    ImageList)."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _tensors(item)
    elif isinstance(getattr(value, "tensors", None), torch.Tensor):
        yield value.tensors


class _Clock:
    """Moments of a step: host time on a CPU, CUDA events on the current stream on a GPU."""

    def __init__(self, device: torch.device) -> None:
        self.on_gpu = device.type == "cuda"
        self.device = device

    def now(self) -> Any:
        if self.on_gpu:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def seconds(self, start: Any, end: Any) -> float:
        """Call after a synchronisation."""
        if self.on_gpu:
            return start.elapsed_time(end) / 1000.0
        return end - start

    def sync(self) -> None:
        if self.on_gpu:
            torch.cuda.synchronize(self.device)


@dataclass
class _StepMarks:
    forward: dict[str, list[tuple[Any, Any]]] = field(default_factory=dict)
    reached: dict[str, Any] = field(default_factory=dict)
    peaks: dict[str, int] = field(default_factory=dict)


class _PartHooks:
    """Forward and backward moments of each part, for one step at a time."""

    def __init__(self, parts: list[tuple[str, nn.Module]], clock: _Clock, peaks_of: torch.device | None = None) -> None:
        """``peaks_of``: a CUDA device whose allocator peak each part's forward is read from, whatever clock
        times the step (the memory step keeps host time, so that its hooks add no events)."""
        self.clock = clock
        self.peaks_of = peaks_of if peaks_of is not None and peaks_of.type == "cuda" else None
        self.marks = _StepMarks()
        self.current: list[str] = []
        self._open: dict[str, list[tuple[Any, int]]] = {}
        self._handles = []
        for name, module in parts:
            self._handles.append(module.register_forward_pre_hook(self._pre(name)))
            self._handles.append(module.register_forward_hook(self._post(name)))

    def new_step(self) -> None:
        self.marks = _StepMarks()

    def _pre(self, name: str) -> Callable[..., None]:
        def hook(_module: nn.Module, _args: Any) -> None:
            allocated = 0
            if self.peaks_of is not None:
                allocated = torch.cuda.memory_allocated(self.peaks_of)
                torch.cuda.reset_peak_memory_stats(self.peaks_of)
            self._open.setdefault(name, []).append((self.clock.now(), allocated))
            self.current.append(name)

        return hook

    def _post(self, name: str) -> Callable[..., None]:
        def hook(_module: nn.Module, _args: Any, output: Any) -> None:
            end = self.clock.now()
            start, allocated = self._open[name].pop()
            self.current.pop()
            self.marks.forward.setdefault(name, []).append((start, end))
            if self.peaks_of is not None:
                peak = torch.cuda.max_memory_allocated(self.peaks_of) - allocated
                self.marks.peaks[name] = max(self.marks.peaks.get(name, 0), peak)
            if torch.is_grad_enabled():
                for tensor in _tensors(output):
                    if tensor.requires_grad:
                        tensor.register_hook(self._reached(name))

        return hook

    def _reached(self, name: str) -> Callable[[torch.Tensor], None]:
        def hook(_grad: torch.Tensor) -> None:
            if name not in self.marks.reached:
                self.marks.reached[name] = self.clock.now()

        return hook

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


@dataclass
class TrainingCalls:
    """A training step in its phases, as the profiler runs it."""

    forward: Callable[[], torch.Tensor]
    backward: Callable[[torch.Tensor], None]
    optimizer_step: Callable[[torch.Tensor], None]
    """The optimizer's step, and whatever the headline step does after it (reading the loss)."""
    parameters: Callable[[], list[torch.Tensor]]
    optimizer_state: Callable[[], int]


def _storage_key(tensor: torch.Tensor) -> tuple[int, int] | None:
    try:
        storage = tensor.untyped_storage()
        return storage.data_ptr(), storage.nbytes()
    except (RuntimeError, NotImplementedError):
        return None


class _SavedTensors:
    """Tensor bytes saved for backward, by the part that saved them first."""

    def __init__(self, hooks: _PartHooks, parameters: list[torch.Tensor]) -> None:
        self.hooks = hooks
        self.skip = {key[0] for key in map(_storage_key, parameters) if key}
        self.seen: dict[int, tuple[str, int]] = {}

    def pack(self, tensor: torch.Tensor) -> torch.Tensor:
        key = _storage_key(tensor)
        if key and key[0] not in self.skip and key[0] not in self.seen:
            owner = self.hooks.current[-1] if self.hooks.current else "other"
            self.seen[key[0]] = (owner, key[1])
        return tensor

    @staticmethod
    def unpack(tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def by_part(self) -> dict[str, int]:
        found: dict[str, int] = {}
        for owner, size in self.seen.values():
            found[owner] = found.get(owner, 0) + size
        return found


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
        self.on_gpu = device.type == "cuda"
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
            for tensor in _tensors(output):
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


def _tensor_bytes(tensors: Any) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))


def _device_key(device: torch.device) -> str:
    return "cuda" if device.type == "cuda" else "cpu"


def measure_training(
    model: nn.Module,
    device: torch.device,
    calls: TrainingCalls,
    depth: int = 1,
    steps: int | None = None,
) -> tuple[Breakdown, Timeline]:
    """Instrumented training steps: ``steps`` timed per part, then one step for memory and the timeline."""
    parts = parts_of(model, depth)
    clock = _Clock(device)
    breakdown = Breakdown(depth=depth)
    count = steps or TRAINING_STEPS[_device_key(device)]
    hooks = _PartHooks(parts, clock)
    totals: dict[str, list[float]] = {}
    whole: list[float] = []
    forward_other: list[float] = []
    backward_other: list[float] = []
    optimizer: list[float] = []
    try:
        for _ in range(count):
            hooks.new_step()
            clock.sync()
            start = clock.now()
            loss = calls.forward()
            forward_end = clock.now()
            calls.backward(loss)
            backward_end = clock.now()
            calls.optimizer_step(loss)
            end = clock.now()
            clock.sync()
            marks = hooks.marks
            forward = {name: sum(clock.seconds(a, b) for a, b in spans) for name, spans in marks.forward.items()}
            backward = _backward_spans(marks.reached, forward_end, backward_end, clock)
            for name, _module in parts:
                totals.setdefault(f"f:{name}", []).append(forward.get(name, 0.0))
                totals.setdefault(f"b:{name}", []).append(backward.get(name, 0.0))
            whole.append(clock.seconds(start, end))
            forward_other.append(clock.seconds(start, forward_end) - sum(forward.values()))
            backward_other.append(backward.get("", 0.0))
            optimizer.append(clock.seconds(backward_end, end))
    finally:
        hooks.remove()
    mean = _mean
    parts_s = 0.0
    for name, _module in parts:
        part = breakdown.part(name)
        part.forward_s = mean(totals[f"f:{name}"])
        part.backward_s = mean(totals[f"b:{name}"])
        parts_s += part.forward_s + part.backward_s
    step_s = mean(whole)
    breakdown.training = TrainingTimes(
        steps=count,
        step_s=step_s,
        parts_s=parts_s,
        forward_other_s=mean(forward_other),
        backward_other_s=mean(backward_other),
        optimizer_s=mean(optimizer),
    )
    return breakdown, _memory_step(model, device, calls, parts, breakdown)


def _backward_spans(reached: dict[str, Any], begin: Any, end: Any, clock: _Clock) -> dict[str, float]:
    """Each part's share of the backward pass, from the moments the gradient reached each; "" is the time
    before it reached any part."""
    order = sorted(reached.items(), key=lambda item: clock.seconds(begin, item[1]))
    spans: dict[str, float] = {}
    previous_name, previous = "", begin
    for name, moment in order:
        spans[previous_name] = spans.get(previous_name, 0.0) + clock.seconds(previous, moment)
        previous_name, previous = name, moment
    spans[previous_name] = spans.get(previous_name, 0.0) + clock.seconds(previous, end)
    return spans


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _memory_step(
    model: nn.Module,
    device: torch.device,
    calls: TrainingCalls,
    parts: list[tuple[str, nn.Module]],
    breakdown: Breakdown,
) -> Timeline:
    """Two more steps: one counts what each part saves for backward and what the peak holds (saved-tensor
    hooks slow a backward pass several times over), the other samples memory at every module for the timeline."""
    parameters = calls.parameters()
    counting = _PartHooks(parts, _Clock(torch.device("cpu")), peaks_of=device)
    saved = _SavedTensors(counting, parameters)
    try:
        with torch.autograd.graph.saved_tensors_hooks(saved.pack, saved.unpack):
            loss = calls.forward()
        calls.backward(loss)
        gradients = _tensor_bytes(p.grad for p in parameters)
        calls.optimizer_step(loss)
    finally:
        counting.remove()
    activations = saved.by_part()
    for name, _module in parts:
        part = breakdown.part(name)
        part.activations_bytes = activations.get(name, 0)
        if device.type == "cuda":
            part.forward_peak_bytes = counting.marks.peaks.get(name)
    breakdown._shares = {
        "parameters": _tensor_bytes(parameters) + _tensor_bytes(model.buffers()),
        "gradients": gradients,
        "optimizer_state": calls.optimizer_state(),
        "activations": sum(activations.values()),
    }

    hooks = _PartHooks(parts, _Clock(torch.device("cpu")))
    sampler = _Sampler(model, device)
    gc.collect()  # a collection of unrelated garbage mid-step would show as a drop in the heap
    collecting = gc.isenabled()
    gc.disable()
    try:
        if device.type == "cuda":
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
            if device.type == "cuda"
            else "heap: the bytes malloc has handed out and not taken back (glibc's mallinfo2; CPU tensors "
            "live there); "
            "rss: the process's resident memory, which stays near its high-water mark because malloc keeps freed "
            "memory for the next step"
        )
        + "; sampled at every module's forward pre- and post-hook and when the gradient reached its outputs, "
        "through one more training step, in host time",
    )


def measure_inference(
    model: nn.Module, device: torch.device, call: Callable[[], None], depth: int = 1, calls: int | None = None
) -> tuple[dict[str, float], InferenceTimes]:
    """Instrumented inference calls, timed per part."""
    parts = parts_of(model, depth)
    clock = _Clock(device)
    hooks = _PartHooks(parts, clock)
    count = calls or INFERENCE_CALLS[_device_key(device)]
    per_part: dict[str, list[float]] = {name: [] for name, _ in parts}
    first: dict[str, float] = {}
    whole: list[float] = []
    try:
        for _ in range(count):
            hooks.new_step()
            clock.sync()
            start = clock.now()
            call()
            end = clock.now()
            clock.sync()
            for name, _module in parts:
                spans = hooks.marks.forward.get(name, [])
                per_part[name].append(sum(clock.seconds(a, b) for a, b in spans))
                if spans:
                    first[name] = clock.seconds(start, spans[0][0])
            whole.append(clock.seconds(start, end))
    finally:
        hooks.remove()
    order = sorted(per_part, key=lambda name: first.get(name, float("inf")))
    times = {name: _mean(per_part[name]) for name in order}
    parts_s = sum(times.values())
    batch_s = _mean(whole)
    return times, InferenceTimes(calls=count, batch_s=batch_s, parts_s=parts_s, other_s=batch_s - parts_s)
