"""Is the candidate slower than the base commit? Pairs measured side by side, decided sequentially.

A pair is one profile of the base and one of the candidate, each in a fresh process, back to back, in
alternating order (base first, then candidate first: ABBA), so that the machine's drift falls on both sides and
cancels from the pair's log-ratio. At each look (after ``LOOKS`` pairs) every timing gets a Student t interval
on its mean log-ratio. The error rate is shared out (Bonferroni) over the scenario's timings and over the
looks, so stopping at the first look that decides keeps it: a union bound holds whatever the stopping rule.

A timing is decided as
- ``regressed``: its change exceeds the tolerance and its whole interval lies on the slower side of no change;
- ``no regression``: its whole interval lies below the tolerance;
and otherwise, once the pairs are spent, ``inconclusive``. Every timing states ``detectable``: the smallest
slowdown that, measured with this run's noise, would have been found ``regressed``.

Peaks (memory, utilisation) are nearly deterministic: they are compared as a saved baseline's are, with the
tolerance plus the base's own spread (``regression.compare_peak``).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from pytest_mlestimate.core.metrics import METRIC, Metric
from pytest_mlestimate.verdicts.regression import (
    FAMILY_ALPHA,
    Change,
    Run,
    compare_peak,
    t_quantile,
    tolerance_log,
    worse_log,
)

LOOKS = (3, 6, 9)
"""Pairs measured before each look; the last is the budget of pairs."""

Decision = Literal["regressed", "no regression", "inconclusive"]


@dataclass(frozen=True)
class PairedTiming:
    metric: str
    base: float
    """Geometric mean of the base's runs."""
    value: float
    """Geometric mean of the candidate's runs."""
    limit: float
    """The candidate's figure at the tolerance."""
    interval: tuple[float, float]
    """Bounds of the relative change, each at ``confidence`` (one-sided)."""
    confidence: float
    pairs: int
    decision: Decision
    detectable: float
    """The smallest relative slowdown this run would have found regressed."""

    @property
    def change(self) -> float:
        return self.value / self.base - 1


def timing_metrics(pairs: Sequence[tuple[Run, Run]]) -> list[Metric]:
    """The timings every pair measured on both sides, each figure once: an inference scenario's forward pass is
    its batch inference, the same samples, so only the first of metrics equal in every run is kept."""
    runs = [run for pair in pairs for run in pair]
    found: list[Metric] = []
    for name, metric in METRIC.items():
        if metric.noise != "timing" or not runs or not all((run.metrics.get(name) or 0) > 0 for run in runs):
            continue
        if any(all(run.metrics.get(name) == run.metrics.get(kept.name) for run in runs) for kept in found):
            continue
        found.append(metric)
    return found


def judge_timing(
    metric: Metric, pairs: Sequence[tuple[Run, Run]], tolerance: float, alpha: float, final: bool
) -> PairedTiming | None:
    """One look at one timing, its error rate ``alpha`` (this look's share). Not decided at a look that is not
    ``final``: None."""
    ratios = [
        worse_log(metric, candidate.metrics[metric.name] / base.metrics[metric.name])  # type: ignore[operator]
        for base, candidate in pairs
    ]
    n = len(ratios)
    if n < 2:
        return None
    mean = statistics.fmean(ratios)
    spread = statistics.stdev(ratios)
    bound = t_quantile(1 - alpha, n - 1) * spread / math.sqrt(n)
    margin = tolerance_log(metric, tolerance)
    if mean > margin and mean - bound > 0:
        decision: Decision = "regressed"
    elif mean + bound < margin:
        decision = "no regression"
    elif final:
        decision = "inconclusive"
    else:
        return None
    base = math.exp(statistics.fmean(math.log(b.metrics[metric.name]) for b, _ in pairs))  # type: ignore[arg-type]
    value = math.exp(statistics.fmean(math.log(c.metrics[metric.name]) for _, c in pairs))  # type: ignore[arg-type]
    sign = -1 if metric.lower_is_worse else 1
    low, high = sorted((math.expm1(sign * (mean - bound)), math.expm1(sign * (mean + bound))))
    return PairedTiming(
        metric.name,
        base,
        value,
        base * (1 - tolerance if metric.lower_is_worse else 1 + tolerance),
        (low, high),
        1 - alpha,
        n,
        decision,
        math.expm1(max(margin, bound)),
    )


@dataclass(frozen=True)
class Look:
    """What the pairs so far decide: every timing, or None while one is still open."""

    timings: list[PairedTiming] | None
    peaks: list[Change]


def look(
    pairs: Sequence[tuple[Run, Run]],
    tolerances: Mapping[str, float],
    looks: Sequence[int] = LOOKS,
    family_alpha: float = FAMILY_ALPHA,
    final: bool | None = None,
) -> Look:
    """Decide on ``pairs`` at a look: timings once all are decided (or at the ``final`` look, by default the
    last of ``looks``), peaks always."""
    metrics = timing_metrics(pairs)
    alpha = family_alpha / max(len(metrics), 1) / len(looks)
    final = len(pairs) >= looks[-1] if final is None else final
    timings = []
    for metric in metrics:
        found = judge_timing(metric, pairs, tolerances.get(metric.name, metric.tolerance), alpha, final)
        if found is None:
            timings = None
            break
        timings.append(found)
    base = [b for b, _ in pairs]
    candidate = [c for _, c in pairs]
    peaks = [
        change
        for name, metric in METRIC.items()
        if metric.noise == "peak"
        and (change := compare_peak(metric, base, candidate, tolerances.get(name, metric.tolerance))) is not None
    ]
    return Look(timings, peaks)
