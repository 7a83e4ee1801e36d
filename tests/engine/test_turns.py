"""Two profiles measured in turns: both children alive, never computing at once, each its own partner's
non-neighbour, and a side that fails leaves the other to finish."""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

import pytest

from pytest_mlestimate.api import estimate
from pytest_mlestimate.core.errors import ModelBuildError
from pytest_mlestimate.estimates.estimate import Estimate
from pytest_mlestimate.profiling.turns import TurnEnds, side_by_side
from tests.tiny_scenario import TINY

STAMPED = '''
import os, time
import torch
from pytest_mlestimate.tiny import TinyDetector


class Stamped(TinyDetector):
    """Writes when each of its forward passes began and ended, by the system-wide monotonic clock."""

    def forward(self, images, targets=None):
        start = time.monotonic()
        x = torch.ones(64, 128)
        for _ in range(20):
            x = torch.tanh(x @ torch.ones(128, 128) / 128)
        out = super().forward(images, targets)
        with open(os.environ["STAMPS"], "a") as stamps:
            stamps.write(f"{os.getpid()} {start} {time.monotonic()}\\n")
        return out


def build():
    return Stamped()
'''


@pytest.fixture
def stamped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    (tmp_path / "stamped_model.py").write_text(STAMPED)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("STAMPS", str(tmp_path / "stamps"))
    monkeypatch.setenv("MLESTIMATE_LOCK_DIR", str(tmp_path / "locks"))
    # 40 steps of about 10 ms a side: a contention window of about a second, past the counters' 10 ms ticks
    return {
        **TINY,
        "architecture": "stamped_model:build",
        "device": "cpu",
        "measure_iterations": 40,
        "breakdown_depth": 0,
    }


def measure(scenario: dict[str, Any]) -> Any:
    def side(turns: TurnEnds) -> Estimate:
        return estimate(scenario, cache=False, timeout=120, turns=turns)

    return side


def forward_passes(stamps: Path) -> list[tuple[int, float, float]]:
    rows = [line.split() for line in stamps.read_text().splitlines()]
    return sorted(((int(pid), float(start), float(end)) for pid, start, end in rows), key=lambda row: row[1])


@pytest.mark.parametrize("fresh", [False, True], ids=["forked", "fresh interpreter"])
def test_two_profiles_in_turns_never_compute_at_once_and_are_no_neighbours_of_each_other(
    stamped: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh: bool
) -> None:
    if fresh:
        monkeypatch.setenv("MLESTIMATE_FRESH_INTERPRETER", "1")
    first, second = side_by_side(measure(stamped), measure(stamped), ["cpu"])
    passes = forward_passes(tmp_path / "stamps")
    sides = {pid for pid, _, _ in passes}
    assert len(sides) == 2  # two processes
    overlapping = [(a, b) for a, b in itertools.pairwise(passes) if a[0] != b[0] and b[1] < a[2]]
    assert overlapping == []
    switches = sum(a[0] != b[0] for a, b in itertools.pairwise(passes))
    both_running = min(max(start for pid, start, _ in passes if pid == side) for side in sides)
    while_both = [row for row in passes if row[1] <= both_running]
    assert switches >= 0.9 * len(while_both)  # step by step while both ran, not one profile then the other
    for found in (first, second):
        assert found.profile.contention is not None
        assert not found.profile.contended, found.profile.contention.describe()  # the partner is no neighbour
        assert len(found.profile.step_times) == 40


def test_a_side_that_fails_leaves_the_other_to_finish_and_its_error_is_raised(
    stamped: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    failing = {**stamped, "architecture": "stamped_model:nothing_here"}
    started = time.monotonic()
    with pytest.raises(ModelBuildError, match="nothing_here"):
        side_by_side(measure(failing), measure(stamped), ["cpu"])
    assert time.monotonic() - started < 60  # the working side never waited for a turn that could not come
    assert len({pid for pid, _, _ in forward_passes(tmp_path / "stamps")}) == 1
