"""The fast packers write exactly what the generic encoder writes, and split big books losslessly."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from alphapulse import protocol as P

I64 = st.integers(-(2**63), 2**63 - 1)
U64 = st.integers(0, 2**64 - 1)


@given(U64, I64, I64, U64, st.integers(0, 2), st.integers(0, 255))
def test_pack_trade_matches_encode(iid, price, qty, ts, side, flags) -> None:
    assert P.pack_trade(iid, price, qty, ts, side, flags) == P.encode(P.Trade(iid, price, qty, ts, side, flags))


@given(U64, I64, I64, I64, I64, U64)
def test_pack_quote_matches_encode(iid, bid, bid_qty, ask, ask_qty, ts) -> None:
    assert P.pack_quote(iid, bid, bid_qty, ask, ask_qty, ts) == P.encode(P.Quote(iid, bid, bid_qty, ask, ask_qty, ts))


def _decoded(tlvs: list[bytes]) -> list:
    return [r for t in tlvs for r in P.decode_payload(t)]


@pytest.mark.parametrize("n", [0, 1, 14, 15, 3000, P.MAX_DELTA_CHANGES + 5])
def test_pack_deltas_round_trip_and_split(n: int) -> None:
    changes = [v for i in range(n) for v in (1000 + i, i, i % 2)]
    tlvs = P.pack_deltas(7, 11, 20, 19, changes)
    assert len(tlvs) == (1 if n <= P.MAX_DELTA_CHANGES else 2)
    records = _decoded(tlvs)
    assert [r.prev_sequence for r in records] == [19] + [20] * (len(records) - 1)
    assert [tuple(c) for r in records for c in r.changes] == [tuple(changes[i : i + 3]) for i in range(0, 3 * n, 3)]


@pytest.mark.parametrize("levels", [0, 3, 100, P.MAX_BOOK_LEVELS + 10])
def test_pack_book_keeps_every_level(levels: int) -> None:
    bids = np.array([[10_000 - i, i + 1] for i in range(levels)], dtype=np.int64).reshape(-1, 2)
    asks = np.array([[10_001 + i, i + 1] for i in range(levels)], dtype=np.int64).reshape(-1, 2)
    from_arrays = P.pack_book_arrays(9, 1, 5, bids, asks)
    from_lists = P.pack_book(9, 1, 5, bids.ravel().tolist(), asks.ravel().tolist())
    assert from_arrays == from_lists
    records = _decoded(from_lists)
    book = records[0]
    assert isinstance(book, P.OrderBook) and book.exchange_sequence == 5
    carried = len(book.bids) + len(book.asks) + sum(len(r.changes) for r in records[1:])
    assert carried == 2 * levels
    if 2 * levels <= P.MAX_BOOK_LEVELS:
        assert P.encode(P.OrderBook(9, 1, 5, tuple(map(tuple, bids.tolist())), tuple(map(tuple, asks.tolist())))) \
            == from_lists[0]


@pytest.mark.parametrize("text, value", [
    ("65000.12345678", 6_500_012_345_678), ("-0.5", -50_000_000), (".5", 50_000_000), ("7", 700_000_000),
    ("1e-8", 1), ("0.100000000", 10_000_000),
])
def test_fast_decimal_parse_is_exact(text: str, value: int) -> None:
    assert P.parse_fixed_fast(text) == value == P.parse_fixed(text)
    assert P.parse_fixed_many([text, text]) == [value, value]


@pytest.mark.parametrize("text", ["1.2.3", "1_0.5", "", "abc", "0.123456789"])
def test_fast_decimal_parse_refuses_what_is_not_exact(text: str) -> None:
    with pytest.raises(P.FixedPointError):
        P.parse_fixed_fast(text)
    with pytest.raises(P.FixedPointError):
        P.parse_fixed_many(["1.5", text])
