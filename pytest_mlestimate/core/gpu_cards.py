"""The GPUs a CPU run can predict peak memory for, and what each holds besides the tensors a run creates.

``blas_workspace``: the bytes PyTorch's cuBLAS handle takes from the caching allocator per thread and stream:
by default ``:4096:8`` (32 MiB) on compute capability 9.0 and ``:4096:2:16:8`` (8,519,680 B) on others, from
``CUBLAS_WORKSPACE_CONFIG``'s default in ``CublasHandlePool.cpp``. A training run holds two (the calling
thread's for the forward pass, the autograd device thread's for the backward pass); inference one.

``outside_allocator``: what the device holds beyond the allocator's reserved bytes once a run has stepped (the
CUDA context, cuDNN and cuBLAS handles and their kernels): about 1.2 GiB measured on an H100 with torch 2.11
and CUDA 13.0; the same figure is assumed, approximately, on the other cards.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

GiB = 1 << 30
HOPPER_BLAS_WORKSPACE = 4096 * 8 * 1024
DEFAULT_BLAS_WORKSPACE = 4096 * 2 * 1024 + 16 * 8 * 1024
OUTSIDE_ALLOCATOR = int(1.2 * GiB)
OUTSIDE_ALLOCATOR_SOURCE = "measured on an H100 (torch 2.11, CUDA 13.0): the CUDA context and library handles"


@dataclass(frozen=True)
class GpuCard:
    name: str
    memory_gib: float
    compute_capability: tuple[int, int]

    @property
    def blas_workspace(self) -> int:
        return HOPPER_BLAS_WORKSPACE if self.compute_capability == (9, 0) else DEFAULT_BLAS_WORKSPACE

    @property
    def memory_bytes(self) -> int:
        return int(self.memory_gib * GiB)


GPU_CARDS: tuple[GpuCard, ...] = (
    GpuCard("T4", 16, (7, 5)),
    GpuCard("V100-16GB", 16, (7, 0)),
    GpuCard("V100-32GB", 32, (7, 0)),
    GpuCard("A10", 24, (8, 6)),
    GpuCard("L4", 24, (8, 9)),
    GpuCard("RTX-4090", 24, (8, 9)),
    GpuCard("A100-40GB", 40, (8, 0)),
    GpuCard("L40S", 48, (8, 9)),
    GpuCard("A100-80GB", 80, (8, 0)),
    GpuCard("H100", 80, (9, 0)),
    GpuCard("H100-NVL", 94, (9, 0)),
    GpuCard("H200", 141, (9, 0)),
)
"""Nominal memory; what a card offers a process is a little less (ECC, the driver)."""


def card_named(name: str) -> GpuCard | None:
    """The card of a name as a user writes it: ``h100``, ``A100 80GB``, ``rtx 4090``."""
    wanted = _plain(name)
    return next((card for card in GPU_CARDS if _plain(card.name) == wanted), None)


def _plain(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower().removeprefix("nvidia"))
