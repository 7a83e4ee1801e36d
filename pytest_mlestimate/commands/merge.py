"""``mlestimate merge SHARD.json... --json OUT.json``: one run's reports from the JSON reports of its shards.

CI splits the scenarios over several machines (``pytest --mlestimate --splits N --group K``, pytest-split); each
writes its own JSON report. This puts their scenarios together, in the order one run would have written them,
and writes the reports one run writes, with the plugin's own writers: JSON, JUnit XML, the pull-request comment
(Markdown) and the GitHub job summary. Each scenario keeps its record as its shard wrote it (its verdict, its
figures, where it was measured): merging measures and judges nothing. Imports no torch.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pytest_mlestimate.core.errors import brief


class MergeError(ValueError):
    """A shard report that cannot be merged; the message names the file."""


def add_parser(commands: Any) -> None:
    merge = commands.add_parser(
        "merge",
        help="merge the JSON reports of a run split over several machines into one run's reports",
        description="Merge the JSON reports that the shards of one run wrote (--mlestimate-json) into the reports "
        "one unsplit run writes. Exits 0 when every scenario passed or was skipped, 1 when one failed or could not "
        "be measured, 2 when a report cannot be read or two reports hold the same scenario.",
    )
    merge.add_argument("shards", type=Path, nargs="+", metavar="SHARD.json", help="a shard's JSON report")
    merge.add_argument("--json", type=Path, metavar="PATH", help="write the merged JSON report to PATH")
    merge.add_argument("--junitxml", type=Path, metavar="PATH", help="write the merged JUnit XML report to PATH")
    merge.add_argument("--markdown", type=Path, metavar="PATH", help="write the pull-request comment to PATH")
    merge.add_argument(
        "--github-summary",
        action="store_true",
        help="append the scenario table to the GitHub job summary ($GITHUB_STEP_SUMMARY)",
    )
    merge.add_argument(
        "--full-report",
        metavar="TEXT",
        help="where the comment says the full report is, e.g. 'the mlestimate-reports artifact'",
    )
    merge.add_argument(
        "--expect",
        type=int,
        metavar="N",
        help="the number of shard reports the run should have: fewer is an error (a shard that wrote none)",
    )
    merge.set_defaults(run=merge_command)


def read_shard(path: Path) -> dict[str, Any]:
    from pytest_mlestimate.reports.json_report import ReportError, read_report

    try:
        return read_report(path, "the reports --mlestimate-json wrote")
    except ReportError as exc:
        raise MergeError(str(exc)) from None


def merge_records(shards: Sequence[tuple[Path, dict[str, Any]]]) -> list[dict[str, Any]]:
    """The shards' scenarios in the order one run writes them (file, line, name); a scenario in two shards is an
    error, as the split would then have run it twice."""
    seen: dict[tuple[str, str], Path] = {}
    records = []
    for path, document in shards:
        for record in document["scenarios"]:
            key = (record["file"], record["name"])
            if key in seen:
                raise MergeError(
                    f"scenario {brief(record['name'])} of {record['file']} is in both {seen[key]} and {path}: give "
                    "each shard's report once, from shards run with the same --splits"
                )
            seen[key] = path
            records.append(record)
    return sorted(records, key=lambda r: (r["file"], r.get("line") or 0, r["name"]))


def write_merged_json(path: Path, shards: Sequence[tuple[Path, dict[str, Any]]], records: list[dict[str, Any]]) -> None:
    """The JSON report, by the plugin's writer: its environment is the first measured scenario's, as in one run.
    When no shard measured anything, the environment is the first shard's, not this machine's (merging runs on
    another machine than the shards)."""
    from pytest_mlestimate.core.files import write_atomically
    from pytest_mlestimate.reports.json_report import build_document, write_json

    if any((record.get("details") or {}).get("environment") for record in records):
        write_json(path, records)
        return
    document = {**build_document(records), "environment": shards[0][1].get("environment") or {}}
    write_atomically(path, json.dumps(document, indent=2, default=str) + "\n")


def environments_differ(shards: Sequence[tuple[Path, dict[str, Any]]]) -> list[str]:
    """Lines naming the fingerprint keys on which the shards' machines differ."""
    from pytest_mlestimate.verdicts.run_environment import differences

    first_path, first = shards[0]
    return [
        f"{key}: {brief(one)} ({first_path}) but {brief(other)} ({path})"
        for path, document in shards[1:]
        for key, one, other in differences(first.get("environment") or {}, document.get("environment") or {})
    ]


def tally(records: Sequence[dict[str, Any]]) -> str:
    counts: dict[str, int] = {}
    for record in records:
        outcome = record.get("outcome") or "not run"
        counts[outcome] = counts.get(outcome, 0) + 1
    return ", ".join(f"{count} {outcome}" for outcome, count in sorted(counts.items())) or "none"


def merge_command(args: argparse.Namespace) -> int:
    from pytest_mlestimate.reports import github
    from pytest_mlestimate.reports.junit_report import write_junit
    from pytest_mlestimate.reports.markdown import write_markdown

    def refuse(message: str) -> int:
        print(f"mlestimate merge: {message}", file=sys.stderr)
        return 2

    if not (args.json or args.junitxml or args.markdown or args.github_summary):
        return refuse("nothing to write: give --json, --junitxml, --markdown or --github-summary")
    from pytest_mlestimate.core.files import same_file

    for output in (args.json, args.junitxml, args.markdown):
        reads = next((shard for shard in args.shards if output and same_file(output, shard)), None)
        if reads is not None:
            return refuse(f"{output} is a shard report it reads: give another output path")
    if args.expect is not None and len(args.shards) != args.expect:
        given = ", ".join(map(str, args.shards))
        return refuse(f"{len(args.shards)} shard reports given ({given}), {args.expect} expected: a shard wrote none")
    try:
        shards = [(path, read_shard(path)) for path in args.shards]
        records = merge_records(shards)
    except MergeError as exc:
        return refuse(str(exc))
    for line in environments_differ(shards):
        print(f"mlestimate merge: warning: the shards ran on different machines: {line}", file=sys.stderr)
    if args.json:
        write_merged_json(args.json, shards, records)
    if args.junitxml:
        write_junit(args.junitxml, records)
    if args.markdown:
        write_markdown(args.markdown, records, args.full_report)
    if args.github_summary:
        summary = os.environ.get("GITHUB_STEP_SUMMARY")
        if summary:
            with open(summary, "a", encoding="utf-8") as handle:
                handle.write(github.step_summary(records))
        else:
            print("mlestimate merge: warning: --github-summary: GITHUB_STEP_SUMMARY is not set", file=sys.stderr)
    reports = "1 report" if len(shards) == 1 else f"{len(shards)} reports"
    print(f"merged {reports}: {len(records)} scenarios ({tally(records)})")
    for path in (args.json, args.junitxml, args.markdown):
        if path:
            print(f"report written: {path}")
    return 1 if any(r.get("outcome") in ("failed", "error", None) for r in records) else 0
