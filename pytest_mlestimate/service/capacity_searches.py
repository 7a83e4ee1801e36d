"""Capacity searches: a few at a time on threads of their own, a bounded number waiting, identical ones shared.

A search holds a thread for its whole length (it profiles several batch sizes, one after another, each through
the device's lane). Searches therefore get a pool of their own, ``workers`` threads, and never take the threads
that answer cached estimates; at most ``max_waiting`` more wait for a thread, and one more is refused with
``QueueFull`` (503 and Retry-After) before anything is started, sync or async alike.
"""

from __future__ import annotations

import collections
import json
import math
import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from pytest_mlestimate.planning.capacity import CapacityReport
from pytest_mlestimate.planning.request import CapacityRequest
from pytest_mlestimate.scenarios.scenario import Scenario
from pytest_mlestimate.service.profile_queue import DEFAULT_RETRY_AFTER, QueueFull

Search = Callable[[Scenario, CapacityRequest], CapacityReport]


class CapacitySearches:
    def __init__(self, search: Search, *, workers: int, max_waiting: int) -> None:
        self._search = search
        self._workers = workers
        self._max_waiting = max_waiting
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="capacity-search")
        self._in_flight: dict[str, Future[CapacityReport]] = {}
        self._durations: collections.deque[float] = collections.deque(maxlen=20)
        self._lock = threading.Lock()

    def submit(self, scenario: Scenario, request: CapacityRequest) -> Future[CapacityReport]:
        """The search's future report: one already on its way for the same question, or a newly queued one."""
        key = json.dumps([scenario.model_dump(mode="json"), request.model_dump(mode="json")], sort_keys=True)
        with self._lock:
            shared = self._in_flight.get(key)
            if shared is not None:
                return shared
            waiting = max(0, len(self._in_flight) - self._workers)
            if waiting >= self._max_waiting:
                raise QueueFull("a search thread", waiting, self._retry_after(waiting + 1), what="capacity searches")
            future = self._pool.submit(self._run, key, scenario, request)
            self._in_flight[key] = future
        return future

    def _run(self, key: str, scenario: Scenario, request: CapacityRequest) -> CapacityReport:
        started = time.monotonic()
        try:
            return self._search(scenario, request)
        finally:
            with self._lock:
                self._durations.append(time.monotonic() - started)
                del self._in_flight[key]

    def _retry_after(self, ahead: int) -> int:
        if not self._durations:
            return DEFAULT_RETRY_AFTER
        return max(1, math.ceil(statistics.fmean(self._durations) * ahead / self._workers))

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            searching = min(len(self._in_flight), self._workers)
            waiting = len(self._in_flight) - searching
        return {"searching": searching, "waiting": waiting, "threads": self._workers, "capacity": self._max_waiting}

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
