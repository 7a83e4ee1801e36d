"""Figures as a function of size: a straight line through a few profiles, and predictions from it.

A figure is fitted against the *load* of a step, batch size x the pixels the model really computes on
(``input_size.effective_image_size``), so batch sizes and image sizes share one line. Allocated memory and
RAM grow close to linearly with it (on an H100 a line through batch 1 and 2 predicted batch 16's peak
allocated memory within 0.5 %), step time close to affinely once the device is busy. What the allocator
*reserves* is fitted separately: it was 7 % off through the same two points.

A prediction carries a 95 % prediction interval: the line's own uncertainty plus the noise of one new
measurement. That noise is what repeated profiles are known to vary by (``PEAK_NOISE_FLOOR``, and
``regression.DRIFT_FLOOR`` for timings) unless the points scatter about the line more than that, in which
case their scatter is used with Student's t.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pytest_mlestimate.core.devices import is_gpu
from pytest_mlestimate.core.metrics import METRIC
from pytest_mlestimate.core.samples import robust_mean, summarize
from pytest_mlestimate.core.units import format_quantity
from pytest_mlestimate.estimates.estimate import Estimate
from pytest_mlestimate.verdicts.regression import DRIFT_FLOOR

CONFIDENCE = 0.95
PEAK_NOISE_FLOOR = 0.01
"""Least relative spread assumed for a memory peak between fresh-process profiles of one size."""
FAR_FACTOR = 2.0
"""A load more than this factor outside the profiled range is called an extrapolation in words."""


@dataclass(frozen=True)
class Figure:
    """One figure that grows with size: its name, the key it is shown under, its unit and how an
    estimate holds it."""

    name: str
    key: str
    unit: str
    timing: bool
    read: Callable[[Estimate], float | None]
    samples: Callable[[Estimate], list[float]] = lambda _estimate: []

    @classmethod
    def of_metric(cls, name: str, read: Callable[[Estimate], float | None]) -> Figure:
        """A documented metric's figure, under its key and in its unit."""
        metric = METRIC[name]
        return cls(name, metric.key, metric.unit, metric.noise == "timing", read)


def _peak(estimate: Estimate, attribute: str) -> float | None:
    """A peak of the estimate's own phase (training or inference); a GPU's, where no GPU measured it, as the
    scenario's ``predict_gpu`` predicted it."""
    phase = (
        estimate.profile.training if estimate.scenario.application_type == "training" else estimate.profile.inference
    )
    value = getattr(phase, attribute, None) if phase else None
    predicted = estimate.predicted_gpu_memory()
    if value is None and predicted is not None:
        value = {
            "peak_gpu_memory": predicted.device,
            "peak_gpu_allocated": predicted.allocated,
            "peak_gpu_reserved": predicted.reserved,
        }.get(attribute)
    return float(value) if value is not None else None


def _step_times(estimate: Estimate) -> list[float]:
    if estimate.scenario.application_type == "training":
        return list(estimate.profile.step_times)
    return list(estimate.profile.inference_batch_times)


def _step_time(estimate: Estimate) -> float | None:
    times = _step_times(estimate)
    return robust_mean(times) if times else None


FIGURES: tuple[Figure, ...] = (
    Figure.of_metric("peak_ram_memory", lambda e: _peak(e, "peak_rss")),
    Figure.of_metric("peak_gpu_memory", lambda e: _peak(e, "peak_gpu_memory")),
    Figure("peak_gpu_allocated", "Peak GPU Allocated Memory", "bytes", False, lambda e: _peak(e, "peak_gpu_allocated")),
    Figure("peak_gpu_reserved", "Peak GPU Reserved Memory", "bytes", False, lambda e: _peak(e, "peak_gpu_reserved")),
    Figure("step_time", "Step Time", "seconds", True, _step_time, _step_times),
)
"""``step_time`` is a training step, or a batch inference call for an inference scenario; it, and what the
allocator allocates and reserves at its peak, are no documented metric."""
FIGURE = {figure.name: figure for figure in FIGURES}


