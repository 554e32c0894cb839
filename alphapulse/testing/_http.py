"""A tiny HTTP/1.1 server (h11 over trio) serving canned REST bodies, recording every request.

Adapters that need REST (Binance depth snapshots) are pointed at it with their REST base URL
param; routes usually come from a capture's ``URL -> TS: BODY`` lines
(:func:`routes_from_capture`).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import h11
import trio

from alphapulse.captures import http_responses

__all__ = ["CannedResponse", "HttpServer", "routes_from_capture", "serve_http"]


@dataclasses.dataclass(frozen=True)
class CannedResponse:
    body: str | bytes
    status: int = 200
    delay: float = 0.0
    """Seconds to wait before answering (a slow snapshot, to exercise diff buffering)."""
    content_type: str = "application/json"


Route = str | bytes | CannedResponse | Callable[[str], "str | bytes | CannedResponse"]


def routes_from_capture(path: str | os.PathLike[str]) -> dict[str, CannedResponse]:
    """``{"/path?query": response}`` for every REST response in a capture (last one wins)."""
    routes: dict[str, CannedResponse] = {}
    for record in http_responses(path):
        parts = urlsplit(record.url or "")
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        routes[target] = CannedResponse(record.text)
    return routes


@dataclasses.dataclass
class HttpServer:
    """What ``nursery.start(serve_http, routes)`` returns."""

    port: int
    routes: dict[str, Route]
    requests: list[str] = dataclasses.field(default_factory=list)
    """Request targets (path and query) in arrival order, unknown ones included."""
    not_found: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def count(self, prefix: str) -> int:
        return sum(1 for r in self.requests if r.startswith(prefix))

    def lookup(self, target: str) -> Route | None:
        """Exact target, else a route with the same path whose query items are all present."""
        if target in self.routes:
            return self.routes[target]
        parts = urlsplit(target)
        query = set(parse_qsl(parts.query))
        for key, route in self.routes.items():
            kparts = urlsplit(key)
            if kparts.path == parts.path and set(parse_qsl(kparts.query)) <= query:
                return route
        return None


async def serve_http(
    routes: Mapping[str, Route],
    *,
    port: int = 0,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``routes`` on ``http://127.0.0.1:PORT`` until cancelled (keep-alive supported)."""
    server = HttpServer(port=0, routes=dict(routes))

    async def handle(stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                request = await _next_request(conn, stream)
                if request is None:
                    return
                target = request.target.decode("ascii", "replace")
                server.requests.append(target)
                response = _resolve(server, target)
                if response.delay:
                    await trio.sleep(response.delay)
                body = response.body.encode() if isinstance(response.body, str) else response.body
                headers = [("content-type", response.content_type), ("content-length", str(len(body)))]
                await stream.send_all(conn.send(h11.Response(status_code=response.status, headers=headers)))
                await stream.send_all(conn.send(h11.Data(data=body)))
                await stream.send_all(conn.send(h11.EndOfMessage()))
                if conn.our_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError):
            pass
        finally:
            await trio.aclose_forcefully(stream)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(functools.partial(trio.serve_tcp, handle, port, host="127.0.0.1"))
        server.port = listeners[0].socket.getsockname()[1]
        task_status.started(server)


async def _next_request(conn: h11.Connection, stream: trio.SocketStream) -> h11.Request | None:
    request = None
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await stream.receive_some(65536)
            conn.receive_data(data)
            if not data and request is None and conn.their_state is h11.IDLE:
                return None
            continue
        if isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.EndOfMessage):
            return request
        elif isinstance(event, h11.ConnectionClosed):
            return None


def _resolve(server: HttpServer, target: str) -> CannedResponse:
    route = server.lookup(target)
    if route is None:
        server.not_found += 1
        return CannedResponse('{"code":-1121,"msg":"Invalid symbol."}', status=404)
    if callable(route) and not isinstance(route, CannedResponse):
        route = route(target)
    if isinstance(route, CannedResponse):
        return route
    return CannedResponse(route)
