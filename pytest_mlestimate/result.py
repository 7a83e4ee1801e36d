"""From raw measurements to the documented numbers.

The keys of ``Estimate.to_dict()`` ("Peak GPU Memory", "Batch Time", "Total Training Time", ...) are a
public contract parsed by users' dashboards: change them only with a new schema version.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pytest_mlestimate.architectures import TORCHVISION
from pytest_mlestimate.metrics import METRIC, units
from pytest_mlestimate.profile import PhasePeaks, Profile
from pytest_mlestimate.samples import robust_mean, summarize
from pytest_mlestimate.scenario import Scenario
from pytest_mlestimate.units import format_quantity

PARAMETER_TOLERANCE = 0.01
"""Relative difference between the scenario's ``parameters`` and the built model's count that warns."""


def _robust_mean(values: list[float]) -> float | None:
    return robust_mean(values) if values else None


@dataclass(repr=False)
class Estimate:
    """The documented figures of one scenario. ``print(estimate)`` gives the headline figures with units;
    ``to_dict()`` everything, under the documented keys."""

    scenario: Scenario
    profile: Profile
    cache: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        scenario, profile = self.scenario, self.profile
        source = "from the cache" if self.cache.get("hit") else "measured"
        lines = [f"{self._headline()} ({source})"]
        if not self.fits:
            lines.append(f"  {self.failure}")
        on_gpu = profile.device.startswith("cuda")
        for name, value in self.metrics().items():
            metric = METRIC[name]
            if value is None or (metric.gpu and not on_gpu):
                continue
            label = " ".join(metric.path_for(scenario.batch_size)[1:])
            lines.append(f"  {label:<32} {format_quantity(value, metric.unit)}")
        warnings = self.warnings()
        if warnings:
            lines.append(f"  {len(warnings)} warning(s): .warnings() lists them; .to_dict() holds every figure")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<Estimate {self._headline()}>"

    def _headline(self) -> str:
        scenario = self.scenario
        height, width = scenario.image_size
        return (
            f"{scenario.architecture}, {scenario.application_type}, batch {scenario.batch_size} of {height}x{width} "
            f"on {self.profile.device_name}"
        )

    @property
    def fits(self) -> bool:
        return self.profile.failure is None

    @property
    def failure(self) -> str | None:
        return self.profile.failure

    @property
    def batch_key(self) -> str:
        return f"Batch of {self.scenario.batch_size} Inference Time"

    def _phase(self) -> PhasePeaks | None:
        if self.scenario.application_type == "training":
            return self.profile.training
        return self.profile.inference

    def total_training_time(self) -> float | None:
        """Warm-up steps as measured, then the robust mean step (``samples.robust_mean``: one stalled step
        cannot multiply the total) for every remaining step."""
        steps = self.profile.step_times
        if self.scenario.application_type != "training" or not steps:
            return None
        warmup = self.profile.warmup_step_times
        total_steps = self.scenario.total_steps
        if total_steps <= len(warmup):
            return sum(warmup[:total_steps])
        return sum(warmup) + robust_mean(steps) * (total_steps - len(warmup))

    def samples(self, metric: str) -> list[float]:
        """The raw samples behind a timing metric (steps for the total); empty for peaks."""
        profile = self.profile
        training = self.scenario.application_type == "training"
        return {
            "forward_pass": profile.forward_times if training else profile.inference_batch_times,
            "backward_pass": profile.backward_times if training else [],
            "total_training_time": profile.step_times if training else [],
            "inference_1_image": profile.inference_one_times,
            "inference_batch": profile.inference_batch_times,
        }.get(metric, [])

    def metrics(self) -> dict[str, float | None]:
        phase = self._phase()
        profile = self.profile
        return {
            "peak_gpu_memory": phase.peak_gpu_memory if phase else None,
            "peak_gpu_utilization": phase.peak_gpu_utilization if phase else None,
            "peak_ram_memory": phase.peak_rss if phase else None,
            "peak_cpu_utilization": phase.peak_cpu_percent if phase else None,
            "forward_pass": _robust_mean(self.samples("forward_pass")),
            "backward_pass": _robust_mean(self.samples("backward_pass")),
            "ram_before_training": profile.ram_before if self.fits else None,
            "vram_before_training": profile.vram_before,
            "total_training_time": self.total_training_time(),
            "inference_1_image": _robust_mean(self.samples("inference_1_image")),
            "inference_batch": _robust_mean(self.samples("inference_batch")),
        }

    def warnings(self) -> list[str]:
        found = list(self.profile.warnings)
        scenario, profile = self.scenario, self.profile
        effective = profile.effective_input_size
        if effective is not None and tuple(effective) != tuple(scenario.image_size):
            found.append(
                f"image_size {scenario.image_size[0]}x{scenario.image_size[1]} is resized by the model: it "
                f"computes on {effective[0]}x{effective[1]} (set model_kwargs min_size/max_size to change that)"
            )
        if (
            scenario.parameters is not None
            and profile.parameter_count
            and abs(profile.parameter_count - scenario.parameters) > PARAMETER_TOLERANCE * scenario.parameters
        ):
            found.append(
                f"parameters: the scenario says {scenario.parameters:,} but the built model has "
                f"{profile.parameter_count:,}"
            )
        weights_load = profile.inference_load_per_image is None  # also a profile that stated no load
        if profile.inference_one_times and weights_load:
            if profile.inference_load is not None and scenario.detection_load != "weights":
                found.append(
                    f"detection_load {scenario.detection_load!r} could not be set ({self._detections()} detections "
                    f"per image measured): inference times are {profile.inference_load}"
                )
            elif scenario.weights_path is None and scenario.architecture in TORCHVISION:
                found.append(
                    "inference times are at the load random weights give: "
                    f"{self._detections()} detections per image, a count trained weights need not share "
                    "(post-processing cost follows it); set detection_load to 'max' or a number per image"
                )
        return found

    def _detections(self) -> str:
        found = self.profile.inference_detections
        return "unknown" if found is None else f"{found:.0f}"

    def _load_shortfall(self) -> str | None:
        stated, found = self.profile.inference_load_per_image, self.profile.inference_detections
        if stated is None or found is None or found >= stated:
            return None
        return (
            f"measured {found:.1f} detections per image, short of the stated {stated}: the model had fewer "
            "candidates than that (anchors, proposals or cells)"
        )

    def details(self) -> dict[str, Any]:
        profile, scenario = self.profile, self.scenario
        phase = self._phase()
        warmup = profile.warmup_step_times
        step_mean = _robust_mean(profile.step_times)
        return {
            "fits": self.fits,
            "failure": profile.failure,
            "method": (
                "Total Training Time = the timed warm-up steps + the robust mean back-to-back step time "
                "(a step counts at most 5 scaled MADs or half the median above the median, whichever is more) "
                "x the remaining "
                "steps, steps = ceil(dataset_size / batch_size) x epochs; a partial last batch "
                "counts as a full one; data loading is not included. Batch Time phases are timed with a "
                "synchronisation after each phase and explain the step; they do not add up to it exactly."
            ),
            "steps": scenario.total_steps if scenario.application_type == "training" else None,
            "num_batches": scenario.num_batches,
            "timings": {
                "step": summarize(profile.step_times),
                "forward_pass": summarize(profile.forward_times),
                "backward_pass": summarize(profile.backward_times),
                "optimizer_step": summarize(profile.optimizer_times),
                "inference_1_image": summarize(profile.inference_one_times),
                "inference_batch": summarize(profile.inference_batch_times),
            },
            "warmup": {
                "steps": len(warmup),
                "times": warmup,
                "extra_seconds": (sum(warmup) - step_mean * len(warmup)) if step_mean is not None else None,
            },
            "measurement": {
                "precision_target": profile.precision_target,
                "precision": profile.precision,
                "precision_met": profile.precision_met,
                "optimizer": profile.optimizer_recipe,
                "lr_range": list(profile.lr_range) if profile.lr_range else None,
                "divergence_restarts": profile.divergence_restarts,
                "contended": profile.contended,
                "contention_remeasured": profile.contention_remeasured,
                "contention": profile.contention.describe() if profile.contention else None,
            },
            "image_size": list(scenario.image_size),
            "effective_input_size": list(profile.effective_input_size) if profile.effective_input_size else None,
            "parameter_count": profile.parameter_count,
            "device": profile.device,
            "device_name": profile.device_name,
            "gpu_unavailable": profile.gpu_unavailable,
            "gpu_memory": {
                "peak_allocated": phase.peak_gpu_allocated if phase else None,
                "peak_reserved": phase.peak_gpu_reserved if phase else None,
                "peak_process": phase.peak_gpu_memory if phase else None,
                "peak_sampled": phase.peak_gpu_sampled if phase else None,
                "method": phase.gpu_memory_method if phase else None,
            },
            "monitoring": {
                "mode": "threaded" if scenario.threading else "step-wise",
                "interval_ms": scenario.sample_interval_ms if scenario.threading else None,
                "samples": phase.samples if phase else 0,
            },
            "inference": {
                "weights": (
                    "file" if scenario.weights_path else "random" if scenario.architecture in TORCHVISION else "factory"
                ),
                "load": profile.inference_load,
                "stated_detections_per_image": profile.inference_load_per_image,
                "detections_per_image": profile.inference_detections,
                "short_of_load": self._load_shortfall(),
            },
            "environment": profile.environment,
            "profile_seconds": profile.measure_seconds,
            "build_seconds": profile.build_seconds,
            "cache": self.cache,
        }

    def to_dict(self) -> dict[str, Any]:
        training = self.scenario.application_type == "training"
        found: dict[str, Any] = {"resource": {}, "training_time": {} if training else None, "inference_time": {}}
        for name, value in self.metrics().items():
            *parents, key = METRIC[name].path_for(self.scenario.batch_size)
            section = found
            for part in parents:
                section = section.setdefault(part, {}) if section is not None else None
            if section is not None:
                section[key] = value
        documented_units = units()
        documented_units[self.batch_key] = documented_units.pop("Batch of N Inference Time")
        return {**found, "units": documented_units, "details": self.details(), "warnings": self.warnings()}
