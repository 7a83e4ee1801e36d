"""Stand-ins for the service tests: the original request, a fake profile, a fake profiler, a client."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx

from pytest_mlestimate.profiling.profile import PhasePeaks, Profile
from pytest_mlestimate.scenarios.scenario import Scenario
from pytest_mlestimate.service.profile_queue import Measured

TINY = "pytest_mlestimate.tiny:tiny_detector"

EXAMPLE: dict[str, Any] = {
    "task_type": "detection",
    "architecture": "fasterrcnn_resnet50_fpn",
    "parameters": 41755286,
    "dataset_size": 10000,
    "batch_size": 8,
    "image_size": [800, 800],
    "application_type": "training",
    "threading": False,
}
"""The request of the original README, field for field."""


def fake_profile(**changes: Any) -> Profile:
    peaks = PhasePeaks(peak_rss=2_000_000_000, peak_cpu_percent=180.0, samples=12)
    values: dict[str, Any] = {
        "device": "cpu",
        "device_name": "test CPU",
        "effective_input_size": (800, 800),
        "parameter_count": 41755286,
        "ram_before": 900_000_000,
        "warmup_step_times": [2.0, 1.5],
        "step_times": [1.0, 1.1, 0.9, 1.0],
        "forward_times": [0.4, 0.4, 0.5, 0.4],
        "backward_times": [0.5, 0.6, 0.5, 0.5],
        "optimizer_times": [0.05] * 4,
        "inference_one_times": [0.1, 0.1],
        "inference_batch_times": [0.6, 0.7],
        "training": peaks,
        "inference": peaks,
        "environment": {"cpu": "test CPU"},
    }
    return Profile(**(values | changes))


class FakeMeasure:
    """Stands in for the engine's profiling: counts calls and the most profiles measured at once per device.

    ``gate`` holds every profile until set; ``fail`` is raised instead of answering; ``delay`` widens the
    window in which a second profile on the same device would be seen if the queue let it in.
    """

    def __init__(self, delay: float = 0.0, profile: Profile | None = None) -> None:
        self.calls: list[Scenario] = []
        self.active: Counter[str] = Counter()
        self.most_at_once: Counter[str] = Counter()
        self.gate = threading.Event()
        self.gate.set()
        self.fail: BaseException | None = None
        self.delay = delay
        self.profile = profile or fake_profile()
        self.before: Callable[[Scenario], None] | None = None
        self._lock = threading.Lock()

    def __call__(self, scenario: Scenario) -> Measured:
        with self._lock:
            self.calls.append(scenario)
            self.active[scenario.device] += 1
            self.most_at_once[scenario.device] = max(self.most_at_once[scenario.device], self.active[scenario.device])
        try:
            if self.before is not None:
                self.before(scenario)
            self.gate.wait(30)
            time.sleep(self.delay)
            if self.fail is not None:
                raise self.fail
            return self.profile, {"hit": False}
        finally:
            with self._lock:
                self.active[scenario.device] -= 1


def client_for(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://service")
