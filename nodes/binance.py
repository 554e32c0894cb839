"""``source.binance``: Binance / Binance.US spot trades, book tickers and diff-depth books.

Two layers in one file:

* :class:`BinanceFeed`, sans-IO: ``receive(frame, receive_ns)`` parses one combined-stream frame
  and returns the encoded TLVs it produces (one message each). When a symbol needs a REST depth
  snapshot its name is queued in ``snapshot_requests``; whoever does the I/O fetches
  :meth:`BinanceFeed.snapshot_path` and hands the body to :meth:`BinanceFeed.apply_snapshot`.
* :class:`Binance`, the node kind: the shared WebSocket session loop plus a task that fetches
  snapshots with httpx (which runs under trio through anyio), REST base URL a param.

Book sync (the documented spot procedure, per symbol)
-----------------------------------------------------
Diffs (``depthUpdate``, ``U`` first and ``u`` last update id) are buffered from the first one
seen while the snapshot (``/api/v3/depth?symbol=X&limit=N``, ``lastUpdateId`` = L) is fetched.
Then: events with ``u <= L`` are dropped; the first applied event must have ``U <= L+1 <= u``
(if the oldest buffered event starts after L+1 the snapshot is too old and another is fetched);
each next event must have ``U == previous u + 1``. An event with ``u <= previous u`` is a
duplicate (dropped and counted). Any other break resyncs THAT symbol only: its book is dropped,
nothing more is published for it, the breaking event starts a new buffer and a new snapshot is
fetched — the other symbols keep publishing. A crossed book after an update is counted and
resynced the same way.

Output
------
* ``OrderBook`` when a symbol (re)syncs: exactly the REST snapshot, ``exchange_sequence`` = its
  ``lastUpdateId``; then one ``OrderBookDelta`` per applied diff (``prev_sequence`` = the
  previous ``u``, ``exchange_sequence`` = ``u``, ``exchange_ts_ns`` = event time ``E``; the
  changed levels as sent, qty 0 = removed).
* ``Trade`` per ``aggTrade`` / ``trade`` (time ``T``; aggressor side from ``m``: buyer is maker
  → SELL), ``Quote`` per ``bookTicker`` (spot book tickers carry no time: ``exchange_ts_ns`` 0).
* ``InstrumentMapping`` for every symbol when the node starts.

Instrument ids
--------------
``spot(venue, BASE, QUOTE)``. Symbols may be written ``BTC/USDT`` (exact) or ``BTCUSDT``; the
latter is split at the longest known quote asset suffix (:data:`QUOTE_ASSETS`, which splits every
one of the 1,695 symbols of the captured exchangeInfo exactly as Binance does).
"""

from __future__ import annotations

import dataclasses
import logging
import random
import struct
import time
from bisect import bisect_left, insort
from collections import Counter
from collections.abc import Iterable
from typing import Any, Literal

import numpy as np
import orjson
from numba import njit

from alphapulse.kinds import Node, node_kind, param
from alphapulse.protocol import (
    Instrument,
    TLVType,
    bytes_equal,
    encode,
    mapping_for,
    pack_book,
    pack_book_arrays,
    pack_deltas,
    pack_quote,
    pack_trade,
    quoted_decimal,
    scaled_e8,
    spot,
)
from alphapulse.protocol import parse_fixed_fast as fixed
from alphapulse.protocol import parse_fixed_many as fixed_many
from alphapulse.runtime import UpstreamParams, report

QUOTE_ASSETS = (
    "FDUSD",
    "USDT",
    "BUSD",
    "USDC",
    "TUSD",
    "USDP",
    "USDS",
    "BIDR",
    "BKRW",
    "BVND",
    "IDRT",
    "GYEN",
    "DOGE",
    "DAI",
    "PAX",
    "VAI",
    "UST",
    "BTC",
    "ETH",
    "BNB",
    "XRP",
    "TRX",
    "DOT",
    "EUR",
    "TRY",
    "BRL",
    "AUD",
    "GBP",
    "RUB",
    "NGN",
    "UAH",
    "ZAR",
    "JPY",
    "ARS",
    "PLN",
    "RON",
    "MXN",
    "COP",
    "CZK",
)
"""Quote assets recognised at the end of a ``BTCUSDT``-style symbol, longest match first."""
_QUOTES_BY_LENGTH = sorted(QUOTE_ASSETS, key=len, reverse=True)

