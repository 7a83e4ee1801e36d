"""Shared set-up for the plugin's tests.

Most tests are about what the plugin does with an estimate (budgets, reports, errors), not about
measuring: they share one profile of the tiny model, measured once in this process and put in a
profile cache, so that their pytest runs answer from the cache instead of starting a child process.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

TINY: dict[str, Any] = {
    "task_type": "detection",
    "architecture": "pytest_mlestimate.tiny:tiny_detector",
    "dataset_size": 100,
    "batch_size": 2,
    "image_size": [64, 64],
    "device": "cpu",
    "warmup_iterations": 1,
    "measure_iterations": 2,
}


def scenario_file(*entries: dict[str, Any], defaults: dict[str, Any] | None = None) -> str:
    """One line per entry: the first scenario is on line 3, the next on line 4, ..."""

    def flow(value: Any) -> str:
        return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()

    lines = [f"defaults: {flow(TINY if defaults is None else defaults)}", "scenarios:"]
    return "\n".join([*lines, *(f"  - {flow(entry)}" for entry in entries)]) + "\n"


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A profile cache holding the TINY scenario, measured once per test session.

    Its contention is not judged: a profile measured while other processes loaded the CPUs is not cached, and
    every test meant to answer from this cache would then measure for itself, as slowly as the machine allows.
    The tests judge what the plugin does with this recorded profile, whatever the load it was measured under."""
    # Load everything an in-process pytest run uses now: pytester drops modules first imported inside
    # a run when the run ends, and torch cannot be imported twice in one process.
    import pytest_mlestimate.plugin.fixture
    import pytest_mlestimate.plugin.session  # noqa: F401
    from pytest_mlestimate.api import estimate
    from pytest_mlestimate.profiling import contention

    path = tmp_path_factory.mktemp("shared-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(contention, "judge", lambda *args, **kwargs: False)
        recorded = estimate(TINY, isolate=False, cache_path=path / "profiles.sqlite3")
    assert recorded.cache.get("stored"), recorded.cache
    return path


@pytest.fixture
def cached(shared_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MLESTIMATE_CACHE_DIR", str(shared_cache))
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    return shared_cache


STEADY_TIMES = (
    "step_times",
    "forward_times",
    "backward_times",
    "optimizer_times",
    "inference_one_times",
    "inference_batch_times",
)
"""The profile's samples behind its timing metrics."""


@pytest.fixture
def recorded_engine(cached: Path, monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The engine as the plugin calls it, every measurement answered with the profile the shared cache recorded,
    its timings' samples made steady (each at its median, 1 % up and down in turn): also a measurement the plugin
    takes again past the cache (``cache=False``), as a fresh process on a quiet machine would. A verdict on
    timings then judges figures that no other process moved: measured for real on a loaded machine, steps are
    slower by multiples, or scatter so that a tenfold slowdown is inconclusive, or are contended (and a contended
    run judges no timing). Returns the options of each call, in order."""
    from pytest_mlestimate.api import estimate

    calls: list[dict[str, Any]] = []

    def engine(scenario: Any, **options: Any) -> Any:
        calls.append(options)
        answer = estimate(scenario, **{**options, "cache": True, "refresh": False})
        assert answer.cache.get("hit"), f"not a scenario the shared cache holds: {answer.cache}"
        for name in STEADY_TIMES:
            if values := getattr(answer.profile, name):
                middle = statistics.median(values)
                setattr(answer.profile, name, [middle * (1.01 if i % 2 else 0.99) for i in range(len(values))])
        return answer if options.get("cache", True) else dataclasses.replace(answer, cache={"hit": False})

    monkeypatch.setattr("pytest_mlestimate.plugin.items.estimate", engine)
    return calls


RunResult = tuple[pytest.RunResult, dict[str, Any]]


@pytest.fixture
def run_scenarios(pytester: pytest.Pytester, cached: Path) -> Callable[..., RunResult]:
    """Run ``pytest --mlestimate`` in this process over the pytester directory; return the result and the
    JSON report."""

    def run(*args: str, **options: Any) -> RunResult:
        report = pytester.path / "report.json"
        result = pytester.runpytest_inprocess(
            "--mlestimate",
            "--mlestimate-json",
            str(report),
            "-W",
            "ignore::pytest.PytestAssertRewriteWarning",
            *args,
            **options,
        )
        return result, json.loads(report.read_text()) if report.exists() else {}

    return run


def by_name(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in document["scenarios"]}
