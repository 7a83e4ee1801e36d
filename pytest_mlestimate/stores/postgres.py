"""A PostgreSQL database as the fleet's one store: where a location names ``postgresql://...`` instead of a path.

Connections come from a pool per URL and process (psycopg_pool). Credentials come from the URL or libpq's own
``PG*`` environment variables (PGHOST, PGUSER, PGPASSWORD, PGPASSFILE, ...); the store is shown to users as
``shown(url)``, which never holds a password, and errors say where and what, never the URL itself. The schema is
versioned like the sqlite stores' (``stores.migrations``): each migration is applied once, in order, under an
advisory lock, so that replicas starting together migrate it once; a database of a later version is refused.
Importing this module loads psycopg only when a database is first used.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pytest_mlestimate.stores.migrations import Migration, check, latest

if TYPE_CHECKING:
    import psycopg
    from psycopg_pool import ConnectionPool

SCHEMES = ("postgresql://", "postgres://")
SCHEMA_LOCK = 0x6D6C6553
"""The advisory lock held while the schema is migrated ("mleS")."""
POOL_SIZE = 8
CONNECT_TIMEOUT_S = 10

SCHEMA = """
CREATE TABLE mlestimate_schema_version (
    version INTEGER NOT NULL,
    written_by TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE mlestimate_profiles (key TEXT PRIMARY KEY, created DOUBLE PRECISION NOT NULL, profile TEXT NOT NULL);
CREATE TABLE mlestimate_leases (
    key TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    taken TIMESTAMPTZ NOT NULL,
    expires TIMESTAMPTZ NOT NULL
);
CREATE TABLE mlestimate_profile_runs (
    id BIGSERIAL PRIMARY KEY,
    key TEXT NOT NULL,
    holder TEXT NOT NULL,
    took_over BOOLEAN NOT NULL,
    started TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    finished TIMESTAMPTZ,
    outcome TEXT
);
CREATE TABLE mlestimate_jobs (
    id TEXT PRIMARY KEY,
    endpoint TEXT NOT NULL,
    request BYTEA NOT NULL,
    owner TEXT NOT NULL,
    status TEXT NOT NULL,
    description TEXT NOT NULL,
    created DOUBLE PRECISION NOT NULL,
    heartbeat TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE mlestimate_runs (
    id BIGSERIAL PRIMARY KEY,
    commit_sha TEXT,
    branch TEXT,
    recorded_at TEXT NOT NULL,
    environment TEXT NOT NULL
);
CREATE TABLE mlestimate_scenarios (
    id BIGSERIAL PRIMARY KEY,
    run_id BIGINT NOT NULL REFERENCES mlestimate_runs (id) ON DELETE CASCADE,
    file TEXT NOT NULL,
    name TEXT NOT NULL,
    outcome TEXT,
    measured TEXT,
    fingerprint TEXT NOT NULL,
    environment TEXT NOT NULL,
    scenario TEXT NOT NULL,
    UNIQUE (run_id, file, name)
);
CREATE INDEX mlestimate_scenarios_by_series ON mlestimate_scenarios (file, name, fingerprint, run_id);
CREATE TABLE mlestimate_figures (
    scenario_id BIGINT NOT NULL REFERENCES mlestimate_scenarios (id) ON DELETE CASCADE,
    metric TEXT NOT NULL,
    value DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (scenario_id, metric)
);
CREATE TABLE mlestimate_measurements (
    scenario_id BIGINT NOT NULL REFERENCES mlestimate_scenarios (id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    run TEXT NOT NULL,
    PRIMARY KEY (scenario_id, position)
)
"""
"""The profile cache, the leases that make each configuration measured once fleet-wide (and the log of the
profiles measured under them), the service's asynchronous jobs, and the run history (the sqlite history's tables,
prefixed)."""

MIGRATIONS = (Migration(1, "profiles, leases, profile runs, jobs and the run history", SCHEMA),)
check(MIGRATIONS)
FORMAT = latest(MIGRATIONS)


class StoreError(RuntimeError):
    """A database that cannot be used; the message names it as ``shown`` does and says what to do."""


def is_database_url(location: object) -> bool:
    return isinstance(location, str) and location.startswith(SCHEMES)


def shown(url: str) -> str:
    """The URL as a user may see it: scheme, user, host, port and database; never a password or options."""
    parts = urlsplit(url)
    host = parts.hostname or "(PGHOST)"
    port = f":{parts.port}" if parts.port else ""
    user = f"{parts.username}@" if parts.username else ""
    return f"postgresql://{user}{host}{port}{parts.path or '/(PGDATABASE)'}"


_pools: dict[str, ConnectionPool[Any]] = {}
_migrated: set[str] = set()
_pools_lock = threading.Lock()


def _pool(url: str) -> ConnectionPool[Any]:
    with _pools_lock:
        pool = _pools.get(url)
        if pool is None:
            import psycopg
            from psycopg_pool import ConnectionPool

            # first one connection, which fails at once with the server's reason (a pool would retry until it
            # times out, and say only that)
            psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_S).close()
            pool = ConnectionPool(
                url,
                min_size=1,
                max_size=POOL_SIZE,
                kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT_S},
                open=True,
                timeout=CONNECT_TIMEOUT_S * 3,
                name=shown(url),
            )
            _pools[url] = pool
        return pool


def close_pools() -> None:
    """Close every pool of this process (a test's database is dropped, a replica stops)."""
    with _pools_lock:
        pools = list(_pools.values())
        _pools.clear()
        _migrated.clear()
    for pool in pools:
        pool.close()


@contextmanager
def connection(url: str) -> Iterator[psycopg.Connection[Any]]:
    """A pooled connection to a migrated database; every database error inside is a ``StoreError``."""
    import psycopg
    from psycopg_pool import PoolTimeout

    try:
        with _pool(url).connection() as opened:
            if url not in _migrated:
                _migrate(opened, url, MIGRATIONS)
                _migrated.add(url)
            yield opened
    except PoolTimeout as exc:
        raise StoreError(f"database {shown(url)} could not be reached: {_reason(exc)}") from None
    except psycopg.Error as exc:
        raise StoreError(f"database {shown(url)}: {_reason(exc)}") from None


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text.replace("\n", " ")


def version_of(opened: psycopg.Connection[Any]) -> int:
    exists = opened.execute("SELECT to_regclass('mlestimate_schema_version') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return 0
    reached = opened.execute("SELECT max(version) FROM mlestimate_schema_version").fetchone()
    return int(reached[0]) if reached and reached[0] is not None else 0


def _migrate(opened: psycopg.Connection[Any], url: str, migrations: Sequence[Migration]) -> list[int]:
    """Apply what is pending in one transaction, under the schema's advisory lock; the versions applied."""
    applied: list[int] = []
    with opened.transaction():
        opened.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
        current = version_of(opened)
        if current > latest(migrations):
            raise StoreError(
                f"database {shown(url)} holds pytest-mlestimate tables of format {current}; this version reads "
                f"format {latest(migrations)}: use the version that wrote them, or another database"
            )
        for migration in migrations:
            if migration.version <= current:
                continue
            for statement in filter(str.strip, migration.sql.split(";")):
                opened.execute(statement)  # type: ignore[call-overload]  # our own constant SQL
            opened.execute(
                "INSERT INTO mlestimate_schema_version (version, written_by) VALUES (%s, %s)",
                (migration.version, "pytest-mlestimate"),
            )
            applied.append(migration.version)
    return applied
