"""Contention is detected, not averaged in: the verdict, the CPU figures it rests on, and what a profile does
with a contended measurement (measure again once, keep the faster, flag and warn if it stays contended)."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_mlestimate import estimate
from pytest_mlestimate.profiling import contention, profiler
from pytest_mlestimate.profiling.contention import Contention, Window, judge
from pytest_mlestimate.profiling.measurement import Measurement
from pytest_mlestimate.profiling.profile import Profile
from tests.tiny_scenario import TINY as TINY_BASE

TINY: dict[str, Any] = {
    **TINY_BASE,
    "device": "cpu",
    "warmup_iterations": 1,
    "measure_iterations": 4,
}


def start_busy_loop() -> int:
    """A busy loop outside this process tree (a shell starts it in the background and exits): as another
    user's process would be. Returns its pid."""
    shell = f"{shlex.quote(sys.executable)} -c 'while True: pass' >/dev/null 2>&1 & echo $!"
    return int(subprocess.run(["sh", "-c", shell], capture_output=True, text=True, check=True).stdout)


@pytest.fixture
def hog() -> Iterator[None]:
    """Busy loops on every CPU this process may use, started before and stopped after the test body."""
    pids = [start_busy_loop() for _ in contention.usable_cpus()]
    time.sleep(0.5)
    yield
    for pid in pids:
        os.kill(pid, signal.SIGKILL)


def test_verdict_others_beyond_the_spare_cores_or_a_slow_tail_with_some_others() -> None:
    assert judge(others_cores=0.9, needed_cores=2, cpus=2, slow_steps=0, steps=20)
    assert not judge(others_cores=0.1, needed_cores=2, cpus=2, slow_steps=0, steps=20)
    assert not judge(others_cores=0.9, needed_cores=1, cpus=2, slow_steps=0, steps=20)  # a spare core took it
    assert judge(others_cores=0.25, needed_cores=2, cpus=2, slow_steps=5, steps=20)
    assert not judge(others_cores=0.0, needed_cores=2, cpus=2, slow_steps=5, steps=20)  # the model's own tail


def test_a_window_too_short_for_the_counters_is_never_called_contended() -> None:
    assert judge(1.5, 2, 2, 0, 8) and not judge(1.5, 2, 2, 0, 8, wall_seconds=0.02)


def test_window_counts_other_processes_but_not_this_one(hog: None) -> None:
    window = Window()
    window.start()
    deadline = time.perf_counter() + 1.0
    while time.perf_counter() < deadline:  # this process busy for a second too
        pass
    figures = window.finish([0.1] * 10, threads=2)
    assert 0.2 * figures.wall_seconds < figures.own_cpu_seconds < 1.05 * figures.wall_seconds  # one busy thread
    assert figures.others_cores > 0.9  # two busy loops beside it on two CPUs: ours is not counted as theirs
    assert figures.contended
    assert "contended: other processes used" in figures.describe()


def test_a_hog_on_the_same_cores_flags_the_profile_and_warns_with_the_figures(hog: None) -> None:
    profile = estimate({**TINY, "measure_iterations": None}, isolate=False, cache=False).profile  # >= 1 s
    assert profile.contended and profile.contention_remeasured
    assert profile.contention is not None and profile.contention.contended
    assert profile.contention.others_cores > 0.5
    assert any("other processes competed for the CPUs" in w and "cores of the" in w for w in profile.warnings)


def _verdicts(monkeypatch: pytest.MonkeyPatch, verdicts: list[bool]) -> None:
    """Judge the measurements in turn as ``verdicts`` says, whatever the machine does meanwhile."""
    answers = iter(verdicts)
    monkeypatch.setattr(contention, "judge", lambda *args, **kwargs: next(answers))
    monkeypatch.setattr(profiler, "CONTENTION_PAUSE_S", 0.0)


def test_a_contended_measurement_is_taken_again_and_a_clean_one_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    _verdicts(monkeypatch, [True, False, False])  # the steps twice, then inference
    original = profiler._measure
    measured: list[list[float]] = []

    def fast_first(*args: Any) -> Any:
        result = original(*args)
        if measured:  # the clean measurement a second slower a step: kept all the same
            slowed = Measurement(contention=result.contention)
            for step in result.steps:
                slowed.add(step + 1.0)
            result = slowed
        measured.append(result.steps)
        return result

    monkeypatch.setattr(profiler, "_measure", fast_first)
    profile = estimate(TINY, isolate=False, cache=False).profile
    assert profile.contention_remeasured and not profile.contended
    assert profile.contention is not None and not profile.contention.contended
    assert profile.step_times == measured[1] and len(profile.step_times) == 4
    assert not any("competed" in w for w in profile.warnings)


def test_contended_twice_keeps_the_faster_measurement_and_flags_it(monkeypatch: pytest.MonkeyPatch) -> None:
    _verdicts(monkeypatch, [True, True, False])
    measured: list[list[float]] = []
    original = profiler._measure

    def slow_first(*args: Any) -> Any:
        result = original(*args)
        if not measured:  # the first measurement a second slower a step
            slowed = Measurement(contention=result.contention)
            for step in result.steps:
                slowed.add(step + 1.0)
            result = slowed
        measured.append(result.steps)
        return result

    monkeypatch.setattr(profiler, "_measure", slow_first)
    profile = estimate(TINY, isolate=False, cache=False).profile
    assert profile.contended and profile.contention_remeasured
    assert profile.step_times == measured[1]
    assert any("other processes competed for the CPUs" in w for w in profile.warnings)


