"""What the HTML report and the job summary read out of a JSON report's scenario record.

A record may come from an older report, a failed or skipped scenario or an inference-only one: every
section may be missing or null, and each reader here answers None (or nothing) for what is not there.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pytest_mlestimate.core.metrics import METRIC, OPTIONAL_SUMMARY_METRICS, SUMMARY_METRICS
from pytest_mlestimate.reports import terminal

LABELS = {name: metric.label for name, metric in METRIC.items()}
"""How the page names each metric: ``Metric.label``."""
SHORT_LABELS = {name: metric.column for name, metric in METRIC.items()}
"""The overview's column headings: ``Metric.column``, as the terminal table's."""

OUTCOMES = ("passed", "failed", "error", "skipped")


def dig(value: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def number(value: Any) -> float | None:
    """A finite number, else None (a report may hold null, a string or NaN where a figure was not read)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def details(record: dict[str, Any]) -> dict[str, Any]:
    found = record.get("details")
    return found if isinstance(found, dict) else {}


def outcome(record: dict[str, Any]) -> str:
    found = record.get("outcome")
    return found if found in OUTCOMES else "not run"


def metric_value(record: dict[str, Any], name: str) -> float | None:
    return METRIC[name].read(record)


def shown(record: dict[str, Any], name: str) -> str:
    """The figure as the terminal prints it; money with its currency."""
    return terminal.shown(record, METRIC[name])


