"""What the installed pytest plugin costs a pytest run that does not use it.

Prints (1) the heavy modules importing the plugin loads (expected: none), (2) the plugin's own import
time from ``python -X importtime``, and (3) the median wall time of a bare pytest run in an empty
folder with the plugin and without it (``-p no:mlestimate``), interleaved, and their difference.

    .venv/bin/python bench/plugin_import.py [--runs 20]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

HEAVY = ("torch", "torchvision", "pynvml", "fastapi", "pydantic")


def heavy_modules() -> list[str]:
    code = f"import sys, pytest_mlestimate.plugin; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return [m for m in out.strip().split(",") if m]


def own_import_microseconds() -> int:
    """Cumulative import time of pytest_mlestimate.plugin with pytest already imported."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import pytest; import pytest_mlestimate.plugin"],
        capture_output=True,
        text=True,
        check=True,
    )
    total = 0
    for line in done.stderr.splitlines():
        parts = [p.strip() for p in line.removeprefix("import time:").split("|")]
        if len(parts) == 3 and parts[2].lstrip() in ("pytest_mlestimate.plugin", "pytest_mlestimate"):
            total += int(parts[1])
    return total


def run_seconds(folder: str, extra: list[str]) -> tuple[float, float]:
    """(wall, CPU) seconds of one pytest run; CPU time (user + system) moves less with other load."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *extra],
        cwd=folder,
        capture_output=True,
        check=False,
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    print(f"heavy modules loaded by importing the plugin: {heavy_modules() or 'none'}")
    print(f"plugin import time (python -X importtime, cumulative): {own_import_microseconds() / 1000:.1f} ms")
    with_plugin: list[tuple[float, float]] = []
    without: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory() as folder:
        env_note = os.environ.get("PYTEST_ADDOPTS")
        if env_note:
            print(f"note: PYTEST_ADDOPTS={env_note}")
        for index in range(args.runs):  # alternate which goes first: the second of a pair runs warmer
            pair = [(with_plugin, []), (without, ["-p", "no:mlestimate"])]
            for runs, extra in pair if index % 2 == 0 else reversed(pair):
                runs.append(run_seconds(folder, extra))
    print(f"bare pytest, empty folder, median of {args.runs} interleaved runs:   wall       CPU")
    medians = [[statistics.median(r[i] for r in runs) * 1000 for i in (0, 1)] for runs in (with_plugin, without)]
    print(f"  with the plugin    {medians[0][0]:7.1f} ms  {medians[0][1]:7.1f} ms")
    print(f"  without the plugin {medians[1][0]:7.1f} ms  {medians[1][1]:7.1f} ms")
    print(f"  difference         {medians[0][0] - medians[1][0]:+7.1f} ms  {medians[0][1] - medians[1][1]:+7.1f} ms")


if __name__ == "__main__":
    main()
