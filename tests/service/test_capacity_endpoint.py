"""``/api/v1/estimate-capacity``: real profiles of the tiny model, each through the device's queue."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from pytest_mlestimate.scenarios.scenario import Scenario
from pytest_mlestimate.service.app import create_app
from pytest_mlestimate.service.profile_queue import Measured
from pytest_mlestimate.service.settings import ServiceSettings
from pytest_mlestimate.service.state import engine_measure
from pytest_mlestimate.stores.profile_cache import ProfileCache
from tests.service.fakes import TINY, FakeMeasure, client_for

pytestmark = pytest.mark.anyio

CAPACITY = "/api/v1/estimate-capacity"
SCENARIO = {
    "task_type": "detection",
    "architecture": TINY,
    "dataset_size": 64,
    "batch_size": 2,
    "image_size": [64, 64],
    "device": "cpu",
    "warmup_iterations": 1,
    "measure_iterations": 2,
}


def settings(**changes: Any) -> ServiceSettings:
    return ServiceSettings(allowed_factories=frozenset({TINY}), **changes)


async def test_the_largest_batch_is_found_with_real_profiles_each_queued_once() -> None:
    real = engine_measure(ProfileCache().path, timeout=300)
    measured: list[int] = []

    def counting(scenario: Scenario) -> Measured:
        measured.append(scenario.batch_size)
        return real(scenario)

    body = {"scenario": SCENARIO, "capacity": {"limit": "64 GiB", "predict": [6]}}
    async with client_for(create_app(settings(max_batch_size=8), measure=counting)) as client:
        response = await client.post(CAPACITY, json=body)
        assert response.status_code == 200, response.text
        answer = response.json()
        again = await client.post(CAPACITY, json=body)

    # 64 GiB holds any batch this service accepts: the search ends at its limit of 8, confirmed by a profile
    assert answer["Max Batch Size"] == 8
    assert answer["search"]["confirmed"] is True
    assert sorted(measured) == sorted(set(measured)) == [2, 4, 8]
    points = {p["batch_size"]: p for p in answer["fit"]["points"]}
    assert points[8]["fits"] and 0 < points[8]["Peak RAM Memory"] < 64 * 2**30
    six = answer["predictions"]["6"]["Peak RAM Memory"]
    assert six["low"] <= six["value"] <= six["high"] and six["basis"] == "interpolated"
    assert all(card["Max Batch Size"] is None and "ran on cpu" in card["reason"] for card in answer["cards"])
    # the second request measured nothing: every profile came from the service's store
    assert again.status_code == 200 and len(measured) == len(set(measured))
    assert again.json()["search"]["profiles"] == 0


async def test_an_asynchronous_capacity_request_is_a_job_to_poll() -> None:
    fake = FakeMeasure()
    async with client_for(create_app(settings(), measure=fake)) as client:
        accepted = await client.post(CAPACITY, params={"async": "true"}, json={"scenario": SCENARIO})
        assert accepted.status_code == 202, accepted.text
        url = accepted.headers["Location"]
        for _ in range(200):
            job = (await client.get(url)).json()
            if job["status"] in ("done", "failed"):
                break
            await asyncio.sleep(0.05)
    assert job["status"] == "done", job
    # the fake profile's figures do not grow: the search ends at the largest batch the service accepts
    assert job["result"]["Max Batch Size"] == settings().max_batch_size
    assert {s.batch_size for s in fake.calls} >= {2, 4, 8}


@pytest.mark.parametrize(
    ("body", "loc", "words"),
    [
        ({"scenario": SCENARIO, "capacity": {"limit": "16 ms"}}, ["body", "capacity", "limit"], "unit of seconds"),
        ({"scenario": SCENARIO, "capacity": {"batch_sizes": [0, 2]}}, ["body", "capacity", "batch_sizes"], "0 is not"),
        ({"scenario": SCENARIO, "capacity": {"batch_sizes": [-4, 2]}}, ["body", "capacity", "batch_sizes"], "-4"),
        ({"scenario": SCENARIO, "capacity": {"predict": [64]}}, ["body", "capacity", "predict"], "up to 32"),
        ({"scenario": SCENARIO, "capacity": {"batch_sizes": [1, 40]}}, ["body", "capacity", "batch_sizes"], "up to 32"),
        ({"scenario": SCENARIO, "capacity": {"headroom": "2 GiB"}}, ["body", "capacity", "headroom"], "percent"),
        ({"scenario": {**SCENARIO, "batch_size": 0}}, ["body", "scenario", "batch_size"], "at least 1"),
        ({"scenario": SCENARIO, "limit": "1 GiB"}, ["body", "limit"], "allowed: scenario, capacity"),
        ({"capacity": {}}, ["body", "scenario"], "required"),
    ],
)
async def test_bad_capacity_requests_are_a_422_naming_the_field(
    body: dict[str, Any], loc: list[str], words: str
) -> None:
    fake = FakeMeasure()
    async with client_for(create_app(settings(max_batch_size=32), measure=fake)) as client:
        response = await client.post(CAPACITY, json=body)
    assert response.status_code == 422, response.text
    problem = response.json()["detail"][0]
    assert problem["loc"] == loc
    assert words in problem["msg"]
    assert fake.calls == []  # nothing was profiled
