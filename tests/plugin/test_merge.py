"""A run split over machines (pytest-split's ``--splits N --group K``) and ``mlestimate merge``: the merged
reports are one unsplit run's."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from pytest_mlestimate.commands.cli import main
from tests.plugin.conftest import scenario_file

SCHEMA = json.loads((Path(__file__).parents[2] / "pytest_mlestimate" / "report.schema.json").read_text())
pytest.importorskip("pytest_split", reason="the dev extra brings pytest-split: pip install -e '.[dev]'")

RUN_ONLY = ("duration", "measured")
"""What differs between two runs of the same scenario answered from the same profile: the time the test took
and where its figures came from (this run, or the cache another run filled)."""


def schema_problems(document: dict[str, Any]) -> list[str]:
    return sorted({error.message for error in jsonschema.Draft202012Validator(SCHEMA).iter_errors(document)})


def comparable(record: dict[str, Any]) -> dict[str, Any]:
    found = {k: v for k, v in record.items() if k not in RUN_ONLY}
    if found.get("details"):
        found["details"] = {k: v for k, v in found["details"].items() if k != "cache"}
    return found


def write_scenarios(pytester: pytest.Pytester) -> None:
    """Six scenarios in two files: four measured (one over its budget), one for a GPU, one invalid."""
    pytester.makefile(
        ".yaml",
        first=scenario_file(
            {"name": "b1", "batch_size": 1, "budgets": {"peak_ram_memory": "64 GiB"}},
            {"name": "b2", "batch_size": 2, "budgets": {"forward_pass": "10 min"}},
            {"name": "b3-too-big", "batch_size": 3, "budgets": {"peak_ram_memory": "1 KiB"}},
        ),
        second=scenario_file(
            {"name": "on-gpu", "device": "cuda"},
            {"name": "invalid", "batch_size": 0},
            {"name": "b4", "batch_size": 4},
        ),
    )


def test_three_shards_merge_into_the_unsplit_run(
    pytester: pytest.Pytester, cached: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The shards measure for real (an empty cache); the unsplit run then answers from the profiles they cached,
    so both hold the same measurements and any difference is the merge's. They measure in this process with their
    contention not judged: a profile measured while other processes took the CPUs is not cached, and the unsplit
    run would measure it again, to other figures."""
    from pytest_mlestimate.api import estimate
    from pytest_mlestimate.profiling import contention

    monkeypatch.setattr(contention, "judge", lambda *args, **kwargs: False)
    monkeypatch.setattr(
        "pytest_mlestimate.plugin.items.estimate",
        lambda scenario, **options: estimate(scenario, **options, isolate=False),
    )
    monkeypatch.setenv("MLESTIMATE_CACHE_DIR", str(tmp_path / "cache"))
    write_scenarios(pytester)
    common = ("--mlestimate", "-p", "no:cacheprovider", "-W", "ignore::pytest.PytestAssertRewriteWarning")
    shards = []
    for group in (1, 2, 3):
        shard = pytester.path / f"shard-{group}.json"
        result = pytester.runpytest_inprocess(
            *common, "--splits", "3", "--group", str(group), "--mlestimate-json", shard
        )
        assert "[pytest-split] Running group" in result.stdout.str()
        shards.append(shard)
    sizes = [len(json.loads(s.read_text())["scenarios"]) for s in shards]
    assert sizes == [2, 2, 2]

    whole = pytester.path / "whole.json"
    result = pytester.runpytest_inprocess(*common, "--mlestimate-json", whole, "--mlestimate-junitxml", "whole.xml")
    result.assert_outcomes(passed=3, failed=1, skipped=1, errors=1)

    merged = pytester.path / "merged.json"
    code = main(
        [
            "merge",
            *map(str, shards),
            "--json",
            str(merged),
            "--junitxml",
            str(pytester.path / "merged.xml"),
            "--markdown",
            str(pytester.path / "merged.md"),
            "--expect",
            "3",
        ]
    )
    assert code == 1  # a scenario failed and one could not be measured
    one, together = json.loads(whole.read_text()), json.loads(merged.read_text())
    assert schema_problems(together) == [] and schema_problems(one) == []
    assert [(r["file"], r["name"], r["outcome"]) for r in together["scenarios"]] == [
        (r["file"], r["name"], r["outcome"]) for r in one["scenarios"]
    ]
    assert [comparable(r) for r in together["scenarios"]] == [comparable(r) for r in one["scenarios"]]
    assert together["environment"] == one["environment"]
    measured = [r for r in together["scenarios"] if r["details"]]
    assert len(measured) == 4 and all(r["measured"] == "this run" for r in measured)
    assert all(r["measured"] != "this run" for r in one["scenarios"] if r["details"])  # the shards' profiles

    def cases(path: Path) -> list[tuple[str, str]]:
        root = ET.parse(path).getroot()
        return [(c.get("name"), ",".join(sorted(x.tag for x in c))) for c in root.iter("testcase")]

    assert cases(pytester.path / "merged.xml") == cases(pytester.path / "whole.xml")
    comment = (pytester.path / "merged.md").read_text()
    assert comment.index("`b3-too-big`") < comment.index("`invalid`") < comment.index("`b1`")


def shard_report(path: Path, *records: dict[str, Any]) -> Path:
    environment = {"gpu": None, "driver": None, "torch": "2", "torchvision": "0", "cpu": "x"}
    path.write_text(json.dumps({"schema_version": 1, "environment": environment, "scenarios": list(records)}))
    return path


