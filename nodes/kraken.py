"""``source.kraken``: Kraken WebSocket v1 trades, tickers, spreads and CRC32-checked L2 books.

Two layers in one file:

* :class:`KrakenFeed`, sans-IO: ``receive(frame, receive_ns)`` parses one WebSocket frame and
  returns the encoded TLVs it produces (one message each); messages the adapter must send back
  (a resubscribe) collect in ``outgoing``. Tests and the benchmark drive it with captured frames.
* :class:`Kraken`, the node kind: runs the shared session loop
  (:func:`alphapulse.runtime.run_websocket_session`) with the feed as its frame handler.

Books (``book`` channel, WS API v1)
-----------------------------------
A snapshot (``as``/``bs``) replaces the pair's book; updates (``a``/``b``, sometimes both in one
frame as two objects, levels ``[price, volume, timestamp]`` with an optional ``"r"`` republish
flag) set a level's volume (``0`` removes it). After every update the book is TRUNCATED to the
subscribed depth, as Kraken does on its side, and Kraken's CRC32 checksum ``c`` is verified on
EVERY update: top 10 asks ascending then top 10 bids descending, each level's price and volume
strings with ``.`` removed and leading zeros stripped, concatenated. The checksum needs the
exchange's own digits (``"56218.30000"`` has 5 decimals although ``pair_decimals`` is 1), so
each level keeps the integers its two strings spell without the dot (``"0.042990"`` → 42990):
printed in decimal they ARE the checksum digits. Each level's digits are cached with it, and the
CRC register after the asks and after the whole top is cached per pair, so an update that does
not touch one side's top 10 does not recompute it.

Speed: book frames go through one compiled (numba) call that parses the frame's bytes, finds
the pair, applies the levels to per-pair int64 arrays (best level LAST, so updates near the top
move few levels), truncates, verifies the CRC and writes the OrderBookDelta TLV; snapshots have
a compiled reader too. A frame in any other shape (whitespace, odd numbers) falls back to
orjson and the same apply kernel, with the same result (tested).

A mismatch (or a crossed book, or an update the feed could not apply) is counted, logged, and
resyncs THAT pair: its book is dropped (nothing more is published for it), an
``unsubscribe`` + ``subscribe`` pair of messages is queued, and updates are ignored until the
new snapshot, which is published as a full OrderBook. A book known to be bad is never
published: the delta of an update goes out only after its checksum matched.

Limitation of the venue's signal: the checksum covers the top 10 levels only, so a lost update
that changed only deeper levels cannot be detected until such a level reaches the top 10.
A duplicated update is harmless (updates set volumes, they do not add).

Output
------
* ``OrderBook`` on every (re)sync (and on snapshot requests); ``exchange_ts_ns`` is the latest
  level time. Kraken v1 has no book sequence numbers, so ``exchange_sequence`` /
  ``prev_sequence`` number the pair's book updates as this adapter applied them (the snapshot
  carries the number the next delta's ``prev_sequence`` continues from).
* ``OrderBookDelta`` per update: every level that changed (price, new volume, side; 0 =
  removed), including levels dropped by the truncation.
* ``Trade`` per trade (side from ``b``/``s``, the aggressor's), ``Quote`` per ticker (best
  bid/ask with their lot volumes; tickers carry no time, so ``exchange_ts_ns`` is 0) and per
  spread, and optionally per top-of-book change (``book_quotes``).
* ``InstrumentMapping`` for every pair when a session starts.

Instrument ids
--------------
``spot(venue, BASE, QUOTE)`` from the pair's ``wsname`` (``XBT/USD``) with Kraken's legacy asset
codes normalised: XBT → BTC, XDG → DOGE (so ``kraken:BTC-USD`` is ``XBT/USD``, and ids line up
with other venues' BTC pairs).
"""

from __future__ import annotations

import dataclasses
import logging
import struct
import time
import zlib
from collections import Counter
from collections.abc import Iterable
from typing import Any, Literal

import numpy as np
import orjson
from numba import njit

from alphapulse.kinds import Node, node_kind, param
from alphapulse.protocol import (
    FixedPointError,
    Instrument,
    TLVType,
    encode,
    mapping_for,
    pack_book,
    pack_book_arrays,
    pack_quote,
    pack_trade,
    quoted_decimal,
    scaled_e8,
    spot,
)
from alphapulse.protocol import parse_fixed_fast as fixed
from alphapulse.runtime import UpstreamParams, report

ASSET_ALIASES = {"XBT": "BTC", "XDG": "DOGE"}
"""Kraken's legacy asset codes → the common ones used in instrument ids."""

CHECKSUM_LEVELS = 10
_BID, _ASK = 0, 1  # BookSide


# -- fixed point and TLV packing (hot path: plain struct, no records) ---------------------------------

_POW8 = tuple(10 ** (8 - d) for d in range(9))
_POW9 = tuple(10 ** (9 - d) for d in range(10))


def seconds_ns(text: str | float) -> int:
    """Kraken's ``"1618678117.243818"`` seconds as Unix ns, exactly."""
    if isinstance(text, str):
        try:
            return int(text.replace(".", "")) * _POW9[len(text) - 1 - text.index(".")]
        except (ValueError, IndexError):
            pass
    return round(float(text) * 1e9)


def _mantissa(text: str) -> tuple[int, int]:
    """(mantissa, fixed point) of a decimal string: the digits without the dot as an int, and
    the 10^8 value; at most 8 decimals (a book price or volume)."""
    whole, dot, frac = text.partition(".")
    if not (whole.isdigit() or (dot and whole == "")) or not (frac.isdigit() or frac == ""):
        raise ValueError(f"not a plain decimal: {text!r}")
    if len(whole) + len(frac) > 18:
        raise ValueError(f"{text!r} has too many digits")
    mantissa = int(whole + frac)
    if len(frac) <= 8:
        return mantissa, mantissa * _POW8[len(frac)]
    value, rest = divmod(mantissa, 10 ** (len(frac) - 8))
    if rest:
        raise FixedPointError(f"{text!r} has more than 8 decimals")
    return mantissa, value


def _mantissas(texts: list[str]) -> tuple[list[int], list[int]]:
    """:func:`_mantissa` over a list: (mantissas, fixed points), C-speed when every string has
    the same number of decimals (Kraken writes a pair's prices and volumes that way)."""
    if texts:
        try:
            first = texts[0]
            d = len(first) - 1 - first.index(".")
            mul = _POW8[d]  # beyond 8 decimals: IndexError, the exact path below
            joined = "".join(texts)
            if (
                joined.count(".") == len(texts)
                and {t[-d - 1] for t in texts} == {"."}
                and joined.replace(".", "").isdigit()
                and max(map(len, texts)) <= 19
            ):
                mantissas = [int(t.replace(".", "")) for t in texts]
                return mantissas, [m * mul for m in mantissas]
        except (ValueError, IndexError, TypeError, AttributeError):
            pass
    pairs = [_mantissa(t) for t in texts]
    return [m for m, _ in pairs], [f for _, f in pairs]


