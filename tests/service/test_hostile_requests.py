"""Requests made to hurt the service: device names that would each get a thread, bodies of megabytes, model_kwargs
past the operator's limits, a NUL byte in a path, bodies a cross-site form can send."""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator

import pytest

from pytest_mlestimate.core import devices
from pytest_mlestimate.service.app import create_app
from pytest_mlestimate.service.settings import ServiceSettings
from pytest_mlestimate.service.state import auto_device
from pytest_mlestimate.service.validation import _weights_file
from tests.service.fakes import EXAMPLE, TINY, client_for

pytestmark = pytest.mark.anyio

RESOURCE = "/api/v1/estimate-resource"
MB = 2**20


async def test_absent_devices_get_no_lane_no_thread_and_a_422(app, client, measure):
    before = threading.active_count()
    names = [f"cuda:{n}" for n in range(100, 1100)] + [f"cuda:0{n}" for n in range(100, 1100)]

    statuses = set()
    for name in names:
        response = await client.post(RESOURCE, json=EXAMPLE | {"device": name})
        statuses.add(response.status_code)
    last = response.json()["detail"]

    assert statuses == {422}
    assert threading.active_count() == before
    assert app.state.service.queue.snapshot() == {}
    assert measure.calls == []
    assert last[0]["loc"] == ["body", "device"]
    assert "'cuda:1099'" in last[0]["msg"]  # cuda:01099, one spelling per device
    assert "allowed on this service: auto, cpu" in last[0]["msg"]


async def test_every_name_of_one_device_shares_one_lane_and_one_profile(two_gpus, app, client, measure):
    names = ["cuda", "cuda:0", "cuda:00", "cuda:000"]

    responses = [await client.post(RESOURCE, json=EXAMPLE | {"device": name}) for name in names]
    cpu = [await client.post(RESOURCE, json=EXAMPLE | {"device": name, "batch_size": 2}) for name in ("cpu", "cpu")]

    assert [r.status_code for r in responses + cpu] == [200] * 6
    assert [c.device for c in measure.calls] == ["cuda:0", "cpu"]
    assert set(app.state.service.queue.snapshot()) == {devices.physical_id("cuda:0"), "cpu"}


async def test_auto_means_what_the_engine_says(two_gpus):
    assert auto_device(ServiceSettings()) == devices.resolve_device("auto") == "cuda:0"
    assert auto_device(ServiceSettings(device="cuda")) == "cuda:0"
    assert auto_device(ServiceSettings(device="cuda:7")) == "cuda:7"  # absent: kept, and every request refused


async def test_a_pinned_service_refuses_an_absent_pinned_device_by_name(measure):
    async with client_for(create_app(ServiceSettings(device="cuda:7"), measure=measure)) as client:
        response = await client.post(RESOURCE, json=EXAMPLE)

    (problem,) = response.json()["detail"]
    assert response.status_code == 422
    assert problem["loc"] == ["body", "device"]
    assert "cuda:7" in problem["msg"] and "allowed on this service: auto, cuda:7" in problem["msg"]
    assert measure.calls == []


async def test_a_40_mb_body_is_refused_with_a_small_413(client, measure):
    response = await client.post(RESOURCE, content=b" " * (40 * MB), headers={"content-type": "application/json"})

    assert response.status_code == 413
    assert len(response.content) < 300
    assert "up to 65536 bytes" in response.json()["detail"]
    assert measure.calls == []


async def test_a_chunked_body_is_cut_off_at_the_limit(client, measure):
    sent = []

    async def forty_megabytes() -> AsyncIterator[bytes]:
        for _ in range(40):
            sent.append(MB)
            yield b" " * MB

    response = await client.post(RESOURCE, content=forty_megabytes(), headers={"content-type": "application/json"})

    assert response.status_code == 413
    assert response.request.headers["transfer-encoding"] == "chunked"  # no Content-Length to go by
    assert len(sent) <= 2  # read no further than past the limit
    assert measure.calls == []


@pytest.mark.parametrize(
    "change",
    [
        {"architecture": "x" * 60_000},
        {"x" * 60_000: 1},
        {"device": "cuda:" + "9" * 60_000},
        {"architecture": TINY, "model_kwargs": {"k" * 60_000: 10**9}},
        {"model_kwargs": {"min_size": "8" * 60_000}},
        {"weights_path": "w" * 4096},
        {"task_type": "t" * 60_000},
    ],
    ids=["architecture", "field-name", "device", "kwarg-name", "kwarg-value", "weights-path", "task-type"],
)
async def test_a_body_under_the_limit_gets_a_short_422(client, change):
    body = EXAMPLE | change

    response = await client.post(RESOURCE, json=body)

    assert response.status_code == 422
    assert len(response.content) < 4000, response.text[:500]
    assert all(len(problem["msg"]) <= 1003 for problem in response.json()["detail"])


