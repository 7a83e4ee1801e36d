"""The largest batch under a RAM limit: the search's answer against exhaustive profiling.

For each architecture: profile every batch from 1 up (fresh processes, no cache) to know Peak RAM Memory
at each; choose a limit halfway between two batches near the middle of that range; then run
``capacity.max_batch_size`` with that limit (fresh profiles again) and compare its answer with the true
largest batch. Prints the profiles the search ran beside the trials a power-then-binary search (Lightning's
batch-size finder in 'binsearch' mode, starting at 2) would need for the same answer: counted, not run.

    python bench/max_batch.py
    python bench/max_batch.py --only tiny --top 24

Bar: the search's answer equals the true largest batch within one search step (1), for two architectures.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from pytest_mlestimate.api import estimate
from pytest_mlestimate.core.units import format_quantity
from pytest_mlestimate.planning.search import max_batch_size, power_then_binary_trials
from pytest_mlestimate.scenarios.scenario import parse_scenario

ARCHITECTURES = [
    ("pytest_mlestimate.tiny:tiny_detector", (512, 512), {}, 1, 24),
    ("ssdlite320_mobilenet_v3_large", (320, 320), {"score_thresh": 0.3}, 2, 16),
]
"""architecture, image size, model_kwargs, smallest and largest batch profiled exhaustively (SSDlite's batch
norm cannot train on one image)."""


def scenario(architecture: str, image: tuple[int, int], kwargs: dict[str, Any], batch: int) -> dict[str, Any]:
    return {
        "task_type": "detection",
        "architecture": architecture,
        "dataset_size": 1000,
        "batch_size": batch,
        "image_size": list(image),
        "device": "cpu",
        "model_kwargs": kwargs,
        "warmup_iterations": 1,
        "measure_iterations": 2,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="")
    parser.add_argument("--top", type=int, help="profile batches 1..TOP exhaustively (default per architecture)")
    args = parser.parse_args()
    print(f"load before: {os.getloadavg()}")
    failures = 0
    for arch, image, kwargs, first, top in ARCHITECTURES:
        if args.only not in arch:
            continue
        top = args.top or top
        started = time.perf_counter()
        peaks = {}
        for batch in range(first, top + 1):
            found = estimate(scenario(arch, image, kwargs, batch), cache=False)
            assert found.profile.training is not None
            peaks[batch] = found.profile.training.peak_rss
        exhaustive = time.perf_counter() - started
        middle = (first + top) // 2
        limit = (peaks[middle] + peaks[middle + 1]) / 2
        truth = max((b for b, peak in peaks.items() if peak <= limit), default=0)
        print(f"  exhaustive profiles done: {exhaustive:.0f} s", flush=True)
        started = time.perf_counter()
        search = max_batch_size(parse_scenario(scenario(arch, image, kwargs, 1)), limit, cache=False)
        searched = time.perf_counter() - started
        ok = search.largest is not None and abs(search.largest - truth) <= search.step
        failures += not ok
        print(f"\n{arch} at {image[0]}x{image[1]}: Peak RAM Memory by batch (exhaustive, {exhaustive:.0f} s)")
        print("  " + ", ".join(f"{b}: {format_quantity(p, 'bytes')}" for b, p in peaks.items()))
        print(f"  limit {format_quantity(limit, 'bytes')} ({limit:.0f} B): true largest batch {truth}")
        print(
            f"  search: {search.largest} (predicted {search.predicted_first} from batch 2, 4, 8; "
            f"first failing {search.first_failing}) {'ok' if ok else 'FAILED'}"
        )
        print(
            f"  profiles: search {search.profiles} ({searched:.0f} s), exhaustive {top - first + 1}, power-then-binary "
            f"{power_then_binary_trials(lambda b, t=truth: b <= t)} trials (counted, not run)"
        )
    print(f"\n{failures} architecture(s) failed; load after: {os.getloadavg()}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
