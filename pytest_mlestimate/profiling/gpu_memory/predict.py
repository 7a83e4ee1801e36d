"""Peak GPU memory predicted from a run on any device: the storages the run creates and frees
(``trace.StorageTrace``), replayed through the model of the CUDA caching allocator (``allocator``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import torch

from pytest_mlestimate.profiling.gpu_memory.allocator import CachingAllocator
from pytest_mlestimate.profiling.gpu_memory.trace import StorageTrace


@dataclass(frozen=True)
class PredictedMemory:
    allocated: int
    """What ``torch.cuda.max_memory_allocated()`` would read."""
    reserved: int
    """What ``torch.cuda.max_memory_reserved()`` would read."""
    segments: int
    traced_storages: int


def predict(
    held: Iterable[torch.Tensor],
    run: Callable[[StorageTrace], None],
    workspaces: Sequence[int] = (),
    expandable_segments: bool = False,
) -> PredictedMemory:
    """The peaks of a CUDA run that starts holding ``held`` (in the order it allocated them: the model's
    parameters and buffers, then what else it holds), takes the library ``workspaces`` at its first operators
    and keeps them, and then does what ``run`` does."""
    return replay(traced(held, run), workspaces, expandable_segments)


def traced(held: Iterable[torch.Tensor], run: Callable[[StorageTrace], None]) -> StorageTrace:
    trace = StorageTrace()
    trace.hold(held)
    with trace:
        run(trace)
    return trace


def replay(trace: StorageTrace, workspaces: Sequence[int] = (), expandable_segments: bool = False) -> PredictedMemory:
    allocator = CachingAllocator(expandable_segments=expandable_segments)
    allocator.replay(trace.events[: trace.held])
    for number, nbytes in enumerate(workspaces):
        allocator.malloc(("workspace", number), nbytes)
    allocator.replay(trace.events[trace.held :])
    allocations = sum(1 for kind, _, _ in trace.events if kind == "alloc")
    return PredictedMemory(allocator.peak_allocated, allocator.peak_reserved, allocator.segments, allocations)


def training_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None) -> Iterator[torch.Tensor]:
    """What a training run holds on the device between steps, in the order it came there: parameters and
    buffers (``model.to(device)``), then gradients and optimizer state where they exist already."""
    yield from model.parameters()
    yield from model.buffers()
    for parameter in model.parameters():
        if parameter.grad is not None:
            yield parameter.grad
    if optimizer is not None:
        for state in optimizer.state.values():
            yield from (value for value in state.values() if isinstance(value, torch.Tensor))
