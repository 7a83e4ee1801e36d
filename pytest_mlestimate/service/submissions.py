"""A request's body turned into the work that answers it: the same for a request answered at once, a job, and a
job that another replica accepted and this one resumes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from functools import partial
from typing import Any

from pytest_mlestimate.scenarios.scenario import Scenario
from pytest_mlestimate.service import capacity_answers
from pytest_mlestimate.service.answers import check_endpoint, failure, figures
from pytest_mlestimate.service.jobs import Answer, Job
from pytest_mlestimate.service.state import EstimationService
from pytest_mlestimate.service.validation import scenario_from_body

CAPACITY = "estimate-capacity"


@dataclass(frozen=True)
class Submitted:
    future: Future[Any]
    answer: Callable[[Any], Answer]
    known: bool
    """The profile was measured before: the future is done."""
    scenario: Scenario


async def submit(service: EstimationService, endpoint: str, content: bytes) -> Submitted:
    """Raises ``InvalidRequest`` (422), ``QueueFull`` (503) or ``DeviceUnavailableError``."""
    if endpoint == CAPACITY:
        scenario, asked = capacity_answers.read_body(content, service)
        return Submitted(service.searches.submit(scenario, asked), capacity_answers.answer, False, scenario)
    scenario = scenario_from_body(content, service.settings)
    check_endpoint(endpoint, scenario)
    future, known = await service.profile_of(scenario)
    return Submitted(future, partial(figures, endpoint, scenario, price=service.settings.price), known, scenario)


async def resume(service: EstimationService, job_id: str) -> Job | None:
    """A shared job whose replica died, taken over and submitted here; None when another replica took it first."""
    shared = service.jobs.shared
    taken = await asyncio.to_thread(shared.take_over, job_id) if shared is not None else None
    if taken is None:
        return None
    endpoint, content = taken
    try:
        submitted = await submit(service, endpoint, content)
    except Exception as exc:  # accepted once, refused now (a full queue): the job fails with the reason
        future: Future[Any] = Future()
        future.set_exception(exc)
        return service.jobs.add(endpoint, future, failure, failure, taken_over=job_id)
    return service.jobs.add(endpoint, submitted.future, submitted.answer, failure, taken_over=job_id)
