"""The documented figures, each defined once: its snake-case name (the vocabulary of budgets, tolerances
and baselines), where it stands in ``Estimate.to_dict()``, its unit, which direction is worse, the change
a baseline comparison allows by default, how its noise is judged and how reports name it.

The result, budgets, baselines, reports, the JSON Schema test and the terminal table all read this table;
the summary tables (terminal, job summary, the HTML overview) show the columns of ``SUMMARY_METRICS``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Unit = Literal["bytes", "seconds", "percent", "count", "joules", "money"]
Noise = Literal["timing", "peak"]


@dataclass(frozen=True)
class Metric:
    name: str
    path: tuple[str, ...]
    """Keys in ``Estimate.to_dict()``; ``{batch_size}`` is filled in from the scenario."""
    unit: Unit
    unit_text: str
    tolerance: float
    """Relative change against the baseline that may pass as insignificant."""
    noise: Noise
    """``timing``: repeated samples that differ between processes, judged by a confidence interval over
    fresh-process runs; ``peak``: a nearly deterministic maximum, judged by the tolerance and its own spread."""
    lower_is_worse: bool = False
    gpu: bool = False
    capacity: bool = False
    """Answered by a capacity search (``capacity.py``), not by one profile: only scenarios that ask for it
    (``capacity:`` or a budget on it) have it."""
    label: str = field(kw_only=True)
    """How reports name it in words (``peak GPU memory``)."""
    column: str = field(default="", kw_only=True)
    """Its heading in a summary table, where the label is too wide for a column; the label where unset."""

    def __post_init__(self) -> None:
        if not self.column:
            object.__setattr__(self, "column", self.label)

    @property
    def follows_the_clock(self) -> bool:
        """Timings, and the peaks that move with them (energy, cost, utilisation): a contended run's figure
        describes the neighbours, so it is never judged."""
        return self.noise == "timing" or self.unit in ("joules", "money", "percent")

    @property
    def key(self) -> str:
        """The documented key (its last path element)."""
        return self.path[-1]

    def path_for(self, batch_size: int) -> tuple[str, ...]:
        return tuple(part.format(batch_size=batch_size) for part in self.path)

    def read(self, record: Mapping[str, Any]) -> float | None:
        """The figure a report record (or ``Estimate.to_dict()``) shows for this metric: a finite number, else
        None (a report may hold null, a string or NaN where a figure was not read). A key that names the batch
        size is found from the record's scenario, or, where that is unknown, whichever batch the record holds."""
        scenario = record.get("scenario")
        batch = scenario.get("batch_size") if isinstance(scenario, Mapping) else None
        known = isinstance(batch, int) and not isinstance(batch, bool)
        found: Any = record
        for part in self.path_for(batch) if known else self.path:
            found = found.get(part) if isinstance(found, Mapping) else None
        if found is None and not known and "{batch_size}" in self.path[-1]:
            section = _at(record, self.path[:-1])
            prefix = self.path[-1].partition("{batch_size}")[0]
            if isinstance(section, Mapping):
                found = next((v for k, v in section.items() if isinstance(k, str) and k.startswith(prefix)), None)
        if isinstance(found, bool) or not isinstance(found, int | float) or not math.isfinite(found):
            return None
        return float(found)


