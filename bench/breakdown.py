"""The per-module breakdown's two bars: it costs the headline figures nothing, and its parts add up to the step.

    python bench/breakdown.py cost [--pairs 5]
    python bench/breakdown.py sums

``cost``: fresh-process profiles of one scenario with the breakdown off and on, interleaved (off, on, off,
on, ...), so that the machine's drift falls on both arms alike. Prints each arm's headline step time and Peak
RAM Memory, the difference of the arm means and the run-to-run noise (the standard deviation within an arm):
the hooks run in their own steps, so the difference should stay within the noise.

``sums``: for the tiny model and two torchvision detectors, the instrumented steps' parts beside the
headline step measured without hooks: the parts alone, the parts with the other forward and backward work and
the optimizer, and the remainder (the headline step less all of that).
"""

from __future__ import annotations

import argparse
import os
import statistics
from typing import Any

from pytest_mlestimate.api import estimate
from pytest_mlestimate.core.samples import robust_mean

COST_SCENARIO: dict[str, Any] = {
    "task_type": "detection",
    "architecture": "ssdlite320_mobilenet_v3_large",
    "dataset_size": 1000,
    "batch_size": 4,
    "image_size": [320, 320],
    "device": "cpu",
    "model_kwargs": {"score_thresh": 0.3},
    "warmup_iterations": 3,
    "measure_iterations": 10,
}
SUM_MODELS: list[tuple[str, list[int], dict[str, Any], int]] = [
    ("pytest_mlestimate.tiny:tiny_detector", [256, 256], {}, 8),
    ("fasterrcnn_mobilenet_v3_large_320_fpn", [320, 320], {}, 2),
    ("ssdlite320_mobilenet_v3_large", [320, 320], {"score_thresh": 0.3}, 4),
    ("retinanet_resnet50_fpn", [320, 320], {"min_size": 320, "max_size": 320}, 2),
]


def _scenario(architecture: str, image: list[int], kwargs: dict[str, Any], batch: int) -> dict[str, Any]:
    return {
        "task_type": "detection",
        "architecture": architecture,
        "dataset_size": 1000,
        "batch_size": batch,
        "image_size": image,
        "device": "cpu",
        "model_kwargs": kwargs,
        "warmup_iterations": 3,
        "measure_iterations": 10,
    }


def cost(pairs: int) -> None:
    arms: dict[int, list[tuple[float, int]]] = {0: [], 1: []}
    for _ in range(pairs):
        for depth in (0, 1):
            result = estimate({**COST_SCENARIO, "breakdown_depth": depth}, cache=False)
            step = robust_mean(result.profile.step_times)
            peak = result.to_dict()["resource"]["Peak RAM Memory"]
            arms[depth].append((step, peak))
            arm = "on " if depth else "off"
            print(f"  breakdown {arm}: step {step * 1000:.1f} ms, Peak RAM {peak / 2**20:.0f} MiB")
    for index, name, scale, unit in ((0, "step time", 1000, "ms"), (1, "Peak RAM Memory", 2**-20, "MiB")):
        off = [run[index] for run in arms[0]]
        on = [run[index] for run in arms[1]]
        mean_off, mean_on = statistics.fmean(off), statistics.fmean(on)
        noise = max(statistics.stdev(off), statistics.stdev(on))
        print(
            f"{name}: off {mean_off * scale:.1f} {unit}, on {mean_on * scale:.1f} {unit}, difference "
            f"{(mean_on - mean_off) / mean_off:+.2%}; run-to-run noise (sd within an arm) {noise / mean_off:.2%}; "
            f"within the noise: {abs(mean_on - mean_off) <= noise}"
        )


def sums() -> None:
    for architecture, image, kwargs, batch in SUM_MODELS:
        details = estimate(_scenario(architecture, image, kwargs, batch), cache=False).to_dict()["details"]
        training = details["breakdown"]["training"]
        headline = training["headline_step_s"]
        explained = training["step_s"]
        print(
            f"{architecture} batch {batch} {image[0]}x{image[1]}: headline step {headline * 1000:.1f} ms; parts "
            f"{training['parts_s'] / headline:.1%} of it, with other forward/backward work and the optimizer "
            f"{explained / headline:.1%}; remainder {training['remainder_share']:+.1%}"
        )
        for part in details["breakdown"]["parts"]:
            backward, saved = part["backward_s"] or 0, part["activations_bytes"] or 0
            print(
                f"    {part['module']:<16} forward {part['forward_s'] * 1000:7.1f} ms  backward "
                f"{backward * 1000:7.1f} ms  activations {saved / 2**20:7.1f} MiB"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["cost", "sums"])
    parser.add_argument("--pairs", type=int, default=5)
    args = parser.parse_args()
    print(f"load before: {os.getloadavg()}")
    if args.what == "cost":
        cost(args.pairs)
    else:
        sums()
    print(f"load after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
