"""A model of PyTorch's CUDA caching allocator, in its default configuration: what
``torch.cuda.max_memory_allocated()`` and ``max_memory_reserved()`` would read after a sequence of allocations
and frees.

The rules follow the allocator's documented behaviour (``c10/cuda/CUDACachingAllocator.cpp``):

- a request is rounded up to a multiple of 512 B (at least 512 B);
- requests up to 1 MiB come from the small pool, whose segments are 2 MiB; larger ones from the large pool,
  whose segments are 20 MiB for requests under 10 MiB and the request rounded up to 2 MiB otherwise;
- a free block is chosen best-fit in the request's pool (the smallest that fits, then the lowest address) and
  split when what would remain is at least 512 B (small pool) or more than 1 MiB (large pool); the request takes
  the block's lower part;
- a freed block merges with the free blocks beside it in its segment;
- segments stay reserved (no ``empty_cache``; an out-of-memory retry, which frees cached segments, is not
  modelled).

With ``expandable_segments:True`` (``PYTORCH_CUDA_ALLOC_CONF``) each pool has one segment that grows: a request
no free block fits extends the segment's last block (free, or a new one after an allocated last block) by whole
pages, 2 MiB in the small pool and 20 MiB in the large one, as many as it lacks.

Allocated memory counts the blocks handed out (after splitting, so a 11 MiB request in its 12 MiB segment counts
12 MiB); reserved memory counts the segments (mapped pages). Not modelled: the other ``PYTORCH_CUDA_ALLOC_CONF``
options (``max_split_size_mb``, ``roundup_power2_divisions``, garbage collection), several streams, and
allocations made outside the caching allocator (the CUDA context, cuBLAS and cuDNN handles).
"""

from __future__ import annotations

import bisect
import itertools
import os
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Literal

MIN_BLOCK = 512
SMALL_REQUEST = 1 << 20
"""The largest request served from the small pool."""
SMALL_SEGMENT = 2 << 20
LARGE_SEGMENT = 20 << 20
"""The segment a large request under ``MIN_LARGE_ALLOC`` gets."""
MIN_LARGE_ALLOC = 10 << 20
ROUND_LARGE = 2 << 20
"""Large segments of ``MIN_LARGE_ALLOC`` or more are the request rounded up to this."""

Pool = Literal["small", "large"]


def alloc_conf(text: str | None = None) -> tuple[bool, list[str]]:
    """``PYTORCH_CUDA_ALLOC_CONF`` (the environment's unless given): whether segments are expandable, and the
    options set that the model leaves out."""
    text = os.environ.get("PYTORCH_CUDA_ALLOC_CONF", "") if text is None else text
    expandable, ignored = False, []
    for option in filter(None, (part.strip() for part in text.split(","))):
        key, _, value = option.partition(":")
        if key.strip() == "expandable_segments":
            expandable = value.strip().lower() == "true"
        elif key.strip() != "backend" or value.strip() != "native":
            ignored.append(option)
    return expandable, ignored


