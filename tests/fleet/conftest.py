"""A real PostgreSQL server for the fleet's tests (one per session, a fresh database per test)."""

from __future__ import annotations

import itertools
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


@pytest.fixture(scope="session")
def cluster() -> Iterator[Any]:
    """A Ray cluster of a head and two worker nodes with one CPU each, shared by the fleet's tests (a test that
    removes a node adds one back)."""
    pytest.importorskip("ray", reason="the ray extra is not installed")
    from tests.fleet.ray_cluster import ray_cluster

    with ray_cluster(workers=2) as running:
        yield running
