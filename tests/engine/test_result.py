"""The documented numbers derived from raw measurements: keys, units and formulas."""

from __future__ import annotations

from typing import Any

import pytest

from pytest_mlestimate.core.metrics import ESTIMATE_METRICS
from pytest_mlestimate.estimates.estimate import Estimate
from pytest_mlestimate.profiling.profile import PhasePeaks, Profile
from pytest_mlestimate.scenarios.scenario import Scenario
from tests.documented_keys import COST_KEYS, ENERGY_KEYS, RESOURCE_KEYS

GIB = 2**30


def scenario(**changes: Any) -> Scenario:
    base = {
        "task_type": "detection",
        "architecture": "fasterrcnn_resnet50_fpn",
        "dataset_size": 10,
        "batch_size": 4,
        "image_size": [512, 512],
    }
    return Scenario.model_validate({**base, **changes})


def profile(**changes: Any) -> Profile:
    base: dict[str, Any] = {
        "device": "cuda:0",
        "device_name": "NVIDIA H100 80GB HBM3",
        "effective_input_size": (512, 512),
        "parameter_count": 41_000_000,
        "ram_before": 3 * GIB,
        "vram_before": 1 * GIB,
        "warmup_step_times": [1.0, 0.2],
        "step_times": [0.1, 0.1, 0.1, 0.1],
        "forward_times": [0.04, 0.06],
        "backward_times": [0.05, 0.07],
        "optimizer_times": [0.003, 0.003],
        "inference_one_times": [0.02, 0.04],
        "inference_batch_times": [0.05, 0.07],
        "training": PhasePeaks(
            peak_rss=4 * GIB, peak_cpu_percent=180.0, peak_gpu_memory=9 * GIB, peak_gpu_utilization=85.0
        ),
        "inference": PhasePeaks(peak_rss=3 * GIB, peak_cpu_percent=100.0, peak_gpu_memory=2 * GIB),
    }
    return Profile(**{**base, **changes})


def test_documented_keys_exactly() -> None:
    result = Estimate(scenario(), profile()).to_dict()
    assert list(result) == [
        "resource",
        "training_time",
        "inference_time",
        "energy",
        "cost",
        "units",
        "details",
        "warnings",
    ]
    assert list(result["resource"]) == RESOURCE_KEYS
    assert list(result["energy"]) == ENERGY_KEYS
    assert list(result["cost"]) == COST_KEYS
    assert list(result["resource"]["Batch Time"]) == ["forward_pass", "backward_pass"]
    assert list(result["training_time"]) == ["Total Training Time"]
    assert list(result["inference_time"]) == ["1-Image Inference Time", "Batch of 4 Inference Time"]
    assert result["units"]["Batch of 4 Inference Time"] == "seconds"
    assert result["units"]["Peak GPU Memory"] == "bytes"


def test_resource_figures_come_from_the_training_phase_in_base_units() -> None:
    resource = Estimate(scenario(), profile()).to_dict()["resource"]
    assert resource["Peak GPU Memory"] == 9 * GIB
    assert resource["Peak RAM Memory"] == 4 * GIB
    assert resource["Peak CPU Utilization"] == 180.0
    assert resource["Batch Time"] == {"forward_pass": pytest.approx(0.05), "backward_pass": pytest.approx(0.06)}
    assert resource["RAM before training"] == 3 * GIB


def test_total_training_time_counts_warmup_as_measured_then_the_mean_step() -> None:
    # 10 images at batch 4 -> 3 batches per epoch; 2 epochs -> 6 steps: 1.0 + 0.2 + 4 x 0.1
    estimate = Estimate(scenario(epochs=2), profile(step_times=[0.08, 0.12, 0.1, 0.1]))
    assert estimate.to_dict()["training_time"]["Total Training Time"] == pytest.approx(1.6)
    assert estimate.to_dict()["details"]["steps"] == 6


def test_total_uses_the_mean_not_the_median_of_skewed_steps() -> None:
    skewed = profile(warmup_step_times=[], step_times=[0.10, 0.10, 0.11, 0.12, 0.13, 0.16])  # median 0.115
    total = Estimate(scenario(dataset_size=600), skewed).total_training_time()
    assert total == pytest.approx(150 * 0.12)


def test_a_run_shorter_than_the_warmup_is_the_warmup_steps() -> None:
    assert Estimate(scenario(dataset_size=3), profile()).total_training_time() == pytest.approx(1.0)


def test_dataset_size_and_epochs_only_scale_the_total() -> None:
    base = Estimate(scenario(dataset_size=4000), profile()).total_training_time()
    scaled = Estimate(scenario(dataset_size=4000, epochs=10), profile()).total_training_time()
    assert base is not None and scaled is not None
    assert scaled - 1.2 == pytest.approx(10 * (base - 1.2) + 9 * 0.1 * 2)