def rounded(nbytes: int) -> int:
    return MIN_BLOCK if nbytes < MIN_BLOCK else -(-nbytes // MIN_BLOCK) * MIN_BLOCK


def pool_of(size: int) -> Pool:
    return "small" if size <= SMALL_REQUEST else "large"


def segment_size(size: int) -> int:
    """Bytes reserved for a new segment that serves a request of ``size`` (rounded) bytes."""
    if size <= SMALL_REQUEST:
        return SMALL_SEGMENT
    if size < MIN_LARGE_ALLOC:
        return LARGE_SEGMENT
    return -(-size // ROUND_LARGE) * ROUND_LARGE


@dataclass(eq=False)
class _Block:
    address: int
    size: int
    pool: Pool
    allocated: bool = False
    prev: _Block | None = None
    next: _Block | None = None

    def key(self) -> tuple[int, int]:
        return self.size, self.address


@dataclass
class CachingAllocator:
    """Allocations by key (anything hashable: a storage's id in a trace); sizes in bytes as requested."""

    allocated: int = 0
    reserved: int = 0
    peak_allocated: int = 0
    peak_reserved: int = 0
    segments: int = 0
    expandable_segments: bool = False
    _expandable: dict[Pool, _Block] = field(default_factory=dict)
    """Each pool's growing segment, by its first block (``expandable_segments``)."""
    _free: dict[Pool, list[tuple[int, int]]] = field(default_factory=lambda: {"small": [], "large": []})
    _free_blocks: dict[tuple[int, int], _Block] = field(default_factory=dict)
    _live: dict[Hashable, _Block] = field(default_factory=dict)
    _addresses: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def malloc(self, key: Hashable, nbytes: int) -> None:
        if key in self._live:
            raise KeyError(f"{key!r} is allocated already")
        if nbytes <= 0:
            return  # the allocator hands out no block for an empty tensor
        size = rounded(nbytes)
        pool = pool_of(size)
        block = self._take_free(pool, size) or self._new_segment(pool, size)
        remaining = block.size - size
        if remaining >= MIN_BLOCK if pool == "small" else remaining > SMALL_REQUEST:
            rest = _Block(block.address + size, remaining, pool, prev=block, next=block.next)
            if block.next is not None:
                block.next.prev = rest
            block.next, block.size = rest, size
            self._insert_free(rest)
        block.allocated = True
        self._live[key] = block
        self.allocated += block.size
        self.peak_allocated = max(self.peak_allocated, self.allocated)

    def free(self, key: Hashable) -> None:
        block = self._live.pop(key, None)
        if block is None:
            return  # an empty tensor's, or one allocated before the trace began
        block.allocated = False
        self.allocated -= block.size
        for neighbour in (block.prev, block.next):
            if neighbour is not None and not neighbour.allocated:
                self._remove_free(neighbour)
                block = self._merge(block, neighbour)
        self._insert_free(block)

    def reset_peaks(self) -> None:
        """As ``torch.cuda.reset_peak_memory_stats()``: the peaks restart from what is held now."""
        self.peak_allocated, self.peak_reserved = self.allocated, self.reserved

    def replay(self, events: Iterable[tuple[str, Hashable, int]]) -> None:
        """``("alloc", key, nbytes)`` and ``("free", key, 0)`` in program order; other events are skipped."""
        for kind, key, nbytes in events:
            if kind == "alloc":
                self.malloc(key, nbytes)
            elif kind == "free":
                self.free(key)

    def _take_free(self, pool: Pool, size: int) -> _Block | None:
        free = self._free[pool]
        index = bisect.bisect_left(free, (size, 0))
        if index == len(free):
            return None
        return self._free_blocks.pop(free.pop(index))

    def _new_segment(self, pool: Pool, size: int) -> _Block:
        if self.expandable_segments:
            return self._grown(pool, size)
        reserved = segment_size(size)
        address = next(self._addresses) << 40  # segments never touch: no merging across them
        self.reserved += reserved
        self.segments += 1
        self.peak_reserved = max(self.peak_reserved, self.reserved)
        return _Block(address, reserved, pool)

    def _grown(self, pool: Pool, size: int) -> _Block:
        """The pool's segment's last block, free, extended by the pages it lacks for ``size``."""
        first = self._expandable.get(pool)
        if first is None:
            block = self._expandable[pool] = _Block(next(self._addresses) << 40, 0, pool)
            self.segments += 1
        else:
            last = first
            while last.next is not None:
                last = last.next
            if last.allocated:
                block = _Block(last.address + last.size, 0, pool, prev=last)
                last.next = block
            else:
                self._remove_free(last)
                block = last
        page = SMALL_SEGMENT if pool == "small" else LARGE_SEGMENT
        grown = -(-(size - block.size) // page) * page
        block.size += grown
        self.reserved += grown
        self.peak_reserved = max(self.peak_reserved, self.reserved)
        return block

    def _insert_free(self, block: _Block) -> None:
        bisect.insort(self._free[block.pool], block.key())
        self._free_blocks[block.key()] = block

    def _remove_free(self, block: _Block) -> None:
        free = self._free[block.pool]
        del free[bisect.bisect_left(free, block.key())]
        del self._free_blocks[block.key()]

    @staticmethod
    def _merge(block: _Block, neighbour: _Block) -> _Block:
        low, high = (neighbour, block) if neighbour.address < block.address else (block, neighbour)
        low.size += high.size
        low.next = high.next
        if high.next is not None:
            high.next.prev = low
        return low
