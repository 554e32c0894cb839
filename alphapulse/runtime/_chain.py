"""A relay passes on the resend requests its own retransmit buffer cannot answer.

A relay restarted by supervisord (``kill -9``, a crash, a wiring edit) comes back with an empty
retransmit buffer, while each producer it reads still holds, in its own buffer, what it
published meanwhile. Every subscriber then sees the restart as a gap and asks the relay to
resend it. The relay cannot answer from its buffer. Without chaining, each subscriber counted
the hole as lost and asked for a snapshot. In a chaos run of the demo with 12 ``kill -9``s, two
of them of the ``market`` relay, the parquet writer and the recorder each lost 7166 messages
that their producers still held. So the relay asks upstream instead: the link that reads the
source sends the same request to the producer (or to the relay before it, which may chain it
further). The answer comes back over that link and goes to each subscriber that asked.

The resent frames are old to the relay's own sequence tracker: it joined the source after
them, so it classes them as duplicates. It hands those out instead of dropping them, while a
chained request is pending. A frame no pending request wants is a true duplicate and is
counted as one. A ``ResendUnavailable`` from upstream is passed on to the subscribers that
asked: the range, or its older part, is gone there too.

Sans-IO: this module keeps the pending requests and says which subscriber gets which frames.
The link and the publisher do the sending.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from alphapulse.runtime._epoch import COUNTER_BITS


@dataclasses.dataclass
class Chained:
    """One range asked of upstream, and the subscribers waiting for it."""

    source: int
    asked: int
    """First sequence asked for (upstream's ResendUnavailable names it)."""
    first_sequence: int
    """First sequence still to come from upstream (moves on as frames arrive)."""
    last_sequence: int
    subscribers: list[Any]
    deadline: float

    def wants(self, sources: np.ndarray, sequences: np.ndarray) -> np.ndarray:
        return (sources == self.source) & (sequences >= self.first_sequence) & (sequences <= self.last_sequence)


@dataclasses.dataclass(frozen=True)
class ChainStatistics:
    chained_requests: int
    """requests passed upstream (identical ones pending at the time are joined, not sent again)"""
    chained_messages: int
    """resent frames passed to subscribers"""
    chained_unavailable: int
    """upstream's answers that (part of) a range is gone, passed on"""
    chained_expired: int
    """requests whose answer did not come in time (the subscribers gave up on their own)"""
    pending: int


class ResendChain:
    """The requests one input link passed upstream on subscribers' behalf."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.pending: list[Chained] = []
        self._requests = self._messages = self._unavailable = self._expired = 0

    def ask(self, subscriber: Any, source: int, first_sequence: int, last_sequence: int, now: float) -> bool:
        """Note that ``subscriber`` wants this range; True when the request must go upstream,
        False when the same range is already on its way (the subscriber gets it too)."""
        self.expire(now)
        for entry in self.pending:
            if (entry.source, entry.first_sequence, entry.last_sequence) == (source, first_sequence, last_sequence):
                if subscriber not in entry.subscribers:
                    entry.subscribers.append(subscriber)
                return False
        self.pending.append(
            Chained(source, first_sequence, first_sequence, last_sequence, [subscriber], now + self.timeout)
        )
        self._requests += 1
        return True

    def route(self, block: Any) -> tuple[list[tuple[list[Any], Any]], int]:
        """Split frames upstream resent (``block``: frames the tracker found old) among the
        pending requests: ([(subscribers, frames for them), ...], frames nobody asked for)."""
        if not self.pending:
            return [], len(block)
        sources, sequences = block.source, block.sequence
        taken = np.zeros(len(block), np.bool_)
        deliveries = []
        for entry in list(self.pending):
            mask = entry.wants(sources, sequences)
            if not mask.any():
                continue
            taken |= mask
            frames = block if mask.all() else block.select(mask)
            deliveries.append((list(entry.subscribers), frames))
            self._messages += len(frames)
            last = int(sequences[mask].max())
            if last >= entry.last_sequence:
                self.pending.remove(entry)
            else:
                entry.first_sequence = last + 1
        return deliveries, len(block) - int(np.count_nonzero(taken))

    def unavailable(self, source: int, first_sequence: int, oldest_available: int) -> list[Any]:
        """Upstream cannot resend from ``first_sequence`` (it holds ``oldest_available`` on, 0:
        nothing): the subscribers to pass that on to (none: it answered the link's own request).
        A request whose newer part upstream still holds stays pending for it."""
        told: list[Any] = []
        for entry in list(self.pending):
            if entry.source != source or entry.asked != first_sequence:
                continue
            self._unavailable += 1
            told.extend(s for s in entry.subscribers if s not in told)
            same_epoch = oldest_available >> COUNTER_BITS == first_sequence >> COUNTER_BITS
            if same_epoch and entry.first_sequence < oldest_available <= entry.last_sequence:
                entry.first_sequence = oldest_available
            else:
                self.pending.remove(entry)
        return told

    def expire(self, now: float) -> None:
        """Forget requests whose answer is overdue: their subscribers have given up by now."""
        overdue = [entry for entry in self.pending if now >= entry.deadline]
        for entry in overdue:
            self.pending.remove(entry)
        self._expired += len(overdue)

    def statistics(self) -> ChainStatistics:
        return ChainStatistics(self._requests, self._messages, self._unavailable, self._expired, len(self.pending))
