"""A server told to stop (SIGTERM, Ctrl-C) ends its running profiles at once.

Without this the server waits, before it stops, for every open request, and so for a profile that may run for
minutes; its children would be left to the parent-death signal. The handler goes in front of the server's own
(uvicorn's), which then shuts down as usual: requests waiting on a stopped profile are answered 503.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

from pytest_mlestimate.profiling import isolation

SIGNALS = (signal.SIGINT, signal.SIGTERM)


def stop_profiles_on_signals() -> bool:
    """Chain a profile-stopping handler before the current ones; False where signals cannot be handled here
    (not the main thread, as in an in-process test client)."""
    if threading.current_thread() is not threading.main_thread():
        return False
    for number in SIGNALS:
        previous = signal.getsignal(number)

        def handler(received: int, frame: FrameType | None, previous: Any = previous) -> None:
            isolation.stop_all()
            if callable(previous):
                previous(received, frame)
            elif previous == signal.SIG_DFL:
                signal.signal(received, signal.SIG_DFL)
                signal.raise_signal(received)

        signal.signal(number, handler)
    return True
