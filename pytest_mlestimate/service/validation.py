"""A request body -> the engine's Scenario, under the operator's allow-list and limits.

The body is validated by the engine's own model (the one schema of scenario files and requests); the
allow-list travels as the validation context, so a request can never name a module the operator did not.
Everything a request echoes back is cut short: a message repeats at most ``ECHO_LIMIT`` characters of a value.
"""

from __future__ import annotations

from typing import Any

from annotated_types import Le
from pydantic import ValidationError

from pytest_mlestimate.core import devices
from pytest_mlestimate.core.errors import ECHO_LIMIT, DeviceUnavailableError, brief, clip
from pytest_mlestimate.core.files import InputFileError, file_inside
from pytest_mlestimate.scenarios.architectures import TORCHVISION
from pytest_mlestimate.scenarios.input_size import SIZE_KWARGS, InputSizeError, model_resize, resized
from pytest_mlestimate.scenarios.scenario import Scenario, describe_errors, model_kwarg_places
from pytest_mlestimate.service.settings import DEFAULT_MODEL_KWARG_LIMIT, ServiceSettings

Problem = dict[str, Any]

MAX_MESSAGE = 1000
"""Characters of one problem's message: enough for the longest list of what is allowed."""


class InvalidRequest(Exception):
    """Answered 422; each problem has the field's ``loc``, a ``msg`` naming field, value and what is allowed."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = [_short(p) for p in problems]
        super().__init__("; ".join(p["msg"] for p in self.problems))


def _short(found: Problem) -> Problem:
    loc = [part if isinstance(part, int) else clip(str(part), ECHO_LIMIT) for part in found["loc"]]
    return {**found, "loc": loc, "msg": clip(found["msg"], MAX_MESSAGE)}


def problem(field: str, message: str, kind: str = "value_error", loc: list[str | int] | None = None) -> Problem:
    if loc is None:
        loc = [int(p) if p.isdigit() else p for p in field.split(".")] if field else []
    return {"loc": ["body", *loc], "msg": f"{field}: {message}" if field else message, "type": kind}


def scenario_from_body(body: bytes, settings: ServiceSettings) -> Scenario:
    try:
        scenario = Scenario.model_validate_json(
            body, context={"allowed_factories": settings.allowed_factories, "data_dir": settings.data_dir}
        )
    except ValidationError as exc:
        raise InvalidRequest(
            [
                {"loc": ["body", *item["loc"]], "msg": _shorter_loc(item["loc"], line), "type": item["type"]}
                for item, line in zip(exc.errors(include_url=False), describe_errors(exc), strict=True)
            ]
        ) from None
    device, problems = request_device(scenario.device, settings)
    problems.extend(operator_problems(scenario, settings))
    weights = None
    if scenario.weights_path is not None:
        weights, refusal = _weights_file(scenario.weights_path, settings)
        problems.extend(refusal)
    if problems:
        raise InvalidRequest(problems)
    update: dict[str, Any] = {}
    if device != scenario.device:
        update["device"] = device
    if weights is not None:
        update["weights_path"] = weights
    return scenario.model_copy(update=update) if update else scenario


def _shorter_loc(loc: tuple[int | str, ...], line: str) -> str:
    """describe_errors' line with the field path cut short: an unknown field's name can be the whole body."""
    full = ".".join(str(part) for part in loc)
    if len(full) <= ECHO_LIMIT or not line.startswith(full):
        return line
    return clip(full, ECHO_LIMIT) + line[len(full) :]


def allowed_devices(settings: ServiceSettings) -> str:
    if settings.device != "auto":
        return f"auto, {settings.device}"
    count, _why = devices.cuda_device_count()
    gpus = "" if not count else ", cuda:0" if count == 1 else f", cuda:0 to cuda:{count - 1}"
    return f"auto, cpu{gpus}"


def request_device(requested: str, settings: ServiceSettings) -> tuple[str, list[Problem]]:
    """The device the scenario will name (one spelling per device: 'auto', or what ``devices.resolve_device``
    makes of it) and, if this service cannot measure there, why. Decided before anything is queued: a device
    this machine lacks never gets a lane. ('auto' is the service's device, resolved at start; if a pinned one is
    missing, the queue refuses it, again before any lane.)"""
    if settings.ray:  # the cluster places it on a node with such a device, or refuses it when it has none
        wanted = settings.device if requested == "auto" else requested
        return ("cuda" if devices.is_gpu(wanted) else "cpu"), []
    pinned = settings.device != "auto"
    if requested == "auto":
        return (settings.device if pinned else "auto"), []
    spelled = devices.canonical_device(requested)
    if pinned and spelled != devices.canonical_device(settings.device):
        return requested, [
            problem(
                "device",
                f"this service measures on '{settings.device}' (got {brief(requested)}); allowed: "
                f"{allowed_devices(settings)}",
            )
        ]
    try:
        resolved = devices.resolve_device(requested)
    except (DeviceUnavailableError, ValueError) as exc:
        return requested, [unavailable_device(exc, settings)]
    return (settings.device if pinned else resolved), []


def unavailable_device(exc: Exception, settings: ServiceSettings) -> Problem:
    return problem("device", f"{exc}; allowed on this service: {allowed_devices(settings)}")


def operator_problems(scenario: Scenario, settings: ServiceSettings) -> list[Problem]:
    """What the engine would accept but this service's operator does not."""
    found = []
    if scenario.batch_size > settings.max_batch_size:
        found.append(
            problem(
                "batch_size",
                f"this service accepts at most {settings.max_batch_size} (got {scenario.batch_size})",
                "less_than_equal",
            )
        )
    for index, side in enumerate(scenario.image_size):
        if side > settings.max_image_side:
            found.append(
                problem(
                    f"image_size.{index}",
                    f"this service accepts image sides up to {settings.max_image_side} (got {side})",
                    "less_than_equal",
                )
            )
    if scenario.clip_length is not None and scenario.clip_length > settings.max_clip_length:
        found.append(
            problem(
                "clip_length",
                f"this service accepts at most {settings.max_clip_length} frames (got {scenario.clip_length})",
                "less_than_equal",
            )
        )
    if scenario.dataset is not None:
        summary = scenario.dataset_summary()
        side = max(max(row[1], row[2]) for row in summary.per_image)
        if side > settings.max_image_side:
            found.append(
                problem(
                    "dataset",
                    f"this service accepts image sides up to {settings.max_image_side}; the dataset's largest "
                    f"image has a side of {side}",
                    "less_than_equal",
                )
            )
    found.extend(input_size_problems(scenario, settings))
    found.extend(model_kwarg_problems(scenario, settings))
    return found


