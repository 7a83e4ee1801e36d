"""A real Ray cluster of several nodes on this machine (Ray's own ``cluster_utils``), for the fleet's tests.

The head takes no task (``num_cpus=0``): profiles land on the worker nodes, each with one CPU; a node may declare a
GPU that this machine does not have, so that placement is tested without one.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[2]
NODE_MEMORY = 80 * 2**20
"""Each node's object store: the smallest Ray accepts; profiles are a few kilobytes of JSON."""


@contextmanager
def ray_cluster(workers: int = 2, gpu_workers: int = 0) -> Iterator[Any]:
    from ray.cluster_utils import Cluster

    # the nodes' workers import the tests' model factories
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 0, "object_store_memory": NODE_MEMORY, "include_dashboard": False},
    )
    try:
        for _ in range(workers):
            cluster.add_node(num_cpus=1, object_store_memory=NODE_MEMORY)
        for _ in range(gpu_workers):
            cluster.add_node(num_cpus=1, num_gpus=1, object_store_memory=NODE_MEMORY)
        cluster.wait_for_nodes()
        yield cluster
    finally:
        import ray

        from pytest_mlestimate.profiling import ray_tasks

        ray.shutdown()
        ray_tasks._connected.clear()
        cluster.shutdown()


def node_running(cluster: Any, task: str = "measure_on_node") -> Any | None:
    """The worker node whose Ray worker is running ``task`` now (Ray titles a busy worker ``ray::TASK``)."""
    for node in cluster.worker_nodes:
        raylet = node.all_processes["raylet"][0].process.pid
        try:
            below = psutil.Process(raylet).children(recursive=True)
        except psutil.NoSuchProcess:
            continue
        for process in below:
            try:
                if process.cmdline()[:1] and process.cmdline()[0].startswith(f"ray::{task}"):
                    return node
            except psutil.Error:
                continue
    return None
