"""A real PostgreSQL server for the tests, started from the machine's own binaries in a temporary folder.

Debian's ``postgresql`` package (``.ci/run`` installs it) gives ``initdb`` and ``pg_ctl``; the server runs on a
free loopback port with trust authentication and is stopped at the end of the session. ``initdb`` refuses to run as
root, so under root (CI) the server runs as Debian's ``postgres`` user. (pytest-postgresql's fixtures start the
server as the calling user, which is why they are not used here.)
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.service.real_server import free_port


def binaries() -> Path | None:
    """The folder of ``initdb`` and ``pg_ctl``: Debian keeps them outside PATH, one folder per major version."""
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(versions[-1]).parent if versions else None


@dataclass
class Server:
    folder: Path
    port: int
    bindir: Path
    user: str | None

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *command: str) -> None:
        prefix = ["runuser", "-u", self.user, "--"] if self.user else []
        subprocess.run([*prefix, *command], check=True, capture_output=True, text=True, timeout=120)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.folder / "data"),
            "-l",
            str(self.folder / "server.log"),
            "-o",
            options,
            "-w",
            "start",
        )

    def stop(self) -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.folder / "data"), "-m", "immediate", "-w", "stop")

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def start_server(folder: Path) -> Server:
    bindir = binaries()
    if bindir is None:
        raise FileNotFoundError("no PostgreSQL server binaries (initdb): install Debian's postgresql package")
    user = None
    if os.geteuid() == 0:
        user = "postgres"
        pwd.getpwnam(user)  # KeyError when the package did not create it
        folder.chmod(0o755)
        shutil.chown(folder, user)
    server = Server(folder, free_port(), bindir, user)
    server._run(str(bindir / "initdb"), "-D", str(folder / "data"), "-U", "postgres", "--auth=trust", "-E", "UTF8")
    server.start()
    return server
