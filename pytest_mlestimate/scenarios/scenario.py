"""The one scenario schema, shared by YAML scenario files, HTTP requests and the Python API."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from pytest_mlestimate.core.errors import brief
from pytest_mlestimate.core.files import InputFileError, file_inside
from pytest_mlestimate.core.gpu_cards import GPU_CARDS, card_named
from pytest_mlestimate.core.pricing import Price
from pytest_mlestimate.scenarios import messages
from pytest_mlestimate.scenarios.architectures import (
    FIXED_CLIPS,
    LIBRARIES,
    TORCHVISION,
    TaskType,
    is_custom_factory,
    library_model,
    recipe,
    unknown_architecture_message,
    vit_patch,
)
from pytest_mlestimate.scenarios.coco import DatasetSummary

MAX_IMAGE_SIDE = 8192
MAX_BATCH_SIZE = 4096
MAX_DATASET_SIZE = 10**9
MAX_EPOCHS = 100_000

MAX_DETECTIONS_PER_IMAGE = 10_000
MAX_INSTANCES_PER_IMAGE = 10_000
"""Instances one image of a dataset may hold (COCO's most crowded image holds about 90)."""
MAX_PARAMETERS = 10**13
MAX_MODEL_KWARGS = 64
DEFAULT_SEQUENCE_LENGTH = 512
MAX_TEXT = 4096
"""Longest architecture name, weights path or model_kwargs string: a path, not a payload."""
DEFAULT_SAMPLE_INTERVAL_MS = 100
"""NVML averages GPU utilisation over 1/6 s or more and CPU use is computed over 100 ms windows, so faster
sampling adds little. On a 2-core machine a 20 ms thread cost 1.5-2.6 % of a 17 ms step, a 100 ms one
0.4-1.3 % (bench/monitor_overhead.py)."""

_DEVICE = re.compile(r"^(auto|cpu|cuda|cuda:\d{1,6})$")

Side = Annotated[int, Field(ge=1, le=MAX_IMAGE_SIDE)]
Scalar = str | int | float | bool | None


class Optimizer(BaseModel):
    """Defaults follow torchvision's detection reference recipe: SGD, lr 0.01 per 8 images, momentum 0.9, and
    a linear learning-rate warm-up from 0.001 x lr over the first 1000 steps. Without the warm-up a
    random-weight Mask R-CNN reached a non-finite loss within 17 steps and then stepped 4x faster on empty
    proposals, so a profile would time a model that no longer computes anything."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.01, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(1e-4, ge=0)
    warmup_factor: float = Field(0.001, gt=0, le=1)
    """The learning rate of the first step, as a fraction of ``lr``; it rises linearly to ``lr``."""
    warmup_steps: int = Field(1000, ge=0, le=1_000_000)
    """Steps the learning-rate warm-up lasts (torch.optim.lr_scheduler.LinearLR); 0 turns it off."""

    def describe(self) -> str:
        settings = f"lr {self.lr:g}, weight decay {self.weight_decay:g}"
        name = f"SGD (momentum {self.momentum:g}, {settings})" if self.name == "sgd" else f"AdamW ({settings})"
        if not self.warmup_steps or self.warmup_factor == 1:
            return f"{name}, no learning-rate warm-up"
        return (
            f"{name}, linear learning-rate warm-up from {self.warmup_factor:g} x lr over the first "
            f"{self.warmup_steps} steps, stepped every training step"
        )


def model_kwarg_places(model_kwargs: Mapping[str, Any]) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Each keyword's place and value, a sub-configuration's (``backbone_config``) one level down."""
    for name, value in model_kwargs.items():
        if isinstance(value, Mapping):
            yield from (((name, inner), item) for inner, item in value.items())
        else:
            yield (name,), value


class Scenario(BaseModel):
    """What to estimate. Fields that change a profile are listed in ``profile_fields``."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    task_type: TaskType
    """``detection`` and ``instance`` (segmentation) train on images with boxes (and masks); ``classification``,
    ``semantic-segmentation`` and ``video-classification`` on a batch tensor with a label per image, per pixel or
    per clip; ``custom`` on what a ``MeasuredModel`` makes."""
    architecture: str = Field(max_length=MAX_TEXT)
    parameters: int | None = Field(None, ge=1, le=MAX_PARAMETERS)
    dataset_size: int = Field(ge=1, le=MAX_DATASET_SIZE)
    batch_size: int = Field(ge=1, le=MAX_BATCH_SIZE)
    image_size: tuple[Side, Side]
    application_type: Literal["training", "inference"] = "training"
    threading: bool = False
    epochs: int = Field(1, ge=1, le=MAX_EPOCHS)
    device: str = "auto"
    num_classes: int | None = Field(None, ge=2, le=100_000)
    objects_per_image: int = Field(5, ge=1, le=1000)
    model_kwargs: dict[str, Scalar | list[Scalar] | dict[str, Scalar | list[Scalar]]] = Field(default_factory=dict)
    optimizer: Optimizer = Field(default_factory=Optimizer)
    amp: Literal["off", "bf16", "fp16"] = "off"
    warmup_iterations: int | None = Field(None, ge=0, le=1000)
    measure_iterations: int | None = Field(None, ge=2, le=10_000)
    """A fixed count of measured steps; unset, steps are measured until ``precision`` is reached or a cap."""
    precision: float | None = Field(None, gt=0, lt=1)
    """Target half-width of the 95 % confidence interval of the mean step time, as a fraction of the mean;
    unset: 0.01 on a GPU, 0.03 on a CPU."""
    sample_interval_ms: int = Field(DEFAULT_SAMPLE_INTERVAL_MS, ge=1, le=10_000)
    weights_path: str | None = Field(None, min_length=1, max_length=MAX_TEXT)
    dataset: Annotated[str, Field(min_length=1, max_length=MAX_TEXT)] | DatasetSummary | None = None
    """A COCO annotation file, the summary ``mlestimate dataset-stats`` wrote of one, or that summary itself (what
    a service request carries): training batches are drawn from its images and instances
    (``profiling.dataset_batches``); ``dataset_size`` and ``num_classes`` default to its image count and its
    largest category id plus one, ``image_size`` (which the drawn batches do not use) to its median image's."""
    aspect_ratio_group_factor: int | None = Field(None, ge=0, le=10)
    """Batches hold images of one aspect-ratio group, as torchvision's reference training groups them
    (``--aspect-ratio-group-factor``, 3 there): ``2k + 1`` bin edges from 1/2 to 2; unset, batches mix any
    images. Only with a ``dataset``."""
    sequence_length: int | None = Field(None, ge=1, le=MAX_IMAGE_SIDE)
    """Tokens per sequence of a causal language model (512 unless set); only with ``causal-lm``."""
    clip_length: int | None = Field(None, ge=1, le=1024)
    """Frames per clip of a video classifier (16 unless set); only with ``video-classification``."""
    predict_gpu: str | None = Field(None, min_length=1, max_length=64)
    """A GPU to predict peak memory for from this run, on whatever device it runs (``H100``, ``A100-80GB``, ``L4``:
    ``core.gpu_cards``): ``Predicted Peak GPU Memory`` in the result, and a ``peak_gpu_memory`` budget judged on
    it where no GPU was measured."""
    accelerator: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    """On a Ray cluster: the accelerator type the node of a CUDA scenario must have (Ray's ``accelerator_type``,
    such as ``H100`` or ``A100``); not with ``device: cpu``."""
    detection_load: Literal["max", "weights"] | int = "max"
    """Detections per image that inference post-processing is measured at: ``max`` (the model's
    ``detections_per_img``), a number, or ``weights`` (what ``weights_path``'s weights detect on the synthetic
    images). Random weights set the count arbitrarily, so a stated load is the default even with weights."""
    breakdown_depth: int = Field(1, ge=0, le=8)
    """How deep the per-module breakdown looks: 1, the model's direct children (a torchvision backbone with
    an FPN as its body and its FPN); N, the modules N levels down; 0 measures no breakdown."""
    price: Price | None = None
    """Prices for Cost per Training (``{device_hour: "2.50 USD", kwh: "0.30 USD"}``); unset, the plugin's or the
    service's default applies. It changes no measurement."""

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not _DEVICE.match(value):
            raise ValueError("not a device; allowed: auto, cpu, cuda, cuda:N")
        kind, _, index = value.partition(":")
        return f"{kind}:{int(index)}" if index else value  # cuda:00 is cuda:0

    @field_validator("model_kwargs", mode="before")
    @classmethod
    def _model_kwargs(cls, value: Any) -> Any:
        """One plain message per bad keyword, where the union of allowed types would give five."""
        if not isinstance(value, Mapping):
            return value
        if len(value) > MAX_MODEL_KWARGS:
            raise ValueError(f"{len(value)} keywords; at most {MAX_MODEL_KWARGS} are allowed")
        allowed = (
            "allowed: a finite number, a string, true/false, null or a list of those, or one level of keywords "
            "of those (a sub-configuration, such as a Hugging Face model's backbone_config)"
        )

        def check(key: str, item: Any) -> None:
            for scalar in item if isinstance(item, list) else [item]:
                if isinstance(scalar, float) and not math.isfinite(scalar):
                    raise ValueError(f"{brief(key)} is {scalar}, not a finite number; {allowed}")
                if isinstance(scalar, str) and len(scalar) > MAX_TEXT:
                    raise ValueError(f"{brief(key)} is a string of {len(scalar)} characters; at most {MAX_TEXT}")
                if not isinstance(scalar, str | int | float | bool | None):
                    raise ValueError(f"{brief(key)} is {brief(scalar)}; {allowed}")

        for key, item in value.items():
            if isinstance(item, Mapping) and len(item) > MAX_MODEL_KWARGS:
                raise ValueError(f"{brief(key)} has {len(item)} keywords; at most {MAX_MODEL_KWARGS} are allowed")
        for place, item in model_kwarg_places(value):
            check(".".join(map(str, place)), item)
        return value

    @model_validator(mode="before")
    @classmethod
    def _recipe(cls, data: Any) -> Any:
        """A torchvision classifier, segmenter or video model trains with its recipe's optimizer unless the
        scenario names one."""
        if not isinstance(data, Mapping) or "optimizer" in data or not isinstance(data.get("architecture"), str):
            return data
        found = recipe(data["architecture"], data.get("task_type"))
        return data if found is None else {**data, "optimizer": found}

    @model_validator(mode="before")
    @classmethod
    def _sequence(cls, data: Any) -> Any:
        """A language model's input is a sequence: ``image_size`` (which sizing reads) is [1, sequence_length],
        whatever a file's defaults give it."""
        if not isinstance(data, Mapping) or data.get("task_type") != "causal-lm":
            return data
        length = data.get("sequence_length") or DEFAULT_SEQUENCE_LENGTH
        return {**data, "image_size": [1, length] if isinstance(length, int) else length}

    @model_validator(mode="before")
    @classmethod
    def _dataset_defaults(cls, data: Any, info: ValidationInfo) -> Any:
        """``dataset_size``, ``num_classes`` and ``image_size`` (the median image's) from the dataset, where the
        scenario leaves them out, read from the file once. A caller that reads files a request names only in an
        operator's directory (a service) passes it as the context's ``data_dir`` (None: no file at all)."""
        if not isinstance(data, Mapping) or data.get("dataset") is None:
            return data
        dataset = data["dataset"]
        context = info.context or {}
        if isinstance(dataset, Mapping):
            try:
                summary = DatasetSummary.model_validate(dataset)
            except ValidationError as exc:
                first = describe_errors(exc)[0]
                raise ValueError(f"dataset: not a summary mlestimate dataset-stats wrote: {first}") from None
            data = {**data, "dataset": summary}
        elif not isinstance(dataset, str) or "\x00" in dataset:
            return data  # the field's own check says what is wrong
        else:
            if "data_dir" in context:
                data = {**data, "dataset": _in_data_dir(dataset, context["data_dir"])}
            if all(key in data for key in ("dataset_size", "num_classes", "image_size")):
                return data
            summary = _file_summary(data["dataset"])
        typical = [round(summary.image_height.p50), round(summary.image_width.p50)]
        return {"dataset_size": summary.images, "num_classes": summary.num_classes, "image_size": typical, **data}

    @model_validator(mode="after")
    def _dataset_within_limits(self) -> Scenario:
        if self.dataset is not None and self.task_type not in ("detection", "instance"):
            raise ValueError(
                f"dataset: a COCO dataset shapes detection and instance segmentation batches; a "
                f"{self.task_type} scenario takes none (its batches are synthetic, of image_size)"
            )
        if self.dataset is None:
            if self.aspect_ratio_group_factor is not None:
                raise ValueError(
                    "aspect_ratio_group_factor groups a dataset's images by aspect ratio; set dataset too, or "
                    "leave it out (synthetic batches are all one size)"
                )
            return self
        summary = self.dataset_summary()
        for image_id, width, height, instances in summary.per_image:
            if not (1 <= width <= MAX_IMAGE_SIDE and 1 <= height <= MAX_IMAGE_SIDE):
                raise ValueError(
                    f"dataset: image {image_id} is {width}x{height} px; image sides from 1 to {MAX_IMAGE_SIDE}"
                )
            if not 0 <= instances <= MAX_INSTANCES_PER_IMAGE:
                raise ValueError(
                    f"dataset: image {image_id} has {instances} instances; from 0 to {MAX_INSTANCES_PER_IMAGE}"
                )
        if not any(row[3] for row in summary.per_image):
            raise ValueError(
                "dataset: no image has an instance to train on (crowd regions and boxes under a pixel excluded)"
            )
        return self

    def dataset_summary(self) -> DatasetSummary:
        """The dataset's summary: carried inline, or read from its file (once per version of the file)."""
        if isinstance(self.dataset, DatasetSummary):
            return self.dataset
        if self.dataset is None:
            raise ValueError("the scenario has no dataset")
        return _file_summary(self.dataset)

    @field_validator("weights_path", "dataset")
    @classmethod
    def _file_path(cls, value: Any) -> Any:
        if isinstance(value, str) and "\x00" in value:
            raise ValueError("a path cannot contain a NUL byte (\\x00); allowed: a file path")
        return value

    @field_validator("predict_gpu")
    @classmethod
    def _predict_gpu(cls, value: str | None) -> str | None:
        if value is None:
            return None
        card = card_named(value)
        if card is None:
            raise ValueError(
                f"{brief(value)} is not a GPU this tool knows; allowed: {', '.join(c.name for c in GPU_CARDS)}"
            )
        return card.name

    @field_validator("detection_load", mode="before")
    @classmethod
    def _detection_load(cls, value: Any, info: ValidationInfo) -> str | int:
        allowed = (
            f"allowed: 'max', a number of detections per image (1-{MAX_DETECTIONS_PER_IMAGE}), "
            "or 'weights' with a weights_path"
        )
        if isinstance(value, str) and value.isdigit():
            value = int(value)
        if value == "weights" and info.data.get("weights_path") is None:
            raise ValueError(
                "'weights' measures what the weights detect, but no weights_path is given (random weights "
                f"detect an arbitrary number); {allowed}"
            )
        if value in ("max", "weights"):
            return value
        if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_DETECTIONS_PER_IMAGE:
            return value
        raise ValueError(f"not a detection load; {allowed}")

    @field_validator("architecture")
    @classmethod
    def _architecture(cls, value: str, info: ValidationInfo) -> str:
        """A torchvision builder; else a library model or a custom factory, which a caller that serves others
        (``allowed_factories`` in the context) allows by name: a library's defaults can be billions of
        parameters, and a factory is code."""
        if value in TORCHVISION:
            return value
        context = info.context or {}
        allowed = context.get("allowed_factories")
        if library_model(value) is not None or is_custom_factory(value):
            if allowed is None or value in allowed:
                return value
            what = "model" if library_model(value) is not None else "custom factory"
            raise ValueError(
                f"{what} '{value}' is not allowed here; allowed: the torchvision builders"
                f"{', ' if allowed else ''}{', '.join(sorted(allowed))} (an operator allows more with --allow-factory)"
            )
        raise ValueError(unknown_architecture_message(value))

    @model_validator(mode="after")
    def _clip_suits_the_model(self) -> Scenario:
        if self.clip_length is not None and self.task_type != "video-classification":
            raise ValueError("clip_length: frames per clip, only for task_type 'video-classification'")
        if self.sequence_length is not None and self.task_type != "causal-lm":
            raise ValueError("sequence_length: tokens per sequence, only for task_type 'causal-lm'")
        library = library_model(self.architecture)
        if library is not None and self.task_type not in LIBRARIES[library[0]]:
            allowed = " or ".join(f"'{t}'" for t in LIBRARIES[library[0]])
            raise ValueError(
                f"task_type '{self.task_type}' does not suit architecture '{self.architecture}': {library[0]} models "
                f"are measured as {allowed}"
            )
        if self.task_type == "causal-lm" and (library is None or library[0] != "hf"):
            raise ValueError(
                f"task_type 'causal-lm' is measured on a Hugging Face model built from its configuration "
                f"(architecture 'hf:gpt2', 'hf:llama', ...), not '{self.architecture}'"
            )
        fixed = FIXED_CLIPS.get(self.architecture)
        if fixed is not None:
            frames, side = fixed
            if (self.clip_length or 16) != frames or tuple(self.image_size) != (side, side):
                raise ValueError(
                    f"{self.architecture} is built for clips of {frames} frames of {side}x{side}; got "
                    f"clip_length {self.clip_length or 16}, image_size {list(self.image_size)}; allowed: "
                    f"clip_length {frames}, image_size [{side}, {side}]"
                )
        return self

    @model_validator(mode="after")
    def _accelerator_is_a_gpu(self) -> Scenario:
        if self.accelerator is not None and self.device == "cpu":
            raise ValueError(
                f"accelerator: '{self.accelerator}' names the GPU a cluster node must have; it needs device cuda "
                "(or auto), not cpu"
            )
        return self

    @model_validator(mode="after")
    def _size_suits_a_vit(self) -> Scenario:
        patch = vit_patch(self.architecture)
        height, width = self.image_size
        if patch and (height != width or height % patch):
            side = max(patch, height // patch * patch)
            raise ValueError(
                f"image_size: {self.architecture} computes on square images whose side is a multiple of its "
                f"{patch}-pixel patches (its position embedding is built for that size); got [{height}, {width}]; "
                f"allowed, for example, [{side}, {side}]"
            )
        return self

    @model_validator(mode="after")
    def _task_matches_architecture(self) -> Scenario:
        known = TORCHVISION.get(self.architecture)
        if known is not None and known.task_type != self.task_type:
            kind = {"instance": "instance segmentation"}.get(known.task_type, known.task_type)
            raise ValueError(
                f"task_type '{self.task_type}' does not suit architecture '{self.architecture}': "
                f"it is a {kind} model, so task_type must be '{known.task_type}'"
            )
        return self

    @property
    def num_batches(self) -> int:
        return -(-self.dataset_size // self.batch_size)

    @property
    def total_steps(self) -> int:
        return self.num_batches * self.epochs

    def profile_fields(self) -> dict[str, Any]:
        """Everything a measured profile depends on; dataset_size and epochs only scale results, price only
        prices them."""
        fields = self.model_dump(mode="json", exclude={"dataset_size", "epochs", "parameters", "price"})
        for name in (
            "dataset",
            "aspect_ratio_group_factor",
            "predict_gpu",
            "clip_length",
            "sequence_length",
            "accelerator",
        ):
            if fields[name] is None:  # the profiles measured before scenarios had these keep their keys
                del fields[name]
        if isinstance(self.dataset, DatasetSummary):  # a summary counts by its content, not by its rows
            fields["dataset"] = {"summary": self.dataset.digest()}
        return fields


def describe_errors(error: ValidationError) -> list[str]:
    """One line per problem of a scenario: the field, the value given and what is allowed."""
    return messages.describe_errors(error, Scenario.model_fields)


class ScenarioError(ValueError):
    """Invalid scenario input, already phrased for a person."""

    def __init__(self, problems: list[str], where: str = "") -> None:
        self.problems = problems
        self.where = where
        prefix = f"{where}: " if where else ""
        super().__init__(prefix + "invalid scenario\n" + "\n".join(f"  - {p}" for p in problems))


def parse_scenario(data: Any, where: str = "", context: dict[str, Any] | None = None) -> Scenario:
    if isinstance(data, Scenario):
        return data
    try:
        return Scenario.model_validate(data, context=context)
    except ValidationError as exc:
        raise ScenarioError(describe_errors(exc), where) from None


def _file_summary(path: str) -> DatasetSummary:
    """The summary of a dataset file, read once per version of it; a bad file is the scenario's error."""
    from pytest_mlestimate.scenarios.coco import DatasetError, dataset_summary

    try:
        return dataset_summary(path)
    except DatasetError as exc:
        raise ValueError(f"dataset: {exc}") from None


def _in_data_dir(name: str, data_dir: Path | None) -> str:
    """A request's dataset file, inside the operator's data directory."""
    if data_dir is None:
        raise ValueError(
            "dataset: this service takes no dataset files (no data directory is set); send the summary "
            "'mlestimate dataset-stats' writes as the dataset instead"
        )
    try:
        return file_inside(data_dir, name, "data")
    except InputFileError as exc:
        raise ValueError(f"dataset: {exc}") from None
