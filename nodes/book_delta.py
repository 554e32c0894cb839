"""``transform.book_delta``: track order books, emit compact deltas and periodic snapshots.

Why a tracker: upstream adapters send what their venue sends (full snapshots, level updates at
any depth). Downstream wants the top ``depth`` levels only, and only what changed. So each book
is kept as fixed-point numpy arrays and, after every upstream update, the tracked top-N is diffed
against what was last published; only the changed levels go out (qty 0 = removed, including
levels pushed below the top-N).

Layout of the state (``BookTracker``): per instrument slot and side, ``keys`` sorted ascending
(ask price, or minus the bid price, so both sides are "best first" in one direction) and
``qtys``; the first ``n`` entries are valid. Up to ``depth + extra_levels`` levels are kept, so
a level below the top-N can move up when a better one is removed. When levels had to be dropped
for room (``truncated``), changes beyond the last kept level are ignored (they fall in a region
we no longer know) and a book whose known part shrinks below ``depth`` is *incomplete*: nothing
is published from it until a fresh upstream snapshot arrives. ``published`` arrays mirror
exactly what downstream holds, so a resync snapshot is diffed against them (a delta, not a
reset) and snapshots we send are what our deltas continue from.

The numba kernels (``index_tlvs``, ``apply_side``, ``diff_book``, ``process_updates`` and the TLV
writers) run over a whole input block in one call and write finished TLV bytes; Python only
builds the message headers. They are compiled with ``cache=True`` so a restarted node loads them
from ``__pycache__`` instead of stalling on JIT (``benchmarks/book.py`` measures both).
"""

from __future__ import annotations

import dataclasses
import struct
import time
from typing import Any

import numpy as np
import trio
from numba import njit

from alphapulse.kinds import Node, node_kind, param
from alphapulse.protocol import (
    HEADER_SIZE,
    FrameBlock,
    InstrumentMapping,
    MalformedFrame,
    MessageBuilder,
    OrderBook,
    OrderBookDelta,
    RelayDomain,
    TLVType,
    decode,
    encode,
    instrument_id,
    parse_instrument,
)
from alphapulse.runtime import UpstreamEpochs, report

# -- wire constants (values from docs/protocol.md) ----------------------------------------------
T_BOOK = int(TLVType.ORDER_BOOK)
T_DELTA = int(TLVType.ORDER_BOOK_DELTA)
T_MAPPING = int(TLVType.INSTRUMENT_MAPPING)
BOOK_HEAD = 28
DELTA_HEAD = 35
LEVEL_SIZE = 16
CHANGE_SIZE = 17
MAX_VALUE = 65535
MAX_BOOK_LEVELS = (MAX_VALUE - BOOK_HEAD) // LEVEL_SIZE  # 4094 levels fit one OrderBook TLV
MAX_DELTA_CHANGES = (MAX_VALUE - DELTA_HEAD) // CHANGE_SIZE  # 3852 changes fit one delta TLV
MAX_INPUT_CHANGES = MAX_DELTA_CHANGES + 4

# book states
UNKNOWN, LIVE, STALE = 0, 1, 2

# per-update outcome of process_updates
ST_OK = 0  # delta applied; changes (maybe none) written
ST_FIRST = 1  # first snapshot of the book (or of an empty one): a full OrderBook written
ST_RESYNC = 2  # snapshot on a known book: diffed, a delta written
ST_NO_BOOK = 3  # delta before any snapshot: dropped, ask for a snapshot
ST_STALE = 4  # delta on a book awaiting a snapshot: dropped
ST_SEQ_GAP = 5  # venue sequence gap: book now stale, ask for a snapshot
ST_INCOMPLETE = 6  # applied, but the top-N is no longer known: stale, ask for a snapshot
ST_BAD = 7  # malformed value (sizes, prices, sides): ignored
ST_UNSORTED = 8  # snapshot levels not best-first: ignored
ST_NO_SLOT = 9  # more instruments than max_instruments: ignored
ST_MAPPING = 10  # an InstrumentMapping (handled in Python)

STATUS_COUNTERS = {
    ST_FIRST: "snapshots.full",
    ST_RESYNC: "resyncs",
    ST_NO_BOOK: "dropped.no_snapshot_yet",
    ST_STALE: "dropped.stale_book",
    ST_SEQ_GAP: "dropped.sequence_gap",
    ST_INCOMPLETE: "books.incomplete",
    ST_BAD: "errors.bad_book_value",
    ST_UNSORTED: "errors.unsorted_snapshot",
    ST_NO_SLOT: "dropped.too_many_instruments",
}
NEEDS_SNAPSHOT = (ST_NO_BOOK, ST_STALE, ST_SEQ_GAP, ST_INCOMPLETE)
H_DELTA_BYTES, H_SNAPSHOT_BYTES, H_UNCHANGED = 13, 14, 15  # hist slots besides the statuses
R_STATUS, R_START, R_LEN, R_CHANGES, R_LEVELS, R_ROWS = 0, 1, 2, 3, 4, 5  # rows of process_updates' results
# kernel counters
C_UNKNOWN_REMOVALS, C_BEYOND_KNOWN, C_CROSSED, N_COUNTS = 0, 1, 2, 3

RESNAPSHOT_AFTER = 5.0
"""Seconds before asking the same upstream again for a book it has not re-sent."""

_U0 = np.uint64(0)
_INT64_MIN = np.iinfo(np.int64).min


# -- byte helpers ---------------------------------------------------------------------------------
@njit(cache=True)
def _rd_u16(b, i):
    return np.int64(b[i]) | (np.int64(b[i + 1]) << 8)


@njit(cache=True)
def _rd_u64(b, i):
    r = np.uint64(0)
    for k in range(8):
        r |= np.uint64(b[i + k]) << np.uint64(8 * k)
    return r


@njit(cache=True)
def _rd_i64(b, i):
    return np.int64(_rd_u64(b, i))


