"""A scenario judged against the base commit: pairs of fresh profiles, base and candidate measured in turns
(``profiling.turns``: both processes alive, computing one step at a time, so that what the machine's speed
does falls on both), the side that starts alternating, until ``paired.look`` decides or the pairs are spent.

A pair with a contended profile on either side is measured again rather than judged (it counts against the
budget: at most as many again as ``LOOKS[-1]``), so a machine busy with other work delays a verdict and never
decides it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_mlestimate.verdicts.budgets import Check
from pytest_mlestimate.verdicts.paired import LOOKS, Look, PairedTiming, look
from pytest_mlestimate.verdicts.regression import Change, Run, run_of

if TYPE_CHECKING:
    from pytest_mlestimate.core.checkouts import Checkout
    from pytest_mlestimate.profiling.turns import TurnEnds
    from pytest_mlestimate.scenarios.scenario import Scenario

Measure = Callable[["TurnEnds | None"], Run]
"""One fresh profile of a side, in turns through the ends given (``estimate(turns=...)``), or alone."""
MeasurePair = Callable[[bool], tuple[Run, Run]]
"""(base, candidate) measured together; True: the base takes the first turn."""


class BaseMeasurementError(Exception):
    """The scenario could not be measured at the base commit (its model did not build or run there)."""


@dataclass
class Against:
    ref: str
    commit: str
    status: str = "compared"
    """compared; added (no such scenario in the base); removed (only the base has it: measured there);
    failed (the base side could not be measured)."""
    message: str | None = None
    pairs: list[tuple[Run, Run]] = field(default_factory=list)
    timings: list[PairedTiming] = field(default_factory=list)
    peaks: list[Change] = field(default_factory=list)
    contended: int = 0
    """Pairs measured and set aside because a profile of theirs was contended."""

    @property
    def checks(self) -> list[Check]:
        runs = (len(self.pairs), len(self.pairs))
        timed = [
            Check(t.metric, "against", t.limit, t.value, t.base, t.interval, t.confidence, runs, t.decision,
                  t.detectable)
            for t in self.timings
        ]  # fmt: skip
        peaked = [
            Check(c.metric, "against", c.limit, c.value, c.baseline, runs=runs,
                  decision="regressed" if c.regressed else "no regression")
            for c in self.peaks
        ]  # fmt: skip
        return timed + peaked

    @property
    def inconclusive(self) -> list[str]:
        return [t.metric for t in self.timings if t.decision == "inconclusive"]

    def warnings(self) -> list[str]:
        if self.status != "compared":
            return [f"against {self.ref}: {self.message}"] if self.message else []
        found = []
        if self.contended:
            found.append(f"against {self.ref}: {self.contended} pairs set aside, measured while other processes took "
                         "the CPU")  # fmt: skip
        if not self.pairs:
            found.append(f"against {self.ref}: no pair was measured without contention: timings not judged")
        for timing in self.timings:
            if timing.decision == "inconclusive":
                found.append(
                    f"against {self.ref}: {timing.metric} inconclusive after {timing.pairs} pairs: changed "
                    f"{timing.change:+.1%}, bounds {timing.interval[0]:+.1%}..{timing.interval[1]:+.1%}; this run "
                    f"could catch a slowdown of {timing.detectable:+.1%}"
                )
        return found

    def to_dict(self) -> dict[str, Any]:
        found: dict[str, Any] = {"status": self.status, "ref": self.ref, "commit": self.commit}
        if self.message:
            found["message"] = self.message
        if self.status == "compared":
            found.update(pairs=len(self.pairs), contended_pairs=self.contended, inconclusive=self.inconclusive)
        return found


@dataclass(frozen=True)
class BaseSide:
    """How to measure a scenario at the base commit (``measure`` None: the base has no such scenario, and
    ``problem`` says so), and the candidate again."""

    ref: str
    commit: str
    measure: Measure | None
    measure_candidate: Measure
    problem: str | None = None
    status: str = "added"
    """Without ``measure``: added (the base has no such scenario) or failed (the base cannot be read)."""
    devices: tuple[str, ...] = ("cpu",)
    """What both sides measure on: held for a pair's two profiles at once."""

    def compare(self, tolerances: Mapping[str, float], looks: Sequence[int] = LOOKS) -> Against:
        if self.measure is None:
            return Against(self.ref, self.commit, self.status, self.problem)
        pair = in_turns(self.measure, self.measure_candidate, self.devices)
        return compare_against(self.ref, self.commit, pair, tolerances, looks)


def in_turns(measure_base: Measure, measure_candidate: Measure, devices: Sequence[str]) -> MeasurePair:
    def pair(base_first: bool) -> tuple[Run, Run]:
        from pytest_mlestimate.profiling.turns import side_by_side

        if base_first:
            return side_by_side(measure_base, measure_candidate, devices)
        candidate, base = side_by_side(measure_candidate, measure_base, devices)
        return base, candidate

    return pair


def compare_against(
    ref: str,
    commit: str,
    measure_pair: MeasurePair,
    tolerances: Mapping[str, float],
    looks: Sequence[int] = LOOKS,
) -> Against:
    """Pairs until a look decides; the side that takes the first turn alternates, the candidate first."""
    result = Against(ref, commit)
    budget = 2 * looks[-1]
    outcome: Look | None = None
    while len(result.pairs) + result.contended < budget:
        measured = len(result.pairs) + result.contended
        try:
            base, candidate = measure_pair(measured % 2 == 1)
        except BaseMeasurementError as exc:
            return Against(ref, commit, "failed", f"the base could not be measured: {exc}")
        if base.contended or candidate.contended:
            result.contended += 1
            continue
        result.pairs.append((base, candidate))
        if len(result.pairs) in looks:
            outcome = look(result.pairs, tolerances, looks)
            if outcome.timings is not None:
                break
    if result.pairs and (outcome is None or outcome.timings is None):  # the budget ran out between looks
        outcome = look(result.pairs, tolerances, looks, final=True)
    if outcome is not None:
        result.timings, result.peaks = outcome.timings or [], outcome.peaks
    return result


