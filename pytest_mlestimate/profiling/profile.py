"""Raw measurements of one profiling run, as the profiler records them and the cache stores them.

Nothing here is extrapolated: turning a profile into the documented numbers is ``result.py``'s job.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from pytest_mlestimate.profiling.breakdown import Breakdown, Timeline
from pytest_mlestimate.profiling.contention import Contention

PROFILE_FORMAT = 5
"""Raised whenever what a profile measures changes, so that older cached profiles are measured again."""


class PhasePeaks(BaseModel):
    """Peaks seen by the resource monitor during one phase (training or inference)."""

    model_config = ConfigDict(extra="forbid")

    peak_rss: int
    peak_cpu_percent: float | None
    peak_gpu_allocated: int | None = None
    peak_gpu_reserved: int | None = None
    peak_gpu_memory: int | None = None
    peak_gpu_sampled: int | None = None
    """The most GPU memory one sample saw (NVML's process figure, or the device's used memory where NVML
    cannot give it), read together with reserved bytes: a lower bound where ``peak_gpu_memory`` is an upper one."""
    gpu_memory_method: str | None = None
    """Which figure ``peak_gpu_memory`` is."""
    peak_gpu_utilization: float | None = None
    samples: int = 0


class EnergyReading(BaseModel):
    """Energy one source (the GPU, or the CPU packages) drew over the measured training steps."""

    model_config = ConfigDict(extra="forbid")

    joules: float | None = None
    """None where the source could not be read; ``unavailable`` says why."""
    steps: int = 0
    seconds: float = 0.0
    """Wall time between the two readings (the measured steps)."""
    method: str | None = None
    """``nvml-energy-counter``, ``nvml-power-samples`` or ``rapl``."""
    detail: str | None = None
    """What the method read: the RAPL domains summed, or how many power samples were integrated."""
    unavailable: str | None = None


class PredictedGpuMemory(BaseModel):
    """Peak GPU memory predicted for a card from this run's traced storages (``gpu_memory.predict``)."""

    model_config = ConfigDict(extra="forbid")

    card: str
    allocated: int
    """What ``torch.cuda.max_memory_allocated()`` would read."""
    reserved: int
    """What ``torch.cuda.max_memory_reserved()`` would read."""
    device: int
    """What the card would hold in all: reserved plus the CUDA context and library handles (approximate)."""
    traced_storages: int
    steps: int
    """Training steps traced (0 for inference: one batch's call)."""


class Profile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: int = PROFILE_FORMAT
    device: str
    device_name: str
    measured_on: str | None = None
    """The Ray node that measured it, when a cluster did (``ray_tasks``)."""
    gpu_unavailable: str | None = None
    effective_input_size: tuple[int, int] | None = None
    dataset: dict[str, Any] | None = None
    """The scenario's dataset as the batches were drawn from it (``DatasetBatches.describe``)."""
    predicted_training: PredictedGpuMemory | None = None
    predicted_inference: PredictedGpuMemory | None = None
    """With the scenario's ``predict_gpu``: each phase's peak GPU memory on that card."""
    parameter_count: int = 0
    build_seconds: float = 0.0
    ram_before: int = 0
    vram_before: int | None = None
    warmup_step_times: list[float] = Field(default_factory=list)
    step_times: list[float] = Field(default_factory=list)
    forward_times: list[float] = Field(default_factory=list)
    backward_times: list[float] = Field(default_factory=list)
    optimizer_times: list[float] = Field(default_factory=list)
    inference_one_times: list[float] = Field(default_factory=list)
    inference_batch_times: list[float] = Field(default_factory=list)
    inference_detections: float | None = None
    """Mean detections per image measured in the batch inference calls."""
    inference_load: str | None = None
    """The detection load inference was measured at, in words; None in a profile that did not set one."""
    inference_load_per_image: int | None = None
    """Detections per image the load asks for; None where the weights decide."""
    training: PhasePeaks | None = None
    inference: PhasePeaks | None = None
    optimizer_recipe: str | None = None
    """The optimizer and learning-rate warm-up the training steps ran with, in words."""
    lr_range: tuple[float, float] | None = None
    """Learning rate of the first and of the last timed training step."""
    divergence_restarts: int = 0
    """1 when a non-finite loss made the profiler restore the starting state and measure again."""
    precision_target: float | None = None
    precision: float | None = None
    """Achieved half-width of the 95 % confidence interval of the mean step time, as a fraction of the mean."""
    precision_met: bool | None = None
    contention: Contention | None = None
    """CPU contention figures of the kept measurement of the steps."""
    inference_contention: Contention | None = None
    """CPU and GPU contention figures of the kept measurement of the inference calls."""
    contended: bool = False
    """The kept measurement of the steps or of the inference calls was contended even after one re-measurement:
    not a clean figure to cache or to judge."""
    contention_remeasured: bool = False
    """The steps were measured a second time because the first measurement was contended."""
    inference_remeasured: bool = False
    """The inference calls were measured a second time because the first measurement was contended."""
    gpu_energy: EnergyReading | None = None
    """None: not measured (no training steps ran)."""
    cpu_energy: EnergyReading | None = None
    """The CPU packages' energy (RAPL): the whole packages, every process on them, not only this profile."""
    breakdown: Breakdown | None = None
    """Per-part times and memory from extra instrumented steps; None where the scenario turned it off."""
    timeline: Timeline | None = None
    environment: dict[str, str | None] = Field(default_factory=dict)
    sources: dict[str, str] | None = None
    """A custom model's code as it was measured: each source file of the user's code that building and running
    the model imported, and its SHA-256 (``sources``); None for a torchvision builder. The cache measures again
    once one of them changed."""
    warnings: list[str] = Field(default_factory=list)
    failure: str | None = None
    measure_seconds: float = 0.0
