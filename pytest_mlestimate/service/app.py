"""The application factory."""

from __future__ import annotations

import contextlib
import html
import os
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse

from pytest_mlestimate.core.errors import brief
from pytest_mlestimate.scenarios.scenario import Scenario
from pytest_mlestimate.service.body_limit import BodyLimit
from pytest_mlestimate.service.profile_queue import Measure
from pytest_mlestimate.service.routes import api, public
from pytest_mlestimate.service.settings import ServiceSettings
from pytest_mlestimate.service.shutdown import stop_profiles_on_signals
from pytest_mlestimate.service.state import EstimationService
from pytest_mlestimate.service.validation import InvalidRequest

DESCRIPTION = """Estimates what a PyTorch detection or instance-segmentation model needs (GPU and CPU memory,
utilisation, batch, training and inference time) by measuring a few real steps of it on this service's
device. A profile is measured once per configuration and then answered from the cache."""

DOCS_ASSETS = "/docs/assets"


def create_app(settings: ServiceSettings | None = None, *, measure: Measure | None = None) -> FastAPI:
    """``measure`` replaces the engine's profiling (for tests of the queue and the routes)."""
    settings = settings or ServiceSettings.from_env()
    service = EstimationService.build(settings, measure)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if settings.profile_cpus:
            # The serving thread (and the threads it starts later) keep off the profiling CPUs.
            os.sched_setaffinity(0, os.sched_getaffinity(0) - settings.profile_cpus)
        stop_profiles_on_signals()
        yield

    app = FastAPI(
        title="pytest-mlestimate",
        description=DESCRIPTION,
        version=_version(),
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.service = service
    app.include_router(public)
    app.include_router(api)
    app.add_middleware(BodyLimit, limit=settings.max_body_size)
    app.add_exception_handler(RequestValidationError, _invalid_parameters)  # type: ignore[arg-type]
    _add_docs(app)
    app.openapi = lambda: _openapi(app, settings)  # type: ignore[method-assign]
    return app


async def _invalid_parameters(_request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's own 422 (a query parameter), in the service's shape: no echo of the whole input."""
    problems = []
    for item in exc.errors():
        loc = [part if isinstance(part, int) else str(part) for part in item.get("loc", ())]
        where = ".".join(str(part) for part in loc[1:]) or "request"
        got = f" (got {brief(item['input'])})" if "input" in item else ""
        problems.append({"loc": loc, "msg": f"{where}: {item.get('msg', 'invalid')}{got}", "type": item["type"]})
    return JSONResponse({"detail": InvalidRequest(problems).problems}, status_code=422)


def _openapi(app: FastAPI, settings: ServiceSettings) -> dict[str, Any]:
    """FastAPI's schema, plus the Scenario model the estimate routes validate their raw body with; security and
    401 answers only where an API key is set."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        scenario = Scenario.model_json_schema(ref_template="#/components/schemas/{model}")
        _operator_limits(scenario, settings)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.update(scenario.pop("$defs", {}))
        components["Scenario"] = scenario
        if settings.api_key is None:
            schema["components"].pop("securitySchemes", None)
            for operations in schema["paths"].values():
                for operation in operations.values():
                    operation.pop("security", None)
                    operation.get("responses", {}).pop("401", None)
        app.openapi_schema = schema
    return app.openapi_schema


def _operator_limits(scenario: dict[str, Any], settings: ServiceSettings) -> None:
    """The Scenario schema with this service's limits where they are tighter than the engine's."""
    properties = scenario["properties"]
    properties["batch_size"]["maximum"] = settings.max_batch_size
    for side in properties["image_size"]["prefixItems"]:
        side["maximum"] = settings.max_image_side
    properties["image_size"]["description"] = (
        f"[height, width]. A torchvision model resizes the image itself; what it computes on must also be at most "
        f"{settings.max_image_side} per side here (see model_kwargs min_size and max_size)"
    )


def _add_docs(app: FastAPI) -> None:
    """Swagger UI from the installed ``swagger-ui-bundle`` package, served here: no CDN, so the page works where
    the service has no internet. Without the package, a plain page of the operations, with no scripts at all."""
    try:
        from starlette.staticfiles import StaticFiles
        from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]
    except ImportError:
        swagger_ui_path = None
    if swagger_ui_path is not None:
        app.mount(DOCS_ASSETS, StaticFiles(directory=swagger_ui_path), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        if swagger_ui_path is None:
            return HTMLResponse(_plain_docs(app, f"{root}/openapi.json"))
        return get_swagger_ui_html(
            openapi_url=f"{root}/openapi.json",
            title=f"{app.title} - API",
            swagger_js_url=f"{root}{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS_ASSETS}/favicon-32x32.png",
        )


def _plain_docs(app: FastAPI, openapi_url: str) -> str:
    rows = []
    for path, operations in app.openapi()["paths"].items():
        for method, operation in operations.items():
            text = html.escape(operation.get("description") or "")
            rows.append(
                f"<h2>{method.upper()} {html.escape(path)}</h2><p><b>{html.escape(operation.get('summary', ''))}"
                f"</b></p><p>{text}</p>"
            )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(app.title)} - API</title></head>"
        f"<body><h1>{html.escape(app.title)} {html.escape(app.version)}</h1><p>{html.escape(app.description)}</p>"
        f"<p>The full schema: <a href='{html.escape(openapi_url)}'>{html.escape(openapi_url)}</a></p>"
        f"{''.join(rows)}</body></html>"
    )


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("pytest-mlestimate")
    except metadata.PackageNotFoundError:
        return "unknown"
