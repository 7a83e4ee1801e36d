"""Which environments' measurements compare: the fingerprint that tells them apart (for baselines, the run
history and merged shards alike), the drift floor's device kind, and the machine as shown."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from pytest_mlestimate.core.devices import is_gpu
from pytest_mlestimate.core.errors import brief

FINGERPRINT_KEYS = ("gpu", "driver", "cuda", "torch", "torchvision", "cpu", "cpus", "threads")
"""What an environment must share with another for their timings to compare."""


def fingerprint(environment: Mapping[str, Any]) -> str:
    """The fingerprint as one canonical string: equal strings, comparable environments."""
    return json.dumps({key: environment.get(key) for key in FINGERPRINT_KEYS}, sort_keys=True)


def differences(
    old: Mapping[str, Any], new: Mapping[str, Any], keys: Sequence[str] = FINGERPRINT_KEYS
) -> list[tuple[str, Any, Any]]:
    """(key, old value, new value) for each of ``keys`` (the fingerprint's by default) on which two differ."""
    return [(key, old.get(key), new.get(key)) for key in keys if old.get(key) != new.get(key)]


def described_differences(
    old: Mapping[str, Any], new: Mapping[str, Any], keys: Sequence[str] = FINGERPRINT_KEYS
) -> list[str]:
    """``key old -> new`` for each difference, as the "not compared" warnings say it."""
    return [f"{key} {brief(before)} -> {brief(after)}" for key, before, after in differences(old, new, keys)]


def device_kind(environment: Mapping[str, Any]) -> str:
    """``cuda`` or ``cpu``: which drift floor an environment's timings are judged with."""
    return "cuda" if is_gpu(environment.get("device") or "") else "cpu"


def machine_of(environment: Mapping[str, Any]) -> str:
    """``cuda:0 (NVIDIA H100 80GB HBM3)``, ``cpu (AMD EPYC 7B13)``: the device a scenario ran on."""
    device = environment.get("device") or "?"
    machine = environment.get("gpu") if device_kind(environment) == "cuda" else environment.get("cpu")
    return f"{device} ({machine or 'unknown'})"
