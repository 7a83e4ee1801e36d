"""``mlestimate history PATH``: a scenario's figures over commits from a history file (``--mlestimate-history``)
or the PostgreSQL database a fleet records its runs in (``postgresql://...``), the steps in them (``steps.py``),
and github-action-benchmark's JSON (``--export-benchmark-action``).

Importing this module loads neither torch nor the engine."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pytest_mlestimate.core.errors import printable
from pytest_mlestimate.core.metrics import Metric
from pytest_mlestimate.core.units import UnitError, format_quantity, parse_fraction
from pytest_mlestimate.reports.benchmark_action import benchmark_action
from pytest_mlestimate.stores.interfaces import run_history_at
from pytest_mlestimate.stores.postgres import is_database_url
from pytest_mlestimate.stores.run_history import HistoryError, named
from pytest_mlestimate.verdicts.change_points import MIN_SEGMENT, Step, Steps, find_steps, step_floor
from pytest_mlestimate.verdicts.history import Point, Series, metric_named, series
from pytest_mlestimate.verdicts.run_environment import device_kind, machine_of

DEFAULT_METRICS = ("total_training_time", "inference_batch", "forward_pass", "peak_ram_memory", "peak_gpu_memory")
"""The metric shown when none is asked for: the first of these the scenario has."""
SHOWN_ROWS = 50
AROUND = 2
"""Rows shown on each side of a step in the text output, besides the last rows."""


def add_parser(commands: Any) -> None:
    history = commands.add_parser(
        "history",
        help="a scenario's figures over commits and where they stepped, from a --mlestimate-history file",
        description="List a scenario's figures over the runs recorded in PATH (written by pytest --mlestimate "
        "--mlestimate-history PATH; a postgresql:// URL names a database a fleet records in), on the environment it "
        "was last measured on, and name the commits where a metric stepped by more than its noise floor. With "
        "--export-benchmark-action, write each scenario's latest figures for github-action-benchmark instead. "
        "Exits 0, or 2 when PATH or an option cannot be used.",
    )
    history.add_argument(
        "path",
        type=location,
        metavar="PATH",
        help="a history file written by --mlestimate-history, or the postgresql:// URL of a database it recorded in",
    )
    history.add_argument(
        "--scenario", action="append", default=[], metavar="NAME", help="only this scenario (NAME or FILE::NAME)"
    )
    history.add_argument(
        "--metric", metavar="KEY", help="a metric, e.g. forward_pass or 'Total Training Time' (default: total time)"
    )
    history.add_argument("--json", action="store_true", help="print JSON instead of the tables")
    history.add_argument(
        "--min-step",
        metavar="PERCENT",
        help="least step size reported, e.g. '5 %%' (default: the metric's tolerance, and for timings the drift "
        "a machine shows alone: 10 %% on a CPU, 1 %% on a GPU)",
    )
    history.add_argument("--last", type=int, default=SHOWN_ROWS, metavar="N", help="rows shown (default 50)")
    history.add_argument(
        "--export-benchmark-action",
        type=Path,
        metavar="OUT",
        help="write the latest figures of each scenario to OUT as github-action-benchmark's custom JSON",
    )
    direction = history.add_mutually_exclusive_group()
    direction.add_argument(
        "--smaller-is-better",
        dest="bigger",
        action="store_false",
        help="export the figures better smaller: times, memory, energy (the default; tool customSmallerIsBetter)",
    )
    direction.add_argument(
        "--bigger-is-better",
        dest="bigger",
        action="store_true",
        help="export the figures better bigger: GPU utilisation, the largest batch (tool customBiggerIsBetter)",
    )
    history.set_defaults(run=history_command, bigger=False)


def location(text: str) -> Path | str:
    """A history's location as given: a database URL as it is, anything else as a path."""
    return text if is_database_url(text) else Path(text)


def _default_metric(path: Path | str, name: str) -> Metric:
    for candidate in DEFAULT_METRICS:
        if series(path, name, candidate).points:
            return metric_named(candidate)
    return metric_named(DEFAULT_METRICS[0])


def _floor(args: argparse.Namespace, found: Series) -> float:
    if args.min_step is not None:
        return parse_fraction(args.min_step)
    return step_floor(found.metric, device_kind(found.environment))


def _environment_text(environment: Mapping[str, Any]) -> str:
    return f"{machine_of(environment)}, torch {environment.get('torch') or '?'}"


def _when(point: Point) -> str:
    return point.recorded_at.replace("T", " ").removesuffix("+00:00")


def _row(point: Point, metric: Metric, marks: str) -> tuple[str, ...]:
    when = _when(point)
    value = format_quantity(point.value, metric.unit)
    cached = " (cache)" if point.measured and point.measured != "this run" else ""
    return (point.short, point.branch or "-", when, value + cached, marks)


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    header = ("commit", "branch", "recorded (UTC)", "value", "")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in [header, *rows]]


