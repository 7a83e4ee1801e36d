"""The run history: a real sqlite file on disk, recorded from report documents, read back as series and windows;
steps found in it; the window's verdicts against a saved baseline's on the same simulated data."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

from bench.history_power import (
    REGIMES,
    SCENARIO,
    commit_of,
    environment,
    record_history,
    record_of,
    report_of,
    sessions,
    verdicts,
)
from pytest_mlestimate.commands.cli import main
from pytest_mlestimate.core.git import source_control
from pytest_mlestimate.stores import run_history as history_store
from pytest_mlestimate.stores.run_history import HistoryError, scenarios
from pytest_mlestimate.verdicts.history import WINDOW_MIN_SESSIONS, judge_window, series, window
from pytest_mlestimate.verdicts.history_recording import record_report
from pytest_mlestimate.verdicts.regression import DRIFT_FLOOR, Run

GPU, CPU = REGIMES["gpu"], REGIMES["cpu"]
REPO = Path(__file__).resolve().parents[2]


def history(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    code = main(["history", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


# -- the store -------------------------------------------------------------------------------------------------


def test_a_run_keeps_commit_branch_time_environment_figures_and_samples(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "folder" / "history.sqlite3"
    (commit, runs), *_ = sessions(0, GPU, count=1)
    env = environment(GPU)
    recorded = record_report(path, report_of([record_of(runs, **env)], env), commit, "main")
    assert path.is_file() and recorded.scenarios == 1
    assert path.read_bytes().startswith(b"SQLite format 3\x00")
    found = series(path, "tiny", "Total Training Time")
    (point,) = found.points
    assert (point.commit, point.branch, point.value) == (commit, "main", runs[0].metrics["total_training_time"])
    assert point.recorded_at.endswith("+00:00")
    assert found.environment["gpu"] == env["gpu"]
    (kept,) = window(path, "scenarios/cpu.yaml", "tiny", SCENARIO, env, 5).runs
    assert kept.samples == runs[0].samples and kept.metrics == runs[0].metrics
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert connection.execute("SELECT version FROM schema_version").fetchall() == [(1,)]


def test_a_series_stays_on_one_environment_and_says_how_many_it_left_out(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    record_history(path, sessions(0, CPU, count=3), CPU)
    record_history(path, sessions(1, GPU, count=2), GPU, day=2)
    found = series(path, "scenarios/cpu.yaml::tiny", "forward_pass")
    assert len(found.points) == 2 and found.elsewhere == 3
    assert len(series(path, "tiny", "forward_pass", environment=environment(CPU)).points) == 3


def test_a_report_that_measured_nothing_adds_nothing(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    recorded = record_report(path, report_of([{"name": "skipped", "file": "a.yaml", "runs": []}], {}), "abc", None)
    assert recorded.run_id is None and not path.exists()


class _CreatedMidCheck:
    """A connection through which another process's creation of the history lands right after the header is read."""

    def __init__(self, path: Path) -> None:
        self.connection = sqlite3.connect(path, isolation_level=None, timeout=5)
        self.path = path
        self.creator: threading.Thread | None = None

    @property
    def in_transaction(self) -> bool:
        return self.connection.in_transaction

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        found = self.connection.execute(sql, *args)
        if sql == "PRAGMA application_id" and self.creator is None:
            self.creator = threading.Thread(
                target=lambda: history_store._create(history_store._connect(self.path, True), self.path)
            )
            self.creator.start()
            self.creator.join(0.5)  # it lands now, unless this check's read transaction holds it off
        return found


