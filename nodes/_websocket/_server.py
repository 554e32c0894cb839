"""The I/O edge: the WebSocket handler per client, the dashboard's HTTP app, the health poller.

Each client gets two tasks under its own cancel scope: a reader that hands every message to
:meth:`Bridge.handle_request` (sync), and a writer that drains the client's queue into the
socket. Dropping a slow client is cancelling that scope. The dashboard is static files plus one
``/config.json`` (where the WebSocket is), served by hypercorn's trio worker and Starlette.
"""

from __future__ import annotations

import functools
import hmac
import logging
import pathlib
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve
from starlette.applications import Starlette
from starlette.requests import Request as HttpRequest
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest

from alphapulse.runtime import ControlError, address, request_async
from nodes._websocket._bridge import Bridge
from nodes._websocket._clients import Client

DASHBOARD_DIR = pathlib.Path(__file__).resolve().parents[1] / "dashboard"
CLOSE_TIMEOUT = 1.0
"""Seconds a closing handshake may take before the socket is simply closed."""
HEALTH_TIMEOUT = 1.0
"""Seconds one node's control socket may take to answer ``stats``."""


def authorized(request: WebSocketRequest, token: str) -> bool:
    """``Authorization: Bearer TOKEN``, or ``?token=TOKEN`` for browsers (which cannot set headers)."""
    expected = token.encode()
    for name, value in request.headers:
        if name.lower() == b"authorization":
            scheme, _, given = value.partition(b" ")
            if scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), expected):
                return True
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(request.path).query)
    return any(hmac.compare_digest(given.encode(), expected) for given in query.get("token", []))


class ClientServer:
    """Accepts WebSocket clients for one bridge; the settings it reads may change live."""

    def __init__(self, bridge: Bridge, settings: Callable[[], Any], token: str, log: logging.Logger) -> None:
        self.bridge = bridge
        self.settings = settings
        self.token = token
        self.log = log
        self.accepted = 0

    async def handle(self, request: WebSocketRequest) -> None:
        """trio-websocket's per-connection handler."""
        counters = self.bridge.counters
        if self.token and not authorized(request, self.token):
            counters["clients.rejected_auth"] += 1
            self.log.warning("client from %s rejected: missing or wrong bearer token", request.remote)
            await request.reject(401, body=b"bearer token required\n")
            return
        if len(self.bridge.clients) >= self.settings().max_clients:
            counters["clients.rejected_full"] += 1
            await request.reject(503, body=b"too many clients\n")
            return
        ws = await request.accept()
        self.accepted += 1
        remote = request.remote
        where = f"{remote.address}:{remote.port}" if hasattr(remote, "port") else str(remote)
        client = Client(self.accepted, where, self.settings().client_queue)
        self.bridge.clients[client.number] = client
        counters["clients.accepted"] += 1
        self.log.info("client %d connected from %s", client.number, client.remote)
        self.bridge.hello(client)
        try:
            with client.cancel_scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._write, ws, client)
                    await self._read(ws, client)
                    nursery.cancel_scope.cancel()
        finally:
            del self.bridge.clients[client.number]
            reason = client.closed_reason or "closed by the client"
            self.log.info("client %d (%s) gone: %s; %d messages sent", client.number, client.remote, reason,
                          client.sent)
            with trio.move_on_after(CLOSE_TIMEOUT):
                await ws.aclose(1008 if reason == "too slow" else 1000, reason)

    async def _read(self, ws: WebSocketConnection, client: Client) -> None:
        while True:
            try:
                message = await ws.get_message()
            except ConnectionClosed:
                return
            self.bridge.handle_request(client, message)

    async def _write(self, ws: WebSocketConnection, client: Client) -> None:
        while True:
            key, text = await client.next_item()
            if text is None:
                text = self.bridge.render(client, key)  # type: ignore[arg-type]
                if text is None:
                    continue
            try:
                await ws.send_message(text)
            except ConnectionClosed:
                client.close("connection closed")
                return
            client.sent += 1


# -- health ---------------------------------------------------------------------------------------
def _health_entry(name: str, node: Mapping[str, Any], stats: Mapping[str, Any] | None, error: str) -> dict:
    if stats is None:
        return {"node": name, "kind": node.get("kind"), "status": "unreachable", "error": error}
    counters = stats.get("counters", {})
    return {
        "node": name,
        "kind": stats.get("kind"),
        "role": stats.get("role"),
        "status": stats.get("status"),
        "trouble": stats.get("trouble") or "",
        "uptime": stats.get("uptime"),
        "rates": stats.get("rates", {}),
        "received": counters.get("received", 0),
        "sent": counters.get("sent", 0),
        "dropped": counters.get("dropped", 0),
        "errors": counters.get("errors", 0),
        "messages_lost": counters.get("messages_lost", 0),
        "breakers": stats.get("breakers", {}),
    }


async def poll_health(bridge: Bridge, plan: Mapping[str, Any], interval: Callable[[], float]) -> None:
    """Every ``interval()`` seconds, while anyone watches health: every plan node's ``stats``."""
    nodes = dict(sorted(plan.get("nodes", {}).items()))
    while True:
        if any(c.wants("health", 0, "") for c in bridge.clients.values()):
            entries: dict[str, dict] = {}

            async def ask(name: str, node: Mapping[str, Any], entries: dict[str, dict] = entries) -> None:
                stats, error = None, "no answer"
                with trio.move_on_after(HEALTH_TIMEOUT):
                    try:
                        stats = await request_async(node["sockets"]["control"], "stats")
                    except (OSError, ControlError, ValueError) as exc:
                        error = f"{type(exc).__name__}: {exc}"
                entries[name] = _health_entry(name, node, stats, error)

            async with trio.open_nursery() as nursery:
                for name, node in nodes.items():
                    if node.get("sockets", {}).get("control"):
                        nursery.start_soon(ask, name, node)
            bridge.publish_health({"type": "health", "topology": plan.get("topology"),
                                   "nodes": [entries[name] for name in nodes if name in entries]})
        await trio.sleep(interval())


# -- the dashboard --------------------------------------------------------------------------------
def dashboard_app(config: Callable[[], dict[str, Any]]) -> Starlette:
    """The page, its static files and ``/config.json`` (the WebSocket's port and whether it needs a token)."""

    async def index(request: HttpRequest) -> FileResponse:
        return FileResponse(DASHBOARD_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    async def config_json(request: HttpRequest) -> JSONResponse:
        return JSONResponse(config(), headers={"Cache-Control": "no-store"})

    return Starlette(routes=[
        Route("/", index),
        Route("/config.json", config_json),
        Mount("/static", StaticFiles(directory=DASHBOARD_DIR), name="static"),
    ])


async def serve_dashboard(app: Starlette, host: str, port: int, log: logging.Logger, *,
                          task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve ``app`` over HTTP with hypercorn's trio worker; reports the bound port once listening."""
    config = HypercornConfig()
    config.bind = [address(host, port)]
    config.accesslog = None
    config.errorlog = log
    config.graceful_timeout = CLOSE_TIMEOUT

    async with trio.open_nursery() as nursery:
        binds = await nursery.start(functools.partial(hypercorn_serve, app, config))
        task_status.started(urllib.parse.urlsplit(binds[0]).port)