def overview_metrics(records: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """The overview's columns, and the headline figures no scenario has (a GPU's on a CPU-only run)."""
    columns = (*SUMMARY_METRICS, *OPTIONAL_SUMMARY_METRICS)
    measured = [n for n in columns if any(metric_value(r, n) is not None for r in records)]
    return measured, [n for n in SUMMARY_METRICS if n not in measured]


# ----------------------------------------------------------------------------------------------- scales
def time_scale(largest: float) -> tuple[float, str]:
    """The divisor and unit that show seconds up to ``largest`` readably: us, ms, s, min or h."""
    for unit, factor in (("h", 3600.0), ("min", 60.0), ("s", 1.0), ("ms", 1e-3)):
        if abs(largest) >= factor:
            return factor, unit
    return 1e-6, "us"


def byte_scale(largest: float) -> tuple[float, str]:
    for unit, factor in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(largest) >= factor:
            return float(factor), unit
    return 1.0, "B"


def scale_for(dimension: str, largest: float) -> tuple[float, str]:
    if dimension == "seconds":
        return time_scale(largest)
    if dimension == "bytes":
        return byte_scale(largest)
    if dimension == "joules":
        for unit, factor in (("kWh", 3.6e6), ("Wh", 3600.0), ("kJ", 1e3)):
            if abs(largest) >= factor:
                return factor, unit
        return 1.0, "J"
    return 1.0, {"percent": "%", "count": "images", "money": ""}.get(dimension, "")


# --------------------------------------------------------------------------------------------- budgets
@dataclass(frozen=True)
class BudgetBar:
    metric: str
    kind: str
    limit: float
    value: float | None
    baseline: float | None
    passed: bool | None
    floor: bool
    limit_text: str
    change_text: str
    predicted: bool = False


def budget_bars(record: dict[str, Any]) -> list[BudgetBar]:
    from pytest_mlestimate.verdicts.budgets import Check

    found = []
    for data in record.get("budgets") or []:
        if not isinstance(data, dict) or data.get("metric") not in METRIC or number(data.get("limit")) is None:
            continue
        check = Check.from_dict({**data, "value": number(data.get("value")), "baseline": number(data.get("baseline"))})
        floor = check.limit_text().startswith(">=")
        passed = data.get("passed") if data.get("passed") in (True, False, None) else check.passed
        found.append(
            BudgetBar(
                check.metric,
                check.kind,
                check.limit,
                check.value,
                check.baseline,
                passed,
                floor,
                check.limit_text(),
                check.change_text(),
                check.predicted,
            )
        )
    return found


# ------------------------------------------------------------------------------------------ step times
@dataclass(frozen=True)
class Distribution:
    label: str
    samples: list[float]
    """Raw times in seconds; empty when only the summary is known."""
    median: float | None = None
    p10: float | None = None
    p90: float | None = None


TRAINING_TIMES = (
    ("training step", "total_training_time", "step"),
    (METRIC["forward_pass"].label, "forward_pass", "forward_pass"),
    (METRIC["backward_pass"].label, "backward_pass", "backward_pass"),
    ("optimizer step", None, "optimizer_step"),
)
"""(label, metric whose runs keep the samples, timing): a training step's samples are kept under
``total_training_time`` but are one step's, not the whole training's."""
INFERENCE_TIMES = (
    (METRIC["inference_batch"].label, "inference_batch", "inference_batch"),
    (METRIC["inference_1_image"].label, "inference_1_image", "inference_1_image"),
)


def _samples(record: dict[str, Any], metric: str) -> list[float]:
    """Every run's raw samples of a timing (a training step's for ``total_training_time``)."""
    found: list[float] = []
    for run in record.get("runs") or []:
        for value in dig(run, "samples", metric) or []:
            if (seconds := number(value)) is not None:
                found.append(seconds)
    return found


def distributions(record: dict[str, Any], which: tuple[tuple[str, str | None, str], ...]) -> list[Distribution]:
    timings = details(record).get("timings")
    timings = timings if isinstance(timings, dict) else {}
    found = []
    for label, metric, timing in which:
        summary = timings.get(timing) if isinstance(timings.get(timing), dict) else {}
        samples = _samples(record, metric) if metric else []
        median, p10, p90 = (number(summary.get(k)) for k in ("median", "p10", "p90"))
        if samples or median is not None:
            found.append(Distribution(label, samples, median, p10, p90))
    return found


# ------------------------------------------------------------------------------------------- breakdown
@dataclass(frozen=True)
class Part:
    module: str
    forward_s: float | None
    backward_s: float | None
    inference_s: float | None
    activations_bytes: float | None


def breakdown(record: dict[str, Any]) -> dict[str, Any] | None:
    found = details(record).get("breakdown")
    return found if isinstance(found, dict) else None


def parts(found: dict[str, Any] | None) -> list[Part]:
    if not found:
        return []
    return [
        Part(
            str(part.get("module") or "?"),
            number(part.get("forward_s")),
            number(part.get("backward_s")),
            number(part.get("inference_s")),
            number(part.get("activations_bytes")),
        )
        for part in found.get("parts") or []
        if isinstance(part, dict)
    ]


MOST_PARTS = 16
"""Modules a chart names; a deeper breakdown's smallest are summed into one bar."""


def folded(found: list[Part], size: Callable[[Part], float], most: int = MOST_PARTS) -> list[Part]:
    """The ``most - 1`` largest parts by ``size``, in their own order, then one part for the rest."""
    if len(found) <= most:
        return found
    kept = {id(p) for p in sorted(found, key=size, reverse=True)[: most - 1]}
    rest = [p for p in found if id(p) not in kept]

    def total(field: str) -> float | None:
        values = [getattr(p, field) for p in rest if getattr(p, field) is not None]
        return sum(values) if values else None

    other = Part(
        f"{len(rest)} other modules",
        total("forward_s"),
        total("backward_s"),
        total("inference_s"),
        total("activations_bytes"),
    )
    return [*(p for p in found if id(p) in kept), other]


def section(found: dict[str, Any] | None, key: str) -> dict[str, Any] | None:
    value = found.get(key) if found else None
    return value if isinstance(value, dict) else None


MEMORY_SPLIT = (
    ("parameters", "parameters"),
    ("gradients", "gradients"),
    ("optimizer state", "optimizer_state"),
    ("saved for backward", "activations"),
    ("rest of the process", "rest"),
)


def memory_split(found: dict[str, Any] | None) -> list[tuple[str, float]]:
    memory = section(found, "memory")
    if not memory:
        return []
    return [(label, value) for label, key in MEMORY_SPLIT if (value := number(memory.get(key))) is not None]


# -------------------------------------------------------------------------------------------- timeline
@dataclass(frozen=True)
class Timeline:
    device: str
    t_s: list[float]
    series: dict[str, list[float]]
    marks: list[tuple[str, str, float, float]]
    """(module, phase, start_s, end_s)"""
    phases: dict[str, float]
    method: str | None


MAX_POINTS = 1200
"""Points a memory line keeps: more add bytes to the page, not detail a reader can see."""


def timeline(record: dict[str, Any]) -> Timeline | None:
    found = details(record).get("timeline")
    if not isinstance(found, dict) or not isinstance(found.get("t_s"), list):
        return None
    times = [number(t) for t in found["t_s"]]
    raw = found.get("series") if isinstance(found.get("series"), dict) else {}
    lines = {str(k): [number(v) for v in vs] for k, vs in raw.items() if isinstance(vs, list) and len(vs) == len(times)}
    kept = [i for i, t in enumerate(times) if t is not None and all(vs[i] is not None for vs in lines.values())]
    if not lines or not kept:
        return None
    kept_times: list[float] = [times[i] for i in kept]  # type: ignore[misc]
    series: dict[str, list[float]] = {k: [vs[i] for i in kept] for k, vs in lines.items()}  # type: ignore[misc]
    marks = []
    for mark in found.get("marks") or []:
        start, end = number(dig(mark, "start_s")), number(dig(mark, "end_s"))
        if start is not None and end is not None and end >= start:
            marks.append((str(mark.get("module") or "?"), str(mark.get("phase") or ""), start, end))
    phases = {k: v for k, value in (found.get("phases") or {}).items() if (v := number(value)) is not None}
    t_s, series = downsample(kept_times, series, MAX_POINTS)
    method = found.get("method")
    return Timeline(
        str(found.get("device") or "?"), t_s, series, marks, phases, method if isinstance(method, str) else None
    )


def downsample(
    t_s: list[float], series: dict[str, list[float]], most: int
) -> tuple[list[float], dict[str, list[float]]]:
    """At most ``most`` points per line, keeping each bucket's first point and its highest (the peak a
    memory timeline is read for must not be averaged away)."""
    if len(t_s) <= most:
        return t_s, series
    buckets = most // 2
    size = len(t_s) / buckets
    keep: set[int] = {len(t_s) - 1}
    for bucket in range(buckets):
        start, end = int(bucket * size), max(int((bucket + 1) * size), int(bucket * size) + 1)
        keep.add(start)
        for values in series.values():
            keep.add(max(range(start, min(end, len(values))), key=values.__getitem__))
    order = sorted(keep)
    return [t_s[i] for i in order], {name: [values[i] for i in order] for name, values in series.items()}


def environment(record: dict[str, Any]) -> dict[str, Any]:
    found = details(record).get("environment")
    return found if isinstance(found, dict) else {}


def warnings(record: dict[str, Any]) -> list[str]:
    return [str(w) for w in record.get("warnings") or []]