_BID, _ASK = 0, 1  # BookSide
MAX_BUFFERED = 10_000
"""Diffs buffered per symbol while its snapshot is fetched; older ones are dropped beyond it."""


def binance_instrument(venue: str, symbol: str) -> Instrument:
    """``BTCUSDT`` or ``BTC/USDT`` → ``spot|binance|BTC|USDT``."""
    if "/" in symbol:
        base, _, quote = symbol.partition("/")
        return spot(venue, base, quote)
    for quote in _QUOTES_BY_LENGTH:
        if symbol.endswith(quote) and len(symbol) > len(quote):
            return spot(venue, symbol[: -len(quote)], quote)
    raise ValueError(f"cannot split Binance symbol {symbol!r} into base and quote; write it as BASE/QUOTE")


# -- fixed point and TLV packing (the same plain-struct hot path as source.kraken) ------------------

_POW8 = tuple(10 ** (8 - d) for d in range(9))


_KEY_LAST = np.frombuffer(b"lastUpdateId", dtype=np.uint8).copy()
_KEY_BIDS = np.frombuffer(b"bids", dtype=np.uint8).copy()
_KEY_ASKS = np.frombuffer(b"asks", dtype=np.uint8).copy()


@njit(cache=True, inline="always")
def _fixed_at(buf, i: int, n: int):
    """A quoted decimal at ``buf[i] == '"'`` as 10^8 fixed point: (value, index after the
    quote); value -1 if it is not plain digits with one dot, or not exact at 8 decimals."""
    mantissa, decimals, i = quoted_decimal(buf, i, n)
    return (scaled_e8(mantissa, decimals) if decimals >= 0 else -1), i


@njit(cache=True)
def _scan_snapshot(buf):
    """A compact REST depth snapshot body: (ok, lastUpdateId, bids (n, 2), asks (m, 2)), levels
    as (price, qty) fixed point in the body's order; ok False for anything else (the orjson
    path then reads it, or names what is wrong)."""
    n = len(buf)
    rows = n // 9 + 1
    sides = np.empty((2, rows, 2), dtype=np.int64)
    counts = np.zeros(2, dtype=np.int64)
    empty = np.empty((0, 2), dtype=np.int64)
    last_update_id = -1
    if n < 2 or buf[0] != 123:
        return False, 0, empty, empty
    i = 1
    while True:
        if i >= n or buf[i] != 34:
            return False, 0, empty, empty
        start = i + 1
        i = start
        while i < n and buf[i] != 34:
            i += 1
        end = i
        i += 1
        if i >= n or buf[i] != 58:
            return False, 0, empty, empty
        i += 1
        if bytes_equal(buf, start, end, _KEY_LAST):
            value = 0
            digits = 0
            while i < n and 48 <= buf[i] <= 57 and digits < 19:
                value = value * 10 + (buf[i] - 48)
                digits += 1
                i += 1
            if digits == 0 or digits > 18:
                return False, 0, empty, empty
            last_update_id = value
        else:
            if bytes_equal(buf, start, end, _KEY_BIDS):
                side = 0
            elif bytes_equal(buf, start, end, _KEY_ASKS):
                side = 1
            else:
                return False, 0, empty, empty
            if i >= n or buf[i] != 91:
                return False, 0, empty, empty
            i += 1
            if i < n and buf[i] == 93:
                i += 1
            else:
                while True:
                    if i >= n or buf[i] != 91:
                        return False, 0, empty, empty
                    price, i = _fixed_at(buf, i + 1, n)
                    if price < 0 or i >= n or buf[i] != 44:
                        return False, 0, empty, empty
                    qty, i = _fixed_at(buf, i + 1, n)
                    if qty < 0 or i >= n or buf[i] != 93:
                        return False, 0, empty, empty
                    i += 1
                    k = counts[side]
                    if k >= rows:
                        return False, 0, empty, empty
                    sides[side, k, 0] = price
                    sides[side, k, 1] = qty
                    counts[side] = k + 1
                    if i < n and buf[i] == 44:
                        i += 1
                        continue
                    if i < n and buf[i] == 93:
                        i += 1
                        break
                    return False, 0, empty, empty
        if i < n and buf[i] == 44:
            i += 1
            continue
        if i + 1 == n and buf[i] == 125:
            break
        return False, 0, empty, empty
    if last_update_id < 0:
        return False, 0, empty, empty
    return True, last_update_id, sides[0, : counts[0]].copy(), sides[1, : counts[1]].copy()


