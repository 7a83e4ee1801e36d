"""The profile queue: one profile at a time per device, one profile per configuration.

Each physical device has a lane: a thread that measures the profiles queued for it, in order, so two
configurations never share a device while measured (the engine also holds ``devices.device_lock``, which
keeps other processes off the device). Requests for a configuration already queued or
being measured wait for that profile instead of queueing another (single flight). A lane holds at
most ``max_waiting`` profiles not yet started; one more raises ``QueueFull``. A capacity search's profiles are
admitted without that check: the searches were admitted (and are bounded) by ``CapacitySearches``, and each has
at most one profile queued, so a lane holds at most ``max_waiting`` plus the number of search threads.
"""

from __future__ import annotations

import collections
import contextlib
import math
import os
import queue
import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from pytest_mlestimate.core.devices import is_gpu, physical_id, resolve_device
from pytest_mlestimate.profiling.profile import Profile
from pytest_mlestimate.scenarios.scenario import Scenario
from pytest_mlestimate.service.store import ProfileStore

Measured = tuple[Profile, dict[str, Any]]
"""A profile and the engine's cache record for it."""
Measure = Callable[[Scenario], Measured]

DEFAULT_RETRY_AFTER = 30


class QueueFull(Exception):
    def __init__(self, device: str, waiting: int, retry_after: int, what: str = "profiles") -> None:
        super().__init__(f"{waiting} {what} already wait for {device}; try again in {retry_after} s")
        self.retry_after = retry_after


def lane_for(device: str, auto: str, cluster: bool = False) -> str:
    """The physical device a scenario's ``device`` names ('auto' is the service's), as ``devices`` names it: any
    two names of one device share a lane. A device this machine lacks raises DeviceUnavailableError: it gets no
    lane (a lane is a thread, and names of absent devices are countless). On a cluster, a lane is a kind of
    device (its GPUs, its CPUs), which the cluster has or refuses."""
    if cluster:
        return "ray:gpu" if is_gpu(device) else "ray:cpu"
    return physical_id(resolve_device(auto if device == "auto" else device))


class _Lane:
    def __init__(self, device: str, cpus: frozenset[int], workers: int = 1) -> None:
        self.device = device
        self.cpus = cpus
        self.jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self.waiting = 0
        self.running: set[str] = set()
        self.threads = [
            threading.Thread(target=self._work, name=f"profile-{device}-{n}", daemon=True) for n in range(workers)
        ]
        for thread in self.threads:
            thread.start()

    def _work(self) -> None:
        if self.cpus:
            os.sched_setaffinity(0, self.cpus)  # this thread only; the profiling child inherits it
        while True:
            self.jobs.get()()


class ProfileQueue:
    def __init__(
        self,
        measure: Measure,
        store: ProfileStore,
        *,
        auto_device: str,
        max_waiting: int,
        profile_cpus: frozenset[int] = frozenset(),
        cluster: int | None = None,
    ) -> None:
        """``cluster``: the profiles are measured on a cluster, this many at once for each kind of device."""
        self._measure = measure
        self._store = store
        self._auto = auto_device
        self._max_waiting = max_waiting
        self._cpus = profile_cpus
        self._cluster = cluster
        self._lanes: dict[str, _Lane] = {}
        self._in_flight: dict[str, Future[Measured]] = {}
        self._durations: collections.deque[float] = collections.deque(maxlen=20)
        self._lock = threading.Lock()
        self.measured = 0
        """Profiles this queue has measured (or handed to the engine to measure)."""

    def submit(self, scenario: Scenario, key: str, *, admitted: bool = False) -> Future[Measured]:
        """The future profile of ``key``: the one already on its way, or a newly queued one (``admitted``: not
        refused when the lane is full)."""
        # may ask NVML (or torch): not under the lock
        physical = lane_for(scenario.device, self._auto, self._cluster is not None)
        with self._lock:
            shared = self._in_flight.get(key)
            if shared is not None:
                return shared
            future: Future[Measured] = Future()
            known = self._store.recent(key)  # finished between the caller's look-up and now
            if known is not None:
                future.set_result((known, self._store.cache_info(key)))
                return future
            lane = self._lane(physical)
            if lane.waiting >= self._max_waiting and not admitted:
                raise QueueFull(lane.device, lane.waiting, self._retry_after(lane.waiting + 1))
            lane.waiting += 1
            self._in_flight[key] = future
        lane.jobs.put(lambda: self._run(lane, key, scenario, future))
        return future

    def _run(self, lane: _Lane, key: str, scenario: Scenario, future: Future[Measured]) -> None:
        with self._lock:
            lane.waiting -= 1
            lane.running.add(key)
        started = time.monotonic()
        outcome: Measured | None = None
        failure: BaseException | None = None
        runs = future.set_running_or_notify_cancel()
        if runs:
            with self._lock:
                self.measured += 1
            try:
                outcome = self._measure(scenario)
            except BaseException as exc:
                failure = exc
            else:
                self._store.remember(key, outcome[0])  # before leaving the in-flight table: no gap
        with self._lock:  # the lane is free before anyone learns the outcome
            self._durations.append(time.monotonic() - started)
            lane.running.discard(key)
            with contextlib.suppress(KeyError):
                del self._in_flight[key]
        if failure is not None:
            future.set_exception(failure)
        elif outcome is not None:
            future.set_result(outcome)

    def _lane(self, device: str) -> _Lane:
        lane = self._lanes.get(device)
        if lane is None:
            lane = self._lanes[device] = _Lane(device, self._cpus, self._cluster or 1)
        return lane

    def _retry_after(self, ahead: int) -> int:
        if not self._durations:
            return DEFAULT_RETRY_AFTER
        return max(1, math.ceil(statistics.fmean(self._durations) * ahead))

    def snapshot(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {
                device: {"waiting": lane.waiting, "measuring": bool(lane.running), "capacity": self._max_waiting}
                for device, lane in self._lanes.items()
            }

    def waiting(self) -> int:
        with self._lock:
            return sum(lane.waiting for lane in self._lanes.values())
