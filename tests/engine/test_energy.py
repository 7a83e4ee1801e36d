"""Energy over the measured training steps: NVML's counter or integrated power samples, RAPL's package counters,
and the figures the result makes of them."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from pytest_mlestimate.api import estimate
from pytest_mlestimate.estimates.estimate import Estimate
from pytest_mlestimate.profiling.energy import GpuEnergy, RaplEnergy, StepEnergy, integrate
from pytest_mlestimate.profiling.monitor import ResourceMonitor
from pytest_mlestimate.profiling.profile import EnergyReading
from tests.engine.test_result import profile, scenario


class NvmlError(Exception):
    pass


class NotSupported(NvmlError):
    def __str__(self) -> str:
        return "Not Supported"


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FakeNvml:
    """The energy and power calls of ``pynvml``: a counter (millijoules) that advances with the clock at
    ``watts``, or none (``counter=False``, as before Volta)."""

    NVMLError_NotSupported = NotSupported

    def __init__(self, clock: FakeClock, watts: float = 250.0, counter: bool = True, power: bool = True) -> None:
        self.clock = clock
        self.watts = watts
        self.counter = counter
        self.power = power
        self.energy_mj = 5_000_000.0
        self.last = clock()

    def _advance(self) -> None:
        self.energy_mj += (self.clock() - self.last) * self.watts * 1000
        self.last = self.clock()

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: object) -> int:
        if not self.counter:
            raise NotSupported()
        self._advance()
        return int(self.energy_mj)

    def nvmlDeviceGetPowerUsage(self, handle: object) -> int:
        if not self.power:
            raise NotSupported()
        return int(self.watts * 1000)


HANDLE = object()


def test_the_energy_counter_is_read_before_and_after_the_steps() -> None:
    clock = FakeClock()
    nvml = FakeNvml(clock, watts=300.0)
    gpu = GpuEnergy(nvml, HANDLE, clock=clock)

    gpu.begin()
    clock.now += 2.0
    reading = gpu.end(steps=10)

    assert reading.method == "nvml-energy-counter"
    assert reading.joules == pytest.approx(600.0)
    assert (reading.steps, reading.seconds) == (10, pytest.approx(2.0))
    assert reading.unavailable is None


def test_without_a_counter_power_samples_are_integrated() -> None:
    clock = FakeClock()
    nvml = FakeNvml(clock, watts=100.0, counter=False)
    gpu = GpuEnergy(nvml, HANDLE, clock=clock)

    gpu.sample_power()  # outside a measurement: nothing is read
    gpu.begin()
    for watts in (200.0, 300.0):
        clock.now += 1.0
        nvml.watts = watts
        gpu.sample_power()
    clock.now += 1.0
    nvml.watts = 100.0
    reading = gpu.end(steps=4)

    # samples (0 s, 100 W), (1, 200), (2, 300), (3, 100): 150 + 250 + 200
    assert reading.joules == pytest.approx(600.0)
    assert reading.method == "nvml-power-samples"
    assert reading.detail is not None
    assert "4 power samples" in reading.detail and "not supported on this GPU" in reading.detail
    assert integrate([(0.0, 10.0), (2.0, 30.0)]) == pytest.approx(40.0)


def test_the_monitors_sampling_thread_takes_the_power_samples() -> None:
    nvml = FakeNvml(FakeClock(), watts=200.0, counter=False)
    monitor = ResourceMonitor("cpu", 0.01, threaded=True)
    monitor.gpu_energy = GpuEnergy(nvml, HANDLE)
    monitor.start_phase()
    try:
        monitor.gpu_energy.begin()
        time.sleep(0.2)
        reading = monitor.gpu_energy.end(steps=1)
    finally:
        monitor.end_phase()

    assert reading.method == "nvml-power-samples"
    assert reading.detail is not None and int(reading.detail.split()[0]) > 5
    assert reading.joules == pytest.approx(200.0 * reading.seconds, rel=0.2)


def test_a_gpu_with_neither_counter_nor_power_says_both() -> None:
    clock = FakeClock()
    gpu = GpuEnergy(FakeNvml(clock, counter=False, power=False), HANDLE, clock=clock)
    gpu.begin()
    clock.now += 1.0
    reading = gpu.end(steps=3)

    assert reading.joules is None
    assert reading.unavailable is not None
    assert "energy counter is not supported" in reading.unavailable
    assert "power reading is not supported" in reading.unavailable


def test_no_nvml_handle_gives_nvmls_reason_and_no_gpu_gives_its_own() -> None:
    gpu = GpuEnergy(None, None, unavailable="NVML unavailable: Driver Not Loaded")
    gpu.begin()
    assert gpu.end(steps=2).unavailable == "NVML unavailable: Driver Not Loaded"

    none = StepEnergy(None, RaplEnergy(Path("/nonexistent-powercap")), no_gpu="no GPU: profiled on the CPU")
    none.begin()
    on_gpu, on_cpu = none.end(steps=2)
    assert on_gpu.unavailable == "no GPU: profiled on the CPU"
    assert on_cpu.unavailable is not None and "no RAPL energy counters here" in on_cpu.unavailable


def rapl_tree(root: Path, packages: dict[str, tuple[str, int, int]]) -> Path:
    """Domains named like the kernel's: directory -> (name, energy_uj, max_energy_range_uj)."""
    for directory, (name, energy, top) in packages.items():
        domain = root / directory
        domain.mkdir(parents=True)
        (domain / "name").write_text(name + "\n")
        (domain / "energy_uj").write_text(f"{energy}\n")
        (domain / "max_energy_range_uj").write_text(f"{top}\n")
    return root


