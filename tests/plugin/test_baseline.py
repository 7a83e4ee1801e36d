from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pytest_mlestimate.plugin.baseline import baseline_path, compare, parse_tolerances, save_baseline
from pytest_mlestimate.plugin.budgets import BudgetError

ENV = {"gpu": "NVIDIA H100 80GB HBM3", "driver": "580.1", "cuda": "12.8", "torch": "2.11", "torchvision": "0.26"}


def figures(**metrics: float | None) -> dict[str, Any]:
    return {
        "scenario": {"architecture": "fasterrcnn_resnet50_fpn", "batch_size": 4},
        "environment": dict(ENV, cpu="EPYC"),
        "metrics": {"peak_gpu_memory": 8e9, "forward_pass": 0.100, "peak_gpu_utilization": 80.0, **metrics},
        "spread": {"forward_pass": 0.002},
    }


@pytest.fixture
def root(tmp_path: Path) -> Path:
    save_baseline(tmp_path, "scenarios/gpu.yaml", "frcnn b4", figures())
    return tmp_path


def outcome(comparison: Any) -> dict[str, bool | None]:
    return {check.metric: check.passed for check in comparison.checks}


def test_baseline_is_one_readable_file_per_scenario(root: Path) -> None:
    assert baseline_path(root, "scenarios/gpu.yaml", "frcnn b4") == root / "scenarios" / "gpu" / "frcnn_b4.json"
    assert (root / "scenarios" / "gpu" / "frcnn_b4.json").exists()


def test_same_figures_pass(root: Path) -> None:
    result = compare(root, "scenarios/gpu.yaml", "frcnn b4", figures(), {})
    assert outcome(result) == {"peak_gpu_memory": True, "forward_pass": True, "peak_gpu_utilization": True}
    assert result.warnings == []


def test_memory_growth_past_tolerance_regresses(root: Path) -> None:
    result = compare(root, "scenarios/gpu.yaml", "frcnn b4", figures(peak_gpu_memory=8.5e9), {})
    assert outcome(result)["peak_gpu_memory"] is False  # +6.25 % against the default 5 %


def test_per_metric_tolerance_overrides_the_default(root: Path) -> None:
    result = compare(root, "scenarios/gpu.yaml", "frcnn b4", figures(peak_gpu_memory=8.5e9), {"peak_gpu_memory": 0.1})
    assert outcome(result)["peak_gpu_memory"] is True


def test_time_regression_must_exceed_the_measured_noise_too(root: Path) -> None:
    slower = figures(forward_pass=0.120)
    assert outcome(compare(root, "scenarios/gpu.yaml", "frcnn b4", slower, {}))["forward_pass"] is False
    noisy = dict(slower, spread={"forward_pass": 0.030})  # +20 % is inside the 32 ms of noise
    assert outcome(compare(root, "scenarios/gpu.yaml", "frcnn b4", noisy, {}))["forward_pass"] is True


def test_idle_gpu_is_a_regression(root: Path) -> None:
    result = compare(root, "scenarios/gpu.yaml", "frcnn b4", figures(peak_gpu_utilization=40.0), {})
    assert outcome(result)["peak_gpu_utilization"] is False


def test_other_environment_skips_with_what_differs(root: Path) -> None:
    moved = figures()
    moved["environment"] = dict(moved["environment"], gpu="NVIDIA A100-SXM4-40GB", torch="2.12")
    result = compare(root, "scenarios/gpu.yaml", "frcnn b4", moved, {})
    assert result.checks == []
    (warning,) = result.warnings
    assert "environment differs" in warning
    assert "gpu 'NVIDIA H100 80GB HBM3' -> 'NVIDIA A100-SXM4-40GB'" in warning
    assert "torch '2.11' -> '2.12'" in warning


def test_changed_scenario_is_not_compared(root: Path) -> None:
    changed = figures()
    changed["scenario"] = {"architecture": "fasterrcnn_resnet50_fpn", "batch_size": 8}
    result = compare(root, "scenarios/gpu.yaml", "frcnn b4", changed, {})
    assert result.checks == [] and "batch_size 4 -> 8" in result.warnings[0]


def test_missing_baseline_is_a_warning(tmp_path: Path) -> None:
    result = compare(tmp_path, "scenarios/gpu.yaml", "new", figures(), {})
    assert result.checks == [] and "no baseline" in result.warnings[0]


def test_tolerances_must_be_percentages() -> None:
    assert parse_tolerances({"forward_pass": "20 %"}) == {"forward_pass": pytest.approx(0.2)}
    with pytest.raises(BudgetError, match=r"tolerances.forward_pass: '0.2' is not a quantity"):
        parse_tolerances({"forward_pass": "0.2"})