@njit(cache=True)
def _wr_u16(b, i, v):
    b[i] = np.uint8(v & 0xFF)
    b[i + 1] = np.uint8((v >> 8) & 0xFF)


@njit(cache=True)
def _wr_u64(b, i, v):
    u = np.uint64(v)
    for k in range(8):
        b[i + k] = np.uint8((u >> np.uint64(8 * k)) & np.uint64(0xFF))


@njit(cache=True)
def _tlv_head(out, pos, tlv_type, length):
    """Standard TLV header when the value fits 255 bytes, extended otherwise; returns value pos."""
    if length <= 255:
        out[pos] = tlv_type
        out[pos + 1] = length
        return pos + 2
    out[pos] = 255
    out[pos + 1] = 0
    out[pos + 2] = tlv_type
    _wr_u16(out, pos + 3, length)
    return pos + 5


# -- indexing a block ----------------------------------------------------------------------------
# rows of the index ``index_tlvs`` fills
IX_FRAME, IX_TYPE, IX_VOFF, IX_VLEN, IX_SOURCE, IX_IID, IX_ROWS = 0, 1, 2, 3, 4, 5, 6


@njit(cache=True)
def _walk(buf, f, off, size, out, count):
    """Index one frame's book and mapping TLVs from ``count`` on; -1 if its framing is bad."""
    p = off + 32
    end = off + size
    cap = out.shape[1]
    source = _rd_u16(buf, off + 6)
    while p < end:
        if end - p < 2:
            return -1
        t = np.int64(buf[p])
        if t == 255:
            if end - p < 5:
                return -1
            t = np.int64(buf[p + 2])
            length = _rd_u16(buf, p + 3)
            v = p + 5
        else:
            length = np.int64(buf[p + 1])
            v = p + 2
        if v + length > end:
            return -1
        if t == 3 or t == 7 or t == 82:
            if count < cap:
                out[IX_FRAME, count] = f
                out[IX_TYPE, count] = t
                out[IX_VOFF, count] = v
                out[IX_VLEN, count] = length
                out[IX_SOURCE, count] = source
                out[IX_IID, count] = np.int64(_rd_u64(buf, v)) if length >= 8 else 0
            count += 1
        p = v + length
    return count


@njit(cache=True)
def index_tlvs(buf, offsets, sizes, out):
    """Every OrderBook, OrderBookDelta and InstrumentMapping TLV of a block, in order, as columns
    of ``out`` (frame, type, value offset, value length, source, instrument id bits).

    Returns (count, malformed frames); frames with broken TLV framing contribute nothing. A count
    above ``out.shape[1]`` means the index did not fit: grow ``out`` and call again.
    """
    count = 0
    bad = 0
    for f in range(offsets.shape[0]):
        new = _walk(buf, f, offsets[f], sizes[f], out, count)
        if new < 0:
            bad += 1
        else:
            count = new
    return count, bad


# -- book kernels ---------------------------------------------------------------------------------
@njit(cache=True)
def _merge_sort(sk, sq, k, wk, wq):
    """Stable bottom-up merge sort of k (key, qty) pairs by key, using wk/wq as room."""
    width = 1
    while width < k:
        lo = 0
        while lo < k:
            mid = min(lo + width, k)
            hi = min(lo + 2 * width, k)
            i = lo
            j = mid
            for o in range(lo, hi):
                if j >= hi or (i < mid and sk[i] <= sk[j]):
                    wk[o] = sk[i]
                    wq[o] = sq[i]
                    i += 1
                else:
                    wk[o] = sk[j]
                    wq[o] = sq[j]
                    j += 1
            lo = hi
        for o in range(k):
            sk[o] = wk[o]
            sq[o] = wq[o]
        width *= 2


@njit(cache=True)
def sort_unique(sk, sq, k, wk, wq):
    """Sort k changes by key, stably, keeping the last change of each key; returns the count.

    Venue updates usually arrive sorted per side, so that case costs one pass.
    """
    ordered = True
    for i in range(1, k):
        if sk[i] < sk[i - 1]:
            ordered = False
            break
    if not ordered:
        if k <= 64:
            for i in range(1, k):
                key = sk[i]
                q = sq[i]
                j = i
                while j > 0 and sk[j - 1] > key:
                    sk[j] = sk[j - 1]
                    sq[j] = sq[j - 1]
                    j -= 1
                sk[j] = key
                sq[j] = q
        else:
            _merge_sort(sk, sq, k, wk, wq)
    m = 0
    for i in range(k):
        if m > 0 and sk[m - 1] == sk[i]:
            sq[m - 1] = sq[i]
        else:
            sk[m] = sk[i]
            sq[m] = sq[i]
            m += 1
    return m


@njit(cache=True)
def _apply_in_place(keys, qtys, n, truncated, ck, cq, k, counts):
    """``apply_side`` for a few changes: removals first (so they make room), then the rest in
    ascending key order; the same result as the merge walk."""
    cap = keys.shape[0]
    for step in range(2 * k):
        j = step if step < k else step - k
        key = ck[j]
        q = cq[j]
        if (q == 0) != (step < k):
            continue
        if truncated and (n == 0 or key > keys[n - 1]):
            counts[C_BEYOND_KNOWN] += 1
            continue
        i = np.searchsorted(keys[:n], key)
        if i < n and keys[i] == key:
            if q > 0:
                qtys[i] = q
            else:
                for x in range(i, n - 1):
                    keys[x] = keys[x + 1]
                    qtys[x] = qtys[x + 1]
                n -= 1
            continue
        if q == 0:
            counts[C_UNKNOWN_REMOVALS] += 1
            continue
        if n == cap:
            truncated = True
            if i == cap:
                continue
            n -= 1
        for x in range(n, i, -1):
            keys[x] = keys[x - 1]
            qtys[x] = qtys[x - 1]
        keys[i] = key
        qtys[i] = q
        n += 1
    return n, truncated


