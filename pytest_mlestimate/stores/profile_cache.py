"""Measured profiles, kept in sqlite under the user's cache directory and shared across processes.

A profile is keyed by everything that changes it (the scenario's profile fields, the host fingerprint,
the custom model's source and the weights file); dataset_size and epochs only scale a result, so they
are not part of the key. A custom model's key can name only its factory's file, so the profile keeps the files
of the user's code that the model imported (``Profile.sources``): once one of them changed the entry is stale,
``stale`` says which, and the profile is measured again. A foreign entry is re-measured. Only a database that
sqlite calls corrupt is set aside; one that is locked past the wait, full, read-only or unreachable is left as it
is (another process may be using it) and bypassed: the profile is measured and not stored, with a warning.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.machinery
import json
import logging
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from pydantic import ValidationError

from pytest_mlestimate.core.environment import host_fingerprint
from pytest_mlestimate.profiling.profile import PROFILE_FORMAT, Profile
from pytest_mlestimate.scenarios.architectures import TORCHVISION
from pytest_mlestimate.scenarios.scenario import Scenario

log = logging.getLogger("pytest_mlestimate.stores.profile_cache")

CORRUPT = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})
"""sqlite's (primary) result codes for a file that is not, or no longer, a database."""
WAIT_SECONDS = 60.0
"""How long a read or write waits for another process's lock before the cache is bypassed."""

_SCHEMA = "CREATE TABLE IF NOT EXISTS profiles (key TEXT PRIMARY KEY, created REAL NOT NULL, profile TEXT NOT NULL)"


CACHE_FILE = "profiles.sqlite3"
"""The cache's file in its folder (``MLESTIMATE_CACHE_DIR``, ``--mlestimate-cache DIR``)."""


def default_cache_path() -> Path:
    explicit = os.environ.get("MLESTIMATE_CACHE_DIR")
    if explicit:
        return Path(explicit) / CACHE_FILE
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pytest-mlestimate" / CACHE_FILE


_digests: dict[tuple[str, int, int, int], str] = {}
_digests_lock = threading.Lock()
_DIGESTS_KEPT = 4096
"""Digests remembered: a weights file or two per scenario, and each source file of the custom models' code."""


def _file_digest(path: str | None) -> str | None:
    """SHA-256 of a file, read in chunks (a weights file can be gigabytes) and remembered while its path, size,
    modification time and inode stay the same."""
    if not path:
        return None
    try:
        with open(path, "rb") as handle:
            stat = os.fstat(handle.fileno())
            identity = (os.path.abspath(path), stat.st_size, stat.st_mtime_ns, stat.st_ino)
            with _digests_lock:
                known = _digests.get(identity)
            if known is not None:
                return known
            digest = hashlib.file_digest(handle, "sha256").hexdigest()
    except (OSError, ValueError):
        return f"unreadable:{path}"
    with _digests_lock:
        if len(_digests) >= _DIGESTS_KEPT:
            _digests.clear()
        _digests[identity] = digest
    return digest


def module_origin(name: str) -> str | None:
    """The file a module would be imported from, found the way ``import`` finds it but without executing
    anything: ``importlib.util.find_spec('pkg.mod')`` imports ``pkg``, and a user's package may do anything
    on import, in the process that only wanted a cache key."""
    loaded = sys.modules.get(name)
    if loaded is not None:
        spec = getattr(loaded, "__spec__", None)
        return spec.origin if spec is not None else getattr(loaded, "__file__", None)
    search: list[str] | None = None
    spec = None
    parts = name.split(".")
    for depth in range(1, len(parts) + 1):
        prefix = ".".join(parts[:depth])
        parent = sys.modules.get(prefix)
        if parent is not None and depth < len(parts):
            search = list(getattr(parent, "__path__", []) or [])
            continue
        spec = _find_spec(prefix, search)
        if spec is None:
            return None
        search = list(spec.submodule_search_locations or [])
    return spec.origin if spec is not None and spec.has_location else None


def _find_spec(name: str, search: list[str] | None) -> importlib.machinery.ModuleSpec | None:
    for finder in sys.meta_path:
        find_spec = getattr(finder, "find_spec", None)
        if find_spec is None:
            continue
        try:
            spec = find_spec(name, search)
        except Exception:  # a third-party finder that cannot answer: ask the next
            continue
        if spec is not None:
            return spec
    return None


def _factory_source_digest(architecture: str) -> dict[str, str | None] | None:
    """A custom model's source file, so that editing the model re-measures it; the rest of its code is checked
    against the profile's ``sources`` (``changed_source``), which profiles of the older keys did not record."""
    if architecture in TORCHVISION:
        return None
    origin = module_origin(architecture.partition(":")[0])
    digest = _file_digest(origin) if origin and os.path.isfile(origin) else None
    return {"factory": digest, "imported": "in the profile's sources"}


