"""The HTTP routes: thin over the engine, the profile queue and the job board."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response

from pytest_mlestimate.core.environment import gpu_inventory, host_fingerprint
from pytest_mlestimate.core.errors import DeviceUnavailableError, clip
from pytest_mlestimate.scenarios.architectures import TORCHVISION
from pytest_mlestimate.scenarios.scenario import MAX_DATASET_SIZE
from pytest_mlestimate.service import capacity_answers
from pytest_mlestimate.service.answers import FIGURES, failure
from pytest_mlestimate.service.auth import require_api_key
from pytest_mlestimate.service.profile_queue import QueueFull
from pytest_mlestimate.service.schemas import (
    AcceptedJob,
    Environment,
    Failed,
    Health,
    InferenceTimeAnswer,
    InternalError,
    Job,
    ResourceAnswer,
    TrainingTimeAnswer,
    ValidationFailed,
)
from pytest_mlestimate.service.settings import DEFAULT_MODEL_KWARG_LIMIT
from pytest_mlestimate.service.state import EstimationService, fleet_status
from pytest_mlestimate.service.submissions import CAPACITY, Submitted, resume, submit
from pytest_mlestimate.service.validation import unavailable_device

EXAMPLE = {
    "task_type": "detection",
    "architecture": "ssdlite320_mobilenet_v3_large",
    "parameters": 3440060,
    "dataset_size": 10000,
    "batch_size": 2,
    "image_size": [320, 320],
    "application_type": "training",
    "threading": False,
}
SCENARIO_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Scenario"}, "example": EXAMPLE}},
    }
}

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Failed, "description": "An API key is required and was missing or wrong"},
    413: {"model": Failed, "description": "The body is larger than this service accepts"},
    415: {"model": Failed, "description": "The body is not sent as 'Content-Type: application/json'"},
    422: {
        "model": ValidationFailed,
        "description": "Invalid scenario: each problem names the field, the value and what is allowed",
    },
    500: {"model": InternalError, "description": "Internal error: the error id is also in the server log"},
    503: {
        "model": Failed,
        "description": "The profile queue for this device is full (retry after Retry-After seconds), the service "
        "is shutting down and stopped the profile, or the replicas' shared database is out of reach (or another "
        "replica is still measuring the same configuration)",
        "headers": {"Retry-After": {"description": "Seconds", "schema": {"type": "integer"}}},
    },
    504: {"model": Failed, "description": "The profile ran past the service's time limit and was stopped"},
}
ACCEPTED: dict[int | str, dict[str, Any]] = {
    202: {
        "model": AcceptedJob,
        "description": "With ?async=true: the job was accepted; poll the URL in Location",
        "headers": {"Location": {"description": "The job's URL", "schema": {"type": "string"}}},
    }
}
GUARDED: dict[int | str, dict[str, Any]] = {401: ERRORS[401], 413: ERRORS[413]}

ASYNC = Query(False, alias="async", description="Answer 202 at once with a job URL to poll instead of waiting")

api = APIRouter(prefix="/api/v1", dependencies=[Depends(require_api_key)])
public = APIRouter()


def _service(request: Request) -> EstimationService:
    return request.app.state.service


def _not_json(request: Request) -> JSONResponse | None:
    """Only JSON bodies: a browser's cross-site form can send text/plain, urlencoded or multipart, never JSON."""
    given = request.headers.get("content-type")
    if given is not None and given.partition(";")[0].strip().lower() == "application/json":
        return None
    got = f"got {clip(given, 100)!r}" if given is not None else "no Content-Type was sent"
    detail = f"send the scenario as JSON with 'Content-Type: application/json' ({got})"
    return JSONResponse({"detail": detail}, status_code=415)


async def _estimate(request: Request, endpoint: str, run_async: bool) -> Response:
    service = _service(request)
    if (refusal := _not_json(request)) is not None:
        return refusal
    try:
        content = await request.body()
        if not run_async and (remembered := service.answers.get(endpoint, content)) is not None:
            return Response(remembered, media_type="application/json")
        submitted = await submit(service, endpoint, content)
        if run_async:
            return await _accepted(request, endpoint, submitted, content)
        if not submitted.known:
            status, body = submitted.answer(await asyncio.shield(asyncio.wrap_future(submitted.future)))
            return JSONResponse(body, status_code=status)
        response = JSONResponse(submitted.answer(submitted.future.result())[1])
        if service.store.known_key(submitted.scenario) is not None:  # the answer cannot change: keep it
            service.answers.keep(endpoint, content, response.body)
        return response
    except QueueFull as exc:
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": str(exc.retry_after)})
    except DeviceUnavailableError as exc:  # 'auto' on a service pinned to a device it lacks: refused, no lane
        return JSONResponse({"detail": [unavailable_device(exc, service.settings)]}, status_code=422)
    except Exception as exc:
        status, body = failure(exc)
        return JSONResponse(body, status_code=status)


async def _accepted(request: Request, endpoint: str, submitted: Submitted, content: bytes) -> JSONResponse:
    """202 with the job's URL; a shared job's row is written before the answer (another replica may be polled)."""
    jobs = _service(request).jobs
    job = await asyncio.to_thread(jobs.add, endpoint, submitted.future, submitted.answer, failure, content)
    url = str(request.url_for("job", job_id=job.id).path)
    return JSONResponse(job.describe() | {"url": url}, status_code=202, headers={"Location": url})


