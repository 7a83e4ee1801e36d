"""The tensor storages a run creates and frees, in program order, whatever device it runs on.

A ``TorchDispatchMode`` sees every operator below autograd, the backward pass's included, and the storage of
every tensor it returns. A storage first seen in an operator's output is an allocation of its ``nbytes``; it is
freed when PyTorch frees it: a storage's Python object lives exactly as long as the storage (PyTorch keeps it
alive while C++ holds the storage, as autograd does for the tensors it saves), so a weak reference's callback
marks the free. Storages that existed before the trace (parameters, gradients, optimizer state, the batch) are
entered first with ``hold``, so that their frees (``zero_grad(set_to_none=True)`` frees the gradients) count.

Not seen: memory an operator's kernel takes for itself and returns before it ends (a convolution's workspace),
which differs by device anyway.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

Event = tuple[str, int, int]
"""``("alloc", token, nbytes)`` or ``("free", token, 0)``."""


class StorageTrace(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.events: list[Event] = []
        self._tokens: dict[int, tuple[weakref.ref[torch.UntypedStorage], int, int]] = {}
        """id(storage) -> (the storage, its token, the bytes it was entered with)."""
        self._next = 0
        self.held = 0
        """Events that entered what existed before the trace (``hold``)."""
        self.marks: list[str] = []
        """Names of the ``("mark", index, 0)`` events, by index."""

    def hold(self, tensors: Iterable[torch.Tensor]) -> None:
        """Enter storages that exist already, in order (each once, however many tensors view it)."""
        for tensor in tensors:
            self._see(tensor)
        self.held = len(self.events)

    def mark(self, name: str) -> None:
        """A named point of the program (``step 2``): a replay can read the peaks between marks."""
        self.events.append(("mark", len(self.marks), 0))
        self.marks.append(name)

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        for leaf in tree_leaves((args, kwargs)):
            if isinstance(leaf, torch.Tensor):
                self._see(leaf, allocated=False)
        out = func(*args, **(kwargs or {}))
        for leaf in tree_leaves(out):
            if isinstance(leaf, torch.Tensor):
                self._see(leaf)
        return out

    def _see(self, tensor: torch.Tensor, allocated: bool = True) -> None:
        """``allocated`` False: a storage met as an operator's input that nothing entered (a tensor made before
        the trace and not held, such as a constant a module keeps outside its buffers) is known from then on,
        and not counted: it is not device memory the run allocated."""
        if tensor.device.type == "meta" or tensor.is_sparse or tensor.is_nested:
            return
        try:
            storage = tensor.untyped_storage()
        except (RuntimeError, NotImplementedError):  # a tensor subclass without storage
            return
        nbytes = storage.nbytes()
        known = self._tokens.get(id(storage))
        if known is not None and (known[2] == nbytes or not allocated):
            return
        token = self._next
        self._next += 1
        self._tokens[id(storage)] = (weakref.ref(storage), token, nbytes)
        if allocated:
            self.events.append(("alloc", token, nbytes))
        if known is not None:  # resize_ grew or shrank it in place: a new block, then the old one freed
            self.events.append(("free", known[1], 0))
        else:
            weakref.finalize(storage, self._freed, id(storage))

    def _freed(self, key: int) -> None:
        found = self._tokens.pop(key, None)
        if found is not None:
            self.events.append(("free", found[1], 0))
