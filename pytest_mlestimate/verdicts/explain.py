"""Why a figure failed, module by module: which parts of the model grew against the baseline, or, with no
baseline to compare with, which take the largest share.

Each run keeps its per-module figures (``ModuleFigures``, read from ``details.breakdown``); a baseline keeps
them for every run it saved. A failed figure is explained by the part figures it is made of:

- memory (Peak RAM/GPU Memory): the tensor bytes a part saves for backward (``activations_bytes``, plus the
  part's own forward peak ``forward_peak_bytes`` on a GPU), and the whole model's parameters, gradients and
  optimizer state (a wider head grows those too), listed after the modules;
- the forward pass, the backward pass and the whole step: ``forward_s``, ``backward_s`` and their sum;
- inference: ``inference_s``.

Against a baseline each side is the median over its runs, and the parts that grew most come first. Without a
baseline (or where nothing grew, or the baseline was saved before it kept these figures) the parts that take
the largest share of the step, the peak or the inference batch come first instead.

Imports neither torch nor pydantic: ``mlestimate compare`` explains from saved runs too.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pytest_mlestimate.core.metrics import METRIC
from pytest_mlestimate.core.units import format_quantity

PART_FIGURES = ("forward_s", "backward_s", "activations_bytes", "forward_peak_bytes", "inference_s")
MEMORY_SHARES = ("parameters", "gradients", "optimizer_state", "activations")
HELD_BY_MODEL = {"parameters": "parameters", "gradients": "gradients", "optimizer_state": "optimizer state"}
"""The peak's shares that belong to the whole model, not to one part: shown after the parts as pseudo-parts."""
TOP = 3
"""Parts named per failed figure."""
LEAST_GROWTH = 0.1
"""A part whose growth is under this fraction of the largest part's is noise beside it and not named."""

Whole = Literal["peak", "step", "inference batch"]


@dataclass(frozen=True)
class ModuleFigures:
    """One run's figures per part of the model, as a baseline and a report's runs keep them."""

    parts: Mapping[str, Mapping[str, float | None]]
    """module -> ``forward_s``, ``backward_s``, ``activations_bytes``, ``forward_peak_bytes``, ``inference_s``."""
    memory: Mapping[str, float] = field(default_factory=dict)
    """The peak's split: ``parameters``, ``gradients``, ``optimizer_state``, ``activations`` and ``whole_bytes``."""
    whole: str | None = None
    """Which figure ``memory`` splits: its metric's name (``peak_gpu_memory``: the allocator's share of it) or, in
    baselines saved before the split named one, its documented key."""
    step_s: float | None = None
    """The instrumented training step the part times add up to."""
    inference_batch_s: float | None = None

    @classmethod
    def of_breakdown(cls, breakdown: Mapping[str, Any] | None) -> ModuleFigures | None:
        """From an estimate's ``details.breakdown``; None where it has none."""
        if not isinstance(breakdown, Mapping):
            return None
        parts = {
            str(part["module"]): part
            for part in breakdown.get("parts") or []
            if isinstance(part, Mapping) and "module" in part
        }
        training, inference = breakdown.get("training"), breakdown.get("inference")
        found = cls.read(
            {
                "parts": parts,
                "memory": breakdown.get("memory"),
                "step_s": training.get("step_s") if isinstance(training, Mapping) else None,
                "inference_batch_s": inference.get("batch_s") if isinstance(inference, Mapping) else None,
            }
        )
        return found if found is not None and (found.parts or found.memory) else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "parts": {module: dict(figures) for module, figures in self.parts.items()},
            "memory": {"whole": self.whole, **self.memory},
            "step_s": self.step_s,
            "inference_batch_s": self.inference_batch_s,
        }

    @classmethod
    def read(cls, data: object) -> ModuleFigures | None:
        """The inverse of ``to_dict``. What cannot be read is left out: these figures only explain a verdict,
        so a damaged entry must not cost the run whose figures the verdict rests on."""
        if not isinstance(data, Mapping):
            return None
        raw_parts = data.get("parts") if isinstance(data.get("parts"), Mapping) else {}
        parts = {
            str(module): {name: _number(figures.get(name)) for name in PART_FIGURES}
            for module, figures in raw_parts.items()
            if isinstance(figures, Mapping)
        }
        memory = data.get("memory") if isinstance(data.get("memory"), Mapping) else {}
        split = {k: v for k in (*MEMORY_SHARES, "whole_bytes") if (v := _number(memory.get(k))) is not None}
        whole = memory.get("metric") or memory.get("whole")  # which figure the split is of
        return cls(
            parts,
            split,
            whole if isinstance(whole, str) else None,
            _number(data.get("step_s")),
            _number(data.get("inference_batch_s")),
        )

    def part(self, module: str, figures: tuple[str, ...], largest: bool = False) -> float | None:
        """The sum of a part's ``figures`` (the largest of them where they overlap); None where it has none."""
        values = [v for name in figures if (v := (self.parts.get(module) or {}).get(name)) is not None]
        if not values:
            return None
        return max(values) if largest else sum(values)

    def of_whole(self, reading: Reading, metric: str) -> float | None:
        """What a share is of: the step, the inference batch, or the peak ``memory`` splits (only when that
        peak is the failed figure's own)."""
        if reading.whole == "step":
            return self.step_s
        if reading.whole == "inference batch":
            return self.inference_batch_s
        return self.memory.get("whole_bytes") if self.whole in (metric, METRIC[metric].key) else None


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value


