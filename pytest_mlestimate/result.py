"""From raw measurements to the documented numbers.

The keys of ``Estimate.to_dict()`` ("Peak GPU Memory", "Batch Time", "Total Training Time", ...) are a
public contract parsed by users' dashboards: change them only with a new schema version.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from pytest_mlestimate.architectures import TORCHVISION
from pytest_mlestimate.profile import PhasePeaks, Profile
from pytest_mlestimate.samples import summarize
from pytest_mlestimate.scenario import Scenario

PARAMETER_TOLERANCE = 0.01
"""Relative difference between the scenario's ``parameters`` and the built model's count that warns."""

UNITS = {
    "Peak GPU Memory": "bytes",
    "Peak GPU Utilization": "percent of one GPU",
    "Peak RAM Memory": "bytes",
    "Peak CPU Utilization": "percent, 100 = one core fully busy",
    "Batch Time": "seconds",
    "RAM before training": "bytes",
    "VRAM before training": "bytes",
    "Total Training Time": "seconds",
    "1-Image Inference Time": "seconds",
    "Batch of N Inference Time": "seconds",
}

METRICS = (
    "peak_gpu_memory",
    "peak_gpu_utilization",
    "peak_ram_memory",
    "peak_cpu_utilization",
    "forward_pass",
    "backward_pass",
    "ram_before_training",
    "vram_before_training",
    "total_training_time",
    "inference_1_image",
    "inference_batch",
)
"""Snake-case names of the documented figures: the one vocabulary for budgets and baselines."""

METRIC_UNITS = {
    "peak_gpu_memory": "bytes",
    "peak_ram_memory": "bytes",
    "ram_before_training": "bytes",
    "vram_before_training": "bytes",
    "peak_gpu_utilization": "percent",
    "peak_cpu_utilization": "percent",
    "forward_pass": "seconds",
    "backward_pass": "seconds",
    "total_training_time": "seconds",
    "inference_1_image": "seconds",
    "inference_batch": "seconds",
}


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def _iqr(values: list[float]) -> float | None:
    stats = summarize(values)
    return float(stats["iqr"]) if stats else None


@dataclass
class Estimate:
    scenario: Scenario
    profile: Profile
    cache: dict[str, Any] = field(default_factory=dict)

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
        """Warm-up steps as measured, then the mean back-to-back step for every remaining step."""
        steps = self.profile.step_times
        if self.scenario.application_type != "training" or not steps:
            return None
        warmup = self.profile.warmup_step_times
        total_steps = self.scenario.total_steps
        if total_steps <= len(warmup):
            return sum(warmup[:total_steps])
        return sum(warmup) + statistics.fmean(steps) * (total_steps - len(warmup))

    def metrics(self) -> dict[str, float | None]:
        phase = self._phase()
        profile = self.profile
        training = self.scenario.application_type == "training"
        return {
            "peak_gpu_memory": phase.peak_gpu_memory if phase else None,
            "peak_gpu_utilization": phase.peak_gpu_utilization if phase else None,
            "peak_ram_memory": phase.peak_rss if phase else None,
            "peak_cpu_utilization": phase.peak_cpu_percent if phase else None,
            "forward_pass": _mean(profile.forward_times if training else profile.inference_batch_times),
            "backward_pass": _mean(profile.backward_times) if training else None,
            "ram_before_training": profile.ram_before if self.fits else None,
            "vram_before_training": profile.vram_before,
            "total_training_time": self.total_training_time(),
            "inference_1_image": _mean(profile.inference_one_times),
            "inference_batch": _mean(profile.inference_batch_times),
        }

    def spread(self, metric: str) -> float | None:
        """Measured noise of a time metric, in its unit: the IQR of its samples (scaled to the run for
        the total). None for figures that are single peaks."""
        profile = self.profile
        training = self.scenario.application_type == "training"
        samples = {
            "forward_pass": profile.forward_times if training else profile.inference_batch_times,
            "backward_pass": profile.backward_times,
            "inference_1_image": profile.inference_one_times,
            "inference_batch": profile.inference_batch_times,
        }
        if metric == "total_training_time":
            iqr = _iqr(profile.step_times)
            return None if iqr is None else iqr * self.scenario.total_steps
        return _iqr(samples[metric]) if metric in samples else None

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
        if scenario.weights_path is None and scenario.architecture in TORCHVISION and profile.inference_one_times:
            found.append(
                "inference times use random weights: almost every candidate box passes the score threshold, "
                f"so post-processing ({self._detections()} detections per image) costs more than with trained "
                "weights; give weights_path or lower the model's detections_per_img / score threshold"
            )
        return found

    def _detections(self) -> str:
        found = self.profile.inference_detections
        return "unknown" if found is None else f"{found:.0f}"

    def details(self) -> dict[str, Any]:
        profile, scenario = self.profile, self.scenario
        phase = self._phase()
        warmup = profile.warmup_step_times
        step_mean = _mean(profile.step_times)
        return {
            "fits": self.fits,
            "failure": profile.failure,
            "method": (
                "Total Training Time = the timed warm-up steps + the mean back-to-back step time x the "
                "remaining steps, steps = ceil(dataset_size / batch_size) x epochs; a partial last batch "
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
            },
            "monitoring": {
                "mode": "threaded" if scenario.threading else "step-wise",
                "interval_ms": scenario.sample_interval_ms if scenario.threading else None,
                "samples": phase.samples if phase else 0,
            },
            "inference": {
                "weights": "file" if scenario.weights_path else "random",
                "detections_per_image": profile.inference_detections,
            },
            "environment": profile.environment,
            "profile_seconds": profile.measure_seconds,
            "build_seconds": profile.build_seconds,
            "cache": self.cache,
        }

    def to_dict(self) -> dict[str, Any]:
        m = self.metrics()
        units = dict(UNITS)
        units[self.batch_key] = units.pop("Batch of N Inference Time")
        training = self.scenario.application_type == "training"
        return {
            "resource": {
                "Peak GPU Memory": m["peak_gpu_memory"],
                "Peak GPU Utilization": m["peak_gpu_utilization"],
                "Peak RAM Memory": m["peak_ram_memory"],
                "Peak CPU Utilization": m["peak_cpu_utilization"],
                "Batch Time": {"forward_pass": m["forward_pass"], "backward_pass": m["backward_pass"]},
                "RAM before training": m["ram_before_training"],
                "VRAM before training": m["vram_before_training"],
            },
            "training_time": {"Total Training Time": m["total_training_time"]} if training else None,
            "inference_time": {
                "1-Image Inference Time": m["inference_1_image"],
                self.batch_key: m["inference_batch"],
            },
            "units": units,
            "details": self.details(),
            "warnings": self.warnings(),
        }
