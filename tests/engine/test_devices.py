"""Devices without a GPU: NVML and torch's CUDA device list are faked. A CUDA index is mapped to the right
physical GPU or MIG slice (or the reason why not), GPU memory figures say what they are, and one lock per
physical device keeps every process's profiles apart."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psutil
import pytest
import torch
import yaml

from pytest_mlestimate.core import environment
from pytest_mlestimate.core.devices import Device, device_lock, is_gpu, physical_id, resolve_device
from pytest_mlestimate.core.errors import DeviceUnavailableError
from pytest_mlestimate.plugin.gpus import missing_gpu_reason, pin_worker
from pytest_mlestimate.profiling.monitor import Nvml, ResourceMonitor
from pytest_mlestimate.service.profile_queue import lane_for

MiB = 2**20


class NvmlError(Exception):
    pass


@dataclass
class FakeGpu:
    uuid: str
    memory: int = 0
    """What NVML shows for this process."""
    used: int = 0
    """What the whole device holds."""
    util: float = 0.0
    total: int = 80 * 2**30
    """The card's memory."""
    migs: list[FakeGpu] = field(default_factory=list)
    shows_processes: bool = True


class FakeNvml:
    """The part of ``pynvml`` the engine calls."""

    def __init__(self, gpus: list[FakeGpu], broken: str | None = None) -> None:
        self.gpus = gpus
        self.broken = broken

    def nvmlInit(self) -> None:
        if self.broken:
            raise NvmlError(self.broken)

    def nvmlSystemGetDriverVersion(self) -> str:
        return "580.1"

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeGpu:
        return self.gpus[index]

    def nvmlDeviceGetUUID(self, handle: FakeGpu) -> str:
        return handle.uuid

    def nvmlDeviceGetName(self, handle: FakeGpu) -> str:
        return "NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetMaxMigDeviceCount(self, handle: FakeGpu) -> int:
        if not handle.migs:
            raise NvmlError("Not Supported")
        return 7

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: FakeGpu, index: int) -> FakeGpu:
        if index >= len(handle.migs):
            raise NvmlError("Not Found")
        return handle.migs[index]

    def nvmlDeviceGetComputeRunningProcesses(self, handle: FakeGpu) -> list[Any]:
        return [SimpleNamespace(pid=os.getpid(), usedGpuMemory=handle.memory)] if handle.shows_processes else []

    def nvmlDeviceGetMemoryInfo(self, handle: FakeGpu) -> Any:
        return SimpleNamespace(used=handle.used, total=handle.total)

    def nvmlDeviceGetUtilizationRates(self, handle: FakeGpu) -> Any:
        return SimpleNamespace(gpu=handle.util)


def uuid_of(n: int, kind: str = "GPU") -> str:
    return f"{kind}-{n}{n}{n}{n}{n}{n}{n}{n}-0000-4000-8000-00000000000{n}"


MIG_A, MIG_B = FakeGpu(uuid_of(8, "MIG"), memory=80 * MiB), FakeGpu(uuid_of(9, "MIG"), memory=90 * MiB)


def machine() -> list[FakeGpu]:
    """Four GPUs, each showing a different figure for this process; GPU 1 is split into two MIG slices."""
    gpus = [FakeGpu(uuid_of(n), memory=(n + 1) * 100 * MiB, util=10.0 * (n + 1)) for n in range(4)]
    gpus[1].migs = [MIG_A, MIG_B]
    return gpus


@pytest.fixture
def nvml(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeNvml]:
    """NVML faked for the engine, CUDA_VISIBLE_DEVICES unset, a torch that sees no CUDA device."""
    fake = FakeNvml(machine())
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    cuda(monkeypatch, [])
    environment._nvml_inventory.cache_clear()
    yield fake
    environment._nvml_inventory.cache_clear()


