"""The values a capacity question is asked with (limit, headroom, batch sizes), each checked the same way on
every face: a problem is one CapacityError that names the field and what is allowed."""

from __future__ import annotations

from collections.abc import Sequence

from pytest_mlestimate.core.errors import brief
from pytest_mlestimate.core.units import UnitError, parse_fraction, parse_quantity
from pytest_mlestimate.scenarios.scenario import MAX_BATCH_SIZE

DEFAULT_HEADROOM = 0.10
"""Share of the memory limit left free by default: allocator fragmentation over a long run, other processes
and the driver's own use are not in a short profile's peak."""
MAX_SIZES = 8


class CapacityError(ValueError):
    """A capacity request that cannot be answered as asked; the message names the field and what is allowed."""


def _at(field_name: str) -> str:
    return f"{field_name}: " if field_name else ""


def parse_limit(limit: object, field_name: str = "limit") -> float:
    try:
        value = parse_quantity(limit, "bytes")
    except UnitError as exc:
        raise CapacityError(f"{_at(field_name)}{exc}") from None
    if value <= 0:
        raise CapacityError(f"{_at(field_name)}{brief(limit)} is not a positive amount of memory")
    return value


def parse_headroom(headroom: object, field_name: str = "headroom") -> float:
    if isinstance(headroom, float | int) and not isinstance(headroom, bool) and 0 <= headroom < 1:
        return float(headroom)
    try:
        value = parse_fraction(headroom)
    except UnitError as exc:
        raise CapacityError(f"{_at(field_name)}{exc}; or a fraction from 0 to 1") from None
    if not 0 <= value < 1:
        raise CapacityError(f"{_at(field_name)}{brief(headroom)} must be from 0 % to under 100 %")
    return value


def check_batch_sizes(sizes: object, field_name: str = "batch_sizes", most: int = MAX_BATCH_SIZE) -> list[int]:
    allowed = f"allowed: a list of 2 to {MAX_SIZES} different whole numbers from 1 to {most}"
    if not isinstance(sizes, Sequence) or isinstance(sizes, str):
        raise CapacityError(f"{_at(field_name)}{brief(sizes)} is not a list; {allowed}")
    bad = [s for s in sizes if isinstance(s, bool) or not isinstance(s, int) or not 1 <= s <= most]
    if bad:
        raise CapacityError(f"{_at(field_name)}{brief(bad[0])} is not a batch size; {allowed}")
    found = sorted(set(sizes))  # type: ignore[arg-type]
    if not 2 <= len(found) <= MAX_SIZES:
        raise CapacityError(f"{_at(field_name)}{len(found)} different sizes given; {allowed}")
    return found