_ARRAY_START = frozenset(("[", b"["))


def _timestamp_of(delta_tlv: bytes) -> int:
    """exchange_ts_ns of an OrderBookDelta TLV built by the kernel."""
    start = 2 if delta_tlv[0] != 255 else 5
    return int.from_bytes(delta_tlv[start + 8 : start + 16], "little")


# -- the book: numba kernels over per-pair arrays -----------------------------------------------------
#
# Every pair's book lives in one int64 array ``book[pair, side, i, field]`` (side: 0 bid, 1 ask;
# fields: key, qty, price mantissa, volume mantissa) sorted by key ascending with the BEST level
# at the END (bids: key = price, asks: key = -price), so the frequent updates near the top of
# the book move only the few levels better than them. The mantissas are the integers the
# exchange's decimal strings spell without their dot ("0.042990" -> 42990): printed back in
# decimal they are exactly the digits Kraken's checksum uses (dot removed, leading zeros
# stripped), so the checksum is computed from the arrays with no strings kept.
#
# ``_update`` takes a whole frame's bytes: it parses the plain update shape (no whitespace;
# anything else returns FALLBACK and goes the orjson way), finds the pair, applies the levels,
# truncates to the depth, verifies the CRC32 and writes the OrderBookDelta TLV, in one call.

FALLBACK, OK, UNKNOWN_PAIR, UNSYNCED, MISMATCH, CROSSED, NO_CHECKSUM, OVERFLOW, NO_CHANGE = range(9)
_F_KEY, _F_QTY, _F_PM, _F_VM, _F_FLEN, _F_FRAG = 0, 1, 2, 3, 4, 5
_WIDTH = 10
"""Fields per level: key, qty, price and volume mantissas, then the level's checksum fragment
(its digits, at most 36 bytes) packed little-endian in 5 words, with its length."""
_S_SYNCED, _S_SEQ, _S_COUNT, _S_IID, _S_UPDATES, _S_CHECKSUM_OK, _S_STALE, _S_CRC_ASKS, _S_CRC = (
    0,
    1,
    2,
    4,
    5,
    6,
    7,
    8,
    9,
)
"""state[pair, ...] columns: synced flag, book sequence, level count per side (_S_COUNT + s),
instrument id, counters (updates, checksums ok, stale removals), and the cached CRC registers
after the asks and after the whole top (-1: recompute), so an update that leaves one side's top
10 alone does not run the CRC over it again."""
_STATE_WIDTH = 10
MAX_UPDATE_LEVELS = 256
"""Levels one update frame may carry (Kraken sends a handful); more resyncs the pair."""
_OUT_SIZE = 5 + 35 + 17 * 2 * MAX_UPDATE_LEVELS


def _crc_table() -> np.ndarray:
    table = np.zeros(256, dtype=np.int64)
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0xEDB88320 if c & 1 else c >> 1
        table[i] = c
    return table


_CRC_TABLE = _crc_table()


@njit(cache=True, inline="always")
def _set_fragment(book, p: int, side: int, i: int, pm: int, vm: int) -> None:
    """Store the level's checksum fragment: the decimal digits of both mantissas (none for 0:
    Kraken strips leading zeros), packed into the level's fragment words."""
    for w in range(5):
        book[p, side, i, _F_FRAG + w] = 0
    length = 0
    for value in (pm, vm):
        if value > 0:
            digits = 0
            v = value
            while v > 0:
                digits += 1
                v //= 10
            v = value
            for k in range(digits - 1, -1, -1):  # most significant digit first
                pos = length + k
                book[p, side, i, _F_FRAG + (pos >> 3)] |= (48 + v % 10) << (8 * (pos & 7))
                v //= 10
            length += digits
    book[p, side, i, _F_FLEN] = length


@njit(cache=True, inline="always")
def _crc_side(book, state, p: int, side: int, crc: int) -> int:
    """Continue the CRC register over one side's top 10 fragments, best first (= from the end)."""
    count = state[p, _S_COUNT + side]
    for k in range(min(10, count)):
        i = count - 1 - k
        remaining = book[p, side, i, _F_FLEN]
        w = _F_FRAG
        while remaining > 0:
            word = book[p, side, i, w]
            for _ in range(min(8, remaining)):
                crc = _CRC_TABLE[(crc ^ word) & 0xFF] ^ (crc >> 8)
                word >>= 8
            remaining -= 8
            w += 1
    return crc


@njit(cache=True)
def _book_checksum(book, state, p) -> int:
    """Kraken's v1 CRC32: top 10 asks then top 10 bids, best first, digits of each level."""
    return _crc_side(book, state, p, 0, _crc_side(book, state, p, 1, 0xFFFFFFFF)) ^ 0xFFFFFFFF


@njit(cache=True)
def _load_side(book, state, p: int, side: int, rows) -> None:
    """A snapshot side: ``rows`` (key, qty, pm, vm) sorted by key, best last."""
    for i in range(rows.shape[0]):
        for f in range(4):
            book[p, side, i, f] = rows[i, f]
        _set_fragment(book, p, side, i, rows[i, 2], rows[i, 3])
    state[p, _S_COUNT + side] = rows.shape[0]
    state[p, _S_CRC_ASKS] = -1
    state[p, _S_CRC] = -1


@njit(cache=True, inline="always")
def _put(out, pos: int, value: int, size: int) -> int:
    for k in range(size):
        out[pos + k] = (value >> (8 * k)) & 0xFF
    return pos + size


