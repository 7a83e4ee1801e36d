"""A timeout is a finite number of seconds above 0 and at most a week, wherever it is given."""

from __future__ import annotations

import math

import pytest

from pytest_mlestimate.commands.cli import main
from pytest_mlestimate.core.units import MAX_TIMEOUT_S, UnitError, parse_timeout
from pytest_mlestimate.service.settings import ServiceSettings, SettingsError

REFUSED = ["inf", "-inf", "nan", "-1", "0", "1e400", "604801", "soon", "", True]
"""The last: a YAML or JSON `true`, which float() would take for 1."""


@pytest.mark.parametrize("text", REFUSED)
def test_a_timeout_that_is_no_number_of_seconds_is_refused(text: object) -> None:
    with pytest.raises(UnitError, match="is not a timeout; allowed: seconds above 0 and at most 604,800"):
        parse_timeout(text)


def test_a_timeout_in_range_is_taken() -> None:
    assert parse_timeout("2.5") == 2.5 and parse_timeout(MAX_TIMEOUT_S) == MAX_TIMEOUT_S


@pytest.mark.parametrize(
    "command",
    [["capacity", "x.yaml", "--timeout"], ["serve", "--profile-timeout"], ["serve", "--capacity-time-limit"]],
)
@pytest.mark.parametrize("value", ["inf", "nan", "-1", "1e400"])
def test_the_commands_refuse_such_a_timeout_with_a_message(
    command: list[str], value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        main([*command, value])
    assert stopped.value.code == 2
    assert f"'{value}' is not a timeout" in capsys.readouterr().err


@pytest.mark.parametrize("value", [math.inf, math.nan, -1.0])
@pytest.mark.parametrize("name", ["profile_timeout", "capacity_time_limit"])
def test_the_service_refuses_such_a_timeout_from_its_environment(name: str, value: float) -> None:
    with pytest.raises(SettingsError, match=rf"{name}: .* is not a timeout"):
        ServiceSettings(**{name: value})
