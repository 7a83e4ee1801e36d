"""The run history in the PostgreSQL database a fleet shares: ``--mlestimate-history postgresql://...``.

The same rows as the sqlite history's (``stores.run_history``), in the database's prefixed tables, written and
read by the same queries (``stores.history_queries``): each run in one transaction, so that runners recording at
once each add their whole run or nothing. The database is named as ``postgres.shown`` names it, without its
password, and every problem with it is a ``HistoryError`` saying so. A database with no recorded run yet reads
as an empty history, and ``exists`` is False for it, as for a history file not yet written.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from pytest_mlestimate.stores.history_queries import (
    POSTGRES,
    HistoryError,
    HistoryQueries,
    Recorded,
    ScenarioRow,
    write_run,
)
from pytest_mlestimate.stores.postgres import StoreError, connection, shown

if TYPE_CHECKING:
    import psycopg


@dataclass
class PostgresRunHistory(HistoryQueries):
    url: str
    path: str = field(init=False)
    """The database as a user is shown it."""
    dialect = POSTGRES

    def __post_init__(self) -> None:
        try:
            self.path = shown(self.url)
        except ValueError:  # urlsplit's answer to a port that is not a number
            raise HistoryError(
                "history database URL cannot be read (its port is not a number): give postgresql://USER@HOST:PORT/DB"
            ) from None

    @contextmanager
    def _opened(self) -> Iterator[psycopg.Connection[Any]]:
        try:
            with connection(self.url) as opened:
                yield opened
        except StoreError as exc:
            raise HistoryError(f"history {self._without_password(str(exc))}") from None
        except ImportError:
            raise HistoryError(
                f"history {self.path} needs PostgreSQL's client: pip install 'pytest-mlestimate[postgres]'"
            ) from None

    def _without_password(self, text: str) -> str:
        """``text`` with the URL's password left out, should a server or libpq ever echo it (a password of a
        few characters is left: taking it out of every word would garble the message)."""
        password = urlsplit(self.url).password or ""
        for spelling in {password, unquote(password)}:
            if len(spelling) >= 4:
                text = text.replace(spelling, "***")
        return text

    def record(
        self,
        rows: Sequence[ScenarioRow],
        environment: Mapping[str, Any],
        commit: str | None = None,
        branch: str | None = None,
        recorded_at: datetime | None = None,
    ) -> Recorded:
        """Add one run of ``rows`` in one transaction; no rows, no run (and no connection)."""
        if not rows:
            return Recorded(self.path, None, commit, branch, 0)
        with self._opened() as opened, opened.transaction():
            run_id = write_run(opened, POSTGRES, rows, environment, commit, branch, recorded_at)
        return Recorded(self.path, run_id, commit, branch, len(rows))

    def exists(self) -> bool:
        """Whether the database holds a recorded run."""
        with self._opened() as opened:
            row = opened.execute("SELECT EXISTS (SELECT 1 FROM mlestimate_runs)").fetchone()
        return bool(row and row[0])