async def test_a_query_parameter_is_not_echoed_in_full(client):
    response = await client.post(RESOURCE + "?async=" + "y" * 8000, json=EXAMPLE)

    assert response.status_code == 422
    assert len(response.content) < 1000
    assert response.json()["detail"][0]["loc"] == ["query", "async"]


@pytest.mark.parametrize("body_limit", [1000])
async def test_the_body_limit_is_the_operators(measure, body_limit):
    async with client_for(create_app(ServiceSettings(max_body_size=body_limit), measure=measure)) as client:
        small = await client.post(RESOURCE, json=EXAMPLE)
        large = await client.post(RESOURCE, json=EXAMPLE | {"architecture": "x" * body_limit})

    assert small.status_code == 200
    assert large.status_code == 413


@pytest.fixture
def limited(measure):
    settings = ServiceSettings(max_image_side=128, allowed_factories=frozenset({TINY}))
    return create_app(settings, measure=measure)


async def test_model_kwargs_cannot_make_the_image_larger_than_the_limit(limited, measure):
    body = EXAMPLE | {"image_size": [64, 64], "model_kwargs": {"min_size": 8192, "max_size": 8192}}
    async with client_for(limited) as client:
        (problem,) = (await client.post(RESOURCE, json=body)).json()["detail"]

    assert problem["loc"] == ["body", "model_kwargs"]
    assert "computes on 8192x8192" in problem["msg"]
    assert "limit of 128 per side" in problem["msg"]
    assert measure.calls == []


async def test_torchvisions_own_resize_is_held_to_the_limit_and_the_fix_is_named(limited, measure):
    plain = EXAMPLE | {"image_size": [64, 64]}
    async with client_for(limited) as client:
        refused = await client.post(RESOURCE, json=plain)
        (problem,) = refused.json()["detail"]
        advised = await client.post(RESOURCE, json=plain | {"model_kwargs": {"min_size": 128, "max_size": 128}})
        ssd = await client.post(RESOURCE, json=plain | {"architecture": "ssdlite320_mobilenet_v3_large"})
        ssd_kwargs = await client.post(
            RESOURCE, json=plain | {"architecture": "ssd300_vgg16", "model_kwargs": {"min_size": 64}}
        )

    assert refused.status_code == 422
    assert "computes on 800x800" in problem["msg"]
    assert (
        'pass smaller min_size and max_size in model_kwargs, e.g. {"min_size": 128, "max_size": 128}' in problem["msg"]
    )
    assert advised.status_code == 200
    assert measure.calls[0].model_kwargs == {"min_size": 128, "max_size": 128}
    assert "computes on 320x320" in ssd.json()["detail"][0]["msg"]
    assert ssd_kwargs.json()["detail"][0]["loc"] == ["body", "model_kwargs", "min_size"]


async def test_a_custom_factorys_numbers_have_a_default_limit(limited, measure):
    body = EXAMPLE | {"architecture": TINY, "image_size": [64, 64]}
    async with client_for(limited) as client:
        wide = await client.post(RESOURCE, json=body | {"model_kwargs": {"channels": 100000}})
        sized = await client.post(RESOURCE, json=body | {"model_kwargs": {"input_size": 4096}})
        fine = await client.post(RESOURCE, json=body | {"model_kwargs": {"channels": 32, "score_thresh": 0.1}})

    (problem,) = wide.json()["detail"]
    assert problem["loc"] == ["body", "model_kwargs", "channels"]
    assert "model_kwargs.channels: 100000 is over this service's limit of 4096" in problem["msg"]
    assert "limit of 128" in sized.json()["detail"][0]["msg"]  # a *_size keyword is an image size
    assert fine.status_code == 200
    assert len(measure.calls) == 1


