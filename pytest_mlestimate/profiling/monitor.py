"""Resource sampling during a profile: process-tree RAM and CPU (psutil), GPU memory (PyTorch allocator
and NVML) and GPU utilisation (NVML).

Two modes, chosen by the scenario's ``threading`` field: step-wise, where the profiler calls ``mark()``
at fixed points of each step, and threaded, where a background thread samples at a fixed interval.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import psutil

from pytest_mlestimate.core.devices import is_gpu, nvml_device
from pytest_mlestimate.profiling import turns
from pytest_mlestimate.profiling.contention import Window
from pytest_mlestimate.profiling.energy import GpuEnergy
from pytest_mlestimate.profiling.process_tree import ProcessTree
from pytest_mlestimate.profiling.profile import PhasePeaks

CPU_WINDOW_S = 0.1
"""CPU time advances in 10 ms ticks on Linux, so utilisation is computed over windows of at least this."""


class Nvml:
    """NVML access for one CUDA device; every query answers None when NVML cannot."""

    def __init__(self, cuda_index: int) -> None:
        found = nvml_device(cuda_index)
        self._nvml = found.nvml
        self.module: Any = found.nvml
        self.handle: Any = found.handle
        self.uuid = found.uuid
        self.unavailable = found.unavailable
        self.device_wide = False
        """True once NVML hid this process's own figure and the device's total was used instead."""

    def process_memory(self) -> tuple[int, bool] | None:
        """(bytes, device-wide): GPU memory this process holds, CUDA context included; the device's used
        memory, with device-wide True, where NVML hides the per-process figure."""
        if self.handle is None:
            return None
        try:
            for proc in self._nvml.nvmlDeviceGetComputeRunningProcesses(self.handle):
                if proc.pid == os.getpid() and proc.usedGpuMemory is not None:
                    return int(proc.usedGpuMemory), False
            self.device_wide = True  # another PID namespace, or no permission to see per-process usage
            return int(self._nvml.nvmlDeviceGetMemoryInfo(self.handle).used), True
        except Exception:  # NVMLError, or NVMLLibraryMismatchError (not an NVMLError) on an older driver
            return None

    def other_processes(self) -> int:
        """Processes other than this one and its family computing on the device: each takes SMs and memory
        bandwidth from the steps measured. Where NVML lists PIDs of another namespace (this process is not
        among them), every process but one is counted as another's; 0 where NVML cannot tell."""
        if self.handle is None:
            return 0
        try:
            pids = {proc.pid for proc in self._nvml.nvmlDeviceGetComputeRunningProcesses(self.handle)}
        except Exception:  # NVMLError, or a binding without the call
            return 0
        family = _family_pids()
        if os.getpid() in pids:
            return len(pids - family)
        return max(len(pids) - 1, 0)

    def utilization(self) -> float | None:
        if self.handle is None:
            return None
        try:
            return float(self._nvml.nvmlDeviceGetUtilizationRates(self.handle).gpu)
        except Exception:  # NVML_ERROR_NOT_SUPPORTED on MIG slices, among others
            return None


def _family_pids() -> set[int]:
    """This process, its descendants and its ancestors (a parent that holds a CUDA context computes nothing
    while it waits for this one), and the partner it measures in turns with (it computes only in its turns)."""
    me = psutil.Process()
    family = {me.pid}
    partner = turns.current()
    if partner is not None and partner.partner_pid is not None:
        family.add(partner.partner_pid)
    with contextlib.suppress(psutil.Error):
        family |= {p.pid for p in me.children(recursive=True)} | {p.pid for p in me.parents()}
    return family


@dataclass
class _Peaks:
    rss: int = 0
    cpu: float | None = None
    gpu_overhead: int | None = None
    gpu_sampled: int | None = None
    gpu_source: str | None = None
    gpu_util: float | None = None
    samples: int = 0
    cpu_mark: tuple[float, float] = (0.0, 0.0)
    phase_start: tuple[float, float] = (0.0, 0.0)
    lock: threading.Lock = field(default_factory=threading.Lock)


_OVERHEAD_SEEN_IN = {
    "nvml": "NVML's figure for this process",
    "nvml-device": "NVML's used memory of the whole device (this process's own figure is hidden; other processes "
    "included)",
    "cudaMemGetInfo": "the device's used memory from cudaMemGetInfo (other processes included; {why})",
}
"""Where the memory beyond PyTorch's reserved bytes was read, best first."""


