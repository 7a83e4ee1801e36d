"""Each metric is defined once; the public keys, the JSON Schema and the budget vocabulary agree with it."""

from __future__ import annotations

import json
from pathlib import Path

from pytest_mlestimate.core.metrics import METRIC, METRICS
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