@njit(cache=True)
def _apply(params, state, book, levels, n, p, checksum, has_checksum, ts, changes, out):
    """Apply ``levels[:n]`` (side, price, qty, pm, vm) to pair ``p``; truncate; verify; write
    the delta TLV into ``out``. Returns (status, TLV size, stale removals)."""
    depth = params[0]
    capacity = book.shape[2]
    n_changes = 0
    stale = 0
    dirty_bids = False
    dirty_asks = False
    for j in range(n):
        side = levels[j, 0]
        price = levels[j, 1]
        qty = levels[j, 2]
        key = price if side == 0 else -price
        count = state[p, _S_COUNT + side]
        lo = 0
        hi = count
        while lo < hi:
            mid = (lo + hi) >> 1
            if book[p, side, mid, _F_KEY] < key:
                lo = mid + 1
            else:
                hi = mid
        found = lo < count and book[p, side, lo, _F_KEY] == key
        if count - lo <= 10:  # the level is (or enters) the top 10 this side's checksum covers
            if side == 0:
                dirty_bids = True
            else:
                dirty_asks = True
        if qty != 0:
            if not found:
                if count == capacity:
                    return OVERFLOW, 0, stale
                for i in range(count, lo, -1):
                    for f in range(_WIDTH):
                        book[p, side, i, f] = book[p, side, i - 1, f]
                state[p, _S_COUNT + side] = count + 1
                book[p, side, lo, _F_KEY] = key
            book[p, side, lo, _F_QTY] = qty
            book[p, side, lo, _F_PM] = levels[j, 3]
            book[p, side, lo, _F_VM] = levels[j, 4]
            _set_fragment(book, p, side, lo, levels[j, 3], levels[j, 4])
            changes[n_changes, 0] = price
            changes[n_changes, 1] = qty
            changes[n_changes, 2] = side
            n_changes += 1
        elif found:
            for i in range(lo, count - 1):
                for f in range(_WIDTH):
                    book[p, side, i, f] = book[p, side, i + 1, f]
            state[p, _S_COUNT + side] = count - 1
            changes[n_changes, 0] = price
            changes[n_changes, 1] = 0
            changes[n_changes, 2] = side
            n_changes += 1
        else:
            stale += 1
    state[p, _S_STALE] += stale
    state[p, _S_UPDATES] += 1
    for side in (0, 1):  # truncate to the subscribed depth: the worst levels are first
        count = state[p, _S_COUNT + side]
        if count > depth:
            excess = count - depth
            for i in range(excess):
                key = book[p, side, i, _F_KEY]
                changes[n_changes, 0] = key if side == 0 else -key
                changes[n_changes, 1] = 0
                changes[n_changes, 2] = side
                n_changes += 1
            for i in range(depth):
                for f in range(_WIDTH):
                    book[p, side, i, f] = book[p, side, i + excess, f]
            state[p, _S_COUNT + side] = depth
    if params[1]:
        if not has_checksum:
            return NO_CHECKSUM, 0, stale
        crc = state[p, _S_CRC]
        if dirty_asks or dirty_bids or crc < 0:
            after_asks = state[p, _S_CRC_ASKS]
            if dirty_asks or after_asks < 0:
                after_asks = _crc_side(book, state, p, 1, 0xFFFFFFFF)
                state[p, _S_CRC_ASKS] = after_asks
            crc = _crc_side(book, state, p, 0, after_asks) ^ 0xFFFFFFFF
            state[p, _S_CRC] = crc
        if crc != checksum:
            return MISMATCH, 0, stale
        state[p, _S_CHECKSUM_OK] += 1
    n_bids = state[p, _S_COUNT]
    n_asks = state[p, _S_COUNT + 1]
    if n_bids > 0 and n_asks > 0 and book[p, 0, n_bids - 1, _F_KEY] >= -book[p, 1, n_asks - 1, _F_KEY]:
        return CROSSED, 0, stale
    if n_changes == 0:
        return NO_CHANGE, 0, stale
    size = 35 + 17 * n_changes
    if size <= 255:
        out[0] = 7
        out[1] = size
        pos = 2
    else:
        out[0] = 255
        out[1] = 0
        out[2] = 7
        pos = _put(out, 3, size, 2)
    seq = state[p, _S_SEQ]
    pos = _put(out, pos, state[p, _S_IID], 8)
    pos = _put(out, pos, ts, 8)
    pos = _put(out, pos, seq + 1, 8)
    pos = _put(out, pos, seq, 8)
    pos = _put(out, pos, n_changes, 2)
    out[pos] = 0
    pos += 1
    for c in range(n_changes):
        pos = _put(out, pos, changes[c, 0], 8)
        pos = _put(out, pos, changes[c, 1], 8)
        out[pos] = changes[c, 2]
        pos += 1
    state[p, _S_SEQ] = seq + 1
    return OK, pos, stale


_P10 = np.array([10**k for k in range(10)], dtype=np.int64)
_I64_MAX = 2**63 - 1


@njit(cache=True, inline="always")
def _time_ns(mantissa: int, decimals: int) -> int:
    """Seconds (mantissa x 10^-decimals, at most 9 decimals) as ns; -1 if out of range."""
    if decimals > 9 or mantissa > _I64_MAX // _P10[9 - decimals]:
        return -1
    return mantissa * _P10[9 - decimals]


