from __future__ import annotations

import pytest

from pytest_mlestimate.plugin.scenario_file import ScenarioFileError, looks_like_scenarios, read_scenario_file

FILE = """\
defaults:
  task_type: detection
  batch_size: 2
  budgets:
    peak_ram_memory: 4 GiB
scenarios:
  - name: first
    architecture: a
  - name: second
    architecture: b
    batch_size: 8
    budgets:
      forward_pass: 80 ms
"""


def test_entries_carry_their_line_and_the_defaults() -> None:
    first, second = read_scenario_file(FILE)
    assert (first.name, first.line, second.line) == ("first", 7, 9)
    assert first.fields == {"task_type": "detection", "batch_size": 2, "architecture": "a"}
    assert second.fields["batch_size"] == 8
    assert second.budgets == {"peak_ram_memory": "4 GiB", "forward_pass": "80 ms"}


def test_malformed_yaml_names_the_line() -> None:
    with pytest.raises(ScenarioFileError, match="not valid YAML: line 3") as caught:
        read_scenario_file("scenarios:\n  - name: x\n   bad: [\n")
    assert caught.value.line == 3


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("scenarios: {a: 1}\n", "scenarios: expected a list"),
        ("defaults: [1]\nscenarios: []\n", "defaults: expected a mapping"),
        ("scenarios: []\nscenario: []\n", "unknown top-level key(s) scenario"),
    ],
)
def test_bad_file_shapes_are_explained(text: str, says: str) -> None:
    with pytest.raises(ScenarioFileError) as caught:
        read_scenario_file(text)
    assert says in str(caught.value)


def test_missing_and_duplicate_names_are_problems_of_that_entry() -> None:
    entries = read_scenario_file("scenarios:\n  - architecture: a\n  - name: x\n  - name: x\n")
    assert entries[0].problems == ["name: required field is missing (each scenario needs a unique name)"]
    assert entries[1].problems == []
    assert entries[2].problems == ["name: 'x' is already used by the scenario at line 3"]


def test_only_files_with_a_top_level_scenarios_key_are_ours() -> None:
    assert looks_like_scenarios("defaults: {}\nscenarios:\n  - name: a\n")
    assert not looks_like_scenarios("on: push\njobs:\n  scenarios:\n    runs-on: x\n")
