"""The run history's rows and queries, spelt once for both of its stores: the sqlite file (``run_history``) and
the PostgreSQL database a fleet shares (``postgres_history``).

Both hold the same four tables (PostgreSQL's prefixed ``mlestimate_``) and answer the same rows in the same order:
a query is written once, with sqlite's ``?`` marks and its tables as ``{runs}``, ``{scenarios}``, ``{figures}``
and ``{measurements}``, and ``Dialect.sql`` spells it for one store. Text is sorted byte by byte in both
(``{c}``: PostgreSQL's ``COLLATE "C"``; sqlite sorts so already), not by the database's locale. The queries run on
an open connection, ``sqlite3``'s or psycopg's (both ``execute`` and answer rows as tuples); opening it, its
transaction and its errors are the store's. Importing this module loads neither sqlite nor psycopg.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pytest_mlestimate.core.errors import brief


class HistoryError(ValueError):
    """A history that cannot be used, a file or a database; the message names it and says what to do."""


@dataclass(frozen=True)
class Dialect:
    """How one store spells the shared queries."""

    prefix: str
    """Before each table's name."""
    mark: str
    """A parameter's placeholder."""
    bytewise: str
    """After a text column that is sorted, so that it sorts by its bytes."""
    returning: bool
    """Whether an insert answers the new row's id with ``RETURNING id`` (else the cursor's ``lastrowid``)."""

    def sql(self, template: str) -> str:
        tables = {name: self.prefix + name for name in ("runs", "scenarios", "figures", "measurements")}
        text = template.format(c=self.bytewise, **tables)
        return text if self.mark == "?" else text.replace("?", self.mark)


SQLITE = Dialect(prefix="", mark="?", bytewise="", returning=False)
POSTGRES = Dialect(prefix="mlestimate_", mark="%s", bytewise=' COLLATE "C"', returning=True)


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


@dataclass(frozen=True)
class Recorded:
    """What one ``record_report`` added."""

    path: Path | str
    """The history's file, or its database as ``postgres.shown`` names it."""
    run_id: int | None
    """None when the report measured nothing: no run is added."""
    commit: str | None
    branch: str | None
    scenarios: int
    """Measured scenarios recorded; the others (skipped, invalid, not measured) are not kept."""


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


def utc(moment: datetime | None) -> str:
    moment = moment or datetime.now(timezone.utc)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds")


def _inserted(connection: Any, dialect: Dialect, template: str, values: Sequence[Any]) -> int:
    if dialect.returning:
        return int(connection.execute(dialect.sql(template + " RETURNING id"), values).fetchone()[0])
    found = connection.execute(dialect.sql(template), values).lastrowid
    assert found is not None
    return int(found)


def write_run(
    connection: Any,
    dialect: Dialect,
    rows: Sequence[ScenarioRow],
    environment: Mapping[str, Any],
    commit: str | None,
    branch: str | None,
    recorded_at: datetime | None,
) -> int:
    """Add one run of ``rows``, inside the caller's transaction; its id. A scenario given twice keeps its last row
    (the earlier one is deleted with its figures and measurements)."""
    run_id = _inserted(
        connection,
        dialect,
        "INSERT INTO {runs} (commit_sha, branch, recorded_at, environment) VALUES (?, ?, ?, ?)",
        (commit, branch, utc(recorded_at), canonical(environment)),
    )
    for row in rows:
        connection.execute(
            dialect.sql("DELETE FROM {scenarios} WHERE run_id = ? AND file = ? AND name = ?"),
            (run_id, row.file, row.name),
        )
        scenario_id = _inserted(
            connection,
            dialect,
            "INSERT INTO {scenarios} (run_id, file, name, outcome, measured, fingerprint, environment, scenario) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
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
        )
        cursor = connection.cursor()
        cursor.executemany(
            dialect.sql("INSERT INTO {figures} VALUES (?, ?, ?)"),
            [(scenario_id, name, value) for name, value in row.figures.items()],
        )
        cursor.executemany(
            dialect.sql("INSERT INTO {measurements} VALUES (?, ?, ?)"),
            [(scenario_id, position, canonical(run)) for position, run in enumerate(row.runs)],
        )
    return run_id


# -- reading -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScenarioSummary:
    file: str
    name: str
    sessions: int
    environments: int
    last_commit: str | None
    last_recorded_at: str


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


