"""``--mlestimate-against REF``: the base commit checked out beside the run, and each scenario's side there.

The base side of a scenario is the scenario of the same name in the same file at REF, built from REF's code
(``checkouts``). A scenario the base lacks is reported as added; one only the base has, as removed.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_mlestimate.core.checkouts import Checkout, CheckoutError, checked_out
from pytest_mlestimate.scenarios.scenario import Scenario
from pytest_mlestimate.verdicts.against import BaseSide, Measure, base_side_in, removed_since
from pytest_mlestimate.verdicts.regression import Run

if TYPE_CHECKING:
    from pytest_mlestimate.profiling.turns import TurnEnds

CHECKOUT = pytest.StashKey[Checkout]()


class BaseCheckout:
    """Holds REF's worktree for the whole run, and says at the end which scenarios only the base has."""

    def __init__(self, config: pytest.Config, ref: str) -> None:
        self._stack = contextlib.ExitStack()
        try:
            self.checkout = self._stack.enter_context(checked_out(Path(config.rootpath), ref))
        except CheckoutError as exc:
            raise pytest.UsageError(f"pytest-mlestimate: --mlestimate-against: {exc}") from None
        config.stash[CHECKOUT] = self.checkout
        self.removed: list[str] = []

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        names: dict[tuple[Path, str], set[str]] = defaultdict(set)
        for item in session.items:
            if type(item).__name__ == "ScenarioItem":
                names[item.path, item.file].add(item.name)  # type: ignore[attr-defined]
        for (path, shown), here in names.items():
            self.removed += removed_since(self.checkout, path, shown, here)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        checkout = self.checkout
        line = f"pytest-mlestimate: against {checkout.ref} ({checkout.commit[:12]}), measured side by side"
        terminalreporter.write_line(line)
        if self.removed:
            terminalreporter.write_line(f"  removed since {checkout.ref}: {', '.join(self.removed)}")

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        self._stack.close()


def base_side(
    config: pytest.Config,
    path: Path,
    shown: str,
    name: str,
    measure_candidate: Measure,
    measure: Callable[[Scenario, Checkout, TurnEnds | None], Run],
    device: str,
) -> BaseSide | None:
    """How ``name`` of the file ``path`` (``shown`` in messages) is measured at the base commit, beside the
    candidate on ``device``; None without --mlestimate-against."""
    checkout = config.stash.get(CHECKOUT, None)
    if checkout is None:
        return None
    return base_side_in(checkout, path, shown, name, measure_candidate, measure, device)
