"""Each endpoint answers the original request with the documented keys at the top level."""

from __future__ import annotations

import pytest

from pytest_mlestimate.service.app import create_app
from pytest_mlestimate.service.settings import ServiceSettings
from tests.documented_keys import RESOURCE_KEYS
from tests.service.fakes import EXAMPLE, client_for, fake_profile

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("endpoint", "keys"),
    [
        ("estimate-resource", set(RESOURCE_KEYS)),
        ("estimate-training-time", {"Total Training Time"}),
        ("estimate-inference-time", {"1-Image Inference Time", "Batch of 8 Inference Time"}),
    ],
)
async def test_each_endpoint_answers_the_original_request(client, endpoint, keys):
    response = await client.post(f"/api/v1/{endpoint}", json=EXAMPLE)

    assert response.status_code == 200, response.text
    body = response.json()
    sections = {"energy", "cost"} if endpoint == "estimate-training-time" else set()
    assert set(body) == keys | sections | {"units", "details", "warnings"}
    figures = {
        key for section in sections for key, value in body[section].items() if not isinstance(value, list | dict)
    }
    assert set(body["units"]) == keys | (figures - {"Currency"})
    assert body["details"]["fits"] is True


async def test_figures_are_the_engines(client):
    resource = (await client.post("/api/v1/estimate-resource", json=EXAMPLE)).json()
    training = (await client.post("/api/v1/estimate-training-time", json=EXAMPLE)).json()

    assert resource["Peak RAM Memory"] == 2_000_000_000
    assert resource["Batch Time"] == {"forward_pass": pytest.approx(0.425), "backward_pass": pytest.approx(0.525)}
    # 10000 images / batch 8 = 1250 steps: the two warm-up steps as timed, the rest at the mean step.
    assert training["Total Training Time"] == pytest.approx(3.5 + 1.0 * 1248)


async def test_the_services_price_prices_requests_that_set_none(measure):
    app = create_app(ServiceSettings(price_per_device_hour="3600 USD"), measure=measure)
    async with client_for(app) as client:
        default = (await client.post("/api/v1/estimate-training-time", json=EXAMPLE)).json()
        own = (await client.post("/api/v1/estimate-training-time", json=EXAMPLE | {"price": {"kwh": "1 EUR"}})).json()

    assert default["cost"]["Cost per Training"] == pytest.approx(default["Total Training Time"])  # 1 USD a second
    assert default["cost"]["Currency"] == "USD"
    assert own["cost"]["Currency"] == "EUR"
    assert own["cost"]["Cost per Training"] is None  # the fake CPU profile has no energy figure
    assert own["energy"]["Reasons"]["Energy per Training"]
    assert len(measure.calls) == 1  # a price changes no profile


async def test_a_model_that_does_not_fit_is_an_answer(client, measure):
    measure.profile = fake_profile(failure="does not fit: batch 8 needs more than 80 GB", training=None)

    response = await client.post("/api/v1/estimate-resource", json=EXAMPLE)

    assert response.status_code == 200
    body = response.json()
    assert body["details"]["fits"] is False
    assert "does not fit" in body["details"]["failure"]
    assert body["Peak RAM Memory"] is None


async def test_training_time_of_an_inference_scenario_is_refused(client):
    response = await client.post("/api/v1/estimate-training-time", json=EXAMPLE | {"application_type": "inference"})

    assert response.status_code == 422
    (problem,) = response.json()["detail"]
    assert problem["loc"] == ["body", "application_type"]
    assert "allowed: training" in problem["msg"]


async def test_health_environment_and_docs(client):
    assert (await client.get("/healthz")).json() == {"status": "ok"}

    environment = (await client.get("/api/v1/environment")).json()
    assert environment["auto_device"] in ("cpu", "cuda:0")
    assert environment["architectures"]["maskrcnn_resnet50_fpn"] == "instance"
    assert environment["architectures"]["pytest_mlestimate.tiny:tiny_detector"] == "custom"
    assert environment["limits"]["batch_size"] == 4096
    assert environment["versions"]["torch"]

    assert (await client.get("/docs")).status_code == 200
    schema = (await client.get("/openapi.json")).json()
    body = schema["paths"]["/api/v1/estimate-resource"]["post"]["requestBody"]
    assert body["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Scenario"}
    assert "batch_size" in schema["components"]["schemas"]["Scenario"]["properties"]
    assert "Optimizer" in schema["components"]["schemas"]


async def test_a_repeated_request_is_answered_alike_from_memory(client, measure):
    first = await client.post("/api/v1/estimate-resource", json=EXAMPLE)
    second = await client.post("/api/v1/estimate-resource", json=EXAMPLE)
    third = await client.post("/api/v1/estimate-resource", json=EXAMPLE)

    assert len(measure.calls) == 1
    assert first.json()["details"]["cache"] == {"hit": False}
    assert second.json()["details"]["cache"]["hit"] is True
    assert third.content == second.content
    assert third.headers["content-type"] == "application/json"
