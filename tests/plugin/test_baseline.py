from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pytest_mlestimate.core.metrics import METRIC
from pytest_mlestimate.verdicts.baseline import (
    SavedBaselines,
    anchored,
    baseline_path,
    compare,
    parse_tolerances,
    save_baseline,
)
from pytest_mlestimate.verdicts.budgets import BudgetError
from pytest_mlestimate.verdicts.regression import Run
from tests.plugin.conftest import RunResult, scenario_file

ENV = {
    "device": "cuda:0",
    "gpu": "NVIDIA H100 80GB HBM3",
    "driver": "580.1",
    "cuda": "12.8",
    "torch": "2.11",
    "torchvision": "0.26",
    "cpu": "EPYC",
    "cpus": "16",
    "threads": None,
}
SCENARIO = {"architecture": "fasterrcnn_resnet50_fpn", "batch_size": 4}


def run(scale: float = 1.0, **metrics: float | None) -> Run:
    """A run whose forward samples scatter by about 2 % around 100 ms x ``scale``."""
    forward = [0.1 * scale * f for f in (0.98, 1.0, 1.02, 0.99, 1.01, 1.0)]
    figures = {"peak_gpu_memory": 8e9, "forward_pass": sum(forward) / 6, "peak_gpu_utilization": 80.0, **metrics}
    return Run(figures, {"forward_pass": forward})


BASE = [run(s) for s in (0.98, 1.01, 1.0, 0.99, 1.02)]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    save_baseline(tmp_path, "scenarios/gpu.yaml", "frcnn b4", SCENARIO, ENV, BASE)
    return tmp_path


def judged(root: Path, *runs: Run, env: dict[str, Any] | None = None, tolerances: dict[str, float] | None = None):
    return compare(root, "scenarios/gpu.yaml", "frcnn b4", SCENARIO, env or ENV, list(runs), tolerances or {})


def outcome(comparison: Any) -> dict[str, bool | None]:
    return {check.metric: check.passed for check in comparison.checks}


def test_baseline_is_one_readable_file_per_scenario_with_every_run(root: Path) -> None:
    path = baseline_path(root, "scenarios/gpu.yaml", "frcnn b4")
    assert path == root / "scenarios" / "gpu" / "frcnn%20b4.json"
    stored = json.loads(path.read_text())
    assert len(stored["runs"]) == 5 and len(stored["runs"][0]["samples"]["forward_pass"]) == 6


def test_same_figures_pass(root: Path) -> None:
    result = judged(root, run(1.0))
    assert outcome(result) == {"peak_gpu_memory": True, "forward_pass": True, "peak_gpu_utilization": True}
    assert result.warnings == [] and result.suspects == []


def test_memory_growth_past_tolerance_regresses(root: Path) -> None:
    assert outcome(judged(root, run(peak_gpu_memory=8.5e9)))["peak_gpu_memory"] is False  # +6.25 % > 5 %
    assert (
        outcome(judged(root, run(peak_gpu_memory=8.5e9), tolerances={"peak_gpu_memory": 0.1}))["peak_gpu_memory"]
        is True
    )


def test_a_credible_slowdown_fails_with_its_interval_and_runs(root: Path) -> None:
    result = judged(root, run(1.25))
    (check,) = [c for c in result.checks if c.metric == "forward_pass"]
    assert check.passed is False
    assert check.runs == (5, 1) and check.interval is not None and check.interval[0] > 0
    assert "runs 5:1" in check.summary() and "CI" in check.summary()


def test_a_change_inside_the_noise_between_runs_passes(tmp_path: Path) -> None:
    noisy = [run(s) for s in (0.80, 1.15, 0.95, 1.2, 0.9)]  # the runs scatter by about 15 %
    save_baseline(tmp_path, "scenarios/gpu.yaml", "frcnn b4", SCENARIO, ENV, noisy)
    result = judged(tmp_path, run(1.12))
    assert outcome(result)["forward_pass"] is True


def test_a_change_within_the_tolerance_passes_however_credible(root: Path) -> None:
    assert outcome(judged(root, run(1.015)))["forward_pass"] is True


def test_on_a_gpu_the_tolerance_decides_a_credible_slowdown(root: Path) -> None:
    """A GPU's drift floor (1 %) is below the tolerances: a +8 % slowdown fails at 5 % and passes at 20 %."""
    assert outcome(judged(root, run(1.08), run(1.08)))["forward_pass"] is False
    assert outcome(judged(root, run(1.08), run(1.08), tolerances={"forward_pass": 0.2}))["forward_pass"] is True
    on_cpu = {**ENV, "device": "cpu"}  # inside the CPU's 10 % drift floor
    assert outcome(judged(root, run(1.08), run(1.08), env=on_cpu))["forward_pass"] is not False