def against_commit(
    scenario: Scenario | Mapping[str, Any],
    ref: str,
    *,
    repository: Path | None = None,
    base_scenario: Scenario | Mapping[str, Any] | None = None,
    tolerances: Mapping[str, float] | None = None,
    timeout: float | None = None,
    looks: Sequence[int] = LOOKS,
) -> Against:
    """The Python API of ``--mlestimate-against``: ``scenario`` built from this checkout's code, measured side by
    side with ``base_scenario`` (the same one unless given) built from ``ref``'s code, in the git repository
    holding ``repository`` (the working directory unless given)."""
    from pytest_mlestimate.api import estimate
    from pytest_mlestimate.core.checkouts import checked_out
    from pytest_mlestimate.scenarios.scenario import parse_scenario

    candidate_scenario = parse_scenario(scenario)
    base = parse_scenario(base_scenario) if base_scenario is not None else candidate_scenario
    with checked_out(repository or Path.cwd(), ref) as checkout:

        def measure_candidate(turns: TurnEnds | None) -> Run:
            return run_of(estimate(candidate_scenario, cache=False, timeout=timeout, turns=turns))

        def measure_base(turns: TurnEnds | None) -> Run:
            return measure_at(checkout, base, timeout=timeout, turns=turns)

        pair = in_turns(measure_base, measure_candidate, (base.device, candidate_scenario.device))
        return compare_against(ref, checkout.commit, pair, tolerances or {}, looks)


def base_side_in(
    checkout: Checkout,
    path: Path,
    shown: str,
    name: str,
    measure_candidate: Measure,
    measure: Callable[[Scenario, Checkout, TurnEnds | None], Run],
    device: str = "cpu",
) -> BaseSide:
    """How scenario ``name`` of the file ``path`` (``shown`` in messages) is measured at the checkout's commit:
    the scenario of the same name in the same file there, built from that commit's code; ``device``: the
    candidate's."""
    ref, commit = checkout.ref, checkout.commit
    found = scenario_at(checkout, path, shown, name)
    if isinstance(found, BaseProblem):
        return BaseSide(ref, commit, None, measure_candidate, problem=found.message, status=found.status)
    return BaseSide(
        ref, commit, lambda turns: measure(found, checkout, turns), measure_candidate,
        devices=(found.device, device),
    )  # fmt: skip


@dataclass(frozen=True)
class BaseProblem:
    message: str
    status: str
    """added (the base has no such scenario) or failed (the base cannot be read)."""


def scenario_at(checkout: Checkout, path: Path, shown: str, name: str) -> Scenario | BaseProblem:
    """Scenario ``name`` of the file ``path`` as the checkout's commit has it."""
    from pytest_mlestimate.scenarios.files import ScenarioFileError
    from pytest_mlestimate.scenarios.scenario import ScenarioError, parse_scenario
    from pytest_mlestimate.scenarios.table import scenarios_in

    ref = checkout.ref
    there = checkout.file(path)
    if there is None or not there.is_file():
        return BaseProblem(f"{shown} is not in {ref}: the scenario was added", "added")
    try:
        entry = next((e for e in scenarios_in(there, shown) if e.name == name), None)
    except (ScenarioFileError, OSError, UnicodeDecodeError) as exc:
        return BaseProblem(f"{shown} cannot be read at {ref} ({exc}): compared with nothing", "failed")
    if entry is None:
        return BaseProblem(f"no scenario '{name}' in {shown} at {ref}: the scenario was added", "added")
    try:
        return parse_scenario(entry.fields, where=f"{shown}:{entry.line} at {ref}")
    except ScenarioError as exc:
        return BaseProblem(f"the scenario is invalid at {ref}: {'; '.join(exc.problems)}", "failed")


def removed_since(checkout: Checkout, path: Path, shown: str, here: set[str]) -> list[str]:
    """Scenarios the file held at the checkout's commit that are not among ``here`` (as ``file::name``)."""
    return [f"{shown}::{name}" for name in removed_names(checkout, path, shown, here)]


def removed_names(checkout: Checkout, path: Path, shown: str, here: set[str]) -> list[str]:
    """Names of the scenarios the file held at the checkout's commit that are not among ``here``."""
    from pytest_mlestimate.scenarios.files import ScenarioFileError
    from pytest_mlestimate.scenarios.table import scenarios_in

    there = checkout.file(path)
    if there is None or not there.is_file():
        return []
    try:
        return [e.name for e in scenarios_in(there, shown) if e.name not in here]
    except (ScenarioFileError, OSError, UnicodeDecodeError):
        return []


def measure_at(checkout: Checkout, scenario: Scenario, **options: Any) -> Run:
    """One fresh profile of ``scenario`` built from the checkout's code."""
    from pytest_mlestimate.api import estimate
    from pytest_mlestimate.core.errors import EstimateError

    try:
        return run_of(estimate(scenario, cache=False, checkout=checkout, **options))
    except EstimateError as exc:
        raise BaseMeasurementError(str(exc)) from None
