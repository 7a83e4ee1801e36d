"""Measuring a profile in a fresh child process.

A fresh process is what a training run starts from: its first steps pay CUDA's lazy loading, its RAM
holds one model, its peak RSS is the run's, a crash or a timeout cannot take the caller down, and a GPU
out-of-memory leaves nothing behind. The child dies with its caller (see ``worker``), leaves no files, and
``stop_all`` ends every running child at once, for a server that is shutting down.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading

from pytest_mlestimate.errors import ERROR_TYPES, ProfileCrashError, ProfileStoppedError, ProfileTimeoutError
from pytest_mlestimate.profile import Profile
from pytest_mlestimate.scenario import Scenario

DEADLINE_GRACE = 10.0
"""Seconds the child's own deadline lies past the caller's timeout: the caller stops it first when it can."""

_running: set[subprocess.Popen[str]] = set()
_stopping = threading.Event()


def _child_environment() -> dict[str, str]:
    """The caller's import path, so a custom ``package.module:factory`` resolves in the child as here."""
    env = os.environ.copy()
    paths = [os.path.abspath(p or os.curdir) for p in sys.path]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(p for p in paths if os.path.isdir(p)))
    return env


def _kill(child: subprocess.Popen[str]) -> None:
    """The child and whatever it started (its own process group)."""
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        child.kill()


def stop_all() -> int:
    """Kill every running profiling child; profiles asked for from now on are refused. Safe in a signal
    handler: it takes no lock."""
    _stopping.set()
    children = list(_running)
    for child in children:
        _kill(child)
    return len(children)


def _command(timeout: float | None) -> list[str]:
    command = [sys.executable, "-m", "pytest_mlestimate.worker", "--parent", str(os.getpid())]
    if timeout is not None:
        command += ["--deadline", f"{timeout + DEADLINE_GRACE:g}"]
    return command


def profile_in_child(scenario: Scenario, timeout: float | None = None) -> Profile:
    if _stopping.is_set():
        raise ProfileStoppedError("profiling is shutting down: no new profile is started")
    child = subprocess.Popen(
        _command(timeout),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_child_environment(),
        process_group=0,
    )
    _running.add(child)
    try:
        stdout, stderr = child.communicate(scenario.model_dump_json(), timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill(child)
        child.communicate()
        raise ProfileTimeoutError(
            f"profiling {scenario.architecture} (batch {scenario.batch_size}) ran past its limit of "
            f"{timeout:g} s and was stopped"
        ) from None
    except BaseException:  # KeyboardInterrupt, a cancelled caller: the child goes with it
        _kill(child)
        child.wait()
        raise
    finally:
        _running.discard(child)
    return _outcome(scenario, child.returncode, stdout, stderr)


def _outcome(scenario: Scenario, code: int, stdout: str, stderr: str) -> Profile:
    try:
        result = json.loads(stdout) if stdout.strip() else None
    except json.JSONDecodeError:
        result = None
    if isinstance(result, dict) and "profile" in result:
        return Profile.model_validate(result["profile"])
    if isinstance(result, dict) and "error" in result:
        error = ERROR_TYPES.get(result["error"]["type"], ProfileCrashError)
        raise error(result["error"]["message"])
    if _stopping.is_set():
        raise ProfileStoppedError(f"profiling {scenario.architecture} was stopped: shutting down")
    if code < 0 and -code == signal.SIGKILL:
        reason = "it was killed (SIGKILL): most likely the machine ran out of RAM"
    elif code < 0:
        reason = f"it died of signal {signal.Signals(-code).name}"
    else:
        reason = f"it exited with status {code}"
    tail = "\n".join(stderr.strip().splitlines()[-15:])
    raise ProfileCrashError(f"profiling {scenario.architecture} failed: {reason}\n{tail}".rstrip())