def cuda(monkeypatch: pytest.MonkeyPatch, uuids: list[str | None]) -> None:
    """torch sees one CUDA device per entry, with that UUID (None: a torch that gives no UUID)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: bool(uuids))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: len(uuids))

    def properties(index: int) -> Any:
        uuid = uuids[index]
        return SimpleNamespace(name="fake", uuid=uuid) if uuid else SimpleNamespace(name="fake")

    monkeypatch.setattr(torch.cuda, "get_device_properties", properties)


@pytest.mark.parametrize(("caller", "worker"), [("3", None), ("1,3", "gw1")])
def test_a_process_pinned_to_gpu_3_reads_gpu_3_not_gpu_0(
    nvml: FakeNvml, monkeypatch: pytest.MonkeyPatch, caller: str, worker: str | None
) -> None:
    environ = {"CUDA_VISIBLE_DEVICES": caller}
    if worker:
        assert pin_worker(environ, worker) == "3"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", environ["CUDA_VISIBLE_DEVICES"])
    cuda(monkeypatch, [None])  # it sees one device, cuda:0, and torch gives no UUID

    seen = Nvml(0)

    assert seen.unavailable is None
    assert seen.process_memory() == (400 * MiB, False)
    assert seen.utilization() == 40.0
    assert physical_id(resolve_device("cuda")) == uuid_of(3)


@pytest.mark.parametrize("spec", [uuid_of(2), uuid_of(2)[:12]])
def test_cuda_visible_devices_given_as_a_uuid_or_its_prefix(
    nvml: FakeNvml, monkeypatch: pytest.MonkeyPatch, spec: str
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", spec)

    assert Nvml(0).process_memory() == (300 * MiB, False)
    assert physical_id("cuda:0") == uuid_of(2)


def test_torchs_uuid_names_the_device_whatever_its_index(nvml: FakeNvml, monkeypatch: pytest.MonkeyPatch) -> None:
    cuda(monkeypatch, [uuid_of(2), uuid_of(0).removeprefix("GPU-")])  # older torch prints it without the prefix

    assert Nvml(0).process_memory() == (300 * MiB, False)
    assert Nvml(1).process_memory() == (100 * MiB, False)


def test_a_mig_device_resolves_to_its_slice(nvml: FakeNvml, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", MIG_B.uuid)

    seen = Nvml(0)

    assert seen.handle is MIG_B
    assert seen.process_memory() == (90 * MiB, False)
    assert physical_id("cuda:0") == MIG_B.uuid


def test_torchs_gpu_prefixed_uuid_of_a_mig_slice_resolves(nvml: FakeNvml, monkeypatch: pytest.MonkeyPatch) -> None:
    cuda(monkeypatch, [MIG_A.uuid.replace("MIG-", "GPU-")])

    seen = Nvml(0)

    assert seen.handle is MIG_A
    assert seen.uuid == MIG_A.uuid
    assert seen.process_memory() == (80 * MiB, False)


@pytest.mark.parametrize(
    ("spec", "torch_uuid", "reason"),
    [
        ("7", None, "it is GPU 7, but NVML lists 4"),
        ("GPU-ffff", None, "'GPU-ffff' matches none of the 4 device(s) NVML lists"),
        ("MIG-ffff", None, "'MIG-ffff' matches none of the 2 device(s) NVML lists"),
        (None, uuid_of(7), f"'{uuid_of(7)}' matches none of the 6 device(s) NVML lists"),
    ],
)
def test_a_device_nvml_cannot_find_has_a_reason_not_another_gpu(
    nvml: FakeNvml, monkeypatch: pytest.MonkeyPatch, spec: str | None, torch_uuid: str | None, reason: str
) -> None:
    if spec is not None:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", spec)
    cuda(monkeypatch, [torch_uuid])

    seen = Nvml(0)

    assert seen.handle is None
    assert seen.unavailable == f"NVML unavailable: cannot tell which device CUDA device 0 is: {reason}"
    assert seen.process_memory() is None
    assert seen.utilization() is None


def test_devices_resolve_from_nvml_without_importing_torch(nvml: FakeNvml, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "torch")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")

    assert resolve_device("auto") == "cuda:0"
    assert resolve_device("cuda") == "cuda:0"
    with pytest.raises(DeviceUnavailableError, match=r"device 'cuda:1' asked for, but only 1 CUDA device\(s\)"):
        resolve_device("cuda:1")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", MIG_B.uuid)
    assert resolve_device("cuda") == "cuda:0"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,GPU-ffff,1")  # as CUDA does, the list ends at GPU-ffff
    assert resolve_device("cuda") == "cuda:0"
    assert missing_gpu_reason("cuda:1") == "device 'cuda:1' asked for, but only 1 CUDA device(s) are visible"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert resolve_device("auto") == "cpu"
    assert missing_gpu_reason("cuda") == (
        "device 'cuda' asked for, but no CUDA device is available here (CUDA_VISIBLE_DEVICES='')"
    )
    assert "torch" not in sys.modules


def test_once_torch_is_imported_it_has_the_last_word(nvml: FakeNvml, monkeypatch: pytest.MonkeyPatch) -> None:
    cuda(monkeypatch, [])  # NVML lists four GPUs, but this torch cannot use them
    assert resolve_device("auto") == "cpu"
    with pytest.raises(DeviceUnavailableError, match="no CUDA device is available here"):
        resolve_device("cuda")
    cuda(monkeypatch, [None, None])
    assert [resolve_device(d) for d in ("auto", "cuda", "cuda:1", "cpu")] == ["cuda:0", "cuda:0", "cuda:1", "cpu"]


def test_every_name_of_one_gpu_takes_the_same_lock(
    nvml: FakeNvml, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MLESTIMATE_LOCK_DIR", str(tmp_path))
    cuda(monkeypatch, [None] * 4)
    with device_lock("cuda:3") as unpinned:
        pass
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    cuda(monkeypatch, [None])
    with device_lock("auto") as pinned:
        pass

    assert unpinned == pinned == uuid_of(3)
    assert [p.name for p in tmp_path.iterdir()] in ([], [f"{uuid_of(3)}.lock"])  # filelock may remove it


def test_the_service_gives_every_name_of_one_device_one_lane(nvml: FakeNvml, monkeypatch: pytest.MonkeyPatch) -> None:
    cuda(monkeypatch, [None, None])

    lanes = {
        (device, auto): lane_for(device, auto)
        for device, auto in [("auto", "cuda:0"), ("cuda", "cpu"), ("cuda:0", "cpu")]
    }

    assert set(lanes.values()) == {uuid_of(0)}
    assert lane_for("cuda:1", "cpu") == uuid_of(1)
    assert lane_for("auto", "cpu") == lane_for("cpu", "cuda:0") == "cpu"
    with pytest.raises(DeviceUnavailableError):  # not here: refused before any lane exists
        lane_for("cuda:5", "cpu")


@dataclass
class FakeAllocator:
    """torch.cuda's memory figures at the instant the test sets."""

    reserved: int = 0
    free: int = 0
    total: int = 80 * 2**30
    peak: int = 0

    def set(self, reserved: int, **changes: int) -> None:
        self.reserved = reserved
        self.peak = max(self.peak, reserved)
        for name, value in changes.items():
            setattr(self, name, value)


