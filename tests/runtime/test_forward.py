"""The relay's direct path check (``runtime._forward.check_run``): it takes exactly the reads the
decoder's quick path and the tracker's run path would take, and advances the tracker only then."""

from __future__ import annotations

import numpy as np

from alphapulse import protocol
from alphapulse.runtime import SequenceTracker, make_sequence
from alphapulse.runtime._forward import check_run

from ._frames import block, trade_frames

MARKET = int(protocol.RelayDomain.MARKET_DATA)


def run(data: bytes, tracker: SequenceTracker, domain: int = MARKET) -> int:
    buf = np.frombuffer(data, np.uint8)
    return int(check_run(buf, len(buf), domain, protocol.MAX_PAYLOAD_SIZE, True, *tracker.run_state(),
                         np.empty(16, np.int64)))


def seen(counter: int) -> SequenceTracker:
    tracker = SequenceTracker()
    tracker.feed(block(trade_frames(5, 1, [counter])), 0.0)
    return tracker


def test_takes_the_next_frames_of_a_known_source_and_advances_the_tracker() -> None:
    tracker = seen(1)
    assert run(trade_frames(5, 1, [2, 3, 4]), tracker) == 3
    assert run(trade_frames(5, 1, [5]), tracker) == 1
    assert tracker.last_delivered(5) == make_sequence(1, 5)  # the tracker expects 6 next


def test_a_source_with_a_gap_open_is_left_to_the_tracker() -> None:
    tracker = seen(1)
    tracker.feed(block(trade_frames(5, 1, [3])), 0.0)  # 2 is missing: 3 is held
    assert run(trade_frames(5, 1, [2]), tracker) == 0  # the fill must release what is held


def test_declines_what_the_ordinary_path_must_see() -> None:
    tracker = seen(1)
    good = trade_frames(5, 1, [2])
    bad_crc = bytearray(good)
    bad_crc[-1] ^= 1
    cases = {
        "unseen source": trade_frames(6, 1, [1]),
        "gap": trade_frames(5, 1, [3]),
        "duplicate": trade_frames(5, 1, [1]),
        "new epoch": trade_frames(5, 2, [1]),
        "bad crc": bytes(bad_crc),
        "partial frame": good[:-1],
        "two sources": good + trade_frames(6, 1, [1]),
        "not consecutive": trade_frames(5, 1, [2, 4]),
        "seventeen frames": trade_frames(5, 1, range(2, 19)),
    }
    for what, data in cases.items():
        assert run(data, tracker) == 0, what
    assert run(good, tracker, domain=int(protocol.RelayDomain.SIGNAL)) == 0  # another relay's domain
    assert run(good, tracker) == 1  # none of the above moved the tracker
