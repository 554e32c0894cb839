"""Fan-out: market events routed to the clients that want them, and state rendered on demand.

Everything here is synchronous and never waits for a client: the block handler calls
:meth:`Bridge.take_message` and :meth:`Bridge.flush`, a client's reader calls
:meth:`Bridge.handle_request`, and a client's writer calls :meth:`Bridge.render` for markers.
Each message is encoded to JSON once, however many clients receive it.
"""

from __future__ import annotations

import heapq
import logging
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from alphapulse import protocol
from alphapulse.runtime import report
from nodes._websocket._clients import Client, Key
from nodes._websocket._market import TRADES_KEPT, Event, Market
from nodes._websocket._wire import (
    CHANNELS,
    ClientError,
    Pattern,
    Request,
    dumps,
    error,
    levels,
    optional_level,
    parse_request,
)

ERRORS_LOGGED_PER_CLIENT = 3
"""Bad client messages logged in full per client; the rest are only counted."""
SNAPSHOT_RETRY_SECONDS = 2.0
"""Least time between two upstream snapshot requests for one book."""


class Bridge:
    def __init__(self, depth: int, counters: Counter[str], log: logging.Logger,
                 request_snapshot: Callable[[int, int], None]) -> None:
        self.market = Market(depth)
        self.counters = counters
        self.log = log
        self.request_snapshot = request_snapshot
        self.clients: dict[int, Client] = {}
        self.health_text: str | None = None
        self._asked: dict[int, float] = {}
        self._snapshots: dict[int, tuple[int, str]] = {}
        self._client_errors: Counter[int] = Counter()

    # -- input from the pipeline ------------------------------------------------------------------
    def take_message(self, frame: memoryview, source: int, timestamp_ns: int, now: float) -> None:
        """Decode one delivered frame and route what it changes (books wait for :meth:`flush`)."""
        try:
            tlvs = protocol.decode_message(frame).tlvs
            for event in self.market.apply(tlvs, timestamp_ns, source):
                if event.kind in ("unsynced", "unnamed"):
                    self._ask_snapshot(event, source, now)
                else:
                    self.route(event)
        except protocol.MalformedFrame as exc:
            report(self.counters, self.log, "errors.decode", "undecodable message from source %d skipped: %s", source,
                   exc)
        except protocol.InstrumentError as exc:
            report(self.counters, self.log, "errors.mapping", "bad InstrumentMapping from source %d skipped: %s",
                   source, exc)

    def flush(self) -> None:
        for event in self.market.flush_books(self._watched):
            self.route(event)

    def _watched(self, instrument_id: int) -> bool:
        """Does a client watch this book (its levels or its best bid/offer)? One nobody watches
        is not re-viewed after every message: with no dashboard open, most of the bridge's work."""
        named = self.market.names.get(instrument_id)
        return named is not None and any(c.wants("book", instrument_id, named.symbol)
                                         or c.wants("bbo", instrument_id, named.symbol) for c in self.clients.values())

    def upstream_restarted(self, source: int) -> int:
        """``source`` restarted (``runtime.UpstreamEpochs``): its next deltas do not continue the
        books kept from before. Those books wait for a snapshot (their deltas are counted as
        ``dropped.unsynced_delta`` and ask for one); clients keep the last view meanwhile."""
        stale = self.market.unsync_source(source)
        self.counters["upstream_restarts"] += 1
        self.counters["books.stale_on_upstream_restart"] += stale
        return stale

    def _ask_snapshot(self, event: Event, source: int, now: float) -> None:
        """A book without its snapshot, or an instrument without its name: ask the producer (throttled)."""
        instrument_id = event.instrument_id
        self.counters["dropped.unsynced_delta" if event.kind == "unsynced" else "unnamed"] += 1
        if now - self._asked.get(instrument_id, -SNAPSHOT_RETRY_SECONDS) < SNAPSHOT_RETRY_SECONDS:
            return
        self._asked[instrument_id] = now
        self.counters["snapshots.requested"] += 1
        self.request_snapshot(source, instrument_id)

    # -- routing ------------------------------------------------------------------------------------
    def route(self, event: Event) -> None:
        market = self.market
        if event.kind == "instrument":
            text = dumps({"type": "instrument", **market.names[event.instrument_id].describe()})
            for client in list(self.clients.values()):
                self._offer(client, None, text)
            return
        named = market.names.get(event.instrument_id)
        if named is None:
            return
        iid, symbol = event.instrument_id, named.symbol
        if event.kind == "signal":
            sell_id, sell_symbol = event.other_id, event.data["sell"]["symbol"]
            wanted = [c for c in self.clients.values()
                      if c.wants("signals", iid, symbol) or c.wants("signals", sell_id, sell_symbol)]
        else:
            channel = {"book": "book", "bbo": "bbo", "trade": "trades"}[event.kind]
            wanted = [c for c in self.clients.values() if c.wants(channel, iid, symbol)]
        if not wanted:
            return
        if event.kind == "book":
            text = self._delta_text(event)
            for client in wanted:
                self._offer(client, ("book", iid), text, needs_base=True)
        elif event.kind == "bbo":
            text = self._bbo_text(iid)
            for client in wanted:
                self._offer(client, ("bbo", iid), text)
        else:
            text = dumps(event.data)
            for client in wanted:
                self._offer(client, None, text)

    def publish_health(self, body: dict[str, Any]) -> None:
        self.health_text = dumps(body)
        for client in list(self.clients.values()):
            if client.wants("health", 0, ""):
                self._offer(client, ("health", 0), self.health_text)

    def _offer(self, client: Client, key: Key | None, text: str | None, *, needs_base: bool = False) -> None:
        if client.closed_reason is not None:
            return
        if not client.offer_nowait(key, text, needs_base=needs_base):  # it has just been dropped
            self.counters["clients.dropped_slow"] += 1
            self.counters["dropped.slow_client_messages"] += len(client.queue)
            self.log.warning("client %d (%s) dropped: too slow (%d messages queued)", client.number,
                             client.remote, len(client.queue))
            client.queue.clear()

    # -- rendering ----------------------------------------------------------------------------------
    def _delta_text(self, event: Event) -> str:
        book = self.market.books[event.instrument_id]
        bids, asks = event.data
        return dumps({
            "type": "book_delta",
            **self.market.names[event.instrument_id].fields(),
            "seq": book.version,
            "ts": event.timestamp_ns,
            "bids": levels(bids),
            "asks": levels(asks),
        })

    def _bbo_text(self, instrument_id: int) -> str | None:
        best = self.market.best(instrument_id)
        if best is None:
            return None
        return dumps({
            "type": "bbo",
            **self.market.names[instrument_id].fields(),
            "bid": optional_level(best[0]),
            "ask": optional_level(best[1]),
        })

    def render(self, client: Client, key: Key) -> str | None:
        """The current state behind a marker, or None if there is none (yet) or it is unwanted."""
        channel, iid = key
        if channel == "health":
            return self.health_text if client.wants("health", 0, "") else None
        named = self.market.names.get(iid)
        if named is None or not client.wants(channel, iid, named.symbol):
            return None
        self.market.catch_up(iid)  # its view may have waited for someone to watch it
        if channel == "bbo":
            return self._bbo_text(iid)
        book = self.market.books.get(iid)
        if book is None or not book.synced or not book.version:
            return None
        cached = self._snapshots.get(iid)
        if cached is None or cached[0] != book.version:
            cached = (book.version, dumps({
                "type": "book_snapshot",
                **named.fields(),
                "seq": book.version,
                "ts": book.timestamp_ns,
                "depth": self.market.depth,
                "bids": levels(book.bid_view),
                "asks": levels(book.ask_view),
            }))
            self._snapshots[iid] = cached
        client.primed.add(key)
        return cached[1]

    def hello(self, client: Client) -> None:
        self._offer(client, None, dumps({
            "type": "hello",
            "server": "alphapulse sink.websocket",
            "client": client.number,
            "channels": list(CHANNELS),
            "book_levels": self.market.depth,
            "numbers": "decimal strings",
        }))
        self._offer(client, None, self._instruments_text())

    def _instruments_text(self) -> str:
        return dumps({"type": "instruments", "instruments": self.market.instruments()})

    # -- client requests ----------------------------------------------------------------------------
    def handle_request(self, client: Client, text: str | bytes) -> None:
        try:
            request = parse_request(text)
        except ClientError as exc:
            self.counters["errors.client_messages"] += 1
            self._client_errors[client.number] += 1
            if self._client_errors[client.number] <= ERRORS_LOGGED_PER_CLIENT:
                self.log.warning("client %d (%s): bad message (%s): %s", client.number, client.remote,
                                 exc.code, exc)
            self._offer(client, None, error(exc.code, str(exc), exc.request_id))
            return
        self.counters[f"requests.{request.op}"] += 1
        if request.op == "ping":
            self._offer(client, None, dumps({"type": "pong", "id": request.request_id}))
        elif request.op == "list":
            self._offer(client, None, self._instruments_text())
        elif request.op == "subscribe":
            self._subscribe(client, request)
        else:
            self._unsubscribe(client, request)

    def _ack(self, kind: str, request: Request) -> str:
        body: dict[str, Any] = {"type": kind, "channels": list(request.channels),
                                "instruments": [p.text for p in request.patterns]}
        if request.request_id is not None:
            body["id"] = request.request_id
        return dumps(body)

    def _matching(self, patterns: Iterable[Pattern]) -> list[int]:
        patterns = list(patterns)
        return [iid for iid, named in self.market.names.items()
                if any(p.matches(iid, named.symbol) for p in patterns)]

    def _subscribe(self, client: Client, request: Request) -> None:
        for channel in request.channels:
            client.subscribe(channel, request.patterns)
        self._offer(client, None, self._ack("subscribed", request))
        matching = self._matching(request.patterns)
        for channel in request.channels:
            if channel in ("book", "bbo"):
                keys = {(channel, iid) for iid in matching}
                client.forget(keys)  # a fresh snapshot, even when re-subscribing
                for key in sorted(keys):
                    self._offer(client, key, None)
            elif channel == "trades":
                recent = [self.market.trades.get(iid, ()) for iid in matching]
                trades = heapq.nlargest(TRADES_KEPT, (t for ts in recent for t in ts), key=lambda t: t["ts"])[::-1]
                self._offer(client, None, dumps({"type": "trades_snapshot", "trades": trades}))
            elif channel == "signals":
                signals = [body for body, buy_id, sell_id in self.market.signals
                           if any(p.matches(buy_id, body["buy"]["symbol"]) or p.matches(sell_id, body["sell"]["symbol"])
                                  for p in request.patterns)]
                self._offer(client, None, dumps({"type": "signals_snapshot", "signals": signals}))
            elif self.health_text is not None:
                self._offer(client, ("health", 0), None)

    def _unsubscribe(self, client: Client, request: Request) -> None:
        for channel in request.channels:
            client.unsubscribe(channel, None if request.all_instruments else request.patterns)
            held = {key for key in client.primed | client.refresh if key[0] == channel}
            names = self.market.names
            client.forget({key for key in held
                           if key[1] not in names or not client.wants(channel, key[1], names[key[1]].symbol)})
        self._offer(client, None, self._ack("unsubscribed", request))

    # -- statistics ---------------------------------------------------------------------------------
    def statistics(self) -> dict[str, Any]:
        books = self.market.books
        return {
            "instruments": len(self.market.names),
            "books": len(books),
            "books_synced": sum(1 for b in books.values() if b.synced),
            "clients": [c.statistics() for c in self.clients.values()],
        }
