"""``/api/v1/estimate-capacity``: the engine's capacity search, each of its profiles queued like any other."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from pytest_mlestimate.core.errors import clip
from pytest_mlestimate.planning.capacity import CapacityReport
from pytest_mlestimate.planning.checks import CapacityError
from pytest_mlestimate.planning.request import CapacityRequest, read_request
from pytest_mlestimate.scenarios.scenario import Scenario
from pytest_mlestimate.service.state import EstimationService
from pytest_mlestimate.service.validation import InvalidRequest, problem, scenario_from_body

BODY_FIELDS = ("scenario", "capacity")


class CapacityBody(BaseModel):
    """The request: a scenario, and what to ask of its capacity."""

    model_config = ConfigDict(extra="forbid")

    scenario: Scenario
    capacity: CapacityRequest = Field(default_factory=CapacityRequest)


class CapacityAnswer(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    max_batch_size: int | None = Field(
        alias="Max Batch Size", description="Largest batch under the limit, confirmed by real profiles; null if none"
    )
    search: dict[str, Any] | None = Field(description="How the largest batch was found; null when not searched")
    fit: dict[str, Any] = Field(description="The profiled sizes and each figure's line")
    predictions: dict[str, dict[str, Any]] = Field(description="Batch size -> figure -> value and 95 % interval")
    cards: list[dict[str, Any]] = Field(description="The largest batch each card class fits (GPU profiles only)")
    approximated: str


def read_body(content: bytes, service: EstimationService) -> tuple[Scenario, CapacityRequest]:
    """The scenario as the other endpoints check it, and the capacity request under the service's batch limit."""
    try:
        data = json.loads(content)
    except (ValueError, RecursionError):
        raise InvalidRequest([problem("", "the body is not valid JSON", "json_invalid")]) from None
    if not isinstance(data, dict):
        raise InvalidRequest([problem("", f"expected an object with {' and '.join(BODY_FIELDS)}", "dict_type")])
    unknown = [key for key in data if key not in BODY_FIELDS]
    if unknown:
        message = f"unknown field {clip(repr(unknown[0]), 100)}; allowed: {', '.join(BODY_FIELDS)}"
        raise InvalidRequest([problem("", message, "extra_forbidden", loc=[clip(str(unknown[0]), 100)])])
    if "scenario" not in data:
        raise InvalidRequest([problem("scenario", "required field is missing", "missing")])
    try:
        scenario = scenario_from_body(json.dumps(data["scenario"]).encode(), service.settings)
    except InvalidRequest as exc:
        for item in exc.problems:
            item["loc"] = ["body", "scenario", *item["loc"][1:]]
            item["msg"] = f"scenario.{item['msg']}" if item["loc"][2:] else item["msg"]
        raise
    most = service.settings.max_batch_size
    try:
        request = read_request(data.get("capacity", {}))
        for name in ("batch_sizes", "predict"):
            too_big = [size for size in getattr(request, name) or [] if size > most]
            if too_big:
                raise CapacityError(
                    f"capacity.{name}: this service accepts batch sizes up to {most} (got {too_big[0]})"
                )
    except CapacityError as exc:
        field = str(exc).partition(":")[0]
        raise InvalidRequest([problem("", str(exc), loc=field.split("."))]) from None
    return scenario, request


def answer(report: CapacityReport) -> tuple[int, dict[str, Any]]:
    return 200, report.to_dict()
