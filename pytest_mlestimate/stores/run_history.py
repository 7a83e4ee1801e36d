"""The run history's store, an sqlite file: every run's figures and raw samples kept by commit.

A run is one ``pytest --mlestimate`` session (or one JSON report): its commit, branch, time (UTC) and, for
each measured scenario, the environment fingerprint, the scenario's fields, the figures the report showed
and every fresh-process run behind them with its samples. What a report records is decided by
``verdicts.history_recording``; its series and window are ``verdicts.history``'s. This module keeps the rows,
answers the queries and migrates the file's schema (``stores.migrations``).

The file is safe for several processes: WAL, a busy timeout, and each run written in one ``BEGIN IMMEDIATE``
transaction. A file that is not a history (not sqlite, another program's database, a damaged one, a newer
format) raises ``HistoryError`` naming the path; nothing is overwritten. Importing this module loads neither
torch nor the engine.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

from pytest_mlestimate.core.errors import brief
from pytest_mlestimate.stores.migrations import Migration, check, latest, migrate, version_of

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


class HistoryError(ValueError):
    """A history file that cannot be used; the message names the path and says what to do."""


# -- what a run records ------------------------------------------------------------------------------------


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def stored_mapping(text: object) -> dict[str, Any]:
    """A JSON object column as it was written; empty for what another program or a crash left there instead."""
    try:
        found = json.loads(text) if isinstance(text, str | bytes) else None
    except (ValueError, RecursionError):
        found = None
    return found if isinstance(found, dict) else {}


def stored_figure(value: object) -> float | None:
    """A figure column: a finite number, else None (sqlite keeps whatever was put in a REAL column)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


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


@dataclass(frozen=True)
class Recorded:
    """What one ``record_report`` added."""

    path: Path
    run_id: int | None
    """None when the report measured nothing: no run is added."""
    commit: str | None
    branch: str | None
    scenarios: int
    """Measured scenarios recorded; the others (skipped, invalid, not measured) are not kept."""


def _utc(moment: datetime | None) -> str:
    moment = moment or datetime.now(timezone.utc)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class ScenarioRow:
    """One measured scenario of a run, as the store keeps it."""

    file: str
    name: str
    outcome: str | None
    measured: str | None
    fingerprint: str
    environment: Mapping[str, Any]
    scenario: Mapping[str, Any]
    figures: Mapping[str, float]
    runs: Sequence[Mapping[str, Any]]


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
            run_id = connection.execute(
                "INSERT INTO runs (commit_sha, branch, recorded_at, environment) VALUES (?, ?, ?, ?)",
                (commit, branch, _utc(recorded_at), canonical(environment)),
            ).lastrowid
            assert run_id is not None
            for row in rows:
                _insert(connection, run_id, row)
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
    return Recorded(path, run_id, commit, branch, len(rows))


def _insert(connection: sqlite3.Connection, run_id: int, row: ScenarioRow) -> None:
    scenario_id = connection.execute(
        "INSERT OR REPLACE INTO scenarios (run_id, file, name, outcome, measured, fingerprint, environment, scenario)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            run_id,
            row.file,
            row.name,
            row.outcome,
            row.measured,
            row.fingerprint,
            canonical(row.environment),
            canonical(row.scenario),
        ),
    ).lastrowid
    connection.executemany(
        "INSERT INTO figures VALUES (?, ?, ?)", [(scenario_id, name, value) for name, value in row.figures.items()]
    )
    connection.executemany(
        "INSERT INTO measurements VALUES (?, ?, ?)",
        [(scenario_id, position, canonical(run)) for position, run in enumerate(row.runs)],
    )


# -- reading -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScenarioSummary:
    file: str
    name: str
    sessions: int
    environments: int
    last_commit: str | None
    last_recorded_at: str


def scenarios(path: Path) -> list[ScenarioSummary]:
    """Every scenario the history holds, by file and name."""
    with opened(path) as connection:
        rows = connection.execute(
            "SELECT s.file, s.name, count(*), count(DISTINCT s.fingerprint), "
            "(SELECT r2.commit_sha FROM scenarios s2 JOIN runs r2 ON r2.id = s2.run_id "
            "WHERE s2.file = s.file AND s2.name = s.name ORDER BY r2.recorded_at DESC, r2.id DESC LIMIT 1), "
            "max(r.recorded_at) FROM scenarios s JOIN runs r ON r.id = s.run_id "
            "GROUP BY s.file, s.name ORDER BY s.file, s.name"
        ).fetchall()
    return [ScenarioSummary(*row) for row in rows]


