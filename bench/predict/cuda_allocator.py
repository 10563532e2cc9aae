"""A model of torch's CUDA caching allocator: what it reserves (nvidia-smi's view) for a sequence of tensors.

nvidia-smi shows a process's CUDA context plus every segment the caching allocator holds, freed blocks
included; nobody returns them unless ``torch.cuda.empty_cache()`` is called or an allocation would fail.
The predictor replays a phase's allocations and frees (loading, generating) through this model to get the
pool's high-water, the figure a user's nvidia-smi shows.

Rules, as read from torch's ``c10/cuda/CUDACachingAllocator.cpp`` (the 2.x series, unchanged in substance
from 2.1 to the 2.14 installed here; default settings, no ``expandable_segments``):

- every request is rounded up to a multiple of 512 bytes (``kMinBlockSize``);
- requests of up to 1 MiB (``kSmallSize``) come from a small pool of 2 MiB segments (``kSmallBuffer``);
- larger requests come from a large pool: under 10 MiB (``kMinLargeAlloc``) a new segment is 20 MiB
  (``kLargeBuffer``); from 10 MiB on, a segment is the request rounded up to 2 MiB (``kRoundLarge``);
- a request takes the smallest cached free block of its pool that is large enough (best fit, lowest
  address on ties); the rest of the block is split off when it exceeds 1 MiB (large pool) or 512 bytes
  (small pool), otherwise the whole block is handed out and counted as allocated;
- a freed block merges with free neighbours in its segment; segments are never merged with each other
  and returned to the driver only by ``empty_cache()`` (a segment
  with no live block).

The model tracks ``allocated`` (torch's ``memory_allocated``) and ``reserved`` (``memory_reserved``) and
their high-waters. It does not model a full card: there, torch frees the cached segments and retries, so a
real pool never exceeds the card (the predictor caps its nvidia-smi figure at the card's usable memory).
"""

from __future__ import annotations

import bisect

from bench.units import MiB

MIN_BLOCK_BYTES = 512
SMALL_REQUEST_BYTES = 1 * MiB
SMALL_SEGMENT_BYTES = 2 * MiB
LARGE_SEGMENT_BYTES = 20 * MiB
MIN_LARGE_ALLOC_BYTES = 10 * MiB
ROUND_LARGE_BYTES = 2 * MiB


def round_request(nbytes: int) -> int:
    """A request's size as the allocator books it: at least 512 bytes, rounded up to a multiple of 512."""
    return max(MIN_BLOCK_BYTES, -(-int(nbytes) // MIN_BLOCK_BYTES) * MIN_BLOCK_BYTES)


def segment_bytes(size: int) -> int:
    """The segment the allocator asks the driver for when no cached block holds a rounded request."""
    if size <= SMALL_REQUEST_BYTES:
        return SMALL_SEGMENT_BYTES
    if size < MIN_LARGE_ALLOC_BYTES:
        return LARGE_SEGMENT_BYTES
    return -(-size // ROUND_LARGE_BYTES) * ROUND_LARGE_BYTES


class _Block:
    __slots__ = ("segment", "offset", "size", "small", "free")

    def __init__(self, segment: int, offset: int, size: int, small: bool) -> None:
        self.segment, self.offset, self.size, self.small, self.free = segment, offset, size, small, True

    def key(self) -> tuple[int, int, int]:
        return (self.size, self.segment, self.offset)


class CachingAllocatorModel:
    """The pool of one device: allocate and free sizes, read allocated and reserved bytes and their peaks."""

    def __init__(self) -> None:
        self.allocated_bytes = 0
        self.reserved_bytes = 0
        self.peak_allocated_bytes = 0
        self.peak_reserved_bytes = 0
        self._segments: list[list[_Block]] = []
        self._free: dict[bool, list[tuple[tuple[int, int, int], _Block]]] = {True: [], False: []}
        self._live: dict[int, _Block] = {}
        self._next = 0

    def malloc(self, nbytes: int) -> int:
        """Allocate ``nbytes``; returns a handle for :meth:`free`."""
        size = round_request(nbytes)
        small = size <= SMALL_REQUEST_BYTES
        block = self._best_fit(size, small) or self._new_segment(segment_bytes(size), small)
        self._unlist(block)
        remaining = block.size - size
        if (remaining >= MIN_BLOCK_BYTES) if small else (remaining > SMALL_REQUEST_BYTES):
            rest = _Block(block.segment, block.offset + size, remaining, small)
            seg = self._segments[block.segment]
            seg.insert(seg.index(block) + 1, rest)
            self._list(rest)
            block.size = size
        block.free = False
        self.allocated_bytes += block.size
        self.peak_allocated_bytes = max(self.peak_allocated_bytes, self.allocated_bytes)
        handle = self._next
        self._next += 1
        self._live[handle] = block
        return handle

    def free(self, handle: int) -> None:
        """Return a block to the pool (it stays reserved), merging it with free neighbours in its segment."""
        block = self._live.pop(handle)
        self.allocated_bytes -= block.size
        block.free = True
        seg = self._segments[block.segment]
        i = seg.index(block)
        if i + 1 < len(seg) and seg[i + 1].free:
            after = seg.pop(i + 1)
            self._unlist(after)
            block.size += after.size
        if i > 0 and seg[i - 1].free:
            before = seg[i - 1]
            self._unlist(before)
            seg.pop(i)
            before.size += block.size
            block = before
        self._list(block)

    def empty_cache(self) -> None:
        """``torch.cuda.empty_cache()``: give back every segment that holds no live block."""
        for i, seg in enumerate(self._segments):
            if len(seg) == 1 and seg[0].free and seg[0].size:
                self._unlist(seg[0])
                self.reserved_bytes -= seg[0].size
                self._segments[i] = []

    def reset_peaks(self) -> None:
        """``torch.cuda.reset_peak_memory_stats()``: the peaks restart from the current figures."""
        self.peak_allocated_bytes = self.allocated_bytes
        self.peak_reserved_bytes = self.reserved_bytes

    def _list(self, block: _Block) -> None:
        bisect.insort(self._free[block.small], (block.key(), block), key=lambda item: item[0])

    def _unlist(self, block: _Block) -> None:
        pool = self._free[block.small]
        i = bisect.bisect_left(pool, block.key(), key=lambda item: item[0])
        assert pool[i][1] is block
        pool.pop(i)

    def _best_fit(self, size: int, small: bool) -> _Block | None:
        pool = self._free[small]
        i = bisect.bisect_left(pool, (size, -1, -1), key=lambda item: item[0])
        return pool[i][1] if i < len(pool) else None

    def _new_segment(self, nbytes: int, small: bool) -> _Block:
        block = _Block(len(self._segments), 0, nbytes, small)
        self._segments.append([block])
        self._list(block)
        self.reserved_bytes += nbytes
        self.peak_reserved_bytes = max(self.peak_reserved_bytes, self.reserved_bytes)
        return block
