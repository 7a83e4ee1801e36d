"""How long the HTML report takes to draw: per scenario, and for a page of many.

One real run of the tiny detector (``pytest --mlestimate`` in a temporary folder, its JSON report: figures,
samples, the breakdown and the memory timeline, as a user's report holds them) is repeated under new names into
pages of 1, 10, 50 and ``--scenarios`` scenarios; each page is drawn ``--rounds`` times with ``render_html``.
A page draws the charts of at most ``MOST_CHARTED`` scenarios (the failed ones first); ``--every-chart`` draws
them all, to measure the charts' own cost, and ``--failed`` makes every copy a failed scenario (the thinning
cannot favour any).

    .venv/bin/python bench/html_cost.py [--scenarios 300] [--rounds 2] [--every-chart] [--failed]

Prints seconds per page and per scenario, the scenarios charted, the page's size, and the 1-minute load
average before each page and at the end (other work on the machine slows the figures).
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

from pytest_mlestimate.reports.html import MOST_CHARTED, render_html

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


def page_of(document: dict, count: int, failed: bool) -> dict:
    record = document["scenarios"][0]
    scenarios = []
    for index in range(count):
        copied = copy.deepcopy(record)
        copied["name"] = f"tiny-{index:04d}"
        if failed:
            copied.update(outcome="failed", message=f"scenario 'tiny-{index:04d}': peak_ram_memory broke its limit")
        scenarios.append(copied)
    return {**document, "scenarios": scenarios}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--every-chart", action="store_true", help="draw every scenario's charts")
    parser.add_argument("--failed", action="store_true", help="every scenario failed")
    args = parser.parse_args()
    most = None if args.every_chart else MOST_CHARTED
    with tempfile.TemporaryDirectory() as folder:
        document = measured_report(Path(folder))
    print(f"charts for at most {most or 'every'} scenarios{', all failed' if args.failed else ''}")
    for count in sorted({1, 10, 50, args.scenarios}):
        page = page_of(document, count, args.failed)
        load = os.getloadavg()[0]
        times = []
        for _ in range(args.rounds):
            started = time.perf_counter()
            html = render_html(page, most_charted=most)
            times.append(time.perf_counter() - started)
        seconds = statistics.median(times)
        charted = count if most is None else min(count, most)
        print(
            f"{count:>5} scenario(s), {charted:>3} charted: {seconds:7.2f} s a page, "
            f"{seconds / count * 1000:7.1f} ms a scenario, {len(html) / 2**20:6.2f} MiB (load {load:.2f})",
            flush=True,
        )
    print(f"load after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
