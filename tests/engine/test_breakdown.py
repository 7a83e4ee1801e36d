"""The per-module breakdown: which part a time or a byte belongs to, measured through real hooks."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torchvision
from torch import nn

from pytest_mlestimate import estimate, estimate_model
from pytest_mlestimate.profiling import contention
from pytest_mlestimate.profiling.module_hooks import measure_inference, measure_training
from pytest_mlestimate.profiling.part_hooks import TrainingCalls, parts_of
from pytest_mlestimate.tiny import TinyDetector
from tests.tiny_scenario import TINY

BATCH, WIDTH, HIDDEN = 64, 64, 2048
FLOAT = 4


class Lopsided(nn.Module):
    """A light part and a heavy one whose saved tensors are known to the byte."""

    def __init__(self) -> None:
        super().__init__()
        self.light = nn.Linear(WIDTH, WIDTH)
        self.heavy = nn.Sequential(
            nn.Linear(WIDTH, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, WIDTH)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.heavy(self.light(x)).square().mean()


def _calls(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor) -> TrainingCalls:
    def forward() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        return model(x)

    def step(loss: torch.Tensor) -> None:
        optimizer.step()
        loss.item()

    return TrainingCalls(
        forward=forward,
        backward=lambda loss: loss.backward(),
        optimizer_step=step,
        parameters=lambda: list(model.parameters()),
        optimizer_state=lambda: sum(
            t.numel() * t.element_size() for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t)
        ),
    )


@pytest.fixture
def lopsided() -> tuple[Lopsided, torch.optim.Optimizer, torch.Tensor]:
    torch.manual_seed(0)
    model = Lopsided()
    return model, torch.optim.AdamW(model.parameters()), torch.randn(BATCH, WIDTH)


def test_the_heavy_part_takes_the_time_and_the_backward_runs_in_reverse(lopsided: Any) -> None:
    model, optimizer, x = lopsided
    calls = _calls(model, optimizer, x)
    warmup = calls.forward()  # the process's first operations pay its one-time set-up: not a part's time
    calls.backward(warmup)
    calls.optimizer_step(warmup)
    breakdown, timeline = measure_training(model, torch.device("cpu"), calls, steps=5)
    light, heavy = breakdown.parts
    assert (light.module, heavy.module) == ("light", "heavy")  # in the order the forward runs them
    assert heavy.forward_s > 5 * light.forward_s
    assert heavy.backward_s > 5 * light.backward_s
    training = breakdown.training
    assert training is not None and training.steps == 5
    explained = training.parts_s + training.forward_other_s + training.backward_other_s + training.optimizer_s
    assert explained == pytest.approx(training.step_s, rel=1e-6)
    backward = [(mark.module, mark.phase) for mark in timeline.marks if mark.phase == "backward"]
    assert backward == [("heavy", "backward"), ("light", "backward")]


def test_activations_are_the_bytes_each_part_saves_for_backward(lopsided: Any) -> None:
    model, optimizer, x = lopsided
    breakdown, _ = measure_training(model, torch.device("cpu"), _calls(model, optimizer, x), steps=1)
    light, heavy = breakdown.parts
    assert light.activations_bytes == BATCH * WIDTH * FLOAT  # its input, for the weight's gradient
    # the heavy part's input and both ReLU outputs (each also the next layer's input, counted once)
    assert heavy.activations_bytes == BATCH * (WIDTH + 2 * HIDDEN) * FLOAT
    parameters = sum(p.numel() for p in model.parameters()) * FLOAT
    assert breakdown._shares == {
        "parameters": parameters,
        "gradients": parameters,
        "optimizer_state": 2 * parameters + sum(1 for _ in model.parameters()) * FLOAT,  # AdamW: two moments, a step
        "activations": light.activations_bytes + heavy.activations_bytes + BATCH * WIDTH * FLOAT,  # + square's input
    }


def test_no_hook_outlives_the_breakdown(lopsided: Any) -> None:
    model, optimizer, x = lopsided
    measure_training(model, torch.device("cpu"), _calls(model, optimizer, x), steps=1)
    model.eval()
    with torch.inference_mode():
        measure_inference(model, torch.device("cpu"), lambda: model(x), calls=1)
    for module in model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks


def test_the_timeline_follows_one_step(lopsided: Any) -> None:
    model, optimizer, x = lopsided
    _, timeline = measure_training(model, torch.device("cpu"), _calls(model, optimizer, x), steps=1)
    assert timeline.t_s == sorted(timeline.t_s)
    assert len(timeline.series["rss"]) == len(timeline.t_s) > 10
    assert min(timeline.series["rss"]) > 0
    # glibc here: the heap shows the tensors kept for backward piling up through the forward pass (from the
    # model's first module on: zero_grad has freed the last step's gradients by then)
    forward = [mark for mark in timeline.marks if mark.phase == "forward"]
    heap = [h for t, h in zip(timeline.t_s, timeline.series["heap"], strict=True) if t >= forward[0].start_s]
    assert max(heap) - heap[0] >= 0.8 * BATCH * 2 * HIDDEN * FLOAT  # at least the ReLU outputs kept for backward
    phases = timeline.phases
    assert 0 < phases["forward_end_s"] < phases["backward_end_s"] <= phases["end_s"]
    for mark in timeline.marks:
        inside = (0, phases["forward_end_s"]) if mark.phase == "forward" else (phases["forward_end_s"], phases["end_s"])
        assert inside[0] <= mark.start_s <= mark.end_s <= inside[1]


def test_inference_times_each_part(lopsided: Any) -> None:
    model, _, x = lopsided
    model.eval()
    with torch.inference_mode():
        times, whole = measure_inference(model, torch.device("cpu"), lambda: model(x), calls=5)
    assert list(times) == ["light", "heavy"]
    assert times["heavy"] > 5 * times["light"]
    assert whole.parts_s == pytest.approx(sum(times.values()))
    assert whole.parts_s <= whole.batch_s


def test_parts_of_torchvision_detectors_and_of_a_depth() -> None:
    detection = torchvision.models.detection
    faster = detection.fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None)
    assert [name for name, _ in parts_of(faster)] == ["transform", "backbone.body", "backbone.fpn", "rpn", "roi_heads"]
    ssdlite = detection.ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None)
    assert [name for name, _ in parts_of(ssdlite)] == ["backbone", "anchor_generator", "head", "transform"]
    deeper = [name for name, _ in parts_of(faster, depth=2)]
    assert "roi_heads.box_head" in deeper and "rpn.head" in deeper and "transform" in deeper  # a leaf stands for itself


def test_a_profile_carries_its_breakdown_and_the_split_of_its_peak() -> None:
    result = estimate({**TINY, "device": "cpu", "measure_iterations": 3}, cache=False)
    details = result.to_dict()["details"]
    breakdown = details["breakdown"]
    assert [part["module"] for part in breakdown["parts"]] == ["backbone", "classifier", "box_regressor"]
    assert all(part["forward_s"] > 0 and part["inference_s"] > 0 for part in breakdown["parts"])
    training = breakdown["training"]
    assert training["headline_step_s"] > 0  # the step measured without hooks, beside the instrumented one
    assert training["remainder_s"] == pytest.approx(training["headline_step_s"] - training["step_s"])
    memory = breakdown["memory"]
    assert memory["whole"] == "Peak RAM Memory"
    assert memory["whole_bytes"] == result.to_dict()["resource"]["Peak RAM Memory"]
    named = memory["parameters"] + memory["gradients"] + memory["optimizer_state"] + memory["activations"]
    assert named + memory["rest"] == memory["whole_bytes"]
    assert details["timeline"]["series"]["rss"]
    table = str(result.breakdown).splitlines()
    assert table[0].split() == ["part", "forward", "backward", "inference", "activations"]
    assert [row.split()[0] for row in table[1:4]] == ["backbone", "classifier", "box_regressor"]
    assert table[-1].startswith("Peak RAM Memory") and "activations" in table[-1] and "rest" in table[-1]


def test_depth_zero_measures_no_breakdown() -> None:
    details = estimate({**TINY, "device": "cpu", "measure_iterations": 2, "breakdown_depth": 0}, cache=False).to_dict()
    assert details["details"]["breakdown"] is None and details["details"]["timeline"] is None


class _FailsAfter(TinyDetector):
    """Trains for as many steps as the headline measurement takes, then fails: in the breakdown's first step."""

    def __init__(self, steps: int) -> None:
        super().__init__()
        self.left = steps

    def forward(self, images: Any, targets: Any = None) -> Any:
        if self.training:
            if self.left == 0:
                raise RuntimeError("a step the breakdown ran")
            self.left -= 1
        return super().forward(images, targets)


