"""A real ``mlestimate serve`` process for tests: its own port, cache and lock directory, and its log."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
"""On the server's import path, so that ``tests.*`` model factories resolve in it and its children."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_up(process: subprocess.Popen[str], url: str) -> None:
    for _ in range(300):
        if process.poll() is not None:
            raise AssertionError(f"the server exited: {process.communicate()[0]}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError("the server did not come up")


@dataclass
class Server:
    base: str
    process: subprocess.Popen[str]
    log: str = ""
    """What the server printed, once it has stopped."""


@contextlib.contextmanager
def serving(workdir: Path, *options: str) -> Iterator[Server]:
    """``mlestimate serve OPTIONS`` until the block ends (then SIGTERM, unless the block stopped it)."""
    port = free_port()
    env = os.environ | {
        "PYTHONPATH": str(ROOT),
        "MLESTIMATE_CACHE_DIR": str(workdir / "cache"),
        "MLESTIMATE_LOCK_DIR": str(workdir / "locks"),
    }
    command = [sys.executable, "-m", "pytest_mlestimate.commands.cli", "serve", "--port", str(port), *options]
    process = subprocess.Popen(
        command, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    server = Server(f"http://127.0.0.1:{port}", process)
    try:
        wait_until_up(process, f"{server.base}/healthz")
        yield server
    finally:
        if process.poll() is None:
            process.terminate()
        try:
            server.log = process.communicate(timeout=30)[0]
        except subprocess.TimeoutExpired:
            process.kill()
            server.log = process.communicate()[0]