def parse_depth_snapshot(body: str | bytes) -> tuple[int, np.ndarray, np.ndarray]:
    """``/api/v3/depth`` body → (lastUpdateId, bids, asks); levels ``(n, 2)`` int64 arrays of
    (price, qty) fixed point in the body's order. Raises ValueError (or a subclass) if unreadable."""
    buf = body.encode() if isinstance(body, str) else bytes(body)
    ok, last_update_id, bids, asks = _scan_snapshot(buf)
    if ok:
        return int(last_update_id), bids, asks
    snap = orjson.loads(buf)  # JSONDecodeError is a ValueError
    last_update_id = snap["lastUpdateId"]
    if type(last_update_id) is not int or last_update_id < 0:
        raise ValueError(f"lastUpdateId {last_update_id!r}")
    out = []
    for levels in (snap["bids"], snap["asks"]):
        prices = fixed_many([level[0] for level in levels])
        qtys = fixed_many([level[1] for level in levels])
        out.append(np.array([prices, qtys], dtype=np.int64).T.reshape(-1, 2).copy())
    return last_update_id, out[0], out[1]


# -- the book ------------------------------------------------------------------------------------


class BinanceBook:
    """Per side: sorted int keys (asks: price, bids: -price; best first) and qty by key."""

    __slots__ = ("ask_keys", "ask_qty", "bid_keys", "bid_qty", "sequence")

    def __init__(self) -> None:
        self.ask_keys: list[int] = []
        self.bid_keys: list[int] = []
        self.ask_qty: dict[int, int] = {}
        self.bid_qty: dict[int, int] = {}
        self.sequence = 0
        """``u`` of the last applied event (``lastUpdateId`` right after the snapshot)."""

    def load(self, bids: np.ndarray, asks: np.ndarray, sequence: int) -> tuple[np.ndarray, np.ndarray]:
        """Replace the book with a snapshot's (n, 2) price/qty arrays; return them cleaned up
        (no zero quantities) and ordered best first. Repeated prices raise ValueError."""
        self.sequence = sequence
        out = []
        for levels, sign in ((bids, -1), (asks, 1)):
            levels = levels[levels[:, 1] != 0]
            keys = levels[:, 0] * sign
            if len(keys) > 1 and not (np.diff(keys) > 0).all():  # REST levels come best first
                levels = levels[np.argsort(keys, kind="stable")]
                keys = levels[:, 0] * sign
                if not (np.diff(keys) > 0).all():
                    raise ValueError("a price appears twice in the snapshot")
            key_list = keys.tolist()
            qty_of = dict(zip(key_list, levels[:, 1].tolist(), strict=True))
            if sign < 0:
                self.bid_keys, self.bid_qty = key_list, qty_of
            else:
                self.ask_keys, self.ask_qty = key_list, qty_of
            out.append(np.ascontiguousarray(levels))
        return out[0], out[1]

    def apply(self, levels: list[list[str]], bid: bool, changes: list[int]) -> None:
        """Set each level's quantity (0 removes it); append the changes."""
        if bid:
            keys, qtys, side, sign = self.bid_keys, self.bid_qty, _BID, -1
        else:
            keys, qtys, side, sign = self.ask_keys, self.ask_qty, _ASK, 1
        pow8 = _POW8
        for level in levels:
            ps = level[0]
            qs = level[1]
            try:
                price = int(ps.replace(".", "")) * pow8[len(ps) - 1 - ps.index(".")]
                qty = int(qs.replace(".", "")) * pow8[len(qs) - 1 - qs.index(".")]
            except (ValueError, IndexError):
                price = fixed(ps)
                qty = fixed(qs)
            key = price * sign
            if qty:
                if key not in qtys:
                    insort(keys, key)
                qtys[key] = qty
                changes += (price, qty, side)
            elif key in qtys:
                del qtys[key]
                del keys[bisect_left(keys, key)]
                changes += (price, 0, side)
            # removing a level we never had is normal for Binance (beyond the snapshot's depth)

    def crossed(self) -> bool:
        return bool(self.ask_keys and self.bid_keys and -self.bid_keys[0] >= self.ask_keys[0])

    def levels(self) -> tuple[list[int], list[int]]:
        bids: list[int] = []
        for key in self.bid_keys:
            bids += (-key, self.bid_qty[key])
        asks: list[int] = []
        for key in self.ask_keys:
            asks += (key, self.ask_qty[key])
        return bids, asks


