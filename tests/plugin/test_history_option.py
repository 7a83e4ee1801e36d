"""--mlestimate-history PATH records each run in a real sqlite file; --mlestimate-history-window N judges each
scenario against the last N runs recorded there, as --mlestimate-compare judges against a saved baseline."""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from pytest_mlestimate.core.metrics import METRIC
from pytest_mlestimate.verdicts.history import WINDOW_MIN_SESSIONS, series, window
from pytest_mlestimate.verdicts.history_recording import record_report
from pytest_mlestimate.verdicts.regression import Run
from tests.plugin.conftest import RunResult, by_name, scenario_file

SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def on_github(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITHUB_SHA", SHA)
    monkeypatch.setenv("GITHUB_HEAD_REF", "")
    monkeypatch.setenv("GITHUB_REF_NAME", "main")


def scaled(record: dict[str, Any], factor: float) -> dict[str, Any]:
    """The record with every timing of its runs ``factor`` times as long."""
    changed = copy.deepcopy(record)
    for run in changed["runs"]:
        for name, value in run["metrics"].items():
            if METRIC[name].noise == "timing" and value:
                run["metrics"][name] = value * factor
                run["samples"][name] = [v * factor for v in run["samples"].get(name, [])]
    return changed


def add_sessions(path: Path, document: dict[str, Any], factors: list[float], day: int) -> None:
    start = datetime(2026, 11, day, tzinfo=timezone.utc)
    record = document["scenarios"][0]
    for index, factor in enumerate(factors):
        shifted = {**document, "scenarios": [scaled(record, factor)]}
        record_report(path, shifted, f"{index:040x}", "main", start + timedelta(hours=index))


def test_a_run_is_recorded_with_commit_branch_figures_and_samples(
    pytester: pytest.Pytester, run_scenarios: Callable[..., RunResult], on_github: None
) -> None:
    pytester.makefile(".yaml", scenarios=scenario_file({"name": "tiny"}))
    result, report = run_scenarios("--mlestimate-history", "ci/history/runs.sqlite3")
    path = pytester.path / "ci" / "history" / "runs.sqlite3"
    assert result.ret == 0 and path.is_file()
    result.stdout.fnmatch_lines([f"history recorded: {path} (1 measured scenario(s), commit 0123456 on main)"])
    record = by_name(report)["tiny"]
    (point,) = series(path, "tiny", "total_training_time").points
    assert (point.commit, point.branch) == (SHA, "main")
    assert point.value == record["training_time"]["Total Training Time"]
    env = record["details"]["environment"]
    (kept,) = window(path, record["file"], "tiny", record["scenario"], env, 5).runs
    assert kept == Run.from_dict(record["runs"][0])


def test_an_unusable_history_file_costs_no_report_and_no_verdict(
    pytester: pytest.Pytester, run_scenarios: Callable[..., RunResult]
) -> None:
    pytester.makefile(".yaml", scenarios=scenario_file({"name": "tiny"}))
    garbage = pytester.path / "history.sqlite3"
    garbage.write_text("not a database\n")
    result, report = run_scenarios("--mlestimate-history", str(garbage), "--mlestimate-history-window", "5")
    assert result.ret == 0 and by_name(report)["tiny"]["outcome"] == "passed"
    result.stdout.fnmatch_lines(
        [
            f"warning: tiny: baseline not compared: history {garbage} is not an sqlite file *",
            f"warning: the run was not recorded in the history: history {garbage} is not an sqlite file *",
        ]
    )
    assert "Traceback" not in result.stdout.str() and garbage.read_text() == "not a database\n"


def test_a_history_whose_folder_cannot_be_made_is_a_warning(
    pytester: pytest.Pytester, run_scenarios: Callable[..., RunResult], monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makefile(".yaml", scenarios=scenario_file({"name": "tiny"}))
    summary = pytester.path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    blocked = pytester.path / "a-file"
    blocked.write_text("")
    path = blocked / "history.sqlite3"  # a folder that cannot be made, as root too
    result, report = run_scenarios("--mlestimate-history", str(path))
    assert result.ret == 0 and by_name(report)["tiny"]["outcome"] == "passed"
    result.stdout.fnmatch_lines([f"warning: the run was not recorded in the history: history {path} *"])
    assert "INTERNALERROR" not in result.stdout.str() and "tiny" in summary.read_text()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--mlestimate-history-window", "5"), "--mlestimate-history-window needs --mlestimate-history PATH"),
        (
            ("--mlestimate-history", "h.sqlite3", "--mlestimate-history-window", "many"),
            "--mlestimate-history-window 'many' is not a number of runs from 1 to 1000",
        ),
    ],
)
def test_window_options_that_cannot_work_stop_the_run(
    pytester: pytest.Pytester, run_scenarios: Callable[..., RunResult], args: tuple[str, ...], says: str
) -> None:
    pytester.makefile(".yaml", scenarios=scenario_file({"name": "tiny"}))
    result, _ = run_scenarios(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert says in result.stderr.str()


def test_history_options_need_mlestimate(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_inprocess("--mlestimate-history", "h.sqlite3")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "--mlestimate-history needs --mlestimate" in result.stderr.str()


def test_a_scenario_is_judged_against_the_window_and_fails_as_against_a_baseline(
    pytester: pytest.Pytester, run_scenarios: Callable[..., RunResult], recorded_engine: list[dict[str, Any]]
) -> None:
    """Every measurement is the recorded profile, so the window's figures are all that moves."""
    pytester.makefile(".yaml", scenarios=scenario_file({"name": "tiny"}))
    path = pytester.path / "history.sqlite3"
    _, first = run_scenarios("--mlestimate-history", str(path))
    window_args = ("--mlestimate-history", str(path), "--mlestimate-history-window", str(WINDOW_MIN_SESSIONS + 1))
    steady = [1 + 0.004 * (i - 5.5) for i in range(WINDOW_MIN_SESSIONS + 1)]  # distinct: not the cache's figures
    add_sessions(path, first, steady, day=2)
    result, report = run_scenarios(*window_args)
    record = by_name(report)["tiny"]
    assert result.ret == 0 and record["outcome"] == "passed"
    judged = [check for check in record["budgets"] if check["kind"] == "regression"]
    assert {check["metric"] for check in judged} >= {"forward_pass", "total_training_time"}
    assert all(check["passed"] for check in judged)
    assert any(w.startswith(f"history window: judged against {len(steady)} run(s)") for w in record["warnings"])

    # the past ten times as fast: this run regressed in every timing, and in nothing else
    add_sessions(path, first, [0.1 * f for f in steady], day=3)
    result, report = run_scenarios(*window_args)
    record = by_name(report)["tiny"]
    assert result.ret == 1 and record["outcome"] == "failed"
    regressed = {c["metric"] for c in record["budgets"] if c["kind"] == "regression" and c["passed"] is False}
    timings = sorted(regressed)
    assert regressed == {m for m in METRIC if METRIC[m].noise == "timing"}
    assert all(f"{m} regressed" in record["message"] for m in timings)
    explained = {entry["metric"] for entry in record["explanation"]}  # the window's runs are the baseline here
    assert explained & set(timings)
    result.stdout.fnmatch_lines([f"*{timings[0]}*(baseline)*FAILED", "*measured 2 times in fresh processes*"])
    assert len(record["runs"]) == 2
    assert len(series(path, "tiny", "total_training_time").points) == 2 * len(steady) + 3
