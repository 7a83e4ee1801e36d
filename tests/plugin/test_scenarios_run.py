"""``pytest --mlestimate`` over YAML scenario files, end to end through pytest (profiles from the shared
cache, so these tests are about verdicts and reports, not measuring)."""

from __future__ import annotations

import json
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from pytest_mlestimate.core.metrics import METRIC
from tests.documented_keys import RESOURCE_KEYS
from tests.plugin.conftest import TINY, RunResult, by_name, scenario_file
from tests.plugin.test_scenario_file import alias_bomb

TIMINGS = {name for name, metric in METRIC.items() if metric.noise == "timing"}
SCHEMA = json.loads((Path(__file__).parents[2] / "pytest_mlestimate" / "report.schema.json").read_text())


def junit_cases(path: Path) -> dict[str, ET.Element]:
    return {case.get("name"): case for case in ET.parse(path).getroot().iter("testcase")}


def test_impossible_budget_fails_its_scenario_only(
    pytester: pytest.Pytester, run_scenarios: Callable[..., RunResult]
) -> None:
    pytester.makefile(
        ".yaml",
        scenarios=scenario_file(
            {"name": "fits", "budgets": {"peak_ram_memory": "64 GiB", "forward_pass": "1 min"}},
            {"name": "impossible", "budgets": {"peak_ram_memory": "1 MiB"}},
        ),
    )
    result, report = run_scenarios("--mlestimate-junitxml", "junit.xml")

    assert result.ret == 1
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*scenario 'impossible' (scenarios.yaml:4): peak_ram_memory broke its limit: measured *, limit <= 1.00 MiB",
            "metric*measured*limit*baseline*change*result",
            "peak_ram_memory*iB*<= 1.00 MiB*FAILED",
        ]
    )
    jsonschema.validate(report, SCHEMA)
    entries = by_name(report)
    assert entries["fits"]["outcome"] == "passed"
    assert entries["impossible"]["outcome"] == "failed"
    (budget,) = entries["impossible"]["budgets"]
    assert (budget["metric"], budget["limit"], budget["passed"]) == ("peak_ram_memory", 2**20, False)
    assert budget["value"] == entries["impossible"]["resource"]["Peak RAM Memory"] > 2**20
    cases = junit_cases(pytester.path / "junit.xml")
    assert cases["fits"].find("failure") is None
    failure = cases["impossible"].find("failure")
    assert failure is not None and "peak_ram_memory broke its limit" in failure.get("message", "")


def test_report_keeps_the_engine_keys_file_and_line(
    pytester: pytest.Pytester, run_scenarios: Callable[..., RunResult]
) -> None:
    pytester.makefile(".yaml", scenarios=scenario_file({"name": "plain"}))
    result, report = run_scenarios()
    assert result.ret == 0
    jsonschema.validate(report, SCHEMA)
    entry = by_name(report)["plain"]
    assert (entry["file"], entry["line"]) == ("scenarios.yaml", 3)
    assert list(entry["resource"]) == RESOURCE_KEYS
    assert set(entry["inference_time"]) == {"1-Image Inference Time", "Batch of 2 Inference Time"}
    assert entry["training_time"]["Total Training Time"] > 0
    assert report["environment"]["torch"] == entry["details"]["environment"]["torch"]
    assert entry["scenario"]["architecture"] == TINY["architecture"]


def test_bad_inputs_error_with_what_is_wrong_and_the_rest_run(
    pytester: pytest.Pytester, run_scenarios: Callable[..., RunResult]
) -> None:
    pytester.makefile(".yaml", broken="scenarios:\n  - name: x\n   oops: [\n")
    pytester.makefile(
        ".yaml",
        scenarios=scenario_file(
            {"name": "valid"},
            {"name": "unknown-field", "colour": "red"},
            {"name": "misspelt", "architecture": "fasterrcnn_resnet50_fpm"},
            {"name": "bad-unit", "budgets": {"peak_ram_memory": "4 GB/s"}},
            {"name": "negative-batch", "batch_size": -2},
        ),
    )
    result, report = run_scenarios()

    assert result.ret == 1
    result.assert_outcomes(passed=1, errors=5)
    output = result.stdout.str()
    assert "Traceback" not in output
    result.stdout.fnmatch_lines_random(
        [
            "broken.yaml:3: scenario file broken.yaml is invalid: not valid YAML: line 3, column 4: *",
            "scenarios.yaml:*: scenario 'unknown-field' is invalid:",
            "  - colour: unknown field; allowed fields: task_type, architecture, *(and, in a scenario file, name, *",
            "scenarios.yaml:*: scenario 'misspelt' is invalid:",
            "  - architecture: unknown architecture 'fasterrcnn_resnet50_fpm': did you mean 'fasterrcnn_resnet50_fpn'?*"
            " allowed: *",
            "  - scenarios.yaml:6: budgets.peak_ram_memory: '4 GB/s' is not a quantity; write a number and one of B,"
            " KB, MB, GB*",
            "  - batch_size: must be at least 1 (got -2)",
        ]
    )
    outcomes = {entry["name"]: entry["outcome"] for entry in report["scenarios"]}
    assert outcomes == {
        "file": "error",
        "valid": "passed",
        "unknown-field": "error",
        "misspelt": "error",
        "bad-unit": "error",
        "negative-batch": "error",
    }
    jsonschema.validate(report, SCHEMA)


