"""Fast encoders for the hot market-data TLVs, straight from ints and arrays to bytes.

Adapters build thousands of Trades, Quotes and book TLVs per second; going through a record
object and the generic encoder costs more than parsing the exchange's JSON did. These
functions pack the same bytes as ``encode(record)`` (a test checks it) with one
``struct.pack`` each, their formats derived from the one layout table, and split what does not
fit one TLV: a book too big for one OrderBook TLV continues as OrderBookDelta TLVs on the same
sequence, and a delta too big is split, so a consumer always ends with the complete book.

Also exact decimal parsing for the common exchange shape (``"65000.12345678"``) in a few
C-speed passes, falling back to :func:`parse_fixed` for anything unusual.
"""

from __future__ import annotations

import struct

import numpy as np

from alphapulse.protocol._fixed import FixedPointError, parse_fixed
from alphapulse.protocol._layouts import LAYOUTS, BookSide
from alphapulse.protocol._tlv import MAX_EXTENDED_VALUE, MAX_STANDARD_VALUE
from alphapulse.protocol._types import EXTENDED_TLV_MARKER, TLVType

_TRADE_LAYOUT = LAYOUTS[TLVType.TRADE]
_QUOTE_LAYOUT = LAYOUTS[TLVType.QUOTE]
_BOOK_HEAD = LAYOUTS[TLVType.ORDER_BOOK].head_struct.format.lstrip("<")
_DELTA_HEAD = LAYOUTS[TLVType.ORDER_BOOK_DELTA].head_struct.format.lstrip("<")
_BOOK_HEAD_SIZE = LAYOUTS[TLVType.ORDER_BOOK].head_size
_DELTA_HEAD_SIZE = LAYOUTS[TLVType.ORDER_BOOK_DELTA].head_size
_LEVEL_SIZE = 16  # price i64, qty i64
_CHANGE_SIZE = 17  # price i64, qty i64, side u8

_TRADE = struct.Struct("<BB" + _TRADE_LAYOUT.head_struct.format.lstrip("<"))
_QUOTE = struct.Struct("<BB" + _QUOTE_LAYOUT.head_struct.format.lstrip("<"))
MAX_BOOK_LEVELS = (MAX_EXTENDED_VALUE - _BOOK_HEAD_SIZE) // _LEVEL_SIZE
"""Levels (both sides together) that fit one OrderBook TLV."""
MAX_DELTA_CHANGES = (MAX_EXTENDED_VALUE - _DELTA_HEAD_SIZE) // _CHANGE_SIZE
"""Changes that fit one OrderBookDelta TLV."""
_BID, _ASK = int(BookSide.BID), int(BookSide.ASK)
_delta_structs: dict[int, struct.Struct] = {}
_POW8 = tuple(10 ** (8 - d) for d in range(9))


def pack_trade(instrument_id: int, price: int, quantity: int, exchange_ts_ns: int, side: int, flags: int = 0) -> bytes:
    return _TRADE.pack(TLVType.TRADE, _TRADE_LAYOUT.head_size, instrument_id, price, quantity, exchange_ts_ns,
                       side, flags)


def pack_quote(instrument_id: int, bid: int, bid_qty: int, ask: int, ask_qty: int, exchange_ts_ns: int,
               flags: int = 0) -> bytes:
    return _QUOTE.pack(TLVType.QUOTE, _QUOTE_LAYOUT.head_size, instrument_id, bid, bid_qty, ask, ask_qty,
                       exchange_ts_ns, flags)


def _tlv_head(tlv_type: int, size: int) -> tuple[str, tuple[int, ...]]:
    if size <= MAX_STANDARD_VALUE:
        return "<BB", (tlv_type, size)
    return "<BBBH", (EXTENDED_TLV_MARKER, 0, tlv_type, size)


def _delta_struct(n: int) -> struct.Struct:
    size = _DELTA_HEAD_SIZE + _CHANGE_SIZE * n
    head, _ = _tlv_head(TLVType.ORDER_BOOK_DELTA, size)
    st = _delta_structs[n] = struct.Struct(head + _DELTA_HEAD + "qqB" * n)
    return st


def pack_delta(instrument_id: int, exchange_ts_ns: int, sequence: int, prev_sequence: int, changes: list[int],
               flags: int = 0) -> bytes:
    """One OrderBookDelta TLV from a flat ``[price, qty, side, price, qty, side, ...]`` list
    (qty 0 removes the level); at most :data:`MAX_DELTA_CHANGES` changes."""
    n = len(changes) // 3
    st = _delta_structs.get(n) or _delta_struct(n)
    _, prefix = _tlv_head(TLVType.ORDER_BOOK_DELTA, _DELTA_HEAD_SIZE + _CHANGE_SIZE * n)
    return st.pack(*prefix, instrument_id, exchange_ts_ns, sequence, prev_sequence, n, flags, *changes)


