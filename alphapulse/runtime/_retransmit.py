"""A bounded buffer of recently published frames, for answering resend requests.

Sans-IO. Each published block's bytes are copied into one byte ring (one ``memcpy``, whatever its
frame count), and where the block starts, how many frames and how many bytes it holds go into
three ``array('q')`` rings of ``capacity`` slots (a block holds at least one frame, so the held
blocks always fit). An append is plain Python: one ``memcpy`` and three element stores, whatever
the block's frame count. No numpy call (a node woken once per send pays 5-25 µs for each, its
caches cold: a ten-frame append went from 19 to 9 µs that way) and no Python object per held
block or message, for the collector to walk or the allocator to hold (holding the last 64k
single-message blocks themselves cost a full-collection pause of tens of milliseconds).

A lookup is the rare path: it keeps an index of the held frames (stream position, size, source,
sequence; numpy columns, built on the first lookup) and brings it up to date by walking only the
headers of blocks appended since the last lookup (one kernel call per contiguous stretch of the
ring) and dropping what was forgotten. It then masks one source's sequence range and copies the
answer out, so an answer never aliases bytes the ring will overwrite. A burst of resend requests
(subscribers catching up after a restart) costs one walk of the ring, not one per request.

The buffer holds the newest ``capacity`` messages. Its byte store is reserved (and its pages
touched) up front, ``BYTES_PER_MESSAGE`` per message of capacity; should bigger frames need more,
it grows (up to ``max_bytes``) and past that the oldest blocks are forgotten to make room.
A block is stored contiguously (the ring skips its tail end rather than wrap a block), so each
frame can be read in place; growing moves the held bytes to the start of the new store, so that
stays true whatever the new size.
"""

from __future__ import annotations

import dataclasses
import struct
from array import array
from typing import Any

import numpy as np

from alphapulse.protocol import FrameBlock
from alphapulse.protocol._batch import frame_bounds, header_columns
from alphapulse.protocol._header import HEADER_SIZE, SOURCE_AND_SEQUENCE

_TIME_AND_SIZE = struct.Struct("<16xQI")
"""a header's timestamp and payload size"""

