"""Load on a real ``mlestimate serve``: cached-estimate throughput and latency, and a new profile under load.

    python bench/service_load.py                      # throughput: cached requests for 10 s
    python bench/service_load.py --profile-under-load # also: a new profile alone, then the same under load

The server runs in a child process with a fresh cache directory (unless --cache-dir). The load client is a
minimal keep-alive HTTP/1.1 client on asyncio streams, cheap enough per request that, on a small machine,
it leaves the CPU to the server. Latency is measured from writing a request to reading its whole body.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SCENARIO = {
    "task_type": "detection",
    "architecture": "ssdlite320_mobilenet_v3_large",
    "parameters": 3440060,
    "dataset_size": 100000,
    "batch_size": 2,
    "image_size": [320, 320],
    "application_type": "training",
    "threading": False,
}
ENDPOINTS = ("estimate-resource", "estimate-training-time", "estimate-inference-time")
ALL_CPUS = os.sched_getaffinity(0)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def server(cache_dir: Path, extra: list[str]) -> Iterator[int]:
    port = free_port()
    env = os.environ | {"MLESTIMATE_CACHE_DIR": str(cache_dir)}
    command = [
        sys.executable,
        "-m",
        "pytest_mlestimate.commands.cli",
        "serve",
        "--port",
        str(port),
        "--no-access-log",
        *extra,
    ]
    # The server gets every CPU, whichever this client keeps to; it keeps its own serving off --profile-cpus.
    cache_dir.mkdir(parents=True, exist_ok=True)
    log = (cache_dir / "server.log").open("w")
    process = subprocess.Popen(command, env=env, stderr=log, preexec_fn=lambda: os.sched_setaffinity(0, ALL_CPUS))
    try:
        for _ in range(300):
            with contextlib.suppress(OSError):
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            time.sleep(0.1)
        else:
            raise SystemExit(f"the server did not come up: see {log.name}")
        yield port
    finally:
        process.terminate()
        process.wait(30)
        log.close()


def post(port: int, endpoint: str, body: dict[str, Any]) -> tuple[int, dict[str, Any], float]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v1/{endpoint}",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
    )
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=3600) as response:
            status, payload = response.status, json.load(response)
    except urllib.error.HTTPError as error:
        status, payload = error.code, json.load(error)
    return status, payload, time.perf_counter() - started


def raw_request(endpoint: str, body: dict[str, Any]) -> bytes:
    content = json.dumps(body).encode()
    head = (
        f"POST /api/v1/{endpoint} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(content)}\r\n\r\n"
    )
    return head.encode() + content


async def one_connection(
    port: int,
    requests: list[bytes],
    start: int,
    until: float,
    interval: float,
    offset: float,
    latencies: list[float],
    statuses: Counter[int],
) -> None:
    """Requests one after another on one connection; with ``interval`` > 0, one per interval at most,
    starting ``offset`` seconds late so that connections do not all send at the same instant."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    sent = start
    due = time.perf_counter() + offset - interval
    try:
        while time.perf_counter() < until:
            if interval:
                due += interval
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
            started = time.perf_counter()
            writer.write(requests[sent % len(requests)])
            sent += 1
            status = int((await reader.readline()).split()[1])
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            statuses[status] += 1
    except (ConnectionError, asyncio.IncompleteReadError):
        statuses[0] += 1
    finally:
        writer.close()


