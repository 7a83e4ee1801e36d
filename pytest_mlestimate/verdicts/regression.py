"""Is a change against the baseline real? Statistics over fresh-process runs.

The noise that decides a timing verdict is between processes (memory layout, thread placement, clocks):
the same CPU scenario measured in 8 fresh processes varied by 9 % while each run's own samples said 2-3 %.
So a timing figure is compared run against run: the log of each run's figure, the pooled spread of the
runs on both sides (never below the runs' own sampling error), and a one-sided Student t bound on the ratio
of geometric means. The drift a machine shows between a baseline and later runs (``DRIFT_FLOOR``) is a shift
shared by every new run, which more runs do not average out: it is a margin. A timing metric regresses when
its change exceeds the tolerance *and* its lower bound exceeds the drift margin, at a confidence shared out
over the scenario's timing metrics (Bonferroni), so that checking five timings does not make five chances of
a false alarm.

Peaks (memory, utilisation) are nearly deterministic: they regress past the tolerance plus the spread
of the baseline's own runs.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pytest_mlestimate.core.metrics import METRIC, METRICS, Metric
from pytest_mlestimate.verdicts.explain import ModuleFigures

if TYPE_CHECKING:
    from pytest_mlestimate.estimates.estimate import Estimate

DRIFT_FLOOR = {"cpu": 0.10, "cuda": 0.01}
"""The drift allowed for between a baseline and a later run, by device kind: a margin a timing's change must
clear on top of its confidence bound.
A baseline's runs are measured back to back and share the machine's state of that minute; later the machine
drifts. On the 2-core development VM, an unchanged model measured in the minutes after its baseline ran
+6.2 % and +9.1 % slower (ssdlite320, baseline runs within 3.8 % and 2.6 %; with a 5 % floor 3 of 10 clean
reruns failed) and +11.6 % (a small CNN), so 10 % for CPUs. 1 % for GPUs, the precision a GPU profile
measures to: GPU drift is not yet measured."""

FAMILY_ALPHA = 0.05
"""Chance, per scenario, that an unchanged model fails its timing checks (false alarms across metrics)."""
SCREEN_ALPHA = 0.25
"""A first measurement this suspicious is measured once more before any verdict."""


@dataclass(frozen=True)
class Run:
    """One fresh-process measurement: each metric's figure, the raw samples behind the timings and the figures
    per module of the model that explain a failed verdict (``explain.py``)."""

    metrics: Mapping[str, float | None]
    samples: Mapping[str, Sequence[float]]
    contended: bool = False
    breakdown: ModuleFigures | None = None
    """None where the run measured none, or was saved before runs kept it."""

    def relative_error(self, metric: str) -> float | None:
        """Standard error of this run's figure relative to it, from its own samples; None when unknown (a JSON
        report keeps no samples), so that an unknown error is never taken for a precise run."""
        values = self.samples.get(metric) or ()
        if len(values) < 2:
            return None
        mean = statistics.fmean(values)
        if mean <= 0:
            return None
        variance = math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1)
        return math.sqrt(variance / len(values)) / mean

    def to_dict(self) -> dict[str, object]:
        found: dict[str, object] = {
            "metrics": dict(self.metrics),
            "samples": {k: list(v) for k, v in self.samples.items()},
            "contended": self.contended,
        }
        if self.breakdown is not None:  # absent rather than null: a run reads as it did before runs kept it
            found["breakdown"] = self.breakdown.to_dict()
        return found

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Run:
        metrics = data.get("metrics") or {}
        samples = data.get("samples") or {}
        if not isinstance(metrics, Mapping) or not isinstance(samples, Mapping):
            raise ValueError("a run needs 'metrics' and 'samples' mappings")
        return cls(
            dict(metrics),
            {k: list(v) for k, v in samples.items()},
            bool(data.get("contended", False)),
            ModuleFigures.read(data.get("breakdown")),
        )


def run_of(estimate: Estimate) -> Run:
    """One measurement as a baseline keeps it: the figures, the raw samples behind the timings and the figures per
    module of the model (``details.breakdown``)."""
    samples = {m: list(values) for m in METRICS if (values := estimate.samples(m))}
    breakdown = ModuleFigures.of_breakdown(estimate.to_dict()["details"].get("breakdown"))
    return Run(estimate.metrics(), samples, bool(getattr(estimate.profile, "contended", False)), breakdown)


@dataclass(frozen=True)
class Change:
    """A metric's change against the baseline, with its interval where the noise is known."""

    metric: str
    baseline: float
    value: float
    limit: float
    """The figure beyond which the change exceeds the tolerance."""
    regressed: bool
    interval: tuple[float, float] | None = None
    """Bounds of the relative change at ``confidence`` (timings only)."""
    confidence: float | None = None
    runs: tuple[int, int] = (1, 1)
    """(baseline runs, new runs) that the comparison rests on."""
    suspect: bool = False
    """Exceeds the tolerance and the screening bound: worth one more measurement before a verdict."""
    detectable: float | None = None
    """A timing's smallest relative slowdown that this comparison would have found regressed."""

    @property
    def change(self) -> float:
        return (self.value - self.baseline) / self.baseline if self.baseline else 0.0


def t_quantile(p: float, df: int) -> float:
    from scipy.stats import t

    return float(t.ppf(p, df))


def worse_log(metric: Metric, ratio: float) -> float:
    """log of the ratio, signed so that positive is worse."""
    return -math.log(ratio) if metric.lower_is_worse else math.log(ratio)


