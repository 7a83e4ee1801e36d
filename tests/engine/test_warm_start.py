"""Profiles forked from the warm parent: a process of their own, started without importing torch again, with
the RAM figures of a fresh process, and a crash that ends only the child."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import psutil
import pytest

from pytest_mlestimate.api import estimate
from pytest_mlestimate.core.errors import ProfileCrashError, ProfileTimeoutError
from pytest_mlestimate.profiling import warm_start
from pytest_mlestimate.profiling.isolation import profile_in_child
from pytest_mlestimate.scenarios.scenario import parse_scenario
from tests.tiny_scenario import TINY

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import os
from pathlib import Path

from pytest_mlestimate.tiny import tiny_detector


def probed(**kwargs):
    Path(os.environ["PROBE_FILE"]).write_text(f"{os.getpid()} {os.getppid()}")
    return tiny_detector(**kwargs)


def crashing(**kwargs):
    print("the model says goodbye", flush=True)
    os._exit(3)


def killed(**kwargs):
    import signal

    os.kill(os.getpid(), signal.SIGKILL)


def noted(name):
    # this profile's pid, the threads torch computes with and the CPUs it may use, in a file of its own
    import torch

    cpus = ",".join(map(str, sorted(os.sched_getaffinity(0))))
    Path(f"{os.environ['PROBE_FILE']}.{name}").write_text(f"{os.getpid()} {torch.get_num_threads()} {cpus}")


def slow(**kwargs):
    from tests.slow_model import slow_detector

    noted("slow")
    return slow_detector()


def slow_with_a_helper(**kwargs):
    # a slow model that started a process of its own, as a DataLoader's workers are
    import subprocess
    from tests.slow_model import slow_detector

    helper = subprocess.Popen(["sleep", "120"])
    noted("helper")
    Path(os.environ["PROBE_FILE"] + ".helper_pid").write_text(str(helper.pid))
    return slow_detector()


def counted(**kwargs):
    noted("counted")
    return tiny_detector(**kwargs)
"""


@pytest.fixture
def models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "probe_models.py").write_text(textwrap.dedent(PROBE))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PROBE_FILE", str(tmp_path / "probe.txt"))
    monkeypatch.delenv(warm_start.FRESH_VARIABLE, raising=False)
    return tmp_path


def scenario(architecture: str, **changes: object) -> dict[str, object]:
    return {**TINY, "architecture": architecture, "device": "cpu", "warmup_iterations": 1, "measure_iterations": 2,
            **changes}  # fmt: skip


def test_each_profile_is_a_child_of_one_warm_parent_that_outlives_it(models: Path) -> None:
    pids = []
    for _ in range(2):
        estimate(scenario("probe_models:probed"), cache=False)
        pids.append(tuple(int(p) for p in (models / "probe.txt").read_text().split()))
    (first, first_parent), (second, second_parent) = pids
    assert first != second and os.getpid() not in (first, second)
    assert first_parent == second_parent != os.getpid()  # the same warm parent forked both
    parent = psutil.Process(first_parent)
    assert "--warm" in parent.cmdline() and parent.ppid() == os.getpid()
    assert not psutil.pid_exists(first) or psutil.Process(first).status() == psutil.STATUS_ZOMBIE


