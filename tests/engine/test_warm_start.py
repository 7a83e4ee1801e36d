"""Profiles forked from the warm parent: a process of their own, started without importing torch again, with
the RAM figures of a fresh process, and a crash that ends only the child."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import psutil
import pytest

from pytest_mlestimate import warm_start
from pytest_mlestimate.api import estimate
from pytest_mlestimate.errors import ProfileCrashError
from pytest_mlestimate.isolation import profile_in_child
from pytest_mlestimate.scenario import parse_scenario
from tests.tiny_scenario import TINY

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
