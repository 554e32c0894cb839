"""FrameDecoder under hostile input: exact error counters, resync, caps, zero copy, O(bytes)."""

from __future__ import annotations

import random
import struct

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import alphapulse.protocol as P
from alphapulse.protocol import _decoder

from .conftest import drain, feed

TRADE = P.Trade(P.spot("coinbase", "BTC", "USD").id, 6_500_000_000_000, 1, 2, P.Side.SELL)


def messages(n: int, source: int = 5) -> list[bytes]:
    builder = P.MessageBuilder(P.RelayDomain.MARKET_DATA, source)
    return [builder.build(TRADE, 1_000 + i) for i in range(n)]


def chunkings(stream: bytes):
    yield [stream]
    yield [stream[i : i + 1] for i in range(len(stream))]
    rng = random.Random(len(stream))
    for _ in range(5):
        cuts = sorted(rng.sample(range(1, len(stream)), min(8, len(stream) - 1)))
        yield [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]


def check(stream: bytes, expected_frames: list[bytes], **errors: int) -> P.DecoderStatistics:
    """Same frames and the exact same counters however the stream is chunked."""
    seen = None
    for chunks in chunkings(stream):
        frames, decoder = feed(chunks)
        assert frames == expected_frames
        stats = decoder.statistics()
        assert stats.errors == {k: errors.get(k, 0) for k in P.ERROR_KINDS}, stats
        assert stats.frames == len(expected_frames)
        assert stats.bytes + stats.bytes_skipped == len(stream)
        assert seen is None or stats == seen
        seen = stats
    return seen


def test_clean_stream():
    good = messages(4)
    check(b"".join(good), good)


def test_garbage_between_frames_is_one_bad_magic_run():
    good = messages(3)
    stats = check(good[0] + b"\x00garbage\xef\xbe\xad" + good[1] + b"zz" + good[2], good, bad_magic=2)
    assert stats.bytes_skipped == 11 + 2


def test_leading_and_trailing_garbage():
    good = messages(2)
    check(b"hello" + b"".join(good) + b"\xef\xbe", good, bad_magic=1, truncated=1)
    check(b"".join(good) + b"xyz", good, bad_magic=1)


def test_bad_version_checksum_and_oversize_each_counted_once():
    good = messages(4)
    bad_version = bytearray(good[0])
    bad_version[4] = 2
    bad_crc = bytearray(good[1])
    bad_crc[40] ^= 0x01
    oversize = bytearray(good[2])
    struct.pack_into("<I", oversize, 24, P.MAX_PAYLOAD_SIZE + 1)
    stream = bytes(bad_version) + good[0] + bytes(bad_crc) + good[1] + bytes(oversize) + good[3]
    stats = check(stream, [good[0], good[1], good[3]], bad_version=1, bad_checksum=1, oversize=1)
    assert stats.bytes_skipped == 3 * 72


def test_payload_cap_is_the_decoders_limit():
    big = P.encode_message(1, 1, 1, 0, P.encode_tlv(P.TLVType.STATUS_REPORT, bytes(41) + b"x" * 500))
    small = messages(1)
    frames, decoder = feed([big + small[0]], max_payload_size=100)
    assert frames == small
    assert decoder.statistics().oversize == 1


def test_fake_header_in_garbage_does_not_swallow_good_frames():
    """A plausible header claiming a big payload: we wait, then resync inside it at EOF."""
    good = messages(3)
    fake = struct.pack("<IBBHQQII", P.MAGIC, 1, 1, 1, 1, 1, 10_000, 0)
    check(fake + b"".join(good), good, truncated=1)
    # with enough bytes after it the claim is checked (bad CRC) without waiting for EOF
    filler = messages(200)
    frames, decoder = feed([fake + b"".join(filler)], eof=False)
    assert frames == filler and decoder.statistics().bad_checksum == 1