class ResourceMonitor:
    def __init__(self, device: str, interval_s: float, threaded: bool) -> None:
        self.device = device
        self.interval_s = interval_s
        self.threaded = threaded
        self.tree = ProcessTree()
        self.cuda_index: int | None = None
        self.nvml: Nvml | None = None
        self.gpu_energy: GpuEnergy | None = None
        """The GPU's energy over the measured steps; its power samples, where needed, are taken with ours."""
        if is_gpu(device):
            import torch

            self.cuda_index = torch.device(device).index or 0
            self.nvml = Nvml(self.cuda_index)
            self.gpu_energy = GpuEnergy(self.nvml.module, self.nvml.handle, self.nvml.unavailable)
        self._peaks = _Peaks()
        self._sources: set[str | None] = set()
        """Where GPU memory beyond reserved was read (None: nowhere), over the monitor's life."""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def gpu_unavailable(self) -> str | None:
        if self.cuda_index is None:
            import torch

            if torch.cuda.is_available():
                return "profiled on the CPU as the scenario's device asks"
            return "profiled on the CPU: no CUDA device is available here"
        return self.nvml.unavailable if self.nvml else None

    def window(self) -> Window:
        """A contention window over this monitor's process tree and, on a GPU, its device's other processes."""
        return Window(self.tree, self.nvml.other_processes if self.nvml is not None else None)

    @property
    def warnings(self) -> list[str]:
        """What a profile must say about how its GPU memory was read."""
        found = []
        if "nvml-device" in self._sources:
            found.append(
                "NVML did not show this process's own GPU memory (a container's PID namespace or missing "
                "permission): Peak GPU Memory counts everything on the device, other processes included"
            )
        if "cudaMemGetInfo" in self._sources:
            found.append(
                f"NVML could not give this process's GPU memory ({self._nvml_problem()}): Peak GPU Memory and "
                "VRAM before training count the device's used memory from cudaMemGetInfo, other processes included"
            )
        if None in self._sources:
            found.append(
                "neither NVML nor cudaMemGetInfo answered: Peak GPU Memory is PyTorch's reserved peak only, "
                "without the CUDA context and workspaces"
            )
        return found

    def _nvml_problem(self) -> str:
        return (self.nvml.unavailable if self.nvml else None) or "its queries failed"

    def _gpu_memory(self) -> tuple[int, int | None, str | None]:
        """(reserved, held, where held was read), read at one instant: PyTorch's reserved bytes and what the
        device holds for this process (NVML), or the device's used memory where NVML cannot tell."""
        import torch

        reserved = int(torch.cuda.memory_reserved(self.cuda_index))
        read = self.nvml.process_memory() if self.nvml is not None else None
        if read is not None:
            held, source = read[0], "nvml-device" if read[1] else "nvml"
        else:
            try:
                free, total = torch.cuda.mem_get_info(self.cuda_index)
                held, source = int(total - free), "cudaMemGetInfo"
            except Exception:  # CUDA itself failing: the profile will say so
                held, source = None, None
        self._sources.add(source)
        return reserved, held, source

    def gpu_memory_now(self) -> int | None:
        """What the device holds for this process now (see ``_gpu_memory``)."""
        if self.cuda_index is None:
            return None
        reserved, held, _ = self._gpu_memory()
        return held if held is not None else reserved

    def mark(self) -> None:
        """A step-wise sample at a fixed point of the step; a no-op when a thread samples instead."""
        if not self.threaded:
            self._sample()

    def sample_utilization(self) -> None:
        """Read NVML's GPU utilisation into the phase's peak (and a power sample, while the GPU's energy is
        integrated from them), and nothing else: cheap enough to call after each back-to-back step, where the
        GPU runs as in a training loop (between synchronised phases it idles). A no-op without a GPU or NVML."""
        if self.gpu_energy is not None:
            self.gpu_energy.sample_power()
        if self.nvml is None or self.nvml.handle is None:
            return
        util = self.nvml.utilization()
        if util is None:
            return
        peaks = self._peaks
        with peaks.lock:
            peaks.gpu_util = util if peaks.gpu_util is None else max(peaks.gpu_util, util)

    def _sample(self) -> None:
        if self.gpu_energy is not None:
            self.gpu_energy.sample_power()
        rss = self.tree.rss()
        now, cpu_s = time.perf_counter(), self.tree.cpu_seconds()
        reserved = held = source = util = None
        if self.cuda_index is not None:
            reserved, held, source = self._gpu_memory()
            util = self.nvml.utilization() if self.nvml is not None else None
        peaks = self._peaks
        with peaks.lock:
            peaks.samples += 1
            peaks.rss = max(peaks.rss, rss)
            start_wall, start_cpu = peaks.cpu_mark
            if now - start_wall >= CPU_WINDOW_S:
                percent = 100.0 * (cpu_s - start_cpu) / (now - start_wall)
                peaks.cpu = percent if peaks.cpu is None else max(peaks.cpu, percent)
                peaks.cpu_mark = (now, cpu_s)
            if held is not None and reserved is not None:
                overhead = held - reserved
                peaks.gpu_overhead = overhead if peaks.gpu_overhead is None else max(peaks.gpu_overhead, overhead)
                peaks.gpu_sampled = held if peaks.gpu_sampled is None else max(peaks.gpu_sampled, held)
            if source is not None and (peaks.gpu_source is None or _rank(source) > _rank(peaks.gpu_source)):
                peaks.gpu_source = source
            if util is not None:
                peaks.gpu_util = util if peaks.gpu_util is None else max(peaks.gpu_util, util)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def start_phase(self) -> None:
        """Forget earlier peaks (the allocator's too) and, in threaded mode, start sampling."""
        if self.cuda_index is not None:
            import torch

            torch.cuda.synchronize(self.cuda_index)
            torch.cuda.empty_cache()  # the peak starts from what is in use, not from earlier cached blocks
            torch.cuda.reset_peak_memory_stats(self.cuda_index)
        start = (time.perf_counter(), self.tree.cpu_seconds())
        self._peaks = _Peaks(cpu_mark=start, phase_start=start)
        self._sample()
        if self.threaded:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="mlestimate-monitor", daemon=True)
            self._thread.start()

    def restart_phase(self) -> None:
        """Forget everything the phase has seen so far and start it again, as if it began now: its sampled
        peaks, the allocator's peaks and cached blocks, and a running sampling thread (a second one would
        double the samples)."""
        self.stop()
        self.start_phase()

    def stop(self) -> None:
        """Stop the sampling thread, if one runs (also after a phase that ended in an exception)."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None

    def end_phase(self) -> PhasePeaks:
        self.stop()
        self._sample()
        peaks = self._peaks
        if peaks.cpu is None:  # a phase shorter than one CPU window: its average is the best figure there is
            wall = time.perf_counter() - peaks.phase_start[0]
            peaks.cpu = 100.0 * (self.tree.cpu_seconds() - peaks.phase_start[1]) / wall if wall > 0 else None
        result = PhasePeaks(peak_rss=peaks.rss, peak_cpu_percent=peaks.cpu, samples=peaks.samples)
        if self.cuda_index is not None:
            import torch

            torch.cuda.synchronize(self.cuda_index)
            reserved = int(torch.cuda.max_memory_reserved(self.cuda_index))
            result.peak_gpu_allocated = int(torch.cuda.max_memory_allocated(self.cuda_index))
            result.peak_gpu_reserved = reserved
            result.peak_gpu_memory = reserved + max(peaks.gpu_overhead or 0, 0)
            result.peak_gpu_sampled = peaks.gpu_sampled
            result.gpu_memory_method = self._method(peaks.gpu_source)
            result.peak_gpu_utilization = peaks.gpu_util
        return result

    def _method(self, source: str | None) -> str:
        if source is None:
            return "PyTorch's reserved peak only: neither NVML nor cudaMemGetInfo answered (a lower bound)"
        seen_in = _OVERHEAD_SEEN_IN[source].format(why=self._nvml_problem())
        return (
            "PyTorch's reserved peak + the largest overhead above reserved (CUDA context, workspaces) seen in "
            f"{seen_in}, each read with reserved at one instant; an upper bound: the two maxima may come from "
            "different instants"
        )


def _rank(source: str) -> int:
    return list(_OVERHEAD_SEEN_IN).index(source)
