"""Sweeps: a scenario entry's ``matrix:`` expands to one scenario per combination, and a CSV table holds one
scenario per row; both read into the same entries as a YAML scenario file, and bad input stays with the
scenario (or row) it belongs to."""

from __future__ import annotations

import csv
import io
import time
import unicodedata
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_mlestimate.scenarios.files import (
    MAX_NAME,
    Names,
    ScenarioFileError,
    entries_of,
    read_scenario_file,
)
from pytest_mlestimate.scenarios.table import looks_like_table, read_cell, read_scenario_table
from tests.plugin.conftest import TINY, RunResult, by_name, scenario_file

SWEEP = """\
defaults:
  task_type: detection
  batch_size: 1
scenarios:
  - name: tiny
    architecture: pytest_mlestimate.tiny:tiny_detector
    image_size: [128, 128]
    budgets:
      forward_pass: 80 ms
    matrix:
      batch_size: [2, 4, 8]
      amp: ["off", bf16]
      image_size: [[128, 128], [256, 256]]
  - name: after
    architecture: pytest_mlestimate.tiny:tiny_detector
"""


def unsafe(text: str) -> bool:
    return any(unicodedata.category(ch) in ("Cc", "Cs", "Zl", "Zp") for ch in text)


# matrix ---------------------------------------------------------------------------------------------------


def test_a_matrix_makes_one_scenario_per_combination_in_the_order_written() -> None:
    *swept, after = read_scenario_file(SWEEP)
    expected = [
        f"tiny[batch_size={b},amp={a},image_size={s}]"
        for b in (2, 4, 8)
        for a in ("off", "bf16")
        for s in ("128x128", "256x256")
    ]
    assert [entry.name for entry in swept] == expected
    first, last = swept[0], swept[-1]
    assert first.fields == {
        "task_type": "detection",
        "batch_size": 2,
        "architecture": "pytest_mlestimate.tiny:tiny_detector",
        "image_size": [128, 128],
        "amp": "off",
    }
    assert (last.fields["batch_size"], last.fields["amp"], last.fields["image_size"]) == (8, "bf16", [256, 256])
    assert all(entry.budgets == {"forward_pass": "80 ms"} and not entry.problems for entry in swept)
    assert {entry.line for entry in swept} == {5}
    assert (first.line_of("batch_size"), first.line_of("amp"), first.line_of("image_size")) == (11, 12, 13)
    assert (after.name, after.line, after.fields["batch_size"]) == ("after", 14, 1)


def test_a_matrix_in_defaults_sweeps_every_entry_and_an_entrys_own_keys_win() -> None:
    text = (
        "defaults:\n  matrix: {epochs: [1, 2], batch_size: [2, 4]}\n"
        "scenarios:\n  - name: a\n  - name: b\n    matrix: {batch_size: [8]}\n"
    )
    entries = read_scenario_file(text)
    assert [entry.name for entry in entries] == [
        "a[epochs=1,batch_size=2]",
        "a[epochs=1,batch_size=4]",
        "a[epochs=2,batch_size=2]",
        "a[epochs=2,batch_size=4]",
        "b[epochs=1,batch_size=8]",
        "b[epochs=2,batch_size=8]",
    ]


def test_a_swept_mapping_merges_into_the_entrys_own() -> None:
    text = "scenarios:\n  - name: a\n    model_kwargs: {min_size: 512}\n    matrix: {model_kwargs: [{max_size: 640}]}\n"
    (entry,) = read_scenario_file(text)
    assert entry.fields["model_kwargs"] == {"min_size": 512, "max_size": 640}


