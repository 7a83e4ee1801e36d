"""Profiles measured on a Ray cluster: each one a Ray task that asks for the device it needs, so that Ray places it
on any node with that device free.

A CUDA scenario's task asks for one GPU, of the scenario's ``accelerator`` type when it names one (Ray sets
``CUDA_VISIBLE_DEVICES`` to it, so ``cuda`` on the node is that GPU); any other asks for ``CPUS_PER_PROFILE`` CPUs
and is measured on the node's CPU. On the node the profile still runs in a fresh child process under the node's
device lock (``profile_in_child``), so its figures are its own. A task whose node dies is retried once on another
node (Ray's ``max_retries``); a second loss is a ``ProfileCrashError`` that says so. A cluster without the device
asked for is refused at once, not left waiting. Ray is imported only here, and only when a cluster is named.
"""

from __future__ import annotations

import threading
from typing import Any

from pytest_mlestimate.core.devices import device_lock, is_gpu
from pytest_mlestimate.core.errors import (
    DeviceUnavailableError,
    EstimateError,
    ProfileCrashError,
    ProfileTimeoutError,
)
from pytest_mlestimate.profiling.profile import Profile
from pytest_mlestimate.scenarios.scenario import Scenario

CPUS_PER_PROFILE = 1
"""CPUs a CPU profile's task reserves on its node (the profile's own threads are set by the scenario's threading)."""
RETRIES = 1
"""Times a task lost with its node is tried again elsewhere."""
GRACE_SECONDS = 60.0
"""Beyond the profile's own time limit: the task's start on a node (a fresh worker imports torch)."""

_connected: set[str] = set()
_connect_lock = threading.Lock()


def connect(address: str) -> Any:
    """Ray, connected to the cluster at ``address`` (``ray://host:10001``, ``host:6379`` or ``auto``) once per
    process."""
    import ray

    with _connect_lock:
        if address not in _connected:
            if ray.is_initialized():
                ray.shutdown()
            ray.init(address=address, logging_level="WARNING", log_to_driver=False, configure_logging=False)
            _connected.clear()
            _connected.add(address)
    return ray


def request(scenario: Scenario) -> dict[str, Any]:
    """What the scenario's task asks the cluster for."""
    if is_gpu(scenario.device):
        gpu: dict[str, Any] = {"num_gpus": 1, "num_cpus": 1}
        return gpu | ({"accelerator_type": scenario.accelerator} if scenario.accelerator else {})
    return {"num_cpus": CPUS_PER_PROFILE}


def profile_on_ray(scenario: Scenario, address: str, timeout: float | None = None) -> Profile:
    ray = connect(address)
    from ray.exceptions import GetTimeoutError, RayTaskError

    asked = request(scenario)
    _check_feasible(ray, address, asked)
    device = "cuda" if is_gpu(scenario.device) else "cpu"
    task = ray.remote(max_retries=RETRIES, retry_exceptions=False, **asked)(measure_on_node)
    pending = task.remote(scenario.model_copy(update={"device": device}).model_dump_json(), timeout)
    try:
        text, node = ray.get(pending, timeout=timeout + GRACE_SECONDS if timeout is not None else None)
    except GetTimeoutError:
        ray.cancel(pending, force=True)
        raise ProfileTimeoutError(
            f"the profile did not finish on the Ray cluster at {address} within {timeout:.0f} s (plus "
            f"{GRACE_SECONDS:.0f} s to start) and was cancelled"
        ) from None
    except RayTaskError as exc:
        cause = exc.cause if isinstance(getattr(exc, "cause", None), BaseException) else None
        if isinstance(cause, EstimateError | ValueError):
            raise cause from None
        raise ProfileCrashError(f"the profile failed on the Ray cluster at {address}: {exc}") from None
    except ray.exceptions.RayError as exc:  # its node (or worker) died, and died again after the retry
        raise ProfileCrashError(
            f"the Ray node measuring the profile was lost, and again on the retry ({type(exc).__name__}); "
            f"the cluster at {address} may be shrinking: try again later"
        ) from None
    profile = Profile.model_validate_json(text)
    profile.measured_on = node
    return profile


def _check_feasible(ray: Any, address: str, asked: dict[str, Any]) -> None:
    resources = ray.cluster_resources()
    if asked.get("num_gpus") and resources.get("GPU", 0) < asked["num_gpus"]:
        raise DeviceUnavailableError(f"the Ray cluster at {address} has no GPU for a CUDA scenario")
    accelerator = asked.get("accelerator_type")
    if accelerator and f"accelerator_type:{accelerator}" not in resources:
        present = sorted(name.partition(":")[2] for name in resources if name.startswith("accelerator_type:"))
        raise DeviceUnavailableError(
            f"the Ray cluster at {address} has no node with accelerator '{accelerator}'; it has: "
            f"{', '.join(present) or 'no typed accelerator'}"
        )
    if resources.get("CPU", 0) < asked.get("num_cpus", 0):
        raise DeviceUnavailableError(f"the Ray cluster at {address} has no free CPU to measure on")


def measure_on_node(scenario_json: str, timeout: float | None) -> tuple[str, str]:
    """The Ray task: the profile measured on this node in a fresh child process, and the node's id."""
    import ray

    from pytest_mlestimate.profiling.isolation import profile_in_child

    scenario = Scenario.model_validate_json(scenario_json)
    with device_lock(scenario.device):
        profile = profile_in_child(scenario, timeout)
    return profile.model_dump_json(), ray.get_runtime_context().get_node_id()
