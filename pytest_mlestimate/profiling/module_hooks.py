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

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from pytest_mlestimate.core.devices import is_gpu
from pytest_mlestimate.profiling.breakdown import Breakdown, InferenceTimes, Timeline, TrainingTimes
from pytest_mlestimate.profiling.memory_step import memory_step
from pytest_mlestimate.profiling.part_hooks import Clock, PartHooks, TrainingCalls, parts_of

TRAINING_STEPS = {"cpu": 3, "cuda": 5}
"""Instrumented training steps timed per part (a memory step comes on top)."""
INFERENCE_CALLS = {"cpu": 3, "cuda": 10}


def _device_key(device: torch.device) -> str:
    return "cuda" if is_gpu(device) else "cpu"


def measure_training(
    model: nn.Module,
    device: torch.device,
    calls: TrainingCalls,
    depth: int = 1,
    steps: int | None = None,
) -> tuple[Breakdown, Timeline]:
    """Instrumented training steps: ``steps`` timed per part, then one step for memory and the timeline."""
    parts = parts_of(model, depth)
    clock = Clock(device)
    breakdown = Breakdown(depth=depth)
    count = steps or TRAINING_STEPS[_device_key(device)]
    hooks = PartHooks(parts, clock)
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
    return breakdown, memory_step(model, device, calls, parts, breakdown)


def _backward_spans(reached: dict[str, Any], begin: Any, end: Any, clock: Clock) -> dict[str, float]:
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


def measure_inference(
    model: nn.Module, device: torch.device, call: Callable[[], None], depth: int = 1, calls: int | None = None
) -> tuple[dict[str, float], InferenceTimes]:
    """Instrumented inference calls, timed per part."""
    parts = parts_of(model, depth)
    clock = Clock(device)
    hooks = PartHooks(parts, clock)
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
