"""Entry point of the child process that measures one profile:
``python -m pytest_mlestimate.profiling.worker --parent PID [--deadline SECONDS]``; children forked from the warm
parent (``warm_start``, started through ``warm_parent``) run ``measure`` the same way.

Reads a scenario as JSON on stdin and writes ``{"profile": ...}`` or ``{"error": ...}`` on stdout, the profile
naming the user's source files the model imported (``sources``); the model's own prints are sent to stderr, so
they cannot mix with the result. The child never outlives its parent (a parent killed with SIGKILL runs no
clean-up of its own) nor its deadline.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import IO, Any

PR_SET_PDEATHSIG = 1
WATCH_INTERVAL = 0.5
"""Seconds between the watchdog's looks at the parent and the clock."""
EXIT_ORPHANED = 70
EXIT_PAST_DEADLINE = 71


def die_with(parent: int) -> None:
    """Linux: the kernel kills this process when the thread that started it ends. The watchdog covers the
    rest (other systems, and a parent that died before this line ran)."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(EXIT_ORPHANED)


def watch(parent: int, deadline: float | None) -> None:
    def loop() -> None:
        while True:
            time.sleep(WATCH_INTERVAL)
            if os.getppid() != parent:
                os._exit(EXIT_ORPHANED)
            if deadline is not None and time.monotonic() > deadline:
                shown = round(deadline_seconds, 1)  # read a moment after the deadline was set: 3.99995 is 4
                print(f"profiling stopped itself: past its deadline of {shown:g} s", file=sys.stderr)
                os._exit(EXIT_PAST_DEADLINE)

    deadline_seconds = (deadline - time.monotonic()) if deadline is not None else 0.0
    threading.Thread(target=loop, name="mlestimate-watchdog", daemon=True).start()


def result_channel() -> IO[str]:
    """The real stdout, for the result; file descriptor 1 (prints, C libraries' output) now goes to stderr."""
    channel = os.fdopen(os.dup(1), "w", encoding="utf-8")
    sys.stdout.flush()
    os.dup2(2, 1)
    return channel


def progress_writer(fd: int | None) -> Callable[[Any], None]:
    """Writes each report as a line on ``fd``; a reader that went away is no reason to stop measuring."""
    if fd is None:
        return lambda _progress: None
    pipe = os.fdopen(fd, "w", encoding="utf-8", buffering=1)

    def write(progress: Any) -> None:
        with contextlib.suppress(OSError, ValueError):
            pipe.write(progress.to_json() + "\n")

    return write


def measure(scenario_json: str, out: IO[str], progress_fd: int | None) -> int:
    """Profile the scenario and write ``{"profile": ...}`` or ``{"error": ...}`` on ``out``; the exit code."""
    try:
        from pytest_mlestimate.core.errors import EstimateError
        from pytest_mlestimate.profiling.profiler import profile_scenario
        from pytest_mlestimate.profiling.sources import recorded
        from pytest_mlestimate.scenarios.scenario import Scenario

        scenario = Scenario.model_validate_json(scenario_json)
        progress = progress_writer(progress_fd)
        try:
            profile = recorded(
                scenario.architecture,
                lambda: profile_scenario(scenario, isolated=True, progress=progress),
                in_child=True,
            )
        except EstimateError as exc:
            result = {"error": {"type": type(exc).__name__, "message": str(exc)}}
        else:
            result = {"profile": profile.model_dump(mode="json")}
        code = 0
    except Exception as exc:
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        result = {"error": {"type": "ProfileCrash", "message": detail}}
        traceback.print_exc()
        code = 1
    out.write(json.dumps(result))
    out.flush()
    from pytest_mlestimate.profiling import turns

    turns.finish()
    return code


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m pytest_mlestimate.profiling.worker")
    parser.add_argument("--parent", type=int, required=True, help="the process this one must not outlive")
    parser.add_argument("--deadline", type=float, help="seconds after which this process stops itself")
    parser.add_argument("--progress-fd", type=int, help="a pipe to write progress reports to, one JSON line each")
    parser.add_argument("--turn-fds", help="TAKE,GIVE: pipe ends to measure in turns through (profiling.turns)")
    args = parser.parse_args(argv[1:])
    die_with(args.parent)
    watch(args.parent, time.monotonic() + args.deadline if args.deadline else None)
    if args.turn_fds:
        from pytest_mlestimate.profiling import turns

        take, give = (int(fd) for fd in args.turn_fds.split(","))
        turns.install(take, give)
    out = result_channel()
    code = measure(sys.stdin.read(), out, args.progress_fd)
    out.close()
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv))
