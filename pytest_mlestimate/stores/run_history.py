"""The run history's store, an sqlite file: every run's figures and raw samples kept by commit.

A run is one ``pytest --mlestimate`` session (or one JSON report): its commit, branch, time (UTC) and, for
each measured scenario, the environment fingerprint, the scenario's fields, the figures the report showed
and every fresh-process run behind them with its samples. What a report records is decided by
``verdicts.history_recording``; its series and window are ``verdicts.history``'s. This module keeps the file:
opens it, migrates its schema (``stores.migrations``) and runs the rows and queries of ``stores.history_queries``
on it, which the PostgreSQL history (``stores.postgres_history``) runs on its own tables.

The file is safe for several processes: WAL, a busy timeout, and each run written in one ``BEGIN IMMEDIATE``
transaction. A file that is not a history (not sqlite, another program's database, a damaged one, a newer
format) raises ``HistoryError`` naming the path; nothing is overwritten. Importing this module loads neither
torch nor the engine.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from pytest_mlestimate.core.errors import brief
from pytest_mlestimate.stores.history_queries import (
    SQLITE,
    HistoryError,
    HistoryQueries,
    LatestSession,
    Recorded,
    ScenarioRow,
    ScenarioSummary,
    write_run,
)
from pytest_mlestimate.stores.migrations import Migration, check, latest, migrate, version_of
from pytest_mlestimate.stores.postgres import is_database_url, shown

APPLICATION_ID = 0x6D6C6548
"""sqlite's application id for a history file ("mleH"), so that another program's database is told apart."""
BUSY_TIMEOUT_S = 60.0
"""How long a writer waits for another process's transaction before giving up with a ``HistoryError``."""
SQLITE_HEADER = b"SQLite format 3\x00"

SCHEMA = """
CREATE TABLE schema_version (version INTEGER NOT NULL, written_by TEXT NOT NULL);
CREATE TABLE runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    commit_sha TEXT,
    branch TEXT,
    recorded_at TEXT NOT NULL,
    environment TEXT NOT NULL
);
CREATE TABLE scenarios (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    file TEXT NOT NULL,
    name TEXT NOT NULL,
    outcome TEXT,
    measured TEXT,
    fingerprint TEXT NOT NULL,
    environment TEXT NOT NULL,
    scenario TEXT NOT NULL,
    UNIQUE (run_id, file, name)
);
CREATE INDEX scenarios_by_series ON scenarios (file, name, fingerprint, run_id);
CREATE TABLE figures (
    scenario_id INTEGER NOT NULL REFERENCES scenarios (id) ON DELETE CASCADE,
    metric TEXT NOT NULL,
    value REAL NOT NULL,
    PRIMARY KEY (scenario_id, metric)
);
CREATE TABLE measurements (
    scenario_id INTEGER NOT NULL REFERENCES scenarios (id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    run TEXT NOT NULL,
    PRIMARY KEY (scenario_id, position)
);
"""
"""runs: one per session (commit, branch, ISO 8601 UTC time, the report's environment); scenarios: one per
measured scenario of a run (``fingerprint`` is the canonical JSON of ``FINGERPRINT_KEYS``, ``scenario`` of all
its fields); figures: the report's documented figures by snake-case metric; measurements: each fresh-process
run as ``Run.to_dict`` (figures, samples, contended, breakdown)."""

MIGRATIONS = (Migration(1, "runs, scenarios, figures and measurements", SCHEMA),)
"""The history's schema, version by version: a file of an earlier version is migrated when it is next written."""
check(MIGRATIONS)
HISTORY_FORMAT = latest(MIGRATIONS)
"""The schema's version, kept in the ``schema_version`` table; a file of a later format is refused."""


def named(location: str | Path) -> str:
    """A history as messages name it: a file by its path, a database by its URL without the password."""
    return shown(location) if is_database_url(location) else str(location)


# -- the file ----------------------------------------------------------------------------------------------


def _problem(path: Path, exc: sqlite3.Error) -> HistoryError:
    text = str(exc)
    if "locked" in text or "busy" in text:
        return HistoryError(
            f"history {path} stayed locked by another process for more than {BUSY_TIMEOUT_S:.0f} s ({text}): "
            "try again when that run has finished"
        )
    if isinstance(exc, sqlite3.DatabaseError) and ("malformed" in text or "not a database" in text):
        return HistoryError(
            f"history {path} is damaged ({text}): move it aside and give a new path; the JSON report is unaffected"
        )
    return HistoryError(f"history {path} cannot be used: {text}")


def _header_problem(path: Path) -> str | None:
    """Why ``path`` cannot be a history, judged from its first bytes, or None."""
    if path.exists() and not path.is_file():
        return f"history {path} is not a file: give the path of an sqlite file"
    try:
        with path.open("rb") as handle:
            head = handle.read(len(SQLITE_HEADER))
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"history {path} cannot be read ({exc.strerror or exc})"
    if head and head != SQLITE_HEADER:
        return (
            f"history {path} is not an sqlite file (it begins {brief(head)}): give the path of a history file, "
            "or a new path"
        )
    return None


