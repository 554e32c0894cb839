"""ResendChain (sans-IO): which subscriber gets which resent frames, and when a request ends."""

from __future__ import annotations

from alphapulse.runtime import SequenceTracker, make_sequence
from alphapulse.runtime._chain import ResendChain

from ._frames import block, counters_of, trade_frames

A, B, EPOCH = 7, 9, 3


def seq(counter: int, epoch: int = EPOCH) -> int:
    return make_sequence(epoch, counter)


def test_resent_frames_go_to_each_subscriber_that_asked_and_identical_requests_are_sent_once() -> None:
    chain = ResendChain(timeout=1.0)
    assert chain.ask("s1", A, seq(101), seq(200), now=0.0) is True
    assert chain.ask("s2", A, seq(101), seq(200), now=0.1) is False  # on its way already: joins it
    assert chain.ask("s3", B, seq(5), seq(9), now=0.1) is True
    mixed = block(trade_frames(A, EPOCH, range(101, 151)), trade_frames(B, EPOCH, [5, 6]),
                  trade_frames(A, EPOCH, [90]))
    deliveries, unclaimed = chain.route(mixed)
    assert unclaimed == 1  # A's 90 was asked for by nobody: a true duplicate
    assert [(subs, counters_of([frames])) for subs, frames in deliveries] == [
        (["s1", "s2"], [(A, c) for c in range(101, 151)]),
        (["s3"], [(B, 5), (B, 6)]),
    ]
    deliveries, unclaimed = chain.route(block(trade_frames(A, EPOCH, range(151, 201))))
    assert unclaimed == 0 and counters_of([deliveries[0][1]]) == [(A, c) for c in range(151, 201)]
    assert [(e.source, e.first_sequence) for e in chain.pending] == [(B, seq(7))]  # A's is complete
    stats = chain.statistics()
    assert (stats.chained_requests, stats.chained_messages, stats.pending) == (2, 102, 1)


def test_a_range_gone_upstream_is_passed_on_and_a_newer_part_still_comes() -> None:
    chain = ResendChain(timeout=1.0)
    chain.ask("s1", A, seq(101), seq(200), now=0.0)
    chain.ask("s2", B, seq(1), seq(9), now=0.0)
    assert chain.unavailable(A, seq(5), seq(150)) == []  # not a range this chain asked for
    assert chain.unavailable(A, seq(101), seq(150)) == ["s1"]  # 101..149 gone, 150..200 coming
    assert [(e.source, e.first_sequence) for e in chain.pending] == [(A, seq(150)), (B, seq(1))]
    assert chain.unavailable(B, seq(1), 0) == ["s2"]  # nothing held upstream: the request ends
    assert chain.unavailable(A, seq(101), seq(1, epoch=EPOCH + 1)) == ["s1"]  # another epoch: all gone
    assert chain.pending == []
    assert chain.statistics().chained_unavailable == 3


def test_overdue_requests_are_forgotten() -> None:
    chain = ResendChain(timeout=0.5)
    chain.ask("s1", A, seq(1), seq(2), now=0.0)
    chain.expire(now=0.49)
    assert len(chain.pending) == 1
    assert chain.ask("s2", B, seq(1), seq(2), now=0.5) is True  # asking expires what is overdue
    assert [e.source for e in chain.pending] == [B]
    assert chain.statistics().chained_expired == 1
    assert chain.route(block(trade_frames(A, EPOCH, [1, 2]))) == ([], 2)


def test_a_tracker_hands_out_old_frames_only_while_asked_and_counts_them_otherwise() -> None:
    tracker = SequenceTracker()
    tracker.feed(block(trade_frames(A, EPOCH, range(50, 61))), 0.0)  # joined at 50
    tracker.hand_out_old = True
    result = tracker.feed(block(trade_frames(A, EPOCH, [20, 21, 61])), 0.0)
    assert counters_of(result.old) == [(A, 20), (A, 21)] and counters_of(result.deliver) == [(A, 61)]
    assert tracker.statistics().duplicates == 0  # the caller counts what nobody takes
    tracker.count_duplicates(1)
    tracker.hand_out_old = False
    result = tracker.feed(block(trade_frames(A, EPOCH, [22])), 0.0)
    assert result.old == [] and result.deliver == []
    assert tracker.statistics().duplicates == 2