@dataclass(frozen=True)
class Point:
    """One profiled size and what it measured; ``fits`` is False when it ran out of device memory."""

    batch_size: int
    image_size: tuple[int, int]
    load: float
    values: Mapping[str, float | None]
    errors: Mapping[str, float]
    """Standard error of each figure's value within its own profile (0 for peaks)."""
    fits: bool = True
    source: str = "measured"

    @classmethod
    def of(cls, estimate: Estimate, load: float) -> Point:
        values = {figure.name: figure.read(estimate) for figure in FIGURES}
        errors: dict[str, float] = {}
        for figure in FIGURES:
            summary = summarize(figure.samples(estimate))
            errors[figure.name] = float(summary["sem"]) if summary else 0.0
        source = "cache" if estimate.cache.get("hit") else "measured"
        return cls(estimate.scenario.batch_size, tuple(estimate.scenario.image_size), load, values, errors,
                   estimate.fits, source)  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return {
            "batch_size": self.batch_size,
            "image_size": list(self.image_size),
            "fits": self.fits,
            "source": self.source,
            **{FIGURE[name].key: value for name, value in self.values.items()},
        }


@dataclass(frozen=True)
class Prediction:
    figure: str
    value: float
    low: float
    high: float
    where: str
    """``measured``, ``interpolated``, ``extrapolated`` or ``far extrapolation``."""

    @property
    def unit(self) -> str:
        return FIGURE[self.figure].unit

    def __str__(self) -> str:
        shown = format_quantity(self.value, self.unit)
        low, high = format_quantity(self.low, self.unit), format_quantity(self.high, self.unit)
        return f"{shown} ({CONFIDENCE:.0%} PI {low}..{high}, {self.where})"

    def covers(self, value: float) -> bool:
        return self.low <= value <= self.high

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "low": self.low, "high": self.high, "confidence": CONFIDENCE, "basis": self.where}


def _t_quantile(p: float, df: int) -> float:
    from scipy.stats import t

    return float(t.ppf(p, df))


