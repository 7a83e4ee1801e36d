from __future__ import annotations

import pytest

from pytest_mlestimate.scenarios.files import ScenarioFileError, looks_like_scenarios, read_scenario_file

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


def alias_bomb(levels: int = 9, *, name_alias: bool = False) -> str:
    """A "billion laughs": each level a list of nine aliases of the one before, 9**levels values in all."""
    lines = [
        "scenarios:",
        "  - name: bomb",
        "    architecture: pytest_mlestimate.tiny:tiny_detector",
        "    model_kwargs:",
    ]
    lines.append("      a: &l0 [x, x, x, x, x, x, x, x, x]")
    for level in range(1, levels):
        lines.append(f"      l{level}: &l{level} [{', '.join([f'*l{level - 1}'] * 9)}]")
    if name_alias:
        lines.append(f"  - name: *l{levels - 1}")
    return "\n".join(lines) + "\n"


def test_an_alias_bomb_is_refused_at_its_line_without_expanding() -> None:
    text = alias_bomb()
    assert len(text) < 1000
    with pytest.raises(ScenarioFileError, match=r"^line 10: the aliases \(\*name\) up to this one expand to more than"):
        read_scenario_file(text)


def test_aliases_that_expand_within_limits_still_work_and_a_non_text_name_is_not_printed_in_full() -> None:
    _, aliased = read_scenario_file(alias_bomb(4, name_alias=True))  # 9**3 values under the name
    assert aliased.name == "#2"
    (problem,) = aliased.problems
    assert problem.startswith("name: expected text, got [[[") and len(problem) < 300


def test_a_recursive_alias_and_deep_nesting_are_refused_with_their_line() -> None:
    with pytest.raises(ScenarioFileError, match="line 2: alias \\*a refers to a value that contains it"):
        read_scenario_file("scenarios:\n  - &a [*a]\n")
    with pytest.raises(ScenarioFileError, match="line 1: nested more than 50 levels deep"):
        read_scenario_file("scenarios: " + "[" * 60 + "]" * 60 + "\n")


@pytest.mark.parametrize(
    ("text", "says", "line"),
    [
        ("scenarios:\n  - name: big\nscenarios: []\n", "line 3: duplicate key 'scenarios' (first at line 1)", 3),
        (
            "defaults:\n  budgets:\n    peak_ram_memory: 100 GiB\n    peak_ram_memory: 1 MiB\nscenarios: []\n",
            "line 4: duplicate key 'peak_ram_memory' (first at line 3)",
            4,
        ),
        ("scenarios:\n  - {name: a, batch_size: 2, batch_size: 4}\n", "line 2: duplicate key 'batch_size'", 2),
        ("scenarios:\n  - {1: a, 1: b}\n", "line 2: duplicate key 1 (first at line 2)", 2),
    ],
)
def test_duplicate_keys_are_refused_naming_the_key_and_both_lines(text: str, says: str, line: int) -> None:
    with pytest.raises(ScenarioFileError) as caught:
        read_scenario_file(text)
    assert str(caught.value).startswith(says)
    assert caught.value.line == line


def test_merge_keys_still_merge_and_may_be_overridden() -> None:
    text = (
        "scenarios:\n"
        "  - &base {name: a, batch_size: 2, budgets: {forward_pass: 1 s}}\n"
        "  - <<: *base\n"
        "    name: b\n"
        "    batch_size: 4\n"
    )
    first, second = read_scenario_file(text)
    assert (second.name, second.line, second.fields, second.budgets) == ("b", 3, {"batch_size": 4}, first.budgets)
    assert first.fields == {"batch_size": 2} and second.problems == []


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("1" * 5000, "line 2: integer of 5,000 characters; allowed: -9,223,372,036,854,775,808 to"),
        ("0x" + "f" * 40, "line 2: integer 1461501637330902918203684832716283019655932542975 is out of range"),
        ("2023-02-31", "line 2: cannot read '2023-02-31': day is out of range for month"),
    ],
)
def test_values_python_cannot_build_are_errors_with_their_line(value: str, says: str) -> None:
    with pytest.raises(ScenarioFileError) as caught:
        read_scenario_file(f"scenarios:\n  - {{name: a, batch_size: {value}}}\n")
    assert str(caught.value).startswith(says) and len(str(caught.value)) < 400


def test_a_nul_character_in_the_file_names_its_line() -> None:
    with pytest.raises(ScenarioFileError, match=r"^not valid YAML: line 2: character U\+0000 is not allowed"):
        read_scenario_file("scenarios:\n  - name: a\x00\n")


def test_huge_or_unprintable_names_and_values_are_never_echoed_in_full() -> None:
    huge = "n" * 100_000
    text = (
        f'defaults: {{budgets: [{huge}]}}\nscenarios:\n  - name: {huge}\n  - name: "tab\\tnul\\0sur\\ud800"\n'
        f"  - {huge}\n  - name: {huge}\n"
    )
    long, control, not_mapping, again = read_scenario_file(text)
    assert len(long.name) == 200 and long.name.endswith("...")
    assert long.problems[0].startswith("name: 100,000 characters, at most 200 are allowed: 'nnn")
    assert control.name == "tab\\tnul\\x00sur\\ud800" and "control characters" in control.problems[0]
    assert not_mapping.problems[0].startswith("expected a mapping, got 'nnn")
    assert again.name != long.name  # two scenarios never share one test id (and one record)
    for entry in (long, control, not_mapping, again):
        assert all(len(problem) < 400 for problem in entry.problems)
    with pytest.raises(ScenarioFileError) as caught:
        read_scenario_file(f"defaults: [{huge}]\nscenarios: []\n")
    assert len(str(caught.value)) < 300
