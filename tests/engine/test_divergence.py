"""A non-finite loss never feeds a figure: the learning-rate warm-up, the restore and re-measure, and the error
when training diverges again."""

from __future__ import annotations

import time
from typing import Any

import pytest
import torch

from pytest_mlestimate import estimate, estimate_model
from pytest_mlestimate.core.errors import ModelRunError
from pytest_mlestimate.profiling import contention
from pytest_mlestimate.scenarios.scenario import Optimizer
from pytest_mlestimate.tiny import TinyDetector
from tests.tiny_scenario import TINY as TINY_BASE

TINY: dict[str, Any] = {
    **TINY_BASE,
    "device": "cpu",
    "warmup_iterations": 2,
    "measure_iterations": 6,
}
SLOW_S = 0.3


@pytest.fixture(autouse=True)
def _no_contention(monkeypatch: pytest.MonkeyPatch) -> None:
    """Step counts here are the scenario's: a busy machine's re-measurement would add steps."""
    monkeypatch.setattr(contention, "judge", lambda *args, **kwargs: False)


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
