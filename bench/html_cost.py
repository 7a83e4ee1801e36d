"""How long the HTML report takes to draw: per scenario, and for a page of many.

One real run of the tiny detector (``pytest --mlestimate`` in a temporary folder, its JSON report: figures,
samples, the breakdown and the memory timeline, as a user's report holds them) is repeated under new names into
pages of 1, 10, 50 and ``--scenarios`` scenarios; each page is drawn ``--rounds`` times with ``render_html``.

    .venv/bin/python bench/html_cost.py [--scenarios 300] [--rounds 2]

Prints seconds per page and per scenario, the page's size, and the load average before and after.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pytest_mlestimate.reports.html import render_html

SCENARIO = """scenarios:
  - name: tiny
    task_type: detection
    architecture: pytest_mlestimate.tiny:tiny_detector
    device: cpu
    dataset_size: 1000
    batch_size: 4
    image_size: [128, 128]
    budgets:
      peak_ram_memory: 4 GiB
"""


def measured_report(folder: Path) -> dict:
    (folder / "scenarios.yaml").write_text(SCENARIO)
    env = {**os.environ, "MLESTIMATE_CACHE_DIR": str(folder / "cache")}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--mlestimate", "--mlestimate-json"]
    subprocess.run([*command, "report.json", "scenarios.yaml"], cwd=folder, env=env, check=True, capture_output=True)
    return json.loads((folder / "report.json").read_text())


def page_of(document: dict, count: int) -> dict:
    record = document["scenarios"][0]
    scenarios = []
    for index in range(count):
        copied = copy.deepcopy(record)
        copied["name"] = f"tiny-{index:04d}"
        scenarios.append(copied)
    return {**document, "scenarios": scenarios}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        document = measured_report(Path(folder))
    print(f"load before: {os.getloadavg()[0]:.2f}")
    for count in sorted({1, 10, 50, args.scenarios}):
        page = page_of(document, count)
        times = []
        for _ in range(args.rounds):
            started = time.perf_counter()
            html = render_html(page)
            times.append(time.perf_counter() - started)
        seconds = statistics.median(times)
        print(
            f"{count:>5} scenario(s): {seconds:7.2f} s a page, {seconds / count * 1000:7.1f} ms a scenario, "
            f"{len(html) / 2**20:6.2f} MiB",
            flush=True,
        )
    print(f"load after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
