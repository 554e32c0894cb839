"""Golden bytes: every TLV type encodes to its pinned bytes and decodes back, whole messages
come out of the decoder however the bytes arrive (h11 ``tr()`` style)."""

from __future__ import annotations

import struct
import zlib

import pytest

import alphapulse.protocol as P

from ._records import RECORDS
from ._vectors import GOLDEN_MESSAGE_HEX, GOLDEN_TLV_HEX
from .conftest import every_way, feed

NAMES = sorted(GOLDEN_TLV_HEX)


def test_every_type_has_a_vector():
    assert {type(RECORDS[name]).TLV_TYPE for name in NAMES} == set(P.TLVType)
    assert set(NAMES) == set(RECORDS)


@pytest.mark.parametrize("name", NAMES)
def test_encode_matches_golden(name):
    assert P.encode(RECORDS[name]).hex() == GOLDEN_TLV_HEX[name]


@pytest.mark.parametrize("name", NAMES)
def test_decode_golden(name):
    golden = bytes.fromhex(GOLDEN_TLV_HEX[name])
    [(tlv_type, value)] = list(P.iter_tlvs(golden))
    assert tlv_type == type(RECORDS[name]).TLV_TYPE
    assert P.decode(tlv_type, value) == RECORDS[name]
    assert P.decode_payload(golden) == [RECORDS[name]]
    layout = P.layout_for(tlv_type)
    if layout.fixed_size is not None:
        assert len(value) == layout.fixed_size


def test_trade_layout_by_hand():
    """The Trade bytes, spelled out with struct independently of the table."""
    t = RECORDS["trade"]
    expected = struct.pack("<BBQqqQBB4x", 1, 38, t.instrument_id, t.price, t.quantity, t.exchange_ts_ns, 1, 0)
    assert P.encode(t) == expected
    assert len(expected) == 40  # the guide's "TradeTLV 40B"
    assert len(P.encode(RECORDS["quote"])) == 52  # "QuoteTLV 52B"


def test_peer_introduction_layout_by_hand():
    """Head (publishers, three counts), then types, instruments, the name and the socket path."""
    r = RECORDS["peer_introduction"]
    body = struct.pack("<HBHB", 1, 2, 1, 3) + bytes((1, 2)) + struct.pack("<Q", r.instrument_ids[0]) + b"src"
    body += b"/run/rb/src.sock"
    assert P.encode(r) == struct.pack("<BB", 88, len(body)) + body


def test_guide_sizes():
    """Fixed sizes the V2 guide lists (TLV header included)."""
    guide = {
        "signal_identity": 16,
        "momentum_signal": 32,
        "liquidation_alert": 48,
        "order_ack": 32,
        "fill": 56,
        "cancel": 24,
        "gas_price": 32,
    }
    for name, size in guide.items():
        assert len(P.encode(RECORDS[name])) == size, name


def test_extended_tlv_chosen_for_big_values():
    book = P.OrderBook(1, 2, 3, tuple((1000 - i, 1) for i in range(20)), ())
    raw = P.encode(book)
    assert raw[:3] == bytes((255, 0, P.TLVType.ORDER_BOOK))
    assert struct.unpack_from("<H", raw, 3)[0] == len(raw) - 5
    assert P.decode_payload(raw) == [book]
    # a standard-size value may also arrive extended: readers accept both forms
    trade_value = P.encode(RECORDS["trade"])[2:]
    assert P.decode_payload(P.encode_tlv(1, trade_value)) == [RECORDS["trade"]]
    as_extended = bytes((255, 0, 1)) + struct.pack("<H", 38) + trade_value
    assert P.decode_payload(as_extended) == [RECORDS["trade"]]


def _golden_message(name):
    (relay, source, seq, ts), parts, hex_ = GOLDEN_MESSAGE_HEX[name]
    payload = b"".join(bytes.fromhex(GOLDEN_TLV_HEX[p]) for p in parts)
    return (relay, source, seq, ts), parts, payload, bytes.fromhex(hex_)


@pytest.mark.parametrize("name", sorted(GOLDEN_MESSAGE_HEX))
def test_golden_messages(name):
    (relay, source, seq, ts), parts, payload, message = _golden_message(name)
    assert P.encode_message(relay, source, seq, ts, payload) == message
    builder = P.MessageBuilder(relay, source, first_sequence=seq)
    assert builder.build([RECORDS[p] for p in parts], ts) == message
    assert builder.next_sequence == seq + 1
    # the checksum, recomputed with zlib over the message with the field zeroed
    zeroed = message[:28] + bytes(4) + message[32:]
    assert struct.unpack_from("<I", message, 28)[0] == zlib.crc32(zeroed)
    decoded = P.decode_message(message)
    assert decoded.header == P.Header(P.PROTOCOL_VERSION, relay, source, seq, ts, len(payload), zlib.crc32(zeroed))
    assert decoded.tlvs == [RECORDS[p] for p in parts]
    assert P.pack_header(decoded.header) == message[:32]
    assert P.unpack_header(message) == decoded.header


def test_one_trade_message_is_72_bytes():
    msg = P.MessageBuilder(1, 7).build(RECORDS["trade"], 5)
    assert len(msg) == 72 == P.TRADE_MESSAGE_SIZE


def _all_golden_messages():
    out = []
    for name in NAMES:
        out.append(P.encode_message(1, 3, len(out) + 1, 10, bytes.fromhex(GOLDEN_TLV_HEX[name])))
    out += [_golden_message(name)[3] for name in sorted(GOLDEN_MESSAGE_HEX)]
    return out


@pytest.mark.parametrize("index", range(len(NAMES) + len(GOLDEN_MESSAGE_HEX)))
def test_each_golden_message_every_way(index):
    message = _all_golden_messages()[index]
    for how, chunks in every_way(message):
        frames, decoder = feed(chunks)
        assert frames == [message], how
        stats = decoder.statistics()
        assert stats.total_errors == 0 and stats.bytes_skipped == 0, how
        assert decoder.eof


def test_all_golden_messages_every_way_with_trailing_partial():
    messages = _all_golden_messages()
    stream = b"".join(messages)
    partial = messages[0][:40]
    for how, chunks in [
        ("whole", [stream + partial]),
        ("bytewise", [bytes([b]) for b in stream + partial]),
        *[(f"split@{c}", [stream[:c], stream[c:] + partial]) for c in range(1, len(stream), 7)],
    ]:
        frames, decoder = feed(chunks, eof=False)
        assert frames == messages, how
        assert decoder.statistics().buffered == len(partial), how
        decoder.receive_data(b"")
        assert decoder.next_block() is P.NEED_DATA
        stats = decoder.statistics()
        assert stats.truncated == 1 and stats.bytes_skipped == len(partial), how
        assert stats.total_errors == 1 and stats.buffered == 0 and decoder.eof
