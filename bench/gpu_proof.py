"""The GPU proof: each GPU figure of an estimate against a plain PyTorch loop on the same device.

Parts, in the order they run (most valuable first; each stops starting new work once ``--deadline`` seconds
have passed, and says what it left out):

- ``training``: per model at the shipped ``scenarios/gpu.yaml`` sizes, a fresh-process estimate of a
  300-step training run against ``bench/reference_loop.py`` running those 300 steps with the same recipe in
  another fresh process. Total Training Time against the loop's wall time; peak allocated and reserved
  memory against ``torch.cuda.max_memory_allocated`` / ``max_memory_reserved``; Peak GPU Memory against
  NVML's figure for the loop's process; GPU energy per step and the power it implies against NVML's power
  readings; the breakdown's memory split against the allocator's peak and its part times against the step.
- ``inference``: per model, 1-image and batch inference at the stated detection load against a plain
  ``inference_mode`` loop.
- ``capacity``: the largest batch under a 16 GiB limit (the 16 GB card class), predicted from batches 2, 4
  and 8 and confirmed by real profiles; the fitted line's peak allocated memory at the confirmed batch,
  which it never profiled, against the profile.
- ``noise``: the robust mean step time of the same short scenario in ``--repeats`` fresh processes, for two
  models: the between-process spread that ``regression.DRIFT_FLOOR['cuda']`` should cover.

    python bench/gpu_proof.py --out DIR [--parts training,inference,capacity,noise] [--deadline 400]
    python bench/gpu_proof.py --device cpu --smoke  # the same code paths on a CPU, tiny sizes: a dry run

Every result is appended to ``DIR/gpu_proof.jsonl`` as it is measured; a summary with the bars is printed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pytest_mlestimate.api import estimate  # noqa: E402
from pytest_mlestimate.core.samples import robust_mean  # noqa: E402
from pytest_mlestimate.planning.search import max_batch_size  # noqa: E402
from pytest_mlestimate.planning.size_fit import FIGURE  # noqa: E402
from pytest_mlestimate.planning.sweep import SizeSweep, fit_sizes  # noqa: E402
from pytest_mlestimate.scenarios.scenario import Scenario, parse_scenario  # noqa: E402

AT_512 = {"min_size": 512, "max_size": 512}
# (name, architecture, task, batch, image, model_kwargs): scenarios/gpu.yaml's sizes
MODELS: list[tuple[str, str, str, int, tuple[int, int], dict[str, Any]]] = [
    ("fasterrcnn-r50-b4-512", "fasterrcnn_resnet50_fpn", "detection", 4, (512, 512), AT_512),
    ("ssdlite320-b32", "ssdlite320_mobilenet_v3_large", "detection", 32, (320, 320), {"score_thresh": 0.3}),
    ("retinanet-r50-b4-512", "retinanet_resnet50_fpn", "detection", 4, (512, 512), AT_512),
    ("fcos-r50-b4-512", "fcos_resnet50_fpn", "detection", 4, (512, 512), AT_512),
    ("maskrcnn-r50-b4-512", "maskrcnn_resnet50_fpn", "instance", 4, (512, 512), AT_512),
]
SMOKE: list[tuple[str, str, str, int, tuple[int, int], dict[str, Any]]] = [
    ("ssdlite320-b2", "ssdlite320_mobilenet_v3_large", "detection", 2, (320, 320), {"score_thresh": 0.3}),
    ("tiny-b4", "pytest_mlestimate.tiny:tiny_detector", "detection", 4, (128, 128), {}),
]
STEPS = 300
BARS = {"time_median": 0.03, "time_worst": 0.05, "allocator": 0.02, "inference": 0.10, "split": 0.05,
        "parts": 0.10, "unprofiled_allocated": 0.03}  # fmt: skip


class Run:
    def __init__(self, out: Path, device: str, deadline: float, smoke: bool) -> None:
        self.out, self.device, self.smoke = out, device, smoke
        self.ends = time.monotonic() + deadline
        self.log = out / "gpu_proof.jsonl"
        self.left_out: list[str] = []

    def time_left(self) -> float:
        return self.ends - time.monotonic()

    def may_start(self, what: str, needs: float) -> bool:
        if self.time_left() >= needs:
            return True
        self.left_out.append(what)
        print(f"  left out (deadline): {what}", flush=True)
        return False

    def record(self, part: str, row: dict[str, Any]) -> None:
        with self.log.open("a") as handle:
            handle.write(json.dumps({"part": part, **row}, default=str) + "\n")

    def scenario(self, model: tuple, application: str, **extra: Any) -> Scenario:
        _, architecture, task, batch, image, kwargs = model
        return parse_scenario(
            {
                "task_type": task,
                "architecture": architecture,
                "dataset_size": STEPS * batch if not self.smoke else 12 * batch,
                "batch_size": batch,
                "image_size": list(image),
                "model_kwargs": kwargs,
                "device": self.device,
                "application_type": application,
                **extra,
            }
        )


def relative(estimated: float | None, real: float | None) -> float | None:
    return None if estimated is None or not real else (estimated - real) / real


def reference(scenario: Scenario, *args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "reference_loop.py"), scenario.model_dump_json(), *args],
        capture_output=True, text=True, check=True, cwd=REPO,
    )  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def torchvision_builders(models: list) -> list:
    """The reference loop builds torchvision's detection models only."""
    return [m for m in models if ":" not in m[1]]


