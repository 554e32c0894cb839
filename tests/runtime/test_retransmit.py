"""The retransmit buffer: a byte ring that holds the newest frames and answers resend ranges."""

from __future__ import annotations

import gc

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from alphapulse import protocol
from alphapulse.runtime import RetransmitBuffer, make_sequence

EPOCH = 3


def frame(source: int, counter: int, trades: int = 1) -> bytes:
    """One message of ``trades`` Trade TLVs: frames of different sizes, each with its own time."""
    records = b"".join(
        protocol.encode(protocol.Trade(instrument_id=11, price=100 + i, quantity=counter, exchange_ts_ns=0))
        for i in range(trades)
    )
    return protocol.encode_message(1, source, make_sequence(EPOCH, counter), stamp(source, counter), records)


def stamp(source: int, counter: int) -> int:
    return 1_700_000_000 * 10**9 + source * 10**6 + counter


def sequences(blocks) -> list[int]:
    return [q for b in blocks for q in b.sequence.tolist()]


def test_holds_the_newest_capacity_messages_and_answers_ranges() -> None:
    buf = RetransmitBuffer(50, initial_bytes=64)
    for start in range(1, 201, 10):
        buf.append(protocol.FrameBlock.from_bytes(b"".join(frame(7, c) for c in range(start, start + 10))))
    assert len(buf) == 50
    answer = buf.lookup(7, make_sequence(EPOCH, 160), make_sequence(EPOCH, 170))
    assert answer.complete
    assert sequences(answer.blocks) == [make_sequence(EPOCH, c) for c in range(160, 171)]
    assert answer.oldest_available == make_sequence(EPOCH, 151)
    gone = buf.lookup(7, make_sequence(EPOCH, 100), make_sequence(EPOCH, 155))
    assert not gone.complete and buf.misses == 1
    assert sequences(gone.blocks) == [make_sequence(EPOCH, c) for c in range(151, 156)]
    assert buf.lookup(8, 1, 2).blocks == [] and buf.lookup(8, 1, 2).oldest_available == 0


def test_answer_is_a_copy_that_later_appends_do_not_overwrite() -> None:
    buf = RetransmitBuffer(4, initial_bytes=4 * 72, max_bytes=4 * 72)
    for c in range(1, 5):
        buf.append(protocol.FrameBlock.from_bytes(frame(1, c)))
    answer = buf.lookup(1, make_sequence(EPOCH, 1), make_sequence(EPOCH, 4))
    before = bytes(answer.blocks[0].data)
    for c in range(5, 50):  # the ring goes round many times
        buf.append(protocol.FrameBlock.from_bytes(frame(1, c)))
    assert bytes(answer.blocks[0].data) == before == b"".join(frame(1, c) for c in range(1, 5))


def test_keeps_no_python_object_per_held_message() -> None:
    buf = RetransmitBuffer(20_000)
    one = [protocol.FrameBlock.from_bytes(frame(1, c)) for c in range(1, 20_001)]
    gc.collect()
    tracked_before = len(gc.get_objects())
    for b in one:
        buf.append(b)
    del one, b
    gc.collect()
    assert len(buf) == 20_000
    assert len(gc.get_objects()) < tracked_before - 15_000  # the blocks are gone; only bytes are held


def test_byte_limit_forgets_oldest_and_counts_them() -> None:
    buf = RetransmitBuffer(1000, initial_bytes=256, max_bytes=1024)
    for c in range(1, 101):
        buf.append(protocol.FrameBlock.from_bytes(frame(2, c)))
    assert buf.bytes_reserved == 1024
    held = len(buf)
    assert 0 < held <= 1024 // 72
    assert buf.evicted_for_space == 100 - held
    answer = buf.lookup(2, make_sequence(EPOCH, 101 - held), make_sequence(EPOCH, 100))
    assert answer.complete
    big = protocol.FrameBlock.from_bytes(frame(2, 101, trades=40))  # over max_bytes: cannot be held
    buf.append(big)
    assert len(buf) == 0 and buf.evicted_for_space == 101


@settings(max_examples=120, deadline=None)
@given(
    capacity=st.integers(1, 40),
    initial_bytes=st.sampled_from([64, 100, 1000]),
    max_bytes=st.sampled_from([512, 2048, 3000, 1 << 20]),
    blocks=st.lists(
        st.lists(st.tuples(st.sampled_from([1, 2]), st.sampled_from([1, 2, 3, 4, 60])), min_size=1, max_size=12),
        min_size=1, max_size=30,
    ),
    ask=st.tuples(st.integers(1, 200), st.integers(0, 40)),
    asked_after=st.lists(st.booleans(), min_size=30, max_size=30),
)
def test_matches_a_list_of_every_frame(capacity, initial_bytes, max_bytes, blocks, ask, asked_after) -> None:
    """Whatever is appended, the ring holds a suffix of everything appended (the newest
    ``capacity`` unless bytes ran out), and a lookup returns exactly the held frames asked for;
    also after the store grew to a size that is not a multiple of the one before, and with
    lookups between appends (each brings the lookup index up to date from where the last left it)."""
    buf = RetransmitBuffer(capacity, initial_bytes=initial_bytes, max_bytes=max_bytes)
    appended: list[tuple[int, int, bytes]] = []  # (source, counter, bytes)
    counters = {1: 0, 2: 0}

    def check_lookups() -> None:
        held_frames = appended[len(appended) - len(buf):]
        first, width = ask
        for source in (1, 2):
            lo, hi = make_sequence(EPOCH, first), make_sequence(EPOCH, first + width)
            answer = buf.lookup(source, lo, hi)
            want = [raw for s, c, raw in held_frames if s == source and first <= c <= first + width]
            got = b"".join(bytes(b.data) for b in answer.blocks)
            assert got == b"".join(want)
            assert answer.complete == (len(want) == width + 1)
            mine = [c for s, c, _ in held_frames if s == source]
            assert answer.oldest_available == (make_sequence(EPOCH, min(mine)) if mine else 0)
        # how far back a resend reaches: the oldest held frame's time, part-forgotten blocks included
        assert buf.oldest_timestamp_ns() == (stamp(*held_frames[0][:2]) if held_frames else None)

    for spec, ask_now in zip(blocks, asked_after, strict=False):
        parts = []
        for source, trades in spec:
            counters[source] += 1
            raw = frame(source, counters[source], trades)
            parts.append(raw)
            appended.append((source, counters[source], raw))
        buf.append(protocol.FrameBlock.from_bytes(b"".join(parts)))
        held = len(buf)
        assert held <= capacity
        assert held == capacity or buf.evicted_for_space > 0 or held == len(appended)
        if ask_now:
            check_lookups()
    check_lookups()
    newest = {s: make_sequence(EPOCH, c) for s, c, _ in appended}  # held or not; later frames overwrite earlier
    assert buf.heads() == newest


