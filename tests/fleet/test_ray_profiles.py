"""Profiles measured on a real Ray cluster of several nodes on this machine: placed on a worker node, measured
there in a fresh process, retried elsewhere when that node dies, refused at once when no node has the device."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from pytest_mlestimate import estimate
from pytest_mlestimate.core.errors import DeviceUnavailableError
from pytest_mlestimate.scenarios.scenario import ScenarioError
from tests.fleet.ray_cluster import node_running
from tests.slow_model import SLOW
from tests.tiny_scenario import TINY


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
    assert measured.measured_on is not None and measured.measured_on != busy.node_id
    assert len(measured.step_times) >= 2


def test_a_scenario_naming_an_accelerator_the_cluster_lacks_is_refused_with_what_it_has(cluster: Any) -> None:
    typed = cluster.add_node(num_cpus=0, num_gpus=1, resources={"accelerator_type:A100": 1})
    try:
        cluster.wait_for_nodes()
        with pytest.raises(DeviceUnavailableError, match="no node with accelerator 'H100'; it has: A100"):
            estimate(TINY | {"device": "cuda", "accelerator": "H100"}, ray=cluster.address, cache=False)
    finally:
        cluster.remove_node(typed)
    with pytest.raises(ScenarioError, match="accelerator: 'H100' names the GPU"):
        estimate(TINY | {"device": "cpu", "accelerator": "H100"}, ray=cluster.address, cache=False)
