"""Per-source sequence tracking: detect gaps, hold, recover or give up — and count all of it.

Sans-IO: blocks of frames and the current time go in; deliverable blocks and the control
requests to send upstream come out. The consumer (an input link) does the I/O.

Every frame carries (source, sequence = epoch << 40 | counter). A numba kernel classifies a
whole block at once against per-source state arrays indexed by the 16-bit source id:

=========  ======================================================================
FIRST      first frame ever seen from this source, its counter 1: deliver, expect the next
JOINED     first frame ever seen from this source, counter beyond 1 (this consumer started or
           subscribed mid-stream): deliver, expect the next, ask for a snapshot of the source
IN_ORDER   the expected counter: deliver
DUPLICATE  a counter already delivered (e.g. a resend that raced the original): drop, count
GAP        a counter beyond the expected one: hold it, ask upstream to resend the hole
HELD       this source has an open gap: hold the frame, in arrival order
FILL       the expected counter while a gap is open (the resend arriving): deliver
NEW_EPOCH  the producer restarted: forget the old epoch (closing any open gap), deliver; a
           snapshot is asked for when the new epoch's first frame seen is not its counter 1
=========  ======================================================================

A consumer that joins a running stream (a sink started after its sources, a node restarted by
supervisord) has missed what came before: the mappings that name instruments, the books that
later deltas change. JOINED is how it notices; the snapshot answer carries that state, so a late
joiner needs no start-up request of its own and no one relies on start-up order.

A gap's life is a small state machine (``GAP_TRANSITIONS``): RESENDING until the hole is filled
(RECOVERED), upstream answers that the range is gone, or the resend times out; then the missing
count is recorded as lost, the held frames are released in order, and a snapshot of the source
is requested (SNAPSHOTTING). Nothing is dropped without a counter saying so.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from typing import Any

import numba
import numpy as np

from alphapulse.protocol import FrameBlock
from alphapulse.runtime._epoch import COUNTER_BITS, COUNTER_MASK, EPOCH_MASK
from alphapulse.runtime._headers import SEQUENCE_AT, SOURCE_AT, frame_bytes, read_u16, read_u64

FIRST, IN_ORDER, DUPLICATE, GAP, HELD, FILL, NEW_EPOCH, JOINED = range(8)
_SEEN = np.uint8(1)
_HOLDING = np.uint8(2)
N_SOURCES = 1 << 16


@numba.njit(cache=True, nogil=True)
def _classify(from_bytes, buf, offsets, sources, sequences, epochs, expected, flags, out):  # pragma: no cover - jit
    """The classifier (see module docstring): advances the per-source state in place. Source and
    sequence of frame i come from the header columns, or with ``from_bytes`` straight from the
    frame's header in ``buf`` at ``offsets[i]``. One loop for both, so there is one state machine
    (a per-frame helper call measured 5x slower than this loop)."""
    mask = np.uint64((1 << 40) - 1)
    n = offsets.shape[0] if from_bytes else sources.shape[0]
    for i in range(n):
        if from_bytes:
            s = read_u16(buf, offsets[i] + SOURCE_AT)
            seq = read_u64(buf, offsets[i] + SEQUENCE_AT)
        else:
            s = np.uint16(sources[i])
            seq = np.uint64(sequences[i])
        epoch = np.uint32(seq >> np.uint64(40))
        counter = seq & mask
        f = flags[s]
        if f & 1 == 0:
            flags[s] = f | 1
            epochs[s] = epoch
            expected[s] = counter + np.uint64(1)
            out[i] = 0 if counter == 1 else 7  # FIRST, JOINED
        elif epochs[s] != epoch:
            epochs[s] = epoch
            expected[s] = counter + np.uint64(1)
            flags[s] = f & ~np.uint8(2)
            out[i] = 6  # NEW_EPOCH
        elif f & 2:
            if counter == expected[s]:
                expected[s] = counter + np.uint64(1)
                out[i] = 5  # FILL
            elif counter < expected[s]:
                out[i] = 2  # DUPLICATE
            else:
                out[i] = 4  # HELD
        elif counter == expected[s]:
            expected[s] = counter + np.uint64(1)
            out[i] = 1  # IN_ORDER
        elif counter < expected[s]:
            out[i] = 2  # DUPLICATE
        else:
            flags[s] = f | 2
            out[i] = 3  # GAP
    return out


_NO_BYTES = np.zeros(0, np.uint8)
_NO_OFFSETS = np.zeros(0, np.int64)
_NO_SOURCES = np.zeros(0, np.uint16)
_NO_SEQUENCES = np.zeros(0, np.uint64)


@numba.njit(cache=True, nogil=True)
def classify_frames(sources, sequences, epochs, expected, flags, out):  # pragma: no cover - jit
    """Classify each frame (see module docstring) and advance the per-source state in place."""
    return _classify(False, _NO_BYTES, _NO_OFFSETS, sources, sequences, epochs, expected, flags, out)


@numba.njit(cache=True, nogil=True)
def _count_classes(out):  # pragma: no cover - jit
    deliverable = duplicates = rare = 0
    for i in range(out.shape[0]):
        c = out[i]
        if c == 0 or c == 1:  # FIRST, IN_ORDER
            deliverable += 1
        elif c == 2:  # DUPLICATE
            duplicates += 1
        else:
            rare += 1
            if c >= 5:  # FILL, NEW_EPOCH, JOINED: deliverable too
                deliverable += 1
    return deliverable, duplicates, rare


@numba.njit(cache=True, nogil=True)
def classify_and_count(sources, sequences, epochs, expected, flags, out):  # pragma: no cover - jit
    """:func:`classify_frames`, plus (deliverable, duplicates, rare) counts from the same pass, so the
    common all-in-order block costs one kernel call and no numpy masks (the hot path of every link).
    ``rare`` counts GAP, HELD, FILL, NEW_EPOCH and JOINED frames: the ones needing per-source bookkeeping."""
    classify_frames(sources, sequences, epochs, expected, flags, out)
    return _count_classes(out)


@numba.njit(cache=True, nogil=True)
def classify_headers(buf, offsets, epochs, expected, flags, out):  # pragma: no cover - jit
    """:func:`classify_and_count` reading each frame's source and sequence straight from its header
    (``buf`` the frames' bytes, ``offsets`` where each starts), so a block that nothing else asks
    for header columns never decodes them."""
    _classify(True, buf, offsets, _NO_SOURCES, _NO_SEQUENCES, epochs, expected, flags, out)
    return _count_classes(out)


def _later_epoch(a: int, b: int) -> bool:
    """Is epoch ``a`` after ``b``? Epochs count tenths of a second modulo 2**24 (they wrap every
    ~19 days), so "after" is "less than half the circle ahead"."""
    return 0 < (a - b) % (EPOCH_MASK + 1) < (EPOCH_MASK + 1) // 2


class GapState(enum.Enum):
    RESENDING = "resending"
    RECOVERED = "recovered"
    LOST = "lost"


class GapEvent(enum.Enum):
    FILLED = "filled"
    UNAVAILABLE = "unavailable"
    TIMED_OUT = "timed_out"
    PRODUCER_RESTARTED = "producer_restarted"


GAP_TRANSITIONS: dict[tuple[GapState, GapEvent], GapState] = {
    (GapState.RESENDING, GapEvent.FILLED): GapState.RECOVERED,
    (GapState.RESENDING, GapEvent.UNAVAILABLE): GapState.LOST,
    (GapState.RESENDING, GapEvent.TIMED_OUT): GapState.LOST,
    (GapState.RESENDING, GapEvent.PRODUCER_RESTARTED): GapState.LOST,
}
"""Legal gap transitions; anything else is a bug in the tracker and raises."""


@dataclasses.dataclass
class Gap:
    source: int
    epoch: int
    first: int
    """First missing counter."""
    last: int
    """Last missing counter (inclusive)."""
    opened_at: float
    state: GapState = GapState.RESENDING
    held: list[Any] = dataclasses.field(default_factory=list)
    partly_lost: bool = False
    """Upstream could resend only the newer part; the older part is counted lost."""

    def advance(self, event: GapEvent) -> GapState:
        try:
            self.state = GAP_TRANSITIONS[self.state, event]
        except KeyError:
            raise RuntimeError(f"gap of source {self.source}: no transition {self.state} --{event}->") from None
        return self.state


@dataclasses.dataclass(frozen=True)
class SequenceStatistics:
    frames: int
    delivered: int
    duplicates: int
    gaps_detected: int
    gaps_recovered: int
    gaps_lost: int
    messages_recovered: int
    messages_lost: int
    producer_restarts: int
    joined_midstream: int
    """sources first seen past their first frame (each answered with a snapshot request)"""
    sources: int
    open_gaps: int
    held_frames: int


@dataclasses.dataclass(frozen=True)
class ResendWanted:
    source: int
    first_sequence: int
    last_sequence: int


@dataclasses.dataclass(frozen=True)
class SnapshotWanted:
    source: int
    joined: bool = dataclasses.field(default=False, compare=False)
    """asked because this consumer joined the source mid-stream, not because of a lost gap"""


@dataclasses.dataclass
class TrackResult:
    """What the caller must do: deliver these blocks (in order) and send these requests."""

    deliver: list[Any] = dataclasses.field(default_factory=list)
    requests: list[ResendWanted | SnapshotWanted] = dataclasses.field(default_factory=list)
    old: list[Any] = dataclasses.field(default_factory=list)
    """Frames already delivered (or from before this consumer joined), handed out instead of
    dropped while :attr:`SequenceTracker.hand_out_old` is set (``runtime._chain``)."""

    def extend(self, other: TrackResult) -> None:
        self.deliver.extend(other.deliver)
        self.requests.extend(other.requests)
        self.old.extend(other.old)


class SequenceTracker:
    """Tracks every source seen on one input link. Blocks must offer ``sources``,
    ``sequences`` (numpy arrays), ``select(mask)`` and ``len()``."""

    def __init__(self, resend_timeout: float = 0.25) -> None:
        self.resend_timeout = resend_timeout
        self._epochs = np.zeros(N_SOURCES, np.uint32)
        self._expected = np.zeros(N_SOURCES, np.uint64)
        self._flags = np.zeros(N_SOURCES, np.uint8)
        self._next_run: dict[int, int] = {}
        """full next sequence of sources :meth:`feed_run` advanced (not yet in ``_expected``)"""
        self._gaps: dict[int, Gap] = {}
        self._frames = self._delivered = self._duplicates = 0
        self._gaps_detected = self._gaps_recovered = self._gaps_lost = 0
        self._recovered = self._lost = self._restarts = self._joins = 0
        self.hand_out_old = False
        """Set by a relay's link while a resend it passed upstream is pending: frames classed
        DUPLICATE go into :attr:`TrackResult.old` uncounted (the caller counts what is left)."""

    # -- inputs ---------------------------------------------------------------------------
    def feed(self, block: Any, now: float) -> TrackResult:
        result = TrackResult()
        n = len(block)
        if n == 0:
            return result
        if self._next_run:
            self._sync_runs()
        self._frames += n
        self._classify_into(block, now, result, n)
        return result

    def feed_run(self, source: int, first_sequence: int, n: int) -> bool:
        """The fast path for ``n`` frames of ``source`` with consecutive sequences from
        ``first_sequence``: True when they are the next ones expected (source seen before, same
        epoch, no gap open), and then they are counted as delivered exactly as :meth:`feed`
        would; False (nothing changed) for anything else: call ``feed``.

        What a source expects next is kept as a Python int between calls (a numpy scalar read
        or write costs microseconds in a process woken once per message) and written back to
        the arrays before anything else reads them."""
        expect = self._next_run.get(source)
        if expect is None:
            if self._flags[source] != _SEEN:
                return False
            expect = (int(self._epochs[source]) << COUNTER_BITS) | int(self._expected[source])
        if first_sequence != expect:
            return False
        self._next_run[source] = expect + n
        self._frames += n
        self._delivered += n
        return True

    def run_state(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The per-source (epochs, expected counters, flags) arrays, up to date, for a native
        check of a run (``runtime._forward``); it advances ``expected`` of what it takes and
        reports the count through :meth:`count_delivered`."""
        if self._next_run:
            self._sync_runs()
        return self._epochs, self._expected, self._flags

    def count_duplicates(self, n: int) -> None:
        """Frames handed out as old that nobody took after all: duplicates."""
        self._duplicates += n

    def count_delivered(self, n: int) -> None:
        self._frames += n
        self._delivered += n

    def _sync_runs(self) -> None:
        """Write what :meth:`feed_run` advanced back to the arrays (before any other path)."""
        for source, expect in self._next_run.items():
            self._expected[source] = expect & COUNTER_MASK
        self._next_run.clear()

    def resend_unavailable(self, source: int, first_sequence: int, oldest_available: int, now: float) -> TrackResult:
        """Upstream cannot resend from ``first_sequence``; it still holds ``oldest_available`` on
        (0 = nothing). Count the part that is gone as lost and move on."""
        self._sync_runs()
        gap = self._gaps.get(source)
        if gap is None or gap.epoch != first_sequence >> COUNTER_BITS:
            return TrackResult()
        available = oldest_available & COUNTER_MASK if oldest_available >> COUNTER_BITS == gap.epoch else 0
        if available and gap.first < available <= gap.last:
            # part of the hole is still there and on its way: skip only what is gone, and ask for
            # a snapshot, since state built from the messages that are gone cannot be trusted
            self._lost += available - gap.first
            gap.first = available
            gap.partly_lost = True
            self._expected[source] = available
            return TrackResult(requests=[SnapshotWanted(source)])
        return self._give_up(gap, GapEvent.UNAVAILABLE, now)

    def poll(self, now: float) -> TrackResult:
        """Give up on gaps whose resend did not arrive in time."""
        self._sync_runs()
        result = TrackResult()
        for gap in [g for g in self._gaps.values() if now - g.opened_at >= self.resend_timeout]:
            result.extend(self._give_up(gap, GapEvent.TIMED_OUT, now))
        return result

    def next_deadline(self) -> float | None:
        if not self._gaps:
            return None
        return min(g.opened_at for g in self._gaps.values()) + self.resend_timeout

    def statistics(self) -> SequenceStatistics:
        return SequenceStatistics(
            frames=self._frames,
            delivered=self._delivered,
            duplicates=self._duplicates,
            gaps_detected=self._gaps_detected,
            gaps_recovered=self._gaps_recovered,
            gaps_lost=self._gaps_lost,
            messages_recovered=self._recovered,
            messages_lost=self._lost,
            producer_restarts=self._restarts,
            joined_midstream=self._joins,
            sources=int(np.count_nonzero(self._flags & _SEEN)),
            open_gaps=len(self._gaps),
            held_frames=sum(len(b) for g in self._gaps.values() for b in g.held),
        )

    def has_seen(self, source: int) -> bool:
        return bool(self._flags[source] & _SEEN)

    def continue_from(self, other: SequenceTracker) -> int:
        """Take up ``other``'s place in each source it has seen that this tracker has not, or has
        seen less far into (same epoch, no gap open here): for a link that takes over another's
        sources (a ``peer`` relay's introduction moves them from the relay's link to direct ones,
        and back). What fell between the two then shows here as a gap, resent or counted, not as
        a mid-stream join, and what ``other`` delivered is not asked for again. Returns how many
        sources were taken up."""
        self._sync_runs()
        other._sync_runs()
        theirs, mine = (other._flags & _SEEN) != 0, (self._flags & _SEEN) != 0
        further = (mine & ((self._flags & _HOLDING) == 0) & (self._epochs == other._epochs)
                   & (other._expected > self._expected))
        take = theirs & (~mine | further)
        self._epochs[take] = other._epochs[take]
        self._expected[take] = other._expected[take]
        self._flags[take] = _SEEN
        return int(np.count_nonzero(take))

    def resume_from(self, positions: Mapping[int, int]) -> int:
        """Start each source in ``positions`` (source -> sequence of the last frame a consumer
        already has, e.g. in a recording it wrote before it was restarted) as if that frame had
        just been delivered, so what comes next is classed against it: the frames it missed
        while down open a gap (resent or counted lost), frames it has are duplicates, a
        producer restarted since is a new epoch. Sources this tracker has seen are left alone.
        Returns how many sources were set."""
        self._sync_runs()
        taken = 0
        for source, sequence in positions.items():
            if self._flags[source] & _SEEN or not sequence & COUNTER_MASK:
                continue
            self._epochs[source] = sequence >> COUNTER_BITS
            self._expected[source] = (sequence & COUNTER_MASK) + 1
            self._flags[source] = _SEEN
            taken += 1
        return taken

    def note_heads(self, heads: Mapping[int, int], now: float) -> TrackResult:
        """The upstream's newest sequence of each source it holds (its ``SequenceHead`` answer to
        this link's Subscribe, ahead of any frame). A source this tracker is positioned in
        (delivered before a reconnect, or resumed) whose head is past that position opens a gap
        at once, asked for like any other, instead of when the source next speaks (never, for one
        that went quiet). A source not seen yet is joined here: what comes next follows its head,
        and its state is asked for now. One whose epoch moved on restarted meanwhile (its frames
        from before are unknowable here, as at a NEW_EPOCH frame). Sources with a gap open, and
        heads behind this position (an older epoch included), are left alone."""
        self._sync_runs()
        result = TrackResult()
        for source, sequence in heads.items():
            epoch, counter = sequence >> COUNTER_BITS, sequence & COUNTER_MASK
            if not counter or source in self._gaps:
                continue
            if not self._flags[source] & _SEEN:
                self._flags[source] = _SEEN
                self._epochs[source], self._expected[source] = epoch, counter + 1
                self._joins += 1
                result.requests.append(SnapshotWanted(source, joined=True))
            elif epoch != (mine := int(self._epochs[source])):
                if not _later_epoch(epoch, mine):
                    continue  # the upstream holds only an older epoch than this link has seen
                self._epochs[source], self._expected[source] = epoch, counter + 1
                self._restarts += 1
                result.requests.append(SnapshotWanted(source, joined=True))
            elif counter >= (expected := int(self._expected[source])):
                self._gaps[source] = Gap(source, epoch, expected, counter, now)
                self._flags[source] |= _HOLDING
                self._gaps_detected += 1
                result.requests.append(
                    ResendWanted(source, (epoch << COUNTER_BITS) | expected, (epoch << COUNTER_BITS) | counter))
        return result

    def last_delivered(self, source: int) -> int | None:
        """Sequence of the last in-order frame from ``source`` (for resume after reconnect)."""
        self._sync_runs()
        if not self._flags[source] & _SEEN:
            return None
        return (int(self._epochs[source]) << COUNTER_BITS) | (int(self._expected[source]) - 1)

    # -- internals ------------------------------------------------------------------------
    def _classify_into(self, block: Any, now: float, result: TrackResult, n: int | None = None) -> None:
        n = len(block) if n is None else n
        classes = np.empty(n, np.uint8)
        # one kernel call classifies and counts; numpy masks only when something is not in order.
        # A FrameBlock whose header columns nobody decoded yet is classified from its bytes.
        if isinstance(block, FrameBlock) and "_columns" not in block.__dict__:
            n_deliver, n_duplicates, n_rare = classify_headers(
                frame_bytes(block), block.offsets, self._epochs, self._expected, self._flags, classes,
            )
        else:
            n_deliver, n_duplicates, n_rare = classify_and_count(
                block.source, block.sequence, self._epochs, self._expected, self._flags, classes,
            )
        self._delivered += n_deliver
        if n_duplicates and self.hand_out_old:
            result.old.append(block.select(classes == DUPLICATE))
        else:
            self._duplicates += n_duplicates
        deliver_at = len(result.deliver)  # frames a restart releases go before this block's own
        if n_deliver == n:
            result.deliver.append(block)
        elif n_deliver:
            deliverable = (classes <= IN_ORDER) | (classes >= FILL)  # FIRST, IN_ORDER, FILL, NEW_EPOCH, JOINED
            result.deliver.append(block.select(deliverable))
        if not n_rare:
            return
        rare = classes >= GAP  # GAP, HELD, FILL, NEW_EPOCH, JOINED
        # Rare path: per-source bookkeeping in Python.
        sources = block.source
        sequences = block.sequence
        for source in np.unique(sources[rare]).tolist():
            of_source = sources == source
            cls = classes[of_source]
            gap = self._gaps.get(source)
            if self._joined_midstream(cls, sequences[of_source]):
                self._joins += 1
                result.requests.append(SnapshotWanted(source, joined=True))
            if (cls == NEW_EPOCH).any():
                self._restarts += int(np.count_nonzero(cls == NEW_EPOCH))
                if gap is not None:
                    closed = self._close_for_restart(gap, now)
                    result.deliver[deliver_at:deliver_at] = closed.deliver
                    deliver_at += len(closed.deliver)
                    result.requests.extend(closed.requests)
                    gap = None
            gap_at = np.flatnonzero(cls == GAP)
            if gap_at.size:
                first_frame_seq = int(sequences[of_source][gap_at[0]])
                epoch, counter = first_frame_seq >> COUNTER_BITS, first_frame_seq & COUNTER_MASK
                expected = int(self._expected[source])
                gap = Gap(source, epoch, expected, counter - 1, now)
                self._gaps[source] = gap
                self._gaps_detected += 1
                result.requests.append(
                    ResendWanted(source, (epoch << COUNTER_BITS) | expected, (epoch << COUNTER_BITS) | (counter - 1))
                )
            if gap is not None:
                held_mask = of_source & ((classes == GAP) | (classes == HELD))
                if held_mask.any():
                    gap.held.append(block.select(held_mask))
                if int(self._expected[source]) > gap.last:
                    result.extend(self._recovered_gap(gap, now))

    @staticmethod
    def _joined_midstream(cls: np.ndarray, sequences: np.ndarray) -> bool:
        """Did this consumer start reading a source (or its new epoch) after its first frame?"""
        if (cls == JOINED).any():
            return True
        restarts = np.flatnonzero(cls == NEW_EPOCH)
        return bool(restarts.size) and int(sequences[restarts[-1]]) & COUNTER_MASK != 1

    def _recovered_gap(self, gap: Gap, now: float) -> TrackResult:
        gap.advance(GapEvent.FILLED)
        if gap.partly_lost:
            self._gaps_lost += 1
        else:
            self._gaps_recovered += 1
        self._recovered += gap.last - gap.first + 1
        return self._release(gap, now)

    def _give_up(self, gap: Gap, event: GapEvent, now: float) -> TrackResult:
        gap.advance(event)
        self._gaps_lost += 1
        missing_from = int(self._expected[gap.source])
        self._lost += max(0, gap.last - missing_from + 1)
        self._expected[gap.source] = gap.last + 1
        result = self._release(gap, now)
        result.requests.insert(0, SnapshotWanted(gap.source))
        return result

    def _close_for_restart(self, gap: Gap, now: float) -> TrackResult:
        """The producer restarted while a gap was open: what was missing is lost; frames held
        from the old epoch are still valid and are released (they precede the new epoch)."""
        gap.advance(GapEvent.PRODUCER_RESTARTED)
        self._gaps_lost += 1
        self._lost += gap.last - gap.first + 1
        del self._gaps[gap.source]
        result = TrackResult(requests=[SnapshotWanted(gap.source)])
        for held in gap.held:
            self._delivered += len(held)
            result.deliver.append(held)
        return result

    def _release(self, gap: Gap, now: float) -> TrackResult:
        """Un-hold a source and run its held frames through the classifier again, in order."""
        del self._gaps[gap.source]
        self._flags[gap.source] &= ~_HOLDING
        result = TrackResult()
        for held in gap.held:
            self._classify_into(held, now, result)
        return result