def changed_source(profile: Profile) -> str | None:
    """Which file of the code the profile was measured with is no longer as it was, in words; None when none is
    (or the profile recorded none: a torchvision model). Each file is read again only when its size, time or
    inode changed."""
    for path, digest in (profile.sources or {}).items():
        if not os.path.isfile(path):
            return f"{path} is gone since the cached profile was measured"
        if _file_digest(path) != digest:
            return f"{path} changed since the cached profile was measured"
    return None


def profile_key(scenario: Scenario, placement: str | None = None) -> str:
    """``placement``: 'ray' for a profile a cluster measures, on whichever node has the device; its key names the
    placement instead of this host, so that every host sending it to the cluster shares it."""
    material = {
        "format": PROFILE_FORMAT,
        "scenario": scenario.profile_fields(),
        "host": host_fingerprint() if placement is None else {"placement": placement},
        "model_source": _factory_source_digest(scenario.architecture),
        "weights": _file_digest(scenario.weights_path),
    }
    if isinstance(scenario.dataset, str):
        material["dataset"] = _file_digest(scenario.dataset)
    elif scenario.dataset is not None:
        material["dataset"] = scenario.dataset.digest()
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def usable(key: str, text: str | None) -> tuple[Profile | None, str | None]:
    """A stored profile if it can be answered, else None; and why one found was not (its code changed since).
    A foreign entry or one of another format is not answered either: it is measured again."""
    if text is None:
        return None, None
    try:
        profile = Profile.model_validate_json(text)
    except ValidationError:
        return None, None
    if profile.format != PROFILE_FORMAT:
        return None, None
    stale = changed_source(profile)
    if stale is not None:
        log.info("cached profile %s not used: %s", key[:12], stale)
        return None, stale
    return profile, None


def is_corrupt(error: sqlite3.Error) -> bool:
    code = getattr(error, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in CORRUPT


class ProfileCache:
    def __init__(self, path: Path | None = None, wait: float = WAIT_SECONDS) -> None:
        self.path = path or default_cache_path()
        self.wait = wait
        self.problem: str | None = None
        """What went wrong with the database in this object's last calls, for the user; also logged."""
        self.stale: str | None = None
        """Why the last ``get`` found a profile but did not answer it: the model's code changed since."""

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self.path, timeout=self.wait)
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute(_SCHEMA)
            yield connection
            connection.commit()
        finally:
            connection.close()

    def _trouble(self, error: sqlite3.Error | OSError, doing: str) -> None:
        if isinstance(error, sqlite3.Error) and is_corrupt(error):
            self._set_aside(error)
        else:
            self._report(f"cache {self.path} could not be {doing} ({error}); left as it is and bypassed")

    def _report(self, problem: str) -> None:
        self.problem = problem
        log.warning("%s", problem)

    def _set_aside(self, error: sqlite3.Error) -> None:
        """Move a corrupt database out of the way so the next write starts a fresh one."""
        aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
        try:
            self.path.replace(aside)
        except OSError as exc:
            self._report(f"cache {self.path} is corrupt ({error}) and could not be moved aside ({exc}); bypassed")
            return
        for suffix in ("-wal", "-shm"):
            with contextlib.suppress(OSError):
                self.path.with_name(self.path.name + suffix).unlink()
        self._report(f"cache {self.path} was corrupt ({error}); moved to {aside.name} and re-measured")

    def claim(self, key: str, wait: float) -> contextlib.AbstractContextManager[Profile | None]:
        """Nothing to hold: on one host the device lock already keeps a second profile of ``key`` waiting, and the
        estimate looks in the cache again once it has the lock."""
        return contextlib.nullcontext()

    def get(self, key: str) -> Profile | None:
        self.stale = None
        try:
            with self._connect() as connection:
                row = connection.execute("SELECT profile FROM profiles WHERE key = ?", (key,)).fetchone()
        except (sqlite3.Error, OSError) as exc:
            self._trouble(exc, "read")
            return None
        profile, self.stale = usable(key, row[0] if row is not None else None)
        return profile

    def put(self, key: str, profile: Profile) -> bool:
        """Store, or say why not in ``problem``: a cache that cannot take the profile never fails the estimate."""
        text = profile.model_dump_json()
        for _attempt in range(2):
            try:
                with self._connect() as connection:
                    connection.execute(
                        "INSERT OR REPLACE INTO profiles (key, created, profile) VALUES (?, ?, ?)",
                        (key, time.time(), text),
                    )
                return True
            except (sqlite3.Error, OSError) as exc:
                self._trouble(exc, "written")
                if not (isinstance(exc, sqlite3.Error) and is_corrupt(exc)):
                    return False
        return False