@pytest.mark.parametrize(
    ("matrix", "says"),
    [
        ("[2, 4]", "matrix: expected a mapping of scenario fields to lists of values, e.g. {batch_size: [2, 4]}; got"),
        ("{}", "matrix: expected a mapping of scenario fields to lists of values"),
        ("{batch_size: []}", "matrix.batch_size: the list is empty, which makes no scenarios"),
        ("{batch_size: 4}", "matrix.batch_size: expected a list of values, e.g. [2, 4], got 4"),
        ("{colour: [red]}", "matrix: unknown field 'colour'; allowed: task_type, architecture, "),
        ("{budgets: [{forward_pass: 1 s}]}", "matrix: 'budgets' cannot be swept (name, budgets, tolerances, "),
        ("{name: [a, b]}", "matrix: 'name' cannot be swept"),
        ("{batch_size: [2, 2]}", "matrix.batch_size: 2 and 2 would both be named batch_size=2; list each value once"),
        (
            "{batch_size: ["
            + ", ".join(map(str, range(1, 18)))
            + "], epochs: ["
            + ", ".join(map(str, range(1, 17)))
            + "]}",
            "matrix: 17 x 16 values make 272 scenarios; at most 256 are allowed",
        ),
    ],
)
def test_a_bad_matrix_is_a_problem_of_its_entry_alone(matrix: str, says: str) -> None:
    text = f"scenarios:\n  - name: bad\n    matrix: {matrix}\n  - name: good\n    matrix: {{epochs: [1, 2]}}\n"
    bad, *good = read_scenario_file(text)
    assert (bad.name, bad.line) == ("bad", 2)
    assert len(bad.problems) == 1 and bad.problems[0].startswith(says), bad.problems
    if "allowed:" in says:
        assert "batch_size" in bad.problems[0].partition("allowed:")[2]
    assert [entry.name for entry in good] == ["good[epochs=1]", "good[epochs=2]"]
    assert not any(entry.problems for entry in good)


def test_an_entry_with_a_bad_name_is_not_expanded() -> None:
    entries = read_scenario_file("scenarios:\n  - name: a\n  - name: a\n    matrix: {epochs: [1, 2, 3]}\n")
    assert len(entries) == 2
    assert entries[1].problems == ["name: 'a' is already used by the scenario at line 2"]


def test_swept_names_stay_short_printable_and_unique() -> None:
    long = "n" * 150
    text = (
        f"scenarios:\n  - name: {long}\n"
        f'    matrix: {{weights_path: ["{"w" * 300}1", "{"w" * 300}2", "tab\\there"]}}\n'
        "  - name: t[epochs=1]\n  - name: t\n    matrix: {epochs: [1]}\n"
    )
    entries = read_scenario_file(text)
    names = [entry.name for entry in entries]
    assert len(set(names)) == len(names) == 5
    assert all(len(name) <= MAX_NAME and not unsafe(name) for name in names)
    assert names[0].startswith(long + "[weights_path=www") and names[0].endswith("]")
    assert names[4].startswith("t[epochs=1] (line ")  # the same name as an entry written out: told apart


SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats()
    | st.text(max_size=30)
    | st.text(st.characters(min_codepoint=0, max_codepoint=0x1F) | st.characters(min_codepoint=0xD800), max_size=5)
)
VALUES = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner), max_leaves=12
)
KEYS = st.sampled_from(["batch_size", "image_size", "amp", "name", "budgets", "colour"]) | st.text(max_size=10)


@given(st.text(max_size=300), st.dictionaries(KEYS, st.lists(VALUES, max_size=5) | VALUES, max_size=4) | VALUES)
@settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_matrix_makes_unique_short_names_or_one_clear_problem(name: str, matrix: Any) -> None:
    entries = entries_of({"name": name, "matrix": matrix}, 0, 1, Names())
    names = [entry.name for entry in entries]
    assert len(set(names)) == len(names)
    assert all(entry.name and len(entry.name) <= MAX_NAME and not unsafe(entry.name) for entry in entries)
    if len(entries) > 1 or not entries[0].problems:
        assert not any(entry.problems for entry in entries)
        assert all("matrix" not in entry.fields for entry in entries)
    else:
        assert all(len(problem) < 1500 for problem in entries[0].problems)


# CSV tables -----------------------------------------------------------------------------------------------

