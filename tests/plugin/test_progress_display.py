"""What a run shows while a scenario is measured: a live status on a terminal, a line per phase in a log,
nothing with -q or for a scenario answered from the cache, and never a write after the status was erased."""

from __future__ import annotations

import json
import os
import re
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from pytest_mlestimate.core.progress import Progress
from pytest_mlestimate.plugin.progress_display import LOG_EVERY, ProgressDisplay, StatusLine
from tests.plugin.conftest import RunResult, by_name, scenario_file

SCHEMA = json.loads((Path(__file__).parents[2] / "pytest_mlestimate" / "report.schema.json").read_text())
PYTEST_LINE = "scenarios.yaml ."
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class Screen:
    """A terminal as far as a status line needs one: text, backspace, carriage return, newline."""

    def __init__(self, isatty: bool) -> None:
        self.isatty = isatty
        self.lines: list[list[str]] = [[]]
        self.column = 0
        self.writes = 0

    def write(self, text: str) -> None:
        self.writes += 1
        for ch in ANSI.sub("", text):
            line = self.lines[-1]
            if ch == "\b":
                self.column = max(0, self.column - 1)
            elif ch == "\r":
                self.column = 0
            elif ch == "\n":
                self.lines.append([])
                self.column = 0
            else:
                line.extend(" " * (self.column + 1 - len(line)))
                line[self.column] = ch
                self.column += 1

    def close(self) -> None:
        pass

    def text(self) -> list[str]:
        return ["".join(line).rstrip() for line in self.lines]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def display_on(screen: Screen, clock: Clock | None = None, width: int = 100) -> ProgressDisplay:
    screen.write(PYTEST_LINE)
    return ProgressDisplay(screen, lambda: PYTEST_LINE, lambda: width, named=True, clock=clock or Clock())  # type: ignore[arg-type]


def test_status_lines_say_the_phase_and_its_steps() -> None:
    label = "scenarios/cpu.yaml::ssdlite"
    adaptive = StatusLine(label, Progress("measuring", 12, 60), adaptive=True)
    assert adaptive.log_line() == "mlestimate: scenarios/cpu.yaml::ssdlite measuring (adaptive, up to 60 steps)"
    assert adaptive.live(80, named=True) == " [ssdlite: measuring 12 (adaptive, up to 60)]"
    assert adaptive.live(80, named=False) == "measuring 12 (adaptive, up to 60)"
    assert StatusLine(label, Progress("warm-up", 0, 1)).phase_text() == "warm-up (1 step)"
    assert StatusLine(label, Progress("measuring", 3, 50)).count_text() == "measuring 3/50"
    assert StatusLine(label, Progress("measuring", 3, 50), again=True).phase_text() == "measuring again (50 steps)"
    assert StatusLine(label, Progress("inference", 40)).count_text() == "inference, 40 calls"
    assert StatusLine(label, Progress("building")).count_text() == "building the model"
    assert len(adaptive.live(20, named=True)) == 20


def test_live_status_is_rewritten_in_place_and_erased_where_pytest_left_off() -> None:
    screen, clock = Screen(isatty=True), Clock()
    display = display_on(screen, clock)
    with display.showing("scenarios.yaml::ssdlite", adaptive=True) as listener:
        listener(Progress("building"))
        assert screen.text() == [f"{PYTEST_LINE} [ssdlite: building the model]"]
        clock.now += 1
        listener(Progress("measuring", 12, 60))
        assert screen.text() == [f"{PYTEST_LINE} [ssdlite: measuring 12 (adaptive, up to 60)]"]
        listener(Progress("measuring", 13, 60))  # within LIVE_EVERY of the last rewrite: not drawn
        assert screen.text() == [f"{PYTEST_LINE} [ssdlite: measuring 12 (adaptive, up to 60)]"]
        listener(Progress("inference"))  # a new phase is drawn at once
        assert screen.text() == [f"{PYTEST_LINE} [ssdlite: inference]"]
    assert screen.text() == [PYTEST_LINE]
    assert screen.column == len(PYTEST_LINE)  # pytest's next dot lands where it would have
    writes = screen.writes
    listener(Progress("inference", 3))  # a report that arrives after its scenario: nothing
    assert screen.writes == writes


def test_no_live_status_where_pytests_line_leaves_no_room() -> None:
    screen = Screen(isatty=True)
    display = display_on(screen, width=len(PYTEST_LINE) + 10)
    with display.showing("scenarios.yaml::ssdlite", adaptive=False) as listener:
        listener(Progress("building"))
    assert screen.text() == [PYTEST_LINE] and screen.writes == 1


