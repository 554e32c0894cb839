"""The fast packers write exactly what the generic encoder writes, and split big books losslessly."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
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


def _scan_quoted(text: str) -> tuple[int, int]:
    """``quoted_decimal`` then ``scaled_e8`` over ``"text",`` as a scanner meets it: (value or -1, next index)."""
    buf = np.frombuffer(f'"{text}",'.encode(), np.uint8)
    mantissa, decimals, after = P.quoted_decimal(buf, 0, len(buf))
    return (P.scaled_e8(mantissa, decimals) if decimals >= 0 else -1), after


@settings(deadline=None)  # the first example compiles the kernels
@given(st.integers(0, 10**12), st.integers(0, 12))
def test_scanned_quoted_decimals_agree_with_parse_fixed(units: int, decimals: int) -> None:
    """The exchange kinds' numba scanners read what ``parse_fixed`` reads, or refuse (-1) what it
    refuses; a value it takes ends the scan just past the closing quote."""
    digits = str(units).rjust(decimals + 1, "0")
    text = f"{digits[:-decimals]}.{digits[-decimals:]}" if decimals else digits
    value, after = _scan_quoted(text)
    try:
        expected = P.parse_fixed(text)
    except P.FixedPointError:
        assert value == -1
    else:
        assert (value, after) == (expected, len(text) + 2)


@pytest.mark.parametrize("text", ["1.2.3", "-1", "1e-8", "", "12345678901234567890", "92233720368.54775808"])
def test_scanned_quoted_decimals_refuse_what_the_fast_path_does_not_take(text: str) -> None:
    assert _scan_quoted(text)[0] == -1


def test_bytes_equal_compares_a_key_in_place() -> None:
    buf = np.frombuffer(b'{"bids":[]}', np.uint8)
    word = np.frombuffer(b"bids", np.uint8)
    assert P.bytes_equal(buf, 2, 6, word) and not P.bytes_equal(buf, 2, 7, word)
    assert not P.bytes_equal(buf, 1, 5, word)
