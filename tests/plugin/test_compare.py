"""``mlestimate compare OLD NEW``: the plugin's regression verdicts between two earlier runs, without measuring."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pytest_mlestimate.commands.cli import main
from pytest_mlestimate.core.metrics import METRIC
from pytest_mlestimate.verdicts.baseline import compare, save_baseline
from pytest_mlestimate.verdicts.regression import FAMILY_ALPHA, Run, compare_timing
from pytest_mlestimate.verdicts.verdict import Verdict
from tests.plugin.conftest import RunResult, by_name, scenario_file
from tests.plugin.test_baseline import ENV, SCENARIO, run

CPU_ENV = {**ENV, "gpu": None, "driver": None, "cuda": None, "device": "cpu"}


def report_of(*records: dict[str, Any]) -> dict[str, Any]:
    return {"schema_version": 1, "environment": ENV, "scenarios": list(records)}


def record(name: str = "frcnn b4", file: str = "scenarios/gpu.yaml", *runs: Run, **fields: Any) -> dict[str, Any]:
    """A scenario as the JSON report keeps it: each run's figures, no samples."""
    return {
        "name": name,
        "file": file,
        "line": 3,
        "outcome": "passed",
        "message": None,
        "scenario": SCENARIO,
        "details": {"fits": True, "failure": None, "environment": ENV},
        "runs": [{"metrics": dict(r.metrics), "contended": r.contended} for r in runs or (run(),)],
        **fields,
    }


def write(path: Path, document: dict[str, Any]) -> Path:
    path.write_text(json.dumps(document))
    return path