@pytest.fixture
def allocator(monkeypatch: pytest.MonkeyPatch) -> FakeAllocator:
    fake = FakeAllocator()
    for name in ("synchronize", "empty_cache", "reset_peak_memory_stats"):
        monkeypatch.setattr(torch.cuda, name, lambda *_: None)
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda *_: fake.reserved)
    monkeypatch.setattr(torch.cuda, "max_memory_reserved", lambda *_: fake.peak)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda *_: fake.peak // 2)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *_: (fake.free, fake.total))
    return fake


def test_gpu_memory_is_read_at_one_instant_and_the_bound_says_so(
    nvml: FakeNvml, monkeypatch: pytest.MonkeyPatch, allocator: FakeAllocator
) -> None:
    cuda(monkeypatch, [uuid_of(0)])
    gpu = nvml.gpus[0]
    monitor = ResourceMonitor("cuda:0", 0.01, threaded=False)
    allocator.set(100 * MiB)
    gpu.memory = 600 * MiB  # context and workspaces: 500 MiB above reserved
    monitor.start_phase()
    allocator.set(1000 * MiB)
    gpu.memory = 1300 * MiB  # the most this process held at one instant; 300 MiB above reserved
    monitor.mark()
    allocator.set(200 * MiB)
    gpu.memory = 900 * MiB  # 700 MiB above reserved, while reserved is low
    gpu.util = 35.0
    monitor.mark()
    gpu.util = 90.0  # while steps run back to back, between the marks
    monitor.sample_utilization()
    gpu.util = 5.0

    peaks = monitor.end_phase()

    assert peaks.peak_gpu_sampled == 1300 * MiB
    assert peaks.peak_gpu_memory == (1000 + 700) * MiB  # each maximum from its own instant
    assert peaks.peak_gpu_reserved == 1000 * MiB
    assert peaks.gpu_memory_method is not None
    assert "NVML's figure for this process" in peaks.gpu_memory_method
    assert "upper bound: the two maxima may come from different instants" in peaks.gpu_memory_method
    assert peaks.peak_gpu_utilization == 90.0
    assert peaks.samples == 4  # sample_utilization is not a sample: it reads nothing else
    assert monitor.warnings == []


