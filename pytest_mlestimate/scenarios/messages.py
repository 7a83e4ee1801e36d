"""Pydantic's validation errors as lines a person reads: the field's path, what was given, and what is allowed."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import ValidationError

from pytest_mlestimate.core.errors import ECHO_LIMIT, brief

_PLAIN: dict[str, str] = {
    "int_type": "expected a whole number",
    "int_parsing": "expected a whole number",
    "int_from_float": "expected a whole number",
    "float_type": "expected a number",
    "float_parsing": "expected a number",
    "bool_type": "expected true or false",
    "bool_parsing": "expected true or false",
    "string_type": "expected text",
    "list_type": "expected a list",
    "tuple_type": "expected a list",
    "dict_type": "expected a mapping of names to values",
    "model_type": "expected a mapping of settings",
    "model_attributes_type": "expected a mapping of settings",
    "greater_than_equal": "must be at least {ge}",
    "greater_than": "must be more than {gt}",
    "less_than_equal": "must be at most {le}",
    "less_than": "must be less than {lt}",
    "string_too_long": "at most {max_length} characters are allowed",
    "string_too_short": "must not be empty",
    "literal_error": "allowed: {expected}",
    "finite_number": "not a finite number; allowed: a finite number",
    "missing": "required field is missing",
}
"""pydantic's error types in the words of a scenario file: YAML and JSON have no tuples or models."""

_SHAPES: dict[str, str] = {"image_size": "expected [height, width], two whole numbers of pixels"}
"""Fields whose every shape error is best answered by the shape they take."""


def _wrong_shape(item: Any) -> str | None:
    """The field whose shape is wrong (a tuple of the wrong length or type), if its shape has words."""
    loc = item["loc"]
    if not loc or loc[0] not in _SHAPES:
        return None
    if (len(loc) == 1 and item["type"] != "missing") or (item["type"] == "missing" and len(loc) == 2):
        return str(loc[0])
    return None


def _plain(item: Any) -> str:
    kind = item["type"]
    shape = _wrong_shape(item)
    if shape is not None:
        return _SHAPES[shape]
    template = _PLAIN.get(kind)
    if template is None:
        return item["msg"].removeprefix("Value error, ")
    try:
        return template.format(**item.get("ctx", {}))
    except (KeyError, IndexError):
        return item["msg"]


def describe_errors(error: ValidationError, fields: Iterable[str]) -> list[str]:
    """One line per problem: the field path, the bad value and what is allowed, in the user's terms."""
    lines = []
    for item in error.errors(include_url=False):
        loc = _wrong_shape(item) or ".".join(str(part) for part in item["loc"]) or "scenario"
        if len(loc) > ECHO_LIMIT:  # an unknown field's name is the user's, of any length
            loc = loc[:ECHO_LIMIT] + "..."
        message = _plain(item)
        if item["type"] == "extra_forbidden":
            allowed = ", ".join(fields)
            lines.append(f"{loc}: unknown field; allowed fields: {allowed}")
        elif item["type"] == "missing":
            lines.append(f"{loc}: {message}" + (f" (got {brief(item['input'])})" if _wrong_shape(item) else ""))
        elif "input" in item and not isinstance(item["input"], dict):
            lines.append(f"{loc}: {message} (got {brief(item['input'])})")
        else:
            lines.append(f"{loc}: {message}")
    return lines
