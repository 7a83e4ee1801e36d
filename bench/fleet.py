"""The fleet on one machine: two ``mlestimate serve`` replicas sharing one PostgreSQL database and a Ray cluster of
a head and two worker nodes, measured against what the fleet promises.

    python bench/fleet.py            # every part below, printed
    python bench/fleet.py --skip-throughput

1. 40 concurrent requests over 5 configurations (tiny models), split between the replicas: all answered, and the
   profiles the fleet ran counted from the database (runs under a lease) and from the stored profiles (the node that
   measured each); a second wave of the same 40 runs none.
2. A worker node removed while it measures: every request waiting on it answered (after the retry) or refused with
   a clear error within the profile timeout; no lease left in the database past its expiry.
3. A replica killed while a job it accepted runs: the job polled to completion on the other replica.
4. Throughput of cached answers: two replicas with PostgreSQL beside one replica with sqlite, in the same run.

PostgreSQL comes from the machine's own binaries (``tests/postgres_server.py``), Ray from its own cluster utilities.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from service_load import load  # noqa: E402

from tests.fleet.ray_cluster import node_running, ray_cluster  # noqa: E402
from tests.postgres_server import start_server  # noqa: E402
from tests.service.real_server import Server, serving  # noqa: E402
from tests.slow_model import SLOW  # noqa: E402
from tests.tiny_scenario import TINY  # noqa: E402

ENDPOINT = "/api/v1/estimate-resource"
FACTORIES = ("--allow-factory", TINY["architecture"], "--allow-factory", SLOW["architecture"])
PROFILE_TIMEOUT = 240


def profile_runs(url: str) -> list[tuple[str, str | None, bool]]:
    with psycopg.connect(url) as raw:
        return raw.execute("SELECT key, outcome, took_over FROM mlestimate_profile_runs ORDER BY id").fetchall()


def nodes_of_profiles(url: str, key: str | None = None) -> Counter[str]:
    with psycopg.connect(url) as raw:
        rows = raw.execute("SELECT key, profile FROM mlestimate_profiles").fetchall()
    texts = [t for k, t in rows if key is None or k == key]
    return Counter(str(json.loads(t).get("measured_on"))[:12] for t in texts)


def expired_leases(url: str) -> int:
    with psycopg.connect(url) as raw:
        found = raw.execute("SELECT count(*) FROM mlestimate_leases WHERE expires < clock_timestamp()").fetchone()
    return int(found[0]) if found else 0


def wave(replicas: list[Server], bodies: list[dict[str, Any]], count: int) -> tuple[Counter[int], float, list[str]]:
    requests = [(replicas[n % len(replicas)].base, bodies[n % len(bodies)]) for n in range(count)]

    def ask(request: tuple[str, dict[str, Any]]) -> httpx.Response:
        return httpx.post(request[0] + ENDPOINT, json=request[1], timeout=PROFILE_TIMEOUT + 120)

    started = time.monotonic()
    with ThreadPoolExecutor(count) as pool:
        answers = list(pool.map(ask, requests))
    errors = [a.text[:200] for a in answers if a.status_code != 200]
    return Counter(a.status_code for a in answers), time.monotonic() - started, errors


@contextlib.contextmanager
def replicas(root: Path, url: str, address: str, names: tuple[str, ...] = ("a", "b")) -> Iterator[list[Server]]:
    with contextlib.ExitStack() as stack:
        servers = []
        for name in names:
            (root / name).mkdir(parents=True, exist_ok=True)
            options = ("--store", url, "--ray", address, "--device", "cpu", "--no-access-log", *FACTORIES)
            options += ("--profile-timeout", str(PROFILE_TIMEOUT), "--queue-size", "64")
            servers.append(stack.enter_context(serving(root / name, *options)))
        yield servers


def once_per_configuration(servers: list[Server], url: str) -> None:
    bodies = [TINY | {"batch_size": size, "measure_iterations": 4, "device": "cpu"} for size in range(1, 6)]
    statuses, seconds, errors = wave(servers, bodies, 40)
    runs = profile_runs(url)
    measured = [key for key, outcome, _ in runs if outcome == "done"]
    print(f"1. wave one: 40 requests over 5 configurations on 2 replicas: statuses {dict(statuses)} in {seconds:.1f} s")
    for error in errors[:3]:
        print(f"   error: {error}")
    print(
        f"   profiles run under a lease (database): {len(measured)} ({len(set(measured))} distinct keys); "
        f"all lease runs: {Counter(o for _, o, _ in runs)}"
    )
    print(f"   profiles stored, by the node that measured them: {dict(nodes_of_profiles(url))}")
    statuses, seconds, errors = wave(servers, bodies, 40)
    after = profile_runs(url)
    print(
        f"   wave two: statuses {dict(statuses)} in {seconds:.2f} s; profiles run: {len(after) - len(runs)} "
        f"({'none' if after == runs else 'SOME'})"
    )


def node_removed(servers: list[Server], url: str, cluster: Any) -> None:
    body = SLOW | {"measure_iterations": 10, "batch_size": 3}
    before = len(profile_runs(url))
    results: list[tuple[int, float, str]] = []

    def ask(base: str) -> None:
        started = time.monotonic()
        answer = httpx.post(base + ENDPOINT, json=body, timeout=PROFILE_TIMEOUT + 120)
        results.append((answer.status_code, time.monotonic() - started, answer.text[:160]))

    with ThreadPoolExecutor(8) as pool:
        for n in range(8):
            pool.submit(ask, servers[n % 2].base)
        deadline = time.monotonic() + 60
        while (busy := node_running(cluster)) is None and time.monotonic() < deadline:
            time.sleep(0.2)
        removed_at = time.monotonic()
        if busy is not None:
            time.sleep(2)
            cluster.remove_node(busy)
            cluster.add_node(num_cpus=1, object_store_memory=80 * 2**20)
    print(
        f"2. a worker node removed while measuring ({'found' if busy else 'NOT FOUND'}, "
        f"{time.monotonic() - removed_at:.1f} s to the last answer):"
    )
    slowest = max(t for _, t, _ in results)
    statuses = dict(Counter(s for s, _, _ in results))
    print(f"   8 waiting requests: statuses {statuses}, slowest {slowest:.1f} s (limit {PROFILE_TIMEOUT} s)")
    for status, _, text in results:
        if status != 200:
            print(f"   {status}: {text}")
    runs = profile_runs(url)[before:]
    print(f"   lease runs for it: {[o for _, o, _ in runs]}; leases past their expiry now: {expired_leases(url)}")
    if busy is not None:
        print(
            f"   removed node {busy.node_id[:12]}; the profile was measured on "
            f"{nodes_of_profiles(url, runs[-1][0]) if runs else 'nothing'}"
        )


def replica_killed(root: Path, url: str, address: str) -> None:
    with replicas(root / "kill", url, address) as (doomed, survivor):
        body = SLOW | {"measure_iterations": 8, "batch_size": 4}
        before = len(profile_runs(url))
        accepted = httpx.post(doomed.base + ENDPOINT + "?async=true", json=body, timeout=60)
        job = accepted.json()["url"]
        deadline = time.monotonic() + 60
        while len(profile_runs(url)) == before and time.monotonic() < deadline:
            time.sleep(0.2)
        doomed.process.kill()
        killed = time.monotonic()
        states: list[str] = []
        polled: dict[str, Any] = {}
        while time.monotonic() < killed + PROFILE_TIMEOUT:
            answer = httpx.get(survivor.base + job, timeout=60)
            polled = answer.json() if answer.status_code == 200 else {"status": f"HTTP {answer.status_code}"}
            if not states or states[-1] != polled["status"]:
                states.append(polled["status"])
            if polled["status"] in ("done", "failed"):
                break
            time.sleep(0.5)
        print(
            f"3. replica killed while its job ran: polled on the other as {' -> '.join(states)} "
            f"{time.monotonic() - killed:.1f} s after the kill; documented keys in the result: "
            f"{'Batch Time' in polled.get('result', {})}"
        )
        print(f"   lease runs: {[(o, t) for _, o, t in profile_runs(url)[before:]]}")


def throughput(root: Path, url: str, address: str, seconds: float) -> None:
    body = TINY | {"batch_size": 2, "measure_iterations": 4, "device": "cpu"}

    async def both(servers: list[Server]) -> list[dict[str, Any]]:
        ports = [int(s.base.rsplit(":", 1)[1]) for s in servers]
        return list(await asyncio.gather(*(load(p, body, seconds, 8) for p in ports)))

    rows = []
    for arm in ("two replicas + PostgreSQL", "one replica + sqlite", "two replicas + PostgreSQL (again)"):
        with contextlib.ExitStack() as stack:
            if arm.startswith("two"):
                servers = stack.enter_context(replicas(root / "load" / str(len(rows)), url, address))
            else:
                (root / "sqlite").mkdir(exist_ok=True)
                options = ("--ray", address, "--device", "cpu", "--no-access-log", *FACTORIES)
                servers = [stack.enter_context(serving(root / "sqlite", *options))]
            httpx.post(servers[0].base + ENDPOINT, json=body, timeout=PROFILE_TIMEOUT).raise_for_status()
            results = asyncio.run(both(servers))
        done = sum(r["requests"] for r in results)
        rate = sum(r["requests_per_s"] for r in results)
        p99 = max(r["p99_ms"] for r in results)
        rows.append((arm, done, rate, p99, sum((Counter(r["statuses"]) for r in results), Counter())))
    print(f"4. cached answers, {seconds:.0f} s per arm, 8 connections per replica:")
    for arm, done, rate, p99, statuses in rows:
        print(f"   {arm}: {done} requests, {rate:.0f} requests/s, p99 {p99:.1f} ms, statuses {dict(statuses)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds of load per throughput arm")
    parser.add_argument("--skip-throughput", action="store_true")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    folder = Path(tempfile.mkdtemp(prefix="mlestimate-fleet-"))
    server = start_server(folder)
    try:
        url = server.create_database("fleet")
        os.environ["MLESTIMATE_LEASE_SECONDS"] = "10"
        with tempfile.TemporaryDirectory(prefix="mlestimate-fleet-work-") as work, ray_cluster(workers=2) as cluster:
            root = Path(work)
            with replicas(root / "main", url, cluster.address) as servers:
                once_per_configuration(servers, url)
                node_removed(servers, url, cluster)
            replica_killed(root, url, cluster.address)
            if not args.skip_throughput:
                throughput(root, url, cluster.address, args.seconds)
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