@dataclass(frozen=True)
class Line:
    """``value = intercept + slope x load`` by least squares, with what a prediction's interval needs."""

    figure: str
    intercept: float
    slope: float
    loads: tuple[float, ...]
    residual_variance: float | None
    """Variance of the points about the line (n - 2 degrees of freedom); None through two points."""
    point_variance: float
    """Mean variance of one point's value: its own sampling error, at least the noise floor."""
    relative_floor: float

    @classmethod
    def through(cls, figure: Figure, points: Sequence[Point], device: str) -> Line | None:
        usable = [(p.load, p.values[figure.name], p.errors.get(figure.name, 0.0)) for p in points if p.fits]
        usable = [(x, y, e) for x, y, e in usable if y is not None]
        if len({x for x, _, _ in usable}) < 2:
            return None
        xs = [x for x, _, _ in usable]
        ys = [float(y) for _, y, _ in usable]  # type: ignore[arg-type]
        n = len(xs)
        mean_x, mean_y = sum(xs) / n, sum(ys) / n
        sxx = sum((x - mean_x) ** 2 for x in xs)
        slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / sxx
        intercept = mean_y - slope * mean_x
        residuals = [y - (intercept + slope * x) for x, y in zip(xs, ys, strict=True)]
        residual_variance = sum(r * r for r in residuals) / (n - 2) if n > 2 else None
        floor = DRIFT_FLOOR["cuda" if is_gpu(device) else "cpu"] if figure.timing else PEAK_NOISE_FLOOR
        errors = [e for _, _, e in usable]
        point_variance = sum(max(e, floor * abs(y)) ** 2 for y, e in zip(ys, errors, strict=True)) / n
        return cls(figure.name, intercept, slope, tuple(xs), residual_variance, point_variance, floor)

    def at(self, load: float) -> float:
        return self.intercept + self.slope * load

    def predict(self, load: float) -> Prediction:
        n = len(self.loads)
        mean_x = sum(self.loads) / n
        sxx = sum((x - mean_x) ** 2 for x in self.loads)
        value = self.at(load)
        residual = self.residual_variance
        if residual is not None and residual > self.point_variance:
            # the points scatter more than profiles are known to: the scatter is the noise, estimated from
            # n - 2 degrees of freedom
            spread, new_noise = residual, residual
            quantile = _t_quantile(0.5 + CONFIDENCE / 2, n - 2)
        else:
            # the points lie within the known noise of a profile: that noise is the spread (a normal quantile;
            # Student's t with one degree of freedom would widen the interval twelvefold for nothing)
            spread, new_noise = self.point_variance, (self.relative_floor * abs(value)) ** 2
            quantile = _t_quantile(0.5 + CONFIDENCE / 2, 10**6)
        variance = spread * (1 / n + (load - mean_x) ** 2 / sxx) + new_noise
        margin = quantile * math.sqrt(variance)
        low = max(value - margin, 0.0)  # no figure here is negative
        return Prediction(self.figure, value, low, value + margin, self.where(load))

    def where(self, load: float) -> str:
        low, high = min(self.loads), max(self.loads)
        if load in self.loads:
            return "measured"
        if low <= load <= high:
            return "interpolated"
        if load > high * FAR_FACTOR or load < low / FAR_FACTOR:
            return "far extrapolation"
        return "extrapolated"

    def largest_load_under(self, limit: float) -> float | None:
        """The load at which the line reaches ``limit``; None if it never does (flat or falling)."""
        if self.slope <= 0:
            return None
        return (limit - self.intercept) / self.slope

    def to_dict(self) -> dict[str, Any]:
        return {
            "intercept": self.intercept,
            "slope_per_load": self.slope,
            "points": len(self.loads),
            "residual_sd": math.sqrt(self.residual_variance) if self.residual_variance is not None else None,
        }


@dataclass
class SizeFit:
    """Lines through profiles at several sizes of one scenario; ``predict`` answers any size."""

    base: Any
    """The scenario the sizes vary (a ``Scenario``)."""
    points: list[Point]
    device: str
    load_of: Callable[[int, tuple[int, int]], float]
    lines: dict[str, Line] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.refit()

    def refit(self) -> None:
        self.lines = {}
        for figure in FIGURES:
            line = Line.through(figure, self.points, self.device)
            if line is not None:
                self.lines[figure.name] = line

    def add(self, point: Point) -> None:
        self.points = [p for p in self.points if p.load != point.load] + [point]
        self.points.sort(key=lambda p: p.load)
        self.refit()

    def point_at(self, batch_size: int, image_size: tuple[int, int] | None = None) -> Point | None:
        image = tuple(image_size or self.base.image_size)
        return next((p for p in self.points if p.batch_size == batch_size and p.image_size == image), None)

    def predict(self, batch_size: int, image_size: tuple[int, int] | None = None) -> dict[str, Prediction]:
        image = tuple(image_size or self.base.image_size)
        load = self.load_of(batch_size, image)  # type: ignore[arg-type]
        return {name: line.predict(load) for name, line in self.lines.items()}

    def images_per_second(self) -> dict[int, float]:
        """Measured throughput of each profiled batch (at the scenario's image size) that fit."""
        found = {}
        for point in self.points:
            step = point.values.get("step_time")
            if point.fits and step and point.image_size == tuple(self.base.image_size):
                found[point.batch_size] = point.batch_size / step
        return found

    def to_dict(self) -> dict[str, Any]:
        return {
            "points": [point.to_dict() for point in self.points],
            "fits": {FIGURE[name].key: line.to_dict() for name, line in self.lines.items()},
            "load": "batch_size x height x width of the size the model computes on",
            "confidence": CONFIDENCE,
        }
