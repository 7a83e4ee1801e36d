"""The profile cache: keyed by what changes a profile, shared across processes, never a crash."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

from pytest_mlestimate.cache import ProfileCache, default_cache_path, profile_key
from pytest_mlestimate.profile import Profile
from pytest_mlestimate.scenario import Scenario

BASE: dict[str, Any] = {
    "task_type": "detection",
    "architecture": "pytest_mlestimate.tiny:tiny_detector",
    "dataset_size": 100,
    "batch_size": 2,
    "image_size": [64, 64],
    "device": "cpu",
}


def scenario(**changes: Any) -> Scenario:
    return Scenario.model_validate({**BASE, **changes})


def a_profile(step: float = 0.5) -> Profile:
    return Profile(device="cpu", device_name="cpu", step_times=[step, step])


def test_key_ignores_what_only_scales_and_follows_what_changes_the_profile() -> None:
    key = profile_key(scenario())
    assert key == profile_key(scenario(dataset_size=10**6, epochs=100))
    assert key != profile_key(scenario(batch_size=4))
    assert key != profile_key(scenario(image_size=[64, 96]))
    assert key != profile_key(scenario(amp="bf16"))


def test_key_follows_the_weights_file_content(tmp_path: Path) -> None:
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"one")
    first = profile_key(scenario(weights_path=str(weights)))
    weights.write_bytes(b"two")
    assert profile_key(scenario(weights_path=str(weights))) != first


def test_cache_directory_honours_xdg_cache_home(monkeypatch: Any, tmp_path: Path) -> None:
    monkeypatch.delenv("MLESTIMATE_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_path() == tmp_path / "pytest-mlestimate" / "profiles.sqlite3"


def test_round_trip_and_overwrite(tmp_path: Path) -> None:
    cache = ProfileCache(tmp_path / "p.sqlite3")
    assert cache.get("k") is None
    cache.put("k", a_profile(0.5))
    cache.put("k", a_profile(0.7))
    found = cache.get("k")
    assert found is not None and found.step_times == [0.7, 0.7]


def test_a_corrupt_database_is_set_aside_and_the_cache_keeps_working(tmp_path: Path) -> None:
    path = tmp_path / "p.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    cache = ProfileCache(path)
    assert cache.get("k") is None
    assert cache.problem is not None and "unreadable" in cache.problem
    cache.put("k", a_profile())
    assert ProfileCache(path).get("k") is not None
    assert any(p.name.startswith("p.sqlite3.corrupt-") for p in tmp_path.iterdir())


def test_a_foreign_entry_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "p.sqlite3"
    cache = ProfileCache(path)
    cache.put("k", a_profile())
    with sqlite3.connect(path) as connection:
        connection.execute("UPDATE profiles SET profile = ? WHERE key = 'k'", ('{"something": "else"}',))
        connection.execute("INSERT INTO profiles VALUES ('j', 0, 'not json')")
    assert cache.get("k") is None
    assert cache.get("j") is None


WRITER = """
import sys
from pytest_mlestimate.cache import ProfileCache
from pytest_mlestimate.profile import Profile
cache = ProfileCache(__import__("pathlib").Path(sys.argv[1]))
me = int(sys.argv[2])
for i in range(60):
    cache.put(f"k{i % 7}", Profile(device="cpu", device_name="cpu", step_times=[float(me), float(i)]))
    found = cache.get(f"k{(i + me) % 7}")
    assert found is None or len(found.step_times) == 2, found
print("ok")
"""


def test_concurrent_processes_share_one_cache_without_errors(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite3"
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(n)], stdout=subprocess.PIPE, text=True)
        for n in range(4)
    ]
    outputs = [w.communicate(timeout=120)[0] for w in writers]
    assert [w.returncode for w in writers] == [0, 0, 0, 0]
    assert all(o.strip() == "ok" for o in outputs)
    cache = ProfileCache(path)
    assert all(cache.get(f"k{i}") is not None for i in range(7))