def test_other_yaml_files_are_ignored_and_no_flag_means_no_scenarios(
    pytester: pytest.Pytester, run_scenarios: Callable[..., RunResult]
) -> None:
    pytester.makefile(".yml", ci="on: push\njobs:\n  scenarios:\n    runs-on: ubuntu-latest\n")
    pytester.makefile(".yaml", scenarios=scenario_file({"name": "one"}))
    result, report = run_scenarios()
    result.assert_outcomes(passed=1)
    assert [entry["name"] for entry in report["scenarios"]] == ["one"]
    plain = pytester.runpytest_inprocess()
    assert plain.ret == pytest.ExitCode.NO_TESTS_COLLECTED


def test_cuda_scenario_skips_with_its_reason_here(
    pytester: pytest.Pytester, run_scenarios: Callable[..., RunResult]
) -> None:
    pytest.importorskip("pytest_mlestimate.core.environment")
    from pytest_mlestimate.core.environment import gpu_inventory

    if gpu_inventory()[0]:
        pytest.skip("this machine has a GPU")
    pytester.makefile(".yaml", scenarios=scenario_file({"name": "on-gpu", "device": "cuda"}))
    result, report = run_scenarios("-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["SKIPPED * scenarios.yaml:3: device 'cuda' asked for, but no CUDA device*"])
    entry = by_name(report)["on-gpu"]
    assert entry["outcome"] == "skipped" and "no CUDA device" in entry["message"]


def test_unmeasurable_budget_is_not_checked_and_said_so(
    pytester: pytest.Pytester, run_scenarios: Callable[..., RunResult]
) -> None:
    pytester.makefile(".yaml", scenarios=scenario_file({"name": "cpu", "budgets": {"peak_gpu_memory": "1 B"}}))
    result, report = run_scenarios()
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["warning: cpu: budget on peak_gpu_memory not checked: not measurable here*"])
    (budget,) = by_name(report)["cpu"]["budgets"]
    assert budget["passed"] is None and budget["value"] is None


def test_default_budgets_from_command_line_and_ini(
    pytester: pytest.Pytester, run_scenarios: Callable[..., RunResult]
) -> None:
    pytester.makeini("[pytest]\nmlestimate_budgets =\n    peak_ram_memory = 1 MiB\n")
    pytester.makefile(
        ".yaml",
        scenarios=scenario_file({"name": "default"}, {"name": "own", "budgets": {"peak_ram_memory": "64 GiB"}}),
    )
    result, report = run_scenarios("--mlestimate-budget", "forward_pass=1 us")
    outcomes = {name: [(b["metric"], b["passed"]) for b in e["budgets"]] for name, e in by_name(report).items()}
    assert outcomes == {
        "default": [("peak_ram_memory", False), ("forward_pass", False)],
        "own": [("forward_pass", False), ("peak_ram_memory", True)],
    }
    assert result.ret == 1


def test_baseline_round_trip_catches_a_regression(
    pytester: pytest.Pytester, run_scenarios: Callable[..., RunResult]
) -> None:
    pytester.makefile(".yaml", scenarios=scenario_file({"name": "tracked"}))
    saved, report = run_scenarios("--mlestimate-save-baseline", "baseline", "--mlestimate-baseline-runs", "2")
    assert saved.ret == 0
    path = pytester.path / "baseline" / "scenarios" / "tracked.json"
    assert by_name(report)["tracked"]["baseline"] == {"status": "saved", "path": str(path), "runs": 2}
    stored = json.loads(path.read_text())
    assert len(stored["runs"]) == 2  # the first measurement and one more fresh process

    same, report = run_scenarios("--mlestimate-compare", "baseline")
    assert same.ret == 0
    entry = by_name(report)["tracked"]
    assert all(b["passed"] for b in entry["budgets"]) and entry["baseline"]["status"] == "compared"

    for run in stored["runs"]:
        run["metrics"]["peak_ram_memory"] /= 2  # as if the model needed half the RAM before this change
    path.write_text(json.dumps(stored))
    worse, report = run_scenarios("--mlestimate-compare", "baseline")
    assert worse.ret == 1
    worse.stdout.fnmatch_lines(["*peak_ram_memory regressed: measured *, limit <= * (baseline)*"])
    regressed = [b for b in by_name(report)["tracked"]["budgets"] if b["passed"] is False]
    assert [b["metric"] for b in regressed] == ["peak_ram_memory"]
    assert len(by_name(report)["tracked"]["runs"]) == 1  # memory is not measured again: it does not scatter

    stored["environment"]["torch"] = "1.0"
    path.write_text(json.dumps(stored))
    elsewhere, report = run_scenarios("--mlestimate-compare", "baseline")
    assert elsewhere.ret == 0
    elsewhere.stdout.fnmatch_lines(
        ["warning: tracked: baseline not compared: the environment differs (torch '1.0' -> *"]
    )


