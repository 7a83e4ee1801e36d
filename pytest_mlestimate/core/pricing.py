"""Prices, and what a training costs at them.

A price is written with its currency ("2.50 USD" per device-hour, "0.30 USD" per kWh). A scenario's own
``price`` wins; the plugin's ini options and the service's settings give a default for scenarios that set
none. Prices change no measurement, so they are not part of a profile's cache key.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pytest_mlestimate.core.units import UnitError, parse_money

JOULES_PER_KWH = 3.6e6
SECONDS_PER_HOUR = 3600.0
PRICE_PATTERN = r"^\s*[0-9]*\.?[0-9]+([eE][-+]?[0-9]+)?\s*[A-Z]{3}\s*$"
"""A price as documented in the service's schema: an amount and a 3-letter currency code."""


class PriceError(ValueError):
    """A price that cannot be read; the message names the setting and what is allowed."""


def parse_price(text: object) -> tuple[float, str]:
    """``"2.50 USD"`` -> (2.5, "USD"); ``PriceError`` says what is allowed."""
    try:
        amount, currency = parse_money(text)
    except UnitError as exc:
        raise PriceError(str(exc)) from None
    if amount < 0:
        raise PriceError(f"{text!r} is negative; a price is an amount of 0 or more")
    return amount, currency


def _one_currency(device_hour: str | None, kwh: str | None, names: tuple[str, str]) -> None:
    if device_hour is None or kwh is None:
        return
    hour, energy = parse_price(device_hour)[1], parse_price(kwh)[1]
    if hour != energy:
        raise PriceError(f"{names[0]} is in {hour} and {names[1]} in {energy}; write both prices in one currency")


class Price(BaseModel):
    """``{device_hour: "2.50 USD", kwh: "0.30 USD"}``: either or both, in one currency."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    device_hour: str | None = Field(None, json_schema_extra={"pattern": PRICE_PATTERN}, examples=["2.50 USD"])
    """Price of one hour of the profiled device (a GPU, or the CPU machine)."""
    kwh: str | None = Field(None, json_schema_extra={"pattern": PRICE_PATTERN}, examples=["0.30 USD"])
    """Price of one kilowatt-hour of the energy the measured sources drew."""

    @field_validator("device_hour", "kwh", mode="before")
    @classmethod
    def _amount(cls, value: Any) -> Any:
        if value is None:
            return None
        parse_price(value)
        return value.strip()

    @model_validator(mode="after")
    def _complete(self) -> Price:
        if self.device_hour is None and self.kwh is None:
            raise PriceError("no price given; set device_hour (e.g. '2.50 USD') and/or kwh (e.g. '0.30 USD')")
        _one_currency(self.device_hour, self.kwh, ("device_hour", "kwh"))
        return self

    @property
    def currency(self) -> str:
        return parse_price(self.device_hour or self.kwh)[1]

    @property
    def per_device_hour(self) -> float | None:
        return parse_price(self.device_hour)[0] if self.device_hour is not None else None

    @property
    def per_kwh(self) -> float | None:
        return parse_price(self.kwh)[0] if self.kwh is not None else None


def price_from(
    device_hour: str | None, kwh: str | None, names: tuple[str, str] = ("device_hour", "kwh")
) -> Price | None:
    """A price from two settings (ini options, service settings), None when both are empty; ``PriceError``
    names the setting (``names``) that is wrong."""
    hour = device_hour.strip() if device_hour and device_hour.strip() else None
    energy = kwh.strip() if kwh and kwh.strip() else None
    if hour is None and energy is None:
        return None
    for name, text in zip(names, (hour, energy), strict=True):
        if text is not None:
            try:
                parse_price(text)
            except PriceError as exc:
                raise PriceError(f"{name}: {exc}") from None
    _one_currency(hour, energy, names)
    return Price(device_hour=hour, kwh=energy)


def currency_mismatch(budgets: Iterable[Any], price: Price | None) -> str | None:
    """Why budgets on an amount of money cannot be judged at ``price`` (another currency), or None.

    ``budgets`` are ``plugin.budgets.Budget``: a cost budget carries the currency it was written in."""
    if price is None:
        return None
    wrong = sorted({b.currency for b in budgets if getattr(b, "currency", None) not in (None, price.currency)})
    if not wrong:
        return None
    return (
        f"a budget on cost_per_training is in {', '.join(wrong)} but the price is in {price.currency}: write the "
        f"budget in {price.currency}, or the price in {wrong[0]}"
    )


@dataclass(frozen=True)
class Cost:
    """What a training costs at a price, and which parts of it could be counted."""

    amount: float | None
    currency: str | None
    included: list[str] = field(default_factory=list)
    excluded: dict[str, str] = field(default_factory=dict)
    """Part -> why it was left out."""
    reason: str | None = None
    """Why ``amount`` is None."""


def cost_of_training(
    price: Price | None,
    training_seconds: float | None,
    energy_joules: float | None,
    *,
    why_no_time: str = "no Total Training Time",
    why_no_energy: str = "no Energy per Training",
) -> Cost:
    """Total Training Time in hours x the price per device-hour + Energy per Training in kWh x the price per
    kWh, of the parts whose price and figure are both known."""
    if price is None:
        return Cost(
            None,
            None,
            reason="no price set: give the scenario a price (price: {device_hour: '2.50 USD', kwh: '0.30 USD'}), "
            "or set a default (ini mlestimate_price_per_device_hour / mlestimate_price_per_kwh, or the service's "
            "--price-per-device-hour / --price-per-kwh)",
        )
    amount = 0.0
    included: list[str] = []
    excluded: dict[str, str] = {}
    if price.per_device_hour is not None:
        if training_seconds is None:
            excluded["device time"] = why_no_time
        else:
            amount += training_seconds / SECONDS_PER_HOUR * price.per_device_hour
            included.append("device time")
    if price.per_kwh is not None:
        if energy_joules is None:
            excluded["energy"] = why_no_energy
        else:
            amount += energy_joules / JOULES_PER_KWH * price.per_kwh
            included.append("energy")
    if not included:
        return Cost(None, price.currency, included, excluded, reason="; ".join(excluded.values()))
    return Cost(amount, price.currency, included, excluded)
