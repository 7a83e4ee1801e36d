from __future__ import annotations

import pytest

from pytest_mlestimate.core.units import UnitError, format_quantity, parse_fraction, parse_quantity


@pytest.mark.parametrize(
    ("text", "dimension", "expected"),
    [
        ("4 GiB", "bytes", 4 * 2**30),
        ("512 MB", "bytes", 512e6),
        ("512mib", "bytes", 512 * 2**20),
        ("80 ms", "seconds", 0.08),
        ("2 h", "seconds", 7200.0),
        ("1.5min", "seconds", 90.0),
        ("85 %", "percent", 85.0),
        ("1e3 KiB", "bytes", 1000 * 1024),
    ],
)
def test_quantities_convert_to_base_units(text: str, dimension: str, expected: float) -> None:
    assert parse_quantity(text, dimension) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("text", "dimension", "says"),
    [
        ("4 GB/s", "bytes", "not a quantity"),
        ("fast", "seconds", "not a quantity"),
        (4, "bytes", "has no unit"),
        ("80 ms", "bytes", "'ms' is a unit of seconds, not bytes"),
        ("3 parsecs", "seconds", "unknown unit 'parsecs'"),
    ],
)
def test_bad_quantities_say_what_is_allowed(text: object, dimension: str, says: str) -> None:
    with pytest.raises(UnitError, match="write a number and one of") as caught:
        parse_quantity(text, dimension)
    assert says in str(caught.value)


def test_tolerance_is_a_fraction() -> None:
    assert parse_fraction("10 %") == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("value", "dimension", "shown"),
    [
        (1.5 * 2**30, "bytes", "1.50 GiB"),
        (300, "bytes", "300 B"),
        (0.0812, "seconds", "81.2 ms"),
        (2e-6, "seconds", "2 us"),
        (7560, "seconds", "2.10 h"),
        (85, "percent", "85.0 %"),
        (None, "bytes", "-"),
    ],
)
def test_quantities_read_well(value: float | None, dimension: str, shown: str) -> None:
    assert format_quantity(value, dimension) == shown