BYTES_PER_MESSAGE = 128
"""Byte store reserved per message of capacity up front (a Trade message is 72 bytes): growing
the store later copies it whole and faults in fresh pages, a pause of milliseconds on live traffic."""
MAX_BYTES = 1 << 28
"""Byte store limit: 256 MiB, beyond the default 64k messages of any realistic size."""
_EMPTY_INDEX = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.uint16), np.zeros(0, np.uint64))


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
        slots = self._slots = max(1, self.capacity)
        # the held blocks: ``_blocks`` of them, oldest first from slot ``_oldest_slot`` round the
        # slots; Python ints in and out, and a numpy view for the rare path
        self._block_at = array("q", bytes(8 * slots))
        """stream position of each block's first byte (ring index = position % store size)"""
        self._block_frames = array("q", bytes(8 * slots))
        self._block_span = array("q", bytes(8 * slots))
        self._oldest_slot = self._next_slot = self._blocks = 0
        self._skip = 0  # frames of the oldest block already forgotten (the capacity fell inside it)
        self._held = 0
        if initial_bytes is None:
            initial_bytes = max(1 << 16, self.capacity * BYTES_PER_MESSAGE) if self.capacity else 1
        self._ring = np.ones(max(1, min(int(initial_bytes), self.max_bytes)), np.uint8)  # ones: pages touched now
        self._ring_view = memoryview(self._ring)
        self._size = int(self._ring.shape[0])
        self._write = 0  # stream position of the next byte written (grows; rebased when the store grows)
        self._newest: dict[int, int] = {}
        """the newest sequence published of each source, held or not: what :meth:`heads` tells
        a new subscriber (a dict: storing into it costs a third of a numpy element store)"""
        # the lookup index (rare path): every frame of the blocks that began before ``_indexed_to``
        # and still held when it was last brought up to date, oldest first; stream positions
        self._index: tuple[np.ndarray, ...] = _EMPTY_INDEX
        self._indexed_to = 0
        self.lookups = 0
        self.misses = 0
        self.evicted_for_space = 0
        """frames forgotten (or never held) because the byte store was at ``max_bytes``, before
        ``capacity`` messages were held"""

    def __len__(self) -> int:
        return self._held

    @property
    def bytes_reserved(self) -> int:
        return self._size

    def oldest_timestamp_ns(self) -> int | None:
        """The header time of the oldest frame held (None when none is): how far back a resend
        reaches now. Walks the frames of the oldest block that are already forgotten (rare path)."""
        if not self._held:
            return None
        at = self._block_at[self._oldest_slot] % self._size
        for _ in range(self._skip):
            at += HEADER_SIZE + _TIME_AND_SIZE.unpack_from(self._ring_view, at)[1]
        return _TIME_AND_SIZE.unpack_from(self._ring_view, at)[0]

    # -- hot path ---------------------------------------------------------------------------------
    def append(self, block: Any, n: int | None = None) -> None:
        """Copy ``block``'s frames in (``n``: its frame count, when the caller knows it already).
        Frames sit back to back from byte 0 of ``block.data``, as in every :class:`FrameBlock`."""
        n = len(block) if n is None else n
        if n == 0:
            return
        run = block.sequence_run
        if run is not None:  # what the decoder knew: one source's consecutive sequences
            self._newest[run[0]] = run[1] + n - 1
        elif n == 1:  # a producer's own message: two header fields, no numpy call
            source, sequence = SOURCE_AND_SEQUENCE.unpack_from(block.data)
            self._newest[source] = sequence
        else:
            self._note_newest(block)
        if self.capacity <= 0:
            return
        if n > self.capacity:
            block = block.slice(n - self.capacity, n)
            n = self.capacity
        data = block.data
        span = len(data)
        if span > self.max_bytes:  # cannot be held at all: what it replaces is gone either way
            self.evicted_for_space += self._held + n
            self._forget_all()
            return
        excess = self._held + n - self.capacity
        if excess > 0:
            self._forget(excess)
        pos = self._place(span)
        index = pos % self._size
        self._ring_view[index : index + span] = data
        slot = self._next_slot
        self._block_at[slot] = pos
        self._block_frames[slot] = n
        self._block_span[slot] = span
        self._next_slot = slot + 1 if slot + 1 < self._slots else 0
        self._blocks += 1
        self._held += n
        self._write = pos + span

    def _note_newest(self, block: Any) -> None:
        """The newest of each source in a block of several (the last of each, as published)."""
        if "_columns" not in block.__dict__ and not memoryview(block.data).readonly:
            # read-only, as every other block's bytes: the header kernel is compiled for that type
            block = FrameBlock(memoryview(block.data).toreadonly(), block.offsets, block.sizes)
        sources, sequences = block.source[::-1], block.sequence[::-1]
        unique, last = np.unique(sources, return_index=True)
        self._newest.update(zip(unique.tolist(), sequences[last].tolist(), strict=True))

    def _place(self, span: int) -> int:
        """Stream position where ``span`` contiguous bytes go, making room as needed."""
        while True:
            size = self._size
            pos = self._write
            if pos % size + span > size:
                pos += size - pos % size  # never wrap a block: skip to the ring's start
            oldest = self._block_at[self._oldest_slot] if self._blocks else pos
            if pos + span - oldest <= size:
                return pos
            if size < self.max_bytes:
                self._grow(min(self.max_bytes, max(size * 2, 1 << (span - 1).bit_length())))
            else:  # at max_bytes, and span <= max_bytes: forgetting enough always makes room
                while self._blocks and self._block_at[self._oldest_slot] < pos + span - size:
                    self.evicted_for_space += self._block_frames[self._oldest_slot] - self._skip
                    self._forget_block()

    def _grow(self, size: int) -> None:
        """A bigger store, the held bytes copied to its start and every position rebased to
        match: a block then never straddles the new store's end, whatever its size (kept at
        stream positions, a block could, when the new size is not a multiple of the old)."""
        old, new = self._ring, np.empty(size, np.uint8)
        base = self._block_at[self._oldest_slot] if self._blocks else self._write
        length = self._write - base  # at most the old size: the held stream range
        at = base % self._size
        first = min(length, self._size - at)
        new[:first] = old[at : at + first]
        new[first:length] = old[: length - first]
        np.frombuffer(self._block_at, np.int64)[:] -= base  # every slot: those not held are not read
        self._write -= base
        self._index, self._indexed_to = _EMPTY_INDEX, 0  # positions rebased: the next lookup indexes afresh
        self._ring, self._ring_view, self._size = new, memoryview(new), size

    def _forget(self, k: int) -> None:
        """Forget the oldest ``k`` held frames."""
        while k > 0 and self._blocks:
            left = self._block_frames[self._oldest_slot] - self._skip
            if left > k:
                self._skip += k
                self._held -= k
                return
            k -= left
            self._forget_block()

    def _forget_block(self) -> None:
        slot = self._oldest_slot
        self._held -= self._block_frames[slot] - self._skip
        self._oldest_slot = slot + 1 if slot + 1 < self._slots else 0
        self._blocks -= 1
        self._skip = 0

    def _forget_all(self) -> None:
        self._oldest_slot = self._next_slot
        self._held = self._skip = self._blocks = 0

    # -- rare path ---------------------------------------------------------------------------------
    def _held_blocks(self) -> tuple[np.ndarray, np.ndarray]:
        """Stream positions and byte counts of the held blocks, oldest first."""
        slots, count, begin = self._slots, self._blocks, self._oldest_slot
        at, span = np.frombuffer(self._block_at, np.int64), np.frombuffer(self._block_span, np.int64)
        if begin + count <= slots:
            return at[begin : begin + count].copy(), span[begin : begin + count].copy()
        rest = begin + count - slots  # wraps: the newer part at the start of the slots
        return np.concatenate((at[begin:], at[:rest])), np.concatenate((span[begin:], span[:rest]))

    def _held_index(self) -> tuple[np.ndarray, ...]:
        """Ring indexes, sizes, sources and sequences of the held frames, oldest first. The index
        kept since the last lookup loses the blocks forgotten since, and gains the blocks appended
        since, found from their headers: the frames of each stretch of new blocks that lie back to
        back in the ring, one kernel call a stretch."""
        at, span = self._held_blocks()
        position, size, source, sequence = self._index
        keep = int(np.searchsorted(position, at[0]))  # blocks forgotten: their frames lie before
        new = int(np.searchsorted(at, self._indexed_to))  # the first block not indexed yet
        parts = [(position[keep:], size[keep:], source[keep:], sequence[keep:])]
        if new < len(at):
            parts.append(self._frames_of(at[new:], span[new:]))
        self._index = tuple(np.concatenate(column) for column in zip(*parts, strict=True))
        self._indexed_to = self._write
        position, size, source, sequence = (column[self._skip :] for column in self._index)
        return position % self._size, size, source, sequence

    def _frames_of(self, at: np.ndarray, span: np.ndarray) -> tuple[np.ndarray, ...]:
        """Stream positions, sizes, sources and sequences of the frames of held blocks ``at``
        (stream positions, oldest first) of ``span`` bytes each, read from their headers."""
        size = self._size
        end = at + span
        breaks = np.flatnonzero((at[1:] != end[:-1]) | (at[1:] % size == 0)) + 1
        firsts, lasts = [0, *breaks.tolist()], [*breaks.tolist(), len(at)]
        ring = self._ring_view.toreadonly()  # the kernels are compiled for read-only bytes
        columns = []
        for first, last in zip(firsts, lasts, strict=True):
            index = int(at[first]) % size
            offsets, frame_sizes = frame_bounds(ring[index : index + int(end[last - 1] - at[first])])
            source, sequence = header_columns(ring, offsets + index)[:2]
            columns.append((offsets + at[first], frame_sizes, source, sequence))
        return tuple(np.concatenate(column) for column in zip(*columns, strict=True))

    def heads(self) -> dict[int, int]:
        """Sequence of the newest frame published of each source (newest by when it was
        published, so a source that restarted shows its new epoch), held or not: a subscriber
        behind a source whose frames are no longer held learns now that it missed them (its
        resend is answered unavailable, and the loss counted), not when that source next speaks.
        Kept as frames are appended, not read from the held frames (2.8 ms at 65,536, warm)."""
        return dict(self._newest)

    def lookup(self, source: int, first: int, last: int) -> ResendAnswer:
        """Frames of ``source`` with ``first <= sequence <= last`` (full 64-bit sequences)."""
        self.lookups += 1
        found: list[Any] = []
        oldest = 0
        count = 0
        if self._held:
            starts, sizes, sources, sequences = self._held_index()
            of_source = sources == source
            if of_source.any():
                oldest = int(sequences[of_source].min())
                wanted = of_source & (sequences >= first) & (sequences <= last)
                count = int(np.count_nonzero(wanted))
                if count:
                    # read-only, as every other block's bytes: the gather kernel is compiled for that type
                    held = FrameBlock(self._ring_view.toreadonly(), starts, sizes)
                    found.append(held.select(wanted))  # copied out: the ring moves on
        complete = count == last - first + 1
        if not complete:
            self.misses += 1
        return ResendAnswer(found, complete, oldest)