# -- the sans-IO feed ------------------------------------------------------------------------------


@dataclasses.dataclass
class SymbolStatistics:
    updates: int = 0
    """Diffs applied to a synced book."""
    buffered: int = 0
    dropped_before_snapshot: int = 0
    """Buffered diffs with ``u <= lastUpdateId`` (already in the snapshot)."""
    duplicates: int = 0
    gaps: int = 0
    resyncs: int = 0
    crossed: int = 0
    snapshots: int = 0
    stale_snapshots: int = 0
    """Snapshots older than the oldest buffered diff (another one is fetched)."""
    buffer_overflow: int = 0
    trades: int = 0
    quotes: int = 0


class _Symbol:
    __slots__ = ("book", "buffer", "first", "iid", "instrument", "mapping", "name", "pending", "stats", "stream")

    def __init__(self, name: str, instrument: Instrument) -> None:
        self.name = name
        self.stream = name.lower()
        self.instrument = instrument
        self.iid = instrument.id
        self.mapping = encode(mapping_for(instrument))
        self.book: BinanceBook | None = None
        self.first = False
        """Synced, and the next diff is the first after the snapshot (``U <= L+1 <= u`` rule)."""
        self.buffer: list[dict] | None = None
        """Diffs kept while a snapshot is awaited (None: not buffering)."""
        self.pending = False
        """A snapshot request is queued or in flight."""
        self.stats = SymbolStatistics()


