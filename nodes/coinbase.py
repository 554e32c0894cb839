"""``source.coinbase``: Coinbase Exchange feed and Coinbase Advanced Trade market data.

The I/O edge only: the shared session loop (``run_websocket_session``) keeps the connection,
and the sans-IO feeds in ``nodes/_coinbase`` parse frames and keep the books. A resync (a
sequence gap, a crossed book) drops the connection: a new one starts with fresh snapshots and,
on Advanced Trade, a fresh ``sequence_num``; the books are cleared on every disconnect.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Literal

from alphapulse.kinds import Node, node_kind, param
from alphapulse.protocol import TLVType
from alphapulse.runtime import UpstreamParams, run_websocket_session
from nodes._coinbase import AdvancedTradeFeed, ExchangeFeed
from nodes._coinbase._book import ASK, BID
from nodes._coinbase._feed import MAX_DEPTH

ENDPOINTS = {
    "exchange": "wss://ws-feed.exchange.coinbase.com",
    "advanced_trade": "wss://advanced-trade-ws.coinbase.com",
}


@dataclasses.dataclass(frozen=True)
class CoinbaseParams(UpstreamParams):
    feed: Literal["exchange", "advanced_trade"] = param(
        "advanced_trade",
        doc="Which Coinbase API: 'exchange' (snapshot/l2update/match/ticker) or "
        "'advanced_trade' (l2_data, market_trades, ticker, with a per-connection sequence_num).",
    )
    endpoint: str | None = param(
        None,
        doc="WebSocket URL; null uses the feed's real endpoint "
        "(wss://ws-feed.exchange.coinbase.com or wss://advanced-trade-ws.coinbase.com). "
        "Point it at a simulated or replay server for tests.",
        pattern="^wss?://",
    )
    products: tuple[str, ...] = param(
        ("BTC-USD",), doc="Products to subscribe to, as BASE-QUOTE.", minItems=1,
        items={"type": "string", "pattern": "^[A-Z0-9]+-[A-Z0-9]+$"},
    )
    channels: tuple[Literal["trades", "ticker", "level2"], ...] = param(
        ("trades", "ticker", "level2"),
        doc="Data to subscribe to: trades (Trade), ticker (Quote), level2 (OrderBook and "
        "OrderBookDelta).",
        minItems=1, uniqueItems=True,
    )
    level2_channel: Literal["level2", "level2_batch"] = param(
        "level2_batch",
        doc="Exchange feed only: the book channel to subscribe to. level2_batch is public; "
        "level2 (unbatched) needs an authenticated connection on the real exchange.",
    )
    depth: int = param(
        1000, doc="Levels per side published (OrderBook snapshots and the deltas that keep that "
        "top-N view exact); the adapter keeps and checks the full book.", minimum=1, maximum=MAX_DEPTH,
    )
    venue: str = param(
        "coinbase",
        doc="Exchange name used in instrument ids (e.g. sim_a when fed by a simulator).",
        pattern="^[a-z0-9_.]+$",
    )


def _warm_up_frames(feed: str, product: str) -> list[str]:
    """A snapshot and an update of ``product`` in the shape the ``feed`` API sends them (compact
    JSON, as on the wire), for :meth:`Coinbase.load_kernels`."""
    t = "2024-01-02T03:04:05.123456Z"
    if feed == "exchange":
        messages: list[dict[str, Any]] = [
            {"type": "snapshot", "product_id": product, "bids": [["100.01", "1.5"]], "asks": [["100.02", "2"]]},
            {"type": "l2update", "product_id": product, "time": t,
             "changes": [["buy", "100.01", "2.5"], ["sell", "100.03", "1"]]},
        ]
    else:
        levels = [{"side": "bid", "event_time": t, "price_level": "100.01", "new_quantity": "1.5"},
                  {"side": "offer", "event_time": t, "price_level": "100.02", "new_quantity": "2"}]
        messages = [{"channel": "l2_data", "timestamp": t, "sequence_num": seq,
                     "events": [{"type": kind, "product_id": product, "updates": levels}]}
                    for seq, kind in ((0, "snapshot"), (1, "update"))]
    return [json.dumps(message, separators=(",", ":")) for message in messages]


def make_feed(params: CoinbaseParams, counters: Any = None, log: Any = None) -> ExchangeFeed | AdvancedTradeFeed:
    """The sans-IO feed for ``params`` (also used by tests and the benchmark)."""
    common = dict(venue=params.venue, products=params.products, channels=params.channels, depth=params.depth,
                  counters=counters, log=log)
    if params.feed == "exchange":
        return ExchangeFeed(level2_channel=params.level2_channel, **common)
    return AdvancedTradeFeed(**common)


@node_kind(
    "source.coinbase",
    emits=[TLVType.TRADE, TLVType.QUOTE, TLVType.ORDER_BOOK, TLVType.ORDER_BOOK_DELTA,
           TLVType.INSTRUMENT_MAPPING],
    example={"feed": "advanced_trade", "products": ["BTC-USD", "ETH-USD"],
             "channels": ["trades", "level2"]},
)
class Coinbase(Node):
    """Coinbase adapter: trades, tickers and L2 books with sequence checking and resync.

    One kind for both APIs, chosen by ``feed``; books are cleared and resynced on reconnect
    and on any sequence gap, and a crossed book is counted and resynced, never published.
    """

    Params = CoinbaseParams

    def __init__(self, params: CoinbaseParams) -> None:
        super().__init__(params)
        self.feed: ExchangeFeed | AdvancedTradeFeed | None = None
        self._ws: Any = None

    async def run(self, ctx):
        p = self.params
        feed = self.feed = make_feed(p, ctx.counters, ctx.log)

        async def on_connect(ws) -> None:
            self._ws = ws
            for message in feed.subscribe_messages():
                await ws.send_message(message)

        def on_message(frame, receive_ns: int):
            feed.receive(frame, receive_ns)
            if feed.out:
                ctx.messages(feed.take(), timestamp_ns=receive_ns)  # the session loop flushes after the read
            if feed.resync_reason is not None:
                return self._ws.aclose(code=1000, reason="resync")  # the session loop reconnects
            return None

        await run_websocket_session(ctx, p.endpoint or ENDPOINTS[p.feed], on_connect=on_connect,
                                    on_message=on_message, on_disconnect=feed.reset, policy=lambda: self.params)

    def load_kernels(self) -> None:
        """Load (on a fresh install: compile) the book and scan kernels before the node serves:
        a scratch feed of the configured API reads a snapshot and an update of one product, in
        the shape that API sends them, so the first real frames find the kernels ready."""
        feed = make_feed(self.params)
        for frame in _warm_up_frames(self.params.feed, self.params.products[0]):
            feed.receive(frame, 0)
        feed.take()

    def snapshot(self, instrument_id: int):
        """Mappings and the top-``depth`` books, for a downstream consumer's gap recovery."""
        return self.feed.snapshot(instrument_id) if self.feed is not None else []

    def statistics(self) -> dict:
        feed = self.feed
        if feed is None:
            return {}
        books = {}
        for product, book in feed.books.items():
            bid, _, ask, _ = book.best()
            books[product] = {"bids": int(book.counts[BID]), "asks": int(book.counts[ASK]), "best_bid": bid,
                              "best_ask": ask}
        return {"feed": self.params.feed, "books": books, "resyncing": feed.resync_reason,
                "next_sequence": getattr(feed, "next_sequence", None)}
