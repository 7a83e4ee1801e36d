"""Start-up cost of a profile: forked from the warm parent against a fresh interpreter, interleaved.

Start-up = the wall time of ``isolation.profile_in_child`` minus the profile's own ``measure_seconds`` (which
runs from building the model to the end of inference, so it holds ``build_seconds``). For each scenario the
two ways alternate (fresh, warm, fresh, warm, ...) so that the machine's drift lands on both; the first warm
profile of the run also starts the warm parent and is reported apart, as is the first warm profile of each
later scenario (the warm parent already running). The RAM figures of the two ways
are compared. Then the main job, ``pytest --mlestimate scenarios/cpu.yaml --mlestimate-no-cache``, is
timed each way.

    python bench/startup_cost.py [--repeats 6] [--no-main-job]

Bars: warm start-up at most 0.5 s median; Peak RAM Memory and RAM before training within 2 % of a fresh
interpreter's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from pytest_mlestimate.profiling import isolation, warm_start
from pytest_mlestimate.scenarios.scenario import parse_scenario

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = [
    {
        "task_type": "detection",
        "architecture": "pytest_mlestimate.tiny:tiny_detector",
        "dataset_size": 1000,
        "batch_size": 4,
        "image_size": [128, 128],
        "device": "cpu",
        "warmup_iterations": 1,
        "measure_iterations": 5,
    },
    {
        "task_type": "detection",
        "architecture": "fasterrcnn_mobilenet_v3_large_320_fpn",
        "dataset_size": 1000,
        "batch_size": 2,
        "image_size": [320, 320],
        "device": "cpu",
        "warmup_iterations": 1,
        "measure_iterations": 3,
    },
]


def one(scenario: object, fresh: bool) -> tuple[float, int, int]:
    if fresh:
        os.environ[warm_start.FRESH_VARIABLE] = "1"
    else:
        os.environ.pop(warm_start.FRESH_VARIABLE, None)
    started = time.perf_counter()
    profile = isolation.profile_in_child(parse_scenario(scenario))
    wall = time.perf_counter() - started
    assert profile.training is not None
    return wall - profile.measure_seconds, profile.training.peak_rss, profile.ram_before


def main_job(fresh: bool) -> float:
    env = {**os.environ, warm_start.FRESH_VARIABLE: "1" if fresh else "0"}
    command = [sys.executable, "-m", "pytest", "--mlestimate", "scenarios/cpu.yaml", "--mlestimate-no-cache", "-q"]
    command += ["-p", "no:cacheprovider"]
    started = time.perf_counter()
    subprocess.run(command, cwd=ROOT, env=env, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--no-main-job", action="store_true")
    args = parser.parse_args()
    print(f"load before: {os.getloadavg()}")
    failures = 0
    for scenario in SCENARIOS:
        first = one(scenario, fresh=False)
        runs: dict[bool, list[tuple[float, int, int]]] = {True: [], False: []}
        for _ in range(args.repeats):
            for fresh in (True, False):
                runs[fresh].append(one(scenario, fresh))
        name = scenario["architecture"]
        print(f"\n{name}: {args.repeats} profiles each way, interleaved")
        if scenario is SCENARIOS[0]:
            print(f"  first warm profile, which also started the warm parent: start-up {first[0]:.2f} s")
        else:
            print(f"  first warm profile of this scenario (warm parent already running): start-up {first[0]:.2f} s")
        medians = {}
        for fresh, label in ((True, "fresh interpreter"), (False, "warm parent")):
            startup = [r[0] for r in runs[fresh]]
            medians[fresh] = (statistics.median(startup), statistics.median(r[1] for r in runs[fresh]),
                              statistics.median(r[2] for r in runs[fresh]))  # fmt: skip
            print(
                f"  {label:<18} start-up median {medians[fresh][0]:.2f} s (min {min(startup):.2f}, max "
                f"{max(startup):.2f}); Peak RAM Memory median {medians[fresh][1] / 2**20:.1f} MiB; RAM before "
                f"training {medians[fresh][2] / 2**20:.1f} MiB"
            )
        peak = medians[False][1] / medians[True][1] - 1
        before = medians[False][2] / medians[True][2] - 1
        ok = medians[False][0] <= 0.5 and abs(peak) <= 0.02 and abs(before) <= 0.02
        failures += not ok
        print(f"  warm vs fresh: Peak RAM {peak:+.2%}, RAM before {before:+.2%} -> {'ok' if ok else 'FAILED'}")
    if not args.no_main_job:
        print("\nmain job: pytest --mlestimate scenarios/cpu.yaml --mlestimate-no-cache")
        for fresh in (True, False, True, False):
            print(f"  {'fresh interpreter' if fresh else 'warm parent':<18} {main_job(fresh):.1f} s wall")
    print(f"\nload after: {os.getloadavg()}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
