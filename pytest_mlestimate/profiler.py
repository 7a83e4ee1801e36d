"""Runs a scenario's model for a few steps and records raw measurements (a ``Profile``).

Timing rules, from measurements of these models: the first steps of a fresh process are far slower
(CUDA lazy loading, kernel selection), so warm-up steps are timed and kept apart; the whole step is
timed back to back as a training loop runs it (phase timings with a synchronisation between phases
explain a step but do not add up to it); every GPU timer is read after a synchronisation.
"""

from __future__ import annotations

import contextlib
import gc
import math
import resource
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from pytest_mlestimate.breakdown import Breakdown, Timeline, split_memory
from pytest_mlestimate.contention import Contention, Window
from pytest_mlestimate.devices import resolve_device
from pytest_mlestimate.energy import RaplEnergy, StepEnergy
from pytest_mlestimate.environment import torch_fingerprint
from pytest_mlestimate.errors import EstimateError, ModelRunError
from pytest_mlestimate.models import (
    apply_detection_load,
    build_model,
    effective_input_size,
    num_classes,
    parameter_count,
    target_kind,
)
from pytest_mlestimate.module_hooks import TrainingCalls, measure_inference, measure_training
from pytest_mlestimate.monitor import ResourceMonitor
from pytest_mlestimate.profile import EnergyReading, Profile
from pytest_mlestimate.progress import Listener, Progress
from pytest_mlestimate.scenario import Scenario
from pytest_mlestimate.synthetic import make_batch, make_images

CONTENTION_PAUSE_S = 2.0
"""Pause before a contended measurement is taken again: long enough for a burst (a neighbour's import, a
test's start-up) to pass, short beside a profile."""

DIVERGED_LOSS_FACTOR = 100.0
"""A loss this many times the first step's (or 1, if larger) counts as diverged, as a non-finite one does. A
random-weight Mask R-CNN at lr 0.02 without warm-up went from 7.8 to 600, 4e9 and 1e32 before NaN, and its
steps were already 4x faster (collapsed proposals) at the finite 1e5-1e32 ones."""

CONTENTION_LOOK_S = 1.0
"""While the mean is not yet sharp, how often the measured steps are checked for contention."""


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
        on_gpu = device.startswith("cuda")
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


INFERENCE_SECONDS = 2.0
INFERENCE_MAX_CALLS = 200
"""Each inference timing (one image, one batch) is measured for at least its minimum count and then, unless
the scenario fixes ``measure_iterations``, until ``INFERENCE_SECONDS`` have passed: on a CPU, 3-4 calls of a
40-100 ms inference left the estimate 10-19 % off a plain loop of the same calls."""

MODEL_SEED = 0
"""Random weights drawn alike in every process. Their values change a CPU step's cost (denormal floats:
six seeds of one model stepped in 36-49 ms), which would otherwise count as noise between processes."""


def _unheard(_progress: Progress) -> None:
    pass


def _peak_rss_of_process() -> int:
    """The peak RSS of this process's own memory (Linux: VmHWM). Not ``ru_maxrss`` where it can be helped: after
    an exec it keeps the peak of the memory the process replaced, so a fresh interpreter started by a caller
    holding 1.8 GiB reported a 1.8 GiB peak for a model that needs 0.8."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return usage if sys.platform == "darwin" else usage * 1024


class _Session:
    """One model on one device with its optimizer, synthetic batch and timers."""

    def __init__(
        self,
        scenario: Scenario,
        model: nn.Module,
        device: str,
        monitor: ResourceMonitor,
        progress: Listener = _unheard,
    ) -> None:
        self.scenario = scenario
        self.progress = progress
        self.model = model
        self.device = torch.device(device)
        self.monitor = monitor
        self.on_gpu = self.device.type == "cuda"
        training = scenario.application_type == "training"
        if training:
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
        self.images = [image.to(self.device) for image in images]
        self.targets = [{k: v.to(self.device) for k, v in t.items()} for t in targets]
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
        samples' own cost is left out of the step time. Raises ``_Diverged`` on a non-finite or exploding loss.
        """
        assert self.optimizer is not None
        mark = self.monitor.mark if phased else None
        sync = self.sync if phased else _nothing
        spent_marking = 0.0
        lr = float(self.optimizer.param_groups[0]["lr"])
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
            raise _Diverged(self.steps, lr, value, self.first_loss)
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
        """(seconds, mean detections per image) of one synchronised inference call."""
        self.sync()
        start = time.perf_counter()
        with self.autocast():
            outputs = self.model(images)
        self.sync()
        elapsed = time.perf_counter() - start
        detections = [len(o["boxes"]) for o in outputs if isinstance(o, dict) and "boxes" in o]
        return elapsed, (sum(detections) / len(detections) if detections else 0.0)


