"""SequenceTracker: gaps held and recovered in order, given up with counts, epochs, duplicates."""

from __future__ import annotations

from alphapulse.runtime import GAP_TRANSITIONS, SequenceTracker, make_sequence
from alphapulse.runtime._sequence import ResendWanted, SnapshotWanted

from ._frames import block, counters_of, trade_frames

A, B = 7, 9


def test_in_order_frames_pass_through_as_the_same_block() -> None:
    tracker = SequenceTracker()
    b = block(trade_frames(A, 1, range(1, 101)))
    result = tracker.feed(b, now=0.0)
    assert result.deliver == [b] and result.requests == []
    stats = tracker.statistics()
    assert (stats.frames, stats.delivered, stats.sources, stats.open_gaps) == (100, 100, 1, 0)


def test_duplicates_are_dropped_and_counted() -> None:
    tracker = SequenceTracker()
    tracker.feed(block(trade_frames(A, 1, range(1, 11))), 0.0)
    result = tracker.feed(block(trade_frames(A, 1, [5, 10, 11])), 0.0)
    assert counters_of(result.deliver) == [(A, 11)]
    assert tracker.statistics().duplicates == 2


def test_gap_holds_that_source_only_and_resend_fills_it_in_order() -> None:
    tracker = SequenceTracker(resend_timeout=1.0)
    tracker.feed(block(trade_frames(A, 1, range(1, 6)), trade_frames(B, 3, [1])), 0.0)
    # 6..8 of A are missing; B keeps flowing
    result = tracker.feed(block(trade_frames(A, 1, [9, 10]), trade_frames(B, 3, [2])), 0.1)
    assert counters_of(result.deliver) == [(B, 2)]
    assert result.requests == [ResendWanted(A, make_sequence(1, 6), make_sequence(1, 8))]
    assert tracker.statistics().held_frames == 2
    result = tracker.feed(block(trade_frames(A, 1, [11])), 0.2)  # still held
    assert result.deliver == []
    # the resend arrives: 6, 7, 8 then the held 9, 10, 11 follow in order
    result = tracker.feed(block(trade_frames(A, 1, [6, 7, 8])), 0.3)
    assert counters_of(result.deliver) == [(A, n) for n in range(6, 12)]
    stats = tracker.statistics()
    assert (stats.gaps_detected, stats.gaps_recovered, stats.messages_recovered, stats.messages_lost) == (1, 1, 3, 0)
    assert (stats.open_gaps, stats.held_frames) == (0, 0)


def test_timeout_counts_the_loss_releases_held_frames_and_asks_for_a_snapshot() -> None:
    tracker = SequenceTracker(resend_timeout=0.5)
    tracker.feed(block(trade_frames(A, 1, [1, 2])), 0.0)
    tracker.feed(block(trade_frames(A, 1, [5, 6])), 0.1)
    assert tracker.next_deadline() == 0.6
    assert tracker.poll(0.5).deliver == []
    result = tracker.poll(0.6)
    assert result.requests == [SnapshotWanted(A)]
    assert counters_of(result.deliver) == [(A, 5), (A, 6)]
    stats = tracker.statistics()
    assert (stats.gaps_lost, stats.messages_lost, stats.open_gaps) == (1, 2, 0)
    # afterwards the stream continues normally
    assert counters_of(tracker.feed(block(trade_frames(A, 1, [7])), 0.7).deliver) == [(A, 7)]


def test_unavailable_partially_skips_what_is_gone_and_waits_for_the_rest() -> None:
    tracker = SequenceTracker(resend_timeout=10)
    tracker.feed(block(trade_frames(A, 1, [1])), 0.0)
    tracker.feed(block(trade_frames(A, 1, [10])), 0.0)  # gap 2..9
    result = tracker.resend_unavailable(A, make_sequence(1, 2), oldest_available=make_sequence(1, 6), now=0.1)
    assert result.deliver == [] and result.requests == [SnapshotWanted(A)]
    result = tracker.feed(block(trade_frames(A, 1, [6, 7, 8, 9])), 0.2)
    assert counters_of(result.deliver) == [(A, n) for n in (6, 7, 8, 9, 10)]
    stats = tracker.statistics()
    assert (stats.messages_lost, stats.messages_recovered) == (4, 4)
    assert (stats.gaps_recovered, stats.gaps_lost) == (0, 1)  # partly lost is lost


def test_fully_unavailable_gives_up_at_once() -> None:
    tracker = SequenceTracker(resend_timeout=10)
    tracker.feed(block(trade_frames(A, 1, [1])), 0.0)
    tracker.feed(block(trade_frames(A, 1, [4])), 0.0)
    result = tracker.resend_unavailable(A, make_sequence(1, 2), oldest_available=0, now=0.1)
    assert result.requests == [SnapshotWanted(A)]
    assert counters_of(result.deliver) == [(A, 4)]
    assert tracker.statistics().messages_lost == 2


