"""The exchange adapters' WebSocket client: wsproto over a trio stream, read a socket's worth at a time.

An exchange sends in bursts: in the Coinbase capture under ``../shared/data`` 41% of frames
follow the one before within 100 µs, many in the same TCP read. trio-websocket hands its reader
task's frames over a memory channel one at a time, each a trip through trio's scheduler, so an
adapter on it woke, parsed and published once per frame, and every node downstream woke once
per frame too. This client is the thin I/O edge h11's examples show: it feeds what one
``receive_some`` returned to wsproto (the sans-IO protocol, trio-websocket's own engine) and
hands back every message that read completed (:meth:`WebSocketClient.receive_batch`), so the
session loop publishes one block per read (see ``_websocket``).

What it does beyond the bytes: the opening handshake (``ws://`` and ``wss://`` with the system's
trust store), pings answered, fragmented messages joined, ``max_message_size`` enforced (close
1009), the closing handshake, and every way a connection ends raised as :class:`ConnectionClosed`
(a reset or a TCP close without a close frame is code 1006). Messages that arrived before the
peer closed are still handed out first. No extensions (permessage-deflate) are offered: the
venues we speak to send plain frames unless asked.
"""

from __future__ import annotations

import collections
import ssl
import urllib.parse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Message,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.utilities import RemoteProtocolError

READ_SIZE = 65536
"""Bytes asked of the socket per read: a burst of small frames, or a big snapshot in few reads."""


class WebSocketError(Exception):
    """Base of this client's errors (the session loop retries every one)."""


class HandshakeFailed(WebSocketError):
    """The server did not upgrade the connection (an HTTP status, a close or a timeout instead)."""


class ConnectionClosed(WebSocketError):
    """The connection ended: ``code`` and ``reason`` of the close frame, 1006 when there was none."""

    def __init__(self, code: int, reason: str | None = None) -> None:
        super().__init__(f"connection closed: {code}" + (f" ({reason})" if reason else ""))
        self.code = code
        self.reason = reason


class WebSocketClient:
    """One open client connection (from :func:`open_websocket`). One task reads at a time (the
    session loop, or a handler it awaits); any task may send."""

    def __init__(self, stream: trio.abc.Stream, protocol: WSConnection, *, max_message_size: int) -> None:
        self._stream = stream
        self._protocol = protocol
        self._max_message_size = max_message_size
        self._messages: collections.deque[str | bytes] = collections.deque()
        self._parts: list[str | bytes] = []
        self._part_bytes = 0
        self._closed: ConnectionClosed | None = None
        self._send_lock = trio.Lock()

    @property
    def closed(self) -> ConnectionClosed | None:
        """How the connection ended, or None while it is open."""
        return self._closed

    # -- receiving ------------------------------------------------------------------------------
    async def receive_batch(self) -> list[str | bytes]:
        """Every message received and not yet taken: at least one, waiting for a read if none is
        buffered. Raises :class:`ConnectionClosed` once the connection ended and all are taken."""
        await self._wait_for_messages()
        batch = list(self._messages)
        self._messages.clear()
        return batch

    async def get_message(self) -> str | bytes:
        """The next message (trio-websocket's call, for request/answer exchanges)."""
        await self._wait_for_messages()
        return self._messages.popleft()

    async def _wait_for_messages(self) -> None:
        while not self._messages:
            if self._closed is not None:
                raise self._closed
            await self._read()

    async def _read(self) -> None:
        try:
            data = await self._stream.receive_some(READ_SIZE)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            await self._finish(1006, f"read failed: {exc}")
            return
        if not data:
            await self._finish(1006, "the server closed the connection without a close frame")
            return
        self._protocol.receive_data(data)
        await self._handle_events()

    async def _handle_events(self) -> None:
        protocol = self._protocol
        try:
            for event in protocol.events():
                if isinstance(event, Message):
                    self._add_part(event)
                elif isinstance(event, Ping):
                    await self._send_bytes(protocol.send(event.response()))
                elif isinstance(event, CloseConnection):
                    if protocol.state is ConnectionState.REMOTE_CLOSING:
                        await self._send_bytes(protocol.send(event.response()))
                    await self._finish(event.code, event.reason or None)
                    return
        except RemoteProtocolError as exc:
            if exc.event_hint is not None and protocol.state is ConnectionState.OPEN:
                await self._send_bytes(protocol.send(exc.event_hint))
            await self._finish(1002, f"protocol error: {exc}")
        except _TooBig as exc:
            if protocol.state is ConnectionState.OPEN:
                await self._send_bytes(protocol.send(CloseConnection(code=1009, reason="message too big")))
            await self._finish(1009, str(exc))

    def _add_part(self, event: Message) -> None:
        if event.message_finished and not self._parts:
            if len(event.data) > self._max_message_size:
                raise _TooBig(f"a message of {len(event.data)} bytes, over {self._max_message_size}")
            self._messages.append(event.data)  # the usual frame: one whole message
            return
        self._parts.append(event.data)
        self._part_bytes += len(event.data)
        if self._part_bytes > self._max_message_size:
            raise _TooBig(f"a message of over {self._max_message_size} bytes")
        if event.message_finished:
            joiner = "" if isinstance(event, TextMessage) else b""
            self._messages.append(joiner.join(self._parts))  # type: ignore[attr-defined]
            self._parts.clear()
            self._part_bytes = 0

    # -- sending --------------------------------------------------------------------------------
    async def send_message(self, message: str | bytes) -> None:
        """Send one text (``str``) or binary (``bytes``) message."""
        if self._closed is not None:
            raise self._closed
        event = TextMessage(data=message) if isinstance(message, str) else BytesMessage(data=message)
        await self._send_bytes(self._protocol.send(event))

    async def _send_bytes(self, data: bytes) -> None:
        try:
            async with self._send_lock:
                await self._stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            await self._finish(1006, f"send failed: {exc}")
            raise self._closed from None  # type: ignore[misc]

    # -- closing --------------------------------------------------------------------------------
    async def aclose(self, code: int = 1000, reason: str | None = None, *, timeout: float = 1.0) -> None:
        """Close: send a close frame, wait up to ``timeout`` for the server's answer, close the
        stream. Messages still buffered are dropped; later reads raise :class:`ConnectionClosed`."""
        if self._closed is not None:
            return
        self._messages.clear()
        if self._protocol.state is ConnectionState.OPEN:
            try:
                await self._send_bytes(self._protocol.send(CloseConnection(code=code, reason=reason)))
            except ConnectionClosed:
                return
            with trio.move_on_after(timeout):
                while self._closed is None:
                    await self._read()
            self._messages.clear()  # what came in while the server answered our close
        await self._finish(code, reason)

    async def _finish(self, code: int, reason: str | None) -> None:
        if self._closed is None:
            self._closed = ConnectionClosed(code, reason)
        await trio.aclose_forcefully(self._stream)