def compared(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    code = main(["compare", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def baseline(tmp_path: Path) -> Path:
    root = tmp_path / "baseline"
    save_baseline(
        root, "scenarios/gpu.yaml", "frcnn b4", SCENARIO, ENV, [run(s) for s in (0.98, 1.01, 1.0, 0.99, 1.02)]
    )
    return root


def test_a_report_that_regressed_against_a_baseline_folder_fails_with_the_plugins_table(
    baseline: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = write(tmp_path / "new.json", report_of(record("frcnn b4", "scenarios/gpu.yaml", run(peak_gpu_memory=9e9))))
    code, out, _ = compared(capsys, baseline, report)
    assert code == 1
    lines = out.splitlines()
    assert f"OLD: baseline folder {baseline} (1 scenario)" in lines
    assert (
        "scenario 'frcnn b4' (scenarios/gpu.yaml:3): peak_gpu_memory regressed: measured 8.38 GiB, "
        "+12.5% (runs 5:1), limit <= 7.82 GiB (baseline)"
    ) in lines
    assert [line.split()[0] for line in lines if line.endswith(("ok", "FAILED"))] == [
        "peak_gpu_memory",
        "peak_gpu_utilization",
        "forward_pass",
    ]
    assert any(line.startswith("peak_gpu_memory") and line.endswith("FAILED") for line in lines)
    assert lines[-1] == "1 failed"


def test_an_unchanged_run_passes_and_a_tolerance_lets_a_change_through(
    baseline: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    same = write(tmp_path / "same.json", report_of(record()))
    code, out, _ = compared(capsys, baseline, same)
    assert code == 0 and "scenario 'frcnn b4' (scenarios/gpu.yaml:3): passed" in out and out.endswith("1 passed\n")

    grown = write(
        tmp_path / "grown.json", report_of(record("frcnn b4", "scenarios/gpu.yaml", run(peak_gpu_memory=9e9)))
    )
    assert compared(capsys, baseline, grown, "--tolerance", "peak_gpu_memory=20%")[0] == 0
    assert compared(capsys, baseline, grown, "--tolerance", "peak_gpu_memory = 10 %")[0] == 1


def test_two_baseline_folders_compare_with_their_samples(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for folder, scale in (("before", 1.0), ("after", 1.25)):
        runs = [run(scale * s) for s in (0.98, 1.01, 1.0, 0.99, 1.02)]
        save_baseline(tmp_path / folder, "scenarios/gpu.yaml", "frcnn b4", SCENARIO, ENV, runs)
    code, out, _ = compared(capsys, tmp_path / "before", tmp_path / "after")
    assert code == 1
    assert "forward_pass regressed: measured 125.0 ms, +25.0% (" in out and "runs 5:5)" in out
    assert "measured 5 times in fresh processes before this verdict" in out


def test_scenarios_only_on_one_side_are_listed_and_fail_only_when_strict(
    baseline: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = write(tmp_path / "new.json", report_of(record("other", "scenarios/cpu.yaml")))
    code, out, _ = compared(capsys, baseline, report)
    assert code == 0
    assert "only in OLD: scenario 'frcnn b4' (scenarios/gpu.yaml)" in out
    assert "only in NEW: scenario 'other' (scenarios/cpu.yaml:3)" in out
    assert out.endswith("1 only in OLD, 1 only in NEW\n")
    code, out, _ = compared(capsys, baseline, report, "--strict")
    assert code == 1 and "only in NEW: scenario 'other' (scenarios/cpu.yaml:3) (fails: --strict)" in out


def test_a_report_from_another_root_still_pairs_by_file_and_name(
    baseline: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """pytest run inside scenarios/ writes 'gpu.yaml' where the baseline, anchored at the project, has
    'scenarios/gpu.yaml'."""
    report = write(tmp_path / "new.json", report_of(record("frcnn b4", "gpu.yaml", run(peak_gpu_memory=9e9))))
    code, out, _ = compared(capsys, baseline, report)
    assert code == 1 and "only in" not in out


def test_what_cannot_be_compared_is_said_and_does_not_fail(
    baseline: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    elsewhere = record(details={"fits": True, "environment": {**ENV, "torch": "2.12"}})
    skipped = record("skipped", runs=[], outcome="skipped", message="device 'cuda' asked for, but no CUDA device")
    save_baseline(baseline, "scenarios/gpu.yaml", "skipped", SCENARIO, ENV, [run()])
    code, out, _ = compared(capsys, baseline, write(tmp_path / "new.json", report_of(elsewhere, skipped)))
    assert code == 0
    assert "scenario 'frcnn b4' (scenarios/gpu.yaml:3): nothing checked" in out
    assert "warning: baseline not compared: the environment differs (torch '2.11' -> '2.12')" in out
    assert "warning: not compared: NEW was not measured (skipped: device 'cuda' asked for, but no CUDA device)" in out
    assert out.endswith("2 not compared\n")


def test_a_model_that_no_longer_fits_fails(baseline: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    oom = record(details={"fits": False, "failure": "out of memory at batch 4", "environment": ENV})
    code, out, _ = compared(capsys, baseline, write(tmp_path / "new.json", report_of(oom)))
    assert code == 1 and "scenario 'frcnn b4' (scenarios/gpu.yaml:3): out of memory at batch 4" in out


def test_reports_without_samples_judge_timings_on_their_runs_and_an_assumed_floor(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One run a side and no samples: the noise is unknown, so a CPU timing needs a change far past the 10 %
    drift floor to fail, one short of it is inconclusive (never ok), and the output says on what the verdict
    rests."""

    def cpu_report(name: str, scale: float) -> Path:
        figures = {"forward_pass": 0.1 * scale, "peak_ram_memory": 1e9}
        entry = record(details={"fits": True, "environment": CPU_ENV}, runs=[{"metrics": figures, "contended": False}])
        return write(tmp_path / name, {**report_of(entry), "environment": CPU_ENV})

    old = cpu_report("old.json", 1.0)
    code, out, _ = compared(capsys, old, cpu_report("slower.json", 1.2))
    assert code == 0 and re.search(r"^forward_pass +120.0 ms .* INCONCLUSIVE$", out, re.MULTILINE)
    assert (
        "holds 1 run: the noise between processes is unknown, so timing verdicts rest on an assumed 10% spread "
        "between runs (neither side kept samples); compare against a baseline saved with --mlestimate-baseline-runs 5"
    ) in out
    code, out, _ = compared(capsys, old, cpu_report("much-slower.json", 1.6))
    assert code == 1 and "forward_pass regressed" in out


def test_a_report_whose_runs_keep_their_samples_gets_the_plugins_very_table(
    baseline: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The command and the plugin share one comparison: given the same runs, samples included, the same rows."""
    runs = [run(1.1), run(1.3, peak_gpu_memory=8.2e9)]
    plugin = compare(baseline, "scenarios/gpu.yaml", "frcnn b4", SCENARIO, ENV, runs, {})
    entry = record(runs=[r.to_dict() for r in runs])
    code, out, _ = compared(capsys, baseline, write(tmp_path / "new.json", report_of(entry)))
    assert code == 1
    expected = Verdict("frcnn b4", "scenarios/gpu.yaml:3", checks=plugin.checks, runs=runs).render()
    assert expected in out and "CI" in expected


def test_a_run_without_samples_is_not_taken_for_a_precise_one() -> None:
    """Its within-run error is unknown, not zero: the interval is the one it would have with the baseline's
    own spread, not a narrower one."""
    timing = METRIC["forward_pass"]
    old = [run(1.0)]
    with_samples = compare_timing(timing, old, [run(1.3)], 0.02, FAMILY_ALPHA)
    without = compare_timing(timing, old, [Run(run(1.3).metrics, {})], 0.02, FAMILY_ALPHA)
    assert Run(run().metrics, {}).relative_error("forward_pass") is None
    assert with_samples is not None and without is not None
    assert without.interval == pytest.approx(with_samples.interval)


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (
            lambda tmp: tmp / "missing.json",
            "NEW {path} does not exist: give a JSON report written by --mlestimate-json",
        ),
        (lambda tmp: write(tmp / "list.json", []), "NEW {path} is not a JSON report (it has no 'scenarios' list)"),
        (lambda tmp: (tmp / "bad.json").write_text("{oops") and tmp / "bad.json", "NEW {path} is not JSON ("),
        (lambda tmp: write(tmp / "v9.json", {"schema_version": 9, "scenarios": []}), "schema version 9; this version"),
        (lambda tmp: (tmp / "empty").mkdir() or tmp / "empty", "NEW {path} holds no baseline files (*.json): give"),
        (
            lambda tmp: (tmp / "reports").mkdir() or write(tmp / "reports" / "r.json", report_of()).parent,
            "NEW {path} holds no baselines, only other JSON files (baseline {path}/r.json has format None",
        ),
        (
            lambda tmp: next((tmp / "baseline").rglob("*.json")),
            "NEW {path} is one scenario's baseline file: give the whole folder --mlestimate-save-baseline wrote",
        ),
    ],
    ids=["missing", "not-a-report", "not-json", "newer-schema", "empty-folder", "reports-folder", "one-baseline-file"],
)
def test_input_that_cannot_be_compared_exits_2_naming_it(
    baseline: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    make: Callable[[Path], Path],
    expected: str,
) -> None:
    path = make(tmp_path)
    code, out, err = compared(capsys, baseline, path)
    assert code == 2 and out == ""
    assert err.startswith("mlestimate compare: ") and expected.format(path=path) in err
    assert "Traceback" not in err


def test_a_bad_tolerance_exits_2_with_the_plugins_message(baseline: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = compared(capsys, baseline, baseline, "--tolerance", "forward_pas=20%")
    assert code == 2 and "--tolerance: tolerances.forward_pas: unknown metric 'forward_pas': did you mean" in err
    code, _, err = compared(capsys, baseline, baseline, "--tolerance", "forward_pass 20%")
    assert code == 2 and "is not 'metric = value'" in err


def test_comparing_loads_neither_torch_nor_the_engine(baseline: Path, tmp_path: Path) -> None:
    report = write(tmp_path / "new.json", report_of(record("frcnn b4", "scenarios/gpu.yaml", run(1.3))))
    code = (
        "import sys; from pytest_mlestimate.commands.cli import main; "
        "code = main(['compare', sys.argv[1], sys.argv[2]]); "
        "heavy = ('torch', 'torchvision', 'pydantic', 'pytest_mlestimate.profiling.profiler', "
        "'pytest_mlestimate.api'); "
        "print('loaded', code, sorted(m for m in heavy if m in sys.modules))"
    )
    found = subprocess.run(
        [sys.executable, "-c", code, str(baseline), str(report)], capture_output=True, text=True, check=True
    )
    assert found.stdout.splitlines()[-1] == "loaded 1 []"  # it did compare: forward_pass regressed


# The plugin and the command on the same data -----------------------------------------------------------


def verdicts_of(output: str, name: str) -> dict[str, str]:
    """metric -> ok / FAILED from the verdict table that follows ``scenario 'name'``."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if f"scenario '{name}'" in line and "(" in line)
    found = {}
    for line in lines[start + 2 :]:
        cells = line.split()
        if not cells or cells[0] not in METRIC:
            break
        found[cells[0]] = cells[-1]
    return found


def test_the_command_and_the_plugin_agree_on_the_same_runs(
    pytester: pytest.Pytester,
    run_scenarios: Callable[..., RunResult],
    capsys: pytest.CaptureFixture[str],
    recorded_engine: list[dict[str, Any]],
) -> None:
    """Every measurement is the recorded profile: the same runs, whatever the load of the machine."""
    pytester.makefile(".yaml", scenarios=scenario_file({"name": "tracked"}))
    saved, _ = run_scenarios("--mlestimate-save-baseline", "baseline", "--mlestimate-baseline-runs", "2")
    assert saved.ret == 0
    folder, report = pytester.path / "baseline", pytester.path / "report.json"

    same, _ = run_scenarios("--mlestimate-compare", "baseline")
    code, out, _ = compared(capsys, folder, report)
    assert (same.ret, code) == (0, 0)
    assert "scenario 'tracked' (scenarios.yaml:3): passed" in out
    assert set(verdicts_of(out, "tracked").values()) == {"ok"}

    path = folder / "scenarios" / "tracked.json"
    stored = json.loads(path.read_text())
    for saved_run in stored["runs"]:
        saved_run["metrics"]["peak_ram_memory"] /= 2  # as if the model needed half the RAM before this change
    path.write_text(json.dumps(stored))
    worse, document = run_scenarios("--mlestimate-compare", "baseline")
    failed_in_plugin = {b["metric"] for b in by_name(document)["tracked"]["budgets"] if b["passed"] is False}
    code, out, _ = compared(capsys, folder, report)

    assert (worse.ret, code) == (1, 1)
    assert failed_in_plugin == {"peak_ram_memory"}
    verdicts = verdicts_of(out, "tracked")
    assert {metric for metric, result in verdicts.items() if result == "FAILED"} == failed_in_plugin
    assert verdicts == verdicts_of(worse.stdout.str(), "tracked")
    headline = next(line for line in out.splitlines() if line.startswith("scenario 'tracked'"))
    assert headline in worse.stdout.lines  # the very line the failed test shows


def test_the_command_and_the_plugin_agree_on_a_slowdown_measured_twice(
    pytester: pytest.Pytester,
    run_scenarios: Callable[..., RunResult],
    capsys: pytest.CaptureFixture[str],
    recorded_engine: list[dict[str, Any]],
) -> None:
    """A suspected slowdown is measured again by the plugin; the report keeps both runs (without their
    samples) and the command judges them against the baseline's: the same timings fail. Every measurement is
    the recorded profile, so the slowdown is the baseline's tenfold and nothing else."""
    pytester.makefile(".yaml", scenarios=scenario_file({"name": "tracked"}))
    run_scenarios("--mlestimate-save-baseline", "baseline", "--mlestimate-baseline-runs", "2")
    path = pytester.path / "baseline" / "scenarios" / "tracked.json"
    stored = json.loads(path.read_text())
    for saved_run in stored["runs"]:  # as if every timing had been ten times faster before this change
        saved_run["metrics"] = {
            k: v / 10 if k in saved_run["samples"] and v else v for k, v in saved_run["metrics"].items()
        }
        saved_run["samples"] = {k: [v / 10 for v in values] for k, values in saved_run["samples"].items()}
    path.write_text(json.dumps(stored))

    slower, document = run_scenarios("--mlestimate-compare", "baseline")
    code, out, _ = compared(capsys, pytester.path / "baseline", pytester.path / "report.json")

    assert (slower.ret, code) == (1, 1)
    assert len(by_name(document)["tracked"]["runs"]) == 2
    assert [call.get("cache", True) for call in recorded_engine][-2:] == [True, False]  # again, past the cache
    failed_in_plugin = {b["metric"] for b in by_name(document)["tracked"]["budgets"] if b["passed"] is False}
    verdicts = verdicts_of(out, "tracked")
    assert {metric for metric, result in verdicts.items() if result == "FAILED"} == failed_in_plugin
    assert failed_in_plugin == {name for name, metric in METRIC.items() if metric.noise == "timing"}
    assert "runs 2:2)" in out and "measured 2 times in fresh processes before this verdict" in out
