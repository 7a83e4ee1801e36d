"""The Python API end to end on this machine's CPU: the tiny model in-process and in a child process,
a real torchvision model, cache reuse, errors and the no-GPU behaviour."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from pytest_mlestimate import EstimateError, estimate, estimate_model
from pytest_mlestimate.core.errors import DeviceUnavailableError, ModelBuildError, ModelRunError
from pytest_mlestimate.core.samples import robust_mean
from pytest_mlestimate.tiny import tiny_detector
from tests.slow_model import SLOW
from tests.tiny_scenario import TINY as TINY_BASE

TINY: dict[str, Any] = {
    **TINY_BASE,
    "warmup_iterations": 1,
    "measure_iterations": 4,
}


def test_tiny_model_in_process_gives_every_documented_figure_measurable_on_a_cpu() -> None:
    result = estimate({**TINY, "device": "cpu"}, isolate=False, cache=False).to_dict()
    resource = result["resource"]
    assert resource["Peak RAM Memory"] >= resource["RAM before training"] > 0
    assert 0 < resource["Peak CPU Utilization"] <= 100 * 64
    assert resource["Batch Time"]["forward_pass"] > 0 and resource["Batch Time"]["backward_pass"] > 0
    assert result["training_time"]["Total Training Time"] > 500 * resource["Batch Time"]["forward_pass"]
    assert result["inference_time"]["Batch of 2 Inference Time"] > 0
    assert result["details"]["timings"]["step"]["count"] == 4
    assert result["details"]["warmup"]["steps"] == 1


def test_no_gpu_means_null_gpu_figures_with_a_reason_not_a_crash() -> None:
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    result = estimate(TINY, isolate=False, cache=False).to_dict()
    assert result["resource"]["Peak GPU Memory"] is None
    assert result["resource"]["Peak GPU Utilization"] is None
    assert result["details"]["gpu_unavailable"]
    with pytest.raises(DeviceUnavailableError, match="no CUDA device is available"):
        estimate({**TINY, "device": "cuda"}, isolate=False, cache=False)


def test_child_process_profile_is_cached_and_scaled_without_remeasuring() -> None:
    first = estimate({**TINY, "threading": True, "sample_interval_ms": 5})
    assert first.cache["hit"] is False
    assert first.to_dict()["details"]["monitoring"]["mode"] == "threaded"
    assert first.to_dict()["details"]["monitoring"]["samples"] > 2
    again = estimate({**TINY, "threading": True, "sample_interval_ms": 5, "dataset_size": 10**6, "epochs": 100})
    if first.profile.contended:  # other processes took the CPU: not cached, so measured again
        assert first.cache["stored"] is False and again.cache["hit"] is False
        return
    assert again.cache["hit"] is True
    assert again.profile == first.profile  # no profile ran: the same measurement, scaled
    steps = again.to_dict()["details"]["steps"]
    assert steps == 500_000 * 100
    refreshed = estimate({**TINY, "threading": True, "sample_interval_ms": 5}, refresh=True)
    assert refreshed.cache["hit"] is False and refreshed.profile != first.profile


def test_errors_from_the_child_keep_their_kind_and_message() -> None:
    with pytest.raises(ModelBuildError, match=r"model_kwargs min_sise not accepted by .* allowed: .*min_size"):
        estimate(
            {**TINY, "architecture": "ssdlite320_mobilenet_v3_large", "model_kwargs": {"min_sise": 1}}, isolate=False
        )
    with pytest.raises(ModelBuildError, match=r"cannot load custom factory 'nowhere.models:build'"):
        estimate({**TINY, "architecture": "nowhere.models:build"})
    with pytest.raises(ModelRunError, match="ssdlite320_mobilenet_v3_large at batch 1"):
        estimate({**TINY, "architecture": "ssdlite320_mobilenet_v3_large", "batch_size": 1}, isolate=False)


def test_a_failed_profile_leaves_no_sampling_thread_behind() -> None:
    failing = {**TINY, "architecture": "ssdlite320_mobilenet_v3_large", "batch_size": 1, "threading": True}
    with pytest.raises(ModelRunError):
        estimate(failing, isolate=False, cache=False)
    assert not [t for t in threading.enumerate() if t.name == "mlestimate-monitor"]


def test_timeout_stops_the_profile_and_says_so() -> None:
    with pytest.raises(EstimateError, match=r"ran past its limit of 0\.5 s"):
        estimate(SLOW, timeout=0.5, cache=False)  # a profile starts in 0.1 s: the model must be slow


def test_a_model_defined_in_python_code() -> None:
    result = estimate_model(lambda: tiny_detector(num_classes=5), {**TINY, "num_classes": 5}).to_dict()
    assert result["resource"]["Batch Time"]["forward_pass"] > 0
    assert result["training_time"]["Total Training Time"] > 0


def test_real_torchvision_model_on_cpu_end_to_end() -> None:
    found = estimate(
        {
            "task_type": "detection",
            "architecture": "ssdlite320_mobilenet_v3_large",
            "parameters": 3_440_060,
            "dataset_size": 100,
            "batch_size": 2,
            "image_size": [320, 320],
            "application_type": "training",
            "warmup_iterations": 1,
            "measure_iterations": 3,
            "model_kwargs": {"detections_per_img": 20},
        }
    )
    result = found.to_dict()
    details = result["details"]
    assert details["effective_input_size"] == [320, 320]
    assert details["parameter_count"] > 3_000_000
    assert not any("parameters" in w for w in result["warnings"])
    assert details["inference"]["detections_per_image"] <= 20
    step = robust_mean(found.profile.step_times)  # a stalled step (a busy machine) counts at most its cap
    assert result["training_time"]["Total Training Time"] == pytest.approx(
        sum(details["warmup"]["times"]) + step * 49, rel=1e-9
    )
    assert result["resource"]["Peak RAM Memory"] > 200 * 2**20
