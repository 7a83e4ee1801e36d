"""Saved baselines: one JSON file per scenario under a folder the team commits, at
``FOLDER/<scenario file without .yaml>/<name>.json``. This module keeps the files (their names, their format,
writing them atomically); what a baseline means and how runs compare to it is ``verdicts.baseline``'s."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from pytest_mlestimate.core.errors import brief
from pytest_mlestimate.core.files import write_atomically

BASELINE_FORMAT = 2
"""Format 2 files saved before runs kept their figures per module read as they did: their runs have no
``breakdown``, so a failure against them names the largest modules instead of those that grew."""
MAX_FILE_NAME = 200
"""Characters of a baseline file's name before ``.json``: file systems allow 255 bytes."""


class BaselineError(ValueError):
    """A baseline file that exists but cannot be compared; the message says why and what to do."""


def baseline_path(root: Path, file: str, name: str) -> Path:
    """``scenarios/gpu.yaml`` + ``frcnn-b4`` -> ``ROOT/scenarios/gpu/frcnn-b4.json``. Other characters than
    ``[A-Za-z0-9._~-]`` are percent-encoded (``frcnn b4`` -> ``frcnn%20b4.json``), so that two names never share
    a file; a name that encodes past ``MAX_FILE_NAME`` keeps its start and a hash of the whole."""
    encoded = quote(name, safe="", errors="surrogatepass")
    if len(encoded) > MAX_FILE_NAME:
        digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:16]
        head = encoded[: MAX_FILE_NAME - 17]
        partial = head.rfind("%", len(head) - 2)  # not half an escape
        encoded = f"{head[:partial] if partial != -1 else head}-{digest}"
    return root / Path(file).with_suffix("") / f"{encoded}.json"


def saved_path(root: Path, file: str, name: str) -> Path:
    """Where this scenario's baseline is: its own file, or one saved before names were encoded (other characters
    were ``_``), if that file holds this very name."""
    path = baseline_path(root, file, name)
    legacy = root / Path(file).with_suffix("") / (re.sub(r"[^A-Za-z0-9._-]+", "_", name) + ".json")
    if path.exists() or legacy == path or not legacy.exists():
        return path
    try:
        return legacy if load_document(legacy).get("name") == name else path
    except BaselineError:
        return path


def write_document(root: Path, file: str, name: str, document: Mapping[str, Any]) -> Path:
    """Save one scenario's baseline document (its format added) where ``baseline_path`` says; returns the path."""
    path = baseline_path(root, file, name)
    write_atomically(path, json.dumps({"format": BASELINE_FORMAT, **document}, indent=2, sort_keys=True) + "\n")
    return path


def load_document(path: Path) -> dict[str, Any]:
    """One baseline file's document, checked for its format; ``FileNotFoundError`` when there is none."""
    try:
        saved = json.loads(path.read_text())
    except FileNotFoundError:
        raise
    except (OSError, ValueError, RecursionError) as exc:
        raise BaselineError(f"baseline {path} is unreadable ({exc}): not compared") from None
    if not isinstance(saved, dict) or saved.get("format") != BASELINE_FORMAT:
        found = saved.get("format") if isinstance(saved, dict) else None
        raise BaselineError(
            f"baseline {path} has format {brief(found)}, this version reads format {BASELINE_FORMAT}: not compared "
            "(save it again with --mlestimate-save-baseline)"
        )
    return saved


def files(root: Path) -> Iterator[Path]:
    """Every baseline file under a folder, in a stable order."""
    yield from sorted(p for p in root.rglob("*.json") if p.is_file())
