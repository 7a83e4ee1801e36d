"""The GitHub workflows pass actionlint: the ``actionlint`` binary when it is on PATH, otherwise its
WebAssembly build from the npm registry (``npm ci`` installs it from package.json)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
NODE_ACTIONLINT = ROOT / "node_modules" / "@tktco" / "node-actionlint" / "bin" / "node-actionlint.js"
PROBLEM = re.compile(r"^(?P<where>\S+:\d+:\d+) (?P<message>.*) \[ ?(?P<kind>[a-z-]+) ?\]$")


def custom_labels() -> list[str]:
    config = yaml.safe_load((ROOT / ".github" / "actionlint.yaml").read_text())
    return config["self-hosted-runner"]["labels"]


def lint_problems() -> list[str]:
    binary = shutil.which("actionlint")
    if binary:
        done = subprocess.run([binary, "-no-color", *map(str, WORKFLOWS)], capture_output=True, text=True, cwd=ROOT)
        return done.stdout.splitlines()
    node = shutil.which("node")
    if node is None or not NODE_ACTIONLINT.exists():
        pytest.skip("actionlint is not installed: run `npm ci` in the repository (or put actionlint on PATH)")
    folders = sorted({str(w.parent) for w in WORKFLOWS})
    pattern = folders[0] + "/*.yml" if len(folders) == 1 else "{" + ",".join(f + "/*.yml" for f in folders) + "}"
    done = subprocess.run([node, str(NODE_ACTIONLINT), pattern], capture_output=True, text=True, cwd=ROOT)
    assert f"Checking {len(WORKFLOWS)} workflow file(s)" in done.stdout, done.stdout + done.stderr
    # The npm build reads no config file: allow the custom runner labels of .github/actionlint.yaml here.
    allowed = [f'label "{label}" is unknown' for label in custom_labels()]
    found = [m for m in map(PROBLEM.match, done.stdout.splitlines()) if m]
    return [
        m.group(0)
        for m in found
        if not (m.group("kind") == "runner-label" and any(a in m.group("message") for a in allowed))
    ]


def test_workflows_pass_actionlint() -> None:
    assert [w.name for w in WORKFLOWS] == ["gpu-scenarios.yml", "tests.yml"]
    assert lint_problems() == []


def test_gpu_workflow_gates_on_scenarios_and_keeps_the_reports() -> None:
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "gpu-scenarios.yml").read_text())
    job = workflow["jobs"]["scenarios"]
    assert job["runs-on"] == ["self-hosted", "linux", "x64", "gpu"]
    run = next(step["run"] for step in job["steps"] if "--mlestimate" in step.get("run", ""))
    for option in ("--mlestimate-compare baselines", "--mlestimate-json", "--mlestimate-junitxml"):
        assert option in run
    uploads = [step for step in job["steps"] if step.get("uses", "").startswith("actions/upload-artifact")]
    assert "reports/mlestimate.json" in uploads[0]["with"]["path"]
    assert "reports/mlestimate.xml" in uploads[0]["with"]["path"]
    assert all(step.get("if") == "${{ !cancelled() }}" for step in uploads)


def test_a_broken_workflow_is_caught(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ${{ github.nope }}\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "WORKFLOWS", [broken])
    assert any('property "nope" is not defined' in problem for problem in lint_problems())
