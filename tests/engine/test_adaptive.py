"""Measured steps run until the mean step time is as sharp as asked, or a cap; a fixed count stays fixed.

The models here sleep for a set time a step, so their spread is known; on one thread, a busy machine hardly
changes it (two OpenMP threads wait for each other when one is descheduled). Contention is switched off, as
another process's load would otherwise (rightly) cut the measurement short.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from typing import Any

import pytest
import torch

from pytest_mlestimate import estimate_model
from pytest_mlestimate.profiling import contention
from pytest_mlestimate.profiling.measurement import Measurement
from pytest_mlestimate.scenarios.scenario import ScenarioError, parse_scenario
from pytest_mlestimate.tiny import TinyDetector

SCENARIO: dict[str, Any] = {
    "task_type": "detection",
    "architecture": "tests:sleepy",
    "dataset_size": 1000,
    "batch_size": 1,
    "image_size": [32, 32],
    "device": "cpu",
    "warmup_iterations": 1,
}


class SleepyDetector(TinyDetector):
    """Each training forward sleeps the next of ``pattern``'s seconds, round and round."""

    def __init__(self, pattern: list[float]) -> None:
        super().__init__(channels=4)
        self.pattern = pattern
        self.calls = 0

    def forward(self, images: Any, targets: Any = None) -> Any:
        if self.training:
            time.sleep(self.pattern[self.calls % len(self.pattern)])
            self.calls += 1
        return super().forward(images, targets)


@pytest.fixture(autouse=True)
def _quiet_steps(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(contention, "judge", lambda *args, **kwargs: False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_steady_steps_stop_once_the_mean_is_sharp_after_the_floor() -> None:
    # 50 ms steps: a busy machine's few ms of delay leave the mean sharp at the floor (20 ms steps scattered by 10 %
    # beside two busy loops, and needed 50 steps)
    profile = estimate_model(lambda: SleepyDetector([0.05]), SCENARIO).profile
    assert profile.precision_target == 0.03
    assert profile.precision_met is True and profile.precision is not None and profile.precision <= 0.03
    # the floor: at least 8 steps and 1 s of them
    assert profile.contention is not None and profile.contention.wall_seconds >= 1.0
    steps = profile.step_times
    assert len(steps) >= 8
    # and no more than the floor and the target need: it stopped by the first step past the floor whose mean was
    # sharp (the floor's second also counts the time between steps, so it is reached no later than the steps' sum)
    sharp = (n for n in range(8, len(steps) + 1) if sum(steps[:n]) >= 1.0 and _precision(steps[:n]) <= 0.03)
    assert len(steps) <= next(sharp, len(steps))


def _precision(steps: list[float]) -> float:
    return Measurement(steps=list(steps)).precision or math.inf


def test_noisy_steps_run_to_the_step_cap_and_say_the_target_was_missed() -> None:
    profile = estimate_model(lambda: SleepyDetector([0.02, 0.04]), SCENARIO).profile
    assert len(profile.step_times) == 60
    assert profile.precision_met is False and profile.precision is not None and profile.precision > 0.03


def test_a_looser_target_stops_sooner() -> None:
    pattern = [0.02, 0.03]
    strict = estimate_model(lambda: SleepyDetector(pattern), SCENARIO).profile
    loose = estimate_model(lambda: SleepyDetector(pattern), {**SCENARIO, "precision": 0.2}).profile
    assert loose.precision_target == 0.2 and loose.precision_met is True
    assert len(loose.step_times) < len(strict.step_times)


def test_a_fixed_count_is_kept_even_when_the_target_is_missed() -> None:
    profile = estimate_model(lambda: SleepyDetector([0.005, 0.02]), {**SCENARIO, "measure_iterations": 5}).profile
    assert len(profile.step_times) == 5
    assert profile.precision_met is False and profile.precision is not None and profile.precision > 0.03


def test_precision_must_be_a_fraction() -> None:
    for bad in (0, 1, 3):
        with pytest.raises(ScenarioError, match="precision"):
            parse_scenario({**SCENARIO, "architecture": "pytest_mlestimate.tiny:tiny_detector", "precision": bad})
