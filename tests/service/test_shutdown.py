"""A real server told to stop while it profiles: it stops within seconds, answers the waiting request and leaves no
profiling process behind."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from pytest_mlestimate.profiling.isolation import CHILD_MODULES
from tests.service.real_server import serving
from tests.slow_model import SLOW

ROOT = Path(__file__).resolve().parents[2]


def _profiling_children(server: subprocess.Popen[str], within: float = 60.0) -> list[psutil.Process]:
    limit = time.monotonic() + within
    while time.monotonic() < limit:
        found = [
            child
            for child in psutil.Process(server.pid).children(recursive=True)
            if any(entry in " ".join(child.cmdline()) for entry in CHILD_MODULES)
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
    answers: list[httpx.Response] = []
    options = ["--device", "cpu", "--allow-factory", SLOW["architecture"], "--profile-timeout", "600"]
    with serving(tmp_path, *options) as server:
        body: dict[str, Any] = dict(SLOW)
        url = f"{server.base}/api/v1/estimate-resource"
        waiting = threading.Thread(target=lambda: answers.append(httpx.post(url, json=body, timeout=120)))
        waiting.start()
        children = _profiling_children(server.process)
        time.sleep(1)
        stopped = time.monotonic()
        os.kill(server.process.pid, signal_number)
        server.process.wait(timeout=30)
        took = time.monotonic() - stopped
        waiting.join(timeout=30)

    assert took < 10, f"the server took {took:.1f} s to stop\n{server.log}"
    _gone, left = psutil.wait_procs(children, timeout=5)  # a killed process may take a moment to free its memory
    assert not [child for child in left if _alive(child)]
    assert [a.status_code for a in answers] == [503], server.log
    assert "shutting down" in answers[0].json()["detail"]
