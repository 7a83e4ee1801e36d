"""A sweep of profiles over sizes: one real profile per batch (and image) size of a scenario, and the size fit
through them."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pytest_mlestimate.api import estimate
from pytest_mlestimate.estimates.estimate import Estimate
from pytest_mlestimate.planning.checks import check_batch_sizes
from pytest_mlestimate.planning.size_fit import Point, SizeFit
from pytest_mlestimate.scenarios.input_size import effective_image_size
from pytest_mlestimate.scenarios.scenario import MAX_BATCH_SIZE, Scenario, parse_scenario


def load_of(scenario: Scenario) -> Callable[[int, tuple[int, int]], float]:
    """Batch size x the pixels the model computes on, for this scenario's model at any batch and image size."""

    def load(batch_size: int, image_size: tuple[int, int]) -> float:
        sized = scenario.model_copy(update={"image_size": tuple(image_size), "batch_size": batch_size})
        height, width = effective_image_size(sized) or tuple(image_size)
        return float(batch_size * height * width)

    return load


def choose_batch_sizes(scenario: Scenario, count: int = 3, most: int = MAX_BATCH_SIZE) -> list[int]:
    """Few, spread and cheap: powers of two from 2 (2, 4, 8), none above ``most``. Not 1: a model with batch
    norm in training (SSDlite's head) cannot train on one image."""
    return [2**i for i in range(1, count + 1) if 2**i <= most] or [1]


Measure = Callable[[Scenario], Estimate]
"""Profiles one scenario: ``api.estimate`` with the caller's options, or a stand-in."""


@dataclass
class SizeSweep:
    """Runs (or recalls) one profile per size of a scenario and counts what it ran."""

    scenario: Scenario
    measure: Measure = estimate
    profiled: int = 0
    recalled: int = 0
    estimates: dict[tuple[int, tuple[int, int]], Estimate] = field(default_factory=dict)

    def at(self, batch_size: int, image_size: tuple[int, int] | None = None) -> Estimate:
        image = tuple(image_size or self.scenario.image_size)
        key = (batch_size, image)
        if key not in self.estimates:
            own = batch_size == self.scenario.batch_size and image == tuple(self.scenario.image_size)
            # a size of the search needs no breakdown: its extra steps would only slow the search down
            depth = self.scenario.breakdown_depth if own else 0
            sized = parse_scenario(
                {**self.scenario.model_dump(), "batch_size": batch_size, "image_size": image, "breakdown_depth": depth}
            )
            found = self.measure(sized)
            if found.cache.get("hit"):
                self.recalled += 1
            else:
                self.profiled += 1
            self.estimates[key] = found  # type: ignore[index]
        return self.estimates[key]  # type: ignore[index]


def measure_with(options: Mapping[str, Any]) -> Measure:
    """``estimate`` with ``options``; ``measure=`` in them replaces it (a stand-in model of the world)."""
    given = options.get("measure")
    if given is not None:
        return given  # type: ignore[no-any-return]
    return lambda scenario: estimate(scenario, **options)


def fit_sizes(
    scenario: Scenario | Mapping[str, Any],
    batch_sizes: Sequence[int] | None = None,
    image_sizes: Sequence[tuple[int, int]] | None = None,
    *,
    profiler: SizeSweep | None = None,
    most: int = MAX_BATCH_SIZE,
    **options: Any,
) -> SizeFit:
    """Profile ``scenario`` at a few batch sizes (and image sizes, when given) and fit each figure's line.

    ``batch_sizes`` defaults to ``choose_batch_sizes``; ``options`` go to ``estimate`` (cache, timeout, ...).
    Smaller sizes are profiled first: an out-of-memory there ends the larger ones early.
    """
    parsed = parse_scenario(scenario)
    sizes = (
        check_batch_sizes(batch_sizes, most=most) if batch_sizes is not None else choose_batch_sizes(parsed, most=most)
    )
    images = [tuple(size) for size in image_sizes] if image_sizes else [tuple(parsed.image_size)]
    runner = profiler or SizeSweep(parsed, measure_with(options))
    load = load_of(parsed)
    points: list[Point] = []
    for image in images:
        for batch in sizes:
            found = runner.at(batch, image)  # type: ignore[arg-type]
            points.append(Point.of(found, load(batch, image)))  # type: ignore[arg-type]
            if not found.fits:
                break
    device = next(iter(runner.estimates.values())).profile.device
    return SizeFit(parsed, sorted(points, key=lambda p: p.load), device, load)