def training(run: Run, models: list) -> None:
    print(f"\n## training: {STEPS} steps, estimate vs plain loop, fresh processes", flush=True)
    for model in torchvision_builders(models):
        if not run.may_start(f"training {model[0]}", 60):
            continue
        scenario = run.scenario(model, "training")
        started = time.monotonic()
        result = estimate(scenario, cache=False)
        found = result.to_dict()
        real = reference(scenario, str(scenario.total_steps))
        details = found["details"]
        memory = details.get("gpu_memory") or {}
        breakdown = details.get("breakdown") or {}
        split = breakdown.get("memory") or {}
        parts = breakdown.get("training") or {}
        energy = found.get("energy") or {}
        per_step = energy.get("GPU Energy per Step")
        estimated_power = energy.get("Average GPU Power")
        real_steps = real["step_seconds"]
        row = {
            "name": model[0],
            "steps": scenario.total_steps,
            "total_time": (found["training_time"]["Total Training Time"], real["seconds"]),
            "step_median": (median(result.profile.step_times), median(real_steps[10:] or real_steps)),
            "peak_allocated": (memory.get("peak_allocated"), real["peak_gpu_allocated"]),
            "peak_reserved": (memory.get("peak_reserved"), real["peak_gpu_reserved"]),
            "peak_gpu_memory_nvml": (found["resource"]["Peak GPU Memory"], real["peak_gpu_process"]),
            "peak_ram": (found["resource"]["Peak RAM Memory"], real["peak_rss"]),
            "energy_per_step": (per_step, real["energy_joules"] / real["steps"] if real.get("energy_joules") else None),
            "power": (estimated_power, real.get("mean_power_watts")),
            "split_rest_share": (split.get("rest") / split["whole_bytes"]) if split.get("whole_bytes") else None,
            "parts_remainder_share": parts.get("remainder_share"),
            "measured_steps": len(result.profile.step_times),
            "profile_seconds": details.get("profile_seconds"),
            "wall_seconds": time.monotonic() - started,
            "warnings": found.get("warnings"),
        }
        row["errors"] = {k: relative(*row[k]) for k in
                         ("total_time", "step_median", "peak_allocated", "peak_reserved", "peak_gpu_memory_nvml",
                          "energy_per_step", "power")}  # fmt: skip
        run.record("training", row)
        e = row["errors"]
        print(
            f"  {model[0]:24} time {_pct(e['total_time'])} (median step {_pct(e['step_median'])}), "
            f"allocated {_pct(e['peak_allocated'])}, reserved {_pct(e['peak_reserved'])}, "
            f"NVML {_pct(e['peak_gpu_memory_nvml'])}, J/step {_pct(e['energy_per_step'])}, power {_pct(e['power'])}, "
            f"split rest {_pct(row['split_rest_share'])}, parts remainder {_pct(row['parts_remainder_share'])}  "
            f"[{row['wall_seconds']:.0f} s]",
            flush=True,
        )


def inference(run: Run, models: list) -> None:
    print("\n## inference at the stated detection load, estimate vs plain inference_mode loop", flush=True)
    for model in torchvision_builders(models):
        if not run.may_start(f"inference {model[0]}", 40):
            continue
        scenario = run.scenario(model, "inference")
        started = time.monotonic()
        found = estimate(scenario, cache=False).to_dict()
        real = reference(scenario, "--inference", "50" if run.device != "cpu" else "4")
        times, batch = found["inference_time"], scenario.batch_size
        row = {
            "name": model[0],
            "one_image": (times["1-Image Inference Time"], real["one_image"]),
            "batch": (times[f"Batch of {batch} Inference Time"], real["batch"]),
            "detections": (found["details"]["inference"]["detections_per_image"], real["detections"]),
            "wall_seconds": time.monotonic() - started,
        }
        row["errors"] = {k: relative(*row[k]) for k in ("one_image", "batch")}
        run.record("inference", row)
        print(
            f"  {model[0]:24} 1 image {_pct(row['errors']['one_image'])}, batch of {batch} "
            f"{_pct(row['errors']['batch'])}, detections/image {row['detections'][0]} vs {row['detections'][1]}  "
            f"[{row['wall_seconds']:.0f} s]",
            flush=True,
        )


