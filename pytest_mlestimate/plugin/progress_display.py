"""Which scenario is being measured and what its profile is doing, shown while the run waits on it.

On a terminal the status is written after what pytest's current line holds (``scenarios.yaml ..``) and
rewritten in place; it is erased before pytest writes again. Elsewhere (a CI log) each phase gets a line of
its own, a long phase one more line at most every ``LOG_EVERY`` seconds, never one per step. A scenario
answered from the cache makes no progress reports, so it shows nothing.

Threads: the engine reports progress from a thread that reads the profiling child's pipe, while pytest's main
thread waits inside ``estimate``. A report is written under the display's lock and only while its scenario
is still the one shown; the main thread erases the status under the same lock before ``estimate``'s caller
goes on, so nothing is written at the same time as pytest writes, nor after the status was erased.

Writes go to a duplicate of the terminal's file descriptor, taken at session start: while a test's setup
runs, pytest's output capture points descriptor 1 at a temporary file.
"""

from __future__ import annotations

import io
import os
import sys
import threading
import time
import unicodedata
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import IO

import pytest

from pytest_mlestimate.core.progress import Listener, Progress

LIVE_EVERY = 0.1
LOG_EVERY = 30.0
"""Seconds between two rewrites of the live status, and between two log lines of one long phase."""
MIN_LIVE = 20
"""Columns a live status needs; with fewer left on pytest's line it is not shown."""


