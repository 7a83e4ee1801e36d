"""The scenarios shipped in scenarios/ are valid and cover what the README promises."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_mlestimate.scenarios.architectures import TORCHVISION
from pytest_mlestimate.scenarios.files import read_scenario_file
from pytest_mlestimate.scenarios.scenario import parse_scenario
from pytest_mlestimate.verdicts.baseline import parse_tolerances
from pytest_mlestimate.verdicts.budgets import parse_budgets

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"


def shipped(name: str) -> list[tuple[str, object, list[object]]]:
    found = []
    for entry in read_scenario_file((SCENARIOS / name).read_text()):
        assert entry.problems == []
        scenario = parse_scenario(entry.fields, where=f"{name}::{entry.name}")
        parse_tolerances(entry.tolerances)
        found.append((entry.name, scenario, parse_budgets(entry.budgets)))
    return found


@pytest.mark.parametrize("name", ["cpu.yaml", "gpu.yaml"])
def test_every_shipped_scenario_is_valid_and_budgeted(name: str) -> None:
    for scenario_name, _, budgets in shipped(name):
        assert budgets, f"{scenario_name} has no budget"


def test_cpu_scenarios_need_no_gpu() -> None:
    assert all(scenario.device == "cpu" for _, scenario, _ in shipped("cpu.yaml"))


def test_gpu_scenarios_cover_every_torchvision_family_on_cuda() -> None:
    scenarios = [scenario for _, scenario, _ in shipped("gpu.yaml")]
    assert all(s.device == "cuda" for s in scenarios)
    families = {TORCHVISION[s.architecture].family for s in scenarios if s.architecture in TORCHVISION}
    assert families == {a.family for a in TORCHVISION.values()}
    assert any(s.architecture == "hf:detr" for s in scenarios)  # and a transformers detector
