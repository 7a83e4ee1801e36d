"""What a new user sees: why a scenario skipped, warnings counted truly, a hint for a forgotten --mlestimate,
budget problems at their own line, and budgets as a marker."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from pytest_mlestimate.core.errors import DeviceUnavailableError
from pytest_mlestimate.scenarios.files import read_scenario_file
from tests.plugin.conftest import TINY, RunResult, by_name, scenario_file

SCHEMA = json.loads((Path(__file__).parents[2] / "pytest_mlestimate" / "report.schema.json").read_text())


def test_a_skipped_scenario_says_why_under_the_table(
    pytester: pytest.Pytester, run_scenarios: Callable[..., RunResult]
) -> None:
    pytester.makefile(".yaml", scenarios=scenario_file({"name": "fits"}, {"name": "far-gpu", "device": "cuda:7"}))
    result, report = run_scenarios()  # no -rs

    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(
        [
            "*mlestimate summary*",
            "fits*passed*",
            "far-gpu*skipped*",
            "skipped far-gpu: device 'cuda:7' asked for, but *",
        ]
    )
    assert by_name(report)["far-gpu"]["outcome"] == "skipped"


def test_the_hidden_warnings_are_counted_as_more_only_after_shown_ones(
    pytester: pytest.Pytester, run_scenarios: Callable[..., RunResult]
) -> None:
    mismatch = {"name": "says-5-parameters", "parameters": 5}  # a measurement's warning: shown with -v
    pytester.makefile(".yaml", scenarios=scenario_file(mismatch))
    alone, _ = run_scenarios()
    alone.stdout.fnmatch_lines(["1 warning from the measurements not shown: run with -v or read the report"])
    assert "more warning" not in alone.stdout.str()

    unmeasurable = {**mismatch, "budgets": {"peak_gpu_memory": "10 GiB"}}  # a budget's warning: always shown
    pytester.makefile(".yaml", scenarios=scenario_file(unmeasurable))
    after, _ = run_scenarios()
    after.stdout.fnmatch_lines(
        [
            "warning: says-5-parameters: budget on peak_gpu_memory*",
            "1 more warning from the measurements not shown: run with -v or read the report",
        ]
    )
    verbose, _ = run_scenarios("-v")
    verbose.stdout.fnmatch_lines(["warning: says-5-parameters: parameters: the scenario says 5 but the built model*"])
    assert "not shown" not in verbose.stdout.str()


def test_a_scenario_file_without_the_flag_gets_a_hint(pytester: pytest.Pytester) -> None:
    pytester.makefile(".yaml", scenarios=scenario_file({"name": "tiny"}))
    pytester.makefile(".yaml", other="just: yaml\n")

    named = pytester.runpytest_inprocess("scenarios.yaml", "-p", "no:cacheprovider")
    named.stdout.fnmatch_lines(
        ["hint: scenarios.yaml looks like a pytest-mlestimate scenario file: add --mlestimate to collect it"]
    )
    folder = pytester.runpytest_inprocess(".", "-p", "no:cacheprovider")
    assert folder.ret == pytest.ExitCode.NO_TESTS_COLLECTED
    folder.stdout.fnmatch_lines(["hint: scenarios.yaml looks like a pytest-mlestimate scenario file: add*"])
    assert "other.yaml" not in folder.stdout.str()


def test_a_budget_problem_names_the_budgets_own_line(
    pytester: pytest.Pytester, run_scenarios: Callable[..., RunResult]
) -> None:
    fields = "".join(f"    {key}: {value!r}\n".replace("'", '"') for key, value in TINY.items() if key != "image_size")
    pytester.makefile(
        ".yaml",
        scenarios=(
            "scenarios:\n"
            "  - name: budgeted\n"
            f"{fields}"
            "    image_size: [64, 64]\n"
            "    budgets:\n"
            "      peak_ram_memory: 64 GiB\n"
            "      forward_pass: quick\n"
            "    tolerances:\n"
            "      backward_pass: a lot\n"
        ),
    )
    lines = (pytester.path / "scenarios.yaml").read_text().splitlines()
    budget_line = next(n for n, text in enumerate(lines, 1) if "forward_pass: quick" in text)
    tolerance_line = next(n for n, text in enumerate(lines, 1) if "backward_pass: a lot" in text)

    result, _ = run_scenarios()

    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [
            f"  - scenarios.yaml:{budget_line}: budgets.forward_pass: 'quick' is not a quantity*",
            f"  - scenarios.yaml:{tolerance_line}: tolerances.backward_pass: *",
        ]
    )


MARKED = f"""
import pytest
from pytest_mlestimate.tiny import tiny_detector

