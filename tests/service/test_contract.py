"""The OpenAPI contract, checked by schemathesis against a real ``mlestimate serve``: generated requests, valid
and invalid, never get a 5xx, and every answer is documented (status code, content type, headers, body schema)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.schemas import BaseSchema
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.service.fakes import TINY
from tests.service.real_server import serving

ROOT = Path(__file__).resolve().parents[2]
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
TINY_BODY = {
    "task_type": "detection",
    "architecture": TINY,
    "dataset_size": 64,
    "batch_size": 2,
    "image_size": [32, 32],
    "warmup_iterations": 1,
    "measure_iterations": 2,
}
EXAMPLES = 100
"""Per operation and mode."""
requests_made: list[str] = []


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real server with small limits: a generated request that happens to be valid profiles the tiny model."""
    options = ["--device", "cpu", "--allow-factory", TINY, "--max-image-side", "64", "--max-batch-size", "2"]
    options += ["--profile-timeout", "20", "--queue-size", "2", "--no-access-log"]
    with serving(tmp_path_factory.mktemp("contract"), *options) as running:
        yield running.base
    print(f"\nschemathesis made {len(requests_made)} requests; server log tail:\n{running.log[-2000:]}")


@pytest.fixture(scope="module")
def contract(server: str) -> BaseSchema:
    return schemathesis.openapi.from_url(f"{server}/openapi.json")


OPERATIONS = [
    ("GET", "/healthz"),
    ("GET", "/api/v1/environment"),
    ("GET", "/api/v1/jobs/{job_id}"),
    ("POST", "/api/v1/estimate-resource"),
    ("POST", "/api/v1/estimate-training-time"),
    ("POST", "/api/v1/estimate-inference-time"),
    ("POST", "/api/v1/estimate-capacity"),
]


def test_every_operation_is_checked(contract: BaseSchema) -> None:
    documented = {(op.ok().method.upper(), op.ok().path) for op in contract.get_all_operations()}

    assert documented == set(OPERATIONS)


DRAWS = [
    (method, path, mode)
    for method, path in OPERATIONS
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if method == "POST" or mode is GenerationMode.POSITIVE  # a GET has nothing the schema restricts to break
]


@pytest.mark.parametrize(("method", "path", "mode"), DRAWS, ids=str)
def test_every_answer_keeps_the_contract(contract: BaseSchema, method: str, path: str, mode: GenerationMode) -> None:
    """``schemathesis.pytest.from_fixture`` does not run under pytest 9 (it sets a node attribute pytest no longer
    has), so each operation's strategy is drawn from here."""
    operation = contract[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def answers_keep_it(case: schemathesis.Case) -> None:
        requests_made.append(operation.label)
        case.call_and_validate(checks=CHECKS, timeout=60)

    answers_keep_it()


def test_a_valid_estimate_and_its_job_keep_the_contract(contract: BaseSchema) -> None:
    operation = contract["/api/v1/estimate-inference-time"]["POST"]

    direct = operation.Case(body=TINY_BODY, media_type="application/json").call_and_validate(checks=CHECKS, timeout=60)
    accepted = operation.Case(
        body=TINY_BODY | {"batch_size": 1}, query={"async": "true"}, media_type="application/json"
    ).call_and_validate(checks=CHECKS, timeout=60)
    job_id = accepted.json()["id"]
    polled = None
    for _ in range(600):
        polled = contract["/api/v1/jobs/{job_id}"]["GET"].Case(path_parameters={"job_id": job_id})
        answer = polled.call_and_validate(checks=CHECKS, timeout=60).json()
        if answer["status"] in ("done", "failed"):
            break
        time.sleep(0.1)

    assert direct.status_code == 200
    assert direct.json()["Batch of 2 Inference Time"] > 0
    assert accepted.status_code == 202
    assert answer["status"] == "done", answer
    assert "Batch of 1 Inference Time" in answer["result"]


def _raw_post(base: str, headers: str, chunks: list[bytes]) -> bytes:
    """What a real server answers to a POST sent as raw bytes, the body cut short after ``chunks``."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(f"POST /api/v1/estimate-resource HTTP/1.1\r\nHost: {host}\r\n{headers}\r\n".encode())
        for chunk in chunks:
            connection.sendall(chunk)
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            received = connection.recv(65536)
            if not received:
                break
            answer += received
    return answer


def test_a_real_server_refuses_40_mb_without_reading_them(server: str) -> None:
    declared = _raw_post(server, "Content-Type: application/json\r\nContent-Length: 41943040\r\n", [b" " * 65536])
    chunk = b"%x\r\n%s\r\n" % (1 << 20, b" " * (1 << 20))
    chunked = _raw_post(server, "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n", [chunk])

    for answer in (declared, chunked):
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert len(answer) < 1000
        assert b"allowed: up to 65536 bytes" in answer
    assert httpx.get(f"{server}/healthz").status_code == 200
