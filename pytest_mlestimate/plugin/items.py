"""YAML scenario files and CSV scenario tables as pytest tests: one item per scenario.

Setup validates the scenario and measures it (an invalid or unmeasurable scenario is an *error*, a
missing GPU a *skip*, unless ``--mlestimate-ray`` measures it on a cluster); the test itself checks budgets and the
baseline (a broken budget is a *failure*).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import pytest

from pytest_mlestimate.api import estimate
from pytest_mlestimate.core.checkouts import Checkout
from pytest_mlestimate.core.errors import DeviceUnavailableError, EstimateError, clip, printable
from pytest_mlestimate.core.metrics import METRIC
from pytest_mlestimate.estimates.estimate import Estimate
from pytest_mlestimate.planning.capacity import CapacityReport
from pytest_mlestimate.planning.checks import CapacityError
from pytest_mlestimate.planning.request import CapacityRequest, read_request
from pytest_mlestimate.plugin.against import CHECKOUT, base_side
from pytest_mlestimate.plugin.gpus import missing_gpu_reason
from pytest_mlestimate.plugin.progress_display import progress_for
from pytest_mlestimate.plugin.settings import placement_of
from pytest_mlestimate.reports.record import RECORDS, fill_record, metric_properties, new_record
from pytest_mlestimate.scenarios.files import (
    PLUGIN_KEYS,
    ScenarioEntry,
    ScenarioFileError,
)
from pytest_mlestimate.scenarios.scenario import Scenario, ScenarioError, parse_scenario
from pytest_mlestimate.scenarios.table import scenarios_in
from pytest_mlestimate.verdicts.against import Against, BaseProblem, measure_at, removed_names, scenario_at
from pytest_mlestimate.verdicts.baseline import anchored, parse_tolerances
from pytest_mlestimate.verdicts.budgets import Budget, BudgetError, merge_budgets, parse_budgets
from pytest_mlestimate.verdicts.regression import Run
from pytest_mlestimate.verdicts.settings import Settings
from pytest_mlestimate.verdicts.verdict import Verdict, judge, run_of

if TYPE_CHECKING:
    from pytest_mlestimate.profiling.turns import TurnEnds

T = TypeVar("T")
SETTINGS = pytest.StashKey[Settings]()
MAX_PROBLEM = 1_000
MAX_MESSAGE = 20_000
"""Characters of one problem line, and of a whole message, that a test's error and the reports carry."""


def safe_message(text: str, limit: int = MAX_MESSAGE) -> str:
    """A message that echoes input cut short and with its control characters escaped, so that the terminal,
    the JUnit XML and the JSON report can carry it."""
    return printable(clip(text, limit), keep_newlines=True)


class OverBudget(Exception):
    def __init__(self, verdict: Verdict) -> None:
        self.verdict = verdict
        super().__init__(verdict.summary())


def relative_file(config: pytest.Config, path: Path) -> str:
    try:
        return path.relative_to(config.rootpath).as_posix()
    except ValueError:
        return path.as_posix()


class ScenarioFile(pytest.File):
    def collect(self) -> Iterator[pytest.Item]:
        try:
            entries = scenarios_in(self.path, relative_file(self.config, self.path))
        except (ScenarioFileError, UnicodeDecodeError, OSError) as exc:
            line = getattr(exc, "line", 1)
            yield BrokenFile.from_parent(self, name="file", problem=str(exc), line=line)
            return
        for entry in entries:
            yield ScenarioItem.from_parent(self, name=entry.name, entry=entry)
        checkout = self.config.stash.get(CHECKOUT, None)
        if checkout is not None:
            here = {entry.name for entry in entries}
            for name in removed_names(checkout, self.path, relative_file(self.config, self.path), here):
                yield RemovedScenarioItem.from_parent(self, name=name, checkout=checkout)


class _RecordedItem(pytest.Item):
    line: int

    def _start_record(self) -> dict[str, Any]:
        record = new_record(self.name, self.file, self.line, self.nodeid)
        self.stash[RECORDS] = [record]
        return record

    @property
    def file(self) -> str:
        return relative_file(self.config, self.path)

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, self.line - 1, f"scenario {self.name}"

    def skip(self, reason: str) -> NoReturn:
        """Skip, reported at the scenario's own file and line."""
        reason = safe_message(reason)
        self.stash[RECORDS][0]["message"] = reason
        raise pytest.skip.Exception(reason, _use_item_location=True)

    def error(self, message: str) -> NoReturn:
        message = safe_message(message)
        self.stash[RECORDS][0]["message"] = message
        pytest.fail(message, pytrace=False)