def test_magic_inside_payload_does_not_confuse_resync():
    raw_value = struct.pack("<Q", 1) + struct.pack("<I", P.MAGIC) * 3
    msg = P.encode_message(1, 1, 1, 0, P.encode_tlv(P.TLVType.INSTRUMENT_MAPPING, raw_value))
    good = messages(2)
    check(good[0] + msg + good[1], [good[0], msg, good[1]])
    corrupted = bytearray(msg)
    corrupted[20] ^= 0xFF
    # the corrupt frame fails its CRC, then the magics inside it fail too (short or bad header);
    # the frame after it is still found
    frames, _ = feed([good[0] + bytes(corrupted) + good[1]])
    assert frames == good


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.binary(min_size=1, max_size=80).map(lambda b: ("junk", b)), st.integers(0, 5).map(lambda n: ("good", n))
        ),
        max_size=12,
    ),
    st.integers(1, 97),
)
def test_garbage_fuzz_good_frames_always_come_out(parts, chunk):
    good = messages(6, source=9)
    stream = b""
    expected = []
    for kind, value in parts:
        if kind == "junk":
            stream += value.replace(b"\xef", b"\xee")  # junk without any magic byte
        else:
            stream += good[value]
            expected.append(good[value])
    frames, decoder = feed([stream[i : i + chunk] for i in range(0, len(stream), chunk)])
    assert frames == expected
    stats = decoder.statistics()
    assert stats.bytes + stats.bytes_skipped == len(stream)
    assert stats.errors["bad_checksum"] == stats.errors["bad_version"] == 0


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 20 * 72 * 8 - 1), st.binary(min_size=0, max_size=200), st.integers(1, 200))
def test_bit_flip_fuzz(bit, junk, chunk):
    good = messages(20, source=3)
    stream = bytearray(b"".join(good))
    stream[bit // 8] ^= 1 << (bit % 8)
    stream += junk
    frames, decoder = feed([bytes(stream[i : i + chunk]) for i in range(0, len(stream), chunk)])
    hit = bit // 8 // 72
    # every frame except the flipped one survives, whatever the junk at the end
    assert [f for f in frames if f in good] == [g for i, g in enumerate(good) if i != hit]
    assert decoder.statistics().total_errors >= 1


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.integers(1, 64))
def test_random_bytes_never_raise(data, chunk):
    decoder = P.FrameDecoder(max_payload_size=256)
    for i in range(0, len(data), chunk):
        decoder.receive_data(data[i : i + chunk])
        drain(decoder)
    decoder.receive_data(b"")
    drain(decoder)
    stats = decoder.statistics()
    assert stats.bytes + stats.bytes_skipped == len(data) and stats.buffered == 0


def test_zero_copy_for_clean_chunks():
    stream = b"".join(messages(10))
    decoder = P.FrameDecoder()
    decoder.receive_data(stream)
    block = decoder.next_block()
    assert block.data is stream  # the relay forwards the very same object
    # a trailing partial frame: the block is a view of the input, only the tail is copied
    with_tail = stream + stream[:50]
    decoder.receive_data(with_tail)
    block = decoder.next_block()
    assert isinstance(block.data, memoryview) and block.data.obj is with_tail
    assert decoder.statistics().buffered == 50


def test_block_columns():
    builder = P.MessageBuilder(P.RelayDomain.SIGNAL, 77, first_sequence=10)
    msgs = [
        builder.build(TRADE, 5),
        builder.build(P.Heartbeat(1, 2, 3, 4), 6),
        builder.build(P.encode_tlv(P.TLVType.FILL, P.encode(P.Fill(9, 1, 1, 1, 0, 0, 0, 1, 1))[2:]), 7),
        builder.build(P.OrderBook(42, 0, 0, tuple((i, 1) for i in range(30)), ()), 8),
    ]
    decoder = P.FrameDecoder()
    decoder.receive_data(b"".join(msgs))
    block = decoder.next_block()
    assert len(block) == 4
    assert block.sequence.tolist() == [10, 11, 12, 13]
    assert block.source.tolist() == [77] * 4
    assert block.relay_domain.tolist() == [2] * 4
    assert block.timestamp_ns.tolist() == [5, 6, 7, 8]
    assert block.tlv_type.tolist() == [1, 80, 42, 3]
    assert block.instrument_id.tolist() == [TRADE.instrument_id, 0, 9, 42]  # extended TLV too
    assert [bytes(f) for f in block.frames()] == msgs
    assert np.array_equal(block.offsets, np.cumsum([0, *map(len, msgs[:-1])]))


def test_scan_is_linear_when_fed_byte_by_byte(monkeypatch):
    """A 64 KiB frame fed one byte at a time is scanned a handful of times, not 65536 times."""
    calls = []
    real = _decoder._scan_kernel

    def counting(*args):
        calls.append(len(args[1]))  # (crc tables, buffer, ...)
        return real(*args)

    monkeypatch.setattr(_decoder, "_scan_kernel", counting)
    book = P.OrderBook(1, 2, 3, tuple((i, i) for i in range(4000)), ())
    msg = P.MessageBuilder(1, 1).build(book, 0)
    frames, _ = feed([msg[i : i + 1] for i in range(len(msg))])
    assert frames == [msg]
    assert len(calls) <= 3
    assert sum(calls) <= 2 * len(msg)


