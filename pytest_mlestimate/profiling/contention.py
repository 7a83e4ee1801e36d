"""Whether other processes competed for this process's CPUs while its steps were measured.

Oversubscribed OpenMP threads slow each other by multiples: on a 2-core machine shared at load 3-4, a
0.45 s step took 10-16 s, with stretches at 0.45 s in between. Such a measurement describes the neighbours,
not the model, so it is flagged instead of averaged in. The signals: the CPU time other processes used on
the CPUs this process may run on (host-wide per-CPU counters minus this process tree's own time), and a
tail of steps several times the median; the time a CPU quota of this process's cgroup held it back
(``cpu.stat``); on a GPU, other processes computing on the same device (NVML's process list).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import psutil
from pydantic import BaseModel, ConfigDict

from pytest_mlestimate.profiling import turns
from pytest_mlestimate.profiling.process_tree import ProcessTree

OTHERS_CORES_LIMIT = 0.35
"""Cores' worth of CPU time others may use beyond the cores this process leaves free before a measurement is
contended. On this 2-core machine (torch on 2 threads), quiet measurements saw others use 0.00-0.12 cores,
and two busy loops on the same cores 0.97-1.20 (bench/contention_check.py, tiny model and SSDlite)."""

SLOW_FACTOR = 2.0
"""A step this many times the median is a slow step; quiet steps stay within about 1.3x of their median."""

SLOW_SHARE_LIMIT = 0.1
"""Share of slow steps that, with others using at least ``OTHERS_CORES_HINT``, marks a contended measurement."""

OTHERS_CORES_HINT = 0.15
"""Below this, a tail of slow steps is the model's own (a periodic step, a garbage collection)."""

MIN_WINDOW_S = 0.5
"""CPU counters advance in 10 ms ticks: over a shorter window (a fixed handful of fast steps) a tick or two
reads as a whole core of a neighbour, so such a window is never called contended."""

THROTTLED_SHARE_LIMIT = 0.02
"""Share of the window's wall time the cgroup's CPU quota held this process back beyond which it is contended:
a quota that bites stretches steps as a neighbour does (a CI container given 1.5 CPUs of a larger host)."""

_PROC_STAT = Path("/proc/stat")
_PROC_CGROUP = Path("/proc/self/cgroup")
_CGROUP_ROOT = Path("/sys/fs/cgroup")


def _busy_seconds(cpus: set[int]) -> float:
    """CPU seconds spent on anything but idle and I/O wait, summed over ``cpus`` since boot.

    /proc/stat counts per CPU id for the whole host (also inside a container), which is what competes for
    this process's CPUs; steal time counts, as another virtual machine took it.
    """
    try:
        lines = _PROC_STAT.read_text().splitlines()
    except OSError:
        per_cpu = psutil.cpu_times(percpu=True)
        return sum(
            sum(t) - t.idle - getattr(t, "iowait", 0.0) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)
            for i, t in enumerate(per_cpu)
            if i in cpus
        )
    tick = os.sysconf("SC_CLK_TCK")
    busy = 0
    for line in lines:
        name, _, rest = line.partition(" ")
        if not name.startswith("cpu") or not name[3:].isdigit() or int(name[3:]) not in cpus:
            continue
        fields = [int(v) for v in rest.split()]
        # user nice system idle iowait irq softirq steal [guest guest_nice, already inside user and nice]
        busy += sum(fields[:8]) - fields[3] - fields[4]
    return busy / tick


def cpu_stat_files() -> list[tuple[Path, str, float]]:
    """Each ``cpu.stat`` that counts CPU-quota throttling of this process: its cgroup's and its ancestors' (a
    parent's quota throttles it too), with the key and the key's unit in seconds. cgroup v2 counts
    ``throttled_usec``, v1's cpu controller ``throttled_time`` in ns; none where there are no cgroups."""
    try:
        lines = _PROC_CGROUP.read_text().splitlines()
    except OSError:
        return []
    found: list[tuple[Path, str, float]] = []
    for line in lines:
        _, controllers, path = line.split(":", 2) if line.count(":") >= 2 else ("", "-", "")
        if controllers == "":
            mounts = [(_CGROUP_ROOT, "throttled_usec", 1e-6), (_CGROUP_ROOT / "unified", "throttled_usec", 1e-6)]
        elif "cpu" in controllers.split(","):
            mounts = [(_CGROUP_ROOT / controllers, "throttled_time", 1e-9)]  # cpu, or cpu,cpuacct
        else:
            continue
        for mount, key, unit in mounts:
            if not (mount / "cgroup.procs").is_file() and not (mount / "cpu.stat").is_file():
                continue
            folder = mount / path.strip("/")
            while True:
                if (folder / "cpu.stat").is_file():
                    found.append((folder / "cpu.stat", key, unit))
                if folder == mount:
                    break
                folder = folder.parent
            break
    return found


def throttled_seconds(files: list[tuple[Path, str, float]]) -> dict[Path, float]:
    """Seconds each file says its cgroup was throttled, since the cgroup began."""
    seconds: dict[Path, float] = {}
    for file, key, unit in files:
        try:
            for line in file.read_text().splitlines():
                name, _, value = line.partition(" ")
                if name == key:
                    seconds[file] = int(value) * unit
        except (OSError, ValueError):
            continue
    return seconds


def usable_cpus() -> set[int]:
    if hasattr(os, "sched_getaffinity"):
        return set(os.sched_getaffinity(0))
    return set(range(psutil.cpu_count() or 1))