def set_energy(root: Path, directory: str, energy: int) -> None:
    (root / directory / "energy_uj").write_text(f"{energy}\n")


def test_rapl_sums_the_package_domains_only(tmp_path: Path) -> None:
    top = 262_143_328_850
    root = rapl_tree(
        tmp_path,
        {
            "intel-rapl:0": ("package-0", 1_000_000, top),
            "intel-rapl:0:0": ("core", 500_000, top),  # inside package 0
            "intel-rapl:1": ("package-1", 2_000_000, top),
            "intel-rapl:2": ("psys", 9_000_000, top),  # the platform: packages and more
            "intel-rapl-mmio:0": ("package-0", 1_000_000, top),  # package 0 again, through MMIO
        },
    )
    clock = FakeClock()
    rapl = RaplEnergy(root, clock=clock)
    rapl.begin()
    set_energy(root, "intel-rapl:0", 31_000_000)
    set_energy(root, "intel-rapl:0:0", 20_000_000)
    set_energy(root, "intel-rapl:1", 12_000_000)
    set_energy(root, "intel-rapl:2", 99_000_000)
    set_energy(root, "intel-rapl-mmio:0", 31_000_000)
    clock.now += 2.0
    reading = rapl.end(steps=5)

    assert reading.joules == pytest.approx(30.0 + 10.0)
    assert reading.method == "rapl"
    assert reading.detail == "2 package domain(s) summed: intel-rapl:0, intel-rapl:1"
    assert (reading.steps, reading.seconds) == (5, pytest.approx(2.0))


def test_rapl_counts_across_a_wrap_around(tmp_path: Path) -> None:
    top = 1_000_000_000
    root = rapl_tree(tmp_path, {"intel-rapl:0": ("package-0", top - 3_000_000, top)})
    rapl = RaplEnergy(root)
    rapl.begin()
    set_energy(root, "intel-rapl:0", 2_000_000)

    assert rapl.end(steps=1).joules == pytest.approx(5.0)


def test_an_unreadable_counter_is_null_with_the_reason(tmp_path: Path) -> None:
    root = rapl_tree(tmp_path / "powercap", {"intel-rapl:0": ("package-0", 1, 10**12)})
    counter = root / "intel-rapl:0" / "energy_uj"
    counter.unlink()
    counter.mkdir()  # a file root could read despite chmod 000; a directory nobody can
    rapl = RaplEnergy(root)
    rapl.begin()
    reading = rapl.end(steps=3)

    assert reading.joules is None
    assert reading.unavailable is not None
    assert reading.unavailable.startswith(f"RAPL energy counter {counter} could not be read")


