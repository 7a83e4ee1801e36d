"""CUDA paths: synchronised timing, allocator and NVML memory, utilisation, out-of-memory as a result.
Skipped with the reason on a machine without a CUDA device."""

from __future__ import annotations

from typing import Any

import pytest

from pytest_mlestimate import estimate

pytestmark = pytest.mark.gpu

TINY: dict[str, Any] = {
    "task_type": "detection",
    "architecture": "pytest_mlestimate.tiny:tiny_detector",
    "dataset_size": 1000,
    "batch_size": 4,
    "image_size": [256, 256],
    "device": "cuda",
    "warmup_iterations": 3,
    "measure_iterations": 10,
}


@pytest.mark.parametrize("threading", [False, True])
def test_gpu_figures_are_measured_in_both_monitoring_modes(threading: bool) -> None:
    result = estimate({**TINY, "threading": threading, "sample_interval_ms": 5}, cache=False).to_dict()
    resource, details = result["resource"], result["details"]
    memory = details["gpu_memory"]
    assert 0 < memory["peak_allocated"] <= memory["peak_reserved"] <= resource["Peak GPU Memory"]
    assert resource["Peak GPU Memory"] > memory["peak_reserved"]  # NVML adds the CUDA context
    assert resource["VRAM before training"] > 0
    assert resource["Peak GPU Utilization"] is not None and 0 <= resource["Peak GPU Utilization"] <= 100
    assert details["device"] == "cuda:0" and details["environment"]["driver"]
    assert details["timings"]["step"]["count"] == 10
    assert details["timings"]["forward_pass"]["count"] == 10  # the phased block, apart from the step block


def test_real_model_on_gpu_reports_the_resized_input_and_a_plausible_step() -> None:
    result = estimate(
        {
            "task_type": "detection",
            "architecture": "fasterrcnn_resnet50_fpn",
            "dataset_size": 400,
            "batch_size": 2,
            "image_size": [256, 256],
            "device": "cuda",
            "warmup_iterations": 5,
            "measure_iterations": 10,
        },
        cache=False,
    ).to_dict()
    details = result["details"]
    assert details["effective_input_size"] == [800, 800]
    assert any("computes on 800x800" in w for w in result["warnings"])
    step = details["timings"]["step"]["mean"]
    assert 0.005 < step < 2.0
    assert details["warmup"]["times"][0] > step  # the first step pays CUDA's lazy start


def test_out_of_memory_is_a_result_and_the_next_estimate_runs() -> None:
    huge = {**TINY, "batch_size": 4, "image_size": [8192, 8192], "model_kwargs": {"channels": 4096}}
    failed = estimate(huge, cache=False)
    assert not failed.fits
    assert failed.failure is not None and failed.failure.startswith("does not fit: batch 4 at 8192x8192 on ")
    assert failed.to_dict()["resource"]["Peak GPU Memory"] is None
    after = estimate(TINY, cache=False)
    assert after.fits and after.to_dict()["resource"]["Peak GPU Memory"] > 0


def test_out_of_memory_in_process_leaves_the_device_clean() -> None:
    import torch

    huge = {**TINY, "batch_size": 4, "image_size": [8192, 8192], "model_kwargs": {"channels": 4096}}
    before = torch.cuda.memory_allocated()  # earlier in-process tests may hold library workspaces
    assert not estimate(huge, cache=False, isolate=False).fits
    assert torch.cuda.memory_allocated() == before
    assert estimate(TINY, cache=False, isolate=False).fits


def test_the_breakdown_accounts_for_the_allocator_peak_on_a_gpu() -> None:
    result = estimate(
        {
            "task_type": "detection",
            "architecture": "fasterrcnn_resnet50_fpn",
            "dataset_size": 400,
            "batch_size": 2,
            "image_size": [512, 512],
            "device": "cuda",
            "model_kwargs": {"min_size": 512, "max_size": 512},
            "warmup_iterations": 5,
            "measure_iterations": 10,
        },
        cache=False,
    ).to_dict()
    breakdown = result["details"]["breakdown"]
    memory = breakdown["memory"]
    assert memory["whole"] == "peak allocated GPU memory" and memory["metric"] == "peak_gpu_memory"
    assert memory["whole_bytes"] == result["details"]["gpu_memory"]["peak_allocated"]
    assert abs(memory["rest"]) <= 0.05 * memory["whole_bytes"], memory  # the bar: within 5 %
    parts = {part["module"]: part for part in breakdown["parts"]}
    assert parts["backbone.body"]["forward_peak_bytes"] > 0 and parts["roi_heads"]["activations_bytes"] > 0
    training = breakdown["training"]
    assert abs(training["remainder_share"]) <= 0.10, training  # CUDA events add up to the headline step
    timeline = result["details"]["timeline"]
    assert set(timeline["series"]) == {"allocated", "reserved"}
    assert max(timeline["series"]["allocated"]) <= max(timeline["series"]["reserved"])
