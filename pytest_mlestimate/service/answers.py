"""What each endpoint answers: the documented figures of an estimate, or why there is none."""

from __future__ import annotations

import logging
import threading
import uuid
from typing import Any

from pytest_mlestimate.core.errors import (
    DeviceUnavailableError,
    ModelBuildError,
    ModelRunError,
    ProfileCrashError,
    ProfileStoppedError,
    ProfileTimeoutError,
    clip,
)
from pytest_mlestimate.core.pricing import Price
from pytest_mlestimate.estimates.estimate import Estimate
from pytest_mlestimate.planning.checks import CapacityError
from pytest_mlestimate.scenarios.scenario import Scenario
from pytest_mlestimate.service.jobs import Answer
from pytest_mlestimate.service.profile_queue import Measured, QueueFull
from pytest_mlestimate.service.store import Recent
from pytest_mlestimate.service.validation import MAX_MESSAGE, InvalidRequest, problem
from pytest_mlestimate.stores.postgres import StoreError

log = logging.getLogger("pytest_mlestimate.service")

FIGURES = {
    "estimate-resource": "resource",
    "estimate-training-time": "training_time",
    "estimate-inference-time": "inference_time",
}
"""Endpoint -> the part of ``Estimate.to_dict()`` whose keys it puts at the top level of its body."""
ALSO = {"estimate-training-time": ("energy", "cost")}
"""Endpoint -> further sections of ``Estimate.to_dict()`` it answers whole, under their own keys."""


def check_endpoint(endpoint: str, scenario: Scenario) -> None:
    if endpoint == "estimate-training-time" and scenario.application_type != "training":
        raise InvalidRequest(
            [
                problem(
                    "application_type",
                    f"{endpoint} needs 'training' (got '{scenario.application_type}'); allowed: training",
                )
            ]
        )


def figures(endpoint: str, scenario: Scenario, measured: Measured, price: Price | None = None) -> Answer:
    """``price``: the service's default, for a request that sets none."""
    profile, cache = measured
    result = Estimate(scenario, profile, cache=cache, default_price=price).to_dict()
    chosen: dict[str, Any] = result[FIGURES[endpoint]]
    also = {section: result[section] for section in ALSO.get(endpoint, ())}
    named = set(chosen).union(*also.values())
    units = {name: unit for name, unit in result["units"].items() if name in named}
    body = {**chosen, **also, "units": units, "details": result["details"], "warnings": result["warnings"]}
    return 200, body


def failure(exc: BaseException) -> Answer:
    """A profile that could not be made, as an answer; anything unforeseen is logged under an id."""
    if isinstance(exc, InvalidRequest):
        return 422, {"detail": exc.problems}
    if isinstance(exc, DeviceUnavailableError):
        return 422, {"detail": InvalidRequest([problem("device", str(exc))]).problems}
    if isinstance(exc, (ModelBuildError, ModelRunError)):
        return 422, {"detail": InvalidRequest([problem("", str(exc))]).problems}
    if isinstance(exc, CapacityError):  # found by the search: the device's memory unknown, say
        return 422, {"detail": InvalidRequest([problem("", str(exc), loc=["capacity"])]).problems}
    if isinstance(exc, QueueFull):
        return 503, {"detail": clip(str(exc), MAX_MESSAGE), "retry_after": exc.retry_after}
    if isinstance(exc, ProfileTimeoutError):
        return 504, {"detail": clip(str(exc), MAX_MESSAGE)}
    if isinstance(exc, ProfileStoppedError):
        return 503, {"detail": clip(f"this service is shutting down: {exc}", MAX_MESSAGE)}
    if isinstance(exc, StoreError):  # the replicas' database out of reach, or another replica still measuring
        return 503, {"detail": clip(str(exc), MAX_MESSAGE)}
    error_id = uuid.uuid4().hex[:12]
    if isinstance(exc, ProfileCrashError):
        log.error("error %s: %s", error_id, exc)
        summary = clip(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, MAX_MESSAGE)
        return 500, {"detail": f"{summary} (error id {error_id})", "error_id": error_id}
    log.error("error %s: internal error", error_id, exc_info=exc)
    return 500, {"detail": f"internal error (error id {error_id}, also in the server log)", "error_id": error_id}


class RecentAnswers:
    """Rendered answers to cached estimates, by endpoint and request body: a hot request skips validation,
    the estimate's statistics and JSON encoding. Only answers that cannot change are kept (see ProfileStore)."""

    MAX_BODY = 4096

    def __init__(self, capacity: int = 1024) -> None:
        self._answers = Recent[bytes](capacity)
        self._lock = threading.Lock()

    def get(self, endpoint: str, body: bytes) -> bytes | None:
        with self._lock:
            return self._answers.get(f"{endpoint} {body!r}")

    def keep(self, endpoint: str, body: bytes, answer: bytes) -> None:
        if len(body) <= self.MAX_BODY:
            with self._lock:
                self._answers.remember(f"{endpoint} {body!r}", answer)
