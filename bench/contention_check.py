"""How often contention is flagged with and without a CPU hog on the same cores.

Runs N tries of each, interleaved (quiet, hog, quiet, hog, ...), each one profile in this process. A hog
try starts busy processes on this process's CPUs half a second before the profile and stops them after it.
Prints, for quiet and hog tries, how often the profile came back contended (after its one re-measurement)
and how often its first measurement was judged contended, with the figures of every try.

    python bench/contention_check.py                      # tiny model, 20 tries of each
    python bench/contention_check.py --model ssdlite -n 6 # ssdlite320_mobilenet_v3_large, batch 2, 320x320
    python bench/contention_check.py --hog torch          # a 2-thread matmul loop instead of busy loops

Bars: flagged under a hog in at least 19 of 20 tries, not flagged quietly in at least 19 of 20. A quiet try
is only as quiet as the machine: the load average and the other processes' CPU use in the second before
each try are printed beside it.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import subprocess
import sys
import time
from typing import Any

from pytest_mlestimate.profiling.contention import Window
from pytest_mlestimate.profiling.profiler import profile_scenario
from pytest_mlestimate.scenarios.scenario import parse_scenario

MODELS: dict[str, dict[str, Any]] = {
    "tiny": {"architecture": "pytest_mlestimate.tiny:tiny_detector", "batch_size": 2, "image_size": [128, 128]},
    "ssdlite": {"architecture": "ssdlite320_mobilenet_v3_large", "batch_size": 2, "image_size": [320, 320]},
    "fasterrcnn": {"architecture": "fasterrcnn_mobilenet_v3_large_320_fpn", "batch_size": 2, "image_size": [320, 320]},
}
HOGS = {
    "loop": "while True: pass",
    "torch": ("import torch\ntorch.set_num_threads(2)\na = torch.randn(512, 512)\nwhile True:\n    a @ a\n"),
}


def background_cores(seconds: float = 1.0) -> float:
    window = Window()
    window.start()
    time.sleep(seconds)
    return window.finish([], threads=0).others_cores


def start_hog(kind: str, count: int) -> list[int]:
    """Hog processes outside this process tree (a shell starts them in the background and exits), as another
    user's would be: the profiler counts its own descendants as its own CPU use."""
    command = f"{shlex.quote(sys.executable)} -c {shlex.quote(HOGS[kind])} >/dev/null 2>&1 & echo $!"
    count = 1 if kind == "torch" else count
    pids = [
        int(subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=True).stdout)
        for _ in range(count)
    ]
    time.sleep(0.5 if kind == "loop" else 3.0)  # torch's import takes seconds before the matmuls start
    return pids


def one_try(scenario: dict[str, Any], hog: str | None, hog_count: int) -> dict[str, Any]:
    load = os.getloadavg()[0]
    before = background_cores()
    pids = start_hog(hog, hog_count) if hog else []
    try:
        started = time.perf_counter()
        profile = profile_scenario(parse_scenario(scenario))
        seconds = time.perf_counter() - started
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
    contention = profile.contention
    assert contention is not None
    return {
        "load": load,
        "before": before,
        "flagged": profile.contended,
        "first_flagged": profile.contention_remeasured,
        "others": contention.others_cores,
        "slow": f"{contention.slow_steps}/{contention.steps}",
        "median_ms": contention.median_step * 1000,
        "precision": profile.precision,
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20, help="tries of each kind")
    parser.add_argument("--model", choices=sorted(MODELS), default="tiny")
    parser.add_argument("--hog", choices=sorted(HOGS), default="loop")
    parser.add_argument("--hog-processes", type=int, default=2, help="busy loops (the torch hog is one process)")
    parser.add_argument("--measure-iterations", type=int, default=None, help="a fixed count instead of adaptive")
    args = parser.parse_args()
    scenario: dict[str, Any] = {
        "task_type": "detection",
        "dataset_size": 1000,
        "device": "cpu",
        "application_type": "training",
        **MODELS[args.model],
    }
    if args.measure_iterations:
        scenario["measure_iterations"] = args.measure_iterations
    print(f"model {args.model}, hog {args.hog}, CPUs {sorted(os.sched_getaffinity(0))}, n {args.n}", flush=True)
    results: dict[str, list[dict[str, Any]]] = {"quiet": [], "hog": []}
    for i in range(args.n):
        for kind in ("quiet", "hog"):
            found = one_try(scenario, args.hog if kind == "hog" else None, args.hog_processes)
            results[kind].append(found)
            print(
                f"{i + 1:3d} {kind:5s} load {found['load']:.2f} others before {found['before']:.2f} | "
                f"flagged {found['flagged']!s:5s} first {found['first_flagged']!s:5s} others {found['others']:.2f} "
                f"cores, slow {found['slow']}, median {found['median_ms']:.1f} ms, precision "
                f"{found['precision']:.3f}, {found['seconds']:.1f} s",
                flush=True,
            )
    quiet, hog = results["quiet"], results["hog"]
    print(
        f"hog: flagged {sum(r['flagged'] for r in hog)}/{len(hog)} "
        f"(first measurement {sum(r['first_flagged'] for r in hog)}/{len(hog)}); "
        f"quiet: not flagged {sum(not r['flagged'] for r in quiet)}/{len(quiet)} "
        f"(first measurement clean {sum(not r['first_flagged'] for r in quiet)}/{len(quiet)}); "
        f"quiet tries whose second before had others above 0.15 cores: {sum(r['before'] > 0.15 for r in quiet)}"
    )


if __name__ == "__main__":
    main()
