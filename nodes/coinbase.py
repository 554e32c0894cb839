"""``source.coinbase``: Coinbase Exchange feed and Coinbase Advanced Trade market data."""

from __future__ import annotations

import dataclasses
from typing import Literal

from alphapulse.kinds import Node, node_kind, param
from alphapulse.protocol import TLVType

ENDPOINTS = {
    "exchange": "wss://ws-feed.exchange.coinbase.com",
    "advanced_trade": "wss://advanced-trade-ws.coinbase.com",
}


@dataclasses.dataclass(frozen=True)
class CoinbaseParams:
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
        doc="Data to subscribe to: trades, ticker (quotes), L2 book.",
        minItems=1, uniqueItems=True,
    )
    venue: str = param(
        "coinbase",
        doc="Exchange name used in instrument ids (e.g. sim_a when fed by a simulator).",
        pattern="^[a-z0-9_.]+$",
    )
    staleness_timeout: float = param(
        30.0, doc="Seconds without any frame before the connection is considered dead and "
        "reopened.", live=True, exclusiveMinimum=0,
    )
    reconnect_initial: float = param(0.5, doc="First reconnect delay in seconds.", live=True,
                                     exclusiveMinimum=0)
    reconnect_max: float = param(30.0, doc="Cap of the exponential reconnect delay in seconds.",
                                 live=True, exclusiveMinimum=0)
    breaker_failures: int = param(
        5, doc="Failed connects in a row that open the circuit breaker.", live=True, minimum=1,
    )


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

    async def run(self, ctx):
        raise NotImplementedError("source.coinbase is implemented by issue #5")