def test_profiles_round_trip_the_contention_record() -> None:
    record = Contention(
        wall_seconds=2.0,
        own_cpu_seconds=2.0,
        others_cpu_seconds=1.8,
        cpus=2,
        threads=2,
        needed_cores=2,
        steps=10,
        median_step=0.4,
        slow_steps=3,
        contended=True,
    )
    profile = Profile(device="cpu", device_name="cpu", contention=record, contended=True)
    again = Profile.model_validate_json(profile.model_dump_json())
    assert again.contention == record and again.contended
    assert record.others_cores == pytest.approx(0.9)


def fake_cgroups(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, membership: str) -> Path:
    """A cgroup mount under ``tmp_path`` and a /proc/self/cgroup that places this process as ``membership``
    says; returns the mount."""
    proc = tmp_path / "cgroup"
    proc.write_text(membership)
    monkeypatch.setattr(contention, "_PROC_CGROUP", proc)
    monkeypatch.setattr(contention, "_CGROUP_ROOT", tmp_path / "sys")
    return tmp_path / "sys"


def test_a_cpu_quota_of_a_parent_cgroup_that_holds_the_steps_back_is_contention(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mount = fake_cgroups(tmp_path, monkeypatch, "0::/ci/job\n")
    (mount / "ci" / "job").mkdir(parents=True)
    (mount / "cgroup.procs").write_text("")
    (mount / "ci" / "job" / "cpu.stat").write_text("usage_usec 5\nthrottled_usec 0\n")
    parent = mount / "ci" / "cpu.stat"
    parent.write_text("usage_usec 9\nnr_throttled 0\nthrottled_usec 1000000\n")
    window = Window()
    window.start()
    time.sleep(0.2)
    quiet = window.finish([0.05] * 4, threads=2)
    assert quiet.throttled_seconds == 0.0 and not quiet.contended
    window.start()
    parent.write_text("usage_usec 9\nnr_throttled 40\nthrottled_usec 1150000\n")  # 0.15 s held back
    time.sleep(0.6)
    throttled = window.finish([0.05] * 12, threads=2)
    assert throttled.throttled_seconds == pytest.approx(0.15)
    assert throttled.contended
    assert "the cgroup's CPU quota held it back 0.15 s" in throttled.describe()


def test_cgroup_v1_throttling_is_read_in_nanoseconds_from_the_cpu_controller(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mount = fake_cgroups(tmp_path, monkeypatch, "5:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n0::/\n")
    controller = mount / "cpu,cpuacct"
    controller.mkdir(parents=True)  # a container sees its own cgroup as the mount's root
    (controller / "cpu.stat").write_text("nr_periods 10\nnr_throttled 2\nthrottled_time 2500000000\n")
    (files,) = contention.cpu_stat_files()
    assert files == (controller / "cpu.stat", "throttled_time", 1e-9)
    assert contention.throttled_seconds([files]) == {controller / "cpu.stat": pytest.approx(2.5)}


def test_no_cgroups_reads_as_no_throttling(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(contention, "_PROC_CGROUP", tmp_path / "missing")
    assert contention.cpu_stat_files() == []
    assert not judge(0.0, 2, 2, 0, 8, throttled_share=0.019) and judge(0.0, 2, 2, 0, 8, throttled_share=0.021)


def test_another_process_on_the_gpu_is_contention_even_with_idle_cpus() -> None:
    window = Window(gpu_neighbours=lambda: 1)
    window.start()
    figures = window.finish([0.01] * 4, threads=2, on_gpu=True)  # too short a window for the CPU counters
    assert figures.gpu_neighbours == 1 and figures.contended
    assert "1 other process(es) computed on the same GPU" in figures.describe()


class FakeNvml:
    def __init__(self, pids: list[int]) -> None:
        self.pids = pids

    def nvmlDeviceGetComputeRunningProcesses(self, handle: object) -> list[Any]:
        return [type("Proc", (), {"pid": pid, "usedGpuMemory": 1})() for pid in self.pids]


@pytest.mark.parametrize(
    ("pids", "others"),
    [
        ([os.getpid()], 0),
        ([os.getpid(), os.getppid()], 0),  # the waiting parent computes nothing
        ([os.getpid(), 2**22 + 7], 1),
        ([11, 12, 13], 2),  # PIDs of another namespace: one of them is this process
        ([], 0),
    ],
)
def test_nvml_counts_the_processes_computing_beside_this_one(pids: list[int], others: int) -> None:
    from pytest_mlestimate.profiling.monitor import Nvml

    nvml = Nvml.__new__(Nvml)
    nvml._nvml, nvml.handle = FakeNvml(pids), object()
    assert nvml.other_processes() == others


def test_contended_inference_is_measured_again_and_flagged_if_it_stays_so(monkeypatch: pytest.MonkeyPatch) -> None:
    _verdicts(monkeypatch, [False, True, True])  # the steps quiet; both inference measurements contended
    profile = estimate(TINY, isolate=False, cache=False).profile
    assert not (profile.contention and profile.contention.contended)
    assert profile.inference_contention is not None and profile.inference_contention.contended
    assert profile.contended and profile.inference_remeasured and not profile.contention_remeasured
    assert any("while inference was measured" in w for w in profile.warnings)
    _verdicts(monkeypatch, [False, False])
    quiet = estimate(TINY, isolate=False, cache=False).profile
    kept = (len(profile.inference_one_times), len(profile.inference_batch_times))
    assert kept == (len(quiet.inference_one_times), len(quiet.inference_batch_times))  # one measurement's calls


def test_inference_contended_once_keeps_the_clean_measurement(monkeypatch: pytest.MonkeyPatch) -> None:
    _verdicts(monkeypatch, [False, True, False])
    result = estimate(TINY, isolate=False, cache=False)
    assert not result.profile.contended and result.profile.inference_remeasured
    assert result.profile.inference_contention is not None and not result.profile.inference_contention.contended
    assert "not contended" in result.to_dict()["details"]["measurement"]["inference_contention"]
