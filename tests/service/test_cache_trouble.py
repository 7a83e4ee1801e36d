"""A corrupt cache under a real server: set aside, said in the server's log, and the request still answered."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.service.real_server import serving
from tests.tiny_scenario import TINY


def test_a_corrupt_cache_is_set_aside_and_logged(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "profiles.sqlite3").write_bytes(b"not a database, whatever it once was" * 200)
    options = ["--device", "cpu", "--allow-factory", TINY["architecture"], "--no-access-log"]
    with serving(tmp_path, *options) as server:
        answer = httpx.post(f"{server.base}/api/v1/estimate-resource", json=TINY | {"device": "cpu"}, timeout=120)

    assert answer.status_code == 200, answer.text
    assert "was corrupt" in server.log and "moved to profiles.sqlite3.corrupt-" in server.log, server.log
    assert [p.name for p in cache.iterdir() if ".corrupt-" in p.name]
