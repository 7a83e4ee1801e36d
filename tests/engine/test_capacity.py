"""Capacity planning: fits with prediction intervals, the largest batch under a limit, the card table.

The search is driven by a stand-in world (memory and step time as functions of batch size), so each test
knows the true answer; tests/service and tests/plugin run the same code on real profiles.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from typing import Any

import pytest

from pytest_mlestimate.core.errors import ProfileCrashError
from pytest_mlestimate.core.gpu_cards import OUTSIDE_ALLOCATOR
from pytest_mlestimate.estimates.estimate import Estimate
from pytest_mlestimate.planning.capacity import capacity
from pytest_mlestimate.planning.cards import card_table
from pytest_mlestimate.planning.checks import CapacityError
from pytest_mlestimate.planning.request import read_request
from pytest_mlestimate.planning.search import SearchBounds, max_batch_size, power_then_binary_trials
from pytest_mlestimate.planning.sweep import fit_sizes
from pytest_mlestimate.profiling.profile import PhasePeaks, PredictedGpuMemory, Profile
from pytest_mlestimate.scenarios.scenario import MAX_BATCH_SIZE, Scenario
from tests.tiny_scenario import TINY

MIB = 2**20
GIB = 2**30


def world(
    ram: Callable[[int], float],
    step: Callable[[int], float] = lambda b: 0.05 + 0.01 * b,
    *,
    device: str = "cpu",
    reserved: Callable[[int], float] | None = None,
    context: float = 0.0,
    oom_above: int | None = None,
    noise: float = 0.0,
    seed: int = 0,
    predicted: Callable[[int], int] | None = None,
) -> tuple[Callable[[Scenario], Estimate], list[int]]:
    """A measure function whose figures follow the given laws, and the list of batches it profiled."""
    profiled: list[int] = []
    rng = random.Random(seed)

    def measure(scenario: Scenario) -> Estimate:
        b = scenario.batch_size
        profiled.append(b)
        wobble = 1 + rng.uniform(-noise, noise)
        fits = oom_above is None or b <= oom_above
        phase = None
        if fits:
            held = reserved(b) if reserved else None
            phase = PhasePeaks(
                peak_rss=int(ram(b) * wobble),
                peak_cpu_percent=100.0,
                peak_gpu_allocated=int(held * 0.8) if held else None,
                peak_gpu_reserved=int(held) if held else None,
                peak_gpu_memory=int(held + context) if held else None,
            )
        profile = Profile(
            device=device,
            device_name="stand-in",
            step_times=[step(b) * wobble] * 5 if fits else [],
            warmup_step_times=[step(b)] if fits else [],
            training=phase,
            failure=None if fits else f"does not fit: batch {b}",
        )
        if predicted is not None and scenario.predict_gpu:
            held = predicted(b)
            profile.predicted_training = PredictedGpuMemory(
                card=scenario.predict_gpu, allocated=held, reserved=held, device=held + OUTSIDE_ALLOCATOR,
                traced_storages=100, steps=3,
            )  # fmt: skip
        return Estimate(scenario, profile, cache={"hit": False})

    return measure, profiled


def scenario(**changes: Any) -> dict[str, Any]:
    return {**TINY, "device": "cpu", **changes}


def test_a_line_through_three_sizes_predicts_a_larger_one_inside_its_interval() -> None:
    measure, profiled = world(lambda b: 400 * MIB + 30 * MIB * b, noise=0.005)
    fit = fit_sizes(scenario(), [1, 2, 4], measure=measure)
    assert profiled == [1, 2, 4]
    predicted = fit.predict(16)
    ram = predicted["peak_ram_memory"]
    truth = 400 * MIB + 30 * MIB * 16
    assert abs(ram.value - truth) / truth < 0.02
    assert ram.covers(truth)
    assert ram.where == "far extrapolation"  # 16 is 4x the largest profiled batch
    assert fit.predict(3)["peak_ram_memory"].where == "interpolated"
    assert fit.predict(4)["peak_ram_memory"].where == "measured"
    assert fit.predict(6)["step_time"].where == "extrapolated"
    step = predicted["step_time"]
    assert step.covers(0.05 + 0.01 * 16)
    assert step.low < step.value < step.high


def test_the_interval_widens_with_distance_and_never_falls_below_the_noise_floor() -> None:
    measure, _ = world(lambda b: 400 * MIB + 30 * MIB * b)  # a perfect line: no residuals at all
    fit = fit_sizes(scenario(), [1, 2, 4], measure=measure)
    near, far = fit.predict(5)["peak_ram_memory"], fit.predict(40)["peak_ram_memory"]
    assert (near.high - near.low) / near.value > 0.01  # a fresh profile varies by about 1 %
    assert (far.high - far.low) / far.value > (near.high - near.low) / near.value


def test_images_size_and_batch_share_one_line_through_the_load() -> None:
    # memory follows batch x pixels: a line over the load predicts a size change, not only a batch change
    measure, _ = world(lambda b: 300 * MIB + 2 * MIB * b)
    sizes = {}

    def by_pixels(s: Scenario) -> Estimate:
        found = measure(s)
        pixels = s.image_size[0] * s.image_size[1]
        sizes[(s.batch_size, s.image_size)] = pixels
        assert found.profile.training is not None
        found.profile.training.peak_rss = int(300 * MIB + s.batch_size * pixels * 100)
        return found

    fit = fit_sizes(scenario(), [1, 2], image_sizes=[(64, 64), (128, 128)], measure=by_pixels)
    truth = 300 * MIB + 8 * 256 * 256 * 100
    assert math.isclose(fit.predict(8, (256, 256))["peak_ram_memory"].value, truth, rel_tol=1e-6)


@pytest.mark.parametrize("true_max", [1, 3, 10, 37])
def test_the_largest_batch_under_a_ram_limit_is_exact_and_confirmed(true_max: int) -> None:
    per_batch = 25 * MIB
    limit = 500 * MIB + per_batch * true_max + per_batch // 2
    measure, profiled = world(lambda b: 500 * MIB + per_batch * b + (b * b) * 0.2 * MIB)  # slightly convex
    found = max_batch_size(scenario(), limit, measure=measure)
    truth = max(b for b in range(1, 200) if 500 * MIB + per_batch * b + (b * b) * 0.2 * MIB <= limit)
    assert found.largest == truth
    assert found.settled
    assert truth in profiled and truth + 1 in profiled  # confirmed by real profiles on both sides
    assert found.first_failing == truth + 1
    assert found.profiles == len(profiled)


def test_the_search_spends_fewer_profiles_than_doubling_then_bisecting() -> None:
    measure, profiled = world(lambda b: 500 * MIB + 10 * MIB * b)
    found = max_batch_size(scenario(), 500 * MIB + 10 * MIB * 100 + MIB, measure=measure)
    assert found.largest == 100
    assert found.lightning_trials == power_then_binary_trials(lambda b: b <= 100)
    assert len(profiled) < found.lightning_trials


def test_a_search_capped_by_its_owners_batch_limit_says_so() -> None:
    measure, profiled = world(lambda b: 500 * MIB + MIB * b)
    bounds = SearchBounds(most=64, owner="this service (--max-batch-size 64)")
    found = max_batch_size(scenario(), 64 * GIB, measure=measure, bounds=bounds)
    assert found.largest == 64 and found.settled and max(profiled) == 64
    said = "batches above 64 were not tried: this service (--max-batch-size 64) profiles batches up to 64"
    assert found.to_dict()["bound"] == said and said in str(found)
    # a batch limit of the request's own is no bound of the owner's
    assert max_batch_size(scenario(), 500 * MIB + 20 * MIB, measure=measure, bounds=bounds).bound is None


def test_a_search_past_its_owners_time_limit_starts_no_new_profile_and_says_what_it_knows() -> None:
    slow, _ = world(lambda b: 500 * MIB + 10 * MIB * b)

    def measure(sized: Scenario) -> Estimate:
        time.sleep(0.05)
        return slow(sized)

    bounds = SearchBounds(seconds=0.01, owner="this service")
    found = max_batch_size(scenario(), 500 * MIB + 10 * MIB * 100 + MIB, measure=measure, bounds=bounds)
    unbounded = max_batch_size(scenario(), 500 * MIB + 10 * MIB * 100 + MIB, measure=slow)
    assert not found.settled and found.note == "stopped after 0.01 s, the time this service gives a search"
    assert found.profiles < unbounded.profiles and found.largest is not None and found.largest <= 100


def test_an_out_of_memory_is_a_trial_that_failed_not_an_error() -> None:
    measure, profiled = world(
        lambda b: GIB, device="cuda:0", reserved=lambda b: GIB + 512 * MIB * b, context=700 * MIB, oom_above=9
    )
    found = max_batch_size(scenario(device="cuda:0"), 40 * GIB, measure=measure)
    assert found.figure == "peak_gpu_memory"
    assert found.largest == 9 and found.first_failing == 10
    assert len(profiled) <= 10  # the line said 76: it bisects instead of walking down one by one


def test_a_profile_killed_for_ram_is_a_trial_that_did_not_fit() -> None:
    measure, profiled = world(lambda b: 500 * MIB + 10 * MIB * b)

    def crashing(scenario: Scenario) -> Estimate:
        if scenario.batch_size > 20:
            profiled.append(scenario.batch_size)
            raise ProfileCrashError("profiling failed: it was killed (SIGKILL): most likely the machine ran out of RAM")
        return measure(scenario)

    found = max_batch_size(scenario(), 500 * MIB + 10 * MIB * 100, measure=crashing)
    assert found.largest == 20 and found.first_failing == 21
    assert found.profiles == len(profiled)
    assert "batch 21: profiling failed: it was killed (SIGKILL)" in (found.note or "")
    assert "profiles that crashed count as not fitting" in str(found)


def test_power_then_binary_counts_trials_as_the_trainer_runs_them() -> None:
    # 2 4 8 16(x) 12(x) 10 11(x)
    assert power_then_binary_trials(lambda b: b <= 10) == 7
    # 2(x): it answers 1 without trying it
    assert power_then_binary_trials(lambda b: b <= 1) == 1
    # 2 4 8 16 32 64(x) 48 56 60 62 63
    assert power_then_binary_trials(lambda b: b <= 63) == 11


def test_the_card_table_adds_what_the_device_held_beside_the_allocator() -> None:
    context = 1200 * MIB
    measure, _ = world(lambda b: GIB, device="cuda:0", reserved=lambda b: 2 * GIB + GIB * b, context=context)
    fit = fit_sizes(scenario(device="cuda:0"), [1, 2, 4], measure=measure)
    rows = {row.card.memory_gib: row for row in card_table(fit, headroom=0.0)}
    for gib, row in rows.items():
        room = gib * GIB - context
        assert row.largest == math.floor((room - 2 * GIB) / GIB)
    assert rows[16].largest < rows[80].largest < rows[141].largest


def test_on_a_cpu_runner_the_search_and_the_card_table_use_the_predicted_gpu_memory() -> None:
    measure, _ = world(lambda b: GIB, predicted=lambda b: 200 * MIB + 100 * MIB * b)
    found = max_batch_size(scenario(predict_gpu="T4"), measure=measure, headroom=0.0)
    assert found.figure == "peak_gpu_memory" and "T4 (predicted)" in found.limit_source
    assert found.largest == math.floor((16 * GIB - OUTSIDE_ALLOCATOR - 200 * MIB) / (100 * MIB))
    fit = fit_sizes(scenario(predict_gpu="T4"), [1, 2, 4], measure=measure)
    for row in card_table(fit, headroom=0.0):
        room = row.card.memory_gib * GIB - OUTSIDE_ALLOCATOR
        assert row.largest == min(math.floor((room - 200 * MIB) / (100 * MIB)), MAX_BATCH_SIZE), row


def test_on_a_cpu_the_card_table_says_why_it_is_empty() -> None:
    measure, _ = world(lambda b: GIB + b * MIB)
    rows = card_table(fit_sizes(scenario(), [1, 2], measure=measure))
    assert all(row.largest is None and "ran on cpu" in (row.reason or "") for row in rows)


@pytest.mark.parametrize(
    ("call", "field", "words"),
    [
        (lambda m: max_batch_size(scenario(), "16 ms", measure=m), "limit", "unit of seconds"),
        (lambda m: max_batch_size(scenario(), "16", measure=m), "limit", "not a quantity"),
        (lambda m: max_batch_size(scenario(), -5.0, measure=m), "limit", "positive"),
        (lambda m: fit_sizes(scenario(), [0, 2, 4], measure=m), "batch_sizes", "0 is not a batch size"),
        (lambda m: fit_sizes(scenario(), [-1, 2], measure=m), "batch_sizes", "-1 is not a batch size"),
        (lambda m: fit_sizes(scenario(), [4, 4], measure=m), "batch_sizes", "1 different sizes"),
        (lambda m: max_batch_size(scenario(), "1 GiB", headroom="150 %", measure=m), "headroom", "under 100 %"),
        (lambda m: capacity(scenario(), search=False, predict=[0], measure=m), "predict", "0 is not a batch size"),
    ],
)
def test_bad_capacity_input_names_the_field_before_anything_is_profiled(
    call: Callable[[Any], Any], field: str, words: str
) -> None:
    measure, profiled = world(lambda b: GIB)
    with pytest.raises(CapacityError) as raised:
        call(measure)
    assert str(raised.value).startswith(f"{field}: ")
    assert words in str(raised.value)
    if field != "predict":
        assert profiled == []


def test_the_report_renders_its_figures_and_keys() -> None:
    measure, _ = world(lambda b: 500 * MIB + 20 * MIB * b)
    report = capacity(scenario(), limit="700 MiB", predict=[16], measure=measure)
    data = report.to_dict()
    assert data["Max Batch Size"] == 10  # 500 MiB + 10 x 20 MiB is exactly the limit
    assert data["search"]["confirmed"] is True
    assert data["predictions"]["16"]["Peak RAM Memory"]["basis"] == "extrapolated"  # batch 11 was profiled
    assert "largest batch under 700.00 MiB of Peak RAM Memory (given): 10" in str(report)


@pytest.mark.parametrize("value", ["yes", "true", 1, 0, None])
def test_search_is_true_or_false_and_nothing_read_as_either(value: object) -> None:
    with pytest.raises(CapacityError, match=r"capacity\.search: expected true or false"):
        read_request({"search": value})
    assert read_request({"search": False}).search is False
