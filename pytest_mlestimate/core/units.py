"""Quantities as people write them in scenario files ("4 GiB", "80 ms", "85 %") and as reports print them.

Every metric is measured in one base unit (bytes, seconds, percent or joules; money in its currency); a
limit is converted to it once, here, and nowhere else.
"""

from __future__ import annotations

import math
import re

from pytest_mlestimate.core.errors import brief

BYTE_UNITS = {
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
SECOND_UNITS = {"us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
PERCENT_UNITS = {"%": 1.0}
JOULE_UNITS = {"J": 1.0, "kJ": 1e3, "MJ": 1e6, "Wh": 3600.0, "kWh": 3.6e6}
JOULE_UNITS |= {"j": 1.0, "kj": 1e3, "KJ": 1e3, "wh": 3600.0, "kwh": 3.6e6, "KWh": 3.6e6, "KWH": 3.6e6}
"""Case matters where it must: 'mJ' (millijoules) is not 'MJ', so neither is accepted for the other."""

UNITS_BY_DIMENSION = {"bytes": BYTE_UNITS, "seconds": SECOND_UNITS, "percent": PERCENT_UNITS, "joules": JOULE_UNITS}
CASE_SENSITIVE = {"seconds", "joules"}
SPELLING = {
    "bytes": "B, KB, MB, GB, TB, KiB, MiB, GiB, TiB",
    "seconds": "us, ms, s, min, h, d",
    "percent": "%",
    "joules": "J, kJ, MJ, Wh, kWh",
    "money": "a 3-letter currency code such as USD or EUR",
}
EXAMPLE = {"bytes": "4 GiB", "seconds": "80 ms", "percent": "85 %", "joules": "2.5 kWh", "money": "12.50 USD"}

_QUANTITY = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([A-Za-zµ%]+)\s*$")
CURRENCY = re.compile(r"^[A-Z]{3}$")
"""An ISO 4217-like currency code: three capital letters (USD, EUR, JPY)."""


class UnitError(ValueError):
    """A quantity that cannot be read; the message says what is allowed."""


def parse_quantity(text: object, dimension: str) -> float:
    """``"4 GiB"`` -> 4294967296.0 for ``dimension="bytes"``; the unit is required."""
    if dimension == "count":
        return _parse_count(text)
    if dimension == "money":
        return parse_money(text)[0]
    units = UNITS_BY_DIMENSION[dimension]
    allowed = f"a number and one of {SPELLING[dimension]} (e.g. '{EXAMPLE[dimension]}')"
    if isinstance(text, bool) or not isinstance(text, (str, int, float)):
        raise UnitError(f"{brief(text)} is not a quantity; write {allowed}")
    if isinstance(text, (int, float)):
        raise UnitError(f"{brief(text)} has no unit; write {allowed}")
    match = _QUANTITY.match(text)
    if match is None:
        raise UnitError(f"{brief(text)} is not a quantity; write {allowed}")
    number, unit = float(match.group(1)), match.group(2)
    factor = units.get(unit) if dimension in CASE_SENSITIVE else units.get(unit.lower())
    if factor is None:
        other = next((d for d, table in UNITS_BY_DIMENSION.items() if unit.lower() in table or unit in table), None)
        if other is None and CURRENCY.match(unit):
            other = "money"
        why = f"'{unit}' is a unit of {other}, not {dimension}" if other else f"unknown unit {brief(unit)}"
        raise UnitError(f"{brief(text)}: {why}; write {allowed}")
    value = number * factor
    if not math.isfinite(value):
        raise UnitError(f"{brief(text)} is not a finite quantity")
    return value


def parse_money(text: object) -> tuple[float, str]:
    """``"12.50 USD"`` -> (12.5, "USD"): a non-negative amount and a currency code, both required."""
    allowed = f"an amount and {SPELLING['money']} (e.g. '{EXAMPLE['money']}')"
    if isinstance(text, bool) or not isinstance(text, (str, int, float)):
        raise UnitError(f"{brief(text)} is not an amount of money; write {allowed}")
    if isinstance(text, (int, float)):
        raise UnitError(f"{brief(text)} has no currency; write {allowed}")
    match = _QUANTITY.match(text)
    if match is None:
        bare = re.fullmatch(r"\s*[0-9]*\.?[0-9]+\s*", text)
        raise UnitError(f"{brief(text)} {'has no currency' if bare else 'is not an amount of money'}; write {allowed}")
    number, unit = float(match.group(1)), match.group(2)
    if not CURRENCY.match(unit):
        raise UnitError(f"{brief(text)}: {brief(unit)} is not a currency code; write {allowed}")
    if not math.isfinite(number):
        raise UnitError(f"{brief(text)} is not a finite amount")
    return number, unit


def _parse_count(text: object) -> float:
    """A count (a batch size) is a plain whole number: ``16`` or ``"16"``."""
    if isinstance(text, str):
        text = text.strip()
        if text.isdigit():
            return float(int(text))
    if isinstance(text, int) and not isinstance(text, bool) and text >= 0:
        return float(text)
    raise UnitError(f"{brief(text)} is not a count; write a whole number (e.g. '16')")


def format_quantity(value: float | None, dimension: str) -> str:
    """A short human reading: 1.50 GiB, 812 ms, 2.1 h, 85.0 %; '-' for no value."""
    if value is None:
        return "-"
    if dimension == "bytes":
        for unit, factor in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
            if abs(value) >= factor:
                return f"{value / factor:.2f} {unit}"
        return f"{value:.0f} B"
    if dimension == "count":
        return f"{value:.0f}"
    if dimension == "money":  # the currency is the price's, shown beside the figure where it is known
        return f"{value:.2f}" if value == 0 or abs(value) >= 0.01 else f"{value:.2g}"
    if dimension == "joules":
        for unit, factor in (("kWh", 3.6e6), ("Wh", 3600.0), ("kJ", 1e3)):
            if abs(value) >= factor:
                return f"{value / factor:.2f} {unit}"
        return f"{value:.3g} J"
    if dimension == "seconds":
        for unit, factor in (("d", 86400.0), ("h", 3600.0), ("min", 60.0), ("s", 1.0)):
            if abs(value) >= factor:
                return f"{value / factor:.2f} {unit}"
        if abs(value) >= 1e-3:
            return f"{value * 1000:.1f} ms"
        return f"{value * 1e6:.0f} us"
    return f"{value:.1f} %"


def parse_fraction(text: object) -> float:
    """A tolerance such as ``"10 %"`` -> 0.1."""
    return parse_quantity(text, "percent") / 100.0


MAX_TIMEOUT_S = 7 * 24 * 3600.0
"""The longest timeout taken (a week): past it a timer's deadline overflows the system's clocks."""


def parse_timeout(text: object) -> float:
    """A timeout in seconds: a finite number above 0 and at most ``MAX_TIMEOUT_S``; ``UnitError`` else."""
    allowed = f"allowed: seconds above 0 and at most {MAX_TIMEOUT_S:,.0f} (a week)"
    try:
        value = float(text) if not isinstance(text, bool) else math.nan  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        value = math.nan
    if not (math.isfinite(value) and 0 < value <= MAX_TIMEOUT_S):
        raise UnitError(f"{brief(text)} is not a timeout; {allowed}")
    return value
