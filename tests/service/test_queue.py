"""One profile per configuration, one profile at a time per device, a bounded queue; cached answers never wait."""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest

from pytest_mlestimate.core.errors import (
    DeviceUnavailableError,
    ModelBuildError,
    ModelRunError,
    ProfileCrashError,
    ProfileTimeoutError,
)
from pytest_mlestimate.service.app import create_app
from pytest_mlestimate.service.settings import ServiceSettings
from tests.service.fakes import EXAMPLE, FakeMeasure, client_for

pytestmark = pytest.mark.anyio

RESOURCE = "/api/v1/estimate-resource"


async def until(condition, attempts=2000):
    """Yield to the server until ``condition()`` holds (a guard against hanging, not a timing check)."""
    for _ in range(attempts):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition never held")


async def test_twenty_identical_requests_share_one_profile(client, measure, app):
    measure.gate.clear()
    requests = [asyncio.create_task(client.post(RESOURCE, json=EXAMPLE)) for _ in range(20)]
    await until(lambda: len(measure.calls) == 1)
    await asyncio.sleep(0.05)  # let every request reach the queue while the profile is held
    measure.gate.set()

    responses = await asyncio.gather(*requests)

    assert [r.status_code for r in responses] == [200] * 20
    assert len(measure.calls) == 1
    assert app.state.service.queue.measured == 1


async def test_requests_that_differ_only_in_dataset_size_share_a_profile(client, measure):
    bodies = [EXAMPLE | {"dataset_size": n, "epochs": e} for n, e in [(100, 1), (5000, 3), (10**6, 100)]]

    responses = await asyncio.gather(*(client.post("/api/v1/estimate-training-time", json=b) for b in bodies))

    assert len(measure.calls) == 1
    totals = [r.json()["Total Training Time"] for r in responses]
    assert totals[0] < totals[1] < totals[2]


async def test_different_configurations_never_overlap_on_one_device(app, client, measure):
    measure.delay = 0.05
    here = app.state.service.auto_device  # what 'auto' names on this machine: the same device, the same lane
    bodies = [EXAMPLE | {"batch_size": b, "device": device} for b, device in enumerate(["auto"] * 3 + [here] * 2, 1)]
    seen_at_once = []
    measure.before = lambda _scenario: seen_at_once.append(measure.active["auto"] + measure.active[here])

    responses = await asyncio.gather(*(client.post(RESOURCE, json=b) for b in bodies))

    assert [r.status_code for r in responses] == [200] * 5
    assert seen_at_once == [1] * 5


async def test_different_devices_measure_side_by_side(two_gpus, client, measure):
    meeting = threading.Barrier(2, timeout=20)  # each profile waits for the other: only possible side by side
    measure.before = lambda _scenario: meeting.wait()

    responses = await asyncio.gather(
        client.post(RESOURCE, json=EXAMPLE | {"device": "cpu"}),
        client.post(RESOURCE, json=EXAMPLE | {"device": "cuda:0"}),
    )

    assert [r.status_code for r in responses] == [200, 200]


async def test_cached_answers_do_not_wait_for_a_running_profile(client, measure):
    assert (await client.post(RESOURCE, json=EXAMPLE)).status_code == 200
    measure.gate.clear()
    slow = asyncio.create_task(client.post(RESOURCE, json=EXAMPLE | {"batch_size": 4}))
    await until(lambda: len(measure.calls) == 2)

    cached = await client.post("/api/v1/estimate-inference-time", json=EXAMPLE | {"dataset_size": 7})

    assert cached.status_code == 200
    assert cached.json()["details"]["cache"]["hit"] is True
    assert not slow.done()
    measure.gate.set()
    assert (await slow).status_code == 200


async def test_a_full_queue_answers_503_with_retry_after(measure):
    app = create_app(ServiceSettings(queue_size=1), measure=measure)
    queue = app.state.service.queue
    measure.gate.clear()
    async with client_for(app) as client:
        running = asyncio.create_task(client.post(RESOURCE, json=EXAMPLE | {"batch_size": 1}))
        await until(lambda: len(measure.calls) == 1)
        waiting = asyncio.create_task(client.post(RESOURCE, json=EXAMPLE | {"batch_size": 2}))
        await until(lambda: queue.waiting() == 1)

        refused = await client.post(RESOURCE, json=EXAMPLE | {"batch_size": 3})
        joined = asyncio.create_task(client.post(RESOURCE, json=EXAMPLE | {"batch_size": 2, "dataset_size": 5}))
        await asyncio.sleep(0.05)
        measure.gate.set()
        answers = await asyncio.gather(running, waiting, joined)

    assert refused.status_code == 503
    assert int(refused.headers["Retry-After"]) >= 1
    assert "already wait" in refused.json()["detail"]
    assert [a.status_code for a in answers] == [200, 200, 200]  # joining a queued profile takes no place
    assert len(measure.calls) == 2