def test_a_counter_only_root_may_read_says_so(tmp_path: Path) -> None:
    root = rapl_tree(tmp_path / "powercap", {"intel-rapl:0": ("package-0", 1, 10**12)})

    def read(path: Path) -> str:
        if path.name == "energy_uj":
            raise PermissionError(13, "Permission denied", str(path))
        return path.read_text()

    rapl = RaplEnergy(root, read=read)
    rapl.begin()

    assert rapl.end(steps=3).unavailable == (
        f"RAPL energy counters are not readable by this user ({root}/intel-rapl:0/energy_uj: permission denied)"
    )


def energy_profile(**changes: Any) -> Any:
    return profile(
        gpu_energy=EnergyReading(joules=1200.0, steps=4, seconds=4.0, method="nvml-energy-counter"),
        cpu_energy=EnergyReading(joules=80.0, steps=4, seconds=4.0, method="rapl", detail="1 package domain(s)"),
        **changes,
    )


def test_energy_figures_in_the_result() -> None:
    # 10 images at batch 4: 3 steps per epoch, 2 epochs
    result = Estimate(scenario(epochs=2), energy_profile()).to_dict()
    energy = result["energy"]

    assert energy["GPU Energy per Step"] == pytest.approx(300.0)
    assert energy["CPU Energy per Step"] == pytest.approx(20.0)
    assert energy["Energy per Training"] == pytest.approx(320.0 * 6)
    assert energy["Average GPU Power"] == pytest.approx(300.0)
    assert energy["Average CPU Power"] == pytest.approx(20.0)
    assert energy["Included"] == ["GPU", "CPU packages"]
    assert "not only this profile" in energy["Methods"]["CPU packages"]
    assert energy["Reasons"] == {}
    assert result["units"]["Energy per Training"] == "joules"
    assert result["units"]["Average GPU Power"] == "watts"


def test_an_unreadable_source_is_left_out_and_says_why() -> None:
    rapl_closed = EnergyReading(steps=4, seconds=4.0, unavailable="RAPL energy counters are not readable by this user")
    estimate_ = Estimate(scenario(), energy_profile().model_copy(update={"cpu_energy": rapl_closed}))
    energy = estimate_.to_dict()["energy"]

    assert energy["CPU Energy per Step"] is None
    assert energy["Energy per Training"] == pytest.approx(300.0 * 3)
    assert energy["Included"] == ["GPU"]
    assert energy["Reasons"]["CPU Energy per Step"] == "RAPL energy counters are not readable by this user"
    assert estimate_.metrics()["energy_per_training"] == pytest.approx(900.0)


def test_inference_and_misfits_have_no_energy_per_training_and_say_why() -> None:
    inference = Estimate(scenario(application_type="inference"), energy_profile()).to_dict()["energy"]
    assert inference["Energy per Training"] is None
    assert inference["Reasons"]["Energy per Training"] == "an inference scenario runs no training steps"

    misfit = Estimate(scenario(), energy_profile(failure="does not fit: needs more than 79.1 GiB"))
    assert misfit.metrics()["energy_per_training"] is None
    assert misfit.to_dict()["energy"]["Reasons"]["GPU Energy per Step"].startswith("not measured: does not fit")


def test_a_cpu_profile_of_the_tiny_model_says_why_gpu_energy_is_null() -> None:
    found = estimate(
        {
            "task_type": "detection",
            "architecture": "pytest_mlestimate.tiny:tiny_detector",
            "dataset_size": 20,
            "batch_size": 2,
            "image_size": [64, 64],
            "device": "cpu",
            "warmup_iterations": 1,
            "measure_iterations": 3,
        },
        cache=False,
        isolate=False,
    )
    energy = found.to_dict()["energy"]

    assert energy["GPU Energy per Step"] is None
    assert energy["Reasons"]["GPU Energy per Step"].startswith("no GPU: profiled on the CPU")
    assert found.profile.cpu_energy is not None and found.profile.cpu_energy.steps == 3
    if energy["CPU Energy per Step"] is None:
        assert "RAPL" in energy["Reasons"]["CPU Energy per Step"]
        assert energy["Energy per Training"] is None
    else:
        assert energy["CPU Energy per Step"] > 0
        assert energy["Energy per Training"] == pytest.approx(energy["CPU Energy per Step"] * 10)
