"""Capacity planning: figures at sizes never profiled, and the largest batch that fits under a limit.

Every profile of a search is a real one, each in its own process (``api.estimate``), so a trial that runs
out of memory cannot poison the next and each profile's RAM is its own. The search predicts from a line
(``size_fit``) and spends real profiles only to confirm: the predicted batch fits and the next candidate
does not.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pytest_mlestimate.api import estimate
from pytest_mlestimate.errors import EstimateError, ProfileCrashError, brief
from pytest_mlestimate.input_size import effective_image_size
from pytest_mlestimate.metrics import METRIC
from pytest_mlestimate.result import Estimate
from pytest_mlestimate.scenario import MAX_BATCH_SIZE, Scenario, ScenarioError, describe_errors, parse_scenario
from pytest_mlestimate.size_fit import FIGURE, Point, Prediction, SizeFit
from pytest_mlestimate.units import UnitError, format_quantity, parse_fraction, parse_quantity

DEFAULT_HEADROOM = 0.10
"""Share of the memory limit left free by default: allocator fragmentation over a long run, other processes
and the driver's own use are not in a short profile's peak."""
MAX_PROFILES = 12
"""A search that has not settled after this many profiles stops and says what it knows."""
MAX_SIZES = 8


class CapacityError(ValueError):
    """A capacity request that cannot be answered as asked; the message names the field and what is allowed."""


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


def _at(field_name: str) -> str:
    return f"{field_name}: " if field_name else ""


def parse_limit(limit: object, field_name: str = "limit") -> float:
    try:
        value = parse_quantity(limit, "bytes")
    except UnitError as exc:
        raise CapacityError(f"{_at(field_name)}{exc}") from None
    if value <= 0:
        raise CapacityError(f"{_at(field_name)}{brief(limit)} is not a positive amount of memory")
    return value


def parse_headroom(headroom: object, field_name: str = "headroom") -> float:
    if isinstance(headroom, float | int) and not isinstance(headroom, bool) and 0 <= headroom < 1:
        return float(headroom)
    try:
        value = parse_fraction(headroom)
    except UnitError as exc:
        raise CapacityError(f"{_at(field_name)}{exc}; or a fraction from 0 to 1") from None
    if not 0 <= value < 1:
        raise CapacityError(f"{_at(field_name)}{brief(headroom)} must be from 0 % to under 100 %")
    return value


def check_batch_sizes(sizes: object, field_name: str = "batch_sizes", most: int = MAX_BATCH_SIZE) -> list[int]:
    allowed = f"allowed: a list of 2 to {MAX_SIZES} different whole numbers from 1 to {most}"
    if not isinstance(sizes, Sequence) or isinstance(sizes, str):
        raise CapacityError(f"{_at(field_name)}{brief(sizes)} is not a list; {allowed}")
    bad = [s for s in sizes if isinstance(s, bool) or not isinstance(s, int) or not 1 <= s <= most]
    if bad:
        raise CapacityError(f"{_at(field_name)}{brief(bad[0])} is not a batch size; {allowed}")
    found = sorted(set(sizes))  # type: ignore[arg-type]
    if not 2 <= len(found) <= MAX_SIZES:
        raise CapacityError(f"{_at(field_name)}{len(found)} different sizes given; {allowed}")
    return found


Measure = Callable[[Scenario], Estimate]
"""Profiles one scenario: ``api.estimate`` with the caller's options, or a stand-in."""


@dataclass
class Profiler:
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


def _measure(options: Mapping[str, Any]) -> Measure:
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
    profiler: Profiler | None = None,
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
    runner = profiler or Profiler(parsed, _measure(options))
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


def limit_figure(device: str) -> str:
    """What a memory limit applies to: the process's GPU memory on a GPU, its peak RAM on a CPU."""
    return "peak_gpu_memory" if device.startswith("cuda") else "peak_ram_memory"