@dataclass(frozen=True)
class Reading:
    """How a failed figure is explained: the part figures it is made of, and what a share of it is of."""

    figures: tuple[str, ...]
    label: str
    unit: Literal["bytes", "seconds"]
    whole: Whole
    held_by_model: tuple[str, ...] = ()
    largest: bool = False
    """The figures overlap (a part's saved tensors are inside its forward peak): the larger counts, not the sum."""


def reading(metric: str, training: bool = True) -> Reading | None:
    """The part figures a failed ``metric`` is read from; None for a figure no part explains (utilisation,
    energy, cost, the largest batch). ``training`` is false for an inference scenario, whose forward_pass is
    the batch inference time."""
    model = tuple(HELD_BY_MODEL)
    found = {
        "peak_ram_memory": Reading(("activations_bytes",), "activations", "bytes", "peak", model),
        "peak_gpu_memory": Reading(
            ("activations_bytes", "forward_peak_bytes"), "activations or forward peak", "bytes", "peak", model, True
        ),
        "ram_before_training": Reading((), "", "bytes", "peak", ("parameters",)),
        "vram_before_training": Reading((), "", "bytes", "peak", ("parameters",)),
        "forward_pass": Reading(("forward_s",), "forward", "seconds", "step")
        if training
        else Reading(("inference_s",), "inference", "seconds", "inference batch"),
        "backward_pass": Reading(("backward_s",), "backward", "seconds", "step"),
        "total_training_time": Reading(("forward_s", "backward_s"), "forward + backward", "seconds", "step"),
        "inference_1_image": Reading(("inference_s",), "inference", "seconds", "inference batch"),
        "inference_batch": Reading(("inference_s",), "inference", "seconds", "inference batch"),
    }
    return found.get(metric)


