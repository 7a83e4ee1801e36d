"""One profile's model, batch, optimizer and monitor, and its steps as a training loop runs them."""

from __future__ import annotations

import contextlib
import math
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_leaves, tree_map

from pytest_mlestimate.core.devices import is_gpu
from pytest_mlestimate.core.progress import Listener, Progress
from pytest_mlestimate.profiling import turns
from pytest_mlestimate.profiling.contract import MeasuredModel
from pytest_mlestimate.profiling.dataset_batches import PASS_STEPS, DatasetBatches, DrawnBatch, draw_batches
from pytest_mlestimate.profiling.energy import RaplEnergy, StepEnergy
from pytest_mlestimate.profiling.hf_vision import predictions_per_image
from pytest_mlestimate.profiling.models import num_classes, target_kind
from pytest_mlestimate.profiling.monitor import ResourceMonitor
from pytest_mlestimate.profiling.part_hooks import TrainingCalls
from pytest_mlestimate.profiling.process_tree import peak_rss_of_process
from pytest_mlestimate.profiling.synthetic import make_batch, make_images
from pytest_mlestimate.profiling.tensor_batches import DEFAULT_CLIP_LENGTH, tensor_batch, tensor_loss
from pytest_mlestimate.scenarios.architectures import TENSOR_TASKS
from pytest_mlestimate.scenarios.scenario import Scenario

DIVERGED_LOSS_FACTOR = 100.0
"""A loss this many times the first step's (or 1, if larger) counts as diverged, as a non-finite one does. A
random-weight Mask R-CNN at lr 0.02 without warm-up went from 7.8 to 600, 4e9 and 1e32 before NaN, and its
steps were already 4x faster (collapsed proposals) at the finite 1e5-1e32 ones."""