async def test_a_profile_past_its_limit_is_reported_and_the_service_stays_up(client, measure):
    measure.fail = ProfileTimeoutError("profiling fasterrcnn_resnet50_fpn (batch 8) ran past its limit of 60 s")

    stopped = await client.post(RESOURCE, json=EXAMPLE)
    measure.fail = None
    after = await client.post(RESOURCE, json=EXAMPLE | {"batch_size": 2})

    assert stopped.status_code == 504
    assert "ran past its limit" in stopped.json()["detail"]
    assert after.status_code == 200


async def test_a_failed_profile_is_not_remembered(client, measure):
    measure.fail = ProfileTimeoutError("stopped")
    assert (await client.post(RESOURCE, json=EXAMPLE)).status_code == 504
    measure.fail = None

    assert (await client.post(RESOURCE, json=EXAMPLE)).status_code == 200
    assert len(measure.calls) == 2


@pytest.mark.parametrize(
    ("error", "loc"),
    [
        (ModelBuildError("fasterrcnn_resnet50_fpn: model_kwargs rejected by the builder"), ["body"]),
        (ModelRunError("the model raised on a 8x8 input: too small for its strides"), ["body"]),
        (DeviceUnavailableError("device 'cuda' asked for, but no CUDA device is available here"), ["body", "device"]),
    ],
)
async def test_a_scenario_the_model_cannot_take_is_a_422(client, measure, error, loc):
    measure.fail = error

    response = await client.post(RESOURCE, json=EXAMPLE)

    assert response.status_code == 422
    (problem,) = response.json()["detail"]
    assert problem["loc"] == loc
    assert str(error) in problem["msg"]


async def test_an_internal_error_has_an_id_in_the_log_and_no_trace_in_the_body(client, measure, caplog):
    measure.fail = KeyError("the secret internals")

    with caplog.at_level(logging.ERROR, logger="pytest_mlestimate.service"):
        response = await client.post(RESOURCE, json=EXAMPLE)

    assert response.status_code == 500
    body = response.json()
    assert body["error_id"] in body["detail"]
    assert "secret" not in response.text
    assert "Traceback" not in response.text
    logged = [r for r in caplog.records if body["error_id"] in r.getMessage()]
    assert logged
    assert logged[0].exc_info is not None  # the trace is in the server log


async def test_a_crashed_profile_says_why_in_one_line(client, measure, caplog):
    measure.fail = ProfileCrashError(
        "profiling fasterrcnn_resnet50_fpn failed: it was killed (SIGKILL): most likely the machine ran out of RAM\n"
        'Traceback (most recent call last):\n  File "x.py", line 1'
    )

    with caplog.at_level(logging.ERROR, logger="pytest_mlestimate.service"):
        response = await client.post(RESOURCE, json=EXAMPLE)

    assert response.status_code == 500
    assert "ran out of RAM" in response.json()["detail"]
    assert "Traceback" not in response.text
    assert any("Traceback" in r.getMessage() for r in caplog.records)


async def test_an_asynchronous_job_is_polled_to_its_answer(client, measure):
    measure.gate.clear()
    accepted = await client.post(RESOURCE + "?async=true", json=EXAMPLE)

    assert accepted.status_code == 202
    url = accepted.headers["Location"]
    assert accepted.json()["url"] == url
    assert (await client.get(url)).json()["status"] in ("queued", "running")

    measure.gate.set()
    polled = None
    for _ in range(2000):
        polled = (await client.get(url)).json()
        if polled["status"] != "running" and polled["status"] != "queued":
            break
        await asyncio.sleep(0.005)

    direct = (await client.post(RESOURCE, json=EXAMPLE)).json()
    assert polled["status"] == "done"
    assert polled["result"]["Peak RAM Memory"] == direct["Peak RAM Memory"]
    assert set(polled["result"]) == set(direct)


async def test_an_asynchronous_job_reports_its_failure(client, measure):
    measure.fail = ProfileTimeoutError("ran past its limit")
    url = (await client.post(RESOURCE + "?async=true", json=EXAMPLE)).headers["Location"]
    await until(lambda: len(measure.calls) == 1)

    polled = (await client.get(url)).json()
    for _ in range(2000):
        if polled["status"] not in ("queued", "running"):
            break
        await asyncio.sleep(0.005)
        polled = (await client.get(url)).json()

    assert polled["status"] == "failed"
    assert polled["http_status"] == 504


async def test_an_unknown_job_is_404(client):
    response = await client.get("/api/v1/jobs/nope")

    assert response.status_code == 404


def test_fake_measure_counts_overlap():
    """The overlap counter the queue tests rely on does see two profiles at once."""
    measure = FakeMeasure()
    meeting = threading.Barrier(2, timeout=20)
    measure.before = lambda _scenario: meeting.wait()
    from pytest_mlestimate.scenarios.scenario import Scenario

    scenario = Scenario.model_validate(EXAMPLE)
    threads = [threading.Thread(target=measure, args=(scenario,)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert measure.most_at_once["auto"] == 2