@njit(cache=True)
def apply_side(keys, qtys, n, truncated, ck, cq, k, tk, tq, counts):
    """Merge k sorted, unique changes into one side (``keys`` ascending, n valid) in place.

    qty 0 removes a level. At most ``keys.shape[0]`` levels are kept; dropping any sets
    ``truncated``, after which changes beyond the last kept level are ignored (unknown region).
    Returns (new n, truncated). A few changes are applied in place (binary search and shift,
    no full pass over a deep book); more go through one merge walk.
    """
    if k <= 4:
        return _apply_in_place(keys, qtys, n, truncated, ck, cq, k, counts)
    cap = keys.shape[0]
    limit = k
    if truncated:
        limit = 0
        if n > 0:
            last = keys[n - 1]
            while limit < k and ck[limit] <= last:
                limit += 1
        counts[C_BEYOND_KNOWN] += k - limit
    i = 0
    j = 0
    m = 0
    while i < n or j < limit:
        if j >= limit or (i < n and keys[i] < ck[j]):
            key = keys[i]
            q = qtys[i]
            i += 1
        elif i >= n or ck[j] < keys[i]:
            key = ck[j]
            q = cq[j]
            j += 1
            if q == 0:
                counts[C_UNKNOWN_REMOVALS] += 1
                continue
        else:
            key = ck[j]
            q = cq[j]
            i += 1
            j += 1
            if q == 0:
                continue
        if m == cap:
            truncated = True
            break
        tk[m] = key
        tq[m] = q
        m += 1
    for x in range(m):
        keys[x] = tk[x]
        qtys[x] = tq[x]
    return m, truncated


@njit(cache=True)
def diff_book(pk, pq, pn, nk, nq, nn, depth, ch_price, ch_qty, ch_side):
    """Changes that turn the published top-N (pk, pq, pn) into the top-``depth`` of (nk, nq, nn).

    A merge walk over both sorted sides: levels only in the old book get qty 0, levels new or
    with another quantity get their new quantity. Returns the number of changes written.
    """
    c = 0
    for side in range(2):
        a = pn[side]
        b = min(nn[side], depth)
        i = 0
        j = 0
        while i < a or j < b:
            if j >= b or (i < a and pk[side, i] < nk[side, j]):
                key = pk[side, i]
                q = np.int64(0)
                i += 1
            elif i >= a or nk[side, j] < pk[side, i]:
                key = nk[side, j]
                q = nq[side, j]
                j += 1
            else:
                key = nk[side, j]
                q = nq[side, j]
                same = pq[side, i] == q
                i += 1
                j += 1
                if same:
                    continue
            ch_price[c] = -key if side == 0 else key
            ch_qty[c] = q
            ch_side[c] = side
            c += 1
    return c


@njit(cache=True)
def copy_top(pk, pq, pn, nk, nq, nn, depth):
    """Make the published top-N equal to the tracked book's top-N."""
    for side in range(2):
        b = min(nn[side], depth)
        for i in range(b):
            pk[side, i] = nk[side, i]
            pq[side, i] = nq[side, i]
        pn[side] = b


@njit(cache=True)
def write_delta(out, pos, iid, ts, seq, prev, flags, ch_price, ch_qty, ch_side, c):
    """OrderBookDelta TLV(s) for c changes, split at the TLV size limit; returns the end pos."""
    start = 0
    while start < c:
        m = min(c - start, MAX_DELTA_CHANGES)
        p = _tlv_head(out, pos, 7, DELTA_HEAD + CHANGE_SIZE * m)
        _wr_u64(out, p, iid)
        _wr_u64(out, p + 8, ts)
        _wr_u64(out, p + 16, seq)
        _wr_u64(out, p + 24, prev)
        _wr_u16(out, p + 32, m)
        out[p + 34] = flags
        p += DELTA_HEAD
        for x in range(start, start + m):
            _wr_u64(out, p, ch_price[x])
            _wr_u64(out, p + 8, ch_qty[x])
            out[p + 16] = ch_side[x]
            p += CHANGE_SIZE
        pos = p
        start += m
    return pos