TABLE = """\
name,architecture,batch_size,image_size,amp,threading,budgets.forward_pass,model_kwargs.min_size,optimizer.lr
frcnn,fasterrcnn_resnet50_fpn,4,"[512, 512]",off,,80 ms,512,0.02
"tiny, b",pytest_mlestimate.tiny:tiny_detector,08,512x512,bf16,no,,,
"""


def yaml_entry(text: str) -> dict[str, Any]:
    (entry,) = read_scenario_file(text)
    return {"fields": entry.fields, "budgets": entry.budgets}


def test_a_row_reads_as_the_same_scenario_as_its_yaml_entry() -> None:
    first, second = read_scenario_table(TABLE, "scenarios.csv")
    assert (first.name, first.line, second.name, second.line) == ("frcnn", 2, "tiny, b", 3)
    assert {"fields": first.fields, "budgets": first.budgets} == yaml_entry(
        "scenarios:\n  - name: frcnn\n    architecture: fasterrcnn_resnet50_fpn\n    batch_size: 4\n"
        "    image_size: [512, 512]\n    amp: 'off'\n    budgets: {forward_pass: 80 ms}\n"
        "    model_kwargs: {min_size: 512}\n    optimizer: {lr: 0.02}\n"
    )
    # 08 is eight (not an octal error), 512x512 an image size; 'no' stays text for the schema to read
    assert second.fields == {
        "architecture": "pytest_mlestimate.tiny:tiny_detector",
        "batch_size": 8,
        "image_size": [512, 512],
        "amp": "bf16",
        "threading": "no",
    }
    assert second.budgets is None and not first.problems and not second.problems


@pytest.mark.parametrize(
    ("cell", "value"),
    [
        ("off", "off"),
        ("on", "on"),
        ("yes", "yes"),
        ("No", "No"),
        ("true", True),
        ("FALSE", False),
        ("null", None),
        ("~", None),
        ("4", 4),
        ("-4", -4),
        ("010", 10),
        ("0x10", 16),
        ("1:30", "1:30"),
        ("2.5", 2.5),
        ("1e3", 1000.0),
        ("2023-01-01", "2023-01-01"),
        ("4 GiB", "4 GiB"),
        (">= 40 %", ">= 40 %"),
        ("a: b", "a: b"),
        ("# not a comment", "# not a comment"),
        ("*not_an_alias", "*not_an_alias"),
        ("!!python/object/apply:os.system [ls]", "!!python/object/apply:os.system [ls]"),
        ("'4'", "4"),
        ("[512, 512]", [512, 512]),
        ("{min_size: 512, flag: off}", {"min_size": 512, "flag": "off"}),
        ("  padded  ", "padded"),
    ],
)
def test_cells_read_as_yaml_values_without_yaml_1_1_surprises(cell: str, value: Any) -> None:
    assert read_cell(cell) == value and type(read_cell(cell)) is type(value)


@pytest.mark.parametrize(
    ("cell", "says"),
    [
        ("[1, 2", "not valid YAML: column 6: expected ',' or ']'"),
        ("[&a [x, x], *a]", "aliases (*name) are not read in a table: write the value out"),
        ("{a: 1, a: 2}", "duplicate key 'a'; a key may appear once in a mapping"),
        ("99999999999999999999", "integer 99999999999999999999 is out of range"),
        ("[" * 60 + "]" * 60, "nested more than 50 levels deep"),
    ],
)
def test_cells_that_cannot_be_read_say_why(cell: str, says: str) -> None:
    with pytest.raises(ScenarioFileError) as caught:
        read_cell(cell)
    assert str(caught.value).startswith(says), str(caught.value)