def _nothing() -> None:
    return None


class _Diverged(Exception):
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


class _Snapshot:
    """The model's, optimizer's and warm-up's starting state, kept in a temporary file.

    A copy in memory would stay allocated through the measured steps and count in Peak GPU Memory and Peak
    RAM Memory: Faster R-CNN R50's weights alone are 167 MB, beside a 2 % accuracy bar for the GPU peak.
    """

    def __init__(self, session: _Session) -> None:
        self._file = tempfile.TemporaryFile(prefix="mlestimate-")  # noqa: SIM115 - open until close()
        torch.save(session.training_state(), self._file)

    def restore(self, session: _Session) -> None:
        self._file.seek(0)
        session.load_training_state(torch.load(self._file, map_location=session.device, weights_only=True))

    def close(self) -> None:
        self._file.close()


def _t95(df: int) -> float:
    """Two-sided 95 % quantile of Student's t: the table up to df 4, then a Cornish-Fisher expansion (within
    0.001 of the table from df 5 on)."""
    if df < 5:
        return (math.inf, 12.706, 4.303, 3.182, 2.776)[max(df, 0)]
    z = 1.959963984540054
    return (
        z
        + (z**3 + z) / (4 * df)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3)
    )


TRIM = 0.1
"""Share of steps trimmed from each end for the precision check."""


@dataclass
class _Measurement:
    """One run of measured steps."""

    steps: list[float] = field(default_factory=list)
    forward: list[float] = field(default_factory=list)
    backward: list[float] = field(default_factory=list)
    optimizer: list[float] = field(default_factory=list)
    contention: Contention | None = None
    energy: tuple[EnergyReading, EnergyReading] | None = None
    """(GPU, CPU packages) over these steps."""
    _sum: float = 0.0

    def add(self, step: float) -> None:
        self.steps.append(step)
        self._sum += step

    @property
    def mean(self) -> float:
        return self._sum / len(self.steps) if self.steps else 0.0

    @property
    def precision(self) -> float | None:
        """Half-width of the 95 % confidence interval of the 10 %-trimmed mean step (Tukey-McLaughlin: the
        winsorised variance), relative to that mean.

        Robust because a few steps at several times the median keep the plain mean's interval wide: on an
        H100, 2-5 of 300 such steps left Faster and Mask R-CNN's at 2.4 % after 300 steps. Those steps stay in
        the mean the total uses; a tail of them large enough to matter is judged as contention.
        """
        n = len(self.steps)
        cut = int(TRIM * n)
        kept = n - 2 * cut
        if kept < 2:
            return None
        ordered = sorted(self.steps)
        middle = ordered[cut : n - cut]
        centre = math.fsum(middle) / kept
        winsorised = [ordered[cut]] * cut + middle + [ordered[n - cut - 1]] * cut
        level = math.fsum(winsorised) / n
        variance = math.fsum((v - level) ** 2 for v in winsorised) / (n - 1)
        if centre <= 0:
            return None
        return _t95(kept - 1) * math.sqrt(variance) / ((kept / n) * math.sqrt(n)) / centre


def _is_out_of_memory(exc: BaseException) -> bool:
    """PyTorch's allocator raises OutOfMemoryError; cuDNN and cuBLAS report theirs as RuntimeError."""
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "ALLOC_FAILED" in text)