def entry(name: str, outcome: str = "passed", file: str = "s.yaml", line: int = 3) -> dict[str, Any]:
    return {"name": name, "file": file, "line": line, "outcome": outcome, "message": None, "budgets": []}


def test_merge_orders_as_one_run_and_writes_the_job_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    one = shard_report(tmp_path / "1.json", entry("late", line=9), entry("z", file="t.yaml"))
    two = shard_report(tmp_path / "2.json", entry("early", line=4, outcome="skipped"))
    assert main(["merge", str(one), str(two), "--json", str(tmp_path / "m.json"), "--github-summary"]) == 0
    merged = json.loads((tmp_path / "m.json").read_text())
    assert [r["name"] for r in merged["scenarios"]] == ["early", "late", "z"]
    assert merged["environment"]["cpu"] == "x"  # no scenario was measured: the shards', not this machine's
    assert "| `s.yaml:4` `early` |" in summary.read_text()
    assert "merged 2 reports: 3 scenarios (2 passed, 1 skipped)" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("shards", "options", "problem"),
    [
        (["one", "same-twice"], ["--json", "OUT"], "scenario 'a' of s.yaml is in both"),
        (["one", "missing"], ["--json", "OUT"], "missing.json cannot be read"),
        (["not-json"], ["--json", "OUT"], "not-json.json is not JSON"),
        (["not-a-report"], ["--json", "OUT"], "is not a JSON report"),
        (["one"], ["--json", "OUT", "--expect", "3"], "1 shard reports given"),
        (["one"], [], "nothing to write"),
    ],
)
def test_merge_refuses_what_it_cannot_merge(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], shards: list[str], options: list[str], problem: str
) -> None:
    shard_report(tmp_path / "one.json", entry("a"))
    shard_report(tmp_path / "same-twice.json", entry("a"))
    (tmp_path / "not-json.json").write_text("{")
    (tmp_path / "not-a-report.json").write_text("[]")
    out = tmp_path / "out.json"
    arguments = [str(tmp_path / f"{name}.json") for name in shards] + [str(out) if o == "OUT" else o for o in options]
    assert main(["merge", *arguments]) == 2
    assert problem in capsys.readouterr().err
    assert not out.exists()


def test_merge_imports_no_torch(tmp_path: Path) -> None:
    shard = shard_report(tmp_path / "1.json", entry("a", outcome="failed"))
    script = (
        "import sys; sys.modules['torch'] = None; sys.modules['pydantic'] = None\n"
        "from pytest_mlestimate.commands.cli import main\n"
        f"sys.exit(main(['merge', {str(shard)!r}, '--json', {str(tmp_path / 'm.json')!r}, "
        f"'--junitxml', {str(tmp_path / 'm.xml')!r}, '--markdown', {str(tmp_path / 'm.md')!r}]))"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 1, done.stderr
    assert (tmp_path / "m.md").read_text().startswith("<!-- mlestimate-report -->")


def test_pytest_split_selects_the_same_scenarios_under_xdist(pytester: pytest.Pytester, cached: Path) -> None:
    """Each xdist worker collects and splits alike, so a shard runs the same scenarios with -n as without."""
    names = [f"s{n}" for n in range(7)]
    pytester.makefile(".yaml", scenarios=scenario_file(*({"name": n} for n in names)))
    split = ("--mlestimate", "--splits", "3", "--group", "2", "-p", "no:cacheprovider")
    alone = pytester.runpytest_inprocess(*split, "--mlestimate-json", "alone.json")
    assert alone.ret == 0
    workers = pytester.runpytest_subprocess(*split, "-n", "2", "--mlestimate-json", "workers.json")
    assert workers.ret == 0, workers.stdout.str()
    chosen = [
        sorted(r["name"] for r in json.loads((pytester.path / f"{run}.json").read_text())["scenarios"])
        for run in ("alone", "workers")
    ]
    assert chosen[0] == chosen[1] and 0 < len(chosen[0]) < len(names)


def test_a_crafted_name_or_run_count_makes_no_markup_in_the_summary_or_the_comment() -> None:
    from pytest_mlestimate.reports.github import step_summary
    from pytest_mlestimate.verdicts.budgets import Check

    name = "x [link](https://example.org) ![i](https://example.org/i.png) @team\n| --- |</details>"
    record = {"name": name, "file": "s.yaml", "line": 3, "outcome": "failed", "message": "```\n</details> @team"}
    summary = step_summary([record])
    row = next(line for line in summary.splitlines() if line.startswith("| `s.yaml:3`"))
    assert row.count(" | ") == summary.splitlines()[2].count(" | ")  # one row, as many cells as the header
    assert "`x [link](https://example.org)" in row  # in a code span: no link, image or mention
    assert "<summary><code>x [link](https://example.org) ![i](https://example.org/i.png) @team | --- |" in summary
    assert "&lt;/details&gt;</code>: failed</summary>" in summary
    assert "\n````\n```\n</details> @team" in summary  # the message cannot close its fence
    crafted = {"metric": "forward_pass", "kind": "regression", "limit": 0.1, "runs": ["[x](https://e.org)", 2]}
    assert Check.from_dict(crafted).runs is None
    assert Check.from_dict({**crafted, "runs": [5, 2]}).runs == (5, 2)


def test_the_summary_has_a_heading_for_every_column_it_shows() -> None:
    from pytest_mlestimate.reports.github import step_summary

    record = {"name": "n", "file": "s.yaml", "line": 3, "outcome": "passed", "cost": {"Cost per Training": 1.5}}
    header, rule, row = step_summary([record]).splitlines()[2:5]
    assert header.count("|") == rule.count("|") == row.count("|") and "cost" in header.lower()