def device_memory(device: str) -> float | None:
    """Total memory of the device a profile ran on (RAM for the CPU), without initialising CUDA here."""
    if not device.startswith("cuda"):
        import psutil

        return float(psutil.virtual_memory().total)
    from pytest_mlestimate.devices import nvml_device

    found = nvml_device(int(device.partition(":")[2] or 0))
    if found.handle is None:
        return None
    try:
        return float(found.nvml.nvmlDeviceGetMemoryInfo(found.handle).total)
    except Exception:  # NVMLError: the caller says the limit must be given
        return None


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
    **options: Any,
) -> BatchSearch:
    """The largest batch (a multiple of ``step``) whose memory stays under ``limit``.

    ``limit``: bytes or text such as ``"16 GiB"``, for a card you do not have; unset, the device's memory (RAM
    on a CPU) less ``headroom``. It applies to Peak GPU Memory on a GPU and to Peak RAM Memory on a CPU. The
    answer is predicted from ``fit_sizes``, then confirmed by real profiles: the answer fits and the next
    candidate (answer + ``step``) does not.
    """
    parsed = parse_scenario(scenario)
    if not (isinstance(step, int) and not isinstance(step, bool) and 1 <= step <= most):
        raise CapacityError(f"step: {brief(step)} is not a whole number from 1 to {most}")
    share = parse_headroom(headroom)
    given = None if limit is None else float(limit) if isinstance(limit, int | float) else parse_limit(limit)
    if given is not None and not (math.isfinite(given) and given > 0):
        raise CapacityError(f"limit: {brief(limit)} is not a positive amount of memory")
    runner = Profiler(parsed, _measure(options))
    fit = fit_sizes(parsed, batch_sizes, profiler=runner, most=most)
    figure = limit_figure(fit.device)
    if given is None:
        total = device_memory(fit.device)
        if total is None:
            raise CapacityError(f"limit: the memory of {fit.device} cannot be read here; give a limit such as '16 GiB'")
        bytes_limit, source = total * (1 - share), f"{format_quantity(total, 'bytes')} of {fit.device} less {share:.0%}"
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
    if crashed:
        note = "; ".join(["profiles that crashed count as not fitting", *crashed])
    return BatchSearch(
        fit, bytes_limit, source, figure, largest, high, step, predicted_first, runner.profiled, runner.recalled,
        settled, note,
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
    if not fit.device.startswith("cuda"):
        reason = f"GPU memory was not measured: the profiles ran on {fit.device}"
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


class CapacityRequest(BaseModel):
    """What a capacity answer is asked for, as a scenario file's ``capacity:``, a request body or the API takes
    it. Each value is checked by the same functions the API uses, so each face reports the same errors."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    limit: str | None = None
    """Memory limit, e.g. '16 GiB'; unset: the device's memory less headroom."""
    headroom: str | float = DEFAULT_HEADROOM
    batch_sizes: list[int] | None = None
    """The sizes profiled for the fit; unset: ``choose_batch_sizes``."""
    predict: list[int] = Field(default_factory=list, max_length=MAX_SIZES)
    """Batch sizes to answer from the fit."""
    search: bool = True
    step: int = Field(1, ge=1, le=MAX_BATCH_SIZE)
    up_to: int = Field(MAX_BATCH_SIZE, ge=1, le=MAX_BATCH_SIZE)
    """The largest batch the search may profile: its answer is at most this."""

    @field_validator("limit", mode="before")
    @classmethod
    def _limit(cls, value: Any) -> Any:
        if value is not None:
            parse_limit(value, "")
        return value

    @field_validator("headroom", mode="before")
    @classmethod
    def _headroom(cls, value: Any) -> Any:
        parse_headroom(value, "")
        return value

    @field_validator("batch_sizes", mode="before")
    @classmethod
    def _batch_sizes(cls, value: Any) -> Any:
        return None if value is None else check_batch_sizes(value, "")

    @field_validator("predict", mode="before")
    @classmethod
    def _predict(cls, value: Any) -> Any:
        if isinstance(value, list):
            for batch in value:
                if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= MAX_BATCH_SIZE:
                    raise CapacityError(f"{brief(batch)} is not a batch size from 1 to {MAX_BATCH_SIZE}")
        return value

    def run(self, scenario: Scenario | Mapping[str, Any], most: int = MAX_BATCH_SIZE, **options: Any) -> CapacityReport:
        """The answer; ``most`` is a bound set by whoever runs it (a service's batch limit), on top of ``up_to``."""
        return capacity(
            scenario, limit=self.limit, headroom=self.headroom, batch_sizes=self.batch_sizes, predict=self.predict,
            search=self.search, step=self.step, most=min(most, self.up_to), **options,
        )  # fmt: skip


def read_request(raw: object, where: str = "capacity", spell: Callable[[str], str] | None = None) -> CapacityRequest:
    """``true``/``{}`` asks with the defaults; a mapping sets fields. Problems come as one CapacityError, each
    field named by ``spell`` (default ``capacity.<field>``; a command line names its options instead)."""
    name = spell or (lambda field_name: f"{where}.{field_name}")
    if raw is True:
        raw = {}
    if not isinstance(raw, Mapping):
        raise CapacityError(f"{where}: expected true or a mapping of {', '.join(CapacityRequest.model_fields)}; "
                            f"got {brief(raw)}")  # fmt: skip
    unknown = [key for key in raw if key not in CapacityRequest.model_fields]
    if unknown:
        allowed = ", ".join(CapacityRequest.model_fields)
        raise CapacityError(f"{name(brief(unknown[0]))}: unknown field; allowed: {allowed}")
    try:
        return CapacityRequest.model_validate(raw)
    except ValidationError as exc:
        lines = []
        for item, line in zip(exc.errors(include_url=False), describe_errors(exc), strict=True):
            field_name = str(item["loc"][0])
            said = (
                item["msg"].removeprefix("Value error, ") if item["type"] == "value_error" else line.partition(": ")[2]
            )
            lines.append(f"{name(field_name)}: {said}")
        raise CapacityError("; ".join(lines)) from None


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
    **options: Any,
) -> CapacityReport:
    """The fit, the largest batch under the limit (``search``), predictions at ``predict`` and the card table.
    ``most`` bounds every batch profiled or asked about (a service's own batch limit)."""
    parsed = parse_scenario(scenario)
    share = parse_headroom(headroom)
    sizes = check_batch_sizes(batch_sizes, most=most) if batch_sizes is not None else None
    asked = sorted(set(predict))
    for batch in asked:
        if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= most:
            raise CapacityError(f"predict: {brief(batch)} is not a batch size from 1 to {most}")
    if search:
        found = max_batch_size(parsed, limit, headroom=share, step=step, batch_sizes=sizes, most=most, **options)
        fit = found.fit
    else:
        found, fit = None, fit_sizes(parsed, sizes, most=most, **options)
    return CapacityReport(fit, found, card_table(fit, share), {b: fit.predict(b) for b in asked})


__all__ = [
    "CARDS",
    "BatchSearch",
    "CapacityError",
    "CapacityReport",
    "CapacityRequest",
    "EstimateError",
    "ScenarioError",
    "capacity",
    "card_table",
    "fit_sizes",
    "max_batch_size",
    "power_then_binary_trials",
]
