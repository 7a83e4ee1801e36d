"""A corrupt cache under a real server: set aside, said in the server's log, and the request still answered."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.tiny_scenario import TINY


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_corrupt_cache_is_set_aside_and_logged(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "profiles.sqlite3").write_bytes(b"not a database, whatever it once was" * 200)
    port = _free_port()
    env = os.environ | {"MLESTIMATE_CACHE_DIR": str(cache), "MLESTIMATE_LOCK_DIR": str(tmp_path / "locks")}
    command = [sys.executable, "-m", "pytest_mlestimate.cli", "serve", "--port", str(port), "--device", "cpu"]
    command += ["--allow-factory", TINY["architecture"], "--no-access-log"]
    server = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                httpx.get(f"{base}/healthz", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        answer = httpx.post(f"{base}/api/v1/estimate-resource", json=TINY | {"device": "cpu"}, timeout=120)
    finally:
        server.terminate()
        log = server.communicate(timeout=30)[0]
    assert answer.status_code == 200, answer.text
    assert "was corrupt" in log and "moved to profiles.sqlite3.corrupt-" in log, log
    assert [p.name for p in cache.iterdir() if ".corrupt-" in p.name]
