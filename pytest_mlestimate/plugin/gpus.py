"""Which GPU a pytest process may use.

Under pytest-xdist each worker is pinned to one GPU of the caller's ``CUDA_VISIBLE_DEVICES`` (all GPUs
when it is unset) before anything initialises CUDA, and a lock file per GPU makes sure that two workers
sharing a GPU (more workers than GPUs) never profile on it at the same time.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import tempfile
from collections.abc import Iterator, MutableMapping
from pathlib import Path

PINNED_GPU = "MLESTIMATE_GPU"
"""Set in a pinned worker's environment: the caller's name (index or UUID) of its GPU."""


def caller_gpus(environ: MutableMapping[str, str]) -> list[str]:
    spec = environ.get("CUDA_VISIBLE_DEVICES")
    if spec is not None:
        return [token.strip() for token in spec.split(",") if token.strip()]
    from pytest_mlestimate.environment import gpu_inventory

    names, _, _ = gpu_inventory()
    return [str(index) for index in range(len(names))]


def pin_worker(environ: MutableMapping[str, str], worker_id: str) -> str | None:
    """Give worker ``gwN`` the N-th GPU (round robin); returns the GPU chosen, or None without GPUs."""
    gpus = caller_gpus(environ)
    match = re.fullmatch(r"gw(\d+)", worker_id)
    if not gpus or match is None:
        return None
    chosen = gpus[int(match.group(1)) % len(gpus)]
    environ["CUDA_VISIBLE_DEVICES"] = chosen
    environ[PINNED_GPU] = chosen
    return chosen


@contextlib.contextmanager
def gpu_slot(environ: MutableMapping[str, str] | None = None) -> Iterator[None]:
    """Hold this process's pinned GPU for one profile (no-op when not pinned)."""
    gpu = (environ if environ is not None else os.environ).get(PINNED_GPU)
    if not gpu:
        yield
        return
    safe = re.sub(r"[^A-Za-z0-9_-]+", "_", gpu)
    path = Path(tempfile.gettempdir()) / f"pytest-mlestimate-gpu-{safe}.lock"
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def missing_gpu_reason(device: str) -> str | None:
    """Why a ``cuda`` scenario cannot run here, answered without starting a process or importing torch.

    None means a GPU may be there; the engine then has the last word.
    """
    if not device.startswith("cuda"):
        return None
    from pytest_mlestimate.environment import gpu_inventory

    names, _, problem = gpu_inventory()
    if names:
        return None
    why = f" ({problem})" if problem else ""
    return f"device '{device}' asked for, but no CUDA device is visible here{why}"
