"""Between-process noise of the step time: the same scenario profiled in several fresh processes, back to back.

    python bench/step_noise.py [--repeats 5] [--batch 8]

Prints each process's robust mean step time and their standard deviation and range as a share of the mean:
the floor under any timing prediction on this machine (``capacity_accuracy.py`` compares against one such
profile).
"""

from __future__ import annotations

import argparse
import os
import statistics

from pytest_mlestimate.api import estimate
from pytest_mlestimate.core.samples import robust_mean

MODELS = [
    ("ssdlite320_mobilenet_v3_large", [320, 320], {"score_thresh": 0.3}),
    ("pytest_mlestimate.tiny:tiny_detector", [256, 256], {}),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    print(f"load before: {os.getloadavg()}")
    for architecture, image, kwargs in MODELS:
        scenario = {
            "task_type": "detection",
            "architecture": architecture,
            "dataset_size": 1000,
            "batch_size": args.batch,
            "image_size": image,
            "device": "cpu",
            "model_kwargs": kwargs,
            "warmup_iterations": 2,
            "measure_iterations": 8,
        }
        steps = [robust_mean(estimate(scenario, cache=False).profile.step_times) for _ in range(args.repeats)]
        mean = statistics.fmean(steps)
        shown = ", ".join(f"{s * 1000:.1f}" for s in steps)
        print(
            f"{architecture} batch {args.batch}: {shown} ms; sd {statistics.stdev(steps) / mean:.1%} of the mean, "
            f"range {(max(steps) - min(steps)) / mean:.1%}"
        )
    print(f"load after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