SCENARIO = {{k: v for k, v in {TINY!r}.items() if k != "architecture"}}


@pytest.mark.mlestimate(peak_ram_memory="64 GiB")
def test_within_the_marker(mlestimate):
    mlestimate(tiny_detector, SCENARIO)


@pytest.mark.mlestimate(peak_ram_memory="1 MiB")
def test_over_the_marker(mlestimate):
    mlestimate(tiny_detector, SCENARIO)


@pytest.mark.mlestimate(peak_ram_memory="1 MiB")
def test_the_call_wins(mlestimate):
    mlestimate(tiny_detector, SCENARIO, budgets={{"peak_ram_memory": "64 GiB"}})


@pytest.mark.mlestimate(peak_ram="1 MiB")
def test_a_bad_marker(mlestimate):
    mlestimate(tiny_detector, SCENARIO)


@pytest.mark.mlestimate(peak_ram_memory="1 MiB")
def test_a_marker_without_the_fixture():
    pass
"""


def test_budgets_as_a_marker(pytester: pytest.Pytester, run_scenarios: Callable[..., RunResult]) -> None:
    pytester.makepyfile(test_marked=MARKED)
    result, report = run_scenarios("-p", "no:randomly", "--strict-markers")  # the marker is registered

    outcomes = {
        report.head_line: report.outcome
        for report in result.reprec.getreports("pytest_runtest_logreport")  # type: ignore[attr-defined]
        if report.when == "call" or report.outcome != "passed"
    }
    assert outcomes == {
        "test_within_the_marker": "passed",
        "test_over_the_marker": "failed",
        "test_the_call_wins": "passed",
        "test_a_bad_marker": "failed",
        "test_a_marker_without_the_fixture": "failed",
    }
    result.stdout.fnmatch_lines_random(
        [
            "*peak_ram_memory broke its limit: measured *, limit <= 1.00 MiB",
            "*test_a_bad_marker: invalid budgets in @pytest.mark.mlestimate:",
            "*unknown metric 'peak_ram'*",
            "*test_a_marker_without_the_fixture: @pytest.mark.mlestimate sets budgets for the mlestimate fixture*",
        ]
    )
    assert by_name(report)["test_over_the_marker"]["outcome"] == "failed"


def test_a_long_skip_reason_is_cut_in_its_line(
    pytester: pytest.Pytester, run_scenarios: Callable[..., RunResult], monkeypatch: pytest.MonkeyPatch
) -> None:
    def engine(scenario: Any, **options: Any) -> None:
        raise DeviceUnavailableError(f"device 'cuda:3' asked for, but this machine has 1 GPU{' (cuda:0)' * 40}")

    monkeypatch.setattr("pytest_mlestimate.plugin.items.estimate", engine)
    pytester.makefile(".yaml", scenarios=scenario_file({"name": "elsewhere"}))
    result, report = run_scenarios()
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(
        [
            "*mlestimate summary*",
            "elsewhere  skipped*",
            "skipped elsewhere: device 'cuda:3' asked for, but this machine has 1 GPU (cuda:0)*...",
        ]
    )
    (line,) = [line for line in result.outlines if line.startswith("skipped elsewhere:")]
    assert len(line) <= len("skipped elsewhere: ") + 160
    assert by_name(report)["elsewhere"]["measured"] is None


def test_the_hint_loads_nothing_heavy(pytester: pytest.Pytester) -> None:
    heavy = ("torch", "torchvision", "pynvml", "fastapi", "pydantic")
    pytester.makeconftest(
        "import sys\n"
        f"def pytest_unconfigure():\n    print('HEAVY:', sorted(m for m in {heavy!r} if m in sys.modules))\n"
    )
    pytester.makefile(".yaml", cpu=scenario_file({"name": "one"}))
    result = pytester.runpytest_subprocess("cpu.yaml")
    result.stdout.fnmatch_lines(["hint: cpu.yaml looks like a pytest-mlestimate scenario file*", "HEAVY: []"])


LINED = """\
defaults:
  {tiny}
  budgets:
    forward_pass: soon
