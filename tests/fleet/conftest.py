"""A real PostgreSQL server for the fleet's tests (one per session, a fresh database per test)."""

from __future__ import annotations

import itertools
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.postgres_server import Server, binaries, start_server

_databases = itertools.count()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Server]:
    if binaries() is None:
        pytest.skip("no PostgreSQL server on this machine (initdb): install Debian's postgresql package")
    # not under pytest's temporary folder: that one is private to root, and the server may run as 'postgres'
    folder = Path(tempfile.mkdtemp(prefix="mlestimate-postgres-"))
    server = start_server(folder)
    yield server
    server.stop()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def database_url(postgres_server: Server) -> Iterator[str]:
    """The URL of an empty database of the session's server; pools opened on it are closed afterwards."""
    from pytest_mlestimate.stores.postgres import close_pools

    yield postgres_server.create_database(f"test_{next(_databases)}")
    close_pools()
