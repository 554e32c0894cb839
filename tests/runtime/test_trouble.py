"""Drops and errors to the log without a line per message (``runtime/_trouble.py``)."""

from __future__ import annotations

from alphapulse.runtime._input import InputStatistics
from alphapulse.runtime._publisher import PublisherStatistics, SubscriberStatistics
from alphapulse.runtime._trouble import TroubleLog, describe, trouble_counters


def test_first_trouble_at_once_then_at_most_once_per_interval() -> None:
    log = TroubleLog(interval=10.0)
    assert log.poll(0.0, {}) == {}
    assert log.poll(1.0, {"dropped.x": 3}) == {"dropped.x": 3}  # the first: at once
    assert log.poll(2.0, {"dropped.x": 5}) == {}  # too soon: held back, not forgotten
    assert log.poll(5.0, {"dropped.x": 9, "errors.y": 1}) == {}
    assert log.poll(11.0, {"dropped.x": 9, "errors.y": 1}) == {"dropped.x": 6, "errors.y": 1}
    assert log.poll(30.0, {"dropped.x": 9, "errors.y": 1}) == {}  # nothing grew: nothing to say
    assert log.poll(31.0, {"dropped.x": 2, "errors.y": 1}) == {"dropped.x": 2}  # it started again (reconnect)


def test_counters_that_mean_trouble_and_their_line() -> None:
    link = InputStatistics(
        upstream="src", connected=True, connects=2, reconnects=1, received_messages=100, received_bytes=7200,
        control_messages=0, decode_errors={"bad_checksum": 2, "bad_magic": 0}, resend_requests=1,
        snapshot_requests=0, resend_unavailable=1, lane_reads=0, sequence={"messages_lost": 4, "duplicates": 9},
    )
    def subscriber(name: str, dropped: int) -> SubscriberStatistics:
        return SubscriberStatistics(name=name, overflow="drop_oldest", queue_limit=10, queued_messages=0,
                                    sent_messages=1, sent_bytes=72, dropped_overflow=dropped, resent_messages=0,
                                    connected=True)
    publisher = PublisherStatistics(
        published_messages=100, published_bytes=7200, subscribers=(subscriber("fast", 0), subscriber("slow", 40)),
        disconnected_for_overflow=1, retransmit_held=100, retransmit_bytes_reserved=0, retransmit_evicted_for_space=0,
        resend_requests=0, resend_misses=0, resends_passed_upstream=0, control_errors=0,
    )
    counters = {"received": 100, "dropped.crossed_book": 1, "errors.bad_tlv": 3, "signals": 7}
    totals = trouble_counters(counters, [link], publisher)
    assert totals == {
        "dropped.crossed_book": 1, "errors.bad_tlv": 3, "decode_errors.bad_checksum from src": 2,
        "lost from src": 4, "dropped.overflow to slow": 40, "disconnected_for_overflow": 1,
    }  # duplicates after a resend are expected, not trouble; zero counts are left out
    assert describe(TroubleLog().poll(0.0, totals)) == (
        "decode_errors.bad_checksum from src +2, disconnected_for_overflow +1, dropped.crossed_book +1, "
        "dropped.overflow to slow +40, errors.bad_tlv +3, lost from src +4"
    )
