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
        self._seen = np.zeros(1 << 16, np.uint32)
        """1 + the epoch last seen from each 16-bit source id (0: none yet; epoch 0 is a valid
        epoch for a builder that was given none)"""

    def restarted(self, block: Any) -> list[int]:
        """Sources of ``block`` seen before in another epoch, in first-seen order; records the
        new epochs. One-source runs (most reads) need no numpy."""
        run = block.sequence_run
        if run is not None:
            source, first = run
            seen = (first >> COUNTER_BITS) + 1
            if self._seen[source] == seen:
                return []
            changed = [(source, seen)]
        else:
            sources = block.source
            seen = (block.sequence >> np.uint64(COUNTER_BITS)).astype(np.uint32) + np.uint32(1)
            moved = self._seen[sources] != seen
            if not moved.any():
                return []
            changed = list(dict.fromkeys(zip(sources[moved].tolist(), seen[moved].tolist(), strict=True)))
        restarted = []
        for source, epoch_seen in changed:
            if self._seen[source] and source not in restarted:
                restarted.append(source)
            self._seen[source] = epoch_seen
        return restarted
