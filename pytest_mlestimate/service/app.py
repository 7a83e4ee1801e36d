"""The application factory."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from pytest_mlestimate.scenario import Scenario
from pytest_mlestimate.service.profile_queue import Measure
from pytest_mlestimate.service.routes import api, public
from pytest_mlestimate.service.settings import ServiceSettings
from pytest_mlestimate.service.state import EstimationService

DESCRIPTION = """Estimates what a PyTorch detection or instance-segmentation model needs (GPU and CPU memory,
utilisation, batch, training and inference time) by measuring a few real steps of it on this service's
device. A profile is measured once per configuration and then answered from the cache."""


def create_app(settings: ServiceSettings | None = None, *, measure: Measure | None = None) -> FastAPI:
    """``measure`` replaces the engine's profiling (for tests of the queue and the routes)."""
    settings = settings or ServiceSettings.from_env()
    service = EstimationService.build(settings, measure)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if settings.profile_cpus:
            # The serving thread (and the threads it starts later) keep off the profiling CPUs.
            os.sched_setaffinity(0, os.sched_getaffinity(0) - settings.profile_cpus)
        yield

    app = FastAPI(title="pytest-mlestimate", description=DESCRIPTION, version=_version(), lifespan=lifespan)
    app.state.service = service
    app.include_router(public)
    app.include_router(api)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema, plus the Scenario model the estimate routes validate their raw body with."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        scenario = Scenario.model_json_schema(ref_template="#/components/schemas/{model}")
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.update(scenario.pop("$defs", {}))
        components["Scenario"] = scenario
        app.openapi_schema = schema
    return app.openapi_schema


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("pytest-mlestimate")
    except metadata.PackageNotFoundError:
        return "unknown"
