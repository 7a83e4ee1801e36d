"""A cache that could not be used is said on the terminal without -v: it concerns every later run."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.plugin.conftest import scenario_file


def test_a_corrupt_cache_is_set_aside_and_said_on_the_terminal(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, shared_cache: Path
) -> None:
    """``shared_cache`` is not read: asking for it imports the engine before the in-process run."""
    cache = pytester.path / "cache"
    cache.mkdir()
    (cache / "profiles.sqlite3").write_bytes(b"whatever this was, it is not a database" * 100)
    monkeypatch.setenv("MLESTIMATE_CACHE_DIR", str(cache))
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    pytester.makefile(".yaml", scenarios=scenario_file({"name": "tiny"}))

    result = pytester.runpytest_inprocess("--mlestimate", "-p", "no:cacheprovider")

    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["warning: tiny: cache */profiles.sqlite3 was corrupt (*); moved to *"])
    assert any(".corrupt-" in p.name for p in cache.iterdir())
