"""Energy drawn over the measured training steps: the GPU's from NVML, the CPU packages' from RAPL.

Each source is read right before and right after the measured steps (the profiler synchronises the device
first), so warm-up, phase timings and inference are left out.

GPU: NVML's total energy counter (millijoules since the driver loaded, Volta and later); where the GPU has
none (``NVMLError_NotSupported``), the power samples (milliwatts) taken during the steps are integrated over
their times (trapezoid rule). Both are of the whole device, other processes on it included.

CPU: the kernel's powercap tree (``/sys/class/powercap/intel-rapl:N/energy_uj``, microjoules; AMD's RAPL
driver publishes the same tree), summed over the package domains. It covers the whole package, every process on
it, not only this profile, and is usually readable by root only.
"""

from __future__ import annotations

import itertools
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pytest_mlestimate.profiling.profile import EnergyReading

POWERCAP_ROOT = Path("/sys/class/powercap")
_PACKAGE_DOMAIN = re.compile(r"^intel-rapl:\d+$")
"""A top-level RAPL domain; ``intel-rapl:N:M`` are its subdomains (cores, uncore, DRAM), already inside it."""

Clock = Callable[[], float]


def _read_text(path: Path) -> str:
    return path.read_text(encoding="ascii")


class RaplEnergy:
    """The CPU packages' RAPL counters. ``read`` is how a file is read (a test's fake tree, or a failing reader)."""

    def __init__(
        self,
        root: Path = POWERCAP_ROOT,
        read: Callable[[Path], str] = _read_text,
        clock: Clock = time.perf_counter,
    ) -> None:
        self.root = root
        self._read = read
        self._clock = clock
        self.domains: list[Path] = []
        self.unavailable: str | None = None
        self._start: list[int] | None = None
        self._started = 0.0
        self._problem: str | None = None
        self._find_domains()

    def _find_domains(self) -> None:
        try:
            candidates = sorted(p for p in self.root.iterdir() if _PACKAGE_DOMAIN.match(p.name))
        except OSError:
            candidates = []
        for domain in candidates:
            try:
                name = self._read(domain / "name").strip()
            except (OSError, UnicodeError):
                name = ""
            if name and not name.startswith("package"):
                continue  # 'psys', the platform domain: it holds the packages and more, and would count them twice
            self.domains.append(domain)
        if not self.domains:
            self.unavailable = f"no RAPL energy counters here ({self.root} has no intel-rapl package domain)"

    def _counter(self, domain: Path, file: str = "energy_uj") -> int:
        path = domain / file
        try:
            return int(self._read(path).strip())
        except PermissionError:
            raise _Unreadable(
                f"RAPL energy counters are not readable by this user ({path}: permission denied)"
            ) from None
        except OSError as exc:
            raise _Unreadable(f"RAPL energy counter {path} could not be read: {exc.strerror or exc}") from None
        except (ValueError, UnicodeError):
            raise _Unreadable(f"RAPL energy counter {path} does not hold a number") from None

    def _read_all(self) -> list[int]:
        return [self._counter(domain) for domain in self.domains]

    def begin(self) -> None:
        self._problem = None
        self._start = None
        self._started = self._clock()
        if self.unavailable is not None:
            return
        try:
            self._start = self._read_all()
        except _Unreadable as exc:
            self._problem = str(exc)

    def end(self, steps: int) -> EnergyReading:
        seconds = self._clock() - self._started
        problem = self.unavailable or self._problem
        if problem is None and self._start is not None:
            try:
                joules = sum(
                    self._delta(domain, before, after) for domain, before, after in self._pairs(self._read_all())
                )
            except _Unreadable as exc:
                problem = str(exc)
            else:
                names = ", ".join(domain.name for domain in self.domains)
                return EnergyReading(
                    joules=joules,
                    steps=steps,
                    seconds=seconds,
                    method="rapl",
                    detail=f"{len(self.domains)} package domain(s) summed: {names}",
                )
        return EnergyReading(steps=steps, seconds=seconds, unavailable=problem or "RAPL was not read")

    def _pairs(self, after: list[int]) -> list[tuple[Path, int, int]]:
        assert self._start is not None
        return list(zip(self.domains, self._start, after, strict=True))

    def _delta(self, domain: Path, before: int, after: int) -> float:
        """Joules between two readings of one counter, which wraps to 0 past ``max_energy_range_uj``."""
        change = after - before
        if change < 0:
            change += self._counter(domain, "max_energy_range_uj")
        return change / 1e6


class _Unreadable(Exception):
    pass


