"""Contention never turns a verdict into a pass: a contended confirmation is measured again and, if every one is
contended, the suspected timing is inconclusive; contended runs never enter a saved baseline."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pytest_mlestimate.estimates.estimate import Estimate
from pytest_mlestimate.scenarios.scenario import parse_scenario
from pytest_mlestimate.verdicts.baseline import save_baseline
from pytest_mlestimate.verdicts.settings import Settings
from pytest_mlestimate.verdicts.verdict import judge, run_of
from tests.service.fakes import fake_profile
from tests.tiny_scenario import TINY

SCENARIO = {**TINY, "device": "cpu"}


def measured(scale: float, contended: bool = False) -> Estimate:
    """A profile whose steps take ``scale`` times a baseline's, with a little noise of its own."""
    steps = [scale * f for f in (1.0, 1.01, 0.99, 1.0, 1.02, 0.98)]
    profile = fake_profile(
        step_times=steps,
        forward_times=[0.4 * s for s in steps],
        backward_times=[0.5 * s for s in steps],
        contended=contended,
    )
    return Estimate(parse_scenario(SCENARIO), profile, cache={"hit": False})


def again(*estimates: Estimate) -> tuple[Callable[[], Estimate], list[Estimate]]:
    given: list[Estimate] = []

    def measure() -> Estimate:
        given.append(estimates[min(len(given), len(estimates) - 1)])
        return given[-1]

    return measure, given


def baseline(tmp_path: Path) -> Settings:
    runs = [run_of(measured(s)) for s in (0.99, 1.0, 1.01, 1.0, 0.995)]
    environment = measured(1.0).profile.environment
    save_baseline(tmp_path, "s.yaml", "tiny", measured(1.0).scenario.model_dump(mode="json"), environment, runs)
    return Settings(rootdir=tmp_path, compare_dir=tmp_path)


def test_a_suspect_whose_confirmations_are_all_contended_is_inconclusive_not_passed(tmp_path: Path) -> None:
    settings = baseline(tmp_path)
    measure, given = again(measured(1.6, contended=True))
    verdict = judge(measured(1.12), [], {}, settings, "s.yaml", "tiny", "s.yaml:1", measure)
    assert len(given) == 3  # measured again until one was not contended, three times at most
    timings = {c.metric: c for c in verdict.checks if c.metric in ("forward_pass", "total_training_time")}
    assert timings and all(c.passed is not True for c in timings.values()), [c.row() for c in verdict.checks]
    assert any(c.decision == "inconclusive" for c in timings.values())
    assert any("confirmation runs were all contended" in w for w in verdict.warnings)


def test_a_quiet_confirmation_after_a_contended_one_decides(tmp_path: Path) -> None:
    settings = baseline(tmp_path)
    measure, given = again(measured(1.6, contended=True), measured(1.12))
    verdict = judge(measured(1.12), [], {}, settings, "s.yaml", "tiny", "s.yaml:1", measure)
    assert len(given) == 2
    assert not any(c.decision == "inconclusive" for c in verdict.checks)


def test_under_strict_an_inconclusive_check_fails_the_scenario(tmp_path: Path) -> None:
    settings = Settings(rootdir=tmp_path, compare_dir=tmp_path, strict=True)
    baseline(tmp_path)
    measure, _ = again(measured(1.6, contended=True))
    verdict = judge(measured(1.12), [], {}, settings, "s.yaml", "tiny", "s.yaml:1", measure)
    assert not verdict.passed and "inconclusive (--mlestimate-strict)" in (verdict.failure or "")


def test_contended_runs_never_enter_a_saved_baseline(tmp_path: Path) -> None:
    settings = Settings(rootdir=tmp_path, save_dir=tmp_path, baseline_runs=3)
    measure, given = again(measured(5.0, contended=True), measured(1.0), measured(5.0, contended=True), measured(1.0))
    verdict = judge(measured(1.0, contended=True), [], {}, settings, "s.yaml", "tiny", "s.yaml:1", measure)
    assert verdict.baseline is not None and verdict.baseline["runs"] == 3
    import json

    saved = json.loads(Path(verdict.baseline["path"]).read_text())
    assert [run["contended"] for run in saved["runs"]] == [False, False, False]
    assert len(given) == 5  # the contended ones measured again
