"""How many bytes an allocation costs: the CUDA caching allocator's rules, or exact on CPU.

`CudaCachingAllocator` replays c10/cuda/CUDACachingAllocator.cpp closely enough to predict
`allocated_bytes.all.peak` (= `torch.cuda.max_memory_allocated`), which counts *block* sizes:
- `round_size`: requests round up to a multiple of kMinBlockSize = 512 bytes.
- `get_pool`: <= kSmallSize (1 MiB) goes to the small pool, larger to the large pool.
- `get_allocation_size`: a new segment is 2 MiB (kSmallBuffer) for small requests, 20 MiB
  (kLargeBuffer) below kMinLargeAlloc (10 MiB), else the request rounded up to kRoundLarge
  (2 MiB).
- `get_free_block`: best fit, the smallest cached free block that is large enough (ties by
  address).
- `should_split`: a small block splits if >= 512 bytes remain; a large one only if more than
  kSmallSize remains, so a large block can be handed out whole and counted whole.
- `free` merges a block with free neighbours in its segment (`try_merge_blocks`). Segments
  are not returned to the driver during a step (no `empty_cache`).
- With a memory cap (the card's memory less the CUDA context, or
  `set_per_process_memory_fraction`), a request that needs a new segment beyond the cap first
  releases every cached segment that is entirely free (`release_cached_blocks`; with the
  default max_split_size, `release_available_cached_blocks` does nothing) and retries; if it
  still does not fit, it is an out-of-memory error. So fragmentation counts, as on the card.
Defaults assumed: no `PYTORCH_CUDA_ALLOC_CONF` (no roundup_power2_divisions, unlimited
max_split_size, no expandable segments), one stream.
"""

from __future__ import annotations

import bisect
import itertools
from dataclasses import dataclass

KB = 1024
MIN_BLOCK = 512
SMALL_SIZE = 1 * KB * KB
SMALL_BUFFER = 2 * KB * KB
LARGE_BUFFER = 20 * KB * KB
MIN_LARGE_ALLOC = 10 * KB * KB
ROUND_LARGE = 2 * KB * KB


def round_size(n: int) -> int:
    if n < MIN_BLOCK:
        return MIN_BLOCK
    return MIN_BLOCK * ((n + MIN_BLOCK - 1) // MIN_BLOCK)


def allocation_size(size: int) -> int:
    if size <= SMALL_SIZE:
        return SMALL_BUFFER
    if size < MIN_LARGE_ALLOC:
        return LARGE_BUFFER
    return ROUND_LARGE * ((size + ROUND_LARGE - 1) // ROUND_LARGE)


class SimulatedOOM(Exception):
    """The allocator model ran out of memory under its cap."""


@dataclass(eq=False)
class Block:
    addr: int
    size: int
    small: bool
    segment: int
    free: bool = True
    prev: "Block | None" = None
    next: "Block | None" = None


class CudaCachingAllocator:
    """Block-level model of the caching allocator; `allocated` and `peak` in block bytes."""

    def __init__(self, cap: int | None = None):
        self.cap = cap
        self.allocated = 0
        self.peak = 0
        self.reserved = 0
        self.peak_reserved = 0
        self._free = {True: [], False: []}  # small? -> sorted [(size, addr, id)]
        self._blocks: dict[int, Block] = {}
        self._ids = itertools.count()
        self._next_addr = 0

    def malloc(self, nbytes: int) -> Block | None:
        if nbytes == 0:
            return None  # allocate(0) returns nullptr, no stats change
        size = round_size(nbytes)
        small = size <= SMALL_SIZE
        block = self._take_free(size, small)
        if block is None:
            seg = allocation_size(size)
            if self.cap is not None and self.reserved + seg > self.cap:
                self._release_cached()
                if self.reserved + seg > self.cap:
                    raise SimulatedOOM(
                        f"tried to allocate {seg} bytes with {self.allocated} allocated and {self.reserved} reserved "
                        f"of a {self.cap}-byte cap")
            block = Block(self._next_addr, seg, small, segment=self._next_addr)
            self._next_addr += seg + ROUND_LARGE  # segments never touch
            self.reserved += seg
            self.peak_reserved = max(self.peak_reserved, self.reserved)
        remaining = block.size - size
        if (small and remaining >= MIN_BLOCK) or (not small and remaining > SMALL_SIZE):
            rest = Block(block.addr + size, remaining, small, block.segment, True, block, block.next)
            if block.next:
                block.next.prev = rest
            block.next = rest
            block.size = size
            self._insert_free(rest)
        block.free = False
        self.allocated += block.size
        self.peak = max(self.peak, self.allocated)
        return block

    def free(self, block: Block | None) -> None:
        if block is None:
            return
        self.allocated -= block.size
        block.free = True
        for neighbour in (block.prev, block.next):
            if neighbour is not None and neighbour.free:
                self._remove_free(neighbour)
                if neighbour is block.prev:
                    neighbour.size += block.size
                    neighbour.next = block.next
                    if block.next:
                        block.next.prev = neighbour
                    block = neighbour
                else:
                    block.size += neighbour.size
                    block.next = neighbour.next
                    if neighbour.next:
                        neighbour.next.prev = block
        self._insert_free(block)

    def _release_cached(self) -> None:
        """Return every entirely free segment to the driver (`release_cached_blocks`)."""
        for small in (True, False):
            whole = [(sz, addr, bid) for sz, addr, bid in self._free[small]
                     if self._blocks[bid].prev is None and self._blocks[bid].next is None]
            for entry in whole:
                self._free[small].remove(entry)
                del self._blocks[entry[2]]
                self.reserved -= entry[0]

    def _take_free(self, size: int, small: bool) -> Block | None:
        pool = self._free[small]
        i = bisect.bisect_left(pool, (size, -1, -1))
        if i == len(pool):
            return None
        _, _, bid = pool.pop(i)
        return self._blocks.pop(bid)

    def _insert_free(self, block: Block) -> None:
        bid = next(self._ids)
        block._id = bid
        self._blocks[bid] = block
        bisect.insort(self._free[block.small], (block.size, block.addr, bid))

    def _remove_free(self, block: Block) -> None:
        pool = self._free[block.small]
        i = bisect.bisect_left(pool, (block.size, block.addr, -1))
        assert pool[i][1] == block.addr
        _, _, bid = pool.pop(i)
        del self._blocks[bid]


class ExactAllocator:
    """CPU: an allocation costs its bytes (what the tracker counts on real CPU tensors)."""

    def __init__(self):
        self.allocated = 0
        self.peak = 0

    def malloc(self, nbytes: int) -> int | None:
        if nbytes == 0:
            return None
        self.allocated += nbytes
        self.peak = max(self.peak, self.allocated)
        return nbytes

    def free(self, handle: int | None) -> None:
        if handle is not None:
            self.allocated -= handle


def block_bytes(handle) -> int:
    """Bytes an allocation handle holds in `allocated`."""
    if handle is None:
        return 0
    return handle.size if isinstance(handle, Block) else int(handle)
