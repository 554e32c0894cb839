"""A real WebSocket server that plays a capture's received frames to every client.

Used by every adapter test, so that a capture reaches the adapter through the same code path as
the live exchange (trio-websocket client, session loop, frame handler) — only the URL differs.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, serve_websocket

from alphapulse.captures import read_capture
from alphapulse.runtime import start_listening

__all__ = ["CaptureServer", "ReplayFaults", "ReplayResponder", "load_frames", "serve_capture"]


def load_frames(source: str | os.PathLike[str] | Iterable[str | tuple[float, str]]) -> list[tuple[float, str]]:
    """``(ts, text)`` of every received frame: from a capture path, or from frames given as text
    (timestamps 0) or as ``(ts, text)`` pairs."""
    if isinstance(source, str | os.PathLike):
        return [(r.ts, r.text) for r in read_capture(source) if r.kind == "recv"]
    out: list[tuple[float, str]] = []
    for item in source:
        out.append((0.0, item) if isinstance(item, str) else (float(item[0]), item[1]))
    return out


@dataclasses.dataclass
class ReplayFaults:
    """Faults injected by frame index (0-based, over the capture's received frames).

    Each fault fires once: the first time its frame is about to be sent. A replay that restarts
    from frame 0 after a cut is therefore clean, like a resubscribe on the real exchange.
    """

    drop: set[int] = dataclasses.field(default_factory=set)
    """Frames never sent."""
    duplicate: set[int] = dataclasses.field(default_factory=set)
    """Frames sent twice in a row."""
    corrupt: dict[int, Callable[[str], str]] = dataclasses.field(default_factory=dict)
    """Frames replaced by ``f(frame)`` (e.g. a changed Kraken checksum)."""
    garbage: dict[int, str] = dataclasses.field(default_factory=dict)
    """Text sent just before the frame (``"not json"``, ``"[1, 2"``...)."""
    cut_after: set[int] = dataclasses.field(default_factory=set)
    """Close the connection right after sending this frame."""
    resume: Literal["continue", "restart"] = "continue"
    """After a cut, the next connection continues at the following frame, or restarts at 0."""
    cut_mode: Literal["close", "abort"] = "close"
    """``close``: a WebSocket close (code 1011); ``abort``: drop the TCP connection, no close frame."""


class ReplayResponder:
    """Hook for answering client messages (resubscribes) with frames, base class of no-ops.

    ``connection_started`` is called when a connection starts streaming at ``start`` (0 on a
    fresh or restarted replay); ``advance`` for every capture frame the replay passes, with its
    ORIGINAL text, whether or not a fault changed or dropped it (so a responder can track the
    exchange's true state); ``received`` for every client message after the initial ones the
    server waited for, returning frames to send before the next capture frame.
    """

    def connection_started(self, start: int) -> None:
        pass

    def advance(self, index: int, frame: str) -> None:
        pass

    def received(self, message: str) -> Iterable[str]:
        return ()


@dataclasses.dataclass
class CaptureServer:
    """What ``nursery.start(serve_capture, ...)`` returns: where to connect, and what happened."""

    port: int
    frames: Sequence[tuple[float, str]]
    connections: int = 0
    position: int = 0
    """Index of the next capture frame to send."""
    frames_sent: int = 0
    """Frames written to clients (duplicates, garbage and responder frames included)."""
    finished: trio.Event = dataclasses.field(default_factory=trio.Event)
    """Set when a connection has sent the capture's last frame."""
    received: list[list[str]] = dataclasses.field(default_factory=list)
    """Every client message, one list per connection."""
    cuts: int = 0
    fired: set[tuple[str, int]] = dataclasses.field(default_factory=set)
    """(fault, index) of every fault that fired."""

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    async def wait_connections(self, n: int, poll: float = 0.01) -> None:
        while self.connections < n:
            await trio.sleep(poll)


async def serve_capture(
    source: str | os.PathLike[str] | Iterable[str | tuple[float, str]],
    *,
    faults: ReplayFaults | None = None,
    wait_for_messages: int = 0,
    speed: float = 0.0,
    responder: ReplayResponder | None = None,
    at_end: Literal["hold", "close"] = "hold",
    port: int = 0,
    extra_frames: Mapping[int, Sequence[str]] | None = None,
    restart_each_connection: bool = False,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``source``'s received frames on ``ws://127.0.0.1:PORT/`` until cancelled.

    Per connection: wait for ``wait_for_messages`` client messages (subscribe requests), then
    send the frames from the current position in order — as fast as possible (``speed=0``) or
    at the recorded pace divided by ``speed`` (2 = twice as fast) — applying ``faults``. At the
    end the connection is held open (``at_end="hold"``, the live-exchange behaviour: silence)
    or closed. ``nursery.start`` returns the :class:`CaptureServer` (bound port, counts).
    ``extra_frames`` are sent once, after the indexed frame (``{i: [frame, ...]}``).
    ``restart_each_connection``: every connection plays from frame 0, like an exchange that
    starts each new connection with fresh snapshots (and a fresh per-connection sequence), so an
    adapter that resyncs by reconnecting gets a complete stream again (faults still fire once).
    """
    faults = faults or ReplayFaults()
    responder = responder or ReplayResponder()
    server = CaptureServer(port=0, frames=load_frames(source))
    frames = server.frames
    extra = dict(extra_frames or {})

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        server.connections += 1
        messages: list[str] = []
        server.received.append(messages)
        try:
            for _ in range(wait_for_messages):
                message = await ws.get_message()
                messages.append(message if isinstance(message, str) else message.decode())
            if restart_each_connection:
                server.position = 0
            start = server.position
            responder.connection_started(start)
            inject_send, inject_receive = trio.open_memory_channel[str](1000)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_read_client, ws, messages, responder, inject_send)
                cut = await _stream(ws, server, frames, faults, speed, responder, inject_receive, extra)
                if cut:
                    nursery.cancel_scope.cancel()
                    return
                server.finished.set()
                if at_end == "close":
                    nursery.cancel_scope.cancel()
                    await ws.aclose()
                    return
                async for frame in inject_receive:  # hold: keep answering the client
                    await ws.send_message(frame)
                    server.frames_sent += 1
        except* ConnectionClosed:
            pass  # the client went away (also mid-stream, from inside the nursery: a group)

    async with trio.open_nursery() as nursery:
        listener = await start_listening(nursery, functools.partial(serve_websocket, handler, "127.0.0.1", port, None),
                                         "127.0.0.1", port, "capture replay")
        server.port = listener.port
        task_status.started(server)


async def _read_client(
    ws: WebSocketConnection, messages: list[str], responder: ReplayResponder, inject: trio.MemorySendChannel[str]
) -> None:
    async with inject:  # closing it ends the hold loop when the client goes away
        try:
            while True:
                message = await ws.get_message()
                text = message if isinstance(message, str) else message.decode()
                messages.append(text)
                for frame in responder.received(text):
                    await inject.send(frame)
        except ConnectionClosed:
            pass


async def _stream(
    ws: WebSocketConnection,
    server: CaptureServer,
    frames: Sequence[tuple[float, str]],
    faults: ReplayFaults,
    speed: float,
    responder: ReplayResponder,
    inject: trio.MemoryReceiveChannel[str],
    extra: dict[int, Sequence[str]],
) -> bool:
    """Send frames from server.position; True if the connection was cut by a fault."""
    fired = server.fired
    origin_wall = trio.current_time()
    origin_ts = frames[server.position][0] if server.position < len(frames) else 0.0
    while server.position < len(frames):
        i = server.position
        ts, frame = frames[i]
        while True:  # responder frames first, in the order they were produced
            try:
                injected = inject.receive_nowait()
            except trio.WouldBlock:
                break
            await ws.send_message(injected)
            server.frames_sent += 1
        if speed > 0:
            await trio.sleep_until(origin_wall + max(0.0, ts - origin_ts) / speed)
        responder.advance(i, frame)
        server.position = i + 1
        if i in faults.garbage and ("garbage", i) not in fired:
            fired.add(("garbage", i))
            await ws.send_message(faults.garbage[i])
            server.frames_sent += 1
        if i in faults.drop and ("drop", i) not in fired:
            fired.add(("drop", i))
        else:
            if i in faults.corrupt and ("corrupt", i) not in fired:
                fired.add(("corrupt", i))
                frame = faults.corrupt[i](frame)
            copies = 1
            if i in faults.duplicate and ("duplicate", i) not in fired:
                fired.add(("duplicate", i))
                copies = 2
            for _ in range(copies):
                await ws.send_message(frame)
                server.frames_sent += 1
        if i in extra:
            for item in extra.pop(i):
                await ws.send_message(item)
                server.frames_sent += 1
        if speed <= 0 and i % 64 == 63:
            await trio.lowlevel.checkpoint()
        if i in faults.cut_after and ("cut", i) not in fired:
            fired.add(("cut", i))
            server.cuts += 1
            if faults.resume == "restart":
                server.position = 0
            await _cut(ws, faults.cut_mode)
            return True
    return False


async def _cut(ws: WebSocketConnection, mode: str) -> None:
    if mode == "abort":
        stream = getattr(ws, "_stream", None)  # trio-websocket keeps its transport here
        if stream is not None:
            await trio.aclose_forcefully(stream)
            return
    with trio.move_on_after(1.0):
        await ws.aclose(code=1011, reason="replay: cut")
