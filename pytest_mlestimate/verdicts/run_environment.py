"""The environment a run was measured on: the fingerprint that tells comparable environments apart, and the
machine as shown."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pytest_mlestimate.verdicts.baseline import FINGERPRINT_KEYS, device_kind


def fingerprint(environment: Mapping[str, Any]) -> str:
    """What makes two environments comparable (``baseline.FINGERPRINT_KEYS``), as one canonical string."""
    return json.dumps({key: environment.get(key) for key in FINGERPRINT_KEYS}, sort_keys=True)


def machine_of(environment: Mapping[str, Any]) -> str:
    """``cuda:0 (NVIDIA H100 80GB HBM3)``, ``cpu (AMD EPYC 7B13)``: the device a scenario ran on."""
    device = environment.get("device") or "?"
    machine = environment.get("gpu") if device_kind(environment) == "cuda" else environment.get("cpu")
    return f"{device} ({machine or 'unknown'})"
