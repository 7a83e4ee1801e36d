"""How often ``--mlestimate-against`` catches a slowdown, and how often it fails an unchanged model.

A throwaway git repository holds a model package in two commits: the base, and a candidate whose forward pass
does more of the same work (``--arms``: +0, +5, +10, +20 % more time a step, as matrix products in the part that
takes most of a step, ``WORK_SHARE``). Each verdict is a fresh ``pytest --mlestimate --mlestimate-against HEAD~1``
process; the arms are interleaved (one verdict of each in turn), so that the machine's state falls on all of them
alike. The scenarios keep the default measurement (steps until the mean is sharp). Profiles measured one after the
other differed by 10-20 % between fresh processes here; measured in turns (what the verdicts do), by about 2 %.

    .venv/bin/python bench/against_power.py [--verdicts 20] [--arms 0,5,10,20] [--torchvision]

Prints, per arm: verdicts regressed / no regression / inconclusive, the median profiles per scenario, the
median measured change of total_training_time and the median change the verdicts said they could catch, and the
load average before and after. ``--torchvision`` adds an arm of SSDlite (torchvision's builder, wrapped by the
package) with +10 % work in a head.
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
from collections import Counter
from pathlib import Path
from typing import Any

NET = """import torch
from pytest_mlestimate.tiny import TinyDetector

from mymodels.work import ROUNDS


class Worked(TinyDetector):
    \"\"\"The tiny detector, plus ROUNDS products of a 192x192 matrix in its forward pass.\"\"\"

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(192, 192) / 192**0.5)

    def forward(self, images, targets=None):
        x = torch.ones(64, 192)
        for _ in range(ROUNDS):
            x = torch.tanh(x @ self.weight)
        out = super().forward(images, targets)
        if isinstance(out, dict):
            out = {**out, "work": x.mean() * 0.0}
        return out


def build():
    return Worked()