def test_garbage_fed_byte_by_byte_is_not_rescanned():
    decoder = P.FrameDecoder()
    junk = bytes(range(0xEF)) * 50
    for b in junk:
        decoder.receive_data(bytes([b]))
        assert decoder.next_block() is P.NEED_DATA
    assert decoder.statistics().buffered < 32
    assert decoder.statistics().bad_magic == 1


def test_eof_rules():
    decoder = P.FrameDecoder()
    decoder.receive_data(b"")
    assert decoder.next_block() is P.NEED_DATA and decoder.eof
    import pytest

    with pytest.raises(P.LocalProtocolError):
        decoder.receive_data(b"x")


def test_trusting_decoder_skips_only_the_crc_check():
    """``verify_checksums=False`` (a link from a relay, which checked every CRC) passes a frame
    whose CRC is wrong, and still counts and resyncs over everything else that is malformed."""
    good = messages(3)
    bad_crc = bytearray(good[1])
    bad_crc[40] ^= 0x01
    bad_version = bytearray(good[2])
    bad_version[4] = 2
    stream = good[0] + bytes(bad_crc) + b"junk" + bytes(bad_version) + good[2]
    decoder = P.FrameDecoder(verify_checksums=False)
    decoder.receive_data(stream)
    block = decoder.next_block()
    assert [bytes(f) for f in block.frames()] == [good[0], bytes(bad_crc), good[2]]
    assert decoder.statistics().errors == {**dict.fromkeys(P.ERROR_KINDS, 0), "bad_magic": 1, "bad_version": 1}
    checking = P.FrameDecoder()
    checking.receive_data(stream)
    assert [bytes(f) for f in checking.next_block().frames()] == [good[0], good[2]]
    assert checking.statistics().bad_checksum == 1


