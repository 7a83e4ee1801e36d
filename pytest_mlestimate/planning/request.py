"""A capacity request as a scenario file's ``capacity:``, a request body or a command line states it, read
into one ``CapacityRequest`` that runs ``capacity``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, field_validator

from pytest_mlestimate.core.errors import brief
from pytest_mlestimate.planning.capacity import CapacityReport, capacity
from pytest_mlestimate.planning.checks import (
    DEFAULT_HEADROOM,
    MAX_SIZES,
    CapacityError,
    check_batch_sizes,
    parse_headroom,
    parse_limit,
)
from pytest_mlestimate.scenarios.scenario import MAX_BATCH_SIZE, Scenario, describe_errors


class CapacityRequest(BaseModel):
    """What a capacity answer is asked for, as a scenario file's ``capacity:``, a request body or the API takes
    it. Each value is checked by the same functions the API uses, so each face reports the same errors."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    limit: str | None = None
    """Memory limit, e.g. '16 GiB'; unset: the device's memory less headroom."""
    headroom: str | float = DEFAULT_HEADROOM
    batch_sizes: list[int] | None = None
    """The sizes profiled for the fit; unset: ``choose_batch_sizes``."""
    predict: list[int] = Field(default_factory=list, max_length=MAX_SIZES)
    """Batch sizes to answer from the fit."""
    search: StrictBool = True
    """true or false; "yes" or 1 is refused rather than read as true."""
    step: int = Field(1, ge=1, le=MAX_BATCH_SIZE)
    up_to: int = Field(MAX_BATCH_SIZE, ge=1, le=MAX_BATCH_SIZE)
    """The largest batch the search may profile: its answer is at most this."""

    @field_validator("limit", mode="before")
    @classmethod
    def _limit(cls, value: Any) -> Any:
        if value is not None:
            parse_limit(value, "")
        return value

    @field_validator("headroom", mode="before")
    @classmethod
    def _headroom(cls, value: Any) -> Any:
        parse_headroom(value, "")
        return value

    @field_validator("batch_sizes", mode="before")
    @classmethod
    def _batch_sizes(cls, value: Any) -> Any:
        return None if value is None else check_batch_sizes(value, "")

    @field_validator("predict", mode="before")
    @classmethod
    def _predict(cls, value: Any) -> Any:
        if isinstance(value, list):
            for batch in value:
                if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= MAX_BATCH_SIZE:
                    raise CapacityError(f"{brief(batch)} is not a batch size from 1 to {MAX_BATCH_SIZE}")
        return value

    def run(self, scenario: Scenario | Mapping[str, Any], most: int = MAX_BATCH_SIZE, **options: Any) -> CapacityReport:
        """The answer; ``most`` is a bound set by whoever runs it (a service's batch limit), on top of ``up_to``."""
        return capacity(
            scenario, limit=self.limit, headroom=self.headroom, batch_sizes=self.batch_sizes, predict=self.predict,
            search=self.search, step=self.step, most=min(most, self.up_to), **options,
        )  # fmt: skip


def read_request(raw: object, where: str = "capacity", spell: Callable[[str], str] | None = None) -> CapacityRequest:
    """``true``/``{}`` asks with the defaults; a mapping sets fields. Problems come as one CapacityError, each
    field named by ``spell`` (default ``capacity.<field>``; a command line names its options instead)."""
    name = spell or (lambda field_name: f"{where}.{field_name}")
    if raw is True:
        raw = {}
    if not isinstance(raw, Mapping):
        raise CapacityError(f"{where}: expected true or a mapping of {', '.join(CapacityRequest.model_fields)}; "
                            f"got {brief(raw)}")  # fmt: skip
    unknown = [key for key in raw if key not in CapacityRequest.model_fields]
    if unknown:
        allowed = ", ".join(CapacityRequest.model_fields)
        raise CapacityError(f"{name(brief(unknown[0]))}: unknown field; allowed: {allowed}")
    try:
        return CapacityRequest.model_validate(raw)
    except ValidationError as exc:
        lines = []
        for item, line in zip(exc.errors(include_url=False), describe_errors(exc), strict=True):
            field_name = str(item["loc"][0])
            said = (
                item["msg"].removeprefix("Value error, ") if item["type"] == "value_error" else line.partition(": ")[2]
            )
            lines.append(f"{name(field_name)}: {said}")
        raise CapacityError("; ".join(lines)) from None