def pack_deltas(instrument_id: int, exchange_ts_ns: int, sequence: int, prev_sequence: int,
                changes: list[int]) -> list[bytes]:
    """One delta, or several when the changes overflow one TLV (all but the first apply on ``sequence``)."""
    step = MAX_DELTA_CHANGES * 3
    if len(changes) <= step:
        return [pack_delta(instrument_id, exchange_ts_ns, sequence, prev_sequence, changes)]
    return [
        pack_delta(instrument_id, exchange_ts_ns, sequence, prev_sequence if start == 0 else sequence,
                   changes[start : start + step])
        for start in range(0, len(changes), step)
    ]


def _book_head(instrument_id: int, exchange_ts_ns: int, sequence: int, n_bids: int, n_asks: int) -> bytes:
    size = _BOOK_HEAD_SIZE + _LEVEL_SIZE * (n_bids + n_asks)
    head, prefix = _tlv_head(TLVType.ORDER_BOOK, size)
    return struct.pack(head + _BOOK_HEAD, *prefix, instrument_id, exchange_ts_ns, sequence, n_bids, n_asks)


def pack_book(instrument_id: int, exchange_ts_ns: int, sequence: int, bids: list[int], asks: list[int]) -> list[bytes]:
    """An OrderBook TLV from flat ``[price, qty, ...]`` lists (best first); levels that do not
    fit one TLV follow as OrderBookDelta TLVs on the same sequence, so the book stays complete."""
    nb, na = len(bids) // 2, len(asks) // 2
    rest: list[int] = []
    if nb + na > MAX_BOOK_LEVELS:
        keep_b = min(nb, MAX_BOOK_LEVELS // 2 if na > MAX_BOOK_LEVELS // 2 else MAX_BOOK_LEVELS - na)
        keep_a = min(na, MAX_BOOK_LEVELS - keep_b)
        for i in range(keep_b, nb):
            rest += (bids[2 * i], bids[2 * i + 1], _BID)
        for i in range(keep_a, na):
            rest += (asks[2 * i], asks[2 * i + 1], _ASK)
        bids, asks, nb, na = bids[: 2 * keep_b], asks[: 2 * keep_a], keep_b, keep_a
    levels = np.array(bids + asks, dtype="<i8").tobytes() if nb + na else b""
    out = [_book_head(instrument_id, exchange_ts_ns, sequence, nb, na) + levels]
    if rest:
        out += pack_deltas(instrument_id, exchange_ts_ns, sequence, sequence, rest)
    return out


def pack_book_arrays(instrument_id: int, exchange_ts_ns: int, sequence: int, bids: np.ndarray,
                     asks: np.ndarray) -> list[bytes]:
    """:func:`pack_book` from ``(n, 2)`` int64 price/qty arrays, best first: the levels' bytes
    are the arrays' own little-endian memory, no per-level Python."""
    nb, na = len(bids), len(asks)
    if nb + na > MAX_BOOK_LEVELS:
        return pack_book(instrument_id, exchange_ts_ns, sequence, bids.ravel().tolist(), asks.ravel().tolist())
    return [
        _book_head(instrument_id, exchange_ts_ns, sequence, nb, na)
        + np.ascontiguousarray(bids, "<i8").tobytes()
        + np.ascontiguousarray(asks, "<i8").tobytes()
    ]


def fixed(text: str) -> int:
    """:func:`parse_fixed` with a fast path for the usual ``"123.456"`` shape (exact, no float)."""
    try:
        if text.count(".") != 1 or "_" in text:  # int() would take "1_0" and "1.2.3" would lose a dot
            return parse_fixed(text)
        return int(text.replace(".", "")) * _POW8[len(text) - 1 - text.index(".")]
    except (ValueError, IndexError, AttributeError, TypeError):
        if not isinstance(text, str):
            raise FixedPointError(f"not a decimal string: {text!r}") from None
        return parse_fixed(text)  # no '.', exponents, > 8 decimals (zeros only), or garbage: raises


def fixed_many(texts: list[str]) -> list[int]:
    """:func:`fixed` over a list; the common case (every value with the same number of
    decimals, as exchanges write a book's prices) in three C-speed passes."""
    if texts:
        try:
            first = texts[0]
            d = len(first) - 1 - first.index(".")
            mul = _POW8[d]
            joined = "".join(texts)
            if joined.count(".") == len(texts) and "_" not in joined and {t[-d - 1] for t in texts} == {"."}:
                return [int(t.replace(".", "")) * mul for t in texts]
        except (ValueError, IndexError, TypeError, AttributeError):
            pass
    return [fixed(t) for t in texts]
