"""What writing the JSON and JUnit reports costs a run of many cheap scenarios.

Generates one scenario file of N scenarios that cost nothing to "measure" (each is invalid: a negative
batch size), then runs ``pytest --mlestimate`` over it in subprocesses, alternately without reports and
with ``--mlestimate-json`` and ``--mlestimate-junitxml``, and prints each run's wall time, the medians
and their ratio. Reports rewritten in full after every scenario made this quadratic (1,000 scenarios:
1.6 s without reports, 112 s with them); the bar is a ratio under 1.5 at 2,000 scenarios.

    .venv/bin/python bench/report_cost.py [--scenarios 2000] [--rounds 3]
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
from pathlib import Path

ARMS = ("without reports", "with JSON + JUnit")


def write_scenarios(folder: Path, count: int) -> Path:
    lines = [
        "defaults: {task_type: detection, architecture: 'pytest_mlestimate.tiny:tiny_detector', dataset_size: 10,"
        " image_size: [64, 64], device: cpu, batch_size: -1}",
        "scenarios:",
        *(f"  - {{name: scenario-{index:05d}}}" for index in range(count)),
    ]
    path = folder / "many.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def run_once(folder: Path, with_reports: bool) -> float:
    extra = ["--mlestimate-json", "report.json", "--mlestimate-junitxml", "junit.xml"] if with_reports else []
    for name in ("report.json", "junit.xml"):
        (folder / name).unlink(missing_ok=True)
    env = {**os.environ, "MLESTIMATE_CACHE_DIR": str(folder / "cache")}
    env.pop("GITHUB_STEP_SUMMARY", None)
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--mlestimate", "many.yaml", *extra],
        cwd=folder,
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    wall = time.perf_counter() - start
    if done.returncode != 1:  # every scenario is invalid: the run fails, nothing else may go wrong
        raise SystemExit(f"unexpected exit code {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    if with_reports:
        scenarios = json.loads((folder / "report.json").read_text())["scenarios"]
        if len(scenarios) != count_of(folder):
            raise SystemExit(f"the JSON report holds {len(scenarios)} scenarios")
    return wall


def count_of(folder: Path) -> int:
    return sum(1 for line in (folder / "many.yaml").read_text().splitlines() if line.startswith("  - "))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenarios", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "pytest.ini").write_text("[pytest]\n")
        write_scenarios(folder, args.scenarios)
        times: dict[str, list[float]] = {arm: [] for arm in ARMS}
        print(f"{args.scenarios} invalid scenarios, {args.rounds} rounds, load average {os.getloadavg()}")
        for round_ in range(args.rounds):
            for arm in ARMS if round_ % 2 == 0 else reversed(ARMS):
                wall = run_once(folder, arm == ARMS[1])
                times[arm].append(wall)
                print(f"round {round_ + 1}: {arm}: {wall:.2f} s", flush=True)
    medians = {arm: statistics.median(values) for arm, values in times.items()}
    for arm in ARMS:
        print(f"median {arm}: {medians[arm]:.2f} s ({', '.join(f'{t:.2f}' for t in times[arm])})")
    print(f"ratio: {medians[ARMS[1]] / medians[ARMS[0]]:.2f} (bar: under 1.5)")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
