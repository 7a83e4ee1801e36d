"""The profiling child never outlives its caller or its deadline, and leaves nothing behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from pytest_mlestimate.profiling.isolation import CHILD_MODULES
from pytest_mlestimate.profiling.worker import EXIT_PAST_DEADLINE
from tests.slow_model import SLOW
from tests.tiny_scenario import TINY

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def slow_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory from which the slow model imports, with its own cache and locks."""
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.setenv("MLESTIMATE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("MLESTIMATE_LOCK_DIR", str(tmp_path / "locks"))
    return tmp_path


def is_profiling_child(process: psutil.Process) -> bool:
    """A fresh worker, or a child forked from the warm parent (whose command line it shares); not the warm
    parent itself."""
    command = process.cmdline()
    if not any(entry in " ".join(command) for entry in CHILD_MODULES):
        return False
    return "--warm" not in command or "--warm" in process.parent().cmdline()


def profiling_child(caller: subprocess.Popen[bytes], within: float = 60.0) -> psutil.Process:
    """The caller's worker process, once it has started measuring."""
    limit = time.monotonic() + within
    while time.monotonic() < limit:
        assert caller.poll() is None, "the caller ended before profiling started"
        for child in psutil.Process(caller.pid).children(recursive=True):
            try:
                if is_profiling_child(child):
                    time.sleep(2)  # past start-up: importing torch, building the model
                    return child
            except (psutil.NoSuchProcess, AttributeError):  # gone, or its parent is (AttributeError)
                continue
        time.sleep(0.2)
    raise AssertionError("no profiling child appeared")


def warm_parent_of(child: psutil.Process) -> psutil.Process | None:
    return child.parent() if "--warm" in child.cmdline() else None


def gone_within(process: psutil.Process, seconds: float) -> float | None:
    """Seconds until the process ended (a zombie nobody reaps has ended), or None if it is still running."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        try:
            if process.status() == psutil.STATUS_ZOMBIE:
                return time.monotonic() - started
        except psutil.NoSuchProcess:
            return time.monotonic() - started
        time.sleep(0.1)
    process.kill()  # still running: the test fails, and leaves nothing behind
    return None


def mlestimate_temp_dirs() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("mlestimate-*")}


def test_kill_9_of_pytest_takes_the_profiling_child_with_it(slow_model: Path) -> None:
    scenarios = slow_model / "scenarios.yaml"
    scenarios.write_text(
        "scenarios:\n  - name: slow\n" + "".join(f"    {k}: {json.dumps(v)}\n" for k, v in SLOW.items())
    )
    before = mlestimate_temp_dirs()
    caller = subprocess.Popen(
        [sys.executable, "-m", "pytest", "--mlestimate", str(scenarios), "-p", "no:cacheprovider", "-q"],
        cwd=slow_model,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    child = profiling_child(caller)
    warm = warm_parent_of(child)
    os.kill(caller.pid, signal.SIGKILL)
    caller.wait()
    took = gone_within(child, 10)
    assert took is not None, "the profiling child outlived pytest by 10 s"
    assert took < 3
    assert warm is None or gone_within(warm, 3) is not None
    assert mlestimate_temp_dirs() <= before


CALLER = """
import sys
from pytest_mlestimate import estimate
estimate({scenario!r}, cache=False)
"""


@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGKILL])
def test_a_python_caller_that_dies_takes_the_child_with_it(slow_model: Path, signal_number: int) -> None:
    caller = subprocess.Popen([sys.executable, "-c", CALLER.format(scenario=SLOW)], cwd=slow_model)
    child = profiling_child(caller)
    warm = warm_parent_of(child)
    os.kill(caller.pid, signal_number)
    caller.wait()
    took = gone_within(child, 10)
    assert took is not None and took < 3
    assert warm is None or gone_within(warm, 3) is not None


def test_the_child_stops_itself_at_its_deadline(slow_model: Path) -> None:
    """Even with its parent alive and not watching the clock (a stuck caller)."""
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "pytest_mlestimate.profiling.worker", "--parent", str(os.getpid()), "--deadline", "4"],
        input=json.dumps(SLOW),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=slow_model,
    )
    assert done.returncode == EXIT_PAST_DEADLINE
    assert "past its deadline of 4 s" in done.stderr
    assert time.monotonic() - started < 10


def test_a_child_whose_parent_is_already_gone_does_not_start(slow_model: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pytest_mlestimate.profiling.worker", "--parent", "1"],
        input=json.dumps(SLOW),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0 and done.stdout == ""


STOPPER = """
import threading, time
from pytest_mlestimate.profiling import isolation
from pytest_mlestimate.core.errors import ProfileStoppedError
from pytest_mlestimate.scenarios.scenario import Scenario
scenario = Scenario.model_validate({scenario!r})
threading.Timer(8, isolation.stop_all).start()
started = time.monotonic()
try:
    isolation.profile_in_child(scenario)
except ProfileStoppedError as exc:
    print(f"stopped after {{time.monotonic() - started:.1f}} s: {{exc}}")
try:
    isolation.profile_in_child(scenario)
except ProfileStoppedError as exc:
    print(f"refused: {{exc}}")
"""


def test_stop_all_ends_running_profiles_at_once_and_refuses_new_ones(slow_model: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", STOPPER.format(scenario=SLOW)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=slow_model,
    )
    lines = done.stdout.splitlines()
    assert len(lines) == 2, done.stdout + done.stderr
    assert lines[0].startswith("stopped after ") and float(lines[0].split()[2]) < 11
    assert lines[1].startswith("refused: ")


def test_the_models_prints_do_not_disturb_the_result(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "chatty_model.py").write_text(
        "import sys\nfrom pytest_mlestimate.tiny import tiny_detector\n"
        'def chatty():\n    print(\'{"profile": "not this"}\')\n    sys.stdout.flush()\n'
        "    import os\n    os.write(1, b'raw bytes on fd 1\\n')\n    return tiny_detector()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    from pytest_mlestimate import estimate

    found = estimate({**TINY, "architecture": "chatty_model:chatty", "device": "cpu"}, cache=False, timeout=120)
    assert found.profile.step_times


ORPHAN = """
import os, sys, time
from pytest_mlestimate.profiling.worker import watch
watch(int(sys.argv[1]), None)  # the watchdog alone: no parent-death signal, as on macOS
print(os.getpid(), flush=True)
time.sleep(60)
"""
PARENT = """
import subprocess, sys, time

child = subprocess.Popen([sys.executable, "-c", sys.argv[1], str(__import__("os").getpid())], stdout=sys.stdout)
time.sleep(60)
"""


def test_the_watchdog_alone_ends_an_orphaned_child() -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT, ORPHAN], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child = psutil.Process(int(parent.stdout.readline()))
    parent.kill()
    parent.wait()
    took = gone_within(child, 10)
    assert took is not None and took < 2


def test_the_profiled_process_carries_no_statistics_library_of_the_estimators_own() -> None:
    """Its RSS is Peak RAM Memory: scipy.stats alone would add 59 MiB that a user's training process never holds."""
    probe = (
        "import sys, pytest_mlestimate.profiling.profiler, pytest_mlestimate.profiling.worker, "
        "pytest_mlestimate.profiling.warm_start\n"
        "print(sorted(m for m in ('scipy.stats', 'pandas', 'matplotlib', 'fastapi') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