def test_a_breakdown_that_fails_costs_the_breakdown_and_says_so_not_the_profile(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the steps before the breakdown's are the scenario's: a busy machine's re-measurement would add steps
    monkeypatch.setattr(contention, "judge", lambda *args, **kwargs: False)
    warmup, measured = 1, 2
    result = estimate_model(
        lambda: _FailsAfter(warmup + measured),
        {**TINY, "device": "cpu", "warmup_iterations": warmup, "measure_iterations": measured},
    )
    figures = result.to_dict()
    assert figures["training_time"]["Total Training Time"] > 0 and figures["resource"]["Peak RAM Memory"] > 0
    breakdown = figures["details"]["breakdown"]
    assert "the instrumented training steps failed: RuntimeError: a step the breakdown ran" in breakdown["unavailable"]
    assert figures["details"]["timeline"] is None
    assert all(part["inference_s"] > 0 for part in breakdown["parts"])  # inference is still broken down
    assert any(w.startswith("no per-module breakdown: ") for w in result.warnings())


class _FakeAllocator:
    """A CUDA caching allocator's counters, and events in host time: the GPU paths of the breakdown on a CPU."""

    MIB = 2**20

    def __init__(self) -> None:
        self.allocated = self.peak = 0

    def take(self, nbytes: int) -> None:
        self.allocated += nbytes
        self.peak = max(self.peak, self.allocated)

    def reset_peak(self, *_: Any) -> None:
        self.peak = self.allocated


class _HostEvent:
    def __init__(self, **_: Any) -> None:
        self.at = 0.0

    def record(self, *_: Any) -> None:
        import time

        self.at = time.perf_counter()

    def elapsed_time(self, end: _HostEvent) -> float:
        return (end.at - self.at) * 1000.0


def test_on_a_gpu_each_part_gets_the_allocator_peak_of_its_forward(lopsided: Any, monkeypatch: Any) -> None:
    model, optimizer, x = lopsided
    fake = _FakeAllocator()
    monkeypatch.setattr(torch.cuda, "Event", _HostEvent)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *_: None)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda *_: fake.allocated)
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda *_: fake.allocated)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda *_: fake.peak)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", fake.reset_peak)

    def workspace(*_: Any) -> None:  # the heavy part's middle layer takes 3 MiB and keeps 1 MiB of it
        fake.take(3 * fake.MIB)
        fake.take(-2 * fake.MIB)

    model.heavy[2].register_forward_hook(workspace)
    model.light.register_forward_pre_hook(lambda *_: fake.take(fake.MIB // 2))  # held before light's own hook
    breakdown, timeline = measure_training(model, torch.device("cuda"), _calls(model, optimizer, x), steps=1)
    parts = {part.module: part for part in breakdown.parts}
    assert parts["heavy"].forward_peak_bytes == 3 * fake.MIB
    assert parts["light"].forward_peak_bytes == 0  # what was held before its forward began is not its own
    assert set(timeline.series) == {"allocated", "reserved"}