def _step_lines(found: Series, step: Step) -> list[str]:
    points, metric = found.points, found.metric
    first, last_before = points[step.index], points[step.index - 1]
    before, after = format_quantity(step.before, metric.unit), format_quantity(step.after, metric.unit)
    lines = [
        f"step: {step.size:+.1%} at commit {first.short} ({first.branch or '-'}, {_when(first)} UTC): {before} -> "
        f"{after} (medians of {step.counts[0]} and {step.counts[1]} runs, Mann-Whitney p = {step.p_value:.1g})",
        f"  last run before it: commit {last_before.short} ({last_before.branch or '-'}, {_when(last_before)} UTC)",
    ]
    if first.commit and last_before.commit and first.commit != last_before.commit:
        lines.append(f"  the commits in between: git log --oneline {last_before.short}..{first.short}")
    return lines


def render(found: Series, steps: Steps, last: int) -> str:
    metric, points = found.metric, found.points
    head = (
        f"== {found.file}::{found.name}: {metric.name} ({metric.unit_text}) on {_environment_text(found.environment)}"
        f", {len(points)} runs"
    )
    if found.elsewhere:
        head += f" ({found.elsewhere} on other environments left out)"
    lines = [head]
    if not points:
        return "\n".join([*lines, f"no {metric.name} figures recorded here"])
    marks = {step.index: f"<- step {step.size:+.1%}" for step in steps.found}
    shown = set(range(max(0, len(points) - last), len(points)))
    for step in steps.found:
        shown |= set(range(max(0, step.index - AROUND), min(len(points), step.index + AROUND)))
    rows, previous = [], None
    for index in sorted(shown):
        if index != (0 if previous is None else previous + 1):
            rows.append(("...", "", "", "", ""))
        rows.append(_row(points[index], metric, marks.get(index, "")))
        previous = index
    lines += _table(rows)
    for step in steps.found:
        lines += _step_lines(found, step)
    noise = f"run-to-run noise {steps.noise:.1%}" if steps.noise is not None else ""
    if steps.too_short:
        lines.append(f"no step can be told yet: it takes at least {2 * MIN_SEGMENT} runs here")
    elif not steps.found:
        lines.append(f"no step larger than {steps.floor:.1%} ({noise})")
    for step in steps.small:
        lines.append(
            f"left out: a {step.size:+.1%} step at commit {points[step.index].short} is within the {steps.floor:.1%} "
            f"noise floor (--min-step to lower it; {noise})"
        )
    return "\n".join(lines)


def _step_dict(found: Series, step: Step) -> dict[str, Any]:
    first, before = found.points[step.index], found.points[step.index - 1]
    return {
        "commit": first.commit,
        "previous_commit": before.commit,
        "index": step.index,
        "size": step.size,
        "before": step.before,
        "after": step.after,
        "runs": list(step.counts),
        "p_value": step.p_value,
    }


def as_dict(found: Series, steps: Steps) -> dict[str, Any]:
    return {
        "file": found.file,
        "name": found.name,
        "metric": found.metric.name,
        "unit": found.metric.unit_text,
        "environment": dict(found.environment),
        "other_environments": found.elsewhere,
        "points": [
            {
                "commit": p.commit,
                "branch": p.branch,
                "recorded_at": p.recorded_at,
                "value": p.value,
                "measured": p.measured,
            }
            for p in found.points
        ],
        "floor": steps.floor,
        "noise": steps.noise,
        "steps": [_step_dict(found, step) for step in steps.found],
        "small_steps": [_step_dict(found, step) for step in steps.small],
    }


def history_command(args: argparse.Namespace) -> int:
    def refuse(message: str) -> int:
        print(f"mlestimate history: {printable(message)}", file=sys.stderr)
        return 2

    if args.last < 1:
        return refuse(f"--last {args.last} is not a positive number of rows")
    try:
        if args.export_benchmark_action is not None:
            metrics = [metric_named(args.metric)] if args.metric else []
            entries = benchmark_action(args.path, args.bigger, args.scenario, metrics)
            output = args.export_benchmark_action
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_text(json.dumps(entries, indent=2) + "\n", encoding="utf-8")
            tool = "customBiggerIsBetter" if args.bigger else "customSmallerIsBetter"
            print(f"written: {output} ({len(entries)} figures, github-action-benchmark tool {tool})")
            return 0
        store = run_history_at(args.path)
        names = args.scenario or [f"{s.file}::{s.name}" for s in store.scenarios()]
        chosen = [store.resolve(name) for name in names]
        if not chosen:
            return refuse(f"history {named(args.path)} holds no measured scenario yet")
        answers = []
        for summary in chosen:
            name = f"{summary.file}::{summary.name}"
            metric = metric_named(args.metric) if args.metric else _default_metric(args.path, name)
            found = series(args.path, name, metric)
            steps = find_steps([p.value for p in found.points], _floor(args, found))
            answers.append((found, steps))
    except HistoryError as exc:
        return refuse(str(exc))
    except UnitError as exc:
        return refuse(f"--min-step: {exc}")
    except OSError as exc:
        return refuse(f"{args.export_benchmark_action}: cannot be written ({exc.strerror or exc})")
    if args.json:
        print(json.dumps([as_dict(found, steps) for found, steps in answers], indent=2))  # JSON escapes them
    else:
        # a history's commits, branches and names are anyone's text: no escape sequence reaches the terminal
        print(printable("\n\n".join(render(found, steps, args.last) for found, steps in answers), keep_newlines=True))
    return 0