def test_a_history_created_while_another_process_checks_it_is_not_taken_for_a_foreign_file(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    sqlite3.connect(path).close()  # the empty file a first writer leaves before its schema
    checking = _CreatedMidCheck(path)
    assert history_store._check_schema(checking, path) == 0  # empty, as it was when the check began
    assert checking.creator is not None
    checking.creator.join(10)
    checking.connection.close()
    env = environment(REGIMES["cpu"])
    commit, runs = sessions(1, REGIMES["cpu"], count=1)[0]
    recorded = record_report(path, report_of([record_of(runs, **env)], env), commit, "b")
    assert recorded.run_id is not None  # and the history it created is read as one


def test_two_processes_recording_at_once_both_land(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    go = tmp_path / "go"
    script = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        sys.path.insert(0, {str(REPO)!r})
        from bench.history_power import REGIMES, environment, record_of, report_of, sessions
        from pytest_mlestimate.verdicts.history_recording import record_report
        noise = REGIMES["cpu"]
        env = environment(noise)
        while not Path({str(go)!r}).exists():
            time.sleep(0.01)
        for commit, runs in sessions(int(sys.argv[1]), noise, count=25):
            record_report(Path({str(path)!r}), report_of([record_of(runs, **env)], env), commit, sys.argv[1])
        """
    )
    workers = [subprocess.Popen([sys.executable, "-c", script, str(seed)]) for seed in (1, 2)]
    go.touch()
    assert [worker.wait(timeout=120) for worker in workers] == [0, 0]
    with sqlite3.connect(path) as connection:
        counts = dict(connection.execute("SELECT branch, count(*) FROM runs GROUP BY branch"))
    assert counts == {"1": 25, "2": 25}
    assert scenarios(path)[0].sessions == 50


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"timings, not a database\n", "is not an sqlite file"),
        (b"SQLite format 3\x00" + b"\x07" * 4000, "is damaged"),
    ],
)
def test_a_file_that_is_no_history_is_refused_by_name_and_left_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, says: str
) -> None:
    path = tmp_path / "history.sqlite3"
    path.write_bytes(content)
    env = environment(CPU)
    with pytest.raises(HistoryError, match=f"history {path} {says}"):
        record_report(path, report_of([record_of(sessions(0, CPU, 1)[0][1], **env)], env), "abc", "main")
    assert path.read_bytes() == content
    code, out, err = history(capsys, path)
    assert code == 2 and out == ""
    assert err.startswith(f"mlestimate history: history {path} {says}") and "Traceback" not in err


def test_another_programs_database_and_a_newer_format_are_refused(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign.sqlite3"
    with sqlite3.connect(foreign) as connection:
        connection.execute("CREATE TABLE invoices (id INTEGER)")
    with pytest.raises(HistoryError, match=r"another program's sqlite database \(tables: invoices\)"):
        series(foreign, "tiny", "forward_pass")
    newer = tmp_path / "newer.sqlite3"
    record_history(newer, sessions(0, CPU, count=1), CPU)
    with sqlite3.connect(newer) as connection:
        connection.execute("UPDATE schema_version SET version = 7")
    with pytest.raises(HistoryError, match="has format 7; this version of pytest-mlestimate reads format 1"):
        scenarios(newer)


def test_a_missing_history_unknown_scenario_and_metric_say_what_exists(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = history(capsys, tmp_path / "none.sqlite3")
    assert code == 2 and "does not exist: record runs with --mlestimate-history" in err
    path = tmp_path / "history.sqlite3"
    record_history(path, sessions(0, CPU, count=1), CPU)
    code, _, err = history(capsys, path, "--scenario", "tinny")
    assert code == 2 and "has no scenario 'tinny'; it holds: scenarios/cpu.yaml::tiny" in err
    code, _, err = history(capsys, path, "--metric", "speed")
    assert code == 2 and "metric 'speed' is unknown; the metrics are: peak_gpu_memory" in err
    code, _, err = history(capsys, path, "--min-step", "five")
    assert code == 2 and err.startswith("mlestimate history: --min-step:")


def test_commit_and_branch_come_from_github_actions_else_git_else_nothing(tmp_path: Path) -> None:
    pushed = {"GITHUB_SHA": "a" * 40, "GITHUB_HEAD_REF": "", "GITHUB_REF_NAME": "main"}
    assert source_control(tmp_path, pushed) == ("a" * 40, "main")
    assert source_control(tmp_path, {**pushed, "GITHUB_HEAD_REF": "fix-nms"}) == ("a" * 40, "fix-nms")
    assert source_control(tmp_path / "nowhere", {}) == (None, None)
    subprocess.run(["git", "init", "-q", "-b", "trunk", str(tmp_path)], check=True)
    subprocess.run(
        ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty",
         "-m", "first"],
        check=True,
    )  # fmt: skip
    head = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    assert source_control(tmp_path, {}) == (head.strip(), "trunk")


# -- steps -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_plus_8_percent_step_is_named_at_its_commit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], seed: int
) -> None:
    path = tmp_path / "history.sqlite3"
    record_history(path, sessions(seed, GPU, count=40, step_at=23), GPU)
    code, out, _ = history(capsys, path, "--json")
    (answer,) = json.loads(out)
    (step,) = answer["steps"]
    assert code == 0 and answer["metric"] == "total_training_time" and len(answer["points"]) == 40
    assert step["commit"] in (commit_of(seed, 22), commit_of(seed, 23), commit_of(seed, 24))
    assert step["size"] == pytest.approx(0.08, abs=0.02) and step["p_value"] < 0.01
    code, out, _ = history(capsys, path)
    first = next(i for i in (22, 23, 24) if commit_of(seed, i) == step["commit"])
    assert f"% at commit {commit_of(seed, first)[:7]} (main, " in out and "step: +" in out
    assert f"git log --oneline {commit_of(seed, first - 1)[:7]}..{commit_of(seed, first)[:7]}" in out


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_a_history_without_a_step_reports_none(tmp_path: Path, capsys: pytest.CaptureFixture[str], seed: int) -> None:
    path = tmp_path / "history.sqlite3"
    record_history(path, sessions(10_000 + seed, GPU, count=40), GPU)
    code, out, _ = history(capsys, path, "--json")
    assert code == 0 and json.loads(out)[0]["steps"] == []
    code, out, _ = history(capsys, path, "--metric", "forward_pass")
    assert "no step larger than 2.0%" in out


def test_a_cpu_step_within_the_drift_floor_is_left_out_and_said(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An +8 % step of a CPU timing is smaller than the drift a CPU shows on its own (10 %): reported as left out,
    and named with --min-step."""
    path = tmp_path / "history.sqlite3"
    record_history(path, sessions(3, CPU, count=40, step_at=23), CPU)
    _, out, _ = history(capsys, path)
    assert "no step larger than 10.0%" in out and "is within the 10.0% noise floor (--min-step to lower it" in out
    _, out, _ = history(capsys, path, "--json", "--min-step", "5 %")
    assert [step["commit"] for step in json.loads(out)[0]["steps"]] == [commit_of(3, 23)]


# -- the window ------------------------------------------------------------------------------------------------


def test_the_window_takes_the_last_sessions_of_the_same_scenario_once_each(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    drawn = sessions(0, GPU, count=14)
    record_history(path, drawn, GPU)
    env = environment(GPU)
    again = drawn[-1][1]  # the last session's measurement, recalled from the cache by a later one
    record_report(path, report_of([record_of(again, **env)], env), "c" * 40, "main")
    changed = record_of(drawn[0][1], **env)
    changed["scenario"] = {**SCENARIO, "batch_size": 4}
    record_report(path, report_of([changed], env), "d" * 40, "main")
    past = window(path, "scenarios/cpu.yaml", "tiny", SCENARIO, env, 12)
    assert past.sessions == 12 and len(past.runs) == 12
    assert past.commits == tuple(commit for commit, _ in drawn[2:])
    assert past.left_out == {"the scenario was defined differently": 1, "the same measurement again (cache)": 1}
    assert window(path, "scenarios/cpu.yaml", "tiny", SCENARIO, environment(CPU), 12).runs == ()


def test_a_damaged_row_is_left_out_of_the_window_not_a_failure(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    drawn = sessions(6, GPU, count=4)
    record_history(path, drawn, GPU)
    with sqlite3.connect(path) as connection:
        connection.execute(
            "UPDATE measurements SET run = '{not json' WHERE scenario_id = (SELECT min(id) FROM scenarios)"
        )
        connection.execute("UPDATE scenarios SET scenario = '[1' WHERE id = (SELECT max(id) FROM scenarios)")
    past = window(path, "scenarios/cpu.yaml", "tiny", SCENARIO, environment(GPU), 12)
    assert past.sessions == 2 and past.left_out == {"unreadable in the history": 2}


def test_a_slowdown_against_the_window_fails_and_is_measured_again_first(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    record_history(path, sessions(0, GPU, count=WINDOW_MIN_SESSIONS), GPU)
    timings = ("forward_pass", "backward_pass", "total_training_time", "inference_1_image", "inference_batch")
    slow = [
        Run({k: v * 1.3 if k in timings else v for k, v in run.metrics.items()}, run.samples)
        for run in sessions(1, GPU, 1)[0][1]
    ]
    runs = list(slow)
    comparison, past = judge_window(
        path, "scenarios/cpu.yaml", "tiny", SCENARIO, environment(GPU), runs, {}, 30, measure_again=lambda: slow[0]
    )
    assert past.sessions == WINDOW_MIN_SESSIONS and len(runs) == 2
    failed = {check.metric for check in comparison.checks if check.passed is False}
    assert failed == set(timings)
    assert not comparison.warnings


def test_a_narrow_window_keeps_the_drift_floor_and_says_so(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    record_history(path, sessions(0, CPU, count=3), CPU)
    runs = sessions(1, CPU, 1)[0][1]
    comparison, _ = judge_window(path, "scenarios/cpu.yaml", "tiny", SCENARIO, environment(CPU), runs, {}, 30)
    assert comparison.warnings == [
        f"baseline window of history {path} holds 3 session(s), fewer than {WINDOW_MIN_SESSIONS}: timings are judged "
        f"with the assumed {DRIFT_FLOOR['cpu']:.0%} drift between runs, as against a saved baseline"
    ]


def test_the_window_catches_a_5_percent_slowdown_a_saved_baseline_misses_without_more_false_alarms() -> None:
    """The same simulated sessions (GPU noise), judged against 5 back-to-back runs of one session and against the last
    30 sessions; bench/history_power.py runs more trials and the CPU regimes."""
    trials = 300
    slowed = [verdicts(seed, GPU, 0.05) for seed in range(trials)]
    missed_by_baseline = [window for baseline, window in slowed if not baseline]
    assert len(missed_by_baseline) >= 0.05 * trials  # the saved baseline misses some: the window must catch them
    assert sum(missed_by_baseline) >= 0.75 * len(missed_by_baseline)
    assert sum(baseline and not window for baseline, window in slowed) <= 0.02 * trials
    assert sum(window for _, window in slowed) >= 0.95 * trials
    unchanged = [verdicts(seed, GPU, 0.0) for seed in range(trials)]
    false_alarms = [sum(arm) for arm in zip(*unchanged, strict=True)]
    assert false_alarms[1] <= false_alarms[0] and false_alarms[1] <= 0.06 * trials, false_alarms


# -- github-action-benchmark -----------------------------------------------------------------------------------


def test_export_writes_the_latest_figures_for_github_action_benchmark_split_by_direction(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "history.sqlite3"
    drawn = sessions(0, GPU, count=3)
    record_history(path, drawn, GPU)
    smaller, bigger = tmp_path / "out" / "smaller.json", tmp_path / "out" / "bigger.json"
    code, out, _ = history(capsys, path, "--export-benchmark-action", smaller)
    assert code == 0 and "customSmallerIsBetter" in out
    entries = {entry["name"]: entry for entry in json.loads(smaller.read_text())}
    total = entries["scenarios/cpu.yaml::tiny - Total Training Time"]
    assert total["value"] == drawn[-1][1][0].metrics["total_training_time"] and total["unit"] == "seconds"
    assert total["range"].startswith("± ") and drawn[-1][0] in total["extra"]
    assert "scenarios/cpu.yaml::tiny - Batch of 2 Inference Time" in entries
    assert not any("Utilization" in name and "GPU" in name for name in entries)
    code, out, _ = history(capsys, path, "--export-benchmark-action", bigger, "--bigger-is-better")
    assert code == 0 and "customBiggerIsBetter" in out
    assert [entry["name"] for entry in json.loads(bigger.read_text())] == [
        "scenarios/cpu.yaml::tiny - Peak GPU Utilization"
    ]
    assert all(set(entry) <= {"name", "unit", "value", "range", "extra"} for entry in entries.values())


def test_reading_a_history_opens_it_read_only(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    env = environment(REGIMES["cpu"])
    commit, runs = sessions(3, REGIMES["cpu"], count=1)[0]
    record_report(path, report_of([record_of(runs, **env)], env), commit, "main")
    with pytest.raises(HistoryError), history_store.opened(path) as connection:  # what mlestimate history opens
        connection.execute("DELETE FROM runs")
    assert scenarios(path)[0].sessions == 1


def test_a_scenario_whose_name_holds_two_colons_is_named_bare_or_with_its_file(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    env = environment(REGIMES["cpu"])
    commit, runs = sessions(4, REGIMES["cpu"], count=1)[0]
    record_report(path, report_of([record_of(runs, name="suite::frcnn", file="f.yaml", **env)], env), commit, "main")
    assert history_store.resolve_scenario(path, "suite::frcnn").name == "suite::frcnn"
    assert history_store.resolve_scenario(path, "f.yaml::suite::frcnn").file == "f.yaml"
    with pytest.raises(HistoryError, match="has no scenario"):
        history_store.resolve_scenario(path, "frcnn")


def test_a_history_cannot_write_escape_sequences_to_the_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "history.sqlite3"
    env = environment(REGIMES["cpu"])
    for index, (_, runs) in enumerate(sessions(5, REGIMES["cpu"], count=3)):
        crafted = f"{index:07x}\x1b[2J\x1b]0;owned\x07"
        record_report(path, report_of([record_of(runs, name="tiny\x1b[31m", **env)], env), crafted, "main\x1b[0m")
    assert main(["history", str(path), "--metric", "total_training_time"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    assert "main\\x1b[0m" in out and "tiny\\x1b[31m" in out  # shown, escaped