def test_idle_gpu_is_a_regression(root: Path) -> None:
    assert outcome(judged(root, run(peak_gpu_utilization=40.0)))["peak_gpu_utilization"] is False


def test_contended_runs_do_not_judge_timings_and_leave_them_inconclusive_not_passed(root: Path) -> None:
    slow = Run(run(1.5).metrics, run(1.5).samples, contended=True)
    result = judged(root, slow)
    (forward,) = [check for check in result.checks if check.metric == "forward_pass"]
    assert forward.passed is None and forward.decision == "inconclusive"
    assert forward.verdict_text() == "INCONCLUSIVE"
    assert any("every new measurement was contended" in w for w in result.warnings)


def test_a_one_run_baseline_leaves_timings_inconclusive_not_passed(root: Path) -> None:
    save_baseline(root, "scenarios/gpu.yaml", "one", SCENARIO, ENV, [run()])
    result = compare(root, "scenarios/gpu.yaml", "one", SCENARIO, ENV, [run(1.01)], {})
    forward = next(check for check in result.checks if check.metric == "forward_pass")
    assert forward.decision == "inconclusive" and forward.passed is None
    assert forward.detectable is not None and forward.detectable > 0  # what such a check could catch
    assert any("holds one run" in w for w in result.warnings)


def test_other_environment_skips_with_what_differs(root: Path) -> None:
    result = judged(root, run(), env=dict(ENV, gpu="NVIDIA A100-SXM4-40GB", torch="2.12", cpus="8"))
    assert result.checks == []
    (warning,) = result.warnings
    assert "environment differs" in warning
    assert "gpu 'NVIDIA H100 80GB HBM3' -> 'NVIDIA A100-SXM4-40GB'" in warning
    assert "torch '2.11' -> '2.12'" in warning
    assert "cpus '16' -> '8'" in warning


def test_changed_scenario_is_not_compared(root: Path) -> None:
    result = compare(root, "scenarios/gpu.yaml", "frcnn b4", dict(SCENARIO, batch_size=8), ENV, [run()], {})
    assert result.checks == [] and "batch_size 4 -> 8" in result.warnings[0]


def test_missing_baseline_is_flagged(tmp_path: Path) -> None:
    result = compare(tmp_path, "scenarios/gpu.yaml", "new", SCENARIO, ENV, [run()], {})
    assert result.missing and result.checks == [] and "no baseline" in result.warnings[0]


def test_an_older_format_says_to_save_again(root: Path) -> None:
    path = baseline_path(root, "scenarios/gpu.yaml", "frcnn b4")
    path.write_text(json.dumps({"format": 1, "metrics": {}}))
    (warning,) = judged(root, run()).warnings
    assert "format 1" in warning and "--mlestimate-save-baseline" in warning


def test_baseline_paths_are_anchored_at_the_project_root(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("")
    scenario = tmp_path / "ci" / "scenarios" / "gpu.yaml"
    scenario.parent.mkdir(parents=True)
    scenario.write_text("")
    assert anchored(scenario) == "ci/scenarios/gpu.yaml"


def test_tolerances_must_be_percentages() -> None:
    assert parse_tolerances({"forward_pass": "20 %"}) == {"forward_pass": pytest.approx(0.2)}
    with pytest.raises(BudgetError, match=r"tolerances.forward_pass: '0.2' is not a quantity"):
        parse_tolerances({"forward_pass": "0.2"})


def saved(path: Path, runs: int = 5) -> dict[str, Any]:
    return {"name": path.stem, "baseline": {"status": "saved", "path": str(path), "runs": runs}}


def test_saved_baselines_say_how_many_what_and_where(tmp_path: Path) -> None:
    folder = tmp_path / "baselines"
    records = [saved(folder / "scenarios" / f) for f in ("gpu/b.json", "cpu/a.json", "cpu/c.json")]
    records.append({"name": "on-gpu", "baseline": None})  # skipped: nothing measured, nothing saved
    lines = SavedBaselines.of(records, folder).lines(start=tmp_path)
    assert lines == [
        "baseline saved: 3 scenarios, 5 runs each, in baselines/scenarios/ (cpu/a.json, cpu/c.json, gpu/b.json)",
        "baseline not saved for 1 scenario (skipped, not measured or did not fit): on-gpu",
    ]


def test_saved_baselines_outside_the_run_folder_are_shown_whole_and_long_lists_cut(tmp_path: Path) -> None:
    folder = tmp_path / "baselines"
    records = [saved(folder / "s" / f"n{i}.json", runs=2 + i % 2) for i in range(8)]
    (line,) = SavedBaselines.of(records, folder).lines(start=tmp_path / "elsewhere")
    assert line == (
        f"baseline saved: 8 scenarios, 2 to 3 runs each, in {folder / 's'}/ "
        "(n0.json, n1.json, n2.json, n3.json, n4.json, n5.json and 2 more)"
    )
    (one,) = SavedBaselines.of(records[:1], folder).lines(start=tmp_path)
    assert one == "baseline saved: 1 scenario, 2 runs, in baselines/s/ (n0.json)"


def test_nothing_saved_is_said(tmp_path: Path) -> None:
    lines = SavedBaselines.of([{"name": "broken", "baseline": None}], tmp_path / "b").lines(start=tmp_path)
    assert lines[0] == "baseline saved: nothing, in b/"


def test_baseline_files_name_their_scenario_and_file(root: Path) -> None:
    stored = json.loads(baseline_path(root, "scenarios/gpu.yaml", "frcnn b4").read_text())
    assert (stored["name"], stored["file"], stored["format"]) == ("frcnn b4", "scenarios/gpu.yaml", 2)


def test_saving_a_baseline_says_what_was_written_where(
    pytester: pytest.Pytester, run_scenarios: Callable[..., RunResult]
) -> None:
    pytester.makefile(".yaml", scenarios=scenario_file({"name": "a"}, {"name": "b"}))
    result, _ = run_scenarios("--mlestimate-save-baseline", "baseline", "--mlestimate-baseline-runs", "1")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["baseline saved: 2 scenarios, 1 run each, in baseline/scenarios/ (a.json, b.json)"])


