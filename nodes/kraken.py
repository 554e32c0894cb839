"""``source.kraken``: Kraken WebSocket v1 trades, spreads and CRC32-checked L2 books."""

from __future__ import annotations

import dataclasses
from typing import Literal

from alphapulse.kinds import Node, node_kind, param
from alphapulse.protocol import TLVType


@dataclasses.dataclass(frozen=True)
class KrakenParams:
    endpoint: str = param("wss://ws.kraken.com", doc="Kraken WebSocket v1 URL.", pattern="^wss?://")
    pairs: tuple[str, ...] = param(
        ("XBT/USD",), doc="Pairs to subscribe to, in Kraken's BASE/QUOTE notation.", minItems=1,
        items={"type": "string", "pattern": "^[A-Z0-9]+/[A-Z0-9]+$"},
    )
    channels: tuple[Literal["trade", "spread", "book"], ...] = param(
        ("trade", "spread", "book"), doc="Data to subscribe to: trade, spread (quotes), book.",
        minItems=1, uniqueItems=True,
    )
    depth: Literal[10, 25, 100, 500, 1000] = param(
        10, doc="Book depth to subscribe to; the local book is truncated to it for the checksum.",
    )
    verify_checksum: bool = param(
        True, doc="Check the CRC32 book checksum on every update; a mismatch resyncs the pair.",
    )
    venue: str = param("kraken", doc="Exchange name used in instrument ids.",
                       pattern="^[a-z0-9_.]+$")
    staleness_timeout: float = param(
        30.0, doc="Seconds without any frame (heartbeats included) before reconnecting.",
        live=True, exclusiveMinimum=0,
    )
    reconnect_initial: float = param(0.5, doc="First reconnect delay in seconds.", live=True,
                                     exclusiveMinimum=0)
    reconnect_max: float = param(30.0, doc="Cap of the exponential reconnect delay in seconds.",
                                 live=True, exclusiveMinimum=0)
    breaker_failures: int = param(
        5, doc="Failed connects in a row that open the circuit breaker.", live=True, minimum=1,
    )


@node_kind(
    "source.kraken",
    emits=[TLVType.TRADE, TLVType.QUOTE, TLVType.ORDER_BOOK, TLVType.ORDER_BOOK_DELTA,
           TLVType.INSTRUMENT_MAPPING],
    example={"pairs": ["XBT/USD", "ETH/USD"], "depth": 25},
)
class Kraken(Node):
    """Kraken WebSocket v1 adapter: trades, spreads and L2 books with CRC32 checksums.

    Every book update is checked against Kraken's checksum over the book truncated to the
    subscribed depth; a mismatch is counted, logged and triggers a resubscribe of that pair.
    """

    Params = KrakenParams

    async def run(self, ctx):
        raise NotImplementedError("source.kraken is implemented by issue #5")
