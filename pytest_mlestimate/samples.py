"""Repeated timings kept raw; statistics are derived from them, never stored alone."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def quantile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile, q in [0, 1]."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no samples")
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summarize(values: Sequence[float]) -> dict[str, float | int] | None:
    """mean, median, p10, p90, IQR, standard error of the mean and count of a list of samples."""
    if not values:
        return None
    count = len(values)
    mean = statistics.fmean(values)
    # statistics.stdev computes with exact fractions: correct, but a hundred times slower than needed here
    variance = math.fsum((v - mean) ** 2 for v in values) / (count - 1) if count > 1 else 0.0
    return {
        "mean": mean,
        "median": statistics.median(values),
        "p10": quantile(values, 0.1),
        "p90": quantile(values, 0.9),
        "iqr": quantile(values, 0.75) - quantile(values, 0.25),
        "sem": math.sqrt(variance / count),
        "count": count,
    }
