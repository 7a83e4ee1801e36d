"""Invalid requests are 422s naming the field, the value and what is allowed; no module is imported by name."""

from __future__ import annotations

import sys

import pytest

from pytest_mlestimate.service.app import create_app
from pytest_mlestimate.service.settings import ServiceSettings
from tests.service.fakes import EXAMPLE, TINY, client_for

pytestmark = pytest.mark.anyio


async def problems_of(client, body, endpoint="estimate-resource"):
    response = await client.post(f"/api/v1/{endpoint}", json=body)
    assert response.status_code == 422, response.text
    assert "Traceback" not in response.text
    return response.json()["detail"]


@pytest.mark.parametrize(
    ("change", "loc", "words"),
    [
        ({"batch_size": -1}, ["body", "batch_size"], ["batch_size", "must be at least 1", "-1"]),
        ({"batch_size": 5000}, ["body", "batch_size"], ["must be at most 4096"]),
        ({"image_size": [800, 9000]}, ["body", "image_size", 1], ["8192", "9000"]),
        ({"dataset_size": 0}, ["body", "dataset_size"], ["must be at least 1"]),
        ({"task_type": "segmentation"}, ["body", "task_type"], ["'detection' or 'instance'", "segmentation"]),
        ({"application_type": "serving"}, ["body", "application_type"], ["'training' or 'inference'"]),
        ({"architecture": "fasterrcnn_resnet50"}, ["body", "architecture"], ["did you mean 'fasterrcnn_resnet50_fpn"]),
        ({"architecture": "maskrcnn_resnet50_fpn"}, ["body"], ["instance segmentation model", "task_type must be"]),
        ({"device": "tpu"}, ["body", "device"], ["allowed: auto, cpu, cuda, cuda:N"]),
        ({"batchsize": 8}, ["body", "batchsize"], ["unknown field", "allowed fields", "batch_size"]),
        ({"threading": "sometimes"}, ["body", "threading"], ["expected true or false"]),
    ],
)
async def test_each_invalid_field_is_named(client, change, loc, words):
    (problem,) = await problems_of(client, EXAMPLE | change)

    assert problem["loc"] == loc
    for word in words:
        assert word in problem["msg"]


async def test_a_missing_field_is_named(client):
    body = {k: v for k, v in EXAMPLE.items() if k != "image_size"}

    (problem,) = await problems_of(client, body)

    assert problem["loc"] == ["body", "image_size"]
    assert "required" in problem["msg"]


async def test_every_problem_is_listed(client):
    problems = await problems_of(client, EXAMPLE | {"batch_size": 0, "dataset_size": -5})

    assert {tuple(p["loc"]) for p in problems} == {("body", "batch_size"), ("body", "dataset_size")}


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b""])
async def test_a_body_that_is_not_a_scenario(client, content):
    response = await client.post(
        "/api/v1/estimate-resource", content=content, headers={"content-type": "application/json"}
    )

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body"]


@pytest.mark.parametrize("architecture", ["os:system", "tests.service.canary:factory", "pytest_mlestimate.tiny:tiny_x"])
async def test_a_module_not_on_the_allow_list_is_refused_and_not_imported(client, measure, architecture):
    (problem,) = await problems_of(client, EXAMPLE | {"architecture": architecture})

    assert problem["loc"] == ["body", "architecture"]
    assert f"'{architecture}' is not allowed" in problem["msg"]
    assert TINY in problem["msg"]  # the allowed list, allow-listed factories included
    assert measure.calls == []
    assert "tests.service.canary" not in sys.modules


async def test_an_allow_listed_factory_is_measured(client, measure):
    response = await client.post("/api/v1/estimate-resource", json=EXAMPLE | {"architecture": TINY})

    assert response.status_code == 200
    assert measure.calls[0].architecture == TINY


async def test_no_factory_is_allowed_by_default(measure):
    async with client_for(create_app(ServiceSettings(), measure=measure)) as client:
        (problem,) = await problems_of(client, EXAMPLE | {"architecture": TINY})

    assert "is not allowed here" in problem["msg"]


async def test_operator_limits_are_stated(measure):
    settings = ServiceSettings(max_batch_size=16, max_image_side=1024)
    async with client_for(create_app(settings, measure=measure)) as client:
        problems = await problems_of(client, EXAMPLE | {"batch_size": 32, "image_size": [2048, 800]})

    assert [p["loc"] for p in problems] == [["body", "batch_size"], ["body", "image_size", 0], ["body", "model_kwargs"]]
    assert "at most 16 (got 32)" in problems[0]["msg"]
    assert "up to 1024 (got 2048)" in problems[1]["msg"]
    assert "computes on 1344x544" in problems[2]["msg"]  # resized to max_size 1333, padded to a multiple of 32
    assert measure.calls == []


async def test_weights_files_only_from_the_operators_directory(tmp_path, measure):
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "model.pt").write_bytes(b"weights")
    (tmp_path / "secret.pt").write_bytes(b"not for requests")

    async with client_for(create_app(ServiceSettings(), measure=measure)) as client:
        (problem,) = await problems_of(client, EXAMPLE | {"weights_path": "model.pt"})
        assert "takes no weights files" in problem["msg"]

    async with client_for(create_app(ServiceSettings(weights_dir=tmp_path / "weights"), measure=measure)) as client:
        (problem,) = await problems_of(client, EXAMPLE | {"weights_path": "../secret.pt"})
        assert "outside this service's weights directory" in problem["msg"]
        (problem,) = await problems_of(client, EXAMPLE | {"weights_path": str(tmp_path / "secret.pt")})
        assert "outside" in problem["msg"]
        response = await client.post("/api/v1/estimate-resource", json=EXAMPLE | {"weights_path": "model.pt"})

    assert response.status_code == 200
    assert measure.calls[0].weights_path == str((tmp_path / "weights" / "model.pt").resolve())


async def test_a_pinned_device_is_used_for_auto_and_others_refused(two_gpus, measure):
    async with client_for(create_app(ServiceSettings(device="cuda:1"), measure=measure)) as client:
        (problem,) = await problems_of(client, EXAMPLE | {"device": "cuda:0"})
        response = await client.post("/api/v1/estimate-resource", json=EXAMPLE)

    assert problem["loc"] == ["body", "device"]
    assert "measures on 'cuda:1'" in problem["msg"]
    assert response.status_code == 200
    assert measure.calls[0].device == "cuda:1"


async def test_a_dataset_file_named_in_a_request_is_never_read(tmp_path, measure):
    """Not even to fill in the defaults a dataset gives: the server's files are not the request's to name."""
    secret = tmp_path / "instances.json"
    secret.write_text('{"images": [], "note": "not for requests"}')
    async with client_for(create_app(ServiceSettings(), measure=measure)) as client:
        for body in (EXAMPLE | {"dataset": str(secret)}, {k: v for k, v in EXAMPLE.items() if k != "dataset_size"}
                     | {"dataset": str(secret)}):  # fmt: skip
            (problem,) = await problems_of(client, body)
            assert "reads no dataset file a request names" in problem["msg"]
            assert "not for requests" not in problem["msg"] and "images" not in problem["msg"]
    assert measure.calls == []
