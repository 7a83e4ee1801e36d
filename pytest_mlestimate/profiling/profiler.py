"""Runs a scenario's model for a few steps and records raw measurements (a ``Profile``).

Timing rules, from measurements of these models: the first steps of a fresh process are far slower
(CUDA lazy loading, kernel selection), so warm-up steps are timed and kept apart; the whole step is
timed back to back as a training loop runs it (phase timings with a synchronisation between phases
explain a step but do not add up to it); every GPU timer is read after a synchronisation.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import statistics
import time
import traceback
import warnings
from collections.abc import Callable, Iterator

import torch
from torch import nn

from pytest_mlestimate.core.devices import is_gpu, resolve_device
from pytest_mlestimate.core.environment import torch_fingerprint
from pytest_mlestimate.core.errors import EstimateError, ModelRunError
from pytest_mlestimate.core.progress import Listener, Progress
from pytest_mlestimate.profiling import turns
from pytest_mlestimate.profiling.breakdown import Breakdown, Timeline, split_memory
from pytest_mlestimate.profiling.contention import Contention
from pytest_mlestimate.profiling.contract import MeasuredModel
from pytest_mlestimate.profiling.gpu_memory.phases import predicted_phase
from pytest_mlestimate.profiling.measurement import Measurement
from pytest_mlestimate.profiling.models import (
    apply_detection_load,
    build_model,
    effective_input_size,
    parameter_count,
)
from pytest_mlestimate.profiling.module_hooks import measure_inference, measure_training
from pytest_mlestimate.profiling.monitor import ResourceMonitor
from pytest_mlestimate.profiling.process_tree import peak_rss_of_process
from pytest_mlestimate.profiling.profile import Profile
from pytest_mlestimate.profiling.session import (
    Diverged,
    Iterations,
    Session,
    Snapshot,
    divergence_message,
    unheard,
)
from pytest_mlestimate.scenarios.scenario import Scenario

CONTENTION_PAUSE_S = 2.0
"""Pause before a contended measurement is taken again: long enough for a burst (a neighbour's import, a
test's start-up) to pass, short beside a profile."""

CONTENTION_LOOK_S = 1.0
"""While the mean is not yet sharp, how often the measured steps are checked for contention."""

INFERENCE_SECONDS = 2.0
INFERENCE_MAX_CALLS = 200
"""Each inference timing (one image, one batch) is measured for at least its minimum count and then, unless
the scenario fixes ``measure_iterations``, until ``INFERENCE_SECONDS`` have passed: on a CPU, 3-4 calls of a
40-100 ms inference left the estimate 10-19 % off a plain loop of the same calls."""

MODEL_SEED = 0
"""Random weights drawn alike in every process. Their values change a CPU step's cost (denormal floats:
six seeds of one model stepped in 36-49 ms), which would otherwise count as noise between processes."""


def _reset_peak_rss_of_process() -> bool:
    """Restart this process's peak RSS (VmHWM) from its RSS now: Linux's ``/proc/self/clear_refs`` takes "5"
    for that. False where it cannot (another system, or no such file)."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as clear:
            clear.write("5")
    except OSError:
        return False
    return True


def _return_freed_memory() -> None:
    """Hand the C heap's free pages back to the system (glibc's ``malloc_trim``), so that the RSS a phase
    starts again from holds none of what the diverged attempt freed; nothing where there is no such call."""
    with contextlib.suppress(OSError, AttributeError, TypeError):
        ctypes.CDLL(None).malloc_trim(0)


def _is_out_of_memory(exc: BaseException) -> bool:
    """PyTorch's allocator raises OutOfMemoryError; cuDNN and cuBLAS report theirs as RuntimeError."""
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "ALLOC_FAILED" in text)


def profile_scenario(
    scenario: Scenario,
    model_factory: Callable[[Scenario], nn.Module | MeasuredModel] = build_model,
    isolated: bool = False,
    progress: Listener = unheard,
) -> Profile:
    """Measure ``scenario``. ``isolated`` says this process exists only for this profile, so its lifetime
    peak RSS is the training run's peak (a sampler can miss a short spike). ``progress`` hears each phase
    and step."""
    device = resolve_device(scenario.device)
    iterations = Iterations.for_scenario(scenario, device)
    monitor = ResourceMonitor(device, scenario.sample_interval_ms / 1000, scenario.threading)
    profile = Profile(
        device=device,
        device_name=torch.cuda.get_device_name(torch.device(device)) if is_gpu(device) else "cpu",
        gpu_unavailable=monitor.gpu_unavailable,
        environment=torch_fingerprint(device),
    )
    started = time.perf_counter()
    session: Session | None = None
    try:
        progress(Progress("building"))
        build_start = time.perf_counter()
        torch.manual_seed(MODEL_SEED)
        built = model_factory(scenario)
        contract = built if isinstance(built, MeasuredModel) else None
        model = (contract.module if contract else built).to(device)
        profile.build_seconds = time.perf_counter() - build_start
        profile.parameter_count = parameter_count(model)
        session = Session(scenario, model, device, monitor, progress, contract)
        if contract is None:
            profile.effective_input_size = effective_input_size(model, session.images[0])
        if scenario.application_type == "training":
            _profile_training(session, iterations, profile, isolated)
        _profile_inference(session, iterations, profile, isolated and scenario.application_type == "inference")
        profile.warnings.extend(monitor.warnings)
    except EstimateError:
        raise
    except Exception as exc:
        if not (is_gpu(device) and _is_out_of_memory(exc)):
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
        if session is not None and session.data is not None:  # with the steps it took, also in a failed profile
            profile.dataset = session.data.describe()
        del session
        with contextlib.suppress(NameError):
            del model
        gc.collect()
        if is_gpu(device):
            torch.cuda.empty_cache()
    profile.measure_seconds = time.perf_counter() - started
    return profile


