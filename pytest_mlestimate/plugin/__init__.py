"""The pytest plugin: ``pytest --mlestimate scenarios/`` turns YAML scenarios into budgeted tests.

pytest imports every installed plugin in every run, so this module imports nothing heavy: the engine
(torch, pydantic) and the run's machinery load only when ``--mlestimate`` is given or the ``mlestimate``
fixture is used.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from pytest_mlestimate.plugin.fixture import ModelEstimator


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mlestimate", "estimate what detection models need (pytest-mlestimate)")
    group.addoption("--mlestimate", action="store_true", help="collect YAML scenario files and measure each scenario.")
    group.addoption("--mlestimate-json", metavar="PATH", help="write the JSON report to PATH.")
    group.addoption("--mlestimate-junitxml", metavar="PATH", help="write a JUnit XML report of the scenarios to PATH.")
    group.addoption(
        "--mlestimate-markdown",
        metavar="PATH",
        help="write the run's diff against the baseline as a pull-request comment (GitHub Markdown) to PATH.",
    )
    group.addoption(
        "--mlestimate-html",
        metavar="PATH",
        help="write a self-contained HTML report with charts to PATH at the end of the run (needs the html extra).",
    )
    group.addoption(
        "--mlestimate-budget",
        action="append",
        metavar="METRIC=LIMIT",
        help="a default budget for every scenario, e.g. 'peak_gpu_memory=20 GiB' (repeatable).",
    )
    group.addoption(
        "--mlestimate-tolerance",
        action="append",
        metavar="METRIC=PERCENT",
        help="the change allowed against the baseline, e.g. 'forward_pass=20 %%' (repeatable).",
    )
    group.addoption("--mlestimate-save-baseline", metavar="DIR", help="record every scenario's figures under DIR.")
    group.addoption(
        "--mlestimate-baseline-runs",
        metavar="N",
        default="5",
        help="fresh-process runs a saved baseline holds, so that comparisons know the noise (default 5).",
    )
    group.addoption("--mlestimate-compare", metavar="DIR", help="fail scenarios that regressed against DIR.")
    group.addoption(
        "--mlestimate-history",
        metavar="PATH",
        help="record the run (commit, branch, environment, every figure and sample) in the sqlite file PATH, or in "
        "the PostgreSQL database of a postgresql:// URL that several runners share.",
    )
    group.addoption(
        "--mlestimate-history-window",
        metavar="N",
        help="fail scenarios that regressed against the last N runs recorded in --mlestimate-history PATH.",
    )
    group.addoption(
        "--mlestimate-strict-baseline",
        action="store_true",
        help="with --mlestimate-compare: fail a scenario that has no baseline (for CI).",
    )
    group.addoption(
        "--mlestimate-against",
        metavar="REF",
        help="judge every scenario against the git revision REF (origin/main, a commit): its scenario files and "
        "its model code, measured side by side with this checkout in fresh processes until a change is decided.",
    )
    group.addoption(
        "--mlestimate-strict",
        action="store_true",
        help="fail a scenario whose check against --mlestimate-against is inconclusive (for CI).",
    )
    group.addoption(
        "--mlestimate-ray",
        metavar="ADDRESS",
        help="measure every scenario on the Ray cluster at ADDRESS; a machine without a GPU sends the GPU scenarios "
        "too.",
    )
    group.addoption(
        "--mlestimate-cache",
        metavar="LOCATION",
        help="the profile cache: the sqlite file in the folder LOCATION (default: the user's cache folder, or "
        "MLESTIMATE_CACHE_DIR), or a postgresql:// URL that several runners share.",
    )
    group.addoption("--mlestimate-no-cache", action="store_true", help="measure again and keep nothing.")
    group.addoption("--mlestimate-refresh", action="store_true", help="measure again and update the cache.")
    group.addoption("--mlestimate-timeout", metavar="SECONDS", help="stop a scenario's measurement after SECONDS.")
    parser.addini("mlestimate_budgets", "default budgets, one 'metric = limit' a line", type="linelist", default=[])
    parser.addini("mlestimate_tolerances", "tolerances, one 'metric = N %' a line", type="linelist", default=[])
    parser.addini("mlestimate_timeout", "seconds before a measurement is stopped", default="")
    parser.addini(
        "mlestimate_price_per_device_hour",
        "price of one device-hour, with its currency (e.g. 2.50 USD), for scenarios that set no price",
        default="",
    )
    parser.addini(
        "mlestimate_price_per_kwh",
        "price of one kWh, with its currency (e.g. 0.30 USD), for scenarios that set no price",
        default="",
    )


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser: pytest.Parser, args: list[str]) -> None:
    """Pin an xdist worker to its GPU before any conftest can import torch and initialise CUDA."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker and getattr(early_config.known_args_namespace, "mlestimate", False):
        from pytest_mlestimate.plugin.gpus import pin_worker

        pin_worker(os.environ, worker)


