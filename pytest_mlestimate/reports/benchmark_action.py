"""The run history's latest figures in github-action-benchmark's custom format (``mlestimate history
--export-benchmark-action``)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pytest_mlestimate.core.metrics import METRIC, Metric
from pytest_mlestimate.stores.interfaces import run_history_at
from pytest_mlestimate.verdicts.history_recording import stored_run
from pytest_mlestimate.verdicts.regression import Run
from pytest_mlestimate.verdicts.run_environment import machine_of


def bigger_is_better(metric: Metric) -> bool:
    """Throughput-like figures (GPU utilisation, the largest batch) are better bigger: ``Metric.lower_is_worse``."""
    return metric.lower_is_worse


def benchmark_action(
    path: Path | str, bigger: bool = False, names: Sequence[str] = (), metrics: Sequence[Metric] = ()
) -> list[dict[str, Any]]:
    """Each scenario's figures of its latest session in github-action-benchmark's custom format (``name``,
    ``unit``, ``value``, ``range``, ``extra``): with ``bigger`` the metrics better bigger (its tool
    ``customBiggerIsBetter``), else the others (``customSmallerIsBetter``)."""
    chosen = [m for m in (metrics or METRIC.values()) if bigger_is_better(m) == bigger]
    store = run_history_at(path)
    wanted = [store.resolve(name) for name in names] if names else store.scenarios()
    found: list[dict[str, Any]] = []
    for summary in wanted:
        latest = store.latest_session(summary.file, summary.name)
        if latest is None:
            continue
        batch, values = latest.scenario.get("batch_size"), latest.figures
        commit, branch, recorded_at = latest.commit, latest.branch, latest.recorded_at
        runs = [run for text in latest.runs if (run := stored_run(text)) is not None]
        device = machine_of(latest.environment)
        for metric in chosen:
            value = values.get(metric.name)
            if value is None:
                continue
            entry: dict[str, Any] = {
                "name": f"{summary.file}::{summary.name} - {_label(metric, batch)}",
                "unit": metric.unit,
                "value": value,
            }
            spread = _spread(metric, runs)
            if spread is not None:
                entry["range"] = f"± {spread:.4g}"
            entry["extra"] = f"commit {commit or '-'} on {branch or '-'}, {recorded_at}\n{len(runs)} run(s) on {device}"
            found.append(entry)
    return found


def _label(metric: Metric, batch: object) -> str:
    """The documented key, under its section where it has one: ``Batch Time.forward_pass``, ``Batch of 4 Inference
    Time``."""
    path = metric.path_for(batch) if isinstance(batch, int) else metric.path
    return ".".join(path[1:])


def _spread(metric: Metric, runs: Sequence[Run]) -> float | None:
    """The figure's standard error, in its unit: from the spread of the runs where there are several, else from the
    one run's own samples (timings); None for a single run of a peak."""
    values = [v for run in runs if (v := run.metrics.get(metric.name)) is not None]
    if len(values) > 1:
        return statistics.stdev(values) / math.sqrt(len(values))
    errors = [e * values[0] for run in runs if values and (e := run.relative_error(metric.name)) is not None]
    return errors[0] if errors else None
