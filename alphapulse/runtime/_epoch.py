"""Sequence numbers with an epoch, so a restarted producer is recognised.

The header's 64-bit ``sequence`` is split: the high 24 bits are the producer's *epoch*, the low
40 bits a counter starting at 1. A producer takes a fresh epoch every time it starts, so a
consumer seeing a new epoch for a source knows the producer restarted (and resets its
expectations) instead of reporting a gap of billions of messages, or none at all.
Epochs come from the start time in tenths of a second, so two starts of one producer differ
unless they happen within 100 ms of each other (supervisord's start-up alone takes longer).
"""

from __future__ import annotations

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
