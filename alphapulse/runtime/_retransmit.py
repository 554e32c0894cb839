"""A bounded buffer of recently published frames, for answering resend requests.

Sans-IO. The frames are copied into one byte ring (one ``memcpy`` per published block, whatever
its frame count) and indexed by two fixed integer rings (where each frame starts, how long it
is). Nothing per message stays alive as a Python object: holding the last 64k single-message
blocks by reference would keep 64k objects for the garbage collector to walk on every full
collection (a pause of tens of milliseconds) and could pin whole receive buffers for one frame
each. A lookup is the rare path: it reads the held headers, masks one source's sequence range
and copies the answer out, so an answer never aliases bytes the ring will overwrite.

The ring holds at most ``capacity`` messages. Its byte store is reserved (and its pages touched)
up front, ``BYTES_PER_MESSAGE`` per message of capacity; should bigger frames need more, it
doubles (up to ``max_bytes``) and past that the oldest frames are forgotten to make room.
A block is stored contiguously (the ring skips its tail end rather than wrap a block), so each
frame can be read in place.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from alphapulse.protocol import FrameBlock

BYTES_PER_MESSAGE = 128
"""Byte store reserved per message of capacity up front (a Trade message is 72 bytes): growing
the store later copies it whole and faults in fresh pages, a pause of milliseconds on live traffic."""
MAX_BYTES = 1 << 28
"""Byte store limit: 256 MiB, beyond the default 64k messages of any realistic size."""


@dataclasses.dataclass(frozen=True)
class ResendAnswer:
    blocks: list[Any]
    """Held frames of the requested range, oldest first (possibly only part of the range)."""
    complete: bool
    """True when every requested sequence was found."""
    oldest_available: int
    """Oldest sequence of that source still held (0 when none)."""


class RetransmitBuffer:
    def __init__(self, capacity: int, *, initial_bytes: int | None = None, max_bytes: int = MAX_BYTES) -> None:
        self.capacity = max(0, int(capacity))
        self.max_bytes = max(1, int(max_bytes))
        slots = max(1, self.capacity)
        self._starts = np.zeros(slots, np.int64)
        """stream position of each held frame (slot = message number % capacity)"""
        self._sizes = np.zeros(slots, np.int64)
        self._first = 0  # message number of the oldest held frame
        self._next = 0  # message number the next frame gets
        if initial_bytes is None:
            initial_bytes = max(1 << 16, self.capacity * BYTES_PER_MESSAGE) if self.capacity else 1
        self._ring = np.ones(max(1, min(int(initial_bytes), self.max_bytes)), np.uint8)  # ones: pages touched now
        self._ring_view = memoryview(self._ring)
        self._write = 0  # stream position of the next byte written (grows forever; ring index = % size)
        self._oldest = 0  # stream position of the oldest held frame (== _write when empty)
        self.lookups = 0
        self.misses = 0
        self.evicted_for_space = 0
        """frames forgotten (or never held) because the byte store was at ``max_bytes``, before
        ``capacity`` messages were held"""

    def __len__(self) -> int:
        return self._next - self._first

    @property
    def bytes_reserved(self) -> int:
        return int(self._ring.shape[0])

    # -- hot path ---------------------------------------------------------------------------------
    def append(self, block: Any, n: int | None = None) -> None:
        """Copy ``block``'s frames in (``n``: its frame count, when the caller knows it already)."""
        n = len(block) if n is None else n
        if self.capacity <= 0 or n == 0:
            return
        if n > self.capacity:
            block = block.slice(n - self.capacity, n)
            n = self.capacity
        offsets, sizes = block.offsets, block.sizes
        start = int(offsets[0])
        span = int(offsets[n - 1] + sizes[n - 1]) - start
        if span > self.max_bytes:  # cannot be held at all: what it replaces is gone either way
            self.evicted_for_space += len(self) + n
            self._forget(len(self))
            return
        excess = self._next - self._first + n - self.capacity
        if excess > 0:
            self._forget(excess)
        pos = self._place(span)
        index = pos % self._ring.shape[0]
        self._ring_view[index : index + span] = memoryview(block.data)[start : start + span]
        slot = self._next % self.capacity
        if n == 1:
            self._starts[slot] = pos
            self._sizes[slot] = int(sizes[0])
        else:
            starts = offsets[:n] + (pos - start)
            head = min(n, self.capacity - slot)
            self._starts[slot : slot + head] = starts[:head]
            self._sizes[slot : slot + head] = sizes[:head]
            if head < n:
                self._starts[: n - head] = starts[head:]
                self._sizes[: n - head] = sizes[head:n]
        self._next += n
        self._write = pos + span

    def _place(self, span: int) -> int:
        """Stream position where ``span`` contiguous bytes go, making room as needed."""
        while True:
            size = self._ring.shape[0]
            pos = self._write
            if pos % size + span > size:
                pos += size - pos % size  # never wrap a block: skip to the ring's start
            if self._next == self._first:
                self._oldest = pos  # empty: nothing before pos is needed
            if pos + span - self._oldest <= size:
                return pos
            if size < self.max_bytes:
                self._grow(min(self.max_bytes, max(size * 2, 1 << (span - 1).bit_length())))
            else:  # at max_bytes, and span <= max_bytes: forgetting enough always makes room
                self._forget_until(pos + span - size)

    def _grow(self, size: int) -> None:
        old, new = self._ring, np.empty(size, np.uint8)
        position = self._oldest
        while position < self._write:  # the live stream range, in pieces contiguous in both rings
            at_old, at_new = position % old.shape[0], position % size
            k = min(self._write - position, old.shape[0] - at_old, size - at_new)
            new[at_new : at_new + k] = old[at_old : at_old + k]
            position += k
        self._ring, self._ring_view = new, memoryview(new)

    def _forget(self, k: int) -> None:
        self._first += min(k, self._next - self._first)
        self._oldest = int(self._starts[self._first % self.capacity]) if self._next > self._first else self._write

    def _forget_until(self, position: int) -> None:
        """Forget the oldest frames until none starts before stream ``position``."""
        starts, _ = self._held()
        k = int(np.searchsorted(starts, position, side="left"))
        self.evicted_for_space += k
        self._forget(k)

    # -- rare path ---------------------------------------------------------------------------------
    def _held(self) -> tuple[np.ndarray, np.ndarray]:
        """Stream positions and sizes of the held frames, oldest first."""
        n = self._next - self._first
        slot = self._first % self.capacity if self.capacity else 0
        order = (slot + np.arange(n, dtype=np.int64)) % max(1, self.capacity)
        return self._starts[order], self._sizes[order]

    def lookup(self, source: int, first: int, last: int) -> ResendAnswer:
        """Frames of ``source`` with ``first <= sequence <= last`` (full 64-bit sequences)."""
        self.lookups += 1
        found: list[Any] = []
        oldest = 0
        count = 0
        if self._next > self._first:
            starts, sizes = self._held()
            held = FrameBlock(self._ring_view, starts % self._ring.shape[0], sizes)
            of_source = held.source == source
            if of_source.any():
                sequences = held.sequence
                oldest = int(sequences[of_source].min())
                wanted = of_source & (sequences >= first) & (sequences <= last)
                count = int(np.count_nonzero(wanted))
                if count:
                    found.append(held.select(wanted))  # copied out: the ring moves on
        complete = count == last - first + 1
        if not complete:
            self.misses += 1
        return ResendAnswer(found, complete, oldest)
