"""Versioned schema migrations for the stores kept in sqlite files.

A store's schema is a list of migrations, each taking the file from the version before it to its own; the file
records each version it reached in its ``schema_version`` table (created by the first migration). Opening a file
for writing applies what is pending, inside the caller's write transaction; a file of a later version than the
last migration is refused, never rewritten.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    sql: str
    """Statements separated by ``;``."""


def latest(migrations: Sequence[Migration]) -> int:
    return migrations[-1].version


def check(migrations: Sequence[Migration]) -> None:
    """Versions run 1, 2, 3 ... with no gap: a store's list is checked when it is defined."""
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise ValueError(f"migrations must be numbered 1, 2, 3 ... in order, got {versions}")


def version_of(connection: sqlite3.Connection) -> int:
    """The version a file reached; 0 for a file that has none (empty)."""
    found = connection.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'")
    if found.fetchone() is None:
        return 0
    reached = connection.execute("SELECT max(version) FROM schema_version").fetchone()[0]
    return int(reached) if isinstance(reached, int) else 0


def migrate(connection: sqlite3.Connection, migrations: Sequence[Migration], written_by: str) -> list[int]:
    """Apply the migrations past the file's version, in the transaction the caller holds; the versions applied."""
    current = version_of(connection)
    applied = []
    for migration in migrations:
        if migration.version <= current:
            continue
        for statement in filter(str.strip, migration.sql.split(";")):
            connection.execute(statement)
        connection.execute("INSERT INTO schema_version VALUES (?, ?)", (migration.version, written_by))
        applied.append(migration.version)
    return applied
