"""``mlestimate capacity FILE``: the capacity table of each scenario in a scenario file."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pytest_mlestimate.commands.arguments import timeout_argument


def add_parser(commands: Any) -> None:
    capacity = commands.add_parser(
        "capacity",
        help="the largest batch that fits, figures at other batch sizes and the cards each fits",
        description="Profile each scenario of FILE at a few batch sizes, fit how its figures grow, find the "
        "largest batch under a memory limit (confirmed by real profiles) and print the table. A scenario's own "
        "'capacity:' settings apply; options given here replace them. Exits 0 when every scenario was "
        "answered, 1 when a profile failed, 2 when the file or an option cannot be read.",
    )
    capacity.add_argument("file", type=Path, metavar="FILE", help="a YAML scenario file")
    capacity.add_argument("--scenario", action="append", default=[], metavar="NAME", help="only this scenario")
    capacity.add_argument("--limit", help="memory limit, e.g. '16 GiB' (default: the device's memory less headroom)")
    capacity.add_argument("--headroom", help="share of the device's memory kept free, e.g. '10 %%'")
    capacity.add_argument("--batch-sizes", metavar="LIST", help="batch sizes profiled for the fit, e.g. 1,2,4")
    capacity.add_argument("--predict", metavar="LIST", help="batch sizes to answer from the fit, e.g. 16,32")
    capacity.add_argument("--step", help="the search's granularity in batch sizes (default 1)")
    capacity.add_argument("--no-search", action="store_true", help="fit and predict only; no largest-batch search")
    capacity.add_argument("--json", action="store_true", help="print JSON instead of the table")
    capacity.add_argument("--no-cache", action="store_true", help="measure every profile again and keep nothing")
    capacity.add_argument("--timeout", type=timeout_argument, help="seconds before one profile is stopped")
    capacity.set_defaults(run=capacity_command)


def _numbers(text: str | None) -> list[Any] | None:
    if text is None:
        return None
    return [int(part) if part.strip().lstrip("-").isdigit() else part.strip() for part in text.split(",")]


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    found: dict[str, Any] = {}
    if args.limit is not None:
        found["limit"] = args.limit
    if args.headroom is not None:
        found["headroom"] = args.headroom
    if args.batch_sizes is not None:
        found["batch_sizes"] = _numbers(args.batch_sizes)
    if args.predict is not None:
        found["predict"] = _numbers(args.predict)
    if args.step is not None:
        found["step"] = int(args.step) if args.step.isdigit() else args.step
    if args.no_search:
        found["search"] = False
    return found


def capacity_command(args: argparse.Namespace) -> int:
    from pytest_mlestimate.core.errors import EstimateError
    from pytest_mlestimate.planning.checks import CapacityError
    from pytest_mlestimate.planning.request import read_request
    from pytest_mlestimate.scenarios.files import ScenarioFileError, read_scenario_file
    from pytest_mlestimate.scenarios.scenario import ScenarioError, parse_scenario

    def refuse(message: str) -> int:
        print(f"mlestimate capacity: {message}", file=sys.stderr)
        return 2

    try:
        entries = read_scenario_file(args.file.read_text(encoding="utf-8"))
    except OSError as exc:
        return refuse(f"{args.file}: cannot be read ({exc.strerror or exc})")
    except UnicodeDecodeError:
        return refuse(f"{args.file}: not UTF-8 text")
    except ScenarioFileError as exc:
        return refuse(f"{args.file}, line {exc.line}: {exc}")
    chosen = [entry for entry in entries if not args.scenario or entry.name in args.scenario]
    missing = sorted(set(args.scenario) - {entry.name for entry in entries})
    if missing:
        return refuse(
            f"--scenario {missing[0]!r} is not in {args.file}; it holds: {', '.join(e.name for e in entries)}"
        )
    requests = []
    overrides = _overrides(args)
    for entry in chosen:
        where = f"{args.file}, scenario '{entry.name}' (line {entry.line})"
        if entry.problems:
            return refuse(f"{where}: {'; '.join(entry.problems)}")
        own = entry.capacity if entry.capacity not in (None, True) else {}
        try:
            scenario = parse_scenario(entry.fields)
            read_request(own)
            request = read_request({**own, **overrides}, spell=lambda name: f"--{name.replace('_', '-')}")
        except ScenarioError as exc:
            return refuse(f"{where}: {'; '.join(exc.problems)}")
        except CapacityError as exc:
            return refuse(f"{where}: {exc}")
        requests.append((entry.name, scenario, request))
    options: dict[str, Any] = {"cache": not args.no_cache}
    if args.timeout is not None:
        options["timeout"] = args.timeout
    answers: dict[str, Any] = {}
    code = 0
    for name, scenario, request in requests:
        try:
            report = request.run(scenario, **options)
        except (EstimateError, CapacityError) as exc:
            answers[name] = {"error": str(exc)}
            print(f"{name}: could not be answered: {exc}", file=sys.stderr)
            code = 1
            continue
        answers[name] = report.to_dict()
        if not args.json:
            print(f"== {name}: {scenario.architecture}, {scenario.application_type}, {scenario.image_size[0]}x"
                  f"{scenario.image_size[1]} on {report.fit.device}")  # fmt: skip
            print(report)
    if args.json:
        print(json.dumps(answers, indent=2))
    return code
