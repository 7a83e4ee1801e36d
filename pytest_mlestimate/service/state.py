"""The parts of one running service, built once from its settings."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

from pytest_mlestimate.api import estimate
from pytest_mlestimate.core.devices import resolve_device
from pytest_mlestimate.core.errors import DeviceUnavailableError
from pytest_mlestimate.estimates.estimate import Estimate
from pytest_mlestimate.planning.capacity import CapacityReport
from pytest_mlestimate.planning.request import CapacityRequest
from pytest_mlestimate.planning.search import SearchBounds
from pytest_mlestimate.profiling.profile import Profile
from pytest_mlestimate.scenarios.scenario import Scenario
from pytest_mlestimate.service.answers import RecentAnswers
from pytest_mlestimate.service.capacity_searches import CapacitySearches
from pytest_mlestimate.service.jobs import JobBoard
from pytest_mlestimate.service.profile_queue import Measure, Measured, ProfileQueue
from pytest_mlestimate.service.settings import ServiceSettings
from pytest_mlestimate.service.shared_jobs import SharedJobs
from pytest_mlestimate.service.store import ProfileStore
from pytest_mlestimate.stores.profile_cache import ProfileCache


def engine_measure(cache_path: Path | str, timeout: float, ray: str | None = None) -> Measure:
    """Profiles measured by the engine in a child process (on this host, or on a node of the Ray cluster at
    ``ray``), which a timeout stops; results go to its cache."""

    def measure(scenario: Scenario) -> Measured:
        result = estimate(scenario, isolate=True, timeout=timeout, cache_path=cache_path, ray=ray)
        return result.profile, result.cache

    return measure


log = logging.getLogger("pytest_mlestimate.service")


def shared_jobs(settings: ServiceSettings) -> SharedJobs | None:
    """The job table the replicas share, when they share a database."""
    if settings.store is None:
        return None
    from pytest_mlestimate.service.shared_jobs import SharedJobs

    return SharedJobs(settings.store, settings.replica)


def auto_device(settings: ServiceSettings) -> str:
    """What 'auto' means here, decided as the engine decides it (``devices.resolve_device``): the operator's
    device, else the first visible GPU, else the CPU. A pinned device this machine lacks stays as named:
    requests are then refused with the reason. On a cluster the nodes have the devices, not this host: the
    operator's device stands as named."""
    if settings.ray:
        return settings.device
    try:
        return resolve_device(settings.device)
    except DeviceUnavailableError as exc:
        log.warning("the service's device is not available, every request will be refused: %s", exc)
        return settings.device


@dataclass
class EstimationService:
    settings: ServiceSettings
    store: ProfileStore
    queue: ProfileQueue
    jobs: JobBoard
    auto_device: str
    answers: RecentAnswers
    searches: CapacitySearches = field(init=False)

    def __post_init__(self) -> None:
        self.searches = CapacitySearches(
            self.search_capacity, workers=self.settings.capacity_searches, max_waiting=self.settings.queue_size
        )

    @classmethod
    def build(cls, settings: ServiceSettings, measure: Measure | None = None) -> EstimationService:
        store = ProfileStore(settings.store or ProfileCache().path, placement="ray" if settings.ray else None)
        device = auto_device(settings)
        queue = ProfileQueue(
            measure or engine_measure(store.location, settings.profile_timeout, settings.ray),
            store,
            auto_device=device,
            max_waiting=settings.queue_size,
            profile_cpus=settings.profile_cpus,
            cluster=settings.ray_profiles if settings.ray else None,
        )
        jobs = JobBoard(settings.job_limit, shared_jobs(settings))
        return cls(settings, store, queue, jobs, device, RecentAnswers())

    def find(self, scenario: Scenario) -> tuple[str, Profile | None]:
        """The profile key and, if measured before, the profile (blocking: may read sqlite)."""
        key = self.store.key(scenario)
        return key, self.store.lookup(key)

    async def profile_of(self, scenario: Scenario) -> tuple[Future[Measured], bool]:
        """The scenario's profile, and whether it was known: a known one is ready at once, without queueing;
        otherwise the queue's future (shared with identical requests)."""
        key = self.store.known_key(scenario)
        profile = self.store.recent(key) if key else None
        if key is None or profile is None:
            key, profile = await asyncio.to_thread(self.find, scenario)
        if profile is None:
            return self.queue.submit(scenario, key), False
        ready: Future[Measured] = Future()
        ready.set_result((profile, self.store.cache_info(key)))
        return ready, True

    def search_capacity(self, scenario: Scenario, request: CapacityRequest) -> CapacityReport:
        """Blocking, on a search thread: each profile of the search waits its turn in the device's lane (admitted:
        the search itself was), a known one is not measured again, and the service's bounds cap the search."""

        def measure(sized: Scenario) -> Estimate:
            key, known = self.find(sized)
            if known is not None:
                return Estimate(sized, known, cache=self.store.cache_info(key))
            profile, cache = self.queue.submit(sized, key, admitted=True).result()
            return Estimate(sized, profile, cache=cache)

        settings = self.settings
        bounds = SearchBounds(
            most=settings.max_batch_size,
            seconds=settings.capacity_time_limit,
            owner=f"this service (--max-batch-size {settings.max_batch_size}, "
            f"--capacity-time-limit {settings.capacity_time_limit:g})",
        )
        return request.run(scenario, measure=measure, bounds=bounds)


def fleet_status(settings: ServiceSettings) -> dict[str, object]:
    """What the operator monitors across replicas: the shared store's profiles in flight, measured and taken over."""
    status: dict[str, object] = {
        "store": None,
        "ray": settings.ray,
        "profiles_in_flight": None,
        "profiles_measured": None,
        "lease_takeovers": None,
    }
    if settings.store is None:
        return status
    from pytest_mlestimate.stores.postgres import StoreError, shown
    from pytest_mlestimate.stores.postgres_profiles import fleet_figures

    status["store"] = shown(settings.store)
    try:
        figures = fleet_figures(settings.store)
    except StoreError as exc:
        return status | {"problem": str(exc)}
    return status | {
        "profiles_in_flight": figures.measuring,
        "profiles_measured": figures.measured,
        "lease_takeovers": figures.takeovers,
    }