class HistoryQueries:
    """What a history answers, asked of one store: ``_opened`` gives a connection to it (its errors turned into
    ``HistoryError``), ``path`` names it in messages and ``dialect`` spells the queries for it."""

    path: Any
    dialect: Dialect

    def _opened(self) -> AbstractContextManager[Any]:
        raise NotImplementedError

    def scenarios(self) -> list[ScenarioSummary]:
        """Every scenario the history holds, by file and name."""
        with self._opened() as connection:
            rows = connection.execute(
                self.dialect.sql(
                    "SELECT s.file, s.name, count(*), count(DISTINCT s.fingerprint), "
                    "(SELECT r2.commit_sha FROM {scenarios} s2 JOIN {runs} r2 ON r2.id = s2.run_id "
                    "WHERE s2.file = s.file AND s2.name = s.name ORDER BY r2.recorded_at{c} DESC, r2.id DESC LIMIT 1), "
                    "max(r.recorded_at{c}) FROM {scenarios} s JOIN {runs} r ON r.id = s.run_id "
                    "GROUP BY s.file, s.name ORDER BY s.file{c}, s.name{c}"
                )
            ).fetchall()
        return [ScenarioSummary(*row) for row in rows]

    def resolve(self, name: str | None) -> ScenarioSummary:
        """The one scenario ``name`` (or ``FILE::NAME``) means; without a name, the history's only scenario."""
        known = self.scenarios()
        if not known:
            raise HistoryError(f"history {self.path} holds no measured scenario yet")
        if name is None:
            if len(known) == 1:
                return known[0]
            raise HistoryError(
                f"history {self.path} holds {len(known)} scenarios: choose one with --scenario ({_names(known)})"
            )
        # FILE::NAME first, then the bare name: either may hold "::" itself
        found = [s for s in known if name == f"{s.file}::{s.name}"] or [s for s in known if s.name == name]
        if len(found) == 1:
            return found[0]
        if found:
            raise HistoryError(
                f"scenario {brief(name)} is in {len(found)} files of history {self.path}: give it as FILE::NAME "
                f"({', '.join(f'{s.file}::{s.name}' for s in found)})"
            )
        raise HistoryError(f"history {self.path} has no scenario {brief(name)}; it holds: {_names(known)}")

    def series_rows(self, file: str, name: str, metric: str) -> list[tuple[Any, ...]]:
        """(run id, commit, branch, recorded at, fingerprint, environment, measured, figure) of each session of a
        scenario, oldest first; the figure is None where the session has none of ``metric``."""
        with self._opened() as connection:
            return connection.execute(
                self.dialect.sql(
                    "SELECT r.id, r.commit_sha, r.branch, r.recorded_at, s.fingerprint, s.environment, s.measured, "
                    "f.value FROM {scenarios} s JOIN {runs} r ON r.id = s.run_id "
                    "LEFT JOIN {figures} f ON f.scenario_id = s.id AND f.metric = ? "
                    "WHERE s.file = ? AND s.name = ? ORDER BY r.recorded_at{c}, r.id"
                ),
                (metric, file, name),
            ).fetchall()

    def measurement_rows(self, file: str, name: str, fingerprint: str) -> list[tuple[Any, ...]]:
        """(run id, commit, scenario fields, measurement) of every run a scenario recorded on one environment, the
        newest session first and each session's runs in their order."""
        with self._opened() as connection:
            return connection.execute(
                self.dialect.sql(
                    "SELECT r.id, r.commit_sha, s.scenario, m.run FROM {scenarios} s JOIN {runs} r ON r.id = s.run_id "
                    "JOIN {measurements} m ON m.scenario_id = s.id WHERE s.file = ? AND s.name = ? "
                    "AND s.fingerprint = ? ORDER BY r.recorded_at{c} DESC, r.id DESC, m.position"
                ),
                (file, name, fingerprint),
            ).fetchall()

    def latest_session(self, file: str, name: str) -> LatestSession | None:
        sql = self.dialect.sql
        with self._opened() as connection:
            row = connection.execute(
                sql(
                    "SELECT s.id, r.commit_sha, r.branch, r.recorded_at, s.environment, s.scenario FROM {scenarios} s "
                    "JOIN {runs} r ON r.id = s.run_id WHERE s.file = ? AND s.name = ? "
                    "ORDER BY r.recorded_at{c} DESC, r.id DESC LIMIT 1"
                ),
                (file, name),
            ).fetchone()
            if row is None:
                return None
            scenario_id, commit, branch, recorded_at, environment, fields = row
            figures = connection.execute(
                sql("SELECT metric, value FROM {figures} WHERE scenario_id = ? ORDER BY metric{c}"), (scenario_id,)
            ).fetchall()
            runs = connection.execute(
                sql("SELECT run FROM {measurements} WHERE scenario_id = ? ORDER BY position"), (scenario_id,)
            ).fetchall()
        return LatestSession(
            commit,
            branch,
            recorded_at,
            stored_mapping(environment),
            stored_mapping(fields),
            {metric: figure for metric, value in figures if (figure := stored_figure(value)) is not None},
            [text for (text,) in runs],
        )


def _names(known: Sequence[ScenarioSummary], shown: int = 12) -> str:
    names = [f"{s.file}::{s.name}" for s in known]
    more = len(names) - shown
    return ", ".join(names[:shown]) + (f" and {more} more" if more > 0 else "")