def input_size_problems(scenario: Scenario, settings: ServiceSettings) -> list[Problem]:
    """The image size limit, applied to what a torchvision model computes on after its own resize."""
    try:
        resize = model_resize(scenario)
        if resize is None:
            return []
        height, width = resized(scenario.image_size, resize)
    except InputSizeError as exc:
        return [problem(exc.field, exc.message, loc=["model_kwargs", exc.field.partition(".")[2]])]
    step = resize.divisible
    padded = (-(-height // step) * step, -(-width // step) * step)
    limit = settings.max_image_side
    if max(padded) <= limit:
        return []
    h, w = scenario.image_size
    computed = f"{scenario.architecture} computes on {padded[0]}x{padded[1]} for image_size {h}x{w}"
    if resize.fixed is not None and scenario.architecture in _FIXED_ONLY:
        how = f"{computed} (it always resizes to that); this service accepts image sides up to {limit}"
        return [problem("architecture", f"{how}, so it cannot measure this model here", "less_than_equal")]
    if resize.fixed is not None:
        how = f"{computed} (fixed_size, padded to a multiple of {step}), over this service's limit of {limit}"
        return [problem("model_kwargs", f"{how}; allowed: a smaller fixed_size", "less_than_equal")]
    sizes = "/".join(f"{s:g}" for s in resize.min_size)
    how = (
        f"{computed} (it resizes every image itself: min_size {sizes}, max_size {resize.max_size:g}, padded to a "
        f"multiple of {step}), over this service's limit of {limit} per side"
    )
    fits = limit // step * step
    if not fits:
        return [problem("model_kwargs", f"{how}; no min_size fits under a padding of {step}", "less_than_equal")]
    advice = f'pass smaller min_size and max_size in model_kwargs, e.g. {{"min_size": {fits}, "max_size": {fits}}}'
    return [problem("model_kwargs", f"{how}; {advice}", "less_than_equal")]


_FIXED_ONLY = frozenset(name for name, arch in TORCHVISION.items() if arch.family in ("SSD", "SSDlite"))
_NUM_CLASSES_LIMIT = next(m.le for m in Scenario.model_fields["num_classes"].metadata if isinstance(m, Le))


def model_kwarg_limit(name: str, scenario: Scenario, settings: ServiceSettings) -> float | None:
    """The largest a numeric model_kwarg may be here: the operator's limit for it; else num_classes's as the
    scenario field's; a custom factory's ``*_size`` keyword is an image size (max_image_side); any other of a
    custom factory's is held to the operator's ``*`` or DEFAULT_MODEL_KWARG_LIMIT. A torchvision builder's
    other keywords have no default limit: their cost follows the image size, which is limited."""
    if name in settings.max_model_kwargs:
        return settings.max_model_kwargs[name]
    if name == "num_classes":
        return _NUM_CLASSES_LIMIT
    if scenario.architecture in TORCHVISION:
        return None
    if name.endswith("_size"):
        return settings.max_image_side
    return settings.max_model_kwargs.get("*", DEFAULT_MODEL_KWARG_LIMIT)


def model_kwarg_problems(scenario: Scenario, settings: ServiceSettings) -> list[Problem]:
    """Numbers over their limit, a sub-configuration's too (``backbone_config.embed_dim``: the operator's limit
    for that dotted name, else the one for the inner name, as for any keyword)."""
    found = []
    for loc, item in model_kwarg_places(scenario.model_kwargs):
        name = ".".join(loc)
        sized = len(loc) == 1 and scenario.architecture in TORCHVISION and name in SIZE_KWARGS
        if sized and name not in settings.max_model_kwargs:
            continue  # judged by the size the model computes on
        limit = model_kwarg_limit(name if name in settings.max_model_kwargs else loc[-1], scenario, settings)
        numbers = [v for v in (item if isinstance(item, list) else [item]) if _is_number(v)]
        over = next((n for n in numbers if abs(n) > limit), None) if limit is not None else None
        if over is not None:
            shown = f"{limit:g}" if isinstance(limit, float) else str(limit)
            found.append(
                problem(
                    f"model_kwargs.{clip(name, ECHO_LIMIT)}",
                    f"{brief(over)} is over this service's limit of {shown}; allowed: numbers from -{shown} to {shown}",
                    "less_than_equal",
                    loc=["model_kwargs", *loc],
                )
            )
    return found


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _weights_file(path: str, settings: ServiceSettings) -> tuple[str | None, list[Problem]]:
    """The absolute path of a weights file named relative to the operator's weights directory."""
    if settings.weights_dir is None:
        return None, [problem("weights_path", "this service takes no weights files (no weights directory is set)")]
    try:
        return file_inside(settings.weights_dir, path, "weights"), []
    except InputFileError as exc:
        return None, [problem("weights_path", str(exc))]
