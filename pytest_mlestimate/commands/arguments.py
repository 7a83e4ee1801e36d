"""Argument types the subcommands share."""

from __future__ import annotations

import argparse


def timeout_argument(text: str) -> float:
    """``--timeout`` and ``--profile-timeout``: what ``units.parse_timeout`` takes, or argparse's usage error."""
    from pytest_mlestimate.core.units import UnitError, parse_timeout

    try:
        return parse_timeout(text)
    except UnitError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
