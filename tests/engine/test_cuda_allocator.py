"""The model of the CUDA caching allocator on traces whose allocated and reserved peaks are worked out by hand
from its rules: 512 B rounding, the small (<= 1 MiB, 2 MiB segments) and large pools (20 MiB segments under
10 MiB, else rounded to 2 MiB), best-fit reuse, splitting, merging on free."""

from __future__ import annotations

import pytest

from pytest_mlestimate.profiling.gpu_memory.allocator import CachingAllocator

KiB, MiB = 1 << 10, 1 << 20


def replayed(*events: tuple[str, str, int]) -> CachingAllocator:
    allocator = CachingAllocator()
    allocator.replay(events)
    return allocator


def test_a_small_request_is_rounded_to_512_bytes_in_a_2_mib_segment() -> None:
    found = replayed(("alloc", "a", 1), ("alloc", "b", 513))
    assert (found.allocated, found.reserved, found.segments) == (512 + 1024, 2 * MiB, 1)


def test_the_small_pool_packs_requests_into_its_segments_until_one_is_full() -> None:
    found = replayed(("alloc", "a", MiB), ("alloc", "b", MiB))  # 1 MiB is still small: both in one segment
    assert (found.allocated, found.reserved) == (2 * MiB, 2 * MiB)
    found.malloc("c", 512)
    assert (found.reserved, found.segments) == (4 * MiB, 2)


def test_a_large_request_under_10_mib_gets_a_20_mib_segment_and_leaves_the_rest_free() -> None:
    found = replayed(("alloc", "a", MiB + 1), ("alloc", "b", 8 * MiB), ("alloc", "c", 8 * MiB))
    # a: 1 MiB + 512 B; b fits in the 19 MiB - 512 B left, and c in the 11 MiB - 512 B then left
    assert found.allocated == MiB + 512 + 16 * MiB
    assert (found.reserved, found.segments) == (20 * MiB, 1)
    found.malloc("d", 4 * MiB)  # 3 MiB - 512 B are left: a second segment
    assert (found.reserved, found.segments) == (40 * MiB, 2)


def test_a_remainder_of_1_mib_or_less_is_not_split_off_a_large_block_and_counts_as_allocated() -> None:
    found = replayed(("alloc", "a", 11 * MiB))  # its own segment, rounded to 12 MiB; 1 MiB would remain
    assert (found.allocated, found.reserved) == (12 * MiB, 12 * MiB)
    found = replayed(("alloc", "a", 11 * MiB - 512 * KiB))  # 1.5 MiB would remain: split, the rest stays free
    assert (found.allocated, found.reserved) == (11 * MiB - 512 * KiB, 12 * MiB)


def test_a_freed_block_is_reused_and_the_peaks_stay() -> None:
    found = replayed(("alloc", "a", 5 * MiB), ("free", "a", 0), ("alloc", "b", 8 * MiB))
    assert (found.allocated, found.reserved, found.segments) == (8 * MiB, 20 * MiB, 1)
    assert (found.peak_allocated, found.peak_reserved) == (8 * MiB, 20 * MiB)
    found.free("b")
    assert (found.allocated, found.peak_allocated, found.reserved) == (0, 8 * MiB, 20 * MiB)


def test_the_smallest_free_block_that_fits_is_chosen() -> None:
    # one 20 MiB segment cut into a 6 | x 2 | 4 | y 2 | rest 6; freeing a and b leaves free blocks of 6 and 4 MiB
    found = replayed(
        ("alloc", "a", 6 * MiB), ("alloc", "x", 2 * MiB), ("alloc", "b", 4 * MiB), ("alloc", "y", 2 * MiB),
        ("free", "a", 0), ("free", "b", 0),
    )  # fmt: skip
    assert found.segments == 1
    found.malloc("c", 3 * MiB + 512 * KiB)  # the 4 MiB block; 0.5 MiB would remain, so it is not split
    assert found.allocated == 2 * MiB + 2 * MiB + 4 * MiB
    found.malloc("d", 5 * MiB)  # the 6 MiB blocks: the freed one and the segment's end; the lower address first
    assert found.allocated == 8 * MiB + 6 * MiB and found.segments == 1
    found.malloc("e", 5 * MiB)
    assert found.allocated == 14 * MiB + 6 * MiB and found.segments == 1
    found.malloc("f", 512)  # a small request never takes a large block
    assert found.segments == 2 and found.reserved == 22 * MiB


