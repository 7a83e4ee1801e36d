"""From raw measurements to the documented numbers.

The keys of ``Estimate.to_dict()`` ("Peak GPU Memory", "Batch Time", "Total Training Time", ...) are a
public contract parsed by users' dashboards: change them only with a new schema version.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pytest_mlestimate.core.devices import is_gpu
from pytest_mlestimate.core.metrics import METRIC, units
from pytest_mlestimate.core.pricing import Cost, Price, cost_of_training
from pytest_mlestimate.core.samples import robust_mean, summarize
from pytest_mlestimate.core.units import format_quantity
from pytest_mlestimate.profiling.breakdown import Breakdown
from pytest_mlestimate.profiling.profile import EnergyReading, PhasePeaks, PredictedGpuMemory, Profile
from pytest_mlestimate.scenarios.architectures import TORCHVISION
from pytest_mlestimate.scenarios.scenario import Scenario

PARAMETER_TOLERANCE = 0.01
"""Relative difference between the scenario's ``parameters`` and the built model's count that warns."""


def _robust_mean(values: list[float]) -> float | None:
    return robust_mean(values) if values else None


ENERGY_SOURCES = {"GPU": "gpu_energy", "CPU packages": "cpu_energy"}
"""Source -> the Profile field holding its reading over the measured training steps."""
_PER_STEP = {"GPU": "GPU Energy per Step", "CPU packages": "CPU Energy per Step"}
_POWER = {"GPU": "Average GPU Power", "CPU packages": "Average CPU Power"}
EXTRA_UNITS = {
    "GPU Energy per Step": "joules",
    "CPU Energy per Step": "joules",
    "Average GPU Power": "watts",
    "Average CPU Power": "watts",
    "Price per Device-Hour": "the price's currency per device-hour",
    "Price per kWh": "the price's currency per kWh",
    "Predicted Peak GPU Memory": "bytes",
}
"""Units of the energy and cost figures that are not metrics."""

PREDICTION_METHOD = (
    "the run's tensor storages traced in program order (3 training steps from the weights alone, then each "
    "dataset's worst batch; or one inference call) and replayed through a model of the CUDA caching allocator "
    "(512 B rounding, small and large pools, best-fit reuse, splitting, merging; expandable segments where "
    "PYTORCH_CUDA_ALLOC_CONF sets them), with the card's cuBLAS "
    "workspaces; device = reserved + the CUDA context and library handles (about 1.2 GiB, measured on an H100)"
)
PREDICTION_ERROR = (
    "against two detectors' training loops measured on an H100 (torch 2.11): allocated -0.4 % and -0.8 %, "
    "reserved -3.3 % and -7.4 % (bench/gpu_memory_prediction.py); not yet checked on other cards, with AMP or on "
    "other families; not modelled: kernel workspaces (cuDNN), PYTORCH_CUDA_ALLOC_CONF options but expandable_segments"
)
_METHODS = {
    "nvml-energy-counter": "NVML's total energy counter, read right before and right after the measured steps",
    "nvml-power-samples": "NVML power samples taken during the measured steps, integrated over time",
    "rapl": "the RAPL package energy counters (powercap), read right before and right after the measured steps",
}
_SCOPE = {
    "GPU": "the whole GPU, other processes on it included",
    "CPU packages": "the whole CPU packages, every process on them, not only this profile",
}


@dataclass(repr=False)
class Estimate:
    """The documented figures of one scenario. ``print(estimate)`` gives the headline figures with units;
    ``to_dict()`` everything, under the documented keys."""

    scenario: Scenario
    profile: Profile
    cache: dict[str, Any] = field(default_factory=dict)
    default_price: Price | None = None
    """The price where the scenario sets none (the plugin's ini options, the service's settings)."""

    def __str__(self) -> str:
        scenario, profile = self.scenario, self.profile
        source = "from the cache" if self.cache.get("hit") else "measured"
        lines = [f"{self._headline()} ({source})"]
        if not self.fits:
            lines.append(f"  {self.failure}")
        on_gpu = is_gpu(profile.device)
        for name, value in self.metrics().items():
            metric = METRIC[name]
            if value is None or (metric.gpu and not on_gpu):
                continue
            label = " ".join(metric.path_for(scenario.batch_size)[1:])
            text = format_quantity(value, metric.unit)
            if metric.unit == "money" and self.price is not None:
                text += f" {self.price.currency}"
            lines.append(f"  {label:<32} {text}")
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
    def breakdown(self) -> Breakdown | None:
        """Time and memory by part of the model; ``print()`` it for a table."""
        return self.profile.breakdown

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

    def predicted_gpu_memory(self) -> PredictedGpuMemory | None:
        """The phase's peak GPU memory predicted on the scenario's ``predict_gpu`` card, if asked for."""
        if self.scenario.application_type == "training":
            return self.profile.predicted_training
        return self.profile.predicted_inference

    def predicted_metrics(self) -> dict[str, float]:
        """Figures predicted where they were not measured: a ``peak_gpu_memory`` budget is judged on them."""
        predicted = self.predicted_gpu_memory()
        return {"peak_gpu_memory": predicted.device} if predicted is not None else {}

    def _predicted_section(self) -> dict[str, Any] | None:
        predicted = self.predicted_gpu_memory()
        if predicted is None:
            return None
        phase = self._phase()
        return {
            "gpu": predicted.card,
            "allocated": predicted.allocated,
            "reserved": predicted.reserved,
            "device": predicted.device,
            "method": PREDICTION_METHOD,
            "error": PREDICTION_ERROR,
            # on a GPU, the prediction beside what the allocator held: its own error, visible
            "measured_allocated": phase.peak_gpu_allocated if phase else None,
            "measured_reserved": phase.peak_gpu_reserved if phase else None,
        }

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
            "energy_per_training": self.energy_per_training(),
            "cost_per_training": self.cost().amount,
        }

    @property
    def price(self) -> Price | None:
        """The scenario's own price, else the default the caller gave."""
        return self.scenario.price or self.default_price

    def _reading(self, source: str) -> tuple[EnergyReading | None, str | None]:
        """A source's reading over the measured training steps, or why there is none."""
        if self.scenario.application_type != "training":
            return None, "an inference scenario runs no training steps"
        if not self.fits:
            return None, f"not measured: {self.failure}"
        reading: EnergyReading | None = getattr(self.profile, ENERGY_SOURCES[source])
        if reading is None:
            return None, "not measured: the profile holds no energy reading"
        if reading.joules is None or reading.steps <= 0:
            return None, reading.unavailable or "not measured: no measured training steps"
        return reading, None

    def energy_per_step(self) -> dict[str, float]:
        """Joules per measured training step, by source that could be read."""
        found = {}
        for source in ENERGY_SOURCES:
            reading, _ = self._reading(source)
            if reading is not None and reading.joules is not None:
                found[source] = reading.joules / reading.steps
        return found

    def energy_per_training(self) -> float | None:
        """The energy per step of every source that could be read, times the scenario's training steps."""
        per_step = self.energy_per_step()
        if not per_step or self.scenario.application_type != "training":
            return None
        return sum(per_step.values()) * self.scenario.total_steps

    def cost(self) -> Cost:
        return cost_of_training(
            self.price,
            self.total_training_time(),
            self.energy_per_training(),
            why_no_time=self._why_null("total_training_time"),
            why_no_energy=self._why_null("energy_per_training"),
        )

    def _why_null(self, metric: str) -> str:
        return self.null_reason(metric) or f"no {METRIC[metric].key}"

    def null_reason(self, metric: str) -> str | None:
        """Why a metric has no figure, where that is known."""
        if METRIC[metric].gpu:
            return self.profile.gpu_unavailable
        if metric == "total_training_time" and self.scenario.application_type != "training":
            return "an inference scenario has no training time"
        if metric == "total_training_time" and not self.fits:
            return f"not measured: {self.failure}"
        if metric == "energy_per_training" and self.energy_per_training() is None:
            return self.energy()["Reasons"].get("Energy per Training")
        if metric == "cost_per_training":
            return self.cost().reason
        return None

    def energy(self) -> dict[str, Any]:
        """The ``energy`` section: each source's energy per measured training step and average power, the
        Energy per Training they add up to, how each was read, and why a figure is null."""
        section: dict[str, Any] = {}
        reasons: dict[str, str] = {}
        methods: dict[str, str] = {}
        readings = {source: self._reading(source) for source in ENERGY_SOURCES}
        for source, (reading, why) in readings.items():
            if reading is None or reading.joules is None:
                section[_PER_STEP[source]] = None
                reasons[_PER_STEP[source]] = why or "not measured"
                continue
            section[_PER_STEP[source]] = reading.joules / reading.steps
            words = _METHODS.get(reading.method or "", reading.method or "an unnamed method")
            detail = f" ({reading.detail})" if reading.detail else ""
            methods[source] = f"{words}{detail}; {_SCOPE[source]}"
        section["Energy per Training"] = self.energy_per_training()
        for source, (reading, why) in readings.items():
            if reading is not None and reading.joules is not None and reading.seconds > 0:
                section[_POWER[source]] = reading.joules / reading.seconds
            else:
                section[_POWER[source]] = None
                reasons[_POWER[source]] = why or "no time was measured"
        if section["Energy per Training"] is None:
            inference = self.scenario.application_type != "training"
            reasons["Energy per Training"] = (
                "an inference scenario runs no training steps"
                if inference
                else "neither the GPU's nor the CPU packages' energy could be read (see the per-step reasons)"
            )
        section["Included"] = [source for source, (reading, _) in readings.items() if reading is not None]
        section["Methods"] = methods
        section["Reasons"] = reasons
        return section

    def cost_section(self) -> dict[str, Any]:
        """The ``cost`` section: Cost per Training at the price, the parts it includes, and why any is left out."""
        cost, price = self.cost(), self.price
        return {
            "Cost per Training": cost.amount,
            "Currency": cost.currency,
            "Price per Device-Hour": price.per_device_hour if price else None,
            "Price per kWh": price.per_kwh if price else None,
            "Included": cost.included,
            "Excluded": cost.excluded,
            "Reasons": {"Cost per Training": cost.reason} if cost.reason else {},
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
                "inference_remeasured": profile.inference_remeasured,
                "contention": profile.contention.describe() if profile.contention else None,
                "inference_contention": (
                    profile.inference_contention.describe() if profile.inference_contention else None
                ),
            },
            "image_size": list(scenario.image_size),
            "effective_input_size": list(profile.effective_input_size) if profile.effective_input_size else None,
            "dataset": profile.dataset,
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
            "energy": {
                "gpu": profile.gpu_energy.model_dump() if profile.gpu_energy else None,
                "cpu_packages": profile.cpu_energy.model_dump() if profile.cpu_energy else None,
                "method": (
                    "Energy per Training = the energy per measured training step of each source that could be "
                    "read (its joules between a reading right before and right after the measured steps, / the "
                    "steps) x the training steps; warm-up and phase-timed steps are not included. Cost per "
                    "Training = Total Training Time in hours x the price per device-hour + Energy per Training in "
                    "kWh x the price per kWh, of the parts that are known."
                ),
            },
            "breakdown": self._breakdown(),
            "timeline": profile.timeline.model_dump() if profile.timeline else None,
            "environment": profile.environment,
            "profile_seconds": profile.measure_seconds,
            "build_seconds": profile.build_seconds,
            "cache": self.cache,
        }

    def _breakdown(self) -> dict[str, Any] | None:
        """The per-part breakdown, its training times set beside the headline step they explain."""
        found = self.profile.breakdown
        if found is None:
            return None
        details = found.model_dump()
        training, headline = details["training"], _robust_mean(self.profile.step_times)
        if training is not None and headline:
            training["headline_step_s"] = headline
            training["remainder_s"] = headline - training["step_s"]
            training["remainder_share"] = training["remainder_s"] / headline
        return details

    def to_dict(self) -> dict[str, Any]:
        training = self.scenario.application_type == "training"
        found: dict[str, Any] = {
            "resource": {},
            "training_time": {} if training else None,
            "inference_time": {},
            "energy": self.energy(),
            "cost": self.cost_section(),
        }
        for name, value in self.metrics().items():
            *parents, key = METRIC[name].path_for(self.scenario.batch_size)
            section = found
            for part in parents:
                section = section.setdefault(part, {}) if section is not None else None
            if section is not None:
                section[key] = value
        documented_units = {(self.batch_key if k == "Batch of N Inference Time" else k): v for k, v in units().items()}
        documented_units.update(EXTRA_UNITS)
        if self.scenario.predict_gpu and found["resource"] is not None:
            found["resource"]["Predicted Peak GPU Memory"] = self._predicted_section()
        return {**found, "units": documented_units, "details": self.details(), "warnings": self.warnings()}