def test_a_cell_cannot_be_an_alias_bomb() -> None:
    levels = ["&l0 [x, x, x, x, x, x, x, x, x]"] + [f"&l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 9)]
    start = time.monotonic()
    with pytest.raises(ScenarioFileError, match="aliases"):
        read_cell("[" + ", ".join(levels) + "]")
    assert time.monotonic() - start < 1


def test_bad_cells_name_the_file_row_line_and_column_and_the_other_rows_are_read() -> None:
    text = (
        "name,batch_size,image_size,budgets.forward_pass\n"
        "good,2,64x64,80 ms\n"
        'multi,2,"[64,\n 64]",\n'  # one row over two lines: later rows keep their own line
        'bad,"[2,",64x64,\n'
        "short,2\n"
        "long,2,64x64,,\n"
        ",,,\n"
        "last,4,,\n"
    )
    good, multi, bad, short, long, last = read_scenario_table(text, "scenarios.csv")
    assert (good.line, multi.line, bad.line, short.line, long.line, last.line) == (2, 3, 5, 6, 7, 9)
    assert not good.problems and not multi.problems and not last.problems
    assert bad.problems == [
        "scenarios.csv, row 3 (line 5), column batch_size: cannot read '[2,': not valid YAML: column 4: expected the "
        "node content, but found '<stream end>'; quote text that starts with [ { ' or \""
    ]
    assert short.problems == ["scenarios.csv, row 4 (line 6): 2 cells, but the header has 4 columns"]
    assert long.problems == ["scenarios.csv, row 5 (line 7): 5 cells, but the header has 4 columns"]
    assert (short.name, long.name) == ("short", "long")
    assert multi.fields["image_size"] == [64, 64]
    assert last.fields == {"batch_size": 4} and last.budgets is None  # empty cells set nothing


def test_a_row_without_a_name_or_with_a_repeated_one_is_an_error_of_that_row() -> None:
    unnamed, first, again = read_scenario_table("name,batch_size\n,2\nx,2\nx,4\n")
    assert unnamed.problems == ["name: required field is missing (each scenario needs a unique name)"]
    assert not first.problems
    assert again.problems == ["name: 'x' is already used by the scenario at line 3"]
    assert first.name != again.name


@pytest.mark.parametrize(
    ("header", "says"),
    [
        ("name,colour,budgets.speed", "header (line 1): unknown column(s) 'colour', 'budgets.speed'; allowed: name,"),
        ("name,optimizer.momentum_x", "header (line 1): unknown column(s) 'optimizer.momentum_x'; allowed:"),
        ("name,matrix.colour", "header (line 1): unknown column(s) 'matrix.colour'"),
        ("name,batch_size,batch_size", "header (line 1): column 'batch_size' appears twice (columns 2 and 3)"),
    ],
)
def test_a_bad_header_is_one_error_that_says_what_is_allowed(header: str, says: str) -> None:
    with pytest.raises(ScenarioFileError) as caught:
        read_scenario_table(f"{header}\nx,1,2\n", "scenarios.csv")
    message = str(caught.value)
    assert message.startswith(says) and caught.value.line == 1, message
    if "allowed" in says:
        for column in ("batch_size", "budgets.<metric>", "peak_gpu_memory", "model_kwargs.<keyword>", "optimizer."):
            assert column in message


def test_a_table_may_sweep_with_matrix_columns() -> None:
    text = 'name,image_size,matrix.image_size,matrix.amp\nt,64x64,"[64x64, [128, 96]]","[off, bf16]"\n'
    entries = read_scenario_table(text)
    assert [(e.name, e.fields["image_size"], e.fields["amp"]) for e in entries] == [
        ("t[image_size=64x64,amp=off]", [64, 64], "off"),
        ("t[image_size=64x64,amp=bf16]", [64, 64], "bf16"),
        ("t[image_size=128x96,amp=off]", [128, 96], "off"),
        ("t[image_size=128x96,amp=bf16]", [128, 96], "bf16"),
    ]


def test_only_csv_files_with_a_name_or_architecture_column_are_tables() -> None:
    assert looks_like_table("name,batch_size\nx,2\n")
    assert looks_like_table("\ufeff\n architecture ,batch_size\n")  # a spreadsheet's byte-order mark, a blank line
    assert not looks_like_table("id,label,score\n1,cat,0.9\n")
    assert not looks_like_table("name;batch_size\nx;2\n")
    assert not looks_like_table("")


CELLS = st.sampled_from(
    ["", "off", "4", "-1", "[512, 512]", "512x512", "[1,", "{a: 1, a: 2}", "&a [*a]", "80 ms", "1" * 200, "x\x00"]
) | st.text(max_size=15)
KNOWN_COLUMNS = ("architecture", "batch_size", "image_size", "amp", "budgets.forward_pass", "model_kwargs.k")
MATRIX_CELLS = st.sampled_from(["[1, 2]", "[]", "4", "[1, 1]", "[" + ", ".join(map(str, range(300))) + "]"])


@st.composite
def tables(draw: st.DrawFn) -> str:
    """Mostly well-formed tables with bad cells, rows of the wrong length and odd columns; some random text."""
    if draw(st.integers(0, 4)) == 2:
        return draw(st.text(max_size=300))
    header = ["name", *draw(st.lists(st.sampled_from(KNOWN_COLUMNS), unique=True, max_size=4))]
    if draw(st.booleans()):
        header.append("matrix.epochs")
    if draw(st.integers(0, 4)) == 2:
        header.insert(draw(st.integers(0, len(header))), draw(st.text(max_size=8)))
    rows = []
    for _ in range(draw(st.integers(0, 6))):
        width = len(header) if draw(st.integers(0, 5)) else draw(st.integers(0, len(header) + 2))
        cells = [draw(MATRIX_CELLS if column == "matrix.epochs" else CELLS) for column in header[:width]]
        rows.append(cells + [draw(CELLS) for _ in range(width - len(cells))])
    out = io.StringIO()
    csv.writer(out).writerows([header, *rows])
    text = out.getvalue()
    return text.replace(",", draw(st.sampled_from([",", ",", '"', "\n"])), draw(st.integers(0, 1)))


@given(tables())
@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_csv_text_gives_entries_or_a_clear_error(text: str) -> None:
    try:
        entries = read_scenario_table(text, "t.csv")
    except ScenarioFileError as exc:
        assert len(str(exc)) < 2000 and not unsafe(str(exc)), str(exc)[:3000]
        assert 1 <= exc.line <= text.count("\n") + 2
        return
    names = [entry.name for entry in entries]
    assert len(set(names)) == len(names)
    for entry in entries:
        assert entry.name and len(entry.name) <= MAX_NAME and not unsafe(entry.name)
        assert 1 <= entry.line <= text.count("\n") + 1
        assert all(len(problem) < 1000 and not unsafe(problem) for problem in entry.problems), entry.problems


# end to end -----------------------------------------------------------------------------------------------


def test_a_matrix_runs_each_combination_as_its_own_test(
    pytester: pytest.Pytester, run_scenarios: Callable[..., RunResult]
) -> None:
    # dataset_size only scales a profile, so every combination answers from the shared cache
    pytester.makefile(
        ".yaml",
        scenarios=scenario_file(
            {
                "name": "tiny",
                "budgets": {"peak_ram_memory": "64 GiB"},
                "matrix": {"batch_size": [2, 0], "dataset_size": [100, 300]},
            },
            {"name": "broken", "matrix": {"colour": ["red"]}},
            {"name": "plain"},
        ),
    )
    result, report = run_scenarios("-v")

    result.assert_outcomes(passed=3, errors=3)
    assert "Traceback" not in result.stdout.str()
    result.stdout.fnmatch_lines_random(
        [
            "*scenarios.yaml:3: scenario 'tiny[[]batch_size=0,dataset_size=100[]]' is invalid:",
            "  - batch_size: must be at least 1 (got 0)",
            "*scenarios.yaml:4: scenario 'broken' is invalid:",
            "  - matrix: unknown field 'colour'; allowed: task_type, architecture, *",
        ]
    )
    result.stdout.fnmatch_lines(  # in this order: the first field's values change slowest
        [
            "scenarios.yaml::tiny[[]batch_size=2,dataset_size=100[]] PASSED*",
            "scenarios.yaml::tiny[[]batch_size=2,dataset_size=300[]] PASSED*",
            "scenarios.yaml::tiny[[]batch_size=0,dataset_size=100[]] ERROR*",
            "scenarios.yaml::tiny[[]batch_size=0,dataset_size=300[]] ERROR*",
        ]
    )
    entries = by_name(report)
    assert {name: entry["outcome"] for name, entry in entries.items()} == {
        "tiny[batch_size=2,dataset_size=100]": "passed",
        "tiny[batch_size=2,dataset_size=300]": "passed",
        "tiny[batch_size=0,dataset_size=100]": "error",
        "tiny[batch_size=0,dataset_size=300]": "error",
        "broken": "error",
        "plain": "passed",
    }
    small, large = entries["tiny[batch_size=2,dataset_size=100]"], entries["tiny[batch_size=2,dataset_size=300]"]
    assert (small["scenario"]["dataset_size"], large["scenario"]["dataset_size"]) == (100, 300)
    assert small["line"] == large["line"] == 3
    for entry in (small, large):  # the entry's budget is checked in each of its scenarios
        assert [(b["metric"], b["passed"]) for b in entry["budgets"]] == [("peak_ram_memory", True)]


def test_a_csv_table_runs_a_test_per_row_and_bad_rows_are_errors(
    pytester: pytest.Pytester, run_scenarios: Callable[..., RunResult]
) -> None:
    columns = [key for key in TINY if key != "image_size"]
    header = ",".join(["name", *columns, "image_size", "amp", "budgets.peak_ram_memory"])

    def row(name: str, budget: str = "64 GiB", **changed: Any) -> str:
        cells = [str(changed.get(key, TINY[key])) for key in columns]
        return ",".join([name, *cells, "64x64", "off", budget])

    rows = [
        row("fits"),
        row("over", budget="1 MiB"),
        row("unreadable", batch_size='"[2,"'),
        row("negative", batch_size=-2),
        "short,detection",
    ]
    pytester.makefile(".csv", scenarios="\n".join([header, *rows]) + "\n")
    pytester.makefile(".csv", data="id,label\n1,cat\n")  # not a scenario table: left alone
    pytester.makefile(".csv", other="name,colour\nx,red\n")

    result, report = run_scenarios()

    result.assert_outcomes(passed=1, failed=1, errors=4)
    output = result.stdout.str()
    assert "Traceback" not in output and "data.csv" not in output
    result.stdout.fnmatch_lines_random(
        [
            "*scenarios.csv:4: scenario 'unreadable' is invalid:",
            "  - scenarios.csv, row 3 (line 4), column batch_size: cannot read '[2,': not valid YAML*",
            "  - batch_size: must be at least 1 (got -2)",
            "  - scenarios.csv, row 5 (line 6): 2 cells, but the header has 11 columns",
            "*other.csv:1: scenario file other.csv is invalid: header (line 1): unknown column(s) 'colour'; allowed: *",
        ]
    )
    entries = by_name(report)
    assert {name: (entry["outcome"], entry["file"], entry["line"]) for name, entry in entries.items()} == {
        "fits": ("passed", "scenarios.csv", 2),
        "over": ("failed", "scenarios.csv", 3),
        "unreadable": ("error", "scenarios.csv", 4),
        "negative": ("error", "scenarios.csv", 5),
        "short": ("error", "scenarios.csv", 6),
        "file": ("error", "other.csv", 1),
    }
    assert entries["fits"]["scenario"]["amp"] == "off" and entries["fits"]["scenario"]["image_size"] == [64, 64]


def test_a_defaults_matrix_cannot_multiply_a_file_past_its_cap() -> None:
    matrix = "{batch_size: [" + ", ".join(map(str, range(1, 17))) + "], epochs: [" + ", ".join(map(str, range(1, 17)))
    entries = "".join(f"  - name: s{index}\n" for index in range(200))  # 200 entries x 256 = 51,200 scenarios
    with pytest.raises(ScenarioFileError, match=r"more than 5,000 scenarios by its entry 20 \(line 23\)"):
        read_scenario_file(f"defaults:\n  matrix: {matrix}]}}\nscenarios:\n{entries}")
    assert len(read_scenario_file(f"defaults:\n  matrix: {matrix}]}}\nscenarios:\n  - name: one\n")) == 256
