"""A COCO annotation file read part by part, entry by entry: memory follows the images and what is kept of the
annotations, not the file's size.

COCO's train2017 instances file is about 450 MB of text; parsed whole it holds several GB of Python objects.
ijson's C parser walks the file once for each part read (the images, the categories, the annotations one at a
time), so a summary of it holds one row per image and a few figures per annotation.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from pytest_mlestimate.core.files import InputFileError, open_bounded


class DatasetError(ValueError):
    """An annotation file that cannot be used; the message names the file and the JSON path of the first bad
    entry (``annotations[12].bbox``)."""


class Missing:
    """A key the file's top-level object does not have."""

    def __repr__(self) -> str:
        return "missing"


MISSING = Missing()


def kind_of(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "text", bool: "true or false", type(None): "null"}.get(
        type(value), "missing" if value is MISSING else "a number"
    )


def require_list(value: Any, key: str, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise DatasetError(f"{where}: {key}: a list is required, found {kind_of(value)}")
    return value


class _Bounded:
    """A file object that refuses to read past ``limit`` bytes (a file that grows while it is read)."""

    def __init__(self, handle: BinaryIO, path: Path, limit: int) -> None:
        self.handle, self.path, self.limit, self.read_bytes = handle, path, limit, 0

    def read(self, size: int = -1) -> bytes:
        data = self.handle.read(size)
        self.read_bytes += len(data)
        if self.read_bytes > self.limit:
            raise DatasetError(f"{self.path} grew past {self.limit:,} bytes while it was read")
        return data


class AnnotationFile:
    """One annotation file, read in passes; every error is a ``DatasetError`` naming the file."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path, self.max_bytes = path, max_bytes

    def kind(self, key: str = "") -> str | None:
        """The JSON kind at a top-level key (or of the document, ``""``): ``start_map``, ``start_array``,
        ``string``, ``number``, ...; None where the key is missing. Walks the events only up to it."""
        ijson = _ijson()
        with self._open() as handle:
            after_key = key == ""
            for prefix, event, value in self._parsed(ijson.parse(handle)):
                if after_key and prefix == key:
                    return "number" if event in ("integer", "double") else event
                after_key = key != "" and prefix == "" and event == "map_key" and value == key
        return None

    def value(self, key: str) -> Any:
        """A top-level key's whole value, or ``MISSING``."""
        ijson = _ijson()
        with self._open() as handle:
            return next(self._parsed(ijson.items(handle, key, use_float=True)), MISSING)

    def entries(self, key: str) -> Iterator[Any]:
        """The items of a top-level list, one at a time; a key that is missing or not a list is an error before
        the first."""
        if self.kind(key) != "start_array":
            require_list(self.value(key), key, str(self.path))
        ijson = _ijson()
        with self._open() as handle:
            yield from self._parsed(ijson.items(handle, f"{key}.item", use_float=True))

    def sha256(self) -> str:
        digest = hashlib.sha256()
        with self._open() as handle:
            while chunk := handle.read(1 << 18):
                digest.update(chunk)
        return digest.hexdigest()

    @contextlib.contextmanager
    def _open(self) -> Iterator[_Bounded]:
        try:
            with open_bounded(self.path, self.max_bytes) as handle:
                yield _Bounded(handle, self.path, self.max_bytes)
        except InputFileError as exc:
            raise DatasetError(str(exc)) from None
        except OSError as exc:
            raise DatasetError(f"{self.path} cannot be read ({exc.strerror or exc})") from None

    def _parsed(self, found: Iterator[Any]) -> Iterator[Any]:
        from ijson import JSONError  # what every backend raises

        try:
            yield from found
        except JSONError as exc:
            raise DatasetError(f"{self.path}: not JSON: {_reason(exc)}") from None
        except RecursionError:
            raise DatasetError(f"{self.path}: nested too deep to be a COCO annotation file") from None


def _reason(exc: Exception) -> str:
    """yajl's message (its first line) and the text it stopped at; a message about bytes comes as their repr."""
    text = str(exc)
    if text.startswith(("b'", 'b"')):
        with contextlib.suppress(ValueError, SyntaxError):
            text = ast.literal_eval(text).decode("utf-8", errors="replace")
    lines = [line.strip() for line in text.strip().splitlines()]
    context = f" near {lines[1][:80]!r}" if len(lines) > 2 and lines[1] else ""
    return f"{lines[0] if lines else type(exc).__name__}{context}"


def _ijson() -> Any:
    """ijson with its C parser (yajl2_c) where installed; its default backend otherwise."""
    try:
        import ijson
    except ImportError:
        raise DatasetError("reading an annotation file needs ijson: pip install 'pytest-mlestimate[coco]'") from None
    with contextlib.suppress(ImportError):
        return ijson.get_backend("yajl2_c")
    return ijson