def test_a_suspected_slowdown_is_measured_again_before_it_fails(
    pytester: pytest.Pytester, run_scenarios: Callable[..., RunResult], recorded_engine: list[dict[str, Any]]
) -> None:
    """Every measurement is the recorded profile, so the slowdown is the baseline's tenfold and nothing else."""
    pytester.makefile(".yaml", scenarios=scenario_file({"name": "tracked"}))
    run_scenarios("--mlestimate-save-baseline", "baseline", "--mlestimate-baseline-runs", "2")
    assert [call.get("cache", True) for call in recorded_engine] == [True, False]  # the second run past the cache
    recorded_engine.clear()
    path = pytester.path / "baseline" / "scenarios" / "tracked.json"
    stored = json.loads(path.read_text())
    for run in stored["runs"]:  # as if every timing had been ten times faster before this change
        run["metrics"] = {k: v / 10 if k in run["samples"] and v else v for k, v in run["metrics"].items()}
        run["samples"] = {k: [v / 10 for v in values] for k, values in run["samples"].items()}
    path.write_text(json.dumps(stored))

    result, report = run_scenarios("--mlestimate-compare", "baseline", "--mlestimate-junitxml", "junit.xml")

    assert result.ret == 1
    entry = by_name(report)["tracked"]
    assert len(entry["runs"]) == 2  # the cached measurement, then a fresh process before failing
    assert [call.get("cache", True) for call in recorded_engine] == [True, False]
    failed = [b for b in entry["budgets"] if b["passed"] is False]
    assert {b["metric"] for b in failed} == TIMINGS and {b["kind"] for b in failed} == {"regression"}
    assert all(b["runs"] == [2, 2] and b["interval"][0] > 0 for b in failed)
    result.stdout.fnmatch_lines(["*regressed: measured *, +*% (*% CI +*..+*%, runs 2:2, catches +*%)*"])
    result.stdout.fnmatch_lines(["measured 2 times in fresh processes before this verdict"])
    jsonschema.validate(report, SCHEMA)
    failure = junit_cases(pytester.path / "junit.xml")["tracked"].find("failure")
    assert failure is not None and "runs 2:2" in failure.get("message", "")


def test_a_missing_baseline_is_reported_and_fails_when_strict(
    pytester: pytest.Pytester, run_scenarios: Callable[..., RunResult]
) -> None:
    pytester.makefile(".yaml", scenarios=scenario_file({"name": "new"}))
    lenient, report = run_scenarios("--mlestimate-compare", "baseline")
    assert lenient.ret == 0
    assert by_name(report)["new"]["baseline"]["status"] == "missing"
    lenient.stdout.fnmatch_lines(["warning: new: no baseline for this scenario at *: not compared"])

    strict, report = run_scenarios("--mlestimate-compare", "baseline", "--mlestimate-strict-baseline")
    assert strict.ret == 1
    assert by_name(report)["new"]["outcome"] == "failed"
    strict.stdout.fnmatch_lines(["*no baseline at * (--mlestimate-strict-baseline)*"])


def test_github_summary_and_annotations(
    pytester: pytest.Pytester, run_scenarios: Callable[..., RunResult], monkeypatch: pytest.MonkeyPatch
) -> None:
    summary = pytester.path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    pytester.makefile(
        ".yaml",
        scenarios=scenario_file({"name": "good"}, {"name": "too-big", "budgets": {"peak_ram_memory": "1 MiB"}}),
    )
    result, _ = run_scenarios()
    result.stdout.fnmatch_lines(
        ["::error file=scenarios.yaml,line=4,title=scenario too-big failed::scenario 'too-big' *peak_ram_memory*"]
    )
    text = summary.read_text()
    assert "| `scenarios.yaml:3` `good` | ✅ passed |" in text
    assert "| `scenarios.yaml:4` `too-big` | ❌ failed |" in text
    assert "<details><summary><code>too-big</code>: failed</summary>" in text


