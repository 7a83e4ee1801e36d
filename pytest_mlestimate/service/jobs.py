"""Asynchronous estimates: a job that a client polls instead of holding its request open."""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_mlestimate.service.shared_jobs import SharedJobs

Answer = tuple[int, dict[str, Any]]
"""An HTTP status and its body."""


@dataclass
class Job:
    id: str
    endpoint: str
    future: Future[Any]
    answer: Callable[[Any], Answer]
    """Turns what the future holds (a profile, a capacity report) into the endpoint's answer."""
    fail: Callable[[BaseException], Answer]
    created: float = field(default_factory=time.time)

    def describe(self) -> dict[str, Any]:
        state = {"id": self.id, "endpoint": self.endpoint, "created": self.created}
        if not self.future.done():
            return {**state, "status": "running" if self.future.running() else "queued"}
        error = self.future.exception()
        status, body = self.fail(error) if error is not None else self.answer(self.future.result())
        outcome = "done" if status == 200 else "failed"
        return {**state, "status": outcome, "http_status": status, "result" if status == 200 else "error": body}


class JobBoard:
    """The jobs this process knows, newest last; past ``limit`` the oldest finished ones are forgotten. With
    ``shared``, each job is also written to the replicas' database, where any replica finds it."""

    def __init__(self, limit: int, shared: SharedJobs | None = None) -> None:
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._limit = limit
        self._lock = threading.Lock()
        self.shared = shared

    def add(
        self,
        endpoint: str,
        future: Future[Any],
        answer: Callable[[Any], Answer],
        fail: Callable[[BaseException], Answer],
        request: bytes = b"",
        taken_over: str | None = None,
    ) -> Job:
        """``request``: the body, kept with a shared job so that another replica can resume it; ``taken_over``:
        the id of a shared job this replica resumes."""
        job = Job(taken_over or secrets.token_urlsafe(12), endpoint, future, answer, fail)
        if self.shared is not None and taken_over is None:
            self.shared.record(job.id, endpoint, request, job.describe())
        with self._lock:
            self._jobs[job.id] = job
            finished = [j.id for j in self._jobs.values() if j.future.done()]
            for stale in finished[: max(0, len(self._jobs) - self._limit)]:
                del self._jobs[stale]
        if self.shared is not None:
            shared = self.shared
            future.add_done_callback(lambda _done: shared.update(job.id, job.describe()))
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)
