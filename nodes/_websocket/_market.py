"""What the bridge knows about the market: instrument names, top-N book views, trades, signals.

Sans-IO: decoded TLV records go in, :class:`Event` values come out, and nothing here touches
sockets or clocks. Books are kept whole (fixed-point ``int`` prices and sizes in dicts), but
what clients see is a *view*: the best ``levels`` of each side. A client's book stream is one
snapshot of that view followed by view diffs, each carrying the view's version, so a client can
check that it missed nothing (``seq`` goes up by exactly one).

A book becomes usable only with a full OrderBook snapshot: deltas for a book never loaded are
skipped and reported (``Event`` kind ``"unsynced"``) so the node can ask upstream for a snapshot.
"""

from __future__ import annotations

import dataclasses
import heapq
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from alphapulse import protocol

TRADES_KEPT = 50
"""Recent trades kept per instrument, sent as a batch when a client subscribes to its tape."""
SIGNALS_KEPT = 50
"""Recent signals kept, sent as a batch when a client subscribes to signals."""

_SIDES = {protocol.Side.BUY: "buy", protocol.Side.SELL: "sell"}
_SCOPED = (protocol.Trade, protocol.Quote, protocol.OrderBook, protocol.OrderBookDelta, protocol.PoolSwap,
           protocol.ArbitrageSignal)
"""Records that name an instrument clients can only be told about once it has a mapping."""


@dataclasses.dataclass(frozen=True)
class Named:
    """An instrument as clients see it: ``venue`` plus ``symbol`` (``BASE-QUOTE`` for spot pairs)."""

    id: int
    key: str
    """The short form clients subscribe with: ``sim_a:BTC-USD``."""
    venue: str
    symbol: str
    kind: str
    base: str | None
    quote: str | None

    @classmethod
    def from_canonical(cls, instrument_id: int, canonical: str) -> Named:
        """Raises ``protocol.InstrumentError`` for a descriptor that does not parse."""
        inst = protocol.parse_instrument(canonical)
        return cls(instrument_id, inst.short, inst.venue, inst.name, inst.kind, inst.base, inst.quote)

    def fields(self) -> dict[str, Any]:
        """The naming fields every instrument-scoped message carries."""
        return {"instrument": self.key, "venue": self.venue, "symbol": self.symbol}

    def describe(self) -> dict[str, Any]:
        return {**self.fields(), "kind": self.kind, "base": self.base, "quote": self.quote}


@dataclasses.dataclass(frozen=True)
class Event:
    """Something clients may need to hear about; the node renders and routes it.

    kinds: ``instrument`` (newly named), ``book`` (view changed: ``data`` is the bid and ask
    changes), ``bbo`` (best bid/ask changed), ``trade`` (a trade or a DEX swap) and ``signal``
    (``data`` is the message body), ``unsynced`` (a delta for a book with no snapshot yet) and
    ``unnamed`` (an instrument without an InstrumentMapping yet): for both, ask upstream for a snapshot.
    """

    kind: str
    instrument_id: int
    data: Any = None
    timestamp_ns: int = 0
    other_id: int = 0
    """A signal's sell-leg instrument."""


def level(price: int, size: int) -> dict[str, str]:
    """One ``{price, size}`` level as exact decimal strings (never floats: ``"60001.25"``)."""
    return {"price": protocol.format_fixed(price), "size": protocol.format_fixed(size)}


class Book:
    """One instrument's full book plus the top-N view last shown to clients."""

    __slots__ = ("ask_view", "asks", "bid_view", "bids", "source", "synced", "timestamp_ns", "version")

    def __init__(self) -> None:
        self.bids: dict[int, int] = {}
        self.asks: dict[int, int] = {}
        self.bid_view: list[tuple[int, int]] = []
        self.ask_view: list[tuple[int, int]] = []
        self.version = 0
        self.synced = False
        self.timestamp_ns = 0
        self.source = 0
        """the source whose snapshot it was loaded from"""

    def load(self, bids: Iterable[tuple[int, int]], asks: Iterable[tuple[int, int]]) -> None:
        self.bids = {p: q for p, q in bids if q > 0}
        self.asks = {p: q for p, q in asks if q > 0}
        self.synced = True

    def apply(self, changes: Iterable[tuple[int, int, int]], depth: int) -> bool:
        """Apply level changes; True if any may move the top-``depth`` view (else no refresh is needed)."""
        bid_edge = self.bid_view[-1][0] if len(self.bid_view) == depth else None
        ask_edge = self.ask_view[-1][0] if len(self.ask_view) == depth else None
        touched = False
        for price, qty, side in changes:
            if side == protocol.BookSide.ASK:
                levels = self.asks
                touched = touched or ask_edge is None or price <= ask_edge
            else:
                levels = self.bids
                touched = touched or bid_edge is None or price >= bid_edge
            if qty > 0:
                levels[price] = qty
            else:
                levels.pop(price, None)
        return touched

    def refresh(self, depth: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]] | None:
        """Recompute the view; return the (bid, ask) changes since the last one, or None if none.

        A change is ``(price, size)``; size 0 means the level left the view.
        """
        bids = [(p, self.bids[p]) for p in heapq.nlargest(depth, self.bids)]
        asks = [(p, self.asks[p]) for p in heapq.nsmallest(depth, self.asks)]
        bid_changes = _diff(self.bid_view, bids)
        ask_changes = _diff(self.ask_view, asks)
        if not bid_changes and not ask_changes:
            return None
        self.bid_view, self.ask_view = bids, asks
        self.version += 1
        return bid_changes, ask_changes

    def best(self) -> tuple[tuple[int, int] | None, tuple[int, int] | None]:
        return (self.bid_view[0] if self.bid_view else None, self.ask_view[0] if self.ask_view else None)