def profile_scenario(
    scenario: Scenario,
    model_factory: Callable[[Scenario], nn.Module] = build_model,
    isolated: bool = False,
    progress: Listener = _unheard,
) -> Profile:
    """Measure ``scenario``. ``isolated`` says this process exists only for this profile, so its lifetime
    peak RSS is the training run's peak (a sampler can miss a short spike). ``progress`` hears each phase
    and step."""
    device = resolve_device(scenario.device)
    iterations = Iterations.for_scenario(scenario, device)
    monitor = ResourceMonitor(device, scenario.sample_interval_ms / 1000, scenario.threading)
    profile = Profile(
        device=device,
        device_name=torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else "cpu",
        gpu_unavailable=monitor.gpu_unavailable,
        environment=torch_fingerprint(device),
    )
    started = time.perf_counter()
    session: _Session | None = None
    try:
        progress(Progress("building"))
        build_start = time.perf_counter()
        torch.manual_seed(MODEL_SEED)
        model = model_factory(scenario).to(device)
        profile.build_seconds = time.perf_counter() - build_start
        profile.parameter_count = parameter_count(model)
        session = _Session(scenario, model, device, monitor, progress)
        profile.effective_input_size = effective_input_size(model, session.images[0])
        if scenario.application_type == "training":
            _profile_training(session, iterations, profile, isolated)
        _profile_inference(session, iterations, profile, isolated and scenario.application_type == "inference")
        profile.warnings.extend(monitor.warnings)
    except EstimateError:
        raise
    except Exception as exc:
        if not (device.startswith("cuda") and _is_out_of_memory(exc)):
            message = (
                f"{scenario.architecture} at batch {scenario.batch_size}, image {scenario.image_size[0]}x"
                f"{scenario.image_size[1]} failed while profiling {scenario.application_type}: "
                f"{type(exc).__name__}: {exc}"
            )
            traceback.clear_frames(exc.__traceback__)  # its frames hold the model and its activations
            raise ModelRunError(message) from None
        total = torch.cuda.get_device_properties(torch.device(device)).total_memory
        profile.failure = (
            f"does not fit: batch {scenario.batch_size} at {scenario.image_size[0]}x{scenario.image_size[1]} "
            f"on {profile.device_name} needs more than {total / 2**30:.1f} GiB"
        )
    finally:
        monitor.stop()
        del session
        with contextlib.suppress(NameError):
            del model
        gc.collect()
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    profile.measure_seconds = time.perf_counter() - started
    return profile


def _profile_training(session: _Session, iterations: Iterations, profile: Profile, isolated: bool) -> None:
    """Warm-up and measured steps from one starting state. A diverged loss (non-finite or exploding) feeds no
    figure: the starting state is restored and everything measured again, once; a second divergence is an
    error."""
    monitor = session.monitor
    session.model.train()
    session.sync()
    profile.ram_before = monitor.tree.rss()
    profile.vram_before = monitor.gpu_memory_now()
    session.make_optimizer()
    profile.optimizer_recipe = session.scenario.optimizer.describe()
    profile.precision_target = iterations.precision
    snapshot = _Snapshot(session)
    monitor.start_phase()
    try:
        with _quiet_warnings():
            try:
                _train(session, iterations, profile)
            except _Diverged as first:
                snapshot.restore(session)
                _forget_training(profile)
                try:
                    _train(session, iterations, profile)
                except _Diverged as again:
                    raise ModelRunError(_divergence_message(session, first, again)) from None
                profile.divergence_restarts = 1
                profile.warnings.append(
                    f"the loss {first.what} at training step {first.step} (learning rate {first.lr:.3g}); "
                    "the starting state was restored and every step measured again with finite losses. Training "
                    "with these settings may diverge: lower optimizer.lr or lengthen optimizer.warmup_steps"
                )
    finally:
        snapshot.close()
        session.scheduler = None  # it holds the optimizer, whose state must not count in inference's peaks
    profile.training = monitor.end_phase()
    if isolated:
        profile.training.peak_rss = max(profile.training.peak_rss, _peak_rss_of_process())
    if session.scenario.breakdown_depth:
        profile.breakdown, profile.timeline = _training_breakdown(session, profile)


