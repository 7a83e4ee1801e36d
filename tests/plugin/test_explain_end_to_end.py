"""The bar: a baseline saved with a narrow head, the head made wider, and every face of the failure names that
head first. Real measurements in child processes, no cache."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.plugin.conftest import RunResult, by_name, scenario_file
from tests.wide_head import NARROW, WIDE, model_source

SCHEMA_FILE = Path(__file__).parents[2] / "pytest_mlestimate" / "report.schema.json"
HEAD = "cls_head"
HEADED = {"name": "headed", "architecture": "headed:detector", "num_classes": 2, "image_size": [128, 128]}

EXPLANATION_SCHEMA: dict[str, Any] = {
    "type": "array",
    "description": "the modules behind each failed figure: those that grew most against the baseline (the median "
    "of its runs against this run's), or without a baseline the largest shares; the largest first, then the whole "
    "model's parameters, gradients and optimizer state (pseudo)",
    "items": {
        "type": "object",
        "required": ["metric", "module", "pseudo", "figure", "unit", "baseline", "now", "growth", "share", "whole"],
        "additionalProperties": False,
        "properties": {
            "metric": {"$ref": "#/$defs/metric"},
            "module": {"type": "string", "description": "the part's path in the model, or a pseudo-part's name"},
            "pseudo": {"type": "boolean", "description": "parameters, gradients or optimizer state of the whole model"},
            "figure": {"type": "string", "description": "what was read: activations, forward, backward, ..."},
            "unit": {"enum": ["bytes", "seconds"]},
            "baseline": {"$ref": "#/$defs/number_or_null"},
            "now": {"type": "number"},
            "growth": {"$ref": "#/$defs/number_or_null"},
            "share": {"$ref": "#/$defs/number_or_null"},
            "whole": {"enum": ["peak", "step", "inference batch", None]},
        },
    },
}


def schema() -> dict[str, Any]:
    """The report's schema, with the explanation's fragment where the file does not have it yet."""
    found = json.loads(SCHEMA_FILE.read_text())
    found["$defs"]["scenario_entry"]["properties"].setdefault("explanation", EXPLANATION_SCHEMA)
    return found


def set_width(folder: Path, width: int) -> None:
    (folder / "headed.py").write_text(model_source(width))
    shutil.rmtree(folder / "__pycache__", ignore_errors=True)


def first_named(line: str) -> str:
    """``peak_ram_memory grew most in: cls_head activations +64.00 MiB (...), ...`` -> ``cls_head``."""
    return line.split(": ", 1)[1].split()[0]


def test_a_wider_head_is_named_first_in_every_face_of_the_failure(
    pytester: pytest.Pytester, run_scenarios: Callable[..., RunResult], monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.syspathinsert()
    set_width(pytester.path, NARROW)
    pytester.makefile(".yaml", scenarios=scenario_file(HEADED))
    saved, _ = run_scenarios(
        "--mlestimate-no-cache", "--mlestimate-save-baseline", "baseline", "--mlestimate-baseline-runs", "2"
    )
    assert saved.ret == 0, saved.stdout.str()
    stored = json.loads((pytester.path / "baseline" / "scenarios" / "headed.json").read_text())
    assert all(HEAD in run["breakdown"]["parts"] for run in stored["runs"])

    set_width(pytester.path, WIDE)
    summary = pytester.path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    wider, report = run_scenarios(
        "--mlestimate-no-cache", "--mlestimate-compare", "baseline", "--mlestimate-junitxml", "junit.xml"
    )
    out = wider.stdout.str()
    assert wider.ret == 1, out

    record = by_name(report)["headed"]
    failed = {b["metric"] for b in record["budgets"] if b["passed"] is False}
    assert "peak_ram_memory" in failed, out
    jsonschema.validate(report, schema())
    explained = record["explanation"]
    assert explained[0]["module"] == HEAD and explained[0]["metric"] == "peak_ram_memory"
    for metric in {e["metric"] for e in explained}:
        modules = [e for e in explained if e["metric"] == metric and not e["pseudo"]]
        assert not modules or modules[0]["module"] == HEAD, modules
    assert explained[0]["growth"] > 2**20 and explained[0]["baseline"] < explained[0]["now"]
    assert {e["module"] for e in explained if e["metric"] == "peak_ram_memory" and e["pseudo"]} >= {"parameters"}

    lines = [line.strip() for line in out.splitlines() if "grew most in: " in line and "::error" not in line]
    terminal = [line for line in lines if not line.startswith("failed headed: ")]  # the failure's own section
    assert terminal and terminal[0].startswith("peak_ram_memory grew most in: "), out
    assert all(first_named(line) == HEAD for line in terminal), terminal
    summary_line = [line for line in lines if line.startswith("failed headed: ")]  # under the summary table
    assert summary_line and summary_line[0].startswith(f"failed headed: peak_ram_memory grew most in: {HEAD} "), out

    case = ET.parse(pytester.path / "junit.xml").getroot().find(".//testcase[@name='headed']")
    assert case is not None
    failure = case.find("failure")
    assert failure is not None
    assert f"peak_ram_memory grew most in: {HEAD} activations +" in failure.get("message", "")
    assert f"  peak_ram_memory grew most in: {HEAD} activations +" in (failure.text or "")

    text = summary.read_text()
    assert f"  peak_ram_memory grew most in: {HEAD} activations +" in text
    annotation = next(line for line in out.splitlines() if line.startswith("::error"))
    assert f"peak_ram_memory grew most in: {HEAD} activations +" in annotation