def resolve_scenario(path: Path, name: str | None) -> ScenarioSummary:
    """The one scenario ``name`` (or ``FILE::NAME``) means; without a name, the history's only scenario."""
    known = scenarios(path)
    if not known:
        raise HistoryError(f"history {path} holds no measured scenario yet")
    if name is None:
        if len(known) == 1:
            return known[0]
        raise HistoryError(f"history {path} holds {len(known)} scenarios: choose one with --scenario ({_names(known)})")
    # FILE::NAME first, then the bare name: either may hold "::" itself
    found = [s for s in known if name == f"{s.file}::{s.name}"] or [s for s in known if s.name == name]
    if len(found) == 1:
        return found[0]
    if found:
        raise HistoryError(
            f"scenario {brief(name)} is in {len(found)} files of history {path}: give it as FILE::NAME "
            f"({', '.join(f'{s.file}::{s.name}' for s in found)})"
        )
    raise HistoryError(f"history {path} has no scenario {brief(name)}; it holds: {_names(known)}")


def _names(known: Sequence[ScenarioSummary], shown: int = 12) -> str:
    names = [f"{s.file}::{s.name}" for s in known]
    more = len(names) - shown
    return ", ".join(names[:shown]) + (f" and {more} more" if more > 0 else "")


# -- queries the verdicts and reports ask ----------------------------------------------------------------


def series_rows(path: Path, file: str, name: str, metric: str) -> list[tuple[Any, ...]]:
    """(run id, commit, branch, recorded at, fingerprint, environment, measured, figure) of each session of a
    scenario, oldest first; the figure is None where the session has none of ``metric``."""
    with opened(path) as connection:
        return connection.execute(
            "SELECT r.id, r.commit_sha, r.branch, r.recorded_at, s.fingerprint, s.environment, s.measured, f.value "
            "FROM scenarios s JOIN runs r ON r.id = s.run_id "
            "LEFT JOIN figures f ON f.scenario_id = s.id AND f.metric = ? "
            "WHERE s.file = ? AND s.name = ? ORDER BY r.recorded_at, r.id",
            (metric, file, name),
        ).fetchall()


def measurement_rows(path: Path, file: str, name: str, fingerprint: str) -> list[tuple[Any, ...]]:
    """(run id, commit, scenario fields, measurement) of every run a scenario recorded on one environment, the
    newest session first and each session's runs in their order."""
    with opened(path) as connection:
        return connection.execute(
            "SELECT r.id, r.commit_sha, s.scenario, m.run FROM scenarios s JOIN runs r ON r.id = s.run_id "
            "JOIN measurements m ON m.scenario_id = s.id "
            "WHERE s.file = ? AND s.name = ? AND s.fingerprint = ? ORDER BY r.recorded_at DESC, r.id DESC, m.position",
            (file, name, fingerprint),
        ).fetchall()


@dataclass(frozen=True)
class LatestSession:
    """A scenario's last recorded session: where and when, its figures and its measurements as stored."""

    commit: str | None
    branch: str | None
    recorded_at: str
    environment: dict[str, Any]
    scenario: dict[str, Any]
    figures: dict[str, float]
    runs: list[str]


def latest_session(path: Path, file: str, name: str) -> LatestSession | None:
    with opened(path) as connection:
        row = connection.execute(
            "SELECT s.id, r.commit_sha, r.branch, r.recorded_at, s.environment, s.scenario FROM scenarios s "
            "JOIN runs r ON r.id = s.run_id WHERE s.file = ? AND s.name = ? "
            "ORDER BY r.recorded_at DESC, r.id DESC LIMIT 1",
            (file, name),
        ).fetchone()
        if row is None:
            return None
        scenario_id, commit, branch, recorded_at, environment, fields = row
        figures = {
            metric: figure
            for metric, value in connection.execute(
                "SELECT metric, value FROM figures WHERE scenario_id = ?", (scenario_id,)
            )
            if (figure := stored_figure(value)) is not None
        }
        runs = [
            text
            for (text,) in connection.execute(
                "SELECT run FROM measurements WHERE scenario_id = ? ORDER BY position", (scenario_id,)
            )
        ]
    return LatestSession(
        commit, branch, recorded_at, stored_mapping(environment), stored_mapping(fields), figures, runs
    )