async def test_the_operator_names_limits_per_keyword(measure):
    settings = ServiceSettings(
        allowed_factories=frozenset({TINY}), max_model_kwargs={"channels": 32, "*": 100, "box_detections_per_img": 50}
    )
    async with client_for(create_app(settings, measure=measure)) as client:
        body = EXAMPLE | {"architecture": TINY}
        over = await client.post(RESOURCE, json=body | {"model_kwargs": {"channels": 64}})
        other = await client.post(RESOURCE, json=body | {"model_kwargs": {"detections_per_img": 101}})
        torchvision = await client.post(RESOURCE, json=EXAMPLE | {"model_kwargs": {"box_detections_per_img": 51}})
        classes = await client.post(RESOURCE, json=EXAMPLE | {"model_kwargs": {"num_classes": 10**9}})
        environment = (await client.get("/api/v1/environment")).json()

    assert "64 is over this service's limit of 32" in over.json()["detail"][0]["msg"]
    assert "101 is over this service's limit of 100" in other.json()["detail"][0]["msg"]
    assert "51 is over this service's limit of 50" in torchvision.json()["detail"][0]["msg"]
    assert "limit of 100000" in classes.json()["detail"][0]["msg"]
    assert environment["limits"]["model_kwargs"] == {"*": 100, "channels": 32, "box_detections_per_img": 50}
    assert measure.calls == []


async def test_a_nul_byte_in_weights_path_is_a_422(tmp_path, measure):
    (tmp_path / "model.pt").write_bytes(b"weights")
    settings = ServiceSettings(weights_dir=tmp_path)
    async with client_for(create_app(settings, measure=measure)) as client:
        response = await client.post(RESOURCE, json=EXAMPLE | {"weights_path": "model.pt\x00.txt"})

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "weights_path"]
    # The service's own check, whatever the Scenario model lets through:
    resolved, (problem,) = _weights_file("model.pt\x00.txt", settings)
    assert resolved is None
    assert problem["loc"] == ["body", "weights_path"]
    assert "NUL byte" in problem["msg"]


@pytest.mark.parametrize(
    "headers",
    [
        {"content-type": "text/plain"},
        {"content-type": "application/x-www-form-urlencoded"},
        {"content-type": "multipart/form-data; boundary=x"},
        {},
    ],
)
async def test_only_json_bodies_are_read(client, measure, headers):
    import json

    response = await client.post(RESOURCE, content=json.dumps(EXAMPLE).encode(), headers=headers)

    assert response.status_code == 415
    assert "Content-Type: application/json" in response.json()["detail"]
    assert measure.calls == []


async def test_json_with_a_charset_is_json(client):
    import json

    headers = {"content-type": "application/json; charset=utf-8"}
    response = await client.post(RESOURCE, content=json.dumps(EXAMPLE).encode(), headers=headers)

    assert response.status_code == 200


NON_FINITE = [
    ('"optimizer": {"lr": Infinity}', ["optimizer", "lr"]),
    ('"optimizer": {"lr": 1e999}', ["optimizer", "lr"]),
    ('"precision": NaN', ["precision"]),
]


@pytest.mark.parametrize(("member", "loc"), NON_FINITE)
async def test_a_non_finite_number_is_a_422_naming_its_field(client, measure, member, loc):
    """It used to pass validation and crash the profile: a 500."""
    body = json.dumps(EXAMPLE)[:-1] + ", " + member + "}"
    response = await client.post(RESOURCE, content=body, headers={"content-type": "application/json"})

    assert response.status_code == 422
    (problem,) = response.json()["detail"]
    assert problem["loc"] == ["body", *loc]
    assert "not a finite number" in problem["msg"]
    assert measure.calls == []


async def test_a_sub_configurations_numbers_are_held_to_the_limits_too(measure):
    settings = ServiceSettings(allowed_factories=frozenset({TINY}), max_model_kwargs={"backbone_config.depth": 8})
    body = EXAMPLE | {"architecture": TINY, "image_size": [64, 64]}
    async with client_for(create_app(settings, measure=measure)) as client:
        wide = await client.post(RESOURCE, json=body | {"model_kwargs": {"backbone_config": {"embed_dim": 10**6}}})
        deep = await client.post(RESOURCE, json=body | {"model_kwargs": {"backbone_config": {"depth": [2, 9]}}})

    (problem,) = wide.json()["detail"]
    assert problem["loc"] == ["body", "model_kwargs", "backbone_config", "embed_dim"]
    assert "model_kwargs.backbone_config.embed_dim: 1000000 is over this service's limit of 4096" in problem["msg"]
    assert "9 is over this service's limit of 8" in deep.json()["detail"][0]["msg"]
    assert measure.calls == []
