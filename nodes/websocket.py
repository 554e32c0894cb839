"""``sink.websocket``: JSON WebSocket bridge and live dashboard."""

from __future__ import annotations

import dataclasses

from alphapulse.kinds import Node, node_kind, param
from alphapulse.protocol import TLVType


@dataclasses.dataclass(frozen=True)
class WebSocketParams:
    host: str = param("127.0.0.1", doc="Address the bridge binds.")
    port: int = param(8765, doc="TCP port for WebSocket clients and the dashboard page.",
                      minimum=1, maximum=65535)
    token: str = param(
        "", doc="Bearer token clients must send; empty allows anyone. A secret: write it as "
        "${VAR} or ${VAR:-}.", secret=True,
    )
    dashboard: bool = param(True, doc="Serve the live dashboard page at / on the same port.")
    book_levels: int = param(20, doc="Levels per side sent to clients.", live=True, minimum=1)
    max_clients: int = param(64, doc="Clients accepted at once.", live=True, minimum=1)
    client_queue: int = param(
        1024, doc="Messages buffered per client before it is conflated to the latest book "
        "(or dropped if it stays slow).", live=True, minimum=1,
    )


@node_kind(
    "sink.websocket",
    emits=(),
    accepts=[TLVType.TRADE, TLVType.QUOTE, TLVType.ORDER_BOOK, TLVType.ORDER_BOOK_DELTA,
             TLVType.BAR, TLVType.POOL_SWAP, TLVType.ARBITRAGE_SIGNAL,
             TLVType.INSTRUMENT_MAPPING, TLVType.STATUS_REPORT],
    example={"port": 8765, "token": "${BRIDGE_TOKEN:-}", "book_levels": 20},
)
class WebSocket(Node):
    """WebSocket bridge: streams books, trades and signals as JSON, and serves the dashboard.

    Clients subscribe per instrument and channel; a slow client is conflated or dropped,
    never allowed to stall the node.
    """

    Params = WebSocketParams

    async def run(self, ctx):
        raise NotImplementedError("sink.websocket is implemented by issue #7")
