"""What both Coinbase APIs share: instruments, books, TLV building, counting, resync requests.

A feed is sans-IO: ``receive(frame, receive_ns)`` parses one WebSocket frame and appends TLVs
(records or encoded bytes, one message each) to ``out``; the node takes them with ``take()``.
When the feed sees something it cannot repair in place (a sequence gap, a crossed book) it sets
``resync_reason``; the node then drops the connection, and ``reset()`` (called on disconnect)
clears every book so nothing stale is merged with the next snapshot.
"""

from __future__ import annotations

import calendar
import logging
import re
from collections import Counter
from typing import Any

import numpy as np

from alphapulse.protocol import (
    FixedPointError,
    Instrument,
    InstrumentError,
    Quote,
    TLVType,
    encode_tlv,
    layout_for,
    mapping_for,
    parse_fixed,
    spot,
)
from nodes._coinbase._book import ASK, BID, CHANGE_DTYPE, Book

_ORDER_BOOK = layout_for(TLVType.ORDER_BOOK)
_DELTA = layout_for(TLVType.ORDER_BOOK_DELTA)
MAX_DELTA_CHANGES = (65535 - _DELTA.head_size) // CHANGE_DTYPE.itemsize
MAX_DEPTH = (65535 - _ORDER_BOOK.head_size) // 32
"""Most levels per side a one-TLV OrderBook snapshot can carry (both sides full)."""

_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})$", re.ASCII
)


