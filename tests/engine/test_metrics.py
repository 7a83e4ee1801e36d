"""Each metric is defined once; the public keys, the JSON Schema and the budget vocabulary agree with it."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from pytest_mlestimate.core.metrics import METRIC, METRICS, OPTIONAL_SUMMARY_METRICS, SUMMARY_METRICS
from pytest_mlestimate.reports import terminal
from tests.documented_keys import RESOURCE_KEYS

SCHEMA = json.loads((Path(__file__).parents[2] / "pytest_mlestimate" / "report.schema.json").read_text())


def test_the_schema_names_every_metric_and_only_those() -> None:
    assert SCHEMA["$defs"]["metric"]["enum"] == list(METRICS)


def test_the_documented_resource_keys_come_from_the_definitions() -> None:
    resource = [m.path[1] for m in METRIC.values() if m.path[0] == "resource"]
    assert list(dict.fromkeys(resource)) == RESOURCE_KEYS
    assert SCHEMA["$defs"]["resource"]["required"] == RESOURCE_KEYS
    assert METRIC["total_training_time"].path == ("training_time", "Total Training Time")
    assert METRIC["inference_batch"].path_for(16) == ("inference_time", "Batch of 16 Inference Time")
    assert METRIC["forward_pass"].path == ("resource", "Batch Time", "forward_pass")


def test_timings_are_judged_by_their_noise_and_peaks_by_their_spread() -> None:
    timings = {name for name, m in METRIC.items() if m.noise == "timing"}
    assert timings == {"forward_pass", "backward_pass", "total_training_time", "inference_1_image", "inference_batch"}
    assert all(METRIC[name].unit == "seconds" for name in timings)
    assert METRIC["peak_gpu_utilization"].lower_is_worse and not METRIC["peak_gpu_memory"].lower_is_worse


def test_a_metric_reads_its_figure_out_of_a_record_and_nothing_else() -> None:
    record = {
        "scenario": {"batch_size": 8},
        "resource": {"Peak GPU Memory": 2.5e9, "Peak RAM Memory": float("nan"), "Peak GPU Utilization": True},
        "inference_time": {"Batch of 4 Inference Time": 0.5, "Batch of 8 Inference Time": 0.9},
    }
    assert METRIC["peak_gpu_memory"].read(record) == 2.5e9
    assert METRIC["inference_batch"].read(record) == 0.9  # the key of the scenario's own batch
    assert METRIC["peak_ram_memory"].read(record) is None  # NaN: not read
    assert METRIC["peak_gpu_utilization"].read(record) is None  # a bool is no figure
    assert METRIC["forward_pass"].read(record) is None  # absent
    unknown = {**record, "scenario": "?", "inference_time": {"Batch of 16 Inference Time": 1.5}}
    assert METRIC["inference_batch"].read(unknown) == 1.5  # batch unknown: whichever batch the record holds


def test_every_metric_has_a_label_and_a_column_heading() -> None:
    for metric in METRIC.values():
        assert metric.label.strip() and metric.column.strip(), metric.name
        assert len(metric.column) <= len(metric.label)
    assert len({m.label for m in METRIC.values()}) == len({m.column for m in METRIC.values()}) == len(METRIC)
    assert METRIC["peak_ram_memory"].column == "peak RAM"  # no heading of its own: the label
    assert METRIC["peak_gpu_memory"].column == "peak GPU mem"
    assert set(SUMMARY_METRICS) | set(OPTIONAL_SUMMARY_METRICS) <= set(METRIC)
    assert not set(SUMMARY_METRICS) & set(OPTIONAL_SUMMARY_METRICS)


CPU_RECORD: dict[str, Any] = {
    "name": "cpu",
    "outcome": "passed",
    "scenario": {"batch_size": 2},
    "resource": {"Peak RAM Memory": 3 * 2**20, "Batch Time": {"forward_pass": 0.01, "backward_pass": None}},
    "cost": {"Cost per Training": 0.5, "Currency": "EUR"},
}


def test_the_terminal_table_heads_its_columns_as_the_definitions_say(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(METRIC, "forward_pass", dataclasses.replace(METRIC["forward_pass"], column="fwd"))
    header, row = terminal.table([CPU_RECORD])
    headings = [METRIC[name].column for name in (*SUMMARY_METRICS, "cost_per_training")]
    places = [header.index(heading) for heading in headings]
    assert "fwd" in headings and "forward" not in header
    assert places == sorted(places)  # in the order of the definitions, the optional ones only where measured
    assert METRIC["energy_per_training"].column not in header
    assert terminal.headline_metrics() == headings[:-1]
    assert row.split()[-2:] == ["EUR", "-"]  # the cost with its price's currency, then no budgets


def test_the_html_overview_names_and_orders_metrics_as_the_definitions_do() -> None:
    from pytest_mlestimate.reports.html import read

    measured, missing = read.overview_metrics([CPU_RECORD])
    assert measured == ["peak_ram_memory", "forward_pass", "cost_per_training"]
    assert missing == [name for name in SUMMARY_METRICS if name not in measured]
    assert [read.SHORT_LABELS[name] for name in measured] == ["peak RAM", "forward", "cost"]
    assert all(read.LABELS[name] == metric.label for name, metric in METRIC.items())
    assert [read.shown(CPU_RECORD, name) for name in measured] == ["3.00 MiB", "10.0 ms", "0.50 EUR"]
