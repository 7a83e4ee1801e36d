"""The largest batch that fits under a memory limit, found by predicting from a size fit and confirming.

Every profile of a search is a real one, each in its own process (``api.estimate``), so a trial that runs
out of memory cannot poison the next and each profile's RAM is its own. The search predicts from a line
(``size_fit``) and spends real profiles only to confirm: the predicted batch fits and the next candidate
does not.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pytest_mlestimate.core.devices import Device, is_gpu
from pytest_mlestimate.core.errors import ProfileCrashError, brief
from pytest_mlestimate.core.gpu_cards import card_named
from pytest_mlestimate.core.units import format_quantity
from pytest_mlestimate.planning.checks import DEFAULT_HEADROOM, CapacityError, parse_headroom, parse_limit
from pytest_mlestimate.planning.size_fit import FIGURE, Point, SizeFit
from pytest_mlestimate.planning.sweep import SizeSweep, fit_sizes, measure_with
from pytest_mlestimate.scenarios.scenario import MAX_BATCH_SIZE, Scenario, parse_scenario

MAX_PROFILES = 12
"""A search that has not settled after this many profiles stops and says what it knows."""


@dataclass(frozen=True)
class SearchBounds:
    """Limits on a search set by whoever runs it (a service), and the words that name them in its answer."""

    most: int = MAX_BATCH_SIZE
    """The largest batch profiled or answered."""
    seconds: float | None = None
    """No new profile starts after this long (one running is bounded by its own timeout)."""
    owner: str = "this search"
    """Who set the bounds, as the answer names them: 'this service (--max-batch-size ...)'."""


def limit_figure(device: str, predict_gpu: str | None = None) -> str:
    """What a memory limit applies to: the process's GPU memory on a GPU (or as predicted for the scenario's
    ``predict_gpu`` card), its peak RAM on a CPU."""
    return "peak_gpu_memory" if is_gpu(device) or predict_gpu else "peak_ram_memory"


def device_memory(device: str, predict_gpu: str | None = None) -> float | None:
    """Total memory of the device a profile ran on (RAM for the CPU), without initialising CUDA here; on a
    device other than a GPU, the memory of the card the scenario predicts for, if it names one."""
    card = card_named(predict_gpu) if predict_gpu and not is_gpu(device) else None
    return card.memory_bytes if card is not None else Device.of(device).memory_bytes()


@dataclass
class BatchSearch:
    """The largest batch under a memory limit, how it was found and what it costs to find it."""

    fit: SizeFit
    limit: float
    limit_source: str
    figure: str
    largest: int | None
    first_failing: int | None
    step: int
    predicted_first: int | None
    profiles: int
    recalled: int
    settled: bool
    note: str | None = None
    bound: str | None = None
    """Set when a bound of ``SearchBounds`` decided the answer: larger batches were never tried."""

    @property
    def lightning_trials(self) -> int | None:
        """Trials the power-then-binary-search of common trainers takes to the same answer (counted, not run)."""
        if self.largest is None and self.first_failing is None:
            return None
        return power_then_binary_trials(lambda b: self.largest is not None and b <= self.largest)

    def best_throughput(self) -> tuple[int, float] | None:
        found = self.fit.images_per_second()
        return max(found.items(), key=lambda item: item[1]) if found else None

    def __str__(self) -> str:
        figure = FIGURE[self.figure]
        lines = [
            f"largest batch under {format_quantity(self.limit, 'bytes')} of {figure.key} ({self.limit_source}): "
            f"{self.largest if self.largest is not None else 'none fits'}"
            + ("" if self.settled else " (not confirmed: " + (self.note or "search stopped") + ")"),
            f"  profiles: {self.profiles} run, {self.recalled} from the cache; "
            f"a power-then-binary search would run {self.lightning_trials} trials",
        ]
        if self.settled and self.note:
            lines.append(f"  {self.note}")
        if self.bound:
            lines.append(f"  {self.bound}")
        best = self.best_throughput()
        if best:
            lines.append(f"  best measured throughput: batch {best[0]}, {best[1]:.2f} images/s")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        best = self.best_throughput()
        return {
            "Max Batch Size": self.largest,
            "limit": self.limit,
            "limit_source": self.limit_source,
            "applies_to": FIGURE[self.figure].key,
            "first_failing_batch": self.first_failing,
            "search_step": self.step,
            "predicted_first": self.predicted_first,
            "confirmed": self.settled,
            "note": self.note,
            "bound": self.bound,
            "profiles": self.profiles,
            "from_cache": self.recalled,
            "power_then_binary_trials": self.lightning_trials,
            "best_throughput": {"batch_size": best[0], "images_per_second": best[1]} if best else None,
            "fit": self.fit.to_dict(),
        }


def power_then_binary_trials(fits: Callable[[int], bool], start: int = 2, most: int = MAX_BATCH_SIZE) -> int:
    """Count the trials of a search that doubles from ``start`` until a batch fails, then bisects between the
    last that fit and the first that failed (the scheme Lightning's batch-size finder uses in 'binsearch')."""
    low, high, size, trials = 1, None, start, 0
    while trials < 64:
        trials += 1
        if fits(size):
            low = size
            if high is None:
                if size >= most:
                    break
                size = min(size * 2, most)
                continue
        else:
            high = size
        if high - low <= 1:
            break
        size = (low + high) // 2
    return trials


def max_batch_size(
    scenario: Scenario | Mapping[str, Any],
    limit: str | float | None = None,
    *,
    headroom: float | str = DEFAULT_HEADROOM,
    step: int = 1,
    batch_sizes: Sequence[int] | None = None,
    most: int = MAX_BATCH_SIZE,
    bounds: SearchBounds | None = None,
    **options: Any,
) -> BatchSearch:
    """The largest batch (a multiple of ``step``) whose memory stays under ``limit``.

    ``limit``: bytes or text such as ``"16 GiB"``, for a card you do not have; unset, the device's memory (RAM
    on a CPU) less ``headroom``. It applies to Peak GPU Memory on a GPU and to Peak RAM Memory on a CPU. The
    answer is predicted from ``fit_sizes``, then confirmed by real profiles: the answer fits and the next
    candidate (answer + ``step``) does not. ``bounds`` (a service's) cap ``most`` and the search's time.
    """
    bounds = bounds or SearchBounds(most)
    most = min(most, bounds.most)
    started = time.monotonic()
    parsed = parse_scenario(scenario)
    if not (isinstance(step, int) and not isinstance(step, bool) and 1 <= step <= most):
        raise CapacityError(f"step: {brief(step)} is not a whole number from 1 to {most}")
    share = parse_headroom(headroom)
    given = None if limit is None else float(limit) if isinstance(limit, int | float) else parse_limit(limit)
    if given is not None and not (math.isfinite(given) and given > 0):
        raise CapacityError(f"limit: {brief(limit)} is not a positive amount of memory")
    runner = SizeSweep(parsed, measure_with(options))
    fit = fit_sizes(parsed, batch_sizes, profiler=runner, most=most)
    figure = limit_figure(fit.device, parsed.predict_gpu)
    if given is None:
        total = device_memory(fit.device, parsed.predict_gpu)
        if total is None:
            raise CapacityError(f"limit: the memory of {fit.device} cannot be read here; give a limit such as '16 GiB'")
        where = fit.device if is_gpu(fit.device) or not parsed.predict_gpu else f"{parsed.predict_gpu} (predicted)"
        bytes_limit, source = total * (1 - share), f"{format_quantity(total, 'bytes')} of {where} less {share:.0%}"
    else:
        bytes_limit, source = given, "given"
    fitting = [
        p.batch_size
        for p in fit.points
        if p.image_size == tuple(parsed.image_size) and _point_fits(p, figure, bytes_limit)
    ]
    failing = [
        p.batch_size
        for p in fit.points
        if p.image_size == tuple(parsed.image_size) and not _point_fits(p, figure, bytes_limit)
    ]
    low = max(fitting, default=0)
    high = min(failing, default=None)
    predicted_first = guess = _predict(fit, figure, bytes_limit, most)
    note = None
    crashed: list[str] = []
    while not (high is not None and high - low <= step) and low < most:
        if runner.profiled >= MAX_PROFILES:
            note = f"stopped after {MAX_PROFILES} profiles"
            break
        if bounds.seconds is not None and time.monotonic() - started >= bounds.seconds:
            note = f"stopped after {bounds.seconds:g} s, the time {bounds.owner} gives a search"
            break
        candidate = _next_candidate(guess, low, high, step, most)
        try:
            found = runner.at(candidate)
        except ProfileCrashError as exc:  # killed for RAM, most often: a trial that did not fit
            crashed.append(f"batch {candidate}: {str(exc).splitlines()[0]}")
            runner.profiled += 1
            high = candidate if high is None else min(high, candidate)
            guess = None
            continue
        point = Point.of(found, fit.load_of(candidate, tuple(parsed.image_size)))
        fit.add(point)
        if _point_fits(point, figure, bytes_limit):
            low = candidate
        else:
            high = candidate if high is None else min(high, candidate)
        guess = _predict(fit, figure, bytes_limit, most)
    largest = low if low >= 1 else None
    settled = note is None
    bound = None
    if largest is not None and largest >= most and most == bounds.most:
        bound = f"batches above {most} were not tried: {bounds.owner} profiles batches up to {most}"
    if crashed:
        note = "; ".join(["profiles that crashed count as not fitting", *crashed])
    return BatchSearch(
        fit, bytes_limit, source, figure, largest, high, step, predicted_first, runner.profiled, runner.recalled,
        settled, note, bound,
    )  # fmt: skip


def _point_fits(point: Point, figure: str, limit: float) -> bool:
    value = point.values.get(figure)
    return point.fits and value is not None and value <= limit


def _predict(fit: SizeFit, figure: str, limit: float, most: int) -> int | None:
    line = fit.lines.get(figure)
    if line is None:
        return None
    load = line.largest_load_under(limit)
    if load is None:
        return most
    batch = math.floor(load / fit.load_of(1, tuple(fit.base.image_size)))
    return max(min(batch, most), 0)


def _next_candidate(guess: int | None, low: int, high: int | None, step: int, most: int) -> int:
    """The next batch to profile: the prediction, kept strictly between the largest batch known to fit and
    the smallest known not to. A prediction at or below what fits asks whether one step more fits; one at or
    above a batch that failed has been proven wrong by a trial the line cannot see (an out-of-memory has no
    figures), so the search bisects."""
    if guess is None or (high is not None and guess >= high):
        guess = min(max(low * 2, 1), most) if high is None else (low + high) // 2
    top = most if high is None else high - 1
    return max(low + 1, min(guess if guess > low else low + step, top))
