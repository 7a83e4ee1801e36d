"""``mlestimate compare --against REF [SCENARIOS ...]``: each scenario measured side by side with the same
scenario at REF, built from REF's code, as ``--mlestimate-against`` does in a pytest run.

SCENARIOS are scenario files (YAML or CSV) or folders holding them (default: ``scenarios``). Each scenario is
measured here first, then in alternating pairs with REF's (``verdicts.against``), without the cache.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_mlestimate.api import estimate
from pytest_mlestimate.core.checkouts import Checkout, checked_out
from pytest_mlestimate.core.errors import EstimateError
from pytest_mlestimate.core.metrics import METRIC
from pytest_mlestimate.core.units import format_quantity
from pytest_mlestimate.reports.terminal import error_rate
from pytest_mlestimate.scenarios.files import ScenarioFileError, looks_like_scenarios
from pytest_mlestimate.scenarios.scenario import Scenario, ScenarioError, parse_scenario
from pytest_mlestimate.scenarios.table import looks_like_table, scenarios_in
from pytest_mlestimate.verdicts.against import (
    BaseMeasurementError,
    BaseProblem,
    base_side_in,
    measure_at,
    removed_names,
    scenario_at,
)
from pytest_mlestimate.verdicts.baseline import parse_tolerances

if TYPE_CHECKING:
    from pytest_mlestimate.profiling.turns import TurnEnds
from pytest_mlestimate.verdicts.budgets import BudgetError, parse_assignments
from pytest_mlestimate.verdicts.regression import FAMILY_ALPHA, Run
from pytest_mlestimate.verdicts.verdict import Verdict, run_of

SUFFIXES = (".yaml", ".yml", ".csv")


@dataclass
class AgainstOutcome:
    """Every scenario judged against REF: renders itself as the command prints it."""

    checkout: Checkout
    verdicts: list[Verdict] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    """Files or scenarios that could not be read or measured here: named, and judged not at all."""

    @property
    def exit_code(self) -> int:
        if any(not v.passed for v in self.verdicts):
            return 1
        return 2 if self.problems else 0

    def render(self) -> str:
        parts = [f"against {self.checkout.ref} ({self.checkout.commit[:12]}), measured side by side"]
        for verdict in self.verdicts:
            parts.append("\n".join([verdict.render(), *(f"warning: {w}" for w in verdict.warnings)]))
        listed = [f"removed since {self.checkout.ref}: {name}" for name in self.removed]
        listed += [f"error: {problem}" for problem in self.problems]
        if listed:
            parts.append("\n".join(listed))
        failed = sum(not v.passed for v in self.verdicts)
        undecided = sum(bool(v.against and v.against.get("inconclusive")) for v in self.verdicts)
        tally = (
            f"{failed} failed, {len(self.verdicts) - failed} passed ({undecided} with an inconclusive timing), "
            f"{len(self.removed)} removed, {len(self.problems)} not measured"
        )
        records = [{"budgets": [c.to_dict() for c in v.checks]} for v in self.verdicts]
        parts.append("\n".join([tally, *error_rate(records, FAMILY_ALPHA)]))
        return "\n\n".join(parts)


def scenario_files(paths: Sequence[Path]) -> Iterator[Path]:
    """The scenario files among ``paths`` and inside the folders among them, each once, in order."""
    seen: set[Path] = set()
    for path in paths:
        found = sorted(p for p in path.rglob("*") if p.suffix in SUFFIXES) if path.is_dir() else [path]
        for file in found:
            if file.resolve() in seen:
                continue
            seen.add(file.resolve())
            if path.is_dir() and not _holds_scenarios(file):
                continue
            yield file


def _holds_scenarios(file: Path) -> bool:
    try:
        head = file.read_text(encoding="utf-8", errors="replace")[:4096]
    except OSError:
        return False
    return looks_like_table(head) if file.suffix == ".csv" else looks_like_scenarios(head)


def judge_against(
    ref: str,
    paths: Sequence[Path],
    tolerance_lines: Sequence[str] = (),
    strict: bool = False,
    timeout: float | None = None,
    repository: Path | None = None,
) -> AgainstOutcome:
    """Raises ``CheckoutError`` when REF cannot be checked out and ``BudgetError`` for bad tolerances."""
    tolerances = parse_tolerances(parse_assignments(tolerance_lines, "tolerances"), "tolerances")
    with checked_out(repository or Path.cwd(), ref) as checkout:
        outcome = AgainstOutcome(checkout)
        for file in scenario_files(paths):
            _judge_file(outcome, file, tolerances, strict, timeout)
    return outcome


def _judge_file(
    outcome: AgainstOutcome, file: Path, tolerances: Mapping[str, float], strict: bool, timeout: float | None
) -> None:
    shown = str(file)
    try:
        entries = scenarios_in(file, shown)
    except (ScenarioFileError, OSError, UnicodeDecodeError) as exc:
        outcome.problems.append(f"{shown} cannot be read: {exc}")
        return
    checkout = outcome.checkout
    for entry in entries:
        where = f"{shown}:{entry.line}"
        try:
            if entry.problems:
                raise ScenarioError(entry.problems)
            scenario = parse_scenario(entry.fields, where=where)
            own = parse_tolerances(entry.tolerances, "tolerances") if entry.tolerances else {}
        except (ScenarioError, BudgetError) as exc:
            outcome.problems.append(f"scenario '{entry.name}' ({where}): {'; '.join(exc.problems)}")
            continue
        print(f"measuring scenario '{entry.name}' ({where}) against {checkout.ref} ...", file=sys.stderr, flush=True)

        def measure_candidate(turns: TurnEnds | None, scenario: Scenario = scenario) -> Run:
            return run_of(estimate(scenario, cache=False, timeout=timeout, turns=turns))

        try:
            first = measure_candidate(None)
            side = base_side_in(
                checkout, file, shown, entry.name, measure_candidate,
                lambda base, at, turns: measure_at(at, base, timeout=timeout, turns=turns), scenario.device,
            )  # fmt: skip
            against = side.compare({**tolerances, **own})
        except EstimateError as exc:
            outcome.problems.append(f"scenario '{entry.name}' ({where}) could not be measured: {exc}")
            continue
        verdict = Verdict(entry.name, where, checks=against.checks, warnings=against.warnings(), runs=[first])
        verdict.against = against.to_dict()
        if strict and against.inconclusive:
            verdict.failure = f"not decided: {', '.join(against.inconclusive)} inconclusive (--strict)"
        outcome.verdicts.append(verdict)
    for name in removed_names(checkout, file, shown, {e.name for e in entries}):
        outcome.removed.append(_measured_at_base(checkout, file, shown, name, timeout))


HEADLINE = ("total_training_time", "inference_batch", "peak_ram_memory", "peak_gpu_memory")


def _measured_at_base(checkout: Checkout, file: Path, shown: str, name: str, timeout: float | None) -> str:
    """A scenario only REF has, measured there once: its name and headline figures, or why it was not."""
    where = f"{shown}::{name}"
    scenario = scenario_at(checkout, file, shown, name)
    if isinstance(scenario, BaseProblem):
        return f"{where} ({scenario.message})"
    print(f"measuring removed scenario '{name}' ({shown}) at {checkout.ref} ...", file=sys.stderr, flush=True)
    try:
        run = measure_at(checkout, scenario, timeout=timeout)
    except BaseMeasurementError as exc:
        return f"{where} (could not be measured at {checkout.ref}: {exc})"
    figures = [
        f"{METRIC[m].label} {format_quantity(run.metrics[m], METRIC[m].unit)}"
        for m in HEADLINE
        if run.metrics.get(m) is not None
    ]
    return f"{where}, measured at {checkout.ref}: {', '.join(figures)}"
