"""The real path: scenarios measured in child processes (no cache), one of them crashing."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.plugin.conftest import TINY, RunResult, by_name, scenario_file

CRASHING_MODEL = """
def broken_model(**kwargs):
    raise RuntimeError("checkpoint format not understood")
"""


def test_scenarios_run_in_child_processes_and_a_crash_is_an_error(
    pytester: pytest.Pytester, run_scenarios: Callable[..., RunResult]
) -> None:
    pytester.makepyfile(crashing=CRASHING_MODEL)
    pytester.syspathinsert()
    pytester.makefile(
        ".yaml",
        scenarios=scenario_file(
            {"name": "crashes", "architecture": "crashing:broken_model"},
            {"name": "measured", "budgets": {"peak_ram_memory": "64 GiB"}},
        ),
    )
    result, report = run_scenarios("--mlestimate-no-cache")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        ["scenarios.yaml:3: scenario 'crashes' could not be measured: *checkpoint format not understood*"]
    )
    assert "Traceback" not in result.stdout.str()
    entries = by_name(report)
    assert entries["crashes"]["outcome"] == "error"
    measured = entries["measured"]
    assert measured["outcome"] == "passed"
    assert measured["details"]["cache"] == {"hit": False}
    assert measured["resource"]["Peak RAM Memory"] > 0
    assert measured["scenario"]["batch_size"] == TINY["batch_size"]