@njit(cache=True)
def _scan(buf, levels):
    """Parse a plain book update frame. Returns (ok, n levels, checksum, has checksum, latest
    level time ns, pair start, pair end); levels rows: side, price, qty, pm, vm."""
    n = len(buf)
    if n < 2 or buf[0] != 91:  # '['
        return False, 0, 0, False, 0, 0, 0
    i = 1
    while i < n and 48 <= buf[i] <= 57:  # channel id
        i += 1
    if i >= n or buf[i] != 44:
        return False, 0, 0, False, 0, 0, 0
    i += 1
    count = 0
    checksum = 0
    has_checksum = False
    latest = 0
    objects = 0
    while i < n and buf[i] == 123:  # '{'
        objects += 1
        i += 1
        while True:
            # "key":
            if i + 3 >= n or buf[i] != 34 or buf[i + 2] != 34 or buf[i + 3] != 58:
                return False, 0, 0, False, 0, 0, 0
            key = buf[i + 1]
            i += 4
            if key == 97 or key == 98:  # a, b
                side = 1 if key == 97 else 0
                if i >= n or buf[i] != 91:
                    return False, 0, 0, False, 0, 0, 0
                i += 1
                if i < n and buf[i] == 93:
                    i += 1
                else:
                    while True:
                        if i >= n or buf[i] != 91 or count >= levels.shape[0]:
                            return False, 0, 0, False, 0, 0, 0
                        pm, pd, i = quoted_decimal(buf, i + 1, n)
                        if pd < 0 or i >= n or buf[i] != 44:
                            return False, 0, 0, False, 0, 0, 0
                        vm, vd, i = quoted_decimal(buf, i + 1, n)
                        if vd < 0 or i >= n or buf[i] != 44:
                            return False, 0, 0, False, 0, 0, 0
                        price = scaled_e8(pm, pd)
                        qty = scaled_e8(vm, vd)
                        if price < 0 or qty < 0:  # digits beyond the 8th decimal that are not zeros
                            return False, 0, 0, False, 0, 0, 0
                        tm, td, i = quoted_decimal(buf, i + 1, n)
                        ts = _time_ns(tm, td) if td >= 0 else -1
                        if ts < 0:
                            return False, 0, 0, False, 0, 0, 0
                        if ts > latest:
                            latest = ts
                        while i < n and buf[i] == 44:  # extra elements: the "r" republish flag
                            i += 1
                            if i >= n or buf[i] != 34:
                                return False, 0, 0, False, 0, 0, 0
                            i += 1
                            while i < n and buf[i] != 34:
                                i += 1
                            i += 1
                        if i >= n or buf[i] != 93:
                            return False, 0, 0, False, 0, 0, 0
                        i += 1
                        levels[count, 0] = side
                        levels[count, 1] = price
                        levels[count, 2] = qty
                        levels[count, 3] = pm
                        levels[count, 4] = vm
                        count += 1
                        if i < n and buf[i] == 44:
                            i += 1
                            continue
                        if i < n and buf[i] == 93:
                            i += 1
                            break
                        return False, 0, 0, False, 0, 0, 0
            elif key == 99:  # c
                cm, cd, i = quoted_decimal(buf, i, n)
                if cd != 0 or cm > 0xFFFFFFFF:
                    return False, 0, 0, False, 0, 0, 0
                checksum = cm
                has_checksum = True
            else:  # "as"/"bs" have two letters and fail the shape check above; others too
                return False, 0, 0, False, 0, 0, 0
            if i < n and buf[i] == 44:
                i += 1
                continue
            if i < n and buf[i] == 125:  # '}'
                i += 1
                break
            return False, 0, 0, False, 0, 0, 0
        if i >= n or buf[i] != 44:
            return False, 0, 0, False, 0, 0, 0
        i += 1
    if objects == 0 or i + 5 >= n or buf[i] != 34:  # channel name: book-<depth>
        return False, 0, 0, False, 0, 0, 0
    if buf[i + 1] != 98 or buf[i + 2] != 111 or buf[i + 3] != 111 or buf[i + 4] != 107:
        return False, 0, 0, False, 0, 0, 0
    i += 1
    while i < n and buf[i] != 34:
        i += 1
    i += 1
    if i + 1 >= n or buf[i] != 44 or buf[i + 1] != 34:
        return False, 0, 0, False, 0, 0, 0
    start = i + 2
    i = start
    while i < n and buf[i] != 34:
        i += 1
    end = i
    if i + 2 != n or buf[i + 1] != 93:
        return False, 0, 0, False, 0, 0, 0
    return True, count, checksum, has_checksum, latest, start, end


@njit(cache=True)
def _scan_snapshot(buf):
    """A compact book snapshot frame ``[id,{"as":[...],"bs":[...]},"book-N","PAIR"]``:
    (ok, asks, bids, latest level time ns, pair start, pair end); level rows (price, qty, price
    mantissa, volume mantissa) in the frame's order."""
    n = len(buf)
    rows = n // 13 + 1
    sides = np.empty((2, rows, 4), dtype=np.int64)
    counts = np.zeros(2, dtype=np.int64)
    empty = np.empty((0, 4), dtype=np.int64)
    latest = 0
    if n < 2 or buf[0] != 91:
        return False, empty, empty, 0, 0, 0
    i = 1
    while i < n and 48 <= buf[i] <= 57:
        i += 1
    if i + 1 >= n or buf[i] != 44 or buf[i + 1] != 123:
        return False, empty, empty, 0, 0, 0
    i += 2
    while True:  # "as": [...] , "bs": [...]
        if i + 4 >= n or buf[i] != 34 or buf[i + 2] != 115 or buf[i + 3] != 34 or buf[i + 4] != 58:
            return False, empty, empty, 0, 0, 0
        if buf[i + 1] == 97:
            side = 1
        elif buf[i + 1] == 98:
            side = 0
        else:
            return False, empty, empty, 0, 0, 0
        i += 5
        if i >= n or buf[i] != 91:
            return False, empty, empty, 0, 0, 0
        i += 1
        if i < n and buf[i] == 93:
            i += 1
        else:
            while True:
                if i >= n or buf[i] != 91 or counts[side] >= rows:
                    return False, empty, empty, 0, 0, 0
                pm, pd, i = quoted_decimal(buf, i + 1, n)
                if pd < 0 or i >= n or buf[i] != 44:
                    return False, empty, empty, 0, 0, 0
                vm, vd, i = quoted_decimal(buf, i + 1, n)
                if vd < 0 or i >= n or buf[i] != 44:
                    return False, empty, empty, 0, 0, 0
                tm, td, i = quoted_decimal(buf, i + 1, n)
                if td < 0 or i >= n or buf[i] != 93:
                    return False, empty, empty, 0, 0, 0
                i += 1
                price = scaled_e8(pm, pd)
                qty = scaled_e8(vm, vd)
                ts = _time_ns(tm, td)
                if price < 0 or qty < 0 or ts < 0:
                    return False, empty, empty, 0, 0, 0
                if ts > latest:
                    latest = ts
                k = counts[side]
                sides[side, k, 0] = price
                sides[side, k, 1] = qty
                sides[side, k, 2] = pm
                sides[side, k, 3] = vm
                counts[side] = k + 1
                if i < n and buf[i] == 44:
                    i += 1
                    continue
                if i < n and buf[i] == 93:
                    i += 1
                    break
                return False, empty, empty, 0, 0, 0
        if i < n and buf[i] == 44:
            i += 1
            continue
        if i < n and buf[i] == 125:
            i += 1
            break
        return False, empty, empty, 0, 0, 0
    if i + 1 >= n or buf[i] != 44 or buf[i + 1] != 34:  # channel name
        return False, empty, empty, 0, 0, 0
    i += 2
    while i < n and buf[i] != 34:
        i += 1
    i += 1
    if i + 1 >= n or buf[i] != 44 or buf[i + 1] != 34:
        return False, empty, empty, 0, 0, 0
    start = i + 2
    i = start
    while i < n and buf[i] != 34:
        i += 1
    end = i
    if i + 2 != n or buf[i + 1] != 93:
        return False, empty, empty, 0, 0, 0
    return True, sides[1, : counts[1]].copy(), sides[0, : counts[0]].copy(), latest, start, end


@njit(cache=True)
def _update(buf, names, params, state, book, scratch, out):
    """One frame: (status, pair index, TLV size, stale removals, levels)."""
    levels = scratch[0]
    ok, n, checksum, has_checksum, latest, start, end = _scan(buf, levels)
    if not ok:
        return FALLBACK, -1, 0, 0, 0
    # names: for each pair, its length then its bytes
    p = -1
    pos = 0
    k = 0
    length = end - start
    while pos < len(names):
        size = names[pos]
        if size == length:
            same = True
            for c in range(size):
                if names[pos + 1 + c] != buf[start + c]:
                    same = False
                    break
            if same:
                p = k
                break
        pos += 1 + size
        k += 1
    if p < 0:
        return UNKNOWN_PAIR, -1, 0, 0, n
    if state[p, _S_SYNCED] == 0:
        return UNSYNCED, p, 0, 0, n
    status, size, stale = _apply(params, state, book, levels, n, p, checksum, has_checksum, latest, scratch[1], out)
    return status, p, size, stale, n


