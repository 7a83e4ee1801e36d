"""Pairs measured side by side with the base commit: the stated error rates hold on a simulated machine whose
speed drifts, a real slowdown is caught, contended pairs are set aside, and one figure is counted once."""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable

import pytest

from pytest_mlestimate.verdicts.against import BaseMeasurementError, MeasurePair, compare_against
from pytest_mlestimate.verdicts.paired import LOOKS, look, timing_metrics
from pytest_mlestimate.verdicts.regression import Run


class Machine:
    """Profiles of a model whose step takes ``seconds``, with run-to-run noise and a speed that drifts along."""

    def __init__(self, seed: int, noise: float = 0.05, drift_per_profile: float = 0.01) -> None:
        self.rng = random.Random(seed)
        self.noise = noise
        self.drift = drift_per_profile
        self.profiles = 0
        self.order: list[str] = []
        self.contended: Callable[[int], bool] = lambda _n: False

    def measure(self, side: str, seconds: float) -> Callable[[], Run]:
        def run() -> Run:
            self.profiles += 1
            self.order.append(side)
            slow = (1 + self.drift) ** self.profiles * math.exp(self.rng.gauss(0, self.noise))
            step = seconds * slow
            metrics = {"total_training_time": 100 * step, "forward_pass": 0.4 * step, "peak_ram_memory": 1e9}
            return Run(metrics, {}, contended=self.contended(self.profiles))

        return run

    def pair(self, base_seconds: float, candidate_seconds: float) -> MeasurePair:
        """Both sides, in the order the comparison asks for (True: the base first)."""
        base, candidate = self.measure("base", base_seconds), self.measure("candidate", candidate_seconds)

        def measured(base_first: bool) -> tuple[Run, Run]:
            if base_first:
                return base(), candidate()
            found = candidate()
            return base(), found

        return measured


def verdict(seed: int, slowdown: float, noise: float = 0.05, drift: float = 0.01) -> tuple[Counter[str], int]:
    machine = Machine(seed, noise, drift)
    result = compare_against("main", "0" * 40, machine.pair(1.0, 1.0 + slowdown), {})
    return Counter(t.decision for t in result.timings), machine.profiles


@pytest.mark.parametrize("seed_block", range(4))
def test_an_unchanged_model_is_found_regressed_at_most_at_the_stated_rate(seed_block: int) -> None:
    """The machine slows 3 % a profile, more than the 2 % noise: pairs always measured base first would read
    that as a 3 % slowdown of the candidate; alternating the order cancels it."""
    seeds = range(seed_block * 100, seed_block * 100 + 100)
    regressed = sum(verdict(seed, 0.0, noise=0.02, drift=0.03)[0]["regressed"] > 0 for seed in seeds)
    assert regressed <= 5  # the family rate is 5 %: 100 verdicts with binomial room would allow about 9


def test_a_slowdown_twice_what_the_noise_hides_is_caught_and_a_huge_one_early() -> None:
    decisions = [verdict(seed, 0.20) for seed in range(100)]
    caught = sum(found["regressed"] == 2 for found, _ in decisions)
    assert caught >= 95
    found, profiles = verdict(1, 3.0)
    assert found["regressed"] == 2 and profiles == 2 * LOOKS[0]  # decided at the first look


def test_each_verdict_states_the_smallest_slowdown_it_could_catch() -> None:
    result = compare_against("main", "0" * 40, Machine(7, noise=0.05).pair(1.0, 1.0), {})
    calm = compare_against("main", "0" * 40, Machine(7, noise=0.005).pair(1.0, 1.0), {})
    noisy_catch = max(t.detectable for t in result.timings)
    calm_catch = max(t.detectable for t in calm.timings)
    assert 0.02 <= calm_catch < noisy_catch < 0.5  # never below the tolerance, and wider with the noise


def test_pairs_alternate_the_side_that_starts_from_the_candidate() -> None:
    machine = Machine(3)
    compare_against("main", "0" * 40, machine.pair(1.0, 1.5), {})
    # candidate-base, base-candidate, ...: a trend in the machine's speed falls on both sides alike
    assert machine.order[:6] == ["candidate", "base", "base", "candidate", "candidate", "base"]


def test_a_contended_profile_sets_its_pair_aside_and_never_decides() -> None:
    machine = Machine(5)
    machine.contended = lambda n: n in (2, 5, 6)  # the first pair's base, and the third pair
    result = compare_against("main", "0" * 40, machine.pair(1.0, 3.0), {})
    assert result.contended == 2
    assert all(not b.contended and not c.contended for b, c in result.pairs)
    assert "2 pairs set aside" in " ".join(result.warnings())


def test_a_machine_contended_throughout_decides_nothing() -> None:
    machine = Machine(5)
    machine.contended = lambda _n: True
    result = compare_against("main", "0" * 40, machine.pair(1.0, 3.0), {})
    assert result.pairs == [] and result.checks == []
    assert result.contended == 2 * LOOKS[-1]
    assert "no pair was measured without contention" in " ".join(result.warnings())


def test_a_base_that_cannot_be_measured_is_said_and_compares_nothing() -> None:
    def broken(_base_first: bool) -> tuple[Run, Run]:
        raise BaseMeasurementError("ModuleNotFoundError: no module named 'mymodels.head'")

    result = compare_against("main", "0" * 40, broken, {})
    assert result.status == "failed" and result.checks == []
    assert "the base could not be measured: ModuleNotFoundError" in result.warnings()[0]


def test_a_figure_read_from_the_same_samples_as_another_is_counted_once() -> None:
    def run(step: float) -> Run:
        return Run({"forward_pass": step, "inference_batch": step, "total_training_time": 50 * step}, {})

    pairs = [(run(1.0 + i / 100), run(1.1 + i / 100)) for i in range(3)]
    assert [m.name for m in timing_metrics(pairs)] == ["forward_pass", "total_training_time"]
    assert [t.metric for t in look(pairs, {}, final=True).timings or []] == ["forward_pass", "total_training_time"]