def columns(text: str) -> int:
    """Terminal columns ``text`` takes: wide East Asian characters take two, combining marks none."""
    return sum(0 if unicodedata.combining(ch) else 2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def fit(text: str, width: int) -> str:
    if columns(text) <= width:
        return text
    while text and columns(text) > width - 3:
        text = text[:-1]
    return text + "..."


@dataclass(frozen=True)
class StatusLine:
    """One report of one scenario's profile, as a live status or as a log line."""

    label: str
    """The scenario's test id, e.g. ``scenarios/cpu.yaml::ssdlite``."""
    progress: Progress
    adaptive: bool = False
    """Measuring stops once the mean is sharp: the phase's total is then a cap."""
    again: bool = False
    """The phase started over (steps measured again after other processes took the CPU)."""

    def phase_text(self) -> str:
        """The phase as a log line says it: ``measuring (adaptive, up to 60 steps)``."""
        progress, again = self.progress, " again" if self.again else ""
        if progress.phase == "starting":
            return "starting a fresh process"
        if progress.phase == "building":
            return "building the model"
        if progress.total is None:
            return f"{progress.phase}{again}"
        if progress.phase == "measuring" and self.adaptive:
            return f"measuring{again} (adaptive, up to {progress.total} steps)"
        return f"{progress.phase}{again} ({progress.total} step{'' if progress.total == 1 else 's'})"

    def count_text(self) -> str:
        """The phase with its count, as the live status says it: ``measuring 12/60``."""
        progress = self.progress
        if progress.phase in ("starting", "building") or progress.done is None:
            return self.phase_text()
        phase = f"{progress.phase} again" if self.again else progress.phase
        if progress.total is None:
            return f"{phase}, {progress.done} calls"
        if progress.phase == "measuring" and self.adaptive:
            return f"{phase} {progress.done} (adaptive, up to {progress.total})"
        return f"{phase} {progress.done}/{progress.total}"

    def log_line(self, *, with_count: bool = False) -> str:
        return f"mlestimate: {self.label} {self.count_text() if with_count else self.phase_text()}"

    def live(self, width: int, *, named: bool) -> str:
        """The status after pytest's line, in at most ``width`` columns; ``named`` when that line does not
        already hold the scenario's id (pytest's verbose mode writes it)."""
        text = f" [{self.label.rpartition('::')[2]}: {self.count_text()}]" if named else self.count_text()
        return fit(text, width)


class Terminal:
    """Where pytest's terminal output goes, reached past pytest's output capture."""

    def __init__(self, file: IO[str]) -> None:
        self._file = file
        self.encoding = getattr(file, "encoding", None) or "utf-8"
        try:
            self._fd: int | None = os.dup(file.fileno())
        except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
            self._fd = None  # an in-memory stream (pytester's): capture does not touch it
        self.isatty = os.isatty(self._fd) if self._fd is not None else bool(file.isatty())

    def write(self, text: str) -> None:
        if self._fd is None:
            self._file.write(text)
            self._file.flush()
            return
        data = text.encode(self.encoding, "replace")
        while data:
            data = data[os.write(self._fd, data) :]

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


@dataclass
class _Shown:
    """What the display knows of the scenario being measured."""

    label: str
    adaptive: bool
    pytest_line: str
    """What pytest's current line holds, written again after log lines so that pytest's line goes on."""
    room: int
    """Columns left on pytest's line for the live status."""
    last: StatusLine | None = None
    written_at: float = field(default=-1e9)
    drawn: int = 0
    """Columns of live status on the terminal now."""
    logged: bool = False


class ProgressDisplay:
    def __init__(
        self,
        terminal: Terminal,
        pytest_line: Callable[[], str],
        width: Callable[[], int],
        *,
        named: bool,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.terminal = terminal
        self.live = terminal.isatty
        self._pytest_line = pytest_line
        self._width = width
        self._named = named
        self._clock = clock
        self._lock = threading.Lock()
        self._shown: _Shown | None = None

    @contextmanager
    def showing(self, label: str, *, adaptive: bool) -> Iterator[Listener]:
        """A listener for one scenario's ``estimate``; the status is gone when the block ends."""
        line = self._pytest_line()
        shown = _Shown(label, adaptive, line, self._width() - columns(line) - 1)
        with self._lock:
            self._shown = shown
        try:
            yield partial(self._hear, shown)
        finally:
            with self._lock:
                self._shown = None
                self._end(shown)

    def _hear(self, shown: _Shown, progress: Progress) -> None:
        with self._lock:
            if self._shown is not shown:
                return  # a report that came after its scenario's status was erased
            previous = shown.last
            if previous is None or previous.progress.phase != progress.phase:
                changed, again = True, False
            else:  # the count starting over: the steps are measured again
                changed = (progress.done or 0) < (previous.progress.done or 0)
                again = previous.again or changed
            status = StatusLine(shown.label, progress, shown.adaptive, again)
            shown.last = status
            now = self._clock()
            if not changed and now - shown.written_at < (LIVE_EVERY if self.live else LOG_EVERY):
                return
            shown.written_at = now
            if self.live:
                self._draw(shown, status)
            else:
                self._log(shown, status, with_count=not changed)

    def _draw(self, shown: _Shown, status: StatusLine) -> None:
        if shown.room < MIN_LIVE:
            return
        text = status.live(shown.room, named=self._named)
        width = columns(text)
        pad = max(0, shown.drawn - width)
        self.terminal.write("\b" * shown.drawn + text + " " * pad + "\b" * pad)
        shown.drawn = width

    def _log(self, shown: _Shown, status: StatusLine, *, with_count: bool) -> None:
        start = "\n" if not shown.logged and shown.pytest_line else ""
        self.terminal.write(f"{start}{status.log_line(with_count=with_count)}\n")
        shown.logged = True

    def _end(self, shown: _Shown) -> None:
        if shown.drawn:
            self.terminal.write("\b" * shown.drawn + " " * shown.drawn + "\b" * shown.drawn)
            shown.drawn = 0
        if shown.logged:
            self.terminal.write(shown.pytest_line)

    def close(self) -> None:
        self.terminal.close()


DISPLAY = pytest.StashKey[ProgressDisplay]()


def display_for(config: pytest.Config, reporter: object) -> ProgressDisplay | None:
    """The run's display: none with ``-q``, without pytest's terminal reporter, or on an xdist worker (whose
    output the controller never shows)."""
    writer = getattr(reporter, "_tw", None)
    if writer is None or config.get_verbosity() < 0 or hasattr(config, "workerinput"):
        return None

    def pytest_line() -> str:
        line = getattr(writer, "_current_line", None)  # the text itself is private; its width is not
        return line if isinstance(line, str) else " " * writer.width_of_current_line

    return ProgressDisplay(
        Terminal(sys.stdout), pytest_line, lambda: writer.fullwidth, named=config.get_verbosity() <= 0
    )


@contextmanager
def progress_for(config: pytest.Config, label: str, *, adaptive: bool) -> Iterator[Listener | None]:
    display = config.stash.get(DISPLAY, None)
    if display is None:
        yield None
        return
    with display.showing(label, adaptive=adaptive) as listener:
        yield listener