class _TooBig(Exception):
    pass


@asynccontextmanager
async def open_websocket(url: str, *, connect_timeout: float = 10.0, max_message_size: int = 64 * 1024 * 1024,
                         disconnect_timeout: float = 1.0,
                         ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[WebSocketClient]:
    """Connect to ``url`` (``ws://`` or ``wss://``), upgrade within ``connect_timeout`` seconds,
    yield the client; on exit close it (shielded, at most ``disconnect_timeout`` seconds).
    Raises ``OSError`` (refused, DNS) or :class:`HandshakeFailed` (no upgrade; a TLS handshake
    that failed, with the reason: ``certificate verify failed``...)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError(f"not a WebSocket URL: {url!r}")
    secure = parts.scheme == "wss"
    port = parts.port or (443 if secure else 80)
    host = parts.hostname
    shown_host = f"[{host}]" if ":" in host else host
    host_header = shown_host if parts.port is None else f"{shown_host}:{port}"
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    with trio.move_on_after(connect_timeout) as connecting:
        client = await _connect(host, port, secure, ssl_context, host_header, target, max_message_size)
    if connecting.cancelled_caught:
        raise HandshakeFailed(f"no WebSocket upgrade from {host}:{port} within {connect_timeout:g} s")
    try:
        yield client
    finally:
        with trio.CancelScope(shield=True):
            with trio.move_on_after(disconnect_timeout):
                await client.aclose()
            await trio.aclose_forcefully(client._stream)


async def _connect(host: str, port: int, secure: bool, ssl_context: ssl.SSLContext | None, host_header: str,
                   target: str, max_message_size: int) -> WebSocketClient:
    stream: trio.abc.Stream = await trio.open_tcp_stream(host, port)
    try:
        if secure:
            stream = trio.SSLStream(stream, ssl_context or ssl.create_default_context(), server_hostname=host,
                                    https_compatible=True)
            try:
                await stream.do_handshake()
            except trio.BrokenResourceError as exc:  # trio's wrapper of the ssl error that says why
                raise HandshakeFailed(f"{host_header}: TLS handshake failed: {exc.__cause__ or exc}") from None
        protocol = WSConnection(ConnectionType.CLIENT)
        client = WebSocketClient(stream, protocol, max_message_size=max_message_size)
        await stream.send_all(protocol.send(Request(host=host_header, target=target)))
        while True:
            data = await stream.receive_some(READ_SIZE)
            if not data:
                raise HandshakeFailed(f"{host_header} closed the connection during the WebSocket handshake")
            protocol.receive_data(data)
            for event in protocol.events():
                if isinstance(event, AcceptConnection):
                    await client._handle_events()  # frames sent right behind the upgrade
                    return client
                if isinstance(event, RejectConnection):
                    raise HandshakeFailed(f"{host_header} refused the WebSocket upgrade: HTTP {event.status_code}")
    except RemoteProtocolError as exc:
        await trio.aclose_forcefully(stream)
        raise HandshakeFailed(f"{host_header}: bad WebSocket handshake: {exc}") from None
    except trio.BrokenResourceError as exc:
        await trio.aclose_forcefully(stream)
        raise HandshakeFailed(f"{host_header}: the connection broke during the handshake: {exc.__cause__ or exc}"
                              ) from None
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