scenarios:
  - name: good
  - name: lined
    budgets:
      peak_ram_memory: 4 GB/s
      peak_gpu_mem: 1 GiB
    tolerances:
      forward_pass: lots
  - name: flat
    budgets: 5
"""


def lined_file() -> str:
    tiny = "\n  ".join(f"{key}: {json.dumps(value)}" for key, value in TINY.items())
    return LINED.format(tiny=tiny)


def line_of(text: str, fragment: str, after: str | None = None) -> int:
    """The number of the first line holding ``fragment`` (after the first line holding ``after``)."""
    lines = text.splitlines()
    start = next(n for n, line in enumerate(lines) if after in line) if after else 0
    return next(n for n, line in enumerate(lines[start:], start + 1) if fragment in line)


def test_budget_problems_name_the_line_of_their_own_key() -> None:
    text = lined_file()
    good, lined, flat = read_scenario_file(text)
    default = line_of(text, "forward_pass: soon")
    assert good.line_of("budgets.forward_pass") == default
    assert lined.line_of("budgets.peak_ram_memory") == line_of(text, "peak_ram_memory: 4 GB/s")
    assert lined.line_of("budgets.peak_gpu_mem") == line_of(text, "peak_gpu_mem: 1 GiB")
    assert lined.line_of("budgets.forward_pass") == default  # taken from the defaults
    assert lined.line_of("tolerances.forward_pass") == line_of(text, "forward_pass: lots")
    assert flat.line_of("budgets") == line_of(text, "budgets: 5")
    assert flat.line_of("budgets.peak_ram_memory") == line_of(text, "budgets: 5")  # the nearest key there is


def test_a_budget_error_points_at_the_budgets_line(
    pytester: pytest.Pytester, run_scenarios: Callable[..., RunResult]
) -> None:
    text = lined_file()
    pytester.makefile(".yaml", scenarios=text)
    result, report = run_scenarios()
    result.assert_outcomes(errors=3)
    result.stdout.fnmatch_lines(
        [
            f"scenarios.yaml:{line_of(text, 'name: lined')}: scenario 'lined' is invalid:",
            f"  - scenarios.yaml:{line_of(text, 'soon')}: budgets.forward_pass: 'soon' is not a quantity; *",
            f"  - scenarios.yaml:{line_of(text, '4 GB/s')}: budgets.peak_ram_memory: '4 GB/s' is not a quantity; *",
            f"  - scenarios.yaml:{line_of(text, 'peak_gpu_mem:')}: budgets.peak_gpu_mem: unknown metric "
            "'peak_gpu_mem': did you mean 'peak_gpu_memory'? *",
            f"  - scenarios.yaml:{line_of(text, 'lots')}: tolerances.forward_pass: *",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            f"scenarios.yaml:{line_of(text, 'name: flat')}: scenario 'flat' is invalid:",
            f"  - scenarios.yaml:{line_of(text, 'budgets: 5')}: budgets: expected a mapping*",
        ]
    )
    jsonschema.validate(report, SCHEMA)
    assert by_name(report)["good"]["outcome"] == "error"  # the defaults' bad budget is its too