def tolerance_log(metric: Metric, tolerance: float) -> float:
    """The tolerance on the scale of ``worse_log``: a change beyond it is over the limit."""
    return -math.log1p(-tolerance) if metric.lower_is_worse else math.log1p(tolerance)


def compare_timing(
    metric: Metric,
    baseline: Sequence[Run],
    new: Sequence[Run],
    tolerance: float,
    alpha: float,
    screen_alpha: float = SCREEN_ALPHA,
    floor: float = 0.0,
) -> Change | None:
    """The change of a timing's geometric mean. The runs' spread (never below their own sampling error) gives a
    one-sided Student t bound; the machine's drift between the baseline and now (``floor``) is a shift that all
    new runs share, not noise that more runs average out, so it is a margin the change must clear on top of the
    bound: a regression is a change past the tolerance whose lower bound exceeds the drift."""
    old = [(math.log(v), r.relative_error(metric.name)) for r in baseline if (v := r.metrics.get(metric.name))]
    now = [(math.log(v), r.relative_error(metric.name)) for r in new if (v := r.metrics.get(metric.name))]
    if not old or not now:
        return None
    k, m = len(old), len(now)
    mean_old = statistics.fmean(x for x, _ in old)
    mean_new = statistics.fmean(x for x, _ in now)
    df = k + m - 2
    known = [e**2 for _, e in old + now if e is not None]
    within = statistics.fmean(known) if known else 0.0
    if df > 0:
        squares = math.fsum((x - mean_old) ** 2 for x, _ in old) + math.fsum((x - mean_new) ** 2 for x, _ in now)
        variance = max(squares / df, within)
    else:  # one run a side: only the runs' own sampling error is known, the between-process noise is not
        variance = max(within, math.log1p(floor) ** 2)
    standard_error = math.sqrt(variance * (1 / k + 1 / m))
    if df > 0:
        bound, screen = t_quantile(1 - alpha, df), t_quantile(1 - screen_alpha, df)
    else:
        normal = statistics.NormalDist()
        bound, screen = normal.inv_cdf(1 - alpha), normal.inv_cdf(1 - screen_alpha)
    margin = math.log1p(floor)
    difference = mean_new - mean_old
    baseline_value, value = math.exp(mean_old), math.exp(mean_new)
    worse = worse_log(metric, value / baseline_value)
    over = worse > tolerance_log(metric, tolerance)
    limit = baseline_value * (1 - tolerance if metric.lower_is_worse else 1 + tolerance)
    low, high = math.expm1(difference - bound * standard_error), math.expm1(difference + bound * standard_error)
    return Change(
        metric.name,
        baseline_value,
        value,
        limit,
        regressed=over and worse - margin - bound * standard_error > 0,
        interval=(low, high),
        confidence=1 - alpha,
        runs=(k, m),
        suspect=over and worse - margin - screen * standard_error > 0,
        detectable=math.expm1(max(math.log1p(tolerance), margin + bound * standard_error)),
    )


def smallest_failing_slowdown(
    tolerance: float, floor: float, spread: float, baseline_runs: int, new_runs: int, alpha: float
) -> float:
    """The smallest slowdown ``compare_timing`` fails, for runs whose log figures scatter by ``spread`` (their
    standard deviation, at least their own sampling error): the tolerance, or the drift margin plus the bound."""
    df = baseline_runs + new_runs - 2
    bound = t_quantile(1 - alpha, df) if df > 0 else statistics.NormalDist().inv_cdf(1 - alpha)
    spread = spread if df > 0 else max(spread, math.log1p(floor))
    error = spread * math.sqrt(1 / baseline_runs + 1 / new_runs)
    return math.expm1(max(math.log1p(tolerance), math.log1p(floor) + bound * error))


def compare_peak(metric: Metric, baseline: Sequence[Run], new: Sequence[Run], tolerance: float) -> Change | None:
    old = [v for r in baseline if (v := r.metrics.get(metric.name)) is not None]
    now = [v for r in new if (v := r.metrics.get(metric.name)) is not None]
    if not old or not now:
        return None
    base, value = statistics.fmean(old), statistics.fmean(now)
    allowance = tolerance * abs(base) + (max(old) - min(old))
    limit = base - allowance if metric.lower_is_worse else base + allowance
    regressed = value < limit if metric.lower_is_worse else value > limit
    return Change(metric.name, base, value, limit, regressed=regressed, runs=(len(old), len(now)))


def compare_runs(
    baseline: Sequence[Run],
    new: Sequence[Run],
    tolerances: Mapping[str, float],
    family_alpha: float = FAMILY_ALPHA,
    floor: float = 0.0,
) -> list[Change]:
    """Every metric both sides measured; ``floor`` is the least relative spread between runs assumed for
    timings (``DRIFT_FLOOR``). Contended new runs judge no timing, nor a peak that follows the clock (energy,
    cost, utilisation); memory peaks they do."""
    timed = [r for r in new if not r.contended]
    timings = [
        METRIC[name]
        for name in METRIC
        if METRIC[name].noise == "timing"
        and any(r.metrics.get(name) for r in baseline)
        and any(r.metrics.get(name) for r in timed)
    ]
    alpha = family_alpha / max(len(timings), 1)
    found = []
    for name, metric in METRIC.items():
        tolerance = tolerances.get(name, metric.tolerance)
        if metric.noise == "timing":
            change = (
                compare_timing(metric, baseline, timed, tolerance, alpha, floor=floor) if metric in timings else None
            )
        else:
            change = compare_peak(metric, baseline, timed if metric.follows_the_clock else new, tolerance)
        if change is not None:
            found.append(change)
    return found