def test_heads_name_each_sources_newest_frame_by_when_it_was_published() -> None:
    """What a publisher tells a new subscriber: a producer that restarted (a new epoch, its
    counter back at 1) shows its new epoch; a source none of whose frames is held any more is
    still there (a subscriber behind it learns now what it missed), also without a buffer."""
    buf = RetransmitBuffer(6)
    assert buf.heads() == {}
    buf.append(protocol.FrameBlock.from_bytes(frame(5, 1) + frame(5, 2)))
    buf.append(protocol.FrameBlock.from_bytes(
        protocol.encode_message(1, 6, make_sequence(EPOCH, 40), 0, b"") + frame(5, 3)))
    restarted = protocol.encode_message(1, 6, make_sequence(EPOCH + 1, 1), 0, b"")
    buf.append(protocol.FrameBlock.from_bytes(restarted))
    assert buf.heads() == {5: make_sequence(EPOCH, 3), 6: make_sequence(EPOCH + 1, 1)}
    for c in range(4, 10):  # six more of source 5: source 6 is no longer held
        buf.append(protocol.FrameBlock.from_bytes(frame(5, c)))
    assert buf.heads() == {5: make_sequence(EPOCH, 9), 6: make_sequence(EPOCH + 1, 1)}
    assert buf.lookup(6, make_sequence(EPOCH + 1, 1), make_sequence(EPOCH + 1, 1)).complete is False
    decoded = protocol.FrameDecoder().whole_frames(frame(7, 1) + frame(7, 2))  # the decoder's (source, first)
    assert decoded is not None and decoded.sequence_run == (7, make_sequence(EPOCH, 1))
    none_held = RetransmitBuffer(0)
    none_held.append(decoded)
    assert none_held.heads() == {7: make_sequence(EPOCH, 2)} and len(none_held) == 0


def test_large_block_slices_to_capacity() -> None:
    buf = RetransmitBuffer(10)
    buf.append(protocol.FrameBlock.from_bytes(b"".join(frame(1, c) for c in range(1, 101))))
    answer = buf.lookup(1, make_sequence(EPOCH, 1), make_sequence(EPOCH, 100))
    assert sequences(answer.blocks) == [make_sequence(EPOCH, c) for c in range(91, 101)]
    assert np.all(answer.blocks[0].source == 1)


def test_frames_held_across_a_growth_to_an_unrelated_size_are_answered_whole() -> None:
    """A 1000-byte store round its fourth lap holds a frame at stream bytes 4072-4143. A block
    over twice the store's size grows it to 4096 bytes: kept at its stream position that frame
    would straddle the new store's end, and a resend would answer it with another frame's bytes."""
    buf = RetransmitBuffer(10, initial_bytes=1000)
    for c in range(1, 55):
        buf.append(protocol.FrameBlock.from_bytes(frame(1, c)))
    buf.append(protocol.FrameBlock.from_bytes(frame(1, 55, trades=60)))
    assert buf.bytes_reserved == 4096 and len(buf) == 10
    answer = buf.lookup(1, make_sequence(EPOCH, 1), make_sequence(EPOCH, 55))
    assert b"".join(bytes(b.data) for b in answer.blocks) == b"".join(
        [*(frame(1, c) for c in range(46, 55)), frame(1, 55, trades=60)]
    )



async def test_a_node_s_flush_says_its_run_and_the_heads_follow_it(tmp_path) -> None:
    """A node's flush numbers its messages one after another and says so on the block (as the
    decoder does for what it reads), so its publisher notes the head without reading headers:
    the heads name the last message flushed, one flush after another, as the held frames show."""
    import logging

    from alphapulse.runtime import BreakerSettings, NodeContext, open_publisher

    ctx = NodeContext(name="n", kind="test", source_id=77, relay_domain=1, log=logging.getLogger("test.n"),
                      breaker_settings=BreakerSettings())
    trade = protocol.Trade(instrument_id=11, price=1, quantity=1, exchange_ts_ns=0)
    async with open_publisher(str(tmp_path / "p.sock"), source_id=77) as pub:
        ctx._publisher = pub
        for count in (3, 1, 5):
            for _ in range(count):
                ctx.message(trade)
            ctx.flush_nowait()
            held = pub.retransmit.lookup(77, 1, 1 << 63)
            sequences = protocol.FrameBlock.concat(held.blocks).sequence.tolist()
            assert pub.retransmit.heads() == {77: ctx.last_sequence} and sequences[-1] == ctx.last_sequence
    assert len(sequences) == 9 and sequences == list(range(sequences[0], sequences[0] + 9))