@dataclass(frozen=True)
class Contribution:
    """One part's share in a failed figure: how much it grew against the baseline, or how large it is."""

    metric: str
    module: str
    """The part's path in the model (``roi_heads``), or for a pseudo-part ``parameters``, ``gradients`` or
    ``optimizer state`` of the whole model."""
    figure: str
    """What was read: ``activations``, ``forward + backward``, ``inference``, ``parameters``..."""
    unit: str
    now: float
    """The median over this run's measurements."""
    baseline: float | None = None
    """The median over the baseline's runs; None without a baseline or for a part the baseline lacks."""
    growth: float | None = None
    """``now`` less ``baseline`` (0 for a part the baseline lacks); None where this names the largest share."""
    share: float | None = None
    """``now`` as a fraction of the whole it belongs to (the step, the peak, the inference batch)."""
    whole: str | None = None
    pseudo: bool = False

    def text(self) -> str:
        """``roi_heads activations +96.00 MiB (48.00 KiB -> 96.05 MiB)``, ``roi_heads 48 % of the step
        (forward + backward 120.3 ms)``."""
        name = self.module if self.pseudo else f"{self.module} {self.figure}"
        now = format_quantity(self.now, self.unit)
        if self.growth is not None:
            before = format_quantity(self.baseline, self.unit) if self.baseline is not None else "none: new"
            return f"{name} +{format_quantity(self.growth, self.unit)} ({before} -> {now})"
        if self.share is not None:
            figure = "" if self.pseudo else f"{self.figure} "
            return f"{self.module} {self.share * 100:.0f} % of the {self.whole} ({figure}{now})"
        return f"{name} {now}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "module": self.module,
            "pseudo": self.pseudo,
            "figure": self.figure,
            "unit": self.unit,
            "baseline": self.baseline,
            "now": self.now,
            "growth": self.growth,
            "share": self.share,
            "whole": self.whole,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Contribution:
        return cls(
            str(data["metric"]),
            str(data["module"]),
            str(data.get("figure") or ""),
            str(data.get("unit") or "bytes"),
            float(data["now"]),
            _number(data.get("baseline")),
            _number(data.get("growth")),
            _number(data.get("share")),
            data.get("whole") if isinstance(data.get("whole"), str) else None,
            bool(data.get("pseudo")),
        )


@dataclass(frozen=True)
class Explanation:
    """The parts behind each failed figure, the metrics in the order they failed and within each the part
    that grew most (or is largest) first, then the whole model's pseudo-parts. Renders itself for the
    terminal, the reports and a one-line message."""

    contributions: tuple[Contribution, ...] = ()
    heading: str = "module by module:"
    """What the figures are: against the baseline's median of how many runs, or the largest shares and why."""

    def __bool__(self) -> bool:
        return bool(self.contributions)

    @property
    def metrics(self) -> list[str]:
        return list(dict.fromkeys(c.metric for c in self.contributions))

    def of(self, metric: str) -> list[Contribution]:
        return [c for c in self.contributions if c.metric == metric]

    def line(self, metric: str) -> str:
        """``peak_gpu_memory grew most in: roi_heads activations +1.20 GiB (...), ...; the whole model's
        parameters +4.00 MiB (...)`` or ``forward_pass largest: roi_heads 48 % of the step (...)``."""
        found = self.of(metric)
        grown = any(c.growth is not None for c in found)
        parts = ", ".join(c.text() for c in found if not c.pseudo)
        model = ", ".join(c.text() for c in found if c.pseudo)
        text = f"{metric} {'grew most in' if grown else 'largest'}: {parts or '-'}"
        return text + (f"; the whole model's {model}" if model else "")

    def lines(self) -> list[str]:
        """A heading and a line per failed figure, for the terminal and the reports' failure text."""
        if not self:
            return []
        return [self.heading, *(f"  {self.line(metric)}" for metric in self.metrics)]

    def brief(self) -> str:
        """One line for a one-line message: each failed figure's first part."""
        found = []
        for metric in self.metrics:
            first = self.of(metric)[0]
            verb = "grew most in" if first.growth is not None else "largest"
            found.append(f"{metric} {verb}: {first.text()}")
        return "; ".join(found)

    def to_dicts(self) -> list[dict[str, Any]]:
        return [c.to_dict() for c in self.contributions]

    @classmethod
    def from_dicts(cls, data: object) -> Explanation:
        """A report record's ``explanation`` back into one; entries that cannot be read are left out."""
        found = []
        for entry in data if isinstance(data, list) else []:
            try:
                found.append(Contribution.from_dict(entry))
            except (KeyError, TypeError, ValueError):
                continue
        return cls(tuple(found))


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")


