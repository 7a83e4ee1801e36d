"""What a run judges with: its default budgets and tolerances, the cache, the baseline folders, the price.

The pytest plugin reads it from the command line and the ini file (``plugin.settings``); the verdict reads it here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pytest_mlestimate.core.pricing import Price
from pytest_mlestimate.verdicts.budgets import Budget


@dataclass(frozen=True)
class Settings:
    rootdir: Path
    budgets: list[Budget] = field(default_factory=list)
    tolerances: dict[str, float] = field(default_factory=dict)
    cache: bool = True
    refresh: bool = False
    timeout: float | None = None
    compare_dir: Path | None = None
    save_dir: Path | None = None
    baseline_runs: int = 5
    """Fresh-process runs a saved baseline holds: enough to know the noise between processes."""
    strict_baseline: bool = False
    strict: bool = False
    """A verdict left undecided (inconclusive against the base commit) fails the scenario."""
    price: Price | None = None
    """The price of scenarios that set none (ini mlestimate_price_per_device_hour, mlestimate_price_per_kwh)."""
