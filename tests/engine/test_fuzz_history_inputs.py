"""mlestimate history over a history whose rows another program or a crash damaged: any value in any JSON
column or figure gives an exit code and a message, never a traceback."""

from __future__ import annotations

import json
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.history_power import REGIMES, environment, record_of, report_of, sessions
from pytest_mlestimate.commands.cli import main
from pytest_mlestimate.verdicts.history_recording import record_report

VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=6), st.one_of(st.integers(), st.text(max_size=6)), max_size=3),
)
COLUMNS = [("runs", "environment"), ("scenarios", "environment"), ("scenarios", "scenario"), ("measurements", "run")]


def _history(folder: Path) -> Path:
    path = folder / "history.sqlite3"
    env = environment(REGIMES["cpu"])
    for commit, runs in sessions(7, REGIMES["cpu"], count=3):
        record_report(path, report_of([record_of(runs, **env)], env), commit, "main")
    return path


@given(column=st.sampled_from(COLUMNS), value=VALUES, raw=st.booleans(), figure=st.one_of(st.none(), VALUES))
@settings(
    max_examples=80,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
def test_a_damaged_history_gets_an_exit_code_never_a_traceback(
    column: tuple[str, str], value: Any, raw: bool, figure: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = _history(Path(folder))
        table, field = column
        stored = value if raw and isinstance(value, str) else json.dumps(value, default=str)
        with sqlite3.connect(path) as connection:
            connection.execute(
                f"UPDATE {table} SET {field} = ? WHERE rowid = (SELECT max(rowid) FROM {table})", (stored,)
            )
            if figure is not None:
                connection.execute("UPDATE figures SET value = ? WHERE rowid = 1", (json.dumps(figure, default=str),))
        out = Path(folder) / "bench.json"
        for args in (["history", str(path)], ["history", str(path), "--export-benchmark-action", str(out)]):
            code = main(args)
            err = capsys.readouterr().err
            assert code in (0, 1, 2), code
            assert "Traceback" not in err
            if code == 2:
                assert err.strip()
