"""How small a slowdown the baseline gate catches, and how often it fails an unchanged model.

A scenario is saved as a baseline (``--mlestimate-baseline-runs`` fresh-process runs), then measured again
and again, each try a whole ``pytest --mlestimate --mlestimate-compare`` run in a fresh process with the
cache off, exactly as CI runs it: the unchanged model, and the same model made slower by real extra compute
(a convolution stack, not a sleep) sized for about +5, +10, +20 and +40 % step time. Arms are interleaved
in a shuffled order each round so that drift of the machine falls on all of them alike.

    python bench/regression_power.py                      # tiny model + four conv blocks, CPU, 20 tries
    python bench/regression_power.py --model ssdlite --tries 10 --sizes 0,20
    python bench/regression_power.py --device cuda        # on a GPU

It prints, per size: the slowdown really measured (mean Total Training Time of the tries against the
baseline's runs), how many tries failed and on which metrics, and the measuring cost (wall seconds and
fresh-process runs per verdict). Run it alone: other heavy processes on the cores change every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from pytest_mlestimate.core.metrics import METRIC
from pytest_mlestimate.verdicts.regression import DRIFT_FLOOR, FAMILY_ALPHA, smallest_failing_slowdown

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

MODELS: dict[str, dict[str, Any]] = {
    "tiny": {
        "task_type": "detection",
        "architecture": "bench.power_models:blocks_detector",
        "batch_size": 8,
        "image_size": [192, 192],
        "dataset_size": 8000,
    },
    "ssdlite": {
        "task_type": "detection",
        "architecture": "bench.power_models:ssdlite",
        "batch_size": 2,
        "image_size": [320, 320],
        "dataset_size": 2000,
    },
}


def calibrate(model: str, device: str, sizes: list[float]) -> dict[float, int]:
    """Hidden channels of the extra stack for each wanted slowdown, from timed steps in this process."""
    import torch

    from bench.power_models import ExtraCompute, blocks_detector, ssdlite
    from pytest_mlestimate.profiling.synthetic import make_batch

    spec = MODELS[model]
    net = (blocks_detector() if model == "tiny" else ssdlite()).to(device).train()
    images, targets = make_batch(spec["batch_size"], tuple(spec["image_size"]), 5, 91, "boxes")
    images = [i.to(device) for i in images]
    targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
    optimizer = torch.optim.SGD(net.parameters(), lr=1e-4)
    width = 16 if model == "tiny" else 3
    probe_channels = 64
    probe = ExtraCompute(width, probe_channels).to(device)
    features = (
        torch.randn(spec["batch_size"], width, spec["image_size"][0] // 4, spec["image_size"][1] // 4, device=device)
        if model == "tiny"
        else torch.stack(images)
    ).requires_grad_(True)

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    def step() -> None:
        optimizer.zero_grad()
        sum(net(images, targets).values()).backward()
        optimizer.step()
        sync()

    def extra() -> None:
        probe(features).sum().backward()
        sync()

    def timed(work: Any, count: int) -> float:
        for _ in range(3):
            work()
        start = time.perf_counter()
        for _ in range(count):
            work()
        return (time.perf_counter() - start) / count

    base, cost = timed(step, 10), timed(extra, 10)
    per_channel = cost / probe_channels
    print(f"calibration: base step {base * 1000:.1f} ms, extra stack {per_channel * 1000:.3f} ms per channel")
    return {size: max(1, round(size * base / per_channel)) if size else 0 for size in sizes}


def plugin_arguments() -> tuple[str, ...]:
    """``-p`` for a checkout on the import path whose package is not installed (no pytest11 entry point)."""
    from importlib.metadata import entry_points

    installed = any(e.value.startswith("pytest_mlestimate") for e in entry_points(group="pytest11"))
    return () if installed else ("-p", "pytest_mlestimate.plugin")


def pytest_run(folder: Path, channels: int, *args: str) -> tuple[dict[str, Any], float]:
    report = folder / f"report-{os.getpid()}-{time.monotonic_ns()}.json"
    env = dict(os.environ, POWER_CHANNELS=str(channels), PYTHONPATH=os.pathsep.join([str(REPO), str(folder)]))
    started = time.perf_counter()
    subprocess.run(
        [
            *(sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *plugin_arguments()),
            *("--mlestimate", "scenarios.yaml"),
            *("--mlestimate-no-cache", "--mlestimate-json", str(report), *args),
        ],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    document = json.loads(report.read_text())
    report.unlink()
    return document["scenarios"][0], elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(MODELS), default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tries", type=int, default=20)
    parser.add_argument("--sizes", default="0,5,10,20,40", help="slowdowns in percent; 0 is the unchanged model")
    parser.add_argument("--baseline-runs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    options = parser.parse_args()
    sizes = [float(s) / 100 for s in options.sizes.split(",")]
    sys.path.insert(0, str(REPO))
    channels = calibrate(options.model, options.device, sizes)
    print("load before:", os.getloadavg())

    with tempfile.TemporaryDirectory(prefix="regression-power-") as tmp:
        folder = Path(tmp)
        (folder / "pyproject.toml").write_text("")
        scenario = {"name": options.model, **MODELS[options.model], "device": options.device}
        (folder / "scenarios.yaml").write_text(yaml.safe_dump({"scenarios": [scenario]}))
        saved, cost = pytest_run(
            folder,
            0,
            "--mlestimate-save-baseline",
            "baseline",
            "--mlestimate-baseline-runs",
            str(options.baseline_runs),
        )
        if saved["outcome"] != "passed":
            print("saving the baseline failed:", saved.get("message"))
            return 1
        stored = json.loads(Path(saved["baseline"]["path"]).read_text())
        base_total = statistics.fmean(r["metrics"]["total_training_time"] for r in stored["runs"])
        base_spread = statistics.pstdev(r["metrics"]["total_training_time"] for r in stored["runs"]) / base_total
        print(
            f"baseline: {options.baseline_runs} runs in {cost:.0f} s, Total Training Time {base_total:.2f} s, "
            f"between-run spread {base_spread:.1%}"
        )
        timings = sum(1 for name in ("forward_pass", "backward_pass", "total_training_time")
                      if stored["runs"][0]["metrics"].get(name))  # fmt: skip
        floor = DRIFT_FLOOR["cuda" if options.device.startswith("cuda") else "cpu"]
        for new_runs in (1, 2):
            smallest = smallest_failing_slowdown(
                METRIC["total_training_time"].tolerance, floor, max(base_spread, 1e-6), options.baseline_runs,
                new_runs, FAMILY_ALPHA / max(timings, 1),
            )  # fmt: skip
            print(f"computed: with {new_runs} new run(s) the smallest failing slowdown is {smallest:+.1%} "
                  f"(drift margin {floor:.0%}, spread {base_spread:.1%}, {timings} timings share 5 %)")  # fmt: skip

        results: dict[float, list[dict[str, Any]]] = {size: [] for size in sizes}
        rng = random.Random(options.seed)
        for round_number in range(options.tries):
            order = list(sizes)
            rng.shuffle(order)
            for size in order:
                entry, elapsed = pytest_run(folder, channels[size], "--mlestimate-compare", "baseline")
                failed = sorted(b["metric"] for b in entry["budgets"] if b["passed"] is False)
                totals = [r["metrics"]["total_training_time"] for r in entry["runs"]]
                results[size].append(
                    {
                        "outcome": entry["outcome"],
                        "failed": failed,
                        "runs": len(entry["runs"]),
                        "seconds": elapsed,
                        "total": totals[0],
                        "contended": any(r["contended"] for r in entry["runs"]),
                    }
                )
            print(f"round {round_number + 1}/{options.tries} done, load {os.getloadavg()[0]:.2f}", flush=True)

    print(
        f"\nmodel {options.model}, device {options.device}, baseline {options.baseline_runs} runs, "
        f"{options.tries} tries per size, load after {os.getloadavg()}"
    )
    print(f"{'size':>6}  {'measured':>9}  {'failed':>7}  {'runs/verdict':>12}  {'s/verdict':>9}  contended  metrics")
    for size in sizes:
        tries = results[size]
        failed = [t for t in tries if t["outcome"] == "failed"]
        measured = statistics.fmean(t["total"] for t in tries) / base_total - 1
        metrics: dict[str, int] = {}
        for t in failed:
            for name in t["failed"]:
                metrics[name] = metrics.get(name, 0) + 1
        print(
            f"{size:>+6.0%}  {measured:>+9.1%}  {len(failed):>3}/{len(tries):<3}  "
            f"{statistics.fmean(t['runs'] for t in tries):>12.2f}  "
            f"{statistics.fmean(t['seconds'] for t in tries):>9.1f}"
            f"  {sum(t['contended'] for t in tries):>9}  {metrics}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