def _train(session: _Session, iterations: Iterations, profile: Profile) -> None:
    for done in range(iterations.warmup):
        session.progress(Progress("warm-up", done, iterations.warmup))
        profile.warmup_step_times.append(session.train_step(phased=False)[0])
    first_lr = float(session.optimizer.param_groups[0]["lr"]) if session.optimizer else 0.0
    kept = _measure(session, iterations)
    assert kept.contention is not None
    if kept.contention.contended:
        time.sleep(CONTENTION_PAUSE_S)
        again = _measure(session, iterations)
        profile.contention_remeasured = True
        assert again.contention is not None
        # a clean measurement is kept; of two contended ones the faster, as contention only slows steps down
        kept = min(kept, again, key=lambda m: m.mean) if again.contention.contended else again
        assert kept.contention is not None
        if kept.contention.contended:
            profile.contended = True
            profile.warnings.append(
                f"other processes competed for the CPUs while the steps were measured, also when measured again "
                f"after a {CONTENTION_PAUSE_S:g} s pause ({kept.contention.describe()}): the step times (the "
                "faster of the two measurements) describe the machine's load, not the model; measure again on "
                "a quiet machine"
            )
    profile.step_times = kept.steps
    profile.forward_times, profile.backward_times, profile.optimizer_times = kept.forward, kept.backward, kept.optimizer
    profile.precision = kept.precision
    profile.precision_met = kept.precision is not None and kept.precision <= iterations.precision
    profile.contention = kept.contention
    if kept.energy is not None:
        profile.gpu_energy, profile.cpu_energy = kept.energy
    for _ in range(iterations.phased):
        _, forward, backward, optimizer = session.train_step(phased=True)
        profile.forward_times.append(forward)
        profile.backward_times.append(backward)
        profile.optimizer_times.append(optimizer)
    profile.lr_range = (first_lr, session.lr)


def _measure(session: _Session, iterations: Iterations) -> _Measurement:
    """Back-to-back steps: a fixed count, or until the mean is as sharp as asked or a cap is hit. The energy
    counters are read right before the first and right after the last, each after a synchronisation."""
    on_cpu = not session.on_gpu
    sample_utilization = None if on_cpu else session.monitor.sample_utilization
    measured = _Measurement()
    threads = torch.get_num_threads()
    window = Window(session.monitor.tree)
    window.start()
    energy = session.energy
    session.sync()
    energy.begin()
    started = time.perf_counter()
    looked_at = 0.0
    most = iterations.measure or iterations.max_measure
    while True:
        session.progress(Progress("measuring", len(measured.steps), most))
        step, forward, backward, optimizer = session.train_step(phased=on_cpu)
        measured.add(step)
        if on_cpu:  # a CPU runs each phase synchronously: the same steps give the phase split
            measured.forward.append(forward)
            measured.backward.append(backward)
            measured.optimizer.append(optimizer)
        elif sample_utilization is not None:
            sample_utilization()
        count = len(measured.steps)
        if iterations.measure is not None:
            if count >= iterations.measure:
                break
            continue
        elapsed = time.perf_counter() - started
        if elapsed >= iterations.max_seconds and count >= 3:
            break
        if elapsed < iterations.min_seconds or count < iterations.min_measure:
            continue
        if count >= iterations.max_measure:
            break
        precision = measured.precision
        if precision is not None and precision <= iterations.precision:
            break
        if elapsed >= looked_at + CONTENTION_LOOK_S:  # a contended mean is re-measured, not sharpened
            looked_at = elapsed
            if window.finish(measured.steps, threads, on_gpu=not on_cpu).contended:
                break
    session.sync()
    measured.energy = energy.end(len(measured.steps))
    measured.contention = window.finish(measured.steps, threads, on_gpu=not on_cpu)
    return measured


def _forget_training(profile: Profile) -> None:
    """Nothing measured before a divergence is kept."""
    for times in (profile.warmup_step_times, profile.forward_times, profile.backward_times, profile.optimizer_times):
        times.clear()
    profile.step_times = []
    profile.precision = profile.precision_met = profile.contention = None
    profile.gpu_energy = profile.cpu_energy = None
    profile.contended = profile.contention_remeasured = False
    profile.warnings = [w for w in profile.warnings if not w.startswith("other processes competed")]


