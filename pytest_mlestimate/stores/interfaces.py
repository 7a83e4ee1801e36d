"""The storage boundary: what the engine, the verdicts and the reports ask of the profile cache, the baselines
and the run history, and the one place that says which implementation a location names.

A location is a path or a ``postgresql://`` URL. At a path, the profile cache and the run history are sqlite files
(their schemas versioned by ``stores.migrations``) and baselines are JSON files in a folder; at a URL, the profile
cache and the run history are one PostgreSQL database that a fleet of hosts shares (``stores.postgres``), whose
leases also make each profile measured once in the fleet. Nothing above this layer knows which.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pytest_mlestimate.stores import baseline_folder, run_history
from pytest_mlestimate.stores.postgres import is_database_url
from pytest_mlestimate.stores.run_history import LatestSession, Recorded, ScenarioRow, ScenarioSummary

if TYPE_CHECKING:  # the commands that read baselines and histories load neither pydantic nor torch
    from pytest_mlestimate.profiling.profile import Profile


class ProfileStore(Protocol):
    path: Path | str
    """Where the profiles are, as a user is shown it (a database's URL without its password)."""
    problem: str | None
    """What went wrong in the last calls (the store answered as if empty), for a warning beside the figures."""
    stale: str | None
    """Why the last ``get`` did not answer the profile it holds (the custom model's code changed since)."""

    def get(self, key: str) -> Profile | None: ...
    def put(self, key: str, profile: Profile) -> bool: ...
    def claim(self, key: str, wait: float) -> AbstractContextManager[Profile | None]:
        """While the block runs, this caller alone measures ``key`` (in the whole fleet where the store is shared
        by hosts); what it yields is the profile another caller measured meanwhile, if any."""
        ...


class BaselineStore(Protocol):
    def path_of(self, file: str, name: str) -> Path:
        """Where a scenario's baseline is kept (or would be), for messages and for the document's own path."""
        ...

    def save(self, file: str, name: str, document: Mapping[str, Any]) -> Path: ...

    def load(self, path: Path) -> dict[str, Any]:
        """A saved document; ``FileNotFoundError`` when there is none, ``BaselineError`` when it is unreadable."""
        ...

    def saved(self) -> Iterator[Path]: ...


class RunHistory(Protocol):
    def record(
        self,
        rows: Sequence[ScenarioRow],
        environment: Mapping[str, Any],
        commit: str | None,
        branch: str | None,
        recorded_at: datetime | None,
    ) -> Recorded: ...
    def scenarios(self) -> list[ScenarioSummary]: ...
    def resolve(self, name: str | None) -> ScenarioSummary: ...
    def series_rows(self, file: str, name: str, metric: str) -> list[tuple[Any, ...]]: ...
    def measurement_rows(self, file: str, name: str, fingerprint: str) -> list[tuple[Any, ...]]: ...
    def latest_session(self, file: str, name: str) -> LatestSession | None: ...
    def exists(self) -> bool: ...


@dataclass(frozen=True)
class BaselineFolder:
    root: Path

    def path_of(self, file: str, name: str) -> Path:
        return baseline_folder.saved_path(self.root, file, name)

    def save(self, file: str, name: str, document: Mapping[str, Any]) -> Path:
        return baseline_folder.write_document(self.root, file, name, document)

    def load(self, path: Path) -> dict[str, Any]:
        return baseline_folder.load_document(path)

    def saved(self) -> Iterator[Path]:
        return baseline_folder.files(self.root)


@dataclass(frozen=True)
class SqliteRunHistory:
    path: Path

    def record(
        self,
        rows: Sequence[ScenarioRow],
        environment: Mapping[str, Any],
        commit: str | None,
        branch: str | None,
        recorded_at: datetime | None,
    ) -> Recorded:
        return run_history.record_rows(self.path, rows, environment, commit, branch, recorded_at)

    def scenarios(self) -> list[ScenarioSummary]:
        return run_history.scenarios(self.path)

    def resolve(self, name: str | None) -> ScenarioSummary:
        return run_history.resolve_scenario(self.path, name)

    def series_rows(self, file: str, name: str, metric: str) -> list[tuple[Any, ...]]:
        return run_history.series_rows(self.path, file, name, metric)

    def measurement_rows(self, file: str, name: str, fingerprint: str) -> list[tuple[Any, ...]]:
        return run_history.measurement_rows(self.path, file, name, fingerprint)

    def latest_session(self, file: str, name: str) -> LatestSession | None:
        return run_history.latest_session(self.path, file, name)

    def exists(self) -> bool:
        return self.path.exists()


def profile_store_at(location: str | Path | None = None) -> ProfileStore:
    """The profile cache a location names: a ``postgresql://`` URL, a path, or by default the user's cache folder."""
    if is_database_url(location):
        from pytest_mlestimate.stores.postgres_profiles import PostgresProfiles

        return PostgresProfiles(str(location))
    from pytest_mlestimate.stores.profile_cache import ProfileCache

    return ProfileCache(Path(location)) if location is not None else ProfileCache()


def baseline_store_at(location: str | Path) -> BaselineStore:
    return BaselineFolder(Path(location))


def run_history_at(location: str | Path) -> RunHistory:
    """The run history a location names: a ``postgresql://`` URL or the path of an sqlite file."""
    if is_database_url(location):
        from pytest_mlestimate.stores.postgres_history import PostgresRunHistory

        return PostgresRunHistory(str(location))
    return SqliteRunHistory(Path(location))
