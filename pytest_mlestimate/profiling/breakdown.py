"""Where a training step's and an inference call's time and memory go, part by part of the model.

What each figure means is said in ``TRAINING_METHOD``; ``module_hooks.py``
measures them (with ``part_hooks.py`` and ``memory_step.py``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from pytest_mlestimate.core.units import format_quantity

TRAINING_METHOD = (
    "Measured with module hooks in extra steps after the headline measurement. Forward: between a part's forward "
    "pre- and post-hook. Backward: from the moment the gradient reaches the part's outputs until it reaches the "
    "next part's (autograd runs the later parts first); loss terms and glue code between two parts count in the "
    "part before. Activations: the tensor bytes a part saves for backward (each storage once, parameters left "
    "out). Times are the means of the instrumented steps: step_s, their whole step, is the parts plus the other "
    "forward and backward work plus the optimizer; remainder_s is the headline step (headline_step_s, measured "
    "without hooks) less step_s."
)


class Part(BaseModel):
    """One part of the model and what it cost."""

    model_config = ConfigDict(extra="forbid")

    module: str
    forward_s: float | None = None
    backward_s: float | None = None
    activations_bytes: int | None = None
    forward_peak_bytes: int | None = None
    """GPU only: the allocator's peak during the part's forward above what was allocated when it began."""
    inference_s: float | None = None


class TrainingTimes(BaseModel):
    model_config = ConfigDict(extra="forbid")

    steps: int
    step_s: float
    headline_step_s: float | None = None
    parts_s: float
    forward_other_s: float
    backward_other_s: float
    optimizer_s: float
    remainder_s: float | None = None
    """The headline step less what the instrumented steps explain (parts, other forward and backward work, the
    optimizer): the hooks' cost and the noise between steps. Set beside the headline step in the report."""
    remainder_share: float | None = None


class InferenceTimes(BaseModel):
    model_config = ConfigDict(extra="forbid")

    calls: int
    batch_s: float
    parts_s: float
    other_s: float


class MemorySplit(BaseModel):
    """The peak split into what holds it. ``rest`` is the peak less the named shares and may be negative: with
    ``zero_grad(set_to_none=True)`` gradients are allocated while activations are freed, so not all of them
    need to coexist at the peak."""

    model_config = ConfigDict(extra="forbid")

    whole: str
    metric: str | None = None
    """The metric whose figure is split: ``peak_ram_memory``, or ``peak_gpu_memory``, whose allocator peak
    (what tensors held) the split is of."""
    whole_bytes: int
    measure: str
    parameters: int
    gradients: int
    optimizer_state: int
    activations: int
    rest: int
    rest_means: str


class Mark(BaseModel):
    """A part's span in a timeline."""

    model_config = ConfigDict(extra="forbid")

    module: str
    phase: Literal["forward", "backward"]
    start_s: float
    end_s: float


class Timeline(BaseModel):
    """Memory against time through one instrumented training step, sampled at every module's boundaries."""

    model_config = ConfigDict(extra="forbid")

    device: str
    t_s: list[float]
    series: dict[str, list[int]]
    marks: list[Mark]
    phases: dict[str, float]
    method: str


class Breakdown(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: str = TRAINING_METHOD
    depth: int = 1
    parts: list[Part] = Field(default_factory=list)
    training: TrainingTimes | None = None
    inference: InferenceTimes | None = None
    memory: MemorySplit | None = None
    unavailable: str | None = None
    """Why a part of the breakdown could not be measured."""
    _shares: dict[str, int] | None = PrivateAttr(None)
    """Tensor bytes by what holds them, measured in the memory step, until ``split_memory`` splits the peak."""

    def __str__(self) -> str:
        if not self.parts:
            return f"no breakdown: {self.unavailable or 'nothing measured'}"
        lines = [f"{'part':<20} {'forward':>10} {'backward':>10} {'inference':>10} {'activations':>12}"]
        for part in self.parts:
            cells = [format_quantity(v, "seconds") for v in (part.forward_s, part.backward_s, part.inference_s)]
            saved = format_quantity(part.activations_bytes, "bytes")
            lines.append(f"{part.module:<20} {cells[0]:>10} {cells[1]:>10} {cells[2]:>10} {saved:>12}")
        training = self.training
        if training is not None:
            others = training.forward_other_s + training.backward_other_s
            lines.append(
                f"other forward and backward work {format_quantity(others, 'seconds')}, optimizer "
                f"{format_quantity(training.optimizer_s, 'seconds')}; instrumented step "
                f"{format_quantity(training.step_s, 'seconds')}"
            )
        memory = self.memory
        if memory is not None:
            shares = ("parameters", "gradients", "optimizer_state", "activations", "rest")
            split = ", ".join(
                f"{name.replace('_', ' ')} {format_quantity(getattr(memory, name), 'bytes')}" for name in shares
            )
            lines.append(f"{memory.whole} {format_quantity(memory.whole_bytes, 'bytes')}: {split}")
        if self.unavailable:
            lines.append(self.unavailable)
        return "\n".join(lines)

    def part(self, name: str) -> Part:
        for found in self.parts:
            if found.module == name:
                return found
        added = Part(module=name)
        self.parts.append(added)
        return added


def split_memory(breakdown: Breakdown, whole: str, whole_bytes: int | None, on_gpu: bool) -> None:
    """Split the headline peak (``Peak RAM Memory``, or on a GPU the allocator's peak allocated bytes) into the
    named shares measured in the memory step; the rest is what is left."""
    shares = breakdown._shares
    if shares is None or not whole_bytes:
        return
    rest = whole_bytes - sum(shares.values())
    breakdown.memory = MemorySplit(
        whole=whole,
        metric="peak_gpu_memory" if on_gpu else "peak_ram_memory",
        whole_bytes=whole_bytes,
        measure="tensor bytes (parameters and buffers, gradients, optimizer state, tensors saved for backward)",
        rest=rest,
        rest_means=(
            "the allocator's other blocks at the peak: the input batch, workspaces and temporaries"
            if on_gpu
            else "the process beyond these tensors: the interpreter, torch's libraries and their buffers, the input "
            "batch, temporaries and memory the allocator keeps"
        )
        + ("; negative: gradients and activations did not all coexist at the peak" if rest < 0 else ""),
        **shares,
    )
