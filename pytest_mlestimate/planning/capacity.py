"""Capacity planning's answer: the size fit, the largest batch under a limit, predictions and the card table,
in one report."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pytest_mlestimate.core.errors import EstimateError, brief
from pytest_mlestimate.core.metrics import METRIC
from pytest_mlestimate.planning.cards import CardFit, card_table
from pytest_mlestimate.planning.checks import DEFAULT_HEADROOM, CapacityError, check_batch_sizes, parse_headroom
from pytest_mlestimate.planning.search import BatchSearch, SearchBounds, max_batch_size
from pytest_mlestimate.planning.size_fit import FIGURE, Prediction, SizeFit
from pytest_mlestimate.planning.sweep import fit_sizes
from pytest_mlestimate.scenarios.scenario import MAX_BATCH_SIZE, Scenario, ScenarioError, parse_scenario


@dataclass
class CapacityReport:
    """What the faces show: the fit's predictions at asked sizes, the search and the card table."""

    fit: SizeFit
    search: BatchSearch | None
    cards: list[CardFit]
    predictions: dict[int, dict[str, Prediction]]

    def metrics(self) -> dict[str, float | None]:
        """Budget figures by metric name (``metrics.CAPACITY_METRICS``)."""
        largest = self.search.largest if self.search else None
        return {"max_batch_size": float(largest) if largest is not None else None}

    def to_dict(self) -> dict[str, Any]:
        return {
            METRIC["max_batch_size"].key: self.search.largest if self.search else None,
            "search": self.search.to_dict() if self.search else None,
            "fit": self.fit.to_dict(),
            "predictions": {
                str(batch): {FIGURE[name].key: p.to_dict() for name, p in found.items()}
                for batch, found in self.predictions.items()
            },
            "cards": [card.to_dict() for card in self.cards],
            "approximated": (
                "card memory is nominal; the CUDA context and library workspaces are taken as measured on this "
                "device and differ by device and driver; time on an unmeasured card is not estimated"
            ),
        }

    def __str__(self) -> str:
        lines = []
        if self.search is not None:
            lines.append(str(self.search))
        for batch, found in self.predictions.items():
            lines.append(f"batch {batch}:")
            lines.extend(f"  {FIGURE[name].key:<28} {prediction}" for name, prediction in found.items())
        reasons = {row.reason for row in self.cards}
        if all(row.largest is None for row in self.cards) and len(reasons) == 1:
            lines.append(f"cards: none answered ({reasons.pop()})")
            return "\n".join(lines)
        lines.append("cards:")
        for row in self.cards:
            shown = row.largest if row.largest is not None else f"- ({row.reason})"
            lines.append(f"  {row.card.name:<40} {shown}")
        return "\n".join(lines)


def capacity(
    scenario: Scenario | Mapping[str, Any],
    *,
    limit: str | float | None = None,
    headroom: float | str = DEFAULT_HEADROOM,
    batch_sizes: Sequence[int] | None = None,
    predict: Sequence[int] = (),
    search: bool = True,
    step: int = 1,
    most: int = MAX_BATCH_SIZE,
    bounds: SearchBounds | None = None,
    **options: Any,
) -> CapacityReport:
    """The fit, the largest batch under the limit (``search``), predictions at ``predict`` and the card table.
    ``most`` bounds every batch profiled or asked about; ``bounds`` are a service's (its batch limit and the
    time it gives a search), named in the answer when they decide it."""
    if bounds is not None:
        most = min(most, bounds.most)
    parsed = parse_scenario(scenario)
    share = parse_headroom(headroom)
    sizes = check_batch_sizes(batch_sizes, most=most) if batch_sizes is not None else None
    asked = sorted(set(predict))
    for batch in asked:
        if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= most:
            raise CapacityError(f"predict: {brief(batch)} is not a batch size from 1 to {most}")
    if search:
        found = max_batch_size(parsed, limit, headroom=share, step=step, batch_sizes=sizes, most=most, bounds=bounds,
                                **options)  # fmt: skip
        fit = found.fit
    else:
        found, fit = None, fit_sizes(parsed, sizes, most=most, **options)
    return CapacityReport(fit, found, card_table(fit, share), {b: fit.predict(b) for b in asked})


__all__ = ["CapacityError", "CapacityReport", "EstimateError", "ScenarioError", "capacity"]
