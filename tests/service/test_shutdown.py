"""A real server told to stop while it profiles: it stops within seconds, answers the waiting request and leaves no
profiling process behind."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.slow_model import SLOW

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _profiling_children(server: subprocess.Popen[str], within: float = 60.0) -> list[psutil.Process]:
    limit = time.monotonic() + within
    while time.monotonic() < limit:
        found = [
            child
            for child in psutil.Process(server.pid).children(recursive=True)
            if "pytest_mlestimate.worker" in " ".join(child.cmdline())
        ]
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError("the server started no profile")


def _alive(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGINT])
def test_a_stopped_server_ends_its_profiles_at_once(tmp_path: Path, signal_number: int) -> None:
    port = _free_port()
    env = os.environ | {
        "PYTHONPATH": str(ROOT),
        "MLESTIMATE_CACHE_DIR": str(tmp_path / "cache"),
        "MLESTIMATE_LOCK_DIR": str(tmp_path / "locks"),
    }
    command = [sys.executable, "-m", "pytest_mlestimate.cli", "serve", "--port", str(port), "--device", "cpu"]
    command += ["--allow-factory", SLOW["architecture"], "--profile-timeout", "600"]
    server = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    answers: list[httpx.Response] = []
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                httpx.get(f"{base}/healthz", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        body: dict[str, Any] = dict(SLOW)
        waiting = threading.Thread(
            target=lambda: answers.append(httpx.post(f"{base}/api/v1/estimate-resource", json=body, timeout=120))
        )
        waiting.start()
        children = _profiling_children(server)
        time.sleep(1)
        stopped = time.monotonic()
        os.kill(server.pid, signal_number)
        server.wait(timeout=30)
        took = time.monotonic() - stopped
        waiting.join(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
        log = server.communicate()[0]
    assert took < 10, f"the server took {took:.1f} s to stop\n{log}"
    assert not any(_alive(child) for child in children)
    assert [a.status_code for a in answers] == [503], log
    assert "shutting down" in answers[0].json()["detail"]