def test_new_epoch_is_a_restart_not_a_gap() -> None:
    tracker = SequenceTracker()
    tracker.feed(block(trade_frames(A, 1, range(1, 50))), 0.0)
    result = tracker.feed(block(trade_frames(A, 2, [1, 2, 3])), 0.1)
    assert counters_of(result.deliver) == [(A, 1), (A, 2), (A, 3)]
    stats = tracker.statistics()
    assert (stats.producer_restarts, stats.gaps_detected, stats.messages_lost) == (1, 0, 0)


def test_joining_mid_stream_delivers_and_asks_for_a_snapshot_once() -> None:
    """A consumer whose first frame of a source is not that source's first missed its mappings
    and books: everything is delivered, and one snapshot of that source is asked for."""
    tracker = SequenceTracker()
    b = block(trade_frames(A, 1, range(40, 45)), trade_frames(B, 3, [1, 2]))
    result = tracker.feed(b, 0.0)
    assert counters_of(result.deliver) == [(A, n) for n in range(40, 45)] + [(B, 1), (B, 2)]
    assert result.requests == [SnapshotWanted(A)]  # B was seen from its counter 1: nothing missed
    result = tracker.feed(block(trade_frames(A, 1, [45]), trade_frames(B, 3, [3])), 0.1)
    assert result.requests == [] and counters_of(result.deliver) == [(A, 45), (B, 3)]
    stats = tracker.statistics()
    assert (stats.joined_midstream, stats.gaps_detected, stats.messages_lost, stats.delivered) == (1, 0, 0, 9)


def test_a_restart_seen_from_its_start_needs_no_snapshot_one_joined_late_does() -> None:
    tracker = SequenceTracker()
    tracker.feed(block(trade_frames(A, 1, [1, 2])), 0.0)
    assert tracker.feed(block(trade_frames(A, 2, [1, 2])), 0.1).requests == []
    result = tracker.feed(block(trade_frames(A, 3, [7, 8])), 0.2)  # epoch 3's first six went by unseen
    assert result.requests == [SnapshotWanted(A)] and counters_of(result.deliver) == [(A, 7), (A, 8)]
    stats = tracker.statistics()
    assert (stats.producer_restarts, stats.joined_midstream, stats.messages_lost) == (2, 1, 0)


def test_restart_during_a_gap_closes_it_as_lost() -> None:
    tracker = SequenceTracker(resend_timeout=10)
    tracker.feed(block(trade_frames(A, 1, [1])), 0.0)
    tracker.feed(block(trade_frames(A, 1, [5])), 0.0)
    result = tracker.feed(block(trade_frames(A, 2, [1])), 0.1)
    assert counters_of(result.deliver) == [(A, 5), (A, 1)]
    assert SnapshotWanted(A) in result.requests
    stats = tracker.statistics()
    assert (stats.gaps_lost, stats.messages_lost, stats.open_gaps) == (1, 3, 0)


def test_gap_states_form_a_table_with_terminal_states() -> None:
    targets = set(GAP_TRANSITIONS.values())
    sources = {state for state, _ in GAP_TRANSITIONS}
    assert not targets & sources  # recovered and lost are final


def test_feed_run_fast_path_agrees_with_feed() -> None:
    """feed_run takes only frames that run on from what a known source with no gap open expects,
    and counts them as feed would; everything else is left to feed."""
    fast, slow = SequenceTracker(), SequenceTracker()
    assert not fast.feed_run(A, make_sequence(1, 1), 1)  # never seen: feed records the first
    for t in (fast, slow):
        t.feed(block(trade_frames(A, 1, [1])), 0.0)
    assert fast.feed_run(A, make_sequence(1, 2), 1)
    assert fast.feed_run(A, make_sequence(1, 3), 3)
    slow.feed(block(trade_frames(A, 1, [2])), 0.0)
    slow.feed(block(trade_frames(A, 1, [3, 4, 5])), 0.0)
    assert fast.statistics() == slow.statistics()
    assert not fast.feed_run(A, make_sequence(1, 5), 1)  # duplicate
    assert not fast.feed_run(A, make_sequence(1, 9), 2)  # gap
    assert not fast.feed_run(A, make_sequence(2, 6), 1)  # new epoch
    assert not fast.feed_run(B, make_sequence(1, 6), 1)  # another source, never seen
    assert fast.statistics() == slow.statistics()  # refusals change nothing
    fast.feed(block(trade_frames(A, 1, [9])), 0.0)  # the gap opens (held)
    assert not fast.feed_run(A, make_sequence(1, 6), 1)  # gap open: the fill goes through feed
    assert counters_of(fast.feed(block(trade_frames(A, 1, [6, 7, 8])), 0.0).deliver) == [
        (A, 6), (A, 7), (A, 8), (A, 9)]


