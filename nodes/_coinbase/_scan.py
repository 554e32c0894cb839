"""A strict numba scanner for the bulky part of ``l2_data`` frames: the ``updates`` arrays.

A full-depth snapshot is ~5 MB of JSON with 46,000 level objects; ``json.loads`` plus a Python
loop over them costs far more than the whole rest of the feed. The frame's envelope (channel,
sequence_num, events, product ids) is still parsed by ``json``, with each ``updates`` array cut
out and handed to this scanner, which reads exactly the documented shape::

    {"side":"bid"|"offer","event_time":"<RFC 3339 UTC>","price_level":"<decimal>","new_quantity":"<decimal>"}

(any key order, any JSON whitespace, unknown string-valued keys skipped). Anything else — an
escape, a non-string value, a number with more than 8 significant decimals, another time
format — returns a negative code and the caller parses that frame with the generic ``json``
path instead, which gives the exact error. ``tests/sources/test_coinbase_book.py`` checks both
paths agree on every frame of the real capture.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from alphapulse.protocol import bytes_equal

OK = 0
BAD_STRUCTURE = -1
BAD_SIDE = -2
BAD_NUMBER = -3
BAD_TIME = -4
MISSING_FIELD = -5

_I64_LIMIT = (2**63 - 1) // 10


@njit(cache=True, inline="always")
def _skip_ws(buf, pos, end):
    while pos < end and (buf[pos] == 32 or buf[pos] == 9 or buf[pos] == 10 or buf[pos] == 13):
        pos += 1
    return pos


@njit(cache=True)
def _decimal(buf, start, end):
    """Exact fixed point at 1e8 of an unsigned decimal string; -1 if not one."""
    if start >= end:
        return -1
    value = 0
    decimals = -1  # -1: before the point
    digits = 0
    for pos in range(start, end):
        c = buf[pos]
        if c == 46:  # '.'
            if decimals >= 0:
                return -1
            decimals = 0
            continue
        if c < 48 or c > 57:
            return -1
        digits += 1
        if decimals >= 0:
            if decimals >= 8:
                if c != 48:
                    return -1  # would round: refuse, the generic path reports it
                continue
            decimals += 1
        if value > _I64_LIMIT:
            return -1
        value = value * 10 + (c - 48)
    if digits == 0:
        return -1
    if decimals < 0:
        decimals = 0
    for _ in range(8 - decimals):
        if value > _I64_LIMIT:
            return -1
        value *= 10
    return value


@njit(cache=True, inline="always")
def _digits(buf, pos, n):
    value = 0
    for k in range(pos, pos + n):
        c = buf[k]
        if c < 48 or c > 57:
            return -1
        value = value * 10 + (c - 48)
    return value


@njit(cache=True)
def days_from_civil(y, m, d):
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)."""
    if m <= 2:
        y -= 1
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    mp = (m + 9) % 12
    doy = (153 * mp + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


@njit(cache=True)
def _time(buf, start, end):
    """Unix ns of ``YYYY-MM-DDTHH:MM:SS[.fffffffff]Z``; -1 if another shape."""
    if end - start < 20 or buf[end - 1] != 90:  # 'Z'
        return -1
    p = start
    if buf[p + 4] != 45 or buf[p + 7] != 45 or buf[p + 10] != 84 or buf[p + 13] != 58 or buf[p + 16] != 58:
        return -1
    year = _digits(buf, p, 4)
    month = _digits(buf, p + 5, 2)
    day = _digits(buf, p + 8, 2)
    hour = _digits(buf, p + 11, 2)
    minute = _digits(buf, p + 14, 2)
    second = _digits(buf, p + 17, 2)
    if year < 0 or month < 1 or month > 12 or day < 1 or day > 31 or hour < 0 or hour > 23:
        return -1
    if minute < 0 or minute > 59 or second < 0 or second > 60:
        return -1
    frac = 0
    q = p + 19
    if q < end - 1:
        if buf[q] != 46 or end - 1 - (q + 1) > 9 or end - 1 - (q + 1) < 1:
            return -1
        n = end - 1 - (q + 1)
        frac = _digits(buf, q + 1, n)
        if frac < 0:
            return -1
        for _ in range(9 - n):
            frac *= 10
    days = days_from_civil(year, month, day)
    return ((days * 24 + hour) * 60 + minute) * 60_000_000_000 + second * 1_000_000_000 + frac


_SIDE = np.frombuffer(b"side", np.uint8)
_PRICE = np.frombuffer(b"price_level", np.uint8)
_QTY = np.frombuffer(b"new_quantity", np.uint8)
_TIME = np.frombuffer(b"event_time", np.uint8)
_BID = np.frombuffer(b"bid", np.uint8)
_OFFER = np.frombuffer(b"offer", np.uint8)


@njit(cache=True)
def _string(buf, pos, end):
    """(start, end) of the string whose opening quote is at ``pos``; (-1, -1) on an escape or EOF."""
    if pos >= end or buf[pos] != 34:
        return -1, -1
    k = pos + 1
    while k < end:
        c = buf[k]
        if c == 34:
            return pos + 1, k
        if c == 92:
            return -1, -1
        k += 1
    return -1, -1


@njit(cache=True)
def _same(buf, a, b, n):
    for k in range(n):  # noqa: SIM110 - numba compiles loops, not all(genexpr)
        if buf[a + k] != buf[b + k]:
            return False
    return True


@njit(cache=True)
def scan_updates(buf, start, end, sides, prices, qtys, times):
    """Parse the level objects between ``start`` and ``end``; return their count or an error code."""
    n = 0
    cap = sides.shape[0]
    last_ts_start = -1  # levels of one event usually share event_time: parse it once
    last_ts_len = 0
    last_ts = 0
    pos = _skip_ws(buf, start, end)
    while pos < end:
        if buf[pos] != 123 or n >= cap:  # '{'
            return BAD_STRUCTURE
        pos += 1
        seen = 0
        while True:
            pos = _skip_ws(buf, pos, end)
            if pos < end and buf[pos] == 125 and seen == 0:  # empty object
                break
            ks, ke = _string(buf, pos, end)
            if ks < 0:
                return BAD_STRUCTURE
            pos = _skip_ws(buf, ke + 1, end)
            if pos >= end or buf[pos] != 58:  # ':'
                return BAD_STRUCTURE
            pos = _skip_ws(buf, pos + 1, end)
            vs, ve = _string(buf, pos, end)
            if vs < 0:
                return BAD_STRUCTURE
            length = ke - ks  # the four keys have four different lengths
            if length == 4 and bytes_equal(buf, ks, ke, _SIDE):
                if bytes_equal(buf, vs, ve, _BID):
                    sides[n] = 0
                elif bytes_equal(buf, vs, ve, _OFFER):
                    sides[n] = 1
                else:
                    return BAD_SIDE
                seen |= 1
            elif length == 11 and bytes_equal(buf, ks, ke, _PRICE):
                value = _decimal(buf, vs, ve)
                if value < 0:
                    return BAD_NUMBER
                prices[n] = value
                seen |= 2
            elif length == 12 and bytes_equal(buf, ks, ke, _QTY):
                value = _decimal(buf, vs, ve)
                if value < 0:
                    return BAD_NUMBER
                qtys[n] = value
                seen |= 4
            elif length == 10 and bytes_equal(buf, ks, ke, _TIME):
                if ve - vs == last_ts_len and _same(buf, vs, last_ts_start, last_ts_len):
                    value = last_ts
                else:
                    value = _time(buf, vs, ve)
                    if value < 0:
                        return BAD_TIME
                    last_ts_start, last_ts_len, last_ts = vs, ve - vs, value
                times[n] = value
                seen |= 8
            pos = _skip_ws(buf, ve + 1, end)
            if pos >= end:
                return BAD_STRUCTURE
            if buf[pos] == 44:  # ','
                pos += 1
                continue
            if buf[pos] == 125:  # '}'
                break
            return BAD_STRUCTURE
        if seen != 15:
            return MISSING_FIELD
        n += 1
        pos = _skip_ws(buf, pos + 1, end)
        if pos < end:
            if buf[pos] != 44:
                return BAD_STRUCTURE
            pos = _skip_ws(buf, pos + 1, end)
            if pos >= end:
                return BAD_STRUCTURE  # trailing comma
    return n


MIN_LEVEL_BYTES = 64
"""No valid level object is shorter (its four keys and values alone take more): capacity bound."""


def capacity_for(nbytes: int) -> int:
    return nbytes // MIN_LEVEL_BYTES + 1


def scan(buf: np.ndarray, start: int, end: int):
    """Levels of one ``updates`` array body: (count or error code, sides, prices, qtys, times)."""
    capacity = capacity_for(end - start)
    sides = np.empty(capacity, np.uint8)
    prices = np.empty(capacity, np.int64)
    qtys = np.empty(capacity, np.int64)
    times = np.empty(capacity, np.int64)
    n = scan_updates(buf, start, end, sides, prices, qtys, times)
    if n < 0:
        return n, sides[:0], prices[:0], qtys[:0], times[:0]
    return n, sides[:n], prices[:n], qtys[:n], times[:n]


def time_ns(text: str) -> int:
    """Unix ns of an RFC 3339 UTC time via the same kernel; -1 if another shape."""
    raw = np.frombuffer(text.encode("ascii", "replace"), np.uint8)
    return int(_time(raw, 0, len(raw)))
