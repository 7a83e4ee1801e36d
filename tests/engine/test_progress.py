"""What a running profile reports about itself: phases in order, counted steps, from a child as from this process."""

from __future__ import annotations

from typing import Any

import pytest

from pytest_mlestimate import estimate
from pytest_mlestimate.core.progress import PHASES, Progress
from pytest_mlestimate.scenarios.scenario import parse_scenario
from pytest_mlestimate.stores.interfaces import profile_store_at
from pytest_mlestimate.stores.profile_cache import profile_key
from tests.tiny_scenario import TINY

FIXED = {**TINY, "device": "cpu", "warmup_iterations": 2, "measure_iterations": 4}


def phases(reports: list[Progress]) -> list[str]:
    """Each phase once, in the order first heard."""
    return list(dict.fromkeys(report.phase for report in reports))


@pytest.mark.parametrize("isolate", [True, False], ids=["child", "in-process"])
def test_phases_arrive_in_order_with_their_counts(isolate: bool) -> None:
    heard: list[Progress] = []
    profile = estimate(FIXED, cache=False, isolate=isolate, progress=heard.append).profile

    expected = ["building", "warm-up", "measuring", "inference"]
    assert phases(heard) == (["starting", *expected] if isolate else expected)
    assert [str(p) for p in heard if p.phase == "warm-up"] == ["warm-up 0/2", "warm-up 1/2"]
    measured = 2 if profile.contention_remeasured else 1  # a contended measurement is taken again and reported
    assert [str(p) for p in heard if p.phase == "measuring"] == [f"measuring {n}/4" for n in range(4)] * measured


def test_an_adaptive_count_reports_its_cap() -> None:
    heard: list[Progress] = []
    estimate({**TINY, "device": "cpu"}, cache=False, progress=heard.append)
    measuring = [p for p in heard if p.phase == "measuring"]
    assert measuring and all(p.total == 60 for p in measuring)  # the CPU cap: it may stop sooner


def test_a_failing_listener_loses_nothing() -> None:
    def listener(_progress: Progress) -> None:
        raise RuntimeError("a display that broke")

    found = estimate(FIXED, cache=False, progress=listener)
    assert len(found.profile.step_times) == 4


def test_a_cached_estimate_reports_nothing(tmp_path: Any) -> None:
    path = tmp_path / "p.sqlite3"
    profile = estimate(FIXED, cache=False, isolate=False).profile
    profile.contended = False  # on a busy machine it may be, and a contended profile is never cached
    assert profile_store_at(path).put(profile_key(parse_scenario(FIXED)), profile)
    heard: list[Progress] = []
    assert estimate(FIXED, cache_path=path, progress=heard.append).cache["hit"]
    assert heard == []


@pytest.mark.parametrize("line", ["", "not json", '{"phase": "lunch"}', '{"phase": "measuring", "extra": 1}', "[1]"])
def test_lines_that_are_not_reports_are_ignored(line: str) -> None:
    assert Progress.from_json(line) is None


def test_a_report_survives_the_pipe() -> None:
    for phase in PHASES:
        report = Progress(phase, 3, 9)
        assert Progress.from_json(report.to_json()) == report
