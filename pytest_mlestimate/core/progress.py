"""What a running profile is doing, for a person waiting on it: its phase and, where counted, steps done.

The profiler reports each phase and step to a ``Listener``; from a child process the reports travel as JSON
lines on a pipe of their own, so a model's prints never mix with them.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Literal

Phase = Literal["starting", "building", "warm-up", "measuring", "inference"]
PHASES: tuple[Phase, ...] = ("starting", "building", "warm-up", "measuring", "inference")


@dataclass(frozen=True)
class Progress:
    phase: Phase
    done: int | None = None
    """Steps (or inference calls) finished in this phase."""
    total: int | None = None
    """Steps this phase takes, or at most takes when it stops once the mean is sharp; None if not counted."""

    def __str__(self) -> str:
        if self.done is None:
            return self.phase
        if self.total is None:
            return f"{self.phase} {self.done}"
        return f"{self.phase} {self.done}/{self.total}"

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, line: str) -> Progress | None:
        """None for a line that is not a progress report (never an error: progress is a courtesy)."""
        try:
            data = json.loads(line)
            found = cls(**data)
        except (ValueError, TypeError):
            return None
        return found if found.phase in PHASES else None


Listener = Callable[[Progress], None]


def heard_safely(listener: Listener) -> Listener:
    """The listener, with its failures swallowed: a broken display must not lose a profile."""

    def hear(progress: Progress) -> None:
        with contextlib.suppress(Exception):
            listener(progress)

    return hear
