"""Devices: what a scenario's ``device`` names here, which physical GPU that is, and one lock per physical
device shared by every process on the machine.

Before torch is imported, NVML and ``CUDA_VISIBLE_DEVICES`` answer (torch is imported only where NVML
cannot); once it is imported, torch has the last word, as it is what runs the model. NVML ignores
``CUDA_VISIBLE_DEVICES``, so a CUDA index is mapped to NVML's device by torch's device UUID or by the
variable's token at that index, never assumed to be NVML's index.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

from pytest_mlestimate.core.errors import DeviceUnavailableError

LOCK_DIR_ENV = "MLESTIMATE_LOCK_DIR"
"""Where the device lock files are; every process that should take turns must use the same directory."""

_REQUEST = re.compile(r"(auto|cpu|cuda)(?::(\d+))?")


def is_gpu(device: object) -> bool:
    """Whether a device (``"cuda:0"``, a ``torch.device``, a profile's device) is a CUDA GPU."""
    return Device.of(device).is_gpu


@dataclass(frozen=True)
class Device:
    """A device a profile ran or runs on, as a scenario or a profile names it (``cpu``, ``cuda``, ``cuda:1``):
    whether it is a GPU, the physical device behind it, and its memory."""

    name: str

    @classmethod
    def of(cls, device: object) -> Device:
        return cls(str(device))

    @property
    def is_gpu(self) -> bool:
        return self.name.startswith("cuda")

    @property
    def index(self) -> int:
        """The CUDA index (0 for ``cuda``); 0 for the CPU."""
        found = self.name.partition(":")[2]
        return int(found) if found.isdigit() else 0

    def physical_id(self) -> str:
        return physical_id(self.name)

    def memory_bytes(self) -> float | None:
        """Total memory: the GPU's from NVML (CUDA stays uninitialised here), RAM for the CPU; None where NVML
        cannot tell."""
        if not self.is_gpu:
            import psutil

            return float(psutil.virtual_memory().total)
        found = nvml_device(self.index)
        if found.handle is None:
            return None
        try:
            return float(found.nvml.nvmlDeviceGetMemoryInfo(found.handle).total)
        except Exception:  # NVMLError
            return None


def _torch_has_cuda() -> bool:
    """Whether the installed torch is a CUDA build, read from its version.py without importing it."""
    spec = importlib.util.find_spec("torch")
    if spec is None or spec.origin is None:
        return False
    try:
        text = (Path(spec.origin).parent / "version.py").read_text(encoding="utf-8")
    except OSError:
        return True
    found = re.search(r"^cuda\b[^=\n]*=\s*(.+)$", text, re.MULTILINE)
    return found is None or found.group(1).strip() != "None"


def cuda_device_count() -> tuple[int, str | None]:
    """How many CUDA devices this process can use, and why there are none when there are none."""
    torch = sys.modules.get("torch")
    if torch is None:
        try:
            nvml, gpus = _nvml_gpus()
        except Exception:  # NVML cannot answer: only torch can
            import torch
        else:
            count = _visible_count(nvml, gpus)
            if count and not _torch_has_cuda():
                return 0, "the installed torch is built without CUDA"
            if count:
                return count, None
            spec = os.environ.get("CUDA_VISIBLE_DEVICES")
            return 0, "NVML lists none" if spec is None else f"CUDA_VISIBLE_DEVICES={spec!r}"
    if not torch.cuda.is_available():
        return 0, None
    return torch.cuda.device_count(), None


def canonical_device(device: str) -> str:
    """One spelling per device, read from the name alone: 'cuda' and 'cuda:00' are 'cuda:0'."""
    match = _REQUEST.fullmatch(device)
    if match is None or match.group(1) != "cuda":
        return device
    return f"cuda:{int(match.group(2) or 0)}"


def resolve_device(requested: str) -> str:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` -> ``cpu`` or ``cuda:N``; DeviceUnavailableError if absent."""
    match = _REQUEST.fullmatch(requested)
    if match is None:
        raise ValueError(f"device '{requested}' is not a device; allowed: auto, cpu, cuda, cuda:N")
    kind, index = match.group(1), int(match.group(2) or 0)
    if kind == "cpu":
        return "cpu"
    count, why = cuda_device_count()
    if kind == "auto":
        return "cuda:0" if count else "cpu"
    if not count:
        reason = f" ({why})" if why else ""
        raise DeviceUnavailableError(f"device '{requested}' asked for, but no CUDA device is available here{reason}")
    if index >= count:
        raise DeviceUnavailableError(f"device '{requested}' asked for, but only {count} CUDA device(s) are visible")
    return f"cuda:{index}"


@dataclass(frozen=True)
class NvmlDevice:
    """NVML's view of one CUDA device: the module and handle to query, its UUID, or why there is none."""

    nvml: Any = None
    handle: Any = None
    uuid: str | None = None
    unavailable: str | None = None


def _nvml_gpus() -> tuple[Any, list[tuple[Any, str]]]:
    """The pynvml module and NVML's GPUs, (handle, UUID), in NVML's order; raises when NVML cannot answer."""
    import pynvml

    pynvml.nvmlInit()
    handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
    return pynvml, [(handle, _uuid(pynvml, handle)) for handle in handles]


def _uuid(nvml: Any, handle: Any) -> str:
    uuid = nvml.nvmlDeviceGetUUID(handle)
    return uuid.decode() if isinstance(uuid, bytes) else str(uuid)


def _bare(uuid: str) -> str:
    bare = uuid.strip().lower()
    for prefix in ("gpu-", "mig-"):
        bare = bare.removeprefix(prefix)
    return bare


def _migs(nvml: Any, gpus: list[tuple[Any, str]]) -> list[tuple[Any, str]]:
    found = []
    for handle, _ in gpus:
        try:
            slots = nvml.nvmlDeviceGetMaxMigDeviceCount(handle)
        except Exception:  # not a MIG-capable GPU
            continue
        for slot in range(slots):
            try:
                mig = nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot)
                found.append((mig, _uuid(nvml, mig)))
            except Exception:  # an empty slot
                continue
    return found


def _match(candidates: list[tuple[Any, str]], wanted: str, *, prefix: bool) -> tuple[Any, str]:
    key = _bare(wanted)
    found = [c for c in candidates if (_bare(c[1]).startswith(key) if prefix else _bare(c[1]) == key)]
    if len(found) == 1:
        return found[0]
    what = "several" if found else "none"
    raise LookupError(f"'{wanted}' matches {what} of the {len(candidates)} device(s) NVML lists")


def _torch_uuid(cuda_index: int) -> str | None:
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    try:
        if not torch.cuda.is_available():
            return None
        return str(torch.cuda.get_device_properties(cuda_index).uuid)
    except Exception:  # a torch without device UUIDs
        return None


def _tokens(environ: Mapping[str, str]) -> list[str] | None:
    spec = environ.get("CUDA_VISIBLE_DEVICES")
    return None if spec is None else [token.strip() for token in spec.split(",") if token.strip()]


def _visible_token(cuda_index: int, environ: Mapping[str, str]) -> str:
    tokens = _tokens(environ)
    if tokens is None:
        return str(cuda_index)
    if cuda_index >= len(tokens):
        spec = environ.get("CUDA_VISIBLE_DEVICES")
        raise LookupError(f"CUDA_VISIBLE_DEVICES={spec!r} names no device at index {cuda_index}")
    return tokens[cuda_index]


def _by_token(nvml: Any, gpus: list[tuple[Any, str]], token: str) -> tuple[Any, str]:
    """NVML's device for a ``CUDA_VISIBLE_DEVICES`` token: an NVML index, a ``GPU-`` UUID or its prefix, or a
    ``MIG-`` UUID."""
    if token.isdigit():
        if int(token) >= len(gpus):
            raise LookupError(f"it is GPU {token}, but NVML lists {len(gpus)}")
        return gpus[int(token)]
    if token.upper().startswith("MIG-"):
        return _match(_migs(nvml, gpus), token, prefix=True)
    return _match(gpus, token, prefix=True)


def _visible_count(nvml: Any, gpus: list[tuple[Any, str]]) -> int:
    """CUDA devices ``CUDA_VISIBLE_DEVICES`` leaves visible: as CUDA does, the list ends at a token that names
    no device."""
    tokens = _tokens(os.environ)
    if tokens is None:
        return len(gpus)
    for count, token in enumerate(tokens):
        try:
            _by_token(nvml, gpus, token)
        except LookupError:
            return count
    return len(tokens)


def nvml_device(cuda_index: int, *, use_torch: bool = True, environ: Mapping[str, str] | None = None) -> NvmlDevice:
    """NVML's device for visible CUDA device ``cuda_index``: found by torch's UUID for it (when torch is
    imported and ``use_torch``), else by the token of ``CUDA_VISIBLE_DEVICES`` at that index."""
    environ = os.environ if environ is None else environ
    try:
        nvml, gpus = _nvml_gpus()
    except Exception as exc:  # no library, no driver, an old binding: all mean "no NVML figures here"
        return NvmlDevice(unavailable=f"NVML unavailable: {exc}")
    try:
        uuid = _torch_uuid(cuda_index) if use_torch else None
        if uuid is not None:  # a MIG slice's UUID comes as GPU-<uuid>: compared without the prefix
            handle, found = _match(gpus + _migs(nvml, gpus), uuid, prefix=False)
        else:
            handle, found = _by_token(nvml, gpus, _visible_token(cuda_index, environ))
    except LookupError as exc:
        return NvmlDevice(unavailable=f"NVML unavailable: cannot tell which device CUDA device {cuda_index} is: {exc}")
    return NvmlDevice(nvml, handle, found)


def physical_id(device: str) -> str:
    """A name for the physical device behind ``cpu`` or ``cuda:N`` that every process agrees on: its GPU or
    MIG UUID; without NVML, the ``CUDA_VISIBLE_DEVICES`` token (or the index when that is unset)."""
    if device == "cpu":
        return "cpu"
    index = int(device.partition(":")[2] or 0)
    found = nvml_device(index, use_torch=False)  # the same answer with or without torch imported
    if found.uuid is not None:
        return found.uuid
    try:
        token = _visible_token(index, os.environ)
    except LookupError:
        token = str(index)
    return f"gpu-{token}" if token.isdigit() else token


def lock_dir() -> Path:
    configured = os.environ.get(LOCK_DIR_ENV)
    path = Path(configured) if configured else Path(tempfile.gettempdir()) / "pytest-mlestimate-locks"
    if not path.is_dir():
        path.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            path.chmod(0o1777)  # shared by every user's profiles, like /tmp
    return path


_locks: dict[Path, tuple[threading.RLock, FileLock]] = {}
_locks_guard = threading.Lock()


@contextlib.contextmanager
def device_lock(device: str) -> Iterator[str]:
    """Hold the physical device ``device`` names for one profile, against this process's other threads and
    every other process (pytest, its xdist workers, the service): two profiles on one device corrupt each
    other's figures. The CPU is one device too. Yields the physical id."""
    physical = physical_id(resolve_device(device))
    path = lock_dir() / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', physical)}.lock"
    with _locks_guard:
        if path not in _locks:
            _locks[path] = (threading.RLock(), FileLock(path, mode=0o666))
        in_process, across_processes = _locks[path]
    with in_process, across_processes:
        yield physical