class Contention(BaseModel):
    """Figures of one measurement window and the verdict drawn from them."""

    model_config = ConfigDict(extra="forbid")

    wall_seconds: float
    own_cpu_seconds: float
    """CPU seconds of this process and its descendants over the window."""
    others_cpu_seconds: float
    """CPU seconds other processes used on the CPUs this process may run on, over the window."""
    cpus: int
    threads: int
    """Threads torch computes with (``torch.get_num_threads()``)."""
    needed_cores: int
    """Cores this process keeps busy: its threads on a CPU device, its measured CPU use on a GPU."""
    steps: int
    median_step: float
    slow_steps: int
    """Steps longer than ``SLOW_FACTOR`` x the median."""
    throttled_seconds: float = 0.0
    """Time the CPU quota of this process's cgroup (or an ancestor's) held it back over the window."""
    gpu_neighbours: int = 0
    """Other processes computing on the same GPU during the window (NVML's list; 0 on a CPU)."""
    contended: bool

    @property
    def others_cores(self) -> float:
        return self.others_cpu_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def describe(self) -> str:
        verdict = "contended" if self.contended else "not contended"
        said = (
            f"{verdict}: other processes used {self.others_cores:.2f} cores of the {self.cpus} CPU(s) this "
            f"process may run on (it needs {self.needed_cores}, torch uses {self.threads} threads, it used "
            f"{self.own_cpu_seconds / max(self.wall_seconds, 1e-9):.2f} cores) over {self.wall_seconds:.1f} s; "
            f"{self.slow_steps} of {self.steps} steps took more than {SLOW_FACTOR:g}x the median "
            f"{self.median_step * 1000:.1f} ms"
        )
        if self.throttled_seconds:
            said += f"; the cgroup's CPU quota held it back {self.throttled_seconds:.2f} s"
        if self.gpu_neighbours:
            said += f"; {self.gpu_neighbours} other process(es) computed on the same GPU"
        return said


def judge(
    others_cores: float,
    needed_cores: int,
    cpus: int,
    slow_steps: int,
    steps: int,
    wall_seconds: float = MIN_WINDOW_S,
    *,
    throttled_share: float = 0.0,
    gpu_neighbours: int = 0,
) -> bool:
    """Contended when others used more than the cores this process leaves free (plus a margin for the
    machine's background), or used some and the steps show a tail of slow ones, or a CPU quota held this
    process back, or another process computed on its GPU; the CPU counters are not read over a window too
    short for them (``MIN_WINDOW_S``)."""
    if gpu_neighbours > 0 or throttled_share > THROTTLED_SHARE_LIMIT:
        return True
    if wall_seconds < MIN_WINDOW_S:
        return False
    beyond_spare = others_cores - max(cpus - needed_cores, 0)
    if beyond_spare > OTHERS_CORES_LIMIT:
        return True
    return beyond_spare > OTHERS_CORES_HINT and slow_steps >= 2 and slow_steps >= SLOW_SHARE_LIMIT * steps


def _partner_cpu() -> float:
    found = turns.current()
    return found.partner_cpu if found is not None else 0.0


class Window:
    """Counts CPU time from ``start()`` to ``finish()``: this process tree's and everyone's on our CPUs, and the
    time a CPU quota held this process back. ``gpu_neighbours`` (on a GPU) counts the other processes
    computing on the device; it is asked at the start and the finish, the larger count kept."""

    def __init__(self, tree: ProcessTree | None = None, gpu_neighbours: Callable[[], int] | None = None) -> None:
        self.tree = tree or ProcessTree()
        self.cpus = usable_cpus()
        self._stat_files = cpu_stat_files()
        self._gpu_neighbours = gpu_neighbours
        self._start = (0.0, 0.0, 0.0)
        self._throttled: dict[Path, float] = {}
        self._neighbours = 0
        self._partner = 0.0

    def start(self) -> None:
        self._neighbours = self._gpu_neighbours() if self._gpu_neighbours else 0
        self._throttled = throttled_seconds(self._stat_files)
        self._partner = _partner_cpu()
        self._start = (time.perf_counter(), self.tree.cpu_seconds(), _busy_seconds(self.cpus))

    def finish(self, step_times: list[float], threads: int, on_gpu: bool = False) -> Contention:
        wall = time.perf_counter() - self._start[0]
        own = self.tree.cpu_seconds() - self._start[1]
        busy = _busy_seconds(self.cpus) - self._start[2]
        partner = _partner_cpu() - self._partner  # measured in turns: the partner's steps are no neighbour's
        others = max(busy - own - partner, 0.0)
        own_cores = own / wall if wall > 0 else 0.0
        needed = max(1, round(own_cores + 0.49)) if on_gpu else min(threads, len(self.cpus))
        median = statistics.median(step_times) if step_times else 0.0
        slow = sum(1 for t in step_times if t > SLOW_FACTOR * median)
        now = throttled_seconds(self._stat_files)
        throttled = max((now[f] - self._throttled[f] for f in now if f in self._throttled), default=0.0)
        neighbours = max(self._neighbours, self._gpu_neighbours() if self._gpu_neighbours else 0)
        return Contention(
            wall_seconds=wall,
            own_cpu_seconds=own,
            others_cpu_seconds=others,
            cpus=len(self.cpus),
            threads=threads,
            needed_cores=needed,
            steps=len(step_times),
            median_step=median,
            slow_steps=slow,
            throttled_seconds=max(throttled, 0.0),
            gpu_neighbours=neighbours,
            contended=judge(
                others / wall if wall > 0 else 0.0,
                needed,
                len(self.cpus),
                slow,
                len(step_times),
                wall,
                throttled_share=throttled / wall if wall > 0 else 0.0,
                gpu_neighbours=neighbours,
            ),
        )