class KrakenBook:
    """A read-only view of one pair's book in the feed's arrays (tests, snapshots, quotes)."""

    __slots__ = ("_feed", "_p")

    def __init__(self, feed: KrakenFeed, p: int) -> None:
        self._feed = feed
        self._p = p

    def _side(self, side: int) -> np.ndarray:
        count = self._feed._state[self._p, _S_COUNT + side]
        return self._feed._books[self._p, side, :count][::-1]  # best first

    def levels(self) -> tuple[list[int], list[int]]:
        """Flat ``[price, qty, ...]`` bids and asks, best first."""
        bids = self._side(0)
        asks = self._side(1)
        flat_bids = np.empty((len(bids), 2), dtype=np.int64)
        flat_bids[:, 0] = bids[:, _F_KEY]
        flat_bids[:, 1] = bids[:, _F_QTY]
        flat_asks = np.empty((len(asks), 2), dtype=np.int64)
        flat_asks[:, 0] = -asks[:, _F_KEY]
        flat_asks[:, 1] = asks[:, _F_QTY]
        return flat_bids.ravel().tolist(), flat_asks.ravel().tolist()

    def mantissas(self) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """(price, volume) as the integers the exchange's strings spell without their dot."""
        return ([tuple(r) for r in self._side(0)[:, 2:4].tolist()], [tuple(r) for r in self._side(1)[:, 2:4].tolist()])

    def best(self) -> tuple[int, int, int, int]:
        """(bid price, bid qty, ask price, ask qty); zeros for an empty side."""
        bids, asks = self._side(0), self._side(1)
        bid = (int(bids[0, 0]), int(bids[0, 1])) if len(bids) else (0, 0)
        ask = (int(-asks[0, 0]), int(asks[0, 1])) if len(asks) else (0, 0)
        return bid[0], bid[1], ask[0], ask[1]

    def checksum(self) -> int:
        """Kraken's v1 CRC32 of the current book."""
        return int(_book_checksum(self._feed._books, self._feed._state, self._p))

    def crossed(self) -> bool:
        best = self.best()
        return bool(best[0] and best[2] and best[0] >= best[2])


def book_checksum(asks: Iterable[tuple[str, str]], bids: Iterable[tuple[str, str]]) -> int:
    """Reference v1 checksum from (price, volume) strings, best first on each side (for tests)."""
    text = ""
    for levels in (asks, bids):
        for i, (price, volume) in enumerate(levels):
            if i == CHECKSUM_LEVELS:
                break
            text += price.replace(".", "").lstrip("0") + volume.replace(".", "").lstrip("0")
    return zlib.crc32(text.encode())


# -- the sans-IO feed ------------------------------------------------------------------------------


@dataclasses.dataclass
class PairStatistics:
    updates: int = 0
    """Updates applied to a synced book (kept by the kernel, like checksum_ok and stale_removals)."""
    checksum_ok: int = 0
    checksum_mismatch: int = 0
    resyncs: int = 0
    crossed: int = 0
    snapshots: int = 0
    trades: int = 0
    quotes: int = 0
    ignored_unsynced: int = 0
    stale_removals: int = 0


class _Pair:
    __slots__ = ("feed", "iid", "index", "instrument", "last_quote", "mapping", "name", "resubscribing", "stats")

    def __init__(self, feed: KrakenFeed, index: int, name: str, instrument: Instrument) -> None:
        self.feed = feed
        self.index = index
        self.name = name
        self.instrument = instrument
        self.iid = instrument.id
        self.mapping = encode(mapping_for(instrument))
        self.resubscribing = False
        self.stats = PairStatistics()
        self.last_quote: tuple[int, int, int, int] | None = None

    @property
    def synced(self) -> bool:
        return bool(self.feed._state[self.index, _S_SYNCED])

    @property
    def book(self) -> KrakenBook | None:
        """The pair's book while synced, else None (nothing is published for it)."""
        return KrakenBook(self.feed, self.index) if self.synced else None

    @property
    def book_seq(self) -> int:
        return int(self.feed._state[self.index, _S_SEQ])

    def drop_book(self) -> None:
        state = self.feed._state
        state[self.index, _S_SYNCED] = 0
        state[self.index, _S_COUNT] = state[self.index, _S_COUNT + 1] = 0
        state[self.index, _S_CRC_ASKS] = state[self.index, _S_CRC] = -1


def kraken_instrument(venue: str, wsname: str) -> Instrument:
    """The instrument of a Kraken pair (``XBT/USD`` → ``spot|kraken|BTC|USD``)."""
    base, sep, quote = wsname.partition("/")
    if not sep:
        raise ValueError(f"Kraken pair {wsname!r} is not BASE/QUOTE")
    return spot(venue, ASSET_ALIASES.get(base, base), ASSET_ALIASES.get(quote, quote))


