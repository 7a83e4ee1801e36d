"""Reading and writing the files a user names: reports, baselines, scenario tables."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from pytest_mlestimate.core.errors import brief

MAX_INPUT_BYTES = 256 * 2**20
"""The most a report, baseline or table file is read: a 2,000-scenario JSON report is about 30 MB."""


class InputFileError(ValueError):
    """A file that cannot be read as input; the message names the path and why."""


@contextlib.contextmanager
def open_bounded(path: Path, limit: int | None = None) -> Iterator[BinaryIO]:
    """A regular file of at most ``limit`` bytes, open for reading. A device, a pipe or a folder is refused before
    it is opened: ``/dev/zero`` would otherwise grow a reader by gigabytes a second."""
    limit = MAX_INPUT_BYTES if limit is None else limit
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # before opening: opening a pipe waits for its writer
            raise InputFileError(f"{path} is not a regular file")
        handle = path.open("rb")
    except OSError as exc:
        raise InputFileError(f"{path} cannot be read ({exc.strerror or exc})") from None
    with handle:
        found = os.fstat(handle.fileno())
        if not stat.S_ISREG(found.st_mode):
            raise InputFileError(f"{path} is not a regular file")
        if found.st_size > limit:
            raise InputFileError(f"{path} is {found.st_size:,} bytes; at most {limit:,} are read")
        yield handle


def read_text_bounded(path: Path, limit: int | None = None) -> str:
    """The UTF-8 text of a regular file of at most ``limit`` bytes (``open_bounded``)."""
    limit = MAX_INPUT_BYTES if limit is None else limit
    with open_bounded(path, limit) as handle:
        try:
            data = handle.read(limit + 1)
        except OSError as exc:
            raise InputFileError(f"{path} cannot be read ({exc.strerror or exc})") from None
    if len(data) > limit:
        raise InputFileError(f"{path} grew past {limit:,} bytes while it was read")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputFileError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def file_inside(root: Path, name: str, what: str) -> str:
    """The absolute path of the regular file ``name`` names relative to an operator's directory ``root``
    (``what`` says which, in the message): a name that leads outside it, through ``..`` or a link, is refused."""
    shown = brief(name)
    if "\x00" in name:
        raise InputFileError(f"{shown} has a NUL byte (\\x00); allowed: a file name")
    folder = os.path.realpath(root)
    try:
        resolved = os.path.realpath(os.path.join(folder, name))
    except (OSError, ValueError) as exc:
        raise InputFileError(f"{shown} is not a path ({exc}); allowed: a file name") from None
    if os.path.commonpath([folder, resolved]) != folder:
        raise InputFileError(f"{shown} is outside this service's {what} directory")
    if not os.path.isfile(resolved):
        raise InputFileError(f"{shown} is not a file in this service's {what} directory")
    return resolved


def same_file(one: Path, other: Path) -> bool:
    """Whether two paths name one file (through links too), so that an output would overwrite its input."""
    try:
        return one.resolve() == other.resolve() or (one.exists() and other.exists() and one.samefile(other))
    except OSError:
        return False


def _umask() -> int:
    """This process's umask, read without changing it (Linux); the common 022 elsewhere."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    return 0o022


def write_atomically(path: Path, text: str) -> None:
    """Write beside the target and rename, so a reader (or an interrupted run) never sees half a file. The
    temporary file is created exclusively under a name nobody can predict: a link planted beside the target is
    never written through."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(descriptor, 0o666 & ~_umask())  # what an ordinary write would have made, not mkstemp's 0600
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(name)
        raise