class BrokenFile(_RecordedItem):
    """Stands for a scenario file that cannot be read, so the error is reported and the run goes on."""

    def __init__(self, *, problem: str, line: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.problem = problem
        self.line = line
        self._start_record()

    def setup(self) -> None:
        self.error(f"{self.where}: scenario file {self.file} is invalid: {self.problem}")

    def runtest(self) -> None:  # setup always fails
        raise AssertionError("unreachable")


class RemovedScenarioItem(_RecordedItem):
    """A scenario this file holds at the base commit and no longer here: measured there once and reported as
    removed (its record's ``against.status``), so that a comparison shows what went away. It passes: a scenario
    the change removed has no budget left to break."""

    def __init__(self, *, checkout: Checkout, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.checkout = checkout
        self.line = 1
        self._start_record()

    def runtest(self) -> None:
        checkout, settings = self.checkout, self.config.stash[SETTINGS]
        record = self.stash[RECORDS][0]
        found = scenario_at(checkout, self.path, self.file, self.name)
        if isinstance(found, BaseProblem):
            gone = Against(checkout.ref, checkout.commit, "removed", f"removed since {checkout.ref}; {found.message}")
            record["against"], record["warnings"] = gone.to_dict(), gone.warnings()
            return
        record["scenario"] = found.model_dump(mode="json")
        gone = Against(checkout.ref, checkout.commit, "removed", f"removed since {checkout.ref}: measured there only")
        try:
            with progress_for(self.config, f"{self.nodeid} (at {checkout.ref})", adaptive=True) as listener:
                measured = estimate(found, cache=False, checkout=checkout, timeout=settings.timeout,
                                    progress=listener, price=settings.price)  # fmt: skip
        except EstimateError as exc:
            gone.message = f"removed since {checkout.ref}, where it could not be measured: {exc}"
            record["against"], record["warnings"] = gone.to_dict(), gone.warnings()
            return
        verdict = Verdict(self.name, self.where, runs=[run_of(measured)], warnings=gone.warnings())
        verdict.against = gone.to_dict()
        fill_record(record, measured, verdict)
        self.user_properties.extend(metric_properties(measured))


def _describe(problem: str) -> str:
    if "unknown field" in problem:
        return f"{problem} (and, in a scenario file, {', '.join(PLUGIN_KEYS)})"
    return problem


class ScenarioItem(_RecordedItem):
    def __init__(self, *, entry: ScenarioEntry, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.entry = entry
        self.line = entry.line
        self.scenario: Scenario | None = None
        self.budgets: list[Budget] = []
        self.tolerances: dict[str, float] = {}
        self.estimate: Estimate | None = None
        self.capacity_request: CapacityRequest | None = None
        self.capacity: CapacityReport | None = None
        self._start_record()

    @property
    def settings(self) -> Settings:
        return self.config.stash[SETTINGS]

    @property
    def placement(self) -> dict[str, Any]:
        """Where the scenario is measured and its profile kept (``--mlestimate-ray``, ``--mlestimate-cache``)."""
        return placement_of(self.config).options(beside_base=CHECKOUT in self.config.stash)

    def _validate(self) -> None:
        problems = list(self.entry.problems)
        try:
            self.scenario = parse_scenario(self.entry.fields, where=self.where)
        except ScenarioError as exc:
            problems.extend(_describe(clip(p, MAX_PROBLEM)) for p in exc.problems)
        budgets, budget_problems = self._parse_located("budgets", self.entry.budgets, parse_budgets)
        tolerances, tolerance_problems = self._parse_located("tolerances", self.entry.tolerances, parse_tolerances)
        self.budgets = merge_budgets(self.settings.budgets, [b for part in budgets for b in part])
        self.tolerances = {k: v for part in tolerances for k, v in part.items()}
        problems += budget_problems + tolerance_problems
        capacity = self.entry.capacity
        if capacity is None and any(METRIC[b.metric].capacity for b in self.budgets):
            capacity = True  # a budget on the largest batch asks for the search with its defaults
        if capacity is not None and capacity is not False:
            try:
                self.capacity_request = read_request(capacity)
            except CapacityError as exc:
                problems.append(f"{self.file}:{self.entry.line_of('capacity')}: {clip(str(exc), MAX_PROBLEM)}")
        if problems:
            lines = "\n".join(f"  - {p}" for p in problems)
            self.error(f"{self.where}: scenario '{self.name}' is invalid:\n{lines}")

    def _parse_located(self, field: str, raw: object, parse: Callable[[Any], T]) -> tuple[list[T], list[str]]:
        """Each budget (or tolerance) parsed on its own, so that a problem names the line of its own key."""
        parts = [(f"{field}.{key}", {key: value}) for key, value in raw.items()] if isinstance(raw, Mapping) else []
        found, problems = [], []
        for path, part in parts or [(field, raw)]:
            try:
                found.append(parse(part))
            except BudgetError as exc:
                line = self.entry.line_of(path)
                problems.extend(f"{self.file}:{line}: {clip(p, MAX_PROBLEM)}" for p in exc.problems)
        return found, problems

    def setup(self) -> None:
        self._validate()
        assert self.scenario is not None
        record = self.stash[RECORDS][0]
        record["scenario"] = self.scenario.model_dump(mode="json")
        placement = self.placement
        reason = missing_gpu_reason(self.scenario.device) if placement["ray"] is None else None
        if reason:
            self.skip(reason)
        settings = self.settings
        adaptive = self.scenario.measure_iterations is None
        try:
            with progress_for(self.config, self.nodeid, adaptive=adaptive) as listener:
                self.estimate = estimate(
                    self.scenario,
                    cache=settings.cache and CHECKOUT not in self.config.stash,  # side by side: fresh profiles
                    refresh=settings.refresh,
                    timeout=settings.timeout,
                    progress=listener,
                    price=settings.price,
                    **placement,
                )
        except DeviceUnavailableError as exc:
            self.skip(str(exc))
        except EstimateError as exc:
            self.error(f"{self.where}: scenario '{self.name}' could not be measured: {exc}")
        if self.capacity_request is not None:
            self._find_capacity(self.capacity_request)

    def _find_capacity(self, request: CapacityRequest) -> None:
        """The capacity search, each profile in its own process, recalled from the cache where it can be."""
        assert self.scenario is not None
        settings = self.settings
        try:
            with progress_for(self.config, f"{self.nodeid} (capacity)", adaptive=False) as listener:
                self.capacity = request.run(
                    self.scenario, cache=settings.cache, timeout=settings.timeout, progress=listener, **self.placement
                )
        except CapacityError as exc:
            self.error(f"{self.where}: scenario '{self.name}': {exc}")
        except EstimateError as exc:
            self.error(f"{self.where}: scenario '{self.name}': its capacity could not be measured: {exc}")

    def runtest(self) -> None:
        assert self.estimate is not None
        base = base_side(
            self.config, self.path, self.file, self.name, lambda turns: run_of(self._measure_again(turns)),
            self._measure_base, self.estimate.scenario.device,
        )  # fmt: skip
        verdict = judge(
            self.estimate,
            self.budgets,
            self.tolerances,
            self.settings,
            anchored(self.path),
            self.name,
            self.where,
            self._measure_again,
            self.capacity.metrics() if self.capacity else {},
            base,
        )
        fill_record(self.stash[RECORDS][0], self.estimate, verdict, self.capacity)
        self.user_properties.extend(metric_properties(self.estimate))
        if not verdict.passed:
            raise OverBudget(verdict)

    def _measure_again(self, turns: TurnEnds | None = None) -> Estimate:
        """A fresh process, past the cache: another draw of the noise between processes (``turns``: beside the
        base commit's, in turns)."""
        assert self.scenario is not None
        adaptive = self.scenario.measure_iterations is None
        try:
            with progress_for(self.config, f"{self.nodeid} (measured again)", adaptive=adaptive) as listener:
                return estimate(
                    self.scenario,
                    cache=False,
                    timeout=self.settings.timeout,
                    progress=listener,
                    price=self.settings.price,
                    turns=turns,  # in turns beside the base commit: on this machine, whatever ``ray`` says
                    ray=self.placement["ray"],
                )
        except EstimateError as exc:
            self.error(f"{self.where}: scenario '{self.name}' could not be measured again to confirm a change: {exc}")

    def _measure_base(self, scenario: Scenario, checkout: Checkout, turns: TurnEnds | None) -> Run:
        adaptive = scenario.measure_iterations is None
        with progress_for(self.config, f"{self.nodeid} (at {checkout.ref})", adaptive=adaptive) as listener:
            return measure_at(checkout, scenario, timeout=self.settings.timeout, progress=listener,
                              price=self.settings.price, turns=turns)  # fmt: skip

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, OverBudget):
            return excinfo.value.verdict.render()
        return super().repr_failure(excinfo, style)