def _diff(old: list[tuple[int, int]], new: list[tuple[int, int]]) -> list[tuple[int, int]]:
    before = dict(old)
    after = dict(new)
    changes = [(p, q) for p, q in new if before.get(p) != q]
    changes.extend((p, 0) for p in before if p not in after)
    return changes


class Market:
    """The bridge's state, fed one decoded message at a time."""

    def __init__(self, depth: int) -> None:
        self.depth = depth
        self.names: dict[int, Named] = {}
        self.books: dict[int, Book] = {}
        self.quotes: dict[int, tuple[tuple[int, int] | None, tuple[int, int] | None]] = {}
        self.trades: dict[int, deque[dict[str, Any]]] = {}
        self.signals: deque[tuple[dict[str, Any], int, int]] = deque(maxlen=SIGNALS_KEPT)
        """(message body, buy instrument, sell instrument)"""
        self._dirty: dict[int, int] = {}  # instrument -> header timestamp of its latest change

    # -- input ----------------------------------------------------------------------------------
    def apply(self, tlvs: Iterable[Any], timestamp_ns: int, source: int = 0) -> Iterator[Event]:
        """Take the TLVs of one message (from ``source``). Book changes are collected until
        :meth:`flush_books`."""
        for tlv in tlvs:
            if isinstance(tlv, _SCOPED):
                for iid in (tlv.instrument_id, getattr(tlv, "sell_instrument_id", 0)):
                    if iid and iid not in self.names:
                        yield Event("unnamed", iid)
            if isinstance(tlv, protocol.OrderBookDelta):
                yield from self._delta(tlv, timestamp_ns)
            elif isinstance(tlv, protocol.OrderBook):
                book = self.books.setdefault(tlv.instrument_id, Book())
                book.load(tlv.bids, tlv.asks)
                book.source = source
                self._dirty[tlv.instrument_id] = timestamp_ns
            elif isinstance(tlv, protocol.Trade):
                yield from self._trade(tlv, timestamp_ns)
            elif isinstance(tlv, protocol.PoolSwap):
                yield from self._swap(tlv, timestamp_ns)
            elif isinstance(tlv, protocol.Quote):
                yield from self._quote(tlv, timestamp_ns)
            elif isinstance(tlv, protocol.ArbitrageSignal):
                yield from self._signal(tlv, timestamp_ns)
            elif isinstance(tlv, protocol.InstrumentMapping):
                yield from self._mapping(tlv)

    def unsync_source(self, source: int) -> int:
        """Mark the synced books loaded from ``source`` unsynced (it restarted: its next deltas
        do not continue them); returns how many."""
        stale = 0
        for book in self.books.values():
            if book.source == source and book.synced:
                book.synced = False
                stale += 1
        return stale

    def flush_books(self, watched: Callable[[int], bool] | None = None) -> Iterator[Event]:
        """One ``book`` (and, when the top moved, ``bbo``) event per book whose view changed.
        With ``watched``, a book it says nobody watches keeps its changes pending: its view is
        recomputed once someone does (:meth:`catch_up`), not after every message."""
        dirty, self._dirty = self._dirty, {}
        for iid, timestamp_ns in dirty.items():
            if watched is not None and not watched(iid):
                self._dirty[iid] = timestamp_ns
                continue
            book = self.books[iid]
            best_before = book.best()
            changes = book.refresh(self.depth)
            if changes is None:
                continue
            book.timestamp_ns = timestamp_ns
            yield Event("book", iid, changes, timestamp_ns)
            if book.best() != best_before:
                yield Event("bbo", iid, None, timestamp_ns)

    def _delta(self, tlv: Any, timestamp_ns: int) -> Iterator[Event]:
        book = self.books.get(tlv.instrument_id)
        if book is None or not book.synced:
            yield Event("unsynced", tlv.instrument_id)
            return
        if book.apply(tlv.changes, self.depth):
            self._dirty[tlv.instrument_id] = timestamp_ns

    def _trade(self, tlv: Any, timestamp_ns: int) -> Iterator[Event]:
        named = self.names.get(tlv.instrument_id)
        if named is None:
            return
        body = {
            "type": "trade",
            **named.fields(),
            **level(tlv.price, tlv.quantity),
            "side": _SIDES.get(tlv.side, "unknown"),
            "ts": tlv.exchange_ts_ns or timestamp_ns,
        }
        self.trades.setdefault(tlv.instrument_id, deque(maxlen=TRADES_KEPT)).append(body)
        yield Event("trade", tlv.instrument_id, body, timestamp_ns)

    def _swap(self, tlv: Any, timestamp_ns: int) -> Iterator[Event]:
        """A DEX swap goes on the pool's tape, amounts exact in the tokens' own decimals."""
        named = self.names.get(tlv.instrument_id)
        if named is None:
            return
        body = {
            "type": "swap",
            **named.fields(),
            "token_in": "0x" + tlv.token_in.hex(),
            "token_out": "0x" + tlv.token_out.hex(),
            "amount_in": protocol.format_fixed(tlv.amount_in, tlv.decimals_in),
            "amount_out": protocol.format_fixed(tlv.amount_out, tlv.decimals_out),
            "block": tlv.block_number,
            "tx": "0x" + tlv.tx_hash.hex(),
            "log_index": tlv.log_index,
            "ts": timestamp_ns,
        }
        self.trades.setdefault(tlv.instrument_id, deque(maxlen=TRADES_KEPT)).append(body)
        yield Event("trade", tlv.instrument_id, body, timestamp_ns)

    def _quote(self, tlv: Any, timestamp_ns: int) -> Iterator[Event]:
        book = self.books.get(tlv.instrument_id)
        if book is not None and book.synced:
            return  # the book is the better source of the top
        bid = (tlv.bid_price, tlv.bid_qty) if tlv.bid_qty > 0 else None
        ask = (tlv.ask_price, tlv.ask_qty) if tlv.ask_qty > 0 else None
        if self.quotes.get(tlv.instrument_id) != (bid, ask):
            self.quotes[tlv.instrument_id] = (bid, ask)
            yield Event("bbo", tlv.instrument_id, None, timestamp_ns)

    def _signal(self, tlv: Any, timestamp_ns: int) -> Iterator[Event]:
        buy, sell = self.names.get(tlv.instrument_id), self.names.get(tlv.sell_instrument_id)
        if buy is None or sell is None:
            return
        body = {
            "type": "signal",
            "kind": "arbitrage",
            "signal_id": tlv.signal_id,
            "symbol": buy.symbol,
            "buy": {**buy.fields(), "price": protocol.format_fixed(tlv.buy_price)},
            "sell": {**sell.fields(), "price": protocol.format_fixed(tlv.sell_price)},
            "max_quantity": protocol.format_fixed(tlv.max_quantity),
            "net_spread_bps": protocol.format_fixed(tlv.net_spread_bps),
            "fees": protocol.format_fixed(tlv.fees),
            "net_profit": protocol.format_fixed(tlv.net_profit),
            "ts": tlv.detected_ns or timestamp_ns,
        }
        self.signals.append((body, tlv.instrument_id, tlv.sell_instrument_id))
        yield Event("signal", tlv.instrument_id, body, timestamp_ns, tlv.sell_instrument_id)

    def _mapping(self, tlv: Any) -> Iterator[Event]:
        if tlv.instrument_id in self.names:
            return
        if protocol.instrument_id(tlv.canonical) != tlv.instrument_id:
            raise protocol.InstrumentError(f"{tlv.canonical!r} does not hash to id {tlv.instrument_id}")
        self.names[tlv.instrument_id] = Named.from_canonical(tlv.instrument_id, tlv.canonical)
        yield Event("instrument", tlv.instrument_id)

    # -- state, for snapshots ---------------------------------------------------------------------
    def catch_up(self, instrument_id: int) -> None:
        """Bring the view of a book left pending by :meth:`flush_books` up to date (before it is
        shown to someone who now watches it)."""
        timestamp_ns = self._dirty.pop(instrument_id, None)
        if timestamp_ns is not None and self.books[instrument_id].refresh(self.depth) is not None:
            self.books[instrument_id].timestamp_ns = timestamp_ns

    def best(self, instrument_id: int) -> tuple[tuple[int, int] | None, tuple[int, int] | None] | None:
        self.catch_up(instrument_id)
        book = self.books.get(instrument_id)
        if book is not None and book.synced and book.version:
            return book.best()
        return self.quotes.get(instrument_id)

    def instruments(self) -> list[dict[str, Any]]:
        return [n.describe() for n in sorted(self.names.values(), key=lambda n: n.key)]
