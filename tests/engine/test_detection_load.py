"""Inference at a stated detection load: the knobs really give the stated count per image, the scenario
rule for 'weights', and warnings that fire only when they are true."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from pytest_mlestimate import estimate, estimate_model
from pytest_mlestimate.estimates.estimate import Estimate
from pytest_mlestimate.profiling.models import apply_detection_load, build_model
from pytest_mlestimate.profiling.profile import Profile
from pytest_mlestimate.profiling.synthetic import make_images
from pytest_mlestimate.scenarios.scenario import Scenario, ScenarioError, parse_scenario
from pytest_mlestimate.tiny import tiny_detector

TINY: dict[str, Any] = {
    "task_type": "detection",
    "architecture": "pytest_mlestimate.tiny:tiny_detector",
    "dataset_size": 10,
    "batch_size": 2,
    "image_size": [64, 64],
    "application_type": "inference",
    "device": "cpu",
}


def scenario(**changes: Any) -> Scenario:
    return parse_scenario({**TINY, **changes})


def detections_per_image(model: nn.Module, size: int = 64) -> list[int]:
    model.eval()
    with torch.inference_mode():
        outputs = model(make_images(2, size, size, torch.Generator().manual_seed(0)))
    return [len(o["boxes"]) for o in outputs]


@pytest.mark.parametrize(
    ("architecture", "kwargs", "stated_max"),
    [
        ("fasterrcnn_mobilenet_v3_large_320_fpn", {"min_size": 128, "max_size": 128}, 100),  # RoIHeads
        ("retinanet_resnet50_fpn", {"min_size": 128, "max_size": 128}, 300),  # dense head, top-k per level
        ("ssdlite320_mobilenet_v3_large", {}, 300),  # SSD, top-k per class
    ],
)
def test_torchvision_knobs_give_the_stated_count_whatever_the_random_weights_give(
    architecture: str, kwargs: dict[str, Any], stated_max: int
) -> None:
    torch.manual_seed(0)
    built = scenario(architecture=architecture, model_kwargs=kwargs)
    model = build_model(built)
    load = apply_detection_load(model, built)
    assert load.per_image == stated_max
    assert str(load).startswith(f"{stated_max} detections per image")
    assert detections_per_image(model, 128) == [stated_max, stated_max]
    load = apply_detection_load(model, built.model_copy(update={"detection_load": 7}))
    assert load.per_image == 7
    assert detections_per_image(model, 128) == [7, 7]


def test_tiny_model_honours_the_same_knobs() -> None:
    torch.manual_seed(0)
    model = tiny_detector()
    assert detections_per_image(model) == [0, 0]  # 91 classes: random scores stay under the 0.05 threshold
    assert apply_detection_load(model, scenario()).per_image == 10
    assert detections_per_image(model) == [10, 10]
    apply_detection_load(model, scenario(detection_load=25))
    assert detections_per_image(model) == [25, 25]

    fresh = tiny_detector()
    load = apply_detection_load(fresh, scenario(detection_load=25))
    load.restore()  # as the profiler does after measuring: a factory's caller may go on using its model
    assert (fresh.detections_per_img, fresh.score_thresh, fresh.nms_thresh) == (10, 0.05, 0.5)


def test_default_load_is_stated_and_measured_end_to_end() -> None:
    result = estimate(TINY, isolate=False, cache=False).to_dict()
    inference = result["details"]["inference"]
    assert inference["load"].startswith("10 detections per image (the model's detections_per_img")
    assert inference["stated_detections_per_image"] == 10
    assert inference["detections_per_image"] == 10
    assert inference["short_of_load"] is None
    assert not any("detection_load" in w or "random weights" in w for w in result["warnings"])


def test_integer_load_beyond_the_candidates_is_noted_with_the_numbers() -> None:
    # a 64x64 image has 16x16 = 256 cells: 300 detections cannot all be found
    inference = estimate({**TINY, "detection_load": 300}, isolate=False, cache=False).to_dict()["details"]["inference"]
    assert inference["stated_detections_per_image"] == 300
    assert inference["detections_per_image"] == 256
    assert inference["short_of_load"].startswith("measured 256.0 detections per image, short of the stated 300")


def test_weights_load_needs_a_weights_file_and_max_stays_the_default_with_one(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError) as error:
        scenario(detection_load="weights")
    message = str(error.value)
    assert "detection_load" in message and "'weights'" in message and "weights_path" in message
    assert "allowed: 'max', a number of detections per image" in message
    for bad in (0, -3, "many", 2.5, True):
        with pytest.raises(ScenarioError, match="detection_load: not a detection load"):
            scenario(detection_load=bad)
    assert scenario(weights_path="/w.pt").detection_load == "max"
    assert scenario(detection_load=5).detection_load == 5

    torch.manual_seed(0)
    weights = tmp_path / "tiny.pt"
    torch.save(tiny_detector().state_dict(), weights)
    result = estimate(
        {**TINY, "weights_path": str(weights), "detection_load": "weights"}, isolate=False, cache=False
    ).to_dict()
    inference = result["details"]["inference"]
    assert inference["load"].startswith("as the weights give")
    assert inference["stated_detections_per_image"] is None
    assert inference["detections_per_image"] == 0
    assert inference["short_of_load"] is None
    assert not any("detection_load" in w or "random weights" in w for w in result["warnings"])


class FixedDetector(nn.Module):
    """Three detections per image, whatever is asked: no post-processing knobs to set."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, images: list[torch.Tensor], targets: Any = None) -> Any:
        features = self.conv(torch.stack(images))
        if self.training:
            return {"loss": features.mean()}
        box = torch.tensor([[0.0, 0.0, 8.0, 8.0]])
        return [{"boxes": box.repeat(3, 1), "labels": torch.ones(3, dtype=torch.int64), "scores": torch.ones(3)}] * len(
            images
        )


