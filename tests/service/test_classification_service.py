"""A classifier through a real ``mlestimate serve``: the original request with ``"task_type": "classification",
"architecture": "resnet50"`` answers every documented key of each endpoint."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.documented_keys import COST_KEYS, ENERGY_KEYS, RESOURCE_KEYS
from tests.service.real_server import serving

REQUEST = {
    "task_type": "classification", "architecture": "resnet50", "dataset_size": 10000, "batch_size": 2,
    "image_size": [64, 64], "application_type": "training", "warmup_iterations": 1, "measure_iterations": 2,
}  # fmt: skip


def test_a_resnet50_request_answers_every_documented_key(tmp_path: Path) -> None:
    with serving(tmp_path, "--device", "cpu", "--no-access-log") as server:
        resource = httpx.post(f"{server.base}/api/v1/estimate-resource", json=REQUEST, timeout=300)
        training = httpx.post(f"{server.base}/api/v1/estimate-training-time", json=REQUEST, timeout=300)
        inference = httpx.post(f"{server.base}/api/v1/estimate-inference-time", json=REQUEST, timeout=300)
        wrong = httpx.post(f"{server.base}/api/v1/estimate-resource", json=REQUEST | {"task_type": "detection"})

    assert resource.status_code == 200, resource.text
    assert set(RESOURCE_KEYS) <= set(resource.json())
    assert resource.json()["Peak RAM Memory"] > 0 and resource.json()["Batch Time"]["forward_pass"] > 0
    body = training.json()
    assert body["Total Training Time"] > 0
    assert set(ENERGY_KEYS) <= set(body["energy"]) and set(COST_KEYS) <= set(body["cost"])
    assert inference.json()["1-Image Inference Time"] > 0 and inference.json()["Batch of 2 Inference Time"] > 0
    assert wrong.status_code == 422 and "task_type must be 'classification'" in wrong.text
