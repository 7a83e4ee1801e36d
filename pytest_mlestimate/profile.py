"""Raw measurements of one profiling run, as the profiler records them and the cache stores them.

Nothing here is extrapolated: turning a profile into the documented numbers is ``result.py``'s job.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

PROFILE_FORMAT = 2
"""Raised whenever what a profile measures changes, so that older cached profiles are measured again."""


class PhasePeaks(BaseModel):
    """Peaks seen by the resource monitor during one phase (training or inference)."""

    model_config = ConfigDict(extra="forbid")

    peak_rss: int
    peak_cpu_percent: float | None
    peak_gpu_allocated: int | None = None
    peak_gpu_reserved: int | None = None
    peak_gpu_memory: int | None = None
    peak_gpu_utilization: float | None = None
    samples: int = 0


class Profile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: int = PROFILE_FORMAT
    device: str
    device_name: str
    gpu_unavailable: str | None = None
    effective_input_size: tuple[int, int] | None = None
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
    training: PhasePeaks | None = None
    inference: PhasePeaks | None = None
    environment: dict[str, str | None] = Field(default_factory=dict)
    warnings: list[str] = Field(default_factory=list)
    failure: str | None = None
    measure_seconds: float = 0.0