def test_a_log_gets_a_line_per_phase_not_per_step_then_pytests_line_again() -> None:
    screen, clock = Screen(isatty=False), Clock()
    display = display_on(screen, clock)
    with display.showing("scenarios.yaml::ssdlite", adaptive=True) as listener:
        listener(Progress("starting"))
        listener(Progress("building"))
        for done in range(3):
            listener(Progress("warm-up", done, 3))
        for done in range(60):
            clock.now += 1  # a minute of measuring: one more line after LOG_EVERY seconds
            listener(Progress("measuring", done, 60))
        for done in range(5):  # measured again after other processes took the CPU
            listener(Progress("measuring", done, 60))
        listener(Progress("inference"))
        listener(Progress("inference", 1))
    prefix = "mlestimate: scenarios.yaml::ssdlite"
    assert screen.text() == [
        PYTEST_LINE,
        f"{prefix} starting a fresh process",
        f"{prefix} building the model",
        f"{prefix} warm-up (3 steps)",
        f"{prefix} measuring (adaptive, up to 60 steps)",
        f"{prefix} measuring {int(LOG_EVERY)} (adaptive, up to 60)",
        f"{prefix} measuring again (adaptive, up to 60 steps)",
        f"{prefix} inference",
        PYTEST_LINE,
    ]


def test_reports_racing_the_end_of_a_scenario_never_write_after_it() -> None:
    screen = Screen(isatty=True)
    display = ProgressDisplay(screen, lambda: PYTEST_LINE, lambda: 100, named=True, clock=time.perf_counter)  # type: ignore[arg-type]
    screen.write(PYTEST_LINE)
    stop = threading.Event()
    with display.showing("scenarios.yaml::ssdlite", adaptive=False) as listener:

        def report() -> None:
            done = 0
            while not stop.is_set():
                listener(Progress("measuring" if done % 2 else "warm-up", done, 10**9))
                done += 1

        reporters = [threading.Thread(target=report) for _ in range(4)]
        for thread in reporters:
            thread.start()
        time.sleep(0.2)
    erased_at = screen.writes
    time.sleep(0.1)
    stop.set()
    for thread in reporters:
        thread.join()
    assert screen.writes == erased_at
    assert screen.text() == [PYTEST_LINE] and screen.column == len(PYTEST_LINE)


# --- through pytest ----------------------------------------------------------------------------------

PHASES = [
    Progress("starting"),
    Progress("building"),
    Progress("warm-up", 0, 1),
    Progress("measuring", 0, 2),
    Progress("measuring", 1, 2),
    Progress("inference"),
    Progress("inference", 1),
]