def test_resume_from_where_a_consumer_left_off() -> None:
    """A restarted consumer that kept what it had (a recorder) starts each source at its last
    frame: the stretch it missed is a gap asked for, what it has is duplicate, no snapshot."""
    tracker = SequenceTracker(resend_timeout=1.0)
    assert tracker.resume_from({A: make_sequence(1, 10), B: make_sequence(3, 4), 11: make_sequence(2, 0)}) == 2
    result = tracker.feed(block(trade_frames(A, 1, [9, 10, 14]), trade_frames(B, 3, [5])), 0.0)
    assert counters_of(result.deliver) == [(B, 5)]  # A's 9, 10 were had; 14 waits for 11..13
    assert result.requests == [ResendWanted(A, make_sequence(1, 11), make_sequence(1, 13))]
    stats = tracker.statistics()
    assert (stats.duplicates, stats.joined_midstream, stats.gaps_detected) == (2, 0, 1)
    # a producer restarted meanwhile: a new epoch, as for any consumer
    result = tracker.feed(block(trade_frames(B, 4, [1])), 0.1)
    assert counters_of(result.deliver) == [(B, 1)] and tracker.statistics().producer_restarts == 1
    # a source seen already is not moved back
    assert tracker.resume_from({B: make_sequence(3, 99)}) == 0


def test_heads_open_the_gap_of_a_quiet_source_before_it_speaks_again() -> None:
    """The upstream's SequenceHead answer to a Subscribe: a source this link is positioned in
    (resumed, or delivered before a reconnect) whose head is past that position is a gap now,
    resent and filled like any other; the frames that follow it wait for the fill."""
    tracker = SequenceTracker(resend_timeout=1.0)
    tracker.resume_from({A: make_sequence(1, 10)})
    result = tracker.note_heads({A: make_sequence(1, 15)}, 0.0)
    assert result.requests == [ResendWanted(A, make_sequence(1, 11), make_sequence(1, 15))]
    assert tracker.statistics().gaps_detected == 1 and tracker.next_deadline() == 1.0
    held = tracker.feed(block(trade_frames(A, 1, [16])), 0.1)  # live again before the resend lands
    assert held.deliver == []
    filled = tracker.feed(block(trade_frames(A, 1, range(11, 16))), 0.2)
    assert counters_of(filled.deliver) == [(A, c) for c in range(11, 17)]
    stats = tracker.statistics()
    assert (stats.gaps_recovered, stats.messages_recovered, stats.open_gaps) == (1, 5, 0)


def test_heads_join_unseen_sources_and_leave_the_rest_alone() -> None:
    tracker = SequenceTracker(resend_timeout=1.0)
    tracker.feed(block(trade_frames(A, 1, range(1, 6))), 0.0)
    result = tracker.note_heads({
        A: make_sequence(1, 5),  # where this link is: nothing to do
        B: make_sequence(3, 40),  # never seen: joined mid-stream, state asked for now
        11: make_sequence(2, 0),  # nothing published yet
    }, 0.0)
    assert result.requests == [SnapshotWanted(B, joined=True)]
    assert tracker.statistics().joined_midstream == 1
    after = tracker.feed(block(trade_frames(B, 3, [41]), trade_frames(A, 1, [6])), 0.1)
    assert counters_of(after.deliver) == [(B, 41), (A, 6)] and after.requests == []  # in order: no second join
    # a head behind this link's position (the upstream holds less) changes nothing
    assert tracker.note_heads({A: make_sequence(1, 2)}, 0.2).requests == []


def test_heads_of_a_restarted_producer_or_of_a_source_with_a_gap_open() -> None:
    tracker = SequenceTracker(resend_timeout=1.0)
    tracker.feed(block(trade_frames(A, 1, range(1, 4)), trade_frames(B, 1, [1, 5])), 0.0)  # B: gap 2..4
    result = tracker.note_heads({A: make_sequence(2, 7), B: make_sequence(1, 9)}, 0.1)
    assert result.requests == [SnapshotWanted(A, joined=True)]  # A restarted meanwhile; B's gap is being resent
    stats = tracker.statistics()
    assert (stats.producer_restarts, stats.gaps_detected, stats.open_gaps) == (1, 1, 1)
    assert counters_of(tracker.feed(block(trade_frames(A, 2, [8])), 0.2).deliver) == [(A, 8)]
    # an upstream that holds only the older epoch (this link saw the restart first) changes nothing
    assert tracker.note_heads({A: make_sequence(1, 90)}, 0.3).requests == []
    assert counters_of(tracker.feed(block(trade_frames(A, 2, [9])), 0.4).deliver) == [(A, 9)]
    # epochs wrap (tenths of a second, 24 bits): the one just past the wrap is the later one
    wrapped = SequenceTracker()
    wrapped.feed(block(trade_frames(A, (1 << 24) - 1, [5])), 0.0)
    assert wrapped.note_heads({A: make_sequence(1, 3)}, 0.1).requests == [SnapshotWanted(A, joined=True)]