def test_freed_neighbours_merge_into_one_block_a_larger_request_fits_in() -> None:
    found = replayed(("alloc", "a", 6 * MiB), ("alloc", "b", 6 * MiB), ("alloc", "c", 6 * MiB))
    assert (found.segments, found.allocated) == (1, 18 * MiB)  # a 2 MiB end remains, over 1 MiB: split
    found.free("b")
    found.malloc("d", 7 * MiB)  # b's 6 MiB alone is too small: a new segment
    assert found.segments == 2
    found.free("d")
    found.free("a")  # a and b merge: 12 MiB free at the first segment's start
    found.malloc("e", 11 * MiB)  # fits there (rounded: 11 MiB, 1 MiB left: not split)
    assert (found.segments, found.allocated) == (2, 6 * MiB + 12 * MiB)
    assert found.peak_reserved == 40 * MiB


@pytest.mark.parametrize("order", [("a", "b", "c"), ("c", "b", "a"), ("b", "a", "c"), ("a", "c", "b")])
def test_freeing_in_any_order_gives_the_whole_segment_back_as_one_block(order: tuple[str, ...]) -> None:
    found = replayed(("alloc", "a", 4 * MiB), ("alloc", "b", 4 * MiB), ("alloc", "c", 4 * MiB))
    for key in order:
        found.free(key)
    found.malloc("whole", 20 * MiB)
    assert (found.segments, found.allocated) == (1, 20 * MiB)


def test_a_request_of_10_mib_or_more_may_split_a_cached_20_mib_block() -> None:
    found = replayed(("alloc", "a", 2 * MiB), ("free", "a", 0), ("alloc", "big", 12 * MiB))
    assert (found.segments, found.allocated, found.reserved) == (1, 12 * MiB, 20 * MiB)


def test_reset_peaks_restarts_from_what_is_held() -> None:
    found = replayed(("alloc", "a", 8 * MiB), ("alloc", "b", 8 * MiB), ("free", "b", 0))
    found.reset_peaks()
    assert (found.peak_allocated, found.peak_reserved) == (8 * MiB, 20 * MiB)
    found.malloc("c", 4 * MiB)
    assert found.peak_allocated == 12 * MiB


def test_empty_tensors_and_unknown_frees_take_nothing() -> None:
    found = replayed(("alloc", "a", 0), ("free", "a", 0), ("free", "never", 0))
    assert (found.allocated, found.reserved) == (0, 0)


def expandable(*events: tuple[str, str, int]) -> CachingAllocator:
    allocator = CachingAllocator(expandable_segments=True)
    allocator.replay(events)
    return allocator


def test_an_expandable_segment_grows_by_the_pages_a_request_lacks() -> None:
    found = expandable(("alloc", "a", 3 * MiB))  # one 20 MiB page; 17 MiB stay free at the end
    assert (found.allocated, found.reserved, found.segments) == (3 * MiB, 20 * MiB, 1)
    found.malloc("b", 30 * MiB)  # the free 17 MiB end grows by one page to 37 MiB: 7 MiB left, split
    assert (found.allocated, found.reserved, found.segments) == (33 * MiB, 40 * MiB, 1)
    default = replayed(("alloc", "a", 3 * MiB), ("alloc", "b", 30 * MiB))  # b gets a segment of its own
    assert default.reserved == 50 * MiB


def test_after_an_allocated_end_an_expandable_segment_grows_a_new_block() -> None:
    found = expandable(("alloc", "a", 20 * MiB), ("alloc", "b", 5 * MiB))
    assert (found.reserved, found.allocated) == (40 * MiB, 25 * MiB)
    found.free("a")  # 20 MiB free at the start: a request that fits is served there, nothing grows
    found.malloc("c", 18 * MiB)
    assert (found.reserved, found.allocated) == (40 * MiB, 23 * MiB)


def test_the_small_pool_grows_by_2_mib_pages() -> None:
    found = expandable(("alloc", "a", MiB), ("alloc", "b", MiB), ("alloc", "c", 512))
    assert (found.reserved, found.segments) == (4 * MiB, 1)
    found.malloc("d", 30 * MiB)  # the large pool's own segment
    assert (found.reserved, found.segments) == (4 * MiB + 40 * MiB, 2)


def test_the_allocator_configuration_is_read_as_pytorch_spells_it() -> None:
    from pytest_mlestimate.profiling.gpu_memory.allocator import alloc_conf

    assert alloc_conf("") == (False, [])
    assert alloc_conf("expandable_segments:True") == (True, [])
    assert alloc_conf("max_split_size_mb:128, expandable_segments:True") == (True, ["max_split_size_mb:128"])
    assert alloc_conf("backend:native,expandable_segments:False") == (False, [])