def _at(record: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    found: Any = record
    for part in path:
        found = found.get(part) if isinstance(found, Mapping) else None
    return found


TIME_TOLERANCE = 0.02
"""A timing change below 2 % passes even when it is real: smaller than what a team would act on, and about
the between-process noise of a GPU step. Above it, a change fails only when the measured noise makes it
credible (``regression.py``)."""

ENERGY_TOLERANCE = 0.15
"""Energy and cost per training follow the step time and the power drawn (clocks, temperature): one figure per
run with no samples behind it, so they are judged as peaks, past the baseline's own spread and this allowance,
which covers the 10 % a CPU's step time drifts between runs (``regression.DRIFT_FLOOR``)."""

_METRICS = (
    Metric(
        "peak_gpu_memory",
        ("resource", "Peak GPU Memory"),
        "bytes",
        "bytes",
        0.05,
        "peak",
        gpu=True,
        label="peak GPU memory",
        column="peak GPU mem",
    ),
    Metric(
        "peak_gpu_utilization",
        ("resource", "Peak GPU Utilization"),
        "percent",
        "percent of one GPU",
        0.25,
        "peak",
        lower_is_worse=True,
        gpu=True,
        label="peak GPU utilisation",
    ),
    Metric("peak_ram_memory", ("resource", "Peak RAM Memory"), "bytes", "bytes", 0.05, "peak", label="peak RAM"),
    Metric(
        "peak_cpu_utilization",
        ("resource", "Peak CPU Utilization"),
        "percent",
        "percent, 100 = one core fully busy",
        0.25,
        "peak",
        label="peak CPU utilisation",
    ),
    Metric(
        "forward_pass",
        ("resource", "Batch Time", "forward_pass"),
        "seconds",
        "seconds",
        TIME_TOLERANCE,
        "timing",
        label="forward pass",
        column="forward",
    ),
    Metric(
        "backward_pass",
        ("resource", "Batch Time", "backward_pass"),
        "seconds",
        "seconds",
        TIME_TOLERANCE,
        "timing",
        label="backward pass",
        column="backward",
    ),
    Metric(
        "ram_before_training",
        ("resource", "RAM before training"),
        "bytes",
        "bytes",
        0.05,
        "peak",
        label="RAM before training",
    ),
    Metric(
        "vram_before_training",
        ("resource", "VRAM before training"),
        "bytes",
        "bytes",
        0.05,
        "peak",
        gpu=True,
        label="VRAM before training",
    ),
    Metric(
        "total_training_time",
        ("training_time", "Total Training Time"),
        "seconds",
        "seconds",
        TIME_TOLERANCE,
        "timing",
        label="total training time",
        column="training",
    ),
    Metric(
        "inference_1_image",
        ("inference_time", "1-Image Inference Time"),
        "seconds",
        "seconds",
        TIME_TOLERANCE,
        "timing",
        label="1-image inference",
    ),
    Metric(
        "inference_batch",
        ("inference_time", "Batch of {batch_size} Inference Time"),
        "seconds",
        "seconds",
        TIME_TOLERANCE,
        "timing",
        label="batch inference",
    ),
    Metric(
        "energy_per_training",
        ("energy", "Energy per Training"),
        "joules",
        "joules",
        ENERGY_TOLERANCE,
        "peak",
        label="energy per training",
        column="energy",
    ),
    Metric(
        "cost_per_training",
        ("cost", "Cost per Training"),
        "money",
        "the price's currency (cost.Currency)",
        ENERGY_TOLERANCE,
        "peak",
        label="cost per training",
        column="cost",
    ),
)

CAPACITY_METRICS = (
    Metric(
        "max_batch_size",
        ("capacity", "Max Batch Size"),
        "count",
        "images per batch",
        0.0,
        "peak",
        lower_is_worse=True,
        capacity=True,
        label="max batch size",
        column="max batch",
    ),
)

METRIC = {metric.name: metric for metric in (*_METRICS, *CAPACITY_METRICS)}
METRICS = tuple(METRIC)
"""Snake-case names of the documented figures, in report order."""
ESTIMATE_METRICS = tuple(metric.name for metric in _METRICS)
"""The figures every estimate has."""

SUMMARY_METRICS = (
    "peak_gpu_memory",
    "peak_ram_memory",
    "forward_pass",
    "backward_pass",
    "total_training_time",
    "inference_1_image",
)
"""The columns of every summary table (the terminal's, the job summary's, the HTML overview), in order."""
OPTIONAL_SUMMARY_METRICS = ("energy_per_training", "cost_per_training", "max_batch_size")
"""Columns after those, shown only when some scenario has the figure: energy where a counter was readable, cost
where a price was set, the largest batch where a scenario asked for its capacity."""


def units() -> dict[str, str]:
    """The ``units`` entry of a result: documented key -> unit (Batch Time once for both phases)."""
    found: dict[str, str] = {}
    for metric in _METRICS:
        key = metric.path[1] if metric.path[0] == "resource" else metric.key
        found.setdefault(key.replace("{batch_size}", "N"), metric.unit_text)
    return found