def test_a_run_that_saves_nothing_says_nothing() -> None:
    assert SavedBaselines.of([{"name": "a", "baseline": None}], None).lines() == []


def test_a_baseline_saved_before_the_breakdown_existed_still_compares(
    pytester: pytest.Pytester, run_scenarios: Callable[..., RunResult]
) -> None:
    pytester.makefile(".yaml", scenarios=scenario_file({"name": "a"}))
    saved, _ = run_scenarios("--mlestimate-save-baseline", "baseline", "--mlestimate-baseline-runs", "1")
    assert saved.ret == 0
    stored = pytester.path / "baseline" / "scenarios" / "a.json"
    document = json.loads(stored.read_text())
    del document["scenario"]["breakdown_depth"]  # as a baseline saved before the field existed
    stored.write_text(json.dumps(document))
    pytester.makefile(".yaml", scenarios=scenario_file({"name": "a", "breakdown_depth": 2}))
    compared, report = run_scenarios("--mlestimate-compare", "baseline")
    record = report["scenarios"][0]
    assert not [w for w in record["warnings"] if w.startswith("baseline not compared")], record["warnings"]
    compared_checks = [check for check in record["budgets"] if check["kind"] == "regression"]
    timings = {c["decision"] for c in compared_checks if METRIC[c["metric"]].noise == "timing"}
    assert timings == {"inconclusive"}  # a one-run baseline cannot judge a timing: neither pass nor fail
    assert compared.ret == (1 if any(c["passed"] is False for c in compared_checks) else 0), compared.stdout.str()


def test_names_that_differ_only_in_other_characters_keep_a_baseline_each(tmp_path: Path) -> None:
    spaced = save_baseline(tmp_path, "s.yaml", "x y", SCENARIO, ENV, BASE)
    joined = save_baseline(tmp_path, "s.yaml", "x_y", SCENARIO, ENV, [run(2.0)])
    assert spaced != joined and {spaced.name, joined.name} == {"x%20y.json", "x_y.json"}
    assert outcome(compare(tmp_path, "s.yaml", "x y", SCENARIO, ENV, [run()], {}))["forward_pass"]
    assert not compare(tmp_path, "s.yaml", "x_y", SCENARIO, ENV, [run()], {}).missing
    long = baseline_path(tmp_path, "s.yaml", "é" * 150)
    assert len(long.name) <= 205 and long != baseline_path(tmp_path, "s.yaml", "é" * 151)


def test_a_baseline_saved_before_names_were_encoded_is_still_found(tmp_path: Path) -> None:
    saved = save_baseline(tmp_path, "s.yaml", "frcnn b4", SCENARIO, ENV, BASE)
    saved.rename(saved.with_name("frcnn_b4.json"))  # where earlier versions saved it
    assert not compare(tmp_path, "s.yaml", "frcnn b4", SCENARIO, ENV, [run()], {}).missing
    assert compare(tmp_path, "s.yaml", "frcnn?b4", SCENARIO, ENV, [run()], {}).missing  # not another name's