class BinanceFeed:
    """Sans-IO Binance spot combined-stream adapter core: frames in, encoded TLVs out."""

    def __init__(
        self,
        symbols: Iterable[str],
        *,
        channels: Iterable[str] = ("aggTrade", "bookTicker", "depth"),
        depth_interval_ms: int = 100,
        snapshot_limit: int = 1000,
        venue: str = "binance",
        counters: Counter[str] | None = None,
        log: logging.Logger | None = None,
    ) -> None:
        self.channels = tuple(channels)
        self.depth_interval_ms = depth_interval_ms
        self.snapshot_limit = snapshot_limit
        self.venue = venue
        syms = [_Symbol(s.replace("/", ""), binance_instrument(venue, s)) for s in symbols]
        self.symbols = {s.name: s for s in syms}
        self.by_id = {s.iid: s for s in syms}
        self.counters: Counter[str] = counters if counters is not None else Counter()
        self.log = log or logging.getLogger("alphapulse.binance")
        self.snapshot_requests: list[str] = []
        """Symbols whose REST snapshot should be fetched now (the node takes and clears them)."""
        self.generation = 0
        """Bumped on every reset: a snapshot fetched for an older connection is ignored."""

    # -- session ---------------------------------------------------------------------------------
    def stream_names(self) -> list[str]:
        names = []
        for sym in self.symbols.values():
            for channel in self.channels:
                if channel == "depth":
                    suffix = "@depth@100ms" if self.depth_interval_ms == 100 else "@depth"
                    names.append(sym.stream + suffix)
                else:
                    names.append(f"{sym.stream}@{channel}")
        return names

    def stream_url(self, endpoint: str) -> str:
        """The combined-stream URL: ``{endpoint}?streams=a@x/b@y`` (the captured form)."""
        return f"{endpoint.rstrip('/')}?streams={'/'.join(self.stream_names())}"

    def snapshot_path(self, symbol: str) -> str:
        return f"/api/v3/depth?symbol={symbol}&limit={self.snapshot_limit}"

    def mappings(self) -> list[bytes]:
        return [s.mapping for s in self.symbols.values()]

    def reset(self) -> None:
        """Connection lost: drop every book and buffer; resync from fresh snapshots."""
        self.generation += 1
        for sym in self.symbols.values():
            sym.book = None
            sym.first = False
            sym.buffer = None
            sym.pending = False
        self.snapshot_requests.clear()

    # -- frames -----------------------------------------------------------------------------------
    def receive(self, frame: str | bytes, receive_ns: int = 0) -> list[bytes]:
        """Parse one frame; return the TLVs it produces (each to be one message)."""
        try:
            msg = orjson.loads(frame)
        except orjson.JSONDecodeError:
            self._error("bad_json", "frame is not JSON: %.120r", frame)
            return []
        out: list[bytes] = []
        try:
            if type(msg) is not dict:
                self._error("malformed", "frame is not an object: %.120r", frame)
                return out
            data = msg.get("data", msg)
            if type(data) is not dict:
                self._error("malformed", "frame data is not an object: %.120r", frame)
                return out
            event = data.get("e")
            if event == "depthUpdate":
                self._depth(data, out)
            elif event is None and "u" in data and "b" in data and "a" in data:
                self._book_ticker(data, out)
            elif event == "aggTrade" or event == "trade":
                self._trade(data, out)
            elif event == "kline":
                self.counters["binance.klines_ignored"] += 1
            elif "result" in data and "id" in data:
                self.counters["binance.responses"] += 1
            elif "code" in data or "error" in data:
                self._error("exchange", "Binance error: %.200r", frame)
            else:
                self._error("unknown_event", "unknown event %.200r", frame)
        except (KeyError, IndexError, TypeError, ValueError, AttributeError, OverflowError, struct.error) as exc:
            self._error("malformed", "cannot read frame (%s: %s): %.200r", type(exc).__name__, exc, frame)
        return out

    def _symbol(self, data: dict) -> _Symbol | None:
        sym = self.symbols.get(data["s"])
        if sym is None:
            self._error("unknown_symbol", "frame for a symbol not subscribed: %r", data.get("s"))
        return sym

    def _depth(self, data: dict, out: list[bytes]) -> None:
        sym = self._symbol(data)
        if sym is None:
            return
        first_id = data["U"]
        last_id = data["u"]
        if type(first_id) is not int or type(last_id) is not int or first_id > last_id:
            raise ValueError(f"bad update ids U={first_id!r} u={last_id!r}")
        book = sym.book
        if book is None:
            self._buffer(sym, data)
            return
        previous = book.sequence
        if last_id <= previous:
            if sym.first:
                sym.stats.dropped_before_snapshot += 1
            else:
                sym.stats.duplicates += 1
                self.counters["book.duplicates"] += 1
            return
        if first_id > previous + 1 or (not sym.first and first_id != previous + 1):
            sym.stats.gaps += 1
            self.counters["book.gaps"] += 1
            self._error("gap", "%s: update ids jump from %d to %d-%d; resyncing", sym.name, previous, first_id, last_id)
            self._resync(sym, data)
            return
        self._apply(sym, book, data, out)

    def _apply(self, sym: _Symbol, book: BinanceBook, data: dict, out: list[bytes]) -> bool:
        changes: list[int] = []
        try:
            bids = data["b"]
            asks = data["a"]
            if bids:
                book.apply(bids, True, changes)
            if asks:
                book.apply(asks, False, changes)
            if changes and not (0 <= max(changes[0::3]) < 2**63 and 0 <= max(changes[1::3]) < 2**63):
                raise ValueError("price or quantity out of range")
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            self._error("malformed", "%s: cannot apply depth update (%s); resyncing", sym.name, exc)
            self._resync(sym, None)
            return False
        previous = book.sequence
        book.sequence = data["u"]
        sym.first = False
        sym.stats.updates += 1
        if book.ask_keys and book.bid_keys and -book.bid_keys[0] >= book.ask_keys[0]:
            sym.stats.crossed += 1
            self.counters["book.crossed"] += 1
            self._error("crossed", "%s: crossed book after update %d; resyncing", sym.name, book.sequence)
            self._resync(sym, None)
            return False
        if changes:
            ts = data.get("E", 0) * 1_000_000
            out += pack_deltas(sym.iid, ts, book.sequence, previous, changes)
        return True

    def _buffer(self, sym: _Symbol, data: dict) -> None:
        if sym.buffer is None:
            sym.buffer = []
        buffer = sym.buffer
        buffer.append(data)
        sym.stats.buffered += 1
        if len(buffer) > MAX_BUFFERED:
            del buffer[0]
            sym.stats.buffer_overflow += 1
        if not sym.pending:
            sym.pending = True
            self.snapshot_requests.append(sym.name)

    def _resync(self, sym: _Symbol, data: dict | None) -> None:
        """Drop the symbol's book; buffer from ``data`` (the event that broke the chain) on."""
        sym.stats.resyncs += 1
        self.counters["book.resyncs"] += 1
        sym.book = None
        sym.first = False
        sym.buffer = []
        if data is not None:
            self._buffer(sym, data)
        elif not sym.pending:
            sym.pending = True
            self.snapshot_requests.append(sym.name)

    def apply_snapshot(self, symbol: str, body: str | bytes, generation: int | None = None) -> list[bytes]:
        """A REST depth snapshot arrived for ``symbol``: sync its book from it and the buffer.

        Returns the OrderBook and the deltas of the buffered diffs applied on it. A snapshot
        older than the buffer queues another request; one from a previous connection
        (``generation``) is ignored.
        """
        sym = self.symbols.get(symbol)
        if sym is None or (generation is not None and generation != self.generation):
            self.counters["binance.snapshots_ignored"] += 1
            return []
        sym.pending = False
        out: list[bytes] = []
        if sym.book is not None:  # synced meanwhile (a request that crossed a resync)
            self.counters["binance.snapshots_ignored"] += 1
            return out
        try:
            last_update_id, bid_levels, ask_levels = parse_depth_snapshot(body)
            book = BinanceBook()
            bids, asks = book.load(bid_levels, ask_levels, last_update_id)
        except (KeyError, IndexError, TypeError, ValueError, AttributeError, OverflowError) as exc:
            self._error("bad_snapshot", "%s: unreadable depth snapshot (%s): %.120r", sym.name, exc, body)
            self.snapshot_failed(symbol)
            return out
        sym.stats.snapshots += 1
        self.counters["book.snapshots"] += 1
        buffer = [d for d in (sym.buffer or ()) if d["u"] > last_update_id]
        sym.stats.dropped_before_snapshot += len(sym.buffer or ()) - len(buffer)
        if buffer and buffer[0]["U"] > last_update_id + 1:
            sym.stats.stale_snapshots += 1
            self.counters["book.stale_snapshots"] += 1
            self.log.info(
                "%s: snapshot %d older than buffered diffs from %d; fetching another",
                sym.name,
                last_update_id,
                buffer[0]["U"],
            )
            sym.buffer = buffer
            sym.pending = True
            self.snapshot_requests.append(sym.name)
            return out
        if book.crossed():
            sym.stats.crossed += 1
            self.counters["book.crossed"] += 1
            self._error("crossed", "%s: crossed depth snapshot %d", sym.name, last_update_id)
            sym.buffer = buffer
            sym.pending = True
            self.snapshot_requests.append(sym.name)
            return out
        sym.book = book
        sym.first = True
        sym.buffer = None
        out += pack_book_arrays(sym.iid, 0, last_update_id, bids, asks)
        for i, data in enumerate(buffer):
            if sym.book is None:  # the buffer itself had a gap: buffer the rest for the next snapshot
                for later in buffer[i:]:
                    self._buffer(sym, later)
                break
            self._depth(data, out)
        return out

    def snapshot_failed(self, symbol: str) -> None:
        """The fetch failed: ask again (the node spaces retries out)."""
        sym = self.symbols.get(symbol)
        if sym is not None and sym.book is None:
            sym.pending = True
            self.snapshot_requests.append(symbol)

    def _trade(self, data: dict, out: list[bytes]) -> None:
        sym = self._symbol(data)
        if sym is None:
            return
        maker = data["m"]
        # the maker sold if it was the buyer ("m": true): the aggressor sold
        side = 2 if maker is True else 1 if maker is False else 0
        out.append(pack_trade(sym.iid, fixed(data["p"]), fixed(data["q"]), data["T"] * 1_000_000, side))
        sym.stats.trades += 1

    def _book_ticker(self, data: dict, out: list[bytes]) -> None:
        sym = self._symbol(data)
        if sym is None:
            return
        ts = data.get("E", data.get("T", 0)) * 1_000_000  # Binance.US / futures carry times
        out.append(pack_quote(sym.iid, fixed(data["b"]), fixed(data["B"]), fixed(data["a"]), fixed(data["A"]), ts))
        sym.stats.quotes += 1

    def _error(self, kind: str, message: str, *args: Any) -> None:
        report(self.counters, self.log, f"errors.{kind}", message, *args)

    # -- state --------------------------------------------------------------------------------------
    def snapshot(self, instrument_id: int = 0) -> list[bytes]:
        """Mappings and current books (synced symbols only) of one instrument or of all (0)."""
        out: list[bytes] = []
        for sym in self.symbols.values():
            if instrument_id not in (0, sym.iid):
                continue
            out.append(sym.mapping)
            if sym.book is not None:
                bids, asks = sym.book.levels()
                out += pack_book(sym.iid, time.time_ns(), sym.book.sequence, bids, asks)
        return out

    def statistics(self) -> dict[str, Any]:
        return {
            "symbols": {name: dataclasses.asdict(s.stats) for name, s in self.symbols.items()},
            "synced": sorted(name for name, s in self.symbols.items() if s.book is not None),
            "errors": {k[7:]: v for k, v in self.counters.items() if k.startswith("errors.")},
        }


# -- the node kind ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class BinanceParams(UpstreamParams):
    endpoint: str = param(
        "wss://stream.binance.com:9443/stream",
        doc="Combined-stream WebSocket URL (Binance.US: wss://stream.binance.us:9443/stream); the "
        "streams are added as ?streams=...",
        pattern="^wss?://",
    )
    rest_endpoint: str = param(
        "https://api.binance.com",
        doc="REST base URL for depth snapshots (Binance.US: https://api.binance.us).",
        pattern="^https?://",
    )
    symbols: tuple[str, ...] = param(
        ("BTCUSDT",),
        doc="Symbols to subscribe to, as Binance writes them (BTCUSDT) or as BASE/QUOTE "
        "(BTC/USDT) when the quote asset is not a common one.",
        minItems=1,
        items={"type": "string", "pattern": "^[A-Z0-9]+(/[A-Z0-9]+)?$"},
    )
    channels: tuple[Literal["trade", "aggTrade", "bookTicker", "depth"], ...] = param(
        ("aggTrade", "bookTicker", "depth"),
        doc="Streams per symbol: trade or aggTrade (trades), "
        "bookTicker (quotes), depth (diff-depth book synced from REST snapshots).",
        minItems=1,
        uniqueItems=True,
    )
    depth_interval_ms: Literal[100, 1000] = param(
        100,
        doc="Diff-depth stream update speed in milliseconds.",
    )
    snapshot_limit: Literal[100, 500, 1000, 5000] = param(
        1000,
        doc="Levels requested in each REST depth snapshot used to (re)sync a book.",
    )
    venue: str = param(
        "binance", doc="Exchange name used in instrument ids (binance_us for .US).", pattern="^[a-z0-9_.]+$"
    )
    snapshot_retry_max: float = param(
        5.0,
        doc="Cap in seconds of the delay between failed or stale snapshot fetches of a symbol.",
        live=True,
        exclusiveMinimum=0,
    )


