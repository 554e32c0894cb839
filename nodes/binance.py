"""``source.binance``: Binance / Binance.US trades, book tickers and diff-depth books."""

from __future__ import annotations

import dataclasses
from typing import Literal

from alphapulse.kinds import Node, node_kind, param
from alphapulse.protocol import TLVType


@dataclasses.dataclass(frozen=True)
class BinanceParams:
    endpoint: str = param(
        "wss://stream.binance.com:9443/stream",
        doc="Combined-stream WebSocket URL (Binance.US: wss://stream.binance.us:9443/stream).",
        pattern="^wss?://",
    )
    rest_endpoint: str = param(
        "https://api.binance.com",
        doc="REST base URL for depth snapshots (Binance.US: https://api.binance.us).",
        pattern="^https?://",
    )
    symbols: tuple[str, ...] = param(
        ("BTCUSDT",), doc="Symbols to subscribe to, as Binance writes them (BTCUSDT).", minItems=1,
        items={"type": "string", "pattern": "^[A-Z0-9]+$"},
    )
    channels: tuple[Literal["trade", "bookTicker", "depth"], ...] = param(
        ("trade", "bookTicker", "depth"), doc="Streams per symbol: trade, bookTicker (quotes), "
        "depth (diff-depth book).", minItems=1, uniqueItems=True,
    )
    depth_interval_ms: Literal[100, 1000] = param(
        100, doc="Diff-depth stream update speed in milliseconds.",
    )
    snapshot_limit: Literal[100, 500, 1000, 5000] = param(
        1000, doc="Levels requested in each REST depth snapshot used to (re)sync a book.",
    )
    venue: str = param("binance", doc="Exchange name used in instrument ids (binance_us for .US).",
                       pattern="^[a-z0-9_.]+$")
    staleness_timeout: float = param(
        30.0, doc="Seconds without any frame before reconnecting.", live=True, exclusiveMinimum=0,
    )
    reconnect_initial: float = param(0.5, doc="First reconnect delay in seconds.", live=True,
                                     exclusiveMinimum=0)
    reconnect_max: float = param(30.0, doc="Cap of the exponential reconnect delay in seconds.",
                                 live=True, exclusiveMinimum=0)
    breaker_failures: int = param(
        5, doc="Failed connects in a row that open the circuit breaker.", live=True, minimum=1,
    )


@node_kind(
    "source.binance",
    emits=[TLVType.TRADE, TLVType.QUOTE, TLVType.ORDER_BOOK, TLVType.ORDER_BOOK_DELTA,
           TLVType.INSTRUMENT_MAPPING],
    example={"symbols": ["BTCUSDT", "ETHUSDT"], "channels": ["trade", "depth"]},
)
class Binance(Node):
    """Binance adapter: trades, book tickers and diff-depth books synced from REST snapshots.

    Follows the documented lastUpdateId / U / u rules with diffs buffered while a snapshot is
    fetched; a break in the chain resyncs that symbol only.
    """

    Params = BinanceParams

    async def run(self, ctx):
        raise NotImplementedError("source.binance is implemented by issue #5")
