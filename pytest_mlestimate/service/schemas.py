"""The bodies the service answers with, as documented in its OpenAPI schema.

The figure keys ("Peak GPU Memory", "Batch Time", "Total Training Time", ...) are the public contract of
``Estimate.to_dict()``; they are spelt here as aliases so that the schema names them exactly.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from pytest_mlestimate.profiling.breakdown import Breakdown, Timeline

Figure = float | None
"""A measured figure; null where it does not apply (no GPU, a model that did not fit, ...)."""

BATCH_KEY_PATTERN = r"^Batch of [1-9][0-9]* Inference Time$"


class Closed(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Problem(Closed):
    loc: list[str | int] = Field(description="Where the problem is: 'body' or 'query', then the field's path")
    msg: str = Field(description="The field, the value given (cut short) and what is allowed")
    type: str


class ValidationFailed(Closed):
    detail: list[Problem]


class Failed(Closed):
    detail: str


class InternalError(Closed):
    detail: str
    error_id: str = Field(description="Also in the server log, with the trace")


class BatchTime(Closed):
    forward_pass: Figure
    backward_pass: Figure


class Details(BaseModel):
    """How the figures were measured (the engine's ``details``: timings, method, environment, cache...)."""

    model_config = ConfigDict(extra="allow")

    fits: bool
    failure: str | None
    cache: dict[str, Any]
    breakdown: Breakdown | None = Field(
        None, description="Time and memory by part of the model, measured with module hooks in extra steps"
    )
    timeline: Timeline | None = Field(None, description="Memory against time through one instrumented training step")


class Answer(Closed):
    units: dict[str, str] = Field(description="Each figure's unit, by figure key")
    details: Details
    warnings: list[str]


class PredictedGpu(Closed):
    gpu: str
    allocated: int = Field(description="What torch.cuda.max_memory_allocated() would read")
    reserved: int = Field(description="What torch.cuda.max_memory_reserved() would read")
    device: int = Field(description="Reserved plus the CUDA context and library handles (approximate)")
    method: str
    error: str = Field(description="How far the prediction has been found from measured figures, and where")
    measured_allocated: int | None = Field(None, description="On a GPU: the allocator's peak allocated, beside it")
    measured_reserved: int | None = None


class ResourceAnswer(Answer):
    peak_gpu_memory: Figure = Field(alias="Peak GPU Memory")
    predicted_peak_gpu_memory: PredictedGpu | None = Field(
        None,
        alias="Predicted Peak GPU Memory",
        description="With the request's predict_gpu: the peak GPU memory predicted for that card from this run",
    )
    peak_gpu_utilization: Figure = Field(alias="Peak GPU Utilization")
    peak_ram_memory: Figure = Field(alias="Peak RAM Memory")
    peak_cpu_utilization: Figure = Field(alias="Peak CPU Utilization")
    batch_time: BatchTime = Field(alias="Batch Time")
    ram_before_training: Figure = Field(alias="RAM before training")
    vram_before_training: Figure = Field(alias="VRAM before training")


class EnergyFigures(Closed):
    """Energy over the measured training steps, per source, and per training at the scenario's steps."""

    gpu_energy_per_step: Figure = Field(alias="GPU Energy per Step")
    cpu_energy_per_step: Figure = Field(alias="CPU Energy per Step")
    energy_per_training: Figure = Field(alias="Energy per Training")
    average_gpu_power: Figure = Field(alias="Average GPU Power")
    average_cpu_power: Figure = Field(alias="Average CPU Power")
    included: list[str] = Field(alias="Included", description="The sources Energy per Training adds up")
    methods: dict[str, str] = Field(alias="Methods", description="How each included source was read")
    reasons: dict[str, str] = Field(alias="Reasons", description="Why each null figure is null")


class CostFigures(Closed):
    """Cost per Training at the request's price, or the service's default price."""

    cost_per_training: Figure = Field(alias="Cost per Training")
    currency: str | None = Field(alias="Currency")
    price_per_device_hour: Figure = Field(alias="Price per Device-Hour")
    price_per_kwh: Figure = Field(alias="Price per kWh")
    included: list[str] = Field(alias="Included", description="The parts priced: 'device time', 'energy'")
    excluded: dict[str, str] = Field(alias="Excluded", description="Parts with a price left out, and why")
    reasons: dict[str, str] = Field(alias="Reasons", description="Why Cost per Training is null")


class TrainingTimeAnswer(Answer):
    total_training_time: Figure = Field(alias="Total Training Time")
    energy: EnergyFigures
    cost: CostFigures


def _batch_key(schema: dict[str, Any]) -> None:
    schema["patternProperties"] = {BATCH_KEY_PATTERN: {"anyOf": [{"type": "number"}, {"type": "null"}]}}
    schema["minProperties"] = len(schema["properties"]) + 1
    schema["description"] = "Also 'Batch of {batch_size} Inference Time', the scenario's batch_size filled in"


class InferenceTimeAnswer(Answer):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, json_schema_extra=_batch_key)

    inference_1_image: Figure = Field(alias="1-Image Inference Time")


JobStatus = Literal["queued", "running", "done", "failed"]


class Job(Closed):
    id: str
    endpoint: Literal["estimate-resource", "estimate-training-time", "estimate-inference-time"]
    created: float = Field(description="Unix time")
    status: JobStatus
    http_status: int | None = Field(None, description="Once finished: what the synchronous request would have got")
    result: ResourceAnswer | TrainingTimeAnswer | InferenceTimeAnswer | None = Field(
        None, description="Once done: the endpoint's answer"
    )
    error: ValidationFailed | InternalError | Failed | None = Field(None, description="Once failed: the error body")


class AcceptedJob(Job):
    url: str = Field(description="Where to poll the job (also in the Location header)")


class Limits(Closed):
    batch_size: int
    image_side: int = Field(description="Of image_size and of what a torchvision model resizes the image to")
    clip_length: int = Field(description="Frames per clip of a video classifier")
    dataset_size: int
    profile_timeout_seconds: float
    capacity_time_limit_seconds: float
    weights_files: bool
    dataset_files: bool
    """Whether requests may name a dataset file (in the operator's data directory); a summary is always taken."""
    body_bytes: int
    model_kwargs: dict[str, float] = Field(description="Operator limits by keyword; '*' a custom factory's others")


class Lane(Closed):
    waiting: int
    measuring: bool
    capacity: int


class Searches(Closed):
    searching: int
    waiting: int = Field(description="Searches accepted and waiting for a thread")
    threads: int
    capacity: int = Field(description="Searches that may wait; one more is answered 503")


class Fleet(Closed):
    store: str | None = Field(description="The database the replicas share (without its password), if any")
    ray: str | None = Field(description="The Ray cluster that measures the profiles, if any")
    profiles_in_flight: int | None = Field(description="Profiles being measured in the whole fleet (leases held)")
    profiles_measured: int | None = Field(description="Profiles the fleet measured since its database was made")
    lease_takeovers: int | None = Field(description="Leases taken over after their holder stopped renewing them")
    problem: str | None = Field(None, description="Why the database's figures could not be read")


class Environment(Closed):
    device: str
    auto_device: str
    gpus: list[str]
    gpu_driver: str | None
    gpu_unavailable: str | None
    versions: dict[str, str | None]
    architectures: dict[str, str]
    endpoints: dict[str, str]
    limits: Limits
    queue: dict[str, Lane] = Field(description="Per physical device")
    capacity_searches: Searches
    profiles_in_memory: int
    api_key_required: bool
    fleet: Fleet


class Health(Closed):
    status: Literal["ok"]
