"""Fixtures for the HTTP service: an app with a fast stand-in for profiling, and a client for it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from pytest_mlestimate.core import devices
from pytest_mlestimate.service.app import create_app
from pytest_mlestimate.service.settings import ServiceSettings
from tests.service.fakes import TINY, FakeMeasure, client_for


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch) -> Any:
    path = tmp_path / "cache"
    monkeypatch.setenv("MLESTIMATE_CACHE_DIR", str(path))
    return path


@pytest.fixture
def two_gpus(monkeypatch) -> None:
    """A machine with two CUDA devices, as ``devices`` counts them (NVML stays as it is: without a driver the
    devices are told apart by index)."""
    monkeypatch.setattr(devices, "cuda_device_count", lambda: (2, None))


@pytest.fixture
def measure() -> FakeMeasure:
    return FakeMeasure()


@pytest.fixture
def settings() -> ServiceSettings:
    return ServiceSettings(allowed_factories=frozenset({TINY}))


@pytest.fixture
def app(settings: ServiceSettings, measure: FakeMeasure) -> Any:
    return create_app(settings, measure=measure)


@pytest.fixture
async def client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(app) as found:
        yield found
