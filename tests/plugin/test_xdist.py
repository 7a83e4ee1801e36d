"""Under pytest-xdist: workers pinned to their own GPU before conftests load, one merged report."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.plugin.conftest import scenario_file

PIN_PROBE = """
import os
from pathlib import Path

worker = os.environ.get("PYTEST_XDIST_WORKER", "controller")
(Path(__file__).parent / f"pin-{worker}.txt").write_text(os.environ.get("CUDA_VISIBLE_DEVICES", "unset"))
"""


def test_two_workers_one_merged_report_and_pinned_gpus(
    pytester: pytest.Pytester, cached: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    pytester.makeconftest(PIN_PROBE)
    names = ["a", "b", "c", "d"]
    pytester.makefile(".yaml", first=scenario_file(*({"name": n} for n in names)))
    pytester.makefile(
        ".yaml",
        second=scenario_file({"name": "on-gpu", "device": "cuda"}, {"name": "invalid", "batch_size": 0}),
    )
    result = pytester.runpytest_subprocess(
        "-n", "2", "--mlestimate", "--mlestimate-json", "report.json", "--mlestimate-junitxml", "junit.xml"
    )
    result.assert_outcomes(passed=4, skipped=1, errors=1)
    report = json.loads((pytester.path / "report.json").read_text())
    outcomes = {(entry["file"], entry["name"]): entry["outcome"] for entry in report["scenarios"]}
    assert outcomes == {
        **{("first.yaml", n): "passed" for n in names},
        ("second.yaml", "on-gpu"): "skipped",
        ("second.yaml", "invalid"): "error",
    }
    cases = [case.get("name") for case in ET.parse(pytester.path / "junit.xml").getroot().iter("testcase")]
    assert sorted(cases) == sorted([*names, "on-gpu", "invalid"])
    pins = {path.stem: path.read_text() for path in pytester.path.glob("pin-gw*.txt")}
    assert pins == {"pin-gw0": "3", "pin-gw1": "5"}