async def load(
    port: int, body: dict[str, Any], seconds: float, connections: int, distinct: int = 1, rate: float = 0.0
) -> dict[str, Any]:
    """``distinct`` > 1 varies dataset_size: the same profile, but no two bodies alike for that many requests.
    ``rate`` > 0 caps the requests per second over all connections; 0 sends as fast as answers come."""
    requests = [
        raw_request(endpoint, body | {"dataset_size": body["dataset_size"] + n})
        for n in range(distinct)
        for endpoint in ENDPOINTS
    ]
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    started = time.perf_counter()
    until = started + seconds
    interval = connections / rate if rate else 0.0
    spread = len(requests) // connections  # connections start apart, so that distinct bodies stay distinct
    await asyncio.gather(
        *(
            one_connection(port, requests, c * spread, until, interval, c * interval / connections, latencies, statuses)
            for c in range(connections)
        )
    )
    elapsed = time.perf_counter() - started
    ordered = sorted(latencies)
    return {
        "requests": len(latencies),
        "requests_per_s": len(latencies) / elapsed,
        "p50_ms": 1000 * ordered[len(ordered) // 2],
        "p99_ms": 1000 * ordered[int(len(ordered) * 0.99)],
        "max_ms": 1000 * ordered[-1],
        "mean_ms": 1000 * statistics.fmean(ordered),
        "statuses": dict(statuses),
    }


def figures(resource: dict[str, Any], training: dict[str, Any]) -> dict[str, Any]:
    return {
        "Total Training Time": training["Total Training Time"],
        "Peak RAM Memory": resource["Peak RAM Memory"],
        "forward_pass": resource["Batch Time"]["forward_pass"],
        "backward_pass": resource["Batch Time"]["backward_pass"],
        "step IQR": training["details"]["timings"]["step"]["iqr"],
    }


def measure_new(port: int, body: dict[str, Any]) -> dict[str, Any]:
    status, resource, seconds = post(port, "estimate-resource", body)
    if status != 200:
        raise SystemExit(f"profile failed: {status} {resource} (the server's log is kept in the cache directory)")
    _, training, _ = post(port, "estimate-training-time", body)
    return figures(resource, training) | {"request_seconds": seconds}


async def profile_under_load(
    port: int, new: dict[str, Any], connections: int, rate: float
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Measure ``new`` while cached requests keep coming, in 2 s windows, until the profile is done."""
    profiled = asyncio.get_running_loop().run_in_executor(None, measure_new, port, new)
    traffic: list[dict[str, Any]] = []
    while not profiled.done():
        traffic.append(await load(port, SCENARIO, 2.0, connections, rate=rate))
    return await profiled, traffic


def throughput(port: int, args: argparse.Namespace) -> None:
    status, _, first = post(port, "estimate-resource", SCENARIO)
    print(f"first request ({SCENARIO['architecture']}, batch {SCENARIO['batch_size']}): {status}, {first:.1f} s")
    timings = [post(port, endpoint, SCENARIO)[2] for endpoint in ENDPOINTS for _ in range(5)]
    print(f"cached, one at a time: median {1000 * statistics.median(timings):.1f} ms, max {1000 * max(timings):.1f} ms")
    asyncio.run(load(port, SCENARIO, 1.0, args.connections))  # warm the connections and the server
    result = asyncio.run(load(port, SCENARIO, args.seconds, args.connections, args.distinct, args.rate))
    print(f"cached load, {args.connections} connections, {args.distinct} distinct bodies: {json.dumps(result)}")


def rounds(root: Path, extra: list[str], args: argparse.Namespace) -> None:
    """Alternate a new profile measured alone and the same measured under load, each in a fresh cache."""
    new = SCENARIO | {"batch_size": args.new_batch_size}
    found: dict[str, list[dict[str, Any]]] = {"alone": [], "loaded": []}
    for index in range(args.rounds):
        for kind in ("alone", "loaded"):
            with server(root / f"{kind}-{index}", extra) as port:
                post(port, "estimate-resource", SCENARIO)  # the cached configuration the traffic asks for
                if kind == "alone":
                    figures_, traffic = measure_new(port, new), []
                else:
                    figures_, traffic = asyncio.run(profile_under_load(port, new, args.connections, args.rate))
            statuses: Counter[int] = Counter()
            for window in traffic:
                statuses.update(window["statuses"])
            seen = ""
            if traffic:
                requests = sum(w["requests"] for w in traffic)
                rate = requests / (2.0 * len(traffic))
                worst = max(w["p99_ms"] for w in traffic)
                seen = (
                    f"; traffic: {requests} requests, {rate:.0f}/s, statuses {dict(statuses)}, worst p99 {worst:.1f} ms"
                )
            print(f"round {index} {kind:6}: {json.dumps({k: round(v, 4) for k, v in figures_.items()})}{seen}")
            found[kind].append(figures_)
    for name in ("Total Training Time", "Peak RAM Memory", "forward_pass", "backward_pass"):
        alone = [f[name] for f in found["alone"]]
        loaded = [f[name] for f in found["loaded"]]
        spread = 100 * (max(alone) - min(alone)) / statistics.median(alone)
        change = 100 * (statistics.median(loaded) / statistics.median(alone) - 1)
        print(
            f"  {name}: alone median {statistics.median(alone):.4g} (spread {spread:.0f} %), "
            f"loaded median {statistics.median(loaded):.4g}: {change:+.1f} %"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rate", type=float, default=0.0, help="cap on requests/s (default: as fast as answered)")
    parser.add_argument("--cache-dir", type=Path)
    parser.add_argument(
        "--distinct",
        type=int,
        default=1,
        help="distinct request bodies (varying dataset_size): above the service's 1024 remembered answers, "
        "each request is computed from the remembered profile",
    )
    parser.add_argument(
        "--profile-under-load",
        action="store_true",
        help="instead of the throughput test: rounds of a new profile alone, then under load",
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--new-batch-size", type=int, default=4)
    parser.add_argument(
        "--profile-cpus",
        help="passed to the server (CPUs kept for profiling); this client then runs on the other CPUs",
    )
    args = parser.parse_args()
    extra = ["--profile-cpus", args.profile_cpus] if args.profile_cpus else []
    if args.profile_cpus:
        from pytest_mlestimate.service.settings import parse_cpus

        os.sched_setaffinity(0, ALL_CPUS - parse_cpus(args.profile_cpus))
    client = sorted(os.sched_getaffinity(0))
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; client on CPUs {client}")
    with tempfile.TemporaryDirectory(prefix="mlestimate-bench-") as tmp:
        root = args.cache_dir or Path(tmp)
        if args.profile_under_load:
            rounds(root, extra, args)
        else:
            with server(root / "load", extra) as port:
                throughput(port, args)
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
