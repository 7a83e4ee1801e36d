"""Measuring a profile in a fresh child process.

A fresh process is what a training run starts from: its first steps pay CUDA's lazy loading, its RAM
holds one model, its peak RSS is the run's, a crash or a timeout cannot take the caller down, and a GPU
out-of-memory leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from pytest_mlestimate.errors import ERROR_TYPES, ProfileCrashError, ProfileTimeoutError
from pytest_mlestimate.profile import Profile
from pytest_mlestimate.scenario import Scenario


def _child_environment() -> dict[str, str]:
    """The caller's import path, so a custom ``package.module:factory`` resolves in the child as here."""
    env = os.environ.copy()
    paths = [os.path.abspath(p or os.curdir) for p in sys.path]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(p for p in paths if os.path.isdir(p)))
    return env


def profile_in_child(scenario: Scenario, timeout: float | None = None) -> Profile:
    with tempfile.TemporaryDirectory(prefix="mlestimate-") as tmp:
        out = Path(tmp) / "result.json"
        try:
            completed = subprocess.run(
                [sys.executable, "-m", "pytest_mlestimate.worker", str(out)],
                input=scenario.model_dump_json(),
                capture_output=True,
                text=True,
                timeout=timeout,
                env=_child_environment(),
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise ProfileTimeoutError(
                f"profiling {scenario.architecture} (batch {scenario.batch_size}) ran past its limit of "
                f"{timeout:g} s and was stopped"
            ) from None
        result = json.loads(out.read_text()) if out.exists() else None
    if result is not None and "profile" in result:
        return Profile.model_validate(result["profile"])
    if result is not None and "error" in result:
        error = ERROR_TYPES.get(result["error"]["type"], ProfileCrashError)
        raise error(result["error"]["message"])
    code = completed.returncode
    if code < 0 and -code == signal.SIGKILL:
        reason = "it was killed (SIGKILL): most likely the machine ran out of RAM"
    elif code < 0:
        reason = f"it died of signal {signal.Signals(-code).name}"
    else:
        reason = f"it exited with status {code}"
    tail = "\n".join(completed.stderr.strip().splitlines()[-15:])
    raise ProfileCrashError(f"profiling {scenario.architecture} failed: {reason}\n{tail}".rstrip())