class GpuEnergy:
    """One GPU's energy from NVML (``nvml``: the pynvml module, or a test's stand-in; ``handle``: the device's).

    The profile's monitor calls ``sample_power`` from its sampling thread and after each back-to-back step;
    power is read only while a measurement needs it (the GPU has no energy counter)."""

    def __init__(
        self, nvml: Any, handle: Any, unavailable: str | None = None, clock: Clock = time.perf_counter
    ) -> None:
        self._nvml = nvml
        self._handle = handle
        self.unavailable = unavailable if handle is None else None
        self._clock = clock
        self._lock = threading.Lock()
        self._recording = False
        self._samples: list[tuple[float, float]] = []
        self._start_mj: int | None = None
        self._started = 0.0
        self._counter_problem: str | None = None
        self._power_problem: str | None = None

    def _counter_mj(self) -> int:
        return int(self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle))

    def begin(self) -> None:
        self._recording = False  # an earlier measurement that ended in an exception may have left it on
        self._start_mj = None
        self._counter_problem = self._power_problem = None
        with self._lock:
            self._samples = []
        self._started = self._clock()
        if self._handle is None:
            return
        try:
            self._start_mj = self._counter_mj()
        except Exception as exc:  # NVMLError_NotSupported before Volta and on MIG slices, among others
            self._counter_problem = self._nvml_problem("energy counter", "nvmlDeviceGetTotalEnergyConsumption", exc)
            self._recording = True
            self.sample_power()

    def sample_power(self) -> None:
        """One power sample, while a measurement integrates them; otherwise nothing."""
        if not self._recording:
            return
        try:
            watts = float(self._nvml.nvmlDeviceGetPowerUsage(self._handle)) / 1000.0
        except Exception as exc:
            self._power_problem = self._nvml_problem("power reading", "nvmlDeviceGetPowerUsage", exc)
            return
        with self._lock:
            self._samples.append((self._clock(), watts))

    def end(self, steps: int) -> EnergyReading:
        seconds = self._clock() - self._started
        if self._handle is None:
            return EnergyReading(
                steps=steps, seconds=seconds, unavailable=self.unavailable or "NVML has no handle for this GPU"
            )
        if self._start_mj is not None:
            try:
                used_mj = self._counter_mj() - self._start_mj
            except Exception as exc:
                problem = self._nvml_problem("energy counter", "nvmlDeviceGetTotalEnergyConsumption", exc)
                return EnergyReading(steps=steps, seconds=seconds, unavailable=problem)
            if used_mj <= 0:
                return EnergyReading(
                    steps=steps,
                    seconds=seconds,
                    unavailable=f"NVML's energy counter did not advance over the {seconds:.2f} s of measured steps",
                )
            return EnergyReading(
                joules=used_mj / 1000.0,
                steps=steps,
                seconds=seconds,
                method="nvml-energy-counter",
                detail="nvmlDeviceGetTotalEnergyConsumption read before and after the measured steps",
            )
        self.sample_power()
        self._recording = False
        with self._lock:
            samples = sorted(self._samples)
        if len(samples) < 2 or samples[-1][0] <= samples[0][0]:
            why = self._power_problem or f"{len(samples)} power sample(s), too few to integrate"
            return EnergyReading(steps=steps, seconds=seconds, unavailable=f"{self._counter_problem}; {why}")
        return EnergyReading(
            joules=integrate(samples),
            steps=steps,
            seconds=seconds,
            method="nvml-power-samples",
            detail=f"{len(samples)} power samples over {samples[-1][0] - samples[0][0]:.2f} s, integrated by the "
            f"trapezoid rule ({self._counter_problem})",
        )

    def _nvml_problem(self, what: str, call: str, exc: BaseException) -> str:
        not_supported = getattr(self._nvml, "NVMLError_NotSupported", None)
        if isinstance(not_supported, type) and isinstance(exc, not_supported):
            return f"NVML's {what} is not supported on this GPU ({call}: {exc})"
        return f"NVML's {what} failed ({call}: {type(exc).__name__}: {exc})"


def integrate(samples: list[tuple[float, float]]) -> float:
    """Joules from (seconds, watts) samples in time order, by the trapezoid rule."""
    return sum((t1 - t0) * (w0 + w1) / 2 for (t0, w0), (t1, w1) in itertools.pairwise(samples))


class StepEnergy:
    """Both sources over one run of measured steps: ``begin()`` before the first step, ``end(steps)`` after the
    last, each after a synchronisation of the device. ``gpu`` None: no GPU, ``no_gpu`` says why."""

    def __init__(self, gpu: GpuEnergy | None, cpu: RaplEnergy, no_gpu: str = "profiled on the CPU") -> None:
        self.gpu = gpu
        self.cpu = cpu
        self.no_gpu = no_gpu

    def begin(self) -> None:
        self.cpu.begin()
        if self.gpu is not None:
            self.gpu.begin()

    def end(self, steps: int) -> tuple[EnergyReading, EnergyReading]:
        """(GPU, CPU packages)."""
        gpu = self.gpu.end(steps) if self.gpu is not None else EnergyReading(steps=steps, unavailable=self.no_gpu)
        return gpu, self.cpu.end(steps)
