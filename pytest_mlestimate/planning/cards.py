"""Card classes by nominal memory, and the largest batch each fits by a size fit's reserved-memory line."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pytest_mlestimate.core.devices import is_gpu
from pytest_mlestimate.planning.checks import DEFAULT_HEADROOM
from pytest_mlestimate.planning.size_fit import SizeFit
from pytest_mlestimate.scenarios.scenario import MAX_BATCH_SIZE


@dataclass(frozen=True)
class Card:
    name: str
    memory_gib: float


CARDS: tuple[Card, ...] = (
    Card("16 GB class (T4, V100 16GB, A4000)", 16),
    Card("24 GB class (L4, A10, RTX 4090)", 24),
    Card("40 GB class (A100 40GB)", 40),
    Card("48 GB class (L40S, A6000, A40)", 48),
    Card("80 GB class (A100 80GB, H100 SXM)", 80),
    Card("94 GB class (H100 NVL)", 94),
    Card("141 GB class (H200)", 141),
)
"""Nominal memory by class; what a card really offers is a little less (ECC, the driver), which the headroom
covers."""


@dataclass(frozen=True)
class CardFit:
    card: Card
    largest: int | None
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"card": self.card.name, "memory_gib": self.card.memory_gib, "Max Batch Size": self.largest,
                "reason": self.reason}  # fmt: skip


def card_table(fit: SizeFit, headroom: float = DEFAULT_HEADROOM, cards: Sequence[Card] = CARDS) -> list[CardFit]:
    """The largest batch each card class fits, from the reserved-memory line plus what the measured device
    held besides (the CUDA context and library workspaces, assumed the same on every card: they vary by
    device and driver). Time on a card that was not measured is not guessed."""
    if not is_gpu(fit.device) and not fit.base.predict_gpu:
        reason = f"GPU memory was not measured: the profiles ran on {fit.device} (predict_gpu predicts it)"
        return [CardFit(card, None, reason) for card in cards]
    reserved = fit.lines.get("peak_gpu_reserved")
    overheads = [
        p.values["peak_gpu_memory"] - p.values["peak_gpu_reserved"]  # type: ignore[operator]
        for p in fit.points
        if p.fits and p.values.get("peak_gpu_memory") is not None and p.values.get("peak_gpu_reserved") is not None
    ]
    if reserved is None or not overheads:
        return [CardFit(card, None, "no GPU memory line: too few profiles fit") for card in cards]
    overhead = max(overheads)
    per_batch = fit.load_of(1, tuple(fit.base.image_size))
    found = []
    for card in cards:
        room = card.memory_gib * 2**30 * (1 - headroom) - overhead
        load = reserved.largest_load_under(room)
        largest = MAX_BATCH_SIZE if load is None else min(MAX_BATCH_SIZE, math.floor(load / per_batch))
        found.append(CardFit(card, largest if largest >= 1 else None, None if largest >= 1 else "batch 1 does not fit"))
    return found
