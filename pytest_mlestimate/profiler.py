"""Runs a scenario's model for a few steps and records raw measurements (a ``Profile``).

Timing rules, from measurements of these models: the first steps of a fresh process are far slower
(CUDA lazy loading, kernel selection), so warm-up steps are timed and kept apart; the whole step is
timed back to back as a training loop runs it (phase timings with a synchronisation between phases
explain a step but do not add up to it); every GPU timer is read after a synchronisation.
"""

from __future__ import annotations

import contextlib
import gc
import resource
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from pytest_mlestimate.environment import torch_fingerprint
from pytest_mlestimate.errors import DeviceUnavailableError, EstimateError, ModelRunError
from pytest_mlestimate.models import (
    build_model,
    effective_input_size,
    num_classes,
    parameter_count,
    target_kind,
)
from pytest_mlestimate.monitor import ResourceMonitor
from pytest_mlestimate.profile import Profile
from pytest_mlestimate.scenario import Scenario
from pytest_mlestimate.synthetic import make_batch, make_images


@dataclass(frozen=True)
class Iterations:
    """How many steps to run. GPU defaults are long enough for Mask R-CNN's random-weight slow-down to
    settle (measured within 1 % from iterations 10-60); CPU steps cost up to ~1 s, so fewer there, but
    enough that the first steps' slower allocations are past and a noisy neighbour averages out."""

    warmup: int
    measure: int
    phased: int
    inference_warmup: int
    inference_one: int
    inference_batch: int

    @classmethod
    def for_scenario(cls, scenario: Scenario, device: str) -> Iterations:
        on_gpu = device.startswith("cuda")
        warmup = scenario.warmup_iterations if scenario.warmup_iterations is not None else (10 if on_gpu else 3)
        measure = scenario.measure_iterations or (50 if on_gpu else 12)
        return cls(
            warmup=warmup,
            measure=measure,
            phased=min(measure, 20) if on_gpu else 0,
            inference_warmup=5 if on_gpu else 1,
            inference_one=max(measure // 2, 3) if on_gpu else 4,
            inference_batch=max(measure // 5, 3) if on_gpu else 3,
        )


def resolve_device(requested: str) -> str:
    if requested == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if requested == "cpu":
        return "cpu"
    if not torch.cuda.is_available():
        raise DeviceUnavailableError(f"device '{requested}' asked for, but no CUDA device is available here")
    index = torch.device(requested).index or 0
    if index >= torch.cuda.device_count():
        raise DeviceUnavailableError(
            f"device '{requested}' asked for, but only {torch.cuda.device_count()} CUDA device(s) are visible"
        )
    return f"cuda:{index}"


def _peak_rss_of_process() -> int:
    usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return usage if sys.platform == "darwin" else usage * 1024


class _Session:
    """One model on one device with its optimizer, synthetic batch and timers."""

    def __init__(self, scenario: Scenario, model: nn.Module, device: str, monitor: ResourceMonitor) -> None:
        self.scenario = scenario
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
        self.nonfinite_losses = 0

    def sync(self) -> None:
        if self.on_gpu:
            torch.cuda.synchronize(self.device)

    def autocast(self) -> contextlib.AbstractContextManager[object]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def make_optimizer(self) -> torch.optim.Optimizer:
        spec = self.scenario.optimizer
        params = [p for p in self.model.parameters() if p.requires_grad]
        if spec.name == "adamw":
            return torch.optim.AdamW(params, lr=spec.lr, weight_decay=spec.weight_decay)
        return torch.optim.SGD(params, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay)

    def train_step(self, phased: bool) -> tuple[float, float, float, float]:
        """One training step as a loop runs it: (step, forward, backward, optimizer) seconds.

        ``phased`` synchronises between phases and samples the monitor at the fixed points; the
        samples' own cost is left out of the step time.
        """
        assert self.optimizer is not None
        mark = self.monitor.mark if phased else None
        sync = self.sync if phased else _nothing
        spent_marking = 0.0
        start = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast():
            losses = self.model(self.images, self.targets)
            loss = sum(losses.values())
        sync()
        forward_end = time.perf_counter()
        if mark:
            mark()
            spent_marking += time.perf_counter() - forward_end
        backward_start = time.perf_counter()
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()
        sync()
        backward_end = time.perf_counter()
        if mark:
            mark()
            spent_marking += time.perf_counter() - backward_end
        optimizer_start = time.perf_counter()
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        value = float(loss.item())  # a training loop reads the loss to log it; this also synchronises
        end = time.perf_counter()
        if mark:
            mark()
        if value != value or value in (float("inf"), float("-inf")):
            self.nonfinite_losses += 1
        return (
            end - start - spent_marking,
            forward_end - start,
            backward_end - backward_start,
            end - optimizer_start,
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
) -> Profile:
    """Measure ``scenario``. ``isolated`` says this process exists only for this profile, so its lifetime
    peak RSS is the training run's peak (a sampler can miss a short spike)."""
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
        build_start = time.perf_counter()
        model = model_factory(scenario).to(device)
        profile.build_seconds = time.perf_counter() - build_start
        profile.parameter_count = parameter_count(model)
        session = _Session(scenario, model, device, monitor)
        profile.effective_input_size = effective_input_size(model, session.images[0])
        if scenario.application_type == "training":
            _profile_training(session, iterations, profile, isolated)
        _profile_inference(session, iterations, profile, isolated and scenario.application_type == "inference")
        if monitor.nvml is not None and monitor.nvml.device_wide:
            profile.warnings.append(
                "NVML did not show this process's own GPU memory (a container's PID namespace or missing "
                "permission): Peak GPU Memory counts everything on the device, other processes included"
            )
        if session.nonfinite_losses:
            profile.warnings.append(
                f"{session.nonfinite_losses} measured step(s) had a non-finite loss (random weights or a "
                "too-high learning rate); timings still count, but check the optimizer settings"
            )
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
    monitor = session.monitor
    session.model.train()
    session.sync()
    profile.ram_before = monitor.tree.rss()
    profile.vram_before = monitor.gpu_memory_now()
    session.optimizer = session.make_optimizer()
    monitor.start_phase()
    with _quiet_warnings():
        for _ in range(iterations.warmup):
            profile.warmup_step_times.append(session.train_step(phased=False)[0])
        on_cpu = not session.on_gpu
        for _ in range(iterations.measure):
            step, forward, backward, optimizer = session.train_step(phased=on_cpu)
            profile.step_times.append(step)
            if on_cpu:  # a CPU runs each phase synchronously: the same steps give the phase split
                profile.forward_times.append(forward)
                profile.backward_times.append(backward)
                profile.optimizer_times.append(optimizer)
        for _ in range(iterations.phased):
            _, forward, backward, optimizer = session.train_step(phased=True)
            profile.forward_times.append(forward)
            profile.backward_times.append(backward)
            profile.optimizer_times.append(optimizer)
    profile.training = monitor.end_phase()
    if isolated:
        profile.training.peak_rss = max(profile.training.peak_rss, _peak_rss_of_process())


def _profile_inference(session: _Session, iterations: Iterations, profile: Profile, isolated: bool) -> None:
    monitor = session.monitor
    session.model.eval()
    session.optimizer = None
    if session.scenario.application_type == "inference":
        profile.ram_before = monitor.tree.rss()
        profile.vram_before = monitor.gpu_memory_now()
    monitor.start_phase()
    detections: list[float] = []
    with torch.inference_mode(), _quiet_warnings():
        one = session.images[:1]
        for _ in range(iterations.inference_warmup):
            session.infer(one)
        session.infer(session.images)
        for _ in range(iterations.inference_one):
            elapsed, _ = session.infer(one)
            profile.inference_one_times.append(elapsed)
            monitor.mark()
        for _ in range(iterations.inference_batch):
            elapsed, found = session.infer(session.images)
            profile.inference_batch_times.append(elapsed)
            detections.append(found)
            monitor.mark()
    profile.inference_detections = sum(detections) / len(detections) if detections else None
    profile.inference = monitor.end_phase()
    if isolated:
        profile.inference.peak_rss = max(profile.inference.peak_rss, _peak_rss_of_process())


@contextlib.contextmanager
def _quiet_warnings() -> Iterator[None]:
    """torchvision warns once per process about some defaults; repeating that in every step is noise."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield
