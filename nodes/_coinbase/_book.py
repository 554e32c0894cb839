"""A full-depth L2 book in fixed point, with the top-``depth`` view's changes computed on update.

Each side is a sorted int64 array of keys with the best level at the END (bids: key = price,
ascending; asks: key = -price, ascending), so the frequent updates near the top of the book
shift only the few levels better than them; a 46,000-level snapshot is sorted once with numpy.

What we publish is the top-``depth`` view (an OrderBook TLV holds at most ~2,000 levels per side):
``apply`` returns the changes that keep a consumer's copy of that view exact, including the
levels that enter the view when one above them is removed and the ones pushed out by an insert.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from alphapulse.protocol import BookSide
from nodes._coinbase._scan import capacity_for, scan_updates

BID = int(BookSide.BID)
ASK = int(BookSide.ASK)
CHANGE_DTYPE = np.dtype([("price", "<i8"), ("qty", "<i8"), ("side", "u1")])
"""One published change, the OrderBookDelta element layout (price, qty, side)."""


@njit(cache=True, inline="always")
def _put(out, n_out, price, qty, side):
    """Write change ``n_out`` as the packed 17-byte OrderBookDelta element (LE price, qty, side)."""
    base = n_out * 17
    for b in range(8):
        out[base + b] = (price >> (8 * b)) & 0xFF
        out[base + 8 + b] = (qty >> (8 * b)) & 0xFF
    out[base + 16] = side


@njit(cache=True)
def _apply(keys, qtys, counts, sides, prices, new_qtys, depth, out):
    """Apply changes in order; write the view's changes to ``out``; return (n_out, unknown_removals)."""
    n_out = 0
    unknown = 0
    for j in range(sides.shape[0]):
        s = sides[j]
        price = prices[j]
        q = new_qtys[j]
        key = price if s == 0 else -price
        n = counts[s]
        i = np.searchsorted(keys[s, :n], key)
        if i < n and keys[s, i] == key:
            rank = n - 1 - i
            if q == 0:
                for m in range(i, n - 1):  # shift the better levels down over the removed one
                    keys[s, m] = keys[s, m + 1]
                    qtys[s, m] = qtys[s, m + 1]
                n -= 1
                counts[s] = n
                if rank < depth:
                    _put(out, n_out, price, 0, s)
                    n_out += 1
                    if n >= depth:  # the level now at rank depth-1 enters the view
                        k = n - depth
                        _put(out, n_out, keys[s, k] if s == 0 else -keys[s, k], qtys[s, k], s)
                        n_out += 1
            elif q != qtys[s, i]:
                qtys[s, i] = q
                if rank < depth:
                    _put(out, n_out, price, q, s)
                    n_out += 1
        elif q == 0:
            unknown += 1
        else:
            for m in range(n, i, -1):  # shift the better levels up to make room
                keys[s, m] = keys[s, m - 1]
                qtys[s, m] = qtys[s, m - 1]
            keys[s, i] = key
            qtys[s, i] = q
            n += 1
            counts[s] = n
            if n - 1 - i < depth:
                _put(out, n_out, price, q, s)
                n_out += 1
                if n > depth:  # the level that was at rank depth-1 is pushed out of the view
                    k = n - 1 - depth
                    _put(out, n_out, keys[s, k] if s == 0 else -keys[s, k], 0, s)
                    n_out += 1
    return n_out, unknown


@njit(cache=True)
def _load_side(sorted_keys, sorted_qtys, keys_out, qtys_out):
    """Sorted (stable) keys with duplicates → last quantity wins, zero quantities dropped."""
    n = 0
    m = sorted_keys.shape[0]
    j = 0
    while j < m:
        k = sorted_keys[j]
        q = sorted_qtys[j]
        while j + 1 < m and sorted_keys[j + 1] == k:
            j += 1
            q = sorted_qtys[j]
        if q != 0:
            keys_out[n] = k
            qtys_out[n] = q
            n += 1
        j += 1
    return n


@njit(cache=True)
def _crossed(keys, counts):
    return counts[0] > 0 and counts[1] > 0 and keys[0, counts[0] - 1] >= -keys[1, counts[1] - 1]


@njit(cache=True)
def _scan_apply(buf, start, end, keys, qtys, counts, depth, sides, prices, new_qtys, times, out):
    """Scan an ``updates`` array body and apply it: (levels or error code, n_out, max ts, unknown, crossed)."""
    n = scan_updates(buf, start, end, sides, prices, new_qtys, times)
    if n < 0:
        return n, 0, 0, 0, False
    ts = 0
    for j in range(n):
        if times[j] > ts:
            ts = times[j]
    n_out, unknown = _apply(keys, qtys, counts, sides[:n], prices[:n], new_qtys[:n], depth, out)
    return n, n_out, ts, unknown, _crossed(keys, counts)


