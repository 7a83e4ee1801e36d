from __future__ import annotations

from pytest_mlestimate.plugin.gpus import PINNED_GPU, pin_worker


def test_workers_take_the_callers_gpus_round_robin() -> None:
    chosen = {}
    for worker in ("gw0", "gw1", "gw2"):
        environ = {"CUDA_VISIBLE_DEVICES": "3,GPU-5a1b"}
        chosen[worker] = pin_worker(environ, worker)
        assert environ["CUDA_VISIBLE_DEVICES"] == environ[PINNED_GPU] == chosen[worker]
    assert chosen == {"gw0": "3", "gw1": "GPU-5a1b", "gw2": "3"}


def test_no_gpu_leaves_the_environment_alone() -> None:
    environ = {"CUDA_VISIBLE_DEVICES": ""}
    assert pin_worker(environ, "gw0") is None
    assert environ == {"CUDA_VISIBLE_DEVICES": ""}