def capacity(run: Run, models: list, limit: str) -> None:
    print(f"\n## capacity: the largest batch under {limit}, confirmed by real profiles", flush=True)
    model = models[-1] if run.smoke else models[0]
    if not run.may_start(f"capacity {model[0]}", 90):
        return
    base = run.scenario(model, "training", warmup_iterations=5, measure_iterations=30, breakdown_depth=0)
    started = time.monotonic()
    fitted_sizes = [2, 4, 8] if not run.smoke else [1, 2, 3]
    profiler = SizeSweep(base, lambda s: estimate(s))  # cache on: the search recalls the fitted sizes
    fit = fit_sizes(base, fitted_sizes, profiler=profiler)
    search = max_batch_size(base, limit, batch_sizes=fitted_sizes, headroom=0)
    largest, failing = search.largest, search.first_failing
    row: dict[str, Any] = {"name": model[0], "limit": limit, "search": search.to_dict(), "fitted_on": fitted_sizes}
    for batch in (largest, failing):
        if batch is None or batch in fitted_sizes:
            continue
        real = profiler.at(batch)  # from the cache: the search's own confirming profile
        truth = FIGURE["peak_gpu_allocated"].read(real)
        guess = fit.predict(batch).get("peak_gpu_allocated")
        row[f"batch_{batch}"] = {
            "peak_gpu_memory": FIGURE["peak_gpu_memory"].read(real),
            "peak_gpu_allocated": truth,
            "predicted_allocated": guess.value if guess else None,
            "error": relative(guess.value if guess else None, truth),
            "fits": real.fits,
        }
    row["wall_seconds"] = time.monotonic() - started
    run.record("capacity", row)
    shown = {k: v for k, v in row.items() if k.startswith("batch_")}
    print(
        f"  {model[0]}: largest {largest}, first failing {failing}, predicted first {search.predicted_first}, "
        f"confirmed {search.settled}, {search.profiles} profiles; {json.dumps(shown)}  [{row['wall_seconds']:.0f} s]",
        flush=True,
    )


def noise(run: Run, models: list, repeats: int) -> None:
    print(f"\n## between-process noise: {repeats} fresh processes per model", flush=True)
    chosen = models[:2]
    means: dict[str, list[float]] = {m[0]: [] for m in chosen}
    for i in range(repeats):  # interleaved: a slow minute of the machine falls on both models
        for model in chosen:
            if not run.may_start(f"noise {model[0]} repeat {i + 1}", 25):
                continue
            scenario = run.scenario(model, "training", warmup_iterations=10, measure_iterations=50, breakdown_depth=0)
            found = estimate(scenario, cache=False)
            means[model[0]].append(robust_mean(found.profile.step_times))
    for name, values in means.items():
        if len(values) < 2:
            continue
        mean = statistics.fmean(values)
        row = {
            "name": name,
            "step_means": values,
            "sd_share": statistics.stdev(values) / mean,
            "range_share": (max(values) - min(values)) / mean,
        }
        run.record("noise", row)
        print(
            f"  {name:24} {len(values)} processes: mean step {mean * 1000:.2f} ms, sd {row['sd_share']:.2%}, "
            f"range {row['range_share']:.2%}",
            flush=True,
        )


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _pct(value: float | None) -> str:
    return "  n/a " if value is None else f"{value:+.1%}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--parts", default="training,inference,capacity,noise")
    parser.add_argument("--only", default="", help="models whose name contains this")
    parser.add_argument("--deadline", type=float, default=400.0, help="seconds after which no new work starts")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--limit", default="16 GiB")
    parser.add_argument("--smoke", action="store_true", help="tiny model and sizes: check the script itself")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    run = Run(args.out, args.device, args.deadline, args.smoke)
    models = [m for m in (SMOKE if args.smoke else MODELS) if args.only in m[0]]
    parts = args.parts.split(",")
    for part in parts:
        try:
            if part == "training":
                training(run, models)
            elif part == "inference":
                inference(run, models)
            elif part == "capacity":
                capacity(run, models, args.limit if not args.smoke else "900 MiB")
            elif part == "noise":
                noise(run, models, args.repeats if not args.smoke else 2)
        except Exception as exc:  # one part's failure costs that part, not the others' results
            print(f"  {part} FAILED: {type(exc).__name__}: {exc}", flush=True)
            run.record(part, {"failed": f"{type(exc).__name__}: {exc}"})
    if run.left_out:
        print(f"\nleft out for the deadline: {', '.join(run.left_out)}")
        run.record("left_out", {"items": run.left_out})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
