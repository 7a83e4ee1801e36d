"""Prices with their currency, Cost per Training, and budgets on energy and cost."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pytest_mlestimate.commands.cli import build_parser, settings_from_args
from pytest_mlestimate.core.pricing import Price, PriceError, currency_mismatch, price_from
from pytest_mlestimate.core.units import format_quantity, parse_quantity
from pytest_mlestimate.estimates.estimate import Estimate
from pytest_mlestimate.profiling.profile import EnergyReading
from pytest_mlestimate.scenarios.scenario import ScenarioError, parse_scenario
from pytest_mlestimate.service.settings import ServiceSettings, SettingsError
from pytest_mlestimate.stores.profile_cache import profile_key
from pytest_mlestimate.verdicts.budgets import BudgetError, check_budgets, parse_budgets
from pytest_mlestimate.verdicts.settings import Settings
from pytest_mlestimate.verdicts.verdict import judge
from tests.engine.test_result import profile, scenario

USD = Price(device_hour="2.50 USD", kwh="0.30 USD")


def priced_profile(**changes: Any) -> Any:
    """Total Training Time 1.3 s at 10 images of batch 4 (3 steps); 3.6 MJ per step on the GPU."""
    gpu = EnergyReading(joules=4 * 3.6e6, steps=4, seconds=4.0, method="nvml-energy-counter")
    return profile(gpu_energy=gpu, cpu_energy=EnergyReading(steps=4, unavailable="no RAPL here"), **changes)


def test_a_price_holds_an_amount_and_its_currency() -> None:
    assert (USD.per_device_hour, USD.per_kwh, USD.currency) == (2.5, 0.3, "USD")
    assert Price(kwh=" 0.25 EUR ").kwh == "0.25 EUR"
    assert Price(device_hour="1e1 JPY").per_device_hour == 10.0


@pytest.mark.parametrize(
    ("price", "words"),
    [
        ({"device_hour": 2.5}, "price.device_hour: 2.5 has no currency; write an amount and a 3-letter currency"),
        ({"device_hour": "2.5"}, "price.device_hour: '2.5' has no currency"),
        ({"kwh": "0.30 usd"}, "price.kwh: '0.30 usd': 'usd' is not a currency code"),
        ({"kwh": "0.30 kWh"}, "price.kwh: '0.30 kWh': 'kWh' is not a currency code"),
        ({"kwh": "$0.30"}, "price.kwh: '$0.30' is not an amount of money"),
        ({"device_hour": "2 USD", "kwh": "0.3 EUR"}, "price: device_hour is in USD and kwh in EUR; write both"),
        ({}, "price: no price given; set device_hour"),
        ({"hour": "2 USD"}, "price.hour: unknown field"),
    ],
)
def test_a_bad_price_in_a_scenario_names_the_field_and_what_is_allowed(price: dict[str, Any], words: str) -> None:
    with pytest.raises(ScenarioError) as raised:
        parse_scenario({**scenario().model_dump(), "price": price})
    assert any(problem.startswith(words) for problem in raised.value.problems), raised.value.problems


def test_default_prices_name_their_setting() -> None:
    names = ("mlestimate_price_per_device_hour", "mlestimate_price_per_kwh")
    assert price_from("", "  ", names) is None
    assert price_from("2.50 USD", "", names) == Price(device_hour="2.50 USD")
    with pytest.raises(PriceError, match=r"^mlestimate_price_per_kwh: '0.3' has no currency; write an amount"):
        price_from("2.50 USD", "0.3", names)
    with pytest.raises(PriceError, match=r"mlestimate_price_per_device_hour is in USD and mlestimate_price_per_kwh"):
        price_from("2.50 USD", "0.30 EUR", names)


def test_the_service_takes_prices_from_flags_and_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLESTIMATE_PRICE_PER_KWH", "0.30 USD")
    args = build_parser().parse_args(["serve", "--price-per-device-hour", "2.50 USD"])
    assert settings_from_args(args).price == USD
    assert ServiceSettings().price is None
    with pytest.raises(SettingsError, match=r"price_per_kwh \(--price-per-kwh, MLESTIMATE_PRICE_PER_KWH\): '0.3'"):
        ServiceSettings.from_env({"MLESTIMATE_PRICE_PER_KWH": "0.3"})
    with pytest.raises(SettingsError, match="write both prices in one currency"):
        ServiceSettings(price_per_device_hour="2 USD", price_per_kwh="0.3 EUR")


def test_cost_counts_device_time_and_energy() -> None:
    estimate = Estimate(scenario(price=USD.model_dump()), priced_profile())
    hours = estimate.total_training_time() / 3600
    cost = estimate.to_dict()["cost"]

    assert cost["Cost per Training"] == pytest.approx(hours * 2.5 + 3 * 1.0 * 0.3)  # 3 steps of 1 kWh
    assert cost["Currency"] == "USD"
    assert (cost["Price per Device-Hour"], cost["Price per kWh"]) == (2.5, 0.3)
    assert cost["Included"] == ["device time", "energy"]
    assert cost["Excluded"] == {} and cost["Reasons"] == {}
    assert estimate.metrics()["cost_per_training"] == pytest.approx(cost["Cost per Training"])
    assert str(estimate).splitlines()[-2].startswith("  Cost per Training")
    assert str(estimate).splitlines()[-2].endswith(" USD")


def test_a_part_without_its_figure_is_left_out_and_says_why() -> None:
    no_energy = profile(gpu_energy=EnergyReading(steps=4, unavailable="NVML's energy counter failed"))
    cost = Estimate(scenario(price=USD.model_dump()), no_energy).to_dict()["cost"]
    assert cost["Included"] == ["device time"]
    assert "energy" in cost["Excluded"] and cost["Cost per Training"] is not None

    energy_only = Estimate(scenario(price={"kwh": "0.30 USD"}), no_energy).to_dict()["cost"]
    assert energy_only["Cost per Training"] is None
    assert energy_only["Reasons"]["Cost per Training"] == energy_only["Excluded"]["energy"]


def test_without_a_price_cost_is_null_and_says_how_to_set_one() -> None:
    cost = Estimate(scenario(), priced_profile()).to_dict()["cost"]
    assert cost["Cost per Training"] is None and cost["Currency"] is None
    assert cost["Reasons"]["Cost per Training"].startswith("no price set")
    assert "mlestimate_price_per_device_hour" in cost["Reasons"]["Cost per Training"]


def test_the_scenarios_price_wins_over_the_default() -> None:
    default = Price(device_hour="1 EUR")
    assert Estimate(scenario(), priced_profile(), default_price=default).to_dict()["cost"]["Currency"] == "EUR"
    own = Estimate(scenario(price={"device_hour": "3 USD"}), priced_profile(), default_price=default)
    assert own.to_dict()["cost"]["Currency"] == "USD"
    assert own.to_dict()["cost"]["Price per kWh"] is None  # the scenario's price replaces the default whole


def test_a_price_does_not_change_the_profile_cache_key() -> None:
    plain = parse_scenario({**scenario().model_dump(), "price": None})
    priced = scenario(price={"device_hour": "2.50 USD", "kwh": "0.30 USD"})
    assert priced.profile_fields() == plain.profile_fields()
    assert profile_key(priced) == profile_key(plain)


def test_energy_and_cost_units_read_and_print() -> None:
    assert parse_quantity("2.5 kWh", "joules") == pytest.approx(9e6)
    assert parse_quantity("3 MJ", "joules") == 3e6
    assert parse_quantity("12.50 USD", "money") == 12.5
    assert format_quantity(9e6, "joules") == "2.50 kWh"
    assert format_quantity(450.0, "joules") == "450 J"
    assert format_quantity(12.5, "money") == "12.50"


def test_budgets_on_energy_and_cost_pass_and_fail() -> None:
    estimate = Estimate(scenario(price=USD.model_dump()), priced_profile())
    figures = estimate.metrics()  # 3 kWh per training; about 0.90 USD
    passing = parse_budgets({"energy_per_training": "4 kWh", "cost_per_training": "1.00 USD"})
    failing = parse_budgets({"energy_per_training": "2 kWh", "cost_per_training": {"max": "0.50 USD"}})

    assert [c.passed for c in check_budgets(passing, figures, {})] == [True, True]
    energy, cost = check_budgets(failing, figures, {})
    assert (energy.passed, cost.passed) == (False, False)
    assert energy.row()[:3] == ("energy_per_training", "3.00 kWh", "<= 2.00 kWh")
    assert cost.summary() == "cost_per_training broke its limit: measured 0.90, limit <= 0.50"
    assert [b.currency for b in failing] == [None, "USD"]


def test_a_bad_budget_on_energy_or_cost_says_what_is_allowed() -> None:
    with pytest.raises(BudgetError) as raised:
        parse_budgets({"energy_per_training": "2 mJ", "cost_per_training": "12.50"})
    assert raised.value.problems[0].startswith("budgets.energy_per_training: '2 mJ': unknown unit 'mJ'")
    assert raised.value.problems[1].startswith("budgets.cost_per_training: '12.50' has no currency")


def test_a_cost_budget_in_another_currency_fails_the_scenario_and_says_why(tmp_path: Path) -> None:
    budgets = parse_budgets({"cost_per_training": "12 EUR"})
    assert currency_mismatch(budgets, None) is None
    assert currency_mismatch(budgets, Price(kwh="1 EUR")) is None
    assert currency_mismatch(budgets, USD) == (
        "a budget on cost_per_training is in EUR but the price is in USD: write the budget in USD, or the price in EUR"
    )

    estimate = Estimate(scenario(), priced_profile(), default_price=USD)
    verdict = judge(estimate, budgets, {}, Settings(rootdir=tmp_path), "f.yaml", "s", "f.yaml:1", lambda: estimate)
    assert not verdict.passed
    assert verdict.failure is not None and "is in EUR but the price is in USD" in verdict.failure
    assert verdict.checks == []  # an amount in another currency is not compared


def test_a_budget_without_a_figure_says_why_it_was_not_checked(tmp_path: Path) -> None:
    estimate = Estimate(scenario(), priced_profile())
    budgets = parse_budgets({"cost_per_training": "1 USD"})
    verdict = judge(estimate, budgets, {}, Settings(rootdir=tmp_path), "f.yaml", "s", "f.yaml:1", lambda: estimate)
    assert verdict.passed and verdict.checks[0].passed is None
    assert any("budget on cost_per_training not checked" in w and "no price set" in w for w in verdict.warnings)
