"""Two real ``mlestimate serve`` replicas sharing one PostgreSQL database and a real two-node Ray cluster: each
configuration is measured once in the whole fleet, a second wave measures nothing, and a job accepted by a replica
that dies is polled to completion on the other."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import psycopg
import pytest

from tests.documented_keys import RESOURCE_KEYS
from tests.postgres_server import Server as PostgresServer
from tests.service.real_server import Server, serving
from tests.slow_model import SLOW
from tests.tiny_scenario import TINY

FACTORIES = ("--allow-factory", TINY["architecture"], "--allow-factory", SLOW["architecture"])
ENDPOINT = "/api/v1/estimate-resource"


@pytest.fixture(scope="module")
def fleet_database(postgres_server: PostgresServer) -> Iterator[str]:
    from pytest_mlestimate.stores.postgres import close_pools

    yield postgres_server.create_database("service_fleet")
    close_pools()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, fleet_database: str, cluster: Any) -> Iterator[list[Server]]:
    """Two replicas for the module's tests (each replica starts in seconds: torch, the service, Ray's driver)."""
    root = tmp_path_factory.mktemp("fleet")
    with pytest.MonkeyPatch.context() as patch, contextlib.ExitStack() as stack:
        patch.setenv("MLESTIMATE_LEASE_SECONDS", "3")  # a dead replica's lease is taken over in seconds
        patch.setenv("MLESTIMATE_JOB_HEARTBEAT_SECONDS", "0.5")
        servers = []
        for name in ("a", "b"):
            (root / name).mkdir()
            options = ("--store", fleet_database, "--ray", cluster.address, "--device", "cpu", *FACTORIES)
            servers.append(stack.enter_context(serving(root / name, *options)))
        yield servers


def profile_runs(database_url: str) -> list[tuple[str, str]]:
    with psycopg.connect(database_url) as raw:
        return raw.execute("SELECT key, outcome FROM mlestimate_profile_runs ORDER BY id").fetchall()


def test_each_configuration_is_measured_once_in_the_fleet(
    fleet: list[Server], fleet_database: str, cluster: Any
) -> None:
    database_url = fleet_database
    configurations = [TINY | {"batch_size": size, "measure_iterations": 4} for size in (1, 2, 3)]
    requests = [(fleet[n % 2].base, configurations[n % 3]) for n in range(12)]

    def ask(request: tuple[str, dict[str, Any]]) -> httpx.Response:
        base, body = request
        return httpx.post(base + ENDPOINT, json=body, timeout=300)

    with ThreadPoolExecutor(len(requests)) as pool:
        answers = list(pool.map(ask, requests))
    assert [a.status_code for a in answers] == [200] * len(answers), [a.text[:300] for a in answers]
    assert all(set(RESOURCE_KEYS) <= set(a.json()) for a in answers)
    runs = profile_runs(database_url)
    measured = [key for key, outcome in runs if outcome == "done"]
    assert len(measured) == 3 and len(set(measured)) == 3, runs
    with psycopg.connect(database_url) as raw:  # each measured on a worker node, none on the head (no CPU to give)
        nodes = {json.loads(text)["measured_on"] for (text,) in raw.execute("SELECT profile FROM mlestimate_profiles")}
    assert nodes and nodes <= {node.node_id for node in cluster.worker_nodes}
    # both replicas answer each configuration with the same figures: the profile the fleet measured once
    by_size: dict[int, set[str]] = {}
    for (_, body), answer in zip(requests, answers, strict=True):
        by_size.setdefault(body["batch_size"], set()).add(str(answer.json()["Batch Time"]))
    assert all(len(times) == 1 for times in by_size.values()), by_size

    with ThreadPoolExecutor(len(requests)) as pool:
        again = list(pool.map(ask, requests))
    assert [a.status_code for a in again] == [200] * len(again)
    assert profile_runs(database_url) == runs  # the second wave measured nothing
    environment = httpx.get(fleet[1].base + "/api/v1/environment", timeout=30).json()
    assert environment["fleet"]["profiles_measured"] == 3 and environment["fleet"]["profiles_in_flight"] == 0


def test_a_job_whose_replica_died_is_polled_to_completion_on_the_other(
    fleet: list[Server], fleet_database: str
) -> None:
    """Runs last: it kills one of the module's replicas."""
    database_url = fleet_database
    doomed, survivor = fleet
    body = SLOW | {"measure_iterations": 6}
    earlier = {key for key, _ in profile_runs(database_url)}
    accepted = httpx.post(doomed.base + ENDPOINT + "?async=true", json=body, timeout=60)
    assert accepted.status_code == 202
    url = accepted.json()["url"]
    deadline = time.monotonic() + 30
    while len(profile_runs(database_url)) == len(earlier) and time.monotonic() < deadline:
        time.sleep(0.2)  # the replica took the profile's lease: it is measuring
    doomed.process.kill()
    doomed.process.wait(timeout=30)
    states = []
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        polled = httpx.get(survivor.base + url, timeout=60)
        assert polled.status_code == 200, polled.text
        states.append(polled.json()["status"])
        if states[-1] in ("done", "failed"):
            break
        time.sleep(0.5)
    assert states[-1] == "done", (states[-5:], polled.json())
    assert set(RESOURCE_KEYS) <= set(polled.json()["result"])
    outcomes = [outcome for key, outcome in profile_runs(database_url) if key not in earlier]
    assert outcomes[0] == "lease expired" and "done" in outcomes[1:]
    with psycopg.connect(database_url) as raw:
        assert raw.execute("SELECT count(*) FROM mlestimate_leases").fetchone() == (0,)
