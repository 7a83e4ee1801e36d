"""``--mlestimate-against REF``: a throwaway git repository with a model package in two commits, judged by a real
``pytest --mlestimate`` process, the base built from the base commit's own code in a temporary worktree.

The model's forward and backward passes sleep a set time, so that its step time is set by the code, not by the
machine: a slowdown of 3x is unmistakable however busy the machine is, and every timing is decided in few pairs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pytest_mlestimate.verdicts.paired import LOOKS

MODEL = """import time

import torch

from pytest_mlestimate.tiny import TinyDetector

from mymodels.backbone import PAUSE


class SleepyGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, loss):
        return loss.clone()

    @staticmethod
    def backward(ctx, grad):
        time.sleep(PAUSE)
        return grad


class Sleepy(TinyDetector):
    def forward(self, *args, **kwargs):
        time.sleep(PAUSE)
        found = super().forward(*args, **kwargs)
        if self.training:
            found["loss_classifier"] = SleepyGradient.apply(found["loss_classifier"])
        return found


def build():
    return Sleepy()
"""
SCENARIOS = """defaults: {task_type: detection, architecture: "mymodels.net:build", dataset_size: 100, batch_size: 2,
  image_size: [64, 64], device: cpu, warmup_iterations: 1, measure_iterations: 3, breakdown_depth: 0}
