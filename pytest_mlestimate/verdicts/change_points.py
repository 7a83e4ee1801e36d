"""Where a metric stepped: change points in a scenario's history (``mlestimate history``).

A series holds one figure per session, ordered as recorded. Its logarithm (so that a step is a ratio) is fitted
piecewise constant by PELT (``ruptures``, squared-error cost) at a penalty of ``PENALTY`` x sigma^2 x ln n per
step, sigma being the series' own noise, read from the differences of successive points (a median, so that the
steps themselves barely move it). Each step found is then kept only when it is

- **larger than the noise floor**: for a timing, the larger of its tolerance (``metrics.TIME_TOLERANCE``, what a
  team would act on) and the drift a machine shows on its own between sessions (``regression.DRIFT_FLOOR``: on
  the 2-core development VM an unchanged model ran +6 % to +12 % slower minutes after its baseline, so a smaller
  lasting shift of a CPU timing may be the machine as well as the commit; 1 % on a GPU); for a peak, its
  tolerance (5 % for memory). ``min_step`` replaces the floor for a machine whose history shows it steadier;
- **significant**: a two-sided Mann-Whitney test between the segments on either side gives p < ``STEP_ALPHA``.
  It needs ``MIN_SEGMENT`` runs a side, so a step among the last few runs shows only once runs after it follow.

Steps that pass the test but not the floor are kept apart (``Steps.small``), so that a report can say what it
left out and why. ``bench/history_power.py`` measures how often a known step is named and how often a
history without one gets a step.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from pytest_mlestimate.core.metrics import Metric
from pytest_mlestimate.verdicts.regression import DRIFT_FLOOR

PENALTY = 4.0
"""Penalty per step in units of sigma^2 ln n: twice the Bayesian information criterion's for a mean shift. Over 300
simulated histories of 40 sessions with 1 % noise between processes and 1 % between sessions, a +8 % step was
placed exactly in 99.3 % (2x), 99.7 % (4x) and 99.7 % (6x) of them, and a history without a step got one in 2.7 %,
0.7 % and 0.3 %; with 3 % and 2 % noise and a 5 % floor, 65 %, 65 % and 62 % exactly, falsely 3.7 %, 0.7 % and
0.3 % (``bench/history_power.py``)."""
MIN_SEGMENT = 5
"""Sessions on each side of a step: with fewer, Mann-Whitney cannot reach ``STEP_ALPHA`` (5 against 5 separate
at p = 0.008 at best)."""
STEP_ALPHA = 0.01
"""Two-sided level of the test between the two sides of a step."""
LEAST_NOISE = 1e-3
"""sigma is never taken below 0.1 % (of the log): a memory figure repeats to the byte, and a zero penalty would
split at every byte of difference."""


@dataclass(frozen=True)
class Step:
    """A lasting change of level: ``index`` is the first point at the new level."""

    index: int
    size: float
    """Relative change of the median, after against before (+0.08 = 8 % up)."""
    before: float
    after: float
    """Medians of the segments on either side."""
    counts: tuple[int, int]
    """Points in the segments on either side."""
    p_value: float


@dataclass(frozen=True)
class Steps:
    found: list[Step] = field(default_factory=list)
    """Steps larger than the floor and significant."""
    small: list[Step] = field(default_factory=list)
    """Significant steps within the floor: left out."""
    floor: float = 0.0
    noise: float | None = None
    """The series' noise (relative, one session), None with too few points to tell."""
    too_short: bool = False
    """Fewer than 2 x MIN_SEGMENT points: no step can be found yet."""


def step_floor(metric: Metric, device_kind: str) -> float:
    """The least step size reported for ``metric`` on a ``cpu`` or ``cuda`` environment."""
    if metric.noise == "timing":
        return max(metric.tolerance, DRIFT_FLOOR[device_kind])
    return metric.tolerance


def noise_of(values: Sequence[float]) -> float:
    """sigma of one point, from the median absolute deviation of successive differences (robust to steps)."""
    differences = sorted(b - a for a, b in itertools.pairwise(values))
    if not differences:
        return 0.0
    middle = _median(differences)
    spread = _median(sorted(abs(d - middle) for d in differences))
    return 1.4826 * spread / math.sqrt(2)


def _median(ordered: Sequence[float]) -> float:
    n = len(ordered)
    return ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) / 2


def find_steps(values: Sequence[float], floor: float, alpha: float = STEP_ALPHA) -> Steps:
    """Steps in ``values`` (one figure per session, in order) larger than ``floor`` (relative) and significant."""
    import numpy as np
    import ruptures
    from scipy.stats import mannwhitneyu

    if len(values) < 2 * MIN_SEGMENT:
        return Steps(floor=floor, too_short=True)
    positive = all(v > 0 for v in values)
    signal = np.log(np.asarray(values, dtype=float)) if positive else np.asarray(values, dtype=float)
    sigma = noise_of(signal.tolist())
    scale = 1.0 if positive else max(abs(float(np.median(signal))), 1e-12)
    penalty = PENALTY * max(sigma, LEAST_NOISE * scale) ** 2 * math.log(len(signal))
    ends = ruptures.Pelt(model="l2", min_size=MIN_SEGMENT, jump=1).fit(signal.reshape(-1, 1)).predict(pen=penalty)
    edges = [0, *ends]
    found, small = [], []
    for start, at, end in zip(edges, edges[1:], edges[2:], strict=False):
        left, right = signal[start:at], signal[at:end]
        before, after = float(np.median(left)), float(np.median(right))
        if positive:
            size, before, after = math.expm1(after - before), math.exp(before), math.exp(after)
        else:
            size = (after - before) / abs(before) if before else math.inf
        p_value = float(mannwhitneyu(left, right, alternative="two-sided").pvalue)
        if p_value >= alpha:
            continue
        step = Step(at, size, before, after, (len(left), len(right)), p_value)
        (found if abs(size) > floor else small).append(step)
    noise = math.expm1(sigma) if positive else sigma / scale
    return Steps(found, small, floor, noise)