_NEEDS_FLAG = (
    "--mlestimate-json",
    "--mlestimate-junitxml",
    "--mlestimate-markdown",
    "--mlestimate-html",
    "--mlestimate-save-baseline",
    "--mlestimate-compare",
    "--mlestimate-history",
    "--mlestimate-history-window",
    "--mlestimate-strict-baseline",
    "--mlestimate-against",
    "--mlestimate-strict",
    "--mlestimate-ray",
    "--mlestimate-cache",
)


MARKER_HELP = (
    "mlestimate(**budgets): budgets for every estimate the mlestimate fixture makes in this test, e.g. "
    '@pytest.mark.mlestimate(peak_gpu_memory="14 GiB", forward_pass="200 ms"); a budget given to the call wins'
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER_HELP)
    if not config.option.mlestimate:
        needing = [name for name in _NEEDS_FLAG if getattr(config.option, name.lstrip("-").replace("-", "_"), None)]
        if needing:
            raise pytest.UsageError(f"{', '.join(needing)} needs --mlestimate")
        return
    from pytest_mlestimate.plugin.items import SETTINGS
    from pytest_mlestimate.plugin.session import MlestimateRun
    from pytest_mlestimate.plugin.settings import PLACEMENT, placement_from_config, settings_from_config

    config.stash[SETTINGS] = settings_from_config(config)
    config.stash[PLACEMENT] = placement_from_config(config)
    config.pluginmanager.register(MlestimateRun(config), "mlestimate-run")
    if config.option.mlestimate_against:
        from pytest_mlestimate.plugin.against import BaseCheckout

        config.pluginmanager.register(BaseCheckout(config, config.option.mlestimate_against), "mlestimate-against")


@pytest.fixture
def mlestimate(request: pytest.FixtureRequest) -> ModelEstimator:
    """Estimate a model defined in Python: ``mlestimate(factory, scenario, budgets={...})``."""
    from pytest_mlestimate.plugin.fixture import ModelEstimator

    return ModelEstimator(request.node)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """A marker with no fixture to apply it would be a budget that is never checked."""
    if item.get_closest_marker("mlestimate") is not None and "mlestimate" not in getattr(item, "fixturenames", ()):
        pytest.fail(
            f"{item.nodeid}: @pytest.mark.mlestimate sets budgets for the mlestimate fixture, which this test does "
            "not use: take the 'mlestimate' argument and estimate with it, or remove the marker",
            pytrace=False,
        )


HINT_BYTES = 1_000_000
"""Bytes of a file the hint reads: a top-level ``scenarios:`` key is rarely far down."""


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    """A CSV scenario table, under --mlestimate (the run's plugin collects the YAML files)."""
    if file_path.suffix != ".csv" or not parent.config.option.mlestimate:
        return None
    from pytest_mlestimate.plugin.items import ScenarioFile
    from pytest_mlestimate.scenarios.table import looks_like_table

    try:
        with file_path.open(encoding="utf-8", errors="replace") as handle:
            head = handle.read(HINT_BYTES)
    except OSError:
        return None
    return ScenarioFile.from_parent(parent, path=file_path) if looks_like_table(head) else None


def _scenario_files(config: pytest.Config, exitstatus: int) -> Iterator[str]:
    """Scenario files pytest was given (or, when nothing ran, that a folder it was given holds)."""
    from pytest_mlestimate.scenarios.files import looks_like_scenarios

    for arg in config.args:
        path = Path(config.invocation_params.dir, arg.split("::")[0])
        if path.is_dir() and exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
            candidates = sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml"))[:100]
        else:
            candidates = [path] if path.suffix in (".yaml", ".yml") else []
        for candidate in candidates:
            try:
                with candidate.open(encoding="utf-8", errors="replace") as handle:
                    text = handle.read(HINT_BYTES)
            except OSError:
                continue
            if looks_like_scenarios(text):
                yield os.path.relpath(candidate, config.invocation_params.dir) if path.is_dir() else arg


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """Without --mlestimate, pytest says only "not found" of a scenario file (or "no tests ran")."""
    if config.option.mlestimate or exitstatus not in (pytest.ExitCode.USAGE_ERROR, pytest.ExitCode.NO_TESTS_COLLECTED):
        return
    for name in _scenario_files(config, exitstatus):
        terminalreporter.write_line(
            f"hint: {name} looks like a pytest-mlestimate scenario file: add --mlestimate to collect it", yellow=True
        )


def pytest_report_header(config: pytest.Config) -> Any:
    if config.option.mlestimate:
        from pytest_mlestimate.plugin.settings import placement_of

        placement = placement_of(config)
        cache = "off" if config.option.mlestimate_no_cache else placement.cache_shown
        ray = f"; measured on the Ray cluster at {placement.ray}" if placement.ray else ""
        return f"mlestimate: profile cache {cache}{ray}"
    return None
