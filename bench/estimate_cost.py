"""What an estimate costs: independent of dataset_size and epochs, and fast when cached.

    python bench/estimate_cost.py [--architecture NAME]

Measures (1) wall time of an uncached estimate at dataset_size 100 x 1 epoch and at 1,000,000 x 100
epochs, alternating, three times each; (2) a cached repeat, in this process and in a fresh process
(the call alone, not the interpreter's start).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from pytest_mlestimate import estimate

FRESH = """
import time, json, sys
t = time.perf_counter()
from pytest_mlestimate import estimate
imported = time.perf_counter()
result = estimate(json.loads(sys.argv[1]))
print(imported - t, time.perf_counter() - imported, result.cache["hit"], "torch" in sys.modules)
"""


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--architecture", default="ssdlite320_mobilenet_v3_large")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    os.environ["MLESTIMATE_CACHE_DIR"] = tempfile.mkdtemp(prefix="mlestimate-cost-")
    base = {
        "task_type": "detection",
        "architecture": args.architecture,
        "batch_size": 2,
        "image_size": [320, 320],
        "device": "cpu",
    }
    small = {**base, "dataset_size": 100, "epochs": 1}
    large = {**base, "dataset_size": 1_000_000, "epochs": 100}
    costs: dict[str, list[float]] = {"100 x 1": [], "1,000,000 x 100": []}
    for _ in range(args.repeats):
        for name, scenario in (("100 x 1", small), ("1,000,000 x 100", large)):
            start = time.perf_counter()
            estimate(scenario, cache=False)
            costs[name].append(time.perf_counter() - start)
    for name, values in costs.items():
        print(
            f"uncached estimate, dataset x epochs = {name:>15}: mean {statistics.fmean(values):6.2f} s "
            f"(runs: {', '.join(f'{v:.2f}' for v in values)})"
        )
    ratio = statistics.fmean(costs["1,000,000 x 100"]) / statistics.fmean(costs["100 x 1"])
    print(f"cost ratio large / small: {ratio:.3f}")

    estimate(small)  # fills the cache
    repeats = []
    for _ in range(20):
        start = time.perf_counter()
        assert estimate(large).cache["hit"]
        repeats.append(time.perf_counter() - start)
    print(
        f"cached repeat in this process: median {statistics.median(repeats) * 1000:.2f} ms, "
        f"max {max(repeats) * 1000:.2f} ms"
    )
    fresh = subprocess.run([sys.executable, "-c", FRESH, json.dumps(large)], capture_output=True, text=True, check=True)
    imported, call, hit, torch_loaded = fresh.stdout.split()
    print(
        f"cached repeat in a fresh process: import {float(imported) * 1000:.1f} ms, call {float(call) * 1000:.1f} ms,"
        f" hit={hit}, torch imported={torch_loaded}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