def _divergence_message(session: _Session, first: _Diverged, again: _Diverged) -> str:
    scenario = session.scenario
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


def _profile_inference(session: _Session, iterations: Iterations, profile: Profile, isolated: bool) -> None:
    monitor = session.monitor
    session.model.eval()
    session.optimizer = None
    load = apply_detection_load(session.model, session.scenario)
    profile.inference_load, profile.inference_load_per_image = str(load), load.per_image
    if session.scenario.application_type == "inference":
        profile.ram_before = monitor.tree.rss()
        profile.vram_before = monitor.gpu_memory_now()
    monitor.start_phase()
    detections: list[float] = []
    try:
        with torch.inference_mode(), _quiet_warnings():
            session.progress(Progress("inference"))
            calls = 0
            one = session.images[:1]
            for _ in range(iterations.inference_warmup):
                session.infer(one)
            session.infer(session.images)
            for images, times, minimum in (
                (one, profile.inference_one_times, iterations.inference_one),
                (session.images, profile.inference_batch_times, iterations.inference_batch),
            ):
                started = time.perf_counter()
                seconds = INFERENCE_SECONDS if iterations.measure is None else 0.0  # a fixed count stays fixed
                while len(times) < minimum or (
                    time.perf_counter() - started < seconds and len(times) < INFERENCE_MAX_CALLS
                ):
                    session.progress(Progress("inference", calls))
                    calls += 1
                    elapsed, found = session.infer(images)
                    times.append(elapsed)
                    if images is session.images:
                        detections.append(found)
                    monitor.mark()
    finally:
        load.restore()
    profile.inference_detections = sum(detections) / len(detections) if detections else None
    profile.inference = monitor.end_phase()
    if isolated:
        profile.inference.peak_rss = max(profile.inference.peak_rss, _peak_rss_of_process())
    if session.scenario.breakdown_depth:
        profile.breakdown = _inference_breakdown(session, profile)


def _training_breakdown(session: _Session, profile: Profile) -> tuple[Breakdown, Timeline | None]:
    """Per-part times and memory in extra steps, after the phase's figures are read: the hooks never touch them.
    A step that fails here costs the breakdown, not the profile."""
    depth = session.scenario.breakdown_depth
    snapshot = _Snapshot(session)  # inference is measured on the weights the measured steps left, not these steps'
    try:
        with _quiet_warnings():
            found, timeline = measure_training(session.model, session.device, session.training_calls(), depth)
    except Exception as exc:  # any failure of the extra steps only loses the breakdown
        failed = f"the instrumented training steps failed: {type(exc).__name__}: {exc}"
        profile.warnings.append(f"no per-module breakdown: {failed}; the headline figures are not affected")
        return Breakdown(depth=depth, unavailable=failed), None
    finally:
        snapshot.restore(session)
        snapshot.close()
    peaks = profile.training
    if peaks is not None:
        if session.on_gpu:
            split_memory(found, "peak allocated GPU memory", peaks.peak_gpu_allocated, on_gpu=True)
        else:
            split_memory(found, "Peak RAM Memory", peaks.peak_rss, on_gpu=False)
    return found, timeline


def _inference_breakdown(session: _Session, profile: Profile) -> Breakdown:
    depth = session.scenario.breakdown_depth
    found = profile.breakdown or Breakdown(depth=depth)
    images = session.images

    def call() -> None:
        with session.autocast():
            session.model(images)

    try:
        with torch.inference_mode(), _quiet_warnings():
            load = apply_detection_load(session.model, session.scenario)
            try:
                times, found.inference = measure_inference(session.model, session.device, call, depth)
            finally:
                load.restore()
    except Exception as exc:
        found.unavailable = f"the instrumented inference calls failed: {type(exc).__name__}: {exc}"
        profile.warnings.append(f"no per-module inference times: {found.unavailable}")
        return found
    for name, seconds in times.items():
        found.part(name).inference_s = seconds
    return found


@contextlib.contextmanager
def _quiet_warnings() -> Iterator[None]:
    """torchvision warns once per process about some defaults; repeating that in every step is noise."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield
