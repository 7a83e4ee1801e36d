"""A profile's phases predicted on a GPU card: extra, untimed training steps (or one inference call) traced after
the phase's own figures are read, from the state a fresh run starts in, then replayed through the allocator
model (``predict``)."""

from __future__ import annotations

import contextlib
import gc
import warnings
from typing import Literal

import torch

from pytest_mlestimate.core.gpu_cards import OUTSIDE_ALLOCATOR, GpuCard, card_named
from pytest_mlestimate.profiling.gpu_memory.allocator import alloc_conf
from pytest_mlestimate.profiling.gpu_memory.predict import PredictedMemory, predict, training_state
from pytest_mlestimate.profiling.gpu_memory.trace import StorageTrace
from pytest_mlestimate.profiling.profile import PredictedGpuMemory
from pytest_mlestimate.profiling.session import Diverged, Session, Snapshot

TRACED_STEPS = 3
"""Training steps traced: the first creates the gradients and the optimizer state, the next ones repeat the
steady step whose peak a real run reaches at every step (the allocator's cache is warm by the second)."""


def predict_training(session: Session, card: GpuCard) -> PredictedGpuMemory:
    """From the model's weights alone, as a run starts: no gradients, no optimizer state (restored after)."""
    assert session.optimizer is not None
    snapshot = Snapshot(session)
    try:
        session.model.zero_grad(set_to_none=True)
        session.optimizer.state.clear()
        gc.collect()

        def run(trace: StorageTrace) -> None:
            for number in range(TRACED_STEPS):
                with contextlib.suppress(Diverged):  # its memory was held all the same
                    session.train_step(phased=False)
                trace.mark(f"step {number + 1}")
            session.train_on_worst_batches()

        found = predict(
            [*training_state(session.model), *session.batch_tensors()],
            run,
            workspaces=[card.blas_workspace] * 2,
            expandable_segments=alloc_conf()[0],
        )
    finally:
        snapshot.restore(session)
        snapshot.close()
    return _predicted(card, found, TRACED_STEPS)


def predict_inference(session: Session, card: GpuCard) -> PredictedGpuMemory:
    def run(_trace: StorageTrace) -> None:
        with torch.inference_mode():
            session.infer(session.images)

    found = predict(
        [*training_state(session.model), *session.input_tensors()],
        run,
        workspaces=[card.blas_workspace],
        expandable_segments=alloc_conf()[0],
    )
    return _predicted(card, found, 0)


def _predicted(card: GpuCard, found: PredictedMemory, steps: int) -> PredictedGpuMemory:
    return PredictedGpuMemory(
        card=card.name,
        allocated=found.allocated,
        reserved=found.reserved,
        device=found.reserved + OUTSIDE_ALLOCATOR,
        traced_storages=found.traced_storages,
        steps=steps,
    )


def predicted_phase(
    session: Session, warned: list[str], phase: Literal["training", "inference"]
) -> PredictedGpuMemory | None:
    """The phase predicted on the scenario's ``predict_gpu`` card; a failure costs the prediction (said in
    ``warned``), not the profile."""
    card = card_named(session.scenario.predict_gpu or "")
    assert card is not None
    ignored = alloc_conf()[1]
    if ignored and phase == "training":
        warned.append(
            f"Predicted Peak GPU Memory models PYTORCH_CUDA_ALLOC_CONF's expandable_segments only; "
            f"{', '.join(ignored)} left out"
        )
    if session.scenario.amp != "off" and phase == "training":
        warned.append(
            f"Predicted Peak GPU Memory with amp {session.scenario.amp}: autocast casts some operators differently "
            f"on {session.device} than on CUDA, so the prediction is approximate"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return (predict_training if phase == "training" else predict_inference)(session, card)
    except Exception as exc:
        warned.append(f"no GPU memory prediction for {phase}: the traced steps failed: {type(exc).__name__}: {exc}")
        return None