def _check_schema(connection: sqlite3.Connection, path: Path) -> int:
    """The version of the history at ``path`` (0 when it is empty); ``HistoryError`` for another program's database
    or a later format.

    The header and the tables are read in one read transaction: read apart, another process creating the history
    in between shows its tables without its application id, a foreign database."""
    reading = not connection.in_transaction
    if reading:
        connection.execute("BEGIN")
    try:
        application = connection.execute("PRAGMA application_id").fetchone()[0]
        tables = [row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        version = version_of(connection) if application == APPLICATION_ID else 0
    finally:
        if reading:
            connection.execute("COMMIT")
    if application != APPLICATION_ID:
        if not tables and application == 0:
            return 0
        shown = ", ".join(sorted(t for t in tables if not t.startswith("sqlite_"))[:6]) or "none"
        raise HistoryError(
            f"history {path} is another program's sqlite database (tables: {shown}), not a pytest-mlestimate "
            "history: give a new path"
        )
    if version > HISTORY_FORMAT or version < 1:
        raise HistoryError(
            f"history {path} has format {brief(version)}; this version of pytest-mlestimate reads format "
            f"{HISTORY_FORMAT}: use the version that wrote it, or give a new path"
        )
    return version


def _connect(path: Path, create: bool) -> sqlite3.Connection:
    problem = _header_problem(path)
    if problem:
        raise HistoryError(problem)
    if not create and not path.exists():
        raise HistoryError(f"history {path} does not exist: record runs with --mlestimate-history {path}")
    if create:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise HistoryError(f"history {path}: its folder cannot be created ({exc.strerror or exc})") from None
    # reading only: a history on a read-only mount or in another user's folder reads all the same
    connection = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None) if create else _read_only(path)
    connection.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
    connection.execute("PRAGMA foreign_keys = ON")
    return connection


def _read_only(path: Path) -> sqlite3.Connection:
    """A connection that cannot write. ``mode=ro`` still needs the WAL's shared-memory file, which a read-only
    folder cannot hold: there the file is opened as immutable (no other process may write it meanwhile)."""
    uri = "file:" + quote(str(path.resolve()))
    connection = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    try:
        connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.OperationalError:
        connection.close()
        connection = sqlite3.connect(f"{uri}?immutable=1", uri=True, isolation_level=None)
    return connection


def _retrying(action: Callable[[], Any]) -> Any:
    """``action`` again while another process holds a lock that sqlite's busy handler does not wait for (a journal
    mode change on a file being created), up to ``BUSY_TIMEOUT_S``."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            return action()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@contextmanager
def opened(path: Path, create: bool = False) -> Iterator[sqlite3.Connection]:
    """A connection to the history at ``path`` (created, with its folder, when ``create``), its schema checked;
    every sqlite error inside is a ``HistoryError`` naming the path."""
    try:
        connection = _connect(path, create)
    except sqlite3.Error as exc:
        raise _problem(path, exc) from None
    except OSError as exc:  # a file that cannot be read or created, beside sqlite's own errors
        raise HistoryError(f"history {path} cannot be opened: {exc.strerror or exc}") from None
    try:
        version = _check_schema(connection, path)
        if version < HISTORY_FORMAT:
            if not create:
                if version == 0:
                    raise HistoryError(f"history {path} is empty: record runs with --mlestimate-history {path}")
                raise HistoryError(
                    f"history {path} has format {version}; record a run with this version to migrate it to "
                    f"format {HISTORY_FORMAT}"
                )
            _retrying(lambda: _create(connection, path))
        if create:
            _retrying(lambda: connection.execute("PRAGMA journal_mode = WAL"))
        yield connection
    except sqlite3.Error as exc:
        raise _problem(path, exc) from None
    finally:
        connection.close()


def _create(connection: sqlite3.Connection, path: Path) -> None:
    """The schema's pending migrations, applied inside the write lock (another process may have applied them
    meanwhile: the version is read again there)."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        if _check_schema(connection, path) < HISTORY_FORMAT:
            migrate(connection, MIGRATIONS, "pytest-mlestimate")
            connection.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise


# -- recording ---------------------------------------------------------------------------------------------


def record_rows(
    path: Path,
    rows: Sequence[ScenarioRow],
    environment: Mapping[str, Any],
    commit: str | None = None,
    branch: str | None = None,
    recorded_at: datetime | None = None,
) -> Recorded:
    """Add one run of ``rows`` to the history at ``path`` (created when missing), in one transaction; no rows,
    no run (and no file)."""
    if not rows:
        return Recorded(path, None, commit, branch, 0)
    with opened(path, create=True) as connection:
        connection.execute("BEGIN IMMEDIATE")
        try:
            run_id = write_run(connection, SQLITE, rows, environment, commit, branch, recorded_at)
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
    return Recorded(path, run_id, commit, branch, len(rows))


# -- reading (the queries are ``history_queries``', shared with the PostgreSQL history) -------------------


@dataclass(frozen=True)
class _File(HistoryQueries):
    path: Path
    dialect = SQLITE

    def _opened(self) -> AbstractContextManager[sqlite3.Connection]:
        return opened(self.path)


def scenarios(path: Path) -> list[ScenarioSummary]:
    """Every scenario the history holds, by file and name."""
    return _File(path).scenarios()


def resolve_scenario(path: Path, name: str | None) -> ScenarioSummary:
    """The one scenario ``name`` (or ``FILE::NAME``) means; without a name, the history's only scenario."""
    return _File(path).resolve(name)


def series_rows(path: Path, file: str, name: str, metric: str) -> list[tuple[Any, ...]]:
    return _File(path).series_rows(file, name, metric)


def measurement_rows(path: Path, file: str, name: str, fingerprint: str) -> list[tuple[Any, ...]]:
    return _File(path).measurement_rows(file, name, fingerprint)


def latest_session(path: Path, file: str, name: str) -> LatestSession | None:
    return _File(path).latest_session(file, name)
