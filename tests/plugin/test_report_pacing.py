"""Reports rewritten at a pace, yet complete up to an interruption: a killed run leaves valid reports of
the scenarios that finished before it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema
import pytest

from pytest_mlestimate.plugin.session import PacedWriter
from tests.plugin.conftest import scenario_file

SCHEMA = json.loads((Path(__file__).parents[2] / "pytest_mlestimate" / "report.schema.json").read_text())


def test_rewrites_are_paced_and_a_change_in_the_wait_is_written_by_the_timer() -> None:
    writes: list[float] = []

    def write() -> None:
        time.sleep(0.01)
        writes.append(time.monotonic())

    writer = PacedWriter(write, pace=10)
    start = time.monotonic()
    for _ in range(300):  # 300 scenarios finishing within about a third of a second
        writer.changed()
        time.sleep(0.001)
    last_change = time.monotonic()
    assert len(writes) <= 2 + (last_change - start) / 0.1  # one write per 10 x 10 ms at most, not one per change
    deadline = time.monotonic() + 5
    while (not writes or writes[-1] < last_change) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert writes[-1] >= last_change  # nothing more happened, and the last change is on disk anyway
    written = len(writes)
    writer.close()
    assert len(writes) == written + 1


def test_a_failing_write_in_the_timer_is_raised_in_the_run() -> None:
    calls = 0

    def write() -> None:
        nonlocal calls
        calls += 1
        time.sleep(0.005)
        if calls == 2:
            raise OSError("disk full")

    writer = PacedWriter(write, pace=10)
    writer.changed()
    writer.changed()  # within the wait: the timer writes it, and fails
    time.sleep(0.3)
    with pytest.raises(OSError, match="disk full"):
        writer.changed()


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_a_killed_run_leaves_valid_reports_of_the_finished_scenarios(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        "import time\ndef pytest_runtest_setup(item):\n    if item.name == 'hangs':\n        time.sleep(600)\n"
    )
    finished = [f"invalid-{index}" for index in range(30)]
    entries = [{"name": name, "batch_size": -1} for name in finished]
    pytester.makefile(".yaml", scenarios=scenario_file(*entries, {"name": "hangs"}, {"name": "never-runs"}))
    env = {**os.environ, "MLESTIMATE_CACHE_DIR": str(pytester.path / "cache")}
    env.pop("GITHUB_STEP_SUMMARY", None)
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--mlestimate"]
    command += ["--mlestimate-json", "report.json", "--mlestimate-junitxml", "junit.xml", "scenarios.yaml"]
    log = (pytester.path / "run.log").open("w")
    process = subprocess.Popen(command, cwd=pytester.path, env=env, stdout=log, stderr=subprocess.STDOUT)
    report = pytester.path / "report.json"
    try:
        deadline = time.monotonic() + 120
        names: list[str] = []
        junit = pytester.path / "junit.xml"
        while time.monotonic() < deadline and process.poll() is None:
            if report.exists() and junit.exists():  # one write makes both, the JSON report first: wait for both
                names = [entry["name"] for entry in json.loads(report.read_text())["scenarios"]]
                cases = list(ET.parse(junit).getroot().iter("testcase"))
                if len(names) == len(cases) == len(finished):
                    break
            time.sleep(0.05)
        assert process.poll() is None, "the run ended: the hanging scenario did not hang"
        assert names == finished, (
            f"the finished scenarios did not reach the report while the next one hung: {names}\n"
            + (pytester.path / "run.log").read_text()[-3000:]
        )
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
        log.close()
    document = json.loads(report.read_text())
    jsonschema.validate(document, SCHEMA)
    assert [(e["name"], e["outcome"]) for e in document["scenarios"]] == [(name, "error") for name in finished]
    cases = ET.parse(pytester.path / "junit.xml").getroot().iter("testcase")
    assert [case.get("name") for case in cases] == finished


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM")
def test_a_terminated_run_finishes_its_reports_and_ends(pytester: pytest.Pytester) -> None:
    """SIGTERM (a cancelled CI job) interrupts the run like Ctrl-C: the session finishes and writes the reports
    of every scenario that finished, however recently, then pytest exits."""
    pytester.makeconftest(
        "import time\ndef pytest_runtest_setup(item):\n    if item.name == 'hangs':\n        time.sleep(600)\n"
    )
    finished = [f"invalid-{index}" for index in range(5)]
    entries = [{"name": name, "batch_size": -1} for name in finished]
    pytester.makefile(".yaml", scenarios=scenario_file(*entries, {"name": "hangs"}))
    env = {**os.environ, "MLESTIMATE_CACHE_DIR": str(pytester.path / "cache")}
    env.pop("GITHUB_STEP_SUMMARY", None)
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--mlestimate", "-v"]
    command += ["--mlestimate-json", "report.json", "scenarios.yaml"]
    process = subprocess.Popen(command, cwd=pytester.path, env=env, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    for line in process.stdout:
        if "invalid-4 ERROR" in line:
            break
    time.sleep(0.5)  # in the hanging scenario by now
    process.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=60)[0]

    assert process.returncode == pytest.ExitCode.INTERRUPTED, output
    assert "stopped by SIGTERM" in output
    document = json.loads((pytester.path / "report.json").read_text())
    assert [e["name"] for e in document["scenarios"]] == finished