def test_inference_scenarios_report_inference_resources_and_no_training_time() -> None:
    result = Estimate(scenario(application_type="inference"), profile(step_times=[])).to_dict()
    assert result["training_time"] is None
    assert result["resource"]["Peak GPU Memory"] == 2 * GIB
    assert result["resource"]["Batch Time"] == {"forward_pass": pytest.approx(0.06), "backward_pass": None}
    assert result["inference_time"]["1-Image Inference Time"] == pytest.approx(0.03)


def test_cpu_profiles_report_gpu_figures_as_null_with_the_reason() -> None:
    cpu = profile(
        device="cpu",
        device_name="cpu",
        vram_before=None,
        gpu_unavailable="no CUDA device is available here",
        training=PhasePeaks(peak_rss=GIB, peak_cpu_percent=200.0),
    )
    result = Estimate(scenario(), cpu).to_dict()
    assert result["resource"]["Peak GPU Memory"] is None
    assert result["resource"]["Peak GPU Utilization"] is None
    assert result["resource"]["VRAM before training"] is None
    assert result["details"]["gpu_unavailable"] == "no CUDA device is available here"


def test_warnings_name_the_resize_and_both_parameter_counts() -> None:
    warnings = Estimate(
        scenario(image_size=[256, 256], parameters=25_000_000), profile(effective_input_size=(800, 800))
    ).warnings()
    assert any("computes on 800x800" in w for w in warnings)
    assert any("25,000,000" in w and "41,000,000" in w for w in warnings)
    assert not any("parameters" in w for w in Estimate(scenario(parameters=41_100_000), profile()).warnings())


def test_metrics_use_the_budget_vocabulary_and_time_metrics_carry_their_samples() -> None:
    estimate = Estimate(scenario(), profile())
    assert set(estimate.metrics()) == set(ESTIMATE_METRICS)
    assert estimate.metrics()["inference_batch"] == pytest.approx(0.06)
    assert estimate.samples("forward_pass") == estimate.profile.forward_times
    assert estimate.samples("peak_gpu_memory") == []


def test_one_stalled_step_cannot_multiply_the_total() -> None:
    steady = Estimate(scenario(dataset_size=4000), profile(step_times=[0.23, 0.24, 0.22, 0.25, 0.23, 0.24] * 2))
    stalled_steps = [0.23, 0.24, 0.22, 0.25, 0.23, 0.24] * 2
    stalled_steps[5] = 15.9  # another process took the cores for one step
    stalled = Estimate(scenario(dataset_size=4000), profile(step_times=stalled_steps))
    ratio = stalled.total_training_time() / steady.total_training_time()
    assert 0.99 < ratio < 1.06  # the stalled step counts as 1.5 medians, not 66


def test_statistics_keep_spread_beside_the_mean() -> None:
    timings = Estimate(scenario(), profile()).to_dict()["details"]["timings"]
    assert timings["step"]["count"] == 4
    assert set(timings["forward_pass"]) == {"mean", "median", "p10", "p90", "iqr", "sem", "count"}


def test_out_of_memory_is_a_result() -> None:
    failed = profile(failure="does not fit: batch 64 at 512x512 on H100 needs more than 79.1 GiB", step_times=[])
    estimate = Estimate(scenario(batch_size=64), failed)
    assert not estimate.fits
    assert estimate.to_dict()["details"]["failure"].startswith("does not fit: batch 64")


def test_random_weight_inference_is_flagged_for_torchvision_models_only() -> None:
    def flagged(**changes: Any) -> bool:
        return any("random weights" in w for w in Estimate(scenario(**changes), profile()).warnings())

    assert flagged()
    assert not flagged(weights_path="/models/frcnn.pt")
    assert not flagged(architecture="mypkg.models:build")


def test_printing_an_estimate_gives_its_headline_figures_with_units() -> None:
    found = Estimate(scenario(), profile(), cache={"hit": True})
    text = str(found)
    lines = text.splitlines()
    assert lines[0] == (
        "fasterrcnn_resnet50_fpn, training, batch 4 of 512x512 on NVIDIA H100 80GB HBM3 (from the cache)"
    )
    assert "  Peak GPU Memory                  9.00 GiB" in lines
    assert "  Batch Time forward_pass          50.0 ms" in lines
    assert "  Batch of 4 Inference Time        60.0 ms" in lines
    assert any(line.startswith("  Total Training Time ") for line in lines)
    assert len(text) < 1200
    assert repr(found) == "<Estimate fasterrcnn_resnet50_fpn, training, batch 4 of 512x512 on NVIDIA H100 80GB HBM3>"


def test_a_cpu_estimate_prints_no_gpu_figures_and_a_misfit_says_why() -> None:
    on_cpu = str(Estimate(scenario(), profile(device="cpu", device_name="cpu")))
    assert "GPU" not in on_cpu and "Peak RAM Memory" in on_cpu
    misfit = str(Estimate(scenario(), profile(failure="does not fit: needs more than 79.1 GiB")))
    assert misfit.splitlines()[1] == "  does not fit: needs more than 79.1 GiB"
