"""A bounded buffer of recently published frames, for answering resend requests.

Sans-IO. Holds whole blocks (no per-frame copies on the hot path) and forgets the oldest blocks
once more than ``capacity`` messages are held. A lookup is the rare path: it masks the held
blocks for one source's sequence range.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True)
class ResendAnswer:
    blocks: list[Any]
    """Held frames of the requested range, oldest first (possibly only part of the range)."""
    complete: bool
    """True when every requested sequence was found."""
    oldest_available: int
    """Oldest sequence of that source still held (0 when none)."""


class RetransmitBuffer:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._blocks: deque[Any] = deque()
        self._held = 0
        self.lookups = 0
        self.misses = 0

    def __len__(self) -> int:
        return self._held

    def append(self, block: Any, n: int | None = None) -> None:
        """Hold ``block`` (``n``: its frame count, when the caller knows it already)."""
        n = len(block) if n is None else n
        if self.capacity <= 0 or n == 0:
            return
        self._blocks.append(block)
        self._held += n
        while self._held - len(self._blocks[0]) >= self.capacity:
            self._held -= len(self._blocks.popleft())

    def lookup(self, source: int, first: int, last: int) -> ResendAnswer:
        """Frames of ``source`` with ``first <= sequence <= last`` (full 64-bit sequences)."""
        self.lookups += 1
        found: list[Any] = []
        count = 0
        oldest = 0
        for block in self._blocks:
            of_source = block.source == source
            if not of_source.any():
                continue
            sequences = block.sequence
            if not oldest:
                oldest = int(sequences[of_source].min())
            wanted = of_source & (sequences >= first) & (sequences <= last)
            n = int(np.count_nonzero(wanted))
            if n:
                found.append(block if n == len(block) else block.select(wanted))
                count += n
        complete = count == last - first + 1
        if not complete:
            self.misses += 1
        return ResendAnswer(found, complete, oldest)
