"""The stores behind one boundary: the run history's schema migrated version by version, and the baseline folder."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from bench.history_power import REGIMES, environment, record_of, report_of, sessions
from pytest_mlestimate.stores import migrations, run_history
from pytest_mlestimate.stores.migrations import Migration
from pytest_mlestimate.stores.run_history import HistoryError, scenarios
from pytest_mlestimate.verdicts import baseline
from pytest_mlestimate.verdicts.history_recording import record_report
from pytest_mlestimate.verdicts.regression import Run

NOTE = Migration(2, "a note per run", "ALTER TABLE runs ADD COLUMN note TEXT")


def _recorded(path: Path, seed: int) -> None:
    env = environment(REGIMES["cpu"])
    commit, runs = sessions(seed, REGIMES["cpu"], count=1)[0]
    record_report(path, report_of([record_of(runs, **env)], env), commit, "main")


def _versions(path: Path) -> list[int]:
    with sqlite3.connect(path) as connection:
        return [row[0] for row in connection.execute("SELECT version FROM schema_version ORDER BY version")]


def test_a_history_of_an_earlier_format_is_migrated_when_next_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "history.sqlite3"
    _recorded(path, 1)
    assert _versions(path) == [1]
    monkeypatch.setattr(run_history, "MIGRATIONS", (*run_history.MIGRATIONS, NOTE))
    monkeypatch.setattr(run_history, "HISTORY_FORMAT", 2)
    with pytest.raises(HistoryError, match="has format 1; record a run with this version to migrate it to format 2"):
        scenarios(path)  # reading never writes: the file is not migrated by a read
    _recorded(path, 2)
    assert _versions(path) == [1, 2]
    with sqlite3.connect(path) as connection:
        assert [row[1] for row in connection.execute("PRAGMA table_info(runs)")][-1] == "note"
    assert scenarios(path)[0].sessions == 2  # the run from before the migration is still there


def test_a_history_of_a_later_format_is_refused_not_rewritten(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    _recorded(path, 3)
    with sqlite3.connect(path) as connection:
        connection.execute("INSERT INTO schema_version VALUES (2, 'a later version')")
    before = path.read_bytes()
    with pytest.raises(HistoryError, match="has format 2; this version of pytest-mlestimate reads format 1"):
        _recorded(path, 4)
    assert path.read_bytes() == before


def test_migrations_are_numbered_without_gaps() -> None:
    migrations.check((Migration(1, "a", "SELECT 1"), NOTE))
    with pytest.raises(ValueError, match=r"numbered 1, 2, 3 ... in order, got \[1, 3\]"):
        migrations.check((Migration(1, "a", "SELECT 1"), Migration(3, "c", "SELECT 1")))


class _MemoryBaselines:
    """Another store behind the baseline protocol: documents in a dict, as a server database would hold them."""

    def __init__(self) -> None:
        self.documents: dict[Path, dict[str, Any]] = {}

    def path_of(self, file: str, name: str) -> Path:
        return Path("memory") / file / name

    def save(self, file: str, name: str, document: Mapping[str, Any]) -> Path:
        self.documents[self.path_of(file, name)] = json.loads(json.dumps({"format": 2, **document}))
        return self.path_of(file, name)

    def load(self, path: Path) -> dict[str, Any]:
        if path not in self.documents:
            raise FileNotFoundError(path)
        return self.documents[path]

    def saved(self) -> Iterator[Path]:
        return iter(sorted(self.documents))


def test_the_baseline_verdict_runs_on_any_store_behind_the_protocol(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    memory = _MemoryBaselines()
    monkeypatch.setattr(baseline, "baseline_store_at", lambda _location: memory)
    env = environment(REGIMES["cpu"])
    base = [run for _, runs in sessions(5, REGIMES["cpu"], count=3) for run in runs]
    saved = baseline.save_baseline(tmp_path, "s.yaml", "tiny", {"batch_size": 2}, env, base)
    assert saved == Path("memory/s.yaml/tiny") and not any(tmp_path.iterdir())  # nothing written to the folder
    slower = [Run({k: v * 3 if v else v for k, v in run.metrics.items()}, run.samples) for run in base[:2]]
    judged = baseline.compare(tmp_path, "s.yaml", "tiny", {"batch_size": 2}, env, slower, {})
    assert not judged.missing and any(check.passed is False for check in judged.checks)
    assert baseline.compare(tmp_path, "s.yaml", "other", {"batch_size": 2}, env, base, {}).missing