def test_metrics_go_into_pytests_own_junitxml(
    pytester: pytest.Pytester, run_scenarios: Callable[..., RunResult]
) -> None:
    pytester.makefile(".yaml", scenarios=scenario_file({"name": "props"}))
    run_scenarios("--junitxml", "pytest.xml")
    case = junit_cases(pytester.path / "pytest.xml")["props"]
    properties = {p.get("name"): p.get("value") for p in case.iter("property")}
    assert float(properties["mlestimate.peak_ram_memory"]) > 0
    assert float(properties["mlestimate.forward_pass"]) > 0


def test_reports_are_written_when_the_run_is_interrupted(
    pytester: pytest.Pytester, run_scenarios: Callable[..., RunResult]
) -> None:
    pytester.makeconftest(
        "def pytest_runtest_setup(item):\n    if item.name == 'second':\n        raise KeyboardInterrupt\n"
    )
    pytester.makefile(".yaml", scenarios=scenario_file({"name": "first"}, {"name": "second"}))
    result, report = run_scenarios("--mlestimate-junitxml", "junit.xml", no_reraise_ctrlc=True)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    assert by_name(report)["first"]["outcome"] == "passed"
    assert "first" in junit_cases(pytester.path / "junit.xml")


def test_report_options_without_the_flag_are_a_usage_error(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_inprocess("--mlestimate-json", "report.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--mlestimate-json needs --mlestimate*"])


def test_an_alias_bomb_is_an_error_at_its_line_and_the_other_scenarios_run(
    pytester: pytest.Pytester, run_scenarios: Callable[..., RunResult]
) -> None:
    pytester.makefile(".yaml", bomb=alias_bomb())  # once held the run for minutes and 5 GB, then no report
    pytester.makefile(".yaml", named=alias_bomb(4, name_alias=True))  # a name of 9**3 values, not text
    pytester.makefile(".yaml", sibling=scenario_file({"name": "sibling"}))
    start = time.monotonic()
    result, report = run_scenarios("--mlestimate-junitxml", "junit.xml")
    assert time.monotonic() - start < 30
    result.assert_outcomes(passed=1, errors=3)
    result.stdout.fnmatch_lines_random(
        [
            "bomb.yaml:10: scenario file bomb.yaml is invalid: line 10: the aliases (*name) up to this one expand to"
            " more than 100,000 values, the most allowed (*",
            "named.yaml:*: scenario '#2' is invalid:",
            "  - name: expected text, got [[[*",
        ]
    )
    jsonschema.validate(report, SCHEMA)
    assert {(e["file"], e["name"], e["outcome"]) for e in report["scenarios"]} == {
        ("bomb.yaml", "file", "error"),
        ("named.yaml", "bomb", "error"),
        ("named.yaml", "#2", "error"),
        ("sibling.yaml", "sibling", "passed"),
    }
    assert (pytester.path / "report.json").stat().st_size < 50_000
    assert (pytester.path / "junit.xml").stat().st_size < 50_000


def test_a_second_scenarios_key_is_an_error_naming_both_lines(
    pytester: pytest.Pytester, run_scenarios: Callable[..., RunResult]
) -> None:
    text = scenario_file({"name": "roomy", "budgets": {"peak_ram_memory": "100 GiB"}})
    pytester.makefile(".yaml", twice=text + "scenarios:\n  - {name: tight, budgets: {peak_ram_memory: 1 MiB}}\n")
    result, report = run_scenarios()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["twice.yaml:4: scenario file twice.yaml is invalid: line 4: duplicate key 'scenarios' (first at line 2)*"]
    )
    assert [(e["name"], e["line"], e["outcome"]) for e in report["scenarios"]] == [("file", 4, "error")]


def test_an_unexpected_error_keeps_its_message_in_both_reports(
    pytester: pytest.Pytester, run_scenarios: Callable[..., RunResult], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_engine(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the profiler's shared memory is gone (code 999)")

    monkeypatch.setattr("pytest_mlestimate.plugin.items.estimate", broken_engine)
    pytester.makeconftest(
        "def pytest_runtest_teardown(item):\n"
        "    if item.name == 'teardown-too':\n"
        "        raise OSError('could not remove the scratch folder')\n"
    )
    pytester.makefile(".yaml", scenarios=scenario_file({"name": "setup-only"}, {"name": "teardown-too"}))
    result, report = run_scenarios("--mlestimate-junitxml", "junit.xml")
    result.assert_outcomes(errors=3)  # two setups, one teardown
    cases = junit_cases(pytester.path / "junit.xml")
    for name in ("setup-only", "teardown-too"):
        entry = by_name(report)[name]
        assert entry["outcome"] == "error"
        assert entry["message"].startswith("RuntimeError: the profiler's shared memory is gone (code 999)")
        error = cases[name].find("error")
        assert error is not None
        assert error.get("message", "").startswith("RuntimeError: the profiler's shared memory is gone (code 999)")
        assert "shared memory is gone" in (error.text or "")