@api.post(
    "/estimate-resource",
    openapi_extra=SCENARIO_BODY,
    responses={200: {"model": ResourceAnswer}, **ACCEPTED, **ERRORS},
    summary="Resource use of one step",
)
async def estimate_resource(request: Request, run_async: bool = ASYNC) -> Response:
    """Peak GPU and RAM memory, peak GPU and CPU utilisation, forward and backward batch time, and the
    memory in use before training, for the scenario's application_type."""
    return await _estimate(request, "estimate-resource", run_async)


@api.post(
    "/estimate-training-time",
    openapi_extra=SCENARIO_BODY,
    responses={200: {"model": TrainingTimeAnswer}, **ACCEPTED, **ERRORS},
    summary="Total training time",
)
async def estimate_training_time(request: Request, run_async: bool = ASYNC) -> Response:
    """Total Training Time for dataset_size images over the scenario's epochs (application_type training)."""
    return await _estimate(request, "estimate-training-time", run_async)


@api.post(
    "/estimate-inference-time",
    openapi_extra=SCENARIO_BODY,
    responses={200: {"model": InferenceTimeAnswer}, **ACCEPTED, **ERRORS},
    summary="Inference time",
)
async def estimate_inference_time(request: Request, run_async: bool = ASYNC) -> Response:
    """Inference time of one image and of one batch of batch_size images."""
    return await _estimate(request, "estimate-inference-time", run_async)


CAPACITY_EXAMPLE = {"scenario": EXAMPLE, "capacity": {"limit": "24 GiB", "predict": [16]}}
CAPACITY_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"$ref": "#/components/schemas/CapacityBody"},
                "example": CAPACITY_EXAMPLE,
            }
        },
    }
}


@api.post(
    "/estimate-capacity",
    openapi_extra=CAPACITY_BODY,
    responses={200: {"model": capacity_answers.CapacityAnswer}, **ACCEPTED, **ERRORS},
    summary="The largest batch that fits, figures at other batch sizes, and the cards each fits",
)
async def estimate_capacity(request: Request, run_async: bool = ASYNC) -> Response:
    """Profiles the scenario at a few batch sizes (each profile queued like any other), fits how each figure
    grows, predicts the largest batch under capacity.limit (the device's memory less capacity.headroom when
    unset) and confirms it with real profiles: it fits and the next batch does not."""
    service = _service(request)
    if (refusal := _not_json(request)) is not None:
        return refusal
    try:
        content = await request.body()
        submitted = await submit(service, CAPACITY, content)
        if run_async:
            return await _accepted(request, CAPACITY, submitted, content)
        report = await asyncio.shield(asyncio.wrap_future(submitted.future))
        status, body = capacity_answers.answer(report)
        return JSONResponse(body, status_code=status)
    except QueueFull as exc:
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": str(exc.retry_after)})
    except DeviceUnavailableError as exc:
        return JSONResponse({"detail": [unavailable_device(exc, service.settings)]}, status_code=422)
    except Exception as exc:
        status, body = failure(exc)
        return JSONResponse(body, status_code=status)


@api.get(
    "/jobs/{job_id}",
    name="job",
    summary="An asynchronous estimate's state, and its answer once done",
    responses={
        200: {"model": Job},
        **GUARDED,
        404: {"model": Failed, "description": "No such job here (jobs live in memory)"},
        422: ERRORS[422],
    },
)
async def job(request: Request, job_id: str) -> JSONResponse:
    service = _service(request)
    found = service.jobs.get(job_id)
    if found is None and service.jobs.shared is not None:
        row = await asyncio.to_thread(service.jobs.shared.find, job_id)
        if row is not None and row.orphaned:
            found = await resume(service, job_id)
            row = row if found is None else None
        if row is not None:
            return JSONResponse(row.description)
    if found is None:
        where = "here (jobs live in memory and are forgotten on restart)"
        if service.jobs.shared is not None:
            where = "in the replicas' shared store"
        raise HTTPException(404, f"no job {clip(job_id, 100)!r} {where}")
    return JSONResponse(found.describe())  # documented as Job; the figure keys are not pydantic fields


@api.get(
    "/environment",
    summary="What this service measures on, and what it accepts",
    response_model=Environment,
    responses=GUARDED,
)
async def environment(request: Request) -> dict[str, Any]:
    service = _service(request)
    settings = service.settings
    gpus, driver, reason = gpu_inventory()
    return {
        "device": settings.device,
        "auto_device": service.auto_device,
        "gpus": list(gpus),
        "gpu_driver": driver,
        "gpu_unavailable": reason,
        "versions": host_fingerprint(),
        "architectures": {name: arch.task_type for name, arch in TORCHVISION.items()}
        | {name: "custom" for name in sorted(settings.allowed_factories)},
        "endpoints": {f"/api/v1/{name}": part for name, part in FIGURES.items()},
        "limits": {
            "batch_size": settings.max_batch_size,
            "image_side": settings.max_image_side,
            "clip_length": settings.max_clip_length,
            "dataset_size": MAX_DATASET_SIZE,
            "profile_timeout_seconds": settings.profile_timeout,
            "capacity_time_limit_seconds": settings.capacity_time_limit,
            "weights_files": settings.weights_dir is not None,
            "dataset_files": settings.data_dir is not None,
            "body_bytes": settings.max_body_size,
            "model_kwargs": {"*": DEFAULT_MODEL_KWARG_LIMIT, **settings.max_model_kwargs},
        },
        "queue": service.queue.snapshot(),
        "capacity_searches": service.searches.snapshot(),
        "profiles_in_memory": len(service.store),
        "api_key_required": settings.api_key is not None,
        "fleet": await asyncio.to_thread(fleet_status, settings),
    }


@public.get("/healthz", summary="Liveness", response_model=Health)
async def healthz() -> dict[str, str]:
    return {"status": "ok"}