class KrakenFeed:
    """Sans-IO Kraken WS v1 adapter core: frames in, encoded TLVs out."""

    def __init__(
        self,
        pairs: Iterable[str],
        *,
        channels: Iterable[str] = ("trade", "ticker", "book"),
        depth: int = 10,
        verify_checksum: bool = True,
        book_quotes: bool = False,
        venue: str = "kraken",
        counters: Counter[str] | None = None,
        log: logging.Logger | None = None,
    ) -> None:
        self.channels = tuple(channels)
        self.depth = depth
        self.verify_checksum = verify_checksum
        self.book_quotes = book_quotes
        self.venue = venue
        names = list(dict.fromkeys(pairs))
        self._pair_list = [_Pair(self, i, name, kraken_instrument(venue, name)) for i, name in enumerate(names)]
        self.pairs = {p.name: p for p in self._pair_list}
        self.by_id = {p.iid: p for p in self._pair_list}
        n = len(names)
        encoded = [name.encode() for name in names]
        if any(len(e) > 255 for e in encoded):
            raise ValueError("Kraken pair names are short")
        self._names = np.frombuffer(b"".join(bytes((len(e),)) + e for e in encoded), dtype=np.uint8).copy()
        self._params = np.array([depth, 1 if verify_checksum else 0], dtype=np.int64)
        self._state = np.zeros((n, _STATE_WIDTH), dtype=np.int64)
        self._state[:, _S_CRC_ASKS] = self._state[:, _S_CRC] = -1
        self._state[:, _S_IID] = np.array([p.iid for p in self._pair_list], dtype=np.uint64).view(np.int64)
        self._books = np.zeros((n, 2, depth + MAX_UPDATE_LEVELS, _WIDTH), dtype=np.int64)
        self._scratch = np.zeros((2, 2 * MAX_UPDATE_LEVELS, 5), dtype=np.int64)
        self._out = np.zeros(_OUT_SIZE, dtype=np.uint8)
        self._out_view = memoryview(self._out)
        self.counters: Counter[str] = counters if counters is not None else Counter()
        self.log = log or logging.getLogger("alphapulse.kraken")
        self.outgoing: list[str] = []
        """Messages to send upstream (resubscribes); the node sends and clears them."""
        self.system_status: str | None = None

    # -- session ---------------------------------------------------------------------------------
    def subscribe_messages(self) -> list[str]:
        """The subscribe requests to send after connecting (one per channel, all pairs)."""
        names = list(self.pairs)
        return [self._subscription("subscribe", names, channel) for channel in self.channels]

    def _subscription(self, event: str, names: list[str], channel: str) -> str:
        sub: dict[str, Any] = {"name": channel}
        if channel == "book":
            sub["depth"] = self.depth
        return orjson.dumps({"event": event, "pair": names, "subscription": sub}).decode()

    def mappings(self) -> list[bytes]:
        return [p.mapping for p in self.pairs.values()]

    def reset(self) -> None:
        """Connection lost: drop every book; nothing is published until fresh snapshots."""
        for pair in self._pair_list:
            pair.drop_book()
            pair.resubscribing = False
        self.outgoing.clear()

    # -- frames -----------------------------------------------------------------------------------
    def receive(self, frame: str | bytes, receive_ns: int = 0) -> list[bytes]:
        """Parse one frame; return the TLVs it produces (each to be one message)."""
        if frame[:1] in _ARRAY_START:  # book updates: one compiled call parses, applies, checks, packs
            buf = frame.encode() if type(frame) is str else frame
            status, p, size, stale, _n = _update(
                buf, self._names, self._params, self._state, self._books, self._scratch, self._out
            )
            if status == OK:  # counters are kept by the kernel
                out = [self._out_view[:size].tobytes()]
                if self.book_quotes:
                    self._book_quote(self._pair_list[p], _timestamp_of(out[0]), out)
                return out
            if status != FALLBACK:
                out = []
                self._finish(self._pair_list[p] if p >= 0 else None, status, size, stale, out, frame)
                return out
            if buf.find(b'{"as":', 0, 32) >= 0:  # a snapshot: compiled reader, whole columns
                ok, asks, bids, latest, start, end = _scan_snapshot(buf)
                pair = self.pairs.get(buf[start:end].decode("utf-8", "replace")) if ok else None
                if pair is not None:
                    out = []
                    self._install(pair, bids, asks, latest, out)
                    return out
        try:
            msg = orjson.loads(frame)
        except orjson.JSONDecodeError:
            self._error("bad_json", "frame is not JSON: %.120r", frame)
            return []
        out: list[bytes] = []
        try:
            if type(msg) is list:
                channel = msg[-2]
                pair = self.pairs.get(msg[-1])
                if pair is None:
                    self._error("unknown_pair", "frame for a pair not subscribed: %.120r", frame)
                elif channel[:4] == "book":
                    self._book(pair, msg, out)
                elif channel == "trade":
                    self._trades(pair, msg[1], out)
                elif channel == "ticker":
                    self._ticker(pair, msg[1], out)
                elif channel == "spread":
                    self._spread(pair, msg[1], out)
                else:
                    self._error("unknown_channel", "frame of unknown channel %r", channel)
            elif type(msg) is dict:
                self._event(msg)
            else:
                self._error("malformed", "frame is neither an array nor an object: %.120r", frame)
        except (KeyError, IndexError, TypeError, ValueError, AttributeError, OverflowError, struct.error) as exc:
            self._error("malformed", "cannot read frame (%s: %s): %.200r", type(exc).__name__, exc, frame)
        return out

    def _finish(self, pair: _Pair | None, status: int, size: int, stale: int, out: list[bytes], frame: Any) -> None:
        """Everything but the common OK outcome of applying an update."""
        if pair is None:
            self._error("unknown_pair", "book update for a pair not subscribed: %.120r", frame)
            return
        stats = pair.stats
        if status == UNSYNCED:
            stats.ignored_unsynced += 1
            return
        if status == OK:
            out.append(self._out_view[:size].tobytes())
            if self.book_quotes:
                self._book_quote(pair, _timestamp_of(out[-1]), out)
        elif status == NO_CHANGE:
            pass
        elif status == MISMATCH:
            stats.checksum_mismatch += 1
            self.counters["book.checksum_mismatch"] += 1
            self._error("checksum", "%s: book checksum mismatch; resyncing", pair.name)
            self._resync(pair, "checksum mismatch")
        elif status == CROSSED:
            stats.crossed += 1
            self.counters["book.crossed"] += 1
            self._error("crossed", "%s: crossed book after an update; resyncing", pair.name)
            self._resync(pair, "crossed book")
        elif status == NO_CHECKSUM:
            self._error("missing_checksum", "%s: book update without a checksum; resyncing", pair.name)
            self._resync(pair, "update without checksum")
        elif status == OVERFLOW:
            self._error("malformed", "%s: book update beyond capacity; resyncing", pair.name)
            self._resync(pair, "book capacity")

    def _book(self, pair: _Pair, msg: list, out: list[bytes]) -> None:
        """A book frame the compiled scanner did not take: a snapshot, or an update in another
        shape (whitespace, odd numbers); parsed with orjson, applied by the same kernel."""
        first = msg[1]
        if "as" in first or "bs" in first:
            self._snapshot(pair, first.get("as", []), first.get("bs", []), out)
            return
        if not pair.synced:
            pair.stats.ignored_unsynced += 1
            return
        levels = self._scratch[0]
        n = 0
        latest = 0
        checksum = None
        try:
            for part in msg[1:-2]:
                for key, side in (("a", _ASK), ("b", _BID)):
                    for level in part.get(key, ()):
                        if n >= MAX_UPDATE_LEVELS:
                            raise ValueError(f"more than {MAX_UPDATE_LEVELS} levels in one update")
                        pm, price = _mantissa(level[0])
                        vm, qty = _mantissa(level[1])
                        levels[n] = (side, price, qty, pm, vm)
                        latest = max(latest, seconds_ns(level[2]))
                        if not 0 <= latest < 2**63:
                            raise ValueError(f"level time {level[2]!r} out of range")
                        n += 1
                if "c" in part:
                    checksum = int(part["c"])
                    if not 0 <= checksum <= 0xFFFFFFFF:
                        raise ValueError(f"checksum {checksum} out of range")
        except (IndexError, TypeError, ValueError, AttributeError, OverflowError) as exc:
            self._error("malformed", "%s: cannot read book update (%s); resyncing", pair.name, exc)
            self._resync(pair, "unreadable update")
            return
        status, size, stale = _apply(
            self._params,
            self._state,
            self._books,
            levels,
            n,
            pair.index,
            checksum or 0,
            checksum is not None,
            latest,
            self._scratch[1],
            self._out,
        )
        self._finish(pair, status, size, stale, out, msg)

    def _snapshot(self, pair: _Pair, asks: list, bids: list, out: list[bytes]) -> None:
        """A snapshot the compiled reader did not take (another shape): read with orjson."""
        try:
            latest = max((seconds_ns(level[2]) for level in (*asks, *bids)), default=0)
            if not 0 <= latest < 2**63:
                raise ValueError("level time out of range")
            sides = []
            for levels in (bids, asks):
                pm, price = _mantissas([level[0] for level in levels])
                vm, qty = _mantissas([level[1] for level in levels])
                sides.append(np.array([price, qty, pm, vm], dtype=np.int64).T.reshape(-1, 4))
        except (IndexError, TypeError, ValueError, AttributeError, OverflowError) as exc:
            pair.drop_book()
            self._error("malformed", "%s: unreadable book snapshot (%s); resyncing", pair.name, exc)
            self._resync(pair, "unreadable snapshot")
            return
        self._install(pair, sides[0], sides[1], latest, out)

    def _install(self, pair: _Pair, bids: np.ndarray, asks: np.ndarray, latest: int, out: list[bytes]) -> None:
        """Replace the pair's book with a snapshot's levels ((n, 4): price, qty, price and
        volume mantissas) and publish it as an OrderBook."""
        p = pair.index
        pair.drop_book()
        sides = []
        for side, rows in ((_BID, bids), (_ASK, asks)):
            rows = rows[rows[:, 1] != 0]
            if side == _ASK:
                rows[:, 0] = -rows[:, 0]
            keys = rows[:, 0]
            if len(keys) > 1 and not (np.diff(keys) > 0).all():  # Kraken sends them sorted: O(n) check
                rows = rows[np.argsort(keys, kind="stable")]
                if (np.diff(rows[:, 0]) == 0).any():
                    self._error("malformed", "%s: a price appears twice in the snapshot; resyncing", pair.name)
                    self._resync(pair, "unreadable snapshot")
                    return
            sides.append(np.ascontiguousarray(rows[-self.depth :]))
        pair.stats.snapshots += 1
        self.counters["book.snapshots"] += 1
        bids, asks = sides
        if len(bids) and len(asks) and bids[-1, 0] >= -asks[-1, 0]:
            pair.stats.crossed += 1
            self.counters["book.crossed"] += 1
            self._error("crossed", "%s: crossed book snapshot; resyncing", pair.name)
            self._resync(pair, "crossed snapshot", force=True)
            return
        state = self._state
        _load_side(self._books, state, p, _BID, bids)
        _load_side(self._books, state, p, _ASK, asks)
        state[p, _S_SYNCED] = 1
        pair.resubscribing = False
        pair.last_quote = None
        out += pack_book_arrays(pair.iid, latest, pair.book_seq, bids[::-1, :2], asks[::-1, :2] * (-1, 1))
        if self.book_quotes:
            self._book_quote(pair, latest, out)

    def _book_quote(self, pair: _Pair, ts: int, out: list[bytes]) -> None:
        best = KrakenBook(self, pair.index).best()
        if best != pair.last_quote:
            pair.last_quote = best
            pair.stats.quotes += 1
            out.append(pack_quote(pair.iid, best[0], best[1], best[2], best[3], ts))

    def _resync(self, pair: _Pair, reason: str, *, force: bool = False) -> None:
        """Drop the pair's book and ask Kraken for a fresh snapshot (unsubscribe + subscribe)."""
        pair.stats.resyncs += 1
        self.counters["book.resyncs"] += 1
        pair.drop_book()
        if pair.resubscribing and not force:
            return  # a resubscribe is already on its way; its snapshot will resync the pair
        pair.resubscribing = True
        self.log.warning("%s: resyncing book (%s)", pair.name, reason)
        self.outgoing.append(self._subscription("unsubscribe", [pair.name], "book"))
        self.outgoing.append(self._subscription("subscribe", [pair.name], "book"))

    def _trades(self, pair: _Pair, trades: list, out: list[bytes]) -> None:
        iid = pair.iid
        for trade in trades:
            side = trade[3]
            out.append(
                pack_trade(
                    iid,
                    fixed(trade[0]),
                    fixed(trade[1]),
                    seconds_ns(trade[2]),
                    1 if side == "b" else 2 if side == "s" else 0,
                )
            )
        pair.stats.trades += len(trades)

    def _ticker(self, pair: _Pair, ticker: dict, out: list[bytes]) -> None:
        bid = ticker["b"]
        ask = ticker["a"]
        out.append(pack_quote(pair.iid, fixed(bid[0]), fixed(bid[2]), fixed(ask[0]), fixed(ask[2]), 0))
        pair.stats.quotes += 1

    def _spread(self, pair: _Pair, spread: list, out: list[bytes]) -> None:
        bid, ask, ts, bid_qty, ask_qty = spread[:5]
        out.append(pack_quote(pair.iid, fixed(bid), fixed(bid_qty), fixed(ask), fixed(ask_qty), seconds_ns(ts)))
        pair.stats.quotes += 1

    def _event(self, msg: dict) -> None:
        event = msg.get("event")
        if event == "heartbeat":
            self.counters["kraken.heartbeats"] += 1
        elif event == "subscriptionStatus":
            status = msg.get("status")
            if status == "error":
                self._error("subscription", "subscription error for %s: %s", msg.get("pair"), msg.get("errorMessage"))
            elif status not in ("subscribed", "unsubscribed"):
                self._error("unknown_event", "unexpected subscription status %.200r", msg)
        elif event == "systemStatus":
            self.system_status = msg.get("status")
            if self.system_status != "online":
                self.log.warning("Kraken system status: %s", self.system_status)
        elif event == "error":
            self._error("exchange", "Kraken error: %s", msg.get("errorMessage"))
        elif event == "pong":
            pass
        else:
            self._error("unknown_event", "unknown event %.200r", msg)

    def _error(self, kind: str, message: str, *args: Any) -> None:
        report(self.counters, self.log, f"errors.{kind}", message, *args)

    # -- state --------------------------------------------------------------------------------------
    def snapshot(self, instrument_id: int = 0) -> list[bytes]:
        """Mappings and current books (synced pairs only) of one instrument or of all (0)."""
        out: list[bytes] = []
        for pair in self.pairs.values():
            if instrument_id not in (0, pair.iid):
                continue
            out.append(pair.mapping)
            book = pair.book
            if book is not None:
                bids, asks = book.levels()
                out += pack_book(pair.iid, time.time_ns(), pair.book_seq, bids, asks)
        return out

    def _pair_statistics(self, pair: _Pair) -> dict[str, int]:
        stats = dataclasses.asdict(pair.stats)
        row = self._state[pair.index]
        stats["updates"] = int(row[_S_UPDATES])
        stats["checksum_ok"] = int(row[_S_CHECKSUM_OK])
        stats["stale_removals"] = int(row[_S_STALE])
        return stats

    def statistics(self) -> dict[str, Any]:
        return {
            "pairs": {name: self._pair_statistics(p) for name, p in self.pairs.items()},
            "synced": sorted(name for name, p in self.pairs.items() if p.synced),
            "book_levels": {
                name: [int(c) for c in self._state[p.index, _S_COUNT : _S_COUNT + 2]] for name, p in self.pairs.items()
            },
            "system_status": self.system_status,
            "errors": {k[7:]: v for k, v in self.counters.items() if k.startswith("errors.")},
        }


