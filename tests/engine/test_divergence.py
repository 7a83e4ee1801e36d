"""A non-finite loss never feeds a figure: the learning-rate warm-up, the restore and re-measure, and the error
when training diverges again."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
import torch

from pytest_mlestimate import estimate, estimate_model
from pytest_mlestimate.core.errors import ModelRunError
from pytest_mlestimate.core.metrics import METRIC
from pytest_mlestimate.profiling import contention, profiler
from pytest_mlestimate.profiling.profile import Profile
from pytest_mlestimate.profiling.profiler import profile_scenario
from pytest_mlestimate.scenarios.scenario import Optimizer, parse_scenario
from pytest_mlestimate.tiny import TinyDetector
from tests.tiny_scenario import TINY as TINY_BASE

TINY: dict[str, Any] = {
    **TINY_BASE,
    "device": "cpu",
    "warmup_iterations": 2,
    "measure_iterations": 6,
}
SLOW_S = 1.0
"""The diverged step's sleep: a step kept from the diverged attempt shows by it. On one thread a step of the tiny
model took at most 8 ms beside two busy loops (on two threads 0.74 s: each waits for the other when one is
descheduled), so no load makes a clean step pass for it."""


@pytest.fixture(autouse=True)
def _quiet_steps(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Step counts here are the scenario's: a busy machine's re-measurement would add steps."""
    monkeypatch.setattr(contention, "judge", lambda *args, **kwargs: False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class OnceDivergingDetector(TinyDetector):
    """Its loss is NaN (or ``bad`` times the loss) at one call only, and that call is slow: a diverged step
    that must not be kept."""

    def __init__(self, nan_at_call: int, bad: float = float("nan")) -> None:
        super().__init__()
        self.calls = 0
        self.nan_at_call = nan_at_call
        self.bad = bad
        self.starting_weights = self.classifier.weight.detach().clone()
        self.weights_at_call: list[torch.Tensor] = []

    def forward(self, images: Any, targets: Any = None) -> Any:
        self.calls += 1
        self.weights_at_call.append(self.classifier.weight.detach().clone())
        out = super().forward(images, targets)
        if self.training and self.calls == self.nan_at_call:
            time.sleep(SLOW_S)
            out = {**out, "loss_classifier": out["loss_classifier"] * self.bad}
        return out


def test_a_divergence_is_measured_again_from_the_starting_state_and_keeps_no_diverged_step() -> None:
    model = OnceDivergingDetector(nan_at_call=5)  # warm-up 2 steps, then the third measured step
    result = estimate_model(lambda: model, {**TINY, "architecture": "tests:flaky"})
    profile = result.profile
    assert profile.divergence_restarts == 1
    assert len(profile.warmup_step_times) == 2 and len(profile.step_times) == 6  # none of the first attempt's
    assert max(profile.warmup_step_times + profile.step_times + profile.forward_times) < SLOW_S
    # the second attempt began with the weights the first began with, not those trained up to the NaN
    assert torch.equal(model.weights_at_call[5], model.starting_weights)
    assert not torch.equal(model.weights_at_call[4], model.starting_weights)
    assert any("the loss became nan at training step 5" in w and "measured again" in w for w in result.warnings())


class HeavyDetector(OnceDivergingDetector):
    """``HEAVY`` bytes of frozen weights (in the starting state's copy, with no gradients or optimizer state
    to hide it behind), and at the diverging call ``HEAVY`` bytes more held through the step in small pieces,
    as a diverged R-CNN's flood of proposals (small pieces stay resident after they are freed)."""

    def __init__(self, nan_at_call: int) -> None:
        super().__init__(nan_at_call)
        self.frozen = torch.nn.Parameter(torch.ones(HEAVY // 4), requires_grad=False)

    def forward(self, images: Any, targets: Any = None) -> Any:
        out = super().forward(images, targets)
        if self.training and self.calls == self.nan_at_call:
            scale = self.classifier.weight.sum()
            flood = [torch.ones(HEAVY // 4 // 400) * scale for _ in range(400)]
            out = {**out, "loss_box_reg": out["loss_box_reg"] + sum(piece.sum() for piece in flood) * 0.0}
        return out


HEAVY = 160 * 2**20


def _profile_from_here(nan_at_call: int, isolated: bool) -> Profile:
    """A profile in this process; ``isolated`` folds in this process's peak RSS, restarted here first so that
    it holds this profile's alone."""
    if isolated:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as clear:
            clear.write("5")
    scenario = parse_scenario({**TINY, "architecture": "tests:heavy", "optimizer": {"warmup_steps": 0}})
    return profile_scenario(scenario, lambda _scenario: HeavyDetector(nan_at_call), isolated=isolated)


@pytest.mark.parametrize("isolated", [False, True], ids=["sampled", "process-peak"])
def test_the_figures_after_a_divergence_are_those_of_a_run_that_never_diverged(isolated: bool) -> None:
    if isolated and not os.access("/proc/self/clear_refs", os.W_OK):
        pytest.skip("needs Linux's /proc/self/clear_refs to restart this process's peak RSS")
    clean = _profile_from_here(nan_at_call=0, isolated=isolated)
    restarted = _profile_from_here(nan_at_call=5, isolated=isolated)
    assert (clean.divergence_restarts, restarted.divergence_restarts) == (0, 1)
    assert clean.training is not None and restarted.training is not None
    tolerance = METRIC["peak_ram_memory"].tolerance
    # neither the diverged attempt's flood nor the copy the starting state was read back from counts
    assert restarted.training.peak_rss == pytest.approx(clean.training.peak_rss, rel=tolerance)
    assert len(restarted.warmup_step_times) == len(clean.warmup_step_times) == 2
    assert len(restarted.step_times) == len(clean.step_times) == 6
    assert restarted.training.samples == clean.training.samples  # the diverged attempt's samples are dropped


def test_where_the_process_peak_cannot_restart_the_sampled_peak_stands_and_a_warning_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(profiler, "_reset_peak_rss_of_process", lambda: False)
    scenario = parse_scenario({**TINY, "architecture": "tests:flaky"})
    profile = profile_scenario(scenario, lambda _scenario: OnceDivergingDetector(nan_at_call=5), isolated=True)
    assert profile.divergence_restarts == 1 and profile.training is not None
    assert any("peak RSS could not be restarted" in w for w in profile.warnings)


def test_an_exploding_loss_counts_as_a_divergence_before_it_is_nan() -> None:
    result = estimate_model(lambda: OnceDivergingDetector(nan_at_call=4, bad=1e4), {**TINY, "architecture": "t:x"})
    assert result.profile.divergence_restarts == 1 and len(result.profile.step_times) == 6
    assert max(result.profile.step_times) < SLOW_S
    assert any("the loss reached" in w and "over 100x the first step's" in w for w in result.warnings())


def test_a_second_divergence_is_an_error_that_says_what_to_change() -> None:
    diverging = {**TINY, "optimizer": {"lr": 1e6, "warmup_steps": 0}}
    with pytest.raises(ModelRunError) as caught:
        estimate(diverging, isolate=False, cache=False)
    message = str(caught.value)
    assert "diverged while profiling training: the loss" in message and "at training step" in message
    assert "learning rate 1e+06" in message and "before the starting state was restored" in message
    assert "lower optimizer.lr or lengthen optimizer.warmup_steps" in message


def test_the_default_recipe_warms_the_learning_rate_up_every_step_and_says_so() -> None:
    profile = estimate(TINY, isolate=False, cache=False).profile
    assert profile.optimizer_recipe is not None and "warm-up from 0.001 x lr over the first 1000 steps" in (
        profile.optimizer_recipe
    )
    # LinearLR from 0.001: after the 2 warm-up steps the lr is 0.01 x (0.001 + 0.999 x 2/1000)
    first, last = profile.lr_range or (0, 0)
    assert first == pytest.approx(0.01 * (0.001 + 0.999 * 2 / 1000))
    assert last == pytest.approx(0.01 * (0.001 + 0.999 * 7 / 1000))
    flat = estimate({**TINY, "optimizer": {"warmup_steps": 0}}, isolate=False, cache=False).profile
    assert flat.lr_range == (0.01, 0.01)
    assert flat.optimizer_recipe is not None and "no learning-rate warm-up" in flat.optimizer_recipe


def test_optimizer_warmup_settings_are_validated() -> None:
    assert Optimizer().warmup_factor == 0.001 and Optimizer().warmup_steps == 1000
    with pytest.raises(ValueError, match="warmup_factor"):
        Optimizer(warmup_factor=0)
    with pytest.raises(ValueError, match="warmup_steps"):
        Optimizer(warmup_steps=-1)