def ssdlite():
    import torchvision

    model = torchvision.models.detection.ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None)
    head = model.head.classification_head

    class Heavier(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = head
            self.weight = torch.nn.Parameter(torch.randn(256, 256) / 16)

        def forward(self, features):
            x = torch.ones(128, 256)
            for _ in range(ROUNDS):
                x = torch.tanh(x @ self.weight)
            out = self.inner(features)
            return out + x.mean() * 0.0

    model.head.classification_head = Heavier()
    return model
"""
SCENARIOS = """scenarios:
  - name: worked
    task_type: detection
    architecture: "mymodels.net:build"
    dataset_size: 1000
    batch_size: 2
    image_size: [64, 64]
    device: cpu
    breakdown_depth: 0
"""
SSDLITE = """scenarios:
  - name: ssdlite
    task_type: detection
    architecture: "mymodels.net:ssdlite"
    dataset_size: 1000
    batch_size: 2
    image_size: [320, 320]
    device: cpu
    breakdown_depth: 0
"""
BASE_ROUNDS = {"worked": 150, "ssdlite": 100}
WORK_SHARE = {"worked": 0.76, "ssdlite": 0.5}
"""Share of a step's time the extra products take at the base's rounds: 10 % more rounds of the worked model
measured +7.6 % total training time here, so an arm of +10 % adds 10 / 0.76 % rounds. SSDlite's: a guess the
printed measured change corrects."""


def rounds_for(scenario: str, percent: float) -> int:
    return round(BASE_ROUNDS[scenario] * (1 + percent / 100 / WORK_SHARE[scenario]))


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


def make_repo(folder: Path, scenario: str, base: int, rounds: int) -> Path:
    repo = folder / f"{scenario}-{rounds}"
    (repo / "mymodels").mkdir(parents=True)
    (repo / "scenarios").mkdir()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.email", "bench@example.com")
    git(repo, "config", "user.name", "bench")
    (repo / "mymodels" / "__init__.py").write_text("")
    (repo / "mymodels" / "net.py").write_text(NET)
    (repo / "mymodels" / "work.py").write_text(f"ROUNDS = {base}\n")
    (repo / "scenarios" / "models.yaml").write_text(SSDLITE if scenario == "ssdlite" else SCENARIOS)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "base")
    (repo / "mymodels" / "work.py").write_text(f"ROUNDS = {rounds}\n")
    (repo / "NOTES").write_text("the candidate\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "candidate")
    return repo


def one_verdict(repo: Path, cache: Path) -> dict[str, Any]:
    path = os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")]))  # a frozen copy stays first
    env = os.environ | {"PYTHONPATH": path, "MLESTIMATE_CACHE_DIR": str(cache)}
    env.pop("GITHUB_STEP_SUMMARY", None)
    report = repo / "report.json"
    report.unlink(missing_ok=True)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--mlestimate", "scenarios",
         "--mlestimate-against", "HEAD~1", "--mlestimate-json", str(report)],
        cwd=repo, env=env, capture_output=True, text=True, timeout=3600,
    )  # fmt: skip
    if not report.exists():
        raise SystemExit(f"no report from {repo}:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    (record,) = json.loads(report.read_text())["scenarios"]
    checks = {c["metric"]: c for c in record["budgets"] if c["kind"] == "against"}
    total = checks.get("total_training_time") or {}
    decisions = [c["decision"] for c in checks.values() if c.get("detectable") is not None]
    if "regressed" in decisions:
        outcome = "regressed"
    elif decisions and all(d == "no regression" for d in decisions):
        outcome = "no regression"
    else:
        outcome = "inconclusive"
    against = record.get("against") or {}
    return {
        "outcome": outcome,
        "regressed": {
            m: f"{c['value'] / c['baseline'] - 1:+.1%}" for m, c in checks.items() if c["decision"] == "regressed"
        },
        "pairs": against.get("pairs", 0),
        "contended_pairs": against.get("contended_pairs", 0),
        "change": (total["value"] / total["baseline"] - 1) if total.get("baseline") else None,
        "detectable": total.get("detectable"),
        "seconds": time.monotonic() - started,
        "problem": against.get("problem") or (None if checks else (record.get("message") or "no verdict")),
    }


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:+.1%}"


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    outcomes = Counter(row["outcome"] for row in rows)
    changes = [row["change"] for row in rows if row["change"] is not None]
    catches = [row["detectable"] for row in rows if row["detectable"] is not None]
    return {
        "verdicts": len(rows),
        "regressed": outcomes["regressed"],
        "no regression": outcomes["no regression"],
        "inconclusive": outcomes["inconclusive"],
        "median profiles per scenario": statistics.median(
            1 + 2 * (row["pairs"] + row["contended_pairs"]) for row in rows
        ),
        "contended pairs": sum(row["contended_pairs"] for row in rows),
        "median measured change of total_training_time": f"{statistics.median(changes):+.1%}" if changes else None,
        "median stated detectable change": f"{statistics.median(catches):+.1%}" if catches else None,
        "median seconds per verdict": round(statistics.median(row["seconds"] for row in rows), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--verdicts", type=int, default=20, help="verdicts per arm (default 20)")
    parser.add_argument("--arms", default="0,5,10,20", help="percent more work in the candidate (default 0,5,10,20)")
    parser.add_argument("--torchvision", action="store_true", help="also an SSDlite arm with +10 %% work")
    parser.add_argument("--torchvision-verdicts", type=int, default=5)
    parser.add_argument("--first", type=int, default=1, help="the number the first verdict is printed with")
    args = parser.parse_args()
    print("load average before:", os.getloadavg(), flush=True)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        arms = {
            f"+{p}%": make_repo(root, "worked", BASE_ROUNDS["worked"], rounds_for("worked", int(p)))
            for p in args.arms.split(",")
        }
        rows: dict[str, list[dict[str, Any]]] = {arm: [] for arm in arms}
        for n in range(args.verdicts):
            for arm, repo in arms.items():
                rows[arm].append(one_verdict(repo, root / "cache"))
                row = rows[arm][-1]
                print(f"verdict {args.first + n} {arm}: {row['outcome']}, pairs {row['pairs']}, "
                      f"change {_percent(row['change'])}, catches {_percent(row['detectable'])}, "
                      f"{row['seconds']:.0f} s", row["regressed"] or "", row["problem"] or "", flush=True)  # fmt: skip
        if args.torchvision:
            repo = make_repo(root, "ssdlite", BASE_ROUNDS["ssdlite"], rounds_for("ssdlite", 10))
            rows["ssdlite +10%"] = []
            for n in range(args.torchvision_verdicts):
                rows["ssdlite +10%"].append(one_verdict(repo, root / "cache"))
                print(f"verdict {n + 1} ssdlite +10%: {rows['ssdlite +10%'][-1]}", flush=True)
    print(json.dumps({arm: summary(found) for arm, found in rows.items()}, indent=2))
    print("load average after:", os.getloadavg())


if __name__ == "__main__":
    main()
