"""The storages a run creates and frees, in program order: views and in-place operators allocate nothing, a
tensor autograd saved lives until the backward pass used it, a resized storage is a new block, and what existed
before the trace counts only when held."""

from __future__ import annotations

import torch

from pytest_mlestimate.profiling.gpu_memory.allocator import MIN_BLOCK
from pytest_mlestimate.profiling.gpu_memory.predict import predict, training_state
from pytest_mlestimate.profiling.gpu_memory.trace import StorageTrace


def kinds(trace: StorageTrace) -> list[tuple[str, int]]:
    sizes: dict[int, int] = {}
    found = []
    for kind, token, nbytes in trace.events:
        if kind == "alloc":
            sizes[token] = nbytes
            found.append(("alloc", nbytes))
        elif kind == "free":
            found.append(("free", sizes[token]))
    return found


def test_allocations_and_frees_in_program_order_views_and_in_place_ops_allocate_nothing() -> None:
    trace = StorageTrace()
    with trace:
        a = torch.empty(1000)
        b = torch.zeros(2000)
        del a
        view = b.view(40, 50)[:, :10]
        view.add_(1)
        c = b + 1
        del b, view
        c.mul_(2)
    assert kinds(trace) == [("alloc", 4000), ("alloc", 8000), ("free", 4000), ("alloc", 8000), ("free", 8000)]


def test_a_tensor_autograd_saved_lives_until_the_backward_pass_is_done_with_it() -> None:
    x = torch.ones(1000, requires_grad=True)
    trace = StorageTrace()
    trace.hold([x])
    with trace:
        y = x.exp()  # exp's backward reads its output; sum's reads nothing
        loss = y.sum()
        del y
        before = kinds(trace)
        loss.backward()
    assert before == [("alloc", 4000), ("alloc", 4000), ("alloc", 4)]  # y is alive: autograd holds it
    assert x.grad is not None
    assert ("free", 4000) in kinds(trace)[len(before) :]  # freed once the backward pass used it


def test_a_resized_storage_is_a_new_block_and_then_the_old_one_freed() -> None:
    trace = StorageTrace()
    with trace:
        a = torch.empty(100)
        a.resize_(1000)
        del a
    assert kinds(trace) == [("alloc", 400), ("alloc", 4000), ("free", 400), ("free", 4000)]


def test_what_existed_before_the_trace_counts_only_when_held() -> None:
    stray, held = torch.ones(3000), torch.ones(3000)
    trace = StorageTrace()
    trace.hold([held, held.view(-1)])  # one storage, entered once
    with trace:
        (stray.view(-1) + held).sum()
    assert kinds(trace)[:2] == [("alloc", 12000), ("alloc", 12000)]  # the held one, then the sum's output
    assert [kind for kind, _ in kinds(trace)].count("alloc") == 3  # and the sum of it, not the stray one


def test_a_training_loops_predicted_peak_holds_weights_gradients_momentum_and_activations() -> None:
    """An MLP whose peak is worked out by hand: at the optimizer's step the run holds weights, gradients and
    momentum (three copies) and the batch; activations are gone by then, and each block is rounded to 512 B."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(1024, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 1024))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x = torch.randn(16, 1024)

    def run(trace: StorageTrace) -> None:
        for _ in range(3):
            optimizer.zero_grad(set_to_none=True)
            model(x).square().mean().backward()
            optimizer.step()
            trace.mark("step")

    found = predict([*training_state(model, optimizer), x], run)
    weights = 2 * 1024 * 1024 * 4
    biases = 2 * max(1024 * 4, MIN_BLOCK)
    three_copies = 3 * (weights + biases)
    assert three_copies + 64 * 1024 <= found.allocated <= three_copies + 64 * 1024 + 6 * 16 * 1024 * 4
    assert found.reserved >= found.allocated
