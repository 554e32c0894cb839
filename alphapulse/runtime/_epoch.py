"""Sequence numbers with an epoch, so a restarted producer is recognised.

The header's 64-bit ``sequence`` is split: the high 24 bits are the producer's *epoch*, the low
40 bits a counter starting at 1. A producer takes a fresh epoch every time it starts, so a
consumer seeing a new epoch for a source knows the producer restarted (and resets its
expectations) instead of reporting a gap of billions of messages, or none at all.
Epochs come from the start time in tenths of a second, so two starts of one producer differ
unless they happen within 100 ms of each other (supervisord's start-up alone takes longer).
"""

from __future__ import annotations

from typing import Any

import numpy as np

EPOCH_BITS = 24
COUNTER_BITS = 40
COUNTER_MASK = (1 << COUNTER_BITS) - 1
EPOCH_MASK = (1 << EPOCH_BITS) - 1


def epoch_from_time(unix_ns: int) -> int:
    """A non-zero 24-bit epoch derived from a start time."""
    return ((unix_ns // 100_000_000) % EPOCH_MASK) + 1


def make_sequence(epoch: int, counter: int) -> int:
    return ((epoch & EPOCH_MASK) << COUNTER_BITS) | (counter & COUNTER_MASK)


def split_sequence(sequence: int) -> tuple[int, int]:
    """(epoch, counter) of a header sequence number."""
    return sequence >> COUNTER_BITS, sequence & COUNTER_MASK


class UpstreamEpochs:
    """Which sources restarted, as a kind sees its input blocks.

    A kind that keeps state built from a source's messages (books from their deltas) cannot
    carry it across that source's restart: a restarted venue adapter carries on from the venue's
    book of now, and its deltas applied to the book kept from before (which missed what changed
    while it was down) make crossed books. The input link's tracker handles sequences; this
    tells the kind, per block, which sources began a new epoch since it last saw them.
    """

    def __init__(self) -> None:
        self._epochs = np.zeros(1 << 16, np.uint32)
        """the epoch last seen from each 16-bit source id (0: none yet)"""

    def restarted(self, block: Any) -> list[int]:
        """Sources of ``block`` seen before in another epoch, in first-seen order; records the
        new epochs. One-source runs (most reads) need no numpy."""
        run = block.sequence_run
        if run is not None:
            source, first = run
            epoch = first >> COUNTER_BITS
            if self._epochs[source] == epoch:
                return []
            changed = [(source, epoch)]
        else:
            sources = block.source
            epochs = (block.sequence >> np.uint64(COUNTER_BITS)).astype(np.uint32)
            moved = self._epochs[sources] != epochs
            if not moved.any():
                return []
            changed = list(dict.fromkeys(zip(sources[moved].tolist(), epochs[moved].tolist(), strict=True)))
        restarted = []
        for source, epoch in changed:
            if self._epochs[source] and source not in restarted:
                restarted.append(source)
            self._epochs[source] = epoch
        return restarted
