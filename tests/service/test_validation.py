"""Invalid requests are 422s naming the field, the value and what is allowed; no module is imported by name."""

from __future__ import annotations

import json
import sys

import pytest

from pytest_mlestimate.scenarios.coco import summarise_file
from pytest_mlestimate.service.app import create_app
from pytest_mlestimate.service.settings import ServiceSettings
from tests.service.fakes import EXAMPLE, TINY, client_for

pytestmark = pytest.mark.anyio

COCO = {
    "images": [{"id": 1, "width": 64, "height": 48}, {"id": 2, "width": 64, "height": 48}],
    "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 20, 10]}],
    "categories": [{"id": 1, "name": "thing"}],
}


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
        ({"task_type": "segmentation"}, ["body", "task_type"], ["'semantic-segmentation'", "(got 'segmentation')"]),
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


async def test_a_library_model_is_measured_only_when_the_operator_allows_it_by_name(measure):
    """A library's default configuration can be billions of parameters: a request names one, an operator allows it."""
    gpt2 = {"task_type": "causal-lm", "architecture": "hf:gpt2", "dataset_size": 1000, "batch_size": 2}
    async with client_for(create_app(ServiceSettings(), measure=measure)) as client:
        (problem,) = await problems_of(client, gpt2)
    assert "model 'hf:gpt2' is not allowed here" in problem["msg"] and "--allow-factory" in problem["msg"]
    allowing = ServiceSettings(allowed_factories=frozenset({"hf:gpt2"}))
    async with client_for(create_app(allowing, measure=measure)) as client:
        response = await client.post("/api/v1/estimate-resource", json=gpt2)
    assert response.status_code == 200, response.text
    assert measure.calls[0].architecture == "hf:gpt2" and measure.calls[0].image_size == (1, 512)


async def test_a_clip_and_a_sequence_are_held_to_the_operators_limits(measure):
    video = {"task_type": "video-classification", "architecture": "r3d_18", "dataset_size": 100, "batch_size": 2,
             "image_size": [64, 64], "clip_length": 100}  # fmt: skip
    text = {"task_type": "causal-lm", "architecture": "hf:gpt2", "dataset_size": 100, "batch_size": 2,
            "sequence_length": 4096}  # fmt: skip
    settings = ServiceSettings(allowed_factories=frozenset({"hf:gpt2"}), max_image_side=2048)
    async with client_for(create_app(settings, measure=measure)) as client:
        (clip,) = await problems_of(client, video)
        (sequence,) = await problems_of(client, text)
    assert clip["loc"] == ["body", "clip_length"] and "at most 64 frames (got 100)" in clip["msg"]
    assert "image sides up to 2048 (got 4096)" in sequence["msg"]
    assert measure.calls == []


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


async def test_a_dataset_file_only_from_the_operators_data_directory(tmp_path, measure):
    """Not even read to fill in the defaults a dataset gives: the server's other files are not the request's to
    name."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "instances.json").write_text(json.dumps(COCO))
    secret = tmp_path / "instances.json"
    secret.write_text('{"images": [], "note": "not for requests"}')
    bare = {k: v for k, v in EXAMPLE.items() if k not in ("dataset_size", "image_size")}

    async with client_for(create_app(ServiceSettings(), measure=measure)) as client:
        for body in (EXAMPLE | {"dataset": str(secret)}, bare | {"dataset": "instances.json"}):
            (problem,) = await problems_of(client, body)
            assert "takes no dataset files" in problem["msg"] and "summary" in problem["msg"]
            assert "not for requests" not in problem["msg"]

    async with client_for(create_app(ServiceSettings(data_dir=tmp_path / "data"), measure=measure)) as client:
        for name in ("../instances.json", str(secret)):
            (problem,) = await problems_of(client, bare | {"dataset": name})
            assert problem["loc"] == ["body"] and "outside this service's data directory" in problem["msg"]
            assert "not for requests" not in problem["msg"]
        response = await client.post("/api/v1/estimate-resource", json=bare | {"dataset": "instances.json"})

    assert response.status_code == 200, response.text
    (scenario,) = measure.calls
    assert scenario.dataset == str((tmp_path / "data" / "instances.json").resolve())
    assert scenario.dataset_size == 2 and scenario.image_size == (48, 64)


async def test_a_request_may_carry_the_datasets_summary(tmp_path, measure):
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(COCO))
    summary = json.loads(summarise_file(path).model_dump_json())
    bare = {k: v for k, v in EXAMPLE.items() if k != "dataset_size"}
    async with client_for(create_app(ServiceSettings(), measure=measure)) as client:
        response = await client.post("/api/v1/estimate-resource", json=bare | {"dataset": summary})
        (problem,) = await problems_of(client, bare | {"dataset": {**summary, "images": "many"}})

    assert response.status_code == 200, response.text
    assert measure.calls[0].dataset == summarise_file(path) and measure.calls[0].dataset_size == 2
    assert "not a summary mlestimate dataset-stats wrote" in problem["msg"] and "images" in problem["msg"]


async def test_a_carried_summary_cannot_ask_for_more_than_the_limits(tmp_path, measure):
    """A summary's rows are what the profile allocates: an image of a million pixels a side, or a million
    instances, would take the server's memory."""
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(COCO))
    summary = json.loads(summarise_file(path).model_dump_json())
    row = summary["per_image"][0]
    async with client_for(create_app(ServiceSettings(max_image_side=512), measure=measure)) as client:
        cases = {
            "image 1 is 1000000x48 px; image sides from 1 to 8192": [[row[0], 10**6, row[2], row[3]]],
            "image 1 has 1000000 instances; from 0 to 10000": [[row[0], row[1], row[2], 10**6]],
            "no image has an instance to train on": [[row[0], row[1], row[2], 0]],
            "accepts image sides up to 512; the dataset's largest image has a side of 4000": [[1, 4000, 48, 1]],
        }
        for words, rows in cases.items():
            problems = await problems_of(client, EXAMPLE | {"dataset": {**summary, "per_image": rows}})
            assert any(words in p["msg"] for p in problems), problems
    assert measure.calls == []