def _warm_up_snapshot() -> bytes:
    """A REST depth snapshot body in the shape ``/api/v3/depth`` sends it (compact JSON), for
    :meth:`Binance.load_kernels`."""
    levels = {"bids": [["100.00000000", "2.00000000"]], "asks": [["100.01000000", "1.50000000"]]}
    return orjson.dumps({"lastUpdateId": 1, **levels})


@node_kind(
    "source.binance",
    emits=[TLVType.TRADE, TLVType.QUOTE, TLVType.ORDER_BOOK, TLVType.ORDER_BOOK_DELTA, TLVType.INSTRUMENT_MAPPING],
    example={"symbols": ["BTCUSDT", "ETHUSDT"], "channels": ["aggTrade", "depth"]},
)
class Binance(Node):
    """Binance adapter: trades, book tickers and diff-depth books synced from REST snapshots.

    Follows the documented lastUpdateId / U / u rules with diffs buffered while a snapshot is
    fetched; a break in the chain resyncs that symbol only.
    """

    Params = BinanceParams

    def __init__(self, params: BinanceParams) -> None:
        super().__init__(params)
        self.feed = BinanceFeed(
            params.symbols,
            channels=params.channels,
            depth_interval_ms=params.depth_interval_ms,
            snapshot_limit=params.snapshot_limit,
            venue=params.venue,
        )
        self._fetch_send: Any = None
        self.rng = random.Random()

    async def run(self, ctx: Any) -> None:
        import trio

        from alphapulse.runtime import run_websocket_session

        feed = self.feed
        feed.counters = ctx.counters
        feed.log = ctx.log
        ctx.messages(feed.mappings())
        await ctx.flush()
        send, receive = trio.open_memory_channel[tuple[str, int]](len(feed.symbols) * 4 + 16)
        self._fetch_send = send
        message = ctx.message

        async def on_connect(ws: Any) -> None:
            feed.reset()

        def on_message(frame: str | bytes, receive_ns: int) -> Any:
            tlvs = feed.receive(frame, receive_ns)
            for tlv in tlvs:
                message(tlv, timestamp_ns=receive_ns)
            if feed.snapshot_requests:
                self._queue_requests()
            return None  # the session loop flushes after the read

        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._fetch_snapshots, ctx, receive)
            await run_websocket_session(
                ctx,
                feed.stream_url(self.params.endpoint),
                on_connect=on_connect,
                on_message=on_message,
                on_disconnect=feed.reset,
                policy=lambda: self.params,
            )

    def load_kernels(self) -> None:
        """Load (on a fresh install: compile) the depth snapshot reader before the node serves, not
        while the first snapshot syncs a book and the streams wait: a scratch feed reads a snapshot
        body of the first symbol. The streams themselves are parsed with orjson: no kernel there."""
        if "depth" not in self.params.channels:
            return  # no book: no snapshot is ever read
        feed = BinanceFeed(self.params.symbols[:1], venue=self.params.venue)
        feed.apply_snapshot(next(iter(feed.symbols)), _warm_up_snapshot())

    def _queue_requests(self) -> None:
        import trio

        for symbol in self.feed.snapshot_requests:
            try:
                self._fetch_send.send_nowait((symbol, self.feed.generation))
            except trio.WouldBlock:  # cannot happen: at most one request per symbol is pending
                self.feed.counters["errors.snapshot_queue_full"] += 1
                self.feed.snapshot_failed(symbol)
                return
        self.feed.snapshot_requests.clear()

    async def _fetch_snapshots(self, ctx: Any, receive: Any) -> None:
        """Fetch requested snapshots one at a time (Binance weighs depth requests heavily)."""
        import httpx
        import trio

        feed = self.feed
        failures: Counter[str] = Counter()
        async with httpx.AsyncClient(base_url=self.params.rest_endpoint, timeout=10.0) as client:
            async for symbol, generation in receive:
                if generation != feed.generation:
                    continue
                if failures[symbol]:
                    delay = min(self.params.snapshot_retry_max, 0.1 * 2 ** (failures[symbol] - 1))
                    await trio.sleep(delay / 2 + self.rng.uniform(0, delay / 2))
                    if generation != feed.generation:
                        continue
                try:
                    response = await client.get(feed.snapshot_path(symbol))
                except httpx.HTTPError as exc:
                    ctx.counters["errors.snapshot_fetch"] += 1
                    ctx.log.warning("%s: depth snapshot request failed: %s: %s", symbol, type(exc).__name__, exc)
                    failures[symbol] += 1
                    feed.snapshot_failed(symbol)
                    self._queue_requests()
                    continue
                ctx.counters["binance.snapshot_requests"] += 1
                if response.status_code != 200:
                    ctx.counters["errors.snapshot_status"] += 1
                    ctx.log.warning(
                        "%s: depth snapshot answered %d: %.200s", symbol, response.status_code, response.text
                    )
                    failures[symbol] += 1
                    feed.snapshot_failed(symbol)
                    self._queue_requests()
                    continue
                now = time.time_ns()
                tlvs = feed.apply_snapshot(symbol, response.content, generation)
                synced = feed.symbols[symbol].book is not None
                failures[symbol] = 0 if synced else failures[symbol] + 1
                for tlv in tlvs:
                    ctx.message(tlv, timestamp_ns=now)
                if tlvs:
                    await ctx.flush()
                if feed.snapshot_requests:
                    self._queue_requests()

    def snapshot(self, instrument_id: int) -> list[bytes]:
        return self.feed.snapshot(instrument_id)

    def statistics(self) -> dict[str, Any]:
        return self.feed.statistics()