@dataclass(frozen=True)
class Iterations:
    """How many steps to run.

    Warm-up: GPU 10 steps, past the first steps' lazy loading; CPU 3, past the first allocations.
    Measured steps, unless the scenario fixes a count: until the 95 % confidence interval of the mean step time
    is within ``precision`` of the mean, between a floor and two caps. GPU: at least 30 steps, as 30-step runs
    still differed by -7 % to +15 % and Mask R-CNN's random-weight slow-down needs steps 10-60 to extrapolate
    within 1 %; at most 300 steps or 60 s (300 steps of a 200 ms step). CPU: at least 8 steps (quiet step
    IQRs of 2-3 % meet 3 % by then); at most 60 steps or 60 s, as a 1 s step makes a minute what one profile
    in a test run can cost. Both measure for at least ``min_seconds``, so that per-CPU counters (10 ms ticks)
    can show a neighbour; the step cap yields to that floor, the time cap only after 3 steps.
    """

    warmup: int
    measure: int | None
    """A fixed count of measured steps; None measures until ``precision`` or a cap."""
    min_measure: int
    max_measure: int
    min_seconds: float
    max_seconds: float
    precision: float
    phased: int
    inference_warmup: int
    inference_one: int
    inference_batch: int

    @classmethod
    def for_scenario(cls, scenario: Scenario, device: str) -> Iterations:
        on_gpu = is_gpu(device)
        warmup = scenario.warmup_iterations if scenario.warmup_iterations is not None else (10 if on_gpu else 3)
        counted = scenario.measure_iterations or (50 if on_gpu else 12)
        return cls(
            warmup=warmup,
            measure=scenario.measure_iterations,
            min_measure=30 if on_gpu else 8,
            max_measure=300 if on_gpu else 60,
            min_seconds=1.0,
            max_seconds=60.0,
            precision=scenario.precision or (0.01 if on_gpu else 0.03),
            phased=min(counted, 20) if on_gpu else 0,
            inference_warmup=5 if on_gpu else 2,
            inference_one=max(counted // 2, 3) if on_gpu else 4,
            inference_batch=max(counted // 5, 3) if on_gpu else 3,
        )


def unheard(_progress: Progress) -> None:
    pass


class Session:
    """One model on one device with its optimizer, synthetic batch and timers."""

    def __init__(
        self,
        scenario: Scenario,
        model: nn.Module,
        device: str,
        monitor: ResourceMonitor,
        progress: Listener = unheard,
        contract: MeasuredModel | None = None,
    ) -> None:
        self.scenario = scenario
        self.progress = progress
        self.model = model
        self.device = torch.device(device)
        self.monitor = monitor
        self.on_gpu = is_gpu(self.device)
        training = scenario.application_type == "training"
        self.tensor_task = scenario.task_type in TENSOR_TASKS
        """Trained on one batch tensor (``tensor_batches``)."""
        self.contract = contract
        self.data: DatasetBatches | None = None
        images: Any
        targets: Any
        if contract is not None:
            images, targets = contract.make_batch(scenario.batch_size, scenario.image_size)
            targets = targets if training else []
        elif self.tensor_task:
            images, labels = tensor_batch(
                scenario.task_type,
                scenario.batch_size,
                scenario.image_size,
                num_classes(scenario),
                scenario.clip_length or DEFAULT_CLIP_LENGTH,
                vocabulary=getattr(getattr(model, "config", None), "vocab_size", None),
            )
            targets = labels if training else []
        elif scenario.dataset is not None:
            self.data = draw_batches(
                scenario.dataset,
                scenario.batch_size,
                target_kind(scenario),
                num_classes(scenario),
                scenario.aspect_ratio_group_factor,
            )
            first = self.data.sample[0]
            images, targets = first.images, first.targets if training else []
        elif training:
            images, targets = make_batch(
                scenario.batch_size,
                scenario.image_size,
                scenario.objects_per_image,
                num_classes(scenario),
                target_kind(scenario),
                num_keypoints=int(scenario.model_kwargs.get("num_keypoints", 17) or 17),
            )
        else:  # inference never reads targets: they would only inflate its memory figures
            generator = torch.Generator().manual_seed(0)
            images, targets = make_images(scenario.batch_size, *scenario.image_size, generator), []
        self._batches = (
            [self._on_device(b.images, b.targets) for b in self.data.sample] if self.data and training else []
        )
        """The dataset's sampled batches, on the device: training steps cycle through them."""
        self.images, self.targets = self._batches[0] if self._batches else self._on_device(images, targets)
        if contract is not None:
            self.one_input = self._on_device(contract.make_batch(1, scenario.image_size)[0], [])[0]
        else:
            self.one_input = self.images[:1]
        """One sample's inputs: what the 1-image inference time is measured on."""
        amp = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[scenario.amp]
        self.amp_dtype = amp
        self.scaler = torch.amp.GradScaler(self.device.type) if scenario.amp == "fp16" else None
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
        self.steps = 0
        """Training steps since the starting state (warm-up included)."""
        self.lr = 0.0
        """Learning rate of the latest training step."""
        self.first_loss = math.nan
        self.energy = StepEnergy(
            monitor.gpu_energy,
            RaplEnergy(),
            no_gpu=f"no GPU: {monitor.gpu_unavailable or 'profiled on the CPU'}",
        )

    def _on_device(self, images: Any, targets: Any) -> tuple[Any, Any]:
        """A batch's tensors on the session's device: detection's lists of images and target dicts, or a
        classifier's batch tensor and labels."""

        def moved(value: Any) -> Any:
            return value.to(self.device) if isinstance(value, torch.Tensor) else value

        return tree_map(moved, images), tree_map(moved, targets)

    def inference_inputs(self) -> tuple[list[Any], list[Any]]:
        """What inference calls are timed on, in turn: one image and the batch; with a dataset, each sampled
        batch's first image and the batch, as an evaluation pass meets its sizes (moved to the device call by
        call, so the device holds one at a time)."""
        if self.data is None:
            return [self.one_input], [self.images]
        return [batch.images[:1] for batch in self.data.sample], [batch.images for batch in self.data.sample]

    def batch_tensors(self) -> list[torch.Tensor]:
        """Every tensor of the batches the session holds on its device (a dataset's sample, or the one batch)."""
        batches = self._batches or [(self.images, self.targets)]
        return [leaf for leaf in tree_leaves(batches) if isinstance(leaf, torch.Tensor)]

    def input_tensors(self) -> list[torch.Tensor]:
        """The tensors of the batch's inputs (what inference holds besides the model)."""
        return [leaf for leaf in tree_leaves(self.images) if isinstance(leaf, torch.Tensor)]

    def call(self, inputs: Any) -> Any:
        """The model on a batch's inputs, as its family calls it."""
        if self.contract is not None:
            return self.contract(inputs)
        return self.model(inputs)

    def train_through_a_pass(self) -> Diverged | None:
        """Untimed training steps through an epoch's batches until the memory high-water stops rising
        (``PASS_STEPS``), so that the worst batches meet the memory a pass has grown; their memory counts in the
        phase's peaks. A diverged step ends the pass and is returned: the weights it left must not go on."""
        if self.data is None:
            return None
        data = self.data
        high_water: list[int] = []
        for batch in data.passing():
            try:
                self._untimed_step(batch)
            except Diverged as diverged:
                data.pass_stop = f"the loss {diverged.what} at its step {data.pass_trained + 1}"
                return diverged
            data.pass_trained += 1
            high_water.append(self.memory_high_water())
            if PASS_STEPS.steady(high_water):
                data.pass_stop = PASS_STEPS.describe_steady()
                return None
        data.pass_stop = f"after {data.pass_trained} steps: " + (
            f"the most it takes ({PASS_STEPS.most})" if data.pass_trained == PASS_STEPS.most else "the epoch's batches"
        )
        return None

    def train_on_worst_batches(self) -> None:
        """One untimed training step on each of the dataset's worst batches: the phase's peaks include them."""
        if self.data is None:
            return
        for batch in self.data.worst():
            with contextlib.suppress(Diverged):  # its memory was held all the same
                self._untimed_step(batch)

    def _untimed_step(self, batch: DrawnBatch) -> None:
        """One step on ``batch``, with nothing else holding its tensors (a GPU's host copies go as they are
        moved), and the session's own batch back in place after it, so the next batch is built without this one."""
        kept = self.images, self.targets
        self.images, self.targets = self._on_device(batch.images, batch.targets)
        batch.images.clear()
        batch.targets.clear()
        try:
            self._step(phased=False)
        finally:
            self.images, self.targets = kept

    def memory_high_water(self) -> int:
        """What decides this device's memory figure at its highest so far: the allocator's reserved bytes on a
        GPU, the process's peak RSS on the CPU."""
        if self.on_gpu:
            return int(torch.cuda.max_memory_reserved(self.device))
        return peak_rss_of_process()

    def sync(self) -> None:
        if self.on_gpu:
            torch.cuda.synchronize(self.device)

    def autocast(self) -> contextlib.AbstractContextManager[object]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def make_optimizer(self) -> torch.optim.Optimizer:
        """The scenario's optimizer, and its learning-rate warm-up as ``self.scheduler``."""
        spec = self.scenario.optimizer
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer: torch.optim.Optimizer
        if spec.name == "adamw":
            optimizer = torch.optim.AdamW(params, lr=spec.lr, weight_decay=spec.weight_decay)
        else:
            optimizer = torch.optim.SGD(params, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay)
        self.optimizer = optimizer
        self.scheduler = None
        if spec.warmup_steps and spec.warmup_factor < 1:
            self.scheduler = torch.optim.lr_scheduler.LinearLR(
                optimizer, start_factor=spec.warmup_factor, total_iters=spec.warmup_steps
            )
        return optimizer

    def training_state(self) -> dict[str, Any]:
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict() if self.optimizer else {}}
        if self.scheduler is not None:
            state["scheduler"] = self.scheduler.state_dict()
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        return state

    def load_training_state(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        if self.optimizer is not None:
            self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None:
            self.scaler.load_state_dict(state["scaler"])
        self.steps = 0
        self.first_loss = math.nan

    def train_step(self, phased: bool) -> tuple[float, float, float, float]:
        """One training step as a loop runs it: (step, forward, backward, optimizer) seconds.

        ``phased`` synchronises between phases and samples the monitor at the fixed points; the
        samples' own cost is left out of the step time. Raises ``Diverged`` on a non-finite or exploding loss.
        """
        if self._batches:
            self.images, self.targets = self._batches[self.steps % len(self._batches)]
        return self._step(phased)

    def _step(self, phased: bool) -> tuple[float, float, float, float]:
        assert self.optimizer is not None
        mark = self.monitor.mark if phased else None
        sync = self.sync if phased else _nothing
        spent_marking = 0.0
        lr = float(self.optimizer.param_groups[0]["lr"])
        turns.swap()  # the last step ended synchronised (its loss was read)
        start = time.perf_counter()
        loss = self.forward_loss()
        sync()
        forward_end = time.perf_counter()
        if mark:
            mark()
            spent_marking += time.perf_counter() - forward_end
        backward_start = time.perf_counter()
        self.backward(loss)
        sync()
        backward_end = time.perf_counter()
        if mark:
            mark()
            spent_marking += time.perf_counter() - backward_end
        optimizer_start = time.perf_counter()
        value = self.optimizer_step(loss)
        end = time.perf_counter()
        if mark:
            mark()
        self.steps += 1
        self.lr = lr
        if self.steps == 1:
            self.first_loss = value
        if not math.isfinite(value) or abs(value) > DIVERGED_LOSS_FACTOR * max(abs(self.first_loss), 1.0):
            raise Diverged(self.steps, lr, value, self.first_loss)
        return (
            end - start - spent_marking,
            forward_end - start,
            backward_end - backward_start,
            end - optimizer_start,
        )

    def forward_loss(self) -> torch.Tensor:
        assert self.optimizer is not None
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast():
            if self.contract is not None:
                return self.contract.loss(self.call(self.images), self.targets)
            if self.tensor_task:
                return tensor_loss(self.scenario.task_type, self.model, self.images, self.targets)
            losses = self.model(self.images, self.targets)
            return sum(losses.values())  # type: ignore[return-value]

    def backward(self, loss: torch.Tensor) -> None:
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()

    def optimizer_step(self, loss: torch.Tensor) -> float:
        """The optimizer's and the warm-up's step, then the loss as a training loop reads it to log it (which
        also synchronises)."""
        assert self.optimizer is not None
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        return float(loss.item())

    def training_calls(self) -> TrainingCalls:
        optimizer = self.optimizer
        assert optimizer is not None
        return TrainingCalls(
            forward=self.forward_loss,
            backward=self.backward,
            optimizer_step=self.optimizer_step,
            parameters=lambda: [p for p in self.model.parameters() if p.requires_grad],
            optimizer_state=lambda: sum(
                t.numel() * t.element_size()
                for state in optimizer.state.values()
                for t in state.values()
                if isinstance(t, torch.Tensor)
            ),
        )

    def infer(self, images: list[torch.Tensor]) -> tuple[float, float]:
        """(seconds, mean detections per image) of one synchronised inference call (its inputs moved to the device
        first, untimed)."""
        images = self._on_device(images, [])[0]
        self.sync()
        turns.swap()
        start = time.perf_counter()
        with self.autocast():
            outputs = self.call(images)
        self.sync()
        elapsed = time.perf_counter() - start
        detections = [len(o["boxes"]) for o in outputs if isinstance(o, dict) and "boxes" in o]
        if not detections and (queries := predictions_per_image(outputs)) is not None:
            return elapsed, float(queries)  # a Hugging Face detector: one prediction per query
        return elapsed, (sum(detections) / len(detections) if detections else 0.0)


def _nothing() -> None:
    return None


class Diverged(Exception):
    def __init__(self, step: int, lr: float, loss: float, first_loss: float) -> None:
        super().__init__(f"loss {loss} at step {step}")
        self.step = step
        self.lr = lr
        self.loss = loss
        self.first_loss = first_loss

    @property
    def what(self) -> str:
        if not math.isfinite(self.loss):
            return f"became {self.loss}"
        return f"reached {self.loss:.3g}, over {DIVERGED_LOSS_FACTOR:g}x the first step's {self.first_loss:.3g},"


class Snapshot:
    """The model's, optimizer's and warm-up's starting state, kept in a temporary file.

    A copy in memory would stay allocated through the measured steps and count in Peak GPU Memory and Peak
    RAM Memory: Faster R-CNN R50's weights alone are 167 MB, beside a 2 % accuracy bar for the GPU peak.
    """

    def __init__(self, session: Session) -> None:
        self._file = tempfile.TemporaryFile(prefix="mlestimate-")  # noqa: SIM115 - open until close()
        torch.save(session.training_state(), self._file)

    def restore(self, session: Session) -> None:
        self._file.seek(0)
        session.load_training_state(torch.load(self._file, map_location=session.device, weights_only=True))

    def close(self) -> None:
        self._file.close()


def divergence_message(scenario: Scenario, first: Diverged, again: Diverged) -> str:
    """Why a profile that diverged twice has no figures, and what to change."""
    spec = scenario.optimizer
    warmup = (
        f"a warm-up over {spec.warmup_steps} steps from {spec.warmup_factor:g} x lr"
        if spec.warmup_steps and spec.warmup_factor < 1
        else "no learning-rate warm-up"
    )
    return (
        f"{scenario.architecture} at batch {scenario.batch_size}, image {scenario.image_size[0]}x"
        f"{scenario.image_size[1]} diverged while profiling training: the loss {again.what} at training step "
        f"{again.step} (learning rate {again.lr:.3g}), and {first.what} at step {first.step} before the "
        f"starting state was restored. Step times of a diverged model are not its training cost (an R-CNN with "
        f"no valid proposals steps 4x faster). It trained with optimizer.lr {spec.lr:g} and {warmup}; lower "
        f"optimizer.lr or lengthen optimizer.warmup_steps (torchvision's recipe: warmup_factor 0.001 over 1000 "
        f"steps)"
    )
