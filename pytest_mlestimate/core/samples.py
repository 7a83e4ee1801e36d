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


OUTLIER_MADS = 5.0
OUTLIER_FLOOR = 0.5
"""A sample counts as it is up to ``OUTLIER_MADS`` scaled median absolute deviations above the median, and
never less than ``OUTLIER_FLOOR`` medians above it. Step times are right-skewed (p90/p10 about 1.3, so 5
MADs is about half a median), which this keeps whole; a step stalled by another process (10-70x the
median) counts as 1.5 medians."""


def robust_mean(values: Sequence[float]) -> float:
    """The mean after winsorising samples far above the median (see ``OUTLIER_MADS``)."""
    if not values:
        raise ValueError("no samples")
    centre = statistics.median(values)
    mad = 1.4826 * statistics.median(abs(v - centre) for v in values)
    high = centre + max(OUTLIER_MADS * mad, OUTLIER_FLOOR * abs(centre))
    return statistics.fmean(min(v, high) for v in values)
