"""With an API key set, every /api/v1 route requires it; health and docs stay open."""

from __future__ import annotations

import pytest

from pytest_mlestimate.service.app import create_app
from pytest_mlestimate.service.settings import ServiceSettings
from tests.service.fakes import EXAMPLE, client_for

pytestmark = pytest.mark.anyio

KEY = "s3cret-key"


@pytest.fixture
async def guarded(measure):
    async with client_for(create_app(ServiceSettings(api_key=KEY), measure=measure)) as client:
        yield client


ENDPOINTS = ["estimate-resource", "estimate-training-time", "estimate-inference-time", "estimate-resource?async=true"]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("headers", [{}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"}])
async def test_estimates_need_the_key(guarded, measure, endpoint, headers):
    response = await guarded.post(f"/api/v1/{endpoint}", json=EXAMPLE, headers=headers)

    assert response.status_code == 401
    assert "X-API-Key" in response.json()["detail"]
    assert measure.calls == []


@pytest.mark.parametrize("headers", [{"X-API-Key": KEY}, {"Authorization": f"Bearer {KEY}"}])
async def test_the_key_opens_them(guarded, headers):
    response = await guarded.post("/api/v1/estimate-resource", json=EXAMPLE, headers=headers)

    assert response.status_code == 200


async def test_a_remembered_answer_still_needs_the_key(guarded):
    for _ in range(2):
        keyed = await guarded.post("/api/v1/estimate-resource", json=EXAMPLE, headers={"X-API-Key": KEY})
        assert keyed.status_code == 200

    assert (await guarded.post("/api/v1/estimate-resource", json=EXAMPLE)).status_code == 401


async def test_environment_and_jobs_need_it_too_but_health_and_docs_do_not(guarded):
    assert (await guarded.get("/api/v1/environment")).status_code == 401
    assert (await guarded.get("/api/v1/jobs/anything")).status_code == 401
    assert (await guarded.get("/healthz")).status_code == 200
    assert (await guarded.get("/docs")).status_code == 200


async def test_without_a_key_the_service_is_open(client):
    assert (await client.post("/api/v1/estimate-resource", json=EXAMPLE)).status_code == 200
