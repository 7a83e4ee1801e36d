"""The hooks a breakdown measures with: the parts of a model, the moments of each part's forward and backward,
and the tensors each part saves for backward."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from pytest_mlestimate.core.devices import is_gpu


def parts_of(model: nn.Module, depth: int = 1) -> list[tuple[str, nn.Module]]:
    """The parts a breakdown names: the modules ``depth`` levels down (leaves above that depth stand for
    themselves). At depth 1 a torchvision backbone with an FPN shows as its body and its FPN. A wrapper that names
    the module it stands for (``breakdown_root``: a Hugging Face detector in torchvision's contract) shows that
    module's parts."""
    found: list[tuple[str, nn.Module]] = []
    while isinstance(root := getattr(model, "breakdown_root", None), nn.Module):
        model = root

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


def output_tensors(value: Any) -> Iterator[torch.Tensor]:
    """Tensors inside a module's output: tensors, sequences, mappings, and objects holding ``tensors`` (an
    ImageList)."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from output_tensors(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from output_tensors(item)
    elif isinstance(getattr(value, "tensors", None), torch.Tensor):
        yield value.tensors


class Clock:
    """Moments of a step: host time on a CPU, CUDA events on the current stream on a GPU."""

    def __init__(self, device: torch.device) -> None:
        self.on_gpu = is_gpu(device)
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
class StepMarks:
    forward: dict[str, list[tuple[Any, Any]]] = field(default_factory=dict)
    reached: dict[str, Any] = field(default_factory=dict)
    peaks: dict[str, int] = field(default_factory=dict)


class PartHooks:
    """Forward and backward moments of each part, for one step at a time."""

    def __init__(self, parts: list[tuple[str, nn.Module]], clock: Clock, peaks_of: torch.device | None = None) -> None:
        """``peaks_of``: a CUDA device whose allocator peak each part's forward is read from, whatever clock
        times the step (the memory step keeps host time, so that its hooks add no events)."""
        self.clock = clock
        self.peaks_of = peaks_of if peaks_of is not None and is_gpu(peaks_of) else None
        self.marks = StepMarks()
        self.current: list[str] = []
        self._open: dict[str, list[tuple[Any, int]]] = {}
        self._handles = []
        for name, module in parts:
            self._handles.append(module.register_forward_pre_hook(self._pre(name)))
            self._handles.append(module.register_forward_hook(self._post(name)))

    def new_step(self) -> None:
        self.marks = StepMarks()

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
                for tensor in output_tensors(output):
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


class SavedTensors:
    """Tensor bytes saved for backward, by the part that saved them first."""

    def __init__(self, hooks: PartHooks, parameters: list[torch.Tensor]) -> None:
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


def tensor_bytes(tensors: Any) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))