@njit(cache=True)
def write_book(out, pos, iid, ts, seq, pk, pq, pn, ch_price, ch_qty, ch_side):
    """An OrderBook TLV of a published book; levels beyond one TLV's room follow as
    OrderBookDelta TLVs at the same sequence (apply them in order). Returns the end pos."""
    nb = pn[0]
    na = pn[1]
    b1 = min(nb, max(MAX_BOOK_LEVELS // 2, MAX_BOOK_LEVELS - na))
    a1 = min(na, MAX_BOOK_LEVELS - b1)
    p = _tlv_head(out, pos, 3, BOOK_HEAD + LEVEL_SIZE * (b1 + a1))
    _wr_u64(out, p, iid)
    _wr_u64(out, p + 8, ts)
    _wr_u64(out, p + 16, seq)
    _wr_u16(out, p + 24, b1)
    _wr_u16(out, p + 26, a1)
    p += BOOK_HEAD
    for i in range(b1):
        _wr_u64(out, p, -pk[0, i])
        _wr_u64(out, p + 8, pq[0, i])
        p += LEVEL_SIZE
    for i in range(a1):
        _wr_u64(out, p, pk[1, i])
        _wr_u64(out, p + 8, pq[1, i])
        p += LEVEL_SIZE
    c = 0
    for i in range(b1, nb):
        ch_price[c] = -pk[0, i]
        ch_qty[c] = pq[0, i]
        ch_side[c] = 0
        c += 1
    for i in range(a1, na):
        ch_price[c] = pk[1, i]
        ch_qty[c] = pq[1, i]
        ch_side[c] = 1
        c += 1
    return write_delta(out, p, iid, ts, seq, seq, 0, ch_price, ch_qty, ch_side, c)


@njit(cache=True)
def book_message_bytes(levels):
    """Bytes of the message ``write_book`` makes for a book of ``levels`` levels, header included."""
    first = min(levels, MAX_BOOK_LEVELS)
    value = BOOK_HEAD + LEVEL_SIZE * first
    size = HEADER_SIZE + value + (2 if value <= 255 else 5)
    rest = levels - first
    while rest > 0:
        m = min(rest, MAX_DELTA_CHANGES)
        value = DELTA_HEAD + CHANGE_SIZE * m
        size += value + (2 if value <= 255 else 5)
        rest -= m
    return size


@njit(cache=True)
def _load_snapshot(buf, v, nb, na, keys, qtys, n, trunc, slot):
    """Validate an OrderBook value's levels, then load them. Returns a status."""
    for side in range(2):
        base = v + BOOK_HEAD + (0 if side == 0 else LEVEL_SIZE * nb)
        count = nb if side == 0 else na
        prev = _INT64_MIN
        for i in range(count):
            price = _rd_i64(buf, base + LEVEL_SIZE * i)
            q = _rd_i64(buf, base + LEVEL_SIZE * i + 8)
            if price <= 0 or q < 0:
                return ST_BAD
            key = -price if side == 0 else price
            if key <= prev:
                return ST_UNSORTED
            prev = key
    cap = keys.shape[2]
    for side in range(2):
        base = v + BOOK_HEAD + (0 if side == 0 else LEVEL_SIZE * nb)
        count = nb if side == 0 else na
        m = 0
        trunc[slot, side] = False
        for i in range(count):
            q = _rd_i64(buf, base + LEVEL_SIZE * i + 8)
            if q == 0:
                continue
            if m == cap:
                trunc[slot, side] = True
                break
            price = _rd_i64(buf, base + LEVEL_SIZE * i)
            keys[slot, side, m] = -price if side == 0 else price
            qtys[slot, side, m] = q
            m += 1
        n[slot, side] = m
    return ST_OK


@njit(cache=True)
def _apply_delta(buf, v, nc, keys, qtys, n, trunc, slot, scratch, tk, tq, counts):
    sk, sq, wk, wq = scratch[0], scratch[1], scratch[2], scratch[3]
    for side in range(2):
        k = 0
        for i in range(nc):
            p = v + DELTA_HEAD + CHANGE_SIZE * i
            if buf[p + 16] != side:
                continue
            price = _rd_i64(buf, p)
            sk[k] = -price if side == 0 else price
            sq[k] = _rd_i64(buf, p + 8)
            k += 1
        if k == 0:
            continue
        k = sort_unique(sk, sq, k, wk, wq)
        m, t = apply_side(
            keys[slot, side], qtys[slot, side], n[slot, side], trunc[slot, side], sk, sq, k, tk, tq, counts
        )
        n[slot, side] = m
        trunc[slot, side] = t


@njit(cache=True)
def process_updates(buf, ix, slots, count, start, keys, qtys, n, trunc, pk, pq, pn, state, seq, ts, pseq, pts, ids,
                    source, depth, out, ch_price, ch_qty, ch_side, scratch, tk, tq, res, actions, touched, flagged,
                    passthrough, counts, hist, acct):
    """Apply the indexed book TLVs ``start..count`` in order and write what downstream must get.

    Stops early when ``out`` may lack room for one more update's output. For TLV t, ``res`` holds
    its status, where its output starts in ``out`` and how long it is (delta TLVs, or a whole
    OrderBook), the levels it changed and the levels published afterwards. ``actions`` lists the
    TLVs Python must look at (output to send, a problem to report, a snapshot to pass through),
    ``touched`` the books whose byte accounting moved. ``hist`` counts statuses and bytes;
    ``acct[slot]`` adds up delta bytes, full-snapshot bytes at updates that changed the top-N,
    full-snapshot bytes at every update, and updates (message headers included).
    Returns (next TLV, output bytes used, number of actions, number of touched books).
    """
    pos = 0
    bound = 4 * depth * CHANGE_SIZE + 2 * depth * LEVEL_SIZE + 1024
    t = start
    while t < count:
        if pos + bound > out.shape[0]:
            break
        slot = slots[t]
        kind = ix[IX_TYPE, t]
        v = ix[IX_VOFF, t]
        length = ix[IX_VLEN, t]
        res[R_START, t] = pos
        res[R_LEN, t] = 0
        res[R_CHANGES, t] = 0
        res[R_LEVELS, t] = 0
        t += 1
        if kind == 82:
            res[R_STATUS, t - 1] = ST_MAPPING
            continue
        if slot < 0:
            res[R_STATUS, t - 1] = ST_NO_SLOT
            continue
        source[slot] = ix[IX_SOURCE, t - 1]
        if kind == 3:
            if length < BOOK_HEAD:
                res[R_STATUS, t - 1] = ST_BAD
                continue
            nb = _rd_u16(buf, v + 24)
            na = _rd_u16(buf, v + 26)
            if BOOK_HEAD + LEVEL_SIZE * (nb + na) != length:
                res[R_STATUS, t - 1] = ST_BAD
                continue
            st = _load_snapshot(buf, v, nb, na, keys, qtys, n, trunc, slot)
            if st != ST_OK:
                res[R_STATUS, t - 1] = st
                continue
            seq[slot] = _rd_u64(buf, v + 16)
            ts[slot] = _rd_u64(buf, v + 8)
            before = state[slot]
            state[slot] = LIVE
            if before == UNKNOWN or pn[slot, 0] + pn[slot, 1] == 0:  # nothing to diff against: send it whole
                copy_top(pk[slot], pq[slot], pn[slot], keys[slot], qtys[slot], n[slot], depth)
                pseq[slot] = seq[slot]
                pts[slot] = ts[slot]
                end = write_book(out, pos, ids[slot], ts[slot], seq[slot], pk[slot], pq[slot], pn[slot], ch_price,
                                 ch_qty, ch_side)
                res[R_STATUS, t - 1] = ST_FIRST
                res[R_LEN, t - 1] = end - pos
                res[R_CHANGES, t - 1] = pn[slot, 0] + pn[slot, 1]
                res[R_LEVELS, t - 1] = pn[slot, 0] + pn[slot, 1]
                pos = end
                continue
            res[R_STATUS, t - 1] = ST_RESYNC
        else:
            if length < DELTA_HEAD:
                res[R_STATUS, t - 1] = ST_BAD
                continue
            nc = _rd_u16(buf, v + 32)
            if DELTA_HEAD + CHANGE_SIZE * nc != length or nc > scratch.shape[1]:
                res[R_STATUS, t - 1] = ST_BAD
                continue
            bad = False
            for i in range(nc):
                p = v + DELTA_HEAD + CHANGE_SIZE * i
                if _rd_i64(buf, p) <= 0 or _rd_i64(buf, p + 8) < 0 or buf[p + 16] > 1:
                    bad = True
                    break
            if bad:
                res[R_STATUS, t - 1] = ST_BAD
                continue
            if state[slot] == UNKNOWN:
                res[R_STATUS, t - 1] = ST_NO_BOOK
                continue
            if state[slot] == STALE:
                res[R_STATUS, t - 1] = ST_STALE
                continue
            prev = _rd_u64(buf, v + 24)
            if prev != _U0 and seq[slot] != _U0 and prev != seq[slot]:
                state[slot] = STALE
                res[R_STATUS, t - 1] = ST_SEQ_GAP
                continue
            _apply_delta(buf, v, nc, keys, qtys, n, trunc, slot, scratch, tk, tq, counts)
            seq[slot] = _rd_u64(buf, v + 16)
            ts[slot] = _rd_u64(buf, v + 8)
            if (trunc[slot, 0] and n[slot, 0] < depth) or (trunc[slot, 1] and n[slot, 1] < depth):
                state[slot] = STALE
                res[R_STATUS, t - 1] = ST_INCOMPLETE
                continue
            res[R_STATUS, t - 1] = ST_OK
        # a delta or a resync snapshot on a known book: publish only what changed
        if n[slot, 0] > 0 and n[slot, 1] > 0 and -keys[slot, 0, 0] >= keys[slot, 1, 0]:
            counts[C_CROSSED] += 1
        c = diff_book(pk[slot], pq[slot], pn[slot], keys[slot], qtys[slot], n[slot], depth, ch_price, ch_qty, ch_side)
        if c > 0:
            copy_top(pk[slot], pq[slot], pn[slot], keys[slot], qtys[slot], n[slot], depth)
            flags = np.uint8(buf[v + 34] & 1) if kind == 7 else np.uint8(0)
            end = write_delta(out, pos, ids[slot], ts[slot], seq[slot], pseq[slot], flags, ch_price, ch_qty, ch_side, c)
            pseq[slot] = seq[slot]
            pts[slot] = ts[slot]
            res[R_LEN, t - 1] = end - pos
            res[R_CHANGES, t - 1] = c
            pos = end
        res[R_LEVELS, t - 1] = pn[slot, 0] + pn[slot, 1]
    n_actions = 0
    n_touched = 0
    for x in range(start, t):
        st = res[R_STATUS, x]
        hist[st] += 1
        wanted = res[R_LEN, x] > 0 or st > ST_RESYNC or (passthrough and ix[IX_TYPE, x] == 3 and st != ST_OK)
        if wanted and st != ST_MAPPING:
            actions[n_actions] = x
            n_actions += 1
        if st == ST_OK or st == ST_RESYNC:  # noqa: SIM109 (numba: plain comparisons)
            slot = slots[x]
            full = book_message_bytes(res[R_LEVELS, x])
            acct[slot, 2] += full
            acct[slot, 3] += 1
            if res[R_LEN, x] > 0:
                acct[slot, 0] += HEADER_SIZE + res[R_LEN, x]
                acct[slot, 1] += full
                hist[H_DELTA_BYTES] += HEADER_SIZE + res[R_LEN, x]
                hist[H_SNAPSHOT_BYTES] += full
                if not flagged[slot]:
                    flagged[slot] = True
                    touched[n_touched] = slot
                    n_touched += 1
            else:
                hist[H_UNCHANGED] += 1
    for x in range(n_touched):
        flagged[touched[x]] = False
    return t, pos, n_actions, n_touched


# -- the sans-IO tracker ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Results:
    """What one ``BookTracker.process`` call did with TLVs ``first..last`` of the indexed block.

    ``res`` rows (R_STATUS, ...) are indexed by TLV; ``actions`` are the TLVs that need Python
    (output, problems, pass-through), ``touched`` the books whose byte counts moved.
    """

    first: int
    last: int
    out: np.ndarray
    res: np.ndarray
    actions: list[int]
    touched: list[int]

    def payload(self, t: int) -> bytes:
        a = int(self.res[R_START, t])
        return self.out[a : a + int(self.res[R_LEN, t])].tobytes()


class BookTracker:
    """Every instrument's book and its published top-N; no I/O, no clock."""

    def __init__(self, depth: int, extra_levels: int, max_instruments: int) -> None:
        self.depth = depth
        self.capacity = depth + extra_levels
        self.max_instruments = max_instruments
        self.slot_of: dict[int, int] = {}
        self.size = 0
        self._allocate(min(8, max_instruments))
        change_room = 4 * depth + 8
        self.ch_price = np.empty(change_room, np.int64)
        self.ch_qty = np.empty(change_room, np.int64)
        self.ch_side = np.empty(change_room, np.uint8)
        self.scratch = np.empty((4, MAX_INPUT_CHANGES), np.int64)
        self.tk = np.empty(self.capacity, np.int64)
        self.tq = np.empty(self.capacity, np.int64)
        self.counts = np.zeros(N_COUNTS, np.int64)
        self.hist = np.zeros(16, np.int64)
        bound = 4 * depth * CHANGE_SIZE + 2 * depth * LEVEL_SIZE + 1024
        self.out = np.empty(max(1 << 20, 4 * bound), np.uint8)
        self._room(256)
        self._snapshot_out = np.empty(2 * depth * LEVEL_SIZE + 4 * depth * CHANGE_SIZE + 1024, np.uint8)

    def upstream_restarted(self, source: int) -> int:
        """``source`` restarted (a new sequence epoch): what it sends next does not continue the
        books kept from it before, which missed whatever changed while it was down. Its live
        books go stale (deltas dropped and counted until a snapshot resyncs them); returns how
        many."""
        stale = (self.source[: self.size] == source) & (self.state[: self.size] == LIVE)
        self.state[: self.size][stale] = STALE
        return int(stale.sum())

    def _allocate(self, slots: int) -> None:
        old = getattr(self, "keys", None)
        cap, depth = self.capacity, self.depth
        fresh = {
            "keys": np.zeros((slots, 2, cap), np.int64),
            "qtys": np.zeros((slots, 2, cap), np.int64),
            "n": np.zeros((slots, 2), np.int64),
            "trunc": np.zeros((slots, 2), np.bool_),
            "pk": np.zeros((slots, 2, depth), np.int64),
            "pq": np.zeros((slots, 2, depth), np.int64),
            "pn": np.zeros((slots, 2), np.int64),
            "state": np.zeros(slots, np.uint8),
            "seq": np.zeros(slots, np.uint64),
            "ts": np.zeros(slots, np.uint64),
            "pseq": np.zeros(slots, np.uint64),
            "pts": np.zeros(slots, np.uint64),
            "ids": np.zeros(slots, np.uint64),
            "acct": np.zeros((slots, 4), np.int64),
            "source": np.zeros(slots, np.int64),
            "asked_at": np.full(slots, -np.inf),
            "flagged": np.zeros(slots, np.bool_),
        }
        for name, array in fresh.items():
            if old is not None:
                array[: self.size] = getattr(self, name)[: self.size]
            setattr(self, name, array)

    def slot(self, iid: int) -> int:
        """The slot of an instrument, made on first sight; -1 once max_instruments are tracked."""
        slot = self.slot_of.get(iid)
        if slot is not None:
            return slot
        if self.size >= self.max_instruments:
            return -1
        if self.size == self.ids.shape[0]:
            self._allocate(min(2 * self.size, self.max_instruments))
        slot = self.size
        self.size += 1
        self.slot_of[iid] = slot
        self.ids[slot] = iid
        return slot

    def _room(self, tlvs: int) -> None:
        """Index and result columns for ``tlvs`` TLVs per block."""
        self.ix = np.zeros((IX_ROWS, tlvs), np.int64)
        self.res = np.zeros((R_ROWS, tlvs), np.int64)
        self.actions = np.zeros(tlvs, np.int64)
        self.touched = np.zeros(tlvs, np.int64)

    def index(self, buf: np.ndarray, offsets: np.ndarray, sizes: np.ndarray) -> tuple[int, int]:
        """Index a block's book and mapping TLVs into ``self.ix``: (count, malformed frames)."""
        count, bad = index_tlvs(buf, offsets, sizes, self.ix)
        if count > self.ix.shape[1]:
            self._room(2 * count)
            count, bad = index_tlvs(buf, offsets, sizes, self.ix)
        return count, bad

    def process(self, buf: np.ndarray, slots: np.ndarray, count: int, start: int, passthrough: bool) -> Results:
        """Run the kernel over indexed TLVs from ``start`` until done or the output buffer is full."""
        last, _, n_actions, n_touched = process_updates(
            buf, self.ix, slots, count, start, self.keys, self.qtys, self.n, self.trunc, self.pk, self.pq, self.pn,
            self.state, self.seq, self.ts, self.pseq, self.pts, self.ids, self.source, self.depth, self.out,
            self.ch_price, self.ch_qty, self.ch_side, self.scratch, self.tk, self.tq, self.res, self.actions,
            self.touched, self.flagged, passthrough, self.counts, self.hist, self.acct,
        )  # fmt: skip
        return Results(start, last, self.out, self.res, self.actions[:n_actions].tolist(),
                       self.touched[:n_touched].tolist())

    def snapshot_tlvs(self, slot: int) -> bytes:
        """The published book of a slot as OrderBook TLV bytes (plus continuation deltas if huge)."""
        end = write_book(
            self._snapshot_out,
            0,
            self.ids[slot],
            self.pts[slot],
            self.pseq[slot],
            self.pk[slot],
            self.pq[slot],
            self.pn[slot],
            self.ch_price,
            self.ch_qty,
            self.ch_side,
        )
        return self._snapshot_out[:end].tobytes()

    def published(self, slot: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """(bids, asks) as (price, qty) lists, best first: what downstream holds."""
        nb, na = (int(x) for x in self.pn[slot])
        bids = list(zip((-self.pk[slot, 0, :nb]).tolist(), self.pq[slot, 0, :nb].tolist(), strict=True))
        asks = list(zip(self.pk[slot, 1, :na].tolist(), self.pq[slot, 1, :na].tolist(), strict=True))
        return bids, asks


# -- the node ---------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class BookDeltaParams:
    depth: int = param(50, doc="Levels per side tracked, diffed and published (top-N).", minimum=1, maximum=5000)
    extra_levels: int = param(
        200,
        doc="Levels per side kept below the top-N, so a deeper level can move up when a better one is "
        "removed. A book whose known levels shrink below depth is withheld until a fresh snapshot.",
        minimum=0,
        maximum=100000,
    )
    snapshot_interval: float = param(
        30.0,
        doc="Seconds between full OrderBook snapshots of every book; 0 sends snapshots only on request.",
        live=True,
        minimum=0,
    )
    max_instruments: int = param(
        4096,
        doc="Books kept at most; updates of further instruments are dropped and counted. Arrays grow as "
        "instruments appear.",
        minimum=1,
    )
    pass_through_snapshots: bool = param(
        False,
        doc="Also forward upstream snapshots unchanged, besides the computed deltas.",
        live=True,
    )


@node_kind(
    "transform.book_delta",
    emits=[TLVType.ORDER_BOOK_DELTA, TLVType.ORDER_BOOK, TLVType.INSTRUMENT_MAPPING],
    accepts=[TLVType.ORDER_BOOK, TLVType.ORDER_BOOK_DELTA, TLVType.INSTRUMENT_MAPPING],
    example={"depth": 20, "snapshot_interval": 10},
)
class BookDelta(Node):
    """Order-book tracker: keeps every book and emits only the levels that changed.

    Books are fixed-point numpy arrays diffed by numba kernels; a full snapshot goes out at
    ``snapshot_interval`` and whenever a consumer asks for one during gap recovery.
    """

    Params = BookDeltaParams

    def __init__(self, params: BookDeltaParams) -> None:
        super().__init__(params)
        self.books = BookTracker(params.depth, params.extra_levels, params.max_instruments)
        self.clock = time.monotonic
        self.names: dict[int, str] = {}
        self.mappings: dict[int, Any] = {}
        self._upstreams = UpstreamEpochs()

    def load_kernels(self) -> None:
        """Load (on a fresh install: compile) the book kernels before the node serves, not on
        its first block: a scratch tracker indexes and applies a mapping, a snapshot and a delta
        of one instrument, then writes its snapshot back, with the arrays real blocks bring."""
        scratch = BookTracker(self.params.depth, self.params.extra_levels, 2)
        inst = parse_instrument("coinbase:BTC-USD")
        builder = MessageBuilder(RelayDomain.MARKET_DATA, 1)
        one = 100_000_000
        frames = b"".join(builder.build(record, 1) for record in (
            InstrumentMapping(inst.id, inst.canonical),
            OrderBook(inst.id, 1, 1, ((2 * one, one), (one, one)), ((3 * one, one), (4 * one, one))),
            OrderBookDelta(inst.id, 2, 2, 1, 0, ((2 * one, 2 * one, 0), (3 * one, 0, 1))),
        ))
        block = FrameBlock.from_bytes(frames)
        buf = np.frombuffer(block.data, np.uint8)
        count, _ = scratch.index(buf, block.offsets, block.sizes)
        kinds = scratch.ix[IX_TYPE, :count].tolist()
        slots = np.array([scratch.slot(inst.id) if kind != T_MAPPING else -1 for kind in kinds], np.int64)
        start = 0
        while start < count:
            start = scratch.process(buf, slots, count, start, self.params.pass_through_snapshots).last
        scratch.snapshot_tlvs(scratch.slot(inst.id))

    # -- input --------------------------------------------------------------------------------------
    def handle_block(self, block: Any, ctx: Any) -> None:
        """Apply and diff every book TLV of the block in one kernel call; emit what changed.

        InstrumentMapping messages pass through as they come (upstream sends them before data),
        first snapshots go out whole, later updates as deltas of the levels that changed.
        """
        self._note_upstream_epochs(block, ctx)
        buf = np.frombuffer(block.data, np.uint8)
        books = self.books
        count, bad = books.index(buf, block.offsets, block.sizes)
        if bad:
            ctx.counters["errors.bad_tlv"] += bad
            ctx.log.warning("%d messages with malformed TLV framing skipped", bad)
        if not count:
            return
        now_ns = time.time_ns()
        ix = books.ix
        types = ix[IX_TYPE, :count].tolist()
        slot, ids = books.slot, ix[IX_IID, :count].view(np.uint64).tolist()
        slots = np.array([slot(i) if kind != T_MAPPING else -1 for i, kind in zip(ids, types, strict=True)], np.int64)
        if T_MAPPING in types:
            for t, kind in enumerate(types):
                if kind == T_MAPPING:
                    self._mapping(buf[ix[IX_VOFF, t] : ix[IX_VOFF, t] + ix[IX_VLEN, t]], ctx, now_ns)
        start = 0
        while start < count:
            results = books.process(buf, slots, count, start, self.params.pass_through_snapshots)
            self._emit(results, slots, buf, ctx, now_ns)
            self._count_touched(results.touched, ctx)
            start = results.last
        self._count(ctx)

    def _note_upstream_epochs(self, block: Any, ctx: Any) -> None:
        """Mark the books of an upstream that restarted stale before its new epoch's frames are
        applied (``runtime.UpstreamEpochs``): its first frames (the venue's snapshot) or the
        snapshot the link asked for bring them back."""
        for source in self._upstreams.restarted(block):
            stale = self.books.upstream_restarted(source)
            ctx.counters["upstream_restarts"] += 1
            if stale:
                ctx.counters["books.stale_on_upstream_restart"] += stale
                ctx.log.info("source %d restarted: %d of its books wait for its snapshot", source, stale)

    def _mapping(self, value: np.ndarray, ctx: Any, now_ns: int) -> None:
        try:
            record = decode(T_MAPPING, value.tobytes())
        except MalformedFrame as exc:
            report(ctx.counters, ctx.log, "errors.bad_mapping", "bad InstrumentMapping skipped: %s", exc)
            return
        if instrument_id(record.canonical) != record.instrument_id:
            report(ctx.counters, ctx.log, "errors.mapping_mismatch", "InstrumentMapping %r does not hash to id %d",
                   record.canonical, record.instrument_id)
            return
        self.mappings[record.instrument_id] = record
        self.names[record.instrument_id] = _display_name(record.canonical)
        ctx.message(encode(record), timestamp_ns=now_ns)
        ctx.counters["mappings"] += 1

    def _emit(self, r: Results, slots: np.ndarray, buf: np.ndarray, ctx: Any, now_ns: int) -> None:
        """Messages for what the kernel wrote, in input order; snapshot requests; warnings."""
        res, ix = r.res, self.books.ix
        for t in r.actions:
            code = int(res[R_STATUS, t])
            slot = int(slots[t])
            if res[R_LEN, t] > 0:
                ctx.message(r.payload(t), timestamp_ns=now_ns)
            if code == ST_FIRST:
                ctx.log.info("book %s: first snapshot, %d levels published", self._name(slot), int(res[R_LEVELS, t]))
            if self.params.pass_through_snapshots and ix[IX_TYPE, t] == T_BOOK and code in (ST_FIRST, ST_RESYNC):
                start = ix[IX_VOFF, t]
                ctx.message(encode_value(T_BOOK, buf[start : start + ix[IX_VLEN, t]]), timestamp_ns=now_ns)
            if code in NEEDS_SNAPSHOT:
                self._ask_snapshot(slot, code, ctx)
            elif code in (ST_BAD, ST_UNSORTED):
                ctx.log.warning("bad book value for %s skipped (%s)", self._name(slot), STATUS_COUNTERS[code])

    def _ask_snapshot(self, slot: int, code: int, ctx: Any) -> None:
        books = self.books
        now = self.clock()
        if now - books.asked_at[slot] < RESNAPSHOT_AFTER:
            return
        books.asked_at[slot] = now
        source = int(books.source[slot])
        ctx.counters["snapshots.requested"] += 1
        ctx.log.warning("book %s: %s; asking source %d for a snapshot", self._name(slot), STATUS_COUNTERS[code], source)
        ctx.request_snapshot(source, int(books.ids[slot]))

    def _count_touched(self, touched: list[int], ctx: Any) -> None:
        """Per-instrument byte counters of the books whose deltas went out."""
        acct = self.books.acct
        for slot in touched:
            name = self._name(slot)
            ctx.counters[f"bytes_delta.{name}"] = int(acct[slot, 0])
            ctx.counters[f"bytes_snapshot.{name}"] = int(acct[slot, 1])

    def _count(self, ctx: Any) -> None:
        """Fold the kernel's tallies into ctx.counters."""
        books = self.books
        hist, counts = books.hist, books.counts
        if hist.any():
            for code, name in STATUS_COUNTERS.items():
                if hist[code]:
                    ctx.counters[name] += int(hist[code])
            ctx.counters["updates"] += int(hist[ST_OK] + hist[ST_RESYNC])
            ctx.counters["updates.unchanged"] += int(hist[H_UNCHANGED])
            ctx.counters["bytes.delta"] += int(hist[H_DELTA_BYTES])
            ctx.counters["bytes.snapshot_equivalent"] += int(hist[H_SNAPSHOT_BYTES])
            hist[:] = 0
        if counts.any():
            for index, name in ((C_UNKNOWN_REMOVALS, "levels.unknown_removed"),
                                (C_BEYOND_KNOWN, "levels.beyond_known"), (C_CROSSED, "books.crossed")):
                if counts[index]:
                    ctx.counters[name] += int(counts[index])
            counts[:] = 0

    def _name(self, slot: int) -> str:
        iid = int(self.books.ids[slot])
        return self.names.get(iid) or f"{iid:016x}"

    # -- output on request and on the clock ----------------------------------------------------------
    def snapshot(self, instrument_id: int) -> list[bytes]:
        """Mapping + full published book of one instrument (0 = every book), as TLV payloads."""
        books = self.books
        if instrument_id:
            slot = books.slot_of.get(instrument_id)
            slots = [] if slot is None else [slot]
        else:
            slots = range(books.size)
        payloads = []
        for slot in slots:
            if books.state[slot] == UNKNOWN:
                continue
            iid = int(books.ids[slot])
            if iid in self.mappings:
                payloads.append(encode(self.mappings[iid]))
            payloads.append(books.snapshot_tlvs(slot))
        return payloads

    async def run(self, ctx: Any) -> None:
        last = trio.current_time()
        while True:
            await trio.sleep(1.0 if self.params.snapshot_interval <= 0 else min(1.0, self.params.snapshot_interval))
            interval = self.params.snapshot_interval
            now = trio.current_time()
            if interval <= 0 or now - last < interval:
                continue
            last = now
            payloads = self.snapshot(0)
            if payloads:
                ctx.messages(payloads)
                ctx.counters["snapshots.periodic"] += 1
                await ctx.flush()

    def statistics(self) -> dict:
        books = self.books
        states = books.state[: books.size]
        per: dict[str, dict] = {}
        for slot in range(books.size):
            delta, snap, snap_all, updates = (int(x) for x in books.acct[slot])
            per[self._name(slot)] = {
                "state": ("unknown", "live", "stale")[int(states[slot])],
                "levels": [int(x) for x in books.pn[slot]],
                "updates": updates,
                "delta_bytes": delta,
                "snapshot_bytes": snap,
                "compression_ratio": round(delta / snap, 6) if snap else None,
                "compression_ratio_every_update": round(delta / snap_all, 6) if snap_all else None,
            }
        return {
            "depth": books.depth,
            "books": int(books.size),
            "live": int(np.count_nonzero(states == LIVE)),
            "stale": int(np.count_nonzero(states == STALE)),
            "instruments": per,
        }


_VALUE_HEAD = struct.Struct("<BBBH")


def encode_value(tlv_type: int, value: np.ndarray) -> bytes:
    """One TLV around raw value bytes (standard or extended header as the size requires)."""
    n = value.shape[0]
    head = bytes((tlv_type, n)) if n <= 255 else _VALUE_HEAD.pack(255, 0, tlv_type, n)
    return head + value.tobytes()


def _display_name(canonical: str) -> str:
    """``coinbase:BTC-USD`` style names for counters; the canonical text if it does not parse."""
    try:
        return parse_instrument(canonical).short
    except ValueError:
        return canonical
