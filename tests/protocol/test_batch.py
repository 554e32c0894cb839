"""Batch kernels agree with the one-message paths."""

from __future__ import annotations

import zlib

import numpy as np

import alphapulse.protocol as P

from ._records import RECORDS


def _stream():
    builder = P.MessageBuilder(1, 4)
    msgs = [builder.build(record, i) for i, record in enumerate(RECORDS.values())]
    msgs.append(builder.build(list(RECORDS.values())[:5], 99))
    return msgs


def test_crc_batch_matches_zlib():
    msgs = _stream()
    buf = b"".join(msgs)
    sizes = np.array([len(m) for m in msgs], dtype=np.int64)
    offsets = np.cumsum(sizes) - sizes
    crcs = P.crc32_batch(buf, offsets, sizes)
    assert crcs.tolist() == [zlib.crc32(m[:28] + bytes(4) + m[32:]) for m in msgs]
    assert crcs.tolist() == [P.message_checksum(m) for m in msgs]
    assert P.verify_batch(buf, offsets, sizes).all()
    broken = bytearray(buf)
    broken[offsets[3] + 40] ^= 0x80
    ok = P.verify_batch(bytes(broken), offsets, sizes)
    assert ok.tolist() == [i != 3 for i in range(len(msgs))]


def test_crc_all_lengths():
    rng = np.random.default_rng(1)
    data = rng.integers(0, 256, 32 + 300, dtype=np.uint8).tobytes()
    for n in range(0, 300):
        crc = P.crc32_batch(data, np.array([0]), np.array([32 + n]))[0]
        assert crc == zlib.crc32(data[:28] + bytes(4) + data[32 : 32 + n])


def test_scan_frames_public():
    msgs = _stream()
    buf = b"".join(msgs)
    result = P.scan_frames(buf)
    assert result.end == len(buf) and result.skipped == 0
    assert result.sizes.tolist() == [len(m) for m in msgs]
    half = P.scan_frames(buf[: len(buf) - 3])
    assert half.end == len(buf) - len(msgs[-1]) and half.need == len(msgs[-1])


def test_trade_columns_zero_copy_view():
    n = 1000
    cols = {
        "instrument_id": np.arange(n, dtype=np.uint64) * 7,
        "price": np.arange(n, dtype=np.int64) - 500,
        "quantity": np.full(n, 2**63 - 1, dtype=np.int64),
        "exchange_ts_ns": np.arange(n, dtype=np.uint64),
        "side": (np.arange(n) % 3).astype(np.uint8),
    }
    data = P.build_trade_batch(cols, source=12, first_sequence=100, relay_domain=1, timestamp_ns=555)
    assert len(data) == 72 * n
    builder = P.MessageBuilder(1, 12, first_sequence=100)
    for i in (0, 1, n - 1):
        expected = P.Trade(
            int(cols["instrument_id"][i]),
            int(cols["price"][i]),
            int(cols["quantity"][i]),
            int(cols["exchange_ts_ns"][i]),
            int(cols["side"][i]),
        )
        builder.next_sequence = 100 + i
        assert data[72 * i : 72 * (i + 1)] == builder.build(expected, 555)
    decoder = P.FrameDecoder()
    decoder.receive_data(data)
    block = decoder.next_block()
    assert len(block) == n and block.data is data
    view = P.trade_columns(block)
    assert np.shares_memory(view, np.frombuffer(data, np.uint8))
    for name, column in cols.items():
        assert np.array_equal(view[name], column)
    assert np.array_equal(view["sequence"], np.arange(100, 100 + n))


def test_trade_columns_gathers_mixed_blocks():
    builder = P.MessageBuilder(1, 3)
    t1 = RECORDS["trade"]
    t2 = P.Trade(5, -1, 2, 3, P.Side.SELL, 1)
    msgs = [
        builder.build(t1, 1),
        builder.build(P.Heartbeat(1, 2, 3, 4), 2),
        builder.build([RECORDS["quote"], t2, t1], 3),
    ]
    decoder = P.FrameDecoder()
    decoder.receive_data(b"".join(msgs))
    cols = P.trade_columns(decoder.next_block())
    assert len(cols) == 3
    assert cols["price"].tolist() == [t1.price, -1, t1.price]
    assert cols["sequence"].tolist() == [1, 3, 3]
    assert cols["flags"].tolist() == [0, 1, 0]


def test_order_book_views_are_zero_copy():
    book = RECORDS["order_book"]
    raw = P.encode(book)
    [(_, value)] = list(P.iter_tlvs(raw))
    bids, asks = P.order_book_levels(value)
    assert bids.tolist() == list(book.bids) and asks.tolist() == list(book.asks)
    assert np.shares_memory(bids, np.frombuffer(raw, np.uint8))
    delta = RECORDS["order_book_delta"]
    [(_, value)] = list(P.iter_tlvs(P.encode(delta)))
    assert P.order_book_changes(value).tolist() == list(delta.changes)
