"""Measuring a profile in a child process of its own, forked from a warm parent that has imported torch and
torchvision already (``warm_start``), or started as a fresh interpreter where that is not available.

A process of its own is what a training run starts from: its first steps pay CUDA's lazy loading, its RAM
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

from pytest_mlestimate.core.checkouts import Checkout
from pytest_mlestimate.core.errors import ERROR_TYPES, ProfileCrashError, ProfileStoppedError, ProfileTimeoutError
from pytest_mlestimate.core.progress import Listener, Progress
from pytest_mlestimate.profiling import warm_start
from pytest_mlestimate.profiling.profile import Profile
from pytest_mlestimate.profiling.turns import TurnEnds
from pytest_mlestimate.scenarios.scenario import Scenario

DEADLINE_GRACE = 10.0
"""Seconds the child's own deadline lies past the caller's timeout: the caller stops it first when it can."""

_running: set[subprocess.Popen[str] | warm_start.Child] = set()
_stopping = threading.Event()

WORKER_MODULE = "pytest_mlestimate.profiling.worker"
CHILD_MODULES = (WORKER_MODULE, warm_start.WARM_PARENT_MODULE)
"""What a profiling child's command line names: a fresh worker's module, or the warm parent's it was forked from."""


def _import_path(checkout: Checkout | None) -> list[str]:
    paths = [os.path.abspath(p or os.curdir) for p in sys.path]
    return checkout.import_path(paths) if checkout is not None else paths


def _child_environment(checkout: Checkout | None = None) -> dict[str, str]:
    """The caller's import path, so a custom ``package.module:factory`` resolves in the child as here (or in
    ``checkout``, as it would there)."""
    env = os.environ.copy()
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(p for p in _import_path(checkout) if os.path.isdir(p)))
    return env


def _kill(child: subprocess.Popen[str] | warm_start.Child) -> None:
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
    warm_start.stop_warm_parent()
    return len(children)


def _command(timeout: float | None, progress_fd: int | None, turn_fds: tuple[int, ...] = ()) -> list[str]:
    command = [sys.executable, "-m", WORKER_MODULE, "--parent", str(os.getpid())]
    if timeout is not None:
        command += ["--deadline", f"{timeout + DEADLINE_GRACE:g}"]
    if progress_fd is not None:
        command += ["--progress-fd", str(progress_fd)]
    if turn_fds:
        command += ["--turn-fds", ",".join(map(str, turn_fds))]
    return command


def _relay(pipe: int, progress: Listener) -> threading.Thread:
    """Hands the child's progress reports to ``progress`` (which must not raise: ``progress.heard_safely``),
    from a thread of their own, until the child ends."""

    def relay() -> None:
        with os.fdopen(pipe, encoding="utf-8", errors="replace") as lines:
            for line in lines:
                found = Progress.from_json(line)
                if found is not None:
                    progress(found)

    thread = threading.Thread(target=relay, name="mlestimate-progress", daemon=True)
    thread.start()
    return thread


def profile_in_child(
    scenario: Scenario,
    timeout: float | None = None,
    progress: Listener | None = None,
    checkout: Checkout | None = None,
    turns: TurnEnds | None = None,
) -> Profile:
    """The profile, measured in a child process; ``checkout``: the model's code is read from that checkout;
    ``turns``: the child measures in turns with another (``turns.side_by_side``), and waits while that one
    computes, so its time limit is twice ``timeout``."""
    try:
        if _stopping.is_set():
            raise ProfileStoppedError("profiling is shutting down: no new profile is started")
        if progress is not None:
            progress(Progress("starting"))
        if turns is not None and timeout is not None:
            timeout *= 2
        if warm_start.available():
            try:
                parent = warm_start.warm_parent(_child_environment())
            except OSError:
                pass  # no warm parent here: a fresh interpreter measures as well, only later
            else:
                return _profile_in_fork(parent, scenario, timeout, progress, checkout, turns)
        return _profile_in_fresh_interpreter(scenario, timeout, progress, checkout, turns)
    finally:
        if turns is not None:
            turns.close()  # the child holds its own copies, if it started


def _profile_in_fork(
    parent: warm_start.WarmParent,
    scenario: Scenario,
    timeout: float | None,
    progress: Listener | None,
    checkout: Checkout | None = None,
    turns: TurnEnds | None = None,
) -> Profile:
    reading, writing = os.pipe() if progress is not None else (None, None)
    request = {
        "scenario": scenario.model_dump_json(),
        "deadline": timeout + DEADLINE_GRACE if timeout is not None else None,
        "path": _import_path(checkout),
        "environment": dict(os.environ) if checkout is None else _child_environment(checkout),
        "cwd": checkout.moved(os.getcwd()) if checkout is not None else os.getcwd(),
        "cpus": sorted(os.sched_getaffinity(0)),  # this thread's: a lane of the service pins its own
    }
    try:
        child = parent.fork(request, writing, turns.fds if turns is not None else ())
    except BaseException:
        if reading is not None:
            os.close(reading)
        raise
    finally:
        if writing is not None:
            os.close(writing)  # the child holds the only writing end: the relay ends when the child does
        if turns is not None:
            turns.close()
    relay = _relay(reading, progress) if reading is not None and progress is not None else None
    _running.add(child)
    try:
        if _stopping.is_set():  # stop_all ran while this child was being forked
            child.kill()
        outcome = child.wait(timeout)
        if outcome is None:
            child.kill()
            child.wait(None)
            raise ProfileTimeoutError(
                f"profiling {scenario.architecture} (batch {scenario.batch_size}) ran past its limit of "
                f"{timeout:g} s and was stopped"
            )
        result, code = outcome
        return _outcome(scenario, -signal.SIGKILL if code is None else code, result.decode(), child.output_tail())
    except BaseException:  # KeyboardInterrupt, a cancelled caller: the child goes with it
        child.kill()
        raise
    finally:
        _running.discard(child)
        child.close()
        if relay is not None:
            relay.join(timeout=5)


def _profile_in_fresh_interpreter(
    scenario: Scenario,
    timeout: float | None,
    progress: Listener | None,
    checkout: Checkout | None = None,
    turns: TurnEnds | None = None,
) -> Profile:
    reading, writing = os.pipe() if progress is not None else (None, None)
    turn_fds = turns.fds if turns is not None else ()
    try:
        child = subprocess.Popen(
            _command(timeout, writing, turn_fds),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_child_environment(checkout),
            cwd=checkout.moved(os.getcwd()) if checkout is not None else None,
            process_group=0,
            pass_fds=(() if writing is None else (writing,)) + turn_fds,
        )
    except BaseException:
        for end in (reading, writing):
            if end is not None:
                os.close(end)
        raise
    finally:
        if turns is not None:
            turns.close()
    relay = None
    if writing is not None and reading is not None and progress is not None:
        os.close(writing)  # the child holds the only writing end: the relay ends when the child does
        relay = _relay(reading, progress)
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
        if relay is not None:
            relay.join(timeout=5)
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