def _median(values: Iterable[float | None]) -> float | None:
    found = [v for v in values if v is not None]
    return statistics.median(found) if found else None


def _modules(runs: Sequence[ModuleFigures]) -> list[str]:
    return list(dict.fromkeys(module for run in runs for module in run.parts))


def _grown(
    metric: str, how: Reading, now: Sequence[ModuleFigures], baseline: Sequence[ModuleFigures], top: int
) -> list[Contribution]:
    """The parts that grew most against the baseline's median, then the whole model's shares that grew."""
    whole = _median(run.of_whole(how, metric) for run in now)
    found: list[Contribution] = []
    for module in _modules(now) if how.figures else []:
        value = _median(run.part(module, how.figures, how.largest) for run in now)
        before = _median(run.part(module, how.figures, how.largest) for run in baseline)
        growth = None if value is None else value - (before or 0.0)
        if value is not None and growth is not None and growth > 0:
            share = value / whole if whole else None
            found.append(Contribution(metric, module, how.label, how.unit, value, before, growth, share, how.whole))
    found.sort(key=lambda c: -(c.growth or 0.0))
    if found:
        least = (found[0].growth or 0.0) * LEAST_GROWTH
        found = [c for c in found[:top] if (c.growth or 0.0) >= least]
    for share in how.held_by_model:
        value = _median(run.memory.get(share) for run in now)
        before = _median(run.memory.get(share) for run in baseline)
        if value is not None and before is not None and value > before:
            fraction, name = (value / whole if whole else None), HELD_BY_MODEL[share]
            growth = value - before
            found.append(Contribution(metric, name, name, "bytes", value, before, growth, fraction, how.whole, True))
    return found


def _largest(metric: str, how: Reading, now: Sequence[ModuleFigures], top: int) -> list[Contribution]:
    """The parts that take the largest share of the whole, then the whole model's shares."""
    whole = _median(run.of_whole(how, metric) for run in now)
    found: list[Contribution] = []
    for module in _modules(now) if how.figures else []:
        value = _median(run.part(module, how.figures, how.largest) for run in now)
        if value:
            share = value / whole if whole else None
            found.append(Contribution(metric, module, how.label, how.unit, value, None, None, share, how.whole))
    found = sorted(found, key=lambda c: -c.now)[:top]
    for share in how.held_by_model:
        value = _median(run.memory.get(share) for run in now)
        if value:
            fraction = value / whole if whole else None
            name = HELD_BY_MODEL[share]
            found.append(Contribution(metric, name, name, "bytes", value, None, None, fraction, how.whole, True))
    return found


def explain(
    metrics: Iterable[str],
    now: Sequence[ModuleFigures | None],
    baseline: Sequence[ModuleFigures | None] = (),
    *,
    training: bool = True,
    top: int = TOP,
) -> Explanation:
    """The parts behind each failed metric: those that grew most from the median of ``baseline``'s runs to the
    median of ``now``'s, or, without a baseline that kept these figures (or where no part grew), those that
    take the largest share. Metrics no part explains, and runs without a breakdown, are left out."""
    measured = [run for run in now if run is not None]
    before = [run for run in baseline if run is not None]
    found: list[Contribution] = []
    for metric in dict.fromkeys(metrics):
        how = reading(metric, training)
        if how is None or not measured:
            continue
        found += (_grown(metric, how, measured, before, top) if before else []) or _largest(metric, how, measured, top)
    if before:
        heading = f"module by module (the median of the baseline's {_count(len(before), 'run')}"
        heading += f" against {_count(len(measured), 'run')} now):"
    elif baseline:
        heading = "module by module (the baseline keeps no per-module figures: saved before it kept them):"
    else:
        heading = "module by module (no baseline to compare with):"
    return Explanation(tuple(found), heading)