# -- the node kind ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class KrakenParams(UpstreamParams):
    endpoint: str = param("wss://ws.kraken.com", doc="Kraken WebSocket v1 URL.", pattern="^wss?://")
    pairs: tuple[str, ...] = param(
        ("XBT/USD",),
        doc="Pairs to subscribe to, in Kraken's BASE/QUOTE wsname notation (XBT/USD).",
        minItems=1,
        items={"type": "string", "pattern": "^[A-Z0-9]+/[A-Z0-9]+$"},
    )
    channels: tuple[Literal["trade", "ticker", "spread", "book"], ...] = param(
        ("trade", "ticker", "book"),
        doc="Data to subscribe to: trade, ticker (quotes with lot volumes), spread (quotes with exchange time), book.",
        minItems=1,
        uniqueItems=True,
    )
    depth: Literal[10, 25, 100, 500, 1000] = param(
        10,
        doc="Book depth to subscribe to; the local book is truncated to it for the checksum.",
    )
    verify_checksum: bool = param(
        True,
        doc="Check the CRC32 book checksum on every update; a mismatch resyncs the pair.",
    )
    book_quotes: bool = param(
        False,
        doc="Also publish a Quote whenever the top of a book changes.",
    )
    venue: str = param("kraken", doc="Exchange name used in instrument ids.", pattern="^[a-z0-9_.]+$")