def test_without_nvml_gpu_memory_is_the_devices_used_memory_and_says_so(
    nvml: FakeNvml, monkeypatch: pytest.MonkeyPatch, allocator: FakeAllocator
) -> None:
    nvml.broken = "Driver Not Loaded"
    cuda(monkeypatch, [uuid_of(0)])
    monitor = ResourceMonitor("cuda:0", 0.01, threaded=False)
    allocator.set(100 * MiB, free=allocator.total - 1600 * MiB)  # the context and another process's 1 GiB
    assert monitor.gpu_memory_now() == 1600 * MiB
    monitor.start_phase()
    allocator.set(2000 * MiB, free=allocator.total - 3600 * MiB)
    monitor.mark()

    peaks = monitor.end_phase()

    assert monitor.gpu_unavailable == "NVML unavailable: Driver Not Loaded"
    assert peaks.peak_gpu_reserved == 2000 * MiB
    assert peaks.peak_gpu_memory == 3600 * MiB  # not reserved alone
    assert peaks.peak_gpu_sampled == 3600 * MiB
    assert peaks.peak_gpu_utilization is None
    assert peaks.gpu_memory_method is not None
    assert "the device's used memory from cudaMemGetInfo" in peaks.gpu_memory_method
    assert "NVML unavailable: Driver Not Loaded" in peaks.gpu_memory_method
    (warning,) = monitor.warnings
    assert "NVML could not give this process's GPU memory (NVML unavailable: Driver Not Loaded)" in warning
    assert "cudaMemGetInfo, other processes included" in warning


def test_sampling_utilisation_on_the_cpu_costs_nothing() -> None:
    monitor = ResourceMonitor("cpu", 0.01, threaded=False)
    monitor.start_phase()
    monitor.sample_utilization()

    peaks = monitor.end_phase()

    assert peaks.peak_gpu_utilization is None and peaks.peak_gpu_memory is None
    assert peaks.samples == 2


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    paths = [str(tmp_path), *sys.path]
    env.update(PYTHONPATH=os.pathsep.join(p for p in paths if p), MLESTIMATE_LOCK_DIR=str(tmp_path / "locks"))
    env.update(extra)
    return env