def test_whole_frames_fast_path_takes_only_a_few_clean_whole_frames_and_counts_them() -> None:
    one, two = messages(2)
    decoder = P.FrameDecoder()
    block = decoder.whole_frames(one)
    assert block is not None and block.tobytes() == one and list(block.sizes) == [len(one)]
    assert block.sequence_run == (5, struct.unpack_from("<Q", one, 8)[0])
    pair = decoder.whole_frames(one + two)
    assert pair is not None and list(pair.offsets) == [0, len(one)] and pair.tobytes() == one + two
    assert pair.sequence_run == block.sequence_run  # one source, consecutive sequences
    assert list(pair.sequence) == [block.sequence_run[1], block.sequence_run[1] + 1]
    assert decoder.whole_frames(two + one).sequence_run is None  # not consecutive
    other = P.MessageBuilder(P.RelayDomain.MARKET_DATA, 6).build(TRADE, 1)
    mixed = decoder.whole_frames(one + other)
    assert mixed.sequence_run is None and list(mixed.source) == [5, 6]
    assert mixed.relay_domain_all == P.RelayDomain.MARKET_DATA
    signal = P.MessageBuilder(P.RelayDomain.SIGNAL, 5, 99).build(TRADE, 1)
    assert P.FrameDecoder().whole_frames(one + signal).relay_domain_all is None  # mixed domains: not known
    assert (decoder.statistics().frames, decoder.statistics().bytes) == (7, 4 * len(one) + 3 * len(two))
    assert P.FrameBlock.from_bytes(one).relay_domain_all is None  # only the quick path knows it
    # anything else is left to receive_data / next_block, untouched and uncounted here
    bad_crc = two[:-1] + bytes([two[-1] ^ 1])
    control = P.encode_message(P.RelayDomain.SYSTEM, 5, 0, 1, b"")
    many = b"".join(messages(_decoder._QUICK_FRAMES + 1))
    bad_version = one[:4] + bytes([one[4] ^ 0x7F]) + one[5:]
    for data in (one[:40], one + two[:40], one + bad_crc, bad_crc, bad_version, b"x" * len(one), control,
                 one + control, many):
        assert decoder.whole_frames(data) is None
    assert decoder.statistics().frames == 7 and decoder.statistics().total_errors == 0
    decoder.receive_data(bad_crc)  # the usual path counts what is wrong with it
    assert decoder.next_block() is P.NEED_DATA and decoder.statistics().bad_checksum == 1
    decoder.receive_data(one[:40])  # with a partial frame buffered, whole ones must queue behind it
    assert decoder.whole_frames(two) is None
    trusting = P.FrameDecoder(verify_checksums=False)
    assert trusting.whole_frames(one + bad_crc) is not None  # the relay checked it: magic/version/size still are
    assert trusting.whole_frames(bad_crc).count == 1
    assert trusting.whole_frames(b"\x00" + bad_crc[1:]) is None


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([5, 6]), st.integers(1, 3)), min_size=1, max_size=20))
def test_whole_frames_agrees_with_the_kernel_path(spec) -> None:
    """Whatever few frames a read holds, the quick path returns the same frames, header columns
    and counters as receive_data/next_block, or declines."""
    builders = {s: P.MessageBuilder(P.RelayDomain.MARKET_DATA, s) for s in (5, 6)}
    data = b"".join(builders[s].build([TRADE] * k, 7) for s, k in spec)
    for verify in (True, False):
        quick, slow = P.FrameDecoder(verify_checksums=verify), P.FrameDecoder(verify_checksums=verify)
        got = quick.whole_frames(data)
        slow.receive_data(data)
        want = slow.next_block()
        if got is None:
            assert len(spec) > _decoder._QUICK_FRAMES
            continue
        assert got.tobytes() == want.tobytes()
        for column in ("offsets", "sizes", "source", "sequence", "timestamp_ns", "tlv_type"):
            assert list(getattr(got, column)) == list(getattr(want, column))
        assert quick.statistics() == slow.statistics()
        assert got.relay_domain_all == P.RelayDomain.MARKET_DATA
        sources = [s for s, _ in spec]
        if len(set(sources)) == 1:
            assert got.sequence_run == (sources[0], int(want.sequence[0]))
        else:
            assert got.sequence_run is None


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(1, 4), min_size=1, max_size=24))
def test_from_bytes_finds_the_same_frames_with_or_without_the_kernel(tlv_counts) -> None:
    """A few frames are walked in Python (no kernel call per flush), more go to the kernel, and
    ``join`` takes the bounds from the frames it is given: the same offsets and sizes every way."""
    builder = P.MessageBuilder(P.RelayDomain.MARKET_DATA, 5)
    frames = [builder.build([TRADE] * k, 7) for k in tlv_counts]
    data = b"".join(frames)
    block = P.FrameBlock.from_bytes(data)
    offsets, sizes = _decoder.frame_bounds(data)
    assert block.offsets.tolist() == offsets.tolist() and block.sizes.tolist() == sizes.tolist()
    assert len(block) == len(tlv_counts)
    joined = P.FrameBlock.join(frames)
    assert joined.tobytes() == data and len(joined) == len(tlv_counts)
    assert joined.offsets.tolist() == offsets.tolist() and joined.sizes.tolist() == sizes.tolist()
    assert (_decoder._few_frame_sizes(data) is not None) == (len(tlv_counts) <= _decoder._QUICK_FRAMES)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([5, 6]), st.sampled_from(["market", "signal", "control", "skip"])),
                min_size=1, max_size=40), st.booleans())
def test_the_scan_kernel_knows_a_sequence_run_and_a_domain_as_the_quick_path_does(spec, verify) -> None:
    """``next_block`` marks a block that is one source's consecutive sequences (``sequence_run``)
    and one whose frames share a relay domain (``relay_domain_all``), exactly when its header
    columns say so; a control frame or a skipped sequence is no run."""
    counters = {5: 1, 6: 1}
    frames = []
    for source, kind in spec:
        if kind == "control":
            frames.append(P.encode_message(P.RelayDomain.SYSTEM, source, 0, 1, b""))
            continue
        domain = P.RelayDomain.SIGNAL if kind == "signal" else P.RelayDomain.MARKET_DATA
        builder = P.MessageBuilder(domain, source, counters[source] + (kind == "skip"))
        frames.append(builder.build(TRADE, 7))
        counters[source] = builder.next_sequence
    decoder = P.FrameDecoder(verify_checksums=verify)
    decoder.receive_data(b"".join(frames))
    block = decoder.next_block()
    sources, sequences, domains = block.source.tolist(), block.sequence.tolist(), block.relay_domain.tolist()
    run = (all(sequences) and len(set(sources)) == 1
           and sequences == list(range(sequences[0], sequences[0] + len(sequences))))
    assert block.sequence_run == ((sources[0], sequences[0]) if run else None)
    assert block.relay_domain_all == (domains[0] if len(set(domains)) == 1 else None)