def _warm_up_frames(pair: str, depth: int) -> list[str]:
    """A book snapshot and an update of ``pair`` in the shape Kraken sends them (compact JSON, as on
    the wire, the update's checksum right), for :meth:`Kraken.load_kernels`."""
    t = "1700000000.123456"
    ask, bid, new_bid = ["100.10000", "1.50000000", t], ["100.00000", "2.00000000", t], ["100.00000", "2.50000000", t]
    channel = f"book-{depth}"
    checksum = str(book_checksum([ask[:2]], [new_bid[:2]]))
    messages = [[1, {"as": [ask], "bs": [bid]}, channel, pair], [1, {"b": [new_bid], "c": checksum}, channel, pair]]
    return [orjson.dumps(message).decode() for message in messages]


@node_kind(
    "source.kraken",
    emits=[TLVType.TRADE, TLVType.QUOTE, TLVType.ORDER_BOOK, TLVType.ORDER_BOOK_DELTA, TLVType.INSTRUMENT_MAPPING],
    example={"pairs": ["XBT/USD", "ETH/USD"], "depth": 25},
)
class Kraken(Node):
    """Kraken WebSocket v1 adapter: trades, tickers, spreads and L2 books with CRC32 checksums.

    Every book update is checked against Kraken's checksum over the book truncated to the
    subscribed depth; a mismatch is counted, logged and triggers a resubscribe of that pair.
    """

    Params = KrakenParams

    def __init__(self, params: KrakenParams) -> None:
        super().__init__(params)
        self.feed = KrakenFeed(
            params.pairs,
            channels=params.channels,
            depth=params.depth,
            verify_checksum=params.verify_checksum,
            book_quotes=params.book_quotes,
            venue=params.venue,
        )
        self._ws: Any = None

    async def run(self, ctx: Any) -> None:
        from alphapulse.runtime import run_websocket_session

        feed = self.feed
        feed.counters = ctx.counters
        feed.log = ctx.log
        ctx.messages(feed.mappings())
        await ctx.flush()

        async def on_connect(ws: Any) -> None:
            self._ws = ws
            feed.reset()
            for message in feed.subscribe_messages():
                await ws.send_message(message)

        def on_disconnect() -> None:
            self._ws = None
            feed.reset()

        message = ctx.message

        def on_message(frame: str | bytes, receive_ns: int) -> Any:
            tlvs = feed.receive(frame, receive_ns)
            for tlv in tlvs:
                message(tlv, timestamp_ns=receive_ns)
            if feed.outgoing:
                return self._after_frame(ctx)
            return None  # the session loop flushes after the read

        await run_websocket_session(
            ctx,
            self.params.endpoint,
            on_connect=on_connect,
            on_message=on_message,
            on_disconnect=on_disconnect,
            policy=lambda: self.params,
        )

    def load_kernels(self) -> None:
        """Load (on a fresh install: compile) the book kernels before the node serves: a scratch
        feed of the first pair reads a snapshot and an update in the shape Kraken sends them.
        Whatever the channels: every array frame (trades, tickers) meets the update scanner first."""
        p = self.params
        feed = KrakenFeed(
            p.pairs[:1], channels=("book",), depth=p.depth, verify_checksum=p.verify_checksum, venue=p.venue
        )
        for frame in _warm_up_frames(p.pairs[0], p.depth):
            feed.receive(frame, 0)

    async def _after_frame(self, ctx: Any) -> None:
        await ctx.flush()
        if self.feed.outgoing and self._ws is not None:
            outgoing = list(self.feed.outgoing)
            self.feed.outgoing.clear()
            for text in outgoing:
                await self._ws.send_message(text)

    def snapshot(self, instrument_id: int) -> list[bytes]:
        return self.feed.snapshot(instrument_id)

    def statistics(self) -> dict[str, Any]:
        return self.feed.statistics()