def test_a_process_waits_for_the_device_another_process_holds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLESTIMATE_LOCK_DIR", str(tmp_path / "locks"))
    take = "from pytest_mlestimate.core.devices import device_lock\nwith device_lock('cpu'):\n    print('held')\n"
    with device_lock("cpu"):
        other = subprocess.Popen([sys.executable, "-c", take], env=_env(tmp_path), stdout=subprocess.PIPE, text=True)
        time.sleep(1.5)
        assert other.poll() is None  # still waiting
    out, _ = other.communicate(timeout=60)

    assert other.returncode == 0 and out == "held\n"


RENDEZVOUS = textwrap.dedent(
    """
    import os
    import time
    from pathlib import Path

    from pytest_mlestimate.tiny import tiny_detector

    LOG = Path(os.environ["MLESTIMATE_TEST_LOG"])


    def _log(who, event):
        with LOG.open("a") as log:
            log.write(f"{who} {event} {time.time()!r}\\n")


    def _build(who, **kwargs):
        _log(who, "start")
        deadline = time.monotonic() + 3  # wait for the other profile: it only comes if both run at once
        while time.monotonic() < deadline and LOG.read_text().count(" start ") < 2:
            time.sleep(0.05)
        model = tiny_detector(**kwargs)
        model.register_forward_hook(lambda *_: _log(who, "forward"))
        return model


    def by_pytest(**kwargs):
        return _build("pytest", **kwargs)


    def by_api(**kwargs):
        return _build("api", **kwargs)
    """
)


def tiny(factory: str) -> dict[str, Any]:
    return {
        "task_type": "detection",
        "architecture": f"rendezvous_model:{factory}",
        "dataset_size": 100,
        "batch_size": 2,
        "image_size": [64, 64],
        "device": "cpu",
        "warmup_iterations": 1,
        "measure_iterations": 2,
    }


def test_pytest_and_the_python_api_never_profile_on_one_device_at_once(tmp_path: Path) -> None:
    (tmp_path / "rendezvous_model.py").write_text(RENDEZVOUS)
    (tmp_path / "scenarios.yaml").write_text(yaml.safe_dump({"scenarios": [{"name": "tiny", **tiny("by_pytest")}]}))
    log = tmp_path / "profiles.log"
    env = _env(tmp_path, MLESTIMATE_TEST_LOG=str(log))
    commands = [
        [sys.executable, "-m", "pytest", "--mlestimate", "--mlestimate-no-cache", "-p", "no:cacheprovider", "-q"],
        [sys.executable, "-c", f"import pytest_mlestimate as m; m.estimate({tiny('by_api')!r}, cache=False)"],
    ]
    runs = [
        subprocess.Popen(c, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for c in commands
    ]
    outputs = [run.communicate(timeout=300)[0].decode() for run in runs]

    assert [run.returncode for run in runs] == [0, 0], outputs
    assert "1 passed" in outputs[0]
    spans: dict[str, list[float]] = {}
    for line in log.read_text().splitlines():
        who, _, at = line.split()
        spans.setdefault(who, []).append(float(at))
    assert set(spans) == {"pytest", "api"}
    (_, first_ends), (second_starts, _) = sorted((min(times), max(times)) for times in spans.values())
    assert first_ends < second_starts, "both profiles ran at the same time on one device"


def test_a_device_value_says_whether_it_is_a_gpu_which_one_and_its_memory(
    nvml: FakeNvml, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    nvml.gpus[3].total = 141 * 2**30
    gpu = Device.of("cuda:0")
    assert gpu.is_gpu and gpu.index == 0 and gpu.physical_id() == uuid_of(3)  # the caller's GPU 3, not NVML's 0
    assert gpu.memory_bytes() == 141 * 2**30
    cpu = Device.of(torch.device("cpu"))
    assert not cpu.is_gpu and cpu.physical_id() == "cpu" and cpu.memory_bytes() == psutil.virtual_memory().total
    assert is_gpu(torch.device("cuda", 1)) and Device.of("cuda:1").index == 1 and not is_gpu("cpu")
