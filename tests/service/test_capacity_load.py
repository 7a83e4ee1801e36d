"""Capacity searches under load: they run on threads of their own, a bounded number at once, and what does not
fit is refused with 503 and Retry-After before it starts; estimates keep being answered meanwhile."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from pytest_mlestimate.service.app import create_app
from pytest_mlestimate.service.settings import ServiceSettings
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
}
SEARCHES, WAITING = 2, 2


def settings() -> ServiceSettings:
    return ServiceSettings(allowed_factories=frozenset({TINY}), capacity_searches=SEARCHES, queue_size=WAITING)


def capacity_body(n: int) -> dict[str, Any]:
    """A distinct capacity question each (identical ones share one search)."""
    return {"scenario": {**SCENARIO, "dataset_size": 64 + n}, "capacity": {"limit": "64 GiB", "up_to": 8}}


async def until(condition: Any, seconds: float = 10) -> None:
    for _ in range(int(seconds / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the condition did not come true")


async def test_held_sync_searches_leave_estimates_answered_and_refuse_the_rest_with_retry_after() -> None:
    fake = FakeMeasure()
    app = create_app(settings(), measure=fake)
    async with client_for(app) as client:
        first = await client.post("/api/v1/estimate-resource", json=SCENARIO)
        assert first.status_code == 200, first.text
        fake.gate.clear()  # every profile from now on waits: the searches hold their threads
        searches = [asyncio.create_task(client.post(CAPACITY, json=capacity_body(n))) for n in range(8)]
        service = app.state.service
        await until(lambda: sum(t.done() for t in searches) == 8 - SEARCHES - WAITING)
        await until(lambda: service.searches.snapshot()["searching"] == SEARCHES)

        # a custom model's key is read on a worker thread each time: it must not wait behind the searches
        cached = await asyncio.wait_for(client.post("/api/v1/estimate-resource", json=SCENARIO), 10)
        assert cached.status_code == 200
        assert cached.json()["Peak RAM Memory"] == first.json()["Peak RAM Memory"]
        assert cached.json()["details"]["cache"]["hit"] is True

        refused = [t.result() for t in searches if t.done()]
        assert all(r.status_code == 503 and int(r.headers["Retry-After"]) >= 1 for r in refused), refused
        assert "capacity searches already wait" in refused[0].json()["detail"]
        fake.gate.set()
        answered = await asyncio.wait_for(asyncio.gather(*searches), 30)
    assert sorted(r.status_code for r in answered) == [200] * (SEARCHES + WAITING) + [503] * 4
    assert all(r.json()["Max Batch Size"] == 8 for r in answered if r.status_code == 200)


async def test_many_async_searches_start_no_thread_each_and_no_job_ends_in_a_500() -> None:
    fake = FakeMeasure()
    app = create_app(settings(), measure=fake)
    threads_before = threading.active_count()
    async with client_for(app) as client:
        fake.gate.clear()
        answers = [await client.post(CAPACITY, params={"async": "true"}, json=capacity_body(n)) for n in range(200)]
        threads_during = threading.active_count()
        fake.gate.set()
        jobs = [a.headers["Location"] for a in answers if a.status_code == 202]
        finished: list[dict[str, Any]] = []
        for url in jobs:
            for _ in range(500):
                job = (await client.get(url)).json()
                if job["status"] in ("done", "failed"):
                    finished.append(job)
                    break
                await asyncio.sleep(0.02)
    # the search threads, the device's lane and the event loop's own workers; not one per request
    assert threads_during - threads_before <= SEARCHES + 1 + 8
    assert len(jobs) == SEARCHES + WAITING
    refused = [a for a in answers if a.status_code != 202]
    assert len(refused) == 200 - len(jobs)
    assert all(a.status_code == 503 and int(a.headers["Retry-After"]) >= 1 for a in refused)
    assert [job["http_status"] for job in finished] == [200] * len(jobs), finished


async def test_an_admitted_search_is_not_refused_by_a_lane_full_of_estimates() -> None:
    """The lane refuses estimates past --queue-size; a search already admitted still gets its profiles measured."""
    fake = FakeMeasure()
    app = create_app(settings(), measure=fake)
    async with client_for(app) as client:
        fake.gate.clear()
        others = [{**SCENARIO, "image_size": [96, 96], "batch_size": b} for b in (3, 5, 7)]
        estimates = [asyncio.create_task(client.post("/api/v1/estimate-resource", json=others[0]))]
        await until(lambda: fake.active["cpu"] == 1)  # the first is measured: it no longer counts as waiting
        estimates += [asyncio.create_task(client.post("/api/v1/estimate-resource", json=body)) for body in others[1:]]
        queue = app.state.service.queue
        await until(lambda: queue.waiting() == WAITING)  # one measured, two waiting: the lane is full
        accepted = await client.post(CAPACITY, params={"async": "true"}, json=capacity_body(0))
        assert accepted.status_code == 202
        searches = app.state.service.searches
        await until(lambda: queue.waiting() > WAITING or searches.snapshot()["searching"] == 0)
        fake.gate.set()
        assert [r.status_code for r in await asyncio.gather(*estimates)] == [200] * 3
        for _ in range(500):
            job = (await client.get(accepted.headers["Location"])).json()
            if job["status"] in ("done", "failed"):
                break
            await asyncio.sleep(0.02)
    assert job["status"] == "done" and job["http_status"] == 200, job
