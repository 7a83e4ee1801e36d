"""Profiles measured on a real Ray cluster of several nodes on this machine: placed on a worker node, measured
there in a fresh process, retried elsewhere when that node dies, refused at once when no node has the device."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from pytest_mlestimate import estimate
from pytest_mlestimate.core.errors import DeviceUnavailableError
from tests.fleet.ray_cluster import node_running
from tests.slow_model import SLOW
from tests.tiny_scenario import TINY


def test_a_profile_is_measured_on_a_worker_node_and_cached_for_every_host(cluster: Any, tmp_path: Path) -> None:
    workers = {node.unique_id for node in cluster.worker_nodes}
    import ray

    first = estimate(TINY | {"device": "cpu"}, ray=cluster.address, cache_path=tmp_path / "c.sqlite3")
    node_ids = {n["NodeID"] for n in ray.nodes() if n["Alive"] and n["NodeManagerAddress"]}
    assert first.profile.measured_on in node_ids and first.cache["hit"] is False
    assert workers  # the head took no task: it has no CPU to give
    head = next(n["NodeID"] for n in ray.nodes() if n["Resources"].get("CPU", 0) == 0)
    assert first.profile.measured_on != head
    assert first.profile.step_times and first.profile.training is not None and first.profile.training.peak_rss > 0
    again = estimate(TINY | {"device": "cpu"}, ray=cluster.address, cache_path=tmp_path / "c.sqlite3")
    assert again.cache["hit"] is True


def test_a_cluster_without_a_gpu_refuses_a_cuda_scenario_at_once(cluster: Any) -> None:
    started = time.monotonic()
    with pytest.raises(DeviceUnavailableError, match="has no GPU"):
        estimate(TINY | {"device": "cuda"}, ray=cluster.address, cache=False)
    assert time.monotonic() - started < 10


def test_a_profile_whose_node_dies_is_measured_again_on_another(cluster: Any) -> None:
    outcome: dict[str, Any] = {}
    scenario = SLOW | {"measure_iterations": 12}  # 12 steps of at least 0.3 s: still running when its node goes

    def measure() -> None:
        try:
            outcome["estimate"] = estimate(scenario, ray=cluster.address, cache=False, timeout=120)
        except Exception as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=measure)
    thread.start()
    deadline = time.monotonic() + 60
    while (busy := node_running(cluster)) is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert busy is not None, "the task never started on a worker node"
    time.sleep(2)
    cluster.remove_node(busy)
    cluster.add_node(num_cpus=1, object_store_memory=80 * 2**20)  # the cluster keeps two workers for the next tests
    thread.join(timeout=240)
    assert not thread.is_alive(), "the estimate hung after its node died"
    assert "error" not in outcome, outcome.get("error")
    measured = outcome["estimate"].profile
    assert measured.measured_on != busy.unique_id
    assert len(measured.step_times) >= 2
