"""Measured profiles, kept in sqlite under the user's cache directory and shared across processes.

A profile is keyed by everything that changes it (the scenario's profile fields, the host fingerprint,
the custom model's source and the weights file); dataset_size and epochs only scale a result, so they
are not part of the key. A corrupt database or a foreign entry is set aside and re-measured.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

from pydantic import ValidationError

from pytest_mlestimate.architectures import TORCHVISION
from pytest_mlestimate.environment import host_fingerprint
from pytest_mlestimate.profile import PROFILE_FORMAT, Profile
from pytest_mlestimate.scenario import Scenario

_SCHEMA = "CREATE TABLE IF NOT EXISTS profiles (key TEXT PRIMARY KEY, created REAL NOT NULL, profile TEXT NOT NULL)"


def default_cache_path() -> Path:
    explicit = os.environ.get("MLESTIMATE_CACHE_DIR")
    if explicit:
        return Path(explicit) / "profiles.sqlite3"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pytest-mlestimate" / "profiles.sqlite3"


def _file_digest(path: str | None) -> str | None:
    if not path:
        return None
    try:
        with open(path, "rb") as handle:
            return hashlib.sha256(handle.read()).hexdigest()
    except OSError:
        return f"unreadable:{path}"


def _factory_source_digest(architecture: str) -> str | None:
    """A custom model's source file, so that editing the model re-measures it."""
    if architecture in TORCHVISION:
        return None
    module = architecture.partition(":")[0]
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    return _file_digest(spec.origin) if spec and spec.origin else None


def profile_key(scenario: Scenario) -> str:
    material = {
        "format": PROFILE_FORMAT,
        "scenario": scenario.profile_fields(),
        "host": host_fingerprint(),
        "model_source": _factory_source_digest(scenario.architecture),
        "weights": _file_digest(scenario.weights_path),
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


class ProfileCache:
    def __init__(self, path: Path | None = None) -> None:
        self.path = path or default_cache_path()
        self.problem: str | None = None

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self.path, timeout=60)
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute(_SCHEMA)
            yield connection
            connection.commit()
        finally:
            connection.close()

    def _set_aside(self, error: sqlite3.DatabaseError) -> None:
        """Move a corrupt database out of the way so the next write starts a fresh one."""
        aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
        with contextlib.suppress(OSError):
            self.path.replace(aside)
        for suffix in ("-wal", "-shm"):
            with contextlib.suppress(OSError):
                self.path.with_name(self.path.name + suffix).unlink()
        self.problem = f"cache {self.path} was unreadable ({error}); moved to {aside.name} and re-measured"

    def get(self, key: str) -> Profile | None:
        try:
            with self._connect() as connection:
                row = connection.execute("SELECT profile FROM profiles WHERE key = ?", (key,)).fetchone()
        except sqlite3.DatabaseError as exc:
            self._set_aside(exc)
            return None
        if row is None:
            return None
        try:
            profile = Profile.model_validate_json(row[0])
        except ValidationError:
            return None
        return profile if profile.format == PROFILE_FORMAT else None

    def put(self, key: str, profile: Profile) -> None:
        text = profile.model_dump_json()
        for _attempt in range(2):
            try:
                with self._connect() as connection:
                    connection.execute(
                        "INSERT OR REPLACE INTO profiles (key, created, profile) VALUES (?, ?, ?)",
                        (key, time.time(), text),
                    )
                return
            except sqlite3.DatabaseError as exc:
                self._set_aside(exc)
