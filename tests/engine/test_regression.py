"""The statistics of a regression verdict, checked by simulation: runs whose figures scatter between
processes as measured (log-normal), against a baseline of several runs."""

from __future__ import annotations

import math
import random
import statistics

from pytest_mlestimate.core.metrics import METRIC
from pytest_mlestimate.verdicts.regression import (
    DRIFT_FLOOR,
    FAMILY_ALPHA,
    Run,
    compare_runs,
    compare_timing,
    smallest_failing_slowdown,
)

TOTAL = METRIC["total_training_time"]


def runs(rng: random.Random, count: int, scale: float, between: float) -> list[Run]:
    """Runs of 20 steps of about 100 ms x ``scale``, each run shifted by the between-process noise."""
    found = []
    for _ in range(count):
        shift = rng.lognormvariate(0, between)
        steps = [0.1 * scale * shift * rng.lognormvariate(0, 0.03) for _ in range(20)]
        found.append(Run({"total_training_time": sum(steps) / 20 * 1000}, {"total_training_time": steps}))
    return found


def verdicts(scale: float, between: float, trials: int = 400, baseline_runs: int = 5, new_runs: int = 1) -> float:
    rng = random.Random(7)
    failed = 0
    for _ in range(trials):
        change = compare_timing(
            TOTAL,
            runs(rng, baseline_runs, 1.0, between),
            runs(rng, new_runs, scale, between),
            tolerance=0.02,
            alpha=FAMILY_ALPHA,
        )
        assert change is not None
        failed += change.regressed
    return failed / trials


def test_unchanged_models_fail_at_most_at_the_stated_rate_despite_noise_between_processes() -> None:
    # 9 % between processes while each run's own steps say 0.7 %: the spread of single runs must decide
    assert verdicts(1.0, between=0.09) <= FAMILY_ALPHA + 0.02
    assert verdicts(1.0, between=0.01) <= FAMILY_ALPHA + 0.02


def test_a_slowdown_well_beyond_the_noise_is_caught() -> None:
    assert verdicts(1.20, between=0.03, new_runs=2) >= 0.95
    assert verdicts(1.05, between=0.005, new_runs=2) >= 0.95


def test_a_slowdown_inside_the_noise_between_processes_is_not_claimed() -> None:
    assert verdicts(1.05, between=0.09) < 0.3


def test_one_run_a_side_rests_on_the_runs_own_spread() -> None:
    rng = random.Random(1)
    change = compare_timing(TOTAL, runs(rng, 1, 1.0, 0.0), runs(rng, 1, 1.3, 0.0), 0.02, FAMILY_ALPHA)
    assert change is not None and change.regressed and change.runs == (1, 1)


def test_the_false_alarm_rate_is_shared_out_over_a_scenarios_timings() -> None:
    rng = random.Random(3)
    base, new = runs(rng, 5, 1.0, 0.02), runs(rng, 1, 1.0, 0.02)
    metrics = ("forward_pass", "backward_pass", "total_training_time", "inference_1_image", "inference_batch")
    widen = [Run({m: r.metrics["total_training_time"] for m in metrics}, {}) for r in base]
    changes = compare_runs(widen, [Run({m: new[0].metrics["total_training_time"] for m in metrics}, {})], {})
    assert {c.metric for c in changes} == set(metrics)
    assert all(c.confidence == 1 - FAMILY_ALPHA / 5 for c in changes)


def test_a_baseline_measured_in_one_quiet_minute_does_not_make_machine_drift_a_regression() -> None:
    rng = random.Random(11)
    tight = runs(rng, 5, 1.0, 0.005)  # five back-to-back runs that agree within half a percent
    later = runs(rng, 2, 1.09, 0.005)  # the unchanged model, minutes later, on a machine 9 % slower
    trusting = compare_timing(TOTAL, tight, later, 0.02, FAMILY_ALPHA)
    floored = compare_timing(TOTAL, tight, later, 0.02, FAMILY_ALPHA, floor=DRIFT_FLOOR["cpu"])
    assert trusting is not None and trusting.regressed
    assert floored is not None and not floored.regressed
    slower = compare_timing(TOTAL, tight, runs(rng, 2, 1.5, 0.005), 0.02, FAMILY_ALPHA, floor=DRIFT_FLOOR["cpu"])
    assert slower is not None and slower.regressed


def test_drift_is_a_margin_the_change_clears_not_noise_that_widens_the_bound() -> None:
    """Tight runs, a 10 % drift margin: +16 % is caught with two new runs; were the drift counted as noise
    between runs (divided by the run counts, widened by Student's t), it would need about +27 %."""
    rng = random.Random(5)
    tight = runs(rng, 5, 1.0, 0.005)
    for scale, caught in ((1.16, True), (1.08, False)):
        change = compare_timing(TOTAL, tight, runs(rng, 2, scale, 0.005), 0.02, FAMILY_ALPHA / 3, floor=0.10)
        assert change is not None and change.regressed is caught, (scale, change)


def test_the_computed_smallest_failing_slowdown_is_where_verdicts_turn() -> None:
    """``smallest_failing_slowdown`` and ``compare_timing`` agree: just above it fails, just below passes."""
    base = [Run({"total_training_time": 100.0 * (1 + d)}, {}) for d in (-0.02, -0.01, 0.0, 0.01, 0.02)]
    logs = [math.log(r.metrics["total_training_time"]) for r in base]  # type: ignore[arg-type]
    mean = statistics.fmean(logs)
    spread = math.sqrt(math.fsum((x - mean) ** 2 for x in logs) / (len(logs) + 2 - 2))  # the pooled spread
    alpha = FAMILY_ALPHA / 3
    smallest = smallest_failing_slowdown(0.02, 0.10, spread, 5, 2, alpha)
    centre = math.exp(mean)
    for factor, fails in ((1.002, True), (0.998, False)):
        new = [Run({"total_training_time": centre * (1 + smallest) * factor}, {}) for _ in range(2)]
        change = compare_timing(TOTAL, base, new, 0.02, alpha, floor=0.10)
        assert change is not None and change.regressed is fails
        assert change.detectable is not None and math.isclose(change.detectable, smallest, rel_tol=1e-9)


def test_a_contended_run_judges_memory_but_not_the_peaks_that_follow_the_clock() -> None:
    figures = {"peak_ram_memory": 1e9, "energy_per_training": 100.0, "cost_per_training": 2.0,
               "peak_cpu_utilization": 180.0, "total_training_time": 60.0}  # fmt: skip
    baseline = [Run(figures, {}), Run(figures, {})]
    busy = {name: value * 1.25 for name, value in figures.items()}  # everything 25 % up while others took the CPU
    judged = {c.metric: c for c in compare_runs(baseline, [Run(busy, {}, contended=True)], {}, floor=0.10)}
    assert set(judged) == {"peak_ram_memory"} and judged["peak_ram_memory"].regressed
    quiet = {c.metric: c for c in compare_runs(baseline, [Run(busy, {})], {}, floor=0.10)}
    assert quiet["energy_per_training"].regressed and quiet["cost_per_training"].regressed
