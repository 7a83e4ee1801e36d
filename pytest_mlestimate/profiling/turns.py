"""Two profiles measured in turns: each in a process of its own, alive at the same time, computing one step at a
time while the other waits.

Profiles measured one after the other in fresh processes differed by 10-20 % (standard deviation of the log-ratio
of two profiles of the same model, 8 pairs) on a 2-core virtual machine whose host's load comes and goes over
seconds; the same pairs measured in turns, step by step, differed by 2 % (bench/against_power.py's model, 10
pairs). What the machine's speed does over a second falls on both sides alike.

A turn passes through two pipes, one each way, as a token that carries the giver's pid and CPU time: a side
computes only while it holds the token, so the two never compete for the cores, and a side learns what its
partner spent, which is not a neighbour's load (``Window``). A side whose partner has ended (its pipe reads end
of file, or writing to it fails) runs on alone, so a crash or a timeout on one side never stalls the other.
"""

from __future__ import annotations

import contextlib
import os
import resource
import struct
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

from pytest_mlestimate.core.devices import device_lock

_TOKEN = struct.Struct("!iq")
"""The giver's pid and its CPU time so far, in microseconds."""

T = TypeVar("T")


def _cpu_microseconds() -> int:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return round((own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime) * 1e6)


class Turns:
    """A profiling child's side of the turns (see ``install``)."""

    def __init__(self, take: int, give: int) -> None:
        self._take: int | None = take
        self._give: int | None = give
        self.waited = 0.0
        """Seconds spent waiting for the partner's turns to end."""
        self.partner_pid: int | None = None
        self.partner_cpu = 0.0
        """The partner's CPU seconds when it last gave the turn: it spends next to nothing while it waits."""

    @property
    def alone(self) -> bool:
        return self._take is None

    def take(self) -> None:
        """Wait for the turn; return at once once the partner has ended."""
        if self._take is None:
            return
        started = time.perf_counter()
        token = b""
        while len(token) < _TOKEN.size:
            try:
                part = os.read(self._take, _TOKEN.size - len(token))
            except InterruptedError:
                continue
            if not part:  # the partner ended
                self._end()
                break
            token += part
        self.waited += time.perf_counter() - started
        if len(token) == _TOKEN.size:
            pid, cpu = _TOKEN.unpack(token)
            if pid > 0:
                self.partner_pid, self.partner_cpu = pid, cpu / 1e6

    def give(self) -> None:
        if self._give is None:
            return
        try:
            os.write(self._give, _TOKEN.pack(os.getpid(), _cpu_microseconds()))
        except OSError:  # the partner ended (EPIPE)
            self._end()

    def swap(self) -> None:
        """Let the partner compute one step of its own, then go on."""
        self.give()
        self.take()

    def _end(self) -> None:
        for fd in (self._take, self._give):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._take = self._give = None


_current: Turns | None = None


def install(take: int, give: int) -> Turns:
    """This process measures in turns through these pipe ends, from now on: it waits for its first turn here."""
    global _current
    _current = Turns(take, give)
    _current.take()
    return _current


def finish() -> None:
    """This side is done (its result is written): a last token says what it spent, so that the partner, which runs
    on alone from now on, does not count this side's last stretch as a neighbour's load."""
    if _current is not None:
        _current.give()
        _current._end()


def current() -> Turns | None:
    return _current


def swap() -> None:
    """A point between two steps where the partner, if any, computes one of its own."""
    if _current is not None:
        _current.swap()


def clock() -> float:
    """``time.perf_counter()`` less the time spent waiting for the partner: how long this side has computed."""
    return time.perf_counter() - (_current.waited if _current is not None else 0.0)


@dataclass
class TurnEnds:
    """The pipe ends one side's child takes its turns through, as the caller holds them until the child has
    its own copies: the caller must then close them (``close``), or the partner of a child that ended would
    wait for a token that can never come."""

    take: int
    give: int
    _closed: bool = field(default=False, repr=False)

    @property
    def fds(self) -> tuple[int, int]:
        return self.take, self.give

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            for fd in self.fds:
                with contextlib.suppress(OSError):
                    os.close(fd)


def turn_pair() -> tuple[TurnEnds, TurnEnds]:
    """Ends for two sides; the first holds the first turn."""
    to_first, from_second = os.pipe()
    to_second, from_first = os.pipe()
    os.write(from_second, _TOKEN.pack(0, 0))
    return TurnEnds(to_first, from_first), TurnEnds(to_second, from_second)


def side_by_side(
    first: Callable[[TurnEnds], T], second: Callable[[TurnEnds], T], devices: Iterable[str]
) -> tuple[T, T]:
    """Measure ``first`` and ``second`` in turns, each given its ends (to hand to ``estimate(turns=...)``), the
    devices held for both (``estimate`` does not take the lock of a side measured in turns). An exception on
    either side is raised once both have ended, the first side's first."""
    ends = turn_pair()
    results: list[T | None] = [None, None]
    errors: list[BaseException | None] = [None, None]

    def run(index: int, measure: Callable[[TurnEnds], T]) -> None:
        try:
            results[index] = measure(ends[index])
        except BaseException as exc:  # raised in the caller's thread below
            errors[index] = exc
        finally:
            ends[index].close()

    with contextlib.ExitStack() as held:
        for device in sorted(set(devices)):
            held.enter_context(device_lock(device))
        thread = threading.Thread(target=run, args=(1, second), name="mlestimate-turns", daemon=True)
        thread.start()
        run(0, first)
        thread.join()
    for error in errors:
        if error is not None:
            raise error
    return results[0], results[1]  # type: ignore[return-value]