class Book:
    """One instrument's book: full depth kept, the top-``depth`` view published."""

    __slots__ = ("_out", "_scratch", "counts", "depth", "keys", "qtys")

    def __init__(self, depth: int, capacity: int = 256) -> None:
        self.depth = depth
        self.keys = np.zeros((2, capacity), np.int64)
        self.qtys = np.zeros((2, capacity), np.int64)
        self.counts = np.zeros(2, np.int64)
        self._out = np.empty(0, np.uint8)
        self._scratch: tuple[np.ndarray, ...] = ()

    def __len__(self) -> int:
        return int(self.counts.sum())

    def clear(self) -> None:
        self.counts[:] = 0

    def _reserve(self, extra: int) -> None:
        need = max(self.counts.tolist()) + extra
        capacity = self.keys.shape[1]
        if need > capacity:
            capacity = max(need, capacity * 2)
            for name in ("keys", "qtys"):
                old = getattr(self, name)
                new = np.zeros((2, capacity), np.int64)
                new[:, : old.shape[1]] = old
                setattr(self, name, new)
        if len(self._out) < 2 * extra * CHANGE_DTYPE.itemsize:
            self._out = np.empty(max(2 * extra, 64) * CHANGE_DTYPE.itemsize, np.uint8)

    def load(self, sides: np.ndarray, prices: np.ndarray, qtys: np.ndarray) -> None:
        """Replace the book with a snapshot's levels (any order; later duplicates win)."""
        self.counts[:] = 0
        self._reserve(len(sides))
        for s in (BID, ASK):
            mask = sides == s
            keys = prices[mask] if s == BID else -prices[mask]
            order = np.argsort(keys, kind="stable")
            self.counts[s] = _load_side(keys[order], qtys[mask][order], self.keys[s], self.qtys[s])

    def apply(self, sides: np.ndarray, prices: np.ndarray, qtys: np.ndarray) -> tuple[bytes, int]:
        """Apply changes in order: (the view's changes as packed OrderBookDelta elements, unknown removals)."""
        self._reserve(len(sides))
        n_out, unknown = _apply(self.keys, self.qtys, self.counts, sides, prices, qtys, self.depth, self._out)
        return self._out[: n_out * CHANGE_DTYPE.itemsize].tobytes(), unknown

    def apply_scanned(self, buf: np.ndarray, start: int, end: int) -> tuple[int, bytes, int, int, bool]:
        """Scan an Advanced Trade ``updates`` array body (see ``_scan``) and apply it in one call.

        Returns (levels or a negative scan error — then nothing was applied, changes, max
        event time, unknown removals, crossed).
        """
        bound = capacity_for(end - start)
        self._reserve(bound)
        if not self._scratch or len(self._scratch[0]) < bound:
            size = max(bound, 256)
            self._scratch = (np.empty(size, np.uint8), np.empty(size, np.int64), np.empty(size, np.int64),
                             np.empty(size, np.int64))
        n, n_out, ts, unknown, crossed = _scan_apply(buf, start, end, self.keys, self.qtys, self.counts,
                                                     self.depth, *self._scratch, self._out)
        return n, self._out[: n_out * CHANGE_DTYPE.itemsize].tobytes(), ts, unknown, crossed

    def best(self) -> tuple[int, int, int, int]:
        """(bid price, bid qty, ask price, ask qty); zeros for an empty side."""
        nb, na = int(self.counts[BID]), int(self.counts[ASK])
        bid = (int(self.keys[BID, nb - 1]), int(self.qtys[BID, nb - 1])) if nb else (0, 0)
        ask = (-int(self.keys[ASK, na - 1]), int(self.qtys[ASK, na - 1])) if na else (0, 0)
        return (*bid, *ask)

    def crossed(self) -> bool:
        return bool(_crossed(self.keys, self.counts))

    def side(self, side: int, depth: int | None = None) -> np.ndarray:
        """(n, 2) array of [price, qty], best first, at most ``depth`` levels (all if None)."""
        n = int(self.counts[side])
        k = n if depth is None else min(n, depth)
        keys = self.keys[side, n - k : n][::-1]
        out = np.empty((k, 2), np.int64)
        out[:, 0] = keys if side == BID else -keys
        out[:, 1] = self.qtys[side, n - k : n][::-1]
        return out

    def as_dict(self, side: int) -> dict[int, int]:
        """Every level of a side as {price: qty} (for tests and checks)."""
        return {int(p): int(q) for p, q in self.side(side)}
