"""``sink.websocket``: JSON WebSocket bridge and live dashboard.

The block handler (sync) keeps the market state and offers JSON to each client's bounded queue
without ever waiting for one; ``run`` serves the WebSocket (trio-websocket), the dashboard page
(hypercorn + Starlette, static files from ``nodes/dashboard/``) and polls every plan node's
control socket for the health panel. The JSON contract is in ``nodes/_websocket/_wire.py``.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any

import numpy as np
import trio
from trio_websocket import serve_websocket

from alphapulse.kinds import Node, node_kind, param
from alphapulse.protocol import TLVType
from alphapulse.runtime import UpstreamEpochs, start_listening
from nodes._websocket import Bridge, ClientServer, dashboard_app, poll_health, serve_dashboard

MAX_CLIENT_MESSAGE = 64 * 1024
"""Largest message a client may send (requests are tiny); bigger ones close the connection (1009)."""
HANDLED = np.array([TLVType.TRADE, TLVType.QUOTE, TLVType.ORDER_BOOK, TLVType.ORDER_BOOK_DELTA, TLVType.POOL_SWAP,
                    TLVType.ARBITRAGE_SIGNAL, TLVType.SIGNAL_IDENTITY, TLVType.INSTRUMENT_MAPPING], np.uint8)
"""First-TLV types worth decoding; anything else is counted as ignored without being decoded."""
HANDLED_TYPES = frozenset(HANDLED.tolist())


@dataclasses.dataclass(frozen=True)
class WebSocketParams:
    host: str = param("127.0.0.1", doc="Address the WebSocket and the dashboard bind.")
    port: int = param(8765, doc="TCP port for WebSocket clients; 0 picks a free port (logged).",
                      minimum=0, maximum=65535)
    http_port: int | None = param(
        None, doc="TCP port of the dashboard page (HTTP). Unset: the WebSocket port + 1 (8766 by default); "
        "0 picks a free port.", minimum=0, maximum=65535,
    )
    token: str = param(
        "", doc="Bearer token clients must send (header 'Authorization: Bearer TOKEN', or '?token=TOKEN' "
        "in the WebSocket URL); empty allows anyone. A secret: write it as ${VAR} or ${VAR:-}.", secret=True,
    )
    dashboard: bool = param(True, doc="Serve the live dashboard page over HTTP on http_port.")
    book_levels: int = param(20, doc="Book levels per side sent to clients.", live=True, minimum=1, maximum=1000)
    max_clients: int = param(64, doc="Clients accepted at once; more are refused (HTTP 503).", live=True,
                             minimum=1)
    client_queue: int = param(
        1024, doc="Messages buffered per client. When full, queued book/best-price/health updates are "
        "conflated to the latest state; a client still full after that (trades pile up) is dropped.",
        live=True, minimum=8,
    )
    health_interval: float = param(
        1.0, doc="Seconds between polls of every node's control socket for the health panel (only while "
        "a client watches health).", live=True, minimum=0.1,
    )


@node_kind(
    "sink.websocket",
    emits=(),
    accepts=[TLVType.TRADE, TLVType.QUOTE, TLVType.ORDER_BOOK, TLVType.ORDER_BOOK_DELTA,
             TLVType.BAR, TLVType.POOL_SWAP, TLVType.ARBITRAGE_SIGNAL,
             TLVType.INSTRUMENT_MAPPING, TLVType.STATUS_REPORT],
    example={"port": 8765, "http_port": 8766, "token": "${BRIDGE_TOKEN:-}", "book_levels": 20},
)
class WebSocket(Node):
    """WebSocket bridge: streams books, trades and signals as JSON, and serves the dashboard.

    Clients subscribe per instrument and channel; a slow client is conflated or dropped,
    never allowed to stall the node.
    """

    Params = WebSocketParams

    def __init__(self, params: WebSocketParams) -> None:
        super().__init__(params)
        self.bridge: Bridge | None = None
        self.ws_port: int | None = None
        self.http_port: int | None = None
        self.serving = trio.Event()
        """Set once the WebSocket (and the dashboard) listen; ``ws_port``/``http_port`` are then bound."""
        self._upstreams = UpstreamEpochs()

    def _bridge(self, ctx: Any) -> Bridge:
        if self.bridge is None:
            self.bridge = Bridge(self.params.book_levels, ctx.counters, ctx.log, ctx.request_snapshot)
        return self.bridge

    def handle_block(self, block: Any, ctx: Any) -> None:
        """Update books, tapes and signals from one input block; offer clients what changed."""
        bridge = self._bridge(ctx)
        if block.count == 1:  # most blocks: decided in Python (``np.isin`` took 9% of the demo bridge's samples)
            if block.first_tlv_of_one()[0] not in HANDLED_TYPES:
                ctx.counters["ignored"] += 1
                return
        else:
            handled = np.isin(block.tlv_type, HANDLED)
            if not handled.all():
                ctx.counters["ignored"] += int((~handled).sum())
                block = block.select(handled)
        for source in self._upstreams.restarted(block):
            bridge.upstream_restarted(source)
        now = time.monotonic()
        for frame, source, timestamp_ns in zip(block.frames(), block.source.tolist(), block.timestamp_ns.tolist(),
                                               strict=True):
            bridge.take_message(frame, source, timestamp_ns, now)
        bridge.flush()

    async def run(self, ctx):
        bridge = self._bridge(ctx)
        params = self.params
        clients = ClientServer(bridge, lambda: self.params, params.token, ctx.log)
        async with trio.open_nursery() as nursery:
            server = await start_listening(nursery, functools.partial(
                serve_websocket, clients.handle, params.host, params.port, None,
                max_message_size=MAX_CLIENT_MESSAGE, message_queue_size=16,
            ), params.host, params.port, "WebSocket bridge")
            self.ws_port = server.port
            ctx.log.info("WebSocket bridge listening on ws://%s:%d/%s", params.host, self.ws_port,
                         " (bearer token required)" if params.token else "")
            if params.dashboard:
                http_port = params.http_port
                if http_port is None:
                    http_port = params.port + 1 if params.port else 0
                app = dashboard_app(self._page_config)
                self.http_port = await start_listening(
                    nursery, functools.partial(serve_dashboard, app, params.host, http_port, ctx.log),
                    params.host, http_port, "dashboard")
                ctx.log.info("dashboard http://%s:%d/", params.host, self.http_port)
            nursery.start_soon(poll_health, bridge, ctx.plan, lambda: self.params.health_interval)
            self.serving.set()
            await trio.sleep_forever()

    def _page_config(self) -> dict[str, Any]:
        """What the page needs to find the bridge (read by ``/config.json``)."""
        return {"ws_port": self.ws_port, "token_required": bool(self.params.token),
                "book_levels": self.params.book_levels}

    def reconfigure(self, params: WebSocketParams) -> None:
        super().reconfigure(params)
        if self.bridge is not None:
            self.bridge.market.depth = params.book_levels
            for client in self.bridge.clients.values():
                client.limit = params.client_queue

    def statistics(self) -> dict:
        stats = {"ws_port": self.ws_port, "http_port": self.http_port}
        if self.bridge is not None:
            stats.update(self.bridge.statistics())
        return stats
