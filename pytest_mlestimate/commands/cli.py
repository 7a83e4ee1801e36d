"""The ``mlestimate`` command. ``mlestimate serve`` runs the HTTP service (needs the ``service`` extra);
``mlestimate compare OLD NEW`` judges two earlier runs against each other without measuring; ``mlestimate
capacity FILE`` prints the largest batch that fits and figures at other sizes; ``mlestimate html REPORT``
draws a JSON report as an HTML page (needs the ``html`` extra)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_mlestimate.commands.arguments import timeout_argument
from pytest_mlestimate.commands.capacity import add_parser as add_capacity_parser
from pytest_mlestimate.commands.dataset_stats import add_parser as add_dataset_stats_parser
from pytest_mlestimate.commands.history import add_parser as add_history_parser
from pytest_mlestimate.commands.merge import add_parser as add_merge_parser
from pytest_mlestimate.core.errors import clip

if TYPE_CHECKING:
    from pytest_mlestimate.commands.against import AgainstOutcome
    from pytest_mlestimate.commands.compare import Outcome
    from pytest_mlestimate.service.settings import ServiceSettings

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlestimate", description="Estimate what a PyTorch detection model needs.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve",
        help="run the HTTP estimation service",
        description="Run the HTTP estimation service. Options not given are read from MLESTIMATE_* variables.",
    )
    serve.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST})")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port to listen on (default {DEFAULT_PORT})")
    serve.add_argument("--device", help="auto, cpu, cuda or cuda:N: where profiles run (MLESTIMATE_DEVICE)")
    serve.add_argument(
        "--api-key",
        help="require this key on every /api/v1 route (MLESTIMATE_API_KEY; prefer the variable: "
        "arguments are visible to other users of the machine)",
    )
    serve.add_argument(
        "--allow-factory",
        action="append",
        default=[],
        metavar="MODULE:FUNCTION",
        help="a custom model factory (or a timm:NAME or hf:MODEL_TYPE model) requests may name; repeat for "
        "several (MLESTIMATE_ALLOW_FACTORIES)",
    )
    serve.add_argument(
        "--queue-size",
        type=int,
        help="profiles that may wait per device, and capacity searches that may wait for a thread; one more is "
        "answered 503 with Retry-After (MLESTIMATE_QUEUE_SIZE; default 8)",
    )
    serve.add_argument(
        "--capacity-searches",
        type=int,
        metavar="N",
        help="capacity searches run at once, a thread each (MLESTIMATE_CAPACITY_SEARCHES; default 2)",
    )
    serve.add_argument(
        "--capacity-time-limit",
        type=timeout_argument,
        metavar="SECONDS",
        help="after this long a capacity search starts no new profile and answers with what it found "
        "(MLESTIMATE_CAPACITY_TIME_LIMIT; default 300)",
    )
    serve.add_argument(
        "--profile-timeout",
        type=timeout_argument,
        help="seconds before a profile is stopped (MLESTIMATE_PROFILE_TIMEOUT)",
    )
    serve.add_argument(
        "--read-timeout",
        type=timeout_argument,
        metavar="SECONDS",
        help="a client has this long from its first byte to send a request's head and body, else its connection "
        "is closed (MLESTIMATE_READ_TIMEOUT; default 10)",
    )
    serve.add_argument(
        "--keep-alive-timeout",
        type=int,
        metavar="SECONDS",
        help="an idle kept-alive connection is closed after this long (MLESTIMATE_KEEP_ALIVE_TIMEOUT; default 5)",
    )
    serve.add_argument(
        "--max-connections",
        type=int,
        metavar="N",
        help="connections and requests at once; past it, 503 (MLESTIMATE_MAX_CONNECTIONS; default 512)",
    )
    serve.add_argument("--max-batch-size", type=int, help="largest batch_size accepted (MLESTIMATE_MAX_BATCH_SIZE)")
    serve.add_argument(
        "--max-image-side",
        type=int,
        help="largest image side, and longest sequence, accepted (MLESTIMATE_MAX_IMAGE_SIDE)",
    )
    serve.add_argument(
        "--max-clip-length",
        type=int,
        help="most frames per video clip accepted, 64 unless set (MLESTIMATE_MAX_CLIP_LENGTH)",
    )
    serve.add_argument(
        "--max-body-size",
        type=int,
        metavar="BYTES",
        help="largest request body accepted, larger ones are answered 413 (MLESTIMATE_MAX_BODY_SIZE; default 65536)",
    )
    serve.add_argument(
        "--max-model-kwarg",
        action="append",
        default=[],
        metavar="NAME=LIMIT",
        help="largest number model_kwargs NAME may be; repeat for several; '*=N' sets the limit of a custom "
        "factory's other numeric keywords, 4096 unless set (MLESTIMATE_MAX_MODEL_KWARGS, e.g. 'channels=256,*=512')",
    )
    serve.add_argument(
        "--weights-dir", type=Path, help="directory requests' weights_path may name files in (MLESTIMATE_WEIGHTS_DIR)"
    )
    serve.add_argument(
        "--data-dir",
        type=Path,
        help="directory requests' dataset may name annotation files or summaries in (MLESTIMATE_DATA_DIR)",
    )
    serve.add_argument(
        "--profile-cpus",
        metavar="LIST",
        help="CPUs (e.g. 1 or 2-3) kept for profiling, the rest serve requests (MLESTIMATE_PROFILE_CPUS)",
    )
    serve.add_argument(
        "--price-per-device-hour",
        metavar="PRICE",
        help="price of one device-hour with its currency, e.g. '2.50 USD', for requests that set no price "
        "(MLESTIMATE_PRICE_PER_DEVICE_HOUR)",
    )
    serve.add_argument(
        "--price-per-kwh",
        metavar="PRICE",
        help="price of one kWh with its currency, e.g. '0.30 USD', for requests that set no price "
        "(MLESTIMATE_PRICE_PER_KWH)",
    )
    serve.add_argument("--cache-dir", type=Path, help="where measured profiles are kept (MLESTIMATE_CACHE_DIR)")
    serve.add_argument(
        "--store",
        metavar="URL",
        help="a postgresql:// URL: profiles and jobs kept in that database and shared by every replica started "
        "with it; credentials from the URL or the PG* variables (MLESTIMATE_STORE)",
    )
    serve.add_argument(
        "--ray",
        metavar="ADDRESS",
        help="measure the profiles on the Ray cluster at ADDRESS (e.g. ray://head:10001 or head:6379) instead of "
        "this host (MLESTIMATE_RAY)",
    )
    serve.add_argument(
        "--ray-profiles",
        type=int,
        metavar="N",
        help="profiles this replica keeps on the Ray cluster at once, per kind of device (default 4; "
        "MLESTIMATE_RAY_PROFILES)",
    )
    serve.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    serve.add_argument("--no-access-log", action="store_true", help="do not log each request")
    serve.set_defaults(run=serve_command)
    compare = commands.add_parser(
        "compare",
        help="compare two earlier runs without measuring again",
        description="Judge NEW against OLD as --mlestimate-compare would, without measuring again. OLD and NEW "
        "are each a JSON report written by --mlestimate-json or a folder written by --mlestimate-save-baseline. "
        "With --against REF, measure instead each scenario of SCENARIOS (files or folders; default: scenarios) "
        "side by side with the same scenario at the git revision REF, as --mlestimate-against does. "
        "Exits 0 when nothing regressed, 1 when something did, 2 when an input or a --tolerance cannot be read.",
    )
    compare.add_argument(
        "inputs",
        type=Path,
        nargs="*",
        metavar="OLD NEW | SCENARIOS",
        help="the earlier run and the later one (a JSON report or a baseline folder each); with --against, "
        "scenario files or folders",
    )
    compare.add_argument(
        "--against",
        metavar="REF",
        help="measure the scenarios side by side with REF's (a branch, a tag or a SHA of the repository holding "
        "the working directory), built from REF's code",
    )
    compare.add_argument("--timeout", type=timeout_argument, help="seconds one profile may take (with --against)")
    compare.add_argument(
        "--tolerance",
        action="append",
        default=[],
        metavar="METRIC=PERCENT",
        help="the change allowed, e.g. 'forward_pass=20%%', as --mlestimate-tolerance (repeatable)",
    )
    compare.add_argument(
        "--strict",
        action="store_true",
        help="fail scenarios only in NEW, as --mlestimate-strict-baseline; with --against, fail a timing left "
        "inconclusive, as --mlestimate-strict",
    )
    compare.set_defaults(run=compare_command)
    html = commands.add_parser(
        "html",
        help="draw a JSON report as a self-contained HTML page with charts",
        description="Render a JSON report written by --mlestimate-json as one HTML file that opens offline "
        "(needs the html extra). Exits 2 when the report cannot be read.",
    )
    html.add_argument("report", type=Path, metavar="REPORT", help="a JSON report written by --mlestimate-json")
    html.add_argument("-o", "--output", type=Path, help="the HTML file to write (default: REPORT with .html)")
    html.set_defaults(run=html_command)
    add_capacity_parser(commands)
    add_history_parser(commands)
    add_merge_parser(commands)
    add_dataset_stats_parser(commands)
    return parser


def settings_from_args(args: argparse.Namespace) -> ServiceSettings:
    from pytest_mlestimate.service.settings import ServiceSettings, SettingsError, parse_cpus, parse_kwarg_limits

    try:
        cpus = parse_cpus(args.profile_cpus) if args.profile_cpus else None
    except ValueError:
        raise SettingsError(f"--profile-cpus {args.profile_cpus!r} is not a CPU list such as 1 or 2-3") from None
    try:
        kwarg_limits = parse_kwarg_limits(args.max_model_kwarg)
    except ValueError as exc:
        raise SettingsError(f"--max-model-kwarg: {exc}") from None

    base = ServiceSettings.from_env(
        device=args.device,
        api_key=args.api_key,
        queue_size=args.queue_size,
        capacity_searches=args.capacity_searches,
        capacity_time_limit=args.capacity_time_limit,
        read_timeout=args.read_timeout,
        keep_alive_timeout=args.keep_alive_timeout,
        max_connections=args.max_connections,
        profile_timeout=args.profile_timeout,
        max_batch_size=args.max_batch_size,
        max_image_side=args.max_image_side,
        max_clip_length=args.max_clip_length,
        weights_dir=args.weights_dir,
        data_dir=args.data_dir,
        profile_cpus=cpus,
        max_body_size=args.max_body_size,
        price_per_device_hour=args.price_per_device_hour,
        price_per_kwh=args.price_per_kwh,
        store=args.store,
        ray=args.ray,
        ray_profiles=args.ray_profiles,
    )
    if not args.allow_factory and not kwarg_limits:
        return base
    from dataclasses import replace

    return replace(
        base,
        allowed_factories=base.allowed_factories | frozenset(args.allow_factory),
        max_model_kwargs={**base.max_model_kwargs, **kwarg_limits},
    )


def serve_command(args: argparse.Namespace) -> int:
    from pytest_mlestimate.service.settings import SettingsError

    try:
        from pytest_mlestimate.service.app import create_app
        from pytest_mlestimate.service.server import serve
    except ImportError as exc:
        print(f"mlestimate serve needs the service extra: pip install 'pytest-mlestimate[service]' ({exc})")
        return 2
    if args.cache_dir is not None:
        os.environ["MLESTIMATE_CACHE_DIR"] = str(args.cache_dir)  # the engine's own setting, for its cache
    try:
        settings = settings_from_args(args)
    except SettingsError as exc:
        print(f"mlestimate serve: {exc}", file=sys.stderr)
        return 2
    serve(
        create_app(settings),
        settings,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=not args.no_access_log,
    )
    return 0


def compare_command(args: argparse.Namespace) -> int:
    from pytest_mlestimate.commands.compare import InputError
    from pytest_mlestimate.core.checkouts import CheckoutError
    from pytest_mlestimate.verdicts.budgets import BudgetError

    try:
        outcome = _against(args) if args.against is not None else _compared(args)
    except (InputError, CheckoutError) as exc:
        print(f"mlestimate compare: {exc}", file=sys.stderr)
        return 2
    except BudgetError as exc:
        print(f"mlestimate compare: --tolerance: {'; '.join(exc.problems)}", file=sys.stderr)
        return 2
    print(outcome.render())
    return outcome.exit_code


def _compared(args: argparse.Namespace) -> Outcome:
    from pytest_mlestimate.commands.compare import InputError, compare_paths

    if len(args.inputs) != 2:
        raise InputError(f"give OLD and NEW (or --against REF), not {len(args.inputs)} path(s)")
    return compare_paths(*args.inputs, args.tolerance, strict=args.strict)


def _against(args: argparse.Namespace) -> AgainstOutcome:
    from pytest_mlestimate.commands.against import judge_against
    from pytest_mlestimate.commands.compare import InputError
    from pytest_mlestimate.core.checkouts import CheckoutError

    paths = args.inputs or [Path("scenarios")]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise InputError(f"no such scenario file or folder: {', '.join(missing)}")
    try:
        return judge_against(args.against, paths, args.tolerance, strict=args.strict, timeout=args.timeout)
    except CheckoutError as exc:
        raise CheckoutError(f"--against: {exc}") from None


def html_command(args: argparse.Namespace) -> int:
    from pytest_mlestimate.core.files import same_file
    from pytest_mlestimate.reports.html import MissingExtraError, write_html
    from pytest_mlestimate.reports.json_report import ReportError

    output = args.output or args.report.with_suffix(".html")
    if same_file(output, args.report):
        print(f"mlestimate html: {output} is the report it reads: give another -o path", file=sys.stderr)
        return 2
    try:
        write_html(args.report, output)
    except (MissingExtraError, ReportError) as exc:
        print(f"mlestimate html: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"mlestimate html: {output} cannot be written ({exc.strerror or exc})", file=sys.stderr)
        return 2
    except (TypeError, KeyError, AttributeError, ValueError) as exc:  # a record of the wrong shape
        print(
            f"mlestimate html: {args.report} is not a report this version can draw "
            f"({type(exc).__name__}: {clip(str(exc), 200)})",
            file=sys.stderr,
        )
        return 2
    print(f"report written: {output}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