def _profile_training(session: Session, iterations: Iterations, profile: Profile, isolated: bool) -> None:
    """Warm-up and measured steps from one starting state. A diverged loss (non-finite or exploding) feeds no
    figure: the starting state is restored and everything measured again, once, peaks included (see
    ``_restart_training``); a second divergence is an error."""
    monitor = session.monitor
    session.model.train()
    session.sync()
    profile.ram_before = monitor.tree.rss()
    profile.vram_before = monitor.gpu_memory_now()
    session.make_optimizer()
    profile.optimizer_recipe = session.scenario.optimizer.describe()
    profile.precision_target = iterations.precision
    snapshot = Snapshot(session)
    lifetime_peak = peak_rss_of_process() if isolated else 0  # all a clean run's lifetime peak holds before its steps
    lifetime_kept = isolated
    monitor.start_phase()
    try:
        with _quiet_warnings():
            try:
                _train(session, iterations, profile)
            except Diverged as first:
                traceback.clear_frames(first.__traceback__)  # the diverged step's locals
                lifetime_kept = _restart_training(session, snapshot, isolated)
                _forget_training(profile)
                if isolated and not lifetime_kept:
                    profile.warnings.append(
                        "this process's peak RSS could not be restarted after the divergence (no "
                        "/proc/self/clear_refs): Peak RAM Memory is the sampled peak of the steps measured again, "
                        "which can miss a short spike"
                    )
                try:
                    _train(session, iterations, profile)
                except Diverged as again:
                    raise ModelRunError(divergence_message(session.scenario, first, again)) from None
                profile.divergence_restarts = 1
                profile.warnings.append(
                    f"the loss {first.what} at training step {first.step} (learning rate {first.lr:.3g}); "
                    "the starting state was restored and every step measured again with finite losses. Training "
                    "with these settings may diverge: lower optimizer.lr or lengthen optimizer.warmup_steps"
                )
            diverged = session.train_through_a_pass()
            if diverged is not None:  # the worst batches, and all after them, start again from finite weights
                traceback.clear_frames(diverged.__traceback__)
                _restore_starting_state(session, snapshot)
                profile.warnings.append(
                    f"the loss {diverged.what} in the untimed pass through the dataset's batches before its worst "
                    f"ones (learning rate {diverged.lr:.3g}); the pass stopped there, and the worst batches trained "
                    "from the starting state"
                )
            session.train_on_worst_batches()
    finally:
        snapshot.close()
        session.scheduler = None  # it holds the optimizer, whose state must not count in inference's peaks
    profile.training = monitor.end_phase()
    if lifetime_kept:
        profile.training.peak_rss = max(profile.training.peak_rss, lifetime_peak, peak_rss_of_process())
    if session.scenario.breakdown_depth:
        profile.breakdown, profile.timeline = _training_breakdown(session, profile)
    if session.scenario.predict_gpu:
        profile.predicted_training = predicted_phase(session, profile.warnings, "training")


def _train(session: Session, iterations: Iterations, profile: Profile) -> None:
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


def _measure(session: Session, iterations: Iterations) -> Measurement:
    """Back-to-back steps: a fixed count, or until the mean is as sharp as asked or a cap is hit. The energy
    counters are read right before the first and right after the last, each after a synchronisation."""
    on_cpu = not session.on_gpu
    sample_utilization = None if on_cpu else session.monitor.sample_utilization
    measured = Measurement()
    threads = torch.get_num_threads()
    window = session.monitor.window()
    window.start()
    energy = session.energy
    session.sync()
    energy.begin()
    started = turns.clock()  # measured in turns, a side's own time: the partner's steps are not its
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
        elapsed = turns.clock() - started
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


def _restart_training(session: Session, snapshot: Snapshot, isolated: bool) -> bool:
    """Start training again from the starting state, with figures as if the diverged attempt had never run.

    The diverged attempt's gradients and optimizer state are freed before the starting state is read back (not
    to sit beside its copy), and the copy once it is loaded; then the phase's peaks start again: the sampled
    ones, the allocator's (GPU) and, in a process of its own, the process's peak RSS. Returns whether that
    lifetime peak still describes the training run: False where it could not be restarted."""
    _restore_starting_state(session, snapshot)
    _return_freed_memory()
    session.sync()
    restarted = isolated and _reset_peak_rss_of_process()
    session.monitor.restart_phase()
    return restarted


