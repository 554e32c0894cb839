"""A consuming link's direct read (``runtime._direct_read``) over a real socket pair: it takes
exactly the reads the decoder's quick path and the tracker's run path would take, gives the same
block, and leaves everything else to the ordinary path untouched."""

from __future__ import annotations

import socket

import numpy as np
import pytest

from alphapulse import protocol
from alphapulse.runtime import SequenceTracker, make_sequence
from alphapulse.runtime._direct_read import NOT_TAKEN, READ_FAILED, TAKEN, DirectReader

from ._frames import block, trade_frames

SOURCE, EPOCH = 5, 1


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    b.setblocking(False)
    with a, b:
        yield a, b


def seen(counter: int) -> SequenceTracker:
    tracker = SequenceTracker()
    tracker.feed(block(trade_frames(SOURCE, EPOCH, [counter])), 0.0)
    return tracker


def read(pair, data: bytes, tracker: SequenceTracker, *, verify: bool = True, read_size: int = 1 << 16):
    a, b = pair
    a.sendall(data)
    decoder = protocol.FrameDecoder(verify_checksums=verify)
    return DirectReader(read_size).read(b.fileno(), decoder, tracker), decoder


def test_takes_a_known_sources_next_frames_as_the_quick_path_would(pair) -> None:
    tracker = seen(1)
    data = trade_frames(SOURCE, EPOCH, range(2, 12))
    (status, n, got), decoder = read(pair, data, tracker)
    assert (status, n) == (TAKEN, len(data))
    quick = protocol.FrameDecoder().whole_frames(data)
    assert got.data == data and isinstance(got.data, bytes)  # owned: the read buffer is reused
    assert np.array_equal(got.offsets, quick.offsets) and np.array_equal(got.sizes, quick.sizes)
    assert got.control_frames == 0 and got.relay_domain_all == quick.relay_domain_all == 1
    assert got.sequence.tolist() == [make_sequence(EPOCH, c) for c in range(2, 12)]
    assert tracker.last_delivered(SOURCE) == make_sequence(EPOCH, 11)  # the tracker expects 12 next
    assert tracker.statistics().delivered == 11
    assert decoder.statistics().frames == 10


def test_frames_of_different_sizes_get_their_own_bounds(pair) -> None:
    tracker = seen(1)
    quote = protocol.encode_message(1, SOURCE, make_sequence(EPOCH, 3), 0, protocol.encode(
        protocol.Quote(instrument_id=11, bid_price=1, bid_qty=1, ask_price=2, ask_qty=1, exchange_ts_ns=0)))
    data = trade_frames(SOURCE, EPOCH, [2]) + quote
    (status, _, got), _ = read(pair, data, tracker)
    assert status == TAKEN and len(quote) != 72
    assert got.sizes.tolist() == [72, len(quote)] and got.offsets.tolist() == [0, 72]


def test_declines_what_the_ordinary_path_must_see_and_changes_nothing(pair) -> None:
    good = trade_frames(SOURCE, EPOCH, [2])
    bad_crc = bytearray(good)
    bad_crc[-1] ^= 1
    control = protocol.encode_message(1, SOURCE, 0, 0, protocol.encode(
        protocol.ResendRequest(source=SOURCE, first_sequence=1, last_sequence=2)))
    cases = {
        "unseen source": trade_frames(6, 1, [1]),
        "gap": trade_frames(SOURCE, EPOCH, [3]),
        "duplicate": trade_frames(SOURCE, EPOCH, [1]),
        "new epoch": trade_frames(SOURCE, 2, [1]),
        "bad crc": bytes(bad_crc),
        "control frame": control,
        "two sources": good + trade_frames(6, 1, [1]),
        "not consecutive": trade_frames(SOURCE, EPOCH, [2, 4]),
    }
    for what, data in cases.items():
        tracker = seen(1)
        (status, n, got), decoder = read(pair, data, tracker)
        assert (status, n, got) == (NOT_TAKEN, len(data), None), what
        assert tracker.last_delivered(SOURCE) == make_sequence(EPOCH, 1), what
        assert decoder.statistics().frames == 0, what


def test_a_bad_checksum_passes_only_where_the_link_does_not_verify(pair) -> None:
    data = bytearray(trade_frames(SOURCE, EPOCH, [2, 3]))
    data[-1] ^= 1
    (status, _, _), _ = read(pair, bytes(data), seen(1), verify=False)
    assert status == TAKEN


def test_a_partial_frame_and_a_full_buffer_go_the_ordinary_way(pair) -> None:
    frames = trade_frames(SOURCE, EPOCH, [2, 3])
    (status, n, _), _ = read(pair, frames[:-1], seen(1))
    assert (status, n) == (NOT_TAKEN, len(frames) - 1)
    many = trade_frames(SOURCE, EPOCH, range(2, 12))  # 720 bytes into a 144-byte buffer: more is coming
    (status, n, _), _ = read(pair, many, seen(1), read_size=144)
    assert (status, n) == (NOT_TAKEN, 144)


def test_an_empty_socket_and_eof_are_read_failures(pair) -> None:
    a, b = pair
    reader, decoder = DirectReader(1 << 16), protocol.FrameDecoder()
    assert reader.read(b.fileno(), decoder, seen(1))[:2] == (READ_FAILED, -1)  # EAGAIN: read again to see
    a.shutdown(socket.SHUT_WR)
    assert reader.read(b.fileno(), decoder, seen(1))[:2] == (READ_FAILED, 0)