def test_custom_model_without_knobs_says_the_load_cannot_be_set() -> None:
    model = FixedDetector()
    load = apply_detection_load(model, scenario())
    assert load.per_image is None
    assert str(load) == "as the weights give; FixedDetector has no detections_per_img and score_thresh to set"

    result = estimate_model(FixedDetector, {**TINY, "architecture": "tests:fixed"}).to_dict()
    inference = result["details"]["inference"]
    assert inference["weights"] == "factory"
    assert inference["stated_detections_per_image"] is None
    assert inference["detections_per_image"] == 3
    (warning,) = [w for w in result["warnings"] if "detection_load" in w]
    assert warning.startswith("detection_load 'max' could not be set (3 detections per image measured)")
    assert not any("random weights" in w for w in result["warnings"])


def measured(load: str | None, per_image: int | None, **changes: Any) -> Estimate:
    torchvision = {"architecture": "fasterrcnn_resnet50_fpn", "model_kwargs": {"min_size": 64, "max_size": 64}}
    profile = Profile(
        device="cpu",
        device_name="cpu",
        effective_input_size=(64, 64),
        inference_one_times=[0.1],
        inference_batch_times=[0.2],
        inference_detections=0.0 if per_image is None else float(per_image),
        inference_load=load,
        inference_load_per_image=per_image,
    )
    return Estimate(scenario(**{**torchvision, **changes}), profile)


def test_random_weights_warning_fires_only_at_the_load_random_weights_give() -> None:
    def flagged(estimate: Estimate) -> list[str]:
        return [w for w in estimate.warnings() if "random weights" in w]

    (warning,) = flagged(measured(None, None))  # a profile that set no load: the weights decided
    assert "0 detections per image" in warning
    assert not flagged(measured("100 detections per image (...)", 100))
    assert not flagged(measured("20 detections per image (...)", 20, detection_load=20))
    assert not flagged(measured("as the weights give on the synthetic images", None, weights_path="/w.pt"))
    assert not flagged(measured("as the weights give", None, weights_path="/w.pt", detection_load="weights"))
    assert measured("100 detections per image (...)", 100).details()["inference"]["weights"] == "random"