def reporting_engine(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """The engine as the plugin calls it, with a profile's reports sent from another thread (as the reader of
    a profiling child's pipe sends them) before the answer comes from the shared cache."""
    from pytest_mlestimate.api import estimate

    heard: list[bool] = []

    def engine(scenario: Any, *, progress: Callable[[Progress], None] | None = None, **options: Any) -> Any:
        heard.append(progress is not None)
        if progress is not None:
            sender = threading.Thread(target=lambda: [progress(p) for p in PHASES])
            sender.start()
            sender.join()
        return estimate(scenario, **options)

    monkeypatch.setattr("pytest_mlestimate.plugin.items.estimate", engine)
    return heard


def test_a_log_shows_each_scenarios_phases_and_pytests_line_goes_on(
    pytester: pytest.Pytester, run_scenarios: Callable[..., RunResult], monkeypatch: pytest.MonkeyPatch
) -> None:
    heard = reporting_engine(monkeypatch)
    pytester.makefile(".yaml", scenarios=scenario_file({"name": "one"}, {"name": "two"}))
    result, _ = run_scenarios("-p", "no:randomly")
    result.assert_outcomes(passed=2)
    assert heard == [True, True]
    result.stdout.fnmatch_lines(
        [
            "scenarios.yaml ",
            "mlestimate: scenarios.yaml::one starting a fresh process",
            "mlestimate: scenarios.yaml::one building the model",
            "mlestimate: scenarios.yaml::one warm-up (1 step)",
            "mlestimate: scenarios.yaml::one measuring (2 steps)",
            "mlestimate: scenarios.yaml::one inference",
            "scenarios.yaml .",
            "mlestimate: scenarios.yaml::two starting a fresh process",
            "*",
            "mlestimate: scenarios.yaml::two inference",
            "scenarios.yaml .. *100%]",
        ]
    )
    assert "measuring 1" not in result.stdout.str()


def test_quiet_shows_no_progress(
    pytester: pytest.Pytester, run_scenarios: Callable[..., RunResult], monkeypatch: pytest.MonkeyPatch
) -> None:
    heard = reporting_engine(monkeypatch)
    pytester.makefile(".yaml", scenarios=scenario_file({"name": "one"}))
    result, _ = run_scenarios("-q")
    result.assert_outcomes(passed=1)
    assert heard == [False]
    assert "mlestimate: scenarios.yaml::" not in result.stdout.str()


def test_a_scenario_answered_from_the_cache_shows_nothing(
    pytester: pytest.Pytester, run_scenarios: Callable[..., RunResult]
) -> None:
    pytester.makefile(".yaml", scenarios=scenario_file({"name": "cached"}))
    result, report = run_scenarios()
    result.assert_outcomes(passed=1)
    assert "mlestimate: scenarios.yaml::" not in result.stdout.str()
    assert by_name(report)["cached"]["measured"] == "cache"


def test_a_measurement_shows_its_phases_and_a_scenario_sharing_it_is_charged_its_own_time(
    pytester: pytest.Pytester, run_scenarios: Callable[..., RunResult], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The real engine, measuring in a child process: its reports reach the log; the second scenario, the
    same profile, is answered from the cache the first filled and is charged what it cost, not the profile."""
    monkeypatch.setenv("MLESTIMATE_CACHE_DIR", str(tmp_path / "fresh-cache"))
    pytester.makefile(".yaml", scenarios=scenario_file({"name": "first"}, {"name": "second"}))
    result, report = run_scenarios("-p", "no:randomly", "--mlestimate-junitxml", "junit.xml")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        [
            "mlestimate: scenarios.yaml::first starting a fresh process",
            "mlestimate: scenarios.yaml::first building the model",
            "mlestimate: scenarios.yaml::first measuring (2 steps)",
            "mlestimate: scenarios.yaml::first inference",
            "scenarios.yaml .. *100%]",
        ]
    )
    assert "mlestimate: scenarios.yaml::second" not in result.stdout.str()
    jsonschema.validate(report, SCHEMA)
    first, second = by_name(report)["first"], by_name(report)["second"]
    assert first["measured"] == "this run"
    assert second["measured"] == "shared with scenarios.yaml::first"
    assert first["duration"] > first["details"]["profile_seconds"]
    assert second["duration"] < first["duration"] / 2
    cases = {case.get("name"): case for case in ET.parse(pytester.path / "junit.xml").getroot().iter("testcase")}
    assert float(cases["first"].get("time", "0")) == pytest.approx(first["duration"], abs=1e-3)
    assert float(cases["second"].get("time", "0")) == pytest.approx(second["duration"], abs=1e-3)
    assert (cases["first"].findtext("system-out") or "").startswith("measured: this run (the profile took ")
    assert (cases["second"].findtext("system-out") or "").startswith(
        "measured: shared with scenarios.yaml::first (its profile took "
    )

    again, report = run_scenarios("--mlestimate-junitxml", "junit.xml")
    again.assert_outcomes(passed=2)
    assert {e["name"]: e["measured"] for e in report["scenarios"]} == {"first": "cache", "second": "cache"}
    assert "mlestimate: scenarios.yaml::" not in again.stdout.str()
    case = ET.parse(pytester.path / "junit.xml").getroot().find("testsuite/testcase")
    assert case is not None and (case.findtext("system-out") or "").startswith(
        "measured: cache (measured in an earlier"
    )


ENGINE_CONFTEST = """
import threading

import pytest_mlestimate.plugin.items as items
from pytest_mlestimate.core.progress import Progress

real = items.estimate
PHASES = [Progress("building"), Progress("measuring", 0, 2), Progress("measuring", 1, 2), Progress("inference")]


def engine(scenario, *, progress=None, **options):
    if progress is not None:
        sender = threading.Thread(target=lambda: [progress(p) for p in PHASES])
        sender.start()
        sender.join()
    return real(scenario, **options)


def pytest_sessionstart(session):
    items.estimate = engine
"""


def run_on_a_terminal(args: list[str], cwd: Path, env: dict[str, str], columns: int = 100) -> str:
    """pytest's output on a pseudo-terminal, as the bytes it wrote."""
    import fcntl
    import pty
    import struct
    import subprocess
    import termios

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    child = subprocess.Popen(args, cwd=cwd, env=env, stdin=follower, stdout=follower, stderr=follower)
    os.close(follower)
    output = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        output += chunk
    child.wait(timeout=120)
    os.close(leader)
    return output.decode("utf-8", "replace").replace("\r\n", "\n")


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_a_terminal_shows_a_live_status_past_pytests_capture_and_erases_it(
    pytester: pytest.Pytester, cached: Path
) -> None:
    pytester.makeconftest(ENGINE_CONFTEST)
    pytester.makefile(".yaml", scenarios=scenario_file({"name": "one"}, {"name": "two"}))
    env = {**os.environ, "MLESTIMATE_CACHE_DIR": str(cached)}
    env.pop("PYTEST_ADDOPTS", None)
    args = [sys.executable, "-m", "pytest", "--mlestimate", "-p", "no:randomly", "-p", "no:cacheprovider"]
    output = run_on_a_terminal(args, pytester.path, env)
    assert " [one: building the model]" in output  # written while pytest captured descriptor 1
    assert " [two: measuring 1/2]" in output or " [two: measuring 0/2]" in output
    screen = Screen(isatty=True)
    screen.write(output)
    shown = screen.text()
    (line,) = [line for line in shown if line.startswith("scenarios.yaml")]
    assert re.fullmatch(r"scenarios\.yaml \.\. +\[100%\]", line), line
    assert not any("[one:" in line or "[two:" in line for line in shown)
