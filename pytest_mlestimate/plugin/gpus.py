"""Which GPU a pytest process may use.

Under pytest-xdist each worker is pinned to one GPU of the caller's ``CUDA_VISIBLE_DEVICES`` (all GPUs
when it is unset) before anything initialises CUDA. Two workers sharing a GPU (more workers than GPUs),
or sharing the CPU, take turns through ``devices.device_lock``, which every profile holds.
"""

from __future__ import annotations

import re
from collections.abc import MutableMapping

PINNED_GPU = "MLESTIMATE_GPU"
"""Set in a pinned worker's environment: the caller's name (index or UUID) of its GPU."""


def caller_gpus(environ: MutableMapping[str, str]) -> list[str]:
    spec = environ.get("CUDA_VISIBLE_DEVICES")
    if spec is not None:
        return [token.strip() for token in spec.split(",") if token.strip()]
    from pytest_mlestimate.core.environment import gpu_inventory

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


def missing_gpu_reason(device: str) -> str | None:
    """Why a ``cuda`` scenario cannot run here, answered without starting a process (and without importing
    torch where NVML answers). None means a GPU may be there; the engine then has the last word.
    """
    from pytest_mlestimate.core.devices import is_gpu, resolve_device

    if not is_gpu(device):
        return None
    from pytest_mlestimate.core.errors import DeviceUnavailableError

    try:
        resolve_device(device)
    except DeviceUnavailableError as exc:
        return str(exc)
    return None