def test_a_forked_profile_counts_the_ram_a_fresh_process_counts(models: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    parsed = parse_scenario(scenario("pytest_mlestimate.tiny:tiny_detector"))
    forked = profile_in_child(parsed)
    monkeypatch.setenv(warm_start.FRESH_VARIABLE, "1")
    fresh = profile_in_child(parsed)
    assert forked.training is not None and fresh.training is not None
    # without the library pages faulted in, a forked child counted about 37 % less
    assert forked.training.peak_rss == pytest.approx(fresh.training.peak_rss, rel=0.05)
    assert forked.ram_before == pytest.approx(fresh.ram_before, rel=0.05)


@pytest.mark.parametrize(("factory", "reason"), [("crashing", "exited with status 3"), ("killed", "SIGKILL")])
def test_a_child_that_dies_is_a_crash_with_its_output_and_the_next_profile_runs(
    models: Path, factory: str, reason: str
) -> None:
    with pytest.raises(ProfileCrashError) as crashed:
        profile_in_child(parse_scenario(scenario(f"probe_models:{factory}")))
    assert reason in str(crashed.value)
    if factory == "crashing":
        assert "the model says goodbye" in str(crashed.value)
    after = profile_in_child(parse_scenario(scenario("pytest_mlestimate.tiny:tiny_detector")))
    assert after.training is not None and after.training.peak_rss > 0


MARKER = """
import os, sys


class TorchImports:
    # notes the pid of each process that imports torch: finders are asked only about modules not imported yet

    def find_spec(self, name, path=None, target=None):
        if name == "torch":
            with open(os.environ["TORCH_IMPORTS"], "a") as imports:
                imports.write(f"{os.getpid()}\\n")
        return None


sys.meta_path.insert(0, TorchImports())
"""
CALLER = """
from pathlib import Path
import os, threading, time
from pytest_mlestimate.profiling.isolation import profile_in_child
from pytest_mlestimate.scenarios.scenario import parse_scenario
def profile():
    profile_in_child(parse_scenario({scenario!r}))
    print(Path(os.environ["PROBE_FILE"]).read_text(), flush=True)
if {in_a_thread}:  # the thread that starts the warm parent ends before the next profile
    thread = threading.Thread(target=profile)
    thread.start()
    thread.join()
    time.sleep(1)
for _ in range({profiles}):
    profile()
"""


def torch_imports(
    models: Path, profiles: int, fresh: bool, in_a_thread: bool = False
) -> tuple[list[tuple[int, int]], list[int]]:
    """(child, its parent) of each profile of a new caller, and the processes that imported torch."""
    (models / "sitecustomize.py").write_text(MARKER)
    imports = models / f"torch-imports-{fresh}.txt"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(models), str(ROOT)]), "TORCH_IMPORTS": str(imports)}
    env[warm_start.FRESH_VARIABLE] = "1" if fresh else "0"
    caller = CALLER.format(profiles=profiles, scenario=scenario("probe_models:probed"), in_a_thread=in_a_thread)
    done = subprocess.run([sys.executable, "-c", caller], env=env, cwd=models, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    children = [tuple(int(p) for p in line.split()) for line in done.stdout.splitlines()]
    return children, [int(line) for line in imports.read_text().split()]  # type: ignore[misc]


def test_torch_is_imported_once_by_the_warm_parent_and_never_by_a_profile(models: Path) -> None:
    children, imported_by = torch_imports(models, profiles=2, fresh=False)
    (first, warm), (second, warm_again) = children
    assert warm == warm_again and first != second
    assert imported_by.count(warm) == 1 and not {first, second} & set(imported_by)
    # the marker does see a profile that imports torch itself
    [(fresh_child, _caller)], imported_by = torch_imports(models, profiles=1, fresh=True)
    assert fresh_child in imported_by


def test_the_warm_parent_outlives_the_thread_that_started_it(models: Path) -> None:
    """Its parent-death signal is bound to the thread that started it: a pool's thread may end any time."""
    (first, warm), (second, warm_again) = torch_imports(models, profiles=1, fresh=False, in_a_thread=True)[0]
    assert warm == warm_again and first != second


def test_a_profile_ends_on_its_own_beside_a_longer_one_and_a_timeout_kills_a_child_with_what_it_started(
    models: Path,
) -> None:
    """The second profile is forked while the first runs, and outlives it: the first's caller must not wait
    for it."""
    ended: dict[str, float] = {}
    failed: list[BaseException] = []

    def run(name: str, timeout: float | None, **changes: object) -> None:
        try:
            profile_in_child(parse_scenario(scenario(f"probe_models:{name}", **changes)), timeout=timeout)
        except BaseException as exc:
            failed.append(exc)
        ended[name] = time.monotonic()

    short = threading.Thread(target=run, args=("slow", None))
    short.start()
    wait_for(models / "probe.txt.slow")  # measuring: forked before the long one
    long = threading.Thread(target=run, args=("slow_with_a_helper", 15.0), kwargs={"measure_iterations": 10_000})
    long.start()
    wait_for(models / "probe.txt.helper_pid")
    short.join(timeout=60)
    assert "slow" in ended and "slow_with_a_helper" not in ended, "the short profile waited for the long one"
    long.join(timeout=60)
    assert ended["slow_with_a_helper"] - ended["slow"] > 3, ended  # the short one ended well before the timeout
    assert [type(exc) for exc in failed] == [ProfileTimeoutError]
    child = int((models / "probe.txt.helper").read_text().split()[0])
    helper = int((models / "probe.txt.helper_pid").read_text())
    for pid in (child, helper):
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def wait_for(path: Path, within: float = 60.0) -> None:
    limit = time.monotonic() + within
    while not path.exists():
        assert time.monotonic() < limit, f"{path.name} did not appear"
        time.sleep(0.05)


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to pin a thread to one")
def test_a_profile_runs_on_the_cpus_of_the_thread_that_asked_with_the_threads_a_fresh_process_would_use(
    models: Path,
) -> None:
    """A service's lane pins its thread to its CPUs; the warm parent was started elsewhere."""
    profile_in_child(parse_scenario(scenario("pytest_mlestimate.tiny:tiny_detector")))  # the warm parent runs
    one = {min(os.sched_getaffinity(0))}

    def pinned() -> None:
        os.sched_setaffinity(0, one)  # this thread only
        profile_in_child(parse_scenario(scenario("probe_models:counted")))

    thread = threading.Thread(target=pinned)
    thread.start()
    thread.join()
    _pid, threads, cpus = (models / "probe.txt.counted").read_text().split()
    assert (int(threads), cpus) == (1, str(*one))
    profile_in_child(parse_scenario(scenario("probe_models:counted")))  # from this thread: every CPU again
    _pid, threads, cpus = (models / "probe.txt.counted").read_text().split()
    assert cpus == ",".join(map(str, sorted(os.sched_getaffinity(0))))