def _restore_starting_state(session: Session, snapshot: Snapshot) -> None:
    """Gradients and optimizer state freed first, so that they do not sit beside the copy read back."""
    session.model.zero_grad(set_to_none=True)
    if session.optimizer is not None:
        session.optimizer.state.clear()
    snapshot.restore(session)
    gc.collect()


def _forget_training(profile: Profile) -> None:
    """Nothing measured before a divergence is kept."""
    for times in (profile.warmup_step_times, profile.forward_times, profile.backward_times, profile.optimizer_times):
        times.clear()
    profile.step_times = []
    profile.precision = profile.precision_met = profile.contention = None
    profile.gpu_energy = profile.cpu_energy = None
    profile.contended = profile.contention_remeasured = False
    profile.warnings = [w for w in profile.warnings if not w.startswith("other processes competed")]


def _profile_inference(session: Session, iterations: Iterations, profile: Profile, isolated: bool) -> None:
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
            one = session.one_input
            for _ in range(iterations.inference_warmup):
                session.infer(one)
            session.infer(session.images)
            kept = _time_inference(session, iterations, detections)
            if kept[2].contended:
                time.sleep(CONTENTION_PAUSE_S)
                again = _time_inference(session, iterations, detections)
                profile.inference_remeasured = True
                # as with the steps: a clean measurement is kept; of two contended ones the faster
                kept = min(kept, again, key=_inference_seconds) if again[2].contended else again
                if kept[2].contended:
                    profile.contended = True
                    profile.warnings.append(
                        f"other processes competed for the CPUs while inference was measured, also when measured "
                        f"again after a {CONTENTION_PAUSE_S:g} s pause ({kept[2].describe()}): the inference "
                        "times (the faster of the two measurements) describe the machine's load, not the model; "
                        "measure again on a quiet machine"
                    )
            profile.inference_one_times, profile.inference_batch_times, profile.inference_contention = kept
            if session.scenario.predict_gpu:
                profile.predicted_inference = predicted_phase(session, profile.warnings, "inference")
    finally:
        load.restore()
    profile.inference_detections = sum(detections) / len(detections) if detections else None
    profile.inference = monitor.end_phase()
    if isolated:
        profile.inference.peak_rss = max(profile.inference.peak_rss, peak_rss_of_process())
    if session.scenario.breakdown_depth:
        profile.breakdown = _inference_breakdown(session, profile)


def _training_breakdown(session: Session, profile: Profile) -> tuple[Breakdown, Timeline | None]:
    """Per-part times and memory in extra steps, after the phase's figures are read: the hooks never touch them.
    A step that fails here costs the breakdown, not the profile."""
    depth = session.scenario.breakdown_depth
    snapshot = Snapshot(session)  # inference is measured on the weights the measured steps left, not these steps'
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


def _time_inference(
    session: Session, iterations: Iterations, detections: list[float]
) -> tuple[list[float], list[float], Contention]:
    """Times of one image's and of the batch's inference calls, and the contention over them: each timed for at
    least its minimum count and then, unless the scenario fixes the counts, for ``INFERENCE_SECONDS``."""
    window = session.monitor.window()
    window.start()
    one_times: list[float] = []
    batch_times: list[float] = []
    calls = 0
    ones, batches = session.inference_inputs()
    for inputs, times, minimum in (
        (ones, one_times, iterations.inference_one),
        (batches, batch_times, iterations.inference_batch),
    ):
        started = turns.clock()
        seconds = INFERENCE_SECONDS if iterations.measure is None else 0.0  # a fixed count stays fixed
        minimum = max(minimum, len(inputs))  # a dataset's sampled batches, each at least once
        while len(times) < minimum or (turns.clock() - started < seconds and len(times) < INFERENCE_MAX_CALLS):
            session.progress(Progress("inference", calls))
            calls += 1
            elapsed, found = session.infer(inputs[len(times) % len(inputs)])
            times.append(elapsed)
            if times is batch_times:
                detections.append(found)
            session.monitor.mark()
    session.sync()
    # the CPU counters cover every call; the slow tail is read from the batch's calls, one length of call
    return one_times, batch_times, window.finish(batch_times, torch.get_num_threads(), on_gpu=session.on_gpu)


def _inference_seconds(timed: tuple[list[float], list[float], Contention]) -> float:
    return statistics.median(timed[0]) + statistics.median(timed[1])


def _inference_breakdown(session: Session, profile: Profile) -> Breakdown:
    depth = session.scenario.breakdown_depth
    found = profile.breakdown or Breakdown(depth=depth)
    images = session.images

    def call() -> None:
        with session.autocast():
            session.call(images)

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