scenarios:
%s
"""


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def commit(repo: Path, files: dict[str, str], message: str) -> None:
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.email", "ci@example.com")
    git(root, "config", "user.name", "CI")
    return root


def base_files(pause: float, names: tuple[str, ...] = ("kept",)) -> dict[str, str]:
    return {
        "mymodels/__init__.py": "",
        "mymodels/net.py": MODEL,
        "mymodels/backbone.py": f"PAUSE = {pause}\n",
        "scenarios/models.yaml": SCENARIOS % "\n".join(f"  - name: {name}" for name in names),
        "notes.txt": "first\n",
    }


def run(repo: Path, *options: str) -> tuple[int, dict[str, Any], str]:
    env = os.environ | {"PYTHONPATH": str(repo), "MLESTIMATE_CACHE_DIR": str(repo.parent / "cache")}
    env.pop("GITHUB_STEP_SUMMARY", None)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--mlestimate", "scenarios",
         "--mlestimate-json", "report.json", "--mlestimate-junitxml", "report.xml", "--mlestimate-against", "HEAD~1",
         *options],
        cwd=repo, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    report = json.loads((repo / "report.json").read_text()) if (repo / "report.json").exists() else {}
    return done.returncode, report, done.stdout + done.stderr


def against_checks(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {check["metric"]: check for check in record["budgets"] if check["kind"] == "against"}


def test_a_slower_backbone_at_the_candidate_fails_against_the_base_commit(repo: Path) -> None:
    commit(repo, base_files(0.01), "base")
    commit(repo, {"mymodels/backbone.py": "PAUSE = 0.04\n"}, "a slower backbone")

    code, report, output = run(repo)

    assert code == 1, output
    (record,) = report["scenarios"]
    assert record["against"]["status"] == "compared" and record["against"]["ref"] == "HEAD~1"
    checks = against_checks(record)
    regressed = [check for check in checks.values() if check["decision"] == "regressed"]
    assert regressed and all(check["passed"] is False for check in regressed)
    # the base was measured from the base commit's code: 4x the sleep of the forward pass
    assert max(check["value"] / check["baseline"] for check in regressed) > 1.5
    total = checks["total_training_time"]  # on a loaded machine it may stay undecided, but it never passes
    assert total["decision"] in ("regressed", "inconclusive") and total["passed"] is not True
    assert total["detectable"] > 0  # what it could catch is stated, however noisy the machine made it
    assert record["against"]["pairs"] <= LOOKS[-1]
    assert f"{regressed[0]['metric']} regressed" in output and "against HEAD~1" in output
    junit = (repo / "report.xml").read_text()
    assert f"{regressed[0]['metric']} against the base: FAILED" in junit and "catches +" in junit
    assert git(repo, "worktree", "list").count("\n") == 0  # the base's worktree is gone


def test_an_unchanged_model_is_not_failed_and_added_and_removed_scenarios_are_named(repo: Path) -> None:
    commit(repo, base_files(0.01, ("kept", "dropped")), "base")
    candidate = base_files(0.01, ("kept", "new"))
    candidate["notes.txt"] = "an unrelated change\n"
    commit(repo, candidate, "rename a scenario, touch a note")

    wide = [
        f"--mlestimate-tolerance={metric}=60 %"
        for metric in ("total_training_time", "forward_pass", "backward_pass", "inference_1_image", "inference_batch")
    ]
    code, report, output = run(repo, *wide)  # wide enough for every timing to be cleared at an early look

    by_name = {record["name"]: record for record in report["scenarios"]}
    kept = by_name["kept"]
    decisions = {check["decision"] for check in against_checks(kept).values()}
    assert "regressed" not in decisions, output
    assert code == 0, output
    assert by_name["new"]["against"]["status"] == "added"
    assert "the scenario was added" in " ".join(by_name["new"]["warnings"])
    assert "removed since HEAD~1: scenarios/models.yaml::dropped" in output
    dropped = by_name["dropped"]  # measured at the base once, its figures the base's
    assert dropped["against"]["status"] == "removed" and dropped["outcome"] == "passed"
    assert len(dropped["runs"]) == 1 and dropped["runs"][0]["metrics"]["total_training_time"] > 0
    assert "removed since HEAD~1: measured there only" in " ".join(dropped["warnings"])


def test_a_revision_that_does_not_exist_is_a_usage_error_naming_it(repo: Path) -> None:
    commit(repo, base_files(0.01), "only commit")
    code, _, output = run(repo)
    assert code == 4, output
    assert "'HEAD~1' is not a revision of" in output


def test_the_python_api_measures_the_same_side_by_side(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_mlestimate import against_commit

    commit(repo, base_files(0.04), "base")
    commit(repo, {"mymodels/backbone.py": "PAUSE = 0.01\n"}, "a faster backbone")
    monkeypatch.syspath_prepend(str(repo))
    monkeypatch.chdir(repo)
    scenario = {
        "task_type": "detection", "architecture": "mymodels.net:build", "dataset_size": 100, "batch_size": 2,
        "image_size": [64, 64], "device": "cpu", "warmup_iterations": 1, "measure_iterations": 3,
        "breakdown_depth": 0,
    }  # fmt: skip
    result = against_commit(scenario, "HEAD~1", tolerances={"total_training_time": 0.5})
    total = next(t for t in result.timings if t.metric == "total_training_time")
    assert total.decision == "no regression" and total.value < 0.6 * total.base
    assert result.commit == git(repo, "rev-parse", "HEAD~1")


def test_the_command_compares_scenario_files_with_the_base_and_fails_a_slowdown(repo: Path) -> None:
    commit(repo, base_files(0.01, ("kept", "dropped")), "base")
    commit(repo, {**base_files(0.04, ("kept",)), "notes.txt": "slower\n"}, "a slower backbone, one scenario fewer")
    env = os.environ | {"PYTHONPATH": str(repo), "MLESTIMATE_CACHE_DIR": str(repo.parent / "cache")}
    done = subprocess.run(
        [sys.executable, "-m", "pytest_mlestimate.commands.cli", "compare", "--against", "HEAD~1"],
        cwd=repo, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert "against HEAD~1 (" in done.stdout and "measured side by side" in done.stdout
    assert "scenario 'kept' (scenarios/models.yaml:" in done.stdout
    assert "total_training_time" in done.stdout and "regressed" in done.stdout
    assert (
        "removed since HEAD~1: scenarios/models.yaml::dropped, measured at HEAD~1: total training time" in done.stdout
    )
    assert "1 failed, 0 passed" in done.stdout
    assert git(repo, "worktree", "list").count("\n") == 0


def test_the_command_names_a_missing_revision_and_a_missing_path(
    repo: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from pytest_mlestimate.commands.cli import main

    commit(repo, base_files(0.01), "only commit")
    monkeypatch.chdir(repo)
    assert main(["compare", "--against", "HEAD~1"]) == 2
    assert "--against: 'HEAD~1' is not a revision of" in capsys.readouterr().err
    assert main(["compare", "--against", "HEAD", "nowhere.yaml"]) == 2
    assert "no such scenario file or folder: nowhere.yaml" in capsys.readouterr().err
    assert main(["compare", "only-one.json"]) == 2
    assert "give OLD and NEW (or --against REF), not 1 path(s)" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        main(["compare", "--against", "HEAD", "--timeout", "nan"])
    assert usage.value.code == 2 and "--timeout" in capsys.readouterr().err
