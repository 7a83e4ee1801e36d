"""Capacity requests flooding a real ``mlestimate serve``: threads stay bounded, cached estimates stay fast,
and every request that does not fit is refused with 503 and Retry-After; no job ends in a 500.

    .venv/bin/python bench/capacity_load.py [--sync 8] [--async-requests 1500] [--scenarios 10]

The server (a child process, fresh cache) serves a model whose every forward pass sleeps 0.3 s, so searches
hold their threads for long. First one estimate of the tiny detector is profiled (then cached); then ``--sync``
synchronous and ``--async-requests`` asynchronous capacity requests are sent at once, spread over
``--scenarios`` distinct questions, while the cached estimate is asked every 0.1 s and the server's thread
count is read every 0.1 s. At the end every accepted job is polled until it ends.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.service_load import server

ROOT = Path(__file__).resolve().parents[1]
TINY = "pytest_mlestimate.tiny:tiny_detector"
SLOW = "tests.slow_model:slow_detector"
BASE = {
    "task_type": "detection",
    "dataset_size": 64,
    "batch_size": 2,
    "image_size": [64, 64],
    "device": "cpu",
    "warmup_iterations": 1,
    "measure_iterations": 2,
}


def threads_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return 0


def server_pid(port: int) -> int:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                words = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"serve" in words and str(port).encode() in words:
                return int(entry.name)
    raise SystemExit(f"no server process on port {port}")


def probe(base: str, body: dict[str, Any], pid: int, stop: Any, found: Any) -> None:
    """In a process of its own, so that the flood's client does not delay it: a cached estimate every 0.1 s,
    and the server's thread count, until ``stop``."""
    probes = []
    with httpx.Client(base_url=base, timeout=600) as client:
        while not stop.is_set():
            count = threads_of(pid)
            started = time.perf_counter()
            answer = client.post("/api/v1/estimate-resource", json=body)
            assert answer.status_code == 200, answer.text
            probes.append((time.monotonic(), time.perf_counter() - started, count))
            time.sleep(0.1)
    found.put(probes)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    options = [
        "--device", "cpu", "--allow-factory", TINY, "--allow-factory", SLOW, "--queue-size", str(args.queue_size),
        "--capacity-searches", str(args.searches), "--max-batch-size", "8", "--profile-timeout", "120",
    ]  # fmt: skip
    if args.profile_cpus:
        options += ["--profile-cpus", args.profile_cpus]
    os.environ["PYTHONPATH"] = str(ROOT)  # the slow model's module, for the server and its children
    with tempfile.TemporaryDirectory() as folder, server(Path(folder) / "cache", options) as port:
        pid = server_pid(port)
        base = f"http://127.0.0.1:{port}"
        limits = httpx.Limits(max_connections=args.connections, max_keepalive_connections=args.connections)
        async with httpx.AsyncClient(base_url=base, timeout=600, limits=limits) as client:
            tiny = {**BASE, "architecture": TINY}
            first = await client.post("/api/v1/estimate-resource", json=tiny)
            assert first.status_code == 200, first.text
            quiet = []
            for _ in range(20):
                started = time.perf_counter()
                assert (await client.post("/api/v1/estimate-resource", json=tiny)).status_code == 200
                quiet.append(time.perf_counter() - started)
            threads_idle = threads_of(pid)

            def question(n: int) -> dict[str, Any]:
                scenario = {**BASE, "architecture": SLOW, "dataset_size": 1000 + n % args.scenarios}
                return {"scenario": scenario, "capacity": {"limit": "64 GiB"}}

            stop = multiprocessing.Event()
            found: multiprocessing.Queue[list[tuple[float, float, int]]] = multiprocessing.Queue()
            prober = multiprocessing.Process(target=probe, args=(base, tiny, pid, stop, found))
            prober.start()
            started = time.monotonic()
            capacity = "/api/v1/estimate-capacity"
            sync = [asyncio.create_task(client.post(capacity, json=question(n))) for n in range(args.sync)]
            flood = await asyncio.gather(
                *(client.post(capacity, params={"async": "true"}, json=question(n)) for n in range(args.async_requests))
            )
            flood_end = time.monotonic()
            flooded = flood_end - started
            jobs = [a.headers["Location"] for a in flood if a.status_code == 202]
            outcomes: Counter[Any] = Counter()
            for url in jobs:
                while True:
                    polled = await client.get(url)
                    job = polled.json()
                    if polled.status_code != 200:
                        raise SystemExit(f"{url}: {polled.status_code} {job}")
                    if job["status"] in ("done", "failed"):
                        outcomes[job["http_status"]] += 1
                        break
                    await asyncio.sleep(0.5)
            sync_answers = await asyncio.gather(*sync)
            stop.set()
            probes = found.get(timeout=60)
            prober.join(10)
    latencies = [latency for _, latency, _ in probes]
    during_flood = [latency for at, latency, _ in probes if at < flood_end]
    after_flood = [latency for at, latency, _ in probes if at >= flood_end]
    threads = [count for _, _, count in probes]
    refused = [a for a in [*flood, *sync_answers] if a.status_code != 200 and a.status_code != 202]
    return {
        "server": f"--queue-size {args.queue_size} --capacity-searches {args.searches}",
        "flood connections": args.connections,
        "profile cpus": args.profile_cpus,
        "async answers": dict(Counter(a.status_code for a in flood)),
        "sync answers": dict(Counter(a.status_code for a in sync_answers)),
        "refused with Retry-After": f"{sum('retry-after' in a.headers for a in refused)} of {len(refused)}",
        "jobs by http_status": dict(outcomes),
        "seconds to send the flood": round(flooded, 1),
        "seconds in all": round(time.monotonic() - started, 1),
        "server threads idle / most during": f"{threads_idle} / {max(threads)}",
        "cached estimate quiet p50 ms": round(statistics.median(quiet) * 1000, 1),
        "cached estimate during p50 / p95 / max ms": [
            round(statistics.median(latencies) * 1000, 1),
            round(statistics.quantiles(latencies, n=20)[-1] * 1000, 1),
            round(max(latencies) * 1000, 1),
        ],
        "cached estimates during": len(latencies),
        "while the flood is sent: n, p50, max ms": [
            len(during_flood),
            round(statistics.median(during_flood) * 1000, 1),
            round(max(during_flood) * 1000, 1),
        ],
        "after, while the searches run: n, p50, max ms": [
            len(after_flood),
            round(statistics.median(after_flood) * 1000, 1),
            round(max(after_flood) * 1000, 1),
        ],
        "load average after": os.getloadavg(),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sync", type=int, default=8)
    parser.add_argument("--async-requests", type=int, default=1500)
    parser.add_argument("--scenarios", type=int, default=10)
    parser.add_argument("--queue-size", type=int, default=4)
    parser.add_argument("--searches", type=int, default=2)
    parser.add_argument("--profile-cpus", help="the server's --profile-cpus (default: none kept apart)")
    parser.add_argument("--connections", type=int, default=64, help="the flood's connections (default 64)")
    print("load average before:", os.getloadavg())
    print(json.dumps(asyncio.run(main(parser.parse_args())), indent=2))
