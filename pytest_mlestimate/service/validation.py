"""A request body -> the engine's Scenario, under the operator's allow-list and limits.

The body is validated by the engine's own model (the one schema of scenario files and requests); the
allow-list travels as the validation context, so a request can never name a module the operator did not.
"""

from __future__ import annotations

import os
from typing import Any

from pydantic import ValidationError

from pytest_mlestimate.scenario import Scenario, describe_errors
from pytest_mlestimate.service.settings import ServiceSettings

Problem = dict[str, Any]


class InvalidRequest(Exception):
    """Answered 422; each problem has the field's ``loc``, a ``msg`` naming field, value and what is allowed."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(p["msg"] for p in problems))
        self.problems = problems


def problem(field: str, message: str, kind: str = "value_error") -> Problem:
    loc = ["body", *(int(p) if p.isdigit() else p for p in field.split("."))] if field else ["body"]
    return {"loc": loc, "msg": f"{field}: {message}" if field else message, "type": kind}


def scenario_from_body(body: bytes, settings: ServiceSettings) -> Scenario:
    try:
        scenario = Scenario.model_validate_json(body, context={"allowed_factories": settings.allowed_factories})
    except ValidationError as exc:
        raise InvalidRequest(
            [
                {"loc": ["body", *item["loc"]], "msg": line, "type": item["type"]}
                for item, line in zip(exc.errors(include_url=False), describe_errors(exc), strict=True)
            ]
        ) from None
    problems = operator_problems(scenario, settings)
    weights = None
    if scenario.weights_path is not None:
        weights, refusal = _weights_file(scenario.weights_path, settings)
        problems.extend(refusal)
    if problems:
        raise InvalidRequest(problems)
    update: dict[str, Any] = {}
    if settings.device != "auto" and scenario.device == "auto":
        update["device"] = settings.device
    if weights is not None:
        update["weights_path"] = weights
    return scenario.model_copy(update=update) if update else scenario


def operator_problems(scenario: Scenario, settings: ServiceSettings) -> list[Problem]:
    """What the engine would accept but this service's operator does not."""
    found = []
    if scenario.batch_size > settings.max_batch_size:
        found.append(
            problem(
                "batch_size",
                f"this service accepts at most {settings.max_batch_size} (got {scenario.batch_size})",
                "less_than_equal",
            )
        )
    for index, side in enumerate(scenario.image_size):
        if side > settings.max_image_side:
            found.append(
                problem(
                    f"image_size.{index}",
                    f"this service accepts image sides up to {settings.max_image_side} (got {side})",
                    "less_than_equal",
                )
            )
    if settings.device != "auto" and scenario.device not in ("auto", settings.device):
        found.append(
            problem(
                "device",
                f"this service measures on '{settings.device}' (got '{scenario.device}'); allowed: "
                f"auto, {settings.device}",
            )
        )
    return found


def _weights_file(path: str, settings: ServiceSettings) -> tuple[str | None, list[Problem]]:
    """The absolute path of a weights file named relative to the operator's weights directory."""
    if settings.weights_dir is None:
        return None, [problem("weights_path", "this service takes no weights files (no weights directory is set)")]
    root = os.path.realpath(settings.weights_dir)
    resolved = os.path.realpath(os.path.join(root, path))
    if os.path.commonpath([root, resolved]) != root:
        return None, [problem("weights_path", f"'{path}' is outside this service's weights directory")]
    if not os.path.isfile(resolved):
        return None, [problem("weights_path", f"'{path}' is not a file in this service's weights directory")]
    return resolved, []
