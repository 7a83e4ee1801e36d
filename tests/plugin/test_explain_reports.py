"""The modules behind a failure, kept in the baseline and shown in every face of the failure: the failed test's
table, the JSON record, JUnit, the GitHub summary and annotations, the terminal summary and ``mlestimate
compare``."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from pytest_mlestimate.commands.compare import compare_paths
from pytest_mlestimate.reports import github, terminal
from pytest_mlestimate.reports.junit_report import write_junit
from pytest_mlestimate.reports.record import new_record
from pytest_mlestimate.stores.baseline_folder import BASELINE_FORMAT
from pytest_mlestimate.verdicts.baseline import compare, read_baseline, save_baseline
from pytest_mlestimate.verdicts.budgets import Check
from pytest_mlestimate.verdicts.regression import Run
from pytest_mlestimate.verdicts.verdict import Verdict
from tests.engine.test_explain import MiB, figures
from tests.plugin.test_baseline import ENV, SCENARIO

FILE, NAME = "scenarios/gpu.yaml", "frcnn b4"


def measured(ram: float, head_activations: int = 10 * MiB, parameters: int = 4 * MiB, **more: Any) -> Run:
    return Run(
        {"peak_ram_memory": ram, "forward_pass": 0.5, **more},
        {"forward_pass": [0.49, 0.5, 0.51]},
        breakdown=figures(head_activations=head_activations, parameters=parameters),
    )


NARROW = [measured(1000 * MiB), measured(1001 * MiB), measured(999 * MiB)]
WIDER = measured(1200 * MiB, head_activations=200 * MiB, parameters=8 * MiB)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    save_baseline(tmp_path, FILE, NAME, SCENARIO, ENV, NARROW)
    return tmp_path


def test_the_baseline_keeps_each_runs_module_figures_in_the_same_format(root: Path) -> None:
    stored = json.loads((root / "scenarios" / "gpu" / "frcnn%20b4.json").read_text())
    assert stored["format"] == BASELINE_FORMAT == 2
    first = stored["runs"][0]["breakdown"]
    assert first["parts"]["roi_heads"] == {
        "forward_s": 0.1,
        "backward_s": 0.2,
        "activations_bytes": 10 * MiB,
        "forward_peak_bytes": None,
        "inference_s": 0.05,
    }
    assert first["memory"] == {
        "whole": "peak_ram_memory",
        "whole_bytes": 1000 * MiB,
        "parameters": 4 * MiB,
        "gradients": 4 * MiB,
        "optimizer_state": 4 * MiB,
        "activations": 61 * MiB,
    }
    assert [run.breakdown for run in read_baseline(root / "scenarios" / "gpu" / "frcnn%20b4.json").runs] == [
        run.breakdown for run in NARROW
    ]


def explained_verdict(root: Path, *runs: Run) -> Verdict:
    comparison = compare(root, FILE, NAME, SCENARIO, ENV, list(runs), {})
    verdict = Verdict(NAME, f"{FILE}:3", checks=comparison.checks, runs=list(runs))
    verdict.explain(comparison.baseline_runs, training=True)
    return verdict


def test_a_regression_names_the_module_that_grew_first_under_the_table(root: Path) -> None:
    verdict = explained_verdict(root, WIDER)
    assert [c.metric for c in verdict.failed] == ["peak_ram_memory"]
    lines = verdict.render().splitlines()
    at = lines.index("module by module (the median of the baseline's 3 runs against 1 run now):")
    assert lines[at - 1].startswith("forward_pass ")  # after the table
    assert lines[at + 1] == (
        "  peak_ram_memory grew most in: roi_heads activations +190.00 MiB (10.00 MiB -> 200.00 MiB); the whole "
        "model's parameters +4.00 MiB (4.00 MiB -> 8.00 MiB), gradients +4.00 MiB (4.00 MiB -> 8.00 MiB), optimizer "
        "state +4.00 MiB (4.00 MiB -> 8.00 MiB)"
    )


def test_an_older_baseline_without_module_figures_still_compares_and_names_the_largest(tmp_path: Path) -> None:
    save_baseline(tmp_path, FILE, NAME, SCENARIO, ENV, NARROW)
    path = tmp_path / "scenarios" / "gpu" / "frcnn%20b4.json"
    stored = json.loads(path.read_text())
    for run in stored["runs"]:
        del run["breakdown"]  # as saved before runs kept it
    path.write_text(json.dumps(stored))
    verdict = explained_verdict(tmp_path, WIDER)
    assert [c.metric for c in verdict.failed] == ["peak_ram_memory"]
    assert verdict.explanation.lines()[:2] == [
        "module by module (the baseline keeps no per-module figures: saved before it kept them):",
        "  peak_ram_memory largest: roi_heads 20 % of the peak (activations 200.00 MiB), backbone.body 5 % of the "
        "peak (activations 50.00 MiB), rpn 0 % of the peak (activations 1.00 MiB); the whole model's parameters 1 % "
        "of the peak (8.00 MiB), gradients 1 % of the peak (8.00 MiB), optimizer state 1 % of the peak (8.00 MiB)",
    ]


def test_a_broken_budget_without_a_baseline_names_the_largest_share() -> None:
    verdict = Verdict(NAME, f"{FILE}:3", checks=[Check("forward_pass", "max", 0.1, 0.5)], runs=[WIDER])
    verdict.explain((), training=True)
    assert verdict.explanation.lines() == [
        "module by module (no baseline to compare with):",
        "  forward_pass largest: backbone.body 21 % of the step (forward 210.0 ms), roi_heads 10 % of the step "
        "(forward 100.0 ms), rpn 2 % of the step (forward 20.0 ms)",
    ]


def test_a_passing_verdict_explains_nothing(root: Path) -> None:
    verdict = explained_verdict(root, measured(1000 * MiB))
    assert verdict.passed and not verdict.explanation
    assert "module by module" not in verdict.render()


def failed_record(root: Path) -> dict[str, Any]:
    verdict = explained_verdict(root, WIDER)
    record = new_record(NAME, FILE, 3, f"{FILE}::{NAME}")
    record.update(
        outcome="failed",
        message=verdict.summary(),
        budgets=[c.to_dict() for c in verdict.checks],
        explanation=verdict.explanation.to_dicts(),
    )
    return record


def test_the_record_carries_the_explanation_beside_its_documented_keys(root: Path) -> None:
    assert new_record(NAME, FILE, 3, "x")["explanation"] == []
    record = failed_record(root)
    first = record["explanation"][0]
    assert first == {
        "metric": "peak_ram_memory",
        "module": "roi_heads",
        "pseudo": False,
        "figure": "activations",
        "unit": "bytes",
        "baseline": 10 * MiB,
        "now": 200 * MiB,
        "growth": 190 * MiB,
        "share": pytest.approx(0.2),
        "whole": "peak",
    }
    assert "roi_heads" not in record["message"]  # the message is the verdict's line, as before
    json.dumps(record)


def test_junit_names_the_module_in_the_failures_message_and_text(root: Path, tmp_path: Path) -> None:
    write_junit(tmp_path / "junit.xml", [failed_record(root)])
    failure = ET.parse(tmp_path / "junit.xml").getroot().find(".//testcase/failure")
    assert failure is not None
    assert failure.get("message", "").endswith(
        "; peak_ram_memory grew most in: roi_heads activations +190.00 MiB (10.00 MiB -> 200.00 MiB)"
    )
    assert "\n  peak_ram_memory grew most in: roi_heads activations +190.00 MiB" in (failure.text or "")


def test_the_github_summary_and_annotation_name_the_module(root: Path) -> None:
    record = failed_record(root)
    summary = github.step_summary([record])
    assert "  peak_ram_memory grew most in: roi_heads activations +190.00 MiB" in summary
    (annotation,) = github.annotations([record])
    assert annotation.endswith(
        "; peak_ram_memory grew most in: roi_heads activations +190.00 MiB (10.00 MiB -> 200.00 MiB)"
    )


def test_the_terminal_summary_has_a_line_per_explained_failure(root: Path) -> None:
    passed = {**new_record("fine", FILE, 4, "y"), "outcome": "passed"}
    assert terminal.explanations([failed_record(root), passed]) == [
        f"failed {NAME}: peak_ram_memory grew most in: roi_heads activations +190.00 MiB (10.00 MiB -> 200.00 MiB)"
    ]


def test_mlestimate_compare_names_the_module_too(root: Path, tmp_path: Path) -> None:
    new = tmp_path / "new"
    save_baseline(new, FILE, NAME, SCENARIO, ENV, [WIDER, WIDER])
    outcome = compare_paths(root, new)
    assert outcome.exit_code == 1
    assert "  peak_ram_memory grew most in: roi_heads activations +190.00 MiB" in outcome.render()
