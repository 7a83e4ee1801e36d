"""The profile cache: keyed by what changes a profile, shared across processes, never a crash."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from pytest_mlestimate.profiling.profile import Profile
from pytest_mlestimate.scenarios.scenario import Scenario
from pytest_mlestimate.stores.profile_cache import ProfileCache, default_cache_path, profile_key

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
    assert cache.problem is not None and "corrupt" in cache.problem
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
from pytest_mlestimate.stores.profile_cache import ProfileCache
from pytest_mlestimate.profiling.profile import Profile
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


def _filled(path: Path, count: int) -> ProfileCache:
    cache = ProfileCache(path)
    for i in range(count):
        cache.put(f"k{i}", a_profile(float(i)))
    return cache


def test_a_locked_database_is_bypassed_and_left_in_place(tmp_path: Path) -> None:
    """Another process holding the write lock past the wait is not corruption: the live database (and the
    profiles in it) stays where it is; readers go on, and the writer stores nothing and says so."""
    path = tmp_path / "p.sqlite3"
    _filled(path, 50)
    holder = sqlite3.connect(path)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        cache = ProfileCache(path, wait=0.2)
        assert cache.get("k1") is not None
        assert cache.put("new", a_profile()) is False
        assert cache.problem is not None and "locked" in cache.problem and "left as it is" in cache.problem
    finally:
        holder.rollback()
        holder.close()
    assert sorted(p.name for p in tmp_path.iterdir() if "corrupt" in p.name) == []
    reopened = ProfileCache(path)
    assert all(reopened.get(f"k{i}") is not None for i in range(50))


FILL_PAST_LIMIT = """
import resource, signal, sys
from pathlib import Path
from pytest_mlestimate.stores.profile_cache import ProfileCache
from pytest_mlestimate.profiling.profile import Profile
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, as on a full disk
path = Path(sys.argv[1])
size = sum(p.stat().st_size for p in path.parent.iterdir())
resource.setrlimit(resource.RLIMIT_FSIZE, (size + 8192, size + 8192))
cache = ProfileCache(path)
stored = cache.put("big", Profile(device="cpu", device_name="cpu", step_times=[0.5] * 200_000))
print(stored, cache.problem)
"""


def test_a_full_disk_leaves_the_database_in_place(tmp_path: Path) -> None:
    path = tmp_path / "p.sqlite3"
    _filled(path, 20)
    done = subprocess.run(
        [sys.executable, "-c", FILL_PAST_LIMIT, str(path)], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.startswith("False cache "), done.stdout + done.stderr
    assert "left as it is" in done.stdout
    assert not any("corrupt" in p.name for p in tmp_path.iterdir())
    cache = ProfileCache(path)
    assert all(cache.get(f"k{i}") is not None for i in range(20))


def test_weights_are_hashed_in_chunks_and_remembered_by_path_size_and_time(tmp_path: Path) -> None:
    weights = tmp_path / "w.pt"
    weights.write_bytes(os.urandom(1 << 20) * 40)  # 40 MiB
    tracemalloc.start()
    first = profile_key(scenario(weights_path=str(weights)))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 4 << 20, f"hashing a 40 MiB file held {peak / 2**20:.1f} MiB"
    stat = weights.stat()
    with weights.open("r+b") as handle:  # same size and time, new content: the remembered digest answers
        handle.write(b"changed")
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert profile_key(scenario(weights_path=str(weights))) == first
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touched: read again
    assert profile_key(scenario(weights_path=str(weights))) != first


def test_the_key_of_a_custom_model_never_imports_its_package(tmp_path: Path, monkeypatch: Any) -> None:
    """A package whose ``__init__`` fails (or does anything) is not run in the process that only wants a key;
    the model's own file is still read, so editing it changes the key."""
    package = tmp_path / "explodes_on_import"
    package.mkdir()
    (package / "__init__.py").write_text("raise RuntimeError('imported in the wrong process')\n")
    (package / "models.py").write_text("def build():\n    return None\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    custom = scenario(architecture="explodes_on_import.models:build")
    first = profile_key(custom)
    assert "explodes_on_import" not in sys.modules
    (package / "models.py").write_text("def build():\n    return 1\n")
    assert profile_key(custom) != first


@pytest.mark.parametrize("name", ["no_such_package.models", "pytest_mlestimate.no_such_module"])
def test_a_custom_model_that_cannot_be_found_still_has_a_key(name: str) -> None:
    assert len(profile_key(scenario(architecture=f"{name}:build"))) == 64
