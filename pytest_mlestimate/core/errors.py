"""Why an estimate could not be made. Each message is written for the person who runs the estimate."""

from __future__ import annotations

import reprlib
import unicodedata
from typing import Any

ECHO_LIMIT = 200
"""Characters of a user's value that a message or a report repeats: input can be megabytes (or an expanded
YAML alias bomb), and a message that echoes it in full costs memory and hides the problem."""

_echo = reprlib.Repr()
_echo.maxlevel, _echo.maxdict, _echo.maxlist, _echo.maxtuple, _echo.maxset = 3, 8, 8, 8, 8
_echo.maxstring, _echo.maxother, _echo.maxlong = ECHO_LIMIT, ECHO_LIMIT, 60


def brief(value: Any) -> str:
    """``repr(value)``, cut to about ECHO_LIMIT characters at every level of nesting."""
    try:
        text = _echo.repr(value)
    except ValueError:  # an int past Python's digit limit for str()
        text = f"<{type(value).__name__} too large to show>"
    return text if len(text) <= ECHO_LIMIT + 3 else text[:ECHO_LIMIT] + "..."


def clip(text: str, limit: int = ECHO_LIMIT) -> str:
    """``text`` cut to at most ``limit`` characters, the cut marked with "..."."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


UNSAFE_CATEGORIES = ("Cc", "Cs", "Zl", "Zp")
"""Control characters, lone surrogates and line and paragraph separators: what could split a report's line or
write to a terminal."""


def printable(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` with control characters, lone surrogates and line separators written as escapes."""
    if text.isprintable():
        return text
    kept = "\n\t" if keep_newlines else ""
    return "".join(
        ch.encode("unicode_escape").decode("ascii")
        if ch not in kept and unicodedata.category(ch) in UNSAFE_CATEGORIES
        else ch
        for ch in text
    )


class EstimateError(RuntimeError):
    """A valid scenario that could not be measured."""


class ModelBuildError(EstimateError):
    """The model could not be built or its weights did not load."""


class ModelRunError(EstimateError):
    """The model raised while it was being trained or run (e.g. a shape its layers cannot take)."""


class DeviceUnavailableError(EstimateError):
    """The scenario asks for a device this machine does not have (a reason to skip, not to fail)."""


class ProfileTimeoutError(EstimateError):
    pass


class ProfileCrashError(EstimateError):
    """The profiling process died or raised something unexpected."""


class ProfileStoppedError(EstimateError):
    """The profile was stopped, or never started, because its caller is shutting down."""


ERROR_TYPES: dict[str, type[EstimateError]] = {
    cls.__name__: cls
    for cls in (ModelBuildError, ModelRunError, DeviceUnavailableError, ProfileTimeoutError, ProfileCrashError)
}
