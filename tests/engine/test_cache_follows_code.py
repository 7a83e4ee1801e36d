"""A custom model's cached profile follows its code: an edit to any module that building and running the model
imported measures it again, an edit elsewhere does not."""

from __future__ import annotations

import hashlib
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_mlestimate.api import estimate
from pytest_mlestimate.estimates.estimate import Estimate
from pytest_mlestimate.profiling.profile import Profile
from pytest_mlestimate.profiling.sources import MODIFIED
from pytest_mlestimate.service.store import ProfileStore
from pytest_mlestimate.stores.profile_cache import ProfileCache
from tests.tiny_scenario import TINY

PACKAGE = "edited_models"
FACTORY = """
import time
from pathlib import Path

from edited_models import backbone
from edited_models.backbone import widen
from pytest_mlestimate.tiny import tiny_detector


def build(**kwargs):
    return widen(tiny_detector(**kwargs))


def build_while_saving(**kwargs):
    # the user saves the backbone while its profile runs
    time.sleep(0.05)
    path = Path(backbone.__file__)
    path.write_text(path.read_text() + "# saved while measured\\n")
    return build(**kwargs)
"""
BACKBONE = """
from torch import nn


def widen(model):
    model.extra = nn.Identity()
    return model
"""
EDITED_BACKBONE = BACKBONE.replace("nn.Identity()", "nn.Linear(4, 4)")
"""A real change: 4 x 4 + 4 = 20 more parameters."""


@pytest.fixture
def code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A package of the user's: a factory, the backbone it imports from a second file, and a file it never
    imports; importable here and in the profiling child (which gets this process's import path)."""
    package = tmp_path / "code" / PACKAGE
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "factory.py").write_text(textwrap.dedent(FACTORY))
    (package / "backbone.py").write_text(textwrap.dedent(BACKBONE))
    (package / "unrelated.py").write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path / "code"))
    yield package
    for name in [name for name in sys.modules if name == PACKAGE or name.startswith(f"{PACKAGE}.")]:
        del sys.modules[name]  # an in-process profile imported it here


def scenario(factory: str = "build") -> dict[str, Any]:
    return {**TINY, "architecture": f"{PACKAGE}.factory:{factory}", "device": "cpu", "warmup_iterations": 1,
            "measure_iterations": 2}  # fmt: skip


def kept(architecture: dict[str, Any], **options: Any) -> Estimate:
    """The estimate once the cache holds its profile: one measured while other processes took the CPU (the
    other tests on a 2-core machine) is not kept, so it is measured again."""
    for _attempt in range(4):
        found = estimate(architecture, timeout=120, **options)
        if found.cache["hit"] or found.cache.get("stored"):
            return found
    raise AssertionError(f"no profile of {architecture['architecture']} was kept: {found.profile.warnings}")


def test_editing_a_module_the_factory_imports_measures_again(code: Path) -> None:
    first = kept(scenario())
    assert first.cache["hit"] is False
    assert estimate(scenario(), timeout=120).cache["hit"] is True

    (code / "backbone.py").write_text(textwrap.dedent(EDITED_BACKBONE))
    edited = estimate(scenario(), timeout=120)
    assert edited.cache["hit"] is False, "the profile of the old backbone was replayed"
    assert edited.cache["stale"] == f"{code / 'backbone.py'} changed since the cached profile was measured"
    assert edited.profile.parameter_count == first.profile.parameter_count + 20  # the new code was measured
    again = kept(scenario())
    assert again.profile.parameter_count == edited.profile.parameter_count
    assert estimate(scenario(), timeout=120).cache["hit"] is True


def test_editing_a_file_the_model_never_imported_keeps_the_cached_profile(code: Path) -> None:
    first = kept(scenario())
    recorded = first.profile.sources or {}
    imported = {code / "__init__.py", code / "factory.py", code / "backbone.py"}
    assert imported <= {Path(path) for path in recorded}
    assert str(code / "unrelated.py") not in recorded
    assert all(".venv" not in path and "/pytest_mlestimate/" not in path for path in recorded), recorded
    assert recorded[str(code / "backbone.py")] == hashlib.sha256((code / "backbone.py").read_bytes()).hexdigest()

    (code / "unrelated.py").write_text("VALUE = 2\n")
    assert estimate(scenario(), timeout=120).cache["hit"] is True


def test_a_profile_in_the_callers_process_follows_the_code_the_caller_imported_before(
    code: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``isolate=False`` with the factory imported by the caller first: the backbone is not new to the profile,
    but the factory's module reaches it; once it is edited, this process still holds the old code, which its
    bytecode cache tells (written by default; PYTHONDONTWRITEBYTECODE may be set where the tests run)."""
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    __import__(f"{PACKAGE}.factory")
    first = kept(scenario(), isolate=False)
    assert str(code / "backbone.py") in (first.profile.sources or {})
    assert str(code / "unrelated.py") not in (first.profile.sources or {})
    assert estimate(scenario(), isolate=False).cache["hit"] is True

    (code / "backbone.py").write_text(textwrap.dedent(EDITED_BACKBONE))
    edited = estimate(scenario(), isolate=False)
    assert edited.cache["hit"] is False
    assert "backbone.py changed" in edited.cache["stale"]
    # this process still runs the backbone it imported: the profile says so and cannot pass for the new code's
    assert edited.profile.parameter_count == first.profile.parameter_count
    assert (edited.profile.sources or {})[str(code / "backbone.py")] == MODIFIED
    assert any("backbone.py changed after the model's code was imported" in w for w in edited.profile.warnings)
    fresh = estimate(scenario(), timeout=120)
    assert fresh.cache["hit"] is False and fresh.profile.parameter_count == first.profile.parameter_count + 20


def test_a_file_saved_while_its_model_was_measured_is_measured_again(code: Path) -> None:
    first = kept(scenario("build_while_saving"))
    assert (first.profile.sources or {})[str(code / "backbone.py")] == MODIFIED
    assert any("backbone.py changed after the model's code was imported" in w for w in first.profile.warnings)
    second = estimate(scenario("build_while_saving"), timeout=120)
    assert second.cache["hit"] is False and "backbone.py changed" in second.cache["stale"]


def _measured_with(source: Path) -> Profile:
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    return Profile(device="cpu", device_name="cpu", step_times=[0.5, 0.5], sources={str(source): digest})


def test_the_cache_answers_a_profile_only_while_its_files_are_unchanged(tmp_path: Path) -> None:
    source = tmp_path / "head.py"
    source.write_text("LAYERS = 2\n")
    cache = ProfileCache(tmp_path / "p.sqlite3")
    cache.put("k", _measured_with(source))
    assert cache.get("k") is not None and cache.stale is None
    source.write_text("LAYERS = 3\n")
    assert cache.get("k") is None
    assert cache.stale == f"{source} changed since the cached profile was measured"
    source.unlink()
    assert cache.get("k") is None
    assert cache.stale == f"{source} is gone since the cached profile was measured"


def test_the_service_forgets_a_remembered_profile_of_edited_code(tmp_path: Path) -> None:
    source = tmp_path / "head.py"
    source.write_text("LAYERS = 2\n")
    store = ProfileStore(tmp_path / "p.sqlite3")
    store.remember("k", _measured_with(source))
    assert store.recent("k") is not None
    source.write_text("LAYERS = 3\n")
    assert store.recent("k") is None
    assert store.lookup("k") is None
