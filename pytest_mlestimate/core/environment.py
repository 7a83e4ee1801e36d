"""The environment fingerprint: what a measured profile is only valid for (GPU model, driver, CUDA,
torch, torchvision, CPU).

``host_fingerprint`` answers without importing torch, so that a cached estimate stays fast; the
profiler adds what only torch knows (the CUDA runtime) with ``torch_fingerprint``.
"""

from __future__ import annotations

import functools
import os
import platform
from importlib import metadata

from pytest_mlestimate.core.devices import is_gpu


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _visible(devices: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Apply CUDA_VISIBLE_DEVICES (indices or UUID prefixes) to NVML's (uuid, name) list."""
    spec = os.environ.get("CUDA_VISIBLE_DEVICES")
    if spec is None:
        return devices
    chosen = []
    for token in filter(None, (t.strip() for t in spec.split(","))):
        if token.isdigit():
            if int(token) >= len(devices):
                break
            chosen.append(devices[int(token)])
        else:
            match = [d for d in devices if d[0].startswith(token) or d[0].removeprefix("GPU-").startswith(token)]
            if not match:
                break
            chosen.append(match[0])
    return chosen


@functools.lru_cache(maxsize=4)
def _nvml_inventory(visible_spec: str | None) -> tuple[tuple[str, ...], str | None, str | None]:
    """(visible GPU names, driver version, reason when NVML cannot answer)."""
    try:
        import pynvml

        pynvml.nvmlInit()
        driver = pynvml.nvmlSystemGetDriverVersion()
        devices = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            devices.append((str(pynvml.nvmlDeviceGetUUID(handle)), str(pynvml.nvmlDeviceGetName(handle))))
    except Exception as exc:  # no library, no driver, no device: all mean "no GPU figures here"
        return (), None, f"NVML unavailable: {exc}"
    return tuple(name for _, name in _visible(devices)), str(driver), None


def gpu_inventory() -> tuple[tuple[str, ...], str | None, str | None]:
    return _nvml_inventory(os.environ.get("CUDA_VISIBLE_DEVICES"))


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity), which is what a CPU profile's speed depends on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


@functools.lru_cache(maxsize=1)
def _installed() -> dict[str, str | None]:
    return {
        "torch": _version("torch"),
        "torchvision": _version("torchvision"),
        "python": platform.python_version(),
        "cpu": cpu_model(),
        "mlestimate": _version("pytest-mlestimate"),
    }


def host_fingerprint() -> dict[str, str | None]:
    names, driver, _ = gpu_inventory()
    return {
        "gpu": ", ".join(names) or None,
        "driver": driver,
        **_installed(),
        "cpus": str(usable_cpus()),
        "threads": os.environ.get("OMP_NUM_THREADS"),
    }


def torch_fingerprint(device: str) -> dict[str, str | None]:
    import torch
    import torchvision

    fingerprint = host_fingerprint()
    fingerprint.update(
        torch=torch.__version__,
        torchvision=torchvision.__version__,
        cuda=torch.version.cuda,
        cudnn=None,
        device=device,
        cpu_threads=str(torch.get_num_threads()),
    )
    if is_gpu(device):
        # only here: loading cuDNN to read its version adds about 50 MiB to a CPU profile's resident memory
        if torch.backends.cudnn.is_available():
            fingerprint["cudnn"] = str(torch.backends.cudnn.version())
        fingerprint["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return fingerprint
