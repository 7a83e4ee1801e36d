"""Held-out accuracy of the capacity fit: figures at a batch size that was never profiled.

For each architecture: profile batch 2, 4 and 6 (fresh processes, no cache), fit each figure's line
(``capacity.fit_sizes``), predict batch 12, then profile batch 12 for real and compare. Profiles are
interleaved across architectures so that a slow minute of the machine does not land on one of them alone.

    python bench/capacity_accuracy.py                   # CPU: three torchvision architectures and the tiny model
    python bench/capacity_accuracy.py --held-out 8      # a nearer unprofiled batch
    python bench/capacity_accuracy.py --device cuda:0   # GPU: peak allocated memory as well
    python bench/capacity_accuracy.py --only ssdlite

Bars: on a CPU, Peak RAM Memory within 5 % and step time within 10 % of the real profile, and the 95 %
prediction interval covering the real value; on a GPU, peak allocated GPU memory within 3 %.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from pytest_mlestimate.api import estimate
from pytest_mlestimate.estimates.estimate import Estimate
from pytest_mlestimate.planning.size_fit import FIGURE
from pytest_mlestimate.planning.sweep import SizeSweep, fit_sizes
from pytest_mlestimate.scenarios.scenario import Scenario, parse_scenario

FITTED = (2, 4, 6)
HELD_OUT = 12
CPU = [
    ("ssdlite320_mobilenet_v3_large", (320, 320), {"score_thresh": 0.3}),
    ("fasterrcnn_mobilenet_v3_large_320_fpn", (320, 320), {}),
    ("fcos_resnet50_fpn", (160, 160), {"min_size": 160, "max_size": 160}),
    ("pytest_mlestimate.tiny:tiny_detector", (256, 256), {}),
]
GPU = [
    ("fasterrcnn_resnet50_fpn", (512, 512), {"min_size": 512, "max_size": 512}),
    ("ssdlite320_mobilenet_v3_large", (320, 320), {"score_thresh": 0.3}),
    ("retinanet_resnet50_fpn", (512, 512), {"min_size": 512, "max_size": 512}),
]
BARS = {
    "cpu": {"peak_ram_memory": 0.05, "step_time": 0.10},
    "cuda": {"peak_gpu_allocated": 0.03, "step_time": 0.05},
}


def scenario(architecture: str, image: tuple[int, int], kwargs: dict[str, Any], device: str) -> Scenario:
    return parse_scenario(
        {
            "task_type": "detection",
            "architecture": architecture,
            "dataset_size": 1000,
            "batch_size": 1,
            "image_size": list(image),
            "device": device,
            "model_kwargs": kwargs,
            "warmup_iterations": 2,
            "measure_iterations": 8 if device == "cpu" else 50,
        }
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--only", default="")
    parser.add_argument("--held-out", type=int, default=HELD_OUT, help=f"the unprofiled batch (default {HELD_OUT})")
    args = parser.parse_args()
    kind = "cuda" if args.device.startswith("cuda") else "cpu"
    chosen = [c for c in (GPU if kind == "cuda" else CPU) if args.only in c[0]]
    bars = BARS[kind]
    print(f"load before: {os.getloadavg()}")
    started = time.perf_counter()
    profilers = {arch: SizeSweep(scenario(arch, image, kwargs, args.device), _fresh) for arch, image, kwargs in chosen}
    for batch in (*FITTED, args.held_out):  # interleaved: every architecture at one size, then the next size
        for arch, profiler in profilers.items():
            found = profiler.at(batch)
            print(f"  profiled {arch} batch {batch}: {found.profile.measure_seconds:.1f} s", flush=True)
    failures = 0
    for arch, profiler in profilers.items():
        fit = fit_sizes(profiler.scenario, FITTED, profiler=profiler)
        real = profiler.at(args.held_out)
        predicted = fit.predict(args.held_out)
        print(f"\n{arch}: fitted on batch {', '.join(map(str, FITTED))}; batch {args.held_out} predicted vs profiled")
        for name, bar in bars.items():
            truth = FIGURE[name].read(real)
            guess = predicted.get(name)
            if truth is None or guess is None:
                print(f"  {FIGURE[name].key:<28} not measured here")
                continue
            error = (guess.value - truth) / truth
            ok = abs(error) <= bar and guess.covers(truth)
            failures += not ok
            print(
                f"  {FIGURE[name].key:<28} predicted {guess}  real {_shown(truth, name)}  error {error:+.2%} "
                f"(bar {bar:.0%}; interval {'covers' if guess.covers(truth) else 'MISSES'}) {'ok' if ok else 'FAILED'}"
            )
    print(f"\n{failures} check(s) failed; {time.perf_counter() - started:.0f} s; load after: {os.getloadavg()}")
    return 1 if failures else 0


def _fresh(sized: Scenario) -> Estimate:
    return estimate(sized, cache=False)


def _shown(value: float, name: str) -> str:
    from pytest_mlestimate.core.units import format_quantity

    return format_quantity(value, FIGURE[name].unit)


if __name__ == "__main__":
    raise SystemExit(main())