class BadFrame(ValueError):
    """A frame (or part of one) that does not have the documented shape; counted, never fatal."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind


_MINUTES: dict[str, int] = {}
"""``YYYY-MM-DDTHH:MM`` → Unix ns of that minute: times of one feed share a few minutes."""


def parse_time_ns(text: Any) -> int:
    """Exact Unix ns of an RFC 3339 time (``2021-04-17T16:43:37.075351Z``); BadFrame otherwise."""
    if isinstance(text, str) and len(text) >= 20 and text[-1] == "Z" and text[16] == ":":
        minute = _MINUTES.get(text[:16])
        if minute is not None:  # the fast path: seconds and fraction only
            tail = text[17:-1]
            seconds, dot, frac = tail.partition(".")
            exact = not dot or (frac.isdigit() and len(frac) <= 9)
            if tail.isascii() and len(seconds) == 2 and seconds.isdigit() and exact:
                return minute + int(seconds) * 1_000_000_000 + int(frac.ljust(9, "0") if dot else 0)
    ns = _parse_time_slow(text)
    if isinstance(text, str) and text[-1:] == "Z" and len(_MINUTES) < 4096:
        _MINUTES[text[:16]] = ns - ns % 60_000_000_000
    return ns


def _parse_time_slow(text: Any) -> int:
    match = _RFC3339.match(text) if isinstance(text, str) else None
    if match is None:
        raise BadFrame("bad_time", f"not an RFC 3339 time: {text!r}")
    year, month, day, hour, minute, second, frac, zone = match.groups()
    if not (1 <= int(month) <= 12 and 1 <= int(day) <= 31 and int(hour) < 24 and int(minute) < 60
            and int(second) <= 60):
        raise BadFrame("bad_time", f"not a valid time: {text!r}")
    seconds = calendar.timegm((int(year), int(month), int(day), int(hour), int(minute), int(second)))
    if zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        seconds -= sign * (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60)
    ns = seconds * 1_000_000_000 + int((frac or "0").ljust(9, "0"))
    if ns < 0:
        raise BadFrame("bad_time", f"time before 1970: {text!r}")
    return ns


def fixed(text: Any, what: str) -> int:
    """Exact fixed point of a decimal string field; BadFrame if missing or not exact."""
    if not isinstance(text, str):
        raise BadFrame("bad_number", f"{what} is not a decimal string: {text!r}")
    try:
        value = parse_fixed(text)
    except FixedPointError as exc:
        raise BadFrame("bad_number", f"{what}: {exc}") from None
    if value < 0:
        raise BadFrame("bad_number", f"{what} is negative: {text!r}")
    return value


def order_book_tlv(instrument_id: int, ts_ns: int, sequence: int, bids: np.ndarray, asks: np.ndarray) -> bytes:
    """An OrderBook TLV from (n, 2) int64 [price, qty] arrays, best first (no per-level Python)."""
    head = _ORDER_BOOK.head_struct.pack(instrument_id, ts_ns, sequence, len(bids), len(asks))
    return encode_tlv(TLVType.ORDER_BOOK, head + bids.astype("<i8").tobytes() + asks.astype("<i8").tobytes())


def delta_tlvs(instrument_id: int, ts_ns: int, sequence: int, prev: int, changes: bytes) -> list[bytes]:
    """OrderBookDelta TLVs for packed changes, split when they exceed one TLV (applied in order)."""
    size = CHANGE_DTYPE.itemsize
    n = len(changes) // size
    pack = _DELTA.head_struct.pack
    if n <= MAX_DELTA_CHANGES:
        return [encode_tlv(TLVType.ORDER_BOOK_DELTA, pack(instrument_id, ts_ns, sequence, prev, n, 0) + changes)]
    out = []
    for first in range(0, n, MAX_DELTA_CHANGES):
        chunk = changes[first * size : (first + MAX_DELTA_CHANGES) * size]
        head = pack(instrument_id, ts_ns, sequence, prev, len(chunk) // size, 0)
        out.append(encode_tlv(TLVType.ORDER_BOOK_DELTA, head + chunk))
    return out


class Feed:
    """Base of the two Coinbase APIs' parsers; subclasses implement ``_frame``."""

    name = "coinbase"

    def __init__(
        self,
        *,
        venue: str = "coinbase",
        products: tuple[str, ...] = ("BTC-USD",),
        channels: tuple[str, ...] = ("trades", "ticker", "level2"),
        depth: int = 1000,
        counters: Counter[str] | None = None,
        log: logging.Logger | None = None,
    ) -> None:
        self.venue = venue
        self.products = tuple(products)
        self.channels = tuple(channels)
        self.depth = min(depth, MAX_DEPTH)
        self.counters: Counter[str] = Counter() if counters is None else counters
        self.log = log or logging.getLogger(f"alphapulse.{self.name}")
        self.out: list[Any] = []
        self.books: dict[str, Book] = {}
        self.book_ts: dict[str, tuple[int, int]] = {}
        """product → (exchange ts, sequence) of the book's last change."""
        self.instruments: dict[str, Instrument] = {}
        self.ids: dict[str, int] = {}
        """product → instrument id (computing one hashes: do it once)."""
        self._announced: set[int] = set()
        self.resync_reason: str | None = None
        self.book_frame = False
        """Set by a subclass while it handles a book frame: a bad one then forces a resync."""
        for product in self.products:
            self.instrument(product)

    # -- the node's side ---------------------------------------------------------------------------
    def take(self) -> list[Any]:
        out, self.out = self.out, []
        return out

    def reset(self) -> None:
        """Forget all connection state (called on every disconnect): books wait for a new snapshot."""
        self.books.clear()
        self.book_ts.clear()
        self.resync_reason = None

    def receive(self, frame: str | bytes, receive_ns: int) -> None:
        """Parse one frame; bad frames are counted and logged, never raised."""
        if self.resync_reason is not None:
            self.counters["dropped.resyncing"] += 1
            return
        self.book_frame = False
        try:
            self._frame(frame, receive_ns)
        except BadFrame as exc:
            self.bad(exc.kind, str(exc), frame)
            if self.book_frame and self.books:  # a book update we could not apply: the book is unknown now
                self.resync(f"unreadable book update ({exc.kind})")

    def snapshot(self, instrument_id: int = 0) -> list[Any]:
        """Mappings and current books (top ``depth``), for a downstream SnapshotRequest."""
        out: list[Any] = []
        for product, instrument in self.instruments.items():
            if instrument_id not in (0, instrument.id):
                continue
            out.append(mapping_for(instrument))
            book = self.books.get(product)
            if book is not None:
                ts, seq = self.book_ts.get(product, (0, 0))
                bids, asks = book.side(BID, self.depth), book.side(ASK, self.depth)
                out.append(order_book_tlv(instrument.id, ts, seq, bids, asks))
        return out

    # -- helpers for subclasses ---------------------------------------------------------------------
    def _frame(self, frame: str | bytes, receive_ns: int) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def bad(self, kind: str, detail: str, frame: Any = None) -> None:
        key = f"errors.{kind}"
        self.counters[key] += 1
        n = self.counters[key]
        if n <= 10 or n & (n - 1) == 0:  # the first ten, then at powers of two: visible, not a flood
            sample = frame[:200] if isinstance(frame, (str, bytes)) else ""
            self.log.warning("%s: %s (%s #%d) %r", self.name, detail, key, n, sample)

    def note(self, key: str, message: str, *args: Any) -> None:
        """Log a counted event: the first ten, then at powers of two (visible, never a flood)."""
        n = self.counters[key]
        if n <= 10 or n & (n - 1) == 0:
            self.log.warning(f"%s: {message} (%s #%d)", self.name, *args, key, n)

    def resync(self, reason: str) -> None:
        self.counters["resyncs"] += 1
        self.log.warning("%s: resync: %s", self.name, reason)
        self.resync_reason = reason
        self.books.clear()

    def instrument(self, product: Any) -> Instrument:
        instrument = self.instruments.get(product)
        if instrument is None:
            if not isinstance(product, str) or product.count("-") != 1:
                raise BadFrame("bad_product", f"not a BASE-QUOTE product id: {product!r}")
            base, quote = product.split("-")
            try:
                instrument = spot(self.venue, base, quote)
            except InstrumentError as exc:
                raise BadFrame("bad_product", str(exc)) from None
            self.instruments[product] = instrument
            self.ids[product] = instrument.id
        return instrument

    def announce(self, product: str) -> int:
        """Emit the InstrumentMapping before an instrument's first data; return its id."""
        iid = self.ids.get(product)
        if iid is None:
            iid = self.instrument(product).id
        if iid not in self._announced:
            self._announced.add(iid)
            self.out.append(mapping_for(self.instruments[product]))
        return iid

    def load_book(self, product: str, sides: np.ndarray, prices: np.ndarray, qtys: np.ndarray,
                  ts_ns: int, sequence: int) -> None:
        """Replace a book from a snapshot and publish it (or resync if it is crossed)."""
        self.instrument(product)
        book = self.books.get(product)
        if book is None:
            book = self.books[product] = Book(self.depth, capacity=max(256, len(sides)))
        book.load(sides, prices, qtys)
        self.counters["book.snapshots"] += 1
        if book.crossed():
            self.counters["dropped.crossed_book"] += 1
            self.resync(f"{product}: snapshot is crossed")
            return
        self.book_ts[product] = (ts_ns, sequence)
        iid = self.announce(product)
        self.out.append(order_book_tlv(iid, ts_ns, sequence, book.side(BID, self.depth), book.side(ASK, self.depth)))

    def update_book(self, product: str, sides: np.ndarray, prices: np.ndarray, qtys: np.ndarray,
                    ts_ns: int, sequence: int) -> None:
        """Apply an update and publish the view's changes (or resync if it crosses the book)."""
        book = self.books.get(product)
        if book is None:
            self.counters["dropped.update_before_snapshot"] += 1
            return
        changes, unknown = book.apply(sides, prices, qtys)
        self._updated(product, book, changes, unknown, book.crossed(), ts_ns, sequence)

    def update_book_scanned(self, product: str, buf: np.ndarray, start: int, end: int, sequence: int) -> bool:
        """The fast path of ``update_book`` for a raw ``updates`` array; False if it could not be scanned."""
        book = self.books.get(product)
        if book is None:
            self.counters["dropped.update_before_snapshot"] += 1
            return True
        n, changes, ts_ns, unknown, crossed = book.apply_scanned(buf, start, end)
        if n < 0:
            return False
        self._updated(product, book, changes, unknown, crossed, ts_ns, sequence)
        return True

    def _updated(self, product: str, book: Book, changes: bytes, unknown: int, crossed: bool,
                 ts_ns: int, sequence: int) -> None:
        counters = self.counters
        counters["book.updates"] += 1
        if unknown:
            counters["book.unknown_level_removed"] += unknown
        if crossed:
            counters["dropped.crossed_book"] += 1
            bid, _, ask, _ = book.best()
            self.resync(f"{product}: update crosses the book (bid {bid} >= ask {ask})")
            return
        _, prev = self.book_ts.get(product, (0, 0))
        self.book_ts[product] = (ts_ns, sequence)
        if changes:
            self.out.extend(delta_tlvs(self.announce(product), ts_ns, sequence, prev, changes))

    def quote(self, product: str, bid: int, bid_qty: int, ask: int, ask_qty: int, ts_ns: int) -> None:
        iid = self.announce(product)
        self.out.append(Quote(instrument_id=iid, bid_price=bid, bid_qty=bid_qty, ask_price=ask, ask_qty=ask_qty,
                              exchange_ts_ns=ts_ns, flags=0))
