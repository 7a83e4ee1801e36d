"""Through the engine for real: a child process profiles the tiny model, the sqlite cache outlives the app."""

from __future__ import annotations

import asyncio

import pytest

from pytest_mlestimate.scenarios.scenario import Scenario
from pytest_mlestimate.service.app import create_app
from pytest_mlestimate.service.profile_queue import Measured
from pytest_mlestimate.service.settings import ServiceSettings
from pytest_mlestimate.service.state import engine_measure
from pytest_mlestimate.stores.profile_cache import ProfileCache
from tests.service.fakes import TINY, client_for
from tests.slow_model import SLOW

pytestmark = pytest.mark.anyio

RESOURCE = "/api/v1/estimate-resource"
TINY_BODY = {
    "task_type": "detection",
    "architecture": TINY,
    "dataset_size": 64,
    "batch_size": 2,
    "image_size": [64, 64],
    "warmup_iterations": 1,
    "measure_iterations": 2,
}


async def test_twenty_requests_make_one_real_profile_and_a_restart_answers_from_the_cache():
    settings = ServiceSettings(allowed_factories=frozenset({TINY}))
    real = engine_measure(ProfileCache().path, timeout=300)
    calls: list[Scenario] = []

    def counting(scenario: Scenario) -> Measured:
        calls.append(scenario)
        return real(scenario)

    async with client_for(create_app(settings, measure=counting)) as client:
        responses = await asyncio.gather(*(client.post(RESOURCE, json=TINY_BODY) for _ in range(20)))

    assert [r.status_code for r in responses] == [200] * 20
    assert len(calls) == 1
    bodies = [r.json() for r in responses]
    assert bodies[0]["Peak RAM Memory"] > 0
    assert {b["Peak RAM Memory"] for b in bodies} == {bodies[0]["Peak RAM Memory"]}
    assert bodies[0]["details"]["cache"]["hit"] is False
    breakdown, timeline = bodies[0]["details"]["breakdown"], bodies[0]["details"]["timeline"]
    assert [part["module"] for part in breakdown["parts"]] == ["backbone", "classifier", "box_regressor"]
    assert breakdown["memory"]["whole_bytes"] == bodies[0]["Peak RAM Memory"]
    assert len(timeline["t_s"]) == len(timeline["series"]["rss"]) > 0

    def must_not_measure(scenario: Scenario) -> Measured:
        raise AssertionError("measured again although the cache holds this profile")

    async with client_for(create_app(settings, measure=must_not_measure)) as restarted:
        again = await restarted.post("/api/v1/estimate-training-time", json=TINY_BODY | {"dataset_size": 6400})

    assert again.status_code == 200, again.text
    assert again.json()["details"]["cache"]["hit"] is True
    assert again.json()["Total Training Time"] > 0
    assert again.json()["details"]["breakdown"] == breakdown  # kept with the cached profile


async def test_a_real_profile_past_its_limit_is_stopped_and_the_service_stays_up():
    settings = ServiceSettings(allowed_factories=frozenset({SLOW["architecture"]}), profile_timeout=0.5)
    async with client_for(create_app(settings)) as client:  # a profile starts in 0.1 s: the model must be slow
        stopped = await client.post(RESOURCE, json=TINY_BODY | {"architecture": SLOW["architecture"]})
        health = await client.get("/healthz")
        queue = (await client.get("/api/v1/environment")).json()["queue"]

    assert stopped.status_code == 504
    assert "ran past its limit of 0.5 s and was stopped" in stopped.json()["detail"]
    assert health.status_code == 200
    assert all(not lane["measuring"] and lane["waiting"] == 0 for lane in queue.values())


async def test_a_request_asks_for_peak_gpu_memory_predicted_on_a_card():
    """On this CPU: the figure a real profile predicts, answered beside the documented keys; an unknown card is
    refused with the cards there are."""
    settings = ServiceSettings(allowed_factories=frozenset({TINY}))
    app = create_app(settings, measure=engine_measure(ProfileCache().path, timeout=300))
    async with client_for(app) as client:
        refused = await client.post(RESOURCE, json=TINY_BODY | {"predict_gpu": "GTX 9000"})
        response = await client.post(RESOURCE, json=TINY_BODY | {"predict_gpu": "a100 80gb"})

    assert refused.status_code == 422 and "A100-80GB, H100" in refused.text
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["Peak GPU Memory"] is None and body["Peak RAM Memory"] > 0
    predicted = body["Predicted Peak GPU Memory"]
    assert predicted["gpu"] == "A100-80GB"
    assert 2 * 8_519_680 < predicted["allocated"] <= predicted["reserved"] < predicted["device"]
    assert body["units"]["Predicted Peak GPU Memory"] == "bytes"
