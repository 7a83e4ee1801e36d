"""How long a profiling child outlives a caller that is killed mid-profile (kill -9 or SIGTERM).

Starts ``pytest --mlestimate`` (or a plain Python caller of ``estimate``) on a scenario whose model steps slowly,
waits until its profiling child is measuring, kills the caller, and times until the child (and the warm parent
it was forked from, if any) is gone. Also lists
temporary directories the run left behind.

    python bench/orphans.py                # pytest, kill -9, 5 tries
    python bench/orphans.py --caller python --signal TERM -n 3

Bar: no profiling process survives its caller by more than a few seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pytest_mlestimate.profiling.isolation import CHILD_MODULES  # noqa: E402
from tests.slow_model import SLOW  # noqa: E402


def caller_command(kind: str, work: Path) -> list[str]:
    if kind == "python":
        return [sys.executable, "-c", f"from pytest_mlestimate import estimate; estimate({SLOW!r}, cache=False)"]
    fields = "".join(f"    {key}: {json.dumps(value)}\n" for key, value in SLOW.items())
    (work / "scenarios.yaml").write_text(f"scenarios:\n  - name: slow\n{fields}")
    return [sys.executable, "-m", "pytest", "--mlestimate", "scenarios.yaml", "-q", "-p", "no:cacheprovider"]


def is_worker(process: psutil.Process) -> bool:
    with contextlib.suppress(psutil.NoSuchProcess):
        return any(entry in " ".join(process.cmdline()) for entry in CHILD_MODULES)
    return False


def measuring(process: psutil.Process) -> bool:
    """A fresh worker, or a child forked from the warm parent (whose command line it shares)."""
    with contextlib.suppress(psutil.NoSuchProcess, AttributeError):  # AttributeError: its parent is gone
        return "--warm" not in process.cmdline() or "--warm" in process.parent().cmdline()
    return False


def alive(process: psutil.Process) -> bool:
    with contextlib.suppress(psutil.NoSuchProcess):
        return process.status() != psutil.STATUS_ZOMBIE
    return False


def one_try(kind: str, number: int) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        env = os.environ | {"PYTHONPATH": str(ROOT), "MLESTIMATE_CACHE_DIR": tmp, "MLESTIMATE_LOCK_DIR": tmp}
        before = set(Path(tempfile.gettempdir()).glob("mlestimate-*"))
        caller = subprocess.Popen(caller_command(kind, work), cwd=work, env=env, stdout=subprocess.DEVNULL)
        workers: list[psutil.Process] = []
        while not any(measuring(process) for process in workers):
            time.sleep(0.2)
            workers = [p for p in psutil.Process(caller.pid).children(recursive=True) if is_worker(p)]
        time.sleep(3)  # measuring by now
        os.kill(caller.pid, number)
        caller.wait()
        killed = time.monotonic()
        while any(alive(process) for process in workers):  # the profiling child, and the warm parent if any
            if time.monotonic() - killed > 60:
                for process in workers:
                    with contextlib.suppress(psutil.NoSuchProcess):
                        process.kill()
                return float("inf"), 0
            time.sleep(0.05)
        survived = time.monotonic() - killed
        left = len(set(Path(tempfile.gettempdir()).glob("mlestimate-*")) - before)
    return survived, left


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--caller", choices=["pytest", "python"], default="pytest")
    parser.add_argument("--signal", choices=["KILL", "TERM"], default="KILL")
    parser.add_argument("-n", type=int, default=5)
    args = parser.parse_args()
    number = signal.Signals[f"SIG{args.signal}"]
    print(f"caller {args.caller}, SIG{args.signal}, load average {os.getloadavg()[0]:.2f}")
    worst = 0.0
    for attempt in range(args.n):
        survived, left = one_try(args.caller, number)
        worst = max(worst, survived)
        print(
            f"try {attempt + 1}: the profiling processes survived their caller by {survived:.2f} s; temporary dirs "
            f"left: {left}"
        )
    print(f"worst: {worst:.2f} s")


if __name__ == "__main__":
    main()
